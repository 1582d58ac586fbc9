"""``mur pairs``: the pair catalogue (:mod:`mur.data.catalogue`): list it, add a pair, remove one.

``mur pairs add DOGEUSDT`` adds a pair the market data source knows (Binance: validated against the exchange;
offline: a bundled pair); ``mur pairs add DOGEUSDT --csv doge.csv`` uploads its hourly klines (offline market
data). The next run of the training DAG trains it. ``mur pairs remove`` stops training a pair and keeps its
history. Errors (a gap in the CSV, a missing column, too little history, an unknown symbol) are one line.
"""

from __future__ import annotations

import getpass
from pathlib import Path
from typing import Annotated

import typer

from mur.commands.db import _database, fmt_when, print_table

pairs_app = typer.Typer(
    name="pairs",
    no_args_is_help=True,
    help="The pair catalogue: configured pairs plus those an admin added, minus those removed (docs/data.md).",
)

ByOption = Annotated[
    str | None,
    typer.Option("--by", help="who is acting, recorded with the change (default: your login, cli)"),
]


def _actor(by: str | None) -> str:
    if by:
        return by
    try:
        return f"{getpass.getuser()} (cli)"
    except (KeyError, OSError):
        return "cli"


@pairs_app.command("list")
def pairs_list() -> None:
    """The catalogue (trained each run), then the removed pairs (their history kept)."""
    from rich.table import Table

    from mur.data.catalogue import catalogue_entries
    from mur.settings import get_settings

    settings = get_settings()
    with _database() as db:
        entries = catalogue_entries(settings, db)
    active = sum(e.status == "active" for e in entries)
    table = Table(title=f"{active} pair(s) in the catalogue, {len(entries) - active} removed")
    for column in ("pair", "source", "status", "candles", "first", "last", "by", "when"):
        table.add_column(column, justify="right" if column == "candles" else "left")
    for e in entries:
        table.add_row(
            e.pair,
            e.source,
            e.status,
            str(e.candles) if e.source == "csv" else "-",
            fmt_when(e.first_open),
            fmt_when(e.last_open),
            e.changed_by or "-",
            fmt_when(e.changed_at),
        )
    print_table(table)


@pairs_app.command("add")
def pairs_add(
    symbol: Annotated[str, typer.Argument(help="Binance symbol (DOGEUSDT) or pair (doge_usdt)")],
    csv: Annotated[
        Path | None,
        typer.Option(
            "--csv",
            help="hourly klines of the pair (offline market data): timestamp,open,high,low,close,volume",
        ),
    ] = None,
    by: ByOption = None,
) -> None:
    """Add a pair: from the market (validated against the exchange), or from a CSV of its hourly klines."""
    from mur.data.catalogue import add_csv_pair, add_exchange_pair
    from mur.settings import get_settings

    settings = get_settings()
    with _database() as db:
        if csv is not None:
            record = add_csv_pair(settings, db, symbol, csv, name=csv.name, added_by=_actor(by))
            what = f"{record.candles} hourly candles from {csv.name}"
        else:
            record = add_exchange_pair(settings, db, symbol, added_by=_actor(by))
            what = f"candles from the market data ({settings.data.market_data})"
    typer.echo(f"added {record.pair}: {what}; the next run of mur_training trains it")


@pairs_app.command("remove")
def pairs_remove(
    pair: Annotated[str, typer.Argument(help="pair (doge_usdt) or symbol (DOGEUSDT)")], by: ByOption = None
) -> None:
    """Stop training a pair; its forecasts, track record, registered versions and candles stay."""
    from mur.data.catalogue import remove_pair
    from mur.settings import get_settings

    settings = get_settings()
    with _database() as db:
        record = remove_pair(settings, db, pair, removed_by=_actor(by))
    typer.echo(
        f"removed {record.pair} from the catalogue (its history is kept); mur pairs add brings it back"
    )
