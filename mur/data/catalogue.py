"""The pair catalogue: which pairs are trained, and how an admin adds or removes one.

The catalogue is the configured pairs (``MUR_PAIRS``) plus the pairs an admin added, minus the pairs an
admin removed (the registry table ``pairs``, :mod:`mur.db.pairs`). The training DAG's ``list_pairs`` task reads
it when it runs (never when the DAG file is parsed), so the next run trains a pair added in between.

An admin adds a pair (``mur pairs add``, the dashboard's admin page) in one of two ways:

- **from the market** (its symbol, ``DOGEUSDT``): with ``MUR_MARKET_DATA=binance`` the exchange must know the
  symbol and hold at least ``MUR_PAIR_MIN_HISTORY_HOURS`` hourly candles of it (python-binance through
  :class:`~mur.data.binance.BinanceMarketData`); offline, the symbol must be one of the bundled pairs;
- **from a CSV of hourly klines** (offline market data only): :func:`validate_pair_csv` refuses bad columns,
  off-hour times, gaps and too little history before market now, each with one line saying where. The candles
  go to PostgreSQL (``pair_candles``), where training, serving and the dashboard read them
  (:class:`~mur.data.uploaded.UploadedPairs`).

Removing a pair takes it out of the catalogue only: its forecasts, track record, registered versions and
uploaded candles stay (docs/data.md).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import IO, TYPE_CHECKING, Any

import pandas as pd

from mur.clock import market_clock
from mur.data.binance import BinanceMarketData
from mur.data.bundled import BundledMarketData, bundled_pairs
from mur.data.candles import KLINE_COLUMNS, missing_hours
from mur.data.user_csv import load_candles_csv
from mur.db.pairs import (
    PairRecord,
    get_pair_record,
    list_pair_records,
    mark_removed,
    save_csv_pair,
    save_exchange_pair,
)
from mur.errors import DataValidationError, InvalidInputError, UnknownPairError
from mur.pairs import normalize_pair, pair_to_symbol, symbol_to_pair
from mur.timeutil import iso

if TYPE_CHECKING:
    from pathlib import Path

    from mur.db import Database
    from mur.settings import Settings


def pair_from_text(text: str) -> str:
    """A pair from what an admin typed: a Binance symbol (``DOGEUSDT``) or a pair (``doge_usdt``, ``DOGE-USDT``)."""
    value = str(text).strip()
    if any(sep in value for sep in "_-/"):
        return normalize_pair(value)
    return symbol_to_pair(value)


def combine(configured: Iterable[str], records: Iterable[PairRecord]) -> list[str]:
    """The catalogue: ``configured`` in order, then the active added pairs (oldest first); removed ones out."""
    rows = list(records)
    removed = {r.pair for r in rows if not r.active}
    out = [p for p in dict.fromkeys(normalize_pair(p) for p in configured) if p not in removed]
    out += [r.pair for r in rows if r.active and r.pair not in out]
    return out


def pair_catalogue(settings: Settings, db: Database) -> list[str]:
    """The pairs to train: configured + added - removed (reads the registry table)."""
    return combine(settings.general.pairs, list_pair_records(db))


@dataclass(frozen=True)
class CatalogueEntry:
    """One pair as the admin sees it: where its candles come from and whether it is trained."""

    pair: str
    source: str
    """``configured`` (MUR_PAIRS), ``exchange`` (added by symbol) or ``csv`` (uploaded candles)."""
    status: str
    """``active`` or ``removed``."""
    candles: int
    first_open: datetime | None
    last_open: datetime | None
    changed_by: str | None
    changed_at: datetime | None


def catalogue_entries(settings: Settings, db: Database) -> list[CatalogueEntry]:
    """Every pair of the catalogue, then the removed ones (their history kept), for ``mur pairs list``."""
    records = {r.pair: r for r in list_pair_records(db)}
    out: list[CatalogueEntry] = []
    for pair in [
        *combine(settings.general.pairs, records.values()),
        *(p for p, r in records.items() if not r.active),
    ]:
        r = records.get(pair)
        if r is None:
            out.append(CatalogueEntry(pair, "configured", "active", 0, None, None, None, None))
            continue
        out.append(
            CatalogueEntry(
                pair,
                r.source,
                "active" if r.active else "removed",
                r.candles,
                r.first_open,
                r.last_open,
                r.added_by if r.active else r.removed_by,
                r.added_at if r.active else r.removed_at,
            )
        )
    return out


# --- the upload's checks ----------------------------------------------------------------------------------
def validate_pair_csv(
    source: str | Path | IO[bytes], *, name: str, market_hour: datetime, min_hours: int
) -> pd.DataFrame:
    """The uploaded candles as the typed frame, or one :class:`DataValidationError` line: bad or missing
    columns and values (:func:`~mur.data.user_csv.load_candles_csv`), times off the hour, gaps, or fewer than
    ``min_hours`` candles that closed before ``market_hour`` (market now)."""
    frame = load_candles_csv(source, name=name)
    ts = pd.DatetimeIndex(frame["timestamp"])
    off = ts != ts.floor("h")
    if off.any():
        i = int(off.argmax())
        raise DataValidationError(
            f"{name}: open time {iso(ts[i].to_pydatetime())} (row {i + 1}) is not on a whole hour; "
            "upload hourly candles"
        )
    missing = missing_hours(frame)
    if missing:
        run = 1  # the first gap's length in hours
        while run < len(missing) and missing[run] - missing[run - 1] == pd.Timedelta(hours=1):
            run += 1
        raise DataValidationError(
            f"{name} has {len(missing)} missing hour(s): the first gap is {run} h from {iso(missing[0])}; "
            "upload every hour from the first candle to the last"
        )
    seen = int((ts < pd.Timestamp(market_hour)).sum())
    if seen < min_hours:
        raise DataValidationError(
            f"{name} has too little history: {seen} hourly candle(s) before market now ({iso(market_hour)}), "
            f"need at least {min_hours} ({min_hours / 24:g} days, MUR_PAIR_MIN_HISTORY_HOURS)"
        )
    return frame


def candle_rows(frame: pd.DataFrame) -> list[tuple[Any, ...]]:
    """The typed frame as ``pair_candles`` rows (the column order of ``pair_candles``: Binance's less
    ``ignore``), in Python types (``Timestamp`` is a ``datetime``)."""
    return list(frame.loc[:, list(KLINE_COLUMNS[:-1])].astype(object).itertuples(index=False, name=None))


# --- adding and removing ----------------------------------------------------------------------------------
def _refuse_active(settings: Settings, db: Database, pair: str) -> None:
    if pair in pair_catalogue(settings, db):
        raise InvalidInputError(f"{pair} is in the catalogue already (mur pairs list)")


def add_csv_pair(
    settings: Settings,
    db: Database,
    pair: str,
    source: str | Path | IO[bytes],
    *,
    name: str,
    added_by: str | None,
) -> PairRecord:
    """Validate an uploaded CSV of ``pair``'s hourly klines and add the pair with its candles."""
    pair = pair_from_text(pair)
    if settings.data.market_data != "bundled":
        raise InvalidInputError(
            f"a CSV pair needs offline market data (MUR_MARKET_DATA=bundled); with {settings.data.market_data} "
            f"add the exchange's symbol instead: mur pairs add {pair_to_symbol(pair)}"
        )
    if pair in bundled_pairs():
        raise InvalidInputError(
            f"{pair} is bundled: add it without a CSV (mur pairs add {pair_to_symbol(pair)})"
        )
    frame = validate_pair_csv(
        source,
        name=name,
        market_hour=market_clock(settings).hour(),
        min_hours=settings.data.pair_min_history_hours,
    )
    _refuse_active(settings, db, pair)
    return save_csv_pair(
        db, pair=pair, rows=candle_rows(frame), added_by=added_by, symbol=pair_to_symbol(pair)
    )


