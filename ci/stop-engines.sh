#!/bin/bash
# Stop what ci/start-slurm.sh, ci/start-sge.sh and ci/start-sshd.sh started,
# each daemon by the PID in its own pid file (never by process name).
# Safe to run again and when nothing runs.
#
#   ci/stop-engines.sh                 everything: Slurm (and munge), SGE, and the
#                                      sshd of /tmp/ci-sshd-a, /tmp/ci-sshd-b, /tmp/ci-sshd
#   ci/stop-engines.sh WHAT ...        only what is named, WHAT being
#                                      slurm | sge | sshd (the three default dirs) | SSHD_DIR
#   e.g. ci/stop-engines.sh /tmp/ci-sshd-b     ci/stop-engines.sh slurm sge
#
# SSH control masters (ControlPersist) of a stopped sshd's directory are asked to exit.
set -euo pipefail
log() { echo "[stop-engines] $*" >&2; }

DEFAULT_SSHD_DIRS=(/tmp/ci-sshd-a /tmp/ci-sshd-b /tmp/ci-sshd)
[ "$#" -gt 0 ] || set -- sshd slurm sge
SSHD_DIRS=(); STOP_SLURM=0; STOP_SGE=0
for a in "$@"; do
    case "$a" in
        slurm) STOP_SLURM=1 ;;
        sge)   STOP_SGE=1 ;;
        sshd)  SSHD_DIRS+=("${DEFAULT_SSHD_DIRS[@]}") ;;
        /*)    SSHD_DIRS+=("$a") ;;
        *)     log "unknown argument '$a' (slurm, sge, sshd or an absolute SSHD_DIR)"; exit 2 ;;
    esac
done

proc_state() { sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1; }
alive() {   # PID COMM; a zombie counts as dead
    [ "$(cat "/proc/$1/comm" 2>/dev/null)" = "$2" ] || return 1
    local s; s="$(proc_state "$1")"; [ -n "$s" ] && [ "$s" != Z ]
}
stop() {    # PIDFILE COMM [SECONDS]
    local f="$1" comm="$2" wait="${3:-30}" p i
    [ -s "$f" ] || return 0
    p="$(cat "$f" 2>/dev/null || true)"
    if [[ "$p" =~ ^[0-9]+$ ]] && alive "$p" "$comm"; then
        log "stopping $comm pid $p ($f)"
        kill "$p" 2>/dev/null || true
        for i in $(seq 1 $((wait * 10))); do alive "$p" "$comm" || break; sleep 0.1; done
        if alive "$p" "$comm"; then
            log "$comm pid $p still alive after $wait s; sending KILL"
            kill -9 "$p" 2>/dev/null || true
        fi
    fi
    rm -f "$f"
}

for d in ${SSHD_DIRS[@]+"${SSHD_DIRS[@]}"}; do
    d="${d%/}"
    [ -d "$d" ] || continue
    for sock in "$d"/cm-*; do   # control masters from $d/ssh_config
        [ -S "$sock" ] || continue
        ssh -o ControlPath="$sock" -O exit ci-sshd >/dev/null 2>&1 || true
        rm -f "$sock"
    done
    stop "$d/sshd.pid" sshd 10
done

if [ "$STOP_SLURM" = 1 ]; then
    stop /run/slurm/slurmd.pid slurmd
    stop /run/slurm/slurmctld.pid slurmctld
    stop /run/munge/munged.pid munged
fi
if [ "$STOP_SGE" = 1 ]; then
    for f in /var/spool/gridengine/execd/*/execd.pid; do
        if [ -e "$f" ]; then stop "$f" sge_execd 30; fi
    done
    stop /var/spool/gridengine/qmaster/qmaster.pid sge_qmaster 60
fi
exit 0
