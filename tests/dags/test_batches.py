"""Batched training without services: batch plans, the batch task with the job and registry faked, the
per-pair task reading its batch, the batch job's result lines, and a batch trained locally with a bad pair."""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import pytest
from test_orchestration import FULL_RESULT, FakeJobClient, deferred, left

from mur.contracts import TrainingResult
from mur.errors import JobError
from mur.orchestration import batches
from mur.orchestration import tasks as orch
from mur.orchestration.job_submission import batch_results, build_entrypoint, last_error_line
from mur.settings import Settings

END = datetime(2025, 3, 1, 5, tzinfo=UTC)


@pytest.mark.parametrize(
    ("n", "slots", "size", "sizes"),
    [
        (0, 2, 25, []),
        (1, 2, 25, [1]),
        (5, 2, 25, [3, 2]),  # the bundled pairs: both slots work
        (5, 2, 2, [2, 2, 1]),
        (100, 2, 25, [25, 25, 25, 25]),
        (101, 2, 25, [21, 20, 20, 20, 20]),
        (7, 4, 25, [2, 2, 2, 1]),
    ],
)
def test_plan_batches_fills_the_slots_and_caps_the_size(
    n: int, slots: int, size: int, sizes: list[int]
) -> None:
    pairs = [f"p{i:03d}_usdt" for i in range(n)]
    plan = batches.plan_batches(pairs, slots, size)
    assert [len(b) for b in plan] == sizes
    assert [p for b in plan for p in b] == pairs  # every pair once, order kept


def test_batch_entrypoint_and_results() -> None:
    entry = build_entrypoint(["btc_usdt", "eth_usdt"], END, epochs=2, submission_id="s1")
    assert "--pairs btc_usdt,eth_usdt" in entry and "--pair " not in entry and "--epochs 2" in entry
    assert "--submission-id s1" in entry
    assert "--pair btc_usdt" in build_entrypoint("btc_usdt", None)
    document = left(FULL_RESULT, TrainingResult.failure("nope_usdt", "unknown pair"))
    pairs = ["btc_usdt", "nope_usdt", "eth_usdt"]
    logs = "[mur] progress\nRuntimeError: worker died"
    results = batch_results("s1", pairs, "FAILED", lambda: last_error_line(logs) or "", {"s1": document}.get)
    assert list(results) == pairs and results["btc_usdt"].version == 7 and results["btc_usdt"].job_id == "s1"
    assert results["nope_usdt"].error == "unknown pair"
    assert results["eth_usdt"].error == "Ray job s1 failed without a result: RuntimeError: worker died"


class SubmittingClient(FakeJobClient):
    """A job client that takes submissions (their entrypoint and submission id) and reports them done."""

    def __init__(self) -> None:
        super().__init__("[mur] done")
        self.submitted: list[dict[str, Any]] = []

    def submit_job(self, **job: Any) -> str:
        self.submitted.append(job)
        return str(job["submission_id"])


