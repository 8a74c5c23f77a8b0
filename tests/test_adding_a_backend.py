"""docs/adding-a-backend.md's example: a PBS Pro adapter (docs/examples/pbspro_example.py),
one file on the array-scheduler core, run end to end against fake qsub/qstat/qdel that
really run wrapper.sh for each array index. It is an example, not a built-in backend."""
from __future__ import annotations

import ast
import json
import os
import shutil
import stat
import sys

import pytest
from support import ROOT, run_onager

from onager import backends, cli

EXAMPLE_DIR = os.path.join(ROOT, "docs", "examples")
EXAMPLE = os.path.join(EXAMPLE_DIR, "pbspro_example.py")

# one script serves as qsub, qstat and qdel (by its name); jobs live in $FAKE_PBS_DIR/jobs.json
FAKE_PBS = r'''#!{python}
import json, os, subprocess, sys
name, args = os.path.basename(sys.argv[0]), sys.argv[1:]
base = os.environ["FAKE_PBS_DIR"]
path = os.path.join(base, "jobs.json")
jobs = json.load(open(path)) if os.path.exists(path) else {{}}
with open(os.path.join(base, "calls.jsonl"), "a") as log:
    log.write(json.dumps([name] + args) + "\n")

def indexes(text):
    a, _, rest = text.partition("-")
    b, _, s = rest.partition(":")
    return list(range(int(a), int(b or a) + 1, int(s or 1)))

if name == "qsub":
    values, i = {{}}, 0
    while i < len(args) - 1:
        values.setdefault(args[i], []).append(args[i + 1]); i += 2
    script = args[-1]
    job = str(100 + len(jobs))
    env = dict(os.environ, PBS_ARRAY_ID=job + "[].fake")
    for pair in ",".join(values.get("-v", [])).split(","):
        if pair:
            key, _, value = pair.partition("=")
            env[key] = value
    ids = indexes(values["-J"][0])
    if os.environ.get("FAKE_PBS_HOLD"):
        jobs[job] = ids  # queued: nothing runs until qdel
    else:
        for index in ids:
            subprocess.run(["bash", script], env=dict(env, PBS_ARRAY_INDEX=str(index)), check=False)
        jobs[job] = []
    print(job + "[].fake")
elif name == "qstat":
    wanted = {{a.split("[")[0] for a in args if "[" in a}}
    print(json.dumps({{"Jobs": {{f"{{j}}[{{i}}].fake": {{"job_state": "Q"}}
                               for j, ids in jobs.items() if j in wanted for i in ids}}}}))
else:  # qdel
    for arg in args:
        job, _, spec = arg.partition("[")
        spec = spec.rstrip("]")
        gone = set(indexes(spec)) if spec else set(jobs.get(job, []))
        jobs[job] = [i for i in jobs.get(job, []) if i not in gone]
json.dump(jobs, open(path, "w"))
'''


