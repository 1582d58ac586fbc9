#!/usr/bin/env bash
# The test command (README + .ci/run): install, lint (ruff, mypy, beside the fast tier), then the tests in
# three tiers, each run only after the one before (and the lint) passed, each reported with its wall time:
#   fast tier      pytest -m fast: needs no service at all (pure code, bundled data, model, DAG definition,
#                  in-process fakes). Parallel workers (pytest-xdist).
#   postgres tier  pytest -m "pg and not (services or serve or browser or e2e or gpu)": the PostgreSQL
#                  (127.0.0.1:5432) and nothing else; every test in databases or with names of its own, so
#                  it runs in parallel workers too.
#   services tier  the rest: S3, MLflow, Ray, Airflow and Serve started by fixtures on a test stack (every
#                  port moved off the defaults, databases, runtime dir, bucket of its own, removed at the
#                  end unless MUR_KEEP_SERVICES=1: a developer's `mur up` stays untouched), headless
#                  Chromium, one test at a time; beside them, in a second pytest run, the whole stack end to
#                  end on private ports (tests/e2e), then the tests marked second_stack on a second test
#                  stack.
# The tier of a test is set at collection from its markers and fixtures (tests/conftest.py, whose
# TIER_EXPRESSIONS are the -m expressions below: tests/unit/test_tiers.py checks that they match and that
# every test is in exactly one tier).
#
# usage: bash infra/test.sh [--fast | --pg | --services] [pytest arguments...]
#   (or MUR_TEST_TIER=fast|pg|services|all; default all). Pytest arguments go to each tier that runs.
#   MUR_TEST_WORKERS: parallel workers of the fast and postgres tiers (default 2; 0: no xdist, and the
#   services tier's end-to-end test after the others, in the same run).
# No global reruns: only a test marked service_start is rerun, once, on a start-up or connection error, and
# each rerun is listed with its traceback ("rerun test summary info").
set -euo pipefail
cd "$(dirname "$0")/.."

TIER="${MUR_TEST_TIER:-all}"
case "${1:-}" in
  --fast) TIER=fast; shift ;;
  --pg) TIER=pg; shift ;;
  --services) TIER=services; shift ;;
esac
case "$TIER" in
  fast | pg | services | all) ;;
  *) echo "[test] unknown tier '$TIER' (fast, pg, services or all)" >&2; exit 2 ;;
esac
FAST_TIER="fast"
PG_TIER="pg and not (services or serve or browser or e2e or gpu)"
SERVICES_TIER="not fast and (services or serve or browser or e2e or gpu)"
WORKERS="${MUR_TEST_WORKERS:-2}"
PARALLEL=()
[ "$WORKERS" != 0 ] && PARALLEL=(-n "$WORKERS")

# The machine's speed, before anything else runs, beside the tier times below: runs on different machines can
# then be compared (one core, pure Python; 2026-11-24: 11 M steps/s on a machine that ran the fast tier in
# 145-161 s; 17-19 M steps/s on one that ran it in 84-99 s and the whole suite in 801-910 s; 5.5-6.3 M steps/s
# on one that ran the fast tier in 218 s and the whole suite in 1881 s).
python3 - <<'PY'
import os, time
began, total = time.perf_counter(), 0
for step in range(10_000_000):
    total += step
print(f"[test] machine: {os.cpu_count()} cores, {10 / (time.perf_counter() - began):.1f} M Python loop steps/s")
PY

# Headless Chromium for the browser tests (Debian package; Playwright drives it, nothing is downloaded):
# installed while the venv, the lint and the first tiers are, awaited before the services tier.
CHROMIUM_PID=""
if { [ "$TIER" = all ] || [ "$TIER" = services ]; } && ! command -v chromium >/dev/null 2>&1; then
  echo "[test] installing Debian's chromium for the browser tests (in the background)"
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  ( $SUDO apt-get update -qq >/dev/null && $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null ) &
  CHROMIUM_PID=$!
fi

# The whole machine's busy CPU (every process, the services' too; /proc/stat's user, nice, system, irq,
# softirq and steal, in USER_HZ 100) beside the wall times: a span's CPU-s over the cores is the least wall
# time that work could take on this machine, however it is run side by side.
busy() { awk '/^cpu /{print int(($2 + $3 + $4 + $7 + $8 + $9) / 100)}' /proc/stat; }
BUSY0=$(busy)
cpu_since() {  # "N CPU-s, X of C cores busy" since busy figure $1 at second $2
  awk -v c="$(($(busy) - $1))" -v w="$((SECONDS - $2))" -v n="$(nproc)" \
    'BEGIN { printf "%d CPU-s, %.2f of %d cores busy", c, (w > 0 ? c / w : 0), n }'
}

