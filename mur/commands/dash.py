"""``mur dash``: run the Dash dashboard (see ``docs/dashboard.md``)."""

from __future__ import annotations

from typing import Annotated

import typer

commands = typer.Typer()  # dash: mur.cli adds it to the root


@commands.command()
def dash(
    host: Annotated[
        str | None, typer.Option(help="interface to listen on (default MUR_DASH_HOST, 127.0.0.1)")
    ] = None,
    port: Annotated[int | None, typer.Option(help="port (default MUR_DASH_PORT, 8050)")] = None,
    debug: Annotated[
        bool, typer.Option("--debug", help="Dash dev tools and auto-reload (development only)")
    ] = False,
) -> None:
    """Run the dashboard on http://127.0.0.1:8050 (needs `mur db migrate` first; forecasts need the Serve API)."""
    from dash_app.server import serve
    from mur.settings import get_settings

    serve(get_settings(), host=host, port=port, debug=debug)
