"""What monitoring says about one pair at one market hour: the contract shared by the monitoring task (which
writes it to ``monitoring_reports``), the API (``GET /v1/monitoring/{pair}``), the dashboard's Monitoring page
and the Prometheus gauges. Import-light: pydantic and the standard library.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

Status = Literal["ok", "alert", "insufficient_data"]


class Thresholds(BaseModel):
    """When monitoring raises an alert (documented in ``docs/monitoring.md``; ``MUR_MONITOR_*`` settings)."""

    window_hours: int = Field(description="resolved 1 h forecasts in the rolling window")
    min_resolved: int = Field(description="fewer resolved forecasts than this: no skill/coverage alert")
    skill_below: float = Field(description="alert when the rolling skill vs persistence falls below this")
    coverage_below: float = Field(description="alert when the rolling coverage of the range falls below this")
    psi_above: float = Field(description="alert when an input's population-stability index exceeds this")
    ks_p_below: float = Field(description="... and its two-sample KS p-value is below this")
    alert_features: list[str] = Field(
        default_factory=lambda: ["abs_log_return"], description="inputs whose drift raises an alert"
    )
    cooldown_hours: int = Field(description="market hours between two alerts (and retrainings) of a pair")


class DriftStat(BaseModel):
    """One input's drift: the recent market hours against the champion's training window."""

    feature: str = Field(description="e.g. abs_log_return, log_range, log_volume")
    psi: float = Field(description="population-stability index over deciles of the training window")
    ks: float = Field(description="two-sample Kolmogorov-Smirnov statistic")
    ks_p: float = Field(description="its p-value")
    reference_mean: float
    recent_mean: float
    n_reference: int
    n_recent: int
    drifted: bool = Field(description="PSI above and KS p-value below the thresholds")
    alerting: bool = Field(False, description="drifted, and an input whose drift raises an alert")


class RollingPoint(BaseModel):
    """The rolling statistics as of one resolved target hour (for the charts)."""

    target_time: str
    n: int
    skill: float | None = None
    coverage: float | None = None
    mae_model: float | None = None
    mae_persistence: float | None = None


class CalibrationRow(BaseModel):
    """One horizon's online calibration (:func:`mur.db.calibration.calibration_summary`): the scale serving
    applies now and the running coverage of the resolved forecasts with it (as served) and without it (the
    graph's own range), over every forecast that stepped the tracker (docs/forecasts.md)."""

    horizon_hours: int
    generation: str = Field(description="the tracker: quantile levels and offline calibration recipe")
    level: float = Field(description="the range's nominal coverage")
    scale: float = Field(description="the scale applied to the range's distances from the median now")
    resolved: int = Field(description="resolved forecasts that stepped the tracker")
    coverage: float | None = Field(None, description="share inside the range as served (with the scale)")
    coverage_without_scale: float | None = Field(None, description="share inside the graph's own range")
    winkler: float | None = Field(None, description="mean Winkler score as served (log-price percent)")
    winkler_without_scale: float | None = None
    skill_vs_without_scale: float | None = Field(
        None, description="1 - winkler / winkler_without_scale (> 0: the scale made better ranges)"
    )
    last_target_time: str | None = None


class ShadowRow(BaseModel):
    """A version served in shadow at this hour (:mod:`mur.monitoring.shadows`): why the gate did not promote
    it, and its live scores against the served forecasts of the same resolved targets."""

    version: int
    status: Literal["shadow", "promoted", "retired"] = "shadow"
    gate_reason: str | None = None
    live_reason: str = ""
    horizons: list[dict[str, float]] = Field(
        default_factory=list, description="per horizon: n, coverages, pinball losses, DM p-values"
    )


class MonitoringReport(BaseModel):
    """Monitoring of one pair at market hour ``as_of`` (ISO-8601 UTC)."""

    pair: str
    as_of: str
    champion_version: str | None = None
    trained_window: dict[str, str | None] | None = None
    status: Status
    n_resolved: int = Field(
        description="resolved 1 h forecasts in the rolling window (one per target hour: the first served)"
    )
    n_pending: int = Field(
        0, description="scored forecasts of any horizon still waiting for their candle to close"
    )
    skill: float | None = Field(None, description="1 - MAE_model / MAE_persistence over the window")
    mae_model: float | None = None
    mae_persistence: float | None = None
    coverage: float | None = Field(None, description="share of actual closes inside the range")
    level: float | None = Field(None, description="the range's nominal coverage (e.g. 0.9)")
    drift: list[DriftStat] = Field(default_factory=list)
    rolling: list[RollingPoint] = Field(default_factory=list)
    alerts: list[str] = Field(default_factory=list, description="thresholds crossed, in plain words")
    thresholds: Thresholds
    shadows: list[ShadowRow] = Field(default_factory=list, description="the versions served in shadow")
    online_calibration: list[CalibrationRow] = Field(
        default_factory=list,
        description="per horizon: the online scale and the running coverage with and without it "
        "(empty before the first resolved forecast)",
    )
