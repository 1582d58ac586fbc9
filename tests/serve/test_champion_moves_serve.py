"""Shadow challengers and rollback on the deployed app (issue 37), on the real Ray head, MLflow, S3 and
PostgreSQL: a version marked ``shadow-v{N}`` is forecast beside the champion for the same target (a row in
``shadow_forecasts``), never returned and never charged; a rollback (:func:`mur.registry.aliases.rollback`)
is served again within one registry poll, with no admin call, and is in the alias history.

The pair is one uploaded for this test only (a random name, its own candles), its two versions copies of the
session's champion (:func:`serve_helpers.copy_version`) under the session's private registry prefix. The file
sorts before test_multiplex.py, whose module replaces the session's app with its own and removes it at the end.
"""

from __future__ import annotations

import contextlib
import io
import secrets
import time
from datetime import UTC
from typing import Any

import httpx
import pytest
from pair_csv import pair_csv_text
from serve_helpers import ServeStack, copy_version, promote, wait_until

from mur import registry, waiting
from mur.data.catalogue import add_csv_pair
from mur.db import Database, get_usage, list_forecasts
from mur.registry.aliases import move_champion, rollback
from mur.registry.names import shadow_alias
from mur.timeutil import iso

pytestmark = [pytest.mark.services, pytest.mark.serve]

HOURS = 300


def _shadow_rows(stack: ServeStack, pair: str) -> list[dict[str, Any]]:
    with Database(stack.settings, maxconn=1) as db, db.cursor() as cur:
        cur.execute(
            "SELECT model_version, target_time, horizon_hours FROM shadow_forecasts WHERE pair = %s",
            (pair,),
        )
        return list(cur.fetchall())


def _served_version(client: httpx.Client, pair: str) -> int | None:
    response = client.get(f"/v1/forecast/{pair}")
    return int(response.json()["model_version"]) if response.status_code == 200 else None


@pytest.mark.timeout(900)  # run alone: the services' start-up, the champion's training, the deploy
def test_a_shadow_is_recorded_not_served_and_a_rollback_is_served_within_one_poll(
    serve_stack: ServeStack,
) -> None:
    stack = serve_stack
    direct = stack.direct
    pair = f"t{secrets.token_hex(3)}_usdt"
    with Database(direct, maxconn=1) as db:
        add_csv_pair(
            direct.replace(pair_min_history_hours=200),
            db,
            pair,
            io.BytesIO(pair_csv_text(HOURS).encode()),
            name="shadow.csv",
            added_by="test",
        )
    client = registry.configure(direct)
    name = registry.model_name(pair, direct.registry.registry_prefix)
    try:
        v1 = copy_version(direct, stack.pair, stack.versions[stack.pair], to_pair=pair)
        v2 = copy_version(direct, stack.pair, stack.versions[stack.pair], to_pair=pair)
        assert (v1, v2) == (1, 2)
        # the shadow first: the app never sees the pair without it (a target's shadow is computed when the
        # champion's forecast of that target is first recorded)
        client.set_registered_model_alias(name, shadow_alias(v2), str(v2))
        promote(direct, pair, v1)

        # --- 1. the shadow is forecast for the same target, never returned, never charged -----------------
        user_id, token = stack.make_user(quota=10)
        answers: list[dict[str, Any]] = []
        with stack.client(token) as api:

            def answered() -> dict[str, Any] | None:
                response = api.get(f"/v1/forecast/{pair}")  # 404/503 until loaded: never charged
                if response.status_code != 200:
                    return None
                answers.append(response.json() | {"_remaining": response.headers["X-RateLimit-Remaining"]})
                return answers[-1]

            started = time.monotonic()
            got = wait_until(answered, 240, f"{pair} served by its champion v{v1}")
            served_after = time.monotonic() - started
        assert len(answers) == 1 and got["pair"] == pair and got["model_version"] == v1, got
        assert got["_remaining"] == "9"
        targets = {(band["target_time"], band["hours"]) for band in got["horizons"]}
        assert (got["target_time"], 1) in targets

        def shadow_targets() -> set[tuple[str, int]] | None:
            rows = _shadow_rows(stack, pair)
            found = {
                (iso(r["target_time"]), int(r["horizon_hours"])) for r in rows if r["model_version"] == v2
            }
            return found if targets <= found else None

        started = time.monotonic()
        waiting.wait_until(shadow_targets, what=f"{pair} v{v2}'s shadow forecasts", timeout_s=60)
        shadow_after = time.monotonic() - started
        rows = _shadow_rows(stack, pair)
        assert {r["model_version"] for r in rows} == {v2}, rows  # the champion is never its own shadow
        assert len(rows) == len(targets)  # one row per (version, target, horizon)

        def served_rows() -> list[Any] | None:
            with Database(stack.settings, maxconn=1) as db:
                found = list_forecasts(db, pair=pair)
            return found if len(found) >= len(targets) else None

        served = waiting.wait_until(served_rows, what=f"{pair}'s served forecast recorded", timeout_s=60)
        # the shadow never joins the track record
        assert {r.model_version for r in served} == {str(v1)}, served
        assert {
            (r.target_time.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"), r.horizon_hours) for r in served
        } == targets
        with Database(stack.settings, maxconn=1) as db:
            assert get_usage(db, user_id=user_id)[0] == 1  # the shadow's forecast cost the caller nothing

        # --- 2. promote v2, then roll back: served again within one registry poll ------------------------
        _, reader = stack.make_user(quota=1_000_000)
        with stack.client(reader) as api:
            move_champion(
                direct, client, pair=pair, version=v2, action="manual", actor="test", reason="try v2 live"
            )
            wait_until(lambda: _served_version(api, pair) == v2, 60, f"{pair} served by v{v2}")

            moved = rollback(direct, pair, actor="test", reason="v2 misbehaves")
            assert (moved.version, moved.previous_version, moved.action) == (v1, v2, "rollback")
            started = time.monotonic()
            poll_s = stack.settings.serving.registry_poll_s
            wait_until(lambda: _served_version(api, pair) == v1, poll_s + 20, f"{pair} back on v{v1}")
            rolled_back_after = time.monotonic() - started
            for _ in range(3):
                assert _served_version(api, pair) == v1
            history = api.get(f"/v1/models/{pair}/history")
        assert history.status_code == 200, history.text
        moves = [(m["version"], m["previous_version"], m["action"]) for m in history.json()["moves"]]
        assert moves == [(v1, v2, "rollback"), (v2, v1, "manual")], moves
        latest = history.json()["moves"][0]
        assert latest["actor"] == "test" and latest["reason"] == "v2 misbehaves", latest
        print(
            f"[shadows] first answer {served_after:.1f}s, shadow rows {shadow_after:.1f}s after it, "
            f"rollback served {rolled_back_after:.1f}s after the alias moved (poll {poll_s:g}s)"
        )
    finally:
        with contextlib.suppress(Exception):
            client.delete_registered_model(name)
