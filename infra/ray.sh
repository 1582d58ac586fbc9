#!/usr/bin/env bash
# Start the local Ray head (GCS $MUR_RAY_GCS_PORT=6380, dashboard/Jobs API $MUR_RAY_DASHBOARD_PORT=8265).
# Idempotent: a healthy service is left alone. Stop with: infra/services.sh stop ray
set -euo pipefail
exec "$(dirname "$0")/services.sh" start ray
