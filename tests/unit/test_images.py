"""The product's images and what docker-compose.yml runs in them (pure parsing, no Docker): the pinned CPU
torch, no local state or local platform baked in, the GPU worker's own image, named volumes, the files the
commands name, and the Serve keeper's decisions."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "infra" / "docker" / "Dockerfile"
SERVICES: dict[str, dict[str, Any]] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
DEFAULT = re.compile(r"\$\{\w+:-([^}]*)\}")


def test_dockerfile_installs_the_pinned_cpu_torch_and_no_local_state() -> None:
    text = DOCKERFILE.read_text()
    pin = re.search(r"^torch==(\S+)", (ROOT / "constraints.txt").read_text(), re.M)
    assert pin, "constraints.txt pins torch"
    assert f"ARG TORCH_VERSION={pin.group(1)}" in text
    assert "ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu" in text
    assert '--index-url "${TORCH_INDEX_URL}"' in text
    ignored = (DOCKERFILE.parent / "Dockerfile.dockerignore").read_text().split()
    assert {".env", ".venv"} <= set(ignored), "never bake .env or the venv into the image"
    assert "devstack" in ignored, "the images run the product, not the local platform (devstack/)"


def test_project_images_build_from_infra_docker_and_the_gpu_worker_has_its_own() -> None:
    for name, svc in SERVICES.items():
        if "build" in svc:
            assert (ROOT / svc["build"]["context"] / svc["build"]["dockerfile"]).is_file(), name
            assert DEFAULT.sub(r"\1", svc["image"]).split(":")[0] in ("make-us-rich", "make-us-rich-gpu"), (
                name
            )
        else:  # a third-party image: a pinned version
            image = DEFAULT.sub(r"\1", svc["image"])
            assert re.fullmatch(r"[\w./-]+:[\w.-]*\d[\w.-]*", image) and "latest" not in image, name
    assert SERVICES["mlflow"]["build"]["args"]["TORCH_INDEX_URL"] == "https://download.pytorch.org/whl/cpu"
    worker = SERVICES["ray-worker"]
    devices = worker["deploy"]["resources"]["reservations"]["devices"]
    assert any("gpu" in d.get("capabilities", []) and d.get("driver") == "nvidia" for d in devices)
    assert "container_name" not in worker and "hostname" not in worker, "a fixed name prevents --scale"
    assert "cu" in DEFAULT.sub(r"\1", worker["build"]["args"]["TORCH_INDEX_URL"]).rsplit("/", 1)[-1]
    assert worker["image"] != SERVICES["ray-head"]["image"], "the GPU worker has its own (CUDA) image"
    assert worker.get("profiles") == ["gpu"], "CPU-only hosts start without it (COMPOSE_PROFILES=gpu)"
    assert not worker.get("ports"), "ray-worker publishes nothing (it is scaled)"


def test_named_volumes_are_declared_and_used() -> None:
    declared = set(yaml.safe_load((ROOT / "docker-compose.yml").read_text()).get("volumes") or {})
    used = set()
    for name, svc in SERVICES.items():
        for entry in svc.get("volumes") or []:
            source = str(entry).split(":")[0]
            if source.startswith((".", "/", "~", "$")):
                assert not source.startswith(".") or (ROOT / source).exists(), f"{name}: {source} missing"
                continue
            assert source in declared, f"{name} uses undeclared volume {source}"
            used.add(source)
    assert declared == used, f"declared but unused volumes: {sorted(declared - used)}"
    assert {"pg-data", "minio-data"} <= {
        str(v).split(":")[0] for n in ("postgres", "minio") for v in SERVICES[n]["volumes"]
    }


def test_commands_name_existing_files_and_no_local_platform() -> None:
    for name, svc in SERVICES.items():
        for token in map(str, svc.get("command") or []):
            if re.fullmatch(r"(infra|serve_app|dash_app|ray_jobs|dags)/[\w./-]+", token):
                assert (ROOT / token).is_file(), f"{name} runs {token}, which does not exist"
            assert "devstack" not in token, f"{name} runs the local platform"


def test_serve_keeper_redeploys_only_what_serve_cannot_fix() -> None:
    from serve_app import keeper

    assert keeper.action_for(None) == "deploy"  # never deployed, or the head restarted
    assert keeper.action_for({"status": "DEPLOY_FAILED"}) == "rebuild"  # same config would be a no-op
    assert keeper.action_for({"status": "UNHEALTHY"}) == "report"  # Serve replaces replicas itself
    for status in ("RUNNING", "DEPLOYING", "NOT_STARTED", "DELETING"):
        assert keeper.action_for({"status": status}) == "nothing"
