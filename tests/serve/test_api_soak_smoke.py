"""``benchmarks/soak.py --smoke`` (20 s of load, a sample every 5 s) against the test stack with the Serve
tests' app (``serve_stack``, tests/serve/conftest.py) deployed on it: every core service's memory and every
disk item are numbers, the load is answered. Named to run before ``test_multiplex.py`` (tests/serve/conftest.py says why).
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from serve_helpers import ServeStack

from mur.settings import PROJECT_ROOT

CORE = ("s3", "mlflow", "redis", "ray")


@pytest.mark.serve
@pytest.mark.timeout(900)
def test_soak_smoke_samples_memory_and_disk(serve_stack: ServeStack, tmp_path: Path) -> None:
    out = tmp_path / "soak.json"
    command = [sys.executable, str(PROJECT_ROOT / "benchmarks" / "soak.py"), "--smoke", "--out", str(out)]
    command += ["--database", serve_stack.settings.db.pg_database, "--pair", serve_stack.pair]
    env = {**os.environ, "MUR_SERVE_PORT": str(urlsplit(serve_stack.url).port)}
    proc = subprocess.run(command, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"soak.py --smoke exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    result = json.loads(out.read_text())
    assert len(result["samples"]) >= 4, proc.stdout
    for name in CORE:
        row = result["memory"][name]
        assert 0 < row["start"] <= row["max"] and 0 < row["end"] <= row["max"], (name, row)
        assert math.isfinite(row["slope_mb_per_h"]) and row["rss_start"] >= 0.9 * row["start"], (name, row)
        assert re.search(
            rf"^{name}\s+[\d.]+\s+[\d.]+\s+[\d.]+\s+[-+][\d.]+ ± (?:[\d.]+|nan)", proc.stdout, re.M
        )
    for item in ("s3 data", "redis data", "ray data", "logs", "runtime dir (all)"):
        assert result["disk_mb"][item]["start"] > 0 and result["disk_mb"][item]["end"] > 0, item
    sent, failed = result["requests"]["sent"], result["requests"]["failed"]
    assert sent >= 150 and failed <= sent // 20, result["requests"]  # 20 s at 10/s, nearly all answered
    assert result["samples"][-1]["market"] >= result["samples"][0]["market"], "market time never goes back"
