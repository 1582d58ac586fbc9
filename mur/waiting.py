"""The one way to wait for something: poll a check until it answers, or give up at a deadline."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


class WaitTimeout(TimeoutError):
    """A wait ran out of time; the message names what was awaited and the check's last answer or error."""


def wait_until(
    check: Callable[[], T | None],
    *,
    what: str,
    timeout_s: float,
    interval_s: float = 0.5,
    done: Callable[[T], object] = bool,
    retry_on: tuple[type[Exception], ...] = (),
    error: Callable[[str], BaseException] = WaitTimeout,
) -> T:
    """Call ``check`` every ``interval_s`` until its answer is truthy (and ``done`` by it); that answer.

    An exception in ``retry_on`` counts as "not yet" (a service still starting); any other one propagates
    at once. After ``timeout_s``, raises ``error`` (:class:`WaitTimeout` unless given) naming ``what``
    and the last answer or exception seen. The check always runs at least once.
    """
    deadline = time.monotonic() + timeout_s
    last: object = None
    while True:
        try:
            answer = last = check()
        except retry_on as exc:
            last = exc
        else:
            if answer and done(answer):
                return answer
        _give_up_after(deadline, timeout_s, what, last, error)
        time.sleep(interval_s)


async def wait_until_async(
    check: Callable[[], Awaitable[T | None]],
    *,
    what: str,
    timeout_s: float,
    interval_s: float = 0.5,
    done: Callable[[T], object] = bool,
    retry_on: tuple[type[Exception], ...] = (),
) -> T:
    """:func:`wait_until` for a coroutine ``check``, sleeping with ``asyncio.sleep``: many waits share one
    event loop (the training DAG's trigger in Airflow's triggerer, :mod:`mur.orchestration.triggers`)."""
    deadline = time.monotonic() + timeout_s
    last: object = None
    while True:
        try:
            answer = last = await check()
        except retry_on as exc:
            last = exc
        else:
            if answer and done(answer):
                return answer
        _give_up_after(deadline, timeout_s, what, last, WaitTimeout)
        await asyncio.sleep(interval_s)


def _give_up_after(
    deadline: float, timeout_s: float, what: str, last: object, error: Callable[[str], BaseException]
) -> None:
    """Raise ``error`` naming ``what`` and the last answer (its cause: the last exception) past ``deadline``."""
    if time.monotonic() >= deadline:
        cause = last if isinstance(last, Exception) else None
        raise error(f"timed out after {timeout_s:g} s waiting for {what} (last: {last!r:.1000})") from cause
