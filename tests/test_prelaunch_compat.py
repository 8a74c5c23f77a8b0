"""`onager prelaunch` against onager 0.1.3: the README's and the measured examples, byte for byte.

Every example runs through the real CLI (stdout must be exactly the commands, one per line)
and the jobfile it writes is checked as 0.1.3 readers would read it (`json.load`).
"""
from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time

import pytest
from support import ROOT, ok, refused

EXPERIMENT1 = """\
myscript --learningrate 0.1 --batchsize 32 --mytag experiment1_1__learningrate_0.1__batchsize_32
myscript --learningrate 0.01 --batchsize 32 --mytag experiment1_2__learningrate_0.01__batchsize_32
myscript --learningrate 0.001 --batchsize 32 --mytag experiment1_3__learningrate_0.001__batchsize_32
myscript --learningrate 0.1 --batchsize 64 --mytag experiment1_4__learningrate_0.1__batchsize_64
myscript --learningrate 0.01 --batchsize 64 --mytag experiment1_5__learningrate_0.01__batchsize_64
myscript --learningrate 0.001 --batchsize 64 --mytag experiment1_6__learningrate_0.001__batchsize_64
myscript --learningrate 0.1 --batchsize 128 --mytag experiment1_7__learningrate_0.1__batchsize_128
myscript --learningrate 0.01 --batchsize 128 --mytag experiment1_8__learningrate_0.01__batchsize_128
myscript --learningrate 0.001 --batchsize 128 --mytag experiment1_9__learningrate_0.001__batchsize_128
"""

MNIST = """\
python mnist.py --epochs 1 --gamma 0.7 --no-cuda --lr 0.3 --batch-size 32 --seed 0 --run-tag mnist_lr_bs_01__lr_0.3__batchsize_32__seed_0
python mnist.py --epochs 1 --gamma 0.7 --no-cuda --lr 1.0 --batch-size 32 --seed 0 --run-tag mnist_lr_bs_02__lr_1.0__batchsize_32__seed_0
python mnist.py --epochs 1 --gamma 0.7 --no-cuda --lr 3.0 --batch-size 32 --seed 0 --run-tag mnist_lr_bs_03__lr_3.0__batchsize_32__seed_0
python mnist.py --epochs 1 --gamma 0.7 --no-cuda --lr 0.3 --batch-size 64 --seed 0 --run-tag mnist_lr_bs_04__lr_0.3__batchsize_64__seed_0
python mnist.py --epochs 1 --gamma 0.7 --no-cuda --lr 1.0 --batch-size 64 --seed 0 --run-tag mnist_lr_bs_05__lr_1.0__batchsize_64__seed_0
python mnist.py --epochs 1 --gamma 0.7 --no-cuda --lr 3.0 --batch-size 64 --seed 0 --run-tag mnist_lr_bs_06__lr_3.0__batchsize_64__seed_0
python mnist.py --epochs 1 --gamma 0.7 --no-cuda --lr 0.3 --batch-size 32 --seed 1 --run-tag mnist_lr_bs_07__lr_0.3__batchsize_32__seed_1
python mnist.py --epochs 1 --gamma 0.7 --no-cuda --lr 1.0 --batch-size 32 --seed 1 --run-tag mnist_lr_bs_08__lr_1.0__batchsize_32__seed_1
python mnist.py --epochs 1 --gamma 0.7 --no-cuda --lr 3.0 --batch-size 32 --seed 1 --run-tag mnist_lr_bs_09__lr_3.0__batchsize_32__seed_1
python mnist.py --epochs 1 --gamma 0.7 --no-cuda --lr 0.3 --batch-size 64 --seed 1 --run-tag mnist_lr_bs_10__lr_0.3__batchsize_64__seed_1
python mnist.py --epochs 1 --gamma 0.7 --no-cuda --lr 1.0 --batch-size 64 --seed 1 --run-tag mnist_lr_bs_11__lr_1.0__batchsize_64__seed_1
python mnist.py --epochs 1 --gamma 0.7 --no-cuda --lr 3.0 --batch-size 64 --seed 1 --run-tag mnist_lr_bs_12__lr_3.0__batchsize_64__seed_1
python mnist.py --epochs 1 --gamma 0.7 --no-cuda --lr 0.3 --batch-size 32 --seed 2 --run-tag mnist_lr_bs_13__lr_0.3__batchsize_32__seed_2
python mnist.py --epochs 1 --gamma 0.7 --no-cuda --lr 1.0 --batch-size 32 --seed 2 --run-tag mnist_lr_bs_14__lr_1.0__batchsize_32__seed_2
python mnist.py --epochs 1 --gamma 0.7 --no-cuda --lr 3.0 --batch-size 32 --seed 2 --run-tag mnist_lr_bs_15__lr_3.0__batchsize_32__seed_2
python mnist.py --epochs 1 --gamma 0.7 --no-cuda --lr 0.3 --batch-size 64 --seed 2 --run-tag mnist_lr_bs_16__lr_0.3__batchsize_64__seed_2
python mnist.py --epochs 1 --gamma 0.7 --no-cuda --lr 1.0 --batch-size 64 --seed 2 --run-tag mnist_lr_bs_17__lr_1.0__batchsize_64__seed_2
python mnist.py --epochs 1 --gamma 0.7 --no-cuda --lr 3.0 --batch-size 64 --seed 2 --run-tag mnist_lr_bs_18__lr_3.0__batchsize_64__seed_2
"""


