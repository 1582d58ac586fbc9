"""The monitoring run of one market hour (``dags/mur_monitoring.py``, or ``mur monitor``): for each pair,
resolve the forecasts whose candle closed, step the online calibration of the served ranges with them
(:func:`step_online_calibration`), compute the report, store it, and on a crossed threshold send a
Discord alert and request a retraining of that pair through Airflow's REST API (once per cooldown).

A pair whose newest trained window ended ``MUR_STALE_TRAINING_HOURS`` market hours or more before the monitored
hour gets the alert kind ``stale_training`` (its line in the report's ``alerts``, status ``alert``, Discord):
hourly training has stopped (a derailed schedule, a dead scheduler). It requests no retraining by itself.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from typing import Any

from mur.errors import MurError
from mur.settings import Settings
from mur.timeutil import iso, parse_time

log = logging.getLogger(__name__)

Say = Callable[[str], None]


STALE_KIND = "stale_training"
"""The alert kind of a pair whose newest trained window is ``stale_training_hours`` market hours old."""


def _registry_view(
    settings: Settings, pairs: list[str]
) -> tuple[dict[str, dict[str, Any]], dict[str, datetime] | None]:
    """The pairs' champions and newest training window ends (None: not known). An unreachable registry:
    monitoring goes on without training windows and without the staleness check."""
    from mur.serving.champions import champions, registry_client

    try:
        client = registry_client(settings)
        found = champions(
            client,
            prefix=settings.registry.registry_prefix,
            experiment=settings.registry.mlflow_experiment,
            pairs=pairs,
        )
    except MurError as exc:
        log.warning("monitoring without champions' training windows: %s", exc)
        return {}, None
    try:
        return found, newest_trainings(client, settings.registry.registry_prefix, pairs)
    except Exception as exc:  # MlflowException, a transport error: the check waits for the next hour
        log.warning("monitoring without the training staleness check: %s", exc)
        return found, None


def newest_trainings(client: Any, prefix: str, pairs: Iterable[str]) -> dict[str, datetime]:
    """``{pair: end of the newest training window}`` over each pair's latest registered versions (any alias:
    a version the gate did not promote was still trained); pairs without a version are left out."""
    from mur.registry import model_name

    ends: dict[str, datetime] = {}
    for pair in pairs:
        versions = client.search_model_versions(
            f"name = '{model_name(pair, prefix)}'", max_results=20, order_by=["version_number DESC"]
        )
        times = [parse_time((v.tags or {}).get("data_window_end")) for v in versions]
        known = [t for t in times if t is not None]
        if known:
            ends[pair] = max(known)
    return ends


def stale_training_line(trained_until: datetime | None, hour: datetime, limit_hours: int) -> str | None:
    """The alert line when the newest training window ended ``limit_hours`` market hours or more before
    ``hour`` (None: fresh, unknown, or the check is off)."""
    if limit_hours <= 0 or trained_until is None:
        return None
    age = (hour - trained_until).total_seconds() / 3600
    if age < limit_hours:
        return None
    return (
        f"training stale: the newest model was trained on candles up to {iso(trained_until)}, {age:.0f} market "
        f"hours before {iso(hour)} (MUR_STALE_TRAINING_HOURS={limit_hours}); is mur_training running? "
        "See its next run in Airflow and mur airflow backfill --list"
    )


def request_retraining(settings: Settings, pair: str, market_hour: datetime, reason: str) -> str | None:
    """Trigger ``mur_training`` for ``pair`` with the window ending at ``market_hour``; its run id (None when
    Airflow cannot be reached: the alert still goes out). A run already queued or running for the pair (an
    earlier alert's, on a busy cluster) is that retraining: its id is returned and no second run is queued."""
    from mur.orchestration import DAG_ID
    from mur.orchestration.airflow_client import AirflowClient

    try:
        with AirflowClient.from_settings(settings) as client:
            for active in client.dag_runs(DAG_ID, states=["queued", "running"]):
                if pair in ((active.get("conf") or {}).get("pairs") or ()):
                    log.info("a retraining of %s is under way: run %s", pair, active["dag_run_id"])
                    return str(active["dag_run_id"])
            run = client.trigger(
                DAG_ID,
                {"pairs": [pair], "end": iso(market_hour)},
                note=f"monitoring: {reason}"[:1000],
            )
        return run.run_id
    except (MurError, OSError) as exc:
        log.warning("monitoring could not request a retraining of %s: %s", pair, exc)
        return None


def _alert(
    settings: Settings, pair: str, market_hour: datetime, lines: list[str], run_id: str | None
) -> bool:
    from mur.orchestration.alerts import ORANGE, Alert, send

    alert = Alert(
        title=f"Monitoring: {pair} crossed a threshold",
        dag_id="mur_monitoring",
        run_id=run_id or "-",
        pair=pair,
        reason="\n".join(lines)[:1000],
        logical_date=iso(market_hour),
        color=ORANGE,
        extra_fields={"Retraining": run_id or "not requested"},
    )
    return send(alert, settings)


def step_online_calibration(db: Any, settings: Settings, pair: str, hour: datetime) -> list[dict[str, Any]]:
    """Step ``pair``'s online calibration with the forecasts resolved before ``hour`` (each tracker its served
    generation's; each forecast once, so a rerun of the hour changes nothing) and return the summary per
    horizon for the report. With ``MUR_ONLINE_CALIBRATION=false`` nothing is stepped (no range is served
    with a scale) and the last state is reported as it stands."""
    from mur.db.calibration import LOOKBACK, calibration_summary, served_generations, update_from_resolved
    from mur.evaluation.online_conformal import OnlineParams

    if settings.monitoring.online_calibration:
        params = OnlineParams(eta=settings.monitoring.online_calibration_eta)
        for generation in served_generations(db, pair=pair, since=hour - LOOKBACK, until=hour):
            update_from_resolved(db, pair=pair, generation=generation, market_hour=hour, params=params)
    return calibration_summary(db, pair=pair)


def _shadows(settings: Settings, db: Any, pair: str, hour: datetime) -> list[Any]:
    """:func:`mur.monitoring.shadows.review_shadows`; a registry that does not answer waits for the next hour."""
    from mur.monitoring.shadows import review_shadows
    from mur.serving.champions import registry_client

    try:
        return review_shadows(settings, db, registry_client(settings), pair, hour)
    except Exception as exc:  # MlflowException, a transport error, a pair never registered (the first hour)
        level = logging.INFO if "RESOURCE_DOES_NOT_EXIST: Registered Model" in str(exc) else logging.WARNING
        log.log(level, "%s: shadows not reviewed this hour: %s", pair, exc)
        return []


def run_monitoring(
    settings: Settings,
    *,
    market_hour: datetime | None = None,
    pairs: Iterable[str] | None = None,
    say: Say = log.info,
) -> dict[str, Any]:
    """Monitor every pair (default ``settings.general.pairs``) at ``market_hour`` (default: the market clock's);
    returns ``{pair: {"status", "resolved", "alerts", "retrain_run_id"}}``. A failing pair is reported and
    the others go on."""
    from mur.clock import floor_hour, market_clock
    from mur.data import get_market_data
    from mur.db import Database
    from mur.monitoring.compute import build_report, resolve_forecasts, thresholds_from
    from mur.monitoring.report import CalibrationRow
    from mur.monitoring.store import latest_alerts, record_alert, save_report
    from mur.orchestration.tasks import resolve_pairs

    hour = floor_hour(market_hour) if market_hour is not None else market_clock(settings).hour()
    wanted = resolve_pairs(settings, requested=list(pairs) if pairs is not None else None)
    thresholds = thresholds_from(settings)
    source = get_market_data(settings)
    champs, trained = _registry_view(settings, wanted)
    summary: dict[str, Any] = {}
    with Database(settings) as db:
        for pair in wanted:
            try:
                resolved = resolve_forecasts(db, source, pair, hour)
                report, kinds = build_report(
                    db,
                    source,
                    pair,
                    hour,
                    thresholds,
                    champion=champs.get(pair),
                    drift_hours=settings.monitoring.monitor_drift_hours,
                )
                stale = stale_training_line(
                    (trained or {}).get(pair), hour, settings.monitoring.stale_training_hours
                )
                if stale is not None:
                    kinds = [*kinds, STALE_KIND]
                    report = report.model_copy(update={"status": "alert", "alerts": [*report.alerts, stale]})
                calibration = step_online_calibration(db, settings, pair, hour)
                report = report.model_copy(
                    update={
                        "online_calibration": [CalibrationRow.model_validate(c) for c in calibration],
                        "shadows": _shadows(settings, db, pair, hour),
                    }
                )
                save_report(db, report)
                entry: dict[str, Any] = {"status": report.status, "resolved": resolved, "alerts": kinds}
                if kinds:
                    # alerts of earlier market hours, delivered or not (an undelivered one is recorded and
                    # shown: repeating it every hour would only grow the table); a replay restarted from an
                    # earlier start never sees its "future" alerts
                    # (a new kind of problem is alerted at once: a coverage alert does not mute a drift one)
                    since = hour - timedelta(hours=thresholds.cooldown_hours)
                    alerted = {
                        kind
                        for a in latest_alerts(db, pair, limit=50)
                        if since < a.as_of <= hour
                        for kind in a.kinds
                    }
                    if set(kinds) <= alerted:
                        entry["cooldown"] = True
                    else:
                        run_id = None
                        retrain_for = [k for k in kinds if k != STALE_KIND]  # stale: the schedule's fault
                        if settings.monitoring.monitor_retrain and retrain_for:
                            run_id = request_retraining(settings, pair, hour, "; ".join(retrain_for))
                        delivered = _alert(settings, pair, hour, report.alerts, run_id)
                        record_alert(
                            db,
                            pair=pair,
                            as_of=hour,
                            kinds=kinds,
                            message="\n".join(report.alerts),
                            delivered=delivered,
                            retrain_run_id=run_id,
                        )
                        entry |= {"retrain_run_id": run_id, "delivered": delivered}
                say(
                    f"{pair}: {report.status}, {resolved} resolved now, n={report.n_resolved}, "
                    f"skill={report.skill}, coverage={report.coverage}, alerts={kinds or 'none'}"
                )
                summary[pair] = entry
            except Exception as exc:  # one pair's failure must not hide the others
                log.exception("monitoring %s failed", pair)
                summary[pair] = {"status": "error", "error": f"{type(exc).__name__}: {exc}"}
    return summary
