#!/usr/bin/env bash
# Developer build: compile the extension with CMake into build/dev and copy it into
# python/homeforge/, so `PYTHONPATH=python` imports the working tree. Usage:
#   scripts/dev_build.sh [python]        (default: python3 on PATH; needs the test deps installed)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${1:-python3}
cmake -S . -B build/dev -G Ninja -DCMAKE_BUILD_TYPE=Release -DPython_EXECUTABLE="$($PY -c 'import sys;print(sys.executable)')" \
  -Dpybind11_DIR="$($PY -m pybind11 --cmakedir)" ${HOMEFORGE_CMAKE_ARGS:-} >/dev/null
cmake --build build/dev -j "${HOMEFORGE_BUILD_JOBS:-2}"
cp -f build/dev/_core*.so python/homeforge/