def jobs(project, name: str) -> dict:
    """jobs.json read the way 0.1.3 read it: one json.load of the whole file."""
    with open(project / ".onager" / "scripts" / name / "jobs.json", encoding="utf-8") as handle:
        return json.load(handle)


def check_jobfile_matches(project, name: str, stdout: str) -> dict:
    data = jobs(project, name)
    lines = stdout.splitlines()
    assert list(data) == [str(i) for i in range(1, len(lines) + 1)]
    for i, line in enumerate(lines, 1):
        entry = data[str(i)]
        assert isinstance(entry, list) and len(entry) >= 2
        assert entry[0] == line
        assert isinstance(entry[1], str)
        if entry[1]:
            assert line.endswith(" " + entry[1])  # the tag is the last word of the command
    return data


# ----------------------------------------------------------- README examples
def test_readme_experiment1(onager, project):
    result = onager("prelaunch", "+jobname", "experiment1", "+command", "myscript", "+arg", "--learningrate",
                    "0.1", "0.01", "0.001", "+arg", "--batchsize", "32", "64", "128", "+tag", "--mytag")
    assert ok(result) == EXPERIMENT1
    data = check_jobfile_matches(project, "experiment1", EXPERIMENT1)
    assert data["1"][:2] == ["myscript --learningrate 0.1 --batchsize 32 --mytag experiment1_1__learningrate_0.1__batchsize_32",
                             "experiment1_1__learningrate_0.1__batchsize_32"]
    assert (project / ".onager" / ".gitignore").read_text() == "*\n"


def test_readme_mnist(onager, project):
    # `--seed {0..2}` is expanded by the user's shell to 0 1 2
    result = onager("prelaunch", "+command", "python mnist.py --epochs 1 --gamma 0.7 --no-cuda", "+jobname",
                    "mnist_lr_bs", "+arg", "--lr", "0.3", "1.0", "3.0", "+arg", "--batch-size", "32", "64",
                    "+arg", "--seed", "0", "1", "2", "+tag", "--run-tag")
    assert ok(result) == MNIST
    data = check_jobfile_matches(project, "mnist_lr_bs", MNIST)
    assert data["18"][1] == "mnist_lr_bs_18__lr_3.0__batchsize_64__seed_2"
    assert os.path.exists(project / ".onager/scripts/mnist_lr_bs/jobs.json")


