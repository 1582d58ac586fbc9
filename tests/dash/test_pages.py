"""Forecast, API and Admin pages through their Dash callbacks, with a fake Serve API and a fake Airflow."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import pandas as pd
import pytest
from dash import Dash
from dash_fakes import METRICS, MODEL_VERSION, FakeService, bearer, fake_serve, free_port
from dash_helpers import (
    callback_json,
    dash_update,
    forecast_page,
    logged_in,
    make_user,
    page,
    save_user,
    text_of,
    token_action,
    train,
)
from flask.testing import FlaskClient

from dash_app.app import create_app
from dash_app.components import fmt_time
from dash_app.context import DASHBOARD_TOKEN_NAME
from mur.data import BundledMarketData
from mur.db import (
    Database,
    get_usage,
    get_user_by_id,
    list_forecasts,
    list_tokens,
    list_users,
    lookup_token,
    record_forecast,
)
from mur.settings import Settings


def trace_names(figure: dict[str, Any]) -> list[str]:
    return [trace.get("name", "") for trace in figure["data"]]


# ------------------------------------------------------------------------------------------------
# Forecast
# ------------------------------------------------------------------------------------------------


def test_forecast_page_draws_candles_and_the_forecast(
    client: FlaskClient,
    dash_database: Database,
    serve_api: FakeService,
    last_candles: dict[str, tuple[str, float]],
) -> None:
    member = make_user(dash_database)
    logged_in(client, member)
    before = len(serve_api.requests)
    out = forecast_page(client, "btc_usdt")

    figure = out["forecast-chart"]["figure"]
    candles, marker = figure["data"]
    assert candles["type"] == "candlestick" and len(candles["x"]) == 72
    candle_time, close = last_candles["btc_usdt"]
    assert marker["name"] == f"forecast (model v{MODEL_VERSION})"
    assert marker["y"][-1] == close * 1.01
    assert "Next-hour close forecast" in text_of(out["forecast-headline"])
    champion = text_of(out["forecast-champion"])
    assert f"version {MODEL_VERSION}" in champion and str(METRICS["model"]["mae"]) in champion

    # the forecast was stored when made; the Serve API saw this user's own dashboard token
    stored = list_forecasts(dash_database, pair="btc_usdt", model_version=MODEL_VERSION)
    target = pd.Timestamp(candle_time) + pd.Timedelta(hours=1)
    assert any(f.target_time == target and f.predicted == close * 1.01 for f in stored)
    tokens = {bearer(r) for r in serve_api.requests[before:]}
    assert len(tokens) == 1
    owner = lookup_token(dash_database, token=tokens.pop() or "")
    assert owner is not None and owner.user_id == member.id
    assert [t.name for t in list_tokens(dash_database, user_id=member.id)] == [DASHBOARD_TOKEN_NAME]


def test_forecast_page_draws_the_fan_and_the_model_card(
    dash_settings: Settings, dash_database: Database, last_candles: dict[str, tuple[str, float]]
) -> None:
    """A quantile champion: the chart shows the 90 % range of every horizon and the median through them;
    the card shows the trained window, plain-language skills, coverage and the "no skill" badge."""
    serve = fake_serve(last_candles, forecast_factor=1.0, quantiles=True).start()
    try:
        app = create_app(dash_settings.replace(serve_port=serve.port), db=dash_database)
        client = app.server.test_client()
        logged_in(client, make_user(dash_database))
        out = forecast_page(client, "btc_usdt")
    finally:
        serve.stop()
    figure = out["forecast-chart"]["figure"]
    names = trace_names(figure)
    assert names == ["BTC_USDT", "90% range", f"median forecast (model v{MODEL_VERSION})"]
    candle_time, close = last_candles["btc_usdt"]
    band, median = figure["data"][1], figure["data"][2]
    assert band["fill"] == "toself" and len(band["x"]) == 8  # last close + 3 horizons, out and back
    assert max(band["y"]) == pytest.approx(close * (1 + 0.01 * 24**0.5))
    assert min(band["y"]) == pytest.approx(close * (1 - 0.01 * 24**0.5))
    assert median["y"] == [close, close, close, close]
    closes = [pd.Timestamp(candle_time) + pd.Timedelta(hours=h) for h in (1, 2, 5, 25)]  # each at its close
    assert [pd.Timestamp(x) for x in median["x"]] == closes
    headline = text_of(out["forecast-headline"])
    assert "90% range" in headline and "in 24 h" in headline
    assert "uses one unit of your API quota" in headline  # viewing the page is charged: it says so
    card = text_of(out["forecast-champion"])
    assert "trained on 2025-01-01T00:00:00Z → 2025-12-31T23:00:00Z" in card
    assert "no skill" in card and "no better than 'no change'" in card
    assert "11% better interval score than fixed historical ranges" in card
    assert "90% of the test hours closed inside the 90 % range" in card
    assert "24 h" in card  # the per-horizon table


def test_track_record_compares_model_and_persistence(client: FlaskClient, dash_database: Database) -> None:
    member = make_user(dash_database)
    logged_in(client, member)
    candles = BundledMarketData().klines("eth_usdt", start=pd.Timestamp("2025-12-30T00:00Z").to_pydatetime())
    for i in range(1, 6):  # past forecasts, off by +10 / -10 from the actual close
        row = candles.iloc[-i]
        prev_close = float(candles.iloc[-i - 1]["close"])
        record_forecast(
            dash_database,
            pair="eth_usdt",
            model_version="3",
            target_time=row["timestamp"],
            predicted=float(row["close"]) + (10 if i % 2 else -10),
            last_close=prev_close,
            made_at=row["timestamp"] - timedelta(hours=1),
        )
    out = forecast_page(client, "eth_usdt")
    resolved = [
        f for f in list_forecasts(dash_database, pair="eth_usdt", model_version="3") if f.actual is not None
    ]
    assert len(resolved) == 5
    assert "MAE of the model" in text_of(out["forecast-mae"]) and "10" in text_of(out["forecast-mae"])
    names = trace_names(out["forecast-track"]["figure"])
    assert {"actual close", "model forecast", "MAE model", "MAE persistence"} <= set(names)


def test_track_record_shows_ranges_inside_and_running_coverage(
    client: FlaskClient, dash_database: Database
) -> None:
    """Forecasts with ranges: each resolved row knows whether the close fell inside; the page shows the
    running coverage and the interval skill against the naive range; other horizons are stored too."""
    logged_in(client, make_user(dash_database))
    candles = BundledMarketData().klines("btc_usdt", start=pd.Timestamp("2025-12-30T00:00Z").to_pydatetime())
    for i in range(1, 9):  # 8 past 1 h forecasts: a tight range around the truth, every 4th one missed
        row = candles.iloc[-i]
        close, prev_close = float(row["close"]), float(candles.iloc[-i - 1]["close"])
        centre = close + (5.0 if i % 4 == 0 else 0.0)
        for hours, half in ((1, 0.1), (4, 0.3)):
            record_forecast(
                dash_database,
                pair="btc_usdt",
                model_version="41",
                target_time=row["timestamp"] + timedelta(hours=hours - 1),
                predicted=centre,
                last_close=prev_close,
                made_at=row["timestamp"] - timedelta(hours=1),
                horizon_hours=hours,
                lower=centre - half,
                upper=centre + half,
                level=0.9,
            )
    out = forecast_page(client, "btc_usdt")
    one_hour = [
        f for f in list_forecasts(dash_database, pair="btc_usdt", horizon_hours=1) if f.model_version == "41"
    ]
    assert len(one_hour) == 8 and all(f.actual is not None for f in one_hour)
    assert [f.inside for f in sorted(one_hour, key=lambda f: f.target_time)].count(False) == 2
    assert len(list_forecasts(dash_database, pair="btc_usdt", horizon_hours=4)) >= 8
    text = text_of(out["forecast-mae"])
    assert "had a 90% range: coverage" in text and "75.0%" in text
    assert "interval skill vs naive ranges" in text
    figure = out["forecast-track"]["figure"]
    assert "running coverage of the ranges" in str(figure["layout"]["annotations"])
    marker = next(t for t in figure["data"] if t.get("name") == "model forecast (median, range)")
    assert marker["error_y"]["array"][0] == pytest.approx(0.1)


def test_forecast_page_when_serve_is_down(
    dash_settings: Settings, dash_database: Database, make_client
) -> None:
    app = create_app(dash_settings.replace(serve_port=free_port()), db=dash_database)
    client = app.server.test_client()
    logged_in(client, make_user(dash_database))
    out = forecast_page(client, "btc_usdt")
    status = text_of(out["forecast-status"])
    assert "forecast service is down" in status and "unreachable" in status
    assert trace_names(out["forecast-chart"]["figure"]) == ["BTC_USDT"]  # candles, no forecast
    assert len(out["forecast-chart"]["figure"]["data"][0]["x"]) == 72
    assert out["forecast-headline"]["children"] == ""


def test_forecast_page_when_quota_is_used_up(
    client: FlaskClient, dash_database: Database, serve_api: FakeService
) -> None:
    logged_in(client, make_user(dash_database))
    serve_api.status_override = (429, {"detail": "monthly quota of 0 calls used up"})  # type: ignore[attr-defined]
    out = forecast_page(client, "btc_usdt")
    assert "quota" in text_of(out["forecast-status"]) and "429" in text_of(out["forecast-status"])
    assert trace_names(out["forecast-chart"]["figure"]) == ["BTC_USDT"]


def test_forecast_page_refuses_unknown_pairs(
    client: FlaskClient, dash_database: Database, serve_api: FakeService
) -> None:
    logged_in(client, make_user(dash_database))
    before = len(serve_api.requests)
    out = forecast_page(client, "../../v1/models")
    assert "Pick one of the listed pairs" in text_of(out["forecast-status"])
    assert len(serve_api.requests) == before


# ------------------------------------------------------------------------------------------------
# API tokens
# ------------------------------------------------------------------------------------------------


def test_tokens_create_rotate_revoke_and_show_once(client: FlaskClient, dash_database: Database) -> None:
    member = make_user(dash_database)
    logged_in(client, member)
    out = token_action(client, "token-create", name="laptop")
    shown = text_of(out["token-new"])
    created = next(word for word in shown.split() if word.startswith("mur_"))
    assert lookup_token(dash_database, token=created).user_id == member.id  # type: ignore[union-attr]
    assert created in text_of(out["curl-example"]) and "/v1/forecast/btc_usdt" in text_of(out["curl-example"])
    assert created[:12] + "…" in text_of(out["token-table"])

    # shown once: the page rendered again knows only the prefix
    api_page = text_of(page(client, "/api")["page-content"])
    assert created not in api_page and created[:12] + "…" in api_page and "$MUR_TOKEN" in api_page

    row = next(t for t in list_tokens(dash_database, user_id=member.id) if t.name == "laptop")
    rotated = token_action(client, {"index": row.id, "type": "token-rotate"})
    replacement = next(w for w in text_of(rotated["token-new"]).split() if w.startswith("mur_"))
    assert lookup_token(dash_database, token=created) is None
    assert lookup_token(dash_database, token=replacement).user_id == member.id  # type: ignore[union-attr]

    new_row = next(
        t for t in list_tokens(dash_database, user_id=member.id) if t.is_active and t.name == "laptop"
    )
    revoked = token_action(client, {"index": new_row.id, "type": "token-revoke"})
    assert "revoked" in text_of(revoked["token-new"])
    assert lookup_token(dash_database, token=replacement) is None


def test_tokens_with_an_expiry(client: FlaskClient, dash_database: Database) -> None:
    """The API page's expiry field: the token expires when asked, the list says when, then that it expired."""
    member = make_user(dash_database)
    logged_in(client, member)
    out = token_action(client, "token-create", name="quarter", expires="90d")
    created = next(w for w in text_of(out["token-new"]).split() if w.startswith("mur_"))
    assert "It expires" in text_of(out["token-new"])
    row = next(t for t in list_tokens(dash_database, user_id=member.id) if t.name == "quarter")
    assert row.expires_at is not None and row.expires_at - row.created_at == timedelta(days=90)
    assert fmt_time(row.expires_at) in text_of(out["token-table"])
    assert lookup_token(dash_database, token=created).user_id == member.id  # type: ignore[union-attr]
    forever = token_action(client, "token-create", name="forever")
    assert "It expires" not in text_of(forever["token-new"]) and "never" in text_of(forever["token-table"])

    with dash_database.cursor() as cur:  # two hours later, for a token given one
        cur.execute(
            "UPDATE api_tokens SET created_at = now() - interval '2 hours', "
            "expires_at = now() - interval '1 hour' WHERE id = %s",
            (row.id,),
        )
    listing = text_of(page(client, "/api")["page-content"])
    assert re.search(r"quarter.*expired", listing), listing
    assert "Nothing changed" in text_of(token_action(client, "token-create", expires="tomorrow")["token-new"])


