"""Building a launch of N tasks (default 1,000,000) against the prelaunch of the same job,
and the Slurm dry run against onager 0.1.3's, all measured in this run, interleaved.

- prelaunch: `onager prelaunch` of 100 x 100 x N/10,000 tasks (+tag, +quiet): the reference.
- build: what `onager launch` does before it submits: jobs.json read, tasks.sh, tasks.idx and
  tasks.jsonl written (`launch.write_tasks`), in a child process whose peak RSS is read with
  resource.getrusage. Target: at most 3x the prelaunch, memory flat in N (64 MB).
- slurm --dry-run: `onager launch --backend slurm --dry-run` (reads and checks every task,
  prints the sbatch lines) against 0.1.3's `onager launch --backend slurm -d` of the same
  jobs.json (0.1.3 reads our jobfile). Target: faster than 0.1.3.
- fixed cost of a launch: a 1-task `launch --backend slurm --dry-run` and a 1-task local
  launch (provenance included), against `python -c pass`.

    python benchmarks/build_bench.py [N] [runs]     (ONAGER_013=path/to/0.1.3/onager to reuse one)
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time

from _common import ROOT, compiled, interleaved, median_spread, old_onager_venv, onager_argv, ratio, report

N = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
RUNS = int(sys.argv[2]) if len(sys.argv) > 2 else 3
VALUES = [str(i) for i in range(1, 101)]
THIRD = [str(i) for i in range(1, max(1, N // 10_000) + 1)]
PRELAUNCH = ["prelaunch", "+jobname", "big", "+command", "python train.py", "+arg", "--a", *VALUES,
             "+arg", "--b", *VALUES, "+pos-arg", *THIRD, "+tag", "+quiet"]

BUILD = """
import os, resource, sys, time
from onager.jobfile import JobBlocks
from onager.launch import write_tasks
target = sys.argv[1]
os.makedirs(target)
start = time.perf_counter()
count, _ = write_tasks(target, JobBlocks(".onager/scripts/big/jobs.json"))
print(time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, count)
"""


def run(argv: list[str], cwd: str, env: dict[str, str]) -> tuple[float, float]:
    """Wall seconds and peak RSS (MB) of a child run to completion."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    if proc.stderr:
        proc.stderr.close()
    if status != 0:
        raise RuntimeError(f"{argv[:4]} failed: {err[-500:]}")
    return wall, usage.ru_maxrss / 1024


def main() -> int:
    compiled()  # before env is copied: run the compiled modules, as an installed onager does
    tmp = tempfile.mkdtemp(prefix="onager-build-")
    env = dict(os.environ, PYTHONPATH=ROOT, ONAGER_GLOBAL_CONFIG=os.path.join(tmp, "global.onagerconfig"))
    old_env = {k: v for k, v in env.items() if k != "PYTHONPATH"}
    memory: dict[str, list[float]] = {"prelaunch": [], "build": [], "dry": [], "dry013": []}
    builds = iter(range(10 ** 6))

    def prelaunch() -> float:
        wall, rss = run(onager_argv() + PRELAUNCH, tmp, env)
        memory["prelaunch"].append(rss)
        return wall

    def build() -> float:
        target = os.path.join(tmp, ".onager", "launches", "big", f".build-{next(builds)}")
        start = time.perf_counter()
        out = subprocess.run([sys.executable, "-c", BUILD, target], cwd=tmp, env=env, check=True,
                             capture_output=True, text=True).stdout.split()
        wall = time.perf_counter() - start
        memory["build"].append(float(out[1]))
        assert int(out[2]) == N, out
        shutil.rmtree(target)
        return wall

    def dry() -> float:
        wall, rss = run(onager_argv() + ["launch", "--backend", "slurm", "--jobname", "big", "--dry-run"], tmp, env)
        memory["dry"].append(rss)
        return wall

    try:
        os.makedirs(os.path.join(tmp, ".onager"))
        with open(os.path.join(tmp, ".onager", ".gitignore"), "w") as handle:
            handle.write("*\n")  # 0.1.3 asks about .gitignore on first use; this skips the question
        prelaunch()  # the jobfile every build and dry run reads
        size = os.path.getsize(os.path.join(tmp, ".onager", "scripts", "big", "jobs.json"))
        old = old_onager_venv(os.path.join(tempfile.gettempdir(), "onager-bench-venv013"))
        commands = [prelaunch, build, dry]
        if old:
            def dry013() -> float:
                wall, rss = run([old, "launch", "--backend", "slurm", "--jobname", "big", "-d"], tmp, old_env)
                memory["dry013"].append(rss)
                return wall
            commands.append(dry013)
        results = interleaved(RUNS, *commands)
        figures = {
            "jobs.json": f"{size / 1e6:.0f} MB",
            "prelaunch (reference)": f"{median_spread(results[0])}, peak {max(memory['prelaunch']):.0f} MB",
            "build (read jobs.json, write tasks.sh/.idx/.jsonl)":
                f"{median_spread(results[1])}, peak {max(memory['build']):.0f} MB (target <= 64 MB)",
            "build / prelaunch": ratio(results[1], results[0], "<= 3x"),
            "slurm --dry-run": f"{median_spread(results[2])}, peak {max(memory['dry']):.0f} MB",
        }
        if old:
            figures["0.1.3 slurm -d"] = f"{median_spread(results[3])}, peak {max(memory['dry013']):.0f} MB"
            figures["slurm --dry-run / 0.1.3's"] = ratio(results[2], results[3], "< 1x")
        else:
            figures["0.1.3"] = "not measured (no onager 0.1.3; set ONAGER_013)"
        # the fixed cost of one launch: a 1-task dry run and a 1-task local launch with provenance
        bare = lambda: run([sys.executable, "-c", "pass"], tmp, env)[0]  # noqa: E731
        one_dry = lambda: run(onager_argv() + ["launch", "--backend", "slurm", "--jobname", "one",  # noqa: E731
                                               "--command", "true", "--dry-run"], tmp, env)[0]
        one_local = lambda: run(onager_argv() + ["launch", "--backend", "local", "--jobname", "one",  # noqa: E731
                                                 "--command", "true", "-q"], tmp, env)[0]
        fixed = interleaved(max(RUNS, 5), bare, one_dry, one_local)
        figures["python -c pass"] = median_spread(fixed[0], "ms", 1000, 0)
        figures["1-task slurm --dry-run"] = median_spread(fixed[1], "ms", 1000, 0)
        figures["1-task local launch (provenance, run, record)"] = median_spread(fixed[2], "ms", 1000, 0)
        report(f"launch build of {N:,} tasks, {RUNS} interleaved runs each (load {os.getloadavg()[0]:.1f}, "
               f"{os.cpu_count()} CPUs)", figures)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
