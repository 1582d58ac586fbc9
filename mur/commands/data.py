"""``mur data``: look at candles, list pairs, run the Binance replay server."""

from __future__ import annotations

import functools
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Annotated

import typer

from mur.errors import ServiceError

if TYPE_CHECKING:
    import pandas as pd

    from mur.settings import Settings

DEFAULT_REMOTE_DAYS = 7

app = typer.Typer(
    name="data",
    no_args_is_help=True,
    help="Market data: show candles, list pairs, run the Binance replay server.",
)


def parse_when(value: str | None, option: str) -> datetime | None:
    """ISO-8601 date/time -> UTC datetime (naive means UTC); ``None`` passes through."""
    from mur.errors import DataValidationError
    from mur.timeutil import parse_time

    try:
        return parse_time(None if value is None else value.strip())
    except DataValidationError:
        raise typer.BadParameter(f"{value!r} is not an ISO-8601 date/time", param_hint=option) from None


def candles_table(df: pd.DataFrame, title: str) -> object:
    """A rich table of candles (open time, OHLC, volume, trades)."""
    from rich import box
    from rich.markup import escape
    from rich.table import Table

    from mur.data import format_ts

    names = ("open time (UTC)", "open", "high", "low", "close", "volume", "trades")
    rows = [
        (
            format_ts(row.timestamp).removesuffix(" UTC"),
            f"{row.open:.8g}",
            f"{row.high:.8g}",
            f"{row.low:.8g}",
            f"{row.close:.8g}",
            f"{row.volume:.8g}",
            f"{row.trades:d}",
        )
        for row in df.itertuples(index=False)
    ]
    table = Table(
        title=escape(title), title_justify="left", box=box.SIMPLE_HEAD, padding=(0, 0, 0, 1), show_edge=False
    )
    for i, name in enumerate(names):
        width = max([len(name), *(len(r[i]) for r in rows)])
        table.add_column(name, justify="left" if i == 0 else "right", no_wrap=True, min_width=width)
    for r in rows:
        table.add_row(*r)
    return table


def summary_lines(df: pd.DataFrame) -> list[str]:
    """Range, row count, gap and zero-volume summary of a candle frame."""
    from mur.data import format_ts, missing_hours

    first, last = df["timestamp"].iloc[0], df["timestamp"].iloc[-1]
    lines = [f"range: {format_ts(first)} to {format_ts(last)} ({len(df):,} candles)"]
    gaps = missing_hours(df)
    if gaps:
        shown = ", ".join(format_ts(t) for t in gaps[:5]) + (" …" if len(gaps) > 5 else "")
        lines.append(
            f"gaps: {len(gaps)} missing hour(s): {shown} (filled by regularize_hourly, policy ffill)"
        )
    else:
        lines.append("gaps: none")
    zero = df.loc[df["volume"] == 0, "timestamp"]
    if len(zero):
        shown = ", ".join(format_ts(t) for t in zero.iloc[:5])
        lines.append(f"zero-volume candles: {len(zero)} ({shown})")
    return lines


@app.command()
def show(
    pair: Annotated[str, typer.Argument(help="trading pair, e.g. btc_usdt")],
    start: Annotated[str | None, typer.Option(help="first open time, ISO-8601 UTC (inclusive)")] = None,
    end: Annotated[str | None, typer.Option(help="end, ISO-8601 UTC (exclusive)")] = None,
    tail: Annotated[int, typer.Option(min=1, help="how many of the last candles to print")] = 10,
) -> None:
    """Print the last candles of PAIR in [--start, --end), with the range and gap summary."""
    from rich.console import Console

    from mur.data import get_market_data
    from mur.pairs import normalize_pair
    from mur.settings import get_settings

    settings = get_settings()
    source = get_market_data(settings)
    lo, hi = parse_when(start, "--start"), parse_when(end, "--end")
    console = Console()
    if lo is None and settings.data.market_data == "binance":
        # Paging a remote source from its first candle takes long: default to the last week of data.
        anchor = source.data_range(pair)[1] + timedelta(hours=1)
        anchor = min(anchor, hi) if hi is not None else anchor
        lo = anchor - timedelta(days=DEFAULT_REMOTE_DAYS)
        console.print(f"no --start: showing the last {DEFAULT_REMOTE_DAYS} days", highlight=False)
    df = source.klines(pair, lo, hi)
    origin: str = settings.data.market_data  # offline, a pair that is not bundled was uploaded (--csv)
    if origin == "bundled" and normalize_pair(pair) not in source.pairs():
        origin = "uploaded"
    console.print(candles_table(df.tail(tail), f"{pair} 1h candles ({origin})"))
    for line in summary_lines(df):
        console.print(line, highlight=False, soft_wrap=True, markup=False)


@app.command()
def pairs() -> None:
    """List the pairs the configured source knows (with ranges for the bundled data)."""
    from mur.data import format_ts, get_market_data
    from mur.settings import get_settings

    settings = get_settings()
    source = get_market_data(settings)
    if settings.data.market_data == "bundled":
        for pair in source.pairs():
            first, last = source.data_range(pair)
            typer.echo(f"{pair:<10} {format_ts(first)} to {format_ts(last)}  (up to market now)")
    else:
        for pair in source.pairs():
            typer.echo(pair)


def _uploaded_frames(settings: Settings) -> dict[str, pd.DataFrame]:
    """The pairs an admin uploaded (``mur pairs add --csv``), served beside the bundled ones and re-read while
    the server runs (:class:`~devstack.replay.ReplayServer`); a failed read raises (the server keeps the
    last pairs it read and logs why)."""
    from mur.data.uploaded import uploaded_candles
    from mur.db import Database

    with Database(settings, maxconn=1) as db:
        return uploaded_candles(db)


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="address to bind")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="port (0 = any free port)")] = 9100,
    archive: Annotated[
        bool,
        typer.Option("--archive", help="serve every bundled candle (no market clock: nothing is 'future')"),
    ] = False,
) -> None:
    """Serve the bundled candles over a Binance-compatible REST API until Ctrl-C.

    By default the server follows the market clock (MUR_CLOCK_*, the local stack's clock.json): its time is
    market now and candles that have not closed by then are invisible, like a live exchange."""
    from mur.clock import market_clock
    from mur.commands.local import replay
    from mur.settings import get_settings

    settings = get_settings()
    clock = None if archive else market_clock(settings.replace(market_data="bundled"))
    try:
        server = replay.make_server(
            host,
            port,
            synthetic=settings.data.synthetic_pairs,
            clock=clock,
            reload=functools.partial(_uploaded_frames, settings),
        )
    except OSError as exc:
        raise ServiceError(f"replay server cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    typer.echo(f"Binance replay server on {server.url} ({', '.join(sorted(server.symbols()))}, 1h)")
    if clock is not None:
        typer.echo(f"market clock: now {clock.as_dict()['now']}, speed {clock.speed:g}")
    typer.echo("Point the client at it with:")
    typer.echo(f"  MUR_MARKET_DATA=binance MUR_BINANCE_API_URL={server.api_url}")
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        typer.echo("stopped")
    finally:
        server.server_close()
