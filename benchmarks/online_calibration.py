"""Benchmark: online calibration (mur/evaluation/online_conformal.py) over a replay of the bundled hours.

    python benchmarks/online_calibration.py [--pairs btc_usdt eth_usdt sol_usdt] [--train-end 2024-07-01]
        [--replay-end 2025-12-31] [--epochs 10] [--eta 0.05] [--out FILE]
    python benchmarks/online_calibration.py --smoke   # one pair, a 4-unit model on 45 days, 400 hours (CI)

Per pair: one model trained as ``mur train`` does (the default recipe, one year of candles before
``--train-end``, offline calibration folded in, exported to ONNX), then **never retrained**: every later bundled
hour up to ``--replay-end`` is forecast through the ONNX graph, as Serve would, and the outcome of a forecast
for ``h`` hours ahead is fed back ``h`` hours later (the tracker of that horizon takes its step then). The
replay span is unseen by the model (weights, calibration) and includes the crash of 2024-08-05.

Prints per pair and horizon, on the same forecasts: the coverage of the 90 % range of the graph alone
(static) and with the online scale (online), the interval skill of each against (a), the naive range
(fixed quantiles of the training year's h-hour log returns), the online scale's skill against the static
range, and the coverage of both in the crash fortnight (2024-07-29 .. 2024-08-12). The last line is the worst
online coverage over pairs and horizons. A trained-once model over 18 months is the static calibration's
worst case (the stack retrains hourly); the online scale starts at 1 and is carried over the whole replay.
Writes ``benchmarks/results/online_calibration.json`` and a chart of running coverage (trailing 30 days)
``benchmarks/results/online_calibration.png`` (matplotlib).
"""

from __future__ import annotations

import math
import platform
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks import common  # noqa: E402
from mur.evaluation.backtest import FoldForecasts, fold_forecasts  # noqa: E402
from mur.evaluation.intervals import winkler_scores  # noqa: E402
from mur.evaluation.online_conformal import OnlineParams, replay, running_coverage, scale_band  # noqa: E402
from mur.model.quantile_config import interval_level  # noqa: E402

PAIRS = ("btc_usdt", "eth_usdt", "sol_usdt")
CRASH = (np.datetime64("2024-07-29"), np.datetime64("2024-08-12"))
"""The crash fortnight (UTC, naive like the forecasts' times)."""
RUNNING_WINDOW_H = 30 * 24


def _utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def replay_forecasts(
    pair: str, onnx: Path, train_end: datetime, replay_end: datetime
) -> tuple[FoldForecasts, dict[str, Any]]:
    """The graph's forecasts for every hour in ``[train_end, replay_end)`` whose every horizon resolves by
    ``replay_end``, with their outcomes, and baseline (a) fitted on the year before ``train_end``
    (:func:`mur.evaluation.backtest.fold_forecasts`: one fold, the whole replay); the graph's calibration."""
    from mur.data import get_market_data, regularize_hourly
    from mur.model.export import load_session, model_metadata

    session = load_session(onnx)
    start = train_end - timedelta(days=365)
    candles = get_market_data(common.bundled_settings()).klines(pair, start=start, end=replay_end)
    candles, _filled = regularize_hourly(candles.reset_index(drop=True))
    hours = (replay_end - train_end) // timedelta(hours=1)
    return fold_forecasts(session, candles, start, train_end, hours), model_metadata(session)["calibration"]


