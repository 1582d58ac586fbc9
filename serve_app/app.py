"""The typed application builder referenced by ``serve_app/config.yaml`` (``import_path: serve_app.app:build_app``).

Graph: ``api`` (FastAPI ingress) → ``forecaster`` (one multiplexed, autoscaled Forecaster for every pair,
model id ``pair@version``) and, for each hot pair of ``serve_dedicated_pairs``, a Forecaster deployment of
its own named by the pair → ``registry`` (RegistryWatcher). The pairs are the registry's models (named
``{registry_prefix}{pair}``) that have a champion alias, optionally restricted by ``AppArgs.pairs``; a pair
that gets its first champion later is served without a redeploy.

With MLflow down, the builder uses the last known champions (:class:`~mur.serving.champion_store.ChampionStore`,
written by the watcher), so a redeploy during an outage keeps serving what was served.
"""

import logging
from typing import Any, cast

from ray.serve import Application, Deployment

from mur.errors import RegistryUnavailableError, ServiceError
from mur.pairs import normalize_pair
from mur.serving.champion_store import ChampionStore
from mur.serving.champions import champions, registry_client
from mur.settings import Settings
from serve_app.args import AppArgs

log = logging.getLogger("ray.serve")


def autoscaling_config(settings: Settings) -> dict[str, Any]:
    """The Forecaster's (and each dedicated pair's) autoscaling: min/max replicas and target ongoing requests from settings."""
    return {
        "min_replicas": settings.serving.serve_min_replicas,
        "initial_replicas": settings.serving.serve_min_replicas,
        "max_replicas": max(settings.serving.serve_max_replicas, settings.serving.serve_min_replicas, 1),
        "target_ongoing_requests": settings.serving.serve_target_ongoing_requests,
        "upscale_delay_s": settings.serving.serve_upscale_delay_s,
        "downscale_delay_s": settings.serving.serve_downscale_delay_s,
        "metrics_interval_s": 1.0,
        "look_back_period_s": 5.0,
    }


def served_pairs(settings: Settings, args: AppArgs) -> list[str]:
    """Pairs with a champion in the registry (restricted to ``args.pairs`` when given); the last known ones
    when the registry does not answer (ServiceError only when none are known)."""
    store = ChampionStore.for_settings(settings)
    client = registry_client(settings)
    try:
        found = champions(
            client,
            prefix=settings.registry.registry_prefix,
            experiment=settings.registry.mlflow_experiment,
            pairs=args.pairs,
        )
    except RegistryUnavailableError as exc:
        known = store.champions(args.pairs)
        if not known:
            raise ServiceError(
                f"cannot build the Serve app: {exc} ({settings.registry.mlflow_tracking_uri}), "
                "and no champions are known from an earlier deployment"
            ) from exc
        log.warning("%s: building the app from the last known champions %s", exc, sorted(known))
        return sorted(known)
    store.save_champions(found)
    return sorted(found)


def build_app(args: AppArgs) -> Application:
    """Bind the ingress, the registry watcher, the multiplexed Forecaster and the dedicated hot pairs."""
    # (no `from __future__ import annotations` here: Serve reads the AppArgs annotation at runtime)
    from serve_app.forecaster import Forecaster
    from serve_app.ingress import SHARED, ApiIngress
    from serve_app.watcher import RegistryWatcher

    settings = args.app_settings()
    pairs = served_pairs(settings, args)
    raw = args.model_dump(mode="json")
    registry = cast(Deployment, RegistryWatcher).bind(raw, pairs)
    scaling = autoscaling_config(settings)
    ongoing = max(2 * settings.serving.serve_batch_max_size, 64)
    forecaster = cast(Deployment, Forecaster).options(
        autoscaling_config=scaling, max_ongoing_requests=ongoing
    )
    forecasters = {SHARED: forecaster.bind(registry, raw, None)}
    for pair in sorted({normalize_pair(p) for p in settings.serving.serve_dedicated_pairs}):
        if args.pairs is None or pair in args.pairs:
            forecasters[pair] = forecaster.options(name=pair).bind(registry, raw, [pair])
    return cast(Deployment, ApiIngress).bind(forecasters, registry, raw)
