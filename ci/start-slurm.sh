#!/bin/bash
# Start a single-node Slurm cluster on this host (Debian 12 packages:
# slurm-wlm 22.05 + munge), without systemd and without an accounting
# database.  Run as root.  Safe to run again: with an unchanged config and
# live daemons it only checks that a job runs; a changed config restarts
# slurmctld and slurmd (MaxArraySize, for one, is only read at start).
#
# Result: node $(hostname -s) with all CPUs, partition "debug" (default).
#
# Environment knobs:
#   SLURM_MAX_ARRAY_SIZE  MaxArraySize (unset: Slurm's default, 1001).  The
#                         largest array index accepted is this value minus 1.
#   SLURM_EXTRA_CONF      extra lines appended to slurm.conf
#
# Files: /etc/slurm/slurm.conf, logs /var/log/slurm/slurm{ctld,d}.log,
# pid files /run/slurm/slurm{ctld,d}.pid and /run/munge/munged.pid.
# Stop with ci/stop-engines.sh.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
NAME=start-slurm
log() { echo "[$NAME] $*" >&2; }
die() { log "ERROR: $*"; exit 1; }
[ "$(id -u)" = 0 ] || die "must run as root"

CLEANUP=()
cleanup() { local c; for c in "${CLEANUP[@]}"; do eval "$c" || true; done; }
trap cleanup EXIT

# State of a process from /proc/PID/stat (the field after "(comm)").
proc_state() { sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1; }
# pid_alive PIDFILE COMM: the daemon in PIDFILE runs.  A zombie counts as dead:
# PID 1 in a container often does not reap orphans.
pid_alive() {
    local p; [ -s "$1" ] || return 1; p="$(cat "$1" 2>/dev/null)"
    [[ "$p" =~ ^[0-9]+$ ]] || return 1
    [ "$(cat "/proc/$p/comm" 2>/dev/null)" = "$2" ] || return 1
    local s; s="$(proc_state "$p")"; [ -n "$s" ] && [ "$s" != Z ]
}
# stop_pidfile PIDFILE COMM: stop that daemon (TERM, then KILL after 30 s).
stop_pidfile() {
    if pid_alive "$1" "$2"; then
        local p i; p="$(cat "$1")"
        log "stopping $2 (pid $p)"
        kill "$p" 2>/dev/null || true
        for i in $(seq 1 300); do pid_alive "$1" "$2" || break; sleep 0.1; done
        if pid_alive "$1" "$2"; then log "$2 (pid $p) ignored TERM; sending KILL"; kill -9 "$p" 2>/dev/null || true; sleep 0.5; fi
    fi
    rm -f "$1"
}
apt_install() {
    local out; out="$(mktemp)"; CLEANUP+=("rm -f '$out'")
    if [ ! -e /usr/sbin/policy-rc.d ]; then   # keep the postinst scripts from starting services
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d
        CLEANUP+=("rm -f /usr/sbin/policy-rc.d")
    fi
    local apt=(apt-get -y -q -o DPkg::Lock::Timeout=300)
    if ! "${apt[@]}" install --no-install-recommends "$@" >"$out" 2>&1; then
        log "apt-get install failed; running apt-get update and trying again"
        if ! { "${apt[@]}" update >>"$out" 2>&1 && "${apt[@]}" install --no-install-recommends "$@" >>"$out" 2>&1; }; then
            tail -30 "$out" >&2; die "could not install $*"
        fi
    fi
}

# ---------------------------------------------------------------- packages
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null \
   || ! command -v sbatch >/dev/null || ! command -v munged >/dev/null; then
    log "installing slurm-wlm and munge"
    apt_install slurm-wlm slurmctld slurmd slurm-client munge
fi
id munge >/dev/null 2>&1 || die "user munge missing (munge postinst failed?)"
id slurm >/dev/null 2>&1 || die "user slurm missing (slurm-wlm postinst failed?)"

# ---------------------------------------------------------------- hostname
HOST="$(hostname -s)"
if ! getent hosts "$HOST" >/dev/null; then
    log "hostname $HOST does not resolve; adding '127.0.0.1 $HOST' to /etc/hosts"
    echo "127.0.0.1 $HOST" >> /etc/hosts
fi

# ---------------------------------------------------------------- munge
mkdir -p /etc/munge /var/lib/munge /var/log/munge /run/munge
if [ ! -s /etc/munge/munge.key ]; then
    log "creating /etc/munge/munge.key"
    if command -v mungekey >/dev/null; then mungekey --create --keyfile=/etc/munge/munge.key
    else dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none; fi
fi
chown -R munge:munge /etc/munge /var/lib/munge /var/log/munge /run/munge
chmod 0700 /etc/munge /var/lib/munge /var/log/munge
chmod 0755 /run/munge
chmod 0400 /etc/munge/munge.key

munge_ok() { munge -n 2>/dev/null | unmunge >/dev/null 2>&1; }
if ! munge_ok; then
    if ! pid_alive /run/munge/munged.pid munged; then
        # a stale pid file or socket left by a dead munged makes a new one refuse to start
        rm -f /run/munge/munged.pid /run/munge/munge.socket.2 /run/munge/munge.socket.2.lock
        log "starting munged"
        runuser -u munge -- /usr/sbin/munged          # daemonises
    fi
    for _ in $(seq 1 100); do munge_ok && break; sleep 0.1; done
    munge_ok || { tail -20 /var/log/munge/munged.log >&2 || true; die "munged does not work"; }
