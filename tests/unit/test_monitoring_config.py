"""The operators' monitoring in docker-compose.yml (docs/metrics.md): Prometheus scrapes the API by service
name, Grafana is provisioned with Prometheus and the dashboard, and every dashboard query names a series the
API's /metrics exports (pure parsing, no Docker)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
SERVE_PORT = COMPOSE["x-mur-settings"]["MUR_SERVE_PORT"]  # the Settings default (test_compose.py)
PROMETHEUS_DIR = ROOT / "infra" / "prometheus"
GRAFANA_DIR = ROOT / "infra" / "grafana"
METRIC_NAME = re.compile(r"\bmur_[a-z0-9_]+\b")


def mounts(service: dict[str, Any]) -> dict[str, Path]:
    """Container path -> host path of each bind mount of a project file or folder."""
    found = {}
    for entry in service.get("volumes") or []:
        source, target = str(entry).split(":")[:2]
        if source.startswith("./"):
            found[target] = ROOT / source
    return found


def exported_samples() -> set[str]:
    """Every sample name the API's /metrics shows when every series has data, parsed from its text."""
    from prometheus_client.parser import text_string_to_metric_families

    from serve_app.metrics import DbSeries, families, ray_series, render, sample_names

    # one replica's series as Ray's metrics agent exports them (ray_ prefix, Ray's and Serve's labels)
    tags = 'WorkerId="w1",application="mur",replica="r1",route="/v1/forecast/{pair}"'
    text = f"""# TYPE ray_mur_http_requests_total counter
ray_mur_http_requests_total{{{tags},method="GET",status="429"}} 1
# TYPE ray_mur_http_request_duration_seconds histogram
ray_mur_http_request_duration_seconds_bucket{{{tags},method="GET",le="+Inf"}} 1
ray_mur_http_request_duration_seconds_count{{{tags},method="GET"}} 1
ray_mur_http_request_duration_seconds_sum{{{tags},method="GET"}} 0.01
# TYPE ray_mur_quota_rejections_total counter
ray_mur_quota_rejections_total{{{tags}}} 1
# TYPE ray_mur_forecast_answers_total counter
ray_mur_forecast_answers_total{{application="mur",replica="r1",source="cache"}} 2
"""
    traffic, replicas = ray_series([text], "mur")
    paper = {"total_return": 0.1, "drawdown_now": 0.0, "exposure_now": 1.0}
    db = DbSeries(
        counts={"eth_usdt": (3, 2)},
        skill={"eth_usdt": 0.1},
        coverage={"eth_usdt": 0.9},
        paper={"eth_usdt": {"model": paper}},
    )
    scraped = render(families(traffic, replicas=replicas, ray_ok=True, versions={"eth_usdt": 3.0}, db=db))
    names = {s.name for f in text_string_to_metric_families(scraped.decode()) for s in f.samples}
    assert names == sample_names(), "serve_app.metrics.FAMILIES names exactly what /metrics exports"
    return names


def test_prometheus_scrapes_the_api_metrics() -> None:
    prometheus = SERVICES["prometheus"]
    config_path = next(t.split("=", 1)[1] for t in prometheus["command"] if t.startswith("--config.file="))
    mounted = mounts(prometheus)
    assert config_path in mounted and mounted[config_path] == PROMETHEUS_DIR / "prometheus.yml"
    config = yaml.safe_load(mounted[config_path].read_text())
    api_jobs = [
        job
        for job in config["scrape_configs"]
        for group in job.get("static_configs") or []
        for target in group["targets"]
        if target == f"ray-head:{SERVE_PORT}"
    ]
    assert api_jobs, "Prometheus scrapes the Serve ingress (ray-head, serve_port) by service name"
    assert f"{SERVE_PORT}:{SERVE_PORT}" in " ".join(SERVICES["ray-head"]["ports"]), "ray-head's Serve port"
    assert all(job.get("metrics_path", "/metrics") == "/metrics" for job in api_jobs)
    assert all(job.get("scheme", "http") == "http" for job in api_jobs)
    targets = [t for job in config["scrape_configs"] for g in job["static_configs"] for t in g["targets"]]
    assert sum(t.endswith(f":{SERVE_PORT}") for t in targets) == 1, "one API target: /metrics is a total"


def test_grafana_is_provisioned_with_prometheus_and_the_dashboard() -> None:
    grafana = SERVICES["grafana"]
    env = grafana["environment"]
    assert (
        env["GF_SECURITY_ADMIN_PASSWORD"] == "${GRAFANA_ADMIN_PASSWORD:?set GRAFANA_ADMIN_PASSWORD in .env}"
    )
    assert env.get("GF_AUTH_ANONYMOUS_ENABLED") == "false" and env.get("GF_USERS_ALLOW_SIGN_UP") == "false"
    assert grafana["depends_on"]["prometheus"]["condition"] == "service_healthy"
    mounted = mounts(grafana)
    assert mounted["/etc/grafana/provisioning"] == GRAFANA_DIR / "provisioning"
    (datasources,) = (GRAFANA_DIR / "provisioning" / "datasources").glob("*.yml")
    (source,) = yaml.safe_load(datasources.read_text())["datasources"]
    assert source["type"] == "prometheus" and source["url"] == "http://prometheus:9090"
    assert source["url"].split("//")[1].split(":")[0] in SERVICES
    (providers,) = (GRAFANA_DIR / "provisioning" / "dashboards").glob("*.yml")
    (provider,) = yaml.safe_load(providers.read_text())["providers"]
    folder = provider["options"]["path"]
    assert mounted[folder] == GRAFANA_DIR / "dashboards", "the provider reads the mounted dashboards"
    dashboards = sorted((GRAFANA_DIR / "dashboards").glob("*.json"))
    assert [d.name for d in dashboards] == ["mur.json"]
    home = env.get("GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH")
    assert home is None or home == f"{folder}/mur.json"
    for panel in json.loads(dashboards[0].read_text())["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == source["uid"], panel["title"]


def test_every_dashboard_query_uses_metrics_the_api_exports() -> None:
    exported = exported_samples()
    dashboard = json.loads((GRAFANA_DIR / "dashboards" / "mur.json").read_text())
    used: set[str] = set()
    for panel in dashboard["panels"]:
        for target in panel.get("targets") or []:
            names = set(METRIC_NAME.findall(target["expr"]))
            assert names, f"panel {panel['title']!r}: {target['expr']} queries no mur_ metric"
            unknown = names - exported
            assert not unknown, (
                f"panel {panel['title']!r} queries {sorted(unknown)}: /metrics has no such series"
            )
            used |= names
    wanted = {
        "mur_http_requests_total",
        "mur_http_request_duration_seconds_bucket",
        "mur_quota_rejections_total",
        "mur_served_model_version",
        "mur_forecasts_recorded_total",
        "mur_forecasts_resolved_total",
        "mur_rolling_skill",
        "mur_rolling_coverage",
    }
    assert wanted <= used, f"the dashboard shows no {sorted(wanted - used)}"