def test_submit_training_and_submit_batch_pass_the_jobs_flags_and_read_its_result(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Both submit through one path: the job's own flags (``kind`` too) reach its entrypoint, the caller's
    submission id names the job, and the result is read under it."""
    from mur.orchestration import job_submission as jobs

    client = SubmittingClient()
    monkeypatch.setattr(jobs, "client_for", lambda settings: client)
    monkeypatch.setattr(jobs, "runtime_env", lambda settings: {})
    eth = FULL_RESULT.model_copy(update={"pair": "eth_usdt"})
    read = {"b1": left(FULL_RESULT, eth), "t1": left(FULL_RESULT)}.get
    quiet: dict[str, Any] = {"stream_logs": False, "poll_s": 0, "read": read}
    batch = jobs.submit_batch(
        Settings(), ["BTC_USDT", "eth_usdt"], end=END, kind="backfill", submission_id="b1", **quiet
    )
    one = jobs.submit_training(
        Settings(), "btc_usdt", num_workers=2, kind="hourly", submission_id="t1", **quiet
    )
    assert {p: r.job_id for p, r in batch.items()} == {"btc_usdt": "b1", "eth_usdt": "b1"}
    assert one.version == 7 and one.job_id == "t1"
    first, second = (job["entrypoint"] for job in client.submitted)
    assert (
        "--pairs btc_usdt,eth_usdt" in first and "--kind backfill" in first and "--end 2025-03-01T05" in first
    )
    assert "--pair btc_usdt" in second and "--kind hourly" in second and "--num-workers 2" in second
    assert [job["metadata"] for job in client.submitted] == [
        {"pairs": "btc_usdt,eth_usdt", "end": str(END)},
        {"pair": "btc_usdt", "end": "None"},
    ]


@pytest.fixture
def fake_batch_jobs(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Batch submissions recorded; each job's result document in ``state["left"]`` once it "ran"."""
    from mur.orchestration import job_submission as jobs

    state: dict[str, Any] = {"submitted": [], "found": {}, "fail": {}, "left": {}}

    def start(settings: Settings, pairs: list[str], id_kind: str = "train", /, **kwargs: Any) -> str:
        state["submitted"].append({"pairs": list(pairs), **kwargs})
        if state.get("raise"):
            raise state["raise"]
        job_id = f"raysubmit_{len(state['submitted'])}"
        state["left"][job_id] = left(
            *(
                TrainingResult.failure(p, state["fail"][p])
                if p in state["fail"]
                else FULL_RESULT.model_copy(update={"pair": p})
                for p in pairs
            )
        )
        return job_id

    monkeypatch.setattr(jobs, "start_training", start)
    monkeypatch.setattr(jobs, "job_result_reader", lambda settings: state["left"].get)
    monkeypatch.setattr(orch, "find_trained", lambda settings, pair, end, options: state["found"].get(pair))
    return state


def resumed(awaiting: dict[str, Any], status: str = "SUCCEEDED", reason: str = "") -> dict[str, Any]:
    """The event the trigger fires when the awaited jobs ended (:mod:`mur.orchestration.triggers`)."""
    return {
        "jobs": {j: {"status": status, "reason": reason} for j in awaiting["awaiting"]},
        "carry": awaiting["carry"],
    }


def awaited(job_ids: list[str], carry: Any = None) -> dict[str, Any]:
    return {"awaiting": job_ids, "carry": carry}


def test_train_batch_reuses_registered_pairs_defers_and_reports_failures(
    fake_batch_jobs: dict[str, Any],
) -> None:
    fake_batch_jobs["found"]["eth_usdt"] = FULL_RESULT.model_copy(update={"pair": "eth_usdt", "reused": True})
    fake_batch_jobs["fail"]["sol_usdt"] = "Ray Train: sol_usdt: diverged"
    lines: list[str] = []
    awaiting = batches.train_batch(
        Settings(),
        ["BTC_USDT", "eth_usdt", "sol_usdt"],
        end=END,
        options={"epochs": 1, "num_workers": 1},
        emit=lines.append,
        submission_prefix="mur-x-run-batch0-try1",
        await_jobs=awaited,
    )
    [call] = fake_batch_jobs["submitted"]
    assert call["pairs"] == ["btc_usdt", "sol_usdt"]  # eth_usdt reused without a job
    assert call["end"] == END and call["epochs"] == 1 and call["num_workers"] == 1
    assert call["submission_id"].startswith("mur-x-run-batch0-try1-0-")
    assert awaiting["awaiting"] == ["raysubmit_1"]
    out = batches.batch_jobs_done(Settings(), resumed(awaiting), lines.append)
    assert out["btc_usdt"]["result"]["version"] == 7 and out["btc_usdt"]["result"]["job_id"] == "raysubmit_1"
    assert out["eth_usdt"]["result"]["reused"] is True
    assert out["sol_usdt"] == {"error": "Ray Train: sol_usdt: diverged"}
    assert any("failed (their own tasks retry them): sol_usdt" in line for line in lines)
    # a job that ran to its end with a failed pair (exit 3: FAILED) left every result: the task succeeds
    assert (
        batches.batch_jobs_done(
            Settings(), resumed(awaiting, "FAILED", "exit code 3"), lines.append, strict=True
        )
        == out
    )


def test_a_batch_job_that_failed_without_results_marks_each_of_its_pairs(
    fake_batch_jobs: dict[str, Any],
) -> None:
    awaiting = batches.train_batch(
        Settings(), ["btc_usdt", "eth_usdt"], end=END, emit=lambda _l: None, await_jobs=awaited
    )
    fake_batch_jobs["left"].clear()
    event = resumed(awaiting, "FAILED", "RuntimeError: OOM")
    out = batches.batch_jobs_done(Settings(), event, lambda _l: None)
    assert out == {
        p: {"error": "Ray job raysubmit_1 failed without a result: RuntimeError: OOM"}
        for p in ("btc_usdt", "eth_usdt")
    }
    with pytest.raises(
        JobError, match="Ray job raysubmit_1 failed: RuntimeError: OOM"
    ):  # the task never succeeds
        batches.batch_jobs_done(Settings(), event, lambda _l: None, strict=True)


def test_a_batch_job_that_cannot_run_marks_each_of_its_pairs(fake_batch_jobs: dict[str, Any]) -> None:
    fake_batch_jobs["raise"] = JobError("could not submit the training job")
    out = batches.train_batch(
        Settings(), ["btc_usdt", "eth_usdt"], end=END, emit=lambda _l: None, await_jobs=deferred
    )
    assert out == {p: {"error": "could not submit the training job"} for p in ("btc_usdt", "eth_usdt")}


def test_bundled_pairs_ending_earlier_go_in_their_own_job(fake_batch_jobs: dict[str, Any]) -> None:
    """A window end past a pair's bundled candles is clamped per pair, as the single-pair path does."""
    late = datetime(2030, 1, 1, tzinfo=UTC)
    awaiting = batches.train_batch(
        Settings(market_data="bundled"),
        ["btc_usdt", "bnb_usdt", "xrp_usdt"],
        end=late,
        emit=lambda _l: None,
        await_jobs=awaited,
    )
    ends = {tuple(c["pairs"]): c["end"] for c in fake_batch_jobs["submitted"]}
    assert all(end < late for end in ends.values())
    assert ("bnb_usdt", "xrp_usdt") in ends and ("btc_usdt",) in ends  # BNB/XRP end in 2025-05
    assert len(awaiting["awaiting"]) == 2  # one deferral awaits both jobs


def _context(try_number: int) -> dict[str, Any]:
    ti = SimpleNamespace(
        try_number=try_number, dag_id="mur_training", log=SimpleNamespace(info=lambda _m: None)
    )
    return {"ti": ti, "params": {}, "run_id": "manual__x", "data_interval_end": END}


def test_train_pair_task_takes_its_result_from_the_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        orch, "train_pair", lambda *a, **k: pytest.fail("no own job for a pair its batch trained")
    )
    found = {"btc_usdt": {"result": FULL_RESULT.compact().model_dump()}}
    result = orch.train_pair_task(Settings(), "btc_usdt", _context(1), [None, found], deferred)
    assert result["version"] == 7 and result["pair"] == "btc_usdt"