def test_tokens_of_other_users_cannot_be_touched(
    client: FlaskClient, make_client, dash_database: Database
) -> None:
    victim, attacker = make_user(dash_database), make_user(dash_database)
    victim_client = logged_in(make_client(), victim)
    plaintext = next(
        w
        for w in text_of(token_action(victim_client, "token-create")["token-new"]).split()
        if w.startswith("mur_")
    )
    victim_token = list_tokens(dash_database, user_id=victim.id)[0]
    logged_in(client, attacker)
    for kind in ("token-revoke", "token-rotate"):
        out = token_action(client, {"index": victim_token.id, "type": kind})
        assert "Nothing changed" in text_of(out["token-new"])
    assert lookup_token(dash_database, token=plaintext).user_id == victim.id  # type: ignore[union-attr]


def test_usage_and_reserved_name(client: FlaskClient, dash_database: Database) -> None:
    from mur.db import consume_quota, set_quota

    member = make_user(dash_database)
    set_quota(dash_database, user_id=member.id, monthly_limit=10)
    consume_quota(dash_database, user_id=member.id, units=4)
    logged_in(client, member)
    content = page(client, "/api")["page-content"]
    assert "4 / 10" in text_of(content) and "40%" in text_of(content)
    out = token_action(client, "token-create", name=DASHBOARD_TOKEN_NAME)
    assert "reserved" in text_of(out["token-new"])
    assert get_usage(dash_database, user_id=member.id) == (4, 10)


