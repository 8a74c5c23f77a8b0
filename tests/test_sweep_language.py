"""The sweep language: generators, +link, +sample, +files, sweep files, and docs/sweeps.md."""
from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shlex
import shutil
import sys
from pathlib import Path

import pytest
from support import ROOT, run_onager

from onager import prelaunch
from onager.errors import UsageError
from onager.sweep import Files, Linspace, Logspace, LogUniform, RandInt, Range, Sweep, Uniform, _below, _distinct, _fmt


def _has_toml() -> bool:
    if sys.version_info >= (3, 11):
        return True
    try:
        import tomli  # noqa: F401
        return True
    except ImportError:
        return False


needs_toml = pytest.mark.skipif(not _has_toml(), reason="reading TOML needs Python 3.11+ or tomli "
                                "(pip install 'onager[toml]')")


def commands(argv: list[str]) -> list[str]:
    """The commands `onager prelaunch ARGV` would write, in order (parsed in-process)."""
    if "+jobname" not in argv and "+from" not in argv:
        argv = argv + ["+jobname", "t"]
    args = prelaunch.parse(argv)
    return [line.command for line in args.sweep.lines(args.jobname)]


def values_of(argv: list[str]) -> list[str]:
    """Values of the single `+arg --x` dimension given as `argv`."""
    return [c.split(" --x ", 1)[1] for c in commands(["+command", "c", "+arg", "--x", *argv])]


def usage_error(argv: list[str]) -> str:
    with pytest.raises(UsageError) as info:
        commands(argv)
    return str(info.value)


# ------------------------------------------------------------------ generators
def test_range_is_pythons_range():
    assert values_of(["+range", "0", "3"]) == ["0", "1", "2"]
    assert values_of(["+range", "2", "11", "4"]) == ["2", "6", "10"]
    assert values_of(["+range", "3", "0", "-1"]) == ["3", "2", "1"]
    assert values_of(["+range", "-2", "1"]) == ["-2", "-1", "0"]
    assert Range(0, 3).values() == ["0", "1", "2"]


def test_range_takes_step_only_when_it_is_an_integer():
    assert values_of(["+range", "0", "3", "7"]) == ["0"]  # 7 is the STEP
    assert values_of(["+range", "0", "3", "1", "7"]) == ["0", "1", "2", "7"]
    assert commands(["+command", "c", "+pos-arg", "+range", "0", "2", "a"]) == ["c 0", "c 1", "c a"]


@pytest.mark.parametrize("argv, needle", [
    (["+range", "3", "0"], "+range 3 0 1 is empty"),
    (["+range", "3", "0"], "+range 3 0 -1"),
    (["+range", "0", "3", "0"], "STEP must not be 0"),
    (["+range", "0", "0.5"], "+range START STOP [STEP] needs integers, got '0.5'"),
    (["+range", "0"], "+range needs 2 or 3 value(s)"),
    (["+range"], "+range needs 2 or 3 value(s)"),
])
def test_range_errors(argv, needle):
    assert needle in usage_error(["+command", "c", "+arg", "--x", *argv])


def test_linspace_includes_both_ends():
    assert values_of(["+linspace", "0", "1", "5"]) == ["0.0", "0.25", "0.5", "0.75", "1.0"]
    assert values_of(["+linspace", "-1", "1", "3"]) == ["-1.0", "0.0", "1.0"]
    assert values_of(["+linspace", "0", "0.3", "4"]) == ["0.0", "0.1", "0.2", "0.3"]
    assert values_of(["+linspace", "5", "9", "1"]) == ["5.0"]
    assert values_of(["+linspace", "1", "0", "3"]) == ["1.0", "0.5", "0.0"]