def test_readme_local_example(onager, project):
    values = [str(i) for i in range(1, 11)]  # {1..10}
    out = ok(onager("prelaunch", "+jobname", "experiment1", "+command", "./myscript", "+pos-arg", *values, "+tag"))
    lines = out.splitlines()
    assert len(lines) == 10
    assert lines[0] == "./myscript 1 --tag experiment1_01__1"
    assert lines[8] == "./myscript 9 --tag experiment1_09__9"
    assert lines[9] == "./myscript 10 --tag experiment1_10__10"
    check_jobfile_matches(project, "experiment1", out)


def test_readme_eqw_example(onager, project):
    values = [f"{i:04d}" for i in range(1, 1001)]  # {0001..1000}
    out = ok(onager("prelaunch", "+command", "./myscript", "+pos-arg", *values, "+tag", "+jobname", "test-eqw"))
    lines = out.splitlines()
    assert len(lines) == 1000
    assert lines[0] == "./myscript 0001 --tag test-eqw_0001__0001"
    assert lines[1] == "./myscript 0002 --tag test-eqw_0002__0002"
    assert lines[998] == "./myscript 0999 --tag test-eqw_0999__0999"
    assert lines[-1] == "./myscript 1000 --tag test-eqw_1000__1000"
    data = check_jobfile_matches(project, "test-eqw", out)
    assert data["57"][1] == "test-eqw_0057__0057"


# --------------------------------------------------------- measured examples
def test_posflag_example(onager, project):
    out = ok(onager("prelaunch", "+jobname", "posflag", "+command", "./myscript", "+pos-arg", "0.5", "1.0",
                    "+pos-arg", "a", "b", "+flag", "--verbose", "+flag", "--no-cuda", "+arg", "--seed", "1", "2",
                    "+tag"))
    lines = out.splitlines()
    assert len(lines) == 32
    assert lines[0] == "./myscript 0.5 a --seed 1 --verbose --no-cuda --tag posflag_01__0.5__a__seed_1__+verbose__+nocuda"
    assert lines[1] == "./myscript 1.0 a --seed 1 --verbose --no-cuda --tag posflag_02__1.0__a__seed_1__+verbose__+nocuda"
    assert lines[2] == "./myscript 0.5 b --seed 1 --verbose --no-cuda --tag posflag_03__0.5__b__seed_1__+verbose__+nocuda"
    assert lines[8] == "./myscript 0.5 a --seed 1 --no-cuda --tag posflag_09__0.5__a__seed_1__-verbose__+nocuda"
    assert lines[31] == "./myscript 1.0 b --seed 2 --tag posflag_32__1.0__b__seed_2__-verbose__-nocuda"
    # the whole order, written from the rules: first dimension fastest, flags outermost,
    # "with" before "without", the first flag faster than the second
    expected = []
    for cuda in (True, False):
        for verbose in (True, False):
            for seed in ("1", "2"):
                for p2 in ("a", "b"):
                    for p1 in ("0.5", "1.0"):
                        n = len(expected) + 1
                        cmd = f"./myscript {p1} {p2} --seed {seed}"
                        cmd += " --verbose" if verbose else ""
                        cmd += " --no-cuda" if cuda else ""
                        tag = (f"posflag_{n:02d}__{p1}__{p2}__seed_{seed}__{'+' if verbose else '-'}verbose"
                               f"__{'+' if cuda else '-'}nocuda")
                        expected.append(f"{cmd} --tag {tag}")
    assert lines == expected
    check_jobfile_matches(project, "posflag", out)


def test_pad_example_with_tag_args(onager, project):
    out = ok(onager("prelaunch", "+jobname", "pad", "+command", "echo", "+arg", "--lr", *map(str, range(1, 11)),
                    "+arg", "--seed", "0", "+tag", "--run-tag", "+tag-args", "--seed"))
    lines = out.splitlines()
    assert lines[0] == "echo --lr 1 --seed 0 --run-tag pad_01__seed_0"
    assert lines[-1] == "echo --lr 10 --seed 0 --run-tag pad_10__seed_0"
    assert lines == [f"echo --lr {i} --seed 0 --run-tag pad_{i:02d}__seed_0" for i in range(1, 11)]
    assert jobs(project, "pad")["10"][1] == "pad_10__seed_0"


