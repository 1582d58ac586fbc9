#!/usr/bin/env bash
# Create/update the project's virtual environment (.venv) idempotently.
# torch stays on the local CPU wheel when /opt/wheels has one (an unpinned torch pulls GBs of CUDA).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${MUR_VENV:-.venv}"
PY="${PYTHON:-python3.11}"
command -v "$PY" >/dev/null 2>&1 || PY=python3

if ! command -v uv >/dev/null 2>&1 && [ ! -x "$HOME/.local/bin/uv" ]; then
  echo "[install] installing uv (fast resolver) from PyPI"
  "$PY" -m pip install --quiet --user uv || "$PY" -m pip install --quiet uv
fi
UV="$(command -v uv || echo "$HOME/.local/bin/uv")"

if [ ! -x "$VENV/bin/python" ]; then
  echo "[install] creating $VENV"
  "$UV" venv --quiet --python "$PY" "$VENV"
fi
export VIRTUAL_ENV="$PWD/$VENV"

CONSTRAINTS=(-c constraints.txt)
TORCH_WHEEL=$(ls /opt/wheels/torch-2.13.0+cpu-*.whl 2>/dev/null | head -1 || true)
if [ -n "$TORCH_WHEEL" ]; then
  echo "torch @ file://$TORCH_WHEEL" > "$VENV/torch-constraint.txt"
  CONSTRAINTS+=(-c "$VENV/torch-constraint.txt")
fi

stamp="$VENV/.mur-installed"
want=$(cat pyproject.toml devstack/pyproject.toml constraints.txt | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ "${MUR_FORCE_INSTALL:-0}" != 1 ]; then
  echo "[install] environment up to date ($VENV)"
  exit 0
fi
echo "[install] resolving and installing dependencies into $VENV (first time: ~1-3 min)"
# --compile-bytecode: write .pyc files now (PYTHONDONTWRITEBYTECODE may be set; every Ray worker and
# Airflow task would otherwise recompile Airflow/Ray/MLflow on import). The product, then the local platform
# (mur up, mur services: devstack/, a distribution of its own that the product's wheel and images leave out).
"$UV" pip install --quiet --compile-bytecode "${CONSTRAINTS[@]}" -e ".[dev]" -e ./devstack
echo "$want" > "$stamp"
echo "[install] done: $("$VENV/bin/python" -c 'import torch, ray, mlflow, airflow; print(f"torch {torch.__version__}, ray {ray.__version__}, mlflow {mlflow.__version__}, airflow {airflow.__version__}")')"
