#!/bin/bash
# `make mnist-tune`: an adaptive search (+tune, Optuna's TPE) over mnist.py's learning rate and
# gamma, run by two agents on the local backend, then the best trials by test loss.
# MNIST_TUNE_TRIALS sets the number of trials (default 12); it needs `pip install 'onager[tune]'`.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
work="${MNIST_DIR:-$(mktemp -d "${TMPDIR:-/tmp}/onager-mnist-tune.XXXXXX")}"
cp "$here/mnist.py" "$work/"
cd "$work"
export OMP_NUM_THREADS=1
set -x
onager prelaunch +jobname mnist-tune \
    +command "python mnist.py --epochs 1 --no-cuda --log-interval 0 --data-dir ${MNIST_DATA:-./data}" \
    +arg --lr +loguniform 0.03 10 +arg --gamma +uniform 0.5 0.95 \
    +tune "${MNIST_TUNE_TRIALS:-12}" +metric min:loss +seed 0 +tag --run-tag +quiet
onager launch --backend local --jobname mnist-tune --agents 2
onager results mnist-tune --status done --sort loss --top 5
set +x
echo "The search ran in $work."