def test_nonum_example(onager, project):
    out = ok(onager("prelaunch", "+jobname", "nonum", "+command", "echo", "+arg", "--lr", "1", "2", "+tag",
                    "+no-tag-number"))
    assert out == "echo --lr 1 --tag nonum__lr_1\necho --lr 2 --tag nonum__lr_2\n"
    assert jobs(project, "nonum")["2"][:2] == ["echo --lr 2 --tag nonum__lr_2", "nonum__lr_2"]


def test_untagged_jobfile_has_empty_tags(onager, project):
    out = ok(onager("prelaunch", "+jobname", "plain", "+command", "echo", "+arg", "--lr", "1", "2"))
    assert out == "echo --lr 1\necho --lr 2\n"
    data = jobs(project, "plain")
    assert data["1"][:2] == ["echo --lr 1", ""]


# ---------------------------------------------------------------- the rules
def test_layout_ignores_the_order_options_are_typed_in(onager):
    out = ok(onager("prelaunch", "+tag", "+flag", "--f", "+arg", "--a", "1", "+pos-arg", "p", "+command", "c",
                    "+jobname", "j"))
    assert out.splitlines() == ["c p --a 1 --f --tag j_1__p__a_1__+f", "c p --a 1 --tag j_2__p__a_1__-f"]


def test_arg_without_values_is_on_every_command_and_in_the_tag(onager):
    out = ok(onager("prelaunch", "+jobname", "x", "+command", "echo", "+arg", "--cuda", "+arg", "--lr", "1", "2",
                    "+tag"))
    assert out == "echo --cuda --lr 1 --tag x_1__cuda__lr_1\necho --cuda --lr 2 --tag x_2__cuda__lr_2\n"


def test_bug12_valueless_arg_left_out_of_tag_args(onager, project):
    """0.1.3 wrote an empty jobfile here; we make two tasks with --cuda on both."""
    out = ok(onager("prelaunch", "+jobname", "x", "+command", "echo", "+arg", "--cuda", "+arg", "--lr", "1", "2",
                    "+tag", "+tag-args", "--lr"))
    assert out == "echo --cuda --lr 1 --tag x_1__lr_1\necho --cuda --lr 2 --tag x_2__lr_2\n"
    assert len(jobs(project, "x")) == 2


def test_tag_key_stripping(onager):
    out = ok(onager("prelaunch", "+jobname", "j", "+command", "run", "+arg", "--batch-size", "32",
                    "+arg", "--learning_rate", "0.1", "+flag", "--use_gpu", "+flag", "--no-log", "+tag"))
    lines = out.splitlines()
    assert lines[0] == ("run --batch-size 32 --learning_rate 0.1 --use_gpu --no-log --tag "
                        "j_1__batchsize_32__learningrate_0.1__+use_gpu__+nolog")
    assert lines[1] == ("run --batch-size 32 --learning_rate 0.1 --no-log --tag "
                        "j_2__batchsize_32__learningrate_0.1__-use_gpu__+nolog")
    assert lines[3].endswith("__-use_gpu__-nolog")


def test_flag_with_plus_name_loses_the_plus_in_the_tag(onager):
    out = ok(onager("prelaunch", "+jobname", "j", "+command", "run", "+flag", "++use_gpu", "+tag"))
    assert out.splitlines() == ["run +use_gpu --tag j_1__+use_gpu", "run --tag j_2__-use_gpu"]


def test_tag_parts_follow_arg_order_not_tag_args_order(onager):
    out = ok(onager("prelaunch", "+jobname", "j", "+command", "c", "+arg", "--a", "1", "+arg", "--b", "2",
                    "+arg", "--c", "3", "+tag", "+tag-args", "--c", "--a"))
    assert out == "c --a 1 --b 2 --c 3 --tag j_1__a_1__c_3\n"


