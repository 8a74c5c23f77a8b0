"""The MNIST example as a 2-task onager sweep on the local backend (CI installs torch==2.13.0)."""
from __future__ import annotations

import importlib.util
import json
import os
import shutil

import pytest
from support import ROOT

needs = [m for m in ("torch", "sklearn", "numpy") if importlib.util.find_spec(m) is None]
pytestmark = pytest.mark.skipif(bool(needs), reason=f"{', '.join(needs)} not installed "
                                "(make mnist-deps installs examples/mnist/requirements.txt)")


def test_two_task_mnist_sweep_runs_and_reports_accuracy(onager, project):
    shutil.copy(os.path.join(ROOT, "examples", "mnist", "mnist.py"), project / "mnist.py")
    import sys
    res = onager("prelaunch", "+jobname", "m2", "+command",
                 f"{sys.executable} mnist.py --epochs 1 --no-cuda --data-dir ./nodata",
                 "+arg", "--seed", "0", "1", "+tag", "--run-tag", "+q")
    assert res.returncode == 0, res.stderr
    res = onager("launch", "--backend", "local", "--jobname", "m2", "--max-tasks", "2",
                 env={"OMP_NUM_THREADS": "1"}, timeout=600)
    assert res.returncode == 0, res.stderr + onager("logs", "m2", "1", "--err").stdout
    rows = json.loads(onager("list", "--json").stdout)
    assert [r["status"] for r in rows] == ["done", "done"]
    assert "digits" in onager("logs", "m2", "1", "--err").stdout.lower()
    out = onager("results", "m2", "--json")
    assert out.returncode == 0, out.stderr
    results = json.loads(out.stdout)
    accuracies = [r["accuracy"] for r in (results["rows"] if isinstance(results, dict) else results)]
    assert len(accuracies) == 2 and all(a > 0.85 for a in accuracies)
