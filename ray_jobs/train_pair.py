"""Ray job: train one pair (or a batch of pairs) with Ray Train, register in MLflow, apply the promotion gate.

    python -m ray_jobs.train_pair --pair btc_usdt [--end 2025-06-01T00:00:00Z] [--num-workers 2] [--use-gpu]
    python -m ray_jobs.train_pair --pairs btc_usdt,eth_usdt,sol_usdt [...]

With ``--submission-id ID`` (the submitter picks it) the job leaves its result, one
:class:`mur.contracts.TrainingResult` per pair (:class:`mur.contracts.TrainingResults`), in S3 under that id
(:func:`mur.orchestration.job_submission.write_job_result`), where the submitter reads it. A batch
(``--pairs``) trains every pair in one Ray Train run (:func:`mur.training.driver.train_many`): the job and
its worker group start once; a pair that fails gets a failure result and the others go on (exit code 3 when
any failed). ``--out-uri s3://bucket/prefix`` (one pair) also writes the artefacts there
(``model.onnx``, ``metrics.json``, ``feature_spec.json``, the weights): ``mur train --ray --out DIR``
downloads them; with ``--no-register`` nothing is logged or registered.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mur.settings import Settings


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m ray_jobs.train_pair", description=__doc__.splitlines()[0])
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--pair", help="trading pair, e.g. btc_usdt")
    which.add_argument("--pairs", help="several pairs in one Ray Train run, comma-separated")
    p.add_argument("--end", help="train on candles strictly before this ISO-8601 UTC time")
    p.add_argument("--num-workers", type=int, help="Ray Train workers")
    p.add_argument("--use-gpu", action="store_true", help="one GPU (fraction from settings) per worker")
    p.add_argument("--epochs", type=int)
    p.add_argument("--arch", choices=["lstm", "gru"])
    p.add_argument("--hidden-size", type=int)
    p.add_argument("--learning-rate", type=float)
    p.add_argument("--train-days", type=int, help="length of the training window in days")
    p.add_argument("--horizons", help="forecast horizons in hours, comma-separated (e.g. 1,4,24)")
    p.add_argument("--quantile-levels", help="quantile levels, comma-separated (e.g. 0.05,0.5,0.95)")
    p.add_argument(
        "--kind",
        choices=["scheduled", "backfill", "manual"],
        default="manual",
        help="what asked for this training (recorded on the version)",
    )
    p.add_argument("--no-reuse", action="store_true", help="train even if this window was trained before")
    p.add_argument("--out-uri", help="(one pair) also write the artefacts under this s3://bucket/prefix")
    p.add_argument("--no-register", action="store_true", help="train and evaluate only: no MLflow run")
    p.add_argument("--submission-id", help="leave the result in S3 under this id (the submitter reads it)")
    args = p.parse_args(argv)
    if args.pairs is not None and (args.out_uri or args.no_register):
        p.error("--out-uri and --no-register train one pair (--pair)")
    if args.no_register and not args.out_uri:
        p.error("--no-register needs --out-uri: the artefacts would be lost")
    return args


say = partial(print, flush=True)
"""Progress lines go to stdout, which is the job's log."""


PREFLIGHT_S = 15.0
"""Seconds the job gives MLflow and the object store to answer before it trains: a job whose registry or
store is down fails at once, saying which, instead of holding its training slot in client retries."""
CALL_TIMEOUT_S = 60.0
"""MLflow requests after the preflight: this timeout and one retry (MLflow's defaults retry for minutes)."""


def preflight(settings: Settings, *, registry: bool, store: bool) -> None:
    """ServiceError naming the service when MLflow (``registry``) or the bucket (``store``) does not answer."""
    from mur.errors import ServiceError
    from mur.orchestration.job_submission import result_store
    from mur.registry.client import configure

    reg = settings.registry
    checks = []
    if registry:
        client = configure(settings, fail_fast_s=PREFLIGHT_S)
        checks.append(
            (f"MLflow at {reg.mlflow_tracking_uri}", lambda: client.search_registered_models(max_results=1))
        )
    if store:
        bucket = result_store(settings, timeout_s=PREFLIGHT_S)
        what = f"the object store at {reg.s3_endpoint_url} (bucket {reg.s3_bucket})"
        checks.append((what, lambda: bucket.head_bucket(Bucket=reg.s3_bucket)))
    for what, check in checks:
        try:
            check()
        except Exception as exc:  # connection refused, timeout, 401/403: the job cannot do its work
            raise ServiceError(f"{what} did not answer, so nothing was trained: {exc}"[:600]) from exc
    if registry:
        configure(settings, fail_fast_s=CALL_TIMEOUT_S)  # the job's later MLflow calls: bounded too


def main(argv: list[str] | None = None) -> int:
    from mur.contracts import TrainingResult, TrainingResults
    from mur.errors import MurError
    from mur.orchestration.job_submission import copy_artefacts, write_job_result
    from mur.settings import Settings
    from mur.timeutil import parse_time
    from mur.training.driver import train_and_register, train_many
    from mur.training.ray_fit import RayFit

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    pairs = [p.strip().lower() for p in (args.pairs or args.pair).split(",") if p.strip()]
    options = {
        name: getattr(args, name)
        for name in ("epochs", "arch", "hidden_size", "learning_rate", "horizons", "quantile_levels")
    }
    settings: Settings | None = None
    try:
        settings = Settings() if args.train_days is None else Settings(train_days=args.train_days)
        preflight(settings, registry=not args.no_register, store=bool(args.submission_id or args.out_uri))
        fit = RayFit.from_settings(
            settings,
            num_workers=args.num_workers,
            use_gpu=True if args.use_gpu else None,
            emit=say,
        )
        if args.pairs is not None:
            batch = train_many(
                settings,
                pairs,
                fit=fit,
                end=parse_time(args.end),
                reuse_existing=not args.no_reuse,
                kind=args.kind,
                emit=say,
                **options,
            )
            results, code = list(batch.values()), 0 if all(r.ok for r in batch.values()) else 3
        else:
            with tempfile.TemporaryDirectory() as tmp:
                result = train_and_register(
                    settings,
                    pairs[0],
                    fit=fit,
                    end=parse_time(args.end),
                    out_dir=Path(tmp) if args.out_uri else None,
                    register=not args.no_register,
                    reuse_existing=not args.no_reuse and not args.out_uri,  # --out-uri wants the files
                    kind=args.kind,
                    emit=say,
                    **options,
                )
                if args.out_uri:
                    copy_artefacts(settings, tmp, args.out_uri)
                    say(f"[mur] {pairs[0]}: wrote the artefacts to {args.out_uri}")
            results, code = [result], 0
    except MurError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        results, code = [TrainingResult.failure(pair, str(exc)) for pair in pairs], 2
    if args.submission_id and settings is not None:
        document = TrainingResults(results=results).model_dump_json()
        say(f"[mur] result written to {write_job_result(settings, args.submission_id, document)}")
    return code


if __name__ == "__main__":
    sys.exit(main())
