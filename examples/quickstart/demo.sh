#!/bin/bash
# `make demo`: a 12-task sweep on the local backend, one failure, a rerun, and the results.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
work="${DEMO_DIR:-$(mktemp -d "${TMPDIR:-/tmp}/onager-demo.XXXXXX")}"
cp "$here/train.py" "$work/"
cd "$work"
step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; }

step onager prelaunch +jobname demo +command "python train.py" +arg --lr 0.1 1.0 3.0 +arg --seed 0 1 2 3 +tag --run-tag
onager prelaunch +jobname demo +command "python train.py" +arg --lr 0.1 1.0 3.0 +arg --seed 0 1 2 3 +tag --run-tag

step onager launch --backend local --jobname demo --max-tasks 2
onager launch --backend local --jobname demo --max-tasks 2 || echo "(exit code $?: a task failed, as planned)"

step onager list --jobname demo --hide command
onager list --jobname demo --hide command

step onager logs demo 6 --err
onager logs demo 6 --err

step onager launch --backend local --jobname demo --tasklist failed
onager launch --backend local --jobname demo --tasklist failed

step onager list --jobname demo --summary
onager list --jobname demo --summary

if onager help results >/dev/null 2>&1; then
    step onager results demo --group-by lr --sort -accuracy
    onager results demo --group-by lr --sort -accuracy
fi
printf '\nThe demo ran in %s (delete it when done).\n' "$work"