def test_logspace_is_geomspace_with_clean_values():
    assert values_of(["+logspace", "1e-4", "1e-1", "4"]) == ["0.0001", "0.001", "0.01", "0.1"]
    assert values_of(["+logspace", "1", "1000", "4"]) == ["1.0", "10.0", "100.0", "1000.0"]
    assert values_of(["+logspace", "1e-6", "1", "7"]) == ["1e-06", "1e-05", "0.0001", "0.001", "0.01", "0.1", "1.0"]
    assert values_of(["+logspace", "2", "32", "5"]) == ["2.0", "4.0", "8.0", "16.0", "32.0"]
    assert Logspace(1e-4, 1e-1, 4).values() == ["0.0001", "0.001", "0.01", "0.1"]


@pytest.mark.parametrize("argv, needle", [
    (["+linspace", "0", "1", "0"], "count N of at least 1, got 0"),
    (["+linspace", "0", "1", "-3"], "count N of at least 1, got -3"),
    (["+linspace", "0", "1", "2.5"], "needs integers, got '2.5'"),
    (["+linspace", "0", "1"], "+linspace needs 3 value(s): +linspace A B N"),
    (["+linspace", "a", "1", "3"], "+linspace A B N needs numbers, got 'a'"),
    (["+linspace", "0", "inf", "3"], "finite"),
    (["+logspace", "0", "1", "3"], "must be positive"),
    (["+logspace", "-1", "-10", "3"], "must be positive"),
    (["+logspace", "1e-4", "1e-1", "0"], "count N of at least 1"),
])
def test_linspace_logspace_errors(argv, needle):
    assert needle in usage_error(["+command", "c", "+arg", "--x", *argv])


def test_generated_floats_are_rounded_to_12_significant_digits():
    assert _fmt(0.00010000000000000009) == "0.0001"
    assert _fmt(0.1 + 0.2) == "0.3"
    assert _fmt(1 / 3) == "0.333333333333"
    assert _fmt(-0.0) == "0.0"
    assert _fmt(1e-20) == "1e-20"


def test_typed_values_stay_as_typed_next_to_generators():
    assert values_of(["1e-4", "+logspace", "0.01", "1", "3", "1.50", "-1"]) == [
        "1e-4", "0.01", "0.1", "1.0", "1.50", "-1"]


def test_plus_words_escaped_with_double_plus_stay_values():
    assert values_of(["++range", "0", "3"]) == ["+range", "0", "3"]


def test_generators_name_the_fix_outside_a_value_list():
    assert "write it after +arg NAME or +pos-arg" in usage_error(["+command", "c", "+range", "0", "3"])


def test_new_options_do_not_change_0_1_3_abbreviations():
    # +f was +flag in 0.1.3; +from (exact spelling only) must not make it ambiguous
    assert commands(["+command", "c", "+f", "--v"]) == ["c --v", "c"]
    assert commands(["+command", "c", "+pos", "a", "b"]) == ["c a", "c b"]
    assert "unknown prelaunch option +lin" in usage_error(["+command", "c", "+arg", "--x", "1", "+lin"])
    assert "did you mean +sample" in usage_error(["+command", "c", "+arg", "--x", "1", "+sampel", "2"])


