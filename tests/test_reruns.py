"""Reruns run what failed (issue 14, item 7): `--tasklist failed|unfinished|timeout,...` takes
each task as the launch it last ran in froze it, a rerun without --backend reuses the last
launch's backend and options, the printed hint is that short command, and each task record
carries its attempts in earlier launches."""
from __future__ import annotations

import json
import os
import re
import shlex
import sys
import time

import pytest
from support import run_onager

from onager import launch as launchmod
from onager.errors import UsageError
from onager.index import JobIndex, LaunchRecord
from onager.state import RERUN_FAILED, RERUN_UNFINISHED

# appends "<version> <arg>" to runs.txt (one line per run of the command), fails for arg 2
# (or for every arg when the file fail-all exists)
SCRIPT = "import sys; open('runs.txt','a').write(sys.argv[1]+' '+sys.argv[2]+'\\n'); " \
         "import os; sys.exit(3 if sys.argv[2]=='2' or os.path.exists('fail-all') else 0)"


def _prelaunch(onager, job: str, version: str, n: int = 3) -> None:
    command = f"{shlex.quote(sys.executable)} -c {shlex.quote(SCRIPT)} {version}"
    out = onager("prelaunch", "+jobname", job, "+command", command, "+pos-arg", *map(str, range(1, n + 1)), "+q")
    assert out.returncode == 0, out.stderr


def _runs(project) -> list[str]:
    path = project / "runs.txt"
    return path.read_text().splitlines() if path.exists() else []


def _meta(project, job: str, launch_id: str) -> dict:
    return json.loads((project / ".onager" / "launches" / job / launch_id / "launch.json").read_text())


def _launch_ids(project, job: str) -> list[str]:
    root = project / ".onager" / "launches" / job
    return sorted((p.name for p in root.iterdir() if p.name.isdigit()), key=int) if root.exists() else []


def _records(project, job: str, launch_id: str) -> dict[int, str]:
    """Each task's record in a launch's tasks.sh, by id."""
    text = (project / ".onager" / "launches" / job / launch_id / "tasks.sh").read_text()
    out: dict[int, str] = {}
    for record in re.split(r"(?m)^(?=ONAGER_TASK_ID=)", text):
        if record:
            out[int(record.split("\n", 1)[0].split("=")[1])] = record
    return out


def _hint(stderr: str) -> list[str]:
    """The rerun command onager printed, as words (without the leading `onager`)."""
    match = re.search(r"rerun (?:them )?with: (onager launch [^;\n]*)", stderr)
    assert match, stderr
    words = shlex.split(match.group(1))
    assert words[0] == "onager"
    return words[1:]


# ---------------------------------------------------------------- what a rerun runs
def test_rerun_runs_the_command_that_failed_not_todays_jobfile(onager, project):
    _prelaunch(onager, "r", "old")
    assert onager("launch", "--backend", "local", "--jobname", "r").returncode == 1
    assert sorted(_runs(project)) == ["old 1", "old 2", "old 3"]
    _prelaunch(onager, "r", "new")  # a new prelaunch changes every command

    out = onager("launch", "--backend", "local", "--jobname", "r", "--tasklist", "failed")
    assert out.returncode == 1, out.stderr
    assert _runs(project)[3:] == ["old 2"]           # the command task 2 failed with, once
    assert "as they ran in each task's last launch" in out.stderr
    assert _meta(project, "r", "2")["tasks_from"] == "launches"

    out = onager("launch", "--backend", "local", "--jobname", "r", "--tasklist", "failed", "--from-jobfile")
    assert out.returncode == 1, out.stderr
    assert _runs(project)[4:] == ["new 2"]           # today's jobfile, as asked, and said so
    assert "from today's jobfile" in out.stderr
    assert _meta(project, "r", "3")["tasks_from"] == "jobfile"
    rows = json.loads(onager("list", "--json", "--jobname", "r", "--launch", "3").stdout)
    assert [(r["task_id"], r["command"].split()[-2:]) for r in rows] == [(2, ["new", "2"])]


