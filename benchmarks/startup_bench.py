"""Start-up: `onager --help` against a bare `python -c pass` (target: within 2.5x).

0.1.3 measured 68 ms against 9 ms; onager imports its modules lazily so that the help,
and prelaunch, pay only for what they use.
"""
from __future__ import annotations

import statistics
import subprocess
import sys
import time

from _common import ROOT, report

RUNS = 30


def median_wall(argv) -> float:
    times = []
    for _ in range(RUNS):
        start = time.perf_counter()
        subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True,
                       env={"PYTHONPATH": ROOT, "PATH": "/usr/bin:/bin"})
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> int:
    bare = median_wall([sys.executable, "-c", "pass"])
    helped = median_wall([sys.executable, "-m", "onager", "--help"])
    version = median_wall([sys.executable, "-m", "onager", "--version"])
    launch_help = median_wall([sys.executable, "-m", "onager", "launch", "--help"])
    report(f"start-up (median of {RUNS})", {
        "python -c pass": f"{bare * 1000:.1f} ms",
        "onager --help": f"{helped * 1000:.1f} ms  (ratio {helped / bare:.2f}, target <= 2.5)",
        "onager --version": f"{version * 1000:.1f} ms",
        "onager launch --help (builds every parser)": f"{launch_help * 1000:.1f} ms",
    })
    return 0


if __name__ == "__main__":
    sys.exit(main())
