"""CLI habits: help everywhere, one-line errors with exit 2, no prompts, light startup."""
from __future__ import annotations

import importlib
import os
import subprocess
import sys

import pytest
from support import ROOT

import onager
from onager.cli import EXTRA_COMMANDS

CORE_COMMANDS = ["prelaunch", "launch", "list", "cancel", "wait", "logs", "config", "help"]


def _extra_commands():
    found = []
    for name, module in EXTRA_COMMANDS.items():
        try:
            importlib.import_module(module)
        except ImportError:
            continue
        found.append(name)
    return found


ALL_COMMANDS = CORE_COMMANDS + _extra_commands()


def refused(result, *words: str, code: int = 2) -> str:
    assert result.returncode == code, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout
    assert result.stderr.count("\n") == 1 and result.stderr.endswith("\n"), result.stderr
    assert result.stderr.startswith("onager: error: ")
    for word in words:
        assert word in result.stderr, result.stderr
    return result.stderr


def test_version(onager):
    result = onager("--version")
    assert result.returncode == 0
    assert result.stdout == f"onager {onager_version()}\n"


def onager_version() -> str:
    return onager.__version__


def test_top_help(onager):
    for flag in ("--help", "-h"):
        result = onager(flag)
        assert result.returncode == 0
        assert result.stdout.startswith("usage: onager")
        for command in ("prelaunch", "launch", "list", "cancel", "config", "help"):
            assert f"  {command} " in result.stdout


def test_no_arguments_prints_usage_and_fails(onager):
    result = onager()
    assert result.returncode == 2
    assert "usage: onager" in result.stdout
    assert "Traceback" not in result.stderr


def test_help_command(onager):
    result = onager("help")
    assert result.returncode == 0, result.stderr
    for command in CORE_COMMANDS:
        assert command in result.stdout


def test_help_launch(onager):
    result = onager("help", "launch")
    assert result.returncode == 0, result.stderr
    assert "usage: onager launch" in result.stdout
    for option in ("--backend", "--jobname", "--tasklist", "--max-tasks", "--tasks-per-node",
                   "--max-tasks-per-node", "--dry-run"):
        assert option in result.stdout


def test_help_prelaunch(onager):
    result = onager("help", "prelaunch")
    assert result.returncode == 0, result.stderr
    assert "usage: onager prelaunch" in result.stdout
    for option in ("+command", "+jobname", "+jobfile", "+arg", "+pos-arg", "+flag", "+tag", "+tag-args",
                   "+no-tag-number", "+append", "+quiet", "++"):
        assert option in result.stdout


def test_help_unknown_topic(onager):
    refused(onager("help", "nosuch"), "nosuch")


@pytest.mark.parametrize("flag", ["--help", "-h"])
@pytest.mark.parametrize("command", ALL_COMMANDS)
def test_every_command_has_help(onager, project, command, flag):
    result = onager(command, flag)
    assert result.returncode == 0, result.stderr
    assert f"usage: onager {command}" in result.stdout or (command == "help" and "usage: onager" in result.stdout)
    assert result.stderr == ""
    assert os.listdir(project) == []  # help writes nothing


@pytest.mark.parametrize("command", ALL_COMMANDS)
def test_help_topic_for_every_command(onager, command):
    result = onager("help", command)
    assert result.returncode == 0, result.stderr
    assert "usage: onager" in result.stdout


@pytest.mark.parametrize("argv, words", [
    (["bogus"], ["bogus"]),
    (["launch"], ["--jobname"]),
    (["launch", "--jobname", "x"], ["--backend"]),
    (["launch", "--backend", "nope", "--jobname", "x"], ["nope", "slurm"]),
    (["launch", "--backend", "local", "--jobname", "missing"], ["prelaunch"]),
    (["launch", "--backend", "local", "--jobname", "x", "--cpus", "many"], ["--cpus", "many"]),
    (["logs", "x", "notanumber"], ["notanumber"]),
    (["logs", "nosuch", "1"], ["nosuch"]),
    (["wait", "--jobname", "nosuch"], ["nosuch"]),
    (["cancel", "--backend", "slurm", "--jobid", "1", "--tasklist", "1;echo x", "--dry-run"], ["'1;echo x'"]),
    (["prelaunch", "+bogus"], ["+bogus"]),
    (["prelaunch"], ["+command"]),
    (["config", "--write", "nope", "header", "x"], ["nope"]),
])
def test_errors_are_one_line_exit_2(onager, project, argv, words):
    refused(onager(*argv), *words)
    assert not (project / ".onager" / "index.jsonl").exists()


