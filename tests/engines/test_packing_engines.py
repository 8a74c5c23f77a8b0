"""Dynamic packing (issue 17, item 7) on the real Slurm and Grid Engine: `--workers W` runs
every task exactly once (each task appends its id to a counter file as it starts), a worker
killed mid-run leaves its task ended truthfully while the others finish the rest, `--join`
from this machine shares the work with the cluster's workers, and cancel stops the workers."""
from __future__ import annotations

import os
import subprocess
import time

import pytest
from lifecycle_helpers import P, job_ids
from support import uneven_jobfile

from onager import packing

ENGINES = ["slurm", "sge"]


@pytest.fixture(params=ENGINES)
def engine(request):
    root = request.getfixturevalue(request.param)  # skips with the reason when the engine is not up
    launched: list[str] = []
    yield request.param, root, launched
    for job_id in launched:  # the engines are shared: leave nothing behind
        command = ["scancel", job_id] if request.param == "slurm" else ["qdel", job_id]
        subprocess.run(command, capture_output=True, timeout=60)


def backend_of(name: str) -> str:
    return "slurm" if name == "slurm" else "gridengine"


def sweep(root, jobname: str, lengths: list[float]) -> str:
    """Each run counted as it starts (a killed run counts too)."""
    return uneven_jobfile(root, jobname, lengths, f"counts-{jobname}", count_first=True)


def runs(counts: str) -> dict[int, int]:
    out: dict[int, int] = {}
    try:
        with open(counts) as handle:
            for word in handle.read().split():
                out[int(word)] = out.get(int(word), 0) + 1
    except FileNotFoundError:
        pass
    return out


def launch(cli, helpers, engine, jobname: str, workers: int, *extra: str, minutes: int = 10) -> str:
    name, root, launched = engine
    duration = ["--duration", str(minutes)]
    cli.ok("launch", "--backend", backend_of(name), "--jobname", jobname, "--workers", str(workers), *duration,
           "--quiet", *([] if name == "sge" else ["--mem", "100M"]), *extra)
    launched.extend(job_ids(helpers, root, jobname))
    return helpers.launch_dir(root, jobname, "1")


def statuses(cli, jobname: str) -> dict[int, str]:
    return {r["task_id"]: r["status"] for r in cli.rows("--jobname", jobname)}


def started(launch_dir: str, task_id: int) -> bool:
    return any(n.startswith(f"{task_id}.start@") for n in os.listdir(os.path.join(launch_dir, "state")))


def test_uneven_tasks_run_once_each_on_three_workers(engine, cli, helpers):
    name, root, _ = engine
    jobname = f"{P}pk{name}"
    lengths = [0.2, 2.0, 0.5, 1.5, 0.3, 1.0, 0.2, 0.8, 2.0, 0.4, 0.6, 0.2]
    counts = sweep(root, jobname, lengths)
    launch_dir = launch(cli, helpers, engine, jobname, 3)
    helpers.wait_until(lambda: set(statuses(cli, jobname).values()) == {"done"}, 180, 1.0, "every task done")
    assert runs(counts) == {i: 1 for i in range(1, 13)}  # each command ran exactly once
    names = os.listdir(os.path.join(launch_dir, "state"))
    assert not [n for n in names if ".dup@" in n]
    rows = cli.rows("--jobname", jobname)
    assert {r["attempt"] for r in rows} == {1}
    takers = {packing.taker(launch_dir, i)[0] for i in range(1, 13)}  # type: ignore[index]
    assert takers <= {"1", "2", "3"} and len(takers) >= 2


def test_a_killed_worker_ends_its_task_truthfully_and_the_others_finish(engine, cli, helpers):
    name, root, _ = engine
    jobname = f"{P}pkk{name}"
    # worker 2 starts walking at id 5 ((2-1)*12/3 = 4: the fifth id): that one is long
    lengths = [60.0 if i == 5 else 0.5 for i in range(1, 13)]
    counts = sweep(root, jobname, lengths)
    launch_dir = launch(cli, helpers, engine, jobname, 3)
    helpers.wait_until(lambda: started(launch_dir, 5), 120, 0.5, "task 5 to start")
    assert packing.taker(launch_dir, 5)[0] == "2"  # type: ignore[index]
    [job_id] = job_ids(helpers, root, jobname)
    kill = ["scancel", f"{job_id}_2"] if name == "slurm" else ["qdel", job_id, "-t", "2"]
    subprocess.run(kill, check=True, capture_output=True, timeout=60)

    def settled():
        st = statuses(cli, jobname)
        others = {s for i, s in st.items() if i != 5}
        return st if others == {"done"} and st[5] not in ("running", "pending") else None

    st = helpers.wait_until(settled, 180, 1.0, "the other tasks done and task 5 ended")
    assert st[5] in ("killed", "cancelled", "lost"), st
    assert runs(counts) == {i: 1 for i in range(1, 13)}


