"""Issue 14 item 8: --retries, --retry-on, --requeue and escalation; local pools end to end,
the follow-up job's commands and decisions without a scheduler."""
from __future__ import annotations

import json
import os
import sys

import pytest

from onager.errors import UsageError
from onager.recovery import (
    REQUEUE_LIMIT,
    Chain,
    check_launch,
    escalate,
    follow_up_command,
    from_options,
    needs_follow_up,
    parse_retry_on,
    read_chain,
    write_chain,
)
from onager.state import RETRY_ON_DEFAULT


def _rows(onager, *args):
    out = onager("list", "--json", *args)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def _flaky(project, name: str, fail_times: int) -> str:
    """A command that fails its first `fail_times` runs (counted in a file), then succeeds; each run
    appends ONAGER_ATTEMPT to runs-<name>.txt."""
    runs = project / f"runs-{name}.txt"
    return (f"sh -c 'echo $ONAGER_ATTEMPT >> {runs}; n=$(wc -l < {runs}); "
            f"test $n -gt {fail_times}'")


def _runs(project, name: str) -> list[str]:
    path = project / f"runs-{name}.txt"
    return path.read_text().split() if path.exists() else []


# ------------------------------------------------------------------ local, end to end
def test_local_retries_run_a_flaky_task_until_it_succeeds(onager, project):
    """Fails twice, then succeeds: with --retries 2 it runs 3 times and ends done at attempt 3."""
    assert onager("prelaunch", "+jobname", "flaky", "+command", _flaky(project, "f", 2), "+q").returncode == 0
    res = onager("launch", "--backend", "local", "--jobname", "flaky", "--retries", "2")
    assert res.returncode == 0, res.stderr
    assert _runs(project, "f") == ["1", "2", "3"]  # three attempts, numbered by the wrapper's claim
    (row,) = _rows(onager, "--jobname", "flaky")
    assert (row["status"], row["attempt"]) == ("done", 3)
    history = _rows(onager, "--jobname", "flaky", "--all-attempts")
    assert [(r["attempt"], r["status"]) for r in history] == [(1, "failed"), (2, "failed"), (3, "done")]


def test_local_retries_used_up_leave_the_task_failed(onager, project):
    assert onager("prelaunch", "+jobname", "bad", "+command", _flaky(project, "b", 99), "+q").returncode == 0
    res = onager("launch", "--backend", "local", "--jobname", "bad", "--retries", "1")
    assert res.returncode == 1
    assert "1 of 1 tasks failed" in res.stderr
    assert _runs(project, "b") == ["1", "2"]
    (row,) = _rows(onager, "--jobname", "bad")
    assert (row["status"], row["attempt"]) == ("failed", 2)


def test_local_retry_on_excludes_states_not_listed(onager, project):
    """A task killed by a signal is not retried with --retry-on failed; an exit code is."""
    killed = project / "runs-k.txt"
    assert onager("prelaunch", "+jobname", "sig", "+command",
                  f"sh -c 'echo $ONAGER_ATTEMPT >> {killed}; kill -KILL $$'", "+q").returncode == 0
    res = onager("launch", "--backend", "local", "--jobname", "sig", "--retries", "3", "--retry-on", "failed")
    assert res.returncode == 1
    assert _runs(project, "k") == ["1"]
    (row,) = _rows(onager, "--jobname", "sig")
    assert row["status"] == "killed" and row["attempt"] == 1
    # the same task with killed in --retry-on: every retry is spent
    killed.unlink()
    res = onager("launch", "--backend", "local", "--jobname", "sig", "--retries", "2", "--retry-on", "killed")
    assert _runs(project, "k") == ["2", "3", "4"]  # attempts count on across launches (the claim)


def test_local_without_retries_runs_once(onager, project):
    assert onager("prelaunch", "+jobname", "once", "+command", _flaky(project, "o", 1), "+q").returncode == 0
    assert onager("launch", "--backend", "local", "--jobname", "once").returncode == 1
    assert _runs(project, "o") == ["1"]


def test_local_detached_pool_retries(onager, project):
    assert onager("prelaunch", "+jobname", "det", "+command", _flaky(project, "d", 1), "+q").returncode == 0
    assert onager("launch", "--backend", "local", "--jobname", "det", "--retries", "1", "--detach").returncode == 0
    assert onager("wait", "--jobname", "det", "--timeout", "60", "-q").returncode == 0
    assert _runs(project, "d") == ["1", "2"]
    (row,) = _rows(onager, "--jobname", "det")
    assert (row["status"], row["attempt"]) == ("done", 2)


@pytest.mark.parametrize("args, message", [
    (["--retries", "-1"], "--retries must be 0 or more"),
    (["--retries", "2", "--retry-on", "failed,bogus"], "bad --retry-on 'bogus'"),
    (["--retries", "1", "--mem-factor", "2"], "local has no memory or time limits to escalate; drop --mem-factor"),
    (["--notify", " "], "--notify is empty"),
    (["--notify", "curl https://hooks.example.org/x?token=abcdef123456"], "looks like a secret"),
])
def test_bad_recovery_options_are_one_line_and_write_nothing(onager, project, args, message):
    assert onager("prelaunch", "+jobname", "v", "+command", "true", "+q").returncode == 0
    res = onager("launch", "--backend", "local", "--jobname", "v", *args)
    assert res.returncode == 2
    assert message in res.stderr and "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    assert not (project / ".onager" / "launches").exists()


