#!/bin/bash
# Start a single-node Son of Grid Engine 8.1.9 cluster on this host (Debian 12
# packages gridengine-master, gridengine-exec, gridengine-client), without
# systemd.  Run as root.  Safe to run again: it re-applies the configuration
# and only starts what does not run (execd is restarted when the global
# configuration changed, because it caches it).
#
# Result: SGE_ROOT=/var/lib/gridengine, cell "default", queue all.q with
# slots=$(nproc) on this host, parallel environment "smp" ($pe_slots),
# scheduler interval 1 s, root may submit (min_uid 0, min_gid 0).
#
# Environment knobs:
#   SGE_MAX_AJ_TASKS  max_aj_tasks of the global configuration (default 75000).
#                     SGE limits the number of tasks of an array job, not the index.
#   SGE_ALLOW_ROOT    1 (default): min_uid/min_gid 0; 0: keep Debian's 1000/1000
#
# Files: spool /var/spool/gridengine, logs .../qmaster/messages and
# .../execd/<host>/messages, pid files .../qmaster/qmaster.pid and
# .../execd/<host>/execd.pid.  Stop with ci/stop-engines.sh.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
NAME=start-sge
log() { echo "[$NAME] $*" >&2; }
die() { log "ERROR: $*"; exit 1; }
[ "$(id -u)" = 0 ] || die "must run as root"

CLEANUP=()
cleanup() { local c; for c in "${CLEANUP[@]}"; do eval "$c" || true; done; }
trap cleanup EXIT

