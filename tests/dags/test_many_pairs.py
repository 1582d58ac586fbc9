"""The training DAG mapped over many (synthetic) pairs, one of which fails: the others are not blocked.

Versions for 11 synthetic pairs are registered beforehand with the idempotency key the DAG computes for
this window (copies of one tiny local training), so their mapped tasks find them in the registry and reuse
them without a Ray job; the 12th pair is beyond ``MUR_SYNTHETIC_PAIRS`` and its Ray job fails (one short
job, no retry). ``dag.test()`` runs against the real MLflow and Ray head.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from test_training_dag import TINY, iso, run, task_states, xcom

from mur.settings import Settings

N_OK = 11  # with the failing pair, two batches of six on the two training slots
END = datetime(2025, 3, 1, tzinfo=UTC)
FAILING = "syn900_usdt"  # beyond MUR_SYNTHETIC_PAIRS: the job fails with an unknown-pair error


@pytest.fixture
def synthetic_env(services: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    """``MUR_SYNTHETIC_PAIRS`` set for the DAG's tasks and their Ray jobs; the cached settings refreshed."""
    from mur.settings import get_settings

    monkeypatch.setenv("MUR_SYNTHETIC_PAIRS", str(N_OK))
    get_settings.cache_clear()
    try:
        yield get_settings()
    finally:
        monkeypatch.delenv("MUR_SYNTHETIC_PAIRS")
        get_settings.cache_clear()


def _register_trained(settings: Settings, pairs: list[str]) -> dict[str, int]:
    """One tiny local training, registered again for every pair under the DAG's idempotency key."""
    from mur import registry
    from mur.orchestration.tasks import expected_idempotency_key
    from mur.training.driver import train_and_register
    from mur.training.loop import LocalFit

    tiny = settings.replace(train_days=TINY["train_days"])
    base = train_and_register(
        tiny, pairs[0], fit=LocalFit(), end=END, epochs=1, hidden_size=4, reuse_existing=False
    )
    assert base.version is not None
    client = registry.configure(settings)
    prefix = settings.registry.registry_prefix
    src = client.get_model_version(registry.model_name(pairs[0], prefix), str(base.version))
    model_id = getattr(src, "model_id", None) or (
        src.source.removeprefix("models:/") if src.source.startswith("models:/m-") else None
    )  # MLflow 3: a version's source is its logged model, which must be named too
    versions = {}
    for pair in pairs:
        name = registry.model_name(pair, prefix)
        with contextlib.suppress(Exception):
            client.create_registered_model(name)
        tags = {
            **(src.tags or {}),
            "pair": pair,
            "idempotency_key": expected_idempotency_key(tiny, pair, END, TINY),
        }
        new = client.create_model_version(name, src.source, run_id=src.run_id, tags=tags, model_id=model_id)
        versions[pair] = int(new.version)
    return versions


@pytest.mark.services
@pytest.mark.airflow
@pytest.mark.timeout(1200)
def test_many_pairs_mapped_one_failing_never_blocks_the_others(
    synthetic_env: Settings, airflow_db: Path
) -> None:
    from mur import registry
    from mur.data import synthetic_pairs

    settings = synthetic_env
    pairs = synthetic_pairs(N_OK)
    try:
        versions = _register_trained(settings, pairs)
        dr = run(
            datetime(2025, 3, 2, tzinfo=UTC), {"pairs": [*pairs, FAILING], "end": iso(END), **TINY}, retries=0
        )
        states = task_states(dr)
        mapped = {i: states[("train_pair", i)][0] for i in range(N_OK + 1)}
        assert [i for i, s in mapped.items() if s != "success"] == [N_OK], mapped  # only the last one failed
        assert states[("summarize", -1)][0] == "success"
        assert states[("all_pairs_trained", -1)][0] == "upstream_failed"
        assert str(dr.state) == "failed"
        results = [r for r in xcom(dr, "train_pair") if r]
        assert {r["pair"]: r["version"] for r in results} == versions
        assert all(r["reused"] for r in results)
        [summary] = xcom(dr, "summarize")
        assert summary["failed"] == [FAILING]
        assert summary["versions"] == versions
    finally:
        client = registry.configure(settings)
        for pair in pairs:
            with contextlib.suppress(Exception):
                client.delete_registered_model(registry.model_name(pair, settings.registry.registry_prefix))


def test_mapped_training_is_bounded() -> None:
    """At most ``max_parallel_trainings`` mapped trainings at once, per run and across runs."""
    from test_training_dag import load_dag

    from mur.settings import get_settings

    train = load_dag().get_task("train_pair")
    assert train.max_active_tis_per_dag == get_settings().airflow.max_parallel_trainings
    assert train.max_active_tis_per_dagrun == get_settings().airflow.max_parallel_trainings
    assert load_dag().get_task("summarize").trigger_rule == "all_done"
