"""Issue 14, kill for real in the local pool: Ctrl-C, SIGTERM, SIGHUP, a second Ctrl-C,
`onager cancel` (foreground, detached, a pool killed with -9), pid reuse. Each test counts
how many times the task's command ran (one line per start in a file) and checks that the
processes a task started are gone (by the pids the task wrote)."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
from support import ROOT, run_onager, wait_for

from onager.backends import local, pool
from onager.index import LaunchRecord

GRACE = 5.0  # seconds between SIGTERM and SIGKILL (onager.backends.pool.GRACE)
#: a task that records each start (its pid, one line) and ignores SIGTERM
STUBBORN = "bash -c 'trap \"\" TERM; echo $$ >> {runs}; exec sleep 100' {tag}"


def _wait_for(predicate, timeout: float = 20.0) -> bool:
    return wait_for(predicate, timeout)


def _pids(path) -> list[int]:
    return [int(x) for x in path.read_text().split()] if path.exists() else []


def _pstart(pid: int) -> str | None:
    """Field 22 of /proc/PID/stat; None for a process that is gone or a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return None
    return None if fields[0] == "Z" else fields[19]


def _living(pids) -> list[int]:
    return [p for p in pids if _pstart(p)]


def _statuses(project, job: str) -> dict[int, str]:
    res = run_onager(["list", "--json", "--jobname", job], cwd=str(project))
    assert res.returncode == 0, res.stderr
    return {r["task_id"]: r["status"] for r in json.loads(res.stdout)}


def _starts(state) -> int:
    return len([n for n in os.listdir(state) if ".start@" in n]) if state.exists() else 0


def _launch(project, job: str, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "onager", "launch", "--backend", "local", "--jobname", job,
                             *extra], cwd=str(project), env=dict(os.environ, PYTHONPATH=ROOT),
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _prelaunch(project, job: str, runs, count: int) -> None:
    res = run_onager(["prelaunch", "+jobname", job, "+command", STUBBORN.format(runs=runs, tag=""),
                      "+pos-arg", *[str(i) for i in range(1, count + 1)], "+q"], cwd=str(project))
    assert res.returncode == 0, res.stderr


@pytest.mark.parametrize("first,second", [(signal.SIGINT, signal.SIGINT), (signal.SIGTERM, None),
                                          (signal.SIGHUP, signal.SIGHUP)])
def test_stopping_a_foreground_launch_kills_every_task(project, first, second):
    """Every running task's group dies (SIGTERM-ignoring ones too), a second signal only cuts
    the grace short, every task is marked cancelled (reason interrupted), nothing ran twice,
    and the message counts what was killed."""
    runs = project / "runs.txt"
    _prelaunch(project, "fg", runs, 3)
    proc = _launch(project, "fg", "--max-tasks", "2")
    state = project / ".onager/launches/fg/1/state"
    assert _wait_for(lambda: len(_pids(runs)) == 2), proc.stderr
    begun = time.time()
    proc.send_signal(first)
    if second is not None:
        time.sleep(0.5)
        proc.send_signal(second)
    _, err = proc.communicate(timeout=60)
    took = time.time() - begun
    text = err.decode()
    assert proc.returncode == 130, text
    assert _living(_pids(runs)) == [], "a SIGTERM-ignoring task survived the stop"
    if second is not None:
        assert took < GRACE, f"a second signal should skip the grace; took {took:.1f} s"
    else:
        assert took >= GRACE - 0.5  # the grace was given to the tasks
    assert "killed 2 running tasks" in text and "1 not started" in text, text
    time.sleep(0.5)
    assert len(_pids(runs)) == 2  # the third task never ran
    assert set(_statuses(project, "fg").values()) == {"cancelled"}
    names = os.listdir(state)
    for task_id in (1, 2, 3):
        assert any(n.startswith(f"{task_id}.cancel@") and n.endswith("@interrupted") for n in names), names


def _stubborn_detached(project, job: str, count: int, width: int):
    runs = project / f"{job}-runs.txt"
    _prelaunch(project, job, runs, count)
    res = run_onager(["launch", "--backend", "local", "--jobname", job, "--detach", "--max-tasks", str(width)],
                     cwd=str(project))
    assert res.returncode == 0, res.stderr
    assert _wait_for(lambda: len(_pids(runs)) == width)
    return runs, project / f".onager/launches/{job}/1"


def test_cancel_of_a_detached_launch_kills_stubborn_tasks_and_runs_nothing_more(project):
    runs, launch_dir = _stubborn_detached(project, "dt", 5, 2)
    res = run_onager(["cancel", "--jobname", "dt"], cwd=str(project))
    assert res.returncode == 0, res.stderr
    assert _living(_pids(runs)) == []  # gone by the time cancel returns
    res = run_onager(["wait", "--jobname", "dt", "--timeout", "20", "--interval", "0.2"], cwd=str(project))
    assert res.returncode == 1, res.stderr  # finished, none of it done
    assert len(_pids(runs)) == 2
    assert set(_statuses(project, "dt").values()) == {"cancelled"}