def evaluate(f: FoldForecasts, eta: float) -> dict[str, Any]:
    """Static and online coverage, Winkler scores and skills per horizon over the replay (forecasts made at
    ``f.timestamps``: the hour after each window's last candle)."""
    level = interval_level(f.levels)
    alpha = 1.0 - level
    params = OnlineParams(level=level, eta=eta)
    q, y, naive = f.quantiles["model"], f.targets, f.quantiles["naive"]  # prices: (n, H, L), (n, H), ...
    mid = list(f.levels).index(0.5)
    made = f.timestamps
    crash = (made >= CRASH[0]) & (made < CRASH[1])
    out: dict[str, Any] = {}
    for j, h in enumerate(f.horizons):
        med, lo, hi = q[:, j, mid], q[:, j, 0], q[:, j, -1]
        r = replay(med, lo, hi, y[:, j], h, params)
        on_lo, on_hi = scale_band(med, lo, hi, r.scales)  # the served (scaled) ranges
        w_static = winkler_scores(lo, hi, y[:, j], alpha)
        w_online = winkler_scores(on_lo, on_hi, y[:, j], alpha)
        w_naive = winkler_scores(naive[:, j, 0], naive[:, j, -1], y[:, j], alpha)
        months = made.astype("datetime64[M]")
        out[str(h)] = {
            "hours": int(h),
            "n": int(len(y)),
            "static_coverage": float(r.covered_base.mean()),
            "online_coverage": float(r.covered.mean()),
            "naive_coverage": float(np.mean((y[:, j] >= naive[:, j, 0]) & (y[:, j] <= naive[:, j, -1]))),
            "static_skill_vs_naive": float(1 - w_static.mean() / w_naive.mean()),
            "online_skill_vs_naive": float(1 - w_online.mean() / w_naive.mean()),
            "online_skill_vs_static": float(1 - w_online.mean() / w_static.mean()),
            "crash_static_coverage": float(r.covered_base[crash].mean()) if crash.any() else None,
            "crash_online_coverage": float(r.covered[crash].mean()) if crash.any() else None,
            "static_30d_within_003": _share_within(r.covered_base, level),
            "online_30d_within_003": _share_within(r.covered, level),
            "final_scale": float(r.scales[-1]),
            "scale_range": [float(r.scales.min()), float(r.scales.max())],
            "monthly": {
                str(m): {
                    "static": float(r.covered_base[months == m].mean()),
                    "online": float(r.covered[months == m].mean()),
                }
                for m in np.unique(months)
            },
            "_running": {
                "static": running_coverage(r.covered_base, RUNNING_WINDOW_H),
                "online": running_coverage(r.covered, RUNNING_WINDOW_H),
                "scale": r.scales,
            },
        }
    return out


def _share_within(covered: np.ndarray, level: float, band: float = 0.03) -> float | None:
    """Share of the trailing 30-day windows (after the first 30 days) whose coverage is within ``band`` of
    ``level``."""
    run = running_coverage(covered, RUNNING_WINDOW_H)[RUNNING_WINDOW_H:]
    return float(np.mean(np.abs(run - level) <= band)) if len(run) else None


