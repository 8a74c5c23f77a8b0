"""Local backend: 1,000 trivial tasks (`true`) with 2 workers, against GNU parallel -j2 and
xargs -P2 running the same commands in the same run. Target: at most 1.5x GNU parallel.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time

from _common import ROOT, onager_argv, report

N = 1000


def wall(argv, cwd, stdin_text=None, env=None) -> float:
    start = time.perf_counter()
    subprocess.run(argv, cwd=cwd, input=stdin_text, text=True, check=True, env=env,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> int:
    tmp = tempfile.mkdtemp(prefix="onager-local-")
    env = dict(os.environ, PYTHONPATH=ROOT)
    try:
        ids = [str(i) for i in range(1, N + 1)]
        subprocess.run(onager_argv() + ["prelaunch", "+jobname", "t", "+command", "true", "+pos-arg", *ids, "+q"],
                       cwd=tmp, env=env, check=True, stderr=subprocess.DEVNULL)
        commands = "".join(f"true {i}\n" for i in ids)
        figures = {}
        ours = min(wall(onager_argv() + ["launch", "--backend", "local", "--jobname", "t", "--max-tasks", "2", "-q"],
                        tmp, env=env) for _ in range(2))
        figures["onager local, 2 workers"] = f"{ours:.2f} s  ({N / ours:.0f} tasks/s)"
        if shutil.which("parallel"):
            par = min(wall(["parallel", "-j2"], tmp, commands) for _ in range(2))
            figures["GNU parallel -j2"] = f"{par:.2f} s  ({N / par:.0f} tasks/s)"
            figures["ratio onager / parallel"] = f"{ours / par:.2f}  (target <= 1.5)"
        else:
            figures["GNU parallel"] = "not installed (apt-get install parallel) - not compared"
        xargs = min(wall(["xargs", "-P2", "-I{}", "sh", "-c", "{}"], tmp, commands) for _ in range(2))
        figures["xargs -P2 sh -c"] = f"{xargs:.2f} s  ({N / xargs:.0f} tasks/s)"
        figures["ratio onager / xargs"] = f"{ours / xargs:.2f}"
        report(f"local backend, {N} x `true`", figures)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