def test_a_command_launch_can_be_rerun(onager, project):
    command = f"{shlex.quote(sys.executable)} -c {shlex.quote(SCRIPT)} cmd 2"
    assert onager("launch", "--backend", "local", "--jobname", "c", "--command", command).returncode == 1
    out = onager("launch", "--backend", "local", "--jobname", "c", "--tasklist", "failed")
    assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr
    assert _runs(project) == ["cmd 2", "cmd 2"]
    assert _meta(project, "c", "2")["jobfile"] is None


def test_a_done_task_is_never_selected_by_a_status_word(onager, project):
    _prelaunch(onager, "d", "v")
    (project / "fail-all").write_text("")
    assert onager("launch", "--backend", "local", "--jobname", "d").returncode == 1
    (project / "fail-all").unlink()
    assert onager("launch", "--backend", "local", "--jobname", "d", "--tasklist", "1,3").returncode == 0
    # 1 and 3 are done in their latest launch (failed in an earlier one); only 2 is rerun
    out = onager("launch", "--backend", "local", "--jobname", "d", "--tasklist", "failed,cancelled")
    assert out.returncode == 1, out.stderr
    assert _runs(project)[5:] == ["v 2"]
    for words in ("unfinished,lost", "unfinished", "failed"):
        before = _runs(project)
        out = onager("launch", "--backend", "local", "--jobname", "d", "--tasklist", words)
        assert out.returncode == 1, out.stderr
        assert _runs(project)[len(before):] == ["v 2"], words


@pytest.mark.parametrize("words, why", [("done", "never rerun by status"), ("running", "never rerun by status"),
                                         ("bogus", "unknown status"), ("1,failed", "mixes task ids")])
def test_bad_status_words_are_one_line_and_change_nothing(onager, project, words, why):
    _prelaunch(onager, "b", "v")
    assert onager("launch", "--backend", "local", "--jobname", "b").returncode == 1
    listing = sorted(str(p.relative_to(project)) for p in (project / ".onager").rglob("*"))
    out = onager("launch", "--jobname", "b", "--tasklist", words)
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and why in out.stderr, out.stderr
    assert "Traceback" not in out.stderr
    assert sorted(str(p.relative_to(project)) for p in (project / ".onager").rglob("*")) == listing


def test_from_jobfile_with_command_is_refused(onager, project):
    _prelaunch(onager, "fc", "v")
    assert onager("launch", "--backend", "local", "--jobname", "fc").returncode == 1
    out = onager("launch", "--jobname", "fc", "--tasklist", "failed", "--from-jobfile", "--command", "true")
    assert out.returncode == 2 and "--from-jobfile" in out.stderr and out.stderr.count("\n") == 1
    assert _launch_ids(project, "fc") == ["1"]


def _fake_statuses(monkeypatch, tmp_path, statuses: dict[int, str]) -> None:
    record = LaunchRecord("s", "1", "local", str(tmp_path / "l1"), "1-9", 9, 0.0)
    monkeypatch.setattr(launchmod, "job_task_statuses",
                        lambda jobname, root=".": {i: (s, record) for i, s in statuses.items()})


def test_status_words_select_the_lifecycle_end_states(monkeypatch, tmp_path):
    statuses = {1: "timeout", 2: "oom", 3: "done", 4: "failed", 5: "preempted", 6: "cancelled", 7: "killed",
                8: "running", 9: "unknown"}
    _fake_statuses(monkeypatch, tmp_path, statuses)

    def chosen(spec: str) -> set[int]:
        selection, _ = launchmod.select("s", spec)
        assert isinstance(selection, set)
        return selection

    assert chosen("timeout,oom") == {1, 2}
    assert chosen(" Timeout , OOM ") == {1, 2}
    assert chosen("preempted") == {5}
    assert chosen("cancelled,killed") == {6, 7}
    assert chosen("failed") == {i for i, s in statuses.items() if s in RERUN_FAILED}
    assert chosen("unfinished") == {i for i, s in statuses.items() if s in RERUN_UNFINISHED}
    assert 3 not in chosen("unfinished,timeout,oom,failed") and 8 not in chosen("unfinished")
    with pytest.raises(UsageError, match="never rerun"):
        launchmod.select("s", "done,failed")


