"""Dash dashboard: accounts (Flask-Login on PostgreSQL), forecasts, API tokens and administration.

Start it with ``mur dash`` or ``python -m dash_app``; build it in code with :func:`create_app`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dash import Dash

__all__ = ["create_app"]


def create_app(*args: Any, **kwargs: Any) -> Dash:
    """See :func:`dash_app.app.create_app` (imported on call, so importing this package stays cheap)."""
    from dash_app.app import create_app as factory

    return factory(*args, **kwargs)
