"""The monitoring run of one market hour (``dags/mur_monitoring.py``, or ``mur monitor``): for each pair,
resolve the forecasts whose candle closed, compute the report, store it, and on a crossed threshold send a
Discord alert and request a retraining of that pair through Airflow's REST API (once per cooldown).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from typing import Any

from mur.settings import Settings

log = logging.getLogger(__name__)

Say = Callable[[str], None]


def _champions(settings: Settings, pairs: list[str]) -> dict[str, dict[str, Any]]:
    """The pairs' champions (an unreachable registry: monitoring goes on without training windows)."""
    from mur.errors import MurError
    from mur.serving.champions import champions, registry_client

    try:
        return champions(registry_client(settings), prefix=settings.registry_prefix, pairs=pairs)
    except MurError as exc:
        log.warning("monitoring without champions' training windows: %s", exc)
        return {}


def request_retraining(settings: Settings, pair: str, market_hour: datetime, reason: str) -> str | None:
    """Trigger ``mur_training`` for ``pair`` with the window ending at ``market_hour``; its run id (None when
    Airflow cannot be reached: the alert still goes out)."""
    from mur.errors import MurError
    from mur.orchestration import DAG_ID
    from mur.orchestration.airflow_client import AirflowClient
    from mur.timeutil import iso

    try:
        with AirflowClient.from_settings(settings) as client:
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
    from mur.timeutil import iso

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


def run_monitoring(
    settings: Settings,
    *,
    market_hour: datetime | None = None,
    pairs: Iterable[str] | None = None,
    say: Say = log.info,
) -> dict[str, Any]:
    """Monitor every pair (default ``settings.pairs``) at ``market_hour`` (default: the market clock's);
    returns ``{pair: {"status", "resolved", "alerts", "retrain_run_id"}}``. A failing pair is reported and
    the others go on."""
    from mur.clock import floor_hour, market_clock
    from mur.data import get_market_data
    from mur.db import Database
    from mur.monitoring.compute import build_report, resolve_forecasts, thresholds_from
    from mur.monitoring.store import latest_alerts, record_alert, save_report
    from mur.orchestration.tasks import resolve_pairs

    hour = floor_hour(market_hour) if market_hour is not None else market_clock(settings).hour()
    wanted = resolve_pairs(settings, requested=list(pairs) if pairs is not None else None)
    thresholds = thresholds_from(settings)
    source = get_market_data(settings)
    champs = _champions(settings, wanted)
    summary: dict[str, Any] = {}
    db = Database(settings)
    try:
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
                    drift_hours=settings.monitor_drift_hours,
                )
                save_report(db, report)
                entry: dict[str, Any] = {"status": report.status, "resolved": resolved, "alerts": kinds}
                if kinds:
                    # alerts of earlier market hours that reached someone (Discord, or a retraining); a replay
                    # restarted from an earlier start never sees its "future" alerts
                    # (a new kind of problem is alerted at once: a coverage alert does not mute a drift one)
                    since = hour - timedelta(hours=thresholds.cooldown_hours)
                    alerted = {
                        kind
                        for a in latest_alerts(db, pair, limit=50)
                        if since < a.as_of <= hour and (a.delivered or a.retrain_run_id)
                        for kind in a.kinds
                    }
                    cooling = set(kinds) <= alerted
                    if cooling:
                        entry["cooldown"] = True
                    else:
                        run_id = None
                        if settings.monitor_retrain:
                            run_id = request_retraining(settings, pair, hour, "; ".join(kinds))
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
    finally:
        db.close()
    return summary
