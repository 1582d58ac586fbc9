"""Data access, shared by the CLI, the Serve API and the Dash dashboard: one PostgreSQL database.

- :mod:`mur.db.pool`: :class:`Database` (a lazily opened ``psycopg_pool`` pool) and direct connections;
- :mod:`mur.db.migrations`: the ordered ``sql/`` files, applied once each and verified by checksum;
- :mod:`mur.db.users`: accounts, passwords, roles, session generations and invites;
- :mod:`mur.db.logins`: login and registration attempts (atomic rate limits);
- :mod:`mur.db.tokens`: API tokens; :mod:`mur.db.quotas`: monthly quotas;
- :mod:`mur.db.forecasts`: the forecast track record;
- :mod:`mur.db.calibration`: the online calibration of the served ranges (per pair and horizon).

Every query is a parameterized literal (identifiers go through :mod:`psycopg.sql`). Public functions take a
:class:`Database` first and keyword-only arguments after it; each call is one transaction. Nothing connects
until the first query. This module only re-exports the names its callers use (the rest: from the submodules).
"""

from mur.db.forecasts import (
    Forecast,
    fill_actuals,
    list_forecasts,
    record_forecast,
    record_forecast_body,
)
from mur.db.logins import (
    LoginLimits,
    begin_login_attempt,
    begin_registration_attempt,
    cancel_login_attempt,
    mark_login_succeeded,
)
from mur.db.migrations import migrate, migration_status
from mur.db.pool import Database, connect
from mur.db.quotas import (
    QuotaResult,
    consume_quota,
    get_usage,
    month_start,
    next_month_start,
    peek_quota,
    probe_request_tables,
)
from mur.db.tokens import (
    Token,
    TokenOwner,
    create_token,
    ensure_managed_token,
    list_tokens,
    lookup_token,
    parse_lifetime,
    revoke_token,
    rotate_token,
)
from mur.db.users import (
    INVITE_LIFETIME,
    MAX_EMAIL_LENGTH,
    MAX_USERNAME_LENGTH,
    ROLES,
    User,
    add_role,
    authenticate,
    create_invite,
    create_user,
    end_sessions,
    get_user_by_id,
    get_user_by_username,
    list_users,
    remove_role,
    require_user,
    set_password,
    set_quota,
    set_user_disabled,
    update_account,
)

__all__ = [
    "INVITE_LIFETIME",
    "MAX_EMAIL_LENGTH",
    "MAX_USERNAME_LENGTH",
    "ROLES",
    "Database",
    "Forecast",
    "LoginLimits",
    "QuotaResult",
    "Token",
    "TokenOwner",
    "User",
    "add_role",
    "authenticate",
    "begin_login_attempt",
    "begin_registration_attempt",
    "cancel_login_attempt",
    "connect",
    "consume_quota",
    "create_invite",
    "create_token",
    "create_user",
    "end_sessions",
    "ensure_managed_token",
    "fill_actuals",
    "get_usage",
    "get_user_by_id",
    "get_user_by_username",
    "list_forecasts",
    "list_tokens",
    "list_users",
    "lookup_token",
    "mark_login_succeeded",
    "migrate",
    "migration_status",
    "month_start",
    "next_month_start",
    "parse_lifetime",
    "peek_quota",
    "probe_request_tables",
    "record_forecast",
    "record_forecast_body",
    "remove_role",
    "require_user",
    "revoke_token",
    "rotate_token",
    "set_password",
    "set_quota",
    "set_user_disabled",
    "update_account",
]
