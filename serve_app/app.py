"""The typed application builder referenced by ``serve_app/config.yaml`` (``import_path: serve_app.app:build_app``).

Graph: ``api`` (FastAPI ingress) → one ``Forecaster`` per pair, named by the pair, each with its own
autoscaling config → ``registry`` (RegistryWatcher). The pairs are the registry's models (named
``{registry_prefix}{pair}``) that have a champion alias, optionally restricted by ``AppArgs.pairs``.
"""

from typing import Any

from ray.serve import Application

from mur.errors import ServiceError
from mur.serving import RegistryUnavailableError, champions, normalize_pair, registry_client
from mur.settings import Settings
from serve_app.args import AppArgs


def autoscaling_config(settings: Settings) -> dict[str, Any]:
    """A Forecaster's autoscaling: min/max replicas and target ongoing requests from settings."""
    return {
        "min_replicas": settings.serve_min_replicas,
        "initial_replicas": settings.serve_min_replicas,
        "max_replicas": max(settings.serve_max_replicas, settings.serve_min_replicas, 1),
        "target_ongoing_requests": settings.serve_target_ongoing_requests,
        "upscale_delay_s": settings.serve_upscale_delay_s,
        "downscale_delay_s": settings.serve_downscale_delay_s,
        "metrics_interval_s": 1.0,
        "look_back_period_s": 5.0,
    }


def served_pairs(settings: Settings, args: AppArgs) -> list[str]:
    """Pairs with a champion in the registry (restricted to ``args.pairs`` when given)."""
    client = registry_client(settings)
    try:
        found = champions(client, prefix=settings.registry_prefix, pairs=args.pairs)
    except RegistryUnavailableError as exc:
        raise ServiceError(f"cannot build the Serve app: {exc} ({settings.mlflow_tracking_uri})") from exc
    return sorted(found)


def build_app(args: AppArgs) -> Application:
    """Bind the ingress, the registry watcher and one autoscaled Forecaster per champion pair."""
    # (no `from __future__ import annotations` here: Serve reads the AppArgs annotation at runtime)
    if isinstance(args, dict):
        args = AppArgs(**args)
    from serve_app.forecaster import Forecaster
    from serve_app.ingress import ApiIngress
    from serve_app.registry import RegistryWatcher

    if args.pairs is not None:
        args = args.model_copy(update={"pairs": [normalize_pair(p) for p in args.pairs]})
    settings = args.app_settings()
    pairs = served_pairs(settings, args)
    raw = args.model_dump(mode="json")
    registry = RegistryWatcher.bind(raw, pairs)
    forecasters = {
        pair: Forecaster.options(
            name=pair,
            autoscaling_config=autoscaling_config(settings),
            max_ongoing_requests=max(2 * settings.serve_batch_max_size, 16),
        ).bind(pair, registry, raw)
        for pair in pairs
    }
    return ApiIngress.bind(forecasters, registry, raw)
