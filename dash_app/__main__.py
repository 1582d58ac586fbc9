"""``python -m dash_app [--host H] [--port P]``: run the dashboard (same as ``mur dash``)."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    """Parse the options and serve until interrupted."""
    from dash_app.server import serve
    from mur.errors import MurError
    from mur.settings import get_settings

    settings = get_settings()
    parser = argparse.ArgumentParser(prog="python -m dash_app", description=__doc__)
    parser.add_argument(
        "--host",
        default=settings.dashboard.dash_host,
        help=f"interface (default {settings.dashboard.dash_host})",
    )
    parser.add_argument(
        "--port",
        type=int,
        default=settings.dashboard.dash_port,
        help=f"port (default {settings.dashboard.dash_port})",
    )
    parser.add_argument("--debug", action="store_true", help="Dash dev tools and reloader (development only)")
    args = parser.parse_args(argv)
    try:
        serve(settings, host=args.host, port=args.port, debug=args.debug)
    except MurError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
