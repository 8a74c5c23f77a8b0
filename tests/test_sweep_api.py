"""The Python API (`onager.Sweep`): same jobfiles as the CLI, write(), and params inside a task."""
from __future__ import annotations

import json
import os
import shlex
import sys
import tempfile
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from onager import prelaunch
from onager.errors import UsageError
from onager.sweep import Linspace, Logspace, LogUniform, RandInt, Range, Sweep, Uniform, Written


def cli_jobfile(argv: list[str], path: str) -> bytes:
    """Run `onager prelaunch ARGV +jobfile PATH` in-process; the jobfile's bytes."""
    with open(os.devnull, "w") as out, open(os.devnull, "w") as err:
        prelaunch.run(argv + ["+jobfile", path, "+quiet"], out=out, err=err)
    with open(path, "rb") as handle:
        return handle.read()


def test_issue_example_matches_the_cli(project):
    written = Sweep("python train.py").arg("--lr", [0.1, 0.01]).flag("--amp").tag().write("x")
    assert written == Written(".onager/scripts/x/jobs.json", 4, 4, False)
    api = (project / ".onager/scripts/x/jobs.json").read_bytes()
    cli = cli_jobfile(["+jobname", "x", "+command", "python train.py", "+arg", "--lr", "0.1", "0.01",
                       "+flag", "--amp", "+tag"], str(project / "cli.json"))
    assert api == cli
    jobs = json.loads(api)
    assert jobs["1"] == ["python train.py --lr 0.1 --amp --tag x_1__lr_0.1__+amp", "x_1__lr_0.1__+amp",
                         {"lr": 0.1, "amp": True}]
    assert jobs["4"][2] == {"lr": 0.01, "amp": False}


def test_public_import_and_generators():
    import onager
    assert onager.Sweep is Sweep
    s = Sweep("run").arg("--lr", Logspace(1e-4, 1e-1, 4)).arg("--seed", range(2)).pos_arg(Range(0, 2))
    assert len(s) == 4 * 2 * 2
    assert [t.command for t in s.tasks("j")][:2] == ["run 0 --lr 0.0001 --seed 0", "run 1 --lr 0.0001 --seed 0"]
    # a lone string or number is one value, not a list of characters
    assert [t.command for t in Sweep("run").arg("--name", "abc").arg("--n", 3).tasks("j")] == ["run --name abc --n 3"]


def test_write_append_and_custom_jobfile(project):
    s = Sweep("echo").arg("--n", [1, 2]).tag()
    first = s.write("j")
    again = Sweep("echo").arg("--n", [3]).tag().write("j", append=True)
    assert (first.count, again.count, again.added, again.existed) == (2, 3, 1, True)
    jobs = json.loads((project / ".onager/scripts/j/jobs.json").read_text())
    assert jobs["3"][:2] == ["echo --n 3 --tag j_3__n_3", "j_3__n_3"]
    replaced = s.write("j")
    assert (replaced.count, replaced.existed) == (2, True)
    custom = s.write("k", jobfile=str(project / "sub" / "{jobname}.json"))
    assert custom.path.endswith("sub/k.json") and (project / "sub" / "k.json").exists()
    assert not (project / ".onager/scripts/k").exists()


def test_write_refuses_bad_sweeps_before_touching_the_disk(project):
    with pytest.raises(UsageError, match="bad job name"):
        Sweep("x").arg("--a", [1]).write("../escape")
    with pytest.raises(UsageError, match="--a has 2 value.s. but --b has 1"):
        Sweep("x").arg("--a", [1, 2]).arg("--b", [1], link=True).write("j")
    with pytest.raises(UsageError, match="add \\+sample N"):
        Sweep("x").arg("--a", Uniform(0, 1)).write("j")
    assert not (project / ".onager").exists()


def test_api_link_and_sample_match_the_cli(project):
    api = Sweep("t").arg("--lr", [0.1, 0.01]).arg("--wd", [1, 2], link=True).arg("--x", LogUniform(1e-3, 1)) \
        .sample(5, seed=3).tag()
    api.write("j", jobfile=str(project / "api.json"))
    cli = cli_jobfile(["+jobname", "j", "+command", "t", "+arg", "--lr", "0.1", "0.01", "+link", "+arg", "--wd", "1",
                       "2", "+arg", "--x", "+loguniform", "1e-3", "1", "+sample", "5", "+seed", "3", "+tag"],
                      str(project / "cli.json"))
    assert (project / "api.json").read_bytes() == cli


