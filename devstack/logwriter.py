"""Copy a service's output into its log file, rotating the file by size while the service runs.

The supervisor starts one writer per service (``python -I logwriter.py LOG --max-bytes N``) in a session of
its own and gives the service the write end of a pipe as stdout and stderr. The writer appends what it reads
to ``LOG``; when the next chunk would take the file over ``--max-bytes`` it renames ``LOG`` to ``LOG.1`` (the
previous ``LOG.1`` to ``LOG.2``, up to ``--backups``) and starts a new ``LOG``. A service's log therefore
never holds more than about ``max_bytes × (backups + 1)`` (plus one read chunk), however long it runs.

It exits when every holder of the pipe has closed it (the service and its children are gone), so stopping a
service needs nothing extra; it ignores SIGINT and SIGHUP (a Ctrl-C meant for ``mur up``), and it keeps
draining the pipe when the disk refuses a write, so a full disk never blocks or kills a service.
Standard library only: it is started by path, without importing ``mur``.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from logging.handlers import RotatingFileHandler
from pathlib import Path

CHUNK = 64 * 1024


def copy(source: int, path: Path, max_bytes: int, backups: int = 1) -> None:
    """Append everything read from ``source`` to ``path`` until EOF, rotating at ``max_bytes``.

    The bytes pass through as they are (undecodable ones round-trip through ``surrogateescape``)."""
    handler = RotatingFileHandler(
        path, maxBytes=max_bytes, backupCount=backups, encoding="utf-8", errors="surrogateescape"
    )
    handler.terminator = ""
    if backups < 1:  # no backups: a rollover truncates the log
        handler.mode = "w"
    logging.raiseExceptions = False  # disk full or the like: drop this chunk, keep the service running
    try:
        while chunk := os.read(source, CHUNK):
            handler.emit(logging.makeLogRecord({"msg": chunk.decode("utf-8", "surrogateescape")}))
    finally:
        handler.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("log", type=Path)
    parser.add_argument("--max-bytes", type=int, required=True)
    parser.add_argument("--backups", type=int, default=1)
    args = parser.parse_args(argv)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    copy(sys.stdin.fileno(), args.log, args.max_bytes, args.backups)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
