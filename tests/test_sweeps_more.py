"""Issue 15 (search): +exclude rules, +gin-arg/+override, +repeat, tag control, +from-results."""
from __future__ import annotations

import json
import os
import shlex
import sys
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support import ROOT, run_onager

from onager import prelaunch
from onager import sweep as sweep_module
from onager.errors import UsageError
from onager.from_results import parse_top, untagged
from onager.sweep import Sweep, quote


def tasks(argv: list[str]) -> list:
    """The tasks `onager prelaunch ARGV` would write (parsed in-process, nothing written)."""
    if "+jobname" not in argv:
        argv = argv + ["+jobname", "t"]
    args = prelaunch.parse(argv)
    return list(args.sweep.tasks(args.jobname))


def commands(argv: list[str]) -> list[str]:
    return [t.command for t in tasks(argv)]


def usage_error(argv: list[str]) -> str:
    with pytest.raises(UsageError) as info:
        tasks(argv)
    return str(info.value)


GRID = ["+command", "c", "+arg", "--mode", "mc", "ce", "+arg", "--coef", "-1", "0.0", "1"]


# ------------------------------------------------------------------ 1. exclusions
def test_issue_example_skips_mc_with_minus_one_and_one_and_keeps_mc_with_zero():
    found = tasks(GRID + ["+exclude", "--mode", "mc", "+exclude", "--coef", "-1", "1", "+tag"])
    pairs = [(t.params["mode"], t.params["coef"]) for t in found]
    assert pairs == [("ce", -1), ("mc", 0.0), ("ce", 0.0), ("ce", 1)]
    assert [t.id for t in found] == [1, 2, 3, 4]
    assert [t.tag.split("__")[0] for t in found] == ["t_1", "t_2", "t_3", "t_4"]


def _matches(params: dict, rule: dict) -> bool:
    return all(str(params[name.lstrip("-")]).lower() in [v.lower() for v in values] for name, values in rule.items())


@settings(max_examples=80, deadline=None)
@given(sizes=st.lists(st.integers(1, 4), min_size=1, max_size=3), flag=st.booleans(),
       picks=st.lists(st.lists(st.tuples(st.integers(0, 3), st.lists(st.integers(0, 3), min_size=1, max_size=3)),
                               min_size=1, max_size=3), max_size=12),
       sample=st.booleans(), limit=st.sampled_from([1, 3, 4096]))
def test_exclusion_keeps_exactly_the_tasks_no_rule_matches(sizes, flag, picks, sample, limit):
    """Against a brute-force filter of the whole grid: same tasks, same order, ids 1..n, the
    same count, and the same jobfile from the block fast path (inner blocks of `limit` tasks)."""
    old_limit = sweep_module._INNER_LIMIT
    sweep_module._INNER_LIMIT = limit
    try:
        _check_exclusion(sizes, flag, picks, sample)
    finally:
        sweep_module._INNER_LIMIT = old_limit


def _check_exclusion(sizes: list[int], flag: bool, picks: list, sample: bool) -> None:
    names = [f"--d{i}" for i in range(len(sizes))]
    values = [[f"v{i}{j}" for j in range(size)] for i, size in enumerate(sizes)]
    base = Sweep("c")
    for name, vals in zip(names, values):
        base.arg(name, vals)
    if flag:
        base.flag("--amp")
    dims = list(zip(names, values)) + ([("--amp", ["true", "false"])] if flag else [])
    rules = []
    for rule in picks:
        entry: dict[str, list[str]] = {}
        for d, vs in rule:
            name, vals = dims[d % len(dims)]
            entry.setdefault(name, []).extend(vals[v % len(vals)] for v in vs)
        rules.append(entry)
    full = list(base.tasks("j"))
    kept = [t for t in full if not any(_matches(t.params, rule) for rule in rules)]
    sweep = Sweep("c", [d for d in base.dimensions])
    for rule in rules:
        sweep.exclude(rule)
    if not kept:
        with pytest.raises(UsageError, match="skip every"):
            sweep.validate()
        return
    if sample:
        sweep.sample(len(kept), seed=3)
        drawn = list(sweep.tasks("j"))
        assert sorted(t.command for t in drawn) == sorted(t.command for t in kept)  # without replacement
        return
    sweep.tag()
    got = list(sweep.tasks("j"))
    assert [t.command.split(" --tag ")[0] for t in got] == [t.command for t in kept]
    assert [t.id for t in got] == list(range(1, len(kept) + 1))
    assert len(sweep) == len(kept)
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "jobs.json")
        sweep.write("j", path)
        with open(path) as handle:
            assert json.load(handle) == {str(t.id): [t.command, t.tag, t.params] for t in got}


