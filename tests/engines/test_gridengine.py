"""The Grid Engine backend on a real Son of Grid Engine (ci/start-sge.sh)."""
from __future__ import annotations

import json
import os
import subprocess

import pytest

from onager.backends.gridengine import parse_qstat_xml

pytestmark = pytest.mark.sge
WAIT = ("--timeout", "120", "--interval", "0.5", "--quiet")


def queued(job_id: str) -> dict:
    """task id -> state of a job in qstat, {} once it is gone."""
    out = subprocess.run(["qstat", "-xml", "-u", "*"], capture_output=True, text=True, timeout=60).stdout
    return {i: state for j, ids, state in parse_qstat_xml(out) if j == job_id for i in ids}


def submissions(helpers, root, jobname, launch_id):
    with open(os.path.join(helpers.launch_dir(root, jobname, launch_id), "scheduler.json")) as handle:
        return json.load(handle)["submissions"]


def test_sweep_failure_and_rerun_of_failed(sge, cli, helpers):
    argvs = {i: [f"--i={i}", helpers.NASTY if i % 4 == 1 else f"v {i}"] for i in range(1, 13)}
    expected = helpers.write_sweep(sge, "sw", argvs, codes={5: 3})
    out = cli.ok("launch", "--backend", "gridengine", "--jobname", "sw", "--tasklist", "1-8,9-12")
    assert out.stdout.count("qsub ") == 1 and " -t 1-12:1 " in out.stdout
    assert cli("wait", "--jobname", "sw", *WAIT).returncode == 1
    rows = cli.rows("--jobname", "sw")
    assert {r["task_id"]: (r["status"], r["exit"]) for r in rows} == {
        i: (("failed", 3) if i == 5 else ("done", 0)) for i in range(1, 13)}
    for i in range(1, 13):
        assert json.loads(helpers.task_output(sge, "sw", "1", i)) == expected[i]
    assert helpers.starts(sge, "sw", "1") == {i: 1 for i in range(1, 13)}

    cli.ok("launch", "--backend", "gridengine", "--jobname", "sw", "--tasklist", "failed")
    assert cli("wait", "--jobname", "sw", *WAIT).returncode == 1
    rows = cli.rows("--jobname", "sw", "--launch", "2")
    assert [(r["task_id"], r["status"], r["exit"]) for r in rows] == [(5, "failed", 3)]
    assert helpers.starts(sge, "sw", "2") == {5: 1}
    assert json.loads(helpers.task_output(sge, "sw", "2", 5)) == expected[5]


def test_cancel_tasklist_of_running_array(sge, cli, helpers):
    helpers.write_commands(sge, "cx", {i: "sleep 60" for i in range(1, 7)})
    cli.ok("launch", "--backend", "gridengine", "--jobname", "cx", "--max-tasks", "2")
    job_id = submissions(helpers, sge, "cx", "1")[0]["job_id"]
    try:
        helpers.wait_until(lambda: {1, 2} <= set(helpers.starts(sge, "cx", "1")), 60, what="tasks 1, 2 to start")
        pid = int(helpers.read_start(sge, "cx", "1", 1)[1])
        out = cli.ok("cancel", "--jobname", "cx", "--tasklist", "1,4")
        assert out.stdout == f"qdel {job_id} -t 1\nqdel {job_id} -t 4\n"
        helpers.wait_until(lambda: not helpers.alive(pid), 30, what="task 1 to be killed")
        helpers.wait_until(lambda: 1 not in queued(job_id) and 4 not in queued(job_id), 30,
                           what="qstat to drop tasks 1 and 4")
        status = {r["task_id"]: r["status"] for r in cli.rows("--jobname", "cx")}
        assert status[1] == "cancelled" and status[4] == "cancelled"
        assert status[2] == "running"
        assert all(status[i] in ("pending", "running") for i in (3, 5, 6))
        assert queued(job_id).get(2) == "running"
    finally:
        cli("cancel", "--jobname", "cx")
    helpers.wait_until(lambda: not queued(job_id), 60, what="the job to leave qstat")
    status = {r["task_id"]: r["status"] for r in cli.rows("--jobname", "cx")}
    assert set(status.values()) == {"cancelled"}


def test_readme_eqw_cancel_form_on_a_real_array(sge, cli, helpers):
    out = subprocess.run(["qsub", "-terse", "-h", "-N", "held", "-o", "/dev/null", "-e", "/dev/null",
                          "-t", "1-201", "-b", "y", "true"], capture_output=True, text=True, check=True)
    job_id = out.stdout.strip().split(".")[0]
    try:
        result = cli.ok("cancel", "--backend", "gridengine", "--jobid", job_id, "--tasklist", "35-40:1,57,138-201:1")
        assert result.stdout == (f"qdel {job_id} -t 35-40:1\nqdel {job_id} -t 57\nqdel {job_id} -t 138-201:1\n")
        left = set(range(1, 35)) | set(range(41, 57)) | set(range(58, 138))
        helpers.wait_until(lambda: set(queued(job_id)) == left, 20, what="only the other tasks to remain")
    finally:
        subprocess.run(["qdel", job_id], capture_output=True)


def test_eqw_is_listed_as_error_and_relaunched(sge, cli, helpers):
    expected = helpers.write_sweep(sge, "eqw", {i: [f"e{i}"] for i in range(1, 5)})
    # an output directory that does not exist: SGE cannot start the tasks and leaves them in Eqw
    cli.ok("launch", "--backend", "gridengine", "--jobname", "eqw", "--tasklist", "1-3", "--",
           "-o", "/nonexistent/onager-test/")
    old_job = submissions(helpers, sge, "eqw", "1")[0]["job_id"]
    try:
        helpers.wait_until(lambda: {r["status"] for r in cli.rows("--jobname", "eqw")} == {"error"}, 60,
                           what="tasks 1-3 to show error (Eqw)")
        assert set(queued(old_job).values()) == {"error"}
        out = cli("wait", "--jobname", "eqw", "--timeout", "30", "--quiet")
        assert out.returncode == 1 and "--tasklist failed" in out.stderr  # error counts as finished, not ok

        cli.ok("launch", "--backend", "gridengine", "--jobname", "eqw", "--tasklist", "failed")
        assert cli("wait", "--jobname", "eqw", *WAIT).returncode == 0
        rows = cli.rows("--jobname", "eqw", "--launch", "2")
        assert [(r["task_id"], r["status"]) for r in rows] == [(1, "done"), (2, "done"), (3, "done")]
        for i in (1, 2, 3):
            assert json.loads(helpers.task_output(sge, "eqw", "2", i)) == expected[i]
        # the relaunch deleted the stuck Eqw tasks of the old job first
        helpers.wait_until(lambda: not queued(old_job), 30, what="the old Eqw tasks to be deleted")
    finally:
        subprocess.run(["qdel", old_job], capture_output=True)
