"""Checksums as a second line (issue 41): the SHA-256 recorded at registration is the digest of the bytes the
registry stores; Serve's registry watcher refuses a champion whose bytes were tampered with (the previous
champion keeps serving, one alert names the pair and version), and ``mur models verify`` fails on it.

A real MLflow registry in a SQLite file with its artefacts on disk (where the tampering happens), and the
watcher's own code run in-process (no Ray)."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import mlflow
import mlflow.onnx
import onnx
import pytest
from mlflow import MlflowClient
from onnx import TensorProto, helper
from typer.testing import CliRunner

from mur.registry import checksums
from mur.registry.download import model_bytes
from mur.registry.names import CHAMPION, model_name
from mur.settings import Settings, get_settings

PAIR = "btc_usdt"


def graph(scale: float) -> onnx.ModelProto:
    """A tiny valid ONNX model (y = x * scale)."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])
    k = helper.make_tensor("k", TensorProto.FLOAT, [1], [scale])
    node = helper.make_node("Mul", ["x", "k"], ["y"])
    return helper.make_model(helper.make_graph([node], "g", [x], [y], initializer=[k]))


def register(settings: Settings, scale: float) -> int:
    """Log and register as ``log_and_register`` does (self-contained model.onnx, the checksum tag set as the
    version is created)."""
    proto, name = graph(scale), model_name(PAIR, settings.registry.registry_prefix)
    with mlflow.start_run():
        info = mlflow.onnx.log_model(
            proto,
            name="model",
            save_as_external_data=False,
            pip_requirements=mlflow.onnx.get_default_pip_requirements(),
        )
    digest = checksums.sha256(proto.SerializeToString())
    version = int(mlflow.register_model(info.model_uri, name, tags={checksums.TAG: digest}).version)
    return version


def test_a_tampered_champion_is_refused_and_the_previous_one_keeps_serving(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from serve_app.watcher import RegistryWatcher

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = {"MUR_MLFLOW_TRACKING_URI": uri, "MUR_REGISTRY_PREFIX": "mur-", "MUR_RUNTIME_DIR": str(tmp_path)}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("MUR_DISCORD_WEBHOOK_URL", raising=False)
    get_settings.cache_clear()
    settings = Settings()
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment(
        experiment_id=mlflow.create_experiment(  # the training experiment: Serve trusts only its runs
            settings.registry.mlflow_experiment, artifact_location=str(tmp_path / "art")
        )
    )
    client, name = MlflowClient(uri), model_name(PAIR, "mur-")
    good, bad = register(settings, 1.0), register(settings, 2.0)
    stored = model_bytes(settings, PAIR, bad)  # the recorded digest is that of the stored bytes
    assert checksums.sha256(stored) == client.get_model_version(name, str(bad)).tags[checksums.TAG]

    client.set_registered_model_alias(name, CHAMPION, str(good))
    source = str(client.get_model_version(name, str(bad)).source).removeprefix("models:/")
    [onnx_file] = [p for p in (tmp_path / "art").rglob("model.onnx") if source in str(p)]
    onnx_file.write_bytes(graph(1e6).SerializeToString())  # a valid model, other weights
    with pytest.raises(checksums.ChecksumError, match=f"{name}/{bad}: SHA-256"):
        model_bytes(settings, PAIR, bad)
    assert model_bytes(settings, PAIR, good)

    async def watch() -> tuple[dict, dict, dict]:
        cls = RegistryWatcher.func_or_class  # type: ignore[attr-defined]  # the class under the deployment
        watcher = cls.__new__(cls)
        await watcher.__init__({"settings": {"registry_poll_s": 3600}}, [PAIR])
        before = dict(watcher.targets)
        client.set_registered_model_alias(name, CHAMPION, str(bad))
        await watcher.refresh()
        await watcher.refresh()  # a second poll: still refused, no second alert
        watcher._task.cancel()
        return before, dict(watcher.targets), dict(watcher.pair_errors)

    with caplog.at_level(logging.ERROR):
        before, after, errors = asyncio.run(watch())
    assert before[PAIR]["version"] == good and after[PAIR]["version"] == good  # the previous one serves
    assert "SHA-256" in errors[PAIR] and f"version {bad}" in errors[PAIR]
    alerts = [r.getMessage() for r in caplog.records if "Serve refused" in r.getMessage()]
    assert alerts == [alerts[0]] and f"{PAIR} v{bad}" in alerts[0], alerts

    from mur.commands.models import models_app

    result = CliRunner().invoke(models_app, ["verify", PAIR])
    assert result.exit_code == 1 and f"{PAIR} v{bad}: REFUSED" in result.output, result.output
    client.set_registered_model_alias(name, CHAMPION, str(good))
    result = CliRunner().invoke(models_app, ["verify"])
    assert result.exit_code == 0 and f"{PAIR} v{good}: ok" in result.output, result.output
