"""Helpers shared by the benchmarks: timing a command and its peak memory."""
from __future__ import annotations

import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def timed(argv: list[str], cwd: str | None = None, env: dict | None = None,
          ours: bool = True) -> tuple[float, float]:
    """Wall seconds and peak RSS (MB) of one child process run to completion."""
    full_env = dict(os.environ, PYTHONPATH=ROOT) if ours else {
        k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    if env:
        full_env.update(env)
    start = time.perf_counter()
    proc = subprocess.Popen(argv, cwd=cwd, env=full_env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, _, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = 0
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    if proc.stderr:
        proc.stderr.close()
    if "Traceback" in err or "onager: error" in err:
        raise RuntimeError(f"{argv[:3]} failed: {err[-500:]}")
    return wall, usage.ru_maxrss / 1024.0


def onager_argv() -> list[str]:
    return [sys.executable, "-m", "onager"]


def report(name: str, figures: dict) -> None:
    width = max(len(k) for k in figures)
    print(f"== {name}")
    for key, value in figures.items():
        print(f"  {key:<{width}}  {value}")
