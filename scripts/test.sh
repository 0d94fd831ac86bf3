#!/usr/bin/env bash
# The whole test suite, on a fresh machine with only Python, a compiler and the package registries:
#   ./scripts/test.sh
# It makes its own virtual environment (.venv, or $HOMEFORGE_VENV), installs homeforge and the
# test-only references (torch CPU, transformers, tiktoken, tokenizers, hypothesis, MPI), runs the
# C++ unit tests under AddressSanitizer+UBSan, then pytest (which also executes the notebooks).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=$(realpath -m "${HOMEFORGE_VENV:-.venv}")
PY=${PYTHON:-python3}
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
export PIP_DISABLE_PIP_VERSION_CHECK=1
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q "torch==2.13.0"            # the CPU build (no CUDA packages)
"$VENV/bin/python" -m pip install -q ".[test,mpi]"
"$VENV/bin/python" -m pip install -q "onednn-devel-cpu-tbb==2023.2.0" "tbb-devel==2021.13.1"  # headers for the C++ tests

echo "== C++ unit tests (ASan + UBSan)"
cmake -S . -B build/cpp-tests -DCMAKE_BUILD_TYPE=RelWithDebInfo -DHOMEFORGE_BUILD_PYTHON=OFF \
  -DHOMEFORGE_BUILD_CPP_TESTS=ON -DHOMEFORGE_SANITIZE=ON -DPython_EXECUTABLE="$VENV/bin/python" >/dev/null
cmake --build build/cpp-tests -j "$(nproc)" >/dev/null
LIBS=$("$VENV/bin/python" -c 'import sys, os; print(os.path.join(sys.prefix, "lib"))')
ASAN_OPTIONS=detect_leaks=0 LD_LIBRARY_PATH="$LIBS" ctest --test-dir build/cpp-tests --output-on-failure

echo "== pytest"
# Run from a directory outside the source tree so `import homeforge` is the installed package.
cd tests
exec "$VENV/bin/python" -m pytest -c ../pyproject.toml --rootdir .. .. "$@"
