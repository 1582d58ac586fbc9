"""The quantile forecaster (LSTM / GRU) in plain PyTorch: raw candle windows in, log-return quantiles out.

For each horizon ``h`` (hours after the last candle) and quantile level ``tau`` the model gives the log
return, in percent::

    q(h, tau) = 100 * sigma_h * (m_h + z(h, tau))

* ``sigma_h``, the spread, comes from a volatility structure computed inside the graph from the window:
  ``log sigma_h^2 = A . v(x) + b_h + season_h(hour of week) + 2 c_h``, where ``v(x)`` are logs of
  exponentially weighted averages (several half-lives) of the Parkinson high-low variance and of squared
  returns, both divided by an hour-of-week variance factor fitted on the training span, and the volume of
  the last hour, the last ~4 hours and the last day relative to the window's. Volatility clusters and has an intraday and weekly rhythm; this is
  where the information of a forecast of crypto prices is.
* ``m_h`` (the median's offset) and ``c_h`` (a spread correction) come from a recurrent core (LSTM or GRU)
  reading the last ``rnn_len`` hours, with a zero-initialized head: before training the median is
  persistence and the spread is the fitted volatility structure.
* ``z(h, tau)`` is non-decreasing in ``tau`` by construction (cumulative softplus), so quantiles never cross.

:meth:`QuantileForecaster.init_from_data` fits the structure on the training windows (ordinary least
squares of log squared returns, the empirical quantiles of standardized returns); training then refines
every part with the pinball loss (:func:`pinball_loss`), the proper scoring rule for quantiles.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np
import torch
from torch import nn

from mur.model.features import CALENDAR_DOMAIN, CLOSE_IDX, EXTENDED_FEATURE_NAMES, N_FEATURES, RELATIVE_SCALE
from mur.model.quantile_config import check_quantile_config

Arch = Literal["lstm", "gru"]
HALF_LIVES = (1.0, 4.0, 12.0, 48.0, 168.0)
"""Half-lives (hours) of the in-graph volatility averages (longer ones are cut by the window)."""
HOURS_PER_WEEK = 168
PRIOR_WEIGHT = 200.0
"""Pseudo-observations pulling the fitted volatility structure towards the plain 12 h EWMA (see
:meth:`QuantileForecaster.init_from_data`)."""
_EPS = 1e-12
SEASON_PRIOR = 8.0
"""Pseudo-observations (hours) shrinking each hour of week's log variance towards the average."""
TARGET_FLOOR = 0.01
"""Floor of the structure's fit target, as a share of its mean: a flat candle (high = low) is not a
log variance of minus infinity."""


@dataclass(frozen=True)
class ModelConfig:
    """Architecture hyper-parameters (logged as MLflow params and hashed into the idempotency key)."""

    arch: Arch = "lstm"
    hidden_size: int = 32
    num_layers: int = 2
    dropout: float = 0.1
    feature_names: tuple[str, ...] = EXTENDED_FEATURE_NAMES
    horizons: tuple[int, ...] = (1, 4, 24)
    quantile_levels: tuple[float, ...] = (0.05, 0.5, 0.95)
    rnn_len: int = 24
    """Hours the recurrent core reads (the last ones of the window)."""
    input_len: int = 168
    """Hours the model takes: the volatility context (``mur.features`` columns per hour)."""
    normalization: str = "relative"

    def __post_init__(self) -> None:  # JSON round trips (Ray configs, MLflow) turn tuples into lists
        object.__setattr__(self, "feature_names", tuple(self.feature_names))
        object.__setattr__(self, "horizons", tuple(int(h) for h in self.horizons))
        object.__setattr__(self, "quantile_levels", tuple(float(q) for q in self.quantile_levels))
        check_quantile_config(self.horizons, self.quantile_levels)
        if not 2 <= self.rnn_len <= self.input_len:
            raise ValueError(f"rnn_len must be in [2, input_len={self.input_len}], got {self.rnn_len}")
        if tuple(self.feature_names[:N_FEATURES]) != EXTENDED_FEATURE_NAMES[:N_FEATURES]:  # prices included
            raise ValueError(
                f"feature_names must start with the reference set, got {list(self.feature_names)}"
            )

    @property
    def median_index(self) -> int:
        return self.quantile_levels.index(0.5)

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}  # JSON's lists


