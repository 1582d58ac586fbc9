"""Issue 41: MLflow answers accounts only. Anonymous registry reads and alias moves are refused (401); Serve's
account reads but cannot move an alias (403), the dashboard's moves aliases only (the admin page's rollback); a model that another account than the
trainer registered (any logged-in account may create one) is not served."""

from __future__ import annotations

import uuid

import mlflow
import pytest
import requests

from devstack.config import mlflow_account
from mur import registry
from mur.errors import ForbiddenError
from mur.registry.aliases import move_champion
from mur.serving.champions import champions
from mur.settings import Settings

pytestmark = pytest.mark.usefixtures("restored_environ")
ALIAS = "/api/2.0/mlflow/registered-models/alias"
SEARCH = "/api/2.0/mlflow/registered-models/search"


def as_account(settings: Settings, role: str) -> Settings:
    return settings.replace(**mlflow_account(settings, role))


def register_champion(settings: Settings, pair: str, experiment: str) -> str:
    """As ``settings``' account: a run in ``experiment``, a version of ``{prefix}{pair}`` from it, champion."""
    client = registry.configure(settings)
    mlflow.set_experiment(experiment)
    with mlflow.start_run() as run:
        mlflow.log_text("not a model", "model/model.onnx")
    name = registry.model_name(pair, settings.registry.registry_prefix)
    client.create_registered_model(name)
    version = client.create_model_version(name, f"{run.info.artifact_uri}/model", run_id=run.info.run_id)
    client.set_registered_model_alias(name, registry.CHAMPION, version.version)
    return name


def test_accounts_and_what_each_may_do(services: Settings) -> None:
    url = services.registry.mlflow_tracking_uri.rstrip("/")
    tag = uuid.uuid4().hex[:6]
    trained = register_champion(services, f"acc{tag}_usdt", services.registry.mlflow_experiment)
    move = {"name": trained, "alias": registry.CHAMPION, "version": "1"}

    assert requests.get(url + SEARCH, timeout=30).status_code == 401  # anonymous: no registry read
    assert requests.post(url + ALIAS, json=move, timeout=30).status_code == 401  # nor an alias move
    for role, moves in (("serve", 403), ("dash", 200)):  # the dashboard's admin page rolls back
        account = mlflow_account(services, role)
        auth = (account["mlflow_username"], account["mlflow_password"])
        assert requests.get(url + SEARCH, auth=auth, timeout=30).status_code == 200, role  # they read
        assert requests.post(url + ALIAS, json=move, auth=auth, timeout=30).status_code == moves, role
    serve = as_account(services, "serve")  # a refused rollback: one line, nothing recorded
    with pytest.raises(ForbiddenError, match="mur-serve may not move .*mur models rollback"):
        move_champion(serve, registry.configure(serve), pair=f"acc{tag}_usdt", version=1, action="rollback",
                      actor="admin", reason="test")  # fmt: skip
    wrong = (mlflow_account(services, "serve")["mlflow_username"], "not-the-password")
    assert requests.get(url + SEARCH, auth=wrong, timeout=30).status_code == 401

    # the dashboard's account (any logged-in one) can still create a model of its own, with a champion…
    forged = register_champion(as_account(services, "dash"), f"evil{tag}_usdt", f"not-training-{tag}")
    # …which Serve's account does not trust, while it finds the trainer's
    found = champions(
        registry.configure(as_account(services, "serve")),
        prefix=services.registry.registry_prefix,
        experiment=services.registry.mlflow_experiment,
    )
    assert forged.removeprefix(services.registry.registry_prefix) not in found
    assert found[trained.removeprefix(services.registry.registry_prefix)]["version"] == 1
