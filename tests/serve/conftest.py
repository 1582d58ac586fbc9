"""Fixtures for the Serve tests: one deployed app on the shared Ray head for the whole session.

``serve_stack`` trains a tiny champion under a private registry prefix (so other sessions' models are never
served or touched), migrates a throwaway database, deploys the app on a free HTTP port, and at the end
shuts Serve down and deletes the registered models. The modules that use it are named to run before
``test_multiplex.py``, which shuts Serve down to deploy an app of its own (Serve's HTTP port is fixed when Serve
starts): a module named after it would find no app. ``test_live_promotion_serve.py``, which redeploys it on a
fast clock, runs last of them. The app reaches MLflow through a
:class:`~serve_helpers.TcpProxy`, so a test can make the registry unreachable for the app without
stopping the MLflow server that other sessions use.
"""

from __future__ import annotations

import contextlib
import shutil
import uuid
from collections.abc import Callable, Iterator

import pytest
from serve_helpers import PAIR, ServeStack, TcpProxy, free_port, promote

from mur.serving.champion_store import ChampionStore
from mur.settings import Settings


@pytest.fixture(scope="session")
def serve_stack(
    services: Settings,
    pg_database_factory: Callable[..., Settings],
) -> Iterator[ServeStack]:
    """Train a tiny champion, deploy the app with private settings, yield; then shut Serve down."""
    from mur import registry
    from mur.db import Database, create_token, create_user, set_quota
    from mur.training.driver import train_and_register
    from mur.training.loop import LocalFit
    from serve_app.args import AppArgs, settings_overrides
    from serve_app.deploy import deploy, serve_details, undeploy

    db_settings = pg_database_factory()
    prefix = f"mur-t{uuid.uuid4().hex[:6]}-"
    direct = services.replace(registry_prefix=prefix, pg_database=db_settings.db.pg_database, train_days=30)
    result = train_and_register(direct, PAIR, fit=LocalFit(), epochs=1, hidden_size=4)
    assert result.version is not None
    version = result.version
    if result.alias != registry.CHAMPION:
        promote(direct, PAIR, version)

    mlflow_host, mlflow_port = "127.0.0.1", services.registry.mlflow_port
    proxy = TcpProxy((mlflow_host, mlflow_port))
    proxy.start()
    app_settings = direct.replace(
        **{
            "mlflow_tracking_uri": proxy.url,
            "serve_port": free_port(),
            "registry_poll_s": 2.0,
            "serve_min_replicas": 1,
            "serve_max_replicas": 2,
            "serve_target_ongoing_requests": 2,
            "serve_upscale_delay_s": 1.0,
            "serve_downscale_delay_s": 5.0,
            "serve_batch_wait_s": 0.002,
            "online_calibration_cache_s": 1.0,  # a seeded scale is served within a second
            "market_data": "bundled",
        }
    )
    db = Database(db_settings, maxconn=4)

    def make_user(*, quota: int | None = None, admin: bool = False) -> tuple[int, str]:
        user = create_user(
            db,
            username=f"u{uuid.uuid4().hex[:10]}",
            password=f"Pw-{uuid.uuid4().hex}",
            roles=("admin",) if admin else ("member",),
        )
        if quota is not None:
            set_quota(db, user_id=user.id, monthly_limit=quota)
        token, _ = create_token(db, user_id=user.id)
        return user.id, token

    overrides = settings_overrides(app_settings)
    try:
        deploy(app_settings, AppArgs(settings=overrides), force=True, timeout_s=420)
        port = int(
            serve_details(app_settings).get("http_options", {}).get("port") or app_settings.serving.serve_port
        )
        yield ServeStack(
            url=f"http://127.0.0.1:{port}",
            settings=app_settings,
            direct=direct,
            pair=PAIR,
            proxy=proxy,
            make_user=make_user,
            versions={PAIR: version},
        )
    finally:
        with contextlib.suppress(Exception):
            undeploy(app_settings, timeout_s=180)  # serve shutdown: no app or proxy left for other modules
        proxy.stop()
        db.close()
        shutil.rmtree(ChampionStore.for_settings(app_settings).directory, ignore_errors=True)
        client = registry.configure(services)
        for model in client.search_registered_models(f"name LIKE '{prefix}%'"):
            with contextlib.suppress(Exception):
                client.delete_registered_model(model.name)
