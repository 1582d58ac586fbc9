"""The gate on two fixture ONNX models of one pair, scored on the candidate's test targets: one tiny training
exported twice, calibrated (the candidate) and with ranges squeezed to half their width (the champion, the
same median): the better-range model wins; targets the champion trained on are never used."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from mur.model.export import CalibratedForecaster, export_onnx
from mur.registry.gate import CHAMPION, decide
from mur.registry.versions import MIN_SAME_TARGETS, evidence_of, same_target_scores
from mur.settings import Settings
from mur.timeutil import iso
from mur.training.driver import calibrate, evaluate_onnx, load_candles, metrics_document, prepare
from mur.training.loop import LocalFit
from mur.training.params import model_config, train_config


def test_same_target_scores_pick_the_better_range(tmp_path: Path) -> None:
    settings = Settings(train_days=60, num_layers=1, hidden_size=8, epochs=2, market_data="bundled")
    candles, window, _ = load_candles(settings, "btc_usdt", end=pd.Timestamp("2025-03-01", tz="UTC"))
    ds = prepare(settings, candles)
    mcfg = model_config(settings)
    model = LocalFit()(ds.model_arrays("train"), ds.model_arrays("val"), mcfg, train_config(settings)).model
    calibrated = calibrate(model, ds)
    sample = ds.x[ds.split.test][:16]
    good = export_onnx(calibrated, tmp_path / "good.onnx", sample)
    squeezed = CalibratedForecaster(calibrated.net, (0.5 * calibrated.scale.reshape(-1)).tolist())
    narrow = export_onnx(squeezed, tmp_path / "narrow.onnx", sample).read_bytes()
    test_start = iso(pd.Timestamp(ds.timestamps[ds.split.test][0]))

    scores = same_target_scores(settings, good, narrow, {"test_window_start": test_start}, ds)
    assert [s.hours for s in scores] == list(ds.horizons)
    assert all(s.n == len(ds.split.test) for s in scores)
    h1 = scores[0]
    assert h1.point_gap == 0.0 and h1.champion_coverage < h1.coverage, h1
    assert h1.pinball < h1.champion_pinball, h1
    doc = metrics_document("btc_usdt", mcfg, ds, window, evaluate_onnx(good, ds, mcfg.rnn_len))
    cand = evidence_of(doc, doc.data_window.end, 2)
    champ = evidence_of(doc, doc.data_window.end, 1)
    assert cand is not None and champ is not None
    decision = decide(cand, champ, same_targets=scores, skill_floor=-1.0, coverage_tolerance=0.2)
    assert decision.alias == CHAMPION and decision.rule in ("better-ranges", "fresher"), decision.reason

    # a champion whose own test span began later trained on part of these targets: only the rest count,
    # and with too few left the gate falls back to scale-free scores
    later = pd.Timestamp(ds.timestamps[ds.split.test][len(ds.split.test) // 2])
    half = same_target_scores(settings, good, narrow, {"test_window_start": iso(later)}, ds)
    assert half and half[0].n == int(np.sum(ds.timestamps[ds.split.test] >= later.to_datetime64()))
    end = pd.Timestamp(ds.timestamps[ds.split.test][-MIN_SAME_TARGETS + 1])
    assert same_target_scores(settings, good, narrow, {"test_window_start": iso(end)}, ds) == []