@pytest.mark.parametrize("args, message", [
    (["--mem-factor", "0.5"], "bad --mem-factor '0.5'"),
    (["--time-factor", "x"], "bad --time-factor 'x'"),
    (["--max-mem", "lots"], "bad --max-mem 'lots'"),
    (["--max-time", "soon"], "bad --max-time 'soon'"),
])
def test_bad_escalation_on_slurm_is_refused_before_any_write(onager, project, args, message):
    assert onager("prelaunch", "+jobname", "v", "+command", "true", "+q").returncode == 0
    res = onager("launch", "--backend", "slurm", "--jobname", "v", "--retries", "1", "--max-array-size", "100",
                 *args)
    assert res.returncode == 2 and message in res.stderr, res.stderr
    assert not (project / ".onager" / "launches").exists()


def test_slurm_dry_run_adds_the_warning_signal_when_timeouts_are_retried(onager, project):
    assert onager("prelaunch", "+jobname", "w", "+command", "true", "+q").returncode == 0
    res = onager("launch", "--backend", "slurm", "--jobname", "w", "--requeue", "--duration", "10",
                 "--max-array-size", "100", "--dry-run")
    assert res.returncode == 0, res.stderr
    assert "--signal=B:USR1@60" in res.stdout
    res = onager("launch", "--backend", "slurm", "--jobname", "w", "--max-array-size", "100", "--dry-run")
    assert "--signal" not in res.stdout


# ------------------------------------------------------------------ policy, escalation, follow-up
def test_policy_retry_and_requeue_budgets():
    policy = from_options({"retries": 2, "retry_on": "failed,oom", "requeue": True})
    assert policy.retry_on == {"failed", "oom"}
    assert policy.wants("failed", 0, 0) == "retry" and policy.wants("failed", 2, 0) is None
    assert policy.wants("lost", 0, 0) is None  # not in --retry-on
    assert policy.wants("timeout", 5, 0) == "requeue"  # requeue spends no retry
    assert policy.wants("timeout", 0, REQUEUE_LIMIT) is None
    assert policy.wants("done", 0, 0) is None
    assert parse_retry_on(None) == RETRY_ON_DEFAULT
    with pytest.raises(UsageError):
        parse_retry_on("cancelled")  # a cancel is what the user asked for: never retried


def test_escalation_grows_memory_after_oom_and_time_after_timeout_capped():
    policy = from_options({"retries": 3, "mem_factor": "2", "time_factor": "1.5", "max_mem": "6G",
                           "max_time": "2:00:00"}, "slurm")
    opts = {"mem": "4G", "duration": "1:00:00", "extra": ["--signal=B:USR1@60", "--exclusive"]}
    assert escalate(opts, {"failed"}, policy) == opts
    grown = escalate(opts, {"oom"}, policy)
    assert grown["mem"] == "6G" and grown["duration"] == "1:00:00"  # 8G capped at 6G
    grown = escalate(opts, {"timeout"}, policy)
    assert grown["duration"] == "0-01:30:00" and grown["mem"] == "4G"
    assert grown["extra"] == ["--exclusive"]  # the old warning goes; prepare adds one for the new limit
    again = escalate(dict(opts, duration="1:30:00"), {"timeout"}, policy)
    assert again["duration"] == "0-02:00:00"  # capped by --max-time
    assert escalate({"mem_per_task": "1G"}, {"oom"}, policy)["mem_per_task"] == "2G"


def test_the_time_limit_warning_a_recovery_asks_for():
    from onager.backends.slurm import SlurmBackend
    requeue = check_launch("slurm", {"duration": "1", "requeue": True})
    assert requeue["warning_signal"] == 30  # time for the task to checkpoint
    assert "--signal=B:USR1@30" in SlurmBackend(requeue).resources(1)
    # retries of timeouts: the adapter's own default warning (a tenth of --duration) tells them apart
    retries = {"duration": "10", "retries": 1}
    assert check_launch("slurm", retries) == retries and "--signal=B:USR1@60" in SlurmBackend(retries).resources(1)
    assert check_launch("gridengine", {"retries": 1})["warning_signal"] == 60  # the default hour's limit
    assert check_launch("slurm", {"duration": "1", "requeue": True, "warning_signal": 0})["warning_signal"] == 0
    given = {"duration": "1", "requeue": True, "extra": ["--signal=USR2@10"]}
    assert check_launch("slurm", given) == given
    assert check_launch("local", {"retries": 2}) == {"retries": 2}


