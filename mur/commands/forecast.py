"""``mur forecast PAIR``: ask the running API for a pair's forecast and print the median and the range at every
horizon.

The API's address is ``MUR_API_URL``, else the Serve address of the settings (``MUR_SERVE_HOST`` /
``MUR_SERVE_PORT``). The bearer token comes from ``MUR_API_TOKEN``, else the first line of the token file
(``$XDG_CONFIG_HOME/mur/token``, default ``~/.config/mur/token``; keep it mode 600), else, with
``--stack-token``, the local stack's own check token (what ``mur up`` uses; needs the stack's database and
secrets). The token is never printed. Errors (no token, 401, 404 unknown pair, 429, the API down) are one line.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any

import typer

from mur.commands.db import fmt_when
from mur.errors import ConfigError, ServiceError
from mur.serving.contract import ForecastBody, ForecastOut

TOKEN_ENV = "MUR_API_TOKEN"
URL_ENV = "MUR_API_URL"
HINTS = {401: f"; check {TOKEN_ENV}", 404: " (the pairs served: mur forecast --all)"}
"""What to do about an error answer, by its status."""
commands = typer.Typer()  # forecast: mur.cli adds it to the root


def token_file() -> Path:
    """``$XDG_CONFIG_HOME/mur/token`` (default ``~/.config/mur/token``)."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "mur" / "token"


def api_token(*, stack: bool = False) -> str:
    """The token from the environment, the token file (its first line), or (``stack``) the local stack."""
    if value := os.environ.get(TOKEN_ENV, "").strip():
        return value
    path = token_file()
    if path.is_file():
        first_line = path.read_text().strip().partition("\n")[0].strip()
        if first_line:
            return first_line
    if stack:
        from mur.commands.local import first_run
        from mur.settings import get_settings

        admin = os.environ.get("MUR_ADMIN_USER", "admin")  # the admin `mur up` created (its --admin-user)
        return first_run.check_token(get_settings(), admin)
    raise ConfigError(
        f"no API token: set {TOKEN_ENV}, or write one to {path} (mode 600). "
        "Create one with: mur tokens create USER --name cli"
    )


def api_url() -> str:
    """``MUR_API_URL``, else the settings' Serve address (a wildcard host read as 127.0.0.1)."""
    if value := os.environ.get(URL_ENV, "").strip():
        return value
    from mur.settings import get_settings

    serving = get_settings().serving
    host = "127.0.0.1" if serving.serve_host in ("0.0.0.0", "::", "") else serving.serve_host
    return f"http://{host}:{serving.serve_port}"


def _pct(value: float, base: float) -> str:
    return f"{(value / base - 1) * 100:+.2f} %" if base else "-"


def heading(answer: ForecastOut) -> str:
    """The line above a pair's table: pair, last close, model and its age, market now."""
    text = f"{answer.pair}  last close {answer.last_close:,.4f} (candle {fmt_when(answer.candle_time)} UTC)"
    text += f"  model v{answer.model_version}"
    if answer.model_age_hours is not None:
        text += f", trained {answer.model_age_hours:.0f} market hour(s) ago"
    if answer.as_of is not None:
        text += f"  (market now {fmt_when(answer.as_of)} UTC)"
    return text


def forecast_table(answer: ForecastBody) -> Any:
    """One pair's answer as a Rich table: per horizon, when the candle closes, the median and the range."""
    from rich.table import Table

    last, horizons = answer.last_close, answer.horizons
    table = Table(caption="times: market time (UTC)")
    range_title = f"{horizons[0].level * 100:.0f} % range" if horizons else "range"
    for column in ("horizon", "closes at", "median", "vs last", range_title, "width"):
        table.add_column(column, justify="left" if column == "closes at" else "right")
    if not horizons:  # a point-only model: the next close alone
        point = answer.forecast
        table.add_row("1 h", fmt_when(answer.closes_at()), f"{point:,.4f}", _pct(point, last), "-", "-")
        return table
    for h in horizons:
        table.add_row(
            f"{h.hours} h",
            fmt_when(h.closes_at()),
            f"{h.median:,.4f}",
            _pct(h.median, last),
            f"{h.lower:,.4f} – {h.upper:,.4f}",
            f"±{(h.upper - h.lower) / 2 / h.median * 100:.2f} %" if h.median else "-",
        )
    return table


@commands.command()
def forecast(
    pairs: Annotated[
        list[str] | None, typer.Argument(help="pair(s), e.g. btc_usdt", show_default=False)
    ] = None,
    all_: Annotated[bool, typer.Option("--all", help="every pair the API serves")] = False,
    stack_token: Annotated[
        bool,
        typer.Option("--stack-token", help="no token set: use the local stack's own (needs its database)"),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print the API's JSON answers")] = False,
    as_of: Annotated[
        str | None,
        typer.Option(
            "--as-of",
            help="what was served at this market time (ISO-8601, UTC without a zone), from the track record",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Ask the running API for the forecast of PAIR: the median and the range at every horizon (with --as-of:
    the forecast it served at that market time, from the track record; uses no quota).

    Token: MUR_API_TOKEN, else ~/.config/mur/token (first line); address: MUR_API_URL, else the Serve settings.
    """
    from rich.console import Console

    from mur.errors import ServiceAnswerError, ServiceUnavailable
    from mur.serving.client import ServeClient

    if not pairs and not all_:
        raise ConfigError("name a pair (e.g. mur forecast btc_usdt) or give --all")
    token = api_token(stack=stack_token)
    serve = ServeClient(api_url(), timeout_s=30.0)
    try:
        wanted = list(pairs or [])
        if all_:
            wanted += [p for p in serve.pairs(token) if p not in wanted]
        answers = [serve.forecast(pair.strip().lower(), token, as_of=as_of) for pair in wanted]
    except ServiceUnavailable as exc:
        raise ServiceUnavailable(f"{exc}; is the stack up? (mur status)") from exc
    except ServiceAnswerError as exc:
        raise ServiceError(f"{exc}{HINTS.get(exc.status or 0, '')}") from exc
    finally:
        serve.close()
    if as_json:
        bodies = [answer.model_dump(mode="json", exclude_unset=True) for answer in answers]
        typer.echo(json.dumps(bodies if len(bodies) != 1 else bodies[0], indent=2))
        return
    console = Console(width=max(Console().width, 100))
    for answer in answers:
        if as_of is not None:  # its as_of is when it was served, not market now
            console.print(
                f"served at {fmt_when(answer.as_of or answer.candle_time)} UTC (from the track record)"
            )
            answer = answer.model_copy(update={"as_of": None})
        console.print(heading(answer), highlight=False, soft_wrap=True)
        console.print(forecast_table(answer))
