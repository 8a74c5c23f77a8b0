"""ssh: calls of the system OpenSSH client (batch mode, one shared master connection per host
and per 8 slots), host probes, and the remote kill of process groups."""
from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from onager.errors import OnagerError

#: sessions multiplexed on one master connection (sshd's MaxSessions defaults to 10)
SESSIONS_PER_MASTER = 8
CONNECT_TIMEOUT = 15
CONTROL_PERSIST = 60
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
  nvidia-smi --query-gpu=index,name,memory.used,memory.total,utilization.gpu \
    --format=csv,noheader,nounits 2>/dev/null | sed 's/^/gpu=/'
fi
echo "probe=ok"
"""

def control_dir() -> str:
    """A private, short directory for the master sockets (a unix socket path is ~100 chars max)."""
    import tempfile
    base = "/tmp" if os.path.isdir("/tmp") else tempfile.gettempdir()
    path = os.path.join(base, f"onager-ssh-{os.getuid()}")
    with contextlib.suppress(FileExistsError):
        os.mkdir(path, 0o700)
    st = os.lstat(path)
    if not os.path.isdir(path) or os.path.islink(path) or st.st_uid != os.getuid() or st.st_mode & 0o077:
        raise OnagerError(f"{path} is not a private directory of yours (mode 700): remove it and retry")
    return path


def ssh_base(options: dict[str, Any], group: int = 0, master: bool = False) -> list[str]:
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


def ssh_master_run(options: dict[str, Any], host: str, command: str, group: int = 0,
                   timeout: float = CONNECT_TIMEOUT + 30) -> tuple[int, str, str]:
    """Run a command that may start the master connection: output through files, not pipes,
    because a master going to the background keeps the pipes of its first client open."""
    import subprocess
    import tempfile
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        try:
            proc = subprocess.run(ssh_base(options, group, master=True) + [host, command],
                                  stdin=subprocess.DEVNULL, stdout=out, stderr=err, timeout=timeout)
            code = proc.returncode
        except FileNotFoundError:
            raise OnagerError("ssh not found: install the OpenSSH client (the ssh backend calls the system "
                              "ssh)") from None
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
    cpus: int | None = None
    mem_kb: int | None = None
    avail_kb: int | None = None
    load: str = ""
    bash: str = ""
    gpus: list[dict[str, str]] = field(default_factory=list)

    @property
    def gpu_ids(self) -> list[str]:
        return [g["index"] for g in self.gpus]


def probe_host(options: dict[str, Any], host: str) -> HostInfo:
    """One ssh call: is the host reachable, and its CPUs, memory, load and GPUs."""
    info = HostInfo(host)
    code, out, err = ssh_master_run(options, host, PROBE_SCRIPT)
    values: dict[str, str] = {}
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


def probe_hosts(options: dict[str, Any], hosts: Sequence[str]) -> list[HostInfo]:
    """Probe every host at once (one thread and one ssh call per host)."""
    import threading
    results: list[HostInfo | None] = [None] * len(hosts)

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


def kill_command(pgids: Sequence[int], grace: float = 5.0) -> str:
    """TERM every process group, then KILL what is left after `grace` seconds."""
    groups = " ".join(f"-{int(p)}" for p in pgids)
    rounds = max(1, int(grace * 10))
    return (f"kill -TERM -- {groups} 2>/dev/null; i=0; while [ $i -lt {rounds} ]; do "
            f"alive=0; for g in {groups}; do kill -0 -- $g 2>/dev/null && alive=1; done; "
            f"[ $alive = 0 ] && exit 0; sleep 0.1; i=$((i+1)); done; kill -KILL -- {groups} 2>/dev/null; exit 0")
