"""Process sessions (Linux, through psutil): members, memory, staged termination, a stack's leftovers.

Every service runs in its own session (its leader's pid is the session id), so stopping a service signals
every process of that session, including those its command spawned.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import psutil

from mur.errors import ServiceError
from mur.waiting import WaitTimeout, wait_until

if TYPE_CHECKING:
    from mur.settings import Settings

STACK_MARKER = "MUR_STACK"
"""Environment variable (= the runtime dir) that every process of a stack inherits: how leftovers are found."""
DEAD = (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD)


def venv_bin(name: str) -> str:
    """A console script next to this interpreter (the venv's ``bin/``), else from PATH."""
    candidate = Path(sys.executable).parent / name
    return str(candidate) if candidate.exists() else (shutil.which(name) or name)


def session_members(sid: int) -> list[int]:
    """Live (non-zombie) processes whose session id is ``sid``."""
    members = []
    for process in psutil.process_iter(["status"]):
        with contextlib.suppress(OSError, psutil.Error):
            if process.info["status"] not in DEAD and os.getsid(process.pid) == sid:
                members.append(process.pid)
    return members


def leader_alive(sid: int) -> bool:
    """True while the leader of session ``sid`` (a service's main process, pid = sid) runs."""
    with contextlib.suppress(OSError, psutil.Error):
        return psutil.Process(sid).status() not in DEAD and os.getsid(sid) == sid
    return False


def memory_mb(pids: Iterable[int]) -> float | None:
    """Summed proportional set size (shared pages split) of ``pids`` in MiB; RSS where PSS is unreadable."""
    total, seen = 0, False
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            process = psutil.Process(pid)
            try:
                total += process.memory_full_info().pss
            except psutil.AccessDenied:
                total += process.memory_info().rss
            seen = True
    return round(total / 2**20, 1) if seen else None


def terminate(
    sid: int, timeout_s: float, *, first: Sequence[str] = (), last: Sequence[str] = ()
) -> Literal["stopped", "killed"]:
    """SIGTERM every process of session ``sid``; SIGKILL what is left after ``timeout_s``.

    Processes named in ``first`` are stopped (and awaited) before the others, those in ``last`` after them:
    Ray's GCS, for one, only exits on SIGTERM once the raylet and the dashboard are gone.
    """

    def stage(pid: int) -> int:
        """0: stopped first, 2: last, 1: the rest (a process gone meanwhile too); by name (``/proc/PID/comm``)."""
        try:
            name = psutil.Process(pid).name()
        except psutil.Error:
            return 1
        return 0 if name in first else 2 if name in last else 1

    signalled: set[int] = set()

    def gone(sig: signal.Signals) -> bool:
        """One round: True once the session is empty; else SIGTERM to its earliest stage's processes not
        signalled yet (processes spawned meanwhile included), or SIGKILL to every one of them."""
        for pid in session_members(sid):  # our own children's exit statuses: no zombie lingers
            with contextlib.suppress(OSError):
                os.waitpid(pid, os.WNOHANG)
        stages = {pid: stage(pid) for pid in session_members(sid)}
        for pid, pid_stage in stages.items():
            if sig == signal.SIGKILL or (pid_stage == min(stages.values()) and pid not in signalled):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, sig)
                signalled.add(pid)
        return not stages

    with contextlib.suppress(WaitTimeout):
        wait_until(lambda: gone(signal.SIGTERM), what=f"session {sid}", timeout_s=timeout_s, interval_s=0.2)
        return "stopped"
    wait_until(
        lambda: gone(signal.SIGKILL),
        what=f"session {sid}",
        timeout_s=5.0,
        interval_s=0.2,
        error=lambda _: ServiceError(f"could not stop processes {session_members(sid)} of session {sid}"),
    )
    return "killed"


def leftover_processes(settings: Settings) -> list[tuple[int, str]]:
    """Processes (other than this one and its ancestors) carrying ``MUR_STACK={runtime dir}``.

    ``mur up`` exports the marker, so every service, Airflow task, Ray worker and job inherits it (a user's
    shell does not, even with ``MUR_RUNTIME_DIR`` exported).
    """
    marker = str(Path(settings.general.runtime_dir).resolve())
    me = psutil.Process()
    mine = {me.pid, *(p.pid for p in me.parents())}
    found = []
    for process in psutil.process_iter(["status"]):
        if process.pid in mine or process.info["status"] in DEAD:
            continue
        with contextlib.suppress(psutil.Error):
            if process.environ().get(STACK_MARKER) == marker:
                found.append((process.pid, " ".join(process.cmdline())))
    return found