def test_a_pool_killed_with_9_leaves_running_tasks_that_list_and_cancel_see(project):
    """After kill -9 of a detached pool its tasks still run: `list` shows them running (pid and
    start time checked), `cancel` kills them (SIGTERM-ignoring too), the rest never runs."""
    runs, launch_dir = _stubborn_detached(project, "k9", 4, 2)
    info = json.loads((launch_dir / "pool.json").read_text())
    assert info.get("pstart") == _pstart(info["pid"])
    os.kill(info["pid"], signal.SIGKILL)
    assert _wait_for(lambda: _pstart(info["pid"]) is None, 10)
    rows = _statuses(project, "k9")
    assert sorted(rows.values()) == ["lost", "lost", "running", "running"], rows
    res = run_onager(["cancel", "--jobname", "k9"], cwd=str(project))
    assert res.returncode == 0, res.stderr
    assert _living(_pids(runs)) == []
    assert len(_pids(runs)) == 2
    assert set(_statuses(project, "k9").values()) == {"cancelled"}


def test_a_reused_pid_is_not_a_live_pool_nor_a_running_task(project):
    """pool.json and a start name whose pid now belongs to another process (another start
    time): the task shows lost and `wait` ends instead of waiting forever."""
    res = run_onager(["prelaunch", "+jobname", "ru", "+command", "true", "+pos-arg", "1", "2", "+q"],
                     cwd=str(project))
    assert res.returncode == 0
    assert run_onager(["launch", "--backend", "local", "--jobname", "ru"], cwd=str(project)).returncode == 0
    launch_dir = project / ".onager/launches/ru/1"
    other = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        real = _pstart(other.pid)
        assert real
        wrong = str(int(real) + 12345)
        for name in os.listdir(launch_dir / "state"):
            if name.startswith("1."):
                os.unlink(launch_dir / "state" / name)
        (launch_dir / "state" / f"1.start@{time.time():.6f}@1").write_text(
            f"{socket.gethostname()} {other.pid} - {wrong}\n")  # host pid jobid pstart, as the wrapper writes
        (launch_dir / "pool.json").write_text(json.dumps({"pid": other.pid, "pstart": wrong,
                                                          "host": socket.gethostname(), "time": 0}))
        assert _statuses(project, "ru") == {1: "lost", 2: "done"}
        res = run_onager(["wait", "--jobname", "ru", "--timeout", "15", "--interval", "0.1", "--quiet"],
                         cwd=str(project))
        assert res.returncode == 1, res.stderr  # finished (task 1 lost), not timed out (124)
        assert other.poll() is None  # and nobody killed the unrelated process
    finally:
        other.kill()
        other.wait()


def _fake_launch(tmp_path, count: int, running: int):
    """A launch dir of `count` tasks whose first `running` have started (real SIGTERM-ignoring
    processes, each in a group of its own), run by a live pool (this process)."""
    launch_dir = tmp_path / "L"
    (launch_dir / "state").mkdir(parents=True)
    procs = []
    host = socket.gethostname()
    for task_id in range(1, running + 1):
        proc = subprocess.Popen(["bash", "-c", "trap '' TERM; exec sleep 100"], start_new_session=True)
        procs.append(proc)
        (launch_dir / "state" / f"{task_id}.start@{time.time():.6f}").write_text(
            f"{host} {proc.pid} {_pstart(proc.pid)}\n")
    pool.write_pool_file(str(launch_dir / "pool.json"), os.getpid())
    record = LaunchRecord("big", "1", "local", str(launch_dir), f"1-{count}", count, time.time(), [], {})
    return record, procs


def test_cancel_reads_state_once_and_writes_one_mark_for_many_tasks(tmp_path, monkeypatch):
    """Not quadratic: a cancel of 3000 tasks lists state/ a fixed number of times (not once per
    task) and writes names for the running tasks only, plus ONE launch-level mark."""
    record, procs = _fake_launch(tmp_path, 3000, 3)
    state_dir = os.path.join(record.launch_dir, "state")
    listings = []
    real_listdir = os.listdir

    def counting(path="."):
        if os.path.abspath(str(path)) == os.path.abspath(state_dir):
            listings.append(path)
        return real_listdir(path)

    monkeypatch.setattr(os, "listdir", counting)
    monkeypatch.setattr(local, "GRACE", 0.5, raising=False)
    before = set(real_listdir(state_dir))
    try:
        from onager.tasklist import Tasklist
        commands = local.LocalBackend({}).cancel(record, Tasklist.parse("1-3000"))
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()
    assert len(listings) <= 3, f"{len(listings)} listings of state/ for one cancel"
    written = set(real_listdir(state_dir)) - before
    assert len(written) <= 2 * 3, f"{len(written)} names written for 3000 tasks"
    assert len(commands) == 3
    requests = pool.read_cancel_requests(record.launch_dir)
    assert len(requests) == 1 and requests[0].covers(3000) and requests[0].covers(1)
    watch = pool.CancelWatch(record.launch_dir)
    assert 2999 in watch and 1 in watch and 3001 not in watch


