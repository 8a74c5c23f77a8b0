"""Retries, requeue and --notify on real schedulers: the follow-up job (no daemon) relaunches
what failed as the next launch of the job, and notifies once when the chain has ended."""
from __future__ import annotations

import os
import subprocess

import pytest

WAIT = ("--timeout", "240", "--interval", "1", "--quiet")


def _flaky_command(root) -> str:
    """Fails on its first attempt, succeeds on the next; each run appends ONAGER_ATTEMPT to runs.txt."""
    runs = os.path.join(str(root), "runs.txt")
    return f"sh -c 'echo $ONAGER_ATTEMPT >> {runs}; test $ONAGER_ATTEMPT -gt 1'"


def _notify_command(root) -> str:
    out = os.path.join(str(root), "notified.txt")
    return f'echo "$ONAGER_STATUS $ONAGER_COUNTS $ONAGER_LAUNCH_IDS $ONAGER_FAILED." >> {out}'


def _lines(root, name: str) -> list[str]:
    path = os.path.join(str(root), name)
    if not os.path.exists(path):
        return []
    with open(path) as handle:
        return handle.read().splitlines()


def _cleanup(names: list[str], cancel: list[str]) -> None:
    for name in names:
        subprocess.run([*cancel, name], capture_output=True, timeout=60)


def _check_chain(root, cli, helpers, backend: str, jobname: str) -> None:
    helpers.wait_until(lambda: _lines(root, "notified.txt"), 240, interval=1,
                       what="the follow-up jobs to relaunch the task and notify")
    assert _lines(root, "runs.txt") == ["1", "2"]  # the command ran twice: a failed attempt, then a retry
    assert _lines(root, "notified.txt") == ["ok done=1 1,2 ."]  # once, for the whole chain
    rows = {r["launch"]: r for r in cli.rows("--jobname", jobname)}
    assert (rows["1"]["status"], rows["1"]["attempt"]) == ("failed", 1)
    assert (rows["2"]["status"], rows["2"]["attempt"]) == ("done", 2)
    assert cli("wait", "--jobname", jobname, *WAIT).returncode == 0  # the latest launch: all done
    second = helpers.launch_dir(root, jobname, "2")
    with open(os.path.join(second, "recovery.json")) as handle:
        assert '"origin": "1"' in handle.read()
    # the relaunch had a follow-up job of its own, which found nothing to retry and notified
    assert os.path.exists(os.path.join(second, "after.json"))
    assert not os.path.exists(helpers.launch_dir(root, jobname, "3"))


def test_slurm_retry_by_the_follow_up_job_then_notify_once(slurm, cli, helpers):
    helpers.write_commands(slurm, "rt", {1: _flaky_command(slurm)})
    try:
        out = cli.ok("launch", "--backend", "slurm", "--jobname", "rt", "--retries", "1", "--duration", "5",
                     "--notify", _notify_command(slurm))
        assert "warning" not in out.stderr, out.stderr
        assert os.path.exists(os.path.join(helpers.launch_dir(slurm, "rt", "1"), "after.json"))
        _check_chain(slurm, cli, helpers, "slurm", "rt")
    finally:
        _cleanup(["rt", "rt-after"], ["scancel", "-n"])


def test_gridengine_retry_by_the_follow_up_job_then_notify_once(sge, cli, helpers):
    helpers.write_commands(sge, "rg", {1: _flaky_command(sge)})
    try:
        out = cli.ok("launch", "--backend", "gridengine", "--jobname", "rg", "--retries", "1", "--duration", "5",
                     "--notify", _notify_command(sge))
        assert "warning" not in out.stderr, out.stderr
        _check_chain(sge, cli, helpers, "gridengine", "rg")
    finally:
        _cleanup(["rg", "rg_after"], ["qdel"])


@pytest.mark.parametrize("retries", ["0"])
def test_slurm_notify_alone_reports_a_failure(slurm, cli, helpers, retries):
    helpers.write_commands(slurm, "nf", {1: "true", 2: "exit 3", 3: "exit 4"})
    try:
        cli.ok("launch", "--backend", "slurm", "--jobname", "nf", "--duration", "5", "--retries", retries,
               "--notify", _notify_command(slurm))
        helpers.wait_until(lambda: _lines(slurm, "notified.txt"), 240, interval=1, what="the notification")
        assert _lines(slurm, "notified.txt") == ["failed done=1,failed=2 1 2-3."]
        assert len(cli.rows("--jobname", "nf")) == 3  # no relaunch
    finally:
        _cleanup(["nf", "nf-after"], ["scancel", "-n"])


def test_slurm_requeue_after_a_time_limit_resumes_from_the_checkpoint(slurm, cli, helpers):
    """A task warned by SIGUSR1 before its 1-minute limit saves a checkpoint into ONAGER_TASK_DIR and
    stops; it ends as timeout, and --requeue runs it again (attempt 2), which resumes and succeeds."""
    runs = os.path.join(str(slurm), "runs.txt")
    command = (f"sh -c 'echo $ONAGER_ATTEMPT >> {runs}; ck=$ONAGER_TASK_DIR/ckpt; "
               "if [ -e $ck ]; then exit 0; fi; trap \"echo saved > $ck; exit 1\" USR1; "
               "sleep 300 & wait'")
    helpers.write_commands(slurm, "rq", {1: command})
    try:
        out = cli.ok("launch", "--backend", "slurm", "--jobname", "rq", "--requeue", "--duration", "1",
                     "--notify", _notify_command(slurm))
        assert "--signal=B:USR1@30" in out.stdout
        helpers.wait_until(lambda: _lines(slurm, "notified.txt"), 300, interval=2,
                           what="the time limit, the requeue and the notification")
        assert _lines(slurm, "runs.txt") == ["1", "2"]
        rows = {r["launch"]: r for r in cli.rows("--jobname", "rq")}
        assert (rows["1"]["status"], rows["1"]["attempt"]) == ("timeout", 1)
        assert (rows["2"]["status"], rows["2"]["attempt"]) == ("done", 2)
        assert _lines(slurm, "notified.txt") == ["ok done=1 1,2 ."]
    finally:
        _cleanup(["rq", "rq-after"], ["scancel", "-n"])
