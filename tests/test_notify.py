"""Issue 16 item 3: --notify runs the user's command once when a launch has ended, its summary
in ONAGER_* variables only (the command's text is never touched)."""
from __future__ import annotations

import json

import pytest

from onager.index import LaunchRecord
from onager.notify import run_notify, summary

VARS = ("ONAGER_JOB_NAME", "ONAGER_LAUNCH_ID", "ONAGER_LAUNCH_IDS", "ONAGER_BACKEND", "ONAGER_TASKS", "ONAGER_COUNTS",
        "ONAGER_FAILED", "ONAGER_RETRIED", "ONAGER_STATUS", "ONAGER_SUMMARY")


def _notify_command(project) -> str:
    """Appends one JSON line of the ONAGER_* variables it got to notified.jsonl."""
    out = project / "notified.jsonl"
    script = ("import json,os; print(json.dumps({k: os.environ.get(k) for k in "
              f"{list(VARS)!r}}}))")
    return f"python3 -c {json.dumps(script)} >> {out}"


def _notified(project) -> list[dict]:
    path = project / "notified.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_foreground_local_launch_notifies_once_with_its_summary(onager, project):
    assert onager("prelaunch", "+jobname", "nt", "+command", "sh -c", "+pos-arg",
                  "exit 0", "exit 3", "exit 0", "kill -KILL $$", "+q").returncode == 0
    res = onager("launch", "--backend", "local", "--jobname", "nt", "--notify", _notify_command(project))
    assert res.returncode == 1  # the launch's own outcome: a notification never changes it
    (got,) = _notified(project)
    assert got["ONAGER_JOB_NAME"] == "nt" and got["ONAGER_LAUNCH_ID"] == "1" and got["ONAGER_LAUNCH_IDS"] == "1"
    assert got["ONAGER_BACKEND"] == "local" and got["ONAGER_TASKS"] == "4"
    assert got["ONAGER_COUNTS"] == "done=2,failed=1,killed=1"
    assert got["ONAGER_FAILED"] == "2,4" and got["ONAGER_STATUS"] == "failed"
    assert got["ONAGER_SUMMARY"] == "nt/1: 2 done, 1 failed, 1 killed (not done: 2,4)"
    assert got["ONAGER_RETRIED"] == ""


def test_detached_launch_notifies_once_when_its_pool_ends(onager, project):
    runs = project / "runs.txt"
    assert onager("prelaunch", "+jobname", "nd", "+command",
                  f"sh -c 'echo $ONAGER_ATTEMPT >> {runs}; test $ONAGER_ATTEMPT -gt 1'", "+q").returncode == 0
    res = onager("launch", "--backend", "local", "--jobname", "nd", "--detach", "--retries", "1",
                 "--notify", _notify_command(project))
    assert res.returncode == 0, res.stderr
    assert onager("wait", "--jobname", "nd", "--timeout", "60", "-q").returncode == 0
    import time
    deadline = time.time() + 30
    while not _notified(project) and time.time() < deadline:
        time.sleep(0.2)
    (got,) = _notified(project)
    assert got["ONAGER_STATUS"] == "ok" and got["ONAGER_COUNTS"] == "done=1"
    assert got["ONAGER_RETRIED"] == "1" and got["ONAGER_FAILED"] == ""


def test_notify_command_text_reaches_the_shell_as_written(onager, project):
    """Quotes, $ and ; in CMD are the user's shell syntax, as in a config header."""
    assert onager("prelaunch", "+jobname", "q", "+command", "true", "+q").returncode == 0
    out = project / "out.txt"
    cmd = f"""printf '%s|%s\\n' "it's" "$ONAGER_STATUS" > {out}; echo "two" >> {out}"""
    assert onager("launch", "--backend", "local", "--jobname", "q", "--notify", cmd).returncode == 0
    assert out.read_text() == "it's|ok\ntwo\n"


def test_a_failing_notify_command_is_reported_and_logged(onager, project):
    assert onager("prelaunch", "+jobname", "fl", "+command", "true", "+q").returncode == 0
    res = onager("launch", "--backend", "local", "--jobname", "fl", "--notify", "echo hi; exit 7")
    assert res.returncode == 0
    assert "--notify command exited with 7" in res.stderr
    assert (project / ".onager/launches/fl/1/notify.log").read_text() == "hi\n"


def test_run_notify_runs_once_per_chain(tmp_path):
    """The marker made with O_EXCL: a second follow-up (a requeued job, a rerun by hand) does not notify again."""
    launch = tmp_path / ".onager" / "launches" / "j" / "1"
    (launch / "state").mkdir(parents=True)
    (launch / "tasks.jsonl").write_text('[1, "true", "", {}]\n')
    (launch / "state" / "1.end@2.0@0@1.0@1@done@").write_text("")
    record = LaunchRecord("j", "1", "local", str(launch), "1", 1, 0.0, [], {})
    out = tmp_path / "count.txt"
    assert run_notify(f"echo x >> {out}", str(launch), [record]) == 0
    assert run_notify(f"echo x >> {out}", str(launch), [record]) is None
    assert out.read_text() == "x\n"
    assert summary([record])["ONAGER_STATUS"] == "ok"


@pytest.mark.parametrize("cmd", ["", "   "])
def test_empty_notify_is_refused(onager, project, cmd):
    assert onager("prelaunch", "+jobname", "e", "+command", "true", "+q").returncode == 0
    res = onager("launch", "--backend", "local", "--jobname", "e", "--notify", cmd)
    assert res.returncode == 2 and "--notify is empty" in res.stderr
