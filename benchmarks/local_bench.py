"""Local backend: N trivial tasks (`true`, default 1,000) on 2 workers, against the same
commands run by `xargs -P2`, by onager 0.1.3's local backend and by GNU parallel -j2, all in
this run, in turn, the same number of times.

Targets: within 2x of xargs -P2; at least as fast as 0.1.3 (ratio <= 1).

    python benchmarks/local_bench.py [N] [runs, default 3]
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time

from _common import ROOT, compiled, interleaved, median_spread, old_onager_venv, onager_argv, ratio, report

N = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
RUNS = int(sys.argv[2]) if len(sys.argv) > 2 else 3


def wall(argv: list[str], cwd: str, stdin_text: str | None = None, env: dict[str, str] | None = None):
    def run() -> float:
        start = time.perf_counter()
        subprocess.run(argv, cwd=cwd, input=stdin_text, text=True, check=True, env=env,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return time.perf_counter() - start
    return run


def main() -> int:
    compiled()
    tmp = tempfile.mkdtemp(prefix="onager-local-")
    env = dict(os.environ, PYTHONPATH=ROOT, ONAGER_GLOBAL_CONFIG=os.path.join(tmp, "global.onagerconfig"))
    old_env = {k: v for k, v in env.items() if k != "PYTHONPATH"}
    try:
        ours_dir, old_dir = os.path.join(tmp, "ours"), os.path.join(tmp, "old")
        ids = [str(i) for i in range(1, N + 1)]
        for where in (ours_dir, old_dir):
            os.makedirs(os.path.join(where, ".onager"))
            with open(os.path.join(where, ".onager", ".gitignore"), "w") as handle:
                handle.write("*\n")  # 0.1.3 asks about .gitignore on first use; this skips the question
            subprocess.run(onager_argv() + ["prelaunch", "+jobname", "t", "+command", "true", "+pos-arg", *ids, "+q"],
                           cwd=where, env=env, check=True, stderr=subprocess.DEVNULL)
        commands = "".join(f"true {i}\n" for i in ids)
        names = ["onager local, 2 workers", "xargs -P2 sh -c"]
        runners = [wall(onager_argv() + ["launch", "--backend", "local", "--jobname", "t", "--max-tasks", "2", "-q"],
                        ours_dir, env=env),
                   wall(["xargs", "-P2", "-I{}", "sh", "-c", "{}"], tmp, commands)]
        old = old_onager_venv(os.path.join(tempfile.gettempdir(), "onager-bench-venv013"))
        if old:
            names.append("onager 0.1.3 local, 2 workers")
            runners.append(wall([old, "launch", "--backend", "local", "--jobname", "t", "--max-tasks", "2", "-q"],
                                old_dir, env=old_env))
        if shutil.which("parallel"):
            names.append("GNU parallel -j2")
            runners.append(wall(["parallel", "-j2"], tmp, commands))
        results = dict(zip(names, interleaved(RUNS, *runners)))
        ours = results[names[0]]
        figures = {name: f"{median_spread(values)}  ({N / sorted(values)[len(values) // 2]:.0f} tasks/s)"
                   for name, values in results.items()}
        figures["onager / xargs -P2"] = ratio(ours, results["xargs -P2 sh -c"], "<= 2x")
        if old:
            figures["onager / 0.1.3"] = ratio(ours, results["onager 0.1.3 local, 2 workers"], "<= 1x")
        else:
            figures["0.1.3"] = "not measured (set ONAGER_013 to a 0.1.3 `onager`, or let pip install it)"
        if "GNU parallel -j2" in results:
            figures["onager / GNU parallel"] = ratio(ours, results["GNU parallel -j2"])
        else:
            figures["GNU parallel"] = "not installed (apt-get install parallel): not compared"
        report(f"local backend, {N} x `true`, {RUNS} interleaved runs each (load {os.getloadavg()[0]:.1f})", figures)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
