"""infra/k8s/ (the KubeRay example) against KubeRay's CRD schema and docker-compose.yml (pure parsing, no cluster).

The RayCluster and RayService are validated with jsonschema against the ``v1`` ``openAPIV3Schema`` that
KubeRay publishes (vendored in tests/data/kuberay/crd-schemas.yaml: version and commit in its header),
strictly as ``kubectl apply`` (``--validate=strict``) is: an unknown field fails, and so do a wrong type, a
missing required field, a value outside an enum and a duplicate key of a list-map (two env entries of one
name). CEL rules (``x-kubernetes-validations``) are not evaluated.

Against compose: the same images, the same ``ray start`` flags, the same environment on every Ray node
(values equal, secrets from Secrets, the few addresses that differ listed below with their reason), the S3
keys as files in MUR_SECRETS_DIR and never in the environment, Ray's token auth on, checkpoints on S3, the
same ports and no more, the Serve config that ``mur serve`` deploys, and the GCS's Redis (GCS fault tolerance:
compose's redis service and its address, the password from a Secret, reachable from the heads only).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from test_compose import command, environment, flags, resolve

from mur.orchestration.job_submission import SECRET_FIELDS
from mur.settings import FIELD_GROUP, Settings
from serve_app.args import AppArgs
from serve_app.deploy import app_config, load_config

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "infra" / "k8s"
COMPOSE = ROOT / "docker-compose.yml"
SCHEMAS = ROOT / "tests" / "data" / "kuberay" / "crd-schemas.yaml"
CONSTRAINTS = ROOT / "constraints.txt"

NOT_APPLIED = {"secrets.example.yaml", "networkpolicy.yaml"}  # created by hand / optional (README.md)
TOKEN_AUTH_MIN_RAY = (2, 52, 0)  # KubeRay's validation: authOptions.mode token needs Ray >= 2.52.0

# Environment compose sets on the Ray services whose value differs on Kubernetes, and why.
K8S_VALUES = {
    "MUR_RAY_ADDRESS": "KubeRay's head Service of each cluster (<name>-head-svc), not compose's ray-head",
    "MUR_SERVE_HOST": "the RayService's Serve Service (<name>-serve-svc): Serve has a Ray cluster of its own",
    "MUR_SECRETS_DIR": "Kubernetes mounts the service account token at /var/run/secrets (= /run/secrets in "
    "the image): a read-only secret volume on /run/secrets blocks it (kubernetes/kubernetes#65835)",
}
# `ray start` flags KubeRay sets itself.
KUBERAY_FLAGS = {"--head", "--block", "--address"}
# compose's GCS fault tolerance on ray-head: KubeRay sets both on the head from gcsFaultToleranceOptions (and
# refuses them in the head's env or rayStartParams); test_gcs_fault_tolerance_matches_compose
COMPOSE_GCS_FT = {"--redis-password", "RAY_REDIS_ADDRESS"}
REDIS = "mur-ray-redis"  # redis.yaml: the Service, StatefulSet, NetworkPolicy and Secret
# the pods that may reach Redis: the heads (the GCS) and KubeRay's Redis cleanup Job (a head-like pod)
REDIS_CLIENTS = {"head", "redis-cleanup"}
# rayStartParams that compose has no flag for, and why.
K8S_PARAMS = {"num-gpus": "compose gives ray-worker its GPU through deploy.resources; Ray counts it there"}
# Never in a Ray node's environment (every worker, job and replica inherits it; Ray logs a job's env).
S3_KEY_VARS = {
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "MUR_S3_ACCESS_KEY",
    "MUR_S3_SECRET_KEY",
}
# Ports Ray or HAProxy open without asking for the token: no container port or Service of ours names them.
UNAUTHENTICATED_PORTS = {8080, 9101, 8404, 10001, 52365}
PLACEHOLDER = re.compile(r"<([A-Z][A-Z0-9_]*)>")  # a compose secret after resolve(): ${VAR:?…} → <VAR>


# --- loading -----------------------------------------------------------------------------------------------
def manifest_files() -> list[Path]:
    return sorted(p for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")


@pytest.fixture(scope="module")
def objects() -> dict[tuple[str, str], dict[str, Any]]:
    """Every object of infra/k8s/*.yaml by (kind, name)."""
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for path in manifest_files():
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                key = (doc["kind"], doc["metadata"]["name"])
                assert key not in found, f"{path.name}: {key} defined twice"
                found[key] = doc | {"_file": path.name}
    return found


def of_kind(objects: dict[tuple[str, str], dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for (k, _), o in objects.items() if k == kind]


@pytest.fixture(scope="module")
def schemas() -> dict[str, Any]:
    return yaml.safe_load(SCHEMAS.read_text())


@pytest.fixture(scope="module")
def services() -> dict[str, Any]:
    text = "\n".join(line for line in COMPOSE.read_text().splitlines() if not line.lstrip().startswith("#"))
    return yaml.safe_load(text)["services"]


def cluster_specs(objects: dict[tuple[str, str], dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(the name KubeRay gives the head Service's prefix, RayClusterSpec) of the RayCluster and the RayService."""
    for obj in of_kind(objects, "RayCluster"):
        yield obj["metadata"]["name"], obj["spec"]
    for obj in of_kind(objects, "RayService"):
        yield obj["metadata"]["name"], obj["spec"]["rayClusterConfig"]


def groups(spec: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """("head" | the worker group's name, group spec)."""
    yield "head", spec["headGroupSpec"]
    for group in spec.get("workerGroupSpecs") or []:
        yield group["groupName"], group


def ray_pods(
    objects: dict[tuple[str, str], dict[str, Any]],
) -> list[tuple[str, str, dict[str, Any], dict[str, Any]]]:
    """(cluster, group, group spec, Ray container) of every Ray pod template (the Ray container is the first)."""
    return [
        (cluster, group, gspec, gspec["template"]["spec"]["containers"][0])
        for cluster, spec in cluster_specs(objects)
        for group, gspec in groups(spec)
    ]


def secret_data(objects: dict[tuple[str, str], dict[str, Any]], name: str) -> dict[str, str]:
    secret = objects.get(("Secret", name))
    assert secret is not None, f"Secret {name} is not in secrets.example.yaml"
    return {**(secret.get("data") or {}), **(secret.get("stringData") or {})}


def effective_env(
    objects: dict[tuple[str, str], dict[str, Any]], container: dict[str, Any]
) -> dict[str, tuple[str, str]]:
    """A container's environment: name → ("value" | "configmap" | "secret", the value or secret/key).
    ``env`` wins over ``envFrom``, as in Kubernetes."""
    env: dict[str, tuple[str, str]] = {}
    for source in container.get("envFrom") or []:
        if "configMapRef" in source:
            data = objects[("ConfigMap", source["configMapRef"]["name"])]["data"]
            env.update({k: ("configmap", str(v)) for k, v in data.items()})
        else:
            name = source["secretRef"]["name"]
            env.update({k: ("secret", f"{name}/{k}") for k in secret_data(objects, name)})
    for item in container.get("env") or []:
        if "value" in item:
            env[item["name"]] = ("value", str(item["value"]))
        elif "secretKeyRef" in item.get("valueFrom", {}):
            ref = item["valueFrom"]["secretKeyRef"]
            assert ref["key"] in secret_data(objects, ref["name"]), f"{item['name']}: no key {ref['key']}"
            env[item["name"]] = ("secret", f"{ref['name']}/{ref['key']}")
        else:
            raise AssertionError(f"{item['name']}: only literal values and secretKeyRef are expected")
    return env


def compose_ray_env(services: dict[str, Any]) -> dict[str, Any]:
    """x-ray-env as compose gives it to ray-head and ray-worker (resolved: secrets become <VAR>)."""
    head, worker = environment(services["ray-head"]), environment(services["ray-worker"])
    head = {k: v for k, v in head.items() if k not in COMPOSE_GCS_FT}
    assert head == worker, "compose's Ray nodes share x-ray-env"
    return {k: resolve(v) for k, v in head.items()}


# --- the CRD schema --------------------------------------------------------------------------------------
def strict(schema: Any) -> Any:
    """The schema with unknown fields rejected wherever Kubernetes rejects them (``--validate=strict``):
    an object with ``properties`` and neither ``additionalProperties`` nor preserve-unknown-fields."""
    if isinstance(schema, list):
        return [strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {
        k: ({n: strict(s) for n, s in v.items()} if k == "properties" else strict(v))
        if k in ("properties", "items", "additionalProperties", "anyOf", "allOf", "oneOf")
        else v
        for k, v in schema.items()
    }
    if "properties" in schema and "additionalProperties" not in schema:
        if not schema.get("x-kubernetes-preserve-unknown-fields"):
            out["additionalProperties"] = False
    return out


def list_map_duplicates(instance: Any, schema: dict[str, Any], path: str = "") -> Iterator[str]:
    """Entries of an ``x-kubernetes-list-type: map`` list that share their keys (the API server refuses them)."""
    if isinstance(instance, dict):
        props = schema.get("properties") or {}
        extra = schema.get("additionalProperties")
        for key, value in instance.items():
            sub = props.get(key, extra if isinstance(extra, dict) else None)
            if sub:
                yield from list_map_duplicates(value, sub, f"{path}.{key}")
    elif isinstance(instance, list):
        keys = schema.get("x-kubernetes-list-map-keys")
        if keys and schema.get("x-kubernetes-list-type") == "map":
            seen = [tuple(item.get(k) for k in keys) for item in instance if isinstance(item, dict)]
            yield from (
                f"{path}: duplicate {dict(zip(keys, s, strict=True))}"
                for s in {s for s in seen if seen.count(s) > 1}
            )
        for i, item in enumerate(instance):
            yield from list_map_duplicates(item, schema.get("items") or {}, f"{path}[{i}]")


def schema_errors(obj: dict[str, Any], schemas: dict[str, Any]) -> list[str]:
    schema = schemas[obj["kind"]]
    instance = {k: v for k, v in obj.items() if k != "_file"}
    validator = jsonschema.Draft7Validator(strict(schema))
    errors = [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(instance)]
    return errors + list(list_map_duplicates(instance, schema))


def test_the_vendored_schema_names_its_source(schemas: dict[str, Any]) -> None:
    header = SCHEMAS.read_text().split("\n", 4)[:4]
    assert re.search(r"kuberay v\d+\.\d+\.\d+ \(commit [0-9a-f]{40}\)", " ".join(header)), header
    assert set(schemas) == {"RayCluster", "RayService"}
    # the RayService embeds the RayCluster's spec: one schema for both, as in KubeRay's Go types
    assert (
        schemas["RayService"]["properties"]["spec"]["properties"]["rayClusterConfig"]
        == (schemas["RayCluster"]["properties"]["spec"])
    )
    assert "authOptions" in schemas["RayCluster"]["properties"]["spec"]["properties"]


def test_manifests_are_valid_against_the_kuberay_crd(
    objects: dict[tuple[str, str], dict[str, Any]], schemas: dict[str, Any]
) -> None:
    kinds = {kind for kind, _ in objects}
    assert {"RayCluster", "RayService"} <= kinds
    for obj in of_kind(objects, "RayCluster") + of_kind(objects, "RayService"):
        assert obj["apiVersion"] == "ray.io/v1", obj["_file"]
        assert set(obj["metadata"]) <= {"name", "namespace", "labels", "annotations"}, obj["_file"]
        assert schema_errors(obj, schemas) == [], obj["_file"]


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        (("spec", "authOptions", "tokenSecret"), "x", "Additional properties"),  # an unknown field
        (
            ("spec", "headGroupSpec", "template", "spec", "containers", 0, "envVars"),
            [],
            "Additional properties",
        ),
        (("spec", "workerGroupSpecs", 0, "replicas"), "1", "is not of type 'integer'"),
        (("spec", "authOptions", "mode"), "tokens", "is not one of"),
        (("spec", "headGroupSpec", "rayStartParams", "num-cpus"), 4, "is not of type 'string'"),
        (
            ("spec", "workerGroupSpecs", 0, "template", "spec", "containers", 0, "env", 1),
            {"name": "RAY_AUTH_MODE", "value": "x"},
            "duplicate",
        ),
    ],
)
def test_the_schema_check_refuses_what_kubectl_refuses(
    objects: dict[tuple[str, str], dict[str, Any]],
    schemas: dict[str, Any],
    path: tuple[str | int, ...],
    value: Any,
    expected: str,
) -> None:
    (cluster,) = copy.deepcopy(of_kind(objects, "RayCluster"))
    node = cluster
    for step in path[:-1]:
        node = node[step]
    node[path[-1]] = value
    errors = schema_errors(cluster, schemas)
    assert any(expected in e for e in errors), errors
    missing = copy.deepcopy(cluster)
    del missing["spec"]["headGroupSpec"]["template"]
    assert any("'template' is a required property" in e for e in schema_errors(missing, schemas))


def test_kustomization_applies_the_manifests() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    resources = set(kustomization["resources"])
    assert resources == {p.name for p in manifest_files()} - NOT_APPLIED
    text = (K8S / "kustomization.yaml").read_text()
    assert "networkpolicy.yaml" in text, "the optional NetworkPolicy is named where it would be enabled"
    assert (K8S / "README.md").is_file()


# --- Ray: version, auth, images, flags ---------------------------------------------------------------------
def test_ray_version_is_the_pinned_one_and_supports_token_auth(
    objects: dict[tuple[str, str], dict[str, Any]],
) -> None:
    (pin,) = re.findall(r"^ray==([\d.]+)$", CONSTRAINTS.read_text(), flags=re.M)
    for cluster, spec in cluster_specs(objects):
        assert spec["rayVersion"] == pin, cluster
        assert tuple(int(p) for p in pin.split(".")) >= TOKEN_AUTH_MIN_RAY


def test_token_auth_is_on_with_the_token_from_a_secret(
    objects: dict[tuple[str, str], dict[str, Any]],
) -> None:
    for cluster, spec in cluster_specs(objects):
        auth = spec.get("authOptions") or {}
        assert auth.get("mode") == "token", cluster
        assert not auth.get("enableK8sTokenAuth"), f"{cluster}: one token for Ray and its clients (Airflow)"
        token_secret = auth.get("secretName")
        assert token_secret and "auth_token" in secret_data(objects, token_secret), cluster
        for _, group, _, container in ray_pods(objects):
            env = effective_env(objects, container)
            assert env["RAY_AUTH_MODE"][1] == "token", group
            assert env["RAY_AUTH_TOKEN"] == ("secret", f"{token_secret}/auth_token"), group


def test_images_are_the_compose_images(
    objects: dict[tuple[str, str], dict[str, Any]], services: dict[str, Any]
) -> None:
    cpu_image, gpu_image = resolve(services["ray-head"]["image"]), resolve(services["ray-worker"]["image"])
    assert resolve(services["serve"]["image"]) == cpu_image
    for cluster, group, gspec, container in ray_pods(objects):
        uses_gpu = "nvidia.com/gpu" in (container["resources"].get("limits") or {})
        assert container["image"] == (gpu_image if uses_gpu else cpu_image), f"{cluster}/{group}"
        for extra in gspec["template"]["spec"]["containers"][1:]:
            assert extra["image"] in (cpu_image, gpu_image), f"{cluster}/{group}: {extra['name']}"


def test_ray_start_flags_are_the_compose_flags(
    objects: dict[tuple[str, str], dict[str, Any]], services: dict[str, Any]
) -> None:
    for cluster, group, gspec, _ in ray_pods(objects):
        counterpart = "ray-head" if group == "head" else "ray-worker"
        wanted = {
            name.removeprefix("--"): value or "true"
            for name, value in flags(command(services[counterpart])).items()
            if name not in KUBERAY_FLAGS | COMPOSE_GCS_FT
        }
        params = {k: v for k, v in gspec["rayStartParams"].items() if k not in K8S_PARAMS}
        assert params == wanted, f"{cluster}/{group} against compose's {counterpart}"


def test_gpu_group_asks_for_the_gpus_it_announces(
    objects: dict[tuple[str, str], dict[str, Any]], services: dict[str, Any]
) -> None:
    (device,) = services["ray-worker"]["deploy"]["resources"]["reservations"]["devices"]
    gpu_groups = []
    for cluster, group, gspec, container in ray_pods(objects):
        limits, requests = (
            container["resources"].get("limits") or {},
            container["resources"].get("requests") or {},
        )
        if "nvidia.com/gpu" not in limits:
            assert "num-gpus" not in gspec["rayStartParams"] and "nvidia.com/gpu" not in requests, (
                f"{cluster}/{group}"
            )
            continue
        gpu_groups.append(group)
        assert group != "head", "the head stays on CPU (compose: a CPU head, GPU workers)"
        assert limits["nvidia.com/gpu"] == requests["nvidia.com/gpu"] == device["count"]
        assert gspec["rayStartParams"]["num-gpus"] == str(limits["nvidia.com/gpu"])
        tolerations = gspec["template"]["spec"].get("tolerations") or []
        assert any(t.get("key") == "nvidia.com/gpu" for t in tolerations), f"{cluster}/{group}"
        assert gspec["minReplicas"] == 0, "no GPU pod while no job asks for a GPU"
    assert gpu_groups == ["gpu"], "one GPU worker group, on the training cluster"
    groups_of = {c: [g for g, _ in groups(spec)] for c, spec in cluster_specs(objects)}
    assert "cpu" in groups_of[of_kind(objects, "RayCluster")[0]["metadata"]["name"]]


def test_replica_bounds_hold(objects: dict[tuple[str, str], dict[str, Any]]) -> None:
    for cluster, spec in cluster_specs(objects):
        assert spec.get("enableInTreeAutoscaling") is True, cluster
        for group in spec["workerGroupSpecs"]:
            assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"], (
                f"{cluster}/{group['groupName']}"
            )


# --- the environment -----------------------------------------------------------------------------------------
def test_every_ray_node_gets_the_compose_environment(
    objects: dict[tuple[str, str], dict[str, Any]], services: dict[str, Any]
) -> None:
    wanted = compose_ray_env(services)
    for cluster, group, _, container in ray_pods(objects):
        env = effective_env(objects, container)
        where = f"{cluster}/{group}"
        assert set(env) <= set(wanted), f"{where}: not in compose's x-ray-env: {set(env) - set(wanted)}"
        for name, value in wanted.items():
            if value is None:  # passed through from .env in compose: the ConfigMap is the .env here
                continue
            assert name in env, f"{where}: {name} is not set"
            source, got = env[name]
            if PLACEHOLDER.search(str(value)):
                assert source == "secret", f"{where}: {name} is a secret in compose, {source} here"
            elif name not in K8S_VALUES:
                assert got == str(value), f"{where}: {name}={got!r}, compose {value!r}"


def test_addresses_that_differ_name_the_kuberay_services(
    objects: dict[tuple[str, str], dict[str, Any]],
) -> None:
    (service,) = of_kind(objects, "RayService")
    for cluster, spec in cluster_specs(objects):
        dashboard_port = spec["headGroupSpec"]["rayStartParams"]["dashboard-port"]
        gcs_port = spec["headGroupSpec"]["rayStartParams"]["port"]
        for group, gspec in groups(spec):
            env = effective_env(objects, gspec["template"]["spec"]["containers"][0])
            assert env["MUR_RAY_ADDRESS"][1] == f"http://{cluster}-head-svc:{dashboard_port}", (
                f"{cluster}/{group}"
            )
            assert env["MUR_RAY_DASHBOARD_PORT"][1] == dashboard_port
            assert env["MUR_RAY_GCS_PORT"][1] == gcs_port
            assert env["MUR_SERVE_HOST"][1] == f"{service['metadata']['name']}-serve-svc"
            assert env["MUR_SERVE_PORT"][1] == str(
                yaml.safe_load(service["spec"]["serveConfigV2"])["http_options"]["port"]
            )


def test_configmap_variables_are_settings_fields(objects: dict[tuple[str, str], dict[str, Any]]) -> None:
    for config in of_kind(objects, "ConfigMap"):
        for name in config["data"]:
            if name.startswith("MUR_"):
                assert name.removeprefix("MUR_").lower() in FIELD_GROUP, name


def test_s3_keys_are_files_in_the_secrets_dir_never_environment(
    objects: dict[tuple[str, str], dict[str, Any]], services: dict[str, Any]
) -> None:
    assert not S3_KEY_VARS & set(compose_ray_env(services)), "compose keeps them out of the Ray nodes too"
    compose_files = set(services["ray-head"]["secrets"])
    assert compose_files == set(services["ray-worker"]["secrets"])
    for cluster, group, gspec, container in ray_pods(objects):
        where = f"{cluster}/{group}"
        env = effective_env(objects, container)
        assert not S3_KEY_VARS & set(env), f"{where}: S3 keys in the environment"
        secrets_dir = env["MUR_SECRETS_DIR"][1]
        volumes = {v["name"]: v for v in gspec["template"]["spec"]["volumes"]}
        (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == secrets_dir]
        assert mount.get("readOnly") is True, where
        secret = volumes[mount["name"]]["secret"]
        assert "items" not in secret, f"{where}: one file per key, named as the key"
        assert set(secret_data(objects, secret["secretName"])) == compose_files, where
        for name in compose_files:  # Settings' secrets source reads the file named after the field
            assert name.removeprefix("mur_") in FIELD_GROUP, name


def test_secret_values_are_not_committed(objects: dict[tuple[str, str], dict[str, Any]]) -> None:
    for secret in of_kind(objects, "Secret"):
        assert secret["_file"] == "secrets.example.yaml"
        for key, value in secret_data(objects, secret["metadata"]["name"]).items():
            assert value in ("change-me", ""), f"{secret['metadata']['name']}/{key}: a real-looking value"
    for config in of_kind(objects, "ConfigMap"):
        for name in config["data"]:
            field = name.removeprefix("MUR_").lower()
            assert field not in SECRET_FIELDS and name not in S3_KEY_VARS | {"RAY_AUTH_TOKEN"}, name


def test_checkpoints_go_to_s3_never_a_node_path(objects: dict[tuple[str, str], dict[str, Any]]) -> None:
    settings = objects[("ConfigMap", "mur-settings")]["data"]
    assert settings["MUR_RAY_STORAGE_PATH"] == f"s3://{settings['MUR_S3_BUCKET']}/ray-results"
    for cluster, group, gspec, container in ray_pods(objects):
        volumes = {v["name"]: v for v in gspec["template"]["spec"]["volumes"]}
        assert not any("hostPath" in v or "persistentVolumeClaim" in v for v in volumes.values()), (
            f"{cluster}/{group}"
        )
        (shm,) = [m for m in container["volumeMounts"] if m["mountPath"] == "/dev/shm"]
        assert volumes[shm["name"]]["emptyDir"]["medium"] == "Memory", "Ray's object store in memory"


# --- exposure ----------------------------------------------------------------------------------------------------
def test_ports_are_the_compose_ports_and_stay_in_the_cluster(
    objects: dict[tuple[str, str], dict[str, Any]], services: dict[str, Any]
) -> None:
    head = services["ray-head"]
    compose_ports = {int(resolve(str(p)).split(":")[-1]) for p in head["ports"]} | {
        int(p) for p in head["expose"]
    }
    (service,) = of_kind(objects, "RayService")
    serve_port = yaml.safe_load(service["spec"]["serveConfigV2"])["http_options"]["port"]
    for cluster, spec in cluster_specs(objects):
        head_spec = spec["headGroupSpec"]
        assert head_spec.get("serviceType", "ClusterIP") == "ClusterIP", cluster
        assert not head_spec.get("enableIngress"), cluster
        ports = {
            p["containerPort"] for p in head_spec["template"]["spec"]["containers"][0].get("ports") or []
        }
        serves = cluster == service["metadata"]["name"]
        assert ports == (compose_ports if serves else compose_ports - {serve_port}), cluster
    for cluster, group, gspec, _ in ray_pods(objects):
        for container in gspec["template"]["spec"]["containers"]:
            ports = {p["containerPort"] for p in container.get("ports") or []}
            assert not ports & UNAUTHENTICATED_PORTS, f"{cluster}/{group}: {ports & UNAUTHENTICATED_PORTS}"
            if group != "head":
                assert not ports, f"{cluster}/{group}: workers take Ray's traffic only"
    assert (service["spec"].get("serveService") or {}).get("spec", {}).get("type", "ClusterIP") == "ClusterIP"
    assert not of_kind(objects, "Ingress"), "KubeRay makes the Ray Services"
    for svc in of_kind(objects, "Service"):
        assert svc["metadata"]["name"] == REDIS, "KubeRay makes the Ray Services; ours is the GCS's Redis"
        assert svc["spec"].get("type", "ClusterIP") == "ClusterIP"


def test_network_policy_lets_only_prometheus_reach_the_metrics(
    objects: dict[tuple[str, str], dict[str, Any]],
) -> None:
    policy = objects[("NetworkPolicy", "mur-ray")]
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    metrics = {8080, 9101}
    for rule in policy["spec"]["ingress"]:
        assert rule.get("from"), "a rule without peers lets every pod in"
        ports = {p["port"] for p in rule.get("ports") or []}
        peers = [peer.get("podSelector", {}).get("matchLabels", {}) for peer in rule["from"]]
        if not ports:
            assert peers == [{"ray.io/is-ray-node": "yes"}], "every port: the Ray pods only"
        elif ports & metrics:
            assert ports <= metrics and all(p.get("app.kubernetes.io/name") == "prometheus" for p in peers)


# --- Serve ---------------------------------------------------------------------------------------------------------
def test_serve_config_is_what_mur_serve_deploys(
    objects: dict[tuple[str, str], dict[str, Any]], services: dict[str, Any]
) -> None:
    (service,) = of_kind(objects, "RayService")
    # compose's serve keeper binds the proxy to every interface of the head
    host = environment(services["serve"])["MUR_SERVE_HOST"]
    config_args = load_config()["applications"][0]["args"]
    expected = app_config(Settings.defaults(serve_host=host), AppArgs(**config_args))
    assert yaml.safe_load(service["spec"]["serveConfigV2"]) == expected


# --- GCS fault tolerance -------------------------------------------------------------------------------------
def test_gcs_fault_tolerance_matches_compose(
    objects: dict[tuple[str, str], dict[str, Any]], services: dict[str, Any]
) -> None:
    compose_host, compose_port = environment(services["ray-head"])["RAY_REDIS_ADDRESS"].split(":")
    assert compose_host == "redis"
    assert flags(command(services["ray-head"]))["--redis-password"] == "<REDIS_PASSWORD>", (
        "a secret in compose"
    )
    port = objects[("ConfigMap", "mur-settings")]["data"]["MUR_RAY_REDIS_PORT"]
    assert port == compose_port, "the same port as compose"
    service, redis = objects[("Service", REDIS)], objects[("StatefulSet", REDIS)]
    assert service["_file"] == redis["_file"] == "redis.yaml"
    (svc_port,) = service["spec"]["ports"]
    assert svc_port["port"] == svc_port["targetPort"] == int(port)
    pod = redis["spec"]["template"]
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    (container,) = pod["spec"]["containers"]
    assert [p["containerPort"] for p in container["ports"]] == [int(port)]
    secret_names = set()
    for cluster, spec in cluster_specs(objects):
        ft = spec.get("gcsFaultToleranceOptions") or {}
        assert ft.get("redisAddress") == f"{REDIS}:{port}", cluster
        assert ft.get("backend", "redis") == "redis" and "externalStorageNamespace" not in ft, (
            f"{cluster}: KubeRay's default namespace (the cluster's UID) keeps the clusters apart"
        )
        assert set(ft["redisPassword"]) == {"valueFrom"}, f"{cluster}: the password from a Secret only"
        ref = ft["redisPassword"]["valueFrom"]["secretKeyRef"]
        assert ref["key"] in secret_data(objects, ref["name"]), cluster
        secret_names.add((ref["name"], ref["key"]))
        head = spec["headGroupSpec"]
        env = effective_env(objects, head["template"]["spec"]["containers"][0])
        assert not {"RAY_REDIS_ADDRESS", "REDIS_PASSWORD"} & set(env), f"{cluster}: KubeRay refuses them"
        assert "redis-password" not in head["rayStartParams"], cluster
    ((secret, key),) = secret_names
    # Redis itself: compose's image and command (the password read from the Secret's file)
    assert container["image"] == resolve(services["redis"]["image"])
    assert [a.replace("$$", "$") for a in container["args"]] == command(services["redis"])
    (mount,) = [m for m in container["volumeMounts"] if m.get("readOnly")]
    volume = {v["name"]: v for v in pod["spec"]["volumes"]}[mount["name"]]
    assert volume["secret"]["secretName"] == secret and f"{mount['mountPath']}/{key}" in container["args"][-1]
    assert pod["spec"]["automountServiceAccountToken"] is False, "no token mount over /run/secrets"
    (claim,) = redis["spec"]["volumeClaimTemplates"]
    data = [m["mountPath"] for m in container["volumeMounts"] if m["name"] == claim["metadata"]["name"]]
    assert data == [flags(command(services["redis"])[-1].split())["--dir"]], "the append-only file persists"
    for config in of_kind(objects, "ConfigMap"):
        assert "requirepass" not in str(config["data"]) and "REDIS_PASSWORD" not in config["data"]


def test_only_the_heads_reach_the_gcs_redis(objects: dict[tuple[str, str], dict[str, Any]]) -> None:
    policy = objects[("NetworkPolicy", REDIS)]
    assert policy["_file"] == "redis.yaml" and policy["_file"] not in NOT_APPLIED, "applied with Redis"
    pod_labels = objects[("StatefulSet", REDIS)]["spec"]["template"]["metadata"]["labels"]
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= pod_labels.items()
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    port = int(objects[("ConfigMap", "mur-settings")]["data"]["MUR_RAY_REDIS_PORT"])
    (rule,) = policy["spec"]["ingress"]
    assert [p["port"] for p in rule["ports"]] == [port]
    for peer in rule["from"]:
        assert set(peer) == {"podSelector"}, "pods of this namespace only (no namespaceSelector, no ipBlock)"
        selector = peer["podSelector"]
        assert selector["matchLabels"] == {"app.kubernetes.io/part-of": "make-us-rich"}
        (node_type,) = selector["matchExpressions"]
        assert node_type == {"key": "ray.io/node-type", "operator": "In", "values": sorted(REDIS_CLIENTS)}
