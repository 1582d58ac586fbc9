"""Benchmark: how long Airflow takes to parse the project's dags/ folder, and what parsing imports.

    python benchmarks/dag_parse.py [--repeat 5]
    python benchmarks/dag_parse.py --smoke     # one repetition; the timing target is reported, not enforced

Each repetition runs in a fresh interpreter (like a DAG processor's parsing subprocess, which already has
Airflow loaded): it imports Airflow's DagBag, then times ``DagBag(dags/)``. Prints the import time, the
parse times (min / median / max), per-file durations, import errors and any heavy module (torch, ray,
mlflow, pandas, numpy) that parsing pulled in. Target: parse < 2 s, no heavy module, no import error.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HEAVY = ("torch", "ray", "mlflow", "pandas", "numpy", "onnxruntime", "sklearn")
PROBE = """
import json, sys, time
t0 = time.perf_counter()
from airflow.dag_processing.dagbag import DagBag
t1 = time.perf_counter()
bag = DagBag(dag_folder=sys.argv[1])
t2 = time.perf_counter()
stats = [{"file": s.file, "seconds": s.duration.total_seconds(), "dags": s.dag_num, "tasks": s.task_num}
         for s in bag.dagbag_stats]
print(json.dumps({"import_s": t1 - t0, "parse_s": t2 - t1, "files": stats,
                  "errors": {k: str(v) for k, v in bag.import_errors.items()}, "dags": sorted(bag.dags),
                  "heavy": sorted(m for m in HEAVY_MODULES if m in sys.modules)}))
""".replace("HEAVY_MODULES", repr(HEAVY))


def run_once(dags: Path, env: dict[str, str]) -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, str(dags)], capture_output=True, text=True, env=env, timeout=300
    )
    if proc.returncode != 0:
        raise SystemExit(f"probe failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--dags", type=Path, default=ROOT / "dags")
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="one repetition; fails on an import error or a heavy module, not on the time (CI: a busy "
        "machine is no regression)",
    )
    args = parser.parse_args()
    if args.smoke:
        args.repeat = 1
    with tempfile.TemporaryDirectory(prefix="mur-dag-parse-") as home:
        env = {
            **os.environ,
            "AIRFLOW_HOME": home,
            "AIRFLOW__CORE__DAGS_FOLDER": str(args.dags),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        }
        runs = [run_once(args.dags, env) for _ in range(args.repeat)]
    parse = [r["parse_s"] for r in runs]
    imports = [r["import_s"] for r in runs]
    last = runs[-1]
    print(f"dags folder        : {args.dags}")
    print(f"DAGs               : {', '.join(last['dags']) or '(none)'}")
    print(f"airflow import     : median {statistics.median(imports):.2f} s (paid once by the DAG processor)")
    print(
        f"parse dags/        : min {min(parse):.3f} s | median {statistics.median(parse):.3f} s | "
        f"max {max(parse):.3f} s over {len(parse)} fresh interpreters (target < 2 s)"
    )
    for f in last["files"]:
        print(f"  {f['file']:<40} {f['seconds']:.3f} s  {f['dags']} DAG(s), {f['tasks']} task(s)")
    print(f"import errors      : {last['errors'] or 'none'}")
    print(f"heavy modules      : {', '.join(last['heavy']) or 'none'} (target: none)")
    fast = max(parse) < 2.0
    ok = (fast or args.smoke) and not last["errors"] and not last["heavy"] and bool(last["dags"])
    note = " (smoke: the time is not checked)" if args.smoke and ok and not fast else ""
    print("result             :", ("OK" if ok else "FAIL") + note)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
