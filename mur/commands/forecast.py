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
from urllib.parse import urlencode

import typer

from mur.commands.db import fmt_when
from mur.errors import ConfigError, ServiceError, error_detail
from mur.serving.contract import ForecastBody, ForecastOut, misfit

TOKEN_ENV = "MUR_API_TOKEN"
URL_ENV = "MUR_API_URL"
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
    if path.is_file() and (first := path.read_text().strip().partition("\n")[0].strip()):
        return first
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
    value = os.environ.get(URL_ENV, "").strip()
    if value:
        return value.rstrip("/")
    from mur.settings import get_settings

    settings = get_settings()
    host = (
        "127.0.0.1" if settings.serving.serve_host in ("0.0.0.0", "::", "") else settings.serving.serve_host
    )
    return f"http://{host}:{settings.serving.serve_port}"


def fetch(client: Any, url: str, path: str) -> Any:
    """GET ``url + path`` with the client's token; API errors become one-line :class:`ServiceError`."""
    import httpx

    try:
        response = client.get(f"{url}{path}")
    except httpx.TransportError as exc:
        raise ServiceError(
            f"the API does not answer at {url} ({exc}); is the stack up? (mur status)"
        ) from exc
    if response.status_code == 401:
        raise ServiceError(f"the API refused the token (401: {error_detail(response)}); check {TOKEN_ENV}")
    if response.status_code == 404:
        raise ServiceError(f"404: {error_detail(response)} (the pairs served: mur forecast --all)")
    if response.status_code >= 400:
        raise ServiceError(f"the API answered {response.status_code}: {error_detail(response)}")
    try:
        return response.json()
    except ValueError as exc:
        raise ServiceError(f"the API's answer to {path} is not JSON") from exc


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


def read_answer(body: Any, pair: str) -> ForecastOut:
    """The API's answer read through its contract (:mod:`mur.serving.contract`); one that does not fit is a
    one-line :class:`ServiceError`."""
    from pydantic import ValidationError

    try:
        return ForecastOut.model_validate(body)
    except ValidationError as exc:
        raise ServiceError(
            f"the API's forecast of {pair} does not fit its contract ({misfit(exc)})"
        ) from None


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
    import httpx
    from rich.console import Console

    if not pairs and not all_:
        raise ConfigError("name a pair (e.g. mur forecast btc_usdt) or give --all")
    headers = {"Authorization": f"Bearer {api_token(stack=stack_token)}"}
    url = api_url()
    with httpx.Client(headers=headers, timeout=30.0, trust_env=False) as client:
        wanted = list(pairs or [])
        if all_:
            wanted += [p for p in fetch(client, url, "/v1/pairs").get("pairs", []) if p not in wanted]
        query = "" if as_of is None else "?" + urlencode({"as_of": as_of})
        answers = [fetch(client, url, f"/v1/forecast/{pair.strip().lower()}{query}") for pair in wanted]
    if as_json:
        typer.echo(json.dumps(answers if len(answers) != 1 else answers[0], indent=2))
        return
    console = Console(width=max(Console().width, 100))
    for pair, body in zip(wanted, answers, strict=True):
        answer = read_answer(body, pair)
        if as_of is not None:  # its as_of is when it was served, not market now
            console.print(
                f"served at {fmt_when(answer.as_of or answer.candle_time)} UTC (from the track record)"
            )
            answer = answer.model_copy(update={"as_of": None})
        console.print(heading(answer), highlight=False, soft_wrap=True)
        console.print(forecast_table(answer))