def test_cancel_kills_a_sigterm_ignoring_group_after_the_grace(tmp_path, monkeypatch):
    record, procs = _fake_launch(tmp_path, 4, 2)
    monkeypatch.setattr(local, "GRACE", 0.5, raising=False)
    from onager.tasklist import Tasklist
    try:
        local.LocalBackend({}).cancel(record, Tasklist.parse("1-4"))
        assert _wait_for(lambda: all(p.poll() is not None for p in procs), 2)
        assert [p.returncode for p in procs] == [-signal.SIGKILL] * 2
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def test_terminate_groups_hurries_on_request_and_reports_survivors_none():
    proc = subprocess.Popen(["bash", "-c", "trap '' TERM; exec sleep 100"], start_new_session=True)
    time.sleep(0.2)
    begun = time.monotonic()
    left = pool.terminate_groups([proc.pid], grace=30, hurry=lambda: time.monotonic() - begun > 0.3,
                                 poll=lambda: proc.poll())
    assert left == [] and time.monotonic() - begun < 5
    assert proc.wait(5) == -signal.SIGKILL


def test_stop_signals_raise_once_then_only_hurry():
    stop = pool.Stop()
    with pytest.raises(KeyboardInterrupt):
        stop.handler(signal.SIGINT, None)
    assert not stop.hurry
    stop.handler(signal.SIGINT, None)  # no second KeyboardInterrupt: the cleanup goes on
    assert stop.hurry and stop.signal == signal.SIGINT


def test_pool_leaves_ends_to_a_lifecycle_wrapper_and_records_a_signal_death(tmp_path):
    """With the lifecycle wrapper (it writes its own end, the start name stays) the pool adds
    an end only for a wrapper killed by a signal: `killed`, reason SIGKILL, for its attempt."""
    launch_dir = tmp_path / "L"
    (launch_dir / "state").mkdir(parents=True)
    (launch_dir / "wrapper.sh").write_text(
        "#!/bin/bash\n# exports ONAGER_ATTEMPT\n"
        f"D={launch_dir}; id=$1; t0=$ONAGER_POOL_T0\n"
        'echo "$(hostname) $$ - " > "$D/state/$id.start@$t0@3"\n'
        'if [ "$id" = 2 ]; then kill -9 $$; fi\n'
        ': > "$D/state/$id.end@$(date +%s)@0@$t0@3@done@"\n')
    p = pool.Pool(str(launch_dir), [1, 2], 2)
    assert p.run() == 1
    names = sorted(os.listdir(launch_dir / "state"))
    ends = {n.split(".")[0]: n for n in names if ".end@" in n}
    assert len([n for n in names if ".start@" in n]) == 2  # the start names stay
    assert ends["1"].endswith("@0@" + ends["1"].split("@")[3] + "@3@done@")
    parts = ends["2"].split("@")
    assert parts[2] == "137" and parts[5:] == ["killed", "SIGKILL"], ends["2"]
    assert len(ends) == 2
    from onager.state import read_states
    st = read_states(str(launch_dir))[2]  # the pool's end belongs to the attempt its start time names
    assert (st.attempt, st.state, st.reason, st.exit_code) == (3, "killed", "SIGKILL", 137)


def test_the_wrapper_snippet_reads_launch_level_cancels_like_python(tmp_path):
    """CANCEL_CHECK_SH (for the wrapper) and read_cancel_requests agree on which ids a
    launch-level mark covers."""
    (tmp_path / "state").mkdir()
    pool.request_cancel(str(tmp_path), [2, 3, 4, 10, 12, 14, 40], "cancel", per_task=())
    with open(tmp_path / "cancel.requested", "a") as handle:
        handle.write("garbage line\n1700000000.0 interrupted 100-110:5\n")
    watch = pool.CancelWatch(str(tmp_path))
    script = pool.CANCEL_CHECK_SH + 'for i in $(seq 1 120); do onager_cancelled $i && echo $i; done; true\n'
    out = subprocess.run(["bash", "-c", script], env=dict(os.environ, D=str(tmp_path)), capture_output=True,
                         text=True, check=True).stdout.split()
    expected = [i for i in range(1, 121) if i in watch]
    assert [int(x) for x in out] == expected == [2, 3, 4, 10, 12, 14, 40, 100, 105, 110]


def test_cancel_of_a_foreground_launch_kills_stubborn_tasks_and_the_launch_ends(project):
    runs = project / "runs.txt"
    _prelaunch(project, "fgc", runs, 4)
    proc = _launch(project, "fgc", "--max-tasks", "2")
    try:
        assert _wait_for(lambda: len(_pids(runs)) == 2)
        res = run_onager(["cancel", "--jobname", "fgc"], cwd=str(project))
        assert res.returncode == 0, res.stderr
        assert _living(_pids(runs)) == []
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err  # nothing failed: the tasks were cancelled
        assert len(_pids(runs)) == 2
        assert set(_statuses(project, "fgc").values()) == {"cancelled"}
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
