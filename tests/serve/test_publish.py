"""The ingress publishes every served pair's forecast each market hour (no caller, no quota), so the track
record fills unattended; publishing twice in one market hour stores nothing new."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator

import pytest
from api_fakes import PAIR, Api, running_api

from mur.db import list_forecasts
from mur.settings import Settings
from mur.waiting import wait_until


@pytest.fixture
def api(pg_database_factory: Callable[..., Settings]) -> Iterator[Api]:
    with running_api(pg_database_factory()) as api:  # a database of its own: no forecast recorded yet
        yield api


def test_publish_records_each_pair_once_per_market_hour_and_charges_nobody(api: Api) -> None:
    user_id, _ = api.user(quota=5)
    before = {f.id for f in list_forecasts(api.db, pair=PAIR, limit=1000)}
    assert not before
    assert asyncio.run(api.service.publish_once()) == 1
    new = wait_until(  # the insert runs on the service's database threads
        lambda: [f for f in list_forecasts(api.db, pair=PAIR, limit=1000) if f.id not in before],
        what="the published forecasts",
        timeout_s=10,
        interval_s=0.05,
    )
    assert all(f.horizon_hours >= 1 for f in new)
    made = new[0].made_at
    assert abs((made - api.service.clock.now()).total_seconds()) < 60  # made_at is market time
    assert asyncio.run(api.service.publish_once()) == 0  # same version, same target hour: nothing new
    assert api.usage(user_id) == 0
