#!/usr/bin/env bash
# One-shot Airflow setup for docker-compose (service airflow-init); the other Airflow services start after it
# exits 0 (depends_on: condition: service_completed_successfully).
#
# 1. `airflow db migrate` on the metadata DB (AIRFLOW__DATABASE__SQL_ALCHEMY_CONN); idempotent.
# 2. the admin's password for Airflow's simple auth manager: writes {"$MUR_AIRFLOW_USER": "$MUR_AIRFLOW_PASSWORD"}
#    to $AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE (mode 600, on the airflow-auth volume that the
#    api-server mounts), so the api-server uses it instead of generating one. The same user/password is what
#    mur (Dash's admin page, `mur` CLI) sends to POST /auth/token. AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS
#    must name the same user with the admin role.
set -euo pipefail
: "${MUR_AIRFLOW_PASSWORD:?set MUR_AIRFLOW_PASSWORD in .env}"
: "${AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE:?}"

echo "airflow-init: migrating the metadata database"
airflow db migrate

python - <<'PY'
import json
import os

path = os.environ["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"]
user = os.environ.get("MUR_AIRFLOW_USER") or "admin"
os.makedirs(os.path.dirname(path), exist_ok=True)
fd = os.open(path + ".tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
with os.fdopen(fd, "w") as fh:
    json.dump({user: os.environ["MUR_AIRFLOW_PASSWORD"]}, fh)
os.replace(path + ".tmp", path)
print(f"airflow-init: password of Airflow user {user!r} written to {path}")
PY
