#!/bin/bash
# `make demo`: a 12-task sweep on the local backend, one failure, a rerun, the results, and a report.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
work="${DEMO_DIR:-$(mktemp -d "${TMPDIR:-/tmp}/onager-demo.XXXXXX")}"
cp "$here/train.py" "$work/"
cd "$work"
python="$(command -v python3 || command -v python)"
# print a command as it can be pasted into a shell (quoted with shlex), then run it
run() {
    printf '\n\033[1m$ %s\033[0m\n' "$("$python" -c 'import shlex, sys; print(shlex.join(sys.argv[1:]))' "$@")"
    "$@"
}

run onager prelaunch +jobname demo +command "python train.py" +arg --lr 0.1 1.0 3.0 +arg --seed 0 1 2 3 \
    +tag --run-tag
run onager launch --backend local --jobname demo --max-tasks 2 || echo "(exit code $?: a task failed, as planned)"
run onager list demo --hide command
run onager logs demo 6 --err
run onager launch --backend local --jobname demo --tasklist failed
run onager list demo --summary
if onager help results >/dev/null 2>&1; then
    run onager results demo --group-by lr --sort -accuracy
fi
run onager report demo -o "$work/demo_report.html"
printf '\nThe demo ran in %s (delete it when done).\n' "$work"
printf 'Its report: %s\n' "$work/demo_report.html"
