"""Ray job: tune one pair's hyper-parameters with Ray Tune on the cluster this job runs in (the ``mur_tuning``
DAG; ``mur tune`` runs the same search from a laptop).

    python -m ray_jobs.tune_pair --pair btc_usdt [--trials 20] [--submission-id ID]

The result (:meth:`mur.training.tuning.TuningReport.summary`: the chosen configuration, the confirmation-span
comparison, the MLflow parent run and the stored version) is left in S3 under the submission id
(:mod:`mur.orchestration.job_submission`), where the ``mur_tuning`` task reads it.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys


def main(argv: list[str] | None = None) -> int:
    from mur.errors import MurError
    from mur.orchestration.job_submission import write_job_result
    from mur.settings import Settings
    from mur.training.tune import TuneBudget, tune_pair

    p = argparse.ArgumentParser(prog="python -m ray_jobs.tune_pair", description=__doc__.splitlines()[0])
    p.add_argument("--pair", required=True, help="trading pair, e.g. btc_usdt")
    p.add_argument("--trials", type=int, help="configurations to try (default MUR_TUNE_TRIALS)")
    p.add_argument("--submission-id", help="leave the result in S3 under this id (the submitter reads it)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        settings = Settings()
        report = tune_pair(
            settings,
            args.pair,
            TuneBudget.from_settings(settings, trials=args.trials),
            ray_address="auto",  # this job's cluster
            emit=lambda line: print(line, flush=True),
        )
    except MurError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 2
    if args.submission_id:
        uri = write_job_result(settings, args.submission_id, json.dumps(report.summary(), default=str))
        print(f"[tune] result written to {uri}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
