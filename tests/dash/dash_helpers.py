"""Test helpers for the dashboard: form CSRF tokens, logging in, calling Dash callbacks like the renderer."""

from __future__ import annotations

import json
import re
import secrets
from typing import Any

from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from mur.db import Database, User, create_user

PASSWORD = "Correct-Horse-42"
_CSRF_FIELD = re.compile(r'name="csrf_token" type="hidden" value="([^"]+)"')


def random_name(prefix: str = "user") -> str:
    return f"{prefix}_{secrets.token_hex(4)}"


def random_ip() -> str:
    return "10.{}.{}.{}".format(*secrets.token_bytes(3))


def form_csrf(client: FlaskClient, path: str) -> str:
    """The CSRF token of the form at ``path``."""
    page = client.get(path)
    match = _CSRF_FIELD.search(page.get_data(as_text=True))
    assert match, f"no csrf_token field on {path}"
    return match.group(1)


def register(client: FlaskClient, username: str, password: str = PASSWORD, email: str = "") -> TestResponse:
    token = form_csrf(client, "/register")
    return client.post(
        "/register",
        data={
            "csrf_token": token,
            "username": username,
            "email": email,
            "password": password,
            "confirm": password,
        },
    )


def login(
    client: FlaskClient, username: str, password: str = PASSWORD, *, next_page: str = ""
) -> TestResponse:
    token = form_csrf(client, "/login")
    path = f"/login?next={next_page}" if next_page else "/login"
    return client.post(path, data={"csrf_token": token, "username": username, "password": password})


def make_user(db: Database, *, admin: bool = False, password: str = PASSWORD) -> User:
    roles = ("admin", "member") if admin else ("member",)
    return create_user(
        db, username=random_name("admin" if admin else "member"), password=password, roles=roles
    )


def logged_in(client: FlaskClient, user: User, password: str = PASSWORD) -> FlaskClient:
    response = login(client, user.username, password)
    assert response.status_code == 302, response.get_data(as_text=True)[:500]
    assert client.get("/forecast").status_code == 200  # sets the CSRF cookie Dash's renderer would read
    return client


def _outputs(output_key: str) -> Any:
    def one(spec: str) -> dict[str, str]:
        component, prop = spec.rsplit(".", 1)
        return {"id": json.loads(component) if component.startswith("{") else component, "property": prop}

    if output_key.startswith(".."):
        return [one(spec) for spec in output_key[2:-2].split("...")]
    return one(output_key)


def prop_id(component: str | dict[str, Any], prop: str) -> str:
    """Dash's ``changedPropIds`` entry: the id (JSON, sorted keys, for pattern ids) and the property."""
    name = (
        json.dumps(component, sort_keys=True, separators=(",", ":"))
        if isinstance(component, dict)
        else component
    )
    return f"{name}.{prop}"


def dash_update(
    client: FlaskClient,
    output_key: str,
    *,
    inputs: list[Any],
    state: list[Any] | None = None,
    changed: list[str] | None = None,
    csrf: bool = True,
) -> TestResponse:
    """POST ``/_dash-update-component`` as the renderer does (with the ``X-CSRFToken`` header from the cookie).

    ``inputs``/``state`` items are ``{"id", "property", "value"}`` dicts (a list of them for ALL patterns).
    """
    body = {
        "output": output_key,
        "outputs": _outputs(output_key),
        "inputs": inputs,
        "state": state or [],
        "changedPropIds": changed or [],
    }
    headers = {}
    if csrf:
        cookie = client.get_cookie("_csrf_token")
        assert cookie is not None, "no _csrf_token cookie: log in and open a page first"
        headers["X-CSRFToken"] = cookie.value
    return client.post("/_dash-update-component", json=body, headers=headers)


def callback_json(response: TestResponse) -> dict[str, Any]:
    """The ``response`` part of a Dash callback answer: ``{component id: {prop: value}}``."""
    assert response.status_code == 200, (response.status_code, response.get_data(as_text=True)[:800])
    return response.get_json()["response"]


def page(client: FlaskClient, pathname: str) -> dict[str, Any]:
    """The navbar and content the render callback returns for ``pathname``."""
    return callback_json(
        dash_update(
            client,
            "..navbar.children...page-content.children..",
            inputs=[{"id": "url", "property": "pathname", "value": pathname}],
            changed=["url.pathname"],
        )
    )


