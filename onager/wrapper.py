"""The text of wrapper.sh: the only code that runs on a compute node.

Plain bash, no Python start. It finds its task by id in O(1) (a fixed-width index of
byte offsets into tasks.sh), records its own state as file NAMES (creating a name is
atomic on every filesystem, NFS included, and `list` reads a whole launch with one
directory scan), runs header, command and footer, and exits with the command's code.
"""
from __future__ import annotations

import os
import re
import shlex
from typing import Any

INDEX_WIDTH = 24  # "%013d %09d\n": byte offset and length of a task's record
#: where a task id comes from when the wrapper gets none as $1 and the backend names no
#: variable: a generic array index that an adapter's own script may export
INDEX_VARIABLE = "ONAGER_ARRAY_INDEX"
JOB_ID_VARIABLE = "ONAGER_ARRAY_JOB_ID"
_SHELL_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*", re.ASCII)


#: `onager_cancelled ID`: whether a launch-level cancel line of `cancel.requested` (`EPOCH WHY
#: TASKLIST|all`, written by onager cancel and the pools) covers the task
CANCEL_CHECK_SH = r"""onager_cancelled() {
    [ -f "$D/cancel.requested" ] || return 1
    local _t _w list b lo hi st
    while read -r _t _w list; do
        [ "$list" = all ] && return 0
        for b in ${list//,/ }; do
            st=1
            case $b in *:*) st=${b#*:}; b=${b%%:*};; esac
            lo=${b%%-*}; hi=${b#*-}
            case $lo$hi$st in ''|*[!0-9]*) continue;; esac
            if [ "$1" -ge "$lo" ] && [ "$1" -le "$hi" ] && [ $(( ($1 - lo) % st )) -eq 0 ]; then return 0; fi
        done
    done < "$D/cancel.requested"
    return 1
}
"""


#: `onager_oom_find`: the file that counts this shell's memory cgroup's OOM kills into
#: `onager_oom_file` ('' if none). A pool slot runs it once for all its tasks (they share its
#: cgroup); a wrapper that finds the variable unset runs it itself.
OOM_FILE_SH = r"""onager_oom_find() {
    onager_oom_file=; local line v1= v2= file
    while IFS= read -r line; do
        case $line in 0::*) v2=${line#0::};; *:memory:*) v1=${line#*:memory:};; esac
    done 2>/dev/null </proc/self/cgroup
    if [ -n "$v1" ] && [ -e "/sys/fs/cgroup/memory$v1/memory.oom_control" ]; then
        onager_oom_file=/sys/fs/cgroup/memory$v1/memory.oom_control
    elif [ -n "$v2" ]; then
        for file in "/sys/fs/cgroup$v2/memory.events" "/sys/fs/cgroup/unified$v2/memory.events"; do
            if [ -e "$file" ]; then onager_oom_file=$file; break; fi
        done
    fi
}
"""


def shell_variable(name: str) -> str:
    """An environment variable name, checked before it goes into a script."""
    if not _SHELL_NAME.fullmatch(name or ""):
        raise ValueError(f"not an environment variable name: {name!r}")
    return name


def index_record(offset: int, length: int) -> bytes:
    return b"%013d %09d\n" % (offset, length)


def task_record(task_id: int, command: str, tag: str, params_env: dict[str, Any],
                prior_attempts: int = 0) -> str:
    """Shell assignments for one task, every value quoted with shlex.

    `prior_attempts`: how many times earlier launches of the job ran the task, the base of
    its attempt number when no claim file counts them (a project made by an older onager)."""
    lines = [f"ONAGER_TASK_ID={task_id}", f"ONAGER_TAG={shlex.quote(tag)}",
             f"ONAGER_COMMAND={shlex.quote(command)}"]
    if prior_attempts > 0:
        lines.append(f"ONAGER_PRIOR_ATTEMPTS={int(prior_attempts)}")
    for name, value in params_env.items():
        lines.append(f"export ONAGER_PARAM_{name}={shlex.quote(value)}")
    if "REPLICATE" in params_env:  # +repeat's replicate number, also under its own short name
        lines.append(f"export ONAGER_REPLICATE={shlex.quote(params_env['REPLICATE'])}")
    return "\n".join(lines) + "\n"


