"""The DAG's task bodies without Airflow or services: pairs, window end, options, results, summary, reuse."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from mur.contracts import TrainingResult, Window
from mur.errors import ConfigError, JobError
from mur.orchestration import tasks as orch
from mur.settings import Settings


def test_parse_pairs_accepts_csv_json_and_lists() -> None:
    assert orch.parse_pairs("btc_usdt, ETH_USDT,,btc_usdt") == ["btc_usdt", "eth_usdt"]
    assert orch.parse_pairs('["sol_usdt", "BNB_usdt"]') == ["sol_usdt", "bnb_usdt"]
    assert orch.parse_pairs(["xrp_usdt"]) == ["xrp_usdt"]
    assert orch.parse_pairs(None) == [] and orch.parse_pairs("") == []


def test_resolve_pairs_precedence() -> None:
    settings = Settings(pairs=["btc_usdt", "eth_usdt"])
    assert orch.resolve_pairs(settings) == ["btc_usdt", "eth_usdt"]
    assert orch.resolve_pairs(settings, variable="sol_usdt") == ["sol_usdt"]
    assert orch.resolve_pairs(settings, requested=["XRP_USDT"], variable="sol_usdt") == ["xrp_usdt"]
    assert orch.resolve_pairs(settings, requested=[], variable="") == ["btc_usdt", "eth_usdt"]
    with pytest.raises(ConfigError, match="malformed"):
        orch.resolve_pairs(settings, requested=["btc usdt"])
    with pytest.raises(ConfigError, match="mur_pairs"):
        orch.resolve_pairs(settings, variable="[not json")


def test_default_pairs_are_every_bundled_pair() -> None:
    from mur.data import bundled_pairs

    assert sorted(orch.resolve_pairs(Settings())) == sorted(bundled_pairs())


def test_training_end_prefers_the_param_and_normalises_to_utc() -> None:
    live = Settings(market_data="binance")  # live data: market time is wall time
    interval_end = datetime(2025, 3, 1, 5, tzinfo=UTC)
    assert orch.training_end(live, interval_end) == interval_end
    assert orch.training_end(live, interval_end, "") == interval_end
    assert orch.training_end(live, interval_end, "2025-02-01T00:00:00Z") == datetime(2025, 2, 1, tzinfo=UTC)
    assert orch.training_end(live, None, "2025-02-01") == datetime(2025, 2, 1, tzinfo=UTC)
    cet = timezone(timedelta(hours=1))
    assert orch.training_end(live, datetime(2025, 3, 1, 6, tzinfo=cet)) == interval_end
    with pytest.raises(ConfigError, match="end: cannot read 'yesterday' as a date"):
        orch.training_end(live, interval_end, "yesterday")
    triggered = datetime(2025, 3, 1, 7, 42, 10, tzinfo=UTC)  # no logical date: the trigger's hour
    assert orch.training_end(live, None, None, triggered) == datetime(2025, 3, 1, 7, tzinfo=UTC)
    assert orch.training_end(live, interval_end, None, triggered) == interval_end
    with pytest.raises(ConfigError, match="no training window end"):
        orch.training_end(live, None)


def test_the_task_bodies_get_their_settings_from_the_dag_file() -> None:
    """``get_settings`` is the entry points' (the DAG files'): in mur/orchestration only the timetable's
    ``environment_clock`` and the deferrable operators and trigger create settings (Airflow runs them where
    no entry point of ours runs)."""
    import ast

    from mur.settings import PROJECT_ROOT

    callers = set()
    for path in sorted((PROJECT_ROOT / "mur" / "orchestration").glob("*.py")):
        tree = ast.parse(path.read_text())
        for function in ast.walk(tree):
            if isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
                for node in ast.walk(function):
                    if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "get_settings":
                        callers.add(f"{path.stem}.{function.name}")
        module_level = [n for n in tree.body if not isinstance(n, ast.FunctionDef | ast.ClassDef)]
        assert "get_settings()" not in "".join(ast.unparse(n) for n in module_level), path.name
    # besides the timetable, Airflow runs the training tasks' operators and their trigger (triggers.py)
    entry_points = {f"triggers.{name}" for name in ("run", "execute", "execute_complete", "await_jobs")}
    assert callers == {"timetable.environment_clock", *entry_points}


def test_training_options_keep_only_set_job_overrides() -> None:
    params = {
        "pairs": ["btc_usdt"],
        "end": None,
        "epochs": 2,
        "arch": None,
        "hidden_size": 4,
        "train_days": 30,
        "num_workers": 1,
    }
    assert orch.training_options(params) == {
        "epochs": 2,
        "hidden_size": 4,
        "train_days": 30,
        "num_workers": 1,
    }
    assert orch.training_options(None) == {}


def test_submission_prefix_is_a_safe_ray_id() -> None:
    prefix = orch.submission_prefix("mur_training", "scheduled__2025-03-01T05:00:00+00:00", "btc_usdt")
    assert prefix == "mur-mur_training-scheduled__2025-03-01T05_00_00_00_00-btc_usdt"


METRIC = {"mae": 1.0, "rmse": 1.5, "mape": 0.1, "directional_accuracy": 0.5}
FULL_RESULT = TrainingResult.model_validate(
    {
        "pair": "btc_usdt",
        "version": 7,
        "alias": "champion",
        "reason": "first model",
        "run_id": "r1",
        "champion_version_before": None,
        "mae": 123.456789123,
        "skill": 0.0123,
        "reused": False,
        "data_window": {"start": "2025-01-30T05:00:00Z", "end": "2025-03-01T05:00:00Z"},
        "metrics": {
            "pair": "btc_usdt",
            "arch": "lstm",
            "normalization": "relative",
            "data_window": {"start": "2025-01-30T05:00:00Z", "end": "2025-03-01T05:00:00Z"},
            "test_window": {"start": "2025-02-25T00:00:00Z", "end": "2025-03-01T04:00:00Z"},
            "model": METRIC,
            "persistence": METRIC,
            "linear": METRIC,
            "skill": 0.0123,
            "beats_persistence": True,
            "n_test": 100,
            "big": list(range(1000)),
        },
        "model_name": "mur-btc_usdt",
        "job_id": "j1",
    }
)


def test_compact_result_carries_ids_not_data() -> None:
    small = FULL_RESULT.compact().model_dump()
    assert small == {
        "pair": "btc_usdt",
        "model_name": "mur-btc_usdt",
        "version": 7,
        "alias": "champion",
        "reason": "first model",
        "mae": 123.45678912,
        "skill": 0.0123,
        "interval_skill": None,
        "reused": False,
        "run_id": "r1",
        "job_id": "j1",
        "data_window_start": "2025-01-30T05:00:00Z",
        "data_window_end": "2025-03-01T05:00:00Z",
    }
    assert len(repr(small)) < 600


def test_summarize_lists_versions_champions_reused_and_failed() -> None:
    a = FULL_RESULT.compact().model_dump()
    b = {**a, "pair": "eth_usdt", "version": 3, "alias": "challenger", "reused": True}
    assert orch.summarize([a])["results"] == [a]  # the XCom shape passes through
    summary = orch.summarize([a, None, b], expected=["btc_usdt", "nope_usdt", "eth_usdt"])
    assert summary["pairs"] == ["btc_usdt", "eth_usdt"]
    assert summary["versions"] == {"btc_usdt": 7, "eth_usdt": 3}
    assert summary["aliases"] == {"btc_usdt": "champion", "eth_usdt": "challenger"}
    assert summary["champions"] == ["btc_usdt"] and summary["reused"] == ["eth_usdt"]
    assert summary["failed"] == ["nope_usdt"]


def test_schedule_for() -> None:
    from airflow.sdk import CronDataIntervalTimetable

    assert orch.schedule_for(None) is None and orch.schedule_for("none") is None
    hourly = orch.schedule_for("@hourly")
    assert isinstance(hourly, CronDataIntervalTimetable) and hourly.expression == "0 * * * *"
    assert orch.schedule_for("15 */2 * * *").expression == "15 */2 * * *"


def test_available_end_clamps_only_bundled_data() -> None:
    settings = Settings(market_data="bundled")
    assert orch.available_end(settings, "xrp_usdt") == datetime(2025, 5, 30, 1, tzinfo=UTC)
    assert orch.available_end(settings, "nope_usdt") is None
    assert orch.available_end(Settings(market_data="binance"), "btc_usdt") is None


# --- train_pair with the job and the registry faked -------------------------------------------------
class FakeClient:
    def __init__(self, jobs: list[Any] | None = None) -> None:
        self.jobs = jobs or []
        self.stopped: list[str] = []

    def list_jobs(self) -> list[Any]:
        return self.jobs

    def stop_job(self, job_id: str) -> bool:
        self.stopped.append(job_id)
        return True


@pytest.fixture
def fake_jobs(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Submissions recorded (the job's id: its submission id), results read from ``state["left"]``."""
    from mur.orchestration import job_submission as jobs

    state: dict[str, Any] = {"client": FakeClient(), "submitted": [], "found": None, "left": {}}

    def start(settings: Settings, pair: str, id_kind: str = "train", /, **kwargs: Any) -> str:
        state["submitted"].append({"pair": pair, "train_days": settings.training.train_days, **kwargs})
        if state.get("raise"):
            raise state["raise"]
        return str(kwargs["submission_id"] or "raysubmit_1")

    monkeypatch.setattr(jobs, "start_training", start)
    monkeypatch.setattr(jobs, "client_for", lambda settings: state["client"])
    monkeypatch.setattr(jobs, "job_result_reader", lambda settings: state["left"].get)
    monkeypatch.setattr(orch, "find_trained", lambda *a, **k: state["found"])
    return state