# ------------------------------------------------------------------------------------------------
# Admin
# ------------------------------------------------------------------------------------------------


def test_admin_edits_users_roles_and_quotas(client: FlaskClient, dash_database: Database) -> None:
    admin, member = make_user(dash_database, admin=True), make_user(dash_database)
    logged_in(client, admin)
    out = callback_json(save_user(client, member.id, status="disabled", roles=("admin", "member"), quota=77))
    assert "Saved" in text_of(out["admin-result"])
    changed = get_user_by_id(dash_database, user_id=member.id)
    assert changed is not None and changed.disabled and changed.roles == ("admin", "member")
    summary = next(u for u in list_users(dash_database) if u.id == member.id)
    assert summary.monthly_limit == 77 and member.username in text_of(out["admin-users-table"])

    loaded = callback_json(
        dash_update(
            client,
            "..admin-status.value...admin-roles.value...admin-quota.value..",
            inputs=[{"id": "admin-user", "property": "value", "value": member.id}],
            changed=["admin-user.value"],
        )
    )
    assert loaded == {
        "admin-status": {"value": "disabled"},
        "admin-roles": {"value": ["admin", "member"]},
        "admin-quota": {"value": 77},
    }

    # the field is text (a number field sends a typo as blank, which would reset the quota): digits as typed
    callback_json(save_user(client, member.id, status="disabled", roles=("member",), quota=" 40 "))
    assert next(u for u in list_users(dash_database) if u.id == member.id).monthly_limit == 40

    callback_json(save_user(client, member.id, status="active", roles=("member",), quota=""))
    restored = next(u for u in list_users(dash_database) if u.id == member.id)
    assert not restored.disabled and restored.roles == ("member",) and restored.quota_is_default


