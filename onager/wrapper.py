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


def shell_variable(name: str) -> str:
    """An environment variable name, checked before it goes into a script."""
    if not _SHELL_NAME.fullmatch(name or ""):
        raise ValueError(f"not an environment variable name: {name!r}")
    return name


def index_record(offset: int, length: int) -> bytes:
    return b"%013d %09d\n" % (offset, length)


def task_record(task_id: int, command: str, tag: str, params_env: dict[str, Any]) -> str:
    """Shell assignments for one task, every value quoted with shlex."""
    lines = [f"ONAGER_TASK_ID={task_id}", f"ONAGER_TAG={shlex.quote(tag)}",
             f"ONAGER_COMMAND={shlex.quote(command)}"]
    for name, value in params_env.items():
        lines.append(f"export ONAGER_PARAM_{name}={shlex.quote(value)}")
    if "REPLICATE" in params_env:  # +repeat's replicate number, also under its own short name
        lines.append(f"export ONAGER_REPLICATE={shlex.quote(params_env['REPLICATE'])}")
    return "\n".join(lines) + "\n"


def wrapper_text(launch_dir: str, jobname: str, launch_id: str, workdir: str,
                 header: str = "", footer: str = "", venv: str | None = None,
                 index_variable: str = "", job_id_variable: str = "") -> str:
    """wrapper.sh for one launch. The backend names the environment variables that hold
    a task's array index and the scheduler's job id on a compute node (`index_variable`,
    `job_id_variable`): the wrapper knows no scheduler. The task id is that index plus
    ONAGER_TASK_OFFSET. Pools pass the task id as $1 and need neither."""
    q = shlex.quote
    index = index_variable or INDEX_VARIABLE
    job = job_id_variable or JOB_ID_VARIABLE
    for name in (index, job):
        shell_variable(name)
    # a snapshot (<launch dir>/code/...) moves with the launch dir (ONAGER_REMOTE_LAUNCH_DIR on ssh hosts)
    inside = os.path.relpath(workdir, launch_dir) if workdir.startswith(launch_dir.rstrip("/") + "/") else None
    cd_target = f'"$D"/{q(inside)}' if inside else q(workdir)
    venv_line = f". {q(venv.rstrip('/') + '/bin/activate')}\n" if venv else ""
    return f"""#!/bin/bash
# onager wrapper for launch {jobname}/{launch_id}: finds task $1 (or the scheduler's
# array index ${index} + ONAGER_TASK_OFFSET), records its state, runs it, exits with its code.
export ONAGER_LAUNCH_DIR=${{ONAGER_REMOTE_LAUNCH_DIR:-{q(launch_dir)}}}
export ONAGER_JOB_NAME={q(jobname)}
export ONAGER_LAUNCH_ID={q(launch_id)}
D=$ONAGER_LAUNCH_DIR
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
eval "$rec"
export ONAGER_TASK_ID ONAGER_TAG
stamp() {{ t=${{EPOCHREALTIME:-}}; t=${{t/,/.}}; [ -n "$t" ] || t=$(date +%s); }}
exec >>"$D/logs/$id.out" 2>>"$D/logs/$id.err"
stamp; t0=${{ONAGER_POOL_T0:-$t}}; pooled=${{ONAGER_POOL_T0:+1}}; unset ONAGER_POOL_T0
echo "${{HOSTNAME:-$(hostname)}} $$ ${{{job}:-}}" >"$D/state/$id.start@$t0"
finish() {{  # the start name becomes the end name: one name per finished task
    stamp
    # a local pool renames it itself when it reaps the wrapper (no mv process per task)
    [ -n "$pooled" ] || mv -f "$D/state/$id.start@$t0" "$D/state/$id.end@$t@$1@$t0" 2>/dev/null \
        || : >"$D/state/$id.end@$t@$1@$t0"
}}
if [ -e "$D/state/$id.cancel" ]; then finish 143; exit 143; fi  # cancelled as it started
cd {cd_target} || {{ finish 126; exit 126; }}
{header}
{venv_line}( eval "$ONAGER_COMMAND" )
rc=$?
{footer}
finish $rc
exit $rc
"""
