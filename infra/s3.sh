#!/usr/bin/env bash
# Start the object store (SeaweedFS, data under .runtime/s3/data; S3 API on $MUR_S3_PORT, 9000).
# Idempotent: a healthy service is left alone. Stop with: infra/services.sh stop s3
set -euo pipefail
exec "$(dirname "$0")/services.sh" start s3
