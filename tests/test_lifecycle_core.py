"""The lifecycle core: attempts, claims, end states the wrapper records itself, and how
`list` reads them. Each test counts how many times the task's command really ran."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from support import wait_for

from onager.layout import ProjectPaths
from onager.state import (
    POOL_ANSWER,
    TaskState,
    read_attempts,
    read_states,
    record_accounting,
    verdict,
)
from onager.status import Progress

# a task that counts its runs (one line per start in runs-<id>.txt) and says which attempt it is
COUNTING = "sh -c 'echo $ONAGER_ATTEMPT >> runs-$ONAGER_TASK_ID.txt; {body}' x"


def _runs(project, task_id: int) -> list[str]:
    path = project / f"runs-{task_id}.txt"
    return path.read_text().split() if path.exists() else []


def _rows(onager, *args: str) -> list[dict]:
    res = onager("list", "--json", *args)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def _launch_dir(project, job: str, launch: str = "1"):
    return project / ".onager" / "launches" / job / launch


def _wait_for(predicate, timeout: float = 30.0) -> bool:
    return wait_for(predicate, timeout)


def test_attempts_count_across_relaunches_and_the_task_dir_stays(onager, project):
    body = ('echo ckpt-$ONAGER_ATTEMPT >> \"$ONAGER_TASK_DIR/ckpt\"; '
            '[ $ONAGER_ATTEMPT -ge 3 ] || exit 5')
    assert onager("prelaunch", "+jobname", "a", "+command", COUNTING.format(body=body), "+q").returncode == 0
    assert onager("launch", "--backend", "local", "--jobname", "a").returncode == 1
    [row] = _rows(onager, "--jobname", "a")
    assert (row["status"], row["exit"], row["attempt"]) == ("failed", 5, 1)
    assert onager("launch", "--backend", "local", "--jobname", "a", "--tasklist", "failed").returncode == 1
    assert onager("launch", "--backend", "local", "--jobname", "a", "--tasklist", "failed").returncode == 0
    assert _runs(project, 1) == ["1", "2", "3"]
    task_dir = ProjectPaths(str(project)).task_dirs("a") + "/1"
    with open(os.path.join(task_dir, "ckpt")) as handle:
        assert handle.read().split() == ["ckpt-1", "ckpt-2", "ckpt-3"]
    rows = _rows(onager, "--jobname", "a", "--all-attempts")
    assert [(r["launch"], r["attempt"], r["status"]) for r in rows] == [
        ("1", 1, "failed"), ("2", 2, "failed"), ("3", 3, "done")]
    # nothing failed any more: a rerun of failed tasks selects none and runs nothing
    onager("launch", "--backend", "local", "--jobname", "a", "--tasklist", "failed")
    assert _runs(project, 1) == ["1", "2", "3"]


def _prelaunch_one(onager, job: str, body: str) -> None:
    assert onager("prelaunch", "+jobname", job, "+command", COUNTING.format(body=body), "+q").returncode == 0


def _build(onager, project, job: str):
    """A launch built and recorded but not run (a dry run would write nothing): slurm's --dry-run
    writes nothing, so launch on local with a task list the pool runs, then reuse its wrapper."""
    assert onager("launch", "--backend", "local", "--jobname", job).returncode in (0, 1)
    return _launch_dir(project, job)


def _wrapper(launch_dir, task_id: int, env: dict | None = None, **kwargs) -> subprocess.Popen:
    full = {k: v for k, v in os.environ.items() if not k.startswith("ONAGER_")}
    full.update(env or {})
    return subprocess.Popen(["bash", str(launch_dir / "wrapper.sh"), str(task_id)], env=full,
                            stdin=subprocess.DEVNULL, start_new_session=True, **kwargs)


def _claim(project, job: str, task_id: int) -> list[str]:
    return open(os.path.join(ProjectPaths(str(project)).claims(job), str(task_id))).read().split()


def test_a_second_concurrent_attempt_does_not_run_the_command(onager, project):
    _prelaunch_one(onager, "c", "[ -e go ] || exit 9; sleep 3")
    launch_dir = _build(onager, project, "c")  # attempt 1 failed at once (no `go` file yet)
    (project / "go").write_text("")
    first = _wrapper(launch_dir, 1)
    assert _wait_for(lambda: len(_runs(project, 1)) == 2)
    assert _claim(project, "c", 1)[:2] == ["held", "2"]
    second = _wrapper(launch_dir, 1)
    assert second.wait(timeout=30) == 0
    assert first.poll() is None  # the duplicate returned while the first still runs
    assert _runs(project, 1) == ["1", "2"]
    assert first.wait(timeout=30) == 0
    states = read_states(str(launch_dir))
    assert states[1].duplicates == 1 and states[1].attempt == 2 and states[1].state == "done"
    assert "not run" in (launch_dir / "logs" / "1.err").read_text()
    assert _claim(project, "c", 1)[:2] == ["done", "2"]
    # done in this launch: another element of the same launch does not run it again
    assert _wrapper(launch_dir, 1).wait(timeout=30) == 0
    assert _runs(project, 1) == ["1", "2"]


def test_a_claim_left_by_a_dead_or_reused_pid_is_taken_over(onager, project):
    _prelaunch_one(onager, "s", "exit 0")
    launch_dir = _build(onager, project, "s")
    claims = ProjectPaths(str(project)).claims("s")
    host = os.uname().nodename
    dead = subprocess.Popen(["true"])
    dead.wait()
    # a dead pid, then a live pid whose start time is another (the pid was reused)
    for pid, pstart in ((dead.pid, "-"), (os.getpid(), "1")):
        with open(os.path.join(claims, "1"), "w") as handle:
            handle.write(f"held 7 9 {host} {pid} - {pstart}\n")
        assert _wrapper(launch_dir, 1).wait(timeout=30) == 0
    assert _runs(project, 1) == ["1", "8", "8"]
    assert _claim(project, "s", 1)[:2] == ["done", "8"]


def test_a_requeued_element_takes_over_its_own_claim(onager, project, tmp_path):
    """Slurm runs one instance of an array element: the same job id in the claim is a requeue."""
    from onager.wrapper import wrapper_text
    _prelaunch_one(onager, "q", "exit 0")
    launch_dir = _build(onager, project, "q")
    claims = ProjectPaths(str(project)).claims("q")
    (launch_dir / "wrapper.sh").write_text(wrapper_text(str(launch_dir), "q", "1", str(project),
                                                        index_variable="MY_INDEX", job_id_variable="MY_JOB",
                                                        claims_dir=claims))
    with open(os.path.join(claims, "1"), "w") as handle:
        handle.write("held 1 1 elsewhere 1 4242 -\n")  # attempt 1 on another node, killed without an end
    env = {"MY_INDEX": "1", "MY_JOB": "4242"}
    proc = subprocess.run(["bash", str(launch_dir / "wrapper.sh")], env=dict(os.environ, **env), timeout=30)
    assert proc.returncode == 0
    assert _runs(project, 1) == ["1", "2"]
    # another job (a duplicate submission) with a live claim elsewhere does not run it
    with open(os.path.join(claims, "1"), "w") as handle:
        handle.write("held 3 1 elsewhere 1 4242 -\n")
    env = {"MY_INDEX": "1", "MY_JOB": "999"}
    assert subprocess.run(["bash", str(launch_dir / "wrapper.sh")], env=dict(os.environ, **env),
                          timeout=30).returncode == 0
    assert _runs(project, 1) == ["1", "2"]


@pytest.mark.parametrize("how", ["term", "cancel", "warning"])
def test_the_wrapper_records_how_a_signal_ended_its_task(onager, project, how):
    body = "trap \"echo usr1 >> got-usr1\" USR1; echo $$ > pid; while :; do sleep 0.1; done"
    _prelaunch_one(onager, "g", "[ -e go ] || exit 9; " + body)
    launch_dir = _build(onager, project, "g")
    (project / "go").write_text("")
    proc = _wrapper(launch_dir, 1)
    assert _wait_for(lambda: (project / "pid").exists() and (project / "pid").read_text().strip())
    if how == "cancel":
        (launch_dir / "state" / "1.cancel").write_text("")
        (launch_dir / "state" / f"1.cancel@{time.time():.6f}").write_text("")
    if how == "warning":
        os.kill(proc.pid, signal.SIGUSR1)  # a scheduler's warning goes to the wrapper (Slurm --signal=B:USR1)
        assert _wait_for(lambda: (project / "got-usr1").exists())
    os.killpg(proc.pid, signal.SIGTERM)
    assert proc.wait(timeout=30) == 143
    st = read_states(str(launch_dir))[1]
    expected = {"term": ("killed", "SIGTERM"), "cancel": ("cancelled", "SIGTERM"),
                "warning": ("timeout", "warned-SIGUSR1")}[how]
    assert (st.state, st.reason, st.exit_code, st.attempt) == (*expected, 143, 2)
    [row] = [r for r in _rows(onager, "--jobname", "g") if r["task_id"] == 1]
    assert (row["status"], row["reason"]) == expected
    assert row["end"] is not None and row["elapsed"] == pytest.approx(row["end"] - row["start"])
    assert _runs(project, 1) == ["1", "2"]


def test_tasks_of_a_pool_killed_with_sigkill_finish_and_are_recorded(onager, project):
    _prelaunch_one(onager, "p", "sleep 3")
    assert onager("prelaunch", "+jobname", "p", "+command", COUNTING.format(body="sleep 3"),
                  "+arg", "--i", "1", "2", "3", "+q").returncode == 0
    pool = subprocess.Popen([sys.executable, "-m", "onager", "launch", "--backend", "local", "--jobname", "p",
                             "--max-tasks", "2"], cwd=project, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert _wait_for(lambda: len(_runs(project, 1)) + len(_runs(project, 2)) == 2)
    pool.kill()
    pool.wait()
    rows = {r["task_id"]: r for r in _rows(onager, "--jobname", "p")}
    assert [rows[i]["status"] for i in (1, 2)] == ["running", "running"]
    assert rows[3]["status"] == "lost" and rows[3]["reason"] == "never-started"
    assert _wait_for(lambda: all(r["status"] == "done" for r in _rows(onager, "--jobname", "p")
                                 if r["task_id"] in (1, 2)), timeout=30)
    # only the task that never started is picked up again
    assert onager("launch", "--backend", "local", "--jobname", "p", "--tasklist", "unfinished").returncode == 0
    assert [len(_runs(project, i)) for i in (1, 2, 3)] == [1, 1, 1]


def test_pid_and_start_time_tell_a_reused_pid():
    from onager.backends.pool import alive
    with open(f"/proc/{os.getpid()}/stat") as handle:
        mine = handle.read().rsplit(")", 1)[1].split()[19]
    assert alive(os.getpid(), mine) and alive(os.getpid(), "-")
    assert not alive(os.getpid(), str(int(mine) + 1))


def test_a_started_task_whose_pid_was_reused_is_lost_not_running(onager, project):
    _prelaunch_one(onager, "r", "exit 0")
    launch_dir = _build(onager, project, "r")
    state = launch_dir / "state"
    for name in os.listdir(state):
        os.unlink(state / name)
    host = os.uname().nodename
    (state / "1.start@1000.5@1").write_text(f"{host} {os.getpid()} - 1\n")  # our pid, another start time
    [row] = _rows(onager, "--jobname", "r")
    assert row["status"] == "lost"
    assert onager("wait", "--jobname", "r", "--timeout", "20", "--quiet").returncode == 1


def test_verdicts():
    ended = TaskState(start=1.0, end=2.0, exit_code=143, attempt=1, attempts=1, state="killed", reason="SIGTERM")
    assert verdict(ended, None, True) == ("killed", "SIGTERM", False)
    assert verdict(ended, "pending", True) == ("pending", "requeued", False)  # the scheduler runs it again
    assert verdict(ended, "timeout (TIMEOUT)", True).status == "timeout"  # accounting refines a kill
    assert verdict(ended, POOL_ANSWER, True).status == "killed"  # a live pool's word is no requeue
    done = TaskState(start=1.0, end=2.0, exit_code=0, attempt=1, attempts=1, state="done")
    assert verdict(done, "pending", True).status == "done"
    assert verdict(None, "blocked (PartitionConfig)", True) == ("pending", "PartitionConfig", True)
    assert verdict(None, "pending (Priority)", True) == ("pending", "Priority", False)
    assert verdict(None, POOL_ANSWER, True) == ("pending", "", False)
    started = TaskState(start=1.0, attempt=1, attempts=1)  # no end: SIGKILLed, or still running
    assert verdict(started, POOL_ANSWER, True).status == "running"
    assert verdict(started, "running", True).status == "running"
    assert verdict(started, "pending", True) == ("pending", "requeued", False)
    assert verdict(None, "oom (OUT_OF_MEMORY)", True) == ("oom", "OUT_OF_MEMORY", False)
    assert verdict(None, None, False).status == "unknown"
    assert verdict(None, None, True) == ("lost", "never-started", False)
    assert Progress({"pending": 2}, [], 2, 0.0, blocked=2).stuck
    assert not Progress({"pending": 2}, [], 2, 0.0, blocked=1).stuck


def test_accounting_is_cached_as_a_state_name_and_refines_the_attempt(tmp_path):
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "4.start@10.0@2").write_text("node1 77 123_4 -\n")
    (tmp_path / "state" / "4.end@70.0@137@10.0@-@killed@SIGKILL").write_text("")  # by a pool: attempt unknown
    st = read_states(str(tmp_path))[4]
    assert (st.attempt, st.state, st.end) == (2, "killed", 70.0)
    record_accounting(str(tmp_path), 4, 2, "oom", "OUT_OF_MEMORY", when=69.0)
    st = read_states(str(tmp_path))[4]
    assert (st.state, st.reason, st.end, st.exit_code) == ("oom", "OUT_OF_MEMORY", 70.0, 137)
    with pytest.raises(ValueError):
        record_accounting(str(tmp_path), 4, 2, "bogus")
    (tmp_path / "state" / "5.start@10.0@1").write_text("")
    record_accounting(str(tmp_path), 5, 1, "timeout", "TIMEOUT", when=99.0)  # killed before any end
    st = read_states(str(tmp_path))[5]
    assert (st.state, st.end) == ("timeout", 99.0)
    assert [a.number for a in read_attempts(str(tmp_path))[4]] == [2]


def test_old_state_names_still_read(tmp_path):
    (tmp_path / "state").mkdir()
    for name in ("1.end@20.0@0@10.0", "2.start@30.0", "2.end@40.0@3", "3.end@5.0@1"):
        (tmp_path / "state" / name).write_text("")
    states = read_states(str(tmp_path))
    assert (states[1].state, states[1].attempt, states[1].start) == ("done", 1, 10.0)
    assert (states[2].state, states[2].exit_code, states[2].end) == ("failed", 3, 40.0)
    assert (states[3].state, states[3].start) == ("failed", None)


def test_results_show_the_latest_successful_attempt(onager, project):
    log = ("python -c \"import os, onager; a = int(os.environ['ONAGER_ATTEMPT']); onager.log_result(acc=a); "
           "raise SystemExit(0 if a == 1 else 4)\"")
    assert onager("prelaunch", "+jobname", "m", "+command", log, "+q").returncode == 0
    assert onager("launch", "--backend", "local", "--jobname", "m").returncode == 0
    assert onager("launch", "--backend", "local", "--jobname", "m", "--tasklist", "1").returncode == 1
    res = onager("results", "m", "--json")
    assert res.returncode == 0, res.stderr
    [row] = json.loads(res.stdout)
    assert (row["acc"], row["status"], row["launch"]) == (1, "done", "1")


def test_only_the_latest_attempts_lines_count_in_one_results_file():
    from onager.results import parse_result_lines
    data = b'{"@time": 1, "@attempt": 1, "loss": 9, "old": 1}\n{"@time": 2, "@attempt": 2, "loss": 3}\n'
    assert parse_result_lines(data) == {"loss": 3}
    assert parse_result_lines(b'{"@time": 1, "loss": 9}\n{"@time": 2, "loss": 3, "x": 1}\n') == {"loss": 3, "x": 1}


def _memory_cgroup(name: str, limit: int) -> str:
    """A child of this process's memory cgroup (v1 or v2) limited to `limit` bytes, or skip."""
    v1 = v2 = None
    with open("/proc/self/cgroup") as handle:
        for line in handle:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            if controllers == "memory":
                v1 = path
            elif controllers == "":
                v2 = path
    candidates = []
    if v1 is not None:
        candidates.append((os.path.join("/sys/fs/cgroup/memory" + v1.rstrip("/"), name), "memory.limit_in_bytes"))
    if v2 is not None:
        for base in ("/sys/fs/cgroup", "/sys/fs/cgroup/unified"):
            candidates.append((os.path.join(base + v2.rstrip("/"), name), "memory.max"))
    for path, limit_file in candidates:
        try:
            os.makedirs(path, exist_ok=True)
            with open(os.path.join(path, limit_file), "w") as handle:
                handle.write(str(limit))
            with open(os.path.join(path, "memory.swappiness" if limit_file.startswith("memory.limit") else
                                   "memory.swap.max"), "w") as handle:
                handle.write("0")
            return path
        except OSError:
            continue
    pytest.skip("no writable memory cgroup here (needs root and cgroup v1 or v2 memory)")


def test_a_task_killed_by_the_oom_killer_ends_oom(onager, project):
    cgroup = _memory_cgroup(f"onager-test-{os.getpid()}", 64 * 1024 * 1024)
    try:
        grow = "python3 -c 'x = bytearray(400 * 1024 * 1024); print(len(x))'"
        _prelaunch_one(onager, "o", "[ -e go ] || exit 9; " + grow.replace("'", '"'))
        launch_dir = _build(onager, project, "o")
        (project / "go").write_text("")
        enter = f"echo $$ > {cgroup}/cgroup.procs && exec bash {launch_dir}/wrapper.sh 1"
        env = {k: v for k, v in os.environ.items() if not k.startswith("ONAGER_")}
        assert subprocess.run(["bash", "-c", enter], env=env, timeout=120).returncode == 137
        [row] = _rows(onager, "--jobname", "o")
        assert (row["status"], row["reason"], row["exit"], row["attempt"]) == ("oom", "oom-kill", 137, 2)
        assert _runs(project, 1) == ["1", "2"]
    finally:
        subprocess.run(["rmdir", cgroup], capture_output=True)
