#!/usr/bin/env bash
# Creates the application, MLflow and Airflow databases (names from MUR_PG_DATABASE, MUR_MLFLOW_DATABASE,
# MUR_AIRFLOW_DATABASE; defaults mur, mlflow, airflow) owned by POSTGRES_USER.
#
# The postgres image runs /docker-entrypoint-initdb.d/*.sh once, when the data volume is empty. It is
# idempotent, so it can also be run by hand against an existing or managed server:
#   PGHOST=… PGPASSWORD=… POSTGRES_USER=postgres bash infra/postgres/init-databases.sh
# Names are passed as psql variables and quoted with format('%I'): no SQL is built from strings here.
set -euo pipefail

user="${POSTGRES_USER:-postgres}"
for db in "${MUR_PG_DATABASE:-mur}" "${MUR_MLFLOW_DATABASE:-mlflow}" "${MUR_AIRFLOW_DATABASE:-airflow}"; do
  psql -v ON_ERROR_STOP=1 --no-psqlrc --username "$user" --dbname postgres -v db="$db" -v owner="$user" <<'SQL'
SELECT format('CREATE DATABASE %I OWNER %I', :'db', :'owner')
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'db')\gexec
SQL
  echo "init-databases: database \"$db\" ready"
done
