"""MLflow behind accounts: its own basic-auth app (``mlflow server --app-name basic-auth``), no anonymous use.

Before MLflow starts, :func:`prepare` writes the auth app's ``basic_auth.ini`` (mode 600, in
``{runtime_dir}/mlflow-auth``: no permission by default, the users in ``auth.db`` beside it, the admin
``mur-admin`` with a password generated once into the stack's secrets file). Once it answers,
:func:`sync_accounts` (as that admin, through MLflow's ``AuthServiceClient``) makes sure the stack's accounts
exist with their passwords and roles: ``mur-trainer`` edits every experiment and manages every registered
model (training, the gate, promotion and rollback), ``mur-serve`` reads them, ``mur-dash`` reads them and
moves aliases (the admin page's rollback). Any logged-in
account can still create a registered model of its own: readers trust only versions the trainer's runs made
(:func:`mur.registry.versions.registered_pairs`). docs/services.md, "MLflow accounts".
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from devstack import secret_files
from devstack.config import MLFLOW_ROLES, _generated_secret, mlflow_account
from devstack.provision import ensure_databases
from mur.settings import Settings

GRANTS = {
    # MANAGE on runs and logged models: retention deletes old versions' runs with their artefacts
    "mur-writers": {
        "experiment": "EDIT",
        "registered_model": "MANAGE",
        "run": "MANAGE",
        "logged_model": "MANAGE",
    },
    "mur-readers": {"experiment": "READ", "registered_model": "READ"},
    "mur-promoters": {"experiment": "READ", "registered_model": "EDIT"},  # aliases: the admin page's rollback
}
ROLE_OF = {"trainer": "mur-writers", "serve": "mur-readers", "dash": "mur-promoters"}
WORKSPACE = "default"  # MLflow's only workspace while workspaces are off


def auth_dir(settings: Settings) -> Path:
    return Path(settings.general.runtime_dir).resolve() / "mlflow-auth"


def server_env(settings: Settings) -> dict[str, str]:
    """The auth app's config file and the key that signs its UI sessions (generated once, never logged)."""
    key = _generated_secret(settings, "mlflow_flask_secret_key", lambda: os.urandom(32).hex())
    return {
        "MLFLOW_AUTH_CONFIG_PATH": str(auth_dir(settings) / "basic_auth.ini"),
        "MLFLOW_FLASK_SERVER_SECRET_KEY": key,
    }


AUTH_CACHE_TTL_S = 60
"""How long MLflow's auth app trusts a verified credential (a changed password or deleted user: at most that)."""


def prepare(settings: Settings) -> None:
    """Before MLflow starts: its database, and ``basic_auth.ini`` (the admin is created at the first start)."""
    ensure_databases(settings, [settings.db.mlflow_database])
    folder = secret_files.private_dir(auth_dir(settings))
    admin = mlflow_account(settings, "admin")
    ini = {
        "default_permission": "NO_PERMISSIONS",
        "database_uri": f"sqlite:///{folder / 'auth.db'}",
        "admin_username": admin["mlflow_username"],
        "admin_password": admin["mlflow_password"],
        "authorization_function": "mlflow.server.auth:authenticate_request_basic_auth",
        # a verified credential is remembered for a minute: without it every request pays the password hash
        # (scrypt, ~120 ms of CPU here), which kept the server at half a core under training and Serve's polls
        "auth_cache_ttl_seconds": AUTH_CACHE_TTL_S,
    }
    secret_files.write_private(
        folder / "basic_auth.ini", "[mlflow]\n" + "".join(f"{k} = {v}\n" for k, v in ini.items())
    )


def admin_client(settings: Settings) -> Any:
    """MLflow's ``AuthServiceClient`` signed in as the stack's admin, with credentials of its own rather than
    ``MLFLOW_TRACKING_USERNAME``/``PASSWORD`` in this process's environment (which the services it starts
    inherit)."""
    import warnings

    with warnings.catch_warnings(action="ignore"):  # mlflow.server imports a deprecated Starlette module
        from mlflow.server.auth.client import AuthServiceClient
    from mlflow.utils.rest_utils import MlflowHostCreds, http_request, verify_rest_response

    admin, uri = mlflow_account(settings, "admin"), settings.registry.mlflow_tracking_uri
    creds = MlflowHostCreds(uri, username=admin["mlflow_username"], password=admin["mlflow_password"])

    class AdminClient(AuthServiceClient):
        def _request(self, endpoint: str, method: str, *, expected_status: int = 200, **kwargs: Any) -> Any:
            resp = http_request(creds, endpoint, method, **kwargs)
            resp = verify_rest_response(resp, endpoint, expected_status=expected_status)
            return {} if resp.status_code == 204 or not resp.content else resp.json()

    return AdminClient(uri)


def sync_accounts(settings: Settings) -> None:
    """As the admin: each role of :data:`GRANTS` with its grants, each account of
    :data:`~devstack.config.MLFLOW_ROLES` with its password (from the secrets file) and role."""
    from mlflow.exceptions import RestException

    client = admin_client(settings)
    roles = {role.name: role for role in client.list_roles(WORKSPACE)}
    for name, grants in GRANTS.items():  # a stack made by an earlier version gets today's grants
        roles[name] = roles.get(name) or client.create_role(WORKSPACE, name)
        held = {p.resource_type: p for p in client.list_role_permissions(roles[name].id)}
        for resource, permission in grants.items():
            if resource not in held:
                client.add_role_permission(roles[name].id, resource, "*", permission)
            elif held[resource].permission != permission:
                client.update_role_permission(held[resource].id, permission)
    for role in MLFLOW_ROLES:
        account = mlflow_account(settings, role)
        user, password = account["mlflow_username"], account["mlflow_password"]
        try:
            client.create_user(user, password)
        except RestException as exc:
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
            client.update_user_password(user, password)
        if ROLE_OF[role] not in {r.name for r in client.list_user_roles(user)}:
            client.assign_role(user, roles[ROLE_OF[role]].id)
