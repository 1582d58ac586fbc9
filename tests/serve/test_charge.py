"""``ApiService._charge`` without a database: whichever of the request and the charge's thread speaks first
decides, so a call answered with an error is never charged (tests/serve/test_api_inprocess.py has the same
against PostgreSQL under a held lock)."""

from __future__ import annotations

import asyncio
import threading
from datetime import UTC, datetime
from typing import Any

import pytest

import serve_app.service
from mur.db import QuotaResult, TokenOwner
from mur.errors import DatabaseError
from mur.settings import Settings
from serve_app.service import ApiService

OWNER = TokenOwner(token_id=1, user_id=1, username="alice", roles=("member",))
QUOTA = QuotaResult(allowed=True, used=1, limit=10, reset_at=datetime(2030, 1, 1, tzinfo=UTC))


class NoDatabase:
    def __init__(self) -> None:
        self.settings = Settings(env="test")

    def close(self) -> None:
        pass


class SlowCharge:
    """A stand-in for :func:`mur.serving.http.charge`: the statement returns when ``statement_done`` is set,
    then asks ``commit_if``; the commit returns when ``commit_done`` is set. ``committed`` says what happened."""

    def __init__(self) -> None:
        self.statement_done = threading.Event()
        self.commit_done = threading.Event()
        self.asked = threading.Event()
        self.committed: bool | None = None

    def __call__(self, _db: Any, _owner: TokenOwner, commit_if: Any) -> QuotaResult:
        self.statement_done.wait(10)
        self.committed = bool(commit_if())
        self.asked.set()
        if not self.committed:
            raise DatabaseError("rolled back")
        self.commit_done.wait(10)
        return QUOTA


@pytest.fixture
def slow(monkeypatch: pytest.MonkeyPatch) -> SlowCharge:
    fake = SlowCharge()
    monkeypatch.setattr(serve_app.service, "charge", fake)
    return fake


def _service() -> ApiService:
    return ApiService(db=NoDatabase(), forecasters={}, registry=None, db_timeout_s=0.2)  # type: ignore[arg-type]


def test_a_charge_past_the_deadline_is_abandoned_and_rolls_back(slow: SlowCharge) -> None:
    service = _service()
    with pytest.raises(DatabaseError, match="no answer"):
        asyncio.run(service._charge(OWNER))
    slow.statement_done.set()  # the statement gets through after the 503
    assert slow.asked.wait(10) and slow.committed is False
    service.close()


def test_a_cancelled_request_abandons_its_charge(slow: SlowCharge) -> None:
    service = _service()
    service.db_timeout_s = 10.0

    async def cancelled() -> None:
        task = asyncio.ensure_future(service._charge(OWNER))
        await asyncio.sleep(0)  # the charge is on its thread
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(cancelled())
    slow.statement_done.set()
    assert slow.asked.wait(10) and slow.committed is False
    service.close()


def test_a_commit_under_way_at_the_deadline_decides_the_answer(slow: SlowCharge) -> None:
    """The thread claimed the commit first: the request waits for it past its deadline and answers 200."""
    service = _service()
    slow.statement_done.set()

    async def charged() -> QuotaResult | None:
        task = asyncio.ensure_future(service._charge(OWNER))
        await asyncio.to_thread(slow.asked.wait, 10)  # commit claimed, not finished
        await asyncio.sleep(0.3)  # past db_timeout_s (0.2 s)
        assert not task.done()
        slow.commit_done.set()
        return await task

    assert asyncio.run(charged()) == QUOTA and slow.committed is True
    service.close()
