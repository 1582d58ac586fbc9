"""Many pairs on one multiplexed Forecaster: 30 synthetic pairs on the real Ray head, MLflow, S3, PostgreSQL.

Checks that every pair answers with its own champion, that a promotion of one pair is picked up under
traffic over random pairs without a failed request, that a pair evicted from a replica's LRU reloads on
demand, and that the Forecaster's replica count rises under load.

The module deploys its own app (``serve_models_per_replica`` 8, so 30 pairs overflow the LRU); Serve's
HTTP port is fixed when Serve starts, so the fixture shuts Serve down first and again at the end.
"""

from __future__ import annotations

import contextlib
import random
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from serve_helpers import copy_version, free_port, promote, wait_until

from mur.settings import Settings

pytestmark = [pytest.mark.services, pytest.mark.serve]

N_PAIRS = 30
LRU = 8


@dataclass
class Many:
    url: str
    settings: Settings
    direct: Settings
    pairs: list[str]
    versions: dict[str, int]
    token: str
    admin: str


@pytest.fixture(scope="module")
def many(services: Settings, pg_database_factory: Callable[..., Settings]) -> Iterator[Many]:
    """One tiny model trained on syn001_usdt, registered for 30 synthetic pairs (1 to 3 versions each)."""
    from mur import registry
    from mur.data import synthetic_pairs
    from mur.db import Database, create_token, create_user, set_quota
    from mur.serving.champion_store import ChampionStore
    from mur.training.driver import train_and_register
    from mur.training.loop import LocalFit
    from serve_app.args import AppArgs, settings_overrides
    from serve_app.deploy import deploy, serve_details, undeploy

    db_settings = pg_database_factory()
    prefix = f"mur-m{uuid.uuid4().hex[:6]}-"
    pairs = synthetic_pairs(N_PAIRS)
    direct = services.replace(
        registry_prefix=prefix,
        pg_database=db_settings.db.pg_database,
        train_days=30,
        synthetic_pairs=N_PAIRS,
        market_data="bundled",
    )
    first = train_and_register(direct, pairs[0], fit=LocalFit(), epochs=1, hidden_size=4)
    assert first.version is not None
    versions = {pairs[0]: first.version}
    promote(direct, pairs[0], first.version)
    for i, pair in enumerate(pairs[1:], start=1):
        for _ in range(1 + i % 3):  # 1, 2 or 3 versions: each pair's champion number is its own
            versions[pair] = copy_version(direct, pairs[0], first.version, to_pair=pair)
        promote(direct, pair, versions[pair])
    app_settings = direct.replace(
        **{
            "serve_port": free_port(),
            "registry_poll_s": 2.0,
            "serve_min_replicas": 1,
            "serve_max_replicas": 2,
            "serve_target_ongoing_requests": 2,
            "serve_upscale_delay_s": 1.0,
            "serve_downscale_delay_s": 5.0,
            "serve_models_per_replica": LRU,
            "serve_batch_wait_s": 0.002,
            # every GET reaches the Forecaster: these tests watch its LRU and its autoscaling (the API's
            # answer cache is tested in test_answer_cache.py and on the default app in test_api.py)
            "serve_answer_ttl_s": 0.0,
            # 30 pairs through an LRU of 8: cold loads all the time, queued one at a time per replica (Serve's
            # multiplexing); on two busy cores (CI) one waited past the default 10 s and got its 503 "try
            # again" (tested in test_api.py); here a request waits for its model
            "serve_cold_load_timeout_s": 50.0,
        }
    )
    db = Database(db_settings, maxconn=2)
    tokens = []
    for admin in (False, True):
        user = create_user(
            db,
            username=f"u{uuid.uuid4().hex[:10]}",
            password=f"Pw-{uuid.uuid4().hex}",
            roles=("admin",) if admin else ("member",),
        )
        set_quota(db, user_id=user.id, monthly_limit=1_000_000)
        tokens.append(create_token(db, user_id=user.id)[0])
    try:
        with contextlib.suppress(Exception):
            undeploy(app_settings, timeout_s=180)  # another module's app (and its HTTP port) must go first
        deploy(app_settings, AppArgs(settings=settings_overrides(app_settings)), force=True, timeout_s=420)
        port = int(
            serve_details(app_settings).get("http_options", {}).get("port") or app_settings.serving.serve_port
        )
        yield Many(f"http://127.0.0.1:{port}", app_settings, direct, pairs, versions, tokens[0], tokens[1])
    finally:
        with contextlib.suppress(Exception):
            undeploy(app_settings)
        db.close()
        shutil.rmtree(ChampionStore.for_settings(app_settings).directory, ignore_errors=True)
        client = registry.configure(services)
        for model in client.search_registered_models(f"name LIKE '{prefix}%'"):
            with contextlib.suppress(Exception):
                client.delete_registered_model(model.name)


def _client(many: Many, token: str) -> httpx.Client:
    return httpx.Client(base_url=many.url, headers={"Authorization": f"Bearer {token}"}, timeout=60)


REPLICA_INFO = """
import json, logging, sys
import ray
from ray import serve
ray.init(address=sys.argv[1], logging_level=logging.ERROR, log_to_driver=False)
handle = serve.get_deployment_handle("forecaster", sys.argv[2])
print(json.dumps([handle.replica_info.remote().result(timeout_s=30) for _ in range(4)]))
"""


