"""Start-up of every command against a bare `python -c pass` (target: at most 2x), and the
fixed cost of a launch.

Measured in a NON-editable install: a wheel of this tree installed into a fresh venv
(an editable install adds an import hook that makes `python -c pass` itself twice as
slow, which flatters the ratio). The commands run in an empty directory, so each one
costs its imports and argument parsing, not work: `onager --help`, `onager list`,
`onager prelaunch +help`, `onager launch --help` (which builds every backend's options),
each as users type it (the `onager` script) and as `python -m onager`, and, for
comparison, onager 0.1.3's `--help` when it can be installed. Two references of the same
run say what no command can go below: `python -c 'import argparse'` (the parser of every
command with options) and `python -c 'import runpy, argparse'` (the same under `-m`).

Then the fixed cost of a launch, in a project with a one-task jobfile: a Slurm
`--dry-run` (it asks `scontrol show config` for MaxArraySize) and a local launch of `true`.

With a real Slurm (ONAGER_TEST_SLURM=1, or in /tmp/onager-engines.env) and SUBMITIT_PYTHON
naming a Python that has submitit, it also submits a 1,000-task array of `true` with both
(submission only, each job cancelled at once) and prints onager's time over submitit's.

    python benchmarks/startup_bench.py [runs, default 20]
"""
from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
import tempfile
import time
import venv

from _common import ROOT, interleaved, median_spread, old_onager_venv, ratio, report

RUNS = int(sys.argv[1]) if len(sys.argv) > 1 else 20


def install(where: str) -> str:
    """A fresh venv with onager installed from a wheel of this tree; its python."""
    wheels = os.path.join(where, "wheels")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", wheels, ROOT], check=True,
                   stdout=subprocess.DEVNULL)
    env_dir = os.path.join(where, "venv")
    venv.create(env_dir, with_pip=True)
    py = os.path.join(env_dir, "bin", "python")
    subprocess.run([py, "-m", "pip", "install", "-q", *glob.glob(os.path.join(wheels, "onager-*.whl"))], check=True,
                   stdout=subprocess.DEVNULL)
    return py


