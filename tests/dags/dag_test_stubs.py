"""Test doubles for the DAG tests: the Discord stand-in (``tests/discord_stub.py``), a free port."""

from __future__ import annotations

import socket

from discord_stub import DiscordStub

__all__ = ["DiscordStub", "free_port"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
