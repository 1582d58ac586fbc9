"""The app builder and the champion store without a cluster: a redeploy while MLflow is down (item 20 of
issue 16) builds from the last known champions."""

from __future__ import annotations

from pathlib import Path

import pytest

from mur.errors import RegistryUnavailableError, ServiceError
from mur.serving.champion_store import ChampionStore
from mur.settings import Settings
from serve_app import app as app_module
from serve_app.args import AppArgs


def test_the_store_keeps_champions_and_model_files(tmp_path: Path) -> None:
    store = ChampionStore.for_settings(Settings(runtime_dir=tmp_path, registry_prefix="mur-t1/"))
    assert store.champions() == {} and store.model("eth_usdt", 3) is None
    store.save_champions({"eth_usdt": {"version": 3}, "btc_usdt": {"version": 1}})
    store.save_models({("eth_usdt", 3): b"onnx-3", ("eth_usdt", 2): b"onnx-2"})
    assert store.model("eth_usdt", 2) == b"onnx-2"
    store.save_models({("eth_usdt", 3): b"not written again"})
    assert store.champions(["eth_usdt"]) == {"eth_usdt": {"version": 3}}
    assert store.model("eth_usdt", 3) == b"onnx-3" and store.model("eth_usdt", 2) is None
    assert store.directory.parent == tmp_path / "serve-champions"  # the prefix is a safe folder name
    (store.directory / "champions.json").write_text("{broken")
    assert store.champions() == {}


def test_served_pairs_fall_back_to_the_last_known_champions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = Settings(
        runtime_dir=tmp_path, registry_prefix="mur-t2-", mlflow_tracking_uri="http://127.0.0.1:9"
    )
    up = {"eth_usdt": {"version": 4}, "btc_usdt": {"version": 2}}
    monkeypatch.setattr(app_module, "champions", lambda *a, **k: up)
    assert app_module.served_pairs(settings, AppArgs()) == ["btc_usdt", "eth_usdt"]

    def down(*args: object, **kwargs: object) -> dict:
        raise RegistryUnavailableError("model registry unreachable: connection refused")

    monkeypatch.setattr(app_module, "champions", down)
    assert app_module.served_pairs(settings, AppArgs()) == ["btc_usdt", "eth_usdt"]
    assert app_module.served_pairs(settings, AppArgs(pairs=["eth_usdt"])) == ["eth_usdt"]
    with pytest.raises(ServiceError, match="no champions are known"):
        app_module.served_pairs(settings.replace(registry_prefix="mur-never-"), AppArgs())


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "0.0.0.0"])
def test_the_api_ingress_stays_on_the_head_when_serve_listens_on_loopback(host: str) -> None:
    """HAProxy on the head reaches each API replica at its node's address and the port it listens on: a
    replica on a second local node (127.0.0.2) would listen on 127.0.0.1 and refuse it (the Serve controller's
    warning "HTTPOptions.host='127.0.0.1' won't accept connections from HAProxy on other nodes")."""
    from serve_app.deploy import HEAD_ONLY, app_config, load_config

    config = app_config(
        Settings.defaults(serve_host=host), AppArgs(**load_config()["applications"][0]["args"])
    )
    assert config["http_options"]["host"] == host
    deployments = {d["name"]: d for d in config["applications"][0].get("deployments", [])}
    if host == "0.0.0.0":  # compose, KubeRay: every node's replicas are reachable, Serve places them freely
        assert deployments == {}
    else:
        assert deployments["api"]["ray_actor_options"] == {"num_cpus": 0.1, "resources": HEAD_ONLY}
    from serve_app.ingress import ApiIngress  # the CPUs the deployment asks for in code, kept

    assert ApiIngress.ray_actor_options["num_cpus"] == 0.1  # type: ignore[attr-defined]