@pytest.mark.parametrize("tasklist", ["1-", "a-b", "5-3", "1-3:0", "0", "1,,2", "1;echo INJECTED"])
def test_bad_tasklists_at_launch_are_refused_before_anything_is_written(onager, project, tasklist):
    result = onager("prelaunch", "+jobname", "t", "+command", "echo", "+arg", "--a", "1", "2", "+q")
    assert result.returncode == 0
    before = sorted(os.listdir(project / ".onager"))
    line = refused(onager("launch", "--backend", "local", "--jobname", "t", "--tasklist", tasklist), "tasklist")
    assert "INJECTED" not in line.replace(repr(tasklist), "")
    assert sorted(os.listdir(project / ".onager")) == before
    refused(onager("launch", "--backend", "slurm", "--jobname", "t", "--tasklist", tasklist, "--dry-run"),
            "tasklist")


def test_bad_tasklist_for_list_with_launches(onager, project):
    assert onager("prelaunch", "+jobname", "t", "+command", "true", "+arg", "--a", "1", "+q").returncode == 0
    assert onager("launch", "--backend", "local", "--jobname", "t", "-q").returncode == 0
    refused(onager("list", "--tasklist", "1-"), "'1-'")


def test_bad_tasklist_for_list_without_launches(onager, project):
    refused(onager("list", "--tasklist", "1-"), "'1-'")


# ------------------------------------------------------------- no prompts
def _run_closed_stdin(args, cwd) -> subprocess.CompletedProcess:
    """stdin not just empty but closed (fd 0 missing), as under cron or nohup < &-."""
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    command = " ".join([sys.executable, "-m", "onager"] + [f"'{a}'" for a in args]) + " 0<&-"
    return subprocess.run(["bash", "-c", command], cwd=str(cwd), capture_output=True, text=True, env=env,
                          timeout=120)


def test_never_prompts_with_stdin_closed(project):
    result = _run_closed_stdin(["prelaunch", "+jobname", "np", "+command", "echo hi > out.txt", "+q"], project)
    assert result.returncode == 0, result.stderr
    assert (project / ".onager" / ".gitignore").read_text() == "*\n"  # 0.1.3 asked about .gitignore
    result = _run_closed_stdin(["launch", "--backend", "local", "--jobname", "np", "-q"], project)
    assert result.returncode == 0, result.stderr
    assert (project / "out.txt").read_text() == "hi\n"
    for args in (["list"], ["config", "--read"], ["cancel", "--jobname", "np"]):
        result = _run_closed_stdin(args, project)
        assert "Traceback" not in result.stderr, args
        assert result.returncode in (0, 1, 2), args


def test_gitignore_is_created_for_launches_too(onager, project):
    os.makedirs(project / "sub")
    path = project / "jobs.json"
    path.write_text('{"1": ["true", ""]}')
    result = onager("launch", "--backend", "local", "--jobname", "j", "--jobfile", str(path), "-q")
    assert result.returncode == 0, result.stderr
    assert (project / ".onager" / ".gitignore").read_text() == "*\n"


# ---------------------------------------------------------------- startup
LIGHT = """
import contextlib, io, sys
from onager.cli import main
with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
    code = main(sys.argv[1:])
print(code)
print("\\n".join(sorted(sys.modules)))
"""


def _imported(project, *args: str):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    result = subprocess.run([sys.executable, "-c", LIGHT, *args], cwd=str(project), capture_output=True,
                            text=True, env=env, timeout=60)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    return int(lines[0]), set(lines[1:])


HEAVY = ["tabulate", "onager.launch", "onager.backends", "onager.listing", "onager.status", "subprocess",
         "configparser", "onager.sweep"]


@pytest.mark.parametrize("args", [["--help"], ["--version"], ["-h"]])
def test_help_and_version_import_nothing_heavy(project, args):
    code, modules = _imported(project, *args)
    assert code == 0
    assert "onager.cli" in modules
    for name in HEAVY:
        assert name not in modules, f"{' '.join(args)} imported {name}"


def test_prelaunch_does_not_import_launch_machinery(project):
    code, modules = _imported(project, "prelaunch", "+jobname", "p", "+command", "echo", "+arg", "--a", "1",
                              "+dry-run")
    assert code == 0
    for name in ("tabulate", "onager.launch", "onager.backends", "onager.listing", "onager.status"):
        assert name not in modules, name


def test_importtime_of_help(project):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    result = subprocess.run([sys.executable, "-X", "importtime", "-m", "onager", "--help"], cwd=str(project),
                            capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 0
    names = {line.split("|")[-1].strip() for line in result.stderr.splitlines() if line.startswith("import time:")}
    assert "onager.cli" in names
    assert "tabulate" not in names and "onager.launch" not in names
