"""Diebold-Mariano (HLN-corrected) and the directional binomial test against independent computations."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from mur.evaluation.significance import diebold_mariano, directional_test


def test_dm_at_one_step_equals_the_paired_t_test() -> None:
    rng = np.random.default_rng(7)
    e_other = rng.normal(0, 1.0, 300)
    e_model = 0.95 * e_other + rng.normal(0, 0.3, 300)
    res = diebold_mariano(e_model, e_other)
    ref = stats.ttest_rel(np.abs(e_model), np.abs(e_other))
    assert res.statistic == pytest.approx(ref.statistic, rel=1e-10)
    assert res.p_two_sided == pytest.approx(ref.pvalue, rel=1e-8)
    less = stats.ttest_rel(np.abs(e_model), np.abs(e_other), alternative="less")
    assert res.p_better == pytest.approx(less.pvalue, rel=1e-8)
    assert res.p_better + res.p_worse == pytest.approx(1.0)


def test_dm_direction_of_the_statistic() -> None:
    rng = np.random.default_rng(1)
    e_other = rng.normal(0, 1.0, 200)
    e_model = rng.normal(0, 2.0, 200)  # much worse
    res = diebold_mariano(e_model, e_other)
    ref = stats.ttest_rel(np.abs(e_model), np.abs(e_other), alternative="greater")
    assert res.statistic > 0
    assert res.p_worse == pytest.approx(ref.pvalue, rel=1e-8)
    assert res.p_worse < 0.05 and res.p_better > 0.95


def test_dm_multi_step_uses_autocovariances_and_hln_factor() -> None:
    d_model = np.array([1.0, 1.5, 2.0, 2.2, 1.8, 1.2, 0.8, 1.1, 1.6, 2.0])
    d_other = np.zeros_like(d_model)
    res = diebold_mariano(d_model, d_other, horizon=2)
    # by hand: d = |e_model| (other is zero)
    d = np.abs(d_model)
    n, h = d.size, 2
    c = d - d.mean()
    g0 = float(c @ c) / n
    g1 = float(c[1:] @ c[:-1]) / n
    var = g0 + 2 * g1
    assert g1 > 0  # the example has positively autocorrelated differentials
    dm = d.mean() / math.sqrt(var / n)
    hln = dm * math.sqrt((n + 1 - 2 * h + h * (h - 1) / n) / n)
    assert res.statistic == pytest.approx(hln, rel=1e-12)
    assert res.p_worse == pytest.approx(stats.t.sf(hln, n - 1), rel=1e-10)


def test_dm_identical_forecasts_are_uninformative() -> None:
    e = np.array([0.1, -0.2, 0.3, 0.0])
    res = diebold_mariano(e, e.copy())
    assert res.statistic == 0
    assert res.p_two_sided == 1.0


@pytest.mark.parametrize(
    ("a", "b", "kwargs", "message"),
    [
        ([1, 2, 3], [1, 2], {}, "length"),
        ([1, 2], [1, 2], {}, "at least 3"),
        ([1, 2, float("nan")], [1, 2, 3], {}, "finite"),
        ([1, 2, 3], [1, 2, 3], {"horizon": 3}, "horizon"),
    ],
)
def test_dm_rejects_bad_input(a: list[float], b: list[float], kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        diebold_mariano(a, b, **kwargs)


@pytest.mark.parametrize(("hits", "misses"), [(60, 40), (50, 50), (12, 3), (0, 5), (530, 470)])
def test_directional_p_value_matches_scipy_binomtest(hits: int, misses: int) -> None:
    pred = [1.0] * (hits + misses)
    actual = [1.0] * hits + [-1.0] * misses
    res = directional_test(pred, actual)
    ref = stats.binomtest(hits, hits + misses, 0.5, alternative="greater")
    assert res.hits == hits and res.n == hits + misses
    assert res.p_value == pytest.approx(ref.pvalue, rel=1e-9)


def test_directional_ignores_flat_moves() -> None:
    res = directional_test([1.0, 0.0, -1.0, 2.0], [1.0, 1.0, 1.0, 0.0])
    assert (res.hits, res.n) == (1, 2)
    assert directional_test([0.0, 0.0], [1.0, -1.0]).n == 0


def test_point_evidence_block_for_a_better_model() -> None:
    from mur.evaluation.significance import point_evidence

    rng = np.random.default_rng(3)
    last = 100 + rng.normal(0, 1, 500).cumsum()
    move = rng.normal(0, 1, 500)
    actual = last + move
    pred = last + 0.6 * move + rng.normal(0, 0.2, 500)  # informative forecast
    block = point_evidence(pred, actual, last)
    assert block["dm_p_better"] < 1e-6 and block["dm_statistic"] < 0
    assert 0 < block["skill_se"] < 0.1
    assert block["direction_hits"] > 0.8 * block["direction_n"] and block["direction_p_value"] < 1e-6
    # persistence itself: no direction information at all, DM uninformative
    flat = point_evidence(last, actual, last)
    assert flat["direction_n"] == 0 and flat["dm_statistic"] == 0
