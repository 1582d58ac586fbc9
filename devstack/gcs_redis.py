"""The Ray GCS's external Redis (Ray GCS fault tolerance): the head's GCS keeps its tables there, so a head
that died and is started again finds its cluster (docs/services.md, "Ray head restarts").

The ``redis`` service of :mod:`devstack.services` runs Debian's ``redis-server`` with the configuration
written here: loopback, TLS only, a client certificate required (mutual TLS instead of a password, see
:func:`redis_env`), an append-only file in ``{runtime_dir}/redis/data``.
"""

from __future__ import annotations

from pathlib import Path

from devstack import seaweed, secret_files
from mur.settings import Settings


def redis_dir(settings: Settings) -> Path:
    """``{runtime_dir}/redis``: its configuration and TLS files (``tls/``, 700) and its data (``data/``)."""
    return Path(settings.general.runtime_dir).resolve() / "redis"


def prepare_redis(settings: Settings) -> None:
    """Redis's configuration (mode 600) and, once per stack, the CA and the certificate that the server and
    the GCS both present (mutual TLS: Redis takes a client with that certificate only). Kept across starts: a
    GCS that reconnects after a Redis restart still holds the same certificate."""
    base, tls = redis_dir(settings), redis_dir(settings) / "tls"
    for folder in (base, tls, base / "data"):
        secret_files.private_dir(folder)
    if not (tls / "key.pem").exists():
        seaweed._certificates(tls)
    lines = {
        "bind": "127.0.0.1",
        "protected-mode": "yes",
        "port": 0,  # no plain-text port: TLS only, each client with the stack's certificate
        "tls-port": settings.ray.ray_redis_port,
        "tls-cert-file": tls / "cert.pem",
        "tls-key-file": tls / "key.pem",
        "tls-ca-cert-file": tls / "ca.pem",
        "tls-auth-clients": "yes",
        "dir": base / "data",
        "appendonly": "yes",  # every write logged (fsync each second): a Redis restart keeps the GCS's state
        "appendfsync": "everysec",
    }
    secret_files.write_private(base / "redis.conf", "".join(f"{k} {v}\n" for k, v in lines.items()))


def redis_env(settings: Settings) -> dict[str, str]:
    """For the Ray head: where the GCS keeps its tables (``RAY_REDIS_ADDRESS``, TLS) and the certificate it
    shows Redis. Ray takes a Redis password only on ``ray start``'s command line and passes it on in the
    command lines of the GCS, the raylet and every worker of the head, where ``ps`` shows it to any local user;
    a client key in a file of mode 600 shows nothing (docs/services.md, "Ray head restarts")."""
    tls = redis_dir(settings) / "tls"
    return {
        "RAY_REDIS_ADDRESS": f"rediss://127.0.0.1:{settings.ray.ray_redis_port}",
        **{f"RAY_REDIS_{k}": str(tls / f"{f}.pem") for k, f in (("CA_CERT", "ca"), ("CLIENT_CERT", "cert"))},
        "RAY_REDIS_CLIENT_KEY": str(tls / "key.pem"),
    }


GCS_RECONNECT_ENV = {"RAY_gcs_rpc_server_reconnect_timeout_s": "300"}
"""How long a raylet and a worker wait for a GCS that went away before they give up and exit (Ray's default:
60 s): a head restarted on a busy machine takes longer, and meanwhile a worker node's replicas keep serving."""