def test_admin_save_is_one_transaction(client: FlaskClient, dash_database: Database) -> None:
    """If the last of the three changes (status) fails, roles and quota are not changed either."""
    admin, member = make_user(dash_database, admin=True), make_user(dash_database)
    logged_in(client, admin)
    from psycopg import sql

    trigger = sql.Identifier(f"mur_test_refuse_disable_{member.id}")
    import psycopg

    owner = (
        dash_database.settings.db.dsn()
    )  # DDL needs the owner: the app's own role cannot change the schema
    with psycopg.connect(owner, autocommit=True) as cur:  # the database refuses to disable this one user
        # DDL takes no bind parameters: identifiers and the id are composed by psycopg, never by f-strings
        cur.execute(
            sql.SQL(
                """
                CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS
                $$ BEGIN RAISE EXCEPTION 'refused by test'; END $$;
                CREATE TRIGGER {name} BEFORE UPDATE OF disabled ON users FOR EACH ROW
                WHEN (NEW.id = {user_id} AND NEW.disabled) EXECUTE FUNCTION {name}();
                """
            ).format(name=trigger, user_id=sql.Literal(member.id))
        )
    try:
        response = save_user(client, member.id, status="disabled", roles=("admin", "member"), quota=77)
        assert response.status_code == 500
    finally:
        with psycopg.connect(owner, autocommit=True) as cur:
            cur.execute(sql.SQL("DROP TRIGGER {name} ON users; DROP FUNCTION {name}()").format(name=trigger))
    unchanged = next(u for u in list_users(dash_database) if u.id == member.id)
    assert unchanged.roles == ("member",) and unchanged.quota_is_default and not unchanged.disabled


