"""The Slurm backend on a real Slurm (ci/start-slurm.sh): runs, failures, reruns, cancels, offsets."""
from __future__ import annotations

import json
import math
import os
import re
import subprocess

import pytest

from onager.tasklist import Tasklist

pytestmark = pytest.mark.slurm
WAIT = ("--timeout", "120", "--interval", "0.5", "--quiet")


def max_array_size() -> int:
    out = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True, timeout=60).stdout
    return int(re.search(r"MaxArraySize\s*=\s*(\d+)", out).group(1))


def submissions(helpers, root, jobname, launch_id):
    with open(os.path.join(helpers.launch_dir(root, jobname, launch_id), "scheduler.json")) as handle:
        return json.load(handle)["submissions"]


def squeue_ids(job_id: str):
    out = subprocess.run(["squeue", "-h", "-r", "-j", job_id, "-o", "%i"], capture_output=True, text=True)
    return set(out.stdout.split())


def test_sweep_failure_and_rerun_of_failed(slurm, cli, helpers):
    argvs = {i: [f"--i={i}", helpers.NASTY if i % 4 == 1 else f"v {i}"] for i in range(1, 13)}
    expected = helpers.write_sweep(slurm, "sw", argvs, codes={5: 3})
    out = cli.ok("launch", "--backend", "slurm", "--jobname", "sw")
    chunks = Tasklist.range(1, 12).split_below(max_array_size() - 1)  # one array unless MaxArraySize <= 12
    assert [line.split("--array=")[1].split()[0] for line in out.stdout.splitlines()] == [str(c) for _, c in chunks]
    assert "--cpus-per-task=1" in out.stdout
    assert cli("wait", "--jobname", "sw", *WAIT).returncode == 1  # one task failed
    rows = cli.rows("--jobname", "sw")
    assert {r["task_id"]: (r["status"], r["exit"]) for r in rows} == {
        i: (("failed", 3) if i == 5 else ("done", 0)) for i in range(1, 13)}
    for i in range(1, 13):
        assert json.loads(helpers.task_output(slurm, "sw", "1", i)) == expected[i]
    assert helpers.starts(slurm, "sw", "1") == {i: 1 for i in range(1, 13)}
    assert len(submissions(helpers, slurm, "sw", "1")) == len(chunks)

    cli.ok("launch", "--backend", "slurm", "--jobname", "sw", "--tasklist", "failed")
    assert cli("wait", "--jobname", "sw", *WAIT).returncode == 1
    rows = cli.rows("--jobname", "sw", "--launch", "2")
    assert [(r["task_id"], r["status"], r["exit"]) for r in rows] == [(5, "failed", 3)]
    assert helpers.starts(slurm, "sw", "2") == {5: 1}
    assert json.loads(helpers.task_output(slurm, "sw", "2", 5)) == expected[5]


def test_cancel_tasklist_of_running_array(slurm, cli, helpers):
    helpers.write_commands(slurm, "cx", {i: "sleep 60" for i in range(1, 7)})
    cli.ok("launch", "--backend", "slurm", "--jobname", "cx", "--max-tasks", "2")
    job_id = submissions(helpers, slurm, "cx", "1")[0]["job_id"]
    try:
        helpers.wait_until(lambda: {1, 2} <= set(helpers.starts(slurm, "cx", "1")), 60, what="tasks 1, 2 to start")
        pid = int(helpers.read_start(slurm, "cx", "1", 1)[1])
        out = cli.ok("cancel", "--jobname", "cx", "--tasklist", "1,4")
        assert out.stdout == f"scancel '{job_id}_[1,4]'\n"
        helpers.wait_until(lambda: not helpers.alive(pid), 30, what="task 1 to be killed")
        helpers.wait_until(lambda: f"{job_id}_1" not in squeue_ids(job_id), 30, what="squeue to drop task 1")
        status = {r["task_id"]: r["status"] for r in cli.rows("--jobname", "cx")}
        assert status[1] == "cancelled" and status[4] == "cancelled"
        assert status[2] == "running"
        assert all(status[i] in ("pending", "running") for i in (3, 5, 6))
        assert f"{job_id}_2" in squeue_ids(job_id)
    finally:
        cli("cancel", "--jobname", "cx")
    helpers.wait_until(lambda: not squeue_ids(job_id), 30, what="the array to leave squeue")
    status = {r["task_id"]: r["status"] for r in cli.rows("--jobname", "cx")}
    assert set(status.values()) == {"cancelled"}