def text_of(value: Any) -> str:
    """All strings inside a JSON-serialised Dash component tree, joined (for assertions)."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        return " ".join(text_of(v) for v in value.values())
    if isinstance(value, list):
        return " ".join(text_of(v) for v in value)
    return "" if value is None else str(value)


# ------------------------------------------------------------------------------------------------
# Page callbacks, called as the renderer would
# ------------------------------------------------------------------------------------------------

FORECAST_OUTPUT = (
    "..forecast-headline.children...forecast-status.children...forecast-chart.figure"
    "...forecast-champion.children...forecast-mae.children...forecast-track.figure"
    "...forecast-reliability.children...forecast-pending.children...forecast-state.data.."
)
TOKEN_OUTPUT = "..token-new.children...token-table.children...token-usage.children...curl-example.children.."
SAVE_OUTPUT = "..admin-result.children...admin-users-table.children.."


def forecast_page(client: FlaskClient, pair: str) -> dict[str, Any]:
    return callback_json(
        dash_update(
            client,
            FORECAST_OUTPUT,
            inputs=[
                {"id": "forecast-pair", "property": "value", "value": pair},
                {"id": "forecast-refresh", "property": "n_intervals", "value": None},
            ],
            state=[{"id": "forecast-state", "property": "data", "value": None}],
            changed=["forecast-pair.value"],
        )
    )


def token_action(
    client: FlaskClient, trigger: str | dict[str, Any], *, name: str = "default", expires: str = "never"
) -> dict[str, Any]:
    rotate: list[dict[str, Any]] = []
    revoke: list[dict[str, Any]] = []
    if isinstance(trigger, dict):
        target = rotate if trigger["type"] == "token-rotate" else revoke
        target.append({"id": trigger, "property": "n_clicks", "value": 1})
    return callback_json(
        dash_update(
            client,
            TOKEN_OUTPUT,
            inputs=[
                {
                    "id": "token-create",
                    "property": "n_clicks",
                    "value": 1 if trigger == "token-create" else None,
                },
                rotate,
                revoke,
            ],
            state=[
                {"id": "token-name", "property": "value", "value": name},
                {"id": "token-expires", "property": "value", "value": expires},
            ],
            changed=[prop_id(trigger, "n_clicks")],
        )
    )


def save_user(
    client: FlaskClient, user_id: Any, *, status: Any = "active", roles: Any = ("member",), quota: Any = None
):
    return dash_update(
        client,
        SAVE_OUTPUT,
        inputs=[{"id": "admin-save", "property": "n_clicks", "value": 1}],
        state=[
            {"id": "admin-user", "property": "value", "value": user_id},
            {"id": "admin-status", "property": "value", "value": status},
            {
                "id": "admin-roles",
                "property": "value",
                "value": list(roles) if isinstance(roles, tuple) else roles,
            },
            {"id": "admin-quota", "property": "value", "value": quota},
        ],
        changed=["admin-save.n_clicks"],
    )


def train(client: FlaskClient, pair: str = "btc_usdt", epochs: Any = 3) -> str:
    out = callback_json(
        dash_update(
            client,
            "admin-train-result.children",
            inputs=[{"id": "admin-train", "property": "n_clicks", "value": 1}],
            state=[
                {"id": "admin-train-pair", "property": "value", "value": pair},
                {"id": "admin-train-epochs", "property": "value", "value": epochs},
            ],
            changed=["admin-train.n_clicks"],
        )
    )
    return text_of(out["admin-train-result"])


MONITORING_OUTPUT = (
    "..monitoring-status.children...monitoring-summary.children...monitoring-rolling.figure"
    "...monitoring-drift.figure...monitoring-drift-table.children...monitoring-alerts.children"
    "...monitoring-thresholds.children...monitoring-calibration.children.."
)


def monitoring_page(client: FlaskClient, pair: str, n_intervals: int = 0) -> dict[str, Any]:
    """The Monitoring page's callback for ``pair`` (as on load, or on the refresh timer's tick)."""
    return callback_json(
        dash_update(
            client,
            MONITORING_OUTPUT,
            inputs=[
                {"id": "monitoring-pair", "property": "value", "value": pair},
                {"id": "monitoring-refresh", "property": "n_intervals", "value": n_intervals},
            ],
            changed=["monitoring-pair.value"],
        )
    )