# ---------------------------------------------------------------- reuse and the hint
def _fake_venv(project):
    venv = project / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "activate").write_text("export RERUN_VENV=active\n")
    return venv


VENV_SCRIPT = "import os,sys; open('runs.txt','a').write(os.environ.get('RERUN_VENV','none')+' '+sys.argv[1]+'\\n');" \
              " sys.exit(3 if sys.argv[1]=='2' else 0)"


def test_the_printed_hints_rerun_with_the_same_backend_and_options(onager, project):
    venv = _fake_venv(project)
    command = f"{shlex.quote(sys.executable)} -c {shlex.quote(VENV_SCRIPT)}"
    assert onager("prelaunch", "+jobname", "h", "+command", command, "+pos-arg", "1", "2", "3", "+q").returncode == 0
    work = project / "work"
    work.mkdir()
    out = onager("launch", "--backend", "local", "--jobname", "h", "--max-tasks", "2", "--venv", str(venv),
                 "--workdir", str(work))
    assert out.returncode == 1
    hint = _hint(out.stderr)
    assert hint == ["launch", "--jobname", "h", "--tasklist", "failed"]

    rerun = run_onager(hint, cwd=str(project))            # verbatim
    assert rerun.returncode == 1, rerun.stderr
    assert "rerun on local with the options of h/1" in rerun.stderr
    first, second = _meta(project, "h", "1"), _meta(project, "h", "2")
    assert second["backend"] == "local" and second["options"] == first["options"] == {"max_tasks": 2}
    assert second["venv"] == first["venv"] == str(venv) and second["workdir"] == str(work)
    assert (work / "runs.txt").read_text().splitlines()[3:] == ["active 2"]  # in the venv, in the workdir

    waited = onager("wait", "--jobname", "h", "--quiet")
    assert waited.returncode == 1
    hint = _hint(waited.stderr)
    assert hint == ["launch", "--jobname", "h", "--tasklist", "failed"]
    # an option given now wins over the last launch's; the others stay
    again = run_onager([*hint, "--max-tasks", "1"], cwd=str(project))
    assert again.returncode == 1, again.stderr
    third = _meta(project, "h", "3")
    assert third["options"] == {"max_tasks": 1} and third["venv"] == str(venv) and third["workdir"] == str(work)
    assert (work / "runs.txt").read_text().splitlines()[4:] == ["active 2"]


def test_no_previous_launch_still_needs_backend(onager, project):
    _prelaunch(onager, "n", "v")
    out = onager("launch", "--jobname", "n", "--tasklist", "failed")
    assert out.returncode == 2 and "launch needs --backend" in out.stderr and out.stderr.count("\n") == 1
    assert _launch_ids(project, "n") == []


def test_a_scrubbed_secret_is_never_reused(project):
    launch_dir = project / ".onager" / "launches" / "sec" / "1"
    (launch_dir / "state").mkdir(parents=True)
    meta = {"backend": "slurm", "options": {"partition": "gpu", "extra": ["--comment", "token=REDACTED"]},
            "venv": None, "workdir": str(project)}
    (launch_dir / "launch.json").write_text(json.dumps(meta))
    JobIndex(str(project)).add(LaunchRecord("sec", "1", "slurm", str(launch_dir), "1", 1, time.time(), ["7"],
                                            meta["options"]))
    given = {"partition": None, "mem": None}
    with pytest.raises(UsageError, match="arguments after --"):
        launchmod.reuse_last_launch("sec", "failed", given, root=str(project))
    reused = launchmod.reuse_last_launch("sec", "failed", given, extra=["--comment", "token=abc"],
                                         root=str(project))  # given again: fine
    assert reused is not None and reused.backend == "slurm" and reused.extra == ["--comment", "token=abc"]
    assert reused.given == {"partition": "gpu", "mem": None}
    assert launchmod.reuse_last_launch("sec", "1-3", given, root=str(project)) is None  # ids: no reuse