def test_positional_values_and_flags_are_always_tagged(onager):
    out = ok(onager("prelaunch", "+jobname", "j", "+command", "c", "+pos-arg", "x", "+flag", "--f", "+arg", "--a",
                    "1", "+arg", "--b", "2", "+tag", "+tag-args", "--b"))
    assert out.splitlines() == ["c x --a 1 --b 2 --f --tag j_1__x__b_2__+f", "c x --a 1 --b 2 --tag j_2__x__b_2__-f"]


@pytest.mark.parametrize("count, first, last", [
    (9, "_1__", "_9__"), (10, "_01__", "_10__"), (99, "_01__", "_99__"), (100, "_001__", "_100__"),
])
def test_number_width_comes_from_the_last_number(onager, count, first, last):
    out = ok(onager("prelaunch", "+jobname", "w", "+command", "c", "+arg", "--i", *map(str, range(count)), "+tag"))
    lines = out.splitlines()
    assert len(lines) == count
    assert f"--tag w{first}i_0" in lines[0]
    assert f"--tag w{last}i_{count - 1}" in lines[-1]


def test_number_width_of_100000_tasks(onager, project):
    out = ok(onager("prelaunch", "+jobname", "big", "+command", "c", "+arg", "--a", *map(str, range(1000)),
                    "+arg", "--b", *map(str, range(100)), "+tag", "+q"))
    assert out == ""
    data = jobs(project, "big")
    assert len(data) == 100_000
    assert data["1"][1] == "big_000001__a_0__b_0"
    assert data["100000"][1] == "big_100000__a_999__b_99"


def test_custom_jobfile_with_jobname_placeholder(onager, project):
    ok(onager("prelaunch", "+jobname", "cj", "+command", "c", "+arg", "--a", "1", "+jobfile", "sweeps/{jobname}.json"))
    with open(project / "sweeps" / "cj.json") as handle:
        assert json.load(handle)["1"][0] == "c --a 1"
    assert not (project / ".onager" / "scripts" / "cj").exists()


def test_quiet_prints_nothing_and_dry_run_writes_nothing(onager, project):
    assert ok(onager("prelaunch", "+jobname", "q", "+command", "c", "+arg", "--a", "1", "+q")) == ""
    assert jobs(project, "q")["1"][0] == "c --a 1"
    out = ok(onager("prelaunch", "+jobname", "dry", "+command", "c", "+arg", "--a", "1", "2", "+dry-run"))
    assert out == "c --a 1\nc --a 2\n"
    assert not (project / ".onager" / "scripts" / "dry").exists()


# ------------------------------------------------------------------ append
def test_append_continues_numbering_and_keeps_entries(onager, project):
    ok(onager("prelaunch", "+jobname", "ap", "+command", "echo", "+arg", "--lr", "1", "2", "3", "+tag"))
    before = jobs(project, "ap")
    result = onager("prelaunch", "+jobname", "ap", "+command", "echo", "+arg", "--lr", "7", "8", "+tag", "+append")
    assert ok(result) == "echo --lr 7 --tag ap_4__lr_7\necho --lr 8 --tag ap_5__lr_8\n"
    after = jobs(project, "ap")
    assert list(after) == ["1", "2", "3", "4", "5"]
    for key in before:
        assert after[key] == before[key]
    assert "2 more" in result.stderr
    # +a is the short form
    ok(onager("prelaunch", "+jobname", "ap", "+command", "echo", "+arg", "--lr", "9", "+tag", "+a"))
    assert jobs(project, "ap")["6"][:2] == ["echo --lr 9 --tag ap_6__lr_9", "ap_6__lr_9"]


def test_append_width_uses_the_new_maximum(onager, project):
    ok(onager("prelaunch", "+jobname", "ap", "+command", "e", "+arg", "--i", *map(str, range(1, 96)), "+tag", "+q"))
    assert jobs(project, "ap")["95"][1] == "ap_95__i_95"
    out = ok(onager("prelaunch", "+jobname", "ap", "+command", "e", "+arg", "--j", *map(str, range(10)), "+tag",
                    "+append"))
    lines = out.splitlines()
    assert lines[0] == "e --j 0 --tag ap_096__j_0"
    assert lines[-1] == "e --j 9 --tag ap_105__j_9"
    data = jobs(project, "ap")
    assert len(data) == 105
    assert data["1"][1] == "ap_01__i_1"  # existing entries are kept as they were