def pinball_loss(
    q: torch.Tensor, y: torch.Tensor, levels: torch.Tensor, weights: torch.Tensor
) -> torch.Tensor:
    """Mean pinball (quantile) loss of quantiles ``q (B, H, L)`` for targets ``y (B, H)``; ``weights (H,)``
    balance the horizons (longer horizons have larger returns)."""
    diff = y.unsqueeze(-1) - q  # > 0: the target is above the quantile
    loss = torch.maximum(levels * diff, (levels - 1.0) * diff)
    return (loss.mean(dim=(0, 2)) * weights).sum() / weights.sum()


class QuantileForecaster(nn.Module):
    """``(batch, input_len, n_features)`` raw candles → log-return quantiles ``(batch, H, L)`` in percent."""

    lo: torch.Tensor
    span: torch.Tensor
    ewma_weights: torch.Tensor
    log_season: torch.Tensor
    season_h: torch.Tensor
    levels: torch.Tensor
    horizon_weights: torch.Tensor

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        names = cfg.feature_names
        self.reference = cfg.normalization == "reference"
        self.i_hour = names.index("hour") if "hour" in names else -1
        self.i_dow = names.index("day_of_week")
        self.i_volume = names.index("volume") if "volume" in names else -1
        self.seasonal = self.i_hour >= 0
        n_h, n_l = len(cfg.horizons), len(cfg.quantile_levels)
        n_in = N_FEATURES + 2 + (2 if self.i_hour >= 0 else 0) + (1 if self.i_volume >= 0 else 0)
        rnn_cls = nn.LSTM if cfg.arch == "lstm" else nn.GRU
        self.rnn = rnn_cls(
            input_size=n_in,
            hidden_size=cfg.hidden_size,
            num_layers=cfg.num_layers,
            dropout=cfg.dropout if cfg.num_layers > 1 else 0.0,
            batch_first=True,
        )
        self.head = nn.Linear(cfg.hidden_size, 2 * n_h)
        nn.init.zeros_(self.head.weight)  # untrained: median = persistence, spread = the structure below
        nn.init.zeros_(self.head.bias)
        self.n_vol = len(HALF_LIVES) + 4
        self.vol_coef = nn.Parameter(torch.zeros(self.n_vol, n_h))
        self.vol_bias = nn.Parameter(torch.zeros(n_h))
        self.z_raw = nn.Parameter(torch.zeros(n_h, n_l))
        # normalization of the recurrent inputs (reference: min/max of the training span, set from data)
        if self.reference:
            lo, hi = torch.zeros(N_FEATURES), torch.ones(N_FEATURES)
        else:
            lo = torch.tensor([d[0] for d in CALENDAR_DOMAIN], dtype=torch.float32)
            hi = torch.tensor([d[1] for d in CALENDAR_DOMAIN], dtype=torch.float32)
        self.register_buffer("lo", lo)
        self.register_buffer("span", hi - lo)
        t = torch.arange(cfg.input_len - 1, -1, -1, dtype=torch.float32)  # age of each hour, newest = 0
        w = torch.stack([0.5 ** (t / hl) for hl in HALF_LIVES], dim=1)
        self.register_buffer("ewma_weights", w / w.sum(dim=0, keepdim=True))  # (T, K)
        self.register_buffer("log_season", torch.zeros(HOURS_PER_WEEK))
        self.register_buffer("season_h", torch.zeros(n_h, HOURS_PER_WEEK))
        self.register_buffer("levels", torch.tensor(cfg.quantile_levels, dtype=torch.float32))
        self.register_buffer(
            "horizon_weights", torch.tensor([1.0 / math.sqrt(h) for h in cfg.horizons], dtype=torch.float32)
        )

    # --- pieces ---------------------------------------------------------------------------------------
    def hour_of_week(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, T)`` long: Monday 00:00 UTC = 0 … Sunday 23:00 = 167 (0 without an ``hour`` column)."""
        if not self.seasonal:
            return torch.zeros(x.shape[:2], dtype=torch.long, device=x.device)
        how = x[..., self.i_dow] * 24.0 + x[..., self.i_hour]
        return torch.clamp(how, 0, HOURS_PER_WEEK - 1).long()

    def vol_features(self, x: torch.Tensor, how: torch.Tensor) -> torch.Tensor:
        """``(B, K + 4)``: log EWMA of deseasonalized Parkinson variance (one per half-life), log EWMA of
        deseasonalized squared returns (12 h), log volume of the last day, hour and ~4 hours relative to
        the window's (volume surges announce wide hours)."""
        close, high, low = x[..., CLOSE_IDX], x[..., 5], x[..., 6]
        season = torch.exp(self.log_season[how])  # (B, T)
        park = torch.log(high / low) ** 2 / (4.0 * math.log(2.0)) / season + _EPS
        r2 = torch.log(close[:, 1:] / close[:, :-1]) ** 2 / season[:, 1:] + _EPS
        w = self.ewma_weights
        k12 = HALF_LIVES.index(12.0)
        w12 = w[1:, k12] / w[1:, k12].sum()
        feats = [torch.log(park @ w), torch.log(r2 @ w12).unsqueeze(-1)]
        if self.i_volume >= 0:
            v = x[..., self.i_volume]
            base = torch.log(v.mean(dim=1) + 1.0)
            for recent in (v[:, -24:].mean(dim=1), v @ w[:, 0], v @ w[:, 1]):  # last day, last hour, ~4 h
                feats.append((torch.log(recent + 1.0) - base).unsqueeze(-1))
        else:
            feats += [torch.zeros_like(feats[1])] * 3
        return torch.cat(feats, dim=-1)

    def rnn_inputs(self, x: torch.Tensor) -> torch.Tensor:
        """Normalized recurrent inputs for the last ``rnn_len`` hours."""
        r = x[:, -self.cfg.rnn_len - 1 :, :]
        prev, r = r[:, :-1, :], r[:, 1:, :]
        last = r[:, -1:, CLOSE_IDX : CLOSE_IDX + 1]  # (B, 1, 1)
        if self.reference:
            base = 2.0 * (r[..., :N_FEATURES] - self.lo) / self.span - 1.0
        else:
            cal = 2.0 * (r[..., :4] - self.lo) / self.span - 1.0
            prices = (r[..., 4:8] / last - 1.0) * RELATIVE_SCALE
            spread = r[..., 8:9] / last * RELATIVE_SCALE
            base = torch.cat([cal, prices, spread], dim=-1)
        ret = torch.log(r[..., CLOSE_IDX : CLOSE_IDX + 1] / prev[..., CLOSE_IDX : CLOSE_IDX + 1]) * 100.0
        rng = torch.log(r[..., 5:6] / r[..., 6:7]) * 100.0
        parts = [base, ret, rng]
        if self.i_hour >= 0:
            angle = r[..., self.i_hour : self.i_hour + 1] * (2.0 * math.pi / 24.0)
            parts += [torch.sin(angle), torch.cos(angle)]
        if self.i_volume >= 0:
            v = x[..., self.i_volume : self.i_volume + 1]
            parts.append(
                torch.log(r[..., self.i_volume : self.i_volume + 1] + 1.0) - torch.log(v.mean(1, True) + 1.0)
            )
        return torch.cat(parts, dim=-1)

    def z(self) -> torch.Tensor:
        """``(H, L)`` standardized quantiles, non-decreasing along the levels."""
        steps = torch.cat([self.z_raw[:, :1], nn.functional.softplus(self.z_raw[:, 1:])], dim=1)
        return torch.cumsum(steps, dim=1)

    def structure(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, H)`` log variance of the log return to each horizon from the volatility structure alone."""
        how = self.hour_of_week(x)
        v = self.vol_features(x, how)
        return v @ self.vol_coef + self.vol_bias + self.season_h[:, how[:, -1]].T

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(self.rnn_inputs(x))
        m, c = self.head(out[:, -1, :]).chunk(2, dim=-1)  # (B, H) each
        sigma = torch.exp(0.5 * self.structure(x) + c)
        return 100.0 * sigma.unsqueeze(-1) * (m.unsqueeze(-1) + self.z())

    def loss(self, q: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Pinball loss of the model's output ``q`` for targets ``y`` (percent log returns, ``(B, H)``)."""
        return pinball_loss(q, y, self.levels, self.horizon_weights)

    # --- fitted start ------------------------------------------------------------------------------------
    @torch.no_grad()
    def init_from_data(self, x: np.ndarray, y: np.ndarray) -> QuantileForecaster:
        """Fit the normalization, the hour-of-week factor, the volatility structure and the standardized
        quantiles on training windows ``x (n, T, F)`` and targets ``y (n, H)`` (percent log returns)."""
        cfg = self.cfg
        xt = torch.tensor(x, dtype=torch.float32)  # a copy: Ray hands the windows read-only
        last = xt[:, -1, :]
        park_last = torch.log(last[:, 5] / last[:, 6]).double() ** 2 / (4.0 * math.log(2.0))
        if self.reference:
            lo, hi = last[:, :N_FEATURES].min(0).values, last[:, :N_FEATURES].max(0).values
            self.lo.copy_(lo)
            self.span.copy_(torch.where(hi - lo == 0, torch.ones_like(hi), hi - lo))
        if self.seasonal:
            factor = hour_of_week_factor(park_last, self.hour_of_week(xt)[:, -1])
            self.log_season.copy_(torch.log(factor).float())
            for j, h in enumerate(cfg.horizons):
                ahead = torch.stack([torch.roll(factor, -k) for k in range(1, h + 1)]).mean(0)
                self.season_h[j].copy_(torch.log(ahead).float())
        # log variance of the return to each horizon ~ OLS on the volatility features
        ret = torch.tensor(y, dtype=torch.float64) / 100.0  # (n, H)
        how_all = self.hour_of_week(xt)
        feats = self.vol_features(xt, how_all).double()
        design = torch.cat([feats, torch.ones(len(feats), 1, dtype=torch.float64)], dim=1)
        # Target: the log of the realized range variance over the hours ahead (far less noisy than a log
        # squared return). Training windows are consecutive hours, so the candle k hours after window i's
        # last one is window i+k's last one; windows without all their hours ahead are left out here.
        csum = torch.cat([torch.zeros(1, dtype=torch.float64), torch.cumsum(park_last, 0)])
        n, max_h = len(park_last), max(cfg.horizons)
        rows = torch.arange(max(n - max_h, 0))
        if len(rows) < 2 * design.shape[1]:  # too few consecutive windows: fall back to squared returns
            rows = torch.arange(n)
            floor = 0.05 * (ret**2).mean(0, keepdim=True)
            realized = ret**2 + floor
        else:
            realized = torch.stack([csum[rows + 1 + h] - csum[rows + 1] for h in cfg.horizons], dim=1)
            realized = realized + TARGET_FLOOR * realized.mean(0, keepdim=True)
        target = torch.log(realized) - self.season_h[:, how_all[rows, -1]].T.double()
        d = design[rows]
        # Ridge towards the plain EWMA estimator (coefficient 1 on the 12 h range average, 0 elsewhere, the
        # intercept free): with a short training window the structure stays close to baseline (b)'s,
        # with a long one the data decide (PRIOR_WEIGHT pseudo-observations).
        prior_coef = torch.zeros(d.shape[1], 1, dtype=torch.float64)
        prior_coef[HALF_LIVES.index(12.0)] = 1.0
        penalty = torch.full((d.shape[1],), PRIOR_WEIGHT, dtype=torch.float64)
        penalty[-1] = 0.0
        penalty_m = torch.diag(penalty) + 1e-9 * len(d) * torch.eye(d.shape[1], dtype=torch.float64)
        coef = torch.linalg.solve(d.T @ d + penalty_m, d.T @ target + torch.diag(penalty) @ prior_coef)
        self.vol_coef.copy_(coef[:-1].float())
        self.vol_bias.copy_(coef[-1].float())
        sigma = torch.exp(0.5 * self.structure(xt).double())
        std = (ret / sigma).numpy()
        zq = np.quantile(std, cfg.quantile_levels, axis=0).T  # (H, L)
        zq[:, cfg.median_index] = 0.0  # the median starts at persistence
        zq = np.maximum.accumulate(zq, axis=1)
        steps = np.diff(zq, axis=1).clip(min=1e-3)
        raw = np.concatenate([zq[:, :1], np.log(np.expm1(steps))], axis=1)
        self.z_raw.copy_(torch.from_numpy(raw).float())
        return self


