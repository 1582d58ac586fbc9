"""The local object store (SeaweedFS, devstack/seaweed.py) for real, on a private instance (a free block of
ports, a temporary runtime dir): signed S3 requests only, every other listener refuses an anonymous read and
write (or does not serve them), objects survive a stop/start and a kill -9, ``mur status`` sees its size."""

from __future__ import annotations

import io
import os
import signal
import socket
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest
import urllib3
from minio import Minio
from minio.error import S3Error
from stack_ports import remove_seaweed_sockets

from devstack import seaweed
from devstack import supervisor as svc
from devstack.services import Service, stack_services
from mur.errors import ServiceError
from mur.settings import Settings
from mur.waiting import wait_until

pytestmark = [pytest.mark.services, pytest.mark.service_start, pytest.mark.timeout(600)]
Store = tuple[Settings, dict[str, Service]]


def free_port_block(size: int = 8) -> int:
    """A port whose next ``size`` ports are all free on 127.0.0.1 (the store opens eight)."""
    for base in range(20000, 40000, 97):
        try:
            for port in range(base, base + size):
                with socket.socket() as sock:
                    sock.bind(("127.0.0.1", port))
        except OSError:
            continue
        return base
    raise RuntimeError("no free block of ports")


def client(settings: Settings, secret: str | None = None, retries: bool = True) -> Minio:
    """``retries=False``: no retry of a 5xx answer (minio's default retries it five times)."""
    reg = settings.registry
    return Minio(
        f"127.0.0.1:{reg.s3_port}",
        access_key=reg.s3_access_key,
        secret_key=secret or reg.s3_secret_key,
        secure=False,
        region="us-east-1",
        http_client=None if retries else urllib3.PoolManager(retries=False),
    )


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    port = free_port_block()
    settings = Settings(
        runtime_dir=tmp_path / "runtime",
        s3_port=port,
        s3_endpoint_url=f"http://127.0.0.1:{port}",
        s3_bucket="mur-private-test",
    )
    registry = {"s3": stack_services(settings)["s3"]}
    try:
        yield settings, registry
    finally:
        svc.down(settings, services=registry)
        remove_seaweed_sockets(port)  # in /tmp (this store shares the test stack's Ray ports: not its dirs)


def test_only_signed_requests_and_no_anonymous_listener(store: Store) -> None:
    settings, registry = store
    svc.up(settings, ["s3"], services=registry)
    bucket, ports = settings.registry.s3_bucket, seaweed.ports(settings.registry.s3_port)
    client(settings).put_object(bucket, "model.onnx", io.BytesIO(b"weights"), 7)
    s3 = f"http://127.0.0.1:{ports['s3']}"
    for method, path in (("GET", "/"), ("GET", f"/{bucket}"), ("GET", f"/{bucket}/model.onnx")):
        assert httpx.request(method, s3 + path).status_code == 403, (method, path)
    assert httpx.put(f"{s3}/{bucket}/model.onnx", content=b"forged").status_code == 403
    with pytest.raises(S3Error) as wrong:
        client(settings, secret="not-the-secret").get_object(bucket, "model.onnx")
    assert wrong.value.code == "SignatureDoesNotMatch"
    assert client(settings).get_object(bucket, "model.onnx").read() == b"weights"

    # master and filer: their HTTP APIs are off (only the master's status page answers); volume: JWT only
    data_paths = ("/dir/assign", "/dir/lookup?volumeId=1", "/submit", f"/buckets/{bucket}/model.onnx")
    fids = ("/1,01637037d6", "/7,0123456789abcdef")  # volume id, needle key and cookie
    for name, paths, expected in (
        ("master", data_paths, 404),
        ("filer", data_paths, 404),
        ("volume", fids, 401),
    ):
        for path in paths:
            url = f"http://127.0.0.1:{ports[name]}{path}"
            assert httpx.get(url).status_code == expected, (name, path)
            assert httpx.post(url, files={"file": ("x", b"forged")}).status_code == expected, (name, path)
    # the Unix sockets it opens beside them in /tmp (not writable, so not connectable, by other users)
    sockets = {n: Path(f"/tmp/seaweedfs-{n}-{ports[n]}.sock") for n in ("s3", "filer")}
    for name, path, expected in (("s3", f"/{bucket}/model.onnx", 403), ("filer", f"/buckets/{bucket}/", 404)):
        with httpx.Client(transport=httpx.HTTPTransport(uds=str(sockets[name]))) as local:
            assert local.get(f"http://x{path}").status_code == expected, name
            assert local.put(f"http://x{path}x", content=b"forged").status_code == expected, name
    for sock in [
        *sockets.values(),
        *(Path(f"/tmp/seaweedfs-{n}-grpc-{ports[n + '.grpc']}.sock") for n in seaweed.COMPONENTS),
    ]:
        assert sock.is_socket() and sock.stat().st_mode & 0o022 == 0, sock
    # gRPC: mutual TLS with the stack's own CA; without its client certificate no call reaches a server
    cfg = seaweed.config_dir(settings)
    ca, key, cert = ((cfg / f).read_bytes() for f in ("ca.pem", "key.pem", "cert.pem"))
    credentials = {
        "plain": None,
        "no client certificate": grpc.ssl_channel_credentials(ca),
        "the stack's certificate": grpc.ssl_channel_credentials(ca, key, cert),
    }
    for name in seaweed.COMPONENTS:
        codes = {}
        unix = f"unix:/tmp/seaweedfs-{name}-grpc-{ports[name + '.grpc']}.sock"
        for label, creds in {**credentials, "plain, on its Unix socket": None}.items():
            target = unix if "Unix" in label else f"127.0.0.1:{ports[name + '.grpc']}"
            channel = grpc.secure_channel(target, creds) if creds else grpc.insecure_channel(target)
            call = channel.unary_unary("/mur.Probe/Nothing")
            try:
                call(b"", timeout=10)
            except grpc.RpcError as exc:
                codes[label] = exc.code()
            channel.close()
        assert codes == {
            "plain": grpc.StatusCode.UNAVAILABLE,
            "plain, on its Unix socket": grpc.StatusCode.UNAVAILABLE,
            "no client certificate": grpc.StatusCode.UNAVAILABLE,
            "the stack's certificate": grpc.StatusCode.UNIMPLEMENTED,  # answered: the server is there
        }, name
    assert oct((cfg / "security.toml").stat().st_mode & 0o777) == "0o600"


