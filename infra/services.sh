#!/usr/bin/env bash
# Start, stop or inspect the local services (idempotent): infra/services.sh start|stop|status [NAMES...]
#   infra/services.sh start            # s3, mlflow, ray (and whatever later issues register)
#   infra/services.sh stop mlflow      # only mlflow
# Thin wrapper over `mur services …` (devstack/services.py, run by devstack/supervisor.py); logs in .runtime/logs, pids in .runtime/pids.
set -euo pipefail
cd "$(dirname "$0")/.."
action="${1:-}"
case "$action" in
  start|stop|status) shift ;;
  *) echo "usage: $0 start|stop|status [NAMES...]" >&2; exit 2 ;;
esac
if [ -x .venv/bin/mur ]; then MUR=(.venv/bin/mur); else MUR=(.venv/bin/python -m mur.cli); fi
exec "${MUR[@]}" services "$action" "$@"