def add_exchange_pair(
    settings: Settings, db: Database, symbol: str, *, added_by: str | None, market: Any = None
) -> PairRecord:
    """Add a pair the market data source knows: validated against the exchange (Binance: the symbol exists
    and has enough hourly history) or, offline, one of the bundled pairs."""
    pair = pair_from_text(symbol)
    _refuse_active(settings, db, pair)
    if settings.data.market_data == "binance":
        first, last = (market or BinanceMarketData(settings)).data_range(pair)
        hours = int((last - first).total_seconds() // 3600) + 1
        if hours < settings.data.pair_min_history_hours:
            raise DataValidationError(
                f"{pair_to_symbol(pair)} has too little history on the exchange: {hours} hourly candle(s) since "
                f"{iso(first)}, need at least {settings.data.pair_min_history_hours} (MUR_PAIR_MIN_HISTORY_HOURS)"
            )
    else:
        if pair not in bundled_pairs():
            raise UnknownPairError(
                f"the offline market data has no {pair_to_symbol(pair)} (bundled: {', '.join(bundled_pairs())}); "
                f"upload its hourly candles: mur pairs add {pair_to_symbol(pair)} --csv FILE"
            )
        first, last = BundledMarketData().data_range(pair)
    return save_exchange_pair(
        db,
        pair=pair,
        symbol=pair_to_symbol(pair),
        added_by=added_by,
        first_open=first.to_pydatetime() if hasattr(first, "to_pydatetime") else first,
        last_open=last.to_pydatetime() if hasattr(last, "to_pydatetime") else last,
    )


def remove_pair(settings: Settings, db: Database, pair: str, *, removed_by: str | None) -> PairRecord:
    """Take ``pair`` out of the catalogue (no more training); its history stays."""
    name = pair_from_text(pair)
    if name not in pair_catalogue(settings, db):
        record = get_pair_record(db, pair=name)
        if record is not None and not record.active:
            raise InvalidInputError(f"{name} was removed already (by {record.removed_by or '?'})")
        raise UnknownPairError(f"{name} is not in the catalogue (mur pairs list)")
    return mark_removed(db, pair=name, removed_by=removed_by)
