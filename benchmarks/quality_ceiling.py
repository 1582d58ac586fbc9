"""Benchmark: how much 1/4/24 h interval skill the model's volatility structure *could* reach on a test span.

    python benchmarks/quality_ceiling.py [--pairs btc_usdt ...] [--no-exploration] [--out FILE]
    python benchmarks/quality_ceiling.py --smoke   # one pair, 45 days, 20 refinement steps (CI; no --out)

Same data, split, features, baselines and Winkler score as ``benchmarks/quality.py`` (market clock frozen
after the bundled data, last ``--train-days`` days, test = last 10 % of the hours, baseline (a) fitted on
the hours before the test span), but no gradient training: the structure
``log sigma_h^2 = A.v(x) + b_h + season_h`` with standardized quantiles ``z(h, tau)`` (the recurrent core's
head is zero, so the median is persistence) is taken in six ways, each scored as interval skill
``1 - Winkler / Winkler_(a)`` on the test span:

* ``start``: the data-fitted start, ``init_from_data`` on the training span, conformal scale on the
  validation span: the benchmark's recipe without the training epochs (``benchmark`` column: the trained
  model from ``benchmarks/results/quality.json``, the same where training kept the start);
* ``level``: the same, but the conformal scale taken on the test span: the overall volatility level of the
  test span known in advance, the dynamics (``A``, season) from the training span;
* ``ceiling``: ``init_from_data`` on the *test* windows themselves (hour-of-week factor, ridge least squares
  of ``A`` and ``b``, standardized quantiles), conformal scale on the test span: the recipe with perfect
  knowledge of the coefficients (look-ahead on purpose);
* ``ols``: the same without the ridge prior towards the 12 h EWMA (plain least squares);
* ``best``: from ``ols``, ``A`` and one offset per interval end fitted by minimizing the Winkler score of
  the test span itself (full-batch Adam on the outer levels' pinball loss, which is the Winkler score up to a
  factor): an in-sample upper bound of this structure's intervals, whatever the fitting recipe;
* ``best_xfit``: ``best``'s refinement of ``ols`` fitted on one half of the test span, scoring the other
  half (both ways): how much of the gain from ``ols`` to ``best`` is in-sample optimism.

None of these is a forecast; they bound what the fitting recipe (``ceiling``) and the structure (``best``)
can give with the features ``v(x)``. Optionally also the exploration periods of docs/forecasts.md (BTC, ETH,
SOL, windows ending 2024-04-01, 2024-07-01, 2024-09-30). Writes ``benchmarks/results/quality_ceiling.json``.
About 3-6 s per pair-period on one CPU thread (14 pair-periods: about a minute).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

BUNDLED = ("btc_usdt", "eth_usdt", "sol_usdt", "bnb_usdt", "xrp_usdt")
EXPLORATION_PAIRS = ("btc_usdt", "eth_usdt", "sol_usdt")
EXPLORATION_ENDS = (
    datetime(2024, 4, 1, tzinfo=UTC),
    datetime(2024, 7, 1, tzinfo=UTC),
    datetime(2024, 9, 30, tzinfo=UTC),
)
CLOCK_AFTER_THE_DATA = datetime(2026, 1, 1, tzinfo=UTC)
"""The market clock, frozen after every bundled candle (as in ``benchmarks/quality.py``)."""
VARIANTS = ("start", "level", "ceiling", "ols", "best", "best_xfit")
BEST_STEPS = 2000
BEST_LR = 0.02


def calibrated_prices(model: Any, x: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Price quantiles ``(n, H, L)`` of ``model`` with the conformal factors ``scale`` folded in (what the
    exported ONNX graph computes)."""
    from mur.model.export import CalibratedForecaster

    wrapped = CalibratedForecaster(model, [float(k) for k in scale]).eval()
    with torch.no_grad():
        return wrapped(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)))[1].double().numpy()


