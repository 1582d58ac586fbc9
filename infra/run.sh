#!/usr/bin/env bash
# The main command (README): install, then bring up the whole local stack and train the bundled pairs.
set -euo pipefail
cd "$(dirname "$0")/.."
bash infra/install.sh
exec .venv/bin/mur up "$@"
