#!/usr/bin/env bash
# Sets up the environment and runs the main job on the embedded default: compress the
# conv4 Fashion-MNIST teacher (shipped in teachers/, retrained if missing) to a tenth of
# its parameters, prune it uniformly to the same budget for comparison, give both the same
# final distillation, and print teacher, n2n's student and the pruned student side by side.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
TEACHER=teachers/conv4-fashion-mnist.pt
if [ ! -f "$TEACHER" ]; then
  .venv/bin/n2n train-teacher --model conv4 --dataset fashion-mnist --seed 0 --out "$TEACHER"
fi
RUN=runs/demo-$(date +%Y%m%d-%H%M%S)
SEARCH=(--teacher "$TEACHER" --compression 10 --seed 0)
.venv/bin/n2n compress "${SEARCH[@]}" --out "$RUN"
echo "uniform L1 pruning to the same budget, with the same final distillation:"
.venv/bin/n2n compress "${SEARCH[@]}" --method prune --out "$RUN/prune" --quiet
echo
echo "teacher, n2n's student, uniformly pruned student (test split):"
.venv/bin/n2n evaluate --model "$TEACHER" "$RUN/student.pt" "$RUN/prune/student.pt" --no-latency
echo "plots and report: $RUN/report.md"
