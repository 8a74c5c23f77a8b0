#!/bin/bash
# Start every job engine the integration tests use, on localhost:
#   slurm   ci/start-slurm.sh
#   sge     ci/start-sge.sh
#   sshd-a  ci/start-sshd.sh on 127.0.0.1:2222, dir /tmp/ci-sshd-a
#   sshd-b  ci/start-sshd.sh on 127.0.0.1:2223, dir /tmp/ci-sshd-b
# and print how long each took.  An engine that does not come up is reported
# ("ENGINE <name> FAILED") and left out of the summary, so that its tests skip;
# the others are still started, and this script exits 0.
#
# Summary (can be sourced): $ONAGER_ENGINES_ENV (default /tmp/onager-engines.env)
#   ONAGER_TEST_SLURM=1
#   ONAGER_TEST_SGE=1
#   ONAGER_TEST_SSHD_A=/tmp/ci-sshd-a
#   ONAGER_TEST_SSHD_A_PORT=2222
#   ONAGER_TEST_SSHD_B=/tmp/ci-sshd-b
#   ONAGER_TEST_SSHD_B_PORT=2223
# Each engine's output also goes to $ONAGER_ENGINES_LOGDIR/<name>.log
# (default /tmp/onager-engines-logs).
#
# Environment knobs:
#   ONAGER_ENGINES        engines to start (default "slurm sge sshd-a sshd-b")
#   ONAGER_ENGINE_TIMEOUT seconds one engine may take (default 900)
#   and those of the start scripts (SLURM_MAX_ARRAY_SIZE, SLURM_EXTRA_CONF,
#   SGE_MAX_AJ_TASKS, SGE_ALLOW_ROOT).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ENV_FILE="${ONAGER_ENGINES_ENV:-/tmp/onager-engines.env}"
LOG_DIR="${ONAGER_ENGINES_LOGDIR:-/tmp/onager-engines-logs}"
ENGINES="${ONAGER_ENGINES:-slurm sge sshd-a sshd-b}"
TIMEOUT="${ONAGER_ENGINE_TIMEOUT:-900}"
log() { echo "[start-engines] $*"; }
mkdir -p "$LOG_DIR"

SUMMARY=()     # lines of the env file
REPORT=()      # one line per engine for the final table
now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }

# run_engine NAME [VAR=VALUE ...] SCRIPT: rc 0 when the engine came up
run_engine() {
    local name="$1"; shift
    local t0 rc=0 dt
    log "starting $name"
    t0="$(now)"
    { timeout -k 10 "$TIMEOUT" setsid env "$@" </dev/null 2>&1 | tee "$LOG_DIR/$name.log"; } || rc=$?
    dt="$(secs "$t0" "$(now)")"
    if [ "$rc" = 0 ]; then
        log "engine $name up in $dt s"
        REPORT+=("$(printf '%-7s up      %6s s' "$name" "$dt")")
    else
        [ "$rc" = 124 ] && log "engine $name timed out after $TIMEOUT s"
        log "ENGINE $name FAILED (exit $rc after $dt s); its tests will be skipped; log: $LOG_DIR/$name.log"
        REPORT+=("$(printf '%-7s FAILED  %6s s  (exit %s, log %s)' "$name" "$dt" "$rc" "$LOG_DIR/$name.log")")
        SUMMARY+=("# $name: failed to start (exit $rc), see $LOG_DIR/$name.log")
    fi
    return "$rc"
}

T0="$(now)"
for e in $ENGINES; do
    case "$e" in
        slurm)
            if run_engine slurm "$HERE/start-slurm.sh"; then SUMMARY+=("ONAGER_TEST_SLURM=1"); fi ;;
        sge)
            if run_engine sge "$HERE/start-sge.sh"; then SUMMARY+=("ONAGER_TEST_SGE=1"); fi ;;
        sshd-a)
            if run_engine sshd-a SSHD_PORT=2222 SSHD_DIR=/tmp/ci-sshd-a "$HERE/start-sshd.sh"; then
                SUMMARY+=("ONAGER_TEST_SSHD_A=/tmp/ci-sshd-a" "ONAGER_TEST_SSHD_A_PORT=2222")
            fi ;;
        sshd-b)
            if run_engine sshd-b SSHD_PORT=2223 SSHD_DIR=/tmp/ci-sshd-b "$HERE/start-sshd.sh"; then
                SUMMARY+=("ONAGER_TEST_SSHD_B=/tmp/ci-sshd-b" "ONAGER_TEST_SSHD_B_PORT=2223")
            fi ;;
        *)
            log "ENGINE $e FAILED: unknown engine (known: slurm sge sshd-a sshd-b)"
            REPORT+=("$(printf '%-7s FAILED  unknown engine' "$e")") ;;
    esac
done

tmp="$(mktemp "$ENV_FILE.XXXXXX")"
{
    echo "# written by ci/start-engines.sh at $(date -u +%Y-%m-%dT%H:%M:%SZ); engines that came up"
    if [ "${#SUMMARY[@]}" -gt 0 ]; then printf '%s\n' "${SUMMARY[@]}"; fi
} > "$tmp"
chmod 644 "$tmp"
mv -f "$tmp" "$ENV_FILE"

log "summary (total $(secs "$T0" "$(now)") s), written to $ENV_FILE:"
if [ "${#REPORT[@]}" -gt 0 ]; then printf '[start-engines]   %s\n' "${REPORT[@]}"; fi
exit 0
