#!/usr/bin/env bash
# Start the MLflow tracking server on $MUR_MLFLOW_PORT (5000); starts s3 first.
# Idempotent: a healthy service is left alone. Stop with: infra/services.sh stop mlflow
set -euo pipefail
exec "$(dirname "$0")/services.sh" start mlflow
