"""SSH backend: a few machines you can ssh into, used as one pool.

We call the system OpenSSH client (so `~/.ssh/config` aliases, the agent and
ProxyJump all work) with BatchMode and connection sharing: one master connection
per host (and per 8 slots), every task a cheap session on it.

Nothing is assumed shared between this machine and the hosts. Once per host, the
launch's `tasks.sh`, `tasks.idx`, a host copy of `wrapper.sh` (identical but for
its log redirection, so that output comes back over the channel) and a small
runner `onager-run.sh` are sent by tar over ssh into
`<remote-dir>/<job>/<launch>/<host>/`. Each task is then one ssh session running
`onager-run.sh ID NONCE [GPUS]`, which prints `NONCE start PGID` on stdout, runs
the wrapper with its stdout/stderr on the channel, and prints `NONCE end RC`.
The dispatcher copies the channel into the local `logs/<id>.out|err` (the marker
lines removed) and writes the usual `state/<id>.start@..` and `state/<id>.end@..@rc`
in the LOCAL launch dir, so list, wait, logs, cancel and `--tasklist failed` work
as for every other backend.

The runner's stdin stays open while the dispatcher watches the task: if the
dispatcher dies or the connection drops, the remote task's process group is
killed, so a lost host leaves nothing running behind it.
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import re
import secrets
import selectors
import shlex
import signal
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Deque, Dict, IO, List, Optional, Sequence, Tuple

from onager.backends.base import Backend, LaunchInfo
from onager.backends.local import (CANCEL_FLAG, _fmt_duration, _package_parent, _raise_interrupt,
                                   _write_pool_file, query_pools)
from onager.errors import OnagerError, UsageError
from onager.fsutil import atomic_write
from onager.state import mark, read_states, start_fields
from onager.tasklist import Tasklist

#: sessions multiplexed on one master connection (sshd's MaxSessions defaults to 10)
SESSIONS_PER_MASTER = 8
CONNECT_TIMEOUT = 15
CONTROL_PERSIST = 60
DEFAULT_REMOTE_DIR = "~/.onager-remote"
RUNNER = "onager-run.sh"
#: the wrapper line that sends a task's output to the log files; the host copy drops it
WRAPPER_LOG_LINE = 'exec >>"$D/logs/$id.out" 2>>"$D/logs/$id.err"'

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
# the dispatcher keeps our stdin open: end of file means it or the connection is gone
( cat >/dev/null 2>&1; kill -TERM -- -$$ ) <&0 >/dev/null 2>&1 &
trap 'stopped=1' TERM INT HUP
printf '%s start %s\n' "$nonce" "$$"
bash "$D/wrapper.sh" "$id" </dev/null
rc=$?
printf '%s end %s\n' "$nonce" "$rc"
"""

PROBE_SCRIPT = r"""
echo "hostname=$(hostname 2>/dev/null || uname -n)"
echo "cpus=$(nproc 2>/dev/null || getconf _NPROCESSORS_ONLN 2>/dev/null || sysctl -n hw.ncpu 2>/dev/null)"
if [ -r /proc/meminfo ]; then
  echo "mem_kb=$(awk '/^MemTotal:/{print $2}' /proc/meminfo)"
  echo "avail_kb=$(awk '/^MemAvailable:/{print $2}' /proc/meminfo)"
else
  echo "mem_kb=$(( $(sysctl -n hw.memsize 2>/dev/null || echo 0) / 1024 ))"
fi
if [ -r /proc/loadavg ]; then echo "load=$(cut -d' ' -f1-3 /proc/loadavg)";
else echo "load=$(sysctl -n vm.loadavg 2>/dev/null | tr -d '{}')"; fi
echo "bash=$(command -v bash)"
if command -v nvidia-smi >/dev/null 2>&1; then
  nvidia-smi --query-gpu=index,name,memory.used,memory.total,utilization.gpu --format=csv,noheader,nounits 2>/dev/null | sed 's/^/gpu=/'
fi
echo "probe=ok"
"""

_HOST_RE = re.compile(r"(?!-)[A-Za-z0-9_.%+-]+(@(?!-)[A-Za-z0-9_.%+-]+)?")


# ------------------------------------------------------------------ host specs
@dataclass
class HostSpec:
    """One entry of `--hosts`: `[user@]host[:slots][:gpus=0,1]`."""

    target: str
    slots: Optional[int] = None
    gpus: Optional[str] = None   # "0,1", a count "4", "auto", "none", or None (use --gpus)

    @property
    def key(self) -> str:
        """A file-name-safe form of the target, for the remote directory."""
        return re.sub(r"[^A-Za-z0-9._-]", "_", self.target)


def parse_hosts(text: Optional[str]) -> List[HostSpec]:
    """`gpu1:4,gpu2:2:gpus=0,1,user@host3:8` -> host specs.

    Hosts are separated by commas or spaces; the ids after `gpus=` may themselves be
    separated by commas (a bare number after a `gpus=` list continues that list).
    """
    if text is None or not str(text).strip():
        raise UsageError("the ssh backend needs hosts: --hosts 'gpu1:4,gpu2:2' "
                         "(or onager config --write ssh hosts 'gpu1:4,gpu2:2')")
    tokens: List[str] = []
    for raw in re.split(r"[,\s]+", str(text).strip()):
        if not raw:
            continue
        if re.fullmatch(r"\d+(-\d+)?", raw) and tokens and re.search(r"gpus=[0-9,-]*$", tokens[-1]) and \
                not tokens[-1].endswith("gpus="):
            tokens[-1] += "," + raw
        else:
            tokens.append(raw)
    specs: List[HostSpec] = []
    seen = set()
    for token in tokens:
        parts = token.split(":")
        target = parts[0]
        if not _HOST_RE.fullmatch(target):
            raise UsageError(f"bad host {target!r} in --hosts: give [user@]host[:slots][:gpus=0,1], "
                             "host being a name or ~/.ssh/config alias")
        spec = HostSpec(target)
        for part in parts[1:]:
            if part.isdigit() and spec.slots is None:
                spec.slots = int(part)
                if spec.slots < 1:
                    raise UsageError(f"host {target!r} has {part} slots: give at least 1")
            elif part.startswith("slots=") and part[6:].isdigit() and spec.slots is None:
                spec.slots = int(part[6:])
                if spec.slots < 1:
                    raise UsageError(f"host {target!r} has {part}: give at least 1 slot")
            elif part.startswith("gpus="):
                spec.gpus = _check_gpus(part[5:], f"host {target}")
            else:
                raise UsageError(f"bad field {part!r} for host {target!r} in --hosts: "
                                 "use host:SLOTS or host:SLOTS:gpus=0,1,2 (or gpus=auto, gpus=none)")
        if target in seen:
            raise UsageError(f"host {target!r} is listed twice in --hosts: give it once with all its slots")
        seen.add(target)
        specs.append(spec)
    return specs


