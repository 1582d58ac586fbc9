"""The pure parts of the hyper-parameter search (mur/training/tuning.py): configurations, the search space,
the spans (the search never reaches the confirmation span), a fold's score and the confirmation comparison
against hand-computed numbers."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from mur.errors import DataValidationError
from mur.evaluation.significance import skill_standard_error
from mur.settings import Settings
from mur.training import tuning as tn

END = datetime(2026, 1, 1, tzinfo=UTC)


def test_the_default_is_a_point_of_the_search_space() -> None:
    default = tn.default_config(Settings())
    assert set(default) == set(tn.SEARCH_SPACE)
    for name, (kind, *args) in tn.SEARCH_SPACE.items():
        if kind == "choice":
            assert default[name] in args[0], name
        else:
            assert args[0] <= default[name] <= args[1], name


def test_apply_config_sets_fields_and_refuses_unknown_or_bad_values() -> None:
    base = Settings()
    tuned = tn.apply_config(base, {"arch": "gru", "hidden_size": 64, "seq_len": 48, "weight_decay": 1e-4})
    assert (tuned.model.arch, tuned.model.hidden_size, tuned.model.seq_len, tuned.training.weight_decay) == (
        "gru",
        64,
        48,
        1e-4,
    )
    assert (base.model.arch, base.model.hidden_size) == ("lstm", 32)  # unchanged
    with pytest.raises(DataValidationError, match="hiden_size"):
        tn.apply_config(base, {"hiden_size": 64})  # a typo never trains the default silently
    with pytest.raises(DataValidationError, match="arch"):
        tn.apply_config(base, {"arch": "transformer"})
    with pytest.raises(DataValidationError, match="context_len"):
        tn.apply_config(base, {"seq_len": 500})


def test_same_config_ignores_json_float_noise() -> None:
    a = tn.default_config(Settings())
    b = {**a, "learning_rate": a["learning_rate"] * (1 + 1e-15)}
    assert tn.same_config(a, b)
    assert not tn.same_config(a, {**a, "arch": "gru"})


def test_spans_keep_every_search_target_before_the_confirmation_span() -> None:
    spans = tn.search_spans(END, folds=3, fold_hours=336, confirm_hours=720, max_horizon=24)
    assert spans.confirm_start == END - timedelta(hours=720)
    assert spans.origins == (
        spans.search_end - timedelta(hours=3 * 336),
        spans.search_end - timedelta(hours=2 * 336),
        spans.search_end - timedelta(hours=336),
    )
    last_forecast = spans.origins[-1] + timedelta(hours=336 - 1)  # its first target hour
    last_target = last_forecast + timedelta(hours=24 - 1)
    assert last_target == spans.confirm_start - timedelta(hours=1)  # the hour before: never inside
    with pytest.raises(DataValidationError, match="longer than the longest horizon"):
        tn.search_spans(END, folds=3, fold_hours=336, confirm_hours=24, max_horizon=24)


def _row(n: int, winkler: float, naive_w: float, pinball: float, naive_p: float, cov: float) -> dict:
    return {
        "n": n,
        "interval": {"winkler": winkler, "pinball": pinball, "coverage": cov},
        "naive": {"winkler": naive_w, "pinball": naive_p, "coverage": 0.9},
    }


def test_fold_score_weighs_horizons_equally_relative_to_the_naive_baseline() -> None:
    rows = [_row(100, 9.0, 10.0, 1.6, 2.0, 0.9), _row(100, 60.0, 50.0, 12.0, 10.0, 0.8)]
    score = tn.fold_score(rows)
    assert score["winkler_ratio"] == pytest.approx((0.9 + 1.2) / 2)
    assert score["pinball_ratio"] == pytest.approx((0.8 + 1.2) / 2)
    assert score["score"] == pytest.approx((1.05 + 1.0) / 2)
    assert score["coverage"] == pytest.approx(0.85)
    with pytest.raises(DataValidationError):
        tn.fold_score([])


def test_per_forecast_losses_by_hand() -> None:
    levels = (0.05, 0.5, 0.95)  # alpha = 0.1: a miss costs 20 x its distance
    q = np.array([[[90.0, 100.0, 110.0]], [[90.0, 100.0, 110.0]]])  # (n=2, H=1, L=3)
    y = np.array([[105.0], [112.0]])
    winkler, pinball = tn.per_forecast_losses(q, y, levels)
    assert winkler[:, 0].tolist() == pytest.approx([20.0, 20.0 + 20 * 2.0])
    # y=105: 0.05*15, 0.5*5, 0.05*... (105 < 110: (0.95-1)*(105-110) = 0.25)
    assert pinball[0, 0] == pytest.approx((0.75 + 2.5 + 0.25) / 3)
    assert pinball[1, 0] == pytest.approx((0.05 * 22 + 0.5 * 12 + 0.95 * 2) / 3)


def test_confirmation_gain_and_standard_error() -> None:
    rng = np.random.default_rng(0)
    default_w = rng.gamma(2.0, 1.0, size=(400, 2)) * np.array([1.0, 5.0])
    default_p = default_w / 10
    chosen = (default_w * 0.9, default_p * 1.1)  # 10 % better Winkler, 10 % worse pinball at every hour
    comp = tn.confirmation_comparison(chosen, (default_w, default_p), (1, 24))
    assert comp["n"] == 400
    assert comp["winkler"]["gain"] == pytest.approx(0.1)
    assert comp["pinball"]["gain"] == pytest.approx(-0.1)
    h24 = comp["horizons"][1]
    assert h24["hours"] == 24 and h24["winkler"]["gain"] == pytest.approx(0.1)
    assert h24["winkler"]["se"] == pytest.approx(
        skill_standard_error(chosen[0][:, 1], default_w[:, 1], horizon=24)
    )
    # noisy gains: the standard error is that of the per-forecast differences (HAC at the longest lag)
    noisy = (default_w * rng.uniform(0.7, 1.2, size=default_w.shape), default_p)
    comp = tn.confirmation_comparison(noisy, (default_w, default_p), (1, 24))
    scale = default_w.mean(axis=0)
    c, d = (noisy[0] / scale).mean(axis=1), (default_w / scale).mean(axis=1)
    assert comp["winkler"]["gain"] == pytest.approx(1 - c.mean() / d.mean())
    assert comp["winkler"]["se"] == pytest.approx(skill_standard_error(c, d, horizon=24))
    assert comp["winkler"]["se"] > 0 and math.isfinite(comp["winkler"]["se"])


def test_verdict_says_worse_too() -> None:
    def comp(gain: float, se: float | None) -> dict:
        return {"winkler": {"gain": gain, "se": se}}

    assert "better" in tn.verdict(comp(0.05, 0.01))
    assert "WORSE" in tn.verdict(comp(-0.05, 0.01))
    assert "no significant difference" in tn.verdict(comp(0.01, 0.01))
    assert "too few" in tn.verdict(comp(0.01, None))
    assert "kept the default" in tn.verdict({**comp(0.0, 0.0), "same_as_default": True})
    assert "same forecasts" in tn.verdict({**comp(0.0, 0.0), "identical_forecasts": True})


def test_a_private_ray_listens_on_loopback_behind_a_token_of_its_own() -> None:
    from mur.training.tune import private_ray_env

    env: dict[str, str] = {}
    private_ray_env(env)
    assert env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] == "0" and env["RAY_AUTH_MODE"] == "token"
    assert len(env["RAY_AUTH_TOKEN"]) == 64
    other: dict[str, str] = {}
    private_ray_env(other)
    assert other["RAY_AUTH_TOKEN"] != env["RAY_AUTH_TOKEN"], "a token per process, never a fixed one"
    given = {"RAY_AUTH_TOKEN": "t" * 64, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "1"}  # the environment wins
    private_ray_env(given)
    assert given == {**given, "RAY_AUTH_TOKEN": "t" * 64, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "1"}
    disabled = {"RAY_AUTH_MODE": "disabled"}  # for tests of the auth itself: no token made up
    private_ray_env(disabled)
    assert "RAY_AUTH_TOKEN" not in disabled
