"""Issue 14, kill for real over ssh (real sshd on localhost, see ssh_fixtures): a closing
channel kills the task's group with SIGTERM then SIGKILL, a task goes elsewhere only once its
first attempt is dead, SIGHUP (even twice) stops the dispatcher like Ctrl-C. Every task
records each start (its pid) in a file, so the tests count runs and check the processes."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from ssh_fixtures import ROOT, SSHD_A, SSHD_B, SSHD_MARKS, run_onager, start_files, wait_for, write_config

pytestmark = SSHD_MARKS

#: $1/$2: the runs file of task $2. Ignores SIGTERM; notes any earlier attempt still alive.
TASK = r"""trap '' TERM
runs=$1/$2
for p in $(cat "$runs" 2>/dev/null); do
    st=$(cut -d' ' -f3 "/proc/$p/stat" 2>/dev/null)
    if [ -n "$st" ] && [ "$st" != Z ]; then echo "$p" >> "$runs.overlap"; fi
done
echo $$ >> "$runs"
exec sleep 100
"""


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _pids(runs_dir, task_id: int) -> list[int]:
    path = runs_dir / str(task_id)
    return [int(x) for x in path.read_text().split()] if path.exists() else []


def _all_pids(runs_dir) -> list[int]:
    return [int(x) for p in runs_dir.iterdir() if p.name.isdigit() for x in p.read_text().split()]


@pytest.fixture
def setup(project):
    cfg = write_config(str(project / "ssh_config"), [SSHD_A, SSHD_B])
    script = project / "task.sh"
    script.write_text(TASK)
    runs = project / "runs"
    runs.mkdir()
    return cfg, script, runs


def _launch(project, cfg, script, runs, job: str, count: int, hosts: str) -> subprocess.Popen:
    res = run_onager(["prelaunch", "+jobname", job, "+command", f"bash {script} {runs}",
                      "+pos-arg", *map(str, range(1, count + 1)), "+q"], cwd=str(project))
    assert res.returncode == 0, res.stderr
    return subprocess.Popen([sys.executable, "-m", "onager", "launch", "--backend", "ssh", "--jobname", job,
                             "--hosts", hosts, "--ssh-config", cfg], cwd=str(project),
                            env=dict(os.environ, PYTHONPATH=ROOT), stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _statuses(project, job: str) -> dict[int, str]:
    res = run_onager(["list", "--json", "--jobname", job], cwd=str(project))
    assert res.returncode == 0, res.stderr
    return {r["task_id"]: r["status"] for r in json.loads(res.stdout)}


def _stop(proc: subprocess.Popen) -> str:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
    try:
        _, err = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
    return err


def _cleanup(proc: subprocess.Popen, runs) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.communicate()
    for pid in _all_pids(runs):
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)


def test_dispatcher_killed_with_9_leaves_no_sigterm_ignoring_task(project, setup):
    """The channels close with the dispatcher: each runner kills its task's group, SIGKILL
    after the grace for the tasks that ignore SIGTERM."""
    cfg, script, runs = setup
    proc = _launch(project, cfg, script, runs, "k9", 3, "ci-sshd-a:2")
    try:
        assert wait_for(lambda: len(_all_pids(runs)) == 2, 60), proc.stderr
        pids = _all_pids(runs)
        proc.kill()
        proc.communicate()
        assert wait_for(lambda: not any(map(_alive, pids)), 20), [p for p in pids if _alive(p)]
        assert len(_all_pids(runs)) == 2
    finally:
        _cleanup(proc, runs)


def _ssh_client_of(task_id: int) -> list[int]:
    """Local ssh client processes running the runner for `task_id`."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/comm") as handle:
                comm = handle.read().strip()
            with open(f"/proc/{name}/cmdline", "rb") as handle:
                argv = handle.read().split(b"\0")
        except OSError:
            continue
        if comm == "ssh" and any(a.endswith(b"onager-run.sh " + str(task_id).encode()) or
                                 b"onager-run.sh " + str(task_id).encode() + b" " in a for a in argv):
            found.append(int(name))
    return found


def test_connection_lost_task_runs_again_only_once_its_first_attempt_is_dead(project, setup):
    """The ssh client of a running task is killed (the host still answers): the task runs again,
    but never while its first attempt (which ignores SIGTERM) is still alive."""
    cfg, script, runs = setup
    proc = _launch(project, cfg, script, runs, "cl", 2, "ci-sshd-a:2")
    try:
        assert wait_for(lambda: len(_all_pids(runs)) == 2, 60), proc.stderr
        first = _pids(runs, 1)
        clients = _ssh_client_of(1)
        assert clients, "no ssh client found for task 1"
        for pid in clients:
            os.kill(pid, signal.SIGKILL)
        assert wait_for(lambda: len(_pids(runs, 1)) == 2, 60), _pids(runs, 1)
        assert not (runs / "1.overlap").exists(), "task 1 ran again while its first attempt was alive"
        assert not _alive(first[0])
        assert len(_pids(runs, 2)) == 1
        err = _stop(proc)
        assert proc.returncode == 130, err
        assert wait_for(lambda: not any(map(_alive, _all_pids(runs))), 20)
        states = os.listdir(os.path.join(project, ".onager/launches/cl/1/state"))
        assert any(n.startswith("1.lost@") and n.endswith("@connection-lost") for n in states), states
    finally:
        _cleanup(proc, runs)


@pytest.mark.parametrize("twice", [False, True])
def test_sighup_stops_the_dispatcher_like_ctrl_c(project, setup, twice):
    """A closed terminal (SIGHUP, sometimes twice: kernel and shell) kills every task on its host,
    SIGTERM-ignoring ones too, marks every task cancelled and says how many it killed."""
    cfg, script, runs = setup
    proc = _launch(project, cfg, script, runs, "hup", 3, "ci-sshd-a:1,ci-sshd-b:1")
    try:
        assert wait_for(lambda: len(_all_pids(runs)) == 2 and len(start_files(
            os.path.join(project, ".onager/launches/hup/1"))) == 2, 60), proc.stderr
        pids = _all_pids(runs)
        proc.send_signal(signal.SIGHUP)
        if twice:
            time.sleep(0.3)
            proc.send_signal(signal.SIGHUP)
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 130, err
        assert "Traceback" not in err
        assert "killed 2 running tasks" in err and "1 not started" in err, err
        assert wait_for(lambda: not any(map(_alive, pids)), 20)
        assert len(_all_pids(runs)) == 2
        assert set(_statuses(project, "hup").values()) == {"cancelled"}
    finally:
        _cleanup(proc, runs)
