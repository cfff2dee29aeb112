#!/usr/bin/env bash
# Sets up the environment and runs the main job on the embedded default:
# train (or reuse) the conv4 teacher on Fashion-MNIST and report its accuracy.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
TEACHER=teachers/conv4-fashion-mnist.pt
if [ ! -f "$TEACHER" ]; then
  .venv/bin/n2n train-teacher --model conv4 --dataset fashion-mnist --seed 0 --out "$TEACHER"
fi
.venv/bin/n2n evaluate --model "$TEACHER"
