"""Dash dashboard: accounts (Flask-Login on PostgreSQL), forecasts, API tokens and administration.

Start it with ``mur dash`` or ``python -m dash_app``; build it in code with :func:`dash_app.app.create_app`.
"""