def timer(argv: list[str], cwd: str, env: dict[str, str]):
    def run() -> float:
        start = time.perf_counter()
        subprocess.run(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        return time.perf_counter() - start
    return run


def measure(title: str, commands: dict[str, list[str]], cwd: str, env: dict[str, str], runs: int,
            target: str) -> None:
    """Run the commands interleaved; print each median and its ratio to the first (the reference)."""
    names = list(commands)
    load = os.getloadavg()[0]
    results = interleaved(runs, *(timer(commands[n], cwd, env) for n in names))
    bare = results[0]
    figures = {names[0]: median_spread(bare, "ms", 1000, 1)}
    for name, values in zip(names[1:], results[1:]):
        figures[name] = f"{median_spread(values, 'ms', 1000, 1)}  ratio {ratio(values, bare, target)}"
    report(f"{title}, {runs} interleaved runs each (load {load:.1f} before, {os.getloadavg()[0]:.1f} after)", figures)


def slurm_available() -> bool:
    if os.environ.get("ONAGER_TEST_SLURM") == "1":
        return True
    try:
        with open("/tmp/onager-engines.env") as handle:
            return "ONAGER_TEST_SLURM=1" in handle.read().split()
    except OSError:
        return False


SUBMITIT = """
import sys, time, submitit
start = time.perf_counter()
executor = submitit.AutoExecutor(folder=sys.argv[1], cluster="slurm")
executor.update_parameters(timeout_min=60, cpus_per_task=1, mem_gb=2, slurm_job_name=sys.argv[2])
jobs = executor.map_array(int, range(1000))   # 1,000 tasks, each as trivial as `true`
print(jobs[0].job_id.split("_")[0], time.perf_counter() - start)
"""


def versus_submitit(py: str, tmp: str, env: dict[str, str], runs: int) -> None:
    """Submission of a 1,000-task array of `true`: onager (the whole command) against submitit
    (its Python start and import included), each job cancelled as soon as it is queued."""
    submitit_py = os.environ.get("SUBMITIT_PYTHON")
    if not slurm_available() or not submitit_py:
        print("(onager vs submitit: skipped; needs a real Slurm and SUBMITIT_PYTHON=a python with submitit)")
        return
    project = os.path.join(tmp, "array")
    os.mkdir(project)
    onager = os.path.join(os.path.dirname(py), "onager")
    subprocess.run([onager, "prelaunch", "+jobname", "thousand", "+command", "true", "+arg", "--i",
                    "+range", "0", "1000", "+q"], cwd=project, env=env, check=True, stdout=subprocess.DEVNULL)
    timings: dict[str, list[float]] = {"onager launch --backend slurm": [], "submitit map_array": []}
    for n in range(runs):
        start = time.perf_counter()
        subprocess.run([onager, "launch", "--backend", "slurm", "--jobname", "thousand", "-q"], cwd=project,
                       env=env, check=True, stdout=subprocess.DEVNULL)
        timings["onager launch --backend slurm"].append(time.perf_counter() - start)
        subprocess.run(["scancel", "-n", "thousand"], check=False)
        name = f"submitit-bench-{os.getpid()}-{n}"
        start = time.perf_counter()
        subprocess.run([submitit_py, "-c", SUBMITIT, os.path.join(tmp, "submitit"), name], check=True,
                       stdout=subprocess.DEVNULL)
        timings["submitit map_array"].append(time.perf_counter() - start)
        subprocess.run(["scancel", "-n", name], check=False)
    ours, theirs = timings.values()
    report(f"1,000-task Slurm array of true, submission only, {runs} interleaved runs (load {os.getloadavg()[0]:.1f})",
           {"submitit map_array (reference)": median_spread(theirs, "s", 1, 2),
            "onager launch --backend slurm": f"{median_spread(ours, 's', 1, 2)}  ratio "
                                             f"{ratio(ours, theirs, '<= 1x (issue 17)')}"})


def main() -> int:
    tmp = tempfile.mkdtemp(prefix="onager-startup-")
    try:
        py = install(tmp)
        bindir = os.path.dirname(py)
        script = os.path.join(bindir, "onager")
        empty = os.path.join(tmp, "empty")
        os.mkdir(empty)
        env = {"PATH": bindir + ":/usr/bin:/bin", "HOME": tmp,
               "ONAGER_GLOBAL_CONFIG": os.path.join(tmp, "global.onagerconfig")}
        commands = {
            "python -c pass (reference)": [py, "-c", "pass"],
            "floor: python -c 'import argparse'": [py, "-c", "import argparse"],
            "floor: python -c 'import runpy, argparse'": [py, "-c", "import runpy, argparse"],
        }
        for words in (["--help"], ["list"], ["prelaunch", "+help"], ["launch", "--help"], ["wait", "--help"]):
            shown = " ".join(words) + (" (no launches)" if words == ["list"] else "")
            commands[f"onager {shown}"] = [script, *words]
            commands[f"python -m onager {shown}"] = [py, "-m", "onager", *words]
        old = old_onager_venv(os.path.join(tmp, "venv013"))
        if old:
            commands["0.1.3: onager --help"] = [old, "--help"]
        measure("start-up, non-editable install", commands, empty, env, RUNS, "<= 2x")

        project = os.path.join(tmp, "project")
        os.mkdir(project)
        subprocess.run([script, "prelaunch", "+jobname", "one", "+command", "true", "+q"], cwd=project, env=env,
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        launches = {
            "python -c pass (reference)": [py, "-c", "pass"],
            "1-task slurm --dry-run": [script, "launch", "--backend", "slurm", "--jobname", "one", "--dry-run"],
            "1-task local launch of true": [script, "launch", "--backend", "local", "--jobname", "one", "-q"],
        }
        measure("fixed cost of a launch", launches, project, env, max(3, RUNS // 2), "")
        versus_submitit(py, tmp, env, 3)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
