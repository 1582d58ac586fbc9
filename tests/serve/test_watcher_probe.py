"""The registry watcher's artefact probe (``serve_app.watcher.ARTIFACT_PROBE_EVERY_S``): a fast poll lists a
champion's artefacts at most that often while they answer, and at every poll after one that failed, which marks
the registry unreachable. The watcher's own code in-process; the registry calls are stand-ins (the real ones:
tests/integration/test_checksums.py, tests/serve)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from mur.errors import RegistryUnavailableError
from mur.settings import get_settings

PAIR = "btc_usdt"
SUMMARY = {"pair": PAIR, "version": 1, "run_id": "r1", "shadows": []}


def test_a_fast_poll_probes_the_artefacts_every_30_s_and_after_a_failure_every_poll(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from serve_app import watcher as module

    monkeypatch.setenv("MUR_RUNTIME_DIR", str(tmp_path))  # the champion store writes there
    get_settings.cache_clear()
    now = [1000.0]
    probes: list[float] = []
    failing = [False]

    def probe(_client: Any, run_id: str | None) -> None:
        assert run_id == "r1"
        probes.append(now[0])
        if failing[0]:
            raise RegistryUnavailableError("artifact store unreachable: S3 down")

    monkeypatch.setattr(module.time, "monotonic", lambda: now[0])
    monkeypatch.setattr(module, "registry_client", lambda _settings: object())
    monkeypatch.setattr(module, "champions", lambda *_a, **_k: {PAIR: dict(SUMMARY)})
    monkeypatch.setattr(module, "probe_artifacts", probe)
    monkeypatch.setattr(module, "model_bytes", lambda _settings, _pair, _version: b"onnx")

    async def polls() -> list[bool | None]:
        cls = module.RegistryWatcher.func_or_class  # type: ignore[attr-defined]  # the class under the deployment
        watcher = cls.__new__(cls)
        # its own loop sleeps an hour: the polls below are the only ones
        await watcher.__init__({"settings": {"registry_poll_s": 3600}}, [PAIR])
        health = [watcher.registry_ok]
        for step, fail in [(2, False), (29, False), (30, True), (2, True), (2, False), (2, False)]:
            now[0] += step
            failing[0] = fail
            await watcher.refresh()
            health.append(watcher.registry_ok)
        watcher._task.cancel()
        return health

    health = asyncio.run(polls())
    # 1000: the first poll probes; 1002: 2 s later, not; 1031: due; 1061: due, S3 down: unreachable; 1063: not
    # due by the clock, probed since the last one failed; 1065: answers again; 1067: not due
    assert probes == [1000.0, 1031.0, 1061.0, 1063.0, 1065.0]
    assert health == [True, True, True, False, False, True, True]
