"""Quoting and names (issue 12, items 1, 2, 9, 13): values reach the program byte for byte.

The property test builds a real launch directory (jobs.json -> tasks.sh/tasks.idx ->
wrapper.sh) and runs the wrapper with bash both ways a task is run: looked up by `dd`
(schedulers, ssh) and handed its record by a local pool (ONAGER_RECORD). A tiny program
prints its argv as hex of the bytes it received, compared with the UTF-8 of the text.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from support import ok, refused

from onager.errors import UsageError
from onager.jobfile import iter_jobfile
from onager.launch import write_tasks
from onager.sweep import Sweep, check_jobname, is_safe, param_value, quote
from onager.wrapper import INDEX_WIDTH, wrapper_text

PRINTER = "import json, os, sys\nprint(json.dumps([os.fsencode(a).hex() for a in sys.argv[1:]]))\n"

# any text a UTF-8 argv can hold: control characters included, NUL and lone surrogates not
TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=12)
NAME = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), min_size=1, max_size=8)


def _launch(base: str, sweep: Sweep) -> str:
    """A launch directory built as `onager launch` builds one: jobfile, records, index, wrapper."""
    jobfile = os.path.join(base, "jobs.json")
    sweep.write("q", jobfile)
    launch_dir = os.path.join(base, "launch")
    for sub in ("", "logs", "state"):
        os.makedirs(os.path.join(launch_dir, sub), exist_ok=True)
    write_tasks(launch_dir, iter_jobfile(jobfile))
    with open(os.path.join(launch_dir, "wrapper.sh"), "w", encoding="utf-8") as handle:
        handle.write(wrapper_text(launch_dir, "q", "1", base))
    return launch_dir


def _record(launch_dir: str, task_id: int) -> str:
    """The record a local pool hands the wrapper (as LocalBackend._record reads it)."""
    with open(os.path.join(launch_dir, "tasks.idx"), "rb") as handle:
        handle.seek((task_id - 1) * INDEX_WIDTH)
        offset, length = (int(f) for f in handle.read(INDEX_WIDTH).split())
    with open(os.path.join(launch_dir, "tasks.sh"), "rb") as handle:
        handle.seek(offset)
        return handle.read(length).decode("utf-8")


def _argv_run(launch_dir: str, task_id: int, pooled: bool) -> list[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ONAGER_")}
    if pooled:
        env["ONAGER_RECORD"] = _record(launch_dir, task_id)
    out = os.path.join(launch_dir, "logs", f"{task_id}.out")
    if os.path.exists(out):
        os.unlink(out)
    claim = os.path.join(launch_dir, "claims", str(task_id))
    if os.path.exists(claim):  # the same task is run twice here, once per way: not a duplicate
        os.unlink(claim)
    proc = subprocess.run(["bash", os.path.join(launch_dir, "wrapper.sh"), str(task_id)], env=env,
                          stdin=subprocess.DEVNULL, capture_output=True, timeout=60)
    with open(os.path.join(launch_dir, "logs", f"{task_id}.err"), "rb") as handle:
        err = handle.read()
    assert proc.returncode == 0, (proc.stderr, err)
    with open(out, "rb") as handle:
        return [bytes.fromhex(h) for h in json.loads(handle.read())]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(words=st.lists(TEXT, max_size=3), pos=TEXT, name=NAME, value=TEXT, flag=NAME, tag_name=NAME)
@example(words=[], pos="a\n", name="touch", value="pwned", flag="--f", tag_name="--tag")
@example(words=["x\ny"], pos="a\r\n", name="--lr\n", value="1\n; touch pwned", flag="-f\n", tag_name="--t\n")
def test_every_value_reaches_the_program_byte_for_byte(words, pos, name, value, flag, tag_name):
    with tempfile.TemporaryDirectory() as base:
        printer = os.path.join(base, "argv.py")
        with open(printer, "w") as handle:
            handle.write(PRINTER)
        command = " ".join(quote(w) for w in [sys.executable, printer, *words])
        sweep = Sweep(command).pos_arg([pos]).arg(name, [value]).flag(flag).tag(tag_name)
        tag = next(sweep.tasks("q")).tag
        launch_dir = _launch(base, sweep)
        expected = [t.encode("utf-8") for t in [*words, pos, name, value, flag, tag_name, tag]]
        assert _argv_run(launch_dir, 1, pooled=False) == expected
        assert _argv_run(launch_dir, 1, pooled=True) == expected
        assert not os.path.exists(os.path.join(base, "pwned"))


@pytest.mark.parametrize("value", ["a\n", "a\r\n", "x\ny", "a\n\n", "\n"])
def test_a_newline_value_does_not_run_as_shell_code(onager, project, value):
    ok(onager("prelaunch", "+jobname", "inj", "+command", "echo", "+pos-arg", value, "+arg", "touch", "+arg", "pwned"))
    ok(onager("launch", "--backend", "local", "--jobname", "inj"))
    assert not (project / "pwned").exists()
    with open(project / ".onager" / "launches" / "inj" / "1" / "logs" / "1.out", "rb") as handle:
        assert handle.read() == value.encode() + b" touch pwned\n"


@pytest.mark.parametrize("text", ["a\n", "a\r\n", "x\ny", "ok\n", "1\n"])
def test_quote_leaves_no_newline_unquoted(text):
    assert not is_safe(text)
    assert quote(text) != text


def test_plain_values_stay_as_typed():
    for text in ["0.1", "--lr", "a=b", "x/y.txt", "user@host:1,2", "+5"]:
        assert is_safe(text) and quote(text) == text


@pytest.mark.parametrize("name", ["nl\n", "x\r", "a\tb", "..", "../x", "a/b", "", ".x", "x\x1b", "\n"])
def test_bad_job_names_are_refused_with_one_line(onager, project, name):
    with pytest.raises(UsageError):
        check_jobname(name)
    line = refused(onager("prelaunch", "+jobname", name, "+command", "echo", "+arg", "--a", "1"), "job name")
    assert sorted(os.listdir(project)) == [], line


def test_scheduler_job_ids_and_times_take_the_whole_text():
    from onager.backends.array import duration_seconds, mem_megabytes
    from onager.backends.gridengine import GridEngineBackend
    from onager.backends.slurm import SlurmBackend
    for cls in (SlurmBackend, GridEngineBackend):
        with pytest.raises(UsageError):
            cls({}).cancel_job_commands("12\n", None)
        with pytest.raises(UsageError):
            cls({}).cancel_job_commands("١٢", None)
    for bad in ("٣٠", "30\n\n1"):
        with pytest.raises(UsageError):
            duration_seconds(bad)
    with pytest.raises(UsageError):
        mem_megabytes("٣G")


def test_a_state_name_holding_a_newline_does_not_read_as_two_names(tmp_path):
    from onager.state import read_states
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "3.end@5@0@4\n1.end@9@7@8").write_text("")
    (tmp_path / "state" / "2.end@5@0@4").write_text("")
    states = read_states(str(tmp_path))
    assert 1 not in states and 3 not in states
    assert states[2].exit_code == 0


# ------------------------------------------------------------------ item 2: bytes that are not UTF-8
BAD = os.fsdecode(b"\xff")


@pytest.mark.parametrize("args", [
    ["prelaunch", "+jobname", "x", "+command", BAD],
    ["prelaunch", "+jobname", "x", "+command", "echo", "+arg", "--a", "v" + BAD],
    ["prelaunch", "+jobname", "x", "+command", "echo", "+pos-arg", BAD + "é"],
    ["prelaunch", "+jobname", "x", "+command", "echo", "+flag", "--" + BAD],
    ["prelaunch", "+jobname", "x", "+command", "echo", "+tag", BAD],
    ["prelaunch", "+jobname", "x" + BAD, "+command", "echo"],
    ["launch", "--backend", "local", "--jobname", "x", "--command", "echo " + BAD],
    ["config", "--write", "local", "header", BAD],
    ["list", "--jobname", BAD],
])
def test_non_utf8_arguments_are_refused_with_one_line(onager, project, args):
    line = refused(onager(*args), "not UTF-8", r"b'")
    assert "\\xff" in line
    assert sorted(os.listdir(project)) == []


def test_non_utf8_file_names_from_files_are_refused(onager, project):
    (project / os.fsdecode(b"a\xff.txt")).write_text("")
    (project / "b.txt").write_text("")
    refused(onager("prelaunch", "+jobname", "x", "+command", "cat", "+pos-arg", "+files", "*.txt"), "not UTF-8")
    assert not (project / ".onager").exists()


def test_the_api_refuses_surrogates_before_writing(project):
    with pytest.raises(UsageError, match="not UTF-8"):
        Sweep("echo").arg("--a", ["\udcff"]).write("x")
    with pytest.raises(UsageError, match="not UTF-8"):
        Sweep("echo \ud800").write("x")
    assert not (project / ".onager").exists()


def test_a_jobfile_holding_a_surrogate_escape_is_one_error(onager, project):
    path = project / ".onager" / "scripts" / "x" / "jobs.json"
    path.parent.mkdir(parents=True)
    path.write_text('{"1": ["echo \\udcff", ""]}')
    result = onager("launch", "--backend", "local", "--jobname", "x")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1 and "not UTF-8" in result.stderr
    assert not (project / ".onager" / "launches" / "x" / "1").exists()


# ------------------------------------------------------------------ item 9: values as typed
@pytest.mark.parametrize("text, value", [
    ("007", "007"), ("1e5", "1e5"), ("٣", "٣"), ("0.10", "0.10"), ("+5", "+5"), ("1.", "1."),
    ("1e999", "1e999"), ("32", 32), ("-3", -3), ("0.1", 0.1), ("1e-05", 1e-05), ("abc", "abc"),
])
def test_param_value_keeps_the_text_typed(text, value):
    got = param_value(text)
    assert got == value and type(got) is type(value)
    assert (got if isinstance(got, str) else str(got) if isinstance(got, int) else repr(got)) == text


SHOW = ("import json, os, onager\n"
        "env = {k[13:]: v for k, v in os.environ.items() if k.startswith('ONAGER_PARAM_')}\n"
        "print(json.dumps([onager.params(), env], ensure_ascii=False, sort_keys=True))\n")


def test_params_and_env_give_values_as_typed_and_generated_numbers(onager, project):
    (project / "show.py").write_text(SHOW)
    ok(onager("prelaunch", "+jobname", "p", "+command", f"{sys.executable} show.py",
              "+arg", "--seed", "007", "+arg", "--x", "1e5", "+pos-arg", "٣", "+arg", "--lr", "0.1",
              "+arg", "--n", "+range", "2", "4", "+arg", "--w", "+linspace", "0", "1", "2", "+link",
              "+arg", "--e", "+logspace", "1e-4", "1e-1", "2", "+flag", "--amp"))
    jobs = json.loads((project / ".onager" / "scripts" / "p" / "jobs.json").read_text())
    expected = {"seed": "007", "x": "1e5", "pos1": "٣", "lr": 0.1, "n": 2, "w": 0.0, "e": 0.0001, "amp": True}
    assert jobs["1"][2] == expected
    ok(onager("launch", "--backend", "local", "--jobname", "p", "--tasklist", "1"))
    out = (project / ".onager" / "launches" / "p" / "1" / "logs" / "1.out").read_text(encoding="utf-8")
    params, env = json.loads(out)
    assert params == expected and type(params["n"]) is int
    assert env == {"SEED": "007", "X": "1e5", "POS1": "٣", "LR": "0.1", "N": "2", "W": "0.0", "E": "0.0001",
                   "AMP": "true"}


def test_params_from_the_environment_alone_keep_the_text_typed(monkeypatch, tmp_path):
    import onager
    for key in list(os.environ):
        if key.startswith("ONAGER_PARAM_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("ONAGER_LAUNCH_DIR", str(tmp_path / "elsewhere"))  # no tasks.jsonl here (ssh host)
    monkeypatch.setenv("ONAGER_TASK_ID", "1")
    for key, value in {"SEED": "007", "X": "1e5", "LR": "0.1", "N": "2", "AMP": "true", "OFF": "false"}.items():
        monkeypatch.setenv("ONAGER_PARAM_" + key, value)
    assert onager.params() == {"seed": "007", "x": "1e5", "lr": 0.1, "n": 2, "amp": True, "off": False}


# ------------------------------------------------------------------ item 13: stray words
@pytest.mark.parametrize("args, words", [
    (["+jobname", "x", "+command", "python", "train.py"],
     ["stray word train.py", "[+command] [python] [train.py]", "+command 'python train.py'"]),
    (["+jobname", "x", "+command=python", "train.py", "--lr", "1"],
     ["[+command=python] [train.py] [--lr] [1]", "+command 'python train.py --lr 1'"]),
    (["train.py", "+jobname", "x", "+command", "python"], ["stray word train.py", "before the first +option",
                                                           "[train.py]"]),
    (["+jobname", "x", "+command", "echo", "+flag", "--a", "--b"],
     ["[+flag] [--a] [--b]", "+flag --a +flag --b"]),
    (["+jobname", "x", "+command", "echo", "+append", "extra"], ["[+append] [extra]", "takes no value"]),
    (["+jobname", "x", "+command", "python", "my file.py"], ["[+command] [python] ['my file.py']",
                                                             "+command 'python my file.py'"]),
    (["+jobname", "x", "+command", "python", "a\nb"], ["$'a\\nb'", "+command $'python a\\nb'"]),
])
def test_stray_words_show_the_split_and_how_to_quote(onager, project, args, words):
    refused(onager("prelaunch", *args), *words)
    assert sorted(os.listdir(project)) == []


@pytest.mark.parametrize("args", [
    ["+jobname", "x", "+command", "python train.py", "+arg", "--name", "a", "b", "c"],
    ["+jobname", "x", "+command", "echo", "+pos-arg", "x", "y", "+tag-args", "--a", "+arg", "--a", "1", "+tag"],
    ["+command", "echo", "+jobname", "x", "+tag", "+arg", "--cuda", "+flag", "--v", "+q"],
])
def test_valid_lines_with_many_words_are_still_accepted(onager, project, args):
    ok(onager("prelaunch", *args))
