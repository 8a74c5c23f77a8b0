#!/bin/bash
# `make mnist`: a 6-task sweep of mnist.py (3 learning rates x 2 seeds) on the local backend,
# then the results table sorted by accuracy.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
work="${MNIST_DIR:-$(mktemp -d "${TMPDIR:-/tmp}/onager-mnist.XXXXXX")}"
cp "$here/mnist.py" "$work/"
cd "$work"
export OMP_NUM_THREADS=1
set -x
onager prelaunch +jobname mnist6 +command "python mnist.py --epochs 1 --no-cuda --data-dir ${MNIST_DATA:-./data}" \
    +arg --lr 0.3 1.0 3.0 +arg --seed 0 1 +tag --run-tag
onager launch --backend local --jobname mnist6 --max-tasks 2
onager results mnist6 --sort -accuracy
set +x
echo "The sweep ran in $work."