def test_rules_end_at_or_and_at_any_other_option():
    rules = ["+exclude", "--mode", "mc", "+exclude", "--coef", "-1", "+or", "+exclude", "--coef", "1"]
    split = ["+exclude", "--mode", "mc", "+exclude", "--coef", "-1", "+tag", "+exclude", "--coef", "1"]
    one = ["+exclude", "--mode", "mc", "+exclude", "--coef", "-1", "+exclude", "--coef", "1", "+tag"]
    by_or = commands(GRID + rules + ["+tag"])
    assert by_or == commands(GRID + split)
    assert [c.split(" --tag")[0] for c in by_or] == [
        "c --mode ce --coef -1", "c --mode mc --coef 0.0", "c --mode ce --coef 0.0"]
    # one rule naming --coef twice: both must hold, so nothing is skipped
    assert len(commands(GRID + one)) == 6


def test_exclude_is_the_same_from_the_command_line_a_file_and_the_api(project):
    argv = ["+jobname", "rules", "+command", "python train.py", "+arg", "--optim", "sgd", "adam", "+arg", "--lr",
            "0.1", "0.01", "+arg", "--bs", "32", "64", "+exclude", "--optim", "sgd", "+exclude", "--lr", "0.01",
            "+or", "+exclude", "--optim", "adam", "+exclude", "--bs", "64", "+tag", "+jobfile", "cli.json", "+q"]
    assert prelaunch.run(argv) == 0
    toml = Path(ROOT, "examples", "sweeps", "rules.toml")
    if sys.version_info >= (3, 11):
        assert prelaunch.run(["+from", str(toml), "+jobfile", "toml.json", "+q"]) == 0
        assert Path("toml.json").read_bytes() == Path("cli.json").read_bytes()
    Path("rules.json").write_text(json.dumps({
        "jobname": "rules", "command": "python train.py", "tag": True,
        "args": {"--optim": ["sgd", "adam"], "--lr": [0.1, 0.01], "--bs": [32, 64]},
        "exclude": [{"--optim": "sgd", "--lr": 0.01}, {"--optim": "adam", "--bs": 64}]}))
    assert prelaunch.run(["+from", "rules.json", "+jobfile", "json.json", "+q"]) == 0
    (Sweep("python train.py").arg("--optim", ["sgd", "adam"]).arg("--lr", [0.1, 0.01]).arg("--bs", [32, 64])
     .exclude({"--optim": "sgd", "--lr": 0.01}).exclude({"--optim": "adam", "--bs": 64}).tag()
     .write("rules", "api.json"))
    cli = Path("cli.json").read_bytes()
    assert Path("json.json").read_bytes() == cli == Path("api.json").read_bytes()
    assert len(json.loads(cli)) == 4


def test_exclude_names_positionals_flags_linked_and_replicates():
    out = commands(["+command", "c", "+pos-arg", "a", "b", "+arg", "--x", "1", "2", "+link", "+arg", "--y", "3", "4",
                    "+flag", "--amp", "+repeat", "2", "+exclude", "pos1", "a", "+exclude", "--amp", "true",
                    "+or", "+exclude", "--y", "4", "+exclude", "replicate", "2"])
    assert "c a --x 1 --y 3 --amp" not in out and "c a --x 1 --y 3" in out
    assert "c b --x 2 --y 4 --amp" in out  # replicate 1 kept
    # 2 x 2 (linked) x 2 x 2 replicates = 16; "a with --amp" skips 4, "y 4 in replicate 2" 4, one task both
    assert len(out) == 16 - 4 - 4 + 1


