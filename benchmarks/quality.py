"""Benchmark: forecast quality on every bundled pair, per horizon, next to the naive baselines.

    python benchmarks/quality.py [--pairs btc_usdt eth_usdt ...] [--epochs 10] [--train-days 365] [--out FILE]
    python benchmarks/quality.py --smoke   # one pair, one epoch of a 4-unit model on 45 days (CI; no --out)

Budget (bounded and documented): one local training per pair with the default settings (LSTM, 168 h of
context, horizons 1/4/24 h, levels 0.05/0.5/0.95), at most ``--epochs`` epochs with early stopping, on the
last ``--train-days`` days of the bundled candles; about 10-70 s per pair on 2 CPU cores. Every score is
out-of-sample: the test span is the last 10 % of the hours, which the model never trained on (weights) nor
calibrated on (conformal scale), and both interval baselines are fitted on the hours before it:

* (a) naive: fixed empirical quantiles of past h-hour log returns;
* (b) EWMA volatility (half-life 12 h, squared returns and high-low range) x hour-of-day factor.

Offline, the market clock (:mod:`mur.clock`) hides candles after market "now" (a week of November 2024 by
default); the benchmark freezes it after the bundled history (``CLOCK_AFTER_THE_DATA``), so that it always
measures the documented span: the last ``--train-days`` of every pair's bundled candles.

Prints per pair and horizon: point skill vs persistence, directional accuracy, coverage of the 90 %
interval, interval skill vs (a) and vs (b); then the worst 1 h interval skill vs (a), the worst 1 h coverage, the
coverage per horizon (every pair) and, last, the worst coverage over horizons: the one farthest from 0.90 in
either direction, with its pair, horizon, signed distance and sampling error (:func:`coverage_error`).
Targets: 1 h coverage in [0.88, 0.92], 1 h interval skill >= 0.15 vs (a) and at least (b)'s (issue 13);
coverage in [0.87, 0.93] at every horizon (issue 24). Writes the figures as JSON (``benchmarks/results/quality.json``).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

BUNDLED = ("btc_usdt", "eth_usdt", "sol_usdt", "bnb_usdt", "xrp_usdt")
CLOCK_AFTER_THE_DATA = datetime(2026, 1, 1, tzinfo=UTC)
"""The market clock, frozen after every bundled candle: the whole history is visible."""


def evaluate_pair(pair: str, epochs: int, train_days: int, **overrides: Any) -> dict[str, Any]:
    """Train ``pair`` locally (no registry) and return its metrics document as a dict, with the time taken
    (``overrides``: hyper-parameters, e.g. the smoke run's ``hidden_size``)."""
    from mur.settings import Settings
    from mur.training.driver import train_and_register
    from mur.training.loop import LocalFit

    settings = Settings(
        market_data="bundled", train_days=train_days, clock_start=CLOCK_AFTER_THE_DATA, clock_speed=0
    )
    started = time.perf_counter()
    result = train_and_register(
        settings, pair, fit=LocalFit(), register=False, epochs=epochs, emit=lambda _m: None, **overrides
    )
    assert result.metrics is not None
    return {
        "seconds": round(time.perf_counter() - started, 1),
        "metrics": result.metrics.model_dump(mode="json"),
    }


def coverage_error(coverage: float, n_windows: int, hours: int) -> float:
    """Sampling error of a coverage measured on ``n_windows`` overlapping ``hours``-hour outcomes: binomial on
    the ``n_windows / hours`` independent ones, ``sqrt(c (1 - c) hours / n)`` (24 h on a 36-day span: ~0.05)."""
    independent = max(1.0, n_windows / max(1, hours))
    return math.sqrt(max(coverage * (1.0 - coverage), 0.0) / independent)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", nargs="+", default=list(BUNDLED))
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--train-days", type=int, default=365)
    parser.add_argument("--out", type=Path, help="default: benchmarks/results/quality.json (smoke: none)")
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="one pair, one epoch of a 4-unit model on 45 days: does it still run and score? (CI)",
    )
    args = parser.parse_args()
    overrides: dict[str, Any] = {}
    if args.smoke:
        args.pairs, args.epochs, args.train_days = args.pairs[:1], 1, 45
        overrides["hidden_size"] = 4
    elif args.out is None:
        args.out = Path(__file__).parent / "results" / "quality.json"

    rows: list[dict[str, Any]] = []
    per_pair: dict[str, Any] = {}
    header = (
        f"{'pair':<10} {'h':>3} {'point skill':>11} {'dir acc':>7} {'coverage':>8} {'int skill (a)':>13} "
        f"{'int skill (b)':>13} {'(b) vs (a)':>10} {'cov (b)':>7}"
    )
    print(header)
    print("-" * len(header))
    for pair in args.pairs:
        out = evaluate_pair(pair, args.epochs, args.train_days, **overrides)
        doc = out["metrics"]
        per_pair[pair] = {
            "seconds": out["seconds"],
            "test_window": doc["test_window"],
            "horizons": doc["horizons"],
        }
        for h in doc["horizons"]:
            b_vs_a = 1 - h["ewma"]["winkler"] / h["naive"]["winkler"]
            row = {
                "pair": pair,
                "hours": h["hours"],
                "point_skill": h["skill"],
                "directional_accuracy": h["model"]["directional_accuracy"],
                "coverage": h["interval"]["coverage"],
                "interval_skill_vs_naive": h["interval_skill"],
                "interval_skill_vs_ewma": h["interval_skill_vs_ewma"],
                "ewma_skill_vs_naive": b_vs_a,
                "ewma_coverage": h["ewma"]["coverage"],
                "coverage_error": coverage_error(h["interval"]["coverage"], h["n"], h["hours"]),
            }
            rows.append(row)
            print(
                f"{pair:<10} {h['hours']:>3} {row['point_skill']:>+11.4f} {row['directional_accuracy']:>7.3f} "
                f"{row['coverage']:>8.3f} {row['interval_skill_vs_naive']:>+13.4f} "
                f"{row['interval_skill_vs_ewma']:>+13.4f} {b_vs_a:>+10.4f} {row['ewma_coverage']:>7.3f}",
                flush=True,
            )
    one_hour = [r for r in rows if r["hours"] == 1]
    horizons = sorted({r["hours"] for r in rows})
    coverage_by_horizon = {
        str(h): [r["coverage"] for r in rows if r["hours"] == h] for h in horizons
    }  # every pair's, in order
    worst_row = max(rows, key=lambda r: abs(r["coverage"] - 0.9))  # either direction
    worst_over_horizons = worst_row["coverage"]
    worst_skill = min(r["interval_skill_vs_naive"] for r in one_hour)
    worst_cov = max(one_hour, key=lambda r: abs(r["coverage"] - 0.9))["coverage"]
    summary = {
        "worst_1h_interval_skill_vs_naive": worst_skill,
        "worst_1h_coverage": worst_cov,
        "1h_beats_ewma_on_every_pair": all(r["interval_skill_vs_ewma"] > 0 for r in one_hour),
        "1h_coverage_in_088_092": all(0.88 <= r["coverage"] <= 0.92 for r in one_hour),
        "1h_interval_skill_ge_015": all(r["interval_skill_vs_naive"] >= 0.15 for r in one_hour),
        "coverage_by_horizon": coverage_by_horizon,
        "worst_coverage_over_horizons": worst_over_horizons,
        "worst_coverage_at": {"pair": worst_row["pair"], "hours": worst_row["hours"]},
        "coverage_in_087_093_at_every_horizon": all(0.87 <= r["coverage"] <= 0.93 for r in rows),
    }
    figures = [v for r in rows for k, v in r.items() if k not in ("pair", "hours")]
    if not rows or not all(math.isfinite(v) for v in figures):
        raise SystemExit(f"FAIL: no finite score in {rows}")
    doc = {
        "machine": {"platform": platform.platform(), "python": platform.python_version()},
        "budget": {"epochs": args.epochs, "train_days": args.train_days},
        "rows": rows,
        "pairs": per_pair,
        "summary": summary,
    }
    if args.out is not None:  # the smoke run writes nothing unless asked
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(doc, indent=2))
    print(
        f"\n1 h interval beats (b) on every pair: {summary['1h_beats_ewma_on_every_pair']}; "
        f"1 h coverage within 0.88-0.92 on every pair: {summary['1h_coverage_in_088_092']}"
    )
    print(f"worst 1h interval skill vs naive: {worst_skill:.4f}")
    print(f"worst 1h coverage: {worst_cov:.3f}")
    for h, covs in coverage_by_horizon.items():
        print(
            f"coverage at {h:>2} h: {' '.join(f'{c:.3f}' for c in covs)} (min {min(covs):.3f}, max {max(covs):.3f})"
        )
    print(
        f"coverage within 0.87-0.93 at every horizon on every pair: "
        f"{summary['coverage_in_087_093_at_every_horizon']}"
    )
    print(
        f"worst coverage over horizons: {worst_over_horizons:.3f} ({worst_row['pair']} {worst_row['hours']} h, "
        f"{worst_over_horizons - 0.9:+.3f} from 0.90, sampling error {worst_row['coverage_error']:.3f})"
    )


if __name__ == "__main__":
    main()
