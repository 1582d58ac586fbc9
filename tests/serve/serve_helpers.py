"""Helpers for the Serve tests: an on/off TCP proxy in front of MLflow, polling, registry shortcuts."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from mur import waiting
from mur.settings import Settings

PAIR = "eth_usdt"


class TcpProxy:
    """A threaded TCP forwarder ``127.0.0.1:port`` → ``target``; ``stop()`` refuses and cuts connections,
    ``stall()`` keeps every connection open but forwards nothing (a hung server) until ``resume()``."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = free_port()
        self._server: socket.socket | None = None
        self._conns: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._flowing = threading.Event()
        self._flowing.set()

    def stall(self) -> None:
        self._flowing.clear()

    def resume(self) -> None:
        self._flowing.set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", self.port))
        server.listen(128)
        self._server = server
        threading.Thread(target=self._accept, args=(server,), daemon=True).start()

    def _accept(self, server: socket.socket) -> None:
        while True:
            try:
                client, _ = server.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns.update((client, upstream))
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(src, dst), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                self._flowing.wait()
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
            with self._lock:
                self._conns.difference_update((src, dst))

    def stop(self) -> None:
        if self._server is not None:
            with contextlib.suppress(OSError):
                self._server.shutdown(socket.SHUT_RDWR)  # wakes the accept() thread; close() alone does not
            self._server.close()
            self._server = None
        with self._lock:
            conns, self._conns = list(self._conns), set()
        for sock in conns:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class ServeStack:
    """What the tests need to talk to the deployed app."""

    url: str
    settings: Settings
    """The app's settings (private registry prefix, test database, MLflow through the proxy)."""
    direct: Settings
    """The same, with MLflow reached directly (for the test's own registry calls)."""
    pair: str
    proxy: TcpProxy
    make_user: Callable[..., tuple[int, str]]
    versions: dict[str, int] = field(default_factory=dict)

    def client(self, token: str | None = None, **kwargs: Any) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, **{"timeout": 30, **kwargs})


def wait_until(check: Callable[[], Any], timeout_s: float, what: str, interval_s: float = 0.5) -> Any:
    """:func:`mur.waiting.wait_until` with the Serve tests' arguments: an HTTP error or a missing key is "not yet"."""
    retry_on = (httpx.HTTPError, KeyError)
    return waiting.wait_until(check, what=what, timeout_s=timeout_s, interval_s=interval_s, retry_on=retry_on)


def promote(settings: Settings, pair: str, version: int) -> None:
    """Give ``version`` the champion alias (what the promotion gate or an operator does)."""
    from mur import registry

    client = registry.configure(settings)
    client.set_registered_model_alias(
        registry.model_name(pair, settings.registry.registry_prefix), registry.CHAMPION, str(version)
    )


def copy_version(settings: Settings, pair: str, version: int, *, to_pair: str | None = None) -> int:
    """Register a new version with the same artefacts (and tags) as ``version``; returns its number."""
    from mur import registry

    client = registry.configure(settings)
    prefix = settings.registry.registry_prefix
    src = client.get_model_version(registry.model_name(pair, prefix), str(version))
    name = registry.model_name(to_pair or pair, prefix)
    with contextlib.suppress(Exception):
        client.create_registered_model(name)
    tags = {**(src.tags or {}), "pair": to_pair or pair}
    model_id = getattr(src, "model_id", None) or (
        src.source.removeprefix("models:/") if src.source.startswith("models:/m-") else None
    )  # MLflow 3: a version's source is its logged model, which must be named too
    new = client.create_model_version(name, src.source, run_id=src.run_id, tags=tags, model_id=model_id)
    return int(new.version)


def register_broken_version(settings: Settings, pair: str) -> int:
    """Register a version of ``{prefix}{pair}`` whose "ONNX" file is garbage; returns its number."""
    from mur import registry

    client = registry.configure(settings)
    experiment = client.get_experiment_by_name(settings.registry.mlflow_experiment)
    run = client.create_run(experiment.experiment_id, run_name=f"broken-{pair}")
    client.log_text(run.info.run_id, "this is not an ONNX model", "model/model.onnx")
    client.set_terminated(run.info.run_id)
    name = registry.model_name(pair, settings.registry.registry_prefix)
    with contextlib.suppress(Exception):
        client.create_registered_model(name)
    version = client.create_model_version(
        name, f"{run.info.artifact_uri}/model", run_id=run.info.run_id, tags={"pair": pair}
    )
    return int(version.version)
