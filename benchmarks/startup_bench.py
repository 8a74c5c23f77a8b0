"""Start-up of every command against a bare `python -c pass` (target: at most 2x).

Measured in a NON-editable install: a wheel of this tree installed into a fresh venv
(an editable install adds an import hook that makes `python -c pass` itself twice as
slow, which flatters the ratio). The commands run in an empty directory, so each one
costs its imports and argument parsing, not work: `onager --help`, `onager list`,
`onager prelaunch +help`, `onager launch --help` (which builds every backend's options),
and, for comparison, onager 0.1.3's `--help` when it can be installed.

    python benchmarks/startup_bench.py [runs, default 20]
"""
from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
import tempfile
import time
import venv

from _common import ROOT, interleaved, median_spread, old_onager_venv, ratio, report

RUNS = int(sys.argv[1]) if len(sys.argv) > 1 else 20


def install(where: str) -> str:
    """A fresh venv with onager installed from a wheel of this tree; its python."""
    wheels = os.path.join(where, "wheels")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", wheels, ROOT], check=True,
                   stdout=subprocess.DEVNULL)
    env_dir = os.path.join(where, "venv")
    venv.create(env_dir, with_pip=True)
    py = os.path.join(env_dir, "bin", "python")
    subprocess.run([py, "-m", "pip", "install", "-q", *glob.glob(os.path.join(wheels, "onager-*.whl"))], check=True,
                   stdout=subprocess.DEVNULL)
    return py


def timer(argv: list[str], cwd: str, env: dict[str, str]):
    def run() -> float:
        start = time.perf_counter()
        subprocess.run(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        return time.perf_counter() - start
    return run


def main() -> int:
    tmp = tempfile.mkdtemp(prefix="onager-startup-")
    try:
        py = install(tmp)
        empty = os.path.join(tmp, "empty")
        os.mkdir(empty)
        env = {"PATH": os.path.dirname(py) + ":/usr/bin:/bin", "HOME": tmp,
               "ONAGER_GLOBAL_CONFIG": os.path.join(tmp, "global.onagerconfig")}
        commands = {
            "python -c pass (reference)": [py, "-c", "pass"],
            "onager --help": [py, "-m", "onager", "--help"],
            "onager list (no launches)": [py, "-m", "onager", "list"],
            "onager prelaunch +help": [py, "-m", "onager", "prelaunch", "+help"],
            "onager launch --help": [py, "-m", "onager", "launch", "--help"],
            "onager wait --help": [py, "-m", "onager", "wait", "--help"],
        }
        old = old_onager_venv(os.path.join(tmp, "venv013"))
        if old:
            commands["0.1.3: onager --help"] = [old, "--help"]
        names = list(commands)
        results = interleaved(RUNS, *(timer(commands[n], empty, env) for n in names))
        bare = results[0]
        figures = {names[0]: median_spread(bare, "ms", 1000, 1)}
        for name, values in zip(names[1:], results[1:]):
            figures[name] = f"{median_spread(values, 'ms', 1000, 1)}  ratio {ratio(values, bare, '<= 2x')}"
        report(f"start-up, non-editable install, {RUNS} interleaved runs each (load {os.getloadavg()[0]:.1f})",
               figures)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
