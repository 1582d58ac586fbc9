"""Offline market data with the pairs an admin uploaded: the bundled archive, and for any other pair the
candles stored in PostgreSQL (``pair_candles``, :mod:`mur.data.catalogue`).

PostgreSQL, not a file on the machine that took the upload and not S3: every process that reads market data
(the Ray training job on any node, Serve's market cache, Airflow's tasks, the dashboard) already connects to
the application database, while the S3 keys are kept off the Ray nodes' environment (Serve replicas). A
bundled pair never touches the database; the connection opens on the first uploaded pair asked for.
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime
from functools import cached_property
from typing import TYPE_CHECKING, Any

import pandas as pd

from mur.data.candles import (
    FLOAT_COLUMNS,
    KLINE_COLUMNS,
    TIMESTAMP_DTYPE,
    check_window,
    format_ts,
    no_candles_message,
)
from mur.errors import DatabaseError, MarketDataError, UnknownPairError
from mur.pairs import normalize_pair

if TYPE_CHECKING:
    from mur.db import Database
    from mur.settings import Settings

log = logging.getLogger(__name__)

_DATABASES: dict[str, Database] = {}
_DATABASES_LOCK = threading.Lock()


def _database(settings: Settings) -> Database:
    """One small pool per process and database (market caches refresh often; each source shares it)."""
    from mur.db import Database

    key = settings.db.app_dsn()
    with _DATABASES_LOCK:
        db = _DATABASES.get(key)
        if db is None:
            db = _DATABASES[key] = Database(settings, minconn=1, maxconn=2)
        return db


def candles_frame(rows: list[tuple[Any, ...]]) -> pd.DataFrame:
    """``pair_candles`` rows (the column order of ``pair_candles``) as the typed frame."""
    frame = pd.DataFrame(rows, columns=list(KLINE_COLUMNS[:-1]))
    for column in ("timestamp", "close_time"):
        frame[column] = pd.to_datetime(frame[column], utc=True).astype(TIMESTAMP_DTYPE)
    return frame.astype(dict.fromkeys(FLOAT_COLUMNS, "float64") | {"trades": "int64"}).assign(ignore=0)


def uploaded_candles(db: Database) -> dict[str, pd.DataFrame]:
    """Every uploaded pair's candles (the removed ones' too), by pair: what the replay server serves."""
    from mur.db.pairs import list_pair_records, pair_candle_rows

    return {
        r.pair: candles_frame(pair_candle_rows(db, pair=r.pair))
        for r in list_pair_records(db)
        if r.source == "csv"
    }


class UploadedPairs:
    """A :class:`~mur.data.source.MarketData`: ``archive``'s pairs from it, every other pair from the uploaded
    candles in PostgreSQL (an active or a removed pair alike: a removed pair's history stays readable)."""

    def __init__(self, archive: Any, settings: Settings) -> None:
        self.archive = archive
        self.settings = settings
        self.name = getattr(archive, "name", "bundled")

    @cached_property
    def db(self) -> Database:
        return _database(self.settings)

    @cached_property
    def _archived(self) -> frozenset[str]:
        return frozenset(self.archive.pairs())

    def _in_archive(self, pair: str) -> bool:
        if pair in self._archived:
            return True
        try:  # a synthetic pair (syn001_usdt) the archive answers for without listing it first
            self.archive.data_range(pair)
        except UnknownPairError:
            return False
        return True

    def _uploaded_range(self, pair: str) -> tuple[datetime, datetime]:
        from mur.db.pairs import get_pair_record

        try:
            record = get_pair_record(self.db, pair=pair)
        except DatabaseError as exc:
            raise UnknownPairError(
                f"unknown pair {pair!r}: not in the bundled data ({', '.join(sorted(self._archived))}) and "
                f"the uploaded pairs cannot be read: {exc}"
            ) from exc
        if record is None or record.source != "csv" or record.first_open is None or record.last_open is None:
            raise UnknownPairError(
                f"unknown pair {pair!r}: the bundled data has {', '.join(sorted(self._archived))} and no "
                "candles were uploaded for it (mur pairs add SYMBOL --csv FILE)"
            )
        return record.first_open, record.last_open

    def klines(self, pair: str, start: datetime | None = None, end: datetime | None = None) -> pd.DataFrame:
        """Candles in ``[start, end)`` from the archive, else from the uploaded candles."""
        pair = normalize_pair(pair)
        if self._in_archive(pair):
            return self.archive.klines(pair, start, end)
        first, last = self._uploaded_range(pair)
        from mur.db.pairs import pair_candle_rows

        lo, hi = check_window(pair, start, end)
        rows = pair_candle_rows(
            self.db,
            pair=pair,
            start=None if lo is None else lo.to_pydatetime(),
            end=None if hi is None else hi.to_pydatetime(),
        )
        if not rows:
            covers = f" (uploaded candles cover {format_ts(first)} to {format_ts(last)})"
            raise MarketDataError(no_candles_message(pair, lo, hi, covers))
        return candles_frame(rows)

    def pairs(self) -> list[str]:
        """The archive's pairs (listing never opens the database; ``mur pairs list`` shows the uploaded ones)."""
        return list(self.archive.pairs())

    def data_range(self, pair: str) -> tuple[datetime, datetime]:
        """First and last open time, from the archive or the upload's row."""
        pair = normalize_pair(pair)
        if self._in_archive(pair):
            return self.archive.data_range(pair)
        first, last = self._uploaded_range(pair)
        return pd.Timestamp(first).tz_convert("UTC"), pd.Timestamp(last).tz_convert("UTC")
