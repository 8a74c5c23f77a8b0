"""0.1.3 launch command lines on the real engines (ci/start-slurm.sh, ci/start-sge.sh).

The CI SGE has PE `smp`, the standard `vf` (virtual_free) complex and 2 slots; the CI
Slurm has one 2-CPU node in partition `debug`. A request that grew with --tasks-per-node
(T x T on SGE, T x on Slurm) cannot be met there, so these runs also prove its size.
"""
from __future__ import annotations

import json
import os

import pytest

WAIT = ("--timeout", "120", "--interval", "0.5", "--quiet")


def indexed(root) -> list:
    path = os.path.join(str(root), ".onager", "index.jsonl")
    if not os.path.exists(path):
        return []
    with open(path) as handle:
        return [json.loads(line) for line in handle if line.strip()]


def run_to_done(cli, jobname: str, count: int) -> None:
    assert cli("wait", "--jobname", jobname, *WAIT).returncode == 0
    assert {r["task_id"]: r["status"] for r in cli.rows("--jobname", jobname)} == {
        i: "done" for i in range(1, count + 1)}


@pytest.mark.sge
def test_gridengine_0_1_3_line_with_nothing_configured(sge, cli, helpers):
    """`--tasks-per-node 2 --cpus 2 --mem 1`: 0.1.3's `-pe smp 2 -l vf=1G`, which fits in 2 slots."""
    helpers.write_commands(sge, "ge13", {i: "true" for i in range(1, 5)})
    out = cli.ok("launch", "--backend", "gridengine", "--jobname", "ge13", "--tasks-per-node", "2",
                 "--cpus", "2", "--mem", "1", "--duration", "00:05:00")
    assert " -pe smp 2 -l vf=1G " in out.stdout and out.stdout.count("qsub ") == 1
    run_to_done(cli, "ge13", 4)


@pytest.mark.sge
def test_gridengine_per_task_sizes(sge, cli, helpers):
    helpers.write_commands(sge, "gept", {i: "true" for i in range(1, 5)})
    out = cli.ok("launch", "--backend", "gridengine", "--jobname", "gept", "--tasks-per-node", "2",
                 "--cpus-per-task", "1", "--mem-per-task", "256M", "--duration", "00:05:00")
    assert " -pe smp 2 -l vf=256M " in out.stdout
    run_to_done(cli, "gept", 4)


@pytest.mark.sge
def test_gridengine_test_flag(sge, cli, helpers):
    """`--test` asks 0.1.3's `-l test`; this SGE has no such resource, and says so; `--queue` wins."""
    helpers.write_commands(sge, "get", {1: "true"})
    refused = cli("launch", "--backend", "gridengine", "--jobname", "get", "--test")
    assert refused.returncode == 1 and 'unknown resource "test"' in refused.stderr
    assert indexed(sge) == []
    out = cli.ok("launch", "--backend", "gridengine", "--jobname", "get", "--test", "--queue", "all.q")
    assert " -l h_rt=0:10:00 " in out.stdout and " -q all.q " in out.stdout
    run_to_done(cli, "get", 1)


@pytest.mark.slurm
def test_slurm_0_1_3_tasks_per_node_line_fits_one_node(slurm, cli, helpers):
    """`--tasks-per-node 2 --cpus 2`: 2 CPUs for the pair (it asked 4 on a 2-CPU node before)."""
    helpers.write_commands(slurm, "sl13", {i: "true" for i in range(1, 5)})
    out = cli.ok("launch", "--backend", "slurm", "--jobname", "sl13", "--tasks-per-node", "2", "--cpus", "2",
                 "--mem", "1")
    assert " --cpus-per-task=2 --mem=1G " in out.stdout
    run_to_done(cli, "sl13", 4)


@pytest.mark.slurm
def test_slurm_debug_runs_in_the_debug_partition(slurm, cli, helpers):
    helpers.write_commands(slurm, "sld", {i: "true" for i in range(1, 3)})
    refused = cli("launch", "--backend", "slurm", "--jobname", "sld", "--debug", "--duration", "03:00:00")
    assert refused.returncode == 2 and "at most 2:00:00" in refused.stderr
    out = cli.ok("launch", "--backend", "slurm", "--jobname", "sld", "--debug")
    assert " -p debug " in out.stdout
    run_to_done(cli, "sld", 2)
