"""The one rule for trading-pair names, and the mapping to Binance symbols.

A pair is ``BASE_QUOTE`` in lower case (``btc_usdt``): 2-20 letters/digits, an underscore, 2-10
letters/digits. Users may type ``BTC-USDT`` or ``btc/usdt``; :func:`normalize_pair` turns those into the
canonical form and everything else is an :class:`~mur.errors.UnknownPairError`. Binance spells the same
pair ``BTCUSDT`` (:func:`pair_to_symbol`, :func:`symbol_to_pair`).
"""

from __future__ import annotations

import re
from contextlib import suppress

from mur.errors import UnknownPairError

PAIR_PATTERN = r"^[a-z0-9]{2,20}_[a-z0-9]{2,10}$"
"""Canonical pair names, as a JSON-schema / regex pattern (the Airflow trigger form uses it too)."""

PAIR_RE = re.compile(PAIR_PATTERN)

QUOTE_ASSETS: tuple[str, ...] = (
    "FDUSD",
    "USDT",
    "USDC",
    "TUSD",
    "BUSD",
    "DAI",
    "BTC",
    "ETH",
    "BNB",
    "EUR",
    "TRY",
    "BRL",
)
"""Quote assets recognised when splitting a Binance symbol; longest match wins."""

_SYMBOL_RE = re.compile(r"^[A-Z0-9]{4,30}$")


def normalize_pair(pair: str) -> str:
    """``BTC-USDT`` / ``btc/usdt`` / `` btc_usdt `` -> ``btc_usdt``; anything else is an UnknownPairError."""
    text = str(pair).strip().lower().replace("-", "_").replace("/", "_")
    if not PAIR_RE.match(text):
        raise UnknownPairError(f"invalid pair {pair!r}: expected BASE_QUOTE such as 'btc_usdt'")
    return text


def lenient_pair(text: str) -> str:
    """A pair as a user types it in a URL: ``btc_usdt``, ``BTC-USDT`` or a Binance symbol (``BTCUSDT``, as the
    CLI takes) in canonical form; anything else unchanged, for the caller's own check to word the error."""
    for parse in (normalize_pair, symbol_to_pair):
        with suppress(UnknownPairError):
            return parse(text)
    return text


def is_pair(text: str) -> bool:
    """True when ``text`` is already a canonical pair name."""
    return bool(PAIR_RE.match(text))


def pair_to_symbol(pair: str) -> str:
    """``"btc_usdt"`` -> ``"BTCUSDT"`` (also accepts ``BTC/USDT`` or ``btc-usdt``)."""
    return normalize_pair(pair).replace("_", "").upper()


def symbol_to_pair(symbol: str) -> str:
    """``"BTCUSDT"`` -> ``"btc_usdt"``, splitting off a known quote asset (:data:`QUOTE_ASSETS`)."""
    text = str(symbol).strip().upper()
    if _SYMBOL_RE.match(text):
        for quote in sorted(QUOTE_ASSETS, key=len, reverse=True):
            if text.endswith(quote) and len(text) - len(quote) >= 2:
                return f"{text[: -len(quote)].lower()}_{quote.lower()}"
    raise UnknownPairError(
        f"invalid symbol {symbol!r}: expected a Binance symbol such as 'BTCUSDT' "
        f"(quote asset one of {', '.join(QUOTE_ASSETS)})"
    )