def _check_gpus(text: str, what: str) -> str:
    text = text.strip()
    if text in ("auto", "none") or text.isdigit():
        return text
    if re.fullmatch(r"\d+(-\d+)?(,\d+(-\d+)?)*", text):
        ids: List[str] = []
        for item in text.split(","):
            first, _, last = item.partition("-")
            if last and int(last) < int(first):
                raise UsageError(f"bad gpus range {item!r} for {what}: write it low-high, e.g. 2-3")
            ids += [str(i) for i in range(int(first), int(last or first) + 1)]
        return ",".join(ids) + ("," if len(ids) == 1 else "")
    raise UsageError(f"bad gpus {text!r} for {what}: give GPU ids like 0,1,2 or 2-3 (3-3 for GPU 3 alone), "
                     "a count like 4, auto or none")


def slot_gpus(gpus: Optional[str], detected: List[str], slots: Optional[int],
              per_task: Optional[int], host: str, cpus: Optional[int] = None) -> Tuple[int, List[Optional[str]]]:
    """Slots of one host and the CUDA_VISIBLE_DEVICES of each (None: not set).

    Explicit GPUs (`gpus=` / `--gpus` / `--gpus-per-task`) give each slot its own
    GPUs and at most as many slots as GPU groups. With nothing said and GPUs found by
    nvidia-smi, each slot sees one GPU (slots beyond the GPU count share them).
    """
    explicit = gpus not in (None, "auto", "none") or per_task is not None
    if gpus == "none" or (gpus is None and per_task is None and not detected):
        count = slots or cpus or 1
        return count, [None] * count
    if gpus in (None, "auto"):
        ids = list(detected)
        if not ids and per_task is None:  # auto, and none found: plain CPU slots
            count = slots or cpus or 1
            return count, [None] * count
    elif "," in gpus:
        ids = [g for g in gpus.split(",") if g]
    else:
        ids = [str(i) for i in range(int(gpus))]
    if not explicit:
        count = slots or len(ids)
        return count, [ids[i % len(ids)] for i in range(count)]
    k = int(per_task or 1)
    if k < 1:
        raise UsageError("--gpus-per-task must be at least 1")
    if len(ids) < k:
        raise OnagerError(f"host {host} has {len(ids)} GPUs ({','.join(ids) or 'none found'}), "
                          f"fewer than --gpus-per-task {k}: give gpus=0,1,.. in its --hosts entry")
    groups = [",".join(ids[i:i + k]) for i in range(0, len(ids) - k + 1, k)]
    count = min(slots, len(groups)) if slots else len(groups)
    return count, list(groups[:count])


# ------------------------------------------------------------------ ssh calls
def control_dir() -> str:
    """A private, short directory for the master sockets (a unix socket path is ~100 chars max)."""
    base = "/tmp" if os.path.isdir("/tmp") else tempfile.gettempdir()
    path = os.path.join(base, f"onager-ssh-{os.getuid()}")
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    st = os.lstat(path)
    if not os.path.isdir(path) or os.path.islink(path) or st.st_uid != os.getuid() or st.st_mode & 0o077:
        raise OnagerError(f"{path} is not a private directory of yours (mode 700): remove it and retry")
    return path


def ssh_base(options: Dict[str, Any], group: int = 0, master: bool = False) -> List[str]:
    """The ssh argv up to the host: config file, batch mode, connection sharing."""
    argv = ["ssh"]
    config = options.get("ssh_config")
    if config:
        argv += ["-F", os.path.abspath(os.path.expanduser(str(config)))]
    path = os.path.join(control_dir(), "%C" + (f"-{group}" if group else ""))
    argv += ["-o", "BatchMode=yes", "-o", f"ConnectTimeout={CONNECT_TIMEOUT}",
             "-o", "ServerAliveInterval=15", "-o", "ServerAliveCountMax=4",
             "-o", f"ControlPath={path}",
             "-o", "ControlMaster=auto" if master else "ControlMaster=no"]
    if master:
        argv += ["-o", f"ControlPersist={CONTROL_PERSIST}"]
    if _truthy(options.get("ssh_no_host_key_check")):
        argv += ["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR"]
    return argv


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


def _ssh_error(text: str, code: int) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("Warning: Permanently")]
    return lines[-1] if lines else f"ssh exit code {code}"