def chart(results: dict[str, Any], made: dict[str, np.ndarray], level: float, path: Path) -> Path:
    """Running coverage (trailing 30 days) static vs online per horizon, one row per pair."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pairs = list(results)
    horizons = list(next(iter(results.values())))
    fig, axes = plt.subplots(
        len(pairs), len(horizons), figsize=(5 * len(horizons), 2.8 * len(pairs)), squeeze=False
    )
    for i, pair in enumerate(pairs):
        for j, h in enumerate(horizons):
            ax = axes[i][j]
            run = results[pair][h]["_running"]
            t = made[pair].astype("datetime64[h]").astype(datetime)
            ax.plot(t, run["static"], label="static (graph alone)", color="tab:gray", lw=1)
            ax.plot(t, run["online"], label="online scale", color="tab:blue", lw=1.2)
            ax.axhline(level, color="black", lw=0.6, ls="--")
            ax.axhspan(level - 0.03, level + 0.03, color="tab:green", alpha=0.08)
            ax.axvspan(CRASH[0], CRASH[1], color="tab:red", alpha=0.12)
            ax.set_ylim(0.6, 1.0)
            ax.set_title(f"{pair} {h} h: running coverage (30 d)", fontsize=9)
            ax.tick_params(labelsize=7)
            if i == 0 and j == 0:
                ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def main() -> None:
    parser = common.training_parser(
        __doc__, PAIRS, "online_calibration.json", smoke="one pair, a 4-unit model on 45 days, 400 hours (CI)"
    )
    parser.add_argument("--train-end", default="2024-07-01")
    parser.add_argument("--replay-end", default="2026-01-01", help="exclusive; default: the end of the data")
    parser.add_argument("--eta", type=float, default=None, help="default: OnlineParams().eta")
    args, overrides = common.parse_training_args(parser)
    eta = OnlineParams().eta if args.eta is None else args.eta
    train_end, replay_end = _utc(args.train_end), _utc(args.replay_end)
    if args.smoke:
        replay_end = train_end + timedelta(hours=400 + 24)

    results: dict[str, Any] = {}
    made: dict[str, np.ndarray] = {}
    meta: dict[str, Any] = {}
    level = 0.9
    header = (
        f"{'pair':<10} {'h':>3} {'n':>6} {'static cov':>10} {'online cov':>10} {'static skill':>12} "
        f"{'online skill':>12} {'online vs static':>16} {'crash static':>12} {'crash online':>12}"
    )
    print(
        f"eta {eta} (1 h; eta / sqrt(h) at h hours); train end {train_end:%Y-%m-%d}, replay to {replay_end:%Y-%m-%d}"
    )
    print(header)
    print("-" * len(header))
    for pair in args.pairs:
        started = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            doc = common.train_locally(pair, args.epochs, args.train_days, train_end, Path(tmp), **overrides)
            f, calibration = replay_forecasts(pair, Path(tmp) / "model.onnx", train_end, replay_end)
        level = interval_level(f.levels)
        res = evaluate(f, eta)
        results[pair], made[pair] = res, f.timestamps
        meta[pair] = {
            "seconds": round(time.perf_counter() - started, 1),
            "data_window": doc["data_window"],
            "offline_test_window": doc["test_window"],
            "offline_calibration": calibration,
            "replay": {"start": str(f.timestamps[0]), "end": str(f.timestamps[-1])},
        }
        for h, r in res.items():
            crash = (
                f"{r['crash_static_coverage']:>12.3f} {r['crash_online_coverage']:>12.3f}"
                if r["crash_static_coverage"] is not None
                else f"{'-':>12} {'-':>12}"
            )
            print(
                f"{pair:<10} {h:>3} {r['n']:>6} {r['static_coverage']:>10.3f} {r['online_coverage']:>10.3f} "
                f"{r['static_skill_vs_naive']:>+12.4f} {r['online_skill_vs_naive']:>+12.4f} "
                f"{r['online_skill_vs_static']:>+16.4f} {crash}",
                flush=True,
            )
    rows = [r for res in results.values() for r in res.values()]
    figures = [r[k] for r in rows for k in ("static_coverage", "online_coverage", "online_skill_vs_static")]
    if not rows or not all(math.isfinite(v) for v in figures):
        raise SystemExit(f"FAIL: no finite figure in {figures}")
    worst_online = max((r["online_coverage"] for r in rows), key=lambda c: abs(c - level))
    worst_static = max((r["static_coverage"] for r in rows), key=lambda c: abs(c - level))
    summary = {
        "level": level,
        "worst_online_coverage": worst_online,
        "worst_static_coverage": worst_static,
        "online_within_003_everywhere": all(abs(r["online_coverage"] - level) <= 0.03 for r in rows),
    }
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)  # before the chart
        png = chart(results, made, level, args.out.with_suffix(".png"))
        public = {
            p: {h: {k: v for k, v in r.items() if not k.startswith("_")} for h, r in res.items()}
            for p, res in results.items()
        }
        doc_out = {
            "machine": {"platform": platform.platform(), "python": platform.python_version()},
            "budget": {"epochs": args.epochs, "train_days": args.train_days, "eta": eta},
            "pairs": meta,
            "results": public,
            "summary": summary,
            "chart": png.name,
        }
        common.write_json(args.out, doc_out)
        print(f"\nwrote {args.out} and {png}")
    print(
        f"online coverage within +-0.03 of {level:.2f} at every pair and horizon: {summary['online_within_003_everywhere']}"
    )
    for key in ("static", "online"):
        shares = [r[f"{key}_30d_within_003"] for r in rows if r[f"{key}_30d_within_003"] is not None]
        if shares:
            print(
                f"{key}: 30-day windows within +-0.03, per pair and horizon: "
                + " ".join(f"{v:.2f}" for v in shares)
            )
    print(f"worst static coverage: {worst_static:.3f}")
    print(f"worst online coverage: {worst_online:.3f}")


if __name__ == "__main__":
    main()
