"""ssh: what a launch looks like on a host, and sending it there.

A launch lives in `<remote-dir>/<job>/<launch>-<key>/<host>/`: `<key>` is a hash of the local
launch dir (which names the project) and a random nonce, so two projects that launch a job
of the same name on one host never share a directory. It holds a host copy of wrapper.sh
(its output stays on the ssh channel), tasks.sh, tasks.idx, the runner and a snapshot."""
from __future__ import annotations

import json
import os
import shlex
import time
from typing import IO, Any

from onager.backends.pool import GRACE
from onager.backends.ssh.transport import _ssh_error, ssh_base
from onager.errors import OnagerError, UsageError
from onager.layout import CODE, LOGS, STATE, TASKS_IDX, TASKS_SH, WRAPPER, LaunchPaths

DEFAULT_REMOTE_DIR = "~/.onager-remote"
RUNNER = "onager-run.sh"
#: the wrapper line that sends a task's output to the log files; the host copy drops it
WRAPPER_LOG_LINE = f'exec >>"$D/{LOGS}/$id.out" 2>>"$D/{LOGS}/$id.err"'
RUNNER_TEXT = r"""#!/bin/bash
# onager ssh runner: run task $1 of this launch with its output on this ssh channel.
# usage: onager-run.sh ID NONCE [CUDA_VISIBLE_DEVICES]
id=$1 nonce=$2
D=$(cd "$(dirname "$0")" && pwd -P) || exit 97
# be the leader of our own process group, so that `kill -- -PGID` reaches every process
pg=$(ps -o pgid= -p $$ 2>/dev/null | tr -d ' ')
if [ -n "$pg" ] && [ "$pg" != "$$" ] && [ -z "${ONAGER_RUNNER_SETSID:-}" ] && command -v setsid >/dev/null 2>&1; then
    ONAGER_RUNNER_SETSID=1 exec setsid bash "$0" "$@"
fi
export ONAGER_REMOTE_LAUNCH_DIR=$D
if [ -n "${3:-}" ]; then export CUDA_VISIBLE_DEVICES=$3; fi
# the dispatcher keeps our stdin open: end of file means it or the connection is gone. Then
# the task's group gets SIGTERM, and SIGKILL after the grace (tasks that ignore SIGTERM too).
# The watcher runs outside the group (setsid): it outlives the kill and sees when the group is gone.
watch='cat >/dev/null 2>&1; kill -TERM -- "-$1" 2>/dev/null; i=0
while [ "$i" -lt "$2" ] && kill -0 -- "-$1" 2>/dev/null; do sleep 0.1; i=$((i+1)); done
kill -KILL -- "-$1" 2>/dev/null'
if command -v setsid >/dev/null 2>&1; then
    setsid bash -c "$watch" onager-watch "$$" """ + str(int(GRACE * 10)) + r""" <&0 >/dev/null 2>&1 &
else
    ( trap '' TERM; bash -c "$watch" onager-watch "$$" """ + str(int(GRACE * 10)) + r""" ) <&0 >/dev/null 2>&1 &
fi
trap 'stopped=1' TERM INT HUP
printf '%s start %s\n' "$nonce" "$$"
bash "$D/""" + WRAPPER + r"""" "$id" </dev/null
rc=$?
printf '%s end %s\n' "$nonce" "$rc"
"""

def remote_dir_of(options: dict[str, Any], jobname: str, launch_id: str, host_key: str) -> str:
    """Where a launch lives on a host; relative paths are under the remote home (ssh starts there)."""
    base = str(options.get("remote_dir") or DEFAULT_REMOTE_DIR)
    if base == "~":
        base = "."
    elif base.startswith("~/"):
        base = base[2:] or "."
    elif base.startswith("~"):
        raise UsageError(f"bad --remote-dir {base!r}: use ~/DIR, an absolute path, or a path relative to the "
                         "remote home")
    return f"{base.rstrip('/')}/{jobname}/{launch_id}/{host_key}"