def hour_of_week_factor(park: torch.Tensor, how: torch.Tensor, prior: float = SEASON_PRIOR) -> torch.Tensor:
    """``(168,)`` variance factor per hour of week (mean 1) from hourly Parkinson variances ``park (n,)``
    observed at hours of week ``how (n,)``.

    A geometric mean: ``exp`` of each hour of week's mean log variance minus the overall mean, shrunk
    towards 0 by ``prior`` pseudo-hours. Logs make it robust: a mean of variances is decided by the few
    extreme hours of the training span; the mean of their logs describes the typical hour, which is what a
    factor multiplying a volatility forecast should (measured in docs/forecasts.md).
    """
    park = park.double()
    floor = 1e-3 * float(park.mean()) + _EPS  # flat candles (high = low)
    logs = torch.log(park + floor)
    zeros = torch.zeros(HOURS_PER_WEEK, dtype=torch.float64)
    total = zeros.index_add(0, how, logs - logs.mean())
    count = zeros.index_add(0, how, torch.ones_like(logs))
    factor = torch.exp(total / (count + prior))
    return factor / factor.mean()


def build_model(cfg: ModelConfig, seed: int | None = None) -> QuantileForecaster:
    """Create a model; with ``seed`` the initial weights are reproducible."""
    if seed is not None:
        torch.manual_seed(seed)
    return QuantileForecaster(cfg)