bash infra/install.sh
# Bytecode cached from here on, whatever the machine's PYTHONDONTWRITEBYTECODE: each pytest run would otherwise
# compile and assertion-rewrite all the test modules again (~14 against ~8 CPU-s a collection, one per worker
# and run), and each service, Ray worker and `mur` command the project's own modules.
unset PYTHONDONTWRITEBYTECODE
echo "[test] install: $SECONDS s wall ($(cpu_since "$BUSY0" 0))"
RAN=""
LOGS=$(mktemp -d)
trap 'rm -rf "$LOGS"' EXIT

# lint: ruff, then mypy (files and options: [tool.mypy] in pyproject.toml). Beside the fast tier when that
# runs (mypy is one process, the fast tier's workers leave room for it); nothing after them runs unless both
# passed.
lint() {
  local start=$SECONDS rc=0
  echo "[test] ruff"
  .venv/bin/ruff check . || rc=1
  .venv/bin/ruff format --check . >/dev/null || { echo "[test] ruff format would change files: run .venv/bin/ruff format ."; rc=1; }
  echo "[test] mypy"
  .venv/bin/mypy || rc=1
  echo "[test] lint: $((SECONDS - start)) s wall"
  return "$rc"
}
LINT_PID=""
if [ "$TIER" = all ] || [ "$TIER" = fast ]; then
  lint >"$LOGS/lint.out" 2>&1 &
  LINT_PID=$!
else
  lint || exit 1
fi
COLOR=()
[ -t 1 ] && COLOR=(--color=yes)

# run_tier NAME MARK_EXPRESSION [pytest arguments...]: run one tier, then one line with pytest's summary.
run_tier() {
  local name=$1 expr=$2 rc=0 start=$SECONDS summary
  shift 2
  echo "[test] $name tier: pytest -m \"$expr\""
  .venv/bin/pytest -m "$expr" --durations=25 "${COLOR[@]}" "$@" 2>&1 | tee "$LOGS/$name.log" || rc=$?
  summary=$(sed -E 's/\x1b\[[0-9;]*m//g' "$LOGS/$name.log" |
    grep -E '(passed|failed|errors?|skipped|deselected|no tests ran)[^=]* in [0-9.]+s' | tail -1 |
    sed -E 's/^=+ //; s/ =+$//' || true)
  if [ "$rc" = 5 ]; then  # pytest's "no tests collected": the arguments selected nothing in this tier
    summary="no test selected"
    rc=0
  fi
  echo "[test] $name tier: ${summary:-no summary (pytest exit $rc)}; $((SECONDS - start)) s wall"
  RAN="$RAN $name"
  return "$rc"
}

if [ "$TIER" = all ] || [ "$TIER" = fast ]; then
  FAST_RC=0 LINT_RC=0 FAST_BUSY=$(busy) FAST_START=$SECONDS
  run_tier fast "$FAST_TIER" "${PARALLEL[@]}" "$@" || FAST_RC=$?
  wait "$LINT_PID" || LINT_RC=$?
  echo "[test] fast tier and lint: $((SECONDS - FAST_START)) s wall ($(cpu_since "$FAST_BUSY" "$FAST_START"))"
  echo "[test] the lint, run beside the fast tier:"
  cat "$LOGS/lint.out"
  [ "$LINT_RC" = 0 ] || { echo "[test] lint failed: the postgres and services tiers did not run"; exit 1; }
  [ "$FAST_RC" = 0 ] || { echo "[test] fast tier failed: the postgres and services tiers did not run"; exit 1; }
fi
if [ "$TIER" = all ] || [ "$TIER" = pg ]; then
  PG_BUSY=$(busy) PG_START=$SECONDS
  run_tier postgres "$PG_TIER" "${PARALLEL[@]}" "$@" ||
    { echo "[test] postgres tier failed: the services tier did not run"; exit 1; }
  echo "[test] postgres tier: $(cpu_since "$PG_BUSY" "$PG_START")"
