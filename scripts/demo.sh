#!/usr/bin/env bash
# Sets up the environment and runs the main job on the embedded default: compress the
# conv4 Fashion-MNIST teacher (shipped in teachers/, retrained if missing) into a small
# student, and print teacher against student.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
TEACHER=teachers/conv4-fashion-mnist.pt
if [ ! -f "$TEACHER" ]; then
  .venv/bin/n2n train-teacher --model conv4 --dataset fashion-mnist --seed 0 --out "$TEACHER"
fi
RUN=runs/demo-$(date +%Y%m%d-%H%M%S)
.venv/bin/n2n compress --teacher "$TEACHER" --config experiments/demo.yaml --seed 0 --out "$RUN"
echo "plots and report: $RUN/report.md"
