"""Per-task lookup: wrapper start to the user's command, at 10 tasks and at 1,000,000 tasks.

The wrapper finds its record through a fixed-width offsets index (two `dd` reads), so
the time must not grow with the launch: target 1M / 10 <= 1.5 (0.1.3 loaded the whole
jobfile in every task: 2.8 s and 640 MB per task at 1M).
"""
from __future__ import annotations

import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from _common import ROOT, report

sys.path.insert(0, ROOT)
from onager.jobfile import JobEntry  # noqa: E402
from onager.launch import write_tasks  # noqa: E402
from onager.wrapper import wrapper_text  # noqa: E402

RUNS = 60


def make_launch(where: str, n: int) -> str:
    os.makedirs(os.path.join(where, "logs"))
    os.makedirs(os.path.join(where, "state"))
    entries = (JobEntry(i, f"true --lr 0.{i % 97} --seed {i} --tag job_{i:07d}", f"job_{i:07d}",
                        {"lr": i % 97, "seed": i}) for i in range(1, n + 1))
    write_tasks(where, entries)
    path = os.path.join(where, "wrapper.sh")
    with open(path, "w") as handle:
        handle.write(wrapper_text(where, "job", "1", where))
    return path


def per_task(wrapper: str, n: int) -> float:
    ids = [random.randint(1, n) for _ in range(RUNS)]
    times = []
    for task_id in ids:
        start = time.perf_counter()
        subprocess.run(["bash", wrapper, str(task_id)], check=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> int:
    tmp = tempfile.mkdtemp(prefix="onager-lookup-")
    try:
        small = make_launch(os.path.join(tmp, "small"), 10)
        t0 = time.perf_counter()
        big = make_launch(os.path.join(tmp, "big"), 1_000_000)
        build = time.perf_counter() - t0
        per_task(small, 10)  # warm the page cache and bash
        t_small = per_task(small, 10)
        t_big = per_task(big, 1_000_000)
        t_small = min(t_small, per_task(small, 10))
        report(f"wrapper: start to end of a task running `true` (median of {RUNS})", {
            "10 tasks": f"{t_small * 1000:.2f} ms",
            "1,000,000 tasks": f"{t_big * 1000:.2f} ms",
            "ratio 1M / 10": f"{t_big / t_small:.2f}  (target <= 1.5)",
            "launch dir for 1M tasks built in": f"{build:.1f} s",
        })
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
