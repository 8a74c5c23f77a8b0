"""Issue 16, item 4: one habit for the job name (positional or --jobname), `help` as `--help`,
and "did you mean" for a mistyped option, one line, exit 2."""
from __future__ import annotations

import json
import os

import pytest
from support import ok, refused


@pytest.fixture
def launched(onager):
    ok(onager("prelaunch", "+jobname", "exp1", "+command", "python3 -c 'import sys; print(sys.argv[1:])'",
              "+arg", "--lr", "1", "2", "+tag"))
    ok(onager("launch", "--backend", "local", "--jobname", "exp1"))
    return onager


@pytest.mark.parametrize("argv", [
    ["list"], ["list", "--hide", "elapsed"], ["results"], ["wait"], ["show"], ["logs", "{job}", "2"],
    ["report", "-o", "r.html"], ["clean", "--dry-run"],
])
def test_job_positionally_or_as_jobname(launched, project, argv):
    def call(form: str):
        words = [w.replace("{job}", "") for w in argv]
        if form == "positional":
            words = [words[0], "exp1"] + [w for w in words[1:] if w]
        else:
            words = [words[0], "--jobname", "exp1"] + [w for w in words[1:] if w]
        return launched(*words)
    by_position, by_option = call("positional"), call("option")
    assert by_position.returncode == 0, by_position.stderr
    assert by_option.returncode == by_position.returncode, by_option.stderr
    if argv[0] != "report":
        assert by_option.stdout == by_position.stdout
    if argv[0] == "logs":
        assert "'--lr', '2'" in by_position.stdout


def test_launch_and_cancel_take_the_job_positionally(launched):
    ok(launched("launch", "exp1", "--backend", "local", "--tasklist", "1"))
    result = launched("cancel", "exp1")
    assert result.returncode == 0, result.stderr
    assert "exp1/2" in result.stderr
    listed = json.loads(launched("list", "exp1", "--json").stdout)
    assert {row["launch"] for row in listed} == {"1", "2"}


def test_two_different_job_names_are_refused(launched):
    refused(launched("list", "exp1", "--jobname", "other"), "two job names", "'exp1'", "'other'")


def test_missing_job_says_both_ways(launched, project):
    before = sorted(os.listdir(project))
    refused(launched("report"), "onager report JOB", "--jobname JOB")
    refused(launched("logs", "3"), "logs needs a job")
    assert sorted(os.listdir(project)) == before


@pytest.mark.parametrize("argv, wrong, right", [
    (["list", "--jobnme", "exp1"], "--jobnme", "--jobname"),
    (["launch", "--backend", "local", "--jobnme", "exp1"], "--jobnme", "--jobname"),
    (["results", "exp1", "--sotr", "lr"], "--sotr", "--sort"),
    (["logs", "exp1", "1", "--folow"], "--folow", "--follow"),
    (["report", "exp1", "--metrc", "x"], "--metrc", "--metric"),
    (["--verison"], "--verison", "--version"),
])
def test_option_typos_get_did_you_mean(launched, project, argv, wrong, right):
    before = sorted(os.listdir(project))
    line = refused(launched(*argv))
    assert line == f"onager: error: unknown option {wrong}; did you mean {right}?\n"
    assert sorted(os.listdir(project)) == before


def test_unknown_option_without_a_close_one(launched):
    refused(launched("list", "--zzzzzzzz"), "unknown option --zzzzzzzz", "onager list --help")


def test_abbreviations_and_values_with_spaces_still_work(launched):
    assert launched("list", "--jobn", "exp1").returncode == 0
    assert launched("list", "--summ").returncode == 0


@pytest.mark.parametrize("argv", [["help"], ["--help"], ["-h"]])
def test_help_and_dash_help_print_the_same(onager, argv):
    result = onager(*argv)
    assert result.returncode == 0
    assert result.stdout == onager("--help").stdout
    assert "report" in result.stdout


def test_the_job_argument_is_no_launch_option(launched, project):
    """JOB and --jobname name the job; neither may leak into the options a launch records."""
    ok(launched("launch", "exp1", "--backend", "local", "--tasklist", "1"))
    with open(project / ".onager" / "index.jsonl", encoding="utf-8") as handle:
        records = [json.loads(line) for line in handle]
    for record in records:
        assert not {"job", "job_required"} & set(record["options"]), record["options"]
    shown = launched("show", "exp1")
    assert "job=" not in shown.stdout and "job_required" not in shown.stdout
