"""Admin page (admin role only): users (enable/disable, roles, quota: saved together in one transaction),
registration invites, the pair catalogue (:mod:`dash_app.pages.admin_pairs`), champions per pair, their
history and rollback (:mod:`dash_app.pages.admin_models`), training trigger.

Every component id here starts with ``admin-``: the server's guard refuses callbacks on them to non-admins
(403), and each callback checks the role again.
"""

from __future__ import annotations

import logging
from typing import Any

from dash import Dash, Input, Output, State, dcc, html
from dash.development.base_component import Component
from dash.exceptions import PreventUpdate
from flask import request

from dash_app.components import (
    card,
    champion_summary,
    data_table,
    field,
    fmt_time,
    muted,
    notice,
    pair_dropdown,
    row,
)
from dash_app.context import DashboardContext, get_context, require_admin
from dash_app.pages import admin_models, admin_pairs
from mur.db import (
    INVITE_LIFETIME,
    ROLES,
    User,
    create_invite,
    get_user_by_id,
    list_users,
    update_account,
)
from mur.errors import InvalidInputError, MurError, ServiceAnswerError, ServiceUnavailable
from mur.orchestration import DAG_ID as TRAINING_DAG_ID

logger = logging.getLogger(__name__)

MAX_EPOCHS = 1000


def users_table(context: DashboardContext) -> Component:
    """Every user with roles, status and this month's usage against their quota."""
    rows = [
        [
            str(user.id),
            user.username,
            user.email or "–",
            ", ".join(user.roles) or "–",
            "disabled" if user.disabled else "active",
            f"{user.used_this_month} / {user.monthly_limit}"
            + (" (default)" if user.quota_is_default else ""),
            fmt_time(user.created_at),
        ]
        for user in list_users(context.db)
    ]
    return data_table(["id", "username", "email", "roles", "status", "used / quota", "created (wall)"], rows)


def champions_block(context: DashboardContext, account: User) -> Component:
    """Champion versions and test metrics per pair, from the Serve API."""
    try:
        models = context.serve.models(context.serve_token(account.id))
    except (ServiceUnavailable, ServiceAnswerError) as exc:
        return notice(f"Champions unavailable: {exc}.", "warn", id="admin-champions-error")
    if not models:
        return muted("No champion models yet: train a pair below.")
    return html.Div([html.Div(champion_summary(m), className="champion") for m in models])


def _interval_cell(metrics: Any) -> str:
    """The 1 h range's interval skill vs the naive range, its DM p-value and coverage (– for point models)."""
    horizons = getattr(metrics, "horizons", None) if metrics is not None else None
    if not horizons:
        return "–"
    h = horizons[0]
    return f"{h.interval_skill:+.3f} (p {h.interval_dm_p_worse:.3g}) / {h.interval.coverage:.3f}"


def alias_cell(aliases: list[str]) -> str:
    """The registry's aliases of a version as they are now (``champion`` on one version only), not the
    gate's tag, which every version promoted once keeps."""
    return ", ".join(sorted(aliases)) or "–"


def versions_block(context: DashboardContext, limit: int = 8) -> Component:
    """Registered versions per pair with the gate's decision and the out-of-sample evidence behind it."""
    from mur.registry.versions import recent_versions
    from mur.serving.champions import registry_client

    rows: list[dict[str, Any]] = []  # one per version: each column's title and cell
    try:
        client = registry_client(context.settings, timeout_s=5)
        for pair in context.pairs():
            for v in recent_versions(client, pair, context.settings.registry.registry_prefix, limit=limit):
                m, sig = v.metrics, v.metrics.significance if v.metrics else None
                se = f" ± {sig.skill_se:.4f}" if sig is not None and sig.skill_se is not None else ""
                dm = "–" if sig is None else f"{sig.dm_p_worse:.3g} / {sig.dm_p_better:.3g}"
                rows.append(
                    {
                        "pair": pair,
                        "version": f"v{v.version}",
                        "registry alias": alias_cell(v.aliases),
                        "kind": v.kind or "–",
                        "trained up to": (v.data_window.end or "–") if v.data_window else "–",
                        "skill vs persistence (out-of-sample)": "–" if m is None else f"{m.skill:+.4f}{se}",
                        "DM p worse / better": dm,
                        "direction p": "–" if sig is None else f"{sig.direction_p_value:.3g}",
                        "1 h range: interval skill (DM p worse) / coverage": _interval_cell(m),
                        "gate rule": v.gate_rule or "–",
                        "gate reason": v.reason or "–",
                    }
                )
    except Exception as exc:  # MLflow down or slow: the rest of the page still works
        logger.warning("registered versions unavailable: %s", exc)
        return notice("Registered versions unavailable: the model registry does not answer.", "warn")
    if not rows:
        return muted("No registered versions yet.")
    return data_table(list(rows[0]), [list(row.values()) for row in rows], id="admin-versions-table")