def _put_fixtures(minio: Minio, bucket: str) -> dict[str, bytes]:
    objects = {
        "plain.bin": os.urandom(100_000),
        "dir/with space+plus%percent é.bin": os.urandom(3000),
        "big/multipart.bin": os.urandom(11 * 1024 * 1024 + 7),  # 3 parts of 5 MiB
        "empty": b"",
    }
    for key, data in objects.items():
        minio.put_object(
            bucket,
            key,
            io.BytesIO(data),
            len(data),
            part_size=5 * 1024 * 1024,
            content_type="application/x-mur-test",
            metadata={"x-amz-meta-origin": "test"},
        )
    minio.put_object(bucket, "deleted.txt", io.BytesIO(b"bye"), 3)
    minio.remove_object(bucket, "deleted.txt")
    return objects


def _assert_same(minio: Minio, bucket: str, objects: dict[str, bytes], etags: dict[str, str]) -> None:
    assert sorted(o.object_name for o in minio.list_objects(bucket, recursive=True)) == sorted(objects)
    for key, data in objects.items():
        response = minio.get_object(bucket, key)
        try:
            assert response.read() == data, key
            assert response.headers["Content-Type"] == "application/x-mur-test"
            assert response.headers["x-amz-meta-origin"] == "test"
        finally:
            response.close()
        assert minio.stat_object(bucket, key).etag == etags[key]


def test_objects_survive_stop_start_and_kill_9_and_status_shows_the_size(store: Store) -> None:
    settings, registry = store
    [first] = svc.up(settings, ["s3"], services=registry)
    minio = client(settings)
    bucket = settings.registry.s3_bucket
    assert minio.bucket_exists(bucket)  # created by the service's after_start
    empty_mb = svc.service_status(settings, registry["s3"]).disk_mb
    objects = _put_fixtures(minio, bucket)
    etags = {key: minio.stat_object(bucket, key).etag for key in objects}
    [row] = svc.status(settings, ["s3"], services=registry)
    assert row.disk_mb is not None and empty_mb is not None and row.disk_mb - empty_mb >= 11

    [stopped] = svc.down(settings, ["s3"], services=registry)
    assert stopped.action == "stopped"  # SIGTERM, then SIGKILL at 5 s (its filer would wait 15 s more)
    [again] = svc.up(settings, ["s3"], services=registry)
    assert again.action == "started" and again.pid != first.pid
    # read at once, no retry: up returns only once the volumes' data is served (a restarted SeaweedFS lists
    # objects seconds before its reads stop failing with "volume N not found")
    _assert_same(client(settings, retries=False), bucket, objects, etags)

    assert again.pid is not None
    os.killpg(again.pid, signal.SIGKILL)  # no shutdown code runs
    wait_until(lambda: not svc.session_members(again.pid), what="the killed session to end", timeout_s=10)
    [third] = svc.up(settings, ["s3"], services=registry)
    assert third.action == "started"
    _assert_same(client(settings, retries=False), bucket, objects, etags)


def test_refuses_a_port_held_by_another_program(store: Store) -> None:
    settings, registry = store
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", settings.registry.s3_port))
        squatter.listen()
        with pytest.raises(ServiceError, match="port .* in use"):
            svc.up(settings, ["s3"], services=registry)
    assert not svc.pid_path(settings, "s3").exists()
