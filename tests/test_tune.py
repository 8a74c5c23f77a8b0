"""Adaptive search (issue 15, item 5): +tune/+metric/+sampler in prelaunch, launch --agents K,
pruning, and a relaunch that continues the study. The launch tests need Optuna (the tune
extra, which `make test` installs) and skip with that reason without it."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import pytest
from support import ok, refused, run_onager

from onager.jobfile import iter_jobfile
from onager.state import TaskState

HAVE_OPTUNA = True
try:
    import optuna  # noqa: F401
except ImportError:
    HAVE_OPTUNA = False
needs_optuna = pytest.mark.skipif(not HAVE_OPTUNA, reason="needs Optuna: pip install 'onager[tune]'")

QUADRATIC = """import onager
p = onager.params()
onager.log_result(loss=(p["x"] - 0.5) ** 2 + (p["y"] + 0.3) ** 2, opt=p.get("opt"))
"""


def _prelaunch(onager, *extra: str, job: str = "q", script: str = "f.py", opt: bool = True):
    return onager("prelaunch", "+jobname", job, "+command", f"{sys.executable} {script}",
                  "+arg", "--x", "+uniform", "-2", "2", "+arg", "--y", "+uniform", "-2", "2",
                  *(("+arg", "--opt", "adam", "sgd") if opt else ()), *extra)


def _tree(root) -> dict[str, bytes]:
    out = {}
    for directory, _, files in os.walk(root):
        for name in files:
            path = os.path.join(directory, name)
            with open(path, "rb") as handle:
                out[os.path.relpath(path, root)] = handle.read()
    return out


def _rows(onager, job: str) -> list[dict]:
    text = ok(onager("list", "--jobname", job, "--json"))
    return json.loads(text)


# ------------------------------------------------------------------ prelaunch
def test_prelaunch_tune_writes_the_space_beside_n_placeholder_tasks(onager, project):
    ok(_prelaunch(onager, "+tune", "7", "+metric", "min:loss", "+sampler", "random", "+seed", "3", "+q"))
    spec = json.loads((project / ".onager/scripts/q/tune.json").read_text())
    assert (spec["trials"], spec["metric"], spec["direction"], spec["sampler"], spec["seed"]) == \
        (7, "loss", "minimize", "random", 3)
    assert [d["key"] for d in spec["dimensions"]] == ["x", "y", "opt"]
    assert spec["dimensions"][0]["dist"] == ["Uniform", -2.0, 2.0]
    assert spec["dimensions"][2]["values"] == ["adam", "sgd"]
    # jobs.json: N random draws, readable as any jobfile (and by 0.1.3), the same as +sample N +seed S
    tasks = list(iter_jobfile(str(project / ".onager/scripts/q/jobs.json")))
    assert [t.id for t in tasks] == list(range(1, 8))
    assert all(-2 <= t.params["x"] <= 2 and t.params["opt"] in ("adam", "sgd") for t in tasks)
    ok(_prelaunch(onager, "+sample", "7", "+seed", "3", "+q", job="s"))
    same = list(iter_jobfile(str(project / ".onager/scripts/s/jobs.json")))
    assert [t.params for t in tasks] == [t.params for t in same]


def test_a_plain_prelaunch_removes_the_search_it_replaces(onager, project):
    ok(_prelaunch(onager, "+tune", "3", "+metric", "max:acc", "+q"))
    assert (project / ".onager/scripts/q/tune.json").exists()
    ok(onager("prelaunch", "+jobname", "q", "+command", "true", "+arg", "--a", "1", "2", "+q"))
    assert not (project / ".onager/scripts/q/tune.json").exists()


@pytest.mark.parametrize("extra, words", [
    (("+tune", "5"), ["+metric min:NAME"]),
    (("+tune", "0", "+metric", "min:loss"), ["+tune N", "positive"]),
    (("+tune", "x", "+metric", "min:loss"), ["+tune N"]),
    (("+tune", "5", "+metric", "loss"), ["min:NAME or max:NAME"]),
    (("+tune", "5", "+metric", "best:loss"), ["min:NAME or max:NAME"]),
    (("+tune", "5", "+metric", "min:loss", "+sampler", "grid"), ["tpe, random, cmaes"]),
    (("+metric", "min:loss"), ["needs +tune N"]),
    (("+tune", "5", "+metric", "min:loss", "+sample", "5"), ["replaces +sample"]),
    (("+tune", "5", "+metric", "min:loss", "+append"), ["drop +append"]),
])
def test_bad_tune_options_are_one_line_and_write_nothing(onager, project, extra, words):
    ok(onager("prelaunch", "+jobname", "q", "+command", "true", "+arg", "--a", "1", "+q"))
    before = _tree(project / ".onager")
    refused(_prelaunch(onager, *extra), *words)
    assert _tree(project / ".onager") == before


# ------------------------------------------------------------------ launch --agents
def test_agents_need_a_tune_spec_and_write_nothing_without_one(onager, project):
    ok(onager("prelaunch", "+jobname", "q", "+command", "true", "+arg", "--a", "1", "+q"))
    before = _tree(project / ".onager")
    refused(onager("launch", "--backend", "local", "--jobname", "q", "--agents", "2"), "+tune N")
    refused(onager("launch", "--backend", "local", "--jobname", "q", "--agents", "0"), "--agents")
    assert _tree(project / ".onager") == before


def test_without_optuna_launch_agents_says_what_to_install(onager, project):
    ok(_prelaunch(onager, "+tune", "3", "+metric", "min:loss", "+q"))
    before = _tree(project / ".onager")
    blocker = project / "blocker"
    blocker.mkdir()
    (blocker / "optuna.py").write_text("raise ImportError('no optuna here')\n")
    result = onager("launch", "--backend", "local", "--jobname", "q", "--agents", "2",
                    env={"PYTHONPATH": f"{os.path.dirname(os.path.dirname(__file__))}{os.pathsep}{blocker}"})
    refused(result, "pip install 'onager[tune]'")
    assert _tree(project / ".onager") == before


@needs_optuna
def test_thirty_trials_on_a_quadratic_come_within_0_005_of_the_optimum(onager, project):
    """Every trial is a task (row, params, results, attempt) and TPE closes in on the optimum.

    Seeded: with 30 trials, TPE gets this close for about a quarter of the seeds (median 0.015,
    benchmarks/tune_bench.py); random search, or a study that never hears the metric, is far off."""
    (project / "f.py").write_text(QUADRATIC)
    ok(_prelaunch(onager, "+tune", "30", "+metric", "min:loss", "+seed", "1", "+tag", "+q", opt=False))
    ok(onager("launch", "--backend", "local", "--jobname", "q", "--agents", "1", timeout=600))
    rows = _rows(onager, "q")
    trials = [r for r in rows if r["task_id"] <= 30]
    assert sorted(r["task_id"] for r in trials) == list(range(1, 31))
    assert all(r["status"] == "done" and r["attempt"] == 1 for r in rows)
    assert [r["task_id"] for r in rows if r["task_id"] > 30] == [31]  # the agent's own row
    for r in trials:  # the row's params are the values its command ran with
        assert f"--x {r['params']['x']!r}" in r["command"].replace("'", "")
    import optuna
    journal = project / ".onager/launches/q/1/tune/study.journal"
    study = optuna.load_study(study_name="onager", storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(journal))))
    assert len(study.trials) == 30 and all(t.state.name == "COMPLETE" for t in study.trials)
    for t in study.trials:  # the study saw what each task logged
        logged = (project / f".onager/launches/q/1/results/{t.number + 1}.jsonl").read_text()
        assert json.loads(logged.splitlines()[-1])["loss"] == pytest.approx(t.value)
    assert study.best_value < 0.005, study.best_value
    assert study.best_params["x"] == pytest.approx(0.5, abs=0.08)


@needs_optuna
def test_launching_again_continues_the_study_and_reruns_an_unfinished_trial(onager, project):
    (project / "f.py").write_text(QUADRATIC)
    ok(_prelaunch(onager, "+tune", "3", "+metric", "min:loss", "+q"))
    ok(onager("launch", "--backend", "local", "--jobname", "q", "--agents", "2", timeout=300))
    refused(onager("launch", "--backend", "local", "--jobname", "q", "--agents", "2"), "all its 3 trials")
    # a larger N, same space: the next launch continues the same study with trials 4..5
    ok(_prelaunch(onager, "+tune", "5", "+metric", "min:loss", "+q"))
    import optuna

    from onager import tune
    journal = str(project / ".onager/launches/q/1/tune/study.journal")
    study = optuna.load_study(study_name="onager", storage=tune.storage(journal))
    asked = study.ask()  # an agent that asked trial 4 and died before running it
    spec = json.loads((project / ".onager/scripts/q/tune.json").read_text())
    tune.Space(spec).suggest(asked)
    ok(onager("launch", "--backend", "local", "--jobname", "q", "--agents", "3", timeout=300))
    second = json.loads((project / ".onager/launches/q/2/tune.json").read_text())
    assert second["journal"] == journal and second["rerun"] == [4]
    study = optuna.load_study(study_name="onager", storage=tune.storage(journal))
    assert len(study.trials) == 5 and all(t.state.name == "COMPLETE" for t in study.trials)
    rows = {r["task_id"]: r for r in _rows(onager, "q") if r["launch"] == "2"}
    assert sorted(i for i in rows if i <= 5) == [4, 5]
    assert rows[4]["params"]["x"] == pytest.approx(asked.params["x"])  # the unfinished trial, its values
    assert sorted(i for i in rows if i > 5) == [6, 7]  # 2 agents: only two trials were left


FAILS_ABOVE_1 = """import sys, onager
x = onager.params()["x"]
onager.log_result(loss=x)
sys.exit(3 if x > 1 else 0)
"""


@needs_optuna
def test_tasklist_failed_reruns_failed_trials_with_their_own_values(onager, project):
    (project / "g.py").write_text(FAILS_ABOVE_1)
    ok(onager("prelaunch", "+jobname", "g", "+command", f"{sys.executable} g.py", "+arg", "--x", "+uniform",
              "-2", "2", "+tune", "8", "+metric", "min:loss", "+sampler", "random", "+seed", "4", "+q"))
    ok(onager("launch", "--backend", "local", "--jobname", "g", "--agents", "2", timeout=300))
    first = {r["task_id"]: r for r in _rows(onager, "g") if r["task_id"] <= 8}
    failed = {i for i, r in first.items() if r["status"] == "failed"}
    assert failed and len(failed) < 8
    again = onager("launch", "--backend", "local", "--jobname", "g", "--tasklist", "failed", timeout=300)
    assert again.returncode == 1  # they fail again: the same values
    rerun = {r["task_id"]: r for r in _rows(onager, "g") if r["launch"] == "2"}
    assert set(rerun) == failed
    assert {i: r["command"] for i, r in rerun.items()} == {i: first[i]["command"] for i in failed}
    assert all(r["params"] == first[i]["params"] and r["attempt"] == 2 for i, r in rerun.items())


PRUNED_TASK = """import onager
p = onager.params()
for step in range(4):
    onager.log_result(step=step, loss=p["x"])
    if onager.should_prune():
        raise SystemExit(0)