def launch_key(launch_dir: str, launch_id: str) -> str:
    """The launch's part of its remote dir: the launch id, a hash of the local launch dir (which
    names the project) and a random nonce, so that two projects launching a job of the same
    name on one host never share a dir (not even copies of one project)."""
    import hashlib
    import secrets
    digest = hashlib.sha256(os.path.abspath(launch_dir).encode("utf-8", "surrogateescape")).hexdigest()
    return f"{launch_id}-{digest[:8]}{secrets.token_hex(4)}"


def remote_workdir(launch_dir: str, remote: str) -> str | None:
    """Where the launch's tasks run on a host: a snapshot inside the launch dir moves with it
    (a path relative to the remote dir); any other workdir is the same absolute path there."""
    try:
        with open(LaunchPaths(launch_dir).launch_json, encoding="utf-8") as handle:
            workdir = json.load(handle).get("workdir")
    except (OSError, ValueError, AttributeError):
        return None
    if not isinstance(workdir, str) or not workdir:
        return None
    prefix = os.path.abspath(launch_dir).rstrip("/") + "/"
    return os.path.relpath(workdir, launch_dir) if workdir.startswith(prefix) else workdir


def host_wrapper(launch_dir: str) -> bytes:
    """wrapper.sh as it runs on a host: its output stays on the ssh channel."""
    with open(LaunchPaths(launch_dir).wrapper, "rb") as handle:
        text = handle.read().decode("utf-8")
    if WRAPPER_LOG_LINE not in text:
        raise OnagerError(f"{launch_dir}/wrapper.sh has no log redirection line to replace; "
                          "this onager's wrapper is not one the ssh backend knows")
    return text.replace(WRAPPER_LOG_LINE, ": # ssh: output goes to the channel, the dispatcher writes the logs", 1) \
        .encode("utf-8")


def task_command(remote: str, task_id: int, nonce: str, gpus: str | None) -> str:
    """The remote shell text of one task: every value quoted for the remote shell."""
    args = ["exec", "bash", f"{remote}/{RUNNER}", str(task_id), nonce]
    if gpus:
        args.append(gpus)
    return shlex.join(args)


def setup_command(remote: str) -> str:
    q = shlex.quote(remote)
    return (f"umask 077 && mkdir -p {q} && cd {q} && tar -xf - && mkdir -p {STATE} {LOGS} && "
            f"command -v bash >/dev/null && echo onager-ready")


def setup_host(options: dict[str, Any], host: str, launch_dir: str, remote: str) -> str | None:
    """Send wrapper, runner, tasks.sh, tasks.idx (and a snapshot's code/) to the host, by tar over
    ssh; returns None or an error."""
    import io
    import subprocess
    import tarfile
    import threading
    wrapper = host_wrapper(launch_dir)
    proc = subprocess.Popen(ssh_base(options) + [host, setup_command(remote)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdin is not None  # PIPE
    result: dict[str, bytes] = {}

    def drain(name: str, stream: IO[bytes]) -> None:
        result[name] = stream.read()

    readers = [threading.Thread(target=drain, args=(n, s), daemon=True)
               for n, s in (("out", proc.stdout), ("err", proc.stderr))]
    for r in readers:
        r.start()
    try:
        with tarfile.open(fileobj=proc.stdin, mode="w|", format=tarfile.PAX_FORMAT) as tar:
            now = time.time()
            for name, data in ((WRAPPER, wrapper), (RUNNER, RUNNER_TEXT.encode())):
                member = tarfile.TarInfo(name)
                member.size, member.mode, member.mtime = len(data), 0o700, now
                tar.addfile(member, io.BytesIO(data))
            paths = LaunchPaths(launch_dir)
            for name, path in ((TASKS_SH, paths.tasks_sh), (TASKS_IDX, paths.tasks_idx)):
                tar.add(path, arcname=name)
            if os.path.isdir(paths.code_dir):  # a --snapshot: the frozen code goes once per host
                tar.add(paths.code_dir, arcname=CODE)
        proc.stdin.close()
    except (BrokenPipeError, OSError):
        pass
    try:
        code = proc.wait(timeout=600)
    except subprocess.TimeoutExpired:
        proc.kill()
        code = proc.wait()
    for r in readers:
        r.join()
    if code != 0 or b"onager-ready" not in result.get("out", b""):
        return _ssh_error(result.get("err", b"").decode("utf-8", "replace"), code) + \
            ("" if code else " (is bash installed there?)")
    return None
