"""Dynamic packing (issue 17, item 7) without a scheduler: `launch --workers W` submits W
workers, worker.sh runs each task once through wrapper.sh (no `dup` records for a task
another worker merely got first), stops when its time runs short, `list` maps the workers'
answers onto tasks, cancel stops workers, `--join` runs the same loop on this machine.

Fake scheduler commands stand in for sbatch/squeue/scancel; tests/engines/
test_packing_engines.py runs the real Slurm and Grid Engine."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest
from support import install_fake_scheduler, ok, refused, run_onager, uneven_jobfile

from onager import packing
from onager.backends.slurm import SlurmBackend
from onager.index import JobIndex
from onager.layout import LaunchPaths
from onager.tasklist import Tasklist


@pytest.fixture
def fake(project, monkeypatch):
    fake = install_fake_scheduler(project, monkeypatch)
    path = os.path.join(fake.base, "sacct")
    with open(os.path.join(fake.base, "squeue")) as src, open(path, "w") as dst:
        dst.write(src.read())
    os.chmod(path, 0o755)
    fake.respond("sacct", 1, "", "Slurm accounting storage is disabled\n")
    fake.respond("squeue", 0, "")  # no job known: every worker has ended
    return fake


def sweep(root, lengths: list[float], name: str = "exp") -> str:
    """A jobfile whose task i sleeps lengths[i-1] s, then appends its id to counts (one line per run)."""
    return uneven_jobfile(root, name, lengths, "counts")


def runs(counts: str) -> list[int]:
    try:
        with open(counts) as handle:
            return sorted(int(x) for x in handle.read().split())
    except FileNotFoundError:
        return []


def launch_workers(onager, fake, workers: int, *extra: str, name: str = "exp") -> str:
    fake.respond("sbatch", 0, "555\n")
    ok(onager("launch", "--backend", "slurm", "--jobname", name, "--workers", str(workers),
              "--max-array-size", "1001", "--quiet", *extra))
    return os.path.join(os.getcwd(), ".onager", "launches", name, "1")


def run_workers(launch_dir: str, names: list[str], timeout: float = 60) -> list[subprocess.CompletedProcess]:
    """The workers as the scheduler starts them (array index in SLURM_ARRAY_TASK_ID), all at once."""
    procs = []
    for k in names:
        env = {key: v for key, v in os.environ.items() if not key.startswith("SLURM_")}
        env.update(SLURM_ARRAY_TASK_ID=k, SLURM_ARRAY_JOB_ID="555", ONAGER_TASK_OFFSET="0")
        procs.append(subprocess.Popen(["bash", os.path.join(launch_dir, packing.WORKER_SH)], env=env,
                                      stdin=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True))
    out = []
    for p in procs:
        _, err = p.communicate(timeout=timeout)
        out.append(subprocess.CompletedProcess(p.args, p.returncode, "", err))
    return out


def rows(onager, *args: str) -> dict[int, dict]:
    return {r["task_id"]: r for r in json.loads(ok(onager("list", "--json", "exp", *args)))}


def state_names(launch_dir: str) -> list[str]:
    return os.listdir(LaunchPaths(launch_dir).state_dir)


# ------------------------------------------------------------------ submission
def test_workers_submit_one_array_of_w_worker_elements(onager, fake):
    sweep(os.getcwd(), [0.1] * 7)
    launch_dir = launch_workers(onager, fake, 3)
    sbatch = [c for c in fake.calls() if c[0] == "sbatch"]
    assert len(sbatch) == 1
    assert "--array=1-3" in sbatch[0] and sbatch[0][-1] == os.path.join(launch_dir, packing.WORKER_SH)
    with open(os.path.join(launch_dir, packing.PACKING_DIR, packing.IDS)) as handle:
        assert handle.read().split() == [str(i) for i in range(1, 8)]
    assert os.access(os.path.join(launch_dir, packing.WORKER_SH), os.X_OK)


def test_no_more_workers_than_tasks(onager, fake):
    sweep(os.getcwd(), [0.1] * 2)
    launch_workers(onager, fake, 5)
    sbatch = [c for c in fake.calls() if c[0] == "sbatch"]
    assert "--array=1-2" in sbatch[0]


def test_dry_run_shows_the_workers_and_writes_nothing(onager, fake):
    sweep(os.getcwd(), [0.1] * 4)
    out = ok(onager("launch", "--backend", "gridengine", "--jobname", "exp", "--workers", "2", "--dry-run"))
    assert "-t 1-2:1" in out and packing.WORKER_SH in out
    assert not os.path.exists(".onager/launches/exp/1")


@pytest.mark.parametrize("args, words", [
    (["--backend", "slurm", "--workers", "2", "--tasks-per-node", "2"], ["--workers", "--tasks-per-node"]),
    (["--backend", "gridengine", "--workers", "2", "--max-tasks-per-node", "2"], ["--max-tasks-per-node"]),
    (["--backend", "slurm", "--workers", "2", "--agents", "2"], ["--workers", "--agents"]),
    (["--backend", "ssh", "--hosts", "localhost", "--workers", "2"], ["ssh", "--workers"]),
    (["--backend", "local", "--workers", "2"], ["local", "--workers"]),
    (["--backend", "slurm", "--workers", "0"], ["--workers", "at least 1"]),
    (["--backend", "slurm", "--join", "exp"], ["--join"]),
])
def test_bad_combinations_are_refused_before_any_write(onager, fake, args, words):
    sweep(os.getcwd(), [0.1] * 4)
    refused(onager("launch", "--jobname", "exp", *args), *words)
    assert not os.path.exists(".onager/launches/exp/1")
    assert not [c for c in fake.calls() if c[0] in ("sbatch", "qsub")]


# ------------------------------------------------------------------ the worker loop
def test_workers_run_each_task_once_without_dup_records(onager, fake):
    lengths = [0.4, 0.05, 0.3, 0.05, 0.2, 0.05, 0.1, 0.05, 0.3, 0.05]
    counts = sweep(os.getcwd(), lengths)
    launch_dir = launch_workers(onager, fake, 3)
    results = run_workers(launch_dir, ["1", "2", "3"])
    assert all(r.returncode == 0 for r in results), [r.stderr for r in results]
    assert runs(counts) == list(range(1, 11))  # each command ran exactly once
    names = state_names(launch_dir)
    assert not [n for n in names if ".dup@" in n]
    assert sorted(int(n.split(".")[0]) for n in names if ".end@" in n) == list(range(1, 11))
    takers = {packing.taker(launch_dir, i)[0] for i in range(1, 11)}  # type: ignore[index]
    assert takers == {"1", "2", "3"}  # uneven lengths: every worker got work
    listed = rows(onager)
    assert {r["status"] for r in listed.values()} == {"done"}
    assert {r["attempt"] for r in listed.values()} == {1}


def test_a_worker_stops_when_its_time_left_is_below_the_median_task(onager, fake):
    counts = sweep(os.getcwd(), [0.6] * 8)
    launch_dir = launch_workers(onager, fake, 1)
    # the limit onager baked in is at least a minute; this worker has 1.5 s
    packing.write_worker(launch_dir, range(1, 9), 1, 2, SlurmBackend.index_variable)
    [result] = run_workers(launch_dir, ["1"])
    assert result.returncode == 0
    assert "stopping" in result.stderr
    ran = runs(counts)
    assert 1 <= len(ran) < 8, ran
    listed = rows(onager)
    for task_id, row in listed.items():
        if task_id in ran:
            assert row["status"] == "done"
        else:  # every worker has ended without reaching it: lost, and `unfinished` reruns it
            assert (row["status"], row["reason"]) == ("lost", "never-started")


# ------------------------------------------------------------------ list
def _held(launch_dir: str, task_id: int, worker: str, ended: str | None = None) -> None:
    """Task `task_id` taken by `worker` and started (and ended as `ended`)."""
    with open(os.path.join(launch_dir, packing.PACKING_DIR, packing.TAKEN, str(task_id)), "w") as handle:
        handle.write(f"{worker} node1 4242 -\n")
    open(LaunchPaths(launch_dir).state(f"{task_id}.start@1000.000000@1"), "w").close()
    if ended:
        code = 0 if ended == "done" else 3
        open(LaunchPaths(launch_dir).state(f"{task_id}.end@1005.000000@{code}@1000.000000@1@{ended}@"), "w").close()


def test_list_maps_worker_answers_onto_tasks(onager, fake):
    sweep(os.getcwd(), [0.1] * 6)
    launch_dir = launch_workers(onager, fake, 3)
    _held(launch_dir, 1, "1")                  # worker 1 runs it now
    _held(launch_dir, 2, "2", ended="failed")  # worker 2 ran it, runs on
    _held(launch_dir, 3, "3")                  # worker 3 was cancelled while running it
    fake.respond("squeue", 0, "555_1|R|None|N/A\n555_2|R|None|N/A\n555_3|CA|None|2026-12-01T00:00:00\n")
    listed = rows(onager)
    assert listed[1]["status"] == "running"
    assert (listed[2]["status"], listed[2]["reason"]) == ("failed", "")  # not `requeued`: its worker runs on
    assert listed[3]["status"] == "cancelled"
    assert [listed[i]["status"] for i in (4, 5, 6)] == ["pending"] * 3  # untaken while workers live


def test_untaken_tasks_wait_with_the_workers_reason(onager, fake):
    sweep(os.getcwd(), [0.1] * 3)
    launch_workers(onager, fake, 2)
    fake.respond("squeue", 0, "555_[1-2]|PD|Priority|N/A\n")
    listed = rows(onager)
    assert {(r["status"], r["reason"]) for r in listed.values()} == {("pending", "Priority")}


# ------------------------------------------------------------------ cancel
def test_cancel_stops_the_worker_of_a_task_and_all_workers_for_the_whole_launch(onager, fake):
    sweep(os.getcwd(), [0.1] * 6)
    launch_dir = launch_workers(onager, fake, 3)
    _held(launch_dir, 1, "1")
    _held(launch_dir, 2, "2")
    record = JobIndex(".").latest("exp")
    backend = SlurmBackend({})
    assert backend.cancel(record, Tasklist.parse("2"), dry_run=True) == [["scancel", "555_2"]]
    assert backend.cancel(record, Tasklist.parse("4-6"), dry_run=True)[0][0].startswith("#")  # marks only
    assert backend.cancel(record, Tasklist.parse("1-6"), dry_run=True) == [["scancel", "555"]]
    ok(onager("cancel", "exp"))
    assert ["scancel", "555"] in fake.calls()
    assert {r["status"] for i, r in rows(onager).items() if i > 2} == {"cancelled"}


# ------------------------------------------------------------------ join
def test_join_runs_the_remaining_tasks_locally_once(onager, fake):
    counts = sweep(os.getcwd(), [0.2, 0.05, 0.1, 0.05, 0.3, 0.05])
    launch_dir = launch_workers(onager, fake, 2)
    _held(launch_dir, 1, "1", ended="done")  # a cluster worker already ran task 1
    result = onager("launch", "--backend", "local", "--join", "exp", "--max-tasks", "2")
    assert result.returncode == 0, result.stderr
    assert runs(counts) == [2, 3, 4, 5, 6]
    assert not [n for n in state_names(launch_dir) if ".dup@" in n]
    takers = {packing.taker(launch_dir, i)[0] for i in range(2, 7)}  # type: ignore[index]
    assert takers <= {"local-1", "local-2"}
    assert {r["status"] for r in rows(onager).values()} == {"done"}
    assert len(JobIndex(".").for_job("exp")) == 1  # no new launch


def test_join_refuses_a_launch_without_workers(onager, fake):
    sweep(os.getcwd(), [0.1] * 2)
    fake.respond("sbatch", 0, "556\n")
    ok(onager("launch", "--backend", "slurm", "--jobname", "exp", "--max-array-size", "1001", "--quiet"))
    refused(onager("launch", "--backend", "local", "--join", "exp"), "--workers")
    refused(onager("launch", "--backend", "local", "--join", "nope"), "nope")


def test_join_refuses_options_it_cannot_honour(onager, fake):
    sweep(os.getcwd(), [0.1] * 2)
    launch_workers(onager, fake, 2)
    refused(onager("launch", "--backend", "local", "--join", "exp", "--tasklist", "1"), "--tasklist")
    refused(onager("launch", "--backend", "local", "--join", "exp", "--detach"), "--detach")
    refused(onager("launch", "--backend", "local", "--join", "exp", "--jobname", "other"), "other")


def test_a_joiner_task_runs_while_its_process_lives(onager, fake):
    sweep(os.getcwd(), [0.1] * 2)
    launch_dir = launch_workers(onager, fake, 1)
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        with open(os.path.join(launch_dir, packing.PACKING_DIR, packing.TAKEN, "1"), "w") as handle:
            handle.write(f"local-1 {socket.gethostname()} {sleeper.pid} -\n")
        open(LaunchPaths(launch_dir).state("1.start@1000.000000@1"), "w").close()
        assert rows(onager)[1]["status"] == "running"
    finally:
        sleeper.kill()
        sleeper.wait()
    assert rows(onager)[1]["status"] == "lost"


def test_pending_word():
    assert packing.pending_word(["running", "pending (Priority)"]) == "pending"
    assert packing.pending_word(["pending (Priority)", None]) == "pending (Priority)"
    assert packing.pending_word(["cancelled", None]) is None
    assert packing.pending_word([]) is None


def test_workers_launch_through_run_onager(project):
    """--workers is listed by `launch --help` (the docs test checks docs/cli.md)."""
    assert "--workers" in ok(run_onager(["launch", "--help"], cwd=str(project)))


def test_cancel_stops_the_joiner_running_the_task(onager, fake):
    from support import wait_for
    counts = sweep(os.getcwd(), [60, 60, 60])
    with open(".onager/scripts/exp/jobs.json") as handle:  # count first: `sleep` is what the cancel kills
        entries = json.load(handle)
    entries = {k: [f"echo $ONAGER_TASK_ID >> {counts}; sleep 60", tag, p] for k, (_, tag, p) in entries.items()}
    with open(".onager/scripts/exp/jobs.json", "w") as handle:
        json.dump(entries, handle)
    launch_dir = launch_workers(onager, fake, 1)
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(os.path.abspath(packing.__file__))))
    joiner = subprocess.Popen([sys.executable, "-m", "onager", "launch", "--backend", "local", "--join", "exp",
                               "--max-tasks", "1", "--quiet"], env=env, stdin=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
    try:
        assert wait_for(lambda: any(".start@" in n for n in state_names(launch_dir)), timeout=30)
        [task] = [int(n.split(".")[0]) for n in state_names(launch_dir) if ".start@" in n]
        ok(onager("cancel", "exp", "--tasklist", str(task)))
        assert joiner.wait(timeout=30) == 0  # its only worker was stopped: nothing left to run
    finally:
        if joiner.poll() is None:
            joiner.kill()
            joiner.wait()
    listed = rows(onager)
    assert listed[task]["status"] == "cancelled"
    assert runs(counts) == [task]  # that one task ran, once; the joiner took no other
    assert not [c for c in fake.calls() if c[0] == "scancel"]  # no cluster worker held it