onager.log_result(loss=p["x"])
"""


@needs_optuna
def test_a_pruned_trial_ends_pruned_in_the_study_and_in_list(onager, project):
    (project / "p.py").write_text(PRUNED_TASK)
    ok(onager("prelaunch", "+jobname", "p", "+command", f"{sys.executable} p.py", "+arg", "--x", "+uniform",
              "0", "1", "+tune", "14", "+metric", "min:loss", "+sampler", "random", "+seed", "2", "+q"))
    ok(onager("launch", "--backend", "local", "--jobname", "p", "--agents", "1", timeout=300))
    import optuna

    from onager import state, tune
    study = optuna.load_study(study_name="onager",
                              storage=tune.storage(str(project / ".onager/launches/p/1/tune/study.journal")))
    pruned = {t.number + 1 for t in study.trials if t.state.name == "PRUNED"}
    complete = {t.number + 1 for t in study.trials if t.state.name == "COMPLETE"}
    assert pruned and complete and len(pruned | complete) == 14
    rows = {r["task_id"]: r for r in _rows(onager, "p") if r["task_id"] <= 14}
    word = "pruned" if "pruned" in state.END_STATES else "failed"
    assert {i for i, r in rows.items() if r["status"] == word and r["reason"] == "pruned"} == pruned
    assert {i for i, r in rows.items() if r["status"] == "done"} == complete
    for i in pruned:  # stopped early: fewer steps logged than a complete trial
        lines = (project / f".onager/launches/p/1/results/{i}.jsonl").read_text().splitlines()
        assert len(lines) < 5


# ------------------------------------------------------------------ rows while agents run
def test_a_trial_that_runs_while_its_agent_runs_is_running_not_lost(tmp_path):
    from onager.state import verdict
    from onager.tune import trial_answers
    (tmp_path / "tune.json").write_text(json.dumps({"agents": [6, 7]}))
    states = {2: TaskState(start=1.0), 3: TaskState(start=1.0, end=2.0, exit_code=1, state="failed")}
    answers = trial_answers(str(tmp_path), {6: "pending (pool)", 7: "running"}, states)
    assert verdict(states[2], answers.get(2), True).status == "running"
    assert verdict(states[3], answers.get(3), True).status == "failed"  # not `requeued`
    gone = trial_answers(str(tmp_path), {}, states)  # no agent left: an unended trial is lost
    assert verdict(states[2], gone.get(2), True).status == "lost"


def test_should_prune_is_false_outside_a_trial(monkeypatch):
    import onager
    monkeypatch.delenv("ONAGER_TUNE_TRIAL", raising=False)
    assert onager.should_prune() is False


def test_run_onager_reaches_this_checkout():
    assert run_onager(["prelaunch", "+help"]).returncode == 0


# ------------------------------------------------------------------ docs/tuning.md, as written
@needs_optuna
def test_tuning_md_runs_as_written(tmp_path):
    import test_docs as docs
    path = os.path.join(docs.DOCS, "tuning.md")
    steps = [s for block in docs.console_blocks(path) for s in docs.steps_of(block)]
    text = " ".join(s.command for s in steps)
    for needed in ("+tune", "+metric", "+sampler", "+seed", "--agents", "should_prune", "step="):
        assert needed in text, f"docs/tuning.md no longer shows {needed!r}"
    project = tmp_path / "project"
    project.mkdir()
    env = docs._shim_env(tmp_path)
    for step in steps:
        proc = docs.run_step(step, str(project), env)
        assert proc.returncode == step.exit_code, docs._report(path, step, proc, f"exit {proc.returncode}, "
                                                               f"not {step.exit_code}")
        missing = docs.missing_lines(step.shown, proc.stdout + proc.stderr)
        assert not missing, docs._report(path, step, proc, f"shown lines not printed: {missing}")


# ------------------------------------------------------------------ examples/mnist's search
MNIST_NEEDS = [m for m in ("torch", "sklearn", "optuna") if importlib.util.find_spec(m) is None]


@pytest.mark.skipif(bool(MNIST_NEEDS), reason=f"{', '.join(MNIST_NEEDS)} not installed "
                    "(make mnist-deps and the tune extra install them)")
def test_mnist_tuning_example_runs(tmp_path):
    """examples/mnist/run_tune.sh (`make mnist-tune`), with 2 trials instead of 12."""
    import test_docs as docs
    env = docs._shim_env(tmp_path)
    env.update(MNIST_TUNE_TRIALS="2", MNIST_DIR=str(tmp_path / "work"), MNIST_DATA="./nodata")
    (tmp_path / "work").mkdir()
    proc = subprocess.run(["bash", os.path.join(docs.ROOT, "examples", "mnist", "run_tune.sh")], env=env,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = json.loads(subprocess.run(["onager", "list", "--jobname", "mnist-tune", "--json"], env=env,
                                     cwd=tmp_path / "work", capture_output=True, text=True).stdout)
    assert sorted(r["task_id"] for r in rows) == [1, 2, 3, 4]  # two trials, two agents
    assert all(r["status"] == "done" for r in rows)
    assert "loss" in proc.stdout
