"""Reruns on a real Slurm (ci/start-slurm.sh): the printed hint, run verbatim, reruns the
failed task's own command with the backend and every option of the last launch."""
from __future__ import annotations

import json
import os
import re
import shlex
import sys

import pytest

pytestmark = pytest.mark.slurm
WAIT = ("--timeout", "180", "--interval", "0.5", "--quiet")
SCRIPT = ("import sys; open(sys.argv[1],'a').write(sys.argv[2]+' '+sys.argv[3]+'\\n'); "
          "sys.exit(3 if sys.argv[3]=='2' else 0)")


def _meta(helpers, root, job, launch_id):
    with open(os.path.join(helpers.launch_dir(root, job, launch_id), "launch.json"), encoding="utf-8") as handle:
        return json.load(handle)


def test_printed_hint_reruns_the_old_command_with_the_same_options(slurm, cli, helpers):
    runs = os.path.join(str(slurm), "runs.txt")

    def prelaunch(version):
        helpers.write_commands(slurm, "rr", {i: shlex.join([sys.executable, "-c", SCRIPT, runs, version, str(i)])
                                             for i in (1, 2, 3)})

    prelaunch("old")
    options = ["--duration", "0-00:05:00", "--mem", "200M", "--partition", "debug", "--max-tasks", "2"]
    first = cli.ok("launch", "--backend", "slurm", "--jobname", "rr", *options)
    try:
        for word in ("-t 0-00:05:00", "-p debug", "--mem=200M", "%2 "):
            assert word in first.stdout, (word, first.stdout)
        waited = cli("wait", "--jobname", "rr", *WAIT)
        assert waited.returncode == 1, waited.stderr
        match = re.search(r"rerun with: (onager launch [^;\n]*)", waited.stderr)
        assert match, waited.stderr
        hint = shlex.split(match.group(1))
        assert hint == ["onager", "launch", "--jobname", "rr", "--tasklist", "failed"]
        prelaunch("new")  # a new prelaunch must not change what the rerun runs

        rerun = cli.ok(*hint[1:])
        assert "rerun on slurm with the options of rr/1" in rerun.stderr
        sbatch = rerun.stdout
        for word in ("-t 0-00:05:00", "-p debug", "--mem=200M", "--array=2%2 "):
            assert word in sbatch, (word, sbatch)  # every option of the first launch, given again
        assert cli("wait", "--jobname", "rr", *WAIT).returncode == 1
        again = _meta(helpers, slurm, "rr", "2")
        assert again["backend"] == "slurm" and again["options"] == _meta(helpers, slurm, "rr", "1")["options"]
        with open(runs, encoding="utf-8") as handle:
            lines = handle.read().splitlines()
        assert sorted(lines[:3]) == ["old 1", "old 2", "old 3"] and lines[3:] == ["old 2"]
        rows = cli.rows("--jobname", "rr", "--launch", "2")
        assert [(r["task_id"], r["status"]) for r in rows] == [(2, "failed")]
        with open(os.path.join(helpers.launch_dir(slurm, "rr", "2"), "tasks.sh"), encoding="utf-8") as handle:
            assert "ONAGER_PRIOR_ATTEMPTS=1\n" in handle.read()
    finally:
        for launch_id in ("1", "2"):  # nothing of ours stays queued, whatever failed above
            cli("cancel", "--jobname", "rr", "--launch", launch_id)
