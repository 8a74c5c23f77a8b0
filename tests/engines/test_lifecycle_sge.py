"""Issue 14 on a real Grid Engine (ci/start-sge.sh): qdel outside onager and the h_rt limit,
both of which end a job with SIGKILL (no word from the wrapper), and how many times the
task's command ran. Ends come from the wrapper (SIGUSR1 at s_rt) or from qacct, cached."""
from __future__ import annotations

import os
import shutil
import subprocess
import time

import pytest
from lifecycle_helpers import P, job_ids, runs, runs_command

pytestmark = pytest.mark.sge


def row(cli, jobname: str) -> dict:
    return cli.rows("--jobname", jobname)[0]


def acct_names(helpers, root, jobname: str) -> list[str]:
    return [n for n in os.listdir(os.path.join(helpers.launch_dir(root, jobname, "1"), "state")) if ".acct@" in n]


def qdel(job_id: str) -> None:
    subprocess.run(["qdel", job_id], capture_output=True, timeout=60)


def settled(cli, jobname: str, timeout: float) -> dict:
    """The task's row once it is no longer pending or running (qacct may lag a moment)."""
    deadline = time.time() + timeout
    while True:
        r = row(cli, jobname)
        if r["status"] not in ("pending", "running", "lost") or time.time() > deadline:
            return r
        time.sleep(1)


def test_qdel_outside_onager(sge, cli, helpers):
    if shutil.which("qacct") is None:
        pytest.skip("qacct is not on PATH")
    helpers.write_commands(sge, P + "qd", {1: runs_command(sge, P + "qd", "sleep 600")})
    cli.ok("launch", "--backend", "gridengine", "--jobname", P + "qd", "--quiet")
    (job_id,) = job_ids(helpers, sge, P + "qd")
    try:
        state = os.path.join(helpers.launch_dir(sge, P + "qd", "1"), "state")
        helpers.wait_until(lambda: any(n.startswith("1.start@") for n in os.listdir(state)), 90,
                           what="the task to start")
        subprocess.run(["qdel", job_id, "-t", "1"], check=True, capture_output=True, timeout=60)
        r = settled(cli, P + "qd", 60)
        assert r["status"] == "killed" and r["reason"] == "SIGKILL", r  # qacct: failed 100, exit 137
        assert len(acct_names(helpers, sge, P + "qd")) == 1  # asked once, cached
        time.sleep(1.5)
        assert row(cli, P + "qd")["elapsed"] == r["elapsed"]
        assert runs(sge, P + "qd") == ["1"]
    finally:
        qdel(job_id)


def test_h_rt_is_timeout_with_and_without_the_soft_limit(sge, cli, helpers):
    if shutil.which("qacct") is None:
        pytest.skip("qacct is not on PATH")
    helpers.write_commands(sge, P + "hr", {1: runs_command(sge, P + "hr", "sleep 600")})
    helpers.write_commands(sge, P + "hr0", {1: runs_command(sge, P + "hr0", "sleep 600")})
    out = cli.ok("launch", "--backend", "gridengine", "--jobname", P + "hr", "--duration", "0-00:00:10")
    assert "s_rt=0:00:09" in out.stdout
    out = cli.ok("launch", "--backend", "gridengine", "--jobname", P + "hr0", "--duration", "0-00:00:10",
                 "--warning-signal", "0")
    assert "s_rt" not in out.stdout
    ids = job_ids(helpers, sge, P + "hr") + job_ids(helpers, sge, P + "hr0")
    try:
        warned = settled(cli, P + "hr", 120)
        assert (warned["status"], warned["reason"]) == ("timeout", "warned-SIGUSR1"), warned  # the wrapper's end
        killed = settled(cli, P + "hr0", 120)
        assert (killed["status"], killed["reason"]) == ("timeout", "h_rt"), killed  # qacct: failed 37
        time.sleep(1.5)
        assert row(cli, P + "hr")["elapsed"] == warned["elapsed"]  # both stopped
        assert row(cli, P + "hr0")["elapsed"] == killed["elapsed"]
        assert runs(sge, P + "hr") == ["1"] and runs(sge, P + "hr0") == ["1"]
    finally:
        for job_id in ids:
            qdel(job_id)
