"""A shadow challenger promoted on live evidence, end to end on a fast market clock (issue 37): the real Serve
app (the session's, redeployed with a clock at 1,800 market seconds per second), MLflow, S3 and PostgreSQL.

One tiny training on an uploaded random-walk pair, exported twice as ``tests/model/test_gate_models.py`` does:
v1 with its ranges squeezed to a quarter of the calibrated width serves as champion, v2 (calibrated, the same
median) in shadow. As the market clock turns, forecasts are asked for; v2's land in ``shadow_forecasts``,
never in an answer. The monitoring run of each market hour (:func:`mur.monitoring.task.run_monitoring`, what
the monitoring DAG runs) scores v2 on the resolved targets and, once every horizon has
``MUR_SHADOW_MIN_RESOLVED`` of them, promotes it with reason "live"; the move is in the alias history and the
app serves v2 within one registry poll. Online calibration is off: it would widen both ranges by the same
served scale, and the point here is the shadow's own ranges. The file sorts after the other modules of the
session's app and before test_multiplex.py (which removes it): the session's app is redeployed as it was at the
end only when a later test of this run uses it.
"""

from __future__ import annotations

import contextlib
import io
import secrets
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from module_order import later_tests_use
from pair_csv import pair_csv_text
from serve_helpers import ServeStack, wait_until

from mur import registry, waiting
from mur.clock import market_clock
from mur.data.catalogue import add_csv_pair
from mur.db import Database, list_forecasts
from mur.db.alias_history import list_moves
from mur.monitoring.store import latest_report
from mur.monitoring.task import run_monitoring
from mur.registry.aliases import keep_shadows, move_champion
from mur.registry.names import CHAMPION, shadow_alias

pytestmark = [pytest.mark.services, pytest.mark.serve]

START = datetime(2024, 9, 2, tzinfo=UTC)
HOURS = 2000
TRAINED_UNTIL = START + timedelta(hours=1400)  # the clock starts here: every served target is unseen
SPEED = 1800.0  # market seconds per wall second: an hour every 2 s
MIN_RESOLVED = 24
SQUEEZE = 0.25


def _train_squeezed_and_calibrated(settings: Any, pair: str, csv: Path) -> tuple[int, int]:
    """One fit, registered twice: v1 with its calibrated ranges squeezed to ``SQUEEZE``, v2 calibrated."""
    from mur.model.export import CalibratedForecaster
    from mur.training import driver
    from mur.training.loop import LocalFit

    fit = LocalFit()
    prep = driver.prepare_training(settings, pair, fit=fit, end=TRAINED_UNTIL, data_csv=csv, hidden_size=4)
    assert isinstance(prep, driver.PreparedTraining)
    outcome = fit(prep.ds.model_arrays("train"), prep.ds.model_arrays("val"), prep.mcfg, prep.tcfg)
    calibrate = driver.calibrate

    def squeezed(model: Any, ds: Any) -> CalibratedForecaster:
        good = calibrate(model, ds)
        return CalibratedForecaster(good.net, (SQUEEZE * good.scale.reshape(-1)).tolist())

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(driver, "calibrate", squeezed)
        narrow = driver.finish_training(settings, prep, outcome, fit=fit)
    good = driver.finish_training(settings, prep, outcome, fit=fit)
    assert (narrow.version, good.version) == (1, 2), (narrow, good)
    return 1, 2