def layout(context: DashboardContext, account: User) -> Component:
    pairs = context.pairs()
    default_quota = context.settings.serving.default_monthly_quota
    return html.Div(
        [
            card("Users", html.Div(users_table(context), id="admin-users-table")),
            card(
                "Edit a user",
                row(
                    field(
                        "User",
                        dcc.Dropdown(
                            id="admin-user",
                            options=[
                                {"label": f"{u.username} (id {u.id})", "value": u.id}
                                for u in list_users(context.db)
                            ],
                            style={"width": "260px"},
                        ),
                    ),
                    field(
                        "Status",
                        dcc.RadioItems(
                            id="admin-status",
                            options={"active": " active", "disabled": " disabled"},
                            inline=True,
                        ),
                        labelled=False,
                    ),
                    field(
                        "Roles",
                        dcc.Checklist(
                            id="admin-roles",
                            options={r: f" {r}" for r in ROLES},
                            inline=True,
                        ),
                        labelled=False,
                    ),
                    field(
                        "Monthly quota",
                        dcc.Input(
                            id="admin-quota",
                            type="text",  # a number field sends a fraction or a typo as blank: the default
                            inputMode="numeric",
                            placeholder=f"default ({default_quota})",
                            style={"width": "220px"},
                        ),
                    ),
                    html.Button("Save", id="admin-save"),
                ),
                html.Div(id="admin-result"),
            ),
            card(
                "Invite someone",
                muted(
                    f"Registration is {context.settings.registration_mode} (MUR_REGISTRATION). "
                    f"An invite link lets one person register within {INVITE_LIFETIME.days} days."
                ),
                html.Button("Create an invite link", id="admin-invite"),
                html.Div(id="admin-invite-result"),
            ),
            admin_pairs.pairs_card(context, account),
            card("Champion models", html.Div(champions_block(context, account), id="admin-champions")),
            card(
                "Registered versions and the promotion gate",
                muted("Scores are out-of-sample (each version's own test span). See docs/promotion.md."),
                html.Div(versions_block(context), id="admin-versions"),
            ),
            admin_models.history_card(context, account),
            card(
                "Train a pair now",
                muted(
                    f"Triggers the Airflow DAG {TRAINING_DAG_ID!r} at {context.settings.airflow.airflow_url}."
                ),
                row(
                    field("Pair", pair_dropdown("admin-train-pair", pairs, "200px")),
                    field(
                        "Epochs",
                        dcc.Input(
                            id="admin-train-epochs",
                            type="number",
                            min=1,
                            max=MAX_EPOCHS,
                            step=1,
                            value=context.settings.training.epochs,
                        ),
                    ),
                    html.Button("Train now", id="admin-train"),
                ),
                html.Div(id="admin-train-result"),
            ),
        ]
    )


def load_user(user_id: int | None) -> tuple[Any, Any, Any]:
    """Fill the edit form with the chosen user's status, roles and own quota (blank: the default)."""
    require_admin()
    if user_id is None:
        raise PreventUpdate
    user = next((u for u in list_users(get_context().db) if u.id == int(user_id)), None)
    if user is None:
        raise PreventUpdate
    own_quota = None if user.quota_is_default else user.monthly_limit
    return ("disabled" if user.disabled else "active"), list(user.roles), own_quota


def _quota_entered(value: Any) -> Any:
    """The quota as typed: blank is the default (None), digits a number of calls; anything else is passed on
    as it is, for update_account to refuse with its reason."""
    text = value.strip() if isinstance(value, str) else value
    if text is None or text == "":
        return None
    return int(text) if isinstance(text, str) and text.isdecimal() else text