def test_admin_quota_out_of_range_changes_nothing(client: FlaskClient, dash_database: Database) -> None:
    """The quota's range is the database layer's check (0..MAX_QUOTA), made before anything is written."""
    admin, member = make_user(dash_database, admin=True), make_user(dash_database)
    logged_in(client, admin)
    for quota in (-1, 2**31, 2.5, "many", "12.5", "-3", "1e3"):
        out = callback_json(save_user(client, member.id, status="disabled", roles=("member",), quota=quota))
        assert "Nothing changed: " in text_of(out["admin-result"]) and "quota" in text_of(out["admin-result"])
    unchanged = get_user_by_id(dash_database, user_id=member.id)
    assert unchanged is not None and not unchanged.disabled


def test_admin_cannot_lock_themselves_out(client: FlaskClient, dash_database: Database) -> None:
    admin = make_user(dash_database, admin=True)
    logged_in(client, admin)
    for status, roles in (("disabled", ("admin", "member")), ("active", ("member",))):
        out = callback_json(save_user(client, admin.id, status=status, roles=roles))
        assert "cannot disable yourself" in text_of(out["admin-result"])
    again = get_user_by_id(dash_database, user_id=admin.id)
    assert again is not None and again.is_admin and not again.disabled


def test_admin_page_lists_champions(client: FlaskClient, dash_database: Database) -> None:
    logged_in(client, make_user(dash_database, admin=True))
    content = text_of(page(client, "/admin")["page-content"])
    assert "BTC_USDT champion: version 7" in content and "ETH_USDT champion: version 7" in content


def test_training_trigger_through_airflow(
    client: FlaskClient, dash_database: Database, airflow_api: FakeService
) -> None:
    logged_in(client, make_user(dash_database, admin=True))
    shown = train(client, "eth_usdt", 3)
    assert "Training of ETH_USDT triggered: run" in shown and "manual__" in shown and "queued" in shown
    request = airflow_api.requests[-1]
    assert request.path == "/api/v2/dags/mur_training/dagRuns"
    assert request.body["conf"] == {"pairs": ["eth_usdt"], "epochs": 3}
    assert "Epochs must be" in train(client, "eth_usdt", 0)
    assert "Pick one of the listed pairs" in train(client, "doge'; --", 3)


def test_training_trigger_when_airflow_is_down(dash_settings: Settings, dash_database: Database) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    app: Dash = create_app(dash_settings.replace(airflow_url=dead), db=dash_database)
    client = app.server.test_client()
    logged_in(client, make_user(dash_database, admin=True))
    assert f"Airflow is unreachable at {dead}" in train(client)


def test_training_trigger_with_wrong_airflow_password(
    dash_settings: Settings, dash_database: Database
) -> None:
    app = create_app(dash_settings.replace(airflow_password="wrong"), db=dash_database)
    client = app.server.test_client()
    logged_in(client, make_user(dash_database, admin=True))
    assert "Airflow refused the credentials" in train(client)