@pytest.fixture
def pbs(project, tmp_path, monkeypatch):
    """The example as ONE file `pbsexample.py` in a directory of the onager.backends package
    (as a contributor adds it, nothing registered elsewhere) and fake PBS commands first on
    PATH; returns the fake's directory."""
    fake = tmp_path / "fakepbs"
    fake.mkdir()
    script = FAKE_PBS.format(python=sys.executable)
    for name in ("qsub", "qstat", "qdel"):
        path = fake / name
        path.write_text(script)
        path.chmod(path.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{fake}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_PBS_DIR", str(fake))
    extra = tmp_path / "more_backends"
    extra.mkdir()
    shutil.copy(os.path.join(EXAMPLE_DIR, "pbspro_example.py"), extra / "pbsexample.py")
    monkeypatch.setattr(backends, "__path__", [*backends.__path__, str(extra)])
    monkeypatch.delitem(sys.modules, "onager.backends.pbsexample", raising=False)
    return fake


def onager(capsys, *args: str) -> str:
    """`onager ARGS` in this process (where the example is registered); its stdout."""
    capsys.readouterr()
    rc = cli.main(list(args))
    out, err = capsys.readouterr()
    assert rc == 0, err
    return out


def calls(fake) -> list[list[str]]:
    with open(fake / "calls.jsonl") as handle:
        return [json.loads(line) for line in handle]


def statuses(capsys, job: str) -> dict:
    return {r["task_id"]: r["status"] for r in json.loads(onager(capsys, "list", "--jobname", job, "--json"))}


def prelaunch(project, job: str, count: int) -> None:
    out = run_onager(["prelaunch", "+jobname", job, "+command", "echo ran", "+arg", "--n",
                      *map(str, range(1, count + 1)), "+q"], cwd=str(project))
    assert out.returncode == 0, out.stderr


def test_example_adapter_runs_tasks_end_to_end(project, pbs, capsys, monkeypatch):
    """Submit through the core with offsets (max_index 3: ids 4-5 go as indexes 1-2 + 3),
    the fake runs wrapper.sh per index, and `onager list` shows every task done."""
    from onager.backends import backend_class
    monkeypatch.setattr(backend_class("pbsexample"), "max_index", 3)
    prelaunch(project, "pb", 5)
    onager(capsys, "launch", "--backend", "pbsexample", "--jobname", "pb", "--duration", "30")
    qsubs = [c for c in calls(pbs) if c[0] == "qsub"]
    assert [(c[c.index("-J") + 1], c[c.index("-v") + 1]) for c in qsubs] == [
        ("1-3:1", "ONAGER_TASK_OFFSET=0"), ("1-2:1", "ONAGER_TASK_OFFSET=3")]
    assert "walltime=0:30:00" in qsubs[0] and "select=1:ncpus=1" in qsubs[0]
    assert statuses(capsys, "pb") == {i: "done" for i in range(1, 6)}
    launch = project / ".onager/launches/pb/1"
    for i in range(1, 6):
        assert (launch / "logs" / f"{i}.out").read_text() == f"ran --n {i}\n"
        assert [n.split("@")[2] for n in os.listdir(launch / "state") if n.startswith(f"{i}.end@")] == ["0"]
    with open(launch / "scheduler.json") as handle:
        meta = json.load(handle)
    assert [(s["job_id"], s["offset"], s["array"]) for s in meta["submissions"]] == [
        ("100", 0, "1-3:1"), ("101", 3, "1-2:1")]
    assert [c for c in calls(pbs) if c[0] == "qstat"] == [["qstat", "-t", "-F", "json", "-f", "100[]", "101[]"]]


def test_example_adapter_queries_and_cancels(project, pbs, capsys, monkeypatch):
    """Queued subjobs show as pending through one qstat; cancel sends condensed ranges to qdel."""
    monkeypatch.setenv("FAKE_PBS_HOLD", "1")
    prelaunch(project, "hq", 6)
    onager(capsys, "launch", "--backend", "pbsexample", "--jobname", "hq", "--tasklist", "1-3,5-6")
    assert statuses(capsys, "hq") == {1: "pending", 2: "pending", 3: "pending", 5: "pending", 6: "pending"}
    onager(capsys, "cancel", "--jobname", "hq", "--tasklist", "2-3,5")
    assert [c for c in calls(pbs) if c[0] == "qdel"] == [["qdel", "100[2-3:1]"], ["qdel", "101[5]"]]
    assert statuses(capsys, "hq") == {1: "pending", 2: "cancelled", 3: "cancelled", 5: "cancelled", 6: "pending"}


def test_example_adapter_refuses_what_it_cannot_honour(project, pbs, capsys):
    prelaunch(project, "rf", 2)
    capsys.readouterr()
    assert cli.main(["launch", "--backend", "pbsexample", "--jobname", "rf", "--partition", "gpu"]) == 2
    assert "pbsexample has no partitions" in capsys.readouterr().err
    assert not (project / ".onager/launches/rf").exists() or not os.listdir(project / ".onager/launches/rf")
    assert not os.path.exists(pbs / "calls.jsonl")


def _onager_imports(path: str) -> list[str]:
    with open(path) as handle:
        tree = ast.parse(handle.read())
    return sorted({n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)
                   and n.module and n.module.startswith("onager")})


def test_the_example_is_one_file_on_the_core():
    """An adapter needs only the core and the contract: no other adapter's names."""
    assert _onager_imports(EXAMPLE) == ["onager.backends.array", "onager.backends.base", "onager.errors",
                                        "onager.tasklist"]


@pytest.mark.parametrize("adapter", ["slurm", "gridengine"])
def test_no_adapter_imports_another(adapter):
    imported = _onager_imports(os.path.join(ROOT, "onager", "backends", adapter + ".py"))
    assert not [m for m in imported if m.startswith("onager.backends.") and m not in
                ("onager.backends.array", "onager.backends.base")], imported


def test_adding_a_backend_md_links_reach_files():
    from test_docs import test_relative_links_reach_files_and_headings
    test_relative_links_reach_files_and_headings("docs/adding-a-backend.md")
