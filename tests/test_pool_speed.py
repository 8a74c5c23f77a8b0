"""The local pool's per-task path (issue 17): one long-lived bash per slot runs the tasks'
wrappers as forks of itself, each task still a process group of its own, and every end is
recorded once (by the wrapper, or by the pool for a wrapper killed by a signal)."""
from __future__ import annotations

import os

from onager.state import read_states


def _launch_dir(project) -> str:
    root = project / ".onager" / "launches" / "p"
    return str(root / sorted(os.listdir(root), key=int)[-1])


def _ends(launch_dir: str, task_id: int) -> list[str]:
    return [n for n in os.listdir(os.path.join(launch_dir, "state")) if n.startswith(f"{task_id}.end@")]


def test_tasks_start_no_bash_of_their_own(onager, project):
    """`$$` in a task's command is the shell that runs its wrapper: one per slot, not one
    per task (the bash start per task was most of a trivial task's cost)."""
    out = project / "shells.txt"
    res = onager("prelaunch", "+jobname", "p", "+command", f"echo $$ >> {out}; true", "+pos-arg",
                 *[str(i) for i in range(12)])
    assert res.returncode == 0, res.stderr
    res = onager("launch", "--backend", "local", "--jobname", "p", "--max-tasks", "2", "-q")
    assert res.returncode == 0, res.stderr
    shells = out.read_text().split()
    assert len(shells) == 12
    assert len(set(shells)) <= 2, shells


def test_each_task_is_its_own_process_group_apart_from_its_slot(onager, project):
    out = project / "groups.txt"
    command = f'read -r -a s </proc/$BASHPID/stat; echo "$$ ${{s[4]}}" >> {out}; true'
    assert onager("prelaunch", "+jobname", "p", "+command", command, "+pos-arg",
                  *[str(i) for i in range(6)]).returncode == 0
    res = onager("launch", "--backend", "local", "--jobname", "p", "--max-tasks", "2", "-q")
    assert res.returncode == 0, res.stderr
    pairs = [line.split() for line in out.read_text().splitlines()]
    groups = [g for _, g in pairs]
    assert len(pairs) == 6 and len(set(groups)) == 6, pairs
    assert not {s for s, _ in pairs} & set(groups)  # the slot's shell is in none of them
    launch_dir = _launch_dir(project)
    starts = []  # the start name's pid: the group `onager cancel` kills
    for st in read_states(launch_dir).values():
        with open(os.path.join(launch_dir, "state", st.start_name)) as handle:
            starts.append(handle.read().split()[1])
    assert sorted(starts) == sorted(groups)


def test_a_wrapper_killed_by_a_signal_gets_one_end_from_the_pool(onager, project):
    """Task 2 SIGKILLs its own group (wrapper included): the pool records `killed SIGKILL`;
    task 3 exits 137 by itself: the wrapper's end only, no second one from the pool."""
    kill = 'read -r -a s </proc/$BASHPID/stat; kill -9 -- -${s[4]}'
    assert onager("prelaunch", "+jobname", "p", "+command", "eval", "+pos-arg", "true", kill, "exit 137",
                  "+q").returncode == 0
    res = onager("launch", "--backend", "local", "--jobname", "p", "--max-tasks", "2", "-q")
    assert res.returncode != 0
    launch_dir = _launch_dir(project)
    assert [len(_ends(launch_dir, i)) for i in (1, 2, 3)] == [1, 1, 1]
    states = read_states(launch_dir)
    assert (states[1].state, states[2].state, states[2].reason) == ("done", "killed", "SIGKILL")
    assert (states[3].state, states[3].exit_code) == ("killed", 137)
    assert "@-@killed@SIGKILL" not in _ends(launch_dir, 3)[0]  # the wrapper's own end, its attempt