def test_sample_with_exclusions_redraws_and_leaves_plain_sampling_unchanged():
    plain = ["+command", "c", "+arg", "--lr", "+loguniform", "1e-5", "1", "+arg", "--optim", "sgd", "adam", "rms",
             "+sample", "30", "+seed", "4"]
    before = commands(plain)
    after = commands(plain + ["+exclude", "--optim", "sgd"])
    assert len(after) == 30 and not any("sgd" in c for c in after)
    assert before[0] == commands(plain[:-4] + ["+sample", "1", "+seed", "4"])[0]  # draws as before
    grid = ["+command", "c", "+arg", "--a", "1", "2", "+arg", "--b", "1", "2", "+exclude", "--a", "1"]
    assert "left by +exclude" in usage_error(grid + ["+sample", "3"])
    assert sorted(commands(grid + ["+sample", "2"])) == ["c --a 2 --b 1", "c --a 2 --b 2"]


BAD = [
    (["+exclude", "--mood", "mc"], "no such dimension (known: --mode --coef)"),
    (["+exclude", "--mode", "mcc"], "'mcc' is not a value of --mode"),
    (["+exclude", "--mode"], "+exclude needs at least 2 value(s)"),
    (["+exclude", "--mode", "mc", "ce"], "skip every task"),
    (["+or", "+exclude", "--mode", "mc"], "+or separates two +exclude rules"),
    (["+exclude", "--mode", "mc", "+or", "+tag"], "+or must be followed by the +exclude"),
    (["+exclude", "--mode", "mc", "+or"], "+or must be followed by the +exclude"),
    (["+repeat", "0"], "at least 1"),
    (["+repeat", "x"], "+repeat N needs integers"),
    (["+arg", "--replicate", "1", "+repeat", "2"], "also names"),
    (["+no-tag-arg", "--seed", "+tag"], "+no-tag-arg --seed: no such dimension"),
    (["+tag", "+no-tag-number", "+no-tag-jobname", "+no-tag-arg", "--mode", "--coef"], "every tag would be empty"),
    (["+gin-arg", "A.b"], "+gin-arg needs at least 2 value(s)"),
    (["+override", "", "1"], "+override needs a non-empty name"),
    (["+gin-arg", "A.b", "1", "+gin-flag", " "], "+gin-flag needs the option"),
    (["+top", "3"], "+top goes with +from-results"),
    (["+by", "-acc"], "+by goes with +from-results"),
]


@pytest.mark.parametrize("extra,needle", BAD)
def test_bad_input_exits_2_with_one_line_and_writes_nothing(project, extra, needle):
    result = run_onager(["prelaunch", "+jobname", "bad", *GRID, *extra], cwd=str(project))
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert needle in result.stderr, result.stderr
    assert not (project / ".onager").exists()


# ------------------------------------------------------------------ 2. config-system arguments
NASTY = ["42", "a b", "it's", '"dqn"', "$HOME", "x\ny", "+5"]


@pytest.mark.parametrize("value", NASTY)
def test_gin_and_override_words_reach_the_program_byte_for_byte(value):
    typed = "+" + value if value.startswith("+") else value  # ++5 passes +5
    found = tasks(["+command", "prog", "+gin-arg", "Env.size", typed, "+override", "model.name", typed, "+tag"])
    [task] = found
    words = shlex.split(task.command)
    assert words[:5] == ["prog", "--gin_bindings", f"Env.size = {value}", f"model.name={value}", "--tag"]
    assert words[5] == task.tag == f"t_1__Env.size_{value}__model.name_{value}"
    assert set(task.params) == {"Env_size", "model_name"}
    assert str(task.params["Env_size"]) == value == str(task.params["model_name"])


def test_gin_and_override_are_dimensions_like_arg(tmp_path):
    out = tasks(["+command", "p", "+arg", "--lr", "1", "2", "+gin-arg", "A.b", "3", "4", "+link",
                 "+override", "c", "5", "6", "+gin-flag", "--gin_param", "+tag", "+tag-args", "A.b"])
    assert [t.command for t in out] == [
        "p --lr 1 --gin_param 'A.b = 3' c=5 --tag t_1__A.b_3", "p --lr 2 --gin_param 'A.b = 3' c=5 --tag t_2__A.b_3",
        "p --lr 1 --gin_param 'A.b = 4' c=6 --tag t_3__A.b_4", "p --lr 2 --gin_param 'A.b = 4' c=6 --tag t_4__A.b_4"]
    assert out[3].params == {"lr": 2, "A_b": 4, "c": 6}
    file_sweep = {"jobname": "t", "command": "p", "args": {"--lr": [1, 2]}, "gin_args": {"A.b": [3, 4]},
                  "overrides": {"c": [5, 6]}, "links": [["A.b", "c"]], "gin_flag": "--gin_param", "tag": True,
                  "tag_args": ["A.b"]}
    path = tmp_path / "s.json"
    path.write_text(json.dumps(file_sweep))
    assert commands(["+from", str(path)]) == [t.command for t in out]


