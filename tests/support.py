"""Helpers shared by the tests (a module of its own: `conftest` names clash across directories)."""
from __future__ import annotations

import os
import subprocess
import sys
from typing import List, Optional

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def engines_env() -> dict:
    """Engines started by ci/start-engines.sh (or `make engines`), from its summary file."""
    found = {k: v for k, v in os.environ.items() if k.startswith("ONAGER_TEST_")}
    path = os.environ.get("ONAGER_ENGINES_ENV", "/tmp/onager-engines.env")
    try:
        with open(path) as handle:
            for line in handle:
                line = line.strip()
                if line and not line.startswith("#") and "=" in line:
                    key, value = line.split("=", 1)
                    found.setdefault(key, value)
    except OSError:
        pass
    return found


def run_onager(args: List[str], cwd=None, input: Optional[str] = None, env: Optional[dict] = None,
               timeout: float = 120) -> subprocess.CompletedProcess:
    """Run `python -m onager ARGS` the way a user would; stdin is closed unless given."""
    full_env = dict(os.environ)
    full_env["PYTHONPATH"] = ROOT + os.pathsep + full_env.get("PYTHONPATH", "")
    if env:
        full_env.update(env)
    return subprocess.run([sys.executable, "-m", "onager", *args], cwd=cwd, input=input,
                          stdin=None if input is not None else subprocess.DEVNULL,
                          capture_output=True, text=True, env=full_env, timeout=timeout)
