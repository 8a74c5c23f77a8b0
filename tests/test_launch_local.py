"""The launch engine and the local backend, end to end through the CLI."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest
from support import ROOT, run_onager, wait_for

PRINT_ARGV = f"{sys.executable} -c 'import json,sys; print(json.dumps(sys.argv[1:]))'"


def _json_list(onager, *args):
    out = onager("list", "--json", *args)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def _launch_dirs(project, job):
    root = project / ".onager" / "launches" / job
    return sorted(root.iterdir(), key=lambda p: int(p.name)) if root.exists() else []


def test_sweep_runs_and_failure_shows_with_exit_code(onager, project):
    assert onager("prelaunch", "+jobname", "j", "+command", "sh -c", "+pos-arg",
                  "exit 0", "exit 3", "echo out; echo err >&2", "+q").returncode == 0
    res = onager("launch", "--backend", "local", "--jobname", "j", "--max-tasks", "2")
    assert res.returncode == 1
    assert "1 of 3 tasks failed: 2 (exit 3)" in res.stderr
    assert "--tasklist failed" in res.stderr
    rows = {r["task_id"]: r for r in _json_list(onager)}
    assert rows[1]["status"] == "done" and rows[1]["exit"] == 0
    assert rows[2]["status"] == "failed" and rows[2]["exit"] == 3
    assert rows[3]["status"] == "done"
    logs = onager("logs", "j", "3")
    assert logs.stdout == "out\n"
    assert onager("logs", "j", "3", "--err").stdout == "err\n"


def test_rerun_failed_runs_only_the_failed_task_as_a_new_launch(onager, project):
    marker = project / "ran.txt"
    cmd = f"sh -c 'echo $0 >> {marker}; test $0 != 2'"
    onager("prelaunch", "+jobname", "r", "+command", cmd, "+pos-arg", "1", "2", "3", "+q")
    assert onager("launch", "--backend", "local", "--jobname", "r").returncode == 1
    assert sorted(marker.read_text().split()) == ["1", "2", "3"]
    marker.write_text("")
    assert onager("launch", "--backend", "local", "--jobname", "r", "--tasklist", "failed").returncode == 1
    assert marker.read_text().split() == ["2"]
    assert [p.name for p in _launch_dirs(project, "r")] == ["1", "2"]
    latest = _json_list(onager, "--jobname", "r", "--latest")
    assert [(r["task_id"], r["status"]) for r in latest] == [(2, "failed")]


def test_failed_when_nothing_failed_is_one_clear_line(onager):
    onager("prelaunch", "+jobname", "ok", "+command", "true", "+pos-arg", "1", "2", "+q")
    assert onager("launch", "--backend", "local", "--jobname", "ok").returncode == 0
    res = onager("launch", "--backend", "local", "--jobname", "ok", "--tasklist", "failed")
    assert res.returncode == 1
    assert res.stderr.count("\n") == 1 and "no failed task" in res.stderr and "2 done" in res.stderr
    assert "Traceback" not in res.stderr


def test_arguments_reach_the_program_byte_for_byte(onager, project):
    hostile = ["it's a \"test\" {x} $HOME", "a;b|c&d", "héllo wörld", "{}", "  spaced  ", "$(touch pwned)"]
    onager("prelaunch", "+jobname", "q", "+command", PRINT_ARGV, "+arg", "--msg", *hostile, "+tag", "+q")
    assert onager("launch", "--backend", "local", "--jobname", "q").returncode == 0
    for i, value in enumerate(hostile, 1):
        out = json.loads(onager("logs", "q", str(i)).stdout)
        assert out[:2] == ["--msg", value]
        assert out[2] == "--tag"
    assert not (project / "pwned").exists()


def test_task_environment(onager, project):
    onager("prelaunch", "+jobname", "env", "+command",
           "sh -c 'echo $ONAGER_JOB_NAME $ONAGER_TASK_ID $ONAGER_TAG $ONAGER_LAUNCH_ID $ONAGER_PARAM_LR; pwd'",
           "+arg", "--lr", "0.5", "+tag", "+q")
    assert onager("launch", "--backend", "local", "--jobname", "env").returncode == 0
    lines = onager("logs", "env", "1").stdout.split("\n")
    assert lines[0] == "env 1 env_1__lr_0.5 1 0.5"
    assert lines[1] == str(project)


def test_dry_run_writes_nothing(onager, project):
    onager("prelaunch", "+jobname", "d", "+command", "true", "+pos-arg", "1", "2", "+q")
    before = sorted(str(p) for p in project.rglob("*"))
    res = onager("launch", "--backend", "local", "--jobname", "d", "--dry-run")
    assert res.returncode == 0 and "2 tasks" in res.stderr
    assert sorted(str(p) for p in project.rglob("*")) == before


def test_launch_is_immutable_after_a_new_prelaunch(onager, project):
    onager("prelaunch", "+jobname", "m", "+command", "echo old", "+pos-arg", "1", "+q")
    onager("launch", "--backend", "local", "--jobname", "m")
    onager("prelaunch", "+jobname", "m", "+command", "echo new", "+pos-arg", "1", "+q")
    rows = _json_list(onager, "--jobname", "m")
    assert rows[0]["command"] == "echo old 1"
    wrapper = project / ".onager/launches/m/1/wrapper.sh"
    # a task done in this launch is not run again by a second element of the same launch
    res = subprocess.run(["bash", str(wrapper), "1"], capture_output=True, text=True)
    assert res.returncode == 0
    assert (project / ".onager/launches/m/1/logs/1.out").read_text() == "old 1\n"
    assert "done in this launch" in (project / ".onager/launches/m/1/logs/1.err").read_text()
    (project / ".onager/claims/m/1").unlink()  # without its claim, the record still runs the old command
    res = subprocess.run(["bash", str(wrapper), "1"], capture_output=True, text=True)
    assert res.returncode == 0
    assert (project / ".onager/launches/m/1/logs/1.out").read_text() == "old 1\nold 1\n"


def test_single_command_launch(onager, project):
    res = onager("launch", "--backend", "local", "--jobname", "one", "--command", "echo solo")
    assert res.returncode == 0, res.stderr
    assert onager("logs", "one", "1").stdout == "solo\n"


@pytest.mark.parametrize("tasklist, message", [
    ("7-9", "tasks 7-9 are not in job"),
    ("1-", "bad tasklist block '1-'"),
    ("1;echo x", "bad tasklist block"),
])
def test_bad_tasklists(onager, project, tasklist, message):
    onager("prelaunch", "+jobname", "b", "+command", "true", "+pos-arg", "1", "2", "+q")
    res = onager("launch", "--backend", "local", "--jobname", "b", "--tasklist", tasklist)
    assert res.returncode == 2 and message in res.stderr and res.stderr.count("\n") == 1
    assert not (project / ".onager/launches/b").exists() or not any((project / ".onager/launches/b").iterdir())


def test_unknown_job_and_unknown_backend(onager):
    res = onager("launch", "--backend", "local", "--jobname", "nope")
    assert res.returncode == 2 and "no jobfile" in res.stderr and "prelaunch" in res.stderr
    res = onager("launch", "--backend", "pbs", "--jobname", "nope")
    assert res.returncode == 2 and "unknown backend 'pbs'" in res.stderr
    res = onager("list", "--jobname", "nope")
    assert res.returncode == 0  # empty index: nothing launched yet
    res = onager("logs", "nope", "1")
    assert res.returncode == 2


def test_signal_killed_task_is_killed_with_the_signal(onager):
    onager("prelaunch", "+jobname", "k", "+command", "sh -c 'kill -9 $$'", "+pos-arg", "x", "+q")
    assert onager("launch", "--backend", "local", "--jobname", "k").returncode == 1
    out = onager("list", "--jobname", "k")
    assert "killed" in out.stdout and "SIGKILL" in out.stdout and "137 (SIGKILL)" in out.stdout


def test_corrupted_state_file_names_are_ignored(onager, project):
    onager("prelaunch", "+jobname", "c", "+command", "true", "+pos-arg", "1", "2", "+q")
    onager("launch", "--backend", "local", "--jobname", "c")
    state = project / ".onager/launches/c/1/state"
    (state / "garbage").write_text("x")
    (state / "2.end@notanumber@zz").write_text("")
    rows = _json_list(onager, "--jobname", "c")
    assert [r["status"] for r in rows] == ["done", "done"]


def test_deleted_launch_dir_is_reported_not_fatal(onager, project):
    import shutil
    onager("prelaunch", "+jobname", "g", "+command", "true", "+pos-arg", "1", "+q")
    onager("launch", "--backend", "local", "--jobname", "g")
    onager("launch", "--backend", "local", "--jobname", "g")
    shutil.rmtree(project / ".onager/launches/g/1")
    res = onager("list", "--jobname", "g", "--json")
    assert res.returncode == 0 and "is gone" in res.stderr
    assert [r["launch"] for r in json.loads(res.stdout)] == ["2"]


def test_list_filters_and_formats(onager):
    onager("prelaunch", "+jobname", "f", "+command", "sh -c", "+pos-arg", "exit 0", "exit 1", "exit 0", "+q")
    onager("launch", "--backend", "local", "--jobname", "f")
    assert [r["task_id"] for r in _json_list(onager, "--status", "failed")] == [2]
    assert [r["task_id"] for r in _json_list(onager, "--tasklist", "1,3")] == [1, 3]
    csv_out = onager("list", "--csv", "--hide", "command", "tag").stdout.splitlines()
    assert csv_out[0] == "job_id,launch,task_id,jobname,status,reason,exit,attempt,elapsed"
    summary = onager("list", "--summary", "--json")
    data = json.loads(summary.stdout)
    assert data[0]["done"] == 2 and data[0]["failed"] == 1 and data[0]["tasks"] == 3
    bad = onager("list", "--status", "bogus")
    assert bad.returncode == 2 and "unknown status" in bad.stderr
    bad = onager("list", "--hide", "nosuch")
    assert bad.returncode == 2


def test_concurrent_launches_lose_no_index_record(project):
    run_onager(["prelaunch", "+jobname", "c16", "+command", "true", "+pos-arg", "1", "+q"], cwd=str(project))
    env = dict(os.environ, PYTHONPATH=ROOT)
    procs = [subprocess.Popen([sys.executable, "-m", "onager", "launch", "--backend", "local", "--jobname", "c16",
                               "-q"], cwd=str(project), env=env, stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(16)]
    for p in procs:
        p.communicate(timeout=120)
        assert p.returncode == 0
    lines = (project / ".onager/index.jsonl").read_text().splitlines()
    ids = sorted(int(json.loads(line)["launch_id"]) for line in lines)
    assert ids == list(range(1, 17))


def test_max_tasks_limits_concurrency(onager, project):
    log = project / "conc.log"
    cmd = f"sh -c 'echo start >> {log}; sleep 0.3; echo end >> {log}'"
    onager("prelaunch", "+jobname", "w", "+command", cmd, "+pos-arg", *"123456", "+q")
    assert onager("launch", "--backend", "local", "--jobname", "w", "--max-tasks", "2").returncode == 0
    depth = peak = 0
    for line in log.read_text().split():
        depth += 1 if line == "start" else -1
        peak = max(peak, depth)
    assert peak == 2


def test_gpu_slots_never_share_a_gpu(onager, project):
    log = project / "gpus.log"
    cmd = f"sh -c 'echo start $CUDA_VISIBLE_DEVICES >> {log}; sleep 0.2; echo end $CUDA_VISIBLE_DEVICES >> {log}'"
    onager("prelaunch", "+jobname", "gpu", "+command", cmd, "+pos-arg", *"12345678", "+q")
    res = onager("launch", "--backend", "local", "--jobname", "gpu", "--gpus", "0,1,2,3", "--gpus-per-task", "2")
    assert res.returncode == 0, res.stderr
    busy: set = set()
    seen = set()
    for line in log.read_text().splitlines():
        what, gpus = line.split()
        if what == "start":
            assert not (set(gpus.split(",")) & busy)
            busy |= set(gpus.split(","))
            seen.add(gpus)
        else:
            busy -= set(gpus.split(","))
    assert seen == {"0,1", "2,3"}


def test_bad_gpu_options(onager):
    onager("prelaunch", "+jobname", "g2", "+command", "true", "+pos-arg", "1", "+q")
    res = onager("launch", "--backend", "local", "--jobname", "g2", "--gpus", "0", "--gpus-per-task", "2")
    assert res.returncode == 2 and "needs at least 2 GPUs" in res.stderr
    res = onager("launch", "--backend", "local", "--jobname", "g2", "--gpus", "x")
    assert res.returncode == 2 and "--gpus" in res.stderr


def _wait_for(predicate, timeout: float = 20.0) -> bool:
    return wait_for(predicate, timeout)


def _pids_with(marker: str):
    out = subprocess.run(["pgrep", "-f", marker], capture_output=True, text=True)
    return [int(p) for p in out.stdout.split()]


@pytest.mark.skipif(subprocess.run(["which", "pgrep"], capture_output=True).returncode != 0,
                    reason="pgrep (procps) is not installed")
def test_ctrl_c_kills_every_task_and_marks_them_cancelled(project):
    marker = f"onager-test-sleeper-{os.getpid()}"
    cmd = f"sh -c 'sleep 30; echo {marker}'"
    run_onager(["prelaunch", "+jobname", "cc", "+command", cmd, "+pos-arg", *"1234", "+q"], cwd=str(project))
    proc = subprocess.Popen([sys.executable, "-m", "onager", "launch", "--backend", "local", "--jobname", "cc",
                             "--max-tasks", "2"], cwd=str(project), env=dict(os.environ, PYTHONPATH=ROOT),
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    state = project / ".onager/launches/cc/1/state"
    assert _wait_for(lambda: state.exists() and len([n for n in os.listdir(state) if ".start@" in n]) == 2)
    assert len(_pids_with(marker)) >= 2
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert "--tasklist unfinished" in err.decode()
    assert _wait_for(lambda: not _pids_with(marker), 10)
    rows = {r["task_id"]: r["status"] for r in json.loads(run_onager(["list", "--json"], cwd=str(project)).stdout)}
    assert rows[1] == rows[2] == "cancelled"
    assert rows[3] == rows[4] == "cancelled"  # never started: cancelled too
    res = run_onager(["launch", "--backend", "local", "--jobname", "cc", "--tasklist", "unfinished", "--dry-run"],
                     cwd=str(project))
    assert "4 tasks (1-4)" in res.stderr


@pytest.mark.skipif(subprocess.run(["which", "pgrep"], capture_output=True).returncode != 0,
                    reason="pgrep (procps) is not installed")
def test_detach_and_cancel_a_tasklist(onager, project):
    marker = f"onager-test-detached-{os.getpid()}"
    cmd = f"sh -c 'sleep 30; echo {marker}'"
    onager("prelaunch", "+jobname", "dt", "+command", cmd, "+pos-arg", *"123", "+q")
    res = onager("launch", "--backend", "local", "--jobname", "dt", "--detach", "--max-tasks", "3")
    assert res.returncode == 0, res.stderr
    state = project / ".onager/launches/dt/1/state"
    assert _wait_for(lambda: len([n for n in os.listdir(state) if ".start@" in n]) == 3)
    rows = {r["task_id"]: r["status"] for r in _json_list(onager, "--jobname", "dt")}
    assert set(rows.values()) == {"running"}
    res = onager("cancel", "--jobname", "dt", "--tasklist", "1-2")
    assert res.returncode == 0, res.stderr
    assert _wait_for(lambda: len(_pids_with(marker)) == 1, 10)
    rows = {r["task_id"]: r["status"] for r in _json_list(onager, "--jobname", "dt")}
    assert rows[1] == rows[2] == "cancelled" and rows[3] == "running"
    onager("cancel", "--jobname", "dt")
    assert _wait_for(lambda: not _pids_with(marker), 10)
    res = onager("wait", "--jobname", "dt", "--timeout", "20", "--interval", "0.2")
    assert res.returncode == 1


def test_wait_exit_codes(onager):
    onager("prelaunch", "+jobname", "wt", "+command", "true", "+pos-arg", "1", "+q")
    onager("launch", "--backend", "local", "--jobname", "wt", "--detach")
    res = onager("wait", "--jobname", "wt", "--timeout", "30", "--interval", "0.1")
    assert res.returncode == 0, res.stderr
    res = onager("wait", "--jobname", "never")
    assert res.returncode == 2


def test_config_defaults_and_header_footer_and_venv(onager, project):
    venv = project / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "activate").write_text("export FROM_VENV=yes\n")
    onager("config", "--write", "local", "header", "export FROM_HEADER=1\necho header-ran",
           "--write", "local", "footer", "echo footer-ran", "--write", "local", "max_tasks", "1")
    onager("prelaunch", "+jobname", "h", "+command", "sh -c 'echo $FROM_HEADER $FROM_VENV; exit 4'",
           "+pos-arg", "x", "+q")
    res = onager("launch", "--backend", "local", "--jobname", "h", "--venv", str(venv))
    assert res.returncode == 1
    assert onager("logs", "h", "1").stdout == "header-ran\n1 yes\nfooter-ran\n"
    rows = _json_list(onager, "--jobname", "h")
    assert rows[0]["exit"] == 4  # the footer does not hide the command's exit code
    meta = json.loads((project / ".onager/launches/h/1/launch.json").read_text())
    assert meta["options"]["max_tasks"] == 1


def test_wrapper_lookup_is_by_offset(project):
    """The wrapper finds task N by seeking, with sparse ids, without reading other records."""
    from onager.jobfile import JobEntry
    from onager.launch import write_tasks
    from onager.wrapper import wrapper_text
    d = project / "L"
    (d / "logs").mkdir(parents=True)
    (d / "state").mkdir()
    write_tasks(str(d), iter([JobEntry(3, "echo three", "t3", {}), JobEntry(100000, "echo big 'x y'", "tb", {"a": 1})]))
    (d / "wrapper.sh").write_text(wrapper_text(str(d), "j", "1", str(project), index_variable="SLURM_ARRAY_TASK_ID"))
    assert subprocess.run(["bash", str(d / "wrapper.sh"), "100000"]).returncode == 0
    assert (d / "logs/100000.out").read_text() == "big x y\n"
    res = subprocess.run(["bash", str(d / "wrapper.sh"), "50"], capture_output=True, text=True)
    assert res.returncode == 2 and "task 50 is not in launch" in res.stderr
    env = dict(os.environ, SLURM_ARRAY_TASK_ID="1", ONAGER_TASK_OFFSET="2")
    assert subprocess.run(["bash", str(d / "wrapper.sh")], env=env).returncode == 0
    assert (d / "logs/3.out").read_text() == "three\n"
    assert os.path.getsize(d / "tasks.idx") == 100000 * 24


def test_fast_table_matches_tabulate(monkeypatch):
    import random

    from onager import listing
    rng = random.Random(7)
    headers = ["job_id", "launch", "task_id", "status", "exit", "tag", "command"]
    rows = [[rng.choice(["-", "123", "4567"]), str(rng.randint(1, 12)), rng.randint(1, 10 ** rng.randint(1, 6)),
             rng.choice(["done", "failed", "running"]), rng.choice(["", "0", "137 (SIGKILL)"]),
             rng.choice(["", "t_1__lr_0.1", " padded "]), "python x.py --lr " + "9" * rng.randint(0, 30)]
            for _ in range(300)]
    slow = listing.table(rows, headers)
    monkeypatch.setattr(listing, "FAST_TABLE_ROWS", 0)
    assert listing.table(rows, headers) == slow


@pytest.mark.skipif(subprocess.run(["which", "pgrep"], capture_output=True).returncode != 0,
                    reason="pgrep (procps) is not installed")
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGHUP])
def test_stopping_a_launch_kills_tasks_that_ignore_sigterm(project, sig):
    """Ctrl-C or a closed terminal: SIGTERM, then SIGKILL for whatever is left of each task."""
    marker = f"onager-test-stubborn-{os.getpid()}-{sig}"
    cmd = f"bash -c 'trap \"\" TERM; sleep 60; echo {marker}'"
    run_onager(["prelaunch", "+jobname", "st", "+command", cmd, "+pos-arg", "1", "+q"], cwd=str(project))
    proc = subprocess.Popen([sys.executable, "-m", "onager", "launch", "--backend", "local", "--jobname", "st"],
                            cwd=str(project), env=dict(os.environ, PYTHONPATH=ROOT),
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    state = project / ".onager/launches/st/1/state"
    assert _wait_for(lambda: state.exists() and any(".start@" in n for n in os.listdir(state)))
    assert _wait_for(lambda: bool(_pids_with(f"sleep 60; echo {marker}")), 10)
    proc.send_signal(sig)
    proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert _wait_for(lambda: not _pids_with(marker), 10)


def test_wrapper_stops_when_cancelled_as_it_starts(project):
    """A cancel that lands between spawn and start is seen by the wrapper itself."""
    from onager.jobfile import JobEntry
    from onager.launch import write_tasks
    from onager.state import mark, read_states
    from onager.wrapper import wrapper_text
    d = project / "L"
    (d / "logs").mkdir(parents=True)
    (d / "state").mkdir()
    write_tasks(str(d), iter([JobEntry(1, f"touch {project}/ran", "", {})]))
    (d / "wrapper.sh").write_text(wrapper_text(str(d), "j", "1", str(project)))
    mark(str(d), 1, "cancel")
    assert subprocess.run(["bash", str(d / "wrapper.sh"), "1"]).returncode == 143
    assert not (project / "ran").exists()
    st = read_states(str(d))[1]
    assert st.exit_code == 143 and st.cancelled is not None


def test_wait_keeps_waiting_while_the_scheduler_cannot_be_asked(onager, project):
    onager("prelaunch", "+jobname", "u", "+command", "true", "+pos-arg", "1", "+q")
    onager("launch", "--backend", "local", "--jobname", "u")
    launch = project / ".onager/launches/u/1"
    for name in os.listdir(launch / "state"):
        os.unlink(launch / "state" / name)  # as if the task were still running elsewhere
    (launch / "pool.json").write_text(json.dumps({"pid": 1, "host": "another-machine", "time": 0}))
    assert _json_list(onager, "--jobname", "u")[0]["status"] == "unknown"
    res = onager("wait", "--jobname", "u", "--timeout", "0.5", "--interval", "0.1", "--quiet")
    assert res.returncode == 124, res.stderr


def test_cancel_of_a_deleted_launch_dir_is_one_line(onager, project):
    import shutil
    onager("prelaunch", "+jobname", "gone", "+command", "true", "+pos-arg", "1", "+q")
    onager("launch", "--backend", "local", "--jobname", "gone")
    shutil.rmtree(project / ".onager/launches/gone/1")
    res = onager("cancel", "--jobname", "gone")
    assert res.returncode == 1 and res.stderr.count("\n") == 1 and "is gone" in res.stderr
    assert "Traceback" not in res.stderr


def test_index_keeps_lines_it_cannot_read_and_orders_launches_by_id(project):
    from onager.index import JobIndex, LaunchRecord
    index = JobIndex(str(project))
    foreign = '{"jobname": "x", "launch_id": "9", "from_a_newer_onager": true}'
    (project / ".onager").mkdir()
    (project / ".onager/index.jsonl").write_text(foreign + "\n")
    index.add(LaunchRecord("a", "2", "local", "/d2", "1", 1, 2.0))
    index.add(LaunchRecord("a", "1", "local", "/d1", "1", 1, 3.0))  # recorded after launch 2
    index.update("a/1", job_ids=["7"])
    assert foreign in (project / ".onager/index.jsonl").read_text().splitlines()
    assert [(r.launch_id, r.job_ids) for r in index.records()] == [("1", ["7"]), ("2", [])]
    assert index.latest("a").launch_id == "2"
