"""`onager list` of one 100,000-task launch (every task finished, 5% failed), against the
prelaunch of the same job and onager 0.1.3's `list` of the same jobfile, all in this run;
then `list --summary` of a 1,000,000-task launch against one listing of its state/.

The job is prelaunched for real (`+arg --lr` x `+arg --seed`, +tag), its launch directory
built with `launch.write_tasks`, its state names written as the wrapper writes them (a start
name and an end name per task), and its record added to the index. 0.1.3 lists the same
jobs.json through its own `.onager/job_index.csv`. Peak memory is each command's own
(`/usr/bin/time -f %M` where it exists: the rusage of a child forked from this process would
count this process's memory). Targets: the table in at most 3x the prelaunch and 120 MB, the
memory flat in N for the table, --json and --csv; `--summary` of 1M tasks under a second.

    python benchmarks/list_bench.py [N, default 100000] [runs, default 3] [summary N, default 1000000]

(the summary's launch has two million state names: writing them takes minutes; 0 skips it)
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time

from _common import ROOT, compiled, interleaved, median_spread, old_onager_venv, onager_argv, ratio, report

sys.path.insert(0, ROOT)
from onager.index import JobIndex, LaunchRecord  # noqa: E402
from onager.jobfile import iter_jobfile  # noqa: E402
from onager.launch import write_tasks  # noqa: E402

N = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
RUNS = int(sys.argv[2]) if len(sys.argv) > 2 else 3
SUMMARY_N = int(sys.argv[3]) if len(sys.argv) > 3 else 1_000_000
TIME = "/usr/bin/time"


def prelaunch_args(jobname: str, n: int) -> list[str]:
    seeds = [str(s) for s in range(1, n // 10 + 1)]
    return ["prelaunch", "+jobname", jobname, "+command", "python train.py", "+arg", "--lr",
            *[f"0.{i}" for i in range(10)], "+arg", "--seed", *seeds, "+tag", "+quiet"]


def fabricate(root: str, env: dict[str, str], jobname: str, n: int) -> str:
    """A finished launch of `n` tasks (every 20th failed), as the wrapper leaves it; its directory."""
    subprocess.run(onager_argv() + prelaunch_args(jobname, n), cwd=root, env=env, check=True)
    jobfile = os.path.join(root, ".onager", "scripts", jobname, "jobs.json")
    launch_dir = os.path.join(root, ".onager", "launches", jobname, "1")
    os.makedirs(os.path.join(launch_dir, "state"))
    os.makedirs(os.path.join(launch_dir, "logs"))
    count, _ = write_tasks(launch_dir, iter_jobfile(jobfile))
    now = time.time()
    state = os.path.join(launch_dir, "state")
    for i in range(1, count + 1):
        t0 = f"{now - 60 - i % 7:.6f}"
        open(os.path.join(state, f"{i}.start@{t0}@1"), "w").close()
        code, how = (1, "failed") if i % 20 == 0 else (0, "done")
        open(os.path.join(state, f"{i}.end@{now:.6f}@{code}@{t0}@1@{how}@"), "w").close()
    with open(os.path.join(launch_dir, "launch.json"), "w") as handle:
        handle.write(f'{{"jobname": "{jobname}", "launch_id": "1"}}\n')
    JobIndex(root).add(LaunchRecord(jobname, "1", "local", launch_dir, f"1-{count}", count, now, [], {}))
    return launch_dir


def timed(argv: list[str], cwd: str, env: dict[str, str], peaks: list[float]):
    """One run: its wall time; its peak RSS (MB) goes into `peaks`."""
    def run() -> float:
        with tempfile.TemporaryFile("w+") as memory:
            measured = [TIME, "-f", "%M", "-o", f"/dev/fd/{memory.fileno()}"] if os.access(TIME, os.X_OK) else []
            start = time.perf_counter()
            proc = subprocess.Popen(measured + argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                    pass_fds=(memory.fileno(),) if measured else ())
            _, status, usage = os.wait4(proc.pid, 0)
            elapsed = time.perf_counter() - start
            if status != 0:
                raise RuntimeError(f"{argv} failed ({status})")
            memory.seek(0)
            peaks.append(int(memory.read().split()[-1]) / 1024 if measured else usage.ru_maxrss / 1024)
        return elapsed
    return run


def main() -> int:
    compiled()
    tmp = tempfile.mkdtemp(prefix="onager-list-")
    env = dict(os.environ, PYTHONPATH=ROOT, ONAGER_GLOBAL_CONFIG=os.path.join(tmp, "global.onagerconfig"))
    try:
        fabricate(tmp, env, "big", N)
        with open(os.path.join(tmp, ".onager", "job_index.csv"), "w") as handle:  # 0.1.3's index, same jobfile
            handle.write("13438569,big,.onager/scripts/big/jobs.json\n")
        with open(os.path.join(tmp, ".onager", ".gitignore"), "w") as handle:
            handle.write("*\n")
        peaks: dict[str, list[float]] = {}
        commands = {
            "python -c pass": [sys.executable, "-c", "pass"],
            "prelaunch of the same job (reference)": onager_argv() + prelaunch_args("again", N),
            "list (table)": onager_argv() + ["list", "--jobname", "big"],
            "list --summary": onager_argv() + ["list", "--summary"],
            "list --json": onager_argv() + ["list", "--json"],
            "list --json --status failed": onager_argv() + ["list", "--json", "--status", "failed"],
            "list --csv": onager_argv() + ["list", "--csv"],
        }
        old = old_onager_venv(os.path.join(tempfile.gettempdir(), "onager-bench-venv013"))
        if old:
            commands["0.1.3 list (reference)"] = [old, "list"]
        names = list(commands)
        old_env = {k: v for k, v in env.items() if k != "PYTHONPATH"}
        runners = [timed(commands[n], tmp, old_env if n.startswith("0.1.3") else env, peaks.setdefault(n, []))
                   for n in names]
        results = dict(zip(names, interleaved(RUNS, *runners)))
        figures = {}
        for name in names:
            figures[name] = f"{median_spread(results[name])}, peak {max(peaks[name]):.0f} MB"
        pre = results["prelaunch of the same job (reference)"]
        figures["list / prelaunch"] = ratio(results["list (table)"], pre, "<= 3x")
        figures["list peak memory"] = (f"table {max(peaks['list (table)']):.0f} MB, --json "
                                       f"{max(peaks['list --json']):.0f} MB, --csv {max(peaks['list --csv']):.0f} MB"
                                       "  target <= 120 MB")
        if old:
            figures["list / 0.1.3 list"] = ratio(results["list (table)"], results["0.1.3 list (reference)"], "< 1x")
        report(f"onager list, one launch of {N:,} tasks, {RUNS} interleaved runs each "
               f"(load {os.getloadavg()[0]:.1f})", figures)
        if SUMMARY_N:
            summary(tmp, env)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


def summary(tmp: str, env: dict[str, str]) -> None:
    """`list --summary` of a SUMMARY_N-task launch, against ONE listing of its state/ (the
    least any reading of the launch's states costs) and Python's start."""
    root = os.path.join(tmp, "summary")
    os.makedirs(root)
    started = time.perf_counter()
    launch_dir = fabricate(root, env, "huge", SUMMARY_N)
    made = time.perf_counter() - started
    state = os.path.join(launch_dir, "state")
    peaks: dict[str, list[float]] = {}
    commands = {
        "python -c pass": [sys.executable, "-c", "pass"],
        "one listing of state/ (reference)": [sys.executable, "-c", f"import os; os.listdir({state!r})"],
        "list --summary": onager_argv() + ["list", "--summary"],
    }
    names = list(commands)
    runners = [timed(commands[n], root, env, peaks.setdefault(n, [])) for n in names]
    results = dict(zip(names, interleaved(RUNS, *runners)))
    figures = {name: f"{median_spread(results[name])}, peak {max(peaks[name]):.0f} MB" for name in names}
    figures["--summary / one listing"] = ratio(results["list --summary"], results["one listing of state/ (reference)"])
    figures["--summary"] = f"{median_spread(results['list --summary'])}  target < 1 s"
    report(f"onager list --summary, one launch of {SUMMARY_N:,} tasks ({2 * SUMMARY_N:,} state names, made in "
           f"{made:.0f} s), {RUNS} interleaved runs each (load {os.getloadavg()[0]:.1f})", figures)


if __name__ == "__main__":
    sys.exit(main())