def test_files_glob_is_sorted_and_relative(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    os.makedirs("data/sub")
    for name in ("b.csv", "a.csv", "c.txt", "sub/d.csv"):
        (tmp_path / "data" / name).write_text("x")
    assert commands(["+command", "c", "+pos-arg", "+files", "data/*.csv"]) == ["c data/a.csv", "c data/b.csv"]
    assert commands(["+command", "c", "+pos-arg", "+files", "data/**/*.csv"]) == [
        "c data/a.csv", "c data/b.csv", "c data/sub/d.csv"]
    assert Files("data/*.txt").values() == ["data/c.txt"]
    assert "matches no file" in usage_error(["+command", "c", "+pos-arg", "+files", "data/*.json"])


# ------------------------------------------------------------------ +link
def test_link_zips_instead_of_crossing():
    out = commands(["+command", "c", "+arg", "--lr", "0.1", "0.01", "+link", "+arg", "--wd", "1", "2"])
    assert out == ["c --lr 0.1 --wd 1", "c --lr 0.01 --wd 2"]


def test_link_group_sits_at_its_first_member_and_keeps_command_layout():
    out = commands(["+command", "c", "+arg", "--seed", "0", "1", "+arg", "--lr", "a", "b", "+link",
                    "+arg", "--wd", "x", "y", "+tag"])
    assert out == [
        "c --seed 0 --lr a --wd x --tag t_1__seed_0__lr_a__wd_x",
        "c --seed 1 --lr a --wd x --tag t_2__seed_1__lr_a__wd_x",
        "c --seed 0 --lr b --wd y --tag t_3__seed_0__lr_b__wd_y",
        "c --seed 1 --lr b --wd y --tag t_4__seed_1__lr_b__wd_y",
    ]


def test_link_across_positional_and_arg_split_by_another_dimension():
    # +link joins pos(m n) to --x; in the layout pos(u v) sits between them, so the group
    # (second axis, at the place of pos(m n)) is split in the command: the general path
    out = commands(["+command", "c", "+pos-arg", "p", "q", "+arg", "--x", "1", "2", "+link",
                    "+pos-arg", "m", "n", "+pos-arg", "u", "v", "+flag", "--f"])
    assert out == [
        "c p m u --x 1 --f", "c q m u --x 1 --f", "c p n u --x 2 --f", "c q n u --x 2 --f",
        "c p m v --x 1 --f", "c q m v --x 1 --f", "c p n v --x 2 --f", "c q n v --x 2 --f",
        "c p m u --x 1", "c q m u --x 1", "c p n u --x 2", "c q n u --x 2",
        "c p m v --x 1", "c q m v --x 1", "c p n v --x 2", "c q n v --x 2",
    ]


def test_non_contiguous_link_matches_contiguous_reordering():
    # pos1 linked with --x while pos2 sits between them: the general path
    s = Sweep("c").pos_arg(["a", "b"]).pos_arg(["u", "v", "w"]).arg("--x", ["1", "2"]).link("pos1", "--x")
    out = [t.command for t in s.tasks("t")]
    assert out == ["c a u --x 1", "c b u --x 2", "c a v --x 1", "c b v --x 2", "c a w --x 1", "c b w --x 2"]
    params = [t.params for t in s.tasks("t")]
    assert params[1] == {"pos1": "b", "pos2": "u", "x": 2}


def test_link_chain_of_three():
    out = commands(["+command", "c", "+arg", "--a", "1", "2", "+link", "+arg", "--b", "3", "4", "+link",
                    "+arg", "--c", "5", "6"])
    assert out == ["c --a 1 --b 3 --c 5", "c --a 2 --b 4 --c 6"]


@pytest.mark.parametrize("argv, needle", [
    (["+arg", "--lr", "0.1", "0.01", "+link", "+arg", "--wd", "1", "2", "3"],
     "--lr has 2 value(s) but --wd has 3"),
    (["+pos-arg", "a", "+link", "+arg", "--wd", "1", "2"], "pos1 has 1 value(s) but --wd has 2"),
    (["+link", "+arg", "--wd", "1"], "put it between two"),
    (["+arg", "--wd", "1", "+link"], "+link must be followed by the +arg or +pos-arg"),
    (["+arg", "--wd", "1", "+link", "+flag", "--v"], "+link cannot join a +flag"),
    (["+flag", "--v", "+link", "+arg", "--wd", "1", "2"], "cannot join --v: flags are not linked"),
    (["+arg", "--wd", "1", "+link", "+tag"], "+link must be followed by the +arg or +pos-arg to link, not +tag"),
])
def test_link_errors(argv, needle):
    assert needle in usage_error(["+command", "c", *argv])


# ------------------------------------------------------------------ +sample
def test_sample_continuous_is_reproducible_and_in_bounds():
    argv = ["+command", "c", "+arg", "--lr", "+loguniform", "1e-5", "1e-1", "+arg", "--d", "+uniform", "0", "0.5",
            "+arg", "--n", "+randint", "2", "4", "+arg", "--o", "sgd", "adam", "+sample", "200", "+seed", "3"]
    first = commands(argv)
    assert first == commands(argv)
    assert len(first) == 200
    other = commands(argv[:-1] + ["4"])
    assert other != first
    seen_n = set()
    for cmd in first:
        parts = shlex.split(cmd)
        lr, d, n, o = (parts[parts.index(k) + 1] for k in ("--lr", "--d", "--n", "--o"))
        assert 1e-5 <= float(lr) <= 1e-1 and 0 <= float(d) <= 0.5 and o in ("sgd", "adam")
        assert len(re.sub(r"[^0-9]", "", lr.split("e")[0]).lstrip("0")) <= 12
        seen_n.add(int(n))
    assert seen_n == {2, 3, 4}  # randint includes both ends


def test_sample_golden_values_do_not_drift():
    """random.Random(seed).random() is the only source: these texts must never change."""
    out = commands(["+command", "c", "+arg", "--lr", "+loguniform", "1e-5", "1e-1", "+arg", "--optim", "sgd",
                    "adam", "+sample", "4", "+seed", "1"])
    assert out == ["c --lr 3.44712455809e-05 --optim adam", "c --lr 0.011352682076 --optim sgd",
                   "c --lr 0.000958827206116 --optim sgd", "c --lr 0.00403991186757 --optim adam"]


def test_sample_larger_n_keeps_the_first_tasks():
    base = ["+command", "c", "+arg", "--lr", "+uniform", "0", "1", "+arg", "--s", "1", "2", "3", "+seed", "9"]
    assert commands(base + ["+sample", "8"])[:5] == commands(base + ["+sample", "5"])
    grid = ["+command", "c", "+arg", "--a", "1", "2", "3", "4", "+arg", "--b", "x", "y", "z", "+seed", "2"]
    assert commands(grid + ["+sample", "12"])[:4] == commands(grid + ["+sample", "4"])


def test_sample_over_a_finite_grid_is_without_replacement():
    grid = ["+command", "c", "+arg", "--a", "1", "2", "3", "+arg", "--b", "x", "y", "+flag", "--f"]
    full = commands(grid)
    picked = commands(grid + ["+sample", "12", "+seed", "5"])
    assert sorted(picked) == sorted(full) and picked != full
    assert len(set(commands(grid + ["+sample", "7"]))) == 7
    assert "+sample 13 asks for more tasks than the grid's 12 combinations" in usage_error(grid + ["+sample", "13"])


def test_sample_keeps_links_together_and_numbers_tags_by_count():
    out = commands(["+command", "c", "+arg", "--lr", "1", "2", "3", "+link", "+arg", "--wd", "a", "b", "c",
                    "+arg", "--x", "+uniform", "0", "1", "+sample", "10", "+tag"])
    assert len(out) == 10
    for cmd in out:
        parts = shlex.split(cmd)
        assert {"1": "a", "2": "b", "3": "c"}[parts[parts.index("--lr") + 1]] == parts[parts.index("--wd") + 1]
    assert out[0].split("--tag ")[1].startswith("t_01__lr_") and out[9].split("--tag ")[1].startswith("t_10__")


@pytest.mark.parametrize("argv, needle", [
    (["+arg", "--lr", "+uniform", "0", "1"], "+uniform 0 1 (--lr) draws random values: add +sample N"),
    (["+pos-arg", "+randint", "0", "1"], "+randint 0 1 (pos1) draws random values"),
    (["+arg", "--lr", "1", "+sample", "0"], "count N of at least 1, got 0"),
    (["+arg", "--lr", "1", "+sample", "x"], "+sample N needs integers, got 'x'"),
    (["+arg", "--lr", "1", "+seed", "3"], "+seed needs +sample N"),
    (["+arg", "--lr", "1", "+sample", "1", "+seed", "-3"], "non-negative"),
    (["+arg", "--lr", "0.1", "+uniform", "0", "1", "+sample", "2"], "takes no other values"),
    (["+arg", "--lr", "+loguniform", "0", "1", "+sample", "2"], "must be positive"),
    (["+arg", "--n", "+randint", "5", "1", "+sample", "2"], "B must be at least A"),
    (["+arg", "--lr", "+uniform", "0", "1", "+link", "+arg", "--wd", "1", "+sample", "2"],
     "cannot link --lr: +uniform 0 1 has no list of values"),
])
def test_sample_errors(argv, needle):
    assert needle in usage_error(["+command", "c", *argv])


def test_below_and_distinct_are_uniform_enough_and_exact():
    import random
    rng = random.Random(0)
    counts = [0] * 5
    for _ in range(5000):
        counts[_below(rng, 5)] += 1
    assert all(800 < c < 1200 for c in counts)
    assert all(0 <= _below(rng, 10 ** 30) < 10 ** 30 for _ in range(50))
    picks = list(_distinct(random.Random(1), 10, 10))
    assert sorted(picks) == list(range(10))
    huge = list(_distinct(random.Random(1), 10 ** 15, 100))
    assert len(set(huge)) == 100


def test_distributions_need_numbers():
    with pytest.raises(UsageError):
        Uniform("a", 1)
    with pytest.raises(UsageError):
        LogUniform(1, -1)
    with pytest.raises(UsageError):
        RandInt(1.5, 3)
    with pytest.raises(UsageError):
        Linspace(0, 1, True)


# ------------------------------------------------------------------ sweep files
def write(path, text: str) -> str:
    path.write_text(text)
    return str(path)


@needs_toml
def test_sweep_file_minimal_toml_form(tmp_path):
    path = write(tmp_path / "sweep.toml", 'jobname = "tom"\ncommand = "python train.py"\ntag = "--run-tag"\n'
                 '[args]\n"--lr" = [0.1, 0.01]\n"--bs" = [32, 64]\n')
    assert commands(["+from", path]) == [
        "python train.py --lr 0.1 --bs 32 --run-tag tom_1__lr_0.1__bs_32",
        "python train.py --lr 0.01 --bs 32 --run-tag tom_2__lr_0.01__bs_32",
        "python train.py --lr 0.1 --bs 64 --run-tag tom_3__lr_0.1__bs_64",
        "python train.py --lr 0.01 --bs 64 --run-tag tom_4__lr_0.01__bs_64",
    ]
    assert commands(["+from", path]) == commands(
        ["+jobname", "tom", "+command", "python train.py", "+arg", "--lr", "0.1", "0.01", "+arg", "--bs", "32", "64",
         "+tag", "--run-tag"])


@needs_toml
def test_sweep_file_json_equals_toml_and_cli(tmp_path):
    toml = write(tmp_path / "s.toml", 'command = "run"\npos_args = [["a", "b"], {range = [0, 2]}]\n'
                 'flags = ["--amp"]\nlinks = [["pos1", "--lr"]]\ntag = true\ntag_args = ["--lr"]\n'
                 'tag_number = false\n[args]\n"--lr" = {linspace = [0, 1, 2]}\n"--cuda" = []\n'
                 '"--mix" = ["1e-4", 2, {logspace = [1, 100, 3]}]\n"--one" = "x y"\n')
    jsn = write(tmp_path / "s.json", json.dumps({
        "command": "run", "pos_args": [["a", "b"], {"range": [0, 2]}], "flags": ["--amp"],
        "links": [["pos1", "--lr"]], "tag": True, "tag_args": ["--lr"], "tag_number": False,
        "args": {"--lr": {"linspace": [0, 1, 2]}, "--cuda": [], "--mix": ["1e-4", 2, {"logspace": [1, 100, 3]}],
                 "--one": "x y"}}))
    cli = ["+command", "run", "+pos-arg", "a", "b", "+pos-arg", "+range", "0", "2", "+arg", "--lr", "+linspace",
           "0", "1", "2", "+arg", "--cuda", "+arg", "--mix", "1e-4", "2", "+logspace", "1", "100", "3",
           "+arg", "--one", "x y", "+flag", "--amp", "+tag", "+tag-args", "--lr", "+no-tag-number", "+jobname", "t"]
    # the CLI cannot link pos1 with --lr (not adjacent on the command line): do it by API
    s = prelaunch.parse(cli).sweep.link("pos1", "--lr")
    expected = [line.command for line in s.lines("t")]
    assert len(expected) == 2 * 2 * 5 * 2  # pos1+--lr linked, pos2, --mix, --amp
    assert expected[0] == "run a 0 --lr 0.0 --cuda --mix 1e-4 --one 'x y' --amp --tag t__a__0__lr_0.0__+amp"
    assert commands(["+from", toml, "+jobname", "t"]) == expected
    assert commands(["+from", jsn, "+jobname", "t"]) == expected


@needs_toml
def test_command_line_overrides_and_adds_to_the_file(tmp_path):
    path = write(tmp_path / "s.toml", 'jobname = "j"\ncommand = "run"\ntag = "--run-tag"\nsample = 2\nseed = 1\n'
                 '[args]\n"--lr" = [1, 2, 3]\n"--bs" = [8, 16]\n')
    args = prelaunch.parse(["+from", path, "+command", "go", "+jobname", "k", "+arg", "--lr", "5", "6",
                            "+arg", "--new", "z", "+tag", "--name", "+sample", "4", "+seed", "2"])
    assert args.jobname == "k"
    s = args.sweep
    assert (s.command, s.tag_name, s.sample_count, s.seed) == ("go", "--name", 4, 2)
    assert [(d.name, d.values) for d in s.dimensions] == [("--lr", ["5", "6"]), ("--bs", ["8", "16"]),
                                                          ("--new", ["z"])]
    # +seed alone keeps the file's sample count
    assert prelaunch.parse(["+from", path, "+seed", "9"]).sweep.sample_count == 2
    # +tag-args alone keeps the file's tag name
    s = prelaunch.parse(["+from", path, "+tag-args", "--bs", "+no-tag-number"]).sweep
    assert (s.tag_name, s.tag_args, s.tag_number) == ("--run-tag", ["--bs"], False)


@needs_toml
@pytest.mark.parametrize("text, needle", [
    ('command = "x"\njobnme = "j"\n', "unknown key 'jobnme'; the keys are jobname, command"),
    ('command = 3\n', "command must be a string"),
    ('command = "x"\n[args]\n"--lr" = {logspac = [1, 2, 3]}\n', "a generator is a table with one key"),
    ('command = "x"\n[args]\n"--lr" = {range = [1]}\n', "range needs a list of 2 or 3 values"),
    ('command = "x"\n[args]\n"--lr" = [[1, 2]]\n', "cannot hold a list"),
    ('command = "x"\nflags = "--amp"\n', "flags must be a list of strings"),
    ('command = "x"\ntag = 3\n', "tag must be an argument name"),
    ('command = "x"\nseed = 3\n', "seed needs sample = N"),
    ('command = "x"\nlinks = [["--a", "--b"]]\n[args]\n"--a" = [1]\n', "cannot link --b: no such dimension"),
    ('command = "x"\nlinks = [["--a", "--b"]]\n[args]\n"--a" = [1]\n"--b" = [1, 2]\n', "--a has 1 value(s) but "
                                                                                       "--b has 2"),
    ('command = "x"\n[args\n', "is not valid TOML"),
    ('jobname = "j"\n', "has no command"),
])
def test_sweep_file_errors(tmp_path, text, needle):
    path = write(tmp_path / "s.toml", text)
    with pytest.raises(UsageError) as info:
        commands(["+from", path, "+jobname", "j"])
    assert needle in str(info.value)


def test_sweep_file_missing_and_bad_json(tmp_path):
    with pytest.raises(UsageError, match="no sweep file at"):
        commands(["+from", str(tmp_path / "nope.toml")])
    path = write(tmp_path / "s.json", "{not json")
    with pytest.raises(UsageError, match="is not valid JSON"):
        commands(["+from", path])
    with pytest.raises(UsageError, match="takes one sweep file"):
        commands(["+from", path, "+from", path])


def test_toml_on_old_python_without_tomli_names_the_extra(tmp_path, monkeypatch):
    from onager import sweepfile
    monkeypatch.setattr(sweepfile.sys, "version_info", (3, 10, 0))
    monkeypatch.setitem(sys.modules, "tomli", None)
    path = write(tmp_path / "s.toml", 'command = "x"\n')
    with pytest.raises(UsageError, match=r"pip install 'onager\[toml\]'"):
        commands(["+from", path, "+jobname", "j"])


README_MNIST_FIRST = ("python mnist.py --epochs 1 --gamma 0.7 --no-cuda --lr 0.3 --batch-size 32 --seed 0 "
                      "--run-tag mnist_lr_bs_01__lr_0.3__batchsize_32__seed_0")
README_MNIST_LAST = ("python mnist.py --epochs 1 --gamma 0.7 --no-cuda --lr 3.0 --batch-size 64 --seed 2 "
                     "--run-tag mnist_lr_bs_18__lr_3.0__batchsize_64__seed_2")


@needs_toml
def test_mnist_sweep_file_gives_the_readmes_18_commands(onager, project):
    (project / "mnist").mkdir()
    shutil.copy(os.path.join(ROOT, "examples", "mnist", "sweep.toml"), project / "mnist" / "sweep.toml")
    result = onager("prelaunch", "+from", "mnist/sweep.toml")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    readme = run_onager(["prelaunch", "+command", "python mnist.py --epochs 1 --gamma 0.7 --no-cuda", "+jobname",
                         "mnist_lr_bs", "+arg", "--lr", "0.3", "1.0", "3.0", "+arg", "--batch-size", "32", "64",
                         "+arg", "--seed", "0", "1", "2", "+tag", "--run-tag", "+dry-run"], cwd=str(project))
    assert len(lines) == 18 and lines == readme.stdout.splitlines()
    assert lines[0] == README_MNIST_FIRST and lines[-1] == README_MNIST_LAST
    assert "--lr 1.0 --batch-size 64 --seed 1 --run-tag mnist_lr_bs_11__lr_1.0__batchsize_64__seed_1" in lines[10]
    jobs = json.loads((project / ".onager/scripts/mnist_lr_bs/jobs.json").read_text())
    assert jobs["18"][:2] == [README_MNIST_LAST, README_MNIST_LAST.split("--run-tag ")[1]]
    assert jobs["1"][2] == {"lr": 0.3, "batch_size": 32, "seed": 0}


# ------------------------------------------------------------------ the CLI as users run it
@pytest.mark.parametrize("argv, needle", [
    (["+arg", "--lr", "0.1", "0.01", "+link", "+arg", "--wd", "1", "2", "3"], "--lr has 2 value(s) but --wd has 3"),
    (["+arg", "--lr", "+logspace", "1e-4", "1e-1"], "+logspace needs 3 value(s)"),
    (["+arg", "--lr", "+uniform", "0", "1"], "add +sample N"),
    (["+arg", "--lr", "1", "2", "+sample", "3"], "+sample 3 asks for more tasks than the grid's 2"),
    (["+from", "missing.toml"], "no sweep file at missing.toml"),
])
def test_cli_errors_are_one_line_exit_2_and_write_nothing(onager, project, argv, needle):
    result = onager("prelaunch", "+jobname", "j", "+command", "c", *argv)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and needle in result.stderr and "Traceback" not in result.stderr
    assert result.stdout == ""
    assert not (project / ".onager").exists()


def test_help_lists_the_new_words(onager):
    result = onager("prelaunch", "+help")
    for word in ("+link", "+sample N", "+seed S", "+from FILE", "+range START STOP [STEP]", "+linspace A B N",
                 "+logspace A B N", "+files PATTERN", "+uniform A B", "+loguniform A B", "+randint A B"):
        assert word in result.stdout


# ------------------------------------------------------------------ docs/sweeps.md
DOCS = os.path.join(ROOT, "docs", "sweeps.md")


def _blocks(text: str):
    """(language, body) for each fenced block, in order."""
    return re.findall(r"^```(\w*)\n(.*?)^```", text, re.S | re.M)


def _console_steps(body: str):
    steps = []
    for line in body.rstrip("\n").split("\n"):
        if line.startswith("$ "):
            steps.append((line[2:], []))
        else:
            assert steps, f"output before any command in docs block: {line!r}"
            steps[-1][1].append(line)
    return steps


@needs_toml
def test_docs_examples_run_and_print_what_the_page_shows(project):
    """Every console and python block of docs/sweeps.md, run in order in a copy of examples/."""
    shutil.copytree(os.path.join(ROOT, "examples", "sweeps"), project / "examples" / "sweeps")
    shutil.copy(os.path.join(ROOT, "examples", "mnist", "sweep.toml"), project / "examples" / "mnist" / "sweep.toml"
                if (project / "examples" / "mnist").mkdir() is None else None)
    env = {"PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")}
    blocks = _blocks(Path(DOCS).read_text(encoding="utf-8"))
    ran = {"prelaunch": 0, "cat": 0, "python": 0, "other": 0}
    for index, (lang, body) in enumerate(blocks):
        if lang == "console":
            for command, expected in _console_steps(body):
                argv = shlex.split(command)
                if argv[0] == "cat":
                    actual = (project / argv[1]).read_text().rstrip("\n").split("\n")
                    assert actual == expected, command
                    ran["cat"] += 1
                    continue
                assert argv[0] == "onager", f"docs/sweeps.md runs only onager and cat: {command}"
                result = run_onager(argv[1:], cwd=str(project), env=env)
                shown = result.stdout if result.returncode == 0 else result.stderr
                actual = shown.rstrip("\n").split("\n") if shown.strip() else []
                if argv[1] == "prelaunch":
                    assert actual == expected, command
                    ran["prelaunch"] += 1
                else:
                    assert result.returncode == 0, (command, result.stderr)
                    assert all(line in actual for line in expected), (command, actual)
                    ran["other"] += 1
        elif lang == "python":
            buffer = io.StringIO()
            with contextlib.redirect_stdout(buffer):
                exec(compile(body, f"{DOCS} block {index}", "exec"), {})
            following = blocks[index + 1] if index + 1 < len(blocks) else ("", "")
            if following[0] == "text":
                assert buffer.getvalue() == following[1]
            ran["python"] += 1
    assert ran["prelaunch"] >= 20 and ran["cat"] >= 4 and ran["python"] >= 1 and ran["other"] >= 2, ran


def test_docs_have_an_example_per_feature():
    text = Path(DOCS).read_text(encoding="utf-8")
    consoles = "\n".join(body for lang, body in _blocks(text) if lang == "console")
    for word in ("+range", "+linspace", "+logspace", "+files", "+link", "+sample", "+seed", "+uniform",
                 "+loguniform", "+randint", "+from", "+tag", "+flag", "+pos-arg", "onager logs"):
        assert word in consoles or word.lstrip("+") in consoles, word
    assert "random.Random" in text and "without replacement" in text