def deferred(job_ids: list[str], carry: Any = None) -> dict[str, Any]:
    """What the DAG's task does with submitted jobs: it defers (here: returns what it would await)."""
    return {"awaiting": job_ids}


def test_train_pair_submits_with_window_end_and_options_then_defers(fake_jobs: dict[str, Any]) -> None:
    lines: list[str] = []
    end = datetime(2025, 3, 1, 5, tzinfo=UTC)
    awaiting = orch.train_pair(
        Settings(),
        "BTC_USDT",
        end=end,
        options={"epochs": 1, "train_days": 30, "num_workers": 1},
        emit=lines.append,
        submission_prefix="mur-x-run-btc_usdt",
        try_number=2,
        await_job=deferred,
    )
    [call] = fake_jobs["submitted"]
    assert call["pair"] == "btc_usdt" and call["end"] == end and call["epochs"] == 1
    assert call["num_workers"] == 1 and call["train_days"] == 30  # via settings, as --train-days
    assert call["submission_id"].startswith("mur-x-run-btc_usdt-try2-")
    assert awaiting == {"awaiting": [call["submission_id"]]}  # nothing read while the job runs
    # resumed by the trigger: the result the job left under its id
    job_id = call["submission_id"]
    fake_jobs["left"][job_id] = left(
        FULL_RESULT.model_copy(update={"data_window": Window(start="s", end=str(end))})
    )
    event = {"jobs": {job_id: {"status": "SUCCEEDED", "reason": ""}}}
    result = orch.pair_job_done(Settings(), "btc_usdt", event, lines.append)
    assert result["version"] == 7 and result["data_window_end"] == str(end) and result["job_id"] == job_id
    assert f"[mur] btc_usdt: Ray job {job_id} ended: SUCCEEDED" in lines