def test_link_by_name_and_errors():
    s = Sweep("t").arg("--a", [1, 2]).flag("--f").arg("--b", [3, 4]).link("--a", "--b")
    assert [t.command for t in s.tasks("j")] == ["t --a 1 --b 3 --f", "t --a 2 --b 4 --f", "t --a 1 --b 3",
                                                 "t --a 2 --b 4"]
    with pytest.raises(UsageError, match="flags are not linked"):
        Sweep("t").arg("--a", [1, 2]).flag("--f").link("--a", "--f")
    with pytest.raises(UsageError, match="no such dimension .known: --a."):
        Sweep("t").arg("--a", [1, 2]).link("--a", "--zz")
    with pytest.raises(UsageError, match="at least two"):
        Sweep("t").arg("--a", [1, 2]).link("--a")
    with pytest.raises(UsageError, match="there is none"):
        Sweep("t").arg("--a", [1], link=True)


# ------------------------------------------------------------------ property: CLI == API
NAMES = ["--lr", "--bs", "--x_y", "-k", "--batch-size"]
VALUE = st.one_of(
    st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), min_size=0,
            max_size=6),
    st.sampled_from(["+5", "++", "a b", "it's", "$HOME", "1e-4", "-1", "{}", "é"]),
    st.integers(-5, 1000),
    st.floats(allow_nan=False, allow_infinity=False, width=32),
)


def _cli_value(value: Any) -> str:
    text = value if isinstance(value, str) else repr(value) if isinstance(value, float) else str(value)
    return "+" + text if text.startswith("+") else text  # a value starting with + is written ++value


@st.composite
def sweeps(draw) -> tuple[list[str], Any]:
    """A random sweep as (CLI argv, function building the same sweep with the API)."""
    argv: list[str] = []
    steps = []
    sizes: list[int | None] = []  # size of each added dimension, None for flags
    sampling = draw(st.booleans()) and draw(st.booleans())
    for _ in range(draw(st.integers(0, 4))):
        kind = draw(st.sampled_from(["arg", "arg", "pos", "flag"]))
        link = bool(sizes) and sizes[-1] is not None and kind != "flag" and draw(st.booleans())
        if kind == "flag":
            name = draw(st.sampled_from(["--amp", "--v", "--no-cuda"]))
            argv += ["+flag", name]
            steps.append(("flag", name, None, False))
            sizes.append(None)
            continue
        if link:
            values: list[Any] = draw(st.lists(VALUE, min_size=sizes[-1], max_size=sizes[-1]))
            gen_tokens: list[str] = [_cli_value(v) for v in values]
            api_values: Any = values
        else:
            gen = draw(st.sampled_from(["plain", "range", "linspace", "logspace", "mixed"]
                                       + (["uniform", "randint"] if sampling else [])))
            if gen == "plain":
                api_values = draw(st.lists(VALUE, min_size=0 if kind == "arg" else 1, max_size=3))
                gen_tokens = [_cli_value(v) for v in api_values]
            elif gen == "range":
                a, n, step = draw(st.integers(-3, 3)), draw(st.integers(1, 3)), draw(st.sampled_from([1, 2, -1]))
                api_values = Range(a, a + n * step, step)
                gen_tokens = ["+range", str(a), str(a + n * step), str(step)]
            elif gen in ("linspace", "logspace"):
                a = draw(st.sampled_from(["0.001", "1", "2.5", "1e-4"]))
                b = draw(st.sampled_from(["0.1", "10", "3", "1e2"]))
                n = draw(st.integers(1, 3))
                api_values = (Linspace if gen == "linspace" else Logspace)(a, b, n)
                gen_tokens = ["+" + gen, a, b, str(n)]
            elif gen == "mixed":
                first = draw(st.sampled_from(["x", "1e-4", "7"]))
                api_values = [first, Linspace(0, 1, 3), "z"]
                gen_tokens = [first, "+linspace", "0", "1", "3", "z"]
            elif gen == "uniform":
                api_values = Uniform(0, 2)
                gen_tokens = ["+uniform", "0", "2"]
            else:
                api_values = RandInt(1, 9)
                gen_tokens = ["+randint", "1", "9"]
            values = None
        if link:
            argv.append("+link")
        if kind == "arg":
            name = draw(st.sampled_from(NAMES))
            argv += ["+arg", name] + gen_tokens
        else:
            name = ""
            argv += ["+pos-arg"] + gen_tokens
        steps.append((kind, name, api_values, link))
        probe = Sweep("p")
        (probe.arg(name, api_values) if kind == "arg" else probe.pos_arg(api_values))
        dim = probe.dimensions[0]
        sizes.append(None if dim.dist is not None else len(dim.values) or 1)
    tag = draw(st.sampled_from([None, "--tag", "--run-tag"]))
    tag_args = draw(st.sampled_from([None, ["--lr"], ["--bs", "--nope"]])) if tag else None
    number = draw(st.booleans()) if tag else True
    if tag:
        argv += ["+tag", tag] + (["+tag-args"] + tag_args if tag_args else []) + ([] if number else ["+no-tag-number"])
    sample = seed = None
    if sampling:
        sample, seed = draw(st.integers(1, 6)), draw(st.integers(0, 2 ** 40))
        argv += ["+sample", str(sample), "+seed", str(seed)]

    def build() -> Sweep:
        sweep = Sweep("prog 'a b'")
        for kind, name, api_values, link in steps:
            if kind == "flag":
                sweep.flag(name)
            elif kind == "arg":
                sweep.arg(name, api_values, link=link)
            else:
                sweep.pos_arg(api_values, link=link)
        if tag:
            sweep.tag(tag, tag_args, number=number)
        if sample is not None:
            sweep.sample(sample, seed)
        return sweep

    return ["+jobname", "job", "+command", "prog 'a b'"] + argv, build


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sweeps())
def test_cli_and_api_write_identical_jobfiles(case):
    argv, build = case
    with tempfile.TemporaryDirectory() as tmp:
        cli_path, api_path = os.path.join(tmp, "cli.json"), os.path.join(tmp, "api.json")
        try:
            cli = cli_jobfile(argv, cli_path)
        except UsageError as exc:
            with pytest.raises(UsageError) as info:
                sweep = build()
                sweep.check()
                sweep.write("job", jobfile=api_path)
            assert str(info.value) == str(exc)
            assert not os.path.exists(cli_path) and not os.path.exists(api_path)
            event("refused")
            return
        event("written")
        written = build().write("job", jobfile=api_path)
        with open(api_path, "rb") as handle:
            assert handle.read() == cli
        entries = json.loads(cli)
        assert written.count == len(entries)
        for _key, (command, _tag, _params) in entries.items():
            assert command.startswith("prog 'a b'")
            assert shlex.split(command)[:2] == ["prog", "a b"]


