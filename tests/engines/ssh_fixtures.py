"""Helpers for the ssh backend tests on real sshd instances (see ci/README.md)."""
from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import time

import pytest
from support import live_in_group

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def host_block(ssh_config_path: str) -> str:
    """The Host blocks of a generated ssh_config, comments dropped."""
    with open(ssh_config_path) as handle:
        return "".join(line for line in handle if not line.lstrip().startswith("#")).strip() + "\n"


def dead_block(alias: str, port: int, like_dir: str) -> str:
    """A Host alias for a port where nothing listens."""
    return (f"Host {alias}\n    HostName 127.0.0.1\n    Port {port}\n    User root\n"
            f"    IdentityFile {like_dir}/client_key\n    IdentitiesOnly yes\n"
            f"    UserKnownHostsFile {like_dir}/known_hosts\n    StrictHostKeyChecking yes\n"
            f"    BatchMode yes\n    ConnectTimeout 5\n")


def write_config(path: str, dirs: list[str], extra: str = "") -> str:
    """ONE ssh config with the Host blocks of every sshd directory given."""
    text = "\n".join(host_block(os.path.join(d, "ssh_config")) for d in dirs) + "\n" + extra
    with open(path, "w") as handle:
        handle.write(text)
    return path


def start_sshd(port: int, directory: str) -> str:
    """Start a throw-away sshd with ci/start-sshd.sh; returns its directory."""
    env = dict(os.environ, SSHD_PORT=str(port), SSHD_DIR=directory)
    proc = subprocess.run(["bash", os.path.join(ROOT, "ci", "start-sshd.sh")], env=env,
                          capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        raise RuntimeError(f"start-sshd.sh failed: {proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    return directory


@contextlib.contextmanager
def throwaway_sshd(port: int, directory: str):
    """An sshd of its own that a test may kill and start again; stopped afterwards in any case."""
    start_sshd(port, directory)
    try:
        yield directory
    finally:
        with contextlib.suppress(OSError, ValueError):
            kill_sshd(directory)


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        tree.setdefault(int(fields[1]), []).append(int(name))
    return tree


def kill_sshd(directory: str) -> list[int]:
    """Kill the sshd of `directory` (its pid file) and every session it serves: a lost host."""
    with open(os.path.join(directory, "sshd.pid")) as handle:
        pid = int(handle.read().strip())
    tree = _children()
    victims, todo = [], [pid]
    while todo:
        p = todo.pop()
        victims.append(p)
        todo.extend(tree.get(p, []))
    # only the daemon and the per-connection sshd processes: the task processes under them
    # keep running, as they would on a machine that is cut off from the network
    sshd = [p for p in victims if _comm(p).startswith("sshd")]
    for p in sshd:
        with contextlib.suppress(ProcessLookupError):
            os.kill(p, signal.SIGKILL)
    return sshd


def _comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as handle:
            return handle.read().strip()
    except OSError:
        return ""


def pids_matching(marker: str) -> list[int]:
    """Processes whose command line contains `marker` (this process and pgrep excluded)."""
    out = subprocess.run(["pgrep", "-f", marker], capture_output=True, text=True)
    return [int(p) for p in out.stdout.split() if int(p) != os.getpid()]


def group_alive(pgid: int) -> bool:
    """Whether a process group has a live (not zombie) process: PID 1 here may never reap."""
    return bool(live_in_group(pgid))


def wait_for(predicate, timeout: float, interval: float = 0.2) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


def start_files(launch_dir: str) -> dict[int, list[str]]:
    """task id -> contents (host pgid ...) of each of its start files."""
    out: dict[int, list[str]] = {}
    state = os.path.join(launch_dir, "state")
    for name in sorted(os.listdir(state)):
        m = re.match(r"(\d+)\.start@", name)
        if m:
            try:
                with open(os.path.join(state, name)) as handle:
                    out.setdefault(int(m.group(1)), []).append(handle.read().strip())
            except OSError:
                pass
    return out


def _root_conftest():
    """tests/conftest.py by path (the name `conftest` may be another directory's)."""
    import importlib.util
    import sys
    name = "onager_tests_root_conftest"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, "tests", "conftest.py"))
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        sys.modules[name] = module
    return sys.modules[name]


def engines_env() -> dict[str, str]:
    return _root_conftest().engines_env()


def run_onager(args: list[str], **kwargs) -> subprocess.CompletedProcess:
    return _root_conftest().run_onager(args, **kwargs)


ENV = engines_env()
SSHD_A, SSHD_B = ENV.get("ONAGER_TEST_SSHD_A"), ENV.get("ONAGER_TEST_SSHD_B")
#: every real-sshd test module's marks: `pytestmark = SSHD_MARKS`
SSHD_MARKS = [
    pytest.mark.sshd,
    pytest.mark.skipif(not (SSHD_A and SSHD_B),
                       reason="needs the test sshd instances ONAGER_TEST_SSHD_A/B (run ci/start-engines.sh)"),
]
