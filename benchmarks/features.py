"""Benchmark: vectorized features + split + scale + sequences vs the reference design's row-by-row approach.

    python benchmarks/features.py [--pair btc_usdt] [--repeat 3]
    python benchmarks/features.py --smoke     # the last 1,500 candles, once: does it still run? (CI)

Prints both times and their ratio (target: vectorized < 0.5 s on the 3-year BTC series, ratio ≥ 100).
The reference implementation below is written only for comparison: iterrows over candles and one
DataFrame per window, as in the original design.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd


def reference_pipeline(candles: pd.DataFrame, seq_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Row-by-row features, a MinMax scaler fitted on train, and one DataFrame per window."""
    rows = []
    for _, r in candles.iterrows():
        ts = r["timestamp"]
        rows.append(
            {
                "day_of_week": ts.day_of_week,
                "day_of_month": ts.day,
                "iso_week": ts.isocalendar()[1],
                "month": ts.month,
                "open": r["open"],
                "high": r["high"],
                "low": r["low"],
                "close": r["close"],
                "close_minus_open": r["close"] - r["open"],
            }
        )
    df = pd.DataFrame(rows)
    n_train = int(len(df) * 0.9 * 0.8)
    lo, hi = df.iloc[:n_train].min(), df.iloc[:n_train].max()
    scaled = 2 * (df - lo) / (hi - lo).replace(0, 1) - 1
    xs, ys = [], []
    for i in range(len(scaled) - seq_len):
        window = pd.DataFrame(scaled.iloc[i : i + seq_len].values, columns=scaled.columns)
        xs.append(window.values)
        ys.append(scaled.iloc[i + seq_len]["close"])
    return np.array(xs, dtype=np.float32), np.array(ys, dtype=np.float32)


def vectorized_pipeline(
    candles: pd.DataFrame, seq_len: int, normalization: str
) -> tuple[np.ndarray, np.ndarray]:
    """The project's pipeline: features → windows → split → fit on train → normalized arrays."""
    from mur.model.features import build_dataset, normalize_inputs, normalize_targets

    ds = build_dataset(candles, seq_len, normalization)  # type: ignore[arg-type]
    return normalize_inputs(ds.x, ds.spec), normalize_targets(ds.y, ds.x, ds.spec)


def main() -> None:
    from mur.data import load_bundled, regularize_hourly

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pair", default="btc_usdt")
    p.add_argument("--seq-len", type=int, default=24)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--json", help="also write the figures to this JSON file")
    p.add_argument(
        "--smoke",
        action="store_true",
        help="the last 1,500 candles, one repetition; the targets are reported, not enforced",
    )
    args = p.parse_args()

    candles, _ = regularize_hourly(load_bundled(args.pair), label=args.pair)
    if args.smoke:
        args.repeat = 1
        candles = candles.iloc[-1500:].reset_index(drop=True)
    print(f"{args.pair}: {len(candles)} hourly candles, seq_len={args.seq_len}")
    vec = {}
    for mode in ("relative", "reference"):
        times = []
        for _ in range(args.repeat):
            t = time.perf_counter()
            x, y = vectorized_pipeline(candles, args.seq_len, mode)
            times.append(time.perf_counter() - t)
        vec[mode] = min(times)
        print(f"vectorized ({mode}): {vec[mode]:.3f} s  -> X {x.shape} {x.dtype}")
    t = time.perf_counter()
    xr, _ = reference_pipeline(candles, args.seq_len)
    ref = time.perf_counter() - t
    print(f"reference (iterrows + DataFrame per window): {ref:.2f} s  -> X {xr.shape}")
    ratio = ref / vec["reference"]
    print(f"ratio: {ratio:.0f}")
    ok = vec["relative"] < 0.5 and ratio >= 100
    smoke = " (smoke: too few candles to judge)" if args.smoke else ""
    print(f"target (< 0.5 s and ratio >= 100): {'met' if ok else 'NOT met'}{smoke}")
    if not (len(x) and len(xr) and np.isfinite(ratio) and ratio > 0):
        raise SystemExit(f"FAIL: no figure: windows {x.shape} and {xr.shape}, ratio {ratio}")
    if args.json:
        doc = {"vectorized_s": vec, "reference_s": ref, "ratio": ratio, "rows": len(candles)}
        Path(args.json).write_text(json.dumps(doc, indent=2))


if __name__ == "__main__":
    main()
