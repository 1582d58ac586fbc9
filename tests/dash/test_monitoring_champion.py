"""Monitoring names the champion version: the report's own, else the one the API serves now (a monitoring run
that could not read the registry left it unknown; the page said "champion version –" while v2 served)."""

from __future__ import annotations

from dash_fakes import MODEL_VERSION, monitoring_report
from dash_helpers import logged_in, make_user, monitoring_page, text_of
from flask.testing import FlaskClient

from mur.db import Database
from mur.monitoring.store import save_report


def test_a_report_without_its_champion_names_the_served_one(
    client: FlaskClient, dash_database: Database
) -> None:
    logged_in(client, make_user(dash_database))
    report = monitoring_report("eth_usdt", as_of="2024-11-05T12:00:00Z").model_copy(
        update={"champion_version": None}
    )
    save_report(dash_database, report)
    try:
        summary = text_of(monitoring_page(client, "eth_usdt")["monitoring-summary"])
    finally:  # the session's database: other tests expect no eth_usdt report
        with dash_database.cursor() as cur:
            cur.execute("DELETE FROM monitoring_reports WHERE pair = %s", ("eth_usdt",))
    assert f"champion version {MODEL_VERSION}," in summary and "champion version –" not in summary
