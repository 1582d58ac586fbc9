"""Issue 41: MLflow answers accounts only. Anonymous registry reads and alias moves are refused (401); Serve's
account reads but cannot move an alias (403), the dashboard's moves aliases only (the admin page's rollback); a model that another account than the
trainer registered (any logged-in account may create one) is not served."""

from __future__ import annotations

import uuid
from collections.abc import Callable

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


def test_retention_deletes_old_versions_with_their_artefacts(
    services: Settings, pg_database_factory: Callable[..., Settings]
) -> None:
    """Issue 42: with ``keep_versions=2`` the trainer's account (its grants brought up to date by ``mur up``)
    deletes what retention does not keep (not the newest two, not the champion) from the registry and its
    objects from the bucket; numbers go on."""
    import onnx
    from onnx import TensorProto, helper

    from devstack import mlflow_auth
    from mur.orchestration.job_submission import result_store
    from mur.registry.retention import prune_versions

    admin = mlflow_auth.admin_client(services)
    role = next(r for r in admin.list_roles(mlflow_auth.WORKSPACE) if r.name == "mur-writers")
    held = {p.resource_type: p for p in admin.list_role_permissions(role.id)}
    admin.update_role_permission(held["run"].id, "EDIT")  # as a stack made before retention had it
    mlflow_auth.sync_accounts(services)  # mur up brings the grants to today's
    history = pg_database_factory().db.pg_database  # the alias history's (empty): no champion moves to keep
    trainer = as_account(services, "trainer").replace(keep_versions=2, pg_database=history)
    client, pair = registry.configure(trainer), f"ret{uuid.uuid4().hex[:6]}_usdt"
    name = registry.model_name(pair, trainer.registry.registry_prefix)
    value = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g", [value], [value])
    graph.output[0].name = "y"
    experiment = mlflow.set_experiment(trainer.registry.mlflow_experiment).experiment_id

    def register() -> tuple[str, str]:
        with mlflow.start_run(experiment_id=experiment) as run:
            mlflow.log_text("weights", "weights.npz")
            info = mlflow.onnx.log_model(
                onnx.helper.make_model(graph),
                name="model",
                registered_model_name=name,
                pip_requirements=mlflow.onnx.get_default_pip_requirements(),  # as the trainer states them
            )
        return run.info.run_id, info.model_id

    made = [register() for _ in range(5)]
    client.set_registered_model_alias(name, registry.CHAMPION, "2")
    store = result_store(trainer, timeout_s=60.0)

    def objects(ids: tuple[str, str]) -> list[str]:
        listing = store.list_objects_v2(Bucket=trainer.registry.s3_bucket, Prefix=f"mlflow/{experiment}/")
        return [o["Key"] for o in listing.get("Contents", []) if any(f"/{i}/" in o["Key"] for i in ids)]

    assert all(objects(ids) for ids in made)
    assert prune_versions(trainer, client, pair) == [1, 3]
    assert {int(v.version) for v in client.search_model_versions(f"name = '{name}'")} == {2, 4, 5}
    assert [bool(objects(ids)) for ids in made] == [False, True, False, True, True]
    assert prune_versions(trainer, client, pair) == []  # nothing more to delete
    register()  # numbered on after the deletes
    assert max(int(v.version) for v in client.search_model_versions(f"name = '{name}'")) == 6
