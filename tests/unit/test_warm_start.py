"""Warm starts (issue 15): when an hourly run may start from the champion's weights, and what it takes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
import torch

from mur.model.network import ModelConfig, build_model
from mur.settings import Settings
from mur.training import warm_start
from mur.training.loop import LocalFit

KEY = "k" * 16
END = datetime(2025, 6, 1, tzinfo=UTC)
TEST_START = END - timedelta(days=7)


def champion(**tags: str) -> dict[str, str]:
    """Tags of a champion trained fully an hour before ``END`` (its test span one hour earlier)."""
    base = {
        "arch_key": KEY,
        "test_window_start": "2025-05-24T23:00:00Z",
        "data_window_end": "2025-05-31T23:00:00Z",
        "full_window_end": "2025-05-31T23:00:00Z",
    }
    return {**base, **tags}


def decide(tags: dict[str, str] | None, kind: str = "scheduled", **settings: int) -> warm_start.TrainingPlan:
    return warm_start.decide(
        Settings(**settings),  # type: ignore[arg-type]
        kind=kind,
        champion_tags=tags,
        key=KEY,
        test_start=TEST_START,
        window_end=END,
    )


def test_an_hourly_run_with_a_compatible_champion_warm_starts() -> None:
    plan = decide(champion())
    assert plan.mode == "warm" and "1 h after the last full training" in plan.reason


@pytest.mark.parametrize(
    ("tags", "kind", "settings", "reason"),
    [
        (champion(), "scheduled", {"warm_start_epochs": 0}, "warm starts are off"),
        (champion(), "backfill", {}, "a backfill run trains fully"),
        (champion(), "manual", {}, "a manual run trains fully"),
        (None, "scheduled", {}, "no champion"),
        (champion(arch_key="other"), "scheduled", {}, "architecture differs"),
        ({**champion(), "arch_key": ""}, "scheduled", {}, "architecture differs"),
        # the champion's training/validation span reaches into this run's test span: its weights would leak
        (champion(test_window_start="2025-05-26T00:00:00Z"), "scheduled", {}, "inside this test span"),
        (champion(full_window_end="2025-05-31T00:00:00Z"), "scheduled", {}, "24 h old"),
        (
            champion(full_window_end="2025-05-31T12:00:00Z"),
            "scheduled",
            {"full_retrain_hours": 6},
            "12 h old",
        ),
    ],
)
def test_full_training_when_a_warm_start_would_be_wrong(
    tags: dict[str, str] | None, kind: str, settings: dict[str, int], reason: str
) -> None:
    plan = decide(tags, kind, **settings)
    assert plan.mode == "full" and reason in plan.reason and plan.start is None


def test_a_lineage_without_a_full_window_end_counts_from_its_data_window() -> None:
    tags = champion()
    del tags["full_window_end"]
    assert decide(tags).mode == "warm"
    assert decide({**tags, "data_window_end": "2025-05-30T00:00:00Z"}).mode == "full"


def test_plan_tags_name_the_source_and_carry_the_lineage() -> None:
    start = warm_start.WarmStart(version=7, weights={}, full_window_end="2025-05-31T00:00:00Z")
    warm = warm_start.TrainingPlan("warm", "from the champion", start).tags("2025-06-01T00:00:00Z")
    assert warm == {
        "training_mode": "warm",
        "training_reason": "from the champion",
        "warm_start_from": "7",
        "full_window_end": "2025-05-31T00:00:00Z",
    }
    full = warm_start.TrainingPlan("full", "no champion").tags("2025-06-01T00:00:00Z")
    assert full["full_window_end"] == "2025-06-01T00:00:00Z" and full["warm_start_from"] == ""


def _arrays(n: int = 300, seq: int = 48, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Hourly candles as model windows: (n, seq, 11 raw features) and 1/4/24 h percent log returns."""
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.005, n + seq + 24)))
    hours = np.arange(len(close))
    cols = [
        (hours // 24) % 7,
        1 + (hours // 24) % 28,
        1 + (hours // 168) % 52,
        np.ones_like(hours),
        hours % 24,
        close * 1.001,
        close * 1.004,
        close * 0.996,
        close,
        close * -0.001,
        rng.uniform(1, 2, len(close)),
    ]
    raw = np.stack(cols, axis=1).astype(np.float32)
    x = np.stack([raw[i : i + seq] for i in range(n)])
    last = close[seq - 1 : seq - 1 + n]
    y = np.stack([100 * np.log(close[seq - 1 + h : seq - 1 + h + n] / last) for h in (1, 4, 24)], axis=1)
    return x, y.astype(np.float32)


def test_weights_round_trip_without_pickle_and_load_only_the_recurrent_part(tmp_path: Path) -> None:
    cfg = ModelConfig(hidden_size=4, num_layers=1, input_len=48)
    train = _arrays()
    source = build_model(cfg, seed=1).init_from_data(*train)
    with torch.no_grad():
        for name, p in source.named_parameters():
            if name.startswith(("rnn.", "head.")):
                p.add_(0.01)
    weights = warm_start.recurrent_weights(source)
    assert weights and set(weights) == {k for k in source.state_dict() if k.startswith(("rnn.", "head."))}
    warm_start.save_weights(tmp_path / "weights.npz", weights)
    assert (tmp_path / "weights.npz").read_bytes()[:2] == b"PK"  # numpy's zip of .npy arrays
    back = warm_start.load_weights(tmp_path / "weights.npz")
    target = build_model(cfg, seed=2).init_from_data(*_arrays(seed=3))
    structure = target.vol_coef.detach().clone()
    warm_start.apply_weights(target, back)
    for key, value in weights.items():
        assert np.array_equal(target.state_dict()[key].numpy(), value), key
    assert torch.equal(target.vol_coef, structure)  # the data-fitted structure stays the new window's


def test_weights_of_another_shape_are_refused() -> None:
    small = warm_start.recurrent_weights(build_model(ModelConfig(hidden_size=4, num_layers=1, input_len=48)))
    other = build_model(ModelConfig(hidden_size=8, num_layers=1, input_len=48))
    with pytest.raises(ValueError, match="shape"):
        warm_start.apply_weights(other, small)
    with pytest.raises(ValueError, match="do not fit"):
        warm_start.apply_weights(other, {"vol_coef": np.zeros((1, 1), dtype=np.float32)})


def test_a_local_fit_starts_from_the_given_weights() -> None:
    """With no epoch better than the start (zero epochs to run), the fit returns the warm start itself."""
    from mur.training.loop import TrainConfig

    cfg = ModelConfig(hidden_size=4, num_layers=1, input_len=48)
    train, val = _arrays(seed=4), _arrays(n=100, seed=5)
    source = build_model(cfg, seed=9)
    with torch.no_grad():
        source.head.weight.add_(0.05)
    weights = warm_start.recurrent_weights(source)
    outcome = LocalFit()(train, val, cfg, TrainConfig(epochs=1, learning_rate=1e-12), init_weights=weights)
    got = outcome.model.state_dict()["head.weight"].numpy()
    assert np.allclose(got, weights["head.weight"], atol=1e-6)