def test_a_pair_that_failed_in_its_batch_fails_first_then_trains_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(
        orch, "train_pair", lambda settings, pair, **k: calls.append({"pair": pair, **k}) or {"ok": 1}
    )
    failed = [{"sol_usdt": {"error": "diverged"}}]
    with pytest.raises(JobError, match="sol_usdt failed in its batch job: diverged"):
        orch.train_pair_task(Settings(), "sol_usdt", _context(1), failed, deferred)
    assert calls == []
    assert orch.train_pair_task(Settings(), "sol_usdt", _context(2), failed, deferred) == {
        "ok": 1
    }  # the retry: its own job
    assert calls[0]["pair"] == "sol_usdt" and calls[0]["try_number"] == 2
    # a batch task that failed as a whole reported nothing: the pair trains on its own at once
    assert orch.train_pair_task(Settings(), "xrp_usdt", _context(1), [None], deferred) == {"ok": 1}


def test_train_many_trains_the_good_pairs_of_a_batch_with_a_bad_one() -> None:
    """One fit for the batch (LocalFit: one after the other); an unknown pair fails alone."""
    from mur.training.driver import train_many
    from mur.training.loop import LocalFit

    settings = Settings(market_data="bundled", train_days=20)
    lines: list[str] = []
    out = train_many(
        settings,
        ["btc_usdt", "nope_usdt", "eth_usdt"],
        fit=LocalFit(),
        end=datetime(2025, 3, 1, tzinfo=UTC),
        register=False,
        emit=lines.append,
        epochs=1,
        hidden_size=4,
    )
    assert list(out) == ["btc_usdt", "nope_usdt", "eth_usdt"]
    assert out["btc_usdt"].ok and out["eth_usdt"].ok
    assert out["btc_usdt"].metrics is not None and out["btc_usdt"].metrics.horizons
    assert not out["nope_usdt"].ok and "unknown pair" in (out["nope_usdt"].error or "")
    assert any("fitting 2 pair(s) in one run: btc_usdt, eth_usdt" in line for line in lines)
    # nothing registered: no registry asked for a warm start (nor for tuned configurations)
    assert any("btc_usdt: full training, not registered" in line for line in lines), lines
    assert any("2/3 pair(s) done" in line and "failed: nope_usdt" in line for line in lines)
