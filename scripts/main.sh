#!/usr/bin/env bash
# The main job, on a fresh machine with only Python, a compiler and the package registries:
#   ./scripts/main.sh [homeforge demo options]
# It makes its own virtual environment (.venv, or $HOMEFORGE_VENV), installs homeforge, and runs
# `homeforge demo`: train a tokenizer and a small model on the running Python's standard-library
# sources, print the falling loss and a sample, and save a checkpoint.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=$(realpath -m "${HOMEFORGE_VENV:-.venv}")
PY=${PYTHON:-python3}
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
export PIP_DISABLE_PIP_VERSION_CHECK=1
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q .
exec "$VENV/bin/homeforge" demo "$@"