# ------------------------------------------------------------------ 3. replicates
def test_repeat_makes_n_replicates_outermost_with_param_and_tag_suffix():
    out = tasks(["+command", "c", "+arg", "--lr", "1", "2", "+flag", "--amp", "+repeat", "3", "+tag"])
    assert len(out) == 12
    assert [t.params["replicate"] for t in out] == [1] * 4 + [2] * 4 + [3] * 4
    assert [t.command.split(" --tag")[0] for t in out[:4]] == [t.command.split(" --tag")[0] for t in out[4:8]]
    assert out[5].tag == "t_06__lr_2__+amp__rep_2"
    assert all(t.tag.endswith(f"__rep_{t.params['replicate']}") for t in out)


def test_repeat_with_sample_runs_the_same_draws_each_replicate():
    argv = ["+command", "c", "+arg", "--lr", "+uniform", "0", "1", "+sample", "3", "+seed", "2"]
    once = commands(argv)
    assert commands(argv + ["+repeat", "2"]) == once + once
    assert len(Sweep("c").arg("--x", [1, 2]).repeat(4)) == 8


def _write_script(project: Path, body: str) -> str:
    (project / "task.py").write_text(body)
    return f"{shlex.quote(sys.executable)} task.py"


def _env(project: Path) -> dict:
    return {"ONAGER_GLOBAL_CONFIG": str(project / "global.onagerconfig"),
            "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}


def test_repeat_exports_onager_replicate_and_results_group_by_aggregates(project):
    command = _write_script(project, (
        "import os, onager\n"
        "p = onager.params()\n"
        "print(os.environ['ONAGER_REPLICATE'], os.environ['ONAGER_PARAM_REPLICATE'], p['replicate'])\n"
        "onager.log_result(acc=p['lr'] * 10 + p['replicate'] ** 2)\n"))
    env = _env(project)
    assert run_onager(["prelaunch", "+jobname", "rep", "+command", command, "+arg", "--lr", "1", "2",
                       "+repeat", "3", "+q"], cwd=str(project), env=env).returncode == 0
    launched = run_onager(["launch", "--backend", "local", "--jobname", "rep", "--quiet"], cwd=str(project), env=env)
    assert launched.returncode == 0, launched.stderr
    for task_id, replicate in [(1, 1), (2, 1), (3, 2), (6, 3)]:
        log = project / ".onager" / "launches" / "rep" / "1" / "logs" / f"{task_id}.out"
        assert log.read_text().split("\n")[-2] == f"{replicate} {replicate} {replicate}"
    result = run_onager(["results", "rep", "--group-by", "--json"], cwd=str(project), env=env)
    assert result.returncode == 0, result.stderr
    groups = json.loads(result.stdout)
    assert [g["lr"] for g in groups] == [1, 2] and all("replicate" not in g for g in groups)
    for g in groups:
        values = [g["lr"] * 10 + r ** 2 for r in (1, 2, 3)]
        mean = sum(values) / 3
        assert g["count"] == 3 and g["acc_mean"] == pytest.approx(mean)
        assert g["acc_std"] == pytest.approx((sum((v - mean) ** 2 for v in values) / 2) ** 0.5)
    named = json.loads(run_onager(["results", "rep", "--group-by", "replicate", "--json"], cwd=str(project),
                                  env=env).stdout)
    assert [g["replicate"] for g in named] == [1, 2, 3]


# ------------------------------------------------------------------ 4. tag control
@pytest.mark.parametrize("extra,tag", [
    ([], "t_1__lr_1__seed_0__+amp"),
    (["+no-tag-arg", "--seed"], "t_1__lr_1__+amp"),
    (["+no-tag-arg", "--seed", "--amp"], "t_1__lr_1"),
    (["+no-tag-arg", "--seed", "+tag-args", "--lr", "--seed"], "t_1__lr_1__+amp"),
    (["+no-tag-jobname"], "1__lr_1__seed_0__+amp"),
    (["+no-tag-jobname", "+no-tag-number"], "lr_1__seed_0__+amp"),
    (["+no-tag-number"], "t__lr_1__seed_0__+amp"),
    (["+no-tag-jobname", "+no-tag-arg", "--lr", "--seed", "--amp"], "1"),
])
def test_tag_control(extra, tag):
    out = tasks(["+command", "c", "+arg", "--lr", "1", "2", "+arg", "--seed", "0", "+flag", "--amp", "+tag", *extra])
    assert out[0].tag == tag and out[0].command.endswith(" --tag " + tag)


def test_tag_control_fast_and_slow_paths_write_the_same_jobfile(project):
    """Sweep.write takes the block fast path where it can; its text must be what lines() gives."""
    for extra in (["+no-tag-jobname"], ["+no-tag-jobname", "+no-tag-number"], ["+no-tag-arg", "--lr"]):
        args = prelaunch.parse(["+jobname", "f", "+command", "c", "+arg", "--lr", "1", "2", "+arg", "--bs", "3", "4",
                                "+tag", *extra])
        args.sweep.write("f", "f.json")
        written = json.loads(Path("f.json").read_text())
        assert written == {str(t.id): [t.command, t.tag, t.params] for t in args.sweep.tasks("f")}


def test_tag_settings_in_a_sweep_file(tmp_path):
    path = tmp_path / "s.json"
    path.write_text(json.dumps({"jobname": "t", "command": "c", "args": {"--lr": [1], "--seed": [0, 1]},
                                "tag": True, "no_tag_args": ["--seed"], "tag_jobname": False, "repeat": 2}))
    out = tasks(["+from", str(path)])
    assert [t.tag for t in out] == ["1__lr_1__rep_1", "2__lr_1__rep_1", "3__lr_1__rep_2", "4__lr_1__rep_2"]


def test_old_abbreviations_still_mean_the_0_1_3_options():
    assert prelaunch._resolve("+no-tag") == "+no-tag-number"
    assert prelaunch._resolve("+no-tag-arg") == "+no-tag-arg"


# ------------------------------------------------------------------ 6. +from-results
TRAIN = """import argparse, onager
p = argparse.ArgumentParser()
p.add_argument("--lr", type=float)
p.add_argument("--epochs", type=int)
p.add_argument("--mode")
a, _ = p.parse_known_args()
if a.lr == 0.5:
    raise SystemExit(1)  # a failed task: never chosen
onager.log_result(val_acc=1 - abs(a.lr - 0.03), loss=a.lr)
"""


@pytest.fixture(scope="module")
def parent(tmp_path_factory):
    """Job J launched locally: its tasks log val_acc (best at lr 0.03) and loss (= lr)."""
    project = tmp_path_factory.mktemp("parent")
    command = _write_script(project, TRAIN)
    env = _env(project)
    made = run_onager(["prelaunch", "+jobname", "J", "+command", command, "+arg", "--lr", "0.1", "0.03", "0.01",
                       "0.003", "0.5", "+arg", "--epochs", "3", "+arg", "--mode", "a b", "+tag", "+q"],
                      cwd=str(project), env=env)
    assert made.returncode == 0, made.stderr
    run_onager(["launch", "--backend", "local", "--jobname", "J", "--quiet"], cwd=str(project), env=env)

    def call(*args: str):
        return run_onager(["prelaunch", *args], cwd=str(project), env=env)
    call.project = project
    call.command = command
    return call


def _jobfile(project: Path, job: str) -> dict:
    return json.loads((project / ".onager" / "scripts" / job / "jobs.json").read_text())


def test_from_results_takes_the_best_tasks_with_their_command_and_replaces_epochs(parent):
    result = parent("+jobname", "J2", "+from-results", "J", "+top", "25%", "+by", "-val_acc",
                    "+arg", "--epochs", "30", "+tag")
    assert result.returncode == 0, result.stderr
    jobs = _jobfile(parent.project, "J2")
    # 4 done tasks with the metric (lr 0.5 failed): 25% -> 1, the best is lr 0.03 (task 2)
    assert list(jobs) == ["1"]
    command, tag, params = jobs["1"]
    assert command == f"{parent.command} --lr 0.03 --mode 'a b' --epochs 30 --tag {tag}"
    assert tag == "J2_1__J_2__epochs_30"
    assert params == {"lr": 0.03, "mode": "a b", "epochs": 30}


def test_from_results_lowest_first_top_n_and_several_values(parent):
    result = parent("+jobname", "J3", "+from-results", "J", "+top", "2", "+by", "loss",
                    "+arg", "--epochs", "10", "20", "+arg", "--wd", "0.1", "+repeat", "2", "+q")
    assert result.returncode == 0, result.stderr
    jobs = _jobfile(parent.project, "J3")
    got = [(p["lr"], p["epochs"], p["replicate"]) for _, _, p in jobs.values()]
    assert got == [(lr, e, r) for r in (1, 2) for e in (10, 20) for lr in (0.003, 0.01)]
    assert all(c.count("--epochs") == 1 and c.endswith(f"--epochs {p['epochs']} --wd 0.1")
               for c, _, p in jobs.values())


def test_from_results_with_more_than_it_has_takes_all_with_a_warning(parent):
    result = parent("+jobname", "J4", "+from-results", "J", "+top", "9", "+by", "-val_acc", "+dry-run")
    assert result.returncode == 0
    assert len(result.stdout.splitlines()) == 4 and "has only 4 done task(s)" in result.stderr


@pytest.mark.parametrize("extra,needle", [
    (["+top", "1", "+by", "-accuracy"], "job 'J' has no metric 'accuracy' (its metrics: loss, val_acc)"),
    (["+top", "0", "+by", "-val_acc"], "+top '0'"),
    (["+top", "150%", "+by", "-val_acc"], "+top '150%'"),
    (["+top", "x", "+by", "-val_acc"], "+top 'x'"),
    (["+top", "1"], "needs +top N (or N%) and +by"),
    (["+by", "-"], "needs +top N (or N%) and +by"),
    (["+top", "1", "+by", "-"], "+by needs a metric name"),
    (["+top", "1", "+by", "-val_acc", "+command", "x"], "leave out +command"),
])
def test_from_results_bad_input_exits_2_and_writes_nothing(parent, extra, needle):
    result = parent("+jobname", "Jbad", "+from-results", "J", *extra)
    assert result.returncode == 2 and needle in result.stderr, result.stderr
    assert result.stderr.count("\n") == 1
    assert not (parent.project / ".onager" / "scripts" / "Jbad").exists()
    missing = parent("+jobname", "Jbad", "+from-results", "nojob", "+top", "1", "+by", "x")
    assert missing.returncode == 2 and "no launch of job 'nojob'" in missing.stderr


@pytest.mark.parametrize("tag_name", ["--tag", "-q", "--run tag", "it's"])
@pytest.mark.parametrize("tag", ["J_1__lr_0.1", "J_1__a b", "x'y"])
def test_untagged_takes_off_exactly_the_tag_option_and_value(tag_name, tag):
    base = "python t.py --lr 0.1 --mode 'a b'"
    assert untagged(f"{base} {quote(tag_name)} {quote(tag)}", tag) == base
    assert untagged(base, "") == base
    assert untagged(base, "other") == base


def test_parse_top():
    assert parse_top("3") == (3, None) and parse_top("25%") == (None, 25.0) and parse_top("100%") == (None, 100.0)
    for bad in ("0", "0%", "-1", "1.5", "101%", ""):
        with pytest.raises(UsageError):
            parse_top(bad)


def test_docs_run_an_example_of_every_new_option():
    """tests/test_sweep_language.py runs the console blocks of docs/sweeps.md; each option is in one."""
    import re
    text = Path(ROOT, "docs", "sweeps.md").read_text(encoding="utf-8")
    commands_shown = "\n".join(line for body in re.findall(r"^```console\n(.*?)^```", text, re.S | re.M)
                               for line in body.splitlines() if line.startswith("$ "))
    for word in ("+exclude", "+or", "+gin-arg", "+gin-flag", "+override", "+repeat", "+no-tag-arg",
                 "+no-tag-jobname", "+from-results", "+top", "+by", "--group-by", "rules.toml"):
        assert re.search(re.escape(word) + r"(\s|$)", commands_shown, re.M), word
