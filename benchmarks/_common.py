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
    """`python -m onager` of this tree, its modules compiled first (as an installed package's
    are): with PYTHONDONTWRITEBYTECODE set, every run would compile onager from source."""
    compiled()
    return [sys.executable, "-m", "onager"]


_COMPILED: list[bool] = []


def compiled() -> None:
    if not _COMPILED:
        import compileall

        compileall.compile_dir(os.path.join(ROOT, "onager"), quiet=1)
        os.environ.pop("PYTHONDONTWRITEBYTECODE", None)  # children inherit os.environ
        _COMPILED.append(True)


def report(name: str, figures: dict) -> None:
    width = max(len(k) for k in figures)
    print(f"== {name}")
    for key, value in figures.items():
        print(f"  {key:<{width}}  {value}")


def median_spread(values: list[float], unit: str = "s", scale: float = 1.0, digits: int = 2) -> str:
    """`median (min–max, n runs)`: every figure a benchmark prints comes with its spread."""
    import statistics

    m = statistics.median(values) * scale
    return f"{m:.{digits}f} {unit} ({min(values) * scale:.{digits}f}–{max(values) * scale:.{digits}f}, n={len(values)})"


def ratio(ours: list[float], reference: list[float], target: str = "") -> str:
    """Median over median, and the spread of the ratio of runs paired in order."""
    import statistics

    paired = [a / b for a, b in zip(ours, reference) if b > 0]
    text = f"{statistics.median(ours) / statistics.median(reference):.2f}x"
    if paired:
        text += f" (paired runs {min(paired):.2f}–{max(paired):.2f})"
    return text + (f"  target {target}" if target else "")


def interleaved(runs: int, *commands) -> list[list[float]]:
    """Run each callable `runs` times, in turn (a, b, a, b, ...), so that the load of a shared
    machine falls on all of them alike; returns one list of results per callable."""
    results: list[list[float]] = [[] for _ in commands]
    for _ in range(runs):
        for slot, command in zip(results, commands):
            slot.append(command())
    return results


def old_onager_venv(where: str) -> str | None:
    """A venv with onager 0.1.3 from the package index (`pip install onager==0.1.3`), its
    `onager` script path; None (with the reason printed) when it cannot be installed.
    ONAGER_013 names an existing 0.1.3 `onager` script instead; ONAGER_BENCH_SKIP_013 skips."""
    import venv

    if os.environ.get("ONAGER_BENCH_SKIP_013"):
        return None
    given = os.environ.get("ONAGER_013")
    if given:
        return given
    if os.path.exists(os.path.join(where, "bin", "onager")):
        return os.path.join(where, "bin", "onager")
    venv.create(where, with_pip=True)
    py = os.path.join(where, "bin", "python")
    res = subprocess.run([py, "-m", "pip", "install", "-q", "onager==0.1.3"], capture_output=True, text=True,
                         timeout=600)
    if res.returncode != 0:
        print(f"(onager 0.1.3 could not be installed: {res.stderr.strip().splitlines()[-1:]})")
        return None
    return os.path.join(where, "bin", "onager")
