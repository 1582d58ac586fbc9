"""``python -m dash_app [--host H] [--port P] [--debug]``: run the dashboard (the ``mur dash`` command)."""

from __future__ import annotations

import sys


def main() -> int:
    """Run ``mur dash`` with this command line; an expected error is one line on stderr and exit status 1."""
    import typer

    from mur.commands.dash import dash
    from mur.errors import MurError

    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, rich_markup_mode=None)
    app.command()(dash)
    try:
        app(prog_name="python -m dash_app")
    except MurError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
