"""Issue 12, item 6 on real schedulers: jobs that went in but could not be recorded are
cancelled, and the failed launch's id is never handed out again."""
from __future__ import annotations

import os
import re
import subprocess

import pytest

GONE = {
    # Slurm: squeue lists the job while it is queued, running or completing
    "slurm": lambda job: not subprocess.run(["squeue", "-h", "-j", job, "-o", "%i"], capture_output=True,
                                            text=True).stdout.strip(),
    # SGE: qstat -j fails once the job no longer exists
    "gridengine": lambda job: subprocess.run(["qstat", "-j", job], capture_output=True).returncode != 0,
}


def _unrecordable_launch_is_cancelled(root, cli, helpers, backend: str) -> None:
    helpers.write_commands(root, "ghost", {i: "sleep 300" for i in range(1, 4)})
    lock = os.path.join(str(root), ".onager", "index.jsonl.lock")
    os.makedirs(lock)  # the index cannot be written (its lock is a directory), sbatch/qsub still work
    out = cli("launch", "--backend", backend, "--jobname", "ghost")
    assert out.returncode == 1 and out.stderr.count("\n") == 1 and "Traceback" not in out.stderr, out.stderr
    match = re.search(r"cancelled the \w+ jobs just submitted \(([\d, ]+)\)", out.stderr)
    assert match, out.stderr
    jobs = [j.strip() for j in match.group(1).split(",")]
    for job in jobs:
        helpers.wait_until(lambda job=job: GONE[backend](job), 60, what=f"job {job} to leave the queue")
    assert not os.path.exists(helpers.launch_dir(root, "ghost", "1"))
    os.rmdir(lock)
    try:
        out = cli.ok("launch", "--backend", backend, "--jobname", "ghost")
        assert "launched ghost/2:" in out.stderr
        assert [r["launch"] for r in cli.rows("--jobname", "ghost")] == ["2", "2", "2"]
    finally:
        cli("cancel", "--jobname", "ghost")


@pytest.mark.slurm
def test_slurm_jobs_of_an_unrecordable_launch_are_cancelled(slurm, cli, helpers):
    _unrecordable_launch_is_cancelled(slurm, cli, helpers, "slurm")


@pytest.mark.sge
def test_sge_jobs_of_an_unrecordable_launch_are_cancelled(sge, cli, helpers):
    _unrecordable_launch_is_cancelled(sge, cli, helpers, "gridengine")