def test_append_to_a_013_jobfile(onager, project):
    path = project / ".onager" / "scripts" / "old"
    path.mkdir(parents=True)
    (path / "jobs.json").write_text('{"1": ["echo a", "old_1"], "7": ["echo b", ""]}')
    out = ok(onager("prelaunch", "+jobname", "old", "+command", "echo", "+pos-arg", "c", "+append"))
    assert out == "echo c\n"
    data = jobs(project, "old")
    assert list(data) == ["1", "7", "8"]
    assert data["1"][:2] == ["echo a", "old_1"] and data["8"][0] == "echo c"


def test_rerun_replaces_the_jobfile_and_says_so(onager, project):
    first = onager("prelaunch", "+jobname", "re", "+command", "c", "+arg", "--a", "1", "2", "3")
    ok(first)
    assert "replace" not in first.stderr
    second = onager("prelaunch", "+jobname", "re", "+command", "c", "+arg", "--a", "9")
    assert ok(second) == "c --a 9\n"
    assert "replaced" in second.stderr and "jobs.json" in second.stderr
    assert list(jobs(project, "re")) == ["1"]


# ------------------------------------------------------- 0.1.3 jobfile in use
@pytest.mark.parametrize("layout", ["one-line", "indented"])
def test_013_jobfile_is_launched_locally(onager, project, layout):
    path = project / ".onager" / "scripts" / "x"
    path.mkdir(parents=True)
    data = {"1": ["echo one > out1.txt", "x_1"], "2": ["echo two > out2.txt", ""]}
    (path / "jobs.json").write_text(json.dumps(data) if layout == "one-line" else json.dumps(data, indent=4))
    result = onager("launch", "--backend", "local", "--jobname", "x")
    assert result.returncode == 0, result.stderr
    assert (project / "out1.txt").read_text() == "one\n"
    assert (project / "out2.txt").read_text() == "two\n"


# ------------------------------------------------------------------- quoting
PRINTER = "import json, sys\nsys.stdout.write(json.dumps(sys.argv[1:]) + '\\n')\n"

NASTY = ["hello world", "it's", "{}", "{0}", "$HOME", ";", "héllo", 'a"b', "`id`", "*", "~", "a\\b", "-n",
         "x;echo INJECTED", "$(echo INJECTED)", "tab\there", "", "!!", "#c", "a'b\"c"]


def _printer(project) -> str:
    (project / "argv.py").write_text(PRINTER)
    return f"{shlex.quote(sys.executable)} argv.py"


def _run_bash(command: str, cwd) -> list[str]:
    result = subprocess.run(["bash", "-c", command], cwd=str(cwd), capture_output=True)
    assert result.returncode == 0, result.stderr
    assert b"INJECTED" not in result.stdout.replace(b"echo INJECTED", b"")
    return json.loads(result.stdout.decode("utf-8"))


def test_values_reach_the_program_byte_for_byte(onager, project):
    base = _printer(project)
    out = ok(onager("prelaunch", "+jobname", "q", "+command", base, "+arg", "--msg", *NASTY, "+tag"))
    lines = out.splitlines()
    assert len(lines) == len(NASTY)
    data = jobs(project, "q")
    for i, (value, line) in enumerate(zip(NASTY, lines), 1):
        argv = _run_bash(line, project)
        assert argv[:2] == ["--msg", value]
        assert argv[2] == "--tag"
        assert argv[3] == data[str(i)][1]  # the tag, as the jobfile records it
        assert argv[3].endswith("__msg_" + value)
        assert _run_bash(data[str(i)][0], project) == argv