def test_a_rerun_takes_over_free_claims_without_mv_or_rm_per_task(onager, project, tmp_path_factory):
    """A rerun finds each task's claim free (done in the last launch): the pool sets it aside
    with a rename, so the wrapper starts no `mv` and `rm` per task; attempts count on."""
    spy = tmp_path_factory.mktemp("spy")
    calls = spy / "calls.txt"
    for name in ("mv", "rm"):
        real = next(os.path.join(d, name) for d in os.environ["PATH"].split(os.pathsep)
                    if os.access(os.path.join(d, name), os.X_OK))
        (spy / name).write_text(f'#!/bin/sh\necho {name} "$@" >> {calls}\nexec {real} "$@"\n')
        (spy / name).chmod(0o755)
    env = {"PATH": f"{spy}{os.pathsep}{os.environ['PATH']}"}
    assert onager("prelaunch", "+jobname", "p", "+command", "true", "+pos-arg", "1", "2", "3", "4").returncode == 0
    for _ in range(2):
        res = onager("launch", "--backend", "local", "--jobname", "p", "--max-tasks", "2", "-q", env=env)
        assert res.returncode == 0, res.stderr
    assert not calls.exists() or calls.read_text() == ""
    states = read_states(_launch_dir(project))
    assert sorted((st.state, st.attempt) for st in states.values()) == [("done", 2)] * 4
    assert sorted(os.listdir(project / ".onager" / "claims" / "p")) == ["1", "2", "3", "4"]



def test_a_task_stopped_and_continued_is_not_taken_for_ended(onager, project):
    """`kill -STOP` of a task's whole group (its wrapper too) pauses it: the slot waits for its
    end, not for a change of state (job control reports stops), so it ends `done`, once."""
    import contextlib
    import signal
    import subprocess
    import sys
    import time

    from support import ROOT

    assert onager("prelaunch", "+jobname", "p", "+command", "eval", "+pos-arg", "kill -STOP 0; true", "true",
                  "+q").returncode == 0
    env = dict(os.environ, PYTHONPATH=ROOT)
    proc = subprocess.Popen([sys.executable, "-m", "onager", "launch", "--backend", "local", "--jobname", "p",
                             "--max-tasks", "1", "-q"], cwd=str(project), env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    group = None
    try:
        state_dir = project / ".onager" / "launches" / "p" / "1" / "state"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            starts = [n for n in os.listdir(state_dir) if n.startswith("1.start@")] if state_dir.exists() else []
            if starts:
                group = int((state_dir / starts[0]).read_text().split()[1])
                with open(f"/proc/{group}/stat") as handle:
                    if handle.read().rsplit(")", 1)[1].split()[0] == "T":
                        break
            time.sleep(0.05)
        assert group is not None
        time.sleep(0.5)  # stopped a while: a slot that took the stop for an end has said so by now
        os.killpg(group, signal.SIGCONT)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
    finally:
        if group is not None:  # a stopped group must not outlive a failed test
            with contextlib.suppress(OSError):
                os.killpg(group, signal.SIGKILL)
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    launch_dir = _launch_dir(project)
    assert [len(_ends(launch_dir, i)) for i in (1, 2)] == [1, 1]
    states = read_states(launch_dir)
    assert (states[1].state, states[2].state) == ("done", "done")


def test_a_bash_without_bashpid_runs_one_bash_per_task(tmp_path, monkeypatch):
    """Slots need $BASHPID (bash 4+): with macOS's bash 3.2 the pool starts `bash wrapper.sh ID`."""
    from onager.backends import _slots, pool

    (tmp_path / "L").mkdir()
    (tmp_path / "L" / "wrapper.sh").write_text(f"# {pool.SLOT_READY}\nexit 0\n")
    p = pool.Pool(str(tmp_path / "L"), [1], 1)
    monkeypatch.setattr(_slots, "_BASH_MAJOR", [5])
    assert p._slot_ready()
    monkeypatch.setattr(_slots, "_BASH_MAJOR", [3])
    assert not p._slot_ready()