def conformal(model: Any, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Split-conformal factor per horizon of ``model`` on windows ``x`` with targets ``y`` (percent)."""
    from mur.evaluation.intervals import conformal_scale
    from mur.model.quantile_config import interval_level
    from mur.training.loop import predict

    cfg = model.cfg
    return conformal_scale(predict(model, x), y, cfg.median_index, interval_level(cfg.quantile_levels))


def winkler_optimal(
    model: Any,
    x: np.ndarray,
    y: np.ndarray,
    scale: np.ndarray,
    x_eval: np.ndarray | None = None,
    steps: int = BEST_STEPS,
) -> np.ndarray:
    """Price quantiles ``(n, H, L)`` from the structure of ``model`` (fitted on ``x``) with ``A`` and the
    two interval ends' offsets re-fitted to minimize the outer levels' pinball loss on ``(x, y)`` itself
    (``lo = -exp(A.v/2 + season/2 + b_lo)``, ``hi = exp(A.v/2 + season/2 + b_hi)``, median = persistence)."""
    from mur.model.features import CLOSE_IDX

    levels = model.cfg.quantile_levels

    def inputs(windows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        xt = torch.from_numpy(np.ascontiguousarray(windows, dtype=np.float32))
        how = model.hour_of_week(xt)
        return model.vol_features(xt, how).double(), model.season_h[:, how[:, -1]].T.double()

    with torch.no_grad():
        v, season = inputs(x)  # (n, K), (n, H)
        mu, sd = v.mean(0), v.std(0).clamp(min=1e-6)  # standardized features: Adam converges faster
        z = model.z().double() * torch.from_numpy(scale).view(-1, 1)  # calibrated standardized quantiles
        coef0 = model.vol_coef.double()
        base = 0.5 * (model.vol_bias.double() + mu @ coef0)
    target = torch.from_numpy(np.asarray(y, dtype=np.float64)) / 100.0
    coef = (coef0 * sd[:, None]).clone().requires_grad_(True)
    b_lo = (base + torch.log(-z[:, 0].clamp(max=-1e-6))).requires_grad_(True)
    b_hi = (base + torch.log(z[:, -1].clamp(min=1e-6))).requires_grad_(True)
    tau_lo, tau_hi = levels[0], levels[-1]

    def ends(v: torch.Tensor, season: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        log_sigma = 0.5 * (((v - mu) / sd) @ coef + season)
        return -torch.exp(log_sigma + b_lo), torch.exp(log_sigma + b_hi)

    optimizer = torch.optim.Adam([coef, b_lo, b_hi], lr=BEST_LR)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    scale_y = target.abs().mean(0)  # every horizon weighs the same
    for _ in range(steps):
        optimizer.zero_grad()
        lo, hi = ends(v, season)
        d_lo, d_hi = target - lo, target - hi
        loss = torch.maximum(tau_lo * d_lo, (tau_lo - 1) * d_lo) + torch.maximum(
            tau_hi * d_hi, (tau_hi - 1) * d_hi
        )
        (loss.mean(0) / scale_y).sum().backward()
        optimizer.step()
        schedule.step()
    with torch.no_grad():
        if x_eval is not None:
            x = x_eval
        lo, hi = ends(*inputs(x))
    returns = torch.zeros(*lo.shape, len(levels), dtype=torch.float64)  # (n, H, L); the rest: persistence
    returns[..., 0], returns[..., -1] = lo, hi
    last = np.asarray(x[:, -1, CLOSE_IDX], dtype=np.float64)[:, None, None]
    return last * np.exp(returns.numpy())


def fit_structure(mcfg: Any, seed: int, x: np.ndarray, y: np.ndarray, ridge: bool = True) -> Any:
    """``init_from_data`` on windows ``(x, y)``; ``ridge=False`` drops its prior towards the 12 h EWMA
    (plain least squares: with the coefficients known, shrinking them can only cost)."""
    from mur.model import network

    prior = network.PRIOR_WEIGHT
    network.PRIOR_WEIGHT = prior if ridge else 0.0
    try:
        return network.build_model(mcfg, seed=seed).init_from_data(x, y)
    finally:
        network.PRIOR_WEIGHT = prior


def evaluate_period(
    pair: str, end: datetime | None, train_days: int, steps: int = BEST_STEPS
) -> dict[str, Any]:
    """Every variant's per-horizon interval skill vs (a) and coverage on one pair-period's test span
    (``steps``: of the ``best`` refinement)."""
    from mur.evaluation.metrics import evaluate_horizons
    from mur.settings import Settings
    from mur.training.driver import load_candles, prepare
    from mur.training.params import model_config, train_config

    settings = Settings(
        market_data="bundled", train_days=train_days, clock_start=CLOCK_AFTER_THE_DATA, clock_speed=0
    )
    started = time.perf_counter()
    candles, _window, _filled = load_candles(settings, pair, end=end)
    ds = prepare(settings, candles)
    mcfg, seed = model_config(settings), train_config(settings).seed
    levels = mcfg.quantile_levels
    (x_tr, y_tr), (x_va, y_va), (x_te, y_te) = (ds.model_arrays(p) for p in ("train", "val", "test"))

    fitted = fit_structure(mcfg, seed, x_tr, y_tr)
    recipe = fit_structure(mcfg, seed, x_te, y_te)
    ols = fit_structure(mcfg, seed, x_te, y_te, ridge=False)
    k_ols = conformal(ols, x_te, y_te)
    half = len(x_te) // 2
    cross = [  # each half of the test span scored by the Winkler refinement fitted on the other half
        winkler_optimal(ols, x_te[fit_part], y_te[fit_part], k_ols, x_te[eval_part], steps)
        for fit_part, eval_part in (
            (slice(half, None), slice(None, half)),
            (slice(None, half), slice(half, None)),
        )
    ]
    prices = {
        "start": calibrated_prices(fitted, x_te, conformal(fitted, x_va, y_va)),
        "level": calibrated_prices(fitted, x_te, conformal(fitted, x_te, y_te)),
        "ceiling": calibrated_prices(recipe, x_te, conformal(recipe, x_te, y_te)),
        "ols": calibrated_prices(ols, x_te, k_ols),
        "best": winkler_optimal(ols, x_te, y_te, k_ols, steps=steps),
        "best_xfit": np.concatenate(cross),
    }
    test_ts = ds.timestamps[ds.split.test]
    out: dict[str, Any] = {
        "pair": pair,
        "window_end": None if end is None else end.date().isoformat(),
        "test_window": [str(test_ts[0])[:16], str(test_ts[-1])[:16]],
        "n_test": int(len(x_te)),
        "horizons": list(ds.horizons),
    }
    for name, q in prices.items():
        horizons = evaluate_horizons(q, ds, ds.split.test, levels)
        out[name] = {
            "interval_skill": [h["interval_skill"] for h in horizons],
            "coverage": [h["interval"]["coverage"] for h in horizons],
        }
    out["seconds"] = round(time.perf_counter() - started, 1)
    return out


def benchmark_reference(path: Path) -> dict[str, list[float]]:
    """Per pair, the trained model's interval skill vs (a) at each horizon from ``quality.json``."""
    if not path.exists():
        return {}
    ref: dict[str, list[float]] = {}
    document = json.loads(path.read_text())
    for row in document.get("last_span_rows", document["rows"]):  # the span this benchmark scores
        ref.setdefault(row["pair"], []).append(row["interval_skill_vs_naive"])
    return ref


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", nargs="+", default=list(BUNDLED))
    parser.add_argument("--train-days", type=int, default=365)
    parser.add_argument("--no-exploration", action="store_true", help="only the benchmark's test spans")
    results = Path(__file__).parent / "results"
    parser.add_argument("--reference", type=Path, default=results / "quality.json")
    parser.add_argument("--out", type=Path, help="default: results/quality_ceiling.json (smoke: none)")
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="one pair, 45 days, no exploration, 20 refinement steps: does it still run and score? (CI)",
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    steps = BEST_STEPS
    if args.smoke:
        args.pairs, args.train_days, args.no_exploration, steps = args.pairs[:1], 45, True, 20
    elif args.out is None:
        args.out = results / "quality_ceiling.json"

    periods: list[tuple[str, datetime | None]] = [(p, None) for p in args.pairs]
    if not args.no_exploration:
        periods += [(p, e) for e in EXPLORATION_ENDS for p in EXPLORATION_PAIRS if p in args.pairs]
    reference = {} if args.smoke else benchmark_reference(args.reference)  # smoke: other data, no match
    header = (
        f"{'pair':<9} {'window end':<10} {'h':>3} " + " ".join(f"{v:>8}" for v in VARIANTS) + " benchmark"
    )
    print(header)
    print("-" * len(header))
    rows: list[dict[str, Any]] = []
    started = time.perf_counter()
    for pair, end in periods:
        res = evaluate_period(pair, end, args.train_days, steps)
        rows.append(res)
        ref = reference.get(pair) if end is None else None
        if ref is not None:
            res["benchmark_interval_skill"] = ref
            res["start_minus_benchmark"] = [
                s - r for s, r in zip(res["start"]["interval_skill"], ref, strict=True)
            ]
        for j, h in enumerate(res["horizons"]):
            cells = " ".join(f"{res[v]['interval_skill'][j]:>+8.3f}" for v in VARIANTS)
            bench = f"{ref[j]:>+9.3f}" if ref is not None else ""
            print(f"{pair:<9} {res['window_end'] or 'benchmark':<10} {h:>3} {cells} {bench}", flush=True)

    def mean_1h(variant: str, exploration: bool) -> float:
        skills = [
            r[variant]["interval_skill"][0] for r in rows if (r["window_end"] is not None) == exploration
        ]
        return float(np.mean(skills))

    summary: dict[str, Any] = {
        f"mean_1h_{v}_{span}": mean_1h(v, span == "exploration")
        for v in VARIANTS
        for span in ("benchmark", "exploration")
        if any((r["window_end"] is not None) == (span == "exploration") for r in rows)
    }
    summary["max_abs_start_minus_benchmark"] = max(
        (abs(d) for r in rows for d in r.get("start_minus_benchmark", [])), default=None
    )
    summary["1h_ceiling_ge_015"] = {
        f"{r['pair']}@{r['window_end'] or 'benchmark'}": r["ceiling"]["interval_skill"][0] >= 0.15
        for r in rows
    }
    summary["1h_best_ge_015"] = {
        f"{r['pair']}@{r['window_end'] or 'benchmark'}": r["best"]["interval_skill"][0] >= 0.15 for r in rows
    }
    skills = [x for r in rows for v in VARIANTS for x in r[v]["interval_skill"] + r[v]["coverage"]]
    if not rows or not all(np.isfinite(skills)):
        raise SystemExit(f"FAIL: a score is not a finite number: {rows}")
    doc = {
        "machine": {"platform": platform.platform(), "python": platform.python_version()},
        "budget": {"train_days": args.train_days, "best_steps": steps, "best_lr": BEST_LR},
        "seconds": round(time.perf_counter() - started, 1),
        "periods": rows,
        "summary": summary,
    }
    if args.out is not None:  # the smoke run writes nothing unless asked
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(doc, indent=2))
    print()
    for key, value in summary.items():
        if isinstance(value, float):
            print(f"{key}: {value:+.4f}")
    print(f"total {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