def _replica_infos(many: Many) -> list[dict[str, Any]]:
    """What the Forecaster replicas hold, asked through a handle from a short driver process (a head bound
    to the loopback interface is only joined with Ray's loopback switch, set before Ray is imported)."""
    import json
    import os
    import subprocess
    import sys

    address = f"127.0.0.1:{many.settings.ray.ray_gcs_port}"
    last = ""
    for switch in ({"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}, {}):
        env = {**os.environ, **switch}
        try:
            proc = subprocess.run(
                [sys.executable, "-c", REPLICA_INFO, address, many.settings.serving.serve_app_name],
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
            )
        except subprocess.TimeoutExpired:
            continue
        if proc.returncode == 0:
            return json.loads(proc.stdout.strip().splitlines()[-1])
        last = proc.stderr[-2000:]
    pytest.fail(f"cannot ask the forecaster replicas: {last}")


def _running_forecasters(many: Many) -> int:
    from serve_app.deploy import app_details, replica_counts

    return replica_counts(app_details(many.settings) or {}).get("forecaster", 0)


def test_every_pair_answers_with_its_own_champion(many: Many) -> None:
    from mur.serving.market_cache import MarketCache

    cache = MarketCache(many.settings, many.pairs)  # what the replicas' cache holds: each pair's own candles
    with _client(many, many.token) as client:
        wait_until(
            lambda: set(client.get("/v1/pairs").json()["pairs"]) == set(many.pairs),
            120,
            "all 30 pairs listed",
        )
        details = client.get("/v1/pairs").json()["details"]
        assert all(d["synthetic"] is True for d in details) and len(details) == N_PAIRS
        for pair in many.pairs:
            r = client.get(f"/v1/forecast/{pair}")
            assert r.status_code == 200, (pair, r.text)
            body = r.json()
            assert body["pair"] == pair and body["model_version"] == many.versions[pair], body
            assert body["last_close"] == pytest.approx(cache.fetch(pair).last_close, rel=1e-9), pair
        models = {m["pair"]: m for m in client.get("/v1/models").json()["models"]}
    assert {p: m["version"] for p, m in models.items()} == many.versions
    assert all(m["model_name"] == f"{many.settings.registry.registry_prefix}{p}" for p, m in models.items())
    assert all(m.get("synthetic") is True for m in models.values())


def test_an_evicted_pair_reloads_on_demand(many: Many) -> None:
    first = f"{many.pairs[0]}@{many.versions[many.pairs[0]]}"
    with _client(many, many.token) as client:
        assert client.get(f"/v1/forecast/{many.pairs[0]}").status_code == 200
        for pair in many.pairs[1:]:  # 29 other models through an LRU of 8
            assert client.get(f"/v1/forecast/{pair}").status_code == 200
        infos = _replica_infos(many)
        assert all(len(info["models"]) <= LRU for info in infos), infos
        assert all(first not in info["models"] for info in infos), infos
        r = client.get(f"/v1/forecast/{many.pairs[0]}")
        assert r.status_code == 200 and r.json()["model_version"] == many.versions[many.pairs[0]], r.text


class RandomPairs:
    """Threads sending GET forecasts for random pairs; records (time, pair, status, version)."""

    def __init__(self, many: Many, workers: int = 4) -> None:
        self.many = many
        self.workers = workers
        self.results: list[tuple[float, str, int, int | None]] = []
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def _run(self, seed: int) -> None:
        rng = random.Random(seed)
        with _client(self.many, self.many.token) as client:
            while not self._stop.is_set():
                pair = rng.choice(self.many.pairs)
                try:
                    r = client.get(f"/v1/forecast/{pair}")
                    version = r.json().get("model_version") if r.status_code == 200 else None
                    self.results.append((time.monotonic(), pair, r.status_code, version))
                except httpx.HTTPError as exc:
                    self.results.append((time.monotonic(), pair, -1, None))
                    print(exc)

    def __enter__(self) -> RandomPairs:
        self._threads = [
            threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(self.workers)
        ]
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)


def test_promotion_of_one_pair_under_traffic_without_failures(many: Many) -> None:
    pair = many.pairs[4]
    old = many.versions[pair]
    with RandomPairs(many) as load:
        wait_until(lambda: len(load.results) >= 40, 60, "traffic before the promotion")
        new = copy_version(many.direct, many.pairs[0], many.versions[many.pairs[0]], to_pair=pair)
        promote(many.direct, pair, new)
        with _client(many, many.admin) as admin:
            admin.post("/v1/admin/reload", params={"wait_s": 60}, timeout=120)

        with _client(many, many.token) as client:
            wait_until(lambda: client.get(f"/v1/forecast/{pair}").json()["model_version"] == new, 60, "new")
        at = time.monotonic()
        wait_until(lambda: sum(1 for r in load.results if r[0] > at) >= 40, 60, "traffic after")
    many.versions[pair] = new
    failures = [r for r in load.results if r[2] != 200]
    assert not failures, failures[:5]
    assert all(r[3] == many.versions[r[1]] for r in load.results if r[1] != pair)  # the others untouched
    assert {r[3] for r in load.results if r[1] == pair} <= {old, new}
    assert all(r[3] == new for r in load.results if r[1] == pair and r[0] > at + 1)


def test_replicas_rise_under_load(many: Many) -> None:
    from serve_app.deploy import app_details

    config = app_details(many.settings)["deployments"]["forecaster"]["deployment_config"][
        "autoscaling_config"
    ]
    assert config["max_replicas"] == 2
    wait_until(lambda: _running_forecasters(many) >= 1, 60, "a running forecaster")
    with RandomPairs(many, workers=16) as load:
        wait_until(
            lambda: _running_forecasters(many) >= 2, 120, "a second forecaster replica", interval_s=1.0
        )
    failures = [r for r in load.results if r[2] != 200]
    assert not failures, failures[:5]