fi

# ---------------------------------------------------------------- slurm.conf
NCPU="$(nproc)"
MEM_MB="$(awk '/^MemTotal:/{print int($2/1024)}' /proc/meminfo)"
REALMEM=$(( MEM_MB * 95 / 100 ))   # below what slurmd measures, or the node is INVALID ("Low RealMemory")
mkdir -p /etc/slurm /var/lib/slurm/slurmctld /var/lib/slurm/slurmd /var/log/slurm /run/slurm
chown slurm:slurm /var/lib/slurm/slurmctld /var/log/slurm /run/slurm
chmod 0755 /var/log/slurm /run/slurm

if [ -n "${SLURM_MAX_ARRAY_SIZE:-}" ] && ! [[ "$SLURM_MAX_ARRAY_SIZE" =~ ^[0-9]+$ ]]; then
    die "SLURM_MAX_ARRAY_SIZE must be a number, not '$SLURM_MAX_ARRAY_SIZE'"
fi
NEWCONF="$(mktemp)"; CLEANUP+=("rm -f '$NEWCONF'")
cat > "$NEWCONF" <<EOF
# generated by ci/start-slurm.sh; edits are overwritten
ClusterName=ci
SlurmctldHost=$HOST
SlurmUser=slurm
SlurmdUser=root
AuthType=auth/munge
MpiDefault=none
MailProg=/bin/true
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
SlurmctldPort=6817
SlurmdPort=6818
StateSaveLocation=/var/lib/slurm/slurmctld
SlurmdSpoolDir=/var/lib/slurm/slurmd
SlurmctldPidFile=/run/slurm/slurmctld.pid
SlurmdPidFile=/run/slurm/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
MinJobAge=300
KillWait=5
Waittime=0
SchedulerParameters=batch_sched_delay=0,sched_min_interval=0
${SLURM_MAX_ARRAY_SIZE:+MaxArraySize=$SLURM_MAX_ARRAY_SIZE}
NodeName=$HOST NodeAddr=127.0.0.1 CPUs=$NCPU RealMemory=$REALMEM State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
${SLURM_EXTRA_CONF:-}
EOF
CHANGED=0
if ! cmp -s "$NEWCONF" /etc/slurm/slurm.conf; then
    install -m 0644 "$NEWCONF" /etc/slurm/slurm.conf
    CHANGED=1
fi

node_state() { sinfo -h -N -n "$HOST" -o '%t' 2>/dev/null | head -1; }
ctld_up() { timeout 10 scontrol ping 2>/dev/null | grep -q 'is UP'; }

if [ "$CHANGED" = 1 ] && { pid_alive /run/slurm/slurmctld.pid slurmctld || pid_alive /run/slurm/slurmd.pid slurmd; }; then
    # A restart while a job is being launched can lose that launch (the job is
    # requeued and held back for minutes), so say so when the queue is not empty.
    n="$(squeue -h 2>/dev/null | wc -l || true)"
    [ "${n:-0}" = 0 ] || log "WARNING: restarting with $n job(s) in the queue"
    log "slurm.conf changed: restarting slurmctld and slurmd"
    stop_pidfile /run/slurm/slurmd.pid slurmd
    stop_pidfile /run/slurm/slurmctld.pid slurmctld
fi

if ! pid_alive /run/slurm/slurmctld.pid slurmctld; then
    log "starting slurmctld"
    /usr/sbin/slurmctld                  # daemonises, runs as SlurmUser
fi
for _ in $(seq 1 150); do ctld_up && break; sleep 0.2; done
ctld_up || { tail -30 /var/log/slurm/slurmctld.log >&2 || true; die "slurmctld does not answer"; }

if ! pid_alive /run/slurm/slurmd.pid slurmd; then
    log "starting slurmd"
    /usr/sbin/slurmd                     # daemonises, runs as root
fi

# wait until the node has registered; resume it if it came back down/drained
st=""
for _ in $(seq 1 150); do
    st="$(node_state)"
    case "$st" in
        idle*|mix*|alloc*|comp*) break ;;
        down*|drain*|drng*|fail*) scontrol update NodeName="$HOST" State=RESUME >/dev/null 2>&1 || true ;;
    esac
    sleep 0.2
done
case "$st" in idle*|mix*|alloc*|comp*) ;; *)
    sinfo -N -l >&2 || true
    scontrol show node "$HOST" 2>/dev/null | grep -i reason >&2 || true
    tail -20 /var/log/slurm/slurmd.log >&2 || true
    tail -20 /var/log/slurm/slurmctld.log >&2 || true
    die "node $HOST is in state '$st'" ;;
esac

# a real job through slurmctld and slurmd
if ! out="$(timeout 120 srun -N1 -n1 -t 1 -J ci_probe /bin/echo slurm-ok 2>&1)" || [ "$out" != slurm-ok ]; then
    log "probe job output: $out"
    tail -20 /var/log/slurm/slurmctld.log >&2 || true
    tail -20 /var/log/slurm/slurmd.log >&2 || true
    die "probe job (srun echo) failed"
fi
log "slurm up: node $HOST CPUs=$NCPU RealMemory=${REALMEM}M partition debug" \
    "MaxArraySize=${SLURM_MAX_ARRAY_SIZE:-default}; pids slurmctld $(cat /run/slurm/slurmctld.pid)" \
    "slurmd $(cat /run/slurm/slurmd.pid) munged $(cat /run/munge/munged.pid 2>/dev/null || echo '?')"
