#!/usr/bin/env bash
# Sets up the environment and runs the whole test suite. Extra arguments go to pytest,
# e.g. `bash scripts/test.sh -m "not slow"` for the fast path.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m pytest "$@"
