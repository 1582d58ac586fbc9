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

from mur.errors import ConfigError, ServiceError

TOKEN_ENV = "MUR_API_TOKEN"
URL_ENV = "MUR_API_URL"


def token_file() -> Path:
    """``$XDG_CONFIG_HOME/mur/token`` (default ``~/.config/mur/token``)."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "mur" / "token"


def api_token(*, stack: bool = False) -> tuple[str, str]:
    """``(token, where it came from)``: the environment, the token file, or (``stack``) the local stack."""
    value = os.environ.get(TOKEN_ENV, "").strip()
    if value:
        return value, TOKEN_ENV
    path = token_file()
    if path.is_file():
        lines = path.read_text().strip().splitlines()
        if lines and lines[0].strip():
            return lines[0].strip(), str(path)
    if stack:
        from mur.devstack.first_run import check_token
        from mur.settings import get_settings

        admin = os.environ.get("MUR_ADMIN_USER", "admin")  # the admin `mur up` created (its --admin-user)
        return check_token(get_settings(), admin), "the local stack"
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
    host = "127.0.0.1" if settings.serve_host in ("0.0.0.0", "::", "") else settings.serve_host
    return f"http://{host}:{settings.serve_port}"


def _message(response: Any) -> str:
    """The API's JSON ``{"error", "message"}`` (or FastAPI's ``detail``), else the start of the body."""
    try:
        body = response.json()
    except ValueError:
        return response.text.strip()[:200] or response.reason_phrase
    if isinstance(body, dict):
        for key in ("message", "detail", "error"):
            if isinstance(body.get(key), str) and body[key]:
                return str(body[key])
    return str(body)[:200]


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
        raise ServiceError(f"the API refused the token (401: {_message(response)}); check {TOKEN_ENV}")
    if response.status_code == 404:
        raise ServiceError(f"404: {_message(response)} (the pairs served: mur forecast --all)")
    if response.status_code >= 400:
        raise ServiceError(f"the API answered {response.status_code}: {_message(response)}")
    try:
        return response.json()
    except ValueError as exc:
        raise ServiceError(f"the API's answer to {path} is not JSON") from exc


def _hour(text: str | None) -> str:
    """``2024-11-04T08:00:00Z`` → ``2024-11-04 08:00``."""
    return (text or "?").replace("T", " ")[:16]


def _close_time(entry: dict[str, Any]) -> str:
    """When the forecast candle closes: ``close_time``, else an hour after its open ``target_time``."""
    from datetime import datetime, timedelta

    if entry.get("close_time"):
        return _hour(entry["close_time"])
    try:
        opened = datetime.fromisoformat(str(entry["target_time"]).replace("Z", "+00:00"))
    except (KeyError, ValueError):
        return "?"
    return (opened + timedelta(hours=1)).strftime("%Y-%m-%d %H:%M")


def _pct(value: float, base: float) -> str:
    return f"{(value / base - 1) * 100:+.2f} %" if base else "-"


def heading(answer: dict[str, Any]) -> str:
    """The line above a pair's table: pair, last close, model and its age, market now."""
    last = float(answer.get("last_close") or 0.0)
    text = f"{answer.get('pair')}  last close {last:,.4f} (candle {_hour(answer.get('candle_time'))} UTC)"
    text += f"  model v{answer.get('model_version')}"
    if answer.get("model_age_hours") is not None:
        text += f", trained {float(answer['model_age_hours']):.0f} market hour(s) ago"
    if answer.get("as_of"):
        text += f"  (market now {_hour(answer.get('as_of'))} UTC)"
    return text


def forecast_table(answer: dict[str, Any]) -> Any:
    """One pair's answer as a Rich table: per horizon, when the candle closes, the median and the range."""
    from rich.table import Table

    last = float(answer.get("last_close") or 0.0)
    horizons = answer.get("horizons") or []
    level = horizons[0].get("level") if horizons else None
    table = Table(caption="times: market time (UTC)")
    range_title = f"{level * 100:.0f} % range" if isinstance(level, int | float) else "range"
    for column, justify in (
        ("horizon", "right"),
        ("closes at", "left"),
        ("median", "right"),
        ("vs last", "right"),
        (range_title, "right"),
        ("width", "right"),
    ):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    if not horizons:  # a point-only model: the next close alone
        point = float(answer.get("forecast") or 0.0)
        table.add_row("1 h", _close_time(answer), f"{point:,.4f}", _pct(point, last), "-", "-")
        return table
    for h in horizons:
        median, lower, upper = float(h["median"]), float(h["lower"]), float(h["upper"])
        table.add_row(
            f"{h.get('hours')} h",
            _close_time(h),
            f"{median:,.4f}",
            _pct(median, last),
            f"{lower:,.4f} – {upper:,.4f}",
            f"±{(upper - lower) / 2 / median * 100:.2f} %" if median else "-",
        )
    return table


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
) -> None:
    """Ask the running API for the forecast of PAIR: the median and the range at every horizon.

    Token: MUR_API_TOKEN, else ~/.config/mur/token (first line); address: MUR_API_URL, else the Serve settings.
    """
    import httpx
    from rich.console import Console

    if not pairs and not all_:
        raise ConfigError("name a pair (e.g. mur forecast btc_usdt) or give --all")
    token, _source = api_token(stack=stack_token)
    url = api_url()
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(headers=headers, timeout=30.0, trust_env=False) as client:
        wanted = list(pairs or [])
        if all_:
            wanted += [p for p in fetch(client, url, "/v1/pairs").get("pairs", []) if p not in wanted]
        answers = [fetch(client, url, f"/v1/forecast/{pair.strip().lower()}") for pair in wanted]
    if as_json:
        typer.echo(json.dumps(answers if len(answers) != 1 else answers[0], indent=2))
        return
    console = Console(width=max(Console().width, 100))
    for answer in answers:
        console.print(heading(answer), highlight=False, soft_wrap=True)
        console.print(forecast_table(answer))


def register(app: typer.Typer) -> None:
    """Add ``mur forecast``."""
    app.command("forecast")(forecast)
