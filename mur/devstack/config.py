"""The local stack's settings: URLs that follow their ports, exported to every process; a persistent secret."""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from mur.devstack import secret_files
from mur.devstack.processes import STACK_MARKER
from mur.errors import ConfigError
from mur.settings import Settings, get_settings

SECRETS_FILE = "stack-secrets.json"
URL_FIELDS = {
    "mlflow_tracking_uri": "mlflow_port",
    "s3_endpoint_url": "s3_port",
    "ray_address": "ray_dashboard_port",
    "airflow_url": "airflow_port",
}
"""URL setting → the port setting it must agree with (both default to the same local port)."""


def align_settings(settings: Settings, *, export: bool = True) -> Settings:
    """URLs that were not set explicitly follow their port; a local URL contradicting its port is an error.

    With ``export`` the derived URLs and the absolute runtime dir go into ``os.environ``, so every service,
    Airflow task, Ray job and Serve replica started from this process sees the same settings.
    """
    update: dict[str, Any] = {}
    for url_field, port_field in URL_FIELDS.items():
        port = getattr(settings, port_field)
        url = getattr(settings, url_field)
        if url_field not in settings.model_fields_set:
            wanted = f"http://127.0.0.1:{port}"
            if url != wanted:
                update[url_field] = wanted
            continue
        parts = urlsplit(url)
        if parts.hostname in ("127.0.0.1", "localhost") and parts.port not in (None, port):
            raise ConfigError(
                f"MUR_{url_field.upper()}={url} does not match MUR_{port_field.upper()}={port}: "
                f"set one of them only (the URL follows the port)"
            )
    runtime_dir = Path(settings.runtime_dir).resolve()
    update["runtime_dir"] = runtime_dir
    aligned = settings.model_copy(update=update)
    if export:
        for name, value in update.items():
            os.environ[f"MUR_{name.upper()}"] = str(value)
        os.environ[STACK_MARKER] = str(runtime_dir)  # inherited by everything started from here
        get_settings.cache_clear()
    return aligned


def stack_secret(settings: Settings) -> str:
    """``MUR_SECRET_KEY``, else a key generated once into ``{runtime_dir}/stack-secrets.json`` (mode 600).

    The dashboard signs sessions and derives its per-user API tokens with it: a key that changed at every
    start would log everybody out and revoke those tokens.
    """
    if settings.secret_key:
        return settings.secret_key
    path = Path(settings.runtime_dir) / SECRETS_FILE

    def fill(data: dict[str, Any]) -> dict[str, Any] | None:
        key = data.get("secret_key")
        return None if isinstance(key, str) and len(key) >= 32 else {"secret_key": secrets.token_urlsafe(32)}

    return str(secret_files.ensure(path, fill)["secret_key"])
