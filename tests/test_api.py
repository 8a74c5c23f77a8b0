"""The library API under the CLI (issue 13, item 7): launch a Sweep or a job from Python,
then statuses, wait, results and cancel, end to end on the local backend."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import types

import pytest
from support import ROOT

import onager
from onager.errors import UsageError

SCRIPT = ("import sys, onager\n"
          "x = onager.params()['x']\n"
          "onager.log_result(score=x * 10, half=x / 2)\n"
          "sys.exit(3 if x == 2 else 0)\n")


@pytest.fixture
def project(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "task.py").write_text(SCRIPT)
    return tmp_path


def _sweep() -> onager.Sweep:
    return onager.Sweep(f"{sys.executable} task.py").arg("--x", [1, 2, 3]).tag()


def onager_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "onager", *args], capture_output=True, text=True)


def test_a_sweep_end_to_end(project) -> None:
    run = onager.launch(_sweep(), jobname="sw", backend="local", max_tasks=2)
    assert isinstance(run, onager.Launch) and (run.jobname, run.launch_id, run.backend) == ("sw", "1", "local")
    assert run.statuses() == {1: "done", 2: "failed", 3: "done"}
    assert run.wait(timeout=10) == {1: "done", 2: "failed", 3: "done"}
    rows = run.results()
    assert [(r["task_id"], r["status"], r["x"], r["score"], r["half"]) for r in rows] == [
        (1, "done", 1, 10, 0.5), (2, "failed", 2, 20, 1.0), (3, "done", 3, 30, 1.5)]
    assert list(rows[0])[:3] == ["task_id", "launch", "status"]
    assert {row.task_id: row.exit_code for row in run.rows()} == {1: 0, 2: 3, 3: 0}
    # what the CLI says is what the API says: both run the same functions
    listed = json.loads(onager_cli("list", "--jobname", "sw", "--json").stdout)
    assert {r["task_id"]: r["status"] for r in listed} == run.statuses()
    results = json.loads(onager_cli("results", "sw", "--json").stdout)
    assert [r["score"] for r in results] == [r["score"] for r in rows]
    assert os.path.isfile(run.paths.log(2, "err"))


def test_a_prelaunched_job_and_a_rerun_of_its_failures(project) -> None:
    assert onager_cli("prelaunch", "+jobname", "pre", "+command", f"{sys.executable} task.py",
                      "+arg", "--x", "1", "2", "+q").returncode == 0
    first = onager.launch("pre", backend="local")
    assert first.statuses() == {1: "done", 2: "failed"}
    again = onager.launch("pre", backend="local", tasklist="failed")
    assert (again.launch_id, again.statuses()) == ("2", {2: "failed"})
    assert [(r.launch_id, r.backend) for r in onager.launches("pre")] == [("1", "local"), ("2", "local")]
    assert onager_cli("wait", "--jobname", "pre").returncode == 1  # the CLI sees the failure too


def test_results_as_a_frame(project, monkeypatch) -> None:
    run = onager.launch(_sweep(), jobname="fr", backend="local")
    made = {}

    def frame(rows, columns):
        made.update(rows=rows, columns=columns)
        return "FRAME"
    monkeypatch.setitem(sys.modules, "pandas", types.SimpleNamespace(DataFrame=frame))
    assert run.results(frame=True) == "FRAME" and run.results_frame() == "FRAME"
    assert made["rows"] == run.results()
    assert made["columns"][:4] == ["task_id", "launch", "status", "x"] and "score" in made["columns"]
    monkeypatch.setitem(sys.modules, "pandas", None)  # not installed
    with pytest.raises(onager.errors.OnagerError, match="pip install pandas"):
        run.results(frame=True)


def test_cancel_and_wait_timeout_of_a_detached_launch(project) -> None:
    run = onager.launch("slow", backend="local", command="sleep 60", detach=True)
    with pytest.raises(TimeoutError, match="still unfinished"):
        run.wait(timeout=0.2, interval=0.05)
    assert run.statuses()[1] in ("pending", "running")
    assert run.cancel() == [1]
    assert run.wait(timeout=30, interval=0.1) == {1: "cancelled"}


def test_bad_input_raises_and_writes_nothing(project) -> None:
    with pytest.raises(UsageError, match="unknown launch option max_task"):
        onager.launch(_sweep(), jobname="bad", backend="local", max_task=2)
    with pytest.raises(UsageError, match="unknown backend"):
        onager.launch(_sweep(), jobname="bad", backend="pbs")
    with pytest.raises(UsageError, match="local has no partitions"):
        onager.launch(_sweep(), jobname="bad", backend="local", partition="gpu")
    with pytest.raises(UsageError, match="jobname="):
        onager.launch(_sweep(), backend="local")
    with pytest.raises(UsageError, match="--max-tasks must be at least 1"):
        onager.launch(_sweep(), jobname="bad", backend="local", max_tasks=0)
    assert sorted(os.listdir(project)) == ["task.py"]


def test_onager_launch_is_both_the_call_and_the_module() -> None:
    from onager import launch as launchmod
    assert callable(onager.launch) and launchmod is onager.launch
    assert callable(launchmod.prepare) and callable(launchmod.submit)  # the CLI's module, unchanged


def test_the_documented_example_runs(tmp_path) -> None:
    with open(os.path.join(ROOT, "docs", "api.md"), encoding="utf-8") as handle:
        blocks = re.findall(r"```python\n(.*?)```", handle.read(), re.S)
    assert len(blocks) == 2
    script = tmp_path / "example.py"
    script.write_text("\n".join(blocks))
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def test_the_recorded_command_line_is_the_cli_one_and_scrubbed(project) -> None:
    from onager.api import cli_argv
    from onager.scrub import scrub_argv
    argv = cli_argv("j", "slurm", {"max_tasks": 2, "detach": True, "debug": False,
                                   "extra": ["--comment", "password=hunter2", "--token", "abc"]}, tasklist="1-2")
    assert argv[:6] == ["onager", "launch", "--backend", "slurm", "--jobname", "j"]
    assert argv[6:] == ["--tasklist", "1-2", "--detach", "--max-tasks", "2", "--",
                        "--comment", "password=hunter2", "--token", "abc"]
    assert "hunter2" not in " ".join(scrub_argv(argv)) and "abc" not in scrub_argv(argv)
    run = onager.launch("rec", backend="local", command="true", max_tasks=1)
    with open(run.paths.launch_json) as handle:
        assert json.load(handle)["argv"] == ["onager", "launch", "--backend", "local", "--jobname", "rec",
                                             "--command", "true", "--max-tasks", "1"]


def test_config_defaults_apply_as_on_the_command_line(project) -> None:
    assert onager_cli("config", "--write", "local", "max-tasks", "1").returncode == 0
    run = onager.launch("cfg", backend="local", command="true")
    with open(run.paths.launch_json) as handle:
        assert json.load(handle)["options"]["max_tasks"] == 1  # converted, as the CLI converts it
    explicit = onager.launch("cfg", backend="local", command="true", max_tasks=3)
    with open(explicit.paths.launch_json) as handle:
        assert json.load(handle)["options"]["max_tasks"] == 3  # a given option wins
    # config --write refuses such a value; a hand-edited config file can still hold one
    assert onager_cli("config", "--write", "local", "max-tasks", "zero").returncode == 2
    with open(os.path.join(".onager", "config"), encoding="utf-8") as handle:
        text = handle.read()
    with open(os.path.join(".onager", "config"), "w", encoding="utf-8") as handle:
        handle.write(re.sub(r"max-tasks\s*=\s*1", "max-tasks = zero", text))
    with pytest.raises(UsageError, match="config value max-tasks='zero' for local is not valid"):
        onager.launch("cfg", backend="local", command="true")
