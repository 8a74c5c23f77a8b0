"""Time `onager results` on a fabricated 100k-task launch (target: under about 2 s).

The launch directory is built with the real onager modules: prelaunch writes the jobfile,
launch.prepare() freezes it (tasks.sh, tasks.idx, tasks.jsonl), the index records it,
state names are the wrapper's (`<id>.end@T@0@START`), results come from
onager.log_result() and logs hold a `Test accuracy: X` line. No task is actually run.

    python benchmarks/results_bench.py [--tasks 100000] [--repeat 3] [--keep DIR]
"""
from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from onager import launch as launchmod  # noqa: E402
from onager import prelaunch  # noqa: E402
from onager.index import JobIndex, LaunchRecord  # noqa: E402
from onager.task import log_result  # noqa: E402

JOB = "bench"


def fabricate(directory: str, tasks: int) -> None:
    """A launched-and-finished job of `tasks` tasks: lr x bs x seed."""
    lrs = [f"{10 ** -(i / 2):.6g}" for i in range(10)]
    bss = [str(2 ** (4 + i)) for i in range(10)]
    seeds = [str(s) for s in range(1, max(1, tasks // 100) + 1)]
    cwd = os.getcwd()
    os.chdir(directory)
    try:
        assert prelaunch.run(["+jobname", JOB, "+command", "python train.py", "+arg", "--lr", *lrs,
                              "+arg", "--bs", *bss, "+arg", "--seed", *seeds, "+tag", "+q"]) == 0
        backend, info = launchmod.prepare(JOB, "local", {})
        JobIndex().add(LaunchRecord(JOB, info.launch_id, "local", info.launch_dir, str(info.tasklist),
                                    info.count, time.time(), [], {}))
        launch_dir = info.launch_dir
        state = os.path.join(launch_dir, "state")
        logs = os.path.join(launch_dir, "logs")
        now = time.time()
        os.environ["ONAGER_LAUNCH_DIR"] = launch_dir
        for task_id in range(1, info.count + 1):
            for name in (f"{task_id}.end@{now + 1:.6f}@{0 if task_id % 50 else 1}@{now:.6f}",):
                os.close(os.open(os.path.join(state, name), os.O_WRONLY | os.O_CREAT, 0o644))
            os.environ["ONAGER_TASK_ID"] = str(task_id)
            accuracy = 0.5 + (task_id % 997) / 2000
            log_result(loss=2.0, accuracy=accuracy / 2)
            log_result(loss=0.1 + (task_id % 13) / 100, accuracy=accuracy)
            with open(os.path.join(logs, f"{task_id}.out"), "w") as handle:
                handle.write(f"epoch 1\nTest accuracy: {accuracy / 2:.4f}\nepoch 2\nTest accuracy: {accuracy:.4f}\n")
    finally:
        os.environ.pop("ONAGER_LAUNCH_DIR", None)
        os.environ.pop("ONAGER_TASK_ID", None)
        os.chdir(cwd)


def time_cli(directory: str, args: list, repeat: int) -> tuple[float, float]:
    """Median wall time and CPU time (user+sys) of `python -m onager results ...`, start-up included.

    CPU time is the figure to compare on a busy machine, where wall time also counts waiting.
    """
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    walls, cpus = [], []
    for _ in range(repeat):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "onager", "results", JOB, *args], cwd=directory, env=env,
                              capture_output=True, stdin=subprocess.DEVNULL)
        walls.append(time.perf_counter() - start)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
        if done.returncode != 0:
            raise SystemExit(f"onager results {' '.join(args)} failed: {done.stderr.decode().strip()}")
    return statistics.median(walls), statistics.median(cpus)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=100_000, help="a multiple of 100 (lr x bs x seed)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--keep", default=None, help="build in this directory and keep it (reused when it already "
                                                     "holds the launch)")
    args = parser.parse_args()
    directory = args.keep or tempfile.mkdtemp(prefix="onager-results-bench-")
    os.makedirs(directory, exist_ok=True)
    os.environ.setdefault("ONAGER_GLOBAL_CONFIG", os.path.join(directory, "global.onagerconfig"))
    try:
        if os.path.exists(os.path.join(directory, ".onager", "index.jsonl")):
            print(f"reusing the launch already in {directory}")
        else:
            start = time.perf_counter()
            fabricate(directory, args.tasks)
            print(f"fabricated {args.tasks} tasks in {time.perf_counter() - start:.1f} s ({directory})")
        cases = [
            ("table", []),
            ("--csv", ["--csv"]),
            ("--json", ["--json"]),
            ("--sort -accuracy --top 5", ["--sort", "-accuracy", "--top", "5"]),
            ("--group-by lr bs", ["--group-by", "lr", "bs"]),
            ("--metric regex over logs", ["--metric", "acc=Test accuracy: ([0-9.]+)", "--csv"]),
        ]
        print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} before timing")
        worst = 0.0
        for label, extra in cases:
            wall, cpu = time_cli(directory, extra, args.repeat)
            worst = max(worst, wall)
            print(f"onager results {JOB} {label:<28} {args.tasks} tasks: {wall:.2f} s wall, {cpu:.2f} s CPU")
        print(f"slowest: {worst:.2f} s wall (target: under about 2 s at 100k tasks; "
              f"load average now {os.getloadavg()[0]:.1f})")
    finally:
        if not args.keep:
            shutil.rmtree(directory, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