proc_state() { sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1; }
pid_alive() {   # PIDFILE COMM; a zombie counts as dead
    local p; [ -s "$1" ] || return 1; p="$(cat "$1" 2>/dev/null)"
    [[ "$p" =~ ^[0-9]+$ ]] || return 1
    [ "$(cat "/proc/$p/comm" 2>/dev/null)" = "$2" ] || return 1
    local s; s="$(proc_state "$p")"; [ -n "$s" ] && [ "$s" != Z ]
}
stop_pidfile() {   # PIDFILE COMM: TERM, KILL after 60 s (a hung sge_qmaster ignores TERM)
    if pid_alive "$1" "$2"; then
        local p i; p="$(cat "$1")"
        log "stopping $2 (pid $p)"
        kill "$p" 2>/dev/null || true
        for i in $(seq 1 600); do pid_alive "$1" "$2" || break; sleep 0.1; done
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

SGE_ROOT=/var/lib/gridengine
SGE_CELL=default
COMMON="$SGE_ROOT/$SGE_CELL/common"
SPOOL=/var/spool/gridengine
QSPOOL="$SPOOL/qmaster"
ESPOOL="$SPOOL/execd"
MAX_AJ_TASKS="${SGE_MAX_AJ_TASKS:-75000}"
ALLOW_ROOT="${SGE_ALLOW_ROOT:-1}"
HOST="$(hostname)"
NCPU="$(nproc)"
export SGE_ROOT SGE_CELL
[[ "$MAX_AJ_TASKS" =~ ^[0-9]+$ ]] || die "SGE_MAX_AJ_TASKS must be a number"

# ---------------------------------------------------------------- hostname
if ! getent hosts "$HOST" >/dev/null; then
    log "hostname $HOST does not resolve; adding '127.0.0.1 $HOST' to /etc/hosts"
    echo "127.0.0.1 $HOST" >> /etc/hosts
fi

# ---------------------------------------------------------------- packages
if [ ! -x /usr/lib/gridengine/sge_qmaster ] || [ ! -x /usr/lib/gridengine/sge_execd ] \
   || [ ! -x /usr/lib/gridengine/qsub ]; then
    log "installing gridengine-master gridengine-exec gridengine-client"
    # answer debconf: configure the cluster, cell "default", this host is the master
    debconf-set-selections <<EOF
gridengine-common shared/gridengineconfig boolean true
gridengine-common shared/gridenginecell string $SGE_CELL
gridengine-master shared/gridenginemaster string $HOST
gridengine-client shared/gridenginemaster string $HOST
gridengine-exec shared/gridenginemaster string $HOST
EOF
    apt_install gridengine-master gridengine-exec gridengine-client
fi
id sgeadmin >/dev/null 2>&1 || die "user sgeadmin missing (gridengine-common postinst failed?)"

# ------------------------------------------- cluster spool (if the postinst did not make it)
mkdir -p "$COMMON" "$QSPOOL/job_scripts" "$SPOOL/spooldb" "$ESPOOL"
chown sgeadmin:sgeadmin "$SGE_ROOT" "$SGE_ROOT/$SGE_CELL" "$COMMON" "$QSPOOL" "$QSPOOL/job_scripts" \
      "$SPOOL/spooldb" "$ESPOOL"
[ -f "$COMMON/bootstrap" ] || install -m0644 -o sgeadmin -g sgeadmin /usr/share/gridengine/default-bootstrap "$COMMON/bootstrap"
if [ ! -e "$SPOOL/spooldb/sge" ]; then
    log "initialising the cluster spool"
    su -s /bin/sh -c "/usr/share/gridengine/scripts/init_cluster $SGE_ROOT $SGE_CELL $SPOOL/spooldb sgeadmin" sgeadmin >/dev/null \
        || die "init_cluster failed"
fi

# ---------------------------------------------------------------- host names
# SGE's commlib compares the host name a client claims (gethostname) with the
# reverse lookup of its source IP.  With "127.0.0.1 localhost" first in
# /etc/hosts that lookup gives "localhost", and every qconf/qsub fails with
#   commlib error: access denied (client IP resolved to host name "localhost".
#   This is not identical to clients host name "<host>")
# host_aliases makes all the names of this host one SGE host; /etc/hosts is left alone.
ALIASES="localhost"
for ip in $(getent ahostsv4 "$HOST" | awk '{print $1}' | sort -u); do
    for n in $(getent hosts "$ip" | cut -d' ' -f2-); do ALIASES="$ALIASES $n"; done
done
ALIASES="$(printf '%s\n' $ALIASES | grep -vx "$HOST" | sort -u | tr '\n' ' ' | sed 's/ *$//')"
echo "$HOST $ALIASES" > "$COMMON/host_aliases.new"
HA_CHANGED=0
if ! cmp -s "$COMMON/host_aliases.new" "$COMMON/host_aliases"; then
    mv "$COMMON/host_aliases.new" "$COMMON/host_aliases"; HA_CHANGED=1
else
    rm -f "$COMMON/host_aliases.new"
fi
chmod 644 "$COMMON/host_aliases"
echo "$HOST" > "$COMMON/act_qmaster"
chown sgeadmin:sgeadmin "$COMMON/act_qmaster" "$COMMON/host_aliases"

execd_pidfile() { ls "$ESPOOL"/*/execd.pid 2>/dev/null | head -1; }
qc() { local out; out="$(qconf "$@" 2>&1)" || die "qconf $* failed: $out"; }
qm_ok() { timeout 10 qconf -sh >/dev/null 2>&1; }

# ---------------------------------------------------------------- qmaster
if [ "$HA_CHANGED" = 1 ] && pid_alive "$QSPOOL/qmaster.pid" sge_qmaster; then
    log "host_aliases changed: restarting sge_qmaster"
    stop_pidfile "$QSPOOL/qmaster.pid" sge_qmaster
fi
# (a second sge_qmaster next to a running one hangs for ever, so check first)
if ! pid_alive "$QSPOOL/qmaster.pid" sge_qmaster; then
    log "starting sge_qmaster"
    /usr/sbin/sge_qmaster                  # daemonises, runs as sgeadmin
fi
for _ in $(seq 1 150); do qm_ok && break; sleep 0.2; done
qm_ok || { qconf -sh >&2 || true; tail -20 "$QSPOOL/messages" >&2 || true; die "sge_qmaster does not answer"; }

# ---------------------------------------------------------------- configuration
TMPD="$(mktemp -d)"; CLEANUP+=("rm -rf '$TMPD'")

# global configuration (the file given to -Mconf must be named "global");
# "\"-continued lines are joined so that one-line sed edits work
CONF_CHANGED=0
qconf -sconf global | grep -v '^#' | awk '{ if (sub(/\\$/, "")) printf "%s", $0; else print }' \
    | tr -s ' ' > "$TMPD/global"
cp "$TMPD/global" "$TMPD/global.orig"
if [ "$ALLOW_ROOT" = 1 ]; then
    sed -i -e 's/^min_uid .*/min_uid 0/' -e 's/^min_gid .*/min_gid 0/' "$TMPD/global"
else
    sed -i -e 's/^min_uid .*/min_uid 1000/' -e 's/^min_gid .*/min_gid 1000/' "$TMPD/global"
fi
sed -i -e "s/^max_aj_tasks .*/max_aj_tasks $MAX_AJ_TASKS/" "$TMPD/global"
# accounting_flush_time 0: qacct sees a finished job at once (default: up to 15 s later)
sed -i -e 's/^reporting_params .*/reporting_params accounting=true reporting=false flush_time=00:00:15 joblog=false sharelog=00:00:00 accounting_flush_time=00:00:00/' "$TMPD/global"
if ! cmp -s "$TMPD/global" "$TMPD/global.orig"; then
    log "updating the global configuration (min_uid/min_gid, max_aj_tasks=$MAX_AJ_TASKS)"
    (cd "$TMPD" && qc -Mconf global)
    CONF_CHANGED=1
fi

# scheduler: 1 s interval, no load adjustments (the default waits up to 15 s)
qconf -ssconf > "$TMPD/sconf"
sed -i -e 's/^schedule_interval .*/schedule_interval                 0:0:1/' \
       -e 's/^flush_submit_sec .*/flush_submit_sec                  1/' \
       -e 's/^flush_finish_sec .*/flush_finish_sec                  1/' \
       -e 's/^job_load_adjustments .*/job_load_adjustments              NONE/' \
       -e 's/^load_adjustment_decay_time .*/load_adjustment_decay_time        0:0:0/' "$TMPD/sconf"
qconf -ssconf | cmp -s - "$TMPD/sconf" || qc -Msconf "$TMPD/sconf"

qconf -ss 2>/dev/null | grep -qx "$HOST" || qc -as "$HOST"    # submit host
qconf -sh 2>/dev/null | grep -qx "$HOST" || qc -ah "$HOST"    # admin host

# Debian's packages define no queue and no parallel environment
cat > "$TMPD/smp" <<'EOF'
pe_name            smp
slots              9999
user_lists         NONE
xuser_lists        NONE
start_proc_args    NONE
stop_proc_args     NONE
allocation_rule    $pe_slots
control_slaves     FALSE
job_is_first_task  TRUE
urgency_slots      min
accounting_summary FALSE
qsort_args         NONE
EOF
if qconf -spl 2>/dev/null | grep -qx smp; then qc -Mp "$TMPD/smp"; else qc -Ap "$TMPD/smp"; fi

# load_thresholds NONE: a busy CI machine must not put the queue into alarm
cat > "$TMPD/all.q" <<EOF
qname                 all.q
hostlist              $HOST
seq_no                0
load_thresholds       NONE
suspend_thresholds    NONE
nsuspend              1
suspend_interval      00:05:00
priority              0
min_cpu_interval      00:05:00
processors            UNDEFINED
qtype                 BATCH INTERACTIVE
ckpt_list             NONE
pe_list               smp
rerun                 FALSE
slots                 $NCPU
tmpdir                /tmp
shell                 /bin/bash
prolog                NONE
epilog                NONE
shell_start_mode      posix_compliant
starter_method        NONE
suspend_method        NONE
resume_method         NONE
terminate_method      NONE
notify                00:00:60
owner_list            NONE
user_lists            NONE
xuser_lists           NONE
subordinate_list      NONE
complex_values        NONE
projects              NONE
xprojects             NONE
calendar              NONE
initial_state         default
s_rt                  INFINITY
h_rt                  INFINITY
s_cpu                 INFINITY
h_cpu                 INFINITY
s_fsize               INFINITY
h_fsize               INFINITY
s_data                INFINITY
h_data                INFINITY
s_stack               INFINITY
h_stack               INFINITY
s_core                INFINITY
h_core                INFINITY
s_rss                 INFINITY
h_rss                 INFINITY
s_vmem                INFINITY
h_vmem                INFINITY
EOF
if qconf -sql 2>/dev/null | grep -qx all.q; then
    qconf -sq all.q | tr -s ' ' > "$TMPD/all.q.cur"
    tr -s ' ' < "$TMPD/all.q" | cmp -s - "$TMPD/all.q.cur" || qc -Mq "$TMPD/all.q"
else
    qc -Aq "$TMPD/all.q"
fi

# ---------------------------------------------------------------- execd
# execd caches the global configuration: after a change of min_uid while it
# runs, root's jobs fail on it ("gid of user root (0) less than minimum allowed
# in conf (1000)") and the queue goes into state E.  So restart it.
EPID="$(execd_pidfile || true)"
if [ -n "$EPID" ] && pid_alive "$EPID" sge_execd && { [ "$CONF_CHANGED" = 1 ] || [ "$HA_CHANGED" = 1 ]; }; then
    log "configuration changed: restarting sge_execd"
    stop_pidfile "$EPID" sge_execd
fi
EPID="$(execd_pidfile || true)"
if [ -z "$EPID" ] || ! pid_alive "$EPID" sge_execd; then
    log "starting sge_execd"
    /usr/sbin/sge_execd                    # daemonises, runs as sgeadmin
fi

# wait until the queue instance is known (no "u") and clear an error state (E)
st=""
for _ in $(seq 1 150); do
    st="$(qstat -f -q "all.q@$HOST" 2>/dev/null | awk -v q="all.q@$HOST" '$1==q{print ($6==""?"ok":$6)}')"
    [ "$st" = ok ] && break
    case "$st" in *E*) qmod -c "all.q@$HOST" >/dev/null 2>&1 || true ;; esac
    sleep 0.2
done
if [ "$st" != ok ]; then
    qstat -f >&2 || true
    EPID="$(execd_pidfile || true)"; [ -n "$EPID" ] && tail -20 "$(dirname "$EPID")/messages" >&2 || true
    tail -20 "$QSPOOL/messages" >&2 || true
    die "queue instance all.q@$HOST is in state '$st'"
fi

# a real job through the scheduler and execd (-N: a name with "/" breaks qsub -b y)
if ! out="$(cd /tmp && timeout 120 qsub -sync y -b y -N ci_probe -o /dev/null -e /dev/null -j y /bin/true 2>&1)"; then
    log "probe job output: $out"
    qstat -f >&2 || true
    tail -20 "$QSPOOL/messages" >&2 || true
    die "probe job (qsub -sync y) failed"
fi
log "sge up: host $HOST, all.q slots=$NCPU, PE smp, max_aj_tasks=$MAX_AJ_TASKS;" \
    "pids sge_qmaster $(cat "$QSPOOL/qmaster.pid") sge_execd $(cat "$(execd_pidfile)")"
