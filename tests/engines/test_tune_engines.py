"""`launch --agents` on a real Slurm and Grid Engine: the agents are array elements, the trials
their tasks; while the agents run, a running trial lists as running (never lost)."""
from __future__ import annotations

import importlib.util
import json
import sys
import time

import pytest

pytestmark = pytest.mark.skipif(importlib.util.find_spec("optuna") is None,
                                reason="needs Optuna: pip install 'onager[tune]'")

TRIAL = """import time, onager
p = onager.params()
time.sleep(1)
onager.log_result(loss=(p["x"] - 0.5) ** 2)
"""


def _search(root, cli, backend: str) -> None:
    (root / "f.py").write_text(TRIAL)
    cli.ok("prelaunch", "+jobname", "tq", "+command", f"{sys.executable} f.py", "+arg", "--x", "+uniform", "-2", "2",
           "+tune", "6", "+metric", "min:loss", "+q")
    out = cli.ok("launch", "--backend", backend, "--jobname", "tq", "--agents", "2")
    assert "7-8" in out.stdout  # one array of the two agents, ids N+1..N+2
    try:
        seen: set[str] = set()
        deadline = time.time() + 240
        while time.time() < deadline:
            rows = cli.rows("--jobname", "tq")
            seen |= {r["status"] for r in rows if r["task_id"] <= 6}
            if len(rows) == 8 and all(r["status"] == "done" for r in rows):
                break
            time.sleep(0.5)
        assert "lost" not in seen and "running" in seen, seen  # trials seen running, never lost
        rows = cli.rows("--jobname", "tq")
        assert sorted(r["task_id"] for r in rows) == list(range(1, 9))
        assert all(r["status"] == "done" for r in rows), rows
        import optuna

        from onager import tune
        journal = str(root / ".onager/launches/tq/1/tune/study.journal")
        study = optuna.load_study(study_name="onager", storage=tune.storage(journal))
        assert [t.state.name for t in study.trials] == ["COMPLETE"] * 6
        for t in study.trials:
            logged = (root / f".onager/launches/tq/1/results/{t.number + 1}.jsonl").read_text().splitlines()[-1]
            assert json.loads(logged)["loss"] == pytest.approx(t.value)
    finally:
        cli("cancel", "--jobname", "tq")


@pytest.mark.slurm
def test_agents_on_slurm(slurm, cli):
    _search(slurm, cli, "slurm")


@pytest.mark.sge
def test_agents_on_gridengine(sge, cli):
    _search(sge, cli, "gridengine")
