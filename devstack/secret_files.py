"""Small JSON secret files of the local stack (session key, Airflow keys and passwords), kept safely.

* Written atomically: a temporary file in the same folder (mode 600), fsync, then ``os.replace``; a crash
  leaves the old file or the new one, never an empty one.
* Read-modify-write under an exclusive ``flock`` on a ``.lock`` file beside it, so two processes starting
  at once agree on one key instead of each writing its own.
* An existing file that cannot be read as a JSON object is an error with the path in the message, never
  silently replaced: a new key would log everybody out, change every derived API token and make Airflow's
  Fernet-encrypted connections unreadable.

Other private files (TLS keys, configurations holding keys) are written by :func:`write_private` (mode 600).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from mur.errors import ConfigError


@contextlib.contextmanager
def locked(path: Path, *, wait: bool = True) -> Iterator[bool]:
    """Hold an exclusive lock for ``path`` (on ``path.lock``) for the duration of the block; without ``wait``,
    yield False at once when another process holds it (True: held)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(f"{path}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)  # which releases the lock


def read(path: Path) -> dict[str, Any] | None:
    """The file's JSON object; None when it does not exist; ConfigError when it is empty or corrupt."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except ValueError:  # not JSON (or not text)
        data = None
    if not isinstance(data, dict):
        raise ConfigError(
            f"{path} is empty or corrupt; it holds keys the stack needs. Restore it from a backup, or delete "
            "it to generate new keys (this logs every dashboard user out and changes their API tokens)"
        )
    return data


def private_dir(path: Path) -> Path:
    """``path`` as a directory only its owner may enter (created with its parents and mode 700, which is set
    again when it existed)."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)  # never open to others, not even until the chmod
    path.chmod(0o700)
    return path


def write_private(path: Path, data: str | bytes) -> None:
    """Write ``path`` (created with mode 600, truncated, then set to 600 whatever it was)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data.encode() if isinstance(data, str) else data)
    path.chmod(0o600)


def write(path: Path, data: dict[str, Any]) -> None:
    """Replace ``path`` atomically with ``data`` (mode 600)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)  # mode 600
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def ensure(path: Path, update: Callable[[dict[str, Any]], dict[str, Any] | None]) -> dict[str, Any]:
    """Read ``path`` under the lock, let ``update`` return changes (None: none), write them atomically."""
    with locked(path):
        data = read(path) or {}
        changes = update(dict(data))
        if changes:
            data = {**data, **changes}
            write(path, data)
        return data