def wrapper_text(launch_dir: str, jobname: str, launch_id: str, workdir: str,
                 header: str = "", footer: str = "", venv: str | None = None,
                 index_variable: str = "", job_id_variable: str = "",
                 claims_dir: str = "", task_dirs: str = "", forward_warning: bool = True) -> str:
    """wrapper.sh for one launch. The backend names the environment variables that hold
    a task's array index and the scheduler's job id on a compute node (`index_variable`,
    `job_id_variable`): the wrapper knows no scheduler. The task id is that index plus
    ONAGER_TASK_OFFSET. Pools pass the task id as $1 and need neither.

    `claims_dir` holds the job's task claims (one attempt runs a task at a time, across
    launches) and `task_dirs` the parents of ONAGER_TASK_DIR; both default to the launch
    directory's own (as on ssh hosts, where the project's .onager/ is not). With
    `forward_warning`, SIGUSR1/SIGUSR2 reach the task's process group (its checkpoint hook);
    without, the wrapper only remembers them (a timeout warning onager asked for itself)."""
    q = shlex.quote
    index = index_variable or INDEX_VARIABLE
    job = job_id_variable or JOB_ID_VARIABLE
    for name in (index, job):
        shell_variable(name)
    # a snapshot (<launch dir>/code/...) moves with the launch dir (ONAGER_REMOTE_LAUNCH_DIR on ssh hosts)
    inside = os.path.relpath(workdir, launch_dir) if workdir.startswith(launch_dir.rstrip("/") + "/") else None
    cd_target = f'"$D"/{q(inside)}' if inside else q(workdir)
    venv_line = f". {q(venv.rstrip('/') + '/bin/activate')}\n" if venv else ""
    claims = q(claims_dir) if claims_dir else '"$D"/claims'
    tasks = q(task_dirs) if task_dirs else '"$D"/tasks'
    return f"""#!/bin/bash
# onager wrapper for launch {jobname}/{launch_id}: finds task $1 (or the scheduler's
# array index ${index} + ONAGER_TASK_OFFSET), claims it, records its attempt, runs it,
# records how it ended, exits with its code. State names: onager/state.py.
# POOL_SLOT_READY: a local pool's slot may run this text as a function in a subshell of its
# own (no bash start per task): hence $me, not $$, and the word to the slot in finish().
me=${{BASHPID:-$$}}
export ONAGER_LAUNCH_DIR=${{ONAGER_REMOTE_LAUNCH_DIR:-{q(launch_dir)}}}
export ONAGER_JOB_NAME={q(jobname)}
export ONAGER_LAUNCH_ID={q(launch_id)}
D=$ONAGER_LAUNCH_DIR
if [ -n "${{ONAGER_REMOTE_LAUNCH_DIR:-}}" ]; then C=$D/claims; T=$D/tasks; else C={claims}; T={tasks}; fi
if [ -n "${{1:-}}" ]; then id=$1; else id=${{{index}:-}}; fi
case $id in ''|*[!0-9]*) echo "onager wrapper: no task id (got '$id')" >&2; exit 2;; esac
[ -n "${{1:-}}" ] || id=$(( id + ${{ONAGER_TASK_OFFSET:-0}} ))
if [ -n "${{ONAGER_RECORD:-}}" ] && [ -n "${{1:-}}" ]; then
    rec=$ONAGER_RECORD  # handed over by a local pool that already read it: no lookup
else
    rec=$(dd if="$D/tasks.idx" bs={INDEX_WIDTH} skip=$(( id - 1 )) count=1 2>/dev/null)
    off=${{rec%% *}}; len=${{rec##* }}
    case $off$len in ''|*[!0-9]*) len=0;; esac
    if [ $(( 10#${{len:-0}} )) -eq 0 ]; then
        echo "onager wrapper: task $id is not in launch $D" >&2; exit 2
    fi
    rec=$(dd if="$D/tasks.sh" bs=1 skip=$(( 10#$off )) count=$(( 10#$len )) 2>/dev/null)
fi
unset ONAGER_RECORD
ONAGER_PRIOR_ATTEMPTS=0
eval "$rec"
# a pool slot that set the task's free claim aside already says which attempt it counted to
case ${{onager_slot_prior:-}} in ''|*[!0-9]*) ;; *)
    [ "$onager_slot_prior" -le "$ONAGER_PRIOR_ATTEMPTS" ] || ONAGER_PRIOR_ATTEMPTS=$onager_slot_prior;; esac
export ONAGER_TASK_ID ONAGER_TAG
stamp() {{ t=${{EPOCHREALTIME:-}}; t=${{t/,/.}}; [ -n "$t" ] || t=$(date +%s); }}
exec >>"$D/logs/$id.out" 2>>"$D/logs/$id.err"
stamp; t0=${{ONAGER_POOL_T0:-$t}}; unset ONAGER_POOL_T0
host=${{HOSTNAME:-$(hostname)}}; job=${{{job}:--}}; pst=-
read -r -a ps 2>/dev/null </proc/$me/stat && pst=${{ps[21]:--}}
alive() {{  # pid and start time ('-': unknown): the same process, not a reused pid
    kill -0 "$1" 2>/dev/null || return 1
    [ "$2" != - ] || return 0
    local s; read -r -a s 2>/dev/null <"/proc/$1/stat" || return 0
    [ "${{s[21]}}" = "$2" ]
}}
# the claim: '<state> <attempt> <launch> <host> <pid> <job id> <start time>'; state 'held'
# while an attempt runs, else how the last attempt ended. Created with O_EXCL (noclobber).
f=$C/$id; claimed=; attempt=
for try in 1 2 3 4 5 6; do
    attempt=$(( ONAGER_PRIOR_ATTEMPTS + 1 ))
    set -C; {{ echo "held $attempt $ONAGER_LAUNCH_ID $host $me $job $pst" >"$f"; }} 2>/dev/null; ok=$?; set +C
    if [ $ok -eq 0 ]; then claimed=1; break; fi
    c_state=; read -r c_state c_attempt c_launch c_host c_pid c_job c_pst 2>/dev/null <"$f"
    if [ -z "$c_state" ] && [ ! -e "$f" ]; then mkdir -p "$C" 2>/dev/null || break; continue; fi
    case $c_attempt in ''|*[!0-9]*) c_attempt=0;; esac
    if [ "$c_state" = held ]; then
        stale=
        if [ "$c_host" = "$host" ] && ! alive "$c_pid" "${{c_pst:--}}"; then stale=1
        elif [ "$job" != - ] && [ "$c_job" = "$job" ] && [ "$c_launch" = "$ONAGER_LAUNCH_ID" ]; then stale=1  # requeued
        else
            for e in "$D/../$c_launch/state/$id.end@"*"@$c_attempt@"*; do [ -e "$e" ] && stale=1; break; done
        fi
        if [ -z "$stale" ]; then
            stamp; : >"$D/state/$id.dup@$t@$c_launch.$c_attempt@running" 2>/dev/null
            echo "onager wrapper: task $id not run: attempt $c_attempt" \
                "(launch $c_launch, $c_host pid $c_pid) runs it" >&2
            exit 0
        fi
    elif [ "$c_state" = done ] && [ "$c_launch" = "$ONAGER_LAUNCH_ID" ]; then
        stamp; : >"$D/state/$id.dup@$t@$c_launch.$c_attempt@done" 2>/dev/null
        echo "onager wrapper: task $id not run again: it is done in this launch (attempt $c_attempt)" >&2
        exit 0
    fi
    # a free or stale claim: set it aside (only if it is still the one read), count on from it
    mv -f "$f" "$f.$me" 2>/dev/null || continue
    x_state=; read -r x_state x_attempt x_launch x_host x_pid x_rest 2>/dev/null <"$f.$me"
    if [ "$x_state $x_attempt $x_launch $x_pid" != "$c_state $c_attempt $c_launch $c_pid" ] && [ -n "$x_state" ]; then
        mv -n "$f.$me" "$f" 2>/dev/null; continue  # a fresh claim of another attempt: put it back
    fi
    rm -f "$f.$me"
    [ "$c_attempt" -le "$ONAGER_PRIOR_ATTEMPTS" ] || ONAGER_PRIOR_ATTEMPTS=$c_attempt
done
if [ -z "$claimed" ] && [ -e "$f" ]; then
    stamp; : >"$D/state/$id.dup@$t@-@contended" 2>/dev/null
    echo "onager wrapper: task $id not run: its claim $f is contended" >&2; exit 0
fi
[ -n "$claimed" ] || echo "onager wrapper: cannot claim task $id in $C; running it unclaimed" >&2
export ONAGER_ATTEMPT=$attempt ONAGER_TASK_DIR=$T/$id
[ -d "$ONAGER_TASK_DIR" ] || mkdir -p "$ONAGER_TASK_DIR" 2>/dev/null
echo "$host $me $job $pst" >"$D/state/$id.start@$t0@$attempt"
{OOM_FILE_SH}oom_kills() {{  # the oom_kill count of this shell's memory cgroup (onager_oom_find's file)
    n_oom=; local key val
    [ -n "${{onager_oom_file+x}}" ] || onager_oom_find
    [ -n "$onager_oom_file" ] && [ -e "$onager_oom_file" ] || return 0
    while read -r key val; do [ "$key" = oom_kill ] && n_oom=$val; done 2>/dev/null <"$onager_oom_file"
    return 0
}}
finish() {{  # code, end state, reason: a new name (no process); the start name stays
    stamp
    : >"$D/state/$id.end@$t@$1@$t0@$attempt@$2@$3" 2>/dev/null
    if [ -n "$claimed" ]; then
        local s a l h p r; read -r s a l h p r 2>/dev/null <"$f"
        [ "$s $a $l $p" != "held $attempt $ONAGER_LAUNCH_ID $me" ] ||
            echo "$2 $attempt $ONAGER_LAUNCH_ID $host - $job -" >"$f"
    fi
    # a pool slot's task: its end is recorded (a wrapper that dies before this, the pool records)
    [ -z "${{ONAGER_SLOT:-}}" ] || echo "L $id" >&9
}}
{CANCEL_CHECK_SH}if [ -e "$D/state/$id.cancel" ] || onager_cancelled "$id"; then  # cancelled as it started
    finish 143 cancelled before-start; exit 143
fi
cd {cd_target} || {{ finish 126 failed no-workdir; exit 126; }}
{header}
{venv_line}sig=; warn=
trap 'sig=${{sig:-TERM}}' TERM; trap 'sig=${{sig:-INT}}' INT; trap 'sig=${{sig:-HUP}}' HUP
fwd={"1" if forward_warning else ""}
forward() {{  # remember a warning signal; pass it on to the task's process group if asked to
    warn=$1; [ -n "$fwd" ] || return 0
    trap '' "$1"; kill -s "$1" 0 2>/dev/null; trap "forward $1" "$1"
}}
trap 'forward USR1' USR1; trap 'forward USR2' USR2
oom_kills; oom0=${{n_oom:-0}}
exec 3<&0
# the subshell outlives the signals its command gets (traps reset to default in the command),
# so the wrapper sees the command's own end, not its shell's
( [ -z "${{ONAGER_SLOT:-}}" ] || {{ exec 9>&-; unset ONAGER_SLOT; }}
  trap : TERM INT HUP USR1 USR2; eval "$ONAGER_COMMAND" ) <&3 3<&- &
child=$!
exec 3<&-
# a trapped signal ends `wait` early: wait again until the command itself has ended
while :; do wait "$child"; rc=$?; kill -0 "$child" 2>/dev/null || break; done
wait "$child" 2>/dev/null; again=$?  # its status, if the first wait was cut short by a trap
case $again in 127|-*) ;; *) rc=$again;; esac
{footer}
if [ $rc -eq 0 ]; then state=done; why=
elif [ -e "$D/state/$id.cancel" ] && {{ [ -n "$sig" ] || [ $rc -gt 128 ]; }}; then
    state=cancelled; why=${{sig:+SIG$sig}}
elif [ "$warn" = USR1 ]; then state=timeout; why=warned-SIGUSR1
elif [ $rc -eq 137 ] && oom_kills && [ "${{n_oom:-0}}" -gt "$oom0" ]; then state=oom; why=oom-kill
elif [ -n "$sig" ]; then state=killed; why=SIG$sig
elif [ $rc -gt 128 ] && [ $rc -lt 160 ]; then state=killed; why=SIG$(kill -l $(( rc - 128 )) 2>/dev/null)
else state=failed; why=
fi
finish $rc $state "$why"
exit $rc
"""
