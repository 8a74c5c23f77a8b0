"""Prelaunch of 1,000,000 tasks (100 x 100 x 100, +tag, +quiet): ours against onager 0.1.3.

0.1.3 is installed into a venv with `pip install onager==0.1.3` when the package index is
reachable (or ONAGER_013 names its `onager`); both run in this same benchmark run, in turn,
the same number of times. Target: at least 3x faster and at most 1/5 of 0.1.3's peak memory.

    python benchmarks/prelaunch_bench.py [runs, default 3]
"""
from __future__ import annotations

import os
import shutil
import sys
import tempfile

from _common import compiled, interleaved, median_spread, old_onager_venv, onager_argv, ratio, report, timed

VALUES = [str(i) for i in range(1, 101)]
RUNS = int(sys.argv[1]) if len(sys.argv) > 1 else 3
ARGS = ["prelaunch", "+jobname", "big", "+command", "python train.py", "+arg", "--a", *VALUES,
        "+arg", "--b", *VALUES, "+pos-arg", *VALUES, "+tag", "+quiet"]


def run_in(argv: list[str], cwd: str, ours: bool, peaks: list[float]):
    def run() -> float:
        shutil.rmtree(os.path.join(cwd, ".onager", "scripts"), ignore_errors=True)
        os.makedirs(os.path.join(cwd, ".onager"), exist_ok=True)
        with open(os.path.join(cwd, ".onager", ".gitignore"), "w") as handle:
            handle.write("*\n")  # 0.1.3 asks about .gitignore on first use; this skips the question
        wall, rss = timed(argv + ARGS, cwd=cwd, ours=ours)
        peaks.append(rss)
        return wall
    return run


def main() -> int:
    compiled()
    tmp = tempfile.mkdtemp(prefix="onager-bench-")
    try:
        ours_dir, old_dir = os.path.join(tmp, "ours"), os.path.join(tmp, "old")
        os.makedirs(ours_dir)
        os.makedirs(old_dir)
        peaks: list[list[float]] = [[], []]
        old = old_onager_venv(os.path.join(tempfile.gettempdir(), "onager-bench-venv013"))
        runners = [run_in(onager_argv(), ours_dir, True, peaks[0])]
        if old:
            runners.append(run_in([old], old_dir, False, peaks[1]))
        results = interleaved(RUNS, *runners)  # the same number of runs for both, in turn
        size = os.path.getsize(os.path.join(ours_dir, ".onager/scripts/big/jobs.json"))
        figures = {"ours": f"{median_spread(results[0])}, peak {max(peaks[0]):.0f} MB",
                   "ours: jobs.json": f"{size / 1e6:.0f} MB"}
        if old:
            figures.update({"0.1.3": f"{median_spread(results[1])}, peak {max(peaks[1]):.0f} MB",
                            "time (ours / 0.1.3)": ratio(results[0], results[1], "<= 0.33x (3x faster)"),
                            "memory (ours / 0.1.3)": f"{max(peaks[0]) / max(peaks[1]):.3f}  target <= 0.2"})
        else:
            figures["0.1.3"] = "not measured (set ONAGER_013 to a 0.1.3 `onager`, or let pip install it)"
        report(f"prelaunch 1,000,000 tasks, {RUNS} interleaved runs each (load {os.getloadavg()[0]:.1f})", figures)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