def test_positional_and_newline_values_in_the_jobfile(onager, project):
    base = _printer(project)
    values = ["two words", "line1\nline2", "it's", "ünï"]
    ok(onager("prelaunch", "+jobname", "p", "+command", base, "+pos-arg", *values, "+q"))
    data = jobs(project, "p")
    for i, value in enumerate(values, 1):
        assert _run_bash(data[str(i)][0], project) == [value]


def test_plain_values_print_exactly_as_typed(onager):
    values = ["0.1", "1e-3", "-5", "a/b", "x=y", "path/to/file.txt", "a,b", "user@host", "50%", "+7", "a:b"]
    out = ok(onager("prelaunch", "+jobname", "p", "+command", "run", "+arg", "--v",
                    *[("+" + v) if v.startswith("+") else v for v in values]))
    assert out.splitlines() == [f"run --v {v}" for v in values]


# -------------------------------------------------------------------- errors
@pytest.mark.parametrize("option, hint", [
    ("+tg", "+tag"), ("+comand", "+command"), ("+pos_arg", "+pos-arg"), ("+flags", "+flag"),
    ("+jobnme", "+jobname"),
])
def test_unknown_option_names_it_and_suggests_the_closest(onager, project, option, hint):
    result = onager("prelaunch", "+jobname", "x", "+command", "echo", "+arg", "--lr", "1", option, "v")
    line = refused(result, option, hint)
    assert "did you mean" in line
    assert not (project / ".onager").exists()


def test_unknown_option_without_close_match(onager, project):
    refused(onager("prelaunch", "+jobname", "x", "+command", "echo", "+zzzzzz"), "+zzzzzz")
    assert not (project / ".onager").exists()


def test_double_plus_passes_a_plus_value(onager, project):
    out = ok(onager("prelaunch", "+jobname", "x", "+command", "echo", "+arg", "--x", "++5", "+pos-arg", "++y",
                    "+tag"))
    assert out == "echo +y --x +5 --tag x_1__+y__x_+5\n"
    assert jobs(project, "x")["1"][1] == "x_1__+y__x_+5"


def test_single_plus_value_is_an_error_mentioning_double_plus(onager, project):
    refused(onager("prelaunch", "+jobname", "x", "+command", "echo", "+arg", "--x", "+5"), "+5", "++")
    assert not (project / ".onager").exists()


@pytest.mark.parametrize("name", ["../x", "a/b", "", ".hidden", "x" * 201, "..", "a b", "a\nb", "/abs"])
def test_unsafe_jobname_is_refused_and_nothing_written(onager, project, name):
    refused(onager("prelaunch", "+jobname", name, "+command", "echo", "+arg", "--a", "1"), "job name")
    assert not (project / ".onager").exists()
    assert not (project.parent / "x").exists() or name != "../x"
    assert sorted(os.listdir(project)) == []


def test_longest_jobname_is_accepted(onager, project):
    name = "n" * 200
    ok(onager("prelaunch", "+jobname", name, "+command", "echo", "+arg", "--a", "1"))
    assert jobs(project, name)["1"][0] == "echo --a 1"


@pytest.mark.parametrize("argv, word", [
    (["+jobname", "x"], "+command"),
    (["+command", "echo"], "+jobname"),
    (["+jobname", "x", "+command"], "+command"),
    (["+jobname", "x", "+command", "echo", "+pos-arg"], "+pos-arg"),
    (["+jobname", "x", "+command", "echo", "+flag"], "+flag"),
    (["+jobname", "x", "+command", "echo", "stray"], "stray"),
])
def test_missing_or_stray_values(onager, project, argv, word):
    refused(onager("prelaunch", *argv), word)
    assert not (project / ".onager").exists()


def test_abbreviations_are_accepted_like_argparse(onager, project):
    out = ok(onager("prelaunch", "+jobn", "ab", "+com", "echo", "+pos", "1", "2", "+no", "+ta" + "g"))
    assert out == "echo 1 --tag ab__1\necho 2 --tag ab__2\n"
    out = ok(onager("prelaunch", "+jobna", "ab", "+comm", "echo", "+ar", "--x", "3", "+appe", "+qui"))
    assert out == ""
    assert list(jobs(project, "ab")) == ["1", "2", "3"]


