"""Issue 14 on a real Slurm (ci/start-slurm.sh): what really happened to a task, and how many
times its command ran. Each task appends a line to a runs file before it does anything else.

Slurm here has no accounting storage (sacct: "accounting storage is disabled"), so the ends come
from the wrapper and from `squeue -t all` (kept MinJobAge seconds); tests/test_sched_lifecycle.py
checks the sacct path with a fake sacct.
"""
from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import time

import pytest
from lifecycle_helpers import P, job_ids, runs, runs_command

from onager.state import read_attempts

pytestmark = pytest.mark.slurm


def row(cli, jobname: str, task_id: int = 1) -> dict:
    return next(r for r in cli.rows("--jobname", jobname) if r["task_id"] == task_id)


def started(root, helpers, jobname: str, task_id: int = 1, launch_id: str = "1") -> bool:
    state = os.path.join(helpers.launch_dir(root, jobname, launch_id), "state")
    return any(n.startswith(f"{task_id}.start@") for n in os.listdir(state))


def scancel(job_id: str) -> None:
    subprocess.run(["scancel", job_id], capture_output=True, timeout=60)


def test_request_the_partition_cannot_satisfy_is_blocked(slurm, cli, helpers):
    helpers.write_commands(slurm, P + "blk", {1: runs_command(slurm, P + "blk", "true")})
    cpus = (os.cpu_count() or 2) * 8
    cli.ok("launch", "--backend", "slurm", "--jobname", P + "blk", "--cpus", str(cpus), "--quiet")
    try:
        r = helpers.wait_until(lambda: (lambda x: x if x["reason"] == "PartitionConfig" else None)(
            row(cli, P + "blk")), 30, what="squeue to give the reason PartitionConfig")
        assert r["status"] == "pending"
        started_at = time.time()
        out = cli("wait", "--jobname", P + "blk", "--timeout", "60", "--interval", "0.5", "--quiet")
        assert out.returncode == 3, (out.stdout, out.stderr)
        assert out.stderr.count("\n") == 1 and "PartitionConfig" in out.stderr
        assert time.time() - started_at < 30
        assert runs(slurm, P + "blk") == []
    finally:
        for job_id in job_ids(helpers, slurm, P + "blk"):
            scancel(job_id)


def test_time_limit_is_timeout_with_and_without_the_warning_signal(slurm, cli, helpers):
    # the same minute for both: one with the default warning (SIGUSR1 before the limit), one
    # without (SIGTERM at the limit: the wrapper says killed, squeue -t all says TO)
    helpers.write_commands(slurm, P + "tl", {1: runs_command(slurm, P + "tl", "sleep 600")})
    helpers.write_commands(slurm, P + "tl0", {1: runs_command(slurm, P + "tl0", "sleep 600")})
    out = cli.ok("launch", "--backend", "slurm", "--jobname", P + "tl", "--duration", "0-00:01:00")
    assert "--signal=B:USR1@6" in out.stdout
    out = cli.ok("launch", "--backend", "slurm", "--jobname", P + "tl0", "--duration", "0-00:01:00",
                 "--warning-signal", "0")
    assert "--signal" not in out.stdout
    try:
        for name in (P + "tl", P + "tl0"):
            result = cli("wait", "--jobname", name, "--timeout", "200", "--interval", "1", "--quiet", timeout=260)
            assert result.returncode == 1, (result.stdout, result.stderr)  # ended, not done
        first = {name: row(cli, name) for name in (P + "tl", P + "tl0")}
        assert first[P + "tl"]["status"] == "timeout", first[P + "tl"]
        assert first[P + "tl0"]["status"] == "timeout", first[P + "tl0"]
        assert first[P + "tl0"]["reason"] == "TimeLimit"
        time.sleep(2)
        for name in (P + "tl", P + "tl0"):
            again = row(cli, name)
            assert again["status"] == "timeout" and again["elapsed"] == first[name]["elapsed"]  # it stopped
            assert runs(slurm, name) == ["1"]
    finally:
        for name in (P + "tl", P + "tl0"):
            for job_id in job_ids(helpers, slurm, name):
                scancel(job_id)


