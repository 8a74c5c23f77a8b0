"""`onager cancel` of a detached local launch of N = 2,000 and 8,000 sleeping tasks (two
running, the rest pending): the time must grow linearly with N (ratio ~4, not ~16 as when
cancel listed state/ once per task). Also shown net of a cancel of a 10-task launch (the
Python start-up, the same for every N). Before the fix (one listing of state/ per task,
two names written per task) it took 18.5 s for 500 tasks, 42.8 s for 1,000 and 102 s for
2,000 on a shared 2-core machine; after it, about 0.6 s for 2,000 and for 8,000.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time

from _common import ROOT, onager_argv, report

SIZES = (2000, 8000)
WIDTH = 2


def cancel_time(n: int) -> float:
    """Seconds `onager cancel` takes on a detached launch of n tasks with WIDTH running."""
    tmp = tempfile.mkdtemp(prefix="onager-cancel-")
    env = dict(os.environ, PYTHONPATH=ROOT)
    try:
        subprocess.run(onager_argv() + ["prelaunch", "+jobname", "c", "+command", "sleep 600",
                                        "+pos-arg", *map(str, range(1, n + 1)), "+q"],
                       cwd=tmp, env=env, check=True, stderr=subprocess.DEVNULL)
        subprocess.run(onager_argv() + ["launch", "--backend", "local", "--jobname", "c", "--detach",
                                        "--max-tasks", str(WIDTH), "-q"],
                       cwd=tmp, env=env, check=True, stderr=subprocess.DEVNULL)
        state = os.path.join(tmp, ".onager", "launches", "c", "1", "state")
        end = time.time() + 60
        while time.time() < end and len([x for x in os.listdir(state) if ".start@" in x]) < WIDTH:
            time.sleep(0.05)
        start = time.perf_counter()
        subprocess.run(onager_argv() + ["cancel", "--jobname", "c", "-q"], cwd=tmp, env=env, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        took = time.perf_counter() - start
        subprocess.run(onager_argv() + ["wait", "--jobname", "c", "--timeout", "60", "--quiet"], cwd=tmp,
                       env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return took
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> int:
    base = min(cancel_time(10) for _ in range(2))
    times = {n: min(cancel_time(n) for _ in range(2)) for n in SIZES}
    small, large = SIZES
    figures = {"cancel, 10 tasks (start-up)": f"{base:.2f} s"}
    for n, took in times.items():
        figures[f"cancel, {n} tasks"] = f"{took:.2f} s"
    figures[f"ratio {large} / {small}"] = f"{times[large] / times[small]:.2f}  (linear: <= 4)"
    net_small, net_large = times[small] - base, times[large] - base
    if net_small > 0.05 and net_large > 0:  # below that, start-up noise is all there is to see
        figures["ratio net of start-up"] = f"{net_large / net_small:.2f}  (linear ~4, quadratic ~16)"
    else:
        figures["ratio net of start-up"] = "n/a: the cancel itself is lost in the start-up time"
    report(f"onager cancel of a detached launch, {WIDTH} running", figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