def test_follow_up_commands_depend_on_every_array_job(tmp_path):
    launch = str(tmp_path / ".onager" / "launches" / "j" / "1")
    slurm = follow_up_command("slurm", "j", launch, ["11", "12"], {"partition": "debug"}, str(tmp_path))
    assert "--dependency=afterany:11:12" in slurm and slurm[-1] == launch + "/after.sh"
    assert slurm[slurm.index("-p") + 1] == "debug"
    sge = follow_up_command("gridengine", "9j", launch, ["11", "12"], {}, str(tmp_path))
    assert sge[sge.index("-hold_jid") + 1] == "11,12" and "-V" in sge and sge[sge.index("-N") + 1] == "onager_9j_after"


def test_chain_round_trip_and_when_a_follow_up_is_needed(tmp_path):
    assert read_chain(str(tmp_path), "4") == Chain("4", ["4"])
    write_chain(str(tmp_path), Chain("4", ["4", "5"], {3: [1, 0], 7: [2, 0]}))
    chain = read_chain(str(tmp_path), "5")
    assert chain.origin == "4" and chain.spent == {3: [1, 0], 7: [2, 0]}
    assert needs_follow_up(from_options({"retries": 3}), chain)
    assert not needs_follow_up(from_options({"retries": 1}), chain)  # every task has spent its retry
    assert needs_follow_up(from_options({"retries": 1, "notify": "true"}), chain)
    assert not needs_follow_up(from_options({}), None)


def test_after_script_uses_this_interpreter_and_this_onager(tmp_path):
    from onager.recovery import after_script
    text = after_script(str(tmp_path))
    assert sys.executable in text and "-m onager.after" in text
    import onager
    assert os.path.dirname(os.path.dirname(onager.__file__)) in text


# ------------------------------------------------------------------ ssh, through a stand-in ssh
@pytest.fixture
def fake_ssh(project, tmp_path_factory):
    from test_ssh_unit import FAKE_SSH
    bindir = tmp_path_factory.mktemp("fakebin")
    (bindir / "ssh").write_text(FAKE_SSH)
    (bindir / "ssh").chmod(0o755)
    root = tmp_path_factory.mktemp("hosts")
    return {"PATH": f"{bindir}{os.pathsep}{os.environ['PATH']}", "FAKE_SSH_ROOT": str(root)}


def test_ssh_retries_a_failed_task_on_the_hosts(onager, project, fake_ssh):
    assert onager("prelaunch", "+jobname", "sf", "+command", _flaky(project, "s", 1), "+q").returncode == 0
    res = onager("launch", "--backend", "ssh", "--jobname", "sf", "--hosts", "ha:1", "--retries", "1",
                 env=fake_ssh)
    assert res.returncode == 0, res.stderr
    assert _runs(project, "s") == ["1", "2"]
    (row,) = _rows(onager, "--jobname", "sf")
    assert row["status"] == "done"
    assert onager("prelaunch", "+jobname", "sn", "+command", _flaky(project, "n", 1), "+q").returncode == 0
    res = onager("launch", "--backend", "ssh", "--jobname", "sn", "--hosts", "ha:1", env=fake_ssh)
    assert res.returncode == 1 and _runs(project, "n") == ["1"]  # without --retries: a failure is not retried


# ------------------------------------------------------------------ the follow-up's decisions, on a local launch
def _with_options(project, job: str, launch: str, **extra) -> str:
    """Give a finished launch recovery options (as a scheduler launch that asked for them would have)."""
    path = project / ".onager" / "launches" / job / launch / "launch.json"
    meta = json.loads(path.read_text())
    meta["options"].update(extra)
    path.write_text(json.dumps(meta))
    return str(path.parent)


def test_after_relaunches_the_failed_tasks_as_the_next_launch(onager, project, capsys):
    from onager import after
    assert onager("prelaunch", "+jobname", "af", "+command", _flaky(project, "a", 1), "+q").returncode == 0
    assert onager("launch", "--backend", "local", "--jobname", "af").returncode == 1
    first = _with_options(project, "af", "1", retries=1)
    assert after.main(first) == 0
    assert _runs(project, "a") == ["1", "2"]
    rows = {r["launch"]: r for r in _rows(onager, "--jobname", "af")}
    assert (rows["2"]["status"], rows["2"]["attempt"]) == ("done", 2)
    chain = read_chain(str(project / ".onager/launches/af/2"), "2")
    assert chain.origin == "1" and chain.launches == ["1", "2"] and chain.spent == {1: [1, 0]}
    after.main(first)  # run again (a requeued follow-up): task 1 is launch 2's now
    assert _runs(project, "a") == ["1", "2"] and not (project / ".onager/launches/af/3").exists()


def test_after_leaves_a_task_rerun_by_hand_alone(onager, project):
    """A task that a later launch already ran is not relaunched by the earlier launch's follow-up (no double run)."""
    from onager import after
    assert onager("prelaunch", "+jobname", "ah", "+command", _flaky(project, "h", 1), "+q").returncode == 0
    assert onager("launch", "--backend", "local", "--jobname", "ah").returncode == 1
    assert onager("launch", "--backend", "local", "--jobname", "ah", "--tasklist", "failed").returncode == 0
    first = _with_options(project, "ah", "1", retries=3)
    assert after.main(first) == 0
    assert _runs(project, "h") == ["1", "2"]
    assert not (project / ".onager/launches/ah/3").exists()
