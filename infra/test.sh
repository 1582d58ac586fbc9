#!/usr/bin/env bash
# The test command (README + .ci/run): install everything, lint, then run the whole suite against real
# local services (PostgreSQL on 127.0.0.1:5432; S3, MLflow, Ray, Airflow, Serve are started by fixtures).
set -euo pipefail
cd "$(dirname "$0")/.."
bash infra/install.sh
# Headless Chromium for the browser tests (Debian package; Playwright drives it, nothing is downloaded).
if ! command -v chromium >/dev/null 2>&1; then
  echo "[test] installing Debian's chromium for the browser tests"
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq >/dev/null && $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
echo "[test] ruff"
.venv/bin/ruff check .
.venv/bin/ruff format --check . >/dev/null || { echo "[test] ruff format would change files: run .venv/bin/ruff format ."; exit 1; }
export MUR_REQUIRE_BROWSER=1  # the browser tests fail (not skip) without Chromium
echo "[test] pytest"
# Integration tests talk to real services on a 2-core machine: one retry absorbs a start-up hiccup
# (a test that fails twice fails the run).
exec .venv/bin/pytest --reruns 1 --reruns-delay 5 --durations=25 "$@"
