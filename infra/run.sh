#!/usr/bin/env bash
# The main command (README): install, bring up the whole local stack and train the bundled pairs, then show
# what the API forecasts now: the median and the 90 % range at every horizon of every pair (mur forecast --all).
set -euo pipefail
cd "$(dirname "$0")/.."
bash infra/install.sh
for arg in "$@"; do
    case "$arg" in -h | --help) exec .venv/bin/mur up "$@" ;; esac
done
.venv/bin/mur up "$@"
echo "  MLflow UI login: mur-admin (its password: mur mlflow password; docs/services.md, MLflow accounts)"
echo "  forecasts now, every horizon with its range (again: mur forecast --all --stack-token):"
# the token: MUR_API_TOKEN, else ~/.config/mur/token, else the stack's own check token (--stack-token)
.venv/bin/mur forecast --all --stack-token ||
    echo "  (no forecast to show: the API is not serving yet; try mur forecast --all --stack-token later)"
