"""Fail fast, say why (issue 42): a training job whose MLflow or object store does not answer stops before it
trains, with the service's name and address in its error (the trigger's reason, the task log and the alert),
instead of holding its training slot in client retries."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator

import pytest


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A loopback port nothing listens on (bound, not listening: connections are refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


@pytest.fixture(autouse=True)
def _environ() -> Iterator[None]:
    """The job writes MLflow's and boto3's variables into os.environ (as it runs in a process of its own)."""
    before = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(before)


def test_a_job_whose_registry_is_down_fails_at_once_naming_it(
    closed_port: int, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from ray_jobs.train_pair import main

    monkeypatch.setenv("MUR_MLFLOW_TRACKING_URI", f"http://127.0.0.1:{closed_port}")
    assert main(["--pair", "btc_usdt", "--epochs", "1"]) == 2
    err = capsys.readouterr().err
    assert f"error: MLflow at http://127.0.0.1:{closed_port} did not answer, so nothing was trained" in err


def test_a_job_whose_object_store_is_down_fails_at_once_naming_it(
    closed_port: int, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from ray_jobs.train_pair import main

    monkeypatch.setenv("MUR_S3_ENDPOINT_URL", f"http://127.0.0.1:{closed_port}")
    assert main(["--pair", "btc_usdt", "--out-uri", "s3://mur-artifacts/x", "--no-register"]) == 2
    err = capsys.readouterr().err
    assert f"error: the object store at http://127.0.0.1:{closed_port} (bucket " in err
    assert "did not answer, so nothing was trained" in err
