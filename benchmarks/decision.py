"""Benchmark: does acting on the ranges pay? The sizing rule walked forward on every bundled pair, after fees.

    python benchmarks/decision.py [--pairs btc_usdt ...] [--folds 6] [--fold-hours 864] [--epochs 10]
    python benchmarks/decision.py --smoke   # one pair, 2 folds of 48 h, one epoch of a 4-unit model (CI)

Paper, not advice. Per pair, :func:`mur.evaluation.backtest.run_backtest` (what ``mur backtest PAIR
--strategy`` runs) retrains the model before each of ``--folds`` back-to-back folds of ``--fold-hours`` hours
ending at the pair's last bundled candle (sliding window of ``--train-days``; the defaults give six 36-day
folds, about the spans of ``benchmarks/quality.py``: BTC, ETH, SOL 2025-05-30 .. 12-31, BNB, XRP
2024-10-26 .. 2025-05-29, 5,161 hours each: the last fold's final 23 h have no 24 h outcome), and :func:`mur.evaluation.strategy.strategy_report` sizes the rule by the model's range, by
the EWMA x hour-of-day baseline's and by GARCH(1,1)-t's (both fitted before each fold), next to buy & hold.

**Parameters fixed before any scored span was looked at**: the rule is the ``MUR_STRATEGY_*`` defaults
(target volatility 40 % a year, cap 1 (no leverage), the 24 h range read and exposure decided every 24 h,
long only, 10 bps fee + 5 bps slippage on every change of exposure), set with the sizing rule (issue 39)
before this benchmark first ran; folds, training and bootstrap (2,000 stationary-bootstrap replications,
seed 0) are fixed here and were not tuned on the results. Every headline figure, the Sharpe difference of
the model-sized rule vs each other one, comes with its 95 % interval; "beats" only when it lies above 0.

Budget: one local training per fold (at most ``--epochs`` epochs with early stopping), 30 trainings for the
defaults: 7 min 37 s on 2 busy cores (2026-11-25). Each pair's out-of-sample forecasts are kept under ``--cache`` (outside the
repository: ~2 MB per pair) and reused by the next run. Writes ``benchmarks/results/decision.json``.
"""

from __future__ import annotations

import platform
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks import common  # noqa: E402
from mur.evaluation.backtest import FoldForecasts, concat_forecasts, run_backtest  # noqa: E402
from mur.evaluation.sizing import SizingRule  # noqa: E402
from mur.evaluation.strategy import STRATEGIES, describe, local_trainer, strategy_report, table  # noqa: E402
from mur.settings import Settings  # noqa: E402

REPS = 2000
"""Stationary-bootstrap replications per Sharpe difference."""


def forecasts(
    pair: str, folds: int, fold_hours: int, epochs: int, train_days: int, cache: Path | None, **overrides: Any
) -> FoldForecasts:
    """The pair's walk-forward forecasts over its last ``folds * fold_hours`` hours (from ``cache`` when
    there)."""
    from mur.training.driver import load_candles

    key = "-".join(f"{n}{v}" for n, v in sorted(overrides.items()))
    path = cache / f"{pair}-{folds}x{fold_hours}h-{epochs}e-{train_days}d{key}.npz" if cache else None
    if path is not None and path.exists():  # written below, by this script (arrays only: no pickle)
        with np.load(path, allow_pickle=False) as z:
            quantiles = {k.removeprefix("q_"): z[k] for k in z.files if k.startswith("q_")}
            return FoldForecasts(
                z["timestamps"], z["last_close"], z["targets"], quantiles,
                tuple(int(h) for h in z["horizons"]), tuple(float(v) for v in z["levels"]),
            )  # fmt: skip
    settings = common.bundled_settings(train_days=train_days)
    candles, _, _ = load_candles(settings, pair, train_days=None)
    report = run_backtest(
        pair,
        candles,
        local_trainer(settings, pair, epochs, **overrides),
        folds=folds,
        fold_hours=fold_hours,
        seq_len=settings.model.seq_len,
        train_days=train_days,
        progress=lambda msg: print(f"[{pair}] {msg}", flush=True),
    )
    f = concat_forecasts(report.forecasts)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        arrays = {f"q_{k}": v for k, v in f.quantiles.items()}
        np.savez(path, timestamps=f.timestamps, last_close=f.last_close, targets=f.targets, **arrays,
                 horizons=np.asarray(f.horizons), levels=np.asarray(f.levels))  # fmt: skip
    return f


def main() -> None:
    parser = common.training_parser(
        __doc__, common.BUNDLED, "decision.json", smoke="one pair, 2 folds of 48 h, a tiny model (CI)"
    )
    parser.add_argument("--folds", type=int, default=6)
    parser.add_argument("--fold-hours", type=int, default=864, help="hours per fold (default 36 days)")
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "mur-decision-forecasts")
    args, overrides = common.parse_training_args(parser, folds=2, fold_hours=48, cache=None)
    reps = 200 if args.smoke else REPS

    rule = SizingRule.from_settings(Settings.defaults())
    print(f"rule (paper, not advice): {describe(rule)}", flush=True)
    per_pair: dict[str, Any] = {}
    for pair in args.pairs:
        started = time.perf_counter()
        f = forecasts(
            pair, args.folds, args.fold_hours, args.epochs, args.train_days, args.cache, **overrides
        )
        doc, _ = strategy_report(f, rule, reps)
        per_pair[pair] = doc | {"seconds": round(time.perf_counter() - started, 1)}
        print(
            f"\n{pair}, {doc['start']} .. {doc['end']} ({args.folds} folds):\n{table(doc)}\n{doc['verdict']}"
        )

    vs = ("ewma", "garch", "buy_hold")
    header = f"{'pair':<10}" + "".join(f"{'vs ' + STRATEGIES[k]:>26}" for k in vs)
    print(f"\nmodel-sized rule, Sharpe difference after fees [95 % CI]:\n{header}\n{'-' * len(header)}")
    for pair, doc in per_pair.items():
        cells = [doc["sharpe_vs"][k] for k in vs]
        print(
            f"{pair:<10}"
            + "".join(f"{d['difference']:>+11.2f} [{d['ci_low']:+.2f}, {d['ci_high']:+.2f}]" for d in cells)
        )
    wins = {k: sum(doc["beats"][k] for doc in per_pair.values()) for k in ("ewma", "garch", "buy_hold")}
    print(
        f"model-sized rule beats (95 % CI above 0) the EWMA-sized rule on {wins['ewma']} of {len(per_pair)} "
        f"pairs, the GARCH-sized on {wins['garch']}, buy & hold on {wins['buy_hold']}"
    )
    figures = [v for doc in per_pair.values() for p in doc["strategies"].values() for v in p.values()]
    if not all(np.isfinite(figures)):
        raise SystemExit("a figure is not finite: the benchmark measured nothing")
    if args.out is not None:
        doc = {
            "machine": {"platform": platform.platform(), "when": datetime.now(UTC).isoformat()},
            "budget": {k: getattr(args, k) for k in ("folds", "fold_hours", "epochs", "train_days")}
            | {"bootstrap_reps": reps},
            "rule": describe(rule),
            "pairs": per_pair,
            "summary": {"pairs": len(per_pair), "model_sized_beats": wins},
        }
        common.write_json(args.out, doc, indent=1)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
