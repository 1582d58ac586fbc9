"""Issue 26 #5: ``mur train PAIR --ray --out DIR`` writes the job's artefacts into DIR (it used to ignore
``--out`` and always register): the CLI gives the job an ``--out-uri`` (and ``--no-register`` unless
``--register``), the job writes its artefacts there, and the CLI downloads them. No Ray, no S3: the
submission is captured and ``s3://`` locations map to a temporary directory."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

import pytest

from mur.contracts import TrainingResult

ARTEFACTS = ("model.onnx", "metrics.json", "feature_spec.json")


@pytest.fixture
def fake_s3(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``s3://bucket/key`` → ``tmp_path/s3/bucket/key`` on the local filesystem (what both sides resolve)."""
    from mur.training import ray_fit

    root = tmp_path / "s3"

    def location(settings: Any, uri: str) -> tuple[str, Any]:
        path = root / uri.removeprefix("s3://") if uri.startswith("s3://") else Path(uri)
        path.mkdir(parents=True, exist_ok=True)
        return str(path), None

    monkeypatch.setattr(ray_fit, "location", location)
    return root


def test_the_job_takes_the_output_location_and_refuses_what_it_cannot_do() -> None:
    from ray_jobs.train_pair import parse_args

    args = parse_args(["--pair", "btc_usdt", "--out-uri", "s3://b/job-outputs/x", "--no-register"])
    assert args.out_uri == "s3://b/job-outputs/x" and args.no_register
    for bad in (
        ["--pairs", "a,b", "--out-uri", "s3://b/x"],  # a batch has no single output folder
        ["--pair", "btc_usdt", "--no-register"],  # the artefacts would be lost
    ):
        with pytest.raises(SystemExit):
            parse_args(bad)


@pytest.fixture
def fake_job(fake_s3: Path, monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """``submit_training`` as far as the CLI can tell: records the job's entrypoint (parsed by the job's own
    parser) and writes the job's artefacts at its ``--out-uri``; registers unless ``--no-register``."""
    from mur.orchestration import job_submission
    from ray_jobs.train_pair import parse_args

    seen: list[dict[str, Any]] = []

    def submit_training(settings: Any, pair: str, **kw: Any) -> TrainingResult:
        options = {k: v for k, v in kw.items() if k != "stream_logs"}
        argv = shlex.split(job_submission.build_entrypoint(pair, options.pop("end"), **options))
        job = parse_args(argv[3:])  # after `python -m ray_jobs.train_pair`
        seen.append({"kw": kw, "argv": argv, "job": job})
        if job.out_uri:
            remote = fake_s3 / job.out_uri.removeprefix("s3://")
            remote.mkdir(parents=True)
            for name in ARTEFACTS:
                (remote / name).write_text(f"{name} of {job.pair}")
        if job.no_register:
            return TrainingResult(pair=pair, mae=0.5, skill=0.1)
        return TrainingResult(
            pair=pair, version=3, alias="champion", reason="first", model_name=f"mur-{pair}"
        )

    monkeypatch.setattr(job_submission, "submit_training", submit_training)
    return seen


def test_mur_train_ray_out_passes_the_location_downloads_the_artefacts_and_does_not_register(
    tmp_path: Path, fake_s3: Path, fake_job: list[dict[str, Any]]
) -> None:
    from typer.testing import CliRunner

    from mur.cli import app

    out = tmp_path / "out"
    done = CliRunner().invoke(app, ["train", "btc_usdt", "--ray", "--out", str(out), "--epochs", "2"])
    assert done.exit_code == 0, done.output
    [submitted] = fake_job
    job = submitted["job"]
    assert job.pair == "btc_usdt" and job.epochs == 2
    assert job.out_uri.startswith("s3://mur-artifacts/job-outputs/") and job.no_register
    assert "--out-uri" in submitted["argv"] and "--no-register" in submitted["argv"]
    for name in ARTEFACTS:
        assert (out / name).read_text() == f"{name} of btc_usdt"
    assert not (fake_s3 / job.out_uri.removeprefix("s3://")).exists(), "the job's copy is deleted"
    assert "registered" not in done.output and f"wrote {out}/model.onnx" in done.output


def test_register_with_out_registers_and_plain_ray_keeps_registering_without_files(
    tmp_path: Path, fake_job: list[dict[str, Any]]
) -> None:
    from typer.testing import CliRunner

    from mur.cli import app

    runner = CliRunner()
    both = runner.invoke(app, ["train", "btc_usdt", "--ray", "--out", str(tmp_path / "o"), "--register"])
    plain = runner.invoke(app, ["train", "btc_usdt", "--ray"])
    assert both.exit_code == 0 and plain.exit_code == 0, both.output + plain.output
    assert fake_job[0]["job"].out_uri and not fake_job[0]["job"].no_register
    assert (tmp_path / "o" / "model.onnx").exists() and "registered mur-btc_usdt version 3" in both.output
    assert fake_job[1]["job"].out_uri is None and not fake_job[1]["job"].no_register
    assert "registered mur-btc_usdt version 3" in plain.output and "wrote" not in plain.output


def test_the_job_writes_its_artefacts_to_the_location_skips_the_registry_and_leaves_its_result(
    tmp_path: Path, fake_s3: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import ray_jobs.train_pair as job
    from mur.contracts import TrainingResults
    from mur.errors import MarketDataError
    from mur.orchestration import job_submission
    from mur.training import driver, ray_fit

    left: dict[str, TrainingResults] = {}

    def write_job_result(settings: Any, submission_id: str, document: str) -> str:
        left[submission_id] = TrainingResults.model_validate_json(document)
        return f"s3://bucket/job-results/{submission_id}.json"

    calls: list[dict[str, Any]] = []

    def train_and_register(settings: Any, pair: str, **kw: Any) -> TrainingResult:
        calls.append(kw)
        for name in ARTEFACTS:
            (kw["out_dir"] / name).write_text(name)
        return TrainingResult(pair=pair, mae=0.5)

    monkeypatch.setattr(driver, "train_and_register", train_and_register)
    monkeypatch.setattr(ray_fit.RayFit, "from_settings", classmethod(lambda cls, settings, **kw: object()))
    monkeypatch.setattr(job_submission, "write_job_result", write_job_result)
    monkeypatch.setattr(
        job, "preflight", lambda settings, **wanted: None
    )  # no S3 here (test_job_preflight.py)
    out = ["--out-uri", "s3://bucket/job-outputs/abc", "--no-register", "--submission-id", "sub-1"]
    assert job.main(["--pair", "btc_usdt", *out]) == 0
    assert left["sub-1"].results == [TrainingResult(pair="btc_usdt", mae=0.5)]
    assert calls[0]["register"] is False and calls[0]["reuse_existing"] is False
    assert sorted(p.name for p in (fake_s3 / "bucket/job-outputs/abc").iterdir()) == sorted(ARTEFACTS)

    def unknown(settings: Any, pairs: list[str], **kw: Any) -> Any:
        raise MarketDataError("unknown pair nope_usdt")

    monkeypatch.setattr(driver, "train_many", unknown)
    assert job.main(["--pairs", "btc_usdt,nope_usdt", "--submission-id", "sub-2"]) == 2
    assert [(r.pair, r.error) for r in left["sub-2"].results] == [
        ("btc_usdt", "unknown pair nope_usdt"),
        ("nope_usdt", "unknown pair nope_usdt"),
    ]