# ---------------------------------------------------------------- hosts through a stand-in ssh
FAKE_SSH = r"""#!/bin/bash
# stand-in for ssh: runs the remote command here, in $FAKE_SSH_ROOT/<host> as its home
while [ $# -gt 0 ]; do case $1 in -F|-o|-p|-i|-l) shift 2;; -*) shift;; *) break;; esac; done
host=$1; shift
mkdir -p "$FAKE_SSH_ROOT/$host" && cd "$FAKE_SSH_ROOT/$host" || exit 255
HOME=$FAKE_SSH_ROOT/$host exec bash -c "$*"
"""


def test_the_hint_reruns_on_the_same_ssh_hosts(project, tmp_path_factory):
    bindir = tmp_path_factory.mktemp("fakebin")
    (bindir / "ssh").write_text(FAKE_SSH)
    (bindir / "ssh").chmod(0o755)
    hosts = tmp_path_factory.mktemp("hosts")
    env = {"PATH": f"{bindir}{os.pathsep}{os.environ['PATH']}", "FAKE_SSH_ROOT": str(hosts)}
    marker = project / "ran.txt"
    command = f"echo $(basename $HOME) >> {shlex.quote(str(marker))}; exit 3"
    out = run_onager(["launch", "--backend", "ssh", "--jobname", "s", "--command", command,
                      "--hosts", "hx:1", "--remote-dir", "/tmp/onager-rerun-test"], cwd=str(project), env=env)
    assert out.returncode == 1, out.stderr
    hint = _hint(out.stderr)
    assert hint == ["launch", "--jobname", "s", "--tasklist", "failed"]
    rerun = run_onager(hint, cwd=str(project), env=env)
    assert rerun.returncode == 1, rerun.stderr
    assert marker.read_text().split() == ["hx", "hx"]     # once per launch, on the same host
    assert _meta(project, "s", "2")["options"] == _meta(project, "s", "1")["options"]
    assert _meta(project, "s", "2")["options"]["hosts"] == "hx:1"


# ---------------------------------------------------------------- attempts in earlier launches
def test_records_carry_the_attempts_of_earlier_launches(onager, project):
    _prelaunch(onager, "a", "v")
    assert onager("launch", "--backend", "local", "--jobname", "a").returncode == 1
    assert all("ONAGER_PRIOR_ATTEMPTS" not in r for r in _records(project, "a", "1").values())
    assert onager("launch", "--backend", "local", "--jobname", "a", "--tasklist", "failed").returncode == 1
    assert "ONAGER_PRIOR_ATTEMPTS=1\n" in _records(project, "a", "2")[2]
    assert onager("launch", "--backend", "local", "--jobname", "a", "--tasklist", "2-3").returncode == 1
    records = _records(project, "a", "3")
    assert "ONAGER_PRIOR_ATTEMPTS=2\n" in records[2] and "ONAGER_PRIOR_ATTEMPTS=1\n" in records[3]
    assert launchmod.prior_attempts("a") == {1: 1, 2: 3, 3: 2}


def test_prior_attempts_reads_old_and_new_state_names(project):
    index = JobIndex(str(project))
    names = {
        "1": ["1.end@10.5@0@9.5",                                       # old: start renamed to its end
              "2.start@11.0", "2.end@12.0@1",                            # old: end written beside the start
              "3.start@20.0",                                            # still running (or lost)
              "4.cancel@5.0", "4.cancel", "4.lost@6.0@host-lost"],       # never started
        "2": ["2.start@30.0@2", "2.end@31.0@137@30.0@2@oom@oom-kill",    # new: the start name stays
              "2.start@32.0@3", "2.end@33.0@0@32.0@3@done@",
              "3.start@40.0@2", "3.dup@41.0@h:1@claimed",                 # a dup is not an attempt
              "5.end@50.0@0@49.0@1@done@", "junk", "x.start@1"],
    }
    for launch_id, files in names.items():
        state = project / ".onager" / "launches" / "p" / launch_id / "state"
        state.mkdir(parents=True)
        for name in files:
            (state / name).write_text("")
        index.add(LaunchRecord("p", launch_id, "local", str(state.parent), "1-5", 5, time.time()))
    assert launchmod.prior_attempts("p", str(project)) == {1: 1, 2: 3, 3: 2, 5: 1}
    assert launchmod.prior_attempts("other", str(project)) == {}