def save_user(clicks: Any, user_id: Any, status: Any, roles: Any, quota: Any) -> tuple[Any, Any]:
    """Apply status, roles and quota to one user; an admin cannot lock themselves out."""
    account = require_admin(clicks)
    context = get_context()
    try:
        if user_id is None:
            raise InvalidInputError("pick a user first")
        target = get_user_by_id(context.db, user_id=int(user_id))
        if target is None:
            raise InvalidInputError(f"there is no user with id {user_id}")
        if status not in ("active", "disabled"):
            raise InvalidInputError("status must be active or disabled")
        if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
            raise InvalidInputError("roles must be a list of role names")
        limit = _quota_entered(quota)
        if target.id == account.id and (status == "disabled" or "admin" not in roles):
            raise InvalidInputError("you cannot disable yourself or take away your own admin role")
        effective = update_account(
            context.db, user_id=target.id, roles=roles, monthly_limit=limit, disabled=status == "disabled"
        )
    except (MurError, ValueError) as exc:
        return notice(f"Nothing changed: {exc}.", "bad", id="admin-save-error"), users_table(context)
    logger.info("admin %s updated user %s", account.username, target.username)
    message = (
        f"Saved {target.username}: {status}, roles {', '.join(sorted(set(roles))) or '–'}, "
        f"quota {effective}{' (default)' if limit is None else ''}."
    )
    return notice(message, "ok", id="admin-save-ok"), users_table(context)


def make_invite(clicks: Any) -> Component:
    """A new single-use invite link, shown once (only its hash is stored)."""
    account = require_admin(clicks)
    invite = create_invite(get_context().db, created_by=account.id)
    logger.info("admin %s created an invite", account.username)
    link = f"{request.host_url}register?invite={invite.code}"
    return notice(
        [
            "Invite link (shown once, single use, valid until ",
            fmt_time(invite.expires_at),
            ", wall clock): ",
            html.Code(link, id="admin-invite-link"),
        ],
        "ok",
    )


def trigger_training(clicks: Any, pair: Any, epochs: Any) -> Component:
    """Ask Airflow to run the training DAG for one pair; show the run id or why it failed."""
    account = require_admin(clicks)
    context = get_context()
    if pair not in context.pairs():
        return notice("Pick one of the listed pairs.", "bad")
    try:
        epoch_count = int(epochs) if epochs not in (None, "") else context.settings.training.epochs
    except (TypeError, ValueError):
        return notice("Epochs must be a whole number.", "bad")
    if not 1 <= epoch_count <= MAX_EPOCHS:
        return notice(f"Epochs must be between 1 and {MAX_EPOCHS}.", "bad")
    try:
        run = context.airflow.trigger(
            TRAINING_DAG_ID,
            conf={"pairs": [pair], "epochs": epoch_count},
            note=f"triggered from the dashboard by {account.username}",
        )
    except (ServiceUnavailable, ServiceAnswerError) as exc:
        return notice(f"{exc}.", "bad", id="admin-train-error")
    logger.info("admin %s triggered %s run %s for %s", account.username, run.dag_id, run.run_id, pair)
    state = f" (state: {run.state})" if run.state else ""
    return notice(
        [
            f"Training of {pair.upper()} triggered: run ",
            html.Code(run.run_id, id="admin-train-run-id"),
            state,
        ],
        "ok",
    )


def register_callbacks(app: Dash) -> None:
    admin_pairs.register_callbacks(app)
    admin_models.register_callbacks(app)
    app.callback(
        Output("admin-status", "value"),
        Output("admin-roles", "value"),
        Output("admin-quota", "value"),
        Input("admin-user", "value"),
        prevent_initial_call=True,
    )(load_user)
    app.callback(
        Output("admin-result", "children"),
        Output("admin-users-table", "children"),
        Input("admin-save", "n_clicks"),
        State("admin-user", "value"),
        State("admin-status", "value"),
        State("admin-roles", "value"),
        State("admin-quota", "value"),
        prevent_initial_call=True,
    )(save_user)
    app.callback(
        Output("admin-invite-result", "children"),
        Input("admin-invite", "n_clicks"),
        prevent_initial_call=True,
    )(make_invite)
    app.callback(
        Output("admin-train-result", "children"),
        Input("admin-train", "n_clicks"),
        State("admin-train-pair", "value"),
        State("admin-train-epochs", "value"),
        prevent_initial_call=True,
    )(trigger_training)