# ------------------------------------------------------------------ params inside a running task
TASK = """import json, os, onager
print("PARAMS " + json.dumps(onager.params(), sort_keys=True))
print("ENV_LR " + os.environ["ONAGER_PARAM_LR"])
print("ENV_BATCH_SIZE " + os.environ["ONAGER_PARAM_BATCH_SIZE"])
print("ENV_POS1 " + os.environ["ONAGER_PARAM_POS1"])
"""


def test_params_inside_a_task_on_the_local_backend(onager, project):
    (project / "task.py").write_text(TASK)
    command = f"{shlex.quote(sys.executable)} task.py"
    result = onager("prelaunch", "+jobname", "p", "+command", command, "+pos-arg", "it's",
                    "+arg", "--lr", "+logspace", "1e-4", "1e-2", "3", "+link", "+arg", "--batch-size", "16", "32", "64",
                    "+tag", "+quiet")
    assert result.returncode == 0, result.stderr
    result = onager("launch", "--backend", "local", "--jobname", "p")
    assert result.returncode == 0, result.stderr
    logs = project / ".onager/launches/p/1/logs"
    expected = {1: (0.0001, 16), 2: (0.001, 32), 3: (0.01, 64)}
    for task_id, (lr, bs) in expected.items():
        out = (logs / f"{task_id}.out").read_text()
        lines = dict(line.split(" ", 1) for line in out.splitlines() if line.split(" ", 1)[0] in
                     ("PARAMS", "ENV_LR", "ENV_BATCH_SIZE", "ENV_POS1"))
        assert json.loads(lines["PARAMS"]) == {"pos1": "it's", "lr": lr, "batch_size": bs}, out
        assert lines["ENV_LR"] == repr(lr)
        assert lines["ENV_BATCH_SIZE"] == str(bs)
        assert lines["ENV_POS1"] == "it's"
