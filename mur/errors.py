"""Exceptions with messages meant for users: the CLI prints them as one line, the API as JSON."""


class MurError(Exception):
    """Base class for expected, user-facing errors."""


class ConfigError(MurError):
    """Bad or missing configuration."""


class MarketDataError(MurError):
    """Market data could not be fetched or is unusable."""


class UnknownPairError(MarketDataError):
    """The pair/symbol is not known to the data source."""


class DataValidationError(MarketDataError):
    """Candles failed validation (NaN/inf, too few rows, non-positive prices, bad timestamps)."""


class ModelError(MurError):
    """A model file is missing, unreadable or fails validation."""


class ServiceError(MurError):
    """A local service did not start, answer or stop."""


class JobError(MurError):
    """A Ray job failed or could not be submitted."""
