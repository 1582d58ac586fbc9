"""Process sessions from ``/proc`` (Linux): members, memory, staged termination, a stack's leftovers.

Every service runs in its own session (its leader's pid is the session id), so stopping a service signals
every process of that session, including those its command spawned.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from mur.errors import ServiceError

if TYPE_CHECKING:
    from mur.settings import Settings

STACK_MARKER = "MUR_STACK"
"""Environment variable (= the runtime dir) that every process of a stack inherits: how leftovers are found."""


def _proc_stat(pid: int) -> tuple[str, int] | None:
    """(state, session id) of ``pid``, or None if it is gone."""
    try:
        data = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = data[data.rindex(")") + 2 :].split()
    return fields[0], int(fields[3])


def _pids() -> list[int]:
    return [int(entry.name) for entry in os.scandir("/proc") if entry.name.isdigit()]


def session_members(sid: int) -> list[int]:
    """Live (non-zombie) processes whose session id is ``sid``."""
    members = []
    for pid in _pids():
        stat = _proc_stat(pid)
        if stat is not None and stat[1] == sid and stat[0] not in ("Z", "X"):
            members.append(pid)
    return members


def _reap(pids: Iterable[int]) -> None:
    """Collect exit statuses of our own children so they do not linger as zombies."""
    for pid in pids:
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pid, os.WNOHANG)


def memory_mb(pids: Iterable[int]) -> float | None:
    """Summed proportional set size (shared pages split) of ``pids`` in MiB; RSS where PSS is unreadable."""
    total_kb = 0
    seen = False
    for pid in pids:
        kb = None
        with contextlib.suppress(OSError, ValueError):
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    kb = int(line.split()[1])
                    break
        if kb is None:
            with contextlib.suppress(OSError, ValueError, IndexError):
                pages = int(Path(f"/proc/{pid}/statm").read_text().split()[1])
                kb = pages * os.sysconf("SC_PAGE_SIZE") // 1024
        if kb is not None:
            total_kb += kb
            seen = True
    return round(total_kb / 1024, 1) if seen else None


def _comm(pid: int) -> str:
    """Process name (``/proc/PID/comm``), '' if it is gone."""
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def terminate(
    sid: int, timeout_s: float, *, first: Sequence[str] = (), last: Sequence[str] = ()
) -> Literal["stopped", "killed"]:
    """SIGTERM every process of session ``sid``; SIGKILL what is left after ``timeout_s``.

    Processes named in ``first`` are stopped (and awaited) before the others, those in ``last`` after them:
    Ray's GCS, for one, only exits on SIGTERM once the raylet and the dashboard are gone.
    """

    def stage(pid: int) -> int:
        name = _comm(pid)
        return 0 if name in first else 2 if name in last else 1

    signalled: set[int] = set()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() <= deadline:
        _reap(session_members(sid))
        members = session_members(sid)
        if not members:
            return "stopped"
        stages = {pid: stage(pid) for pid in members}
        current = min(stages.values())
        for pid, pid_stage in stages.items():
            if pid_stage == current and pid not in signalled:  # includes processes spawned meanwhile
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGTERM)
                signalled.add(pid)
        time.sleep(0.2)
    for _ in range(25):
        members = session_members(sid)
        if not members:
            return "killed"
        for pid in members:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.2)
        _reap(members)
    left = session_members(sid)
    if left:
        raise ServiceError(f"could not stop processes {left} of session {sid}")
    return "killed"


def leftover_processes(settings: Settings) -> list[tuple[int, str]]:
    """Processes (other than this one and its ancestors) carrying ``MUR_STACK={runtime dir}``.

    ``mur up`` exports the marker, so every service, Airflow task, Ray worker and job inherits it (a user's
    shell does not, even with ``MUR_RUNTIME_DIR`` exported).
    """
    marker = f"{STACK_MARKER}={Path(settings.general.runtime_dir).resolve()}".encode()
    mine = _ancestors(os.getpid())
    found = []
    for pid in _pids():
        if pid in mine:
            continue
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes()
            state = _proc_stat(pid)
        except OSError:
            continue
        if state is None or state[0] in ("Z", "X") or marker not in environ.split(b"\0"):
            continue
        with contextlib.suppress(OSError):
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            found.append((pid, cmd.strip()))
    return found


def _ancestors(pid: int) -> set[int]:
    out = {pid}
    while pid > 1:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            break
        pid = int(stat[stat.rindex(")") + 2 :].split()[1])
        out.add(pid)
    return out