def ssh_master_run(options: Dict[str, Any], host: str, command: str, group: int = 0,
                   timeout: float = CONNECT_TIMEOUT + 30) -> Tuple[int, str, str]:
    """Run a command that may start the master connection: output through files, not pipes,
    because a master going to the background keeps the pipes of its first client open."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        try:
            proc = subprocess.run(ssh_base(options, group, master=True) + [host, command],
                                  stdin=subprocess.DEVNULL, stdout=out, stderr=err, timeout=timeout)
            code = proc.returncode
        except FileNotFoundError:
            raise OnagerError("ssh not found: install the OpenSSH client (the ssh backend calls the system ssh)")
        except subprocess.TimeoutExpired:
            code = 255
            err.write(f"no answer within {timeout:.0f} s".encode())
        out.seek(0)
        err.seek(0)
        return code, out.read().decode("utf-8", "replace"), err.read().decode("utf-8", "replace")


@dataclass
class HostInfo:
    """What one probe found out about a host."""

    target: str
    reachable: bool = False
    error: str = ""
    hostname: str = ""
    cpus: Optional[int] = None
    mem_kb: Optional[int] = None
    avail_kb: Optional[int] = None
    load: str = ""
    bash: str = ""
    gpus: List[Dict[str, str]] = field(default_factory=list)

    @property
    def gpu_ids(self) -> List[str]:
        return [g["index"] for g in self.gpus]


def probe_host(options: Dict[str, Any], host: str) -> HostInfo:
    """One ssh call: is the host reachable, and its CPUs, memory, load and GPUs."""
    info = HostInfo(host)
    code, out, err = ssh_master_run(options, host, PROBE_SCRIPT)
    values: Dict[str, str] = {}
    for line in out.splitlines():
        key, _, value = line.partition("=")
        if key == "gpu":
            fields = [f.strip() for f in value.split(",")]
            if len(fields) >= 5:
                info.gpus.append(dict(zip(("index", "name", "mem_used", "mem_total", "util"), fields)))
        else:
            values[key] = value.strip()
    if code != 0 or values.get("probe") != "ok":
        info.error = _ssh_error(err or out, code)
        return info
    info.reachable = True
    info.hostname = values.get("hostname", "")
    info.load = values.get("load", "")
    info.bash = values.get("bash", "")
    for name in ("cpus", "mem_kb", "avail_kb"):
        if values.get(name, "").isdigit():
            setattr(info, name, int(values[name]))
    return info


def probe_hosts(options: Dict[str, Any], hosts: Sequence[str]) -> List[HostInfo]:
    """Probe every host at once (one thread and one ssh call per host)."""
    results: List[Optional[HostInfo]] = [None] * len(hosts)

    def work(i: int, host: str) -> None:
        try:
            results[i] = probe_host(options, host)
        except OnagerError as exc:
            results[i] = HostInfo(host, error=str(exc))

    threads = [threading.Thread(target=work, args=(i, h), daemon=True) for i, h in enumerate(hosts)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return [r or HostInfo(h, error="probe failed") for r, h in zip(results, hosts)]


# ------------------------------------------------------------------ remote dir
def remote_dir_of(options: Dict[str, Any], jobname: str, launch_id: str, host_key: str) -> str:
    """Where a launch lives on a host; relative paths are under the remote home (ssh starts there)."""
    base = str(options.get("remote_dir") or DEFAULT_REMOTE_DIR)
    if base == "~":
        base = "."
    elif base.startswith("~/"):
        base = base[2:] or "."
    elif base.startswith("~"):
        raise UsageError(f"bad --remote-dir {base!r}: use ~/DIR, an absolute path, or a path relative to the remote home")
    return f"{base.rstrip('/')}/{jobname}/{launch_id}/{host_key}"


def host_wrapper(launch_dir: str) -> bytes:
    """wrapper.sh as it runs on a host: its output stays on the ssh channel."""
    with open(os.path.join(launch_dir, "wrapper.sh"), "rb") as handle:
        text = handle.read().decode("utf-8")
    if WRAPPER_LOG_LINE not in text:
        raise OnagerError(f"{launch_dir}/wrapper.sh has no log redirection line to replace; "
                          "this onager's wrapper is not one the ssh backend knows")
    return text.replace(WRAPPER_LOG_LINE, ": # ssh: output goes to the channel, the dispatcher writes the logs", 1) \
        .encode("utf-8")


def task_command(remote: str, task_id: int, nonce: str, gpus: Optional[str]) -> str:
    """The remote shell text of one task: every value quoted for the remote shell."""
    args = ["exec", "bash", f"{remote}/{RUNNER}", str(task_id), nonce]
    if gpus:
        args.append(gpus)
    return shlex.join(args)


def setup_command(remote: str) -> str:
    q = shlex.quote(remote)
    return (f"umask 077 && mkdir -p {q} && cd {q} && tar -xf - && mkdir -p state logs && "
            f"command -v bash >/dev/null && echo onager-ready")


def kill_command(pgids: Sequence[int], grace: float = 5.0) -> str:
    """TERM every process group, then KILL what is left after `grace` seconds."""
    groups = " ".join(f"-{int(p)}" for p in pgids)
    rounds = max(1, int(grace * 10))
    return (f"kill -TERM -- {groups} 2>/dev/null; i=0; while [ $i -lt {rounds} ]; do "
            f"alive=0; for g in {groups}; do kill -0 -- $g 2>/dev/null && alive=1; done; "
            f"[ $alive = 0 ] && exit 0; sleep 0.1; i=$((i+1)); done; kill -KILL -- {groups} 2>/dev/null; exit 0")


#: in the LOCAL launch dir: one file per host whose remote launch dir may exist, written before
#: anything is sent and removed once that dir is gone; what is left after the dispatcher ended
#: (an interrupt during cleanup, a lost host, kill -9) is removed at the next contact
REMOTE_LEDGER = "remote-dirs"


def launch_key(launch_dir: str, launch_id: str) -> str:
    """The launch's part of its remote dir: the launch id, a hash of the local launch dir (which
    names the project) and a random nonce, so that two projects launching a job of the same
    name on one host never share a dir (not even copies of one project)."""
    digest = hashlib.sha256(os.path.abspath(launch_dir).encode("utf-8", "surrogateescape")).hexdigest()
    return f"{launch_id}-{digest[:8]}{secrets.token_hex(4)}"


def remote_workdir(launch_dir: str, remote: str) -> Optional[str]:
    """Where the launch's tasks run on a host: a snapshot inside the launch dir moves with it
    (a path relative to the remote dir); any other workdir is the same absolute path there."""
    try:
        with open(os.path.join(launch_dir, "launch.json"), encoding="utf-8") as handle:
            workdir = json.load(handle).get("workdir")
    except (OSError, ValueError, AttributeError):
        return None
    if not isinstance(workdir, str) or not workdir:
        return None
    prefix = os.path.abspath(launch_dir).rstrip("/") + "/"
    return os.path.relpath(workdir, launch_dir) if workdir.startswith(prefix) else workdir


def check_fetch(globs: Any) -> List[str]:
    """--fetch GLOB values: relative, no `..`, printable (they reach a remote bash as data)."""
    if globs in (None, ""):
        return []
    values = [globs] if isinstance(globs, str) else list(globs)
    for glob in values:
        text = str(glob)
        if not text.strip() or text.startswith("/") or text.startswith("~") or ".." in text.split("/") or \
                any(ord(c) < 32 or ord(c) == 127 for c in text):
            raise UsageError(f"bad --fetch {text!r}: give a glob relative to the task's workdir, "
                             "without .. or control characters, e.g. --fetch 'out/*.png'")
    return [str(g) for g in values]


#: run by bash on a host: stage the --fetch files, then send results/ and them as one tar on stdout
FETCH_SCRIPT = r"""
cd "$1" 2>/dev/null || exit 0
R=$(pwd -P); W=$2; shift 2
rm -rf .fetch && mkdir .fetch || exit 1
if [ "$#" -gt 0 ] && [ -n "$W" ] && cd "$W" 2>/dev/null; then
  shopt -s nullglob globstar
  IFS=
  for p in "$@"; do for f in $p; do
    case "/$f/" in */../*) continue;; esac
    [ -f "$f" ] || continue
    mkdir -p -- "$R/.fetch/$(dirname -- "$f")" && cp -p -- "$f" "$R/.fetch/$f"
  done; done
  cd "$R" || exit 1
fi
set --
[ -d results ] && set -- results
[ -n "$(ls -A .fetch)" ] && set -- "$@" .fetch
[ "$#" -eq 0 ] || exec tar -cf - "$@"
"""


def fetch_command(remote: str, workdir: Optional[str], globs: Sequence[str]) -> str:
    return shlex.join(["bash", "-c", FETCH_SCRIPT, "onager-fetch", remote, workdir or "", *globs])


def _ledger_workdir(path: str) -> Optional[str]:
    try:
        with open(path, encoding="utf-8") as handle:
            value = json.load(handle).get("workdir")
    except (OSError, ValueError, AttributeError):
        return None
    return value if isinstance(value, str) else None


def fetch_home(options: Dict[str, Any], ledger: str, host: str, remote: str,
               timeout: float = 600) -> Optional[str]:
    """Copy a host's `results/` (log_result records, appended to the local ones) and its --fetch
    files (into `fetched/<host>/`) into the local launch dir; returns None or an error."""
    launch_dir = os.path.dirname(os.path.dirname(ledger))
    globs = check_fetch(options.get("fetch"))
    command = fetch_command(remote, _ledger_workdir(ledger), globs)
    try:
        proc = subprocess.Popen(ssh_base(options) + [host, command], stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    except (OSError, OnagerError) as exc:
        return str(exc)
    timer = threading.Timer(timeout, proc.kill)
    timer.start()
    try:
        error = _unpack_home(proc.stdout, launch_dir, HostSpec(host).key)
    finally:
        proc.stdout.close()
        code = proc.wait()
        timer.cancel()
    return error or (f"ssh exit code {code}" if code else None)


def _unpack_home(stream: IO[bytes], launch_dir: str, host_key: str) -> Optional[str]:
    """Read the fetch tar: only plain files under results/ and .fetch/, no absolute or `..` name."""
    try:
        with tarfile.open(fileobj=stream, mode="r|") as tar:
            for member in tar:
                parts = member.name.split("/")
                if not member.isfile() or member.name.startswith("/") or ".." in parts or len(parts) < 2:
                    continue
                handle = tar.extractfile(member)
                data = handle.read() if handle is not None else b""
                if parts[0] == "results" and len(parts) == 2 and re.fullmatch(r"\d+\.jsonl", parts[1]):
                    os.makedirs(os.path.join(launch_dir, "results"), exist_ok=True)
                    with open(os.path.join(launch_dir, "results", parts[1]), "ab") as out:
                        out.write(data)
                elif parts[0] == ".fetch":
                    atomic_write(os.path.join(launch_dir, "fetched", host_key, *parts[1:]), data)
    except tarfile.ReadError as exc:
        if "empty file" in str(exc):
            return None  # nothing to bring home
        return f"bad fetch stream ({exc})"
    except OSError as exc:
        return str(exc)
    return None


def fetch_all(options: Dict[str, Any], entries: Sequence[Tuple[str, str, str]],
              timeout: float = 600) -> None:
    """fetch_home for every entry, all hosts at once; a failure is one line on stderr."""
    def work(path: str, host: str, remote: str) -> None:
        error = fetch_home(options, path, host, remote, timeout)
        if error:
            print(f"onager: could not fetch the outputs from {host}:{remote} ({error})", file=sys.stderr)

    threads = [threading.Thread(target=work, args=e, daemon=True) for e in entries]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout + 5)


def remove_command(remote: str) -> str:
    """Remove a launch's dir on a host (`<base>/<job>/<launch>/<host>`), and its launch, job and
    base dirs when they are left empty (never anything above the base)."""
    parts = remote.split("/")
    parents = " ".join(shlex.quote("/".join(parts[:n])) for n in range(len(parts) - 1, max(len(parts) - 4, 0), -1)
                       if "/".join(parts[:n]) not in ("", ".", ".."))
    return f"rm -rf {shlex.quote(remote)}; rmdir {parents} 2>/dev/null; true"


def record_remote(launch_dir: str, host: str, remote: str, workdir: Optional[str] = None) -> None:
    """Note, before anything is sent, that `host` may get this launch's dir at `remote` (and where
    its tasks run there, for --fetch)."""
    key = HostSpec(host).key
    atomic_write(os.path.join(launch_dir, REMOTE_LEDGER, key + ".json"),
                 json.dumps({"host": host, "remote": remote, "workdir": workdir}) + "\n")


def remote_entries(launch_dir: str) -> List[Tuple[str, str, str]]:
    """(ledger file, host, remote dir) of every remote dir this launch may have left."""
    folder = os.path.join(launch_dir, REMOTE_LEDGER)
    try:
        names = sorted(os.listdir(folder))
    except OSError:
        return []
    out = []
    for name in names:
        if not name.endswith(".json") or name.startswith("."):
            continue
        path = os.path.join(folder, name)
        try:
            with open(path, encoding="utf-8") as handle:
                data = json.load(handle)
            host, remote = str(data["host"]), str(data["remote"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if _HOST_RE.match(host) and remote:
            out.append((path, host, remote))
    return out


def remove_remote_dirs(options: Dict[str, Any], entries: Sequence[Tuple[str, str, str]],
                       timeout: float = CONNECT_TIMEOUT + 30) -> List[Tuple[str, str]]:
    """Remove remote launch dirs, all hosts at once, after their outputs came home (results,
    --fetch); an entry is forgotten only once its host confirmed the removal. Returns the
    (host, dir) pairs removed."""
    fetch_all(options, entries, max(timeout, 600) if options.get("fetch") else timeout)
    procs = []
    for path, host, remote in entries:
        try:
            procs.append((path, host, remote, subprocess.Popen(
                ssh_base(options) + [host, remove_command(remote)],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)))
        except (OSError, OnagerError):
            continue
    deadline = time.monotonic() + timeout
    removed = []
    for path, host, remote, proc in procs:
        try:
            code = proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            continue
        if code == 0:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
            removed.append((host, remote))
    return removed


def dispatcher_alive(launch_dir: str) -> bool:
    """Whether the dispatcher of a launch may still run (and so still use its remote dirs).
    A dispatcher on another machine cannot be checked from here: it counts as alive."""
    from onager.backends.local import _alive, _read_pool_file
    import socket
    info = _read_pool_file(os.path.join(launch_dir, "pool.json"))
    if info is None or info.get("pid") is None:
        return False
    if info.get("host") != socket.gethostname():
        return True
    try:
        return _alive(int(info["pid"]))
    except (TypeError, ValueError):
        return False


def sweep_stale(root: str = ".", hosts: Optional[Sequence[str]] = None, skip: Sequence[str] = (),
                timeout: float = CONNECT_TIMEOUT + 30) -> List[Tuple[str, str, str]]:
    """Remove the remote dirs left by finished ssh launches of this project (their dispatcher
    is gone), on `hosts` only when given (those known to answer). Returns (launch, host, dir)."""
    from onager.index import JobIndex
    skipped = {os.path.abspath(p) for p in skip}
    wanted = None if hosts is None else set(hosts)
    removed: List[Tuple[str, str, str]] = []
    try:
        records = JobIndex(root).records()
    except (OSError, ValueError, OnagerError):
        return removed
    work = []
    for record in records:
        if record.backend != "ssh" or os.path.abspath(record.launch_dir) in skipped:
            continue
        entries = [e for e in remote_entries(record.launch_dir) if wanted is None or e[1] in wanted]
        if entries and not dispatcher_alive(record.launch_dir):
            work.append((record, entries))
    results: List[List[Tuple[str, str]]] = [[] for _ in work]

    def clean(i: int, record: Any, entries: Sequence[Tuple[str, str, str]]) -> None:
        results[i] = remove_remote_dirs(dict(record.options or {}), entries, timeout)

    threads = [threading.Thread(target=clean, args=(i, r, e), daemon=True) for i, (r, e) in enumerate(work)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout + 5)
    for (record, _), done in zip(work, results):
        removed += [(record.key, host, remote) for host, remote in done]
    return removed


def setup_host(options: Dict[str, Any], host: str, launch_dir: str, remote: str) -> Optional[str]:
    """Send wrapper, runner, tasks.sh, tasks.idx (and a snapshot's code/) to the host, by tar over
    ssh; returns None or an error."""
    wrapper = host_wrapper(launch_dir)
    proc = subprocess.Popen(ssh_base(options) + [host, setup_command(remote)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    result: Dict[str, bytes] = {}

    def drain(name: str, stream: IO[bytes]) -> None:
        result[name] = stream.read()

    readers = [threading.Thread(target=drain, args=(n, s), daemon=True)
               for n, s in (("out", proc.stdout), ("err", proc.stderr))]
    for r in readers:
        r.start()
    try:
        with tarfile.open(fileobj=proc.stdin, mode="w|", format=tarfile.PAX_FORMAT) as tar:
            now = time.time()
            for name, data in (("wrapper.sh", wrapper), (RUNNER, RUNNER_TEXT.encode())):
                member = tarfile.TarInfo(name)
                member.size, member.mode, member.mtime = len(data), 0o700, now
                tar.addfile(member, io.BytesIO(data))
            for name in ("tasks.sh", "tasks.idx"):
                tar.add(os.path.join(launch_dir, name), arcname=name)
            code = os.path.join(launch_dir, "code")
            if os.path.isdir(code):  # a --snapshot: the frozen code goes once per host
                tar.add(code, arcname="code")
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


# ------------------------------------------------------------------ dispatcher
class _MarkerFilter:
    """Copies a channel to a log file, taking out the runner's `NONCE word value` lines."""

    def __init__(self, nonce: str, sink: Callable[[bytes], None], on_event: Callable[[str, str], None]):
        self.tag = nonce.encode() + b" "
        self.sink = sink
        self.on_event = on_event
        self.carry = b""

    def feed(self, data: bytes) -> None:
        buf = self.carry + data
        while True:
            i = buf.find(self.tag)
            if i < 0:
                hold = 0
                for k in range(min(len(self.tag) - 1, len(buf)), 0, -1):
                    if buf.endswith(self.tag[:k]):
                        hold = k
                        break
                if len(buf) - hold:
                    self.sink(buf[:len(buf) - hold])
                self.carry = buf[len(buf) - hold:]
                return
            j = buf.find(b"\n", i)
            if j < 0:
                if i:
                    self.sink(buf[:i])
                self.carry = buf[i:]
                if len(self.carry) > 256:  # not a marker after all
                    self.sink(self.carry)
                    self.carry = b""
                return
            if i:
                self.sink(buf[:i])
            words = buf[i + len(self.tag):j].decode("ascii", "replace").split()
            if len(words) == 2:
                self.on_event(words[0], words[1])
            buf = buf[j + 1:]

    def close(self) -> None:
        if self.carry:
            self.sink(self.carry)
            self.carry = b""


@dataclass
class _Host:
    spec: HostSpec
    info: HostInfo
    remote: str
    slots: List[Optional[str]]          # CUDA_VISIBLE_DEVICES per slot
    free: List[int] = field(default_factory=list)
    alive: bool = True
    checking: Optional[subprocess.Popen] = None
    suspects: List["_Run"] = field(default_factory=list)
    start_failures: int = 0

    @property
    def name(self) -> str:
        return self.spec.target


@dataclass
class _Run:
    """One attempt of one task on one host slot."""

    task_id: int
    host: _Host
    slot: int
    nonce: str
    proc: subprocess.Popen
    out: IO[bytes]
    err: IO[bytes]
    filters: Dict[int, Any] = field(default_factory=dict)
    open_streams: int = 2
    pgid: Optional[int] = None
    rc: Optional[int] = None
    ended: bool = False       # end marker seen: the slot is free again
    kill_sent: bool = False


class Dispatcher:
    """Keeps every host filled up to its slots until each task has run once."""

    def __init__(self, launch_dir: str, jobname: str, launch_id: str, ids: Sequence[int],
                 options: Dict[str, Any], progress: bool = False, log: Callable[[str], None] = None):
        self.launch_dir = launch_dir
        self.jobname = jobname
        self.launch_id = launch_id
        self.options = options
        self.ids = list(ids)
        self.pending: Deque[int] = deque(self.ids)
        self.attempts: Dict[int, int] = {}
        self.retries = int(options.get("retries", 1) if options.get("retries") not in (None, "") else 1)
        self.max_tasks = options.get("max_tasks")
        self.progress = progress
        self.log = log or (lambda text: print(f"onager: {text}", file=sys.stderr))
        self.hosts: List[_Host] = []
        self.runs: Dict[int, _Run] = {}            # fd -> run (both fds of a run)
        self.active: List[_Run] = []
        self.selector = selectors.DefaultSelector()
        self.helpers: List[subprocess.Popen] = []
        self.done = self.failed = self.cancelled = self.lost = 0
        self.failures: List[Tuple[int, int]] = []
        self.lost_ids: List[int] = []
        self._cancel_mtime = 0.0
        self._cancelled: set = set()
        self.label = f"{jobname}/{launch_id}: "

    # ---------------------------------------------------------------- hosts
    def prepare_hosts(self, probed: Optional[List[HostInfo]] = None) -> None:
        """Probe every host, skip the unreachable ones, send the launch files to the others."""
        specs = parse_hosts(self.options.get("hosts"))
        infos = probed or probe_hosts(self.options, [s.target for s in specs])
        per_task = self.options.get("gpus_per_task")
        default_gpus = self.options.get("gpus")
        if default_gpus is not None:
            default_gpus = _check_gpus(str(default_gpus), "--gpus")
        candidates = []
        key = launch_key(self.launch_dir, self.launch_id)
        for spec, info in zip(specs, infos):
            if not info.reachable:
                self.log(f"host {spec.target} is unreachable ({info.error}); skipping it")
                continue
            if not info.bash:
                self.log(f"host {spec.target} has no bash; skipping it")
                continue
            gpus = spec.gpus if spec.gpus is not None else default_gpus
            try:
                count, slots = slot_gpus(gpus, info.gpu_ids, spec.slots,
                                         int(per_task) if per_task is not None else None, spec.target, info.cpus)
            except OnagerError as exc:
                self.log(f"{exc}; skipping it")
                continue
            if count < 1:
                self.log(f"host {spec.target} has no slot to run tasks in; skipping it")
                continue
            remote = remote_dir_of(self.options, self.jobname, key, spec.key)
            candidates.append(_Host(spec, info, remote, slots, list(range(count))))
        errors: List[Optional[str]] = [None] * len(candidates)
        for host in candidates:
            record_remote(self.launch_dir, host.name, host.remote, remote_workdir(self.launch_dir, host.remote))

        def work(i: int, host: _Host) -> None:
            try:
                for group in range(1, (len(host.slots) - 1) // SESSIONS_PER_MASTER + 1):
                    ssh_master_run(self.options, host.name, "true", group)
                errors[i] = setup_host(self.options, host.name, self.launch_dir, host.remote)
            except OnagerError as exc:
                errors[i] = str(exc)

        threads = [threading.Thread(target=work, args=(i, h), daemon=True) for i, h in enumerate(candidates)]
        try:
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        except BaseException:  # interrupted while sending: what reached a host goes again
            self._cleanup()
            raise
        for host, error in zip(candidates, errors):
            if error:
                self.log(f"cannot send the launch to host {host.name} ({error}); skipping it")
            else:
                self.hosts.append(host)
        if not self.hosts:
            self._cleanup()
            raise OnagerError("no ssh host is usable (see the messages above): check them with onager hosts")

    # ---------------------------------------------------------------- cancel
    def _refresh_cancels(self) -> None:
        try:
            mtime = os.stat(os.path.join(self.launch_dir, CANCEL_FLAG)).st_mtime
        except FileNotFoundError:
            return
        if mtime != self._cancel_mtime:
            self._cancel_mtime = mtime
            self._cancelled = {i for i, st in read_states(self.launch_dir).items() if st.cancelled}
            self._kill_cancelled()

    def _kill_cancelled(self) -> None:
        by_host: Dict[str, List[int]] = {}
        for run in self.active:
            if run.task_id in self._cancelled and run.pgid and not run.kill_sent:
                run.kill_sent = True
                by_host.setdefault(run.host.name, []).append(run.pgid)
        for host, pgids in by_host.items():
            self.helpers.append(subprocess.Popen(ssh_base(self.options) + [host, kill_command(pgids)],
                                                 stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                                 stderr=subprocess.DEVNULL))

    # ---------------------------------------------------------------- spawn
    def _free_slot(self) -> Optional[Tuple[_Host, int]]:
        best = None
        for host in self.hosts:
            if host.alive and host.checking is None and host.free:
                if best is None or len(host.free) / len(host.slots) > len(best.free) / len(best.slots):
                    best = host
        if best is None:
            return None
        return best, best.free.pop(0)

    def _running_count(self) -> int:
        return sum(1 for r in self.active if not r.ended)

    def _spawn(self, task_id: int, host: _Host, slot: int) -> None:
        nonce = secrets.token_hex(12)
        argv = ssh_base(self.options, slot // SESSIONS_PER_MASTER) + \
            [host.name, task_command(host.remote, task_id, nonce, host.slots[slot])]
        out = open(os.path.join(self.launch_dir, "logs", f"{task_id}.out"), "ab", buffering=0)
        err = open(os.path.join(self.launch_dir, "logs", f"{task_id}.err"), "ab", buffering=0)
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                start_new_session=True, close_fds=True)
        run = _Run(task_id, host, slot, nonce, proc, out, err)
        self.attempts[task_id] = self.attempts.get(task_id, 0) + 1
        run.filters[proc.stdout.fileno()] = _MarkerFilter(nonce, out.write,
                                                          lambda word, value, r=run: self._event(r, word, value))
        run.filters[proc.stderr.fileno()] = None
        for stream in (proc.stdout, proc.stderr):
            os.set_blocking(stream.fileno(), False)
            self.selector.register(stream, selectors.EVENT_READ, run)
        self.active.append(run)

    def _event(self, run: _Run, word: str, value: str) -> None:
        if word == "start" and value.isdigit() and run.pgid is None:
            run.pgid = int(value)
            run.host.start_failures = 0
            name = f"{run.task_id}.start@{time.time():.6f}"
            atomic_write(os.path.join(self.launch_dir, "state", name), f"{run.host.name} {run.pgid} ssh\n")
            if run.task_id in self._cancelled or self._is_cancelled(run.task_id):
                self._kill_cancelled()
        elif word == "end" and value.lstrip("-").isdigit() and run.rc is None:
            run.rc = int(value)
            self._finish(run, run.rc)

    def _is_cancelled(self, task_id: int) -> bool:
        self._refresh_cancels()
        return task_id in self._cancelled

    def _finish(self, run: _Run, rc: int) -> None:
        """The task ended (its end marker came, or it was cancelled): record it, free the slot."""
        run.ended = True
        mark(self.launch_dir, run.task_id, "end", rc)
        if self._is_cancelled(run.task_id) and rc != 0:
            self.cancelled += 1
        elif rc == 0:
            self.done += 1
        else:
            self.failed += 1
            self.failures.append((run.task_id, rc))
        run.host.free.append(run.slot)
        try:
            run.proc.stdin.close()  # the runner's watcher sees EOF: the channel can close
        except OSError:
            pass

    # ---------------------------------------------------------------- reading
    def _read(self, key: selectors.SelectorKey) -> None:
        run: _Run = key.data
        stream = key.fileobj
        fd = stream.fileno()
        try:
            data = os.read(fd, 1 << 16)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if data:
            flt = run.filters[fd]
            if flt is None:
                run.err.write(data)
            else:
                flt.feed(data)
            return
        self.selector.unregister(stream)
        flt = run.filters[fd]
        if flt is not None:
            flt.close()
        run.open_streams -= 1
        if run.open_streams == 0:
            self._closed(run)

    def _closed(self, run: _Run) -> None:
        """Both streams of a run are at their end: reap ssh, decide what happened."""
        try:
            code = run.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            run.proc.kill()
            code = run.proc.wait()
        for stream in (run.proc.stdin, run.proc.stdout, run.proc.stderr, run.out, run.err):
            try:
                stream.close()
            except OSError:
                pass
        self.active.remove(run)
        if run.ended:
            return
        if self._is_cancelled(run.task_id):
            self._finish(run, 143 if code in (0, 255) else code)
            return
        # no end marker: the connection broke or the runner was killed; ask the host
        run.host.free.append(run.slot)
        run.host.suspects.append(run)
        if run.host.checking is None and run.host.alive:
            # a master=True call: when the host answers, it also gets a fresh master connection
            run.host.checking = subprocess.Popen(ssh_base(self.options, master=True) + [run.host.name, "true"],
                                                 stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                                 stderr=subprocess.DEVNULL)
        elif not run.host.alive:
            self._lose(run.host, [run], "host-lost")
            run.host.suspects.clear()

    def _check_hosts(self) -> None:
        for host in self.hosts:
            if host.checking is None or host.checking.poll() is None:
                continue
            ok = host.checking.returncode == 0
            host.checking = None
            suspects, host.suspects = host.suspects, []
            if ok:
                host.start_failures += sum(1 for r in suspects if r.pgid is None)
                if host.start_failures >= 3:
                    # it answers, but its tasks do not even start: stop sending work there
                    host.alive = False
                    self.log(f"host {host.name} answers but cannot start tasks (see logs/"
                             f"{suspects[-1].task_id}.err); no more tasks go there")
                self._lose(host, suspects, "connection-lost")
                continue
            host.alive = False
            others = [r for r in self.active if r.host is host and not r.ended]
            self.log(f"host {host.name} was lost; {len(suspects) + len(others)} of its running tasks "
                     f"will run elsewhere (up to --retries {self.retries} times)")
            for run in others:
                try:
                    run.proc.kill()
                except OSError:
                    pass
                run.ended = True
            self._lose(host, suspects + others, "host-lost")

    def _lose(self, host: _Host, runs: Sequence[_Run], reason: str) -> None:
        for run in runs:
            if run.pgid is None:
                # never started: safe to send again, no attempt spent (a host that keeps failing
                # to start tasks is dropped after 3, so this cannot loop forever)
                self.attempts[run.task_id] -= 1
                self.pending.appendleft(run.task_id)
                continue
            mark(self.launch_dir, run.task_id, "lost", reason)
            if self.attempts.get(run.task_id, 0) <= self.retries:
                self.pending.appendleft(run.task_id)
            else:
                self.lost += 1
                self.lost_ids.append(run.task_id)
                self.log(f"task {run.task_id} was lost ({reason} on {host.name}) after "
                         f"{self.attempts.get(run.task_id, 0)} attempts; not retried again")

    # ---------------------------------------------------------------- main loop
    def _show(self, start: float, final: bool = False) -> None:
        running = self._running_count()
        hosts = " ".join(f"{h.name}:{sum(1 for r in self.active if r.host is h and not r.ended)}/{len(h.slots)}"
                         + ("" if h.alive else "(lost)") for h in self.hosts)
        line = (f"{self.label}{self.done} done, {self.failed} failed, {running} running, "
                f"{len(self.pending)} pending"
                f"{', ' + str(self.cancelled) + ' cancelled' if self.cancelled else ''}"
                f"{', ' + str(self.lost) + ' lost' if self.lost else ''}"
                f" [{_fmt_duration(time.time() - start)}] {hosts}")
        sys.stderr.write("\r\033[K" + line + ("\n" if final else ""))
        sys.stderr.flush()

    def run(self) -> int:
        """Run every task; return the number that failed (raises when every host is lost)."""
        start = time.time()
        last_shown = 0.0
        self._refresh_cancels()
        try:
            while True:
                cap = int(self.max_tasks) if self.max_tasks not in (None, "", -1, "-1") else None
                while self.pending and (cap is None or self._running_count() < cap):
                    task_id = self.pending[0]
                    if self._is_cancelled(task_id):
                        self.pending.popleft()
                        self.cancelled += 1
                        continue
                    slot = self._free_slot()
                    if slot is None:
                        break
                    self.pending.popleft()
                    self._spawn(task_id, *slot)
                if not self.active and not any(h.checking for h in self.hosts):
                    if not self.pending:
                        break
                    if not any(h.alive for h in self.hosts):
                        break
                for key, _ in self.selector.select(timeout=0.25):
                    self._read(key)
                self._check_hosts()
                self.helpers = [p for p in self.helpers if p.poll() is None]
                if time.time() - last_shown > 0.5:
                    self._refresh_cancels()
                    if self.progress:
                        self._show(start)
                    last_shown = time.time()
        except KeyboardInterrupt:
            self._interrupt()
            self._cleanup()
            raise
        finally:
            for p in self.helpers:
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    p.kill()
        if self.progress:
            self._show(start, final=True)
        self._cleanup()
        if self.pending:
            left = Tasklist.from_ids(sorted(self.pending))
            raise OnagerError(f"every ssh host was lost; tasks {left} did not run: resume with onager launch "
                              f"--backend ssh --jobname {self.jobname} --tasklist unfinished")
        return self.failed

    def _interrupt(self) -> None:
        """Ctrl-C or SIGTERM: kill every running task on its host, mark it cancelled."""
        by_host: Dict[str, List[int]] = {}
        for run in self.active:
            if not run.ended and run.pgid:
                by_host.setdefault(run.host.name, []).append(run.pgid)
        procs = [subprocess.Popen(ssh_base(self.options) + [h, kill_command(p)], stdin=subprocess.DEVNULL,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                 for h, p in by_host.items()]
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
        for run in list(self.active):
            if not run.ended:
                mark(self.launch_dir, run.task_id, "cancel", "interrupted")
            try:
                run.proc.kill()
            except OSError:
                pass

    def _cleanup(self) -> None:
        """Remove this launch's dir from every host it may have reached, except hosts known to be
        lost (a connect timeout each): their dirs stay in the ledger for the next contact."""
        lost = {h.name for h in self.hosts if not h.alive}
        entries = [e for e in remote_entries(self.launch_dir) if e[1] not in lost]
        remove_remote_dirs(self.options, entries)


# ------------------------------------------------------------------ backend
class SshBackend(Backend):
    name = "ssh"
    runs_in_foreground = True
    config_keys = ("hosts", "ssh_config", "retries", "remote_dir", "ssh_no_host_key_check")

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        # --detach and --gpus-per-task are the local backend's options, read from options too
        parser.add_argument("--hosts", default=None, metavar="LIST",
                            help="ssh: hosts as [user@]host[:slots][:gpus=0,1], comma-separated "
                                 "(any ~/.ssh/config alias; config: ssh hosts)")
        parser.add_argument("--ssh-config", dest="ssh_config", default=None, metavar="FILE",
                            help="ssh: pass -F FILE to every ssh call")
        parser.add_argument("--retries", type=int, default=None, metavar="N",
                            help="ssh: run a task lost with its host again up to N times (default 1)")
        parser.add_argument("--remote-dir", dest="remote_dir", default=None, metavar="DIR",
                            help=f"ssh: where the launch files go on each host (default {DEFAULT_REMOTE_DIR})")
        parser.add_argument("--fetch", action="append", default=None, metavar="GLOB",
                            help="ssh: copy the files matching GLOB (relative to the task's workdir) "
                                 "back into <launch>/fetched/<host>/ before the remote dir goes; repeatable")
        parser.add_argument("--ssh-no-host-key-check", dest="ssh_no_host_key_check", action="store_true",
                            default=None, help="ssh: UNSAFE, accept any host key (open to man-in-the-middle); "
                                               "for throw-away test machines only")

    def __init__(self, options=None):
        super().__init__(options)
        self.failed = 0
        self.probed: Optional[List[HostInfo]] = None

    def check_options(self) -> List[HostSpec]:
        """Refuse bad ssh options with one line (called before anything is written, and by submit_commands)."""
        super().check_options()
        specs = parse_hosts(self.options.get("hosts"))
        config = self.options.get("ssh_config")
        if config and not os.path.isfile(os.path.expanduser(str(config))):
            raise UsageError(f"--ssh-config {config}: no such file; give the path of an ssh config file")
        retries = self.options.get("retries")
        if retries not in (None, "") and int(retries) < 0:
            raise UsageError("--retries must be 0 or more")
        most = self.options.get("max_tasks")
        if most not in (None, "", -1, "-1") and int(most) < 1:
            raise UsageError("--max-tasks must be at least 1")
        if self.options.get("gpus") is not None:
            _check_gpus(str(self.options["gpus"]), "--gpus")
        remote_dir_of(self.options, "job", "1", "host")
        check_fetch(self.options.get("fetch"))
        return specs

    def submit_commands(self, launch: LaunchInfo) -> List[List[str]]:
        specs = self.check_options()
        out = []
        for spec in specs:
            remote = remote_dir_of(self.options, launch.jobname, launch.launch_id, spec.key)
            out.append(ssh_base(self.options) + [spec.target, task_command(remote, 0, "NONCE", None)
                                                 .replace(" 0 NONCE", " ID NONCE")])
        return out

    def preflight(self, launch: LaunchInfo) -> None:
        """Refuse before anything is recorded when no host answers (probes are kept for submit)."""
        self.check_options()
        self.probed = probe_hosts(self.options, [s.target for s in parse_hosts(self.options["hosts"])])
        if not any(i.reachable for i in self.probed):
            detail = "; ".join(f"{i.target}: {i.error}" for i in self.probed)
            raise OnagerError(f"no ssh host is reachable ({detail}): check them with onager hosts")

    def submit(self, launch: LaunchInfo) -> List[str]:
        if self.probed is None:
            self.preflight(launch)
        self._sweep(launch)
        pool_file = os.path.join(launch.launch_dir, "pool.json")
        if _truthy(self.options.get("detach")):
            for info in self.probed or []:
                if not info.reachable:
                    print(f"onager: host {info.target} is unreachable ({info.error}); skipping it", file=sys.stderr)
            log = open(os.path.join(launch.launch_dir, "pool.log"), "ab")
            proc = subprocess.Popen([sys.executable, "-m", "onager.backends.ssh", launch.launch_dir],
                                    stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                    start_new_session=True, close_fds=True,
                                    env=dict(os.environ, PYTHONPATH=_package_parent()))
            log.close()
            _write_pool_file(pool_file, proc.pid)
            return []
        _write_pool_file(pool_file, os.getpid())
        dispatcher = Dispatcher(launch.launch_dir, launch.jobname, launch.launch_id, list(launch.tasklist),
                                self.options, progress=sys.stderr.isatty())
        # Ctrl-C, kill and a closed terminal all stop the tasks and remove the remote dirs
        previous = {sig: signal.signal(sig, _raise_interrupt) for sig in (signal.SIGTERM, signal.SIGHUP)}
        try:
            dispatcher.prepare_hosts(self.probed)
            self.failed = dispatcher.run()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            _write_pool_file(pool_file, None)
        self.summary = dispatcher
        if dispatcher.lost_ids:
            text = (f"tasks {Tasklist.from_ids(sorted(dispatcher.lost_ids))} were lost with their host "
                    f"(--retries {dispatcher.retries} used up); rerun them with: onager launch --backend ssh "
                    f"--jobname {launch.jobname} --tasklist failed")
            if not self.failed:
                raise OnagerError(text)
            print(f"onager: {text}", file=sys.stderr)
        return []

    def _sweep(self, launch: LaunchInfo) -> None:
        """The next contact with a host removes the dirs that finished launches left there."""
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(launch.launch_dir))))
        answering = [i.target for i in self.probed or [] if i.reachable]
        removed = sweep_stale(root, answering, skip=[launch.launch_dir])
        if removed:
            shown = ", ".join(f"{key} on {host}" for key, host, _ in removed)
            print(f"onager: removed {len(removed)} remote launch dir(s) left behind: {shown}", file=sys.stderr)

    def query(self, records) -> Dict[str, Optional[Dict[int, str]]]:
        return query_pools(records)

    def cancel(self, record, tasks: Tasklist, dry_run: bool = False) -> List[List[str]]:
        states = read_states(record.launch_dir)
        targets = [i for i in tasks if not (states.get(i) and states[i].end is not None)]
        by_host: Dict[str, List[int]] = {}
        for task_id in targets:
            st = states.get(task_id)
            if st is not None and st.start is not None:
                found = _start_fields(record.launch_dir, task_id)
                if found:
                    by_host.setdefault(found[0], []).append(found[1])
        options = dict(record.options or {})
        commands = [ssh_base(options) + [host, kill_command(pgids)] for host, pgids in by_host.items()]
        if dry_run:
            return commands or [["# nothing running to kill;", f"{len(targets)} tasks would be marked cancelled"]]
        for task_id in targets:
            mark(record.launch_dir, task_id, "cancel")
        with open(os.path.join(record.launch_dir, CANCEL_FLAG), "w") as handle:
            handle.write(str(time.time()))
        procs = [subprocess.Popen(c, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE) for c in commands]
        for command, proc in zip(commands, procs):
            try:
                _, err = proc.communicate(timeout=CONNECT_TIMEOUT + 20)
            except subprocess.TimeoutExpired:
                proc.kill()
                err = b"no answer"
            if proc.returncode:
                print(f"onager: could not reach {command[-2]} to kill its tasks "
                      f"({_ssh_error(err.decode('utf-8', 'replace'), proc.returncode)}); they are marked cancelled",
                      file=sys.stderr)
        if not dispatcher_alive(record.launch_dir):  # a live dispatcher removes its dirs itself
            remove_remote_dirs(options, remote_entries(record.launch_dir), timeout=CONNECT_TIMEOUT + 5)
        return commands


def _start_fields(launch_dir: str, task_id: int) -> Optional[Tuple[str, int]]:
    """(ssh host, remote process group) from a task's latest start."""
    fields = start_fields(launch_dir, task_id) or []
    if len(fields) >= 2 and fields[1].isdigit() and _HOST_RE.fullmatch(fields[0]):
        return fields[0], int(fields[1])
    return None


def _detached_main(launch_dir: str) -> int:
    """Entry of a `--detach` dispatcher: options come from the launch's own launch.json."""
    with open(os.path.join(launch_dir, "launch.json")) as handle:
        meta = json.load(handle)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    dispatcher = Dispatcher(launch_dir, meta["jobname"], meta["launch_id"],
                            list(Tasklist.parse(meta["tasklist"])), meta.get("options", {}),
                            log=lambda text: print(f"onager: {text}", file=sys.stderr, flush=True))
    try:
        dispatcher.prepare_hosts()
        failed = dispatcher.run()
    except KeyboardInterrupt:
        return 130
    except OnagerError as exc:
        print(f"onager: error: {exc}", file=sys.stderr, flush=True)
        return 1
    finally:
        _write_pool_file(os.path.join(launch_dir, "pool.json"), None)
    return 1 if failed else 0


BACKEND = SshBackend

if __name__ == "__main__":
    raise SystemExit(_detached_main(sys.argv[1]))