def test_scancel_outside_onager(slurm, cli, helpers):
    helpers.write_commands(slurm, P + "sc", {1: runs_command(slurm, P + "sc", "sleep 600")})
    cli.ok("launch", "--backend", "slurm", "--jobname", P + "sc", "--quiet")
    (job_id,) = job_ids(helpers, slurm, P + "sc")
    try:
        helpers.wait_until(lambda: started(slurm, helpers, P + "sc"), 60, what="the task to start")
        subprocess.run(["scancel", f"{job_id}_1"], check=True, timeout=60)
        result = cli("wait", "--jobname", P + "sc", "--timeout", "60", "--interval", "0.5", "--quiet")
        assert result.returncode == 1, (result.stdout, result.stderr)
        r = row(cli, P + "sc")
        assert r["status"] == "cancelled", r  # the wrapper says killed (SIGTERM), squeue says CA
        time.sleep(1.5)
        assert row(cli, P + "sc")["elapsed"] == r["elapsed"]
        assert runs(slurm, P + "sc") == ["1"]
    finally:
        scancel(job_id)


def test_requeue_runs_a_second_attempt_once(slurm, cli, helpers):
    # attempt 1 sleeps (and is requeued); attempt 2 ends at once
    command = runs_command(slurm, P + "rq", '[ "$ONAGER_ATTEMPT" -ge 2 ] || sleep 600')
    helpers.write_commands(slurm, P + "rq", {1: command})
    cli.ok("launch", "--backend", "slurm", "--jobname", P + "rq", "--quiet")
    (job_id,) = job_ids(helpers, slurm, P + "rq")
    try:
        helpers.wait_until(lambda: started(slurm, helpers, P + "rq"), 60, what="the task to start")
        subprocess.run(["scontrol", "requeue", f"{job_id}_1"], check=True, timeout=60)
        seen = helpers.wait_until(lambda: (lambda r: r if r["reason"] == "requeued" else None)(
            row(cli, P + "rq")), 60, what="list to show the requeued task")
        if seen["status"] == "pending":
            refused = cli("launch", "--backend", "slurm", "--jobname", P + "rq", "--tasklist", "failed")
            assert refused.returncode == 1 and "no failed task" in refused.stderr, refused.stderr
        assert seen["status"] in ("pending", "running")
        result = cli("wait", "--jobname", P + "rq", "--timeout", "400", "--interval", "1", "--quiet", timeout=460)
        assert result.returncode == 0, (result.stdout, result.stderr, cli.rows("--jobname", P + "rq"))
        r = row(cli, P + "rq")
        assert (r["status"], r["attempt"]) == ("done", 2)
        assert runs(slurm, P + "rq") == ["1", "2"]
        attempts = read_attempts(helpers.launch_dir(slurm, P + "rq", "1"))[1]
        assert [a.number for a in attempts] == [1, 2]
        assert attempts[0].end is not None and attempts[0].end <= attempts[1].start  # never at once
    finally:
        scancel(job_id)


SHIM = """#!/bin/bash
# the real sbatch submits; then the answer is lost, as when slurmctld is slow
{sbatch} "$@" >/dev/null || exit $?
echo "sbatch: error: Socket timed out on send/recv operation" >&2
exit 1
"""


def test_sbatch_timing_out_after_submitting_is_one_job(slurm, cli, helpers, tmp_path, monkeypatch):
    real = shutil.which("sbatch")
    shim_dir = tmp_path / "shim"
    shim_dir.mkdir()
    (shim_dir / "sbatch").write_text(SHIM.format(sbatch=shlex.quote(real)))
    (shim_dir / "sbatch").chmod(0o755)
    monkeypatch.setenv("PATH", f"{shim_dir}{os.pathsep}{os.environ['PATH']}")
    helpers.write_commands(slurm, P + "tok", {i: runs_command(slurm, f"tok{i}", "true") for i in (1, 2, 3)})
    out = cli("launch", "--backend", "slurm", "--jobname", P + "tok", "--quiet")
    try:
        assert out.returncode == 0, out.stderr
        (job_id,) = job_ids(helpers, slurm, P + "tok")
        result = cli("wait", "--jobname", P + "tok", "--timeout", "120", "--interval", "0.5", "--quiet")
        assert result.returncode == 0, (result.stdout, result.stderr)
        listed = subprocess.run(["squeue", "-h", "-t", "all", "-n", P + "tok", "-o", "%F"], capture_output=True,
                                text=True, timeout=60).stdout.split()
        assert set(listed) == {job_id}  # one array job, the one onager adopted
        assert [runs(slurm, f"tok{i}") for i in (1, 2, 3)] == [["1"]] * 3
    finally:
        subprocess.run(["scancel", "-n", P + "tok"], capture_output=True, timeout=60)
