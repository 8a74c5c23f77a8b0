"""Issue 12 item 1 on real engines: a value ending in a newline is a value, never shell code.

Each backend runs the same task records through the same wrapper; these tests check that
on Slurm, Grid Engine and ssh hosts the program gets the values as its argv, and that
`touch pwned` (the words after the newline) never runs.
"""
from __future__ import annotations

import json
import os
import sys

import pytest
from ssh_fixtures import engines_env, write_config

PRINT_ARGV = f"{sys.executable} -c 'import json,sys; print(json.dumps(sys.argv[1:]))'"
VALUES = ["a\n", "x\ny", "b\r\n"]
WAIT = ("--timeout", "120", "--interval", "0.5", "--quiet")


def _prelaunch(cli) -> None:
    cli.ok("prelaunch", "+jobname", "inj", "+command", PRINT_ARGV, "+pos-arg", *VALUES,
           "+arg", "touch", "+arg", "pwned")


def _check(root, helpers) -> None:
    assert not os.path.exists(os.path.join(str(root), "pwned"))
    for i, value in enumerate(VALUES, 1):
        assert json.loads(helpers.task_output(root, "inj", "1", i)) == [value, "touch", "pwned"]


@pytest.mark.slurm
def test_newline_values_on_slurm(slurm, cli, helpers):
    _prelaunch(cli)
    cli.ok("launch", "--backend", "slurm", "--jobname", "inj")
    assert cli("wait", "--jobname", "inj", *WAIT).returncode == 0
    _check(slurm, helpers)


@pytest.mark.sge
def test_newline_values_on_gridengine(sge, cli, helpers):
    _prelaunch(cli)
    cli.ok("launch", "--backend", "gridengine", "--jobname", "inj")
    assert cli("wait", "--jobname", "inj", *WAIT).returncode == 0
    _check(sge, helpers)


@pytest.mark.sshd
def test_newline_values_on_ssh_hosts(project, cli, helpers):
    env = engines_env()
    if not env.get("ONAGER_TEST_SSHD_A"):
        pytest.skip("needs the test sshd instance ONAGER_TEST_SSHD_A (run ci/start-engines.sh)")
    cfg = write_config(str(project / "ssh_config"), [env["ONAGER_TEST_SSHD_A"]])
    _prelaunch(cli)
    cli.ok("launch", "--backend", "ssh", "--jobname", "inj", "--hosts", "ci-sshd-a:2", "--ssh-config", cfg)
    _check(project, helpers)
