"""``mur pairs add SYMBOL --csv FILE``: an upload that breaks a rule is refused with one line saying where
(a gap, a bad or missing column, too little history before market now, a time off the hour), exit 1, no
traceback, before any database is asked (the PostgreSQL port here is closed)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from pair_csv import pair_csv_text, write_pair_csv

pytestmark = pytest.mark.fast

MUR = str(Path(sys.executable).parent / "mur")


def mur(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MUR_")}
    env |= {
        "MUR_RUNTIME_DIR": str(tmp_path / "runtime"),
        "MUR_CLOCK_START": "2026-01-01T00:00:00Z",
        "MUR_CLOCK_SPEED": "0",
        "MUR_PAIR_MIN_HISTORY_HOURS": "240",
        "MUR_PG_PORT": "9",  # nothing listens: a rule must refuse the upload before the database is asked
        "COLUMNS": "200",
    }
    return subprocess.run([MUR, *args], env=env, capture_output=True, text=True, timeout=120)


CASES = {
    "gap": (
        lambda: pair_csv_text(300, drop=(100, 101, 102, 200)),
        r"^error: doge\.csv has 4 missing hour\(s\): the first gap is 3 h from 2024-01-05T04:00:00Z; ",
    ),
    "missing column": (
        lambda: pair_csv_text(300, header="timestamp,open,high,low,last,volume"),
        r"^error: candles CSV doge\.csv is missing column\(s\): close \(need timestamp, open, high, low, close",
    ),
    "not a number": (
        lambda: pair_csv_text(300).replace(",1010\n", ",lots\n"),
        r"^error: column 'volume' has non-numeric value 'lots' at line 12$",
    ),
    "too little history": (
        lambda: pair_csv_text(100),
        r"^error: doge\.csv has too little history: 100 hourly candle\(s\) before market now "
        r"\(2026-01-01T00:00:00Z\), need at least 240 \(10 days, MUR_PAIR_MIN_HISTORY_HOURS\)$",
    ),
    "off the hour": (
        lambda: pair_csv_text(300).replace("\n1704067200000,", "\n1704067230000,", 1),
        r"^error: doge\.csv: open time 2024-01-01T00:00:30Z \(row 1\) is not on a whole hour",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_bad_upload_is_refused_in_one_line(tmp_path: Path, case: str) -> None:
    make, message = CASES[case]
    path = tmp_path / "doge.csv"
    path.write_text(make())
    proc = mur(tmp_path, "pairs", "add", "DOGEUSDT", "--csv", str(path))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert re.search(message, lines[0]), lines[0]


def test_a_csv_pair_needs_offline_market_data_and_a_new_name(tmp_path: Path) -> None:
    csv = write_pair_csv(tmp_path / "btc.csv", 300)
    proc = mur(tmp_path, "pairs", "add", "BTCUSDT", "--csv", str(csv))
    assert proc.returncode == 1 and proc.stderr.strip() == (
        "error: btc_usdt is bundled: add it without a CSV (mur pairs add BTCUSDT)"
    ), proc.stderr
    proc = mur(tmp_path, "pairs", "add", "not a symbol", "--csv", str(csv))
    assert proc.returncode == 1 and len(proc.stderr.strip().splitlines()) == 1
    assert proc.stderr.startswith("error: invalid symbol 'not a symbol'"), proc.stderr