fi
if [ "$TIER" = all ] || [ "$TIER" = services ]; then
  if [ -n "$CHROMIUM_PID" ]; then
    wait "$CHROMIUM_PID" || { echo "[test] could not install Debian's chromium (the browser tests need it)"; exit 1; }
  fi
  export MUR_REQUIRE_BROWSER=1  # the browser tests fail (not skip) without Chromium
  SERVICES_START=$SECONDS SERVICES_BUSY=$(busy)
  if [ "$WORKERS" = 0 ]; then
    run_tier services "$SERVICES_TIER" --rerun-show-tracebacks "$@"
  else
    # Two pytest runs side by side, the services being mostly waited on (start-ups, Serve deployments, Ray
    # jobs, a market clock): in the foreground the shared services' tests on the first test stack, one at a
    # time; in the background the end-to-end test on its private stack (its own ports, runtime dir,
    # databases and pytest temp dir), then the tests marked second_stack on a second shared stack
    # (MUR_TEST_STACK_OFFSET, tests/conftest.py). One after the other: the end-to-end test's `mur up` and
    # health checks missed their deadlines with three stacks at once on two cores. The background output is
    # shown when both ended. Without arguments each background run collects only its own paths (collecting
    # all 1,200 tests costs ~15 CPU-s); with them, what they name.
    E2E_PATHS=() SECOND_PATHS=()
    if [ $# = 0 ]; then
      E2E_PATHS=(tests/e2e)
      read -r -a SECOND_PATHS <<<"$(.venv/bin/python tests/stack_ports.py)"
    fi
    (
      E2E_RC=0 SECOND_RC=0
      run_tier e2e "$SERVICES_TIER and e2e" --basetemp "$LOGS/e2e-tmp" --rerun-show-tracebacks -raRP \
        "${E2E_PATHS[@]}" "$@" >"$LOGS/e2e.out" 2>&1 || E2E_RC=$?
      MUR_TEST_STACK_OFFSET=second run_tier services-2 "$SERVICES_TIER and second_stack" \
        --basetemp "$LOGS/second-tmp" --rerun-show-tracebacks "${SECOND_PATHS[@]}" "$@" >"$LOGS/second.out" 2>&1 ||
        SECOND_RC=$?
      echo "$E2E_RC $SECOND_RC" >"$LOGS/background.rc"
    ) &
    BACKGROUND_PID=$!
    FIRST_RC=0
    run_tier services "$SERVICES_TIER and not e2e and not second_stack" --rerun-show-tracebacks "$@" || FIRST_RC=$?
    wait "$BACKGROUND_PID" || true
    SERVICES_WALL="$((SECONDS - SERVICES_START)) s wall ($(cpu_since "$SERVICES_BUSY" "$SERVICES_START"))"
    read -r E2E_RC SECOND_RC <"$LOGS/background.rc" || { E2E_RC=1; SECOND_RC=1; }
    echo "[test] the end-to-end test, run beside the services tier:"
    cat "$LOGS/e2e.out"
    echo "[test] then the second shared stack's tests, run beside the services tier:"
    cat "$LOGS/second.out" 2>/dev/null || true
    if [ "$FIRST_RC" != 0 ] || [ "$SECOND_RC" != 0 ] || [ "$E2E_RC" != 0 ]; then
      echo "[test] the services tier's failures, every run (the reasons are in each run's output above):"
      sed -E 's/\x1b\[[0-9;]*m//g' "$LOGS/services.log" "$LOGS/e2e.out" "$LOGS/second.out" 2>/dev/null |
        grep -E '^(FAILED|ERROR) ' | cut -c1-400 || true
      echo "[test] services tier failed (first shared stack: exit $FIRST_RC, second: exit $SECOND_RC," \
        "end to end: exit $E2E_RC)"
      exit 1
    fi
    echo "[test] services tier (two runs side by side): $SERVICES_WALL"
  fi
fi
# a tier that silently did not run must not read as passed
case "$TIER" in
  all) WANTED=" fast postgres services" ;;
  pg) WANTED=" postgres" ;;
  *) WANTED=" $TIER" ;;
esac
if [ "$RAN" != "$WANTED" ]; then
  echo "[test] tiers run:${RAN:- none}; expected:$WANTED" >&2
  exit 1
fi
echo "[test] passed ($TIER) in $SECONDS s wall ($(cpu_since "$BUSY0" 0))"