@pytest.mark.parametrize("option", ["+ta", "+job"])
def test_ambiguous_abbreviation_is_refused(onager, project, option):
    line = refused(onager("prelaunch", "+jobname", "x", "+command", "echo", option, "--x"), option)
    assert "ambiguous" in line
    assert not (project / ".onager").exists()


# ---------------------------------------------------------------- atomicity
def test_killed_prelaunch_leaves_the_previous_jobfile(onager, project):
    ok(onager("prelaunch", "+jobname", "big", "+command", "c", "+arg", "--a", "1", "2", "+tag"))
    path = project / ".onager" / "scripts" / "big" / "jobs.json"
    before = path.read_bytes()
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    values = [str(i) for i in range(1000)]
    proc = subprocess.Popen([sys.executable, "-m", "onager", "prelaunch", "+jobname", "big", "+command", "c",
                             "+arg", "--a", *values, "+arg", "--b", *values, "+tag", "+q"],
                            cwd=str(project), env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    directory = path.parent
    deadline = time.monotonic() + 20
    saw_temp = False
    while time.monotonic() < deadline and proc.poll() is None:
        temps = [n for n in os.listdir(directory) if n.endswith(".tmp")]
        if temps and os.path.getsize(directory / temps[0]) > 1 << 20:
            saw_temp = True
            break
        time.sleep(0.02)
    time.sleep(0.3)
    assert proc.poll() is None, "the 1M-task prelaunch finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert saw_temp
    assert path.read_bytes() == before
    with open(path) as handle:
        assert len(json.load(handle)) == 2
    # the killed writer's temp file is hidden (never read as the jobfile) ...
    leftovers = [n for n in os.listdir(directory) if n.endswith(".tmp")]
    assert leftovers and all(n.startswith(".jobs.json.") for n in leftovers)
    # ... the next prelaunch is not blocked by a stale lock, and removes leftovers once they are stale
    for name in leftovers:
        os.utime(directory / name, (time.time() - 3600, time.time() - 3600))
    out = ok(onager("prelaunch", "+jobname", "big", "+command", "c", "+arg", "--a", "3", "+tag", timeout=30))
    assert out == "c --a 3 --tag big_1__a_3\n"
    assert list(jobs(project, "big")) == ["1"]
    assert [n for n in os.listdir(directory) if n.endswith(".tmp")] == []


def test_tag_args_naming_no_arg_warns_but_works(onager):
    result = onager("prelaunch", "+jobname", "w", "+command", "c", "+arg", "--a", "1", "+tag", "+tag-args", "--zz")
    assert ok(result) == "c --a 1 --tag w_1\n"
    assert "warning" in result.stderr and "--zz" in result.stderr


def test_tag_options_without_tag_add_no_tag(onager, project):
    out = ok(onager("prelaunch", "+jobname", "n", "+command", "c", "+arg", "--a", "1", "+no-tag-number",
                    "+tag-args", "--a"))
    assert out == "c --a 1\n"
    assert jobs(project, "n")["1"][1] == ""


def test_custom_tag_name(onager):
    assert ok(onager("prelaunch", "+jobname", "t", "+command", "c", "+pos-arg", "v", "+tag", "--run-name")) == \
        "c v --run-name t_1__v\n"


@pytest.mark.parametrize("command", ["", "   "])
def test_empty_command_is_refused(onager, project, command):
    refused(onager("prelaunch", "+jobname", "e", "+command", command, "+arg", "--a", "1"), "+command")
    assert not (project / ".onager").exists()


@pytest.mark.parametrize("argv", [["+arg", "", "1"], ["+flag", ""]])
def test_empty_argument_name_is_refused(onager, project, argv):
    refused(onager("prelaunch", "+jobname", "e", "+command", "echo", *argv))
