"""Shared helpers for tests on real engines: skip reasons, sweeps with known argv, the CLI.

Each engine test module uses a fixture (`slurm`, `sge`) that skips with the reason when
ci/start-engines.sh did not report the engine or its commands are not on PATH, so the
suite passes on a laptop. Jobs run as the test user on this machine: the launch
directory on local disk is the shared filesystem.
"""
from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import time

import pytest


def _root_conftest():
    """tests/conftest.py under its own name (two modules called conftest would clash)."""
    import importlib.util
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "conftest.py")
    spec = importlib.util.spec_from_file_location("onager_tests_root_conftest", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


engines_env = _root_conftest().engines_env
run_onager = _root_conftest().run_onager

# prints its arguments as JSON and exits with the code given as its last argument
ECHO_ARGV = "import sys,json; print(json.dumps(sys.argv[1:])); sys.exit(int(sys.argv[-1]))"
NASTY = 'it\'s a "test" {x} $HOME'


def require_engine(flag: str, commands: list[str], what: str) -> None:
    env = engines_env()
    if env.get(flag) != "1":
        pytest.skip(f"{what} is not running: {flag}=1 missing from /tmp/onager-engines.env (run make engines)")
    missing = [c for c in commands if shutil.which(c) is None]
    if missing:
        pytest.skip(f"{what}: {', '.join(missing)} not on PATH")


@pytest.fixture
def slurm(project):
    require_engine("ONAGER_TEST_SLURM", ["sbatch", "squeue", "scancel", "scontrol"], "Slurm")
    return project


@pytest.fixture
def sge(project):
    require_engine("ONAGER_TEST_SGE", ["qsub", "qstat", "qdel", "qconf"], "Grid Engine")
    return project


class Cli:
    """`onager ...` in the project directory; `ok()` asserts exit 0 and gives the result."""

    def __init__(self, root):
        self.root = str(root)

    def __call__(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        return run_onager(list(args), cwd=self.root, timeout=timeout)

    def ok(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        out = self(*args, timeout=timeout)
        assert out.returncode == 0, f"onager {shlex.join(args)} -> {out.returncode}\n{out.stdout}\n{out.stderr}"
        return out

    def rows(self, *args: str) -> list[dict]:
        return json.loads(self.ok("list", "--json", *args).stdout)


@pytest.fixture
def cli(project):
    return Cli(project)


def write_sweep(root, jobname: str, argvs: dict[int, list[str]], codes: dict[int, int] | None = None,
                script: str = ECHO_ARGV) -> dict[int, list[str]]:
    """A jobfile whose task i runs `python3 -c SCRIPT *argvs[i] CODE`; returns the argv each must print."""
    codes = codes or {}
    expected = {}
    entries = {}
    for task_id, args in argvs.items():
        full = [*args, str(codes.get(task_id, 0))]
        expected[task_id] = full
        entries[str(task_id)] = [shlex.join(["python3", "-c", script, *full]), f"{jobname}_{task_id}", {}]
    path = os.path.join(str(root), ".onager", "scripts", jobname, "jobs.json")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(entries, handle)
    return expected


def write_commands(root, jobname: str, commands: dict[int, str]) -> None:
    path = os.path.join(str(root), ".onager", "scripts", jobname, "jobs.json")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        json.dump({str(i): [c, f"{jobname}_{i}", {}] for i, c in commands.items()}, handle)


def launch_dir(root, jobname: str, launch_id: str) -> str:
    return os.path.join(str(root), ".onager", "launches", jobname, launch_id)


def task_output(root, jobname: str, launch_id: str, task_id: int) -> str:
    with open(os.path.join(launch_dir(root, jobname, launch_id), "logs", f"{task_id}.out"), encoding="utf-8") as h:
        return h.read()


def starts(root, jobname: str, launch_id: str) -> dict[int, int]:
    """How many times each task started (its start files)."""
    counts: dict[int, int] = {}
    for name in os.listdir(os.path.join(launch_dir(root, jobname, launch_id), "state")):
        if _attempt_stamp(name) is not None:
            task_id = int(name.split(".")[0])
            counts[task_id] = counts.get(task_id, 0) + 1
    return counts


def _attempt_stamp(name: str) -> float | None:
    """When an attempt started: its start name (`<id>.start@<t0>[@<attempt>]`, which stays when
    it ends), or the end name an older wrapper renamed it to (`<id>.end@<end>@<code>@<start>`);
    None for other names."""
    parts = name.split("@")
    if parts[0].endswith(".start") and len(parts) in (2, 3):
        return float(parts[1])
    if parts[0].endswith(".end") and len(parts) == 4:
        return float(parts[3])
    return None


def wait_until(predicate, timeout: float, interval: float = 0.5, what: str = "condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


@pytest.fixture
def helpers():
    """The helpers above, for test modules (they cannot import a conftest by name)."""
    import types
    return types.SimpleNamespace(write_sweep=write_sweep, write_commands=write_commands, launch_dir=launch_dir,
                                 task_output=task_output, starts=starts, wait_until=wait_until,
                                 read_start=read_start, alive=alive,
                                 NASTY=NASTY, ECHO_ARGV=ECHO_ARGV)


def read_start(root, jobname: str, launch_id: str, task_id: int) -> list[str] | None:
    """host, pid, job id that a task's latest attempt wrote when it started."""
    state = os.path.join(launch_dir(root, jobname, launch_id), "state")
    names = sorted((n for n in os.listdir(state) if n.split(".")[0] == str(task_id)
                    and _attempt_stamp(n) is not None), key=_attempt_stamp)
    if not names:
        return None
    with open(os.path.join(state, names[-1])) as handle:
        return handle.read().split()


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
