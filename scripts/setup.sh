#!/usr/bin/env bash
# Creates .venv (once), installs n2n with its test tools, and makes sure the
# default data set (Fashion-MNIST) is on disk. Safe to run again: it skips what is done.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
PIP=(.venv/bin/python -m pip --disable-pip-version-check -q)

# Install the pinned CPU build of torch first where it is at hand: letting pip pick
# torch freely pulls a multi-GB CUDA build. Any torch >= 2.2 works.
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  "${PIP[@]}" install "torch==2.13.0" || "${PIP[@]}" install "torch>=2.2"
fi
# ray: the --executor ray tests fail under CI=true without it
"${PIP[@]}" install -e ".[test,onnx,ray]"

# Fashion-MNIST: the system package where we may install it; otherwise n2n downloads
# it into ~/.cache/n2n/data on first use.
FMNIST=/usr/share/datasets/fashion-mnist
if [ ! -f "$FMNIST/train-images-idx3-ubyte.gz" ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist) >/dev/null || \
    echo "setup: could not install dataset-fashion-mnist; n2n will try to download the data set" >&2
fi