def test_a_failed_jobs_reason_fails_the_resumed_task(fake_jobs: dict[str, Any]) -> None:
    """The trigger's reason (the log's last error line) is the task's error: its log, retries and alert."""
    event = {"jobs": {"j1": {"status": "FAILED", "reason": "ValueError: unknown pair nope_usdt"}}}
    with pytest.raises(JobError, match="Ray job j1 failed without a result: ValueError: unknown pair"):
        orch.pair_job_done(Settings(), "nope_usdt", event, lambda _: None)
    fake_jobs["left"]["j2"] = left(FULL_RESULT)  # a result does not make a job that did not succeed a success
    event = {"jobs": {"j2": {"status": "TIMEOUT", "reason": "it did not finish by its deadline"}}}
    with pytest.raises(JobError, match="Ray job j2 timeout"):
        orch.pair_job_done(Settings(), "btc_usdt", event, lambda _: None)


def test_train_pair_reuses_a_registered_version_without_a_job(fake_jobs: dict[str, Any]) -> None:
    fake_jobs["found"] = FULL_RESULT.model_copy(update={"reused": True, "version": 4})
    lines: list[str] = []
    result = orch.train_pair(
        Settings(), "btc_usdt", end=datetime(2025, 3, 1, tzinfo=UTC), emit=lines.append, await_job=deferred
    )
    assert fake_jobs["submitted"] == []
    assert result["version"] == 4 and result["reused"] is True
    assert any("reusing it" in line for line in lines)