@pytest.fixture(scope="module")
def fast_stack(
    serve_stack: ServeStack, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[ServeStack]:
    """The session's app redeployed on a fast clock (and as it was afterwards, when a later test uses it),
    serving an uploaded pair whose squeezed v1 is champion and calibrated v2 its shadow."""
    from serve_app.args import AppArgs, settings_overrides
    from serve_app.deploy import deploy

    stack = serve_stack
    pair = f"t{secrets.token_hex(3)}_usdt"
    text = pair_csv_text(HOURS, start=START, seed=11)
    csv = tmp_path_factory.mktemp("live") / f"{pair}.csv"
    csv.write_text(text)
    with Database(stack.direct, maxconn=1) as db:
        add_csv_pair(stack.direct, db, pair, io.BytesIO(text.encode()), name=csv.name, added_by="test")
    client = registry.configure(stack.direct)
    name = registry.model_name(pair, stack.direct.registry.registry_prefix)
    fast: dict[str, Any] = {"clock_start": TRAINED_UNTIL, "clock_speed": SPEED, "online_calibration": False}
    try:
        v1, v2 = _train_squeezed_and_calibrated(stack.direct.replace(horizons=[1, 4], epochs=1), pair, csv)
        keep_shadows(client, name, keep=0)  # whatever the gate decided: v1 serves, v2 in shadow
        keep_shadows(client, name, keep=2, add=v2)
        move_champion(stack.direct, client, pair=pair, version=v1, action="manual", actor="test",
                      reason="the squeezed champion", market_time=TRAINED_UNTIL)  # fmt: skip
        fast["clock_origin"] = time.time()
        app = stack.settings.replace(**fast)
        deploy(app, AppArgs(settings=settings_overrides(app)), force=True, timeout_s=420)
        yield replace(
            stack, settings=app, direct=stack.direct.replace(**fast), pair=pair, versions={pair: v2}
        )
    finally:
        with contextlib.suppress(Exception):
            client.delete_registered_model(name)
        if later_tests_use(request, "serve_stack"):
            deploy(
                stack.settings,
                AppArgs(settings=settings_overrides(stack.settings)),
                force=True,
                timeout_s=420,
            )


def _shadow_versions(stack: ServeStack) -> dict[int, int]:
    """``{version: rows}`` of the pair in ``shadow_forecasts``."""
    with Database(stack.settings, maxconn=1) as db, db.cursor() as cur:
        cur.execute(
            "SELECT model_version, count(*) AS n FROM shadow_forecasts WHERE pair = %s GROUP BY model_version",
            (stack.pair,),
        )
        return {int(r["model_version"]): int(r["n"]) for r in cur.fetchall()}


@pytest.mark.timeout(900)
def test_a_better_shadow_is_served_in_shadow_scored_and_promoted_live(fast_stack: ServeStack) -> None:
    stack, pair = fast_stack, fast_stack.pair
    v1, v2 = 1, stack.versions[pair]
    clock = market_clock(stack.settings)
    monitor = stack.direct.replace(shadow_min_resolved=MIN_RESOLVED, monitor_retrain=False)
    _, token = stack.make_user(quota=1_000_000)
    served: dict[str, int] = {}  # candle time -> the version that answered
    reasons: list[str] = []
    started = time.monotonic()
    with stack.client(token) as api, Database(stack.settings, maxconn=2) as db:
        wait_until(lambda: api.get(f"/v1/forecast/{pair}").status_code == 200, 240, f"{pair} served")
        while not (moves := [m for m in list_moves(db, pair) if m.action == "live"]):
            assert time.monotonic() - started < 420, (
                f"no live promotion; the shadow's last words: {reasons[-3:]}"
            )
            hour = clock.hour()
            if (answer := api.get(f"/v1/forecast/{pair}")).status_code == 200:
                served[answer.json()["candle_time"]] = int(answer.json()["model_version"])
            run_monitoring(monitor, pairs=[pair])  # the monitoring DAG's task at market `hour`
            report = latest_report(db, pair)
            assert report is not None and [s.version for s in report.shadows] == [v2], report
            reasons.append(report.shadows[0].live_reason)
            waiting.wait_until(lambda h=hour: clock.hour() > h, what="the next market hour", timeout_s=30)
        live, asked_s = moves[0], time.monotonic() - started
        poll_s = stack.settings.serving.registry_poll_s
        wait_until(lambda: api.get(f"/v1/forecast/{pair}").json()["model_version"] == v2, poll_s + 20, "v2")
        switched_s = time.time() - live.wall_time.timestamp()  # from the recorded move to v2's first answer
        history = api.get(f"/v1/models/{pair}/history").json()["moves"]
        recorded = list_forecasts(db, pair=pair)
    hours = len(served)
    assert set(served.values()) == {v1}, served  # the shadow never answered a caller
    assert any(r.startswith("live: too few resolved targets") for r in reasons), reasons  # it waited
    assert (live.version, live.previous_version, live.actor) == (v2, v1, "monitoring"), live
    assert live.reason.startswith("live: ranges significantly better"), live.reason
    assert [(m["version"], m["action"]) for m in history[:2]] == [(v2, "live"), (v1, "manual")], history
    assert history[0]["reason"] == live.reason
    aliases = registry.configure(stack.direct).get_registered_model(registry.model_name(
        pair, stack.direct.registry.registry_prefix)).aliases  # fmt: skip
    assert aliases[CHAMPION] == str(v2) and shadow_alias(v2) not in aliases
    assert set(_shadow_versions(stack)) == {v2}  # recorded for the served targets, beside the track record
    assert {r.model_version for r in recorded} >= {str(v1)} and str(v2) not in {
        r.model_version for r in recorded if r.made_at < live.market_time
    }
    assert switched_s <= poll_s + 20
    print(
        f"[live] {hours} market hours asked for in {asked_s:.0f} s; promoted: {live.reason}; "
        f"served as v{v2} {switched_s:.1f} s after the move (poll {poll_s:g} s)"
    )
