"""The pair registry (``sql/0009_pairs.sql``): pairs an admin added or removed, and an uploaded pair's candles.

The rules (what the catalogue is, what an upload must hold) live in :mod:`mur.data.catalogue`; this module
only reads and writes the two tables. Removing a pair marks its row; nothing is deleted.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg.rows import class_row

from mur.db.pool import Database, fetch_one
from mur.pairs import normalize_pair


@dataclass(frozen=True)
class PairRecord:
    """One row of ``pairs``: where the pair's candles come from and whether it is in the catalogue."""

    pair: str
    source: str
    """``exchange`` (the live market's symbol), ``csv`` (uploaded candles) or ``configured`` (MUR_PAIRS)."""
    symbol: str | None
    active: bool
    candles: int
    first_open: datetime | None
    last_open: datetime | None
    added_by: str | None
    added_at: datetime
    removed_by: str | None
    removed_at: datetime | None


def list_pair_records(db: Database, *, include_removed: bool = True) -> list[PairRecord]:
    """Every registered pair (added first, first), the removed ones too unless ``include_removed`` is False."""
    with db.cursor(class_row(PairRecord)) as cur:
        return cur.execute(
            "SELECT pair, source, symbol, active, candles, first_open, last_open, added_by, added_at, removed_by, "
            "removed_at FROM pairs WHERE active OR %(removed)s ORDER BY added_at, pair",
            {"removed": include_removed},
        ).fetchall()


def get_pair_record(db: Database, *, pair: str) -> PairRecord | None:
    """The registry's row of ``pair`` (None: never added nor removed)."""
    with db.cursor(class_row(PairRecord)) as cur:
        return cur.execute(
            "SELECT pair, source, symbol, active, candles, first_open, last_open, added_by, added_at, removed_by, "
            "removed_at FROM pairs WHERE pair = %s",
            (normalize_pair(pair),),
        ).fetchone()


# Adds a pair, or brings a removed one back: its row is replaced (the candles of an earlier upload go too).
_SAVE_PAIR = """
INSERT INTO pairs (pair, source, symbol, active, candles, first_open, last_open, added_by)
VALUES (%(pair)s, %(source)s, %(symbol)s, true, %(n)s, %(first)s, %(last)s, %(by)s)
ON CONFLICT (pair) DO UPDATE SET
    source = EXCLUDED.source, symbol = EXCLUDED.symbol, active = true, candles = EXCLUDED.candles,
    first_open = EXCLUDED.first_open, last_open = EXCLUDED.last_open, added_by = EXCLUDED.added_by,
    added_at = now(), removed_by = NULL, removed_at = NULL
RETURNING pair, source, symbol, active, candles, first_open, last_open, added_by, added_at, removed_by, removed_at
"""


def save_exchange_pair(
    db: Database,
    *,
    pair: str,
    symbol: str,
    added_by: str | None,
    first_open: datetime | None = None,
    last_open: datetime | None = None,
) -> PairRecord:
    """Add (or bring back) a pair whose candles come from the live market under ``symbol``."""
    params = {"source": "exchange", "symbol": symbol, "n": 0, "first": first_open, "last": last_open}
    with db.cursor(class_row(PairRecord)) as cur:
        cur.execute(_SAVE_PAIR, params | {"pair": normalize_pair(pair), "by": added_by})
        return fetch_one(cur)


def save_csv_pair(
    db: Database, *, pair: str, rows: Sequence[Sequence[Any]], added_by: str | None, symbol: str | None = None
) -> PairRecord:
    """Add (or bring back) a pair with its uploaded candles, in one transaction: the pair's row and its
    candles (``rows`` in the column order of ``pair_candles`` (open_time … tb_quote_av), sorted by open time) replace any earlier upload."""
    if not rows:
        raise ValueError("an uploaded pair needs candles")
    name = normalize_pair(pair)
    params = {"pair": name, "source": "csv", "symbol": symbol, "n": len(rows), "by": added_by}
    with db.cursor(class_row(PairRecord)) as cur:
        cur.execute(_SAVE_PAIR, params | {"first": rows[0][0], "last": rows[-1][0]})
        record = fetch_one(cur)
        cur.execute("DELETE FROM pair_candles WHERE pair = %s", (name,))
        with cur.copy(
            "COPY pair_candles (pair, open_time, open, high, low, close, volume, close_time, quote_av, trades, "
            "tb_base_av, tb_quote_av) FROM STDIN"
        ) as copy:
            for row in rows:
                copy.write_row((name, *row))
    return record


def mark_removed(
    db: Database, *, pair: str, removed_by: str | None, source: str = "configured"
) -> PairRecord:
    """Take ``pair`` out of the catalogue, keeping its row and candles (``source`` for a pair without a row:
    a configured one)."""
    with db.cursor(class_row(PairRecord)) as cur:
        cur.execute(
            """
            INSERT INTO pairs (pair, source, active, added_by, removed_by, removed_at)
            VALUES (%(pair)s, %(source)s, false, NULL, %(by)s, now())
            ON CONFLICT (pair) DO UPDATE SET active = false, removed_by = EXCLUDED.removed_by, removed_at = now()
            RETURNING pair, source, symbol, active, candles, first_open, last_open, added_by, added_at,
                      removed_by, removed_at
            """,
            {"pair": normalize_pair(pair), "source": source, "by": removed_by},
        )
        return fetch_one(cur)


def pair_candle_rows(
    db: Database, *, pair: str, start: datetime | None = None, end: datetime | None = None
) -> list[tuple[Any, ...]]:
    """An uploaded pair's candles with ``start <= open_time < end`` (None: unbounded), in
    the column order of ``pair_candles`` (open_time … tb_quote_av), sorted by open time."""
    with db.connection() as conn:
        return conn.execute(
            """
            SELECT open_time, open, high, low, close, volume, close_time, quote_av, trades, tb_base_av,
                   tb_quote_av
            FROM pair_candles
            WHERE pair = %(pair)s
              AND (%(start)s::timestamptz IS NULL OR open_time >= %(start)s)
              AND (%(end)s::timestamptz IS NULL OR open_time < %(end)s)
            ORDER BY open_time
            """,
            {"pair": normalize_pair(pair), "start": start, "end": end},
        ).fetchall()
