"""mur.waiting.wait_until: the one poll-until-deadline helper (tiny timeouts: no test here sleeps long)."""

from __future__ import annotations

import itertools

import pytest

from mur.waiting import WaitTimeout, wait_until


def test_returns_the_first_truthy_answer() -> None:
    answers = iter([None, 0, "", {"state": "ok"}, "never asked"])
    assert wait_until(lambda: next(answers), what="an answer", timeout_s=5, interval_s=0) == {"state": "ok"}


def test_done_decides_which_answer_ends_the_wait() -> None:
    states = iter(["queued", "running", "success"])
    answer = wait_until(
        lambda: {"state": next(states)},
        what="the run",
        timeout_s=5,
        interval_s=0,
        done=lambda r: r["state"] == "success",
    )
    assert answer == {"state": "success"}


def test_times_out_naming_what_and_the_last_answer() -> None:
    counter = itertools.count()
    with pytest.raises(WaitTimeout, match=r"waiting for the lock .*last: \{'state': 'running'"):
        wait_until(
            lambda: {"state": "running", "n": next(counter)},
            what="the lock",
            timeout_s=0.05,
            interval_s=0.01,
            done=lambda r: r["state"] == "success",
        )
    assert next(counter) >= 2  # it polled more than once before giving up
    assert issubclass(WaitTimeout, TimeoutError)


def test_the_check_runs_once_even_with_no_time() -> None:
    assert wait_until(lambda: 7, what="seven", timeout_s=0) == 7


def test_retried_exceptions_count_as_not_yet_and_are_reported() -> None:
    calls = iter([ConnectionError("refused"), ConnectionError("refused"), "up"])

    def check() -> str:
        answer = next(calls)
        if isinstance(answer, Exception):
            raise answer
        return str(answer)

    assert (
        wait_until(check, what="the server", timeout_s=5, interval_s=0, retry_on=(ConnectionError,)) == "up"
    )

    def refused() -> None:
        raise ConnectionError("still refused")

    with pytest.raises(WaitTimeout, match="last: ConnectionError\\('still refused'\\)") as caught:
        wait_until(refused, what="the server", timeout_s=0.02, interval_s=0.01, retry_on=(ConnectionError,))
    assert isinstance(caught.value.__cause__, ConnectionError)


def test_other_exceptions_propagate_at_once() -> None:
    calls = itertools.count()

    def check() -> None:
        next(calls)
        raise ValueError("the process exited")

    with pytest.raises(ValueError, match="the process exited"):
        wait_until(check, what="x", timeout_s=5, interval_s=0, retry_on=(ConnectionError,))
    assert next(calls) == 1


def test_error_picks_the_callers_exception_type() -> None:
    class MigrationError(RuntimeError):
        pass

    with pytest.raises(MigrationError, match="waiting for the migration lock"):
        wait_until(lambda: False, what="the migration lock", timeout_s=0, error=MigrationError)