def test_0_1_3_cancel_by_job_id(slurm, cli, helpers):
    out = subprocess.run(["sbatch", "--parsable", "--hold", "--array=1-9", "-o", "/dev/null", "--wrap", "true"],
                         capture_output=True, text=True, check=True)
    job_id = out.stdout.strip().split(";")[0]
    try:
        result = cli.ok("cancel", "--backend", "slurm", "--jobid", job_id, "--tasklist", "1-3:1,5,8-9")
        assert result.stdout == f"scancel '{job_id}_[1-3,5,8-9]'\n"
        helpers.wait_until(lambda: squeue_ids(job_id) == {f"{job_id}_{i}" for i in (4, 6, 7)}, 20,
                           what="only tasks 4, 6, 7 to remain")
    finally:
        subprocess.run(["scancel", job_id])


def test_ids_beyond_max_array_size_run_through_offsets(slurm, cli, helpers):
    limit = max_array_size() - 1
    if limit >= 1010:
        pytest.skip(f"MaxArraySize is {limit + 1}: ids up to 1010 need no offset here")
    argvs = {i: [f"task {i}"] for i in range(1, 1101)}
    expected = helpers.write_sweep(slurm, "off", argvs)
    cli.ok("launch", "--backend", "slurm", "--jobname", "off", "--tasklist", "1000-1010")
    subs = submissions(helpers, slurm, "off", "1")
    assert [(s["offset"], s["array"]) for s in subs] == [
        (offset, str(chunk)) for offset, chunk in Tasklist.parse("1000-1010").split_below(limit)]
    assert len(subs) >= 2 and any(s["offset"] > 0 for s in subs)
    assert cli("wait", "--jobname", "off", *WAIT).returncode == 0
    assert helpers.starts(slurm, "off", "1") == {i: 1 for i in range(1000, 1011)}
    for i in range(1000, 1011):
        assert json.loads(helpers.task_output(slurm, "off", "1", i)) == expected[i]
    rows = cli.rows("--jobname", "off")
    assert {r["status"] for r in rows} == {"done"} and len(rows) == 11


def test_launch_wider_than_a_small_max_array_size(slurm, cli, helpers):
    size = max_array_size()
    if size > 20:
        pytest.skip(f"MaxArraySize is {size}; run with SLURM_MAX_ARRAY_SIZE=11 ci/start-slurm.sh for this test")
    expected = helpers.write_sweep(slurm, "wide", {i: [f"w{i}"] for i in range(1, 26)})
    cli.ok("launch", "--backend", "slurm", "--jobname", "wide")
    assert len(submissions(helpers, slurm, "wide", "1")) == math.ceil(25 / (size - 1))
    assert cli("wait", "--jobname", "wide", *WAIT).returncode == 0
    assert helpers.starts(slurm, "wide", "1") == {i: 1 for i in range(1, 26)}
    for i in range(1, 26):
        assert json.loads(helpers.task_output(slurm, "wide", "1", i)) == expected[i]


def test_tasks_per_node_runs_groups_in_one_allocation(slurm, cli, helpers):
    script = helpers.ECHO_ARGV.replace("import sys,json;", "import sys,json,os; "
                                       "print(os.environ['SLURM_ARRAY_TASK_ID'], file=sys.stderr);")
    expected = helpers.write_sweep(slurm, "grp", {i: [f"g{i}"] for i in range(1, 6)}, codes={4: 2}, script=script)
    out = cli.ok("launch", "--backend", "slurm", "--jobname", "grp", "--tasks-per-node", "2")
    assert "--array=1-3 " in out.stdout and "node.sh" in out.stdout
    assert cli("wait", "--jobname", "grp", *WAIT).returncode == 1
    status = {r["task_id"]: (r["status"], r["exit"]) for r in cli.rows("--jobname", "grp")}
    assert status == {i: (("failed", 2) if i == 4 else ("done", 0)) for i in range(1, 6)}
    for i in range(1, 6):
        assert json.loads(helpers.task_output(slurm, "grp", "1", i)) == expected[i]
    elements = {}
    for i in range(1, 6):
        with open(os.path.join(helpers.launch_dir(slurm, "grp", "1"), "logs", f"{i}.err")) as handle:
            elements[i] = int(handle.read())
    assert elements == {1: 1, 2: 1, 3: 2, 4: 2, 5: 3}  # array element g ran tasks 2g-1 and 2g
