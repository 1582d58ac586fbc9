"""Ray job: train one pair with Ray Train, register it in MLflow and apply the promotion gate.

    python -m ray_jobs.train_pair --pair btc_usdt [--end 2025-06-01T00:00:00Z] [--num-workers 2] [--use-gpu]

The last stdout line is ``MUR_RESULT {json}``: the submitter (:mod:`mur.jobs`) parses it.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

RESULT_MARKER = "MUR_RESULT "


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m ray_jobs.train_pair", description=__doc__.splitlines()[0])
    p.add_argument("--pair", required=True, help="trading pair, e.g. btc_usdt")
    p.add_argument("--end", help="train on candles strictly before this ISO-8601 UTC time")
    p.add_argument("--num-workers", type=int, help="Ray Train workers")
    p.add_argument("--use-gpu", action="store_true", help="one GPU (fraction from settings) per worker")
    p.add_argument("--epochs", type=int)
    p.add_argument("--arch", choices=["lstm", "gru"])
    p.add_argument("--hidden-size", type=int)
    p.add_argument("--learning-rate", type=float)
    p.add_argument("--train-days", type=int, help="length of the training window in days")
    p.add_argument("--fail-at-epoch", type=int, help="(tests) raise once in the first attempt at this epoch")
    p.add_argument("--no-reuse", action="store_true", help="train even if this window was trained before")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    from mur.errors import MurError
    from mur.pipeline import parse_time
    from mur.ray_train import train_and_register
    from mur.settings import Settings

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    try:
        overrides = {}
        if args.train_days is not None:
            overrides["train_days"] = args.train_days
        settings = Settings(**overrides)
        result = train_and_register(
            settings,
            args.pair,
            end=parse_time(args.end),
            num_workers=args.num_workers,
            use_gpu=True if args.use_gpu else None,
            fail_at_epoch=args.fail_at_epoch,
            reuse_existing=not args.no_reuse,
            epochs=args.epochs,
            arch=args.arch,
            hidden_size=args.hidden_size,
            learning_rate=args.learning_rate,
        )
    except MurError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        print(RESULT_MARKER + json.dumps({"error": str(exc)}), flush=True)
        return 2
    print(RESULT_MARKER + json.dumps(result, default=str), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