def test_train_pair_awaits_a_job_left_running_by_an_earlier_try(fake_jobs: dict[str, Any]) -> None:
    from types import SimpleNamespace

    fake_jobs["client"] = FakeClient(
        [
            SimpleNamespace(submission_id="mur-x-run-btc_usdt-try1-101010", status="RUNNING"),
            SimpleNamespace(submission_id="mur-x-run-eth_usdt-try1-101010", status="RUNNING"),
        ]
    )
    awaiting = orch.train_pair(
        Settings(),
        "btc_usdt",
        end=datetime(2025, 3, 1, tzinfo=UTC),
        submission_prefix="mur-x-run-btc_usdt",
        try_number=2,
        emit=lambda _: None,
        await_job=deferred,
    )
    assert awaiting == {"awaiting": ["mur-x-run-btc_usdt-try1-101010"]} and fake_jobs["submitted"] == []


def test_train_pair_lets_submission_errors_through_for_retries(fake_jobs: dict[str, Any]) -> None:
    fake_jobs["raise"] = JobError("could not submit the training job for nope_usdt")
    with pytest.raises(JobError, match="could not submit"):
        orch.train_pair(
            Settings(),
            "nope_usdt",
            end=datetime(2025, 3, 1, tzinfo=UTC),
            submission_prefix="p",
            emit=lambda _: None,
            await_job=deferred,
        )


def test_train_pair_clamps_past_the_bundled_history(fake_jobs: dict[str, Any]) -> None:
    lines: list[str] = []
    orch.train_pair(
        Settings(market_data="bundled"),
        "xrp_usdt",
        end=datetime(2026, 1, 1, tzinfo=UTC),
        emit=lines.append,
        await_job=deferred,
    )
    assert fake_jobs["submitted"][0]["end"] == datetime(2025, 5, 30, 1, tzinfo=UTC)
    assert any("bundled candles end" in line for line in lines)


def test_expected_key_matches_the_jobs_formula() -> None:
    """Same inputs as ``train_and_register`` builds → same key (drift here would break re-run reuse)."""
    from dataclasses import asdict

    from mur.training.params import idempotency_key, model_config, train_config

    # without a tuned configuration (with one: tests/integration/test_tuned_training.py)
    settings = Settings(train_days=30, use_tuned_configs=False)
    mcfg = model_config(settings, epochs=1, hidden_size=4, arch=None)
    tcfg = train_config(settings, epochs=1, hidden_size=4, arch=None)
    params = {
        **mcfg.to_dict(),
        **{k: v for k, v in asdict(tcfg).items() if k != "weight_decay"},  # 0: left out of the key
        "seq_len": settings.model.seq_len,
        "normalization": settings.model.normalization,
        "train_days": settings.training.train_days,
    }
    want = idempotency_key("btc_usdt", "2025-03-01T05:00:00Z", params)
    got = orch.expected_idempotency_key(
        settings,
        "btc_usdt",
        datetime(2025, 3, 1, 5, tzinfo=UTC),
        {"epochs": 1, "hidden_size": 4, "num_workers": 2},
    )
    assert got == want