def test_join_from_this_machine_while_the_slurm_workers_run(slurm, cli, helpers):
    jobname = f"{P}pkj"
    counts = sweep(slurm, jobname, [1.5] * 12)
    engine = ("slurm", slurm, [])
    try:
        launch_dir = launch(cli, helpers, engine, jobname, 1)
        helpers.wait_until(lambda: started(launch_dir, 1), 120, 0.3, "the slurm worker to start")
        cli.ok("launch", "--backend", "local", "--join", jobname, "--max-tasks", "2", "--quiet", timeout=300)
        helpers.wait_until(lambda: set(statuses(cli, jobname).values()) == {"done"}, 120, 1.0, "every task done")
        assert runs(counts) == {i: 1 for i in range(1, 13)}
        takers = {packing.taker(launch_dir, i)[0] for i in range(1, 13)}  # type: ignore[index]
        assert "1" in takers and takers & {"local-1", "local-2"}, takers
        assert not [n for n in os.listdir(os.path.join(launch_dir, "state")) if ".dup@" in n]
    finally:
        for job_id in engine[2]:
            subprocess.run(["scancel", job_id], capture_output=True, timeout=60)


def test_cancel_stops_the_workers_and_their_tasks(engine, cli, helpers):
    name, root, _ = engine
    jobname = f"{P}pkc{name}"
    counts = sweep(root, jobname, [120.0] * 6)
    launch_dir = launch(cli, helpers, engine, jobname, 2)
    helpers.wait_until(lambda: started(launch_dir, 1), 120, 0.5, "worker 1's first task")
    cli.ok("cancel", "--jobname", jobname)
    st = helpers.wait_until(lambda: (s := statuses(cli, jobname)) and not {"running", "pending"} & set(s.values())
                            and s, 120, 1.0, "nothing running or pending")
    assert set(st.values()) == {"cancelled"}, st
    ran = runs(counts)
    assert set(ran.values()) == {1} and len(ran) <= 2  # only what the workers had started


def test_the_time_limit_warning_reaches_the_running_task_and_the_worker_stops(slurm, cli, helpers):
    """sbatch --signal=B:USR1 signals the batch shell, which is the worker: it passes the warning
    to the running wrapper (the task ends `timeout`) and takes no more tasks. The signal is sent
    as Slurm sends it (`scancel --batch --signal=USR1`), when task 2 runs: Slurm's own timing may
    be up to a minute early."""
    jobname = f"{P}pkw"
    counts = sweep(slurm, jobname, [20.0] * 4)
    engine = ("slurm", slurm, [])
    try:
        launch_dir = launch(cli, helpers, engine, jobname, 1, "--warning-signal", "30", minutes=10)
        cli.ok("launch", "--backend", "local", "--join", jobname, "--dry-run")  # a packed launch: joinable
        helpers.wait_until(lambda: started(launch_dir, 2), 120, 0.3, "task 2 to start")
        time.sleep(2)  # its wrapper is past its own traps
        [job_id] = engine[2]
        subprocess.run(["scancel", "--batch", "--signal=USR1", f"{job_id}_1"], check=True, capture_output=True,
                       timeout=60)
        st = helpers.wait_until(lambda: (s := statuses(cli, jobname)) and not {"running", "pending"} & set(s.values())
                                and s, 120, 1.0, "the worker to end")
        assert [st[i] for i in range(1, 5)] == ["done", "timeout", "lost", "lost"], st  # 3, 4: never started
        assert runs(counts) == {1: 1, 2: 1}
    finally:
        for job_id in engine[2]:
            subprocess.run(["scancel", job_id], capture_output=True, timeout=60)
