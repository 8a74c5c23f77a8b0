"""`onager list` of one 100,000-task launch (every task finished, 5% failed), against the
prelaunch of the same job and onager 0.1.3's `list` of the same jobfile, all in this run.

The job is prelaunched for real (`+arg --lr` x `+arg --seed`, +tag), its launch directory
built with `launch.write_tasks`, its state names written as the wrapper writes them, and
its record added to the index. 0.1.3 lists the same jobs.json through its own
`.onager/job_index.csv`. Targets: the table in at most 3x the prelaunch and 120 MB;
`--summary` well under a second.

    python benchmarks/list_bench.py [N, default 100000] [runs, default 3]
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
SEEDS = [str(s) for s in range(1, N // 10 + 1)]


def prelaunch_args(jobname: str) -> list[str]:
    return ["prelaunch", "+jobname", jobname, "+command", "python train.py", "+arg", "--lr",
            *[f"0.{i}" for i in range(10)], "+arg", "--seed", *SEEDS, "+tag", "+quiet"]


def fabricate(root: str, env: dict[str, str]) -> None:
    subprocess.run(onager_argv() + prelaunch_args("big"), cwd=root, env=env, check=True)
    jobfile = os.path.join(root, ".onager", "scripts", "big", "jobs.json")
    launch_dir = os.path.join(root, ".onager", "launches", "big", "1")
    os.makedirs(os.path.join(launch_dir, "state"))
    os.makedirs(os.path.join(launch_dir, "logs"))
    count, _ = write_tasks(launch_dir, iter_jobfile(jobfile))
    now = time.time()
    state = os.path.join(launch_dir, "state")
    for i in range(1, count + 1):
        open(os.path.join(state, f"{i}.end@{now:.6f}@{1 if i % 20 == 0 else 0}@{now - 60:.6f}"), "w").close()
    with open(os.path.join(launch_dir, "launch.json"), "w") as handle:
        handle.write('{"jobname": "big", "launch_id": "1"}\n')
    JobIndex(root).add(LaunchRecord("big", "1", "local", launch_dir, f"1-{count}", count, now, [], {}))
    with open(os.path.join(root, ".onager", "job_index.csv"), "w") as handle:  # 0.1.3's index, same jobfile
        handle.write("13438569,big,.onager/scripts/big/jobs.json\n")
    with open(os.path.join(root, ".onager", ".gitignore"), "w") as handle:
        handle.write("*\n")


def timed(argv: list[str], cwd: str, env: dict[str, str], peaks: list[float]):
    def run() -> float:
        start = time.perf_counter()
        proc = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        _, status, usage = os.wait4(proc.pid, 0)
        if status != 0:
            raise RuntimeError(f"{argv} failed ({status})")
        peaks.append(usage.ru_maxrss / 1024)
        return time.perf_counter() - start
    return run


def main() -> int:
    compiled()
    tmp = tempfile.mkdtemp(prefix="onager-list-")
    env = dict(os.environ, PYTHONPATH=ROOT, ONAGER_GLOBAL_CONFIG=os.path.join(tmp, "global.onagerconfig"))
    try:
        fabricate(tmp, env)
        peaks: dict[str, list[float]] = {}
        commands = {
            "python -c pass": [sys.executable, "-c", "pass"],
            "prelaunch of the same job (reference)": onager_argv() + prelaunch_args("again"),
            "list (table)": onager_argv() + ["list", "--jobname", "big"],
            "list --summary": onager_argv() + ["list", "--summary"],
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
        figures["list peak memory"] = f"{max(peaks['list (table)']):.0f} MB  target <= 120 MB"
        if old:
            figures["list / 0.1.3 list"] = ratio(results["list (table)"], results["0.1.3 list (reference)"], "< 1x")
        report(f"onager list, one launch of {N:,} tasks, {RUNS} interleaved runs each "
               f"(load {os.getloadavg()[0]:.1f})", figures)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