# --- the job's result: one contract, left by the job under its submission id, read by the submitter ------
class FakeJobClient:
    def __init__(self, logs: str, status: str = "SUCCEEDED") -> None:
        self.logs, self.status = logs, status

    def get_job_status(self, job_id: str) -> str:
        return self.status

    def get_job_logs(self, job_id: str) -> str:
        return self.logs

    def get_job_info(self, job_id: str) -> Any:
        from types import SimpleNamespace

        return SimpleNamespace(message=None)


def left(*results: TrainingResult) -> str:
    """The document a job leaves (ray_jobs/train_pair.py)."""
    from mur.contracts import TrainingResults

    return TrainingResults(results=list(results)).model_dump_json()


def test_job_result_returns_the_result_left_under_its_id_or_raises_the_jobs_error() -> None:
    from mur.orchestration.job_submission import job_result, last_error_line

    def result(logs: str, document: str | None, status: str = "SUCCEEDED") -> TrainingResult:
        read = {"j9": document}.get  # the result store, by submission id
        return job_result("j9", status, lambda: last_error_line(logs) or status, read)

    got = result("hello", left(FULL_RESULT))
    assert got.version == 7 and got.job_id == "j9" and got.metrics == FULL_RESULT.metrics
    failure = left(TrainingResult.failure("nope_usdt", "unknown pair nope_usdt"))
    with pytest.raises(JobError, match="unknown pair nope_usdt"):
        result("error: unknown pair", failure, "FAILED")
    with pytest.raises(JobError, match="failed without a result: ValueError: boom"):
        result("Traceback …\nValueError: boom", None, "FAILED")
    with pytest.raises(JobError, match="succeeded without a result: last words"):  # a job that never wrote it
        result("first\nlast words", None)
    with pytest.raises(JobError, match="unreadable result"):
        result("hello", "{not json")


class MappedResults(Sequence[Any]):
    """As Airflow's LazyXComSequence of a mapped task's results: an index is one request, and one past the end
    is a 404 that Airflow's client logs at level error ("XCom not found") in the reading task's log."""

    def __init__(self, items: list[Any]) -> None:
        self.items, self.past_the_end = items, 0

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, int) and key >= len(self.items):
            self.past_the_end += 1
            raise IndexError(key)
        return self.items[key]


def test_summarize_reads_the_mapped_results_without_asking_past_their_end() -> None:
    """A successful run's summarize task logged one red "XCom not found" line: iterating the mapped results
    asked for the item after the last."""
    results = MappedResults([{"pair": "btc_usdt", "version": 3, "alias": "champion"}, None])
    summary = orch.summarize_task(Settings(_env_file=None), results, {})
    assert summary["versions"] == {"btc_usdt": 3} and summary["champions"] == ["btc_usdt"]
    assert results.past_the_end == 0


def test_packaging_the_project_for_a_ray_job_warns_nothing(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every training task's log had Ray's warnings "Directory '.git' (and '.venv') is now ignored by default
    when packaging the working directory": the job's own excludes hold them (Ray's packaging code, no cluster);
    nor Ray's notes on each .gitignore it leaves out."""
    caplog.set_level(logging.INFO)
    from ray._private.runtime_env.working_dir import upload_working_dir_if_needed

    from mur.orchestration.job_submission import client_for, runtime_env

    monkeypatch.setenv("RAY_OVERRIDE_RUNTIME_ENV_DEFAULT_EXCLUDES", "-")  # restored (unset) after the test
    monkeypatch.delenv("RAY_OVERRIDE_RUNTIME_ENV_DEFAULT_EXCLUDES")
    with pytest.raises(JobError):
        client_for(Settings(_env_file=None, ray_address="http://127.0.0.1:9"))  # what a submitter calls first
    uploaded: list[list[str]] = []
    env = runtime_env(Settings(_env_file=None))
    upload_working_dir_if_needed(
        env,
        True,
        logger=logging.getLogger("ray"),
        upload_fn=lambda *_, excludes, **__: uploaded.append(excludes),
    )
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
    assert not [
        r for r in caplog.records if "Ignoring upload" in r.getMessage()
    ]  # ~20 lines before a CLI's own
    assert {".git", ".venv"} <= set(uploaded[0])  # still left out
