"""Sweep files: a sweep written once in TOML or JSON, read by `onager prelaunch +from FILE`.

A file is turned into a `Sweep` through the same methods the command line and the
Python API use, so the three produce the same jobfile. The schema (docs/sweeps.md):

    jobname = "tom"                  # optional here if given as +jobname
    command = "python train.py"      # optional here if given as +command
    tag = "--run-tag"                # or true for --tag; absent or false: no tag
    tag_args = ["--lr"]              # optional: which args go into the tag
    tag_number = true                # optional: false leaves the task number out
    jobfile = "path/jobs.json"       # optional
    pos_args = [["a", "b"]]          # optional: one value spec per positional argument
    flags = ["--amp"]                # optional: each flag with and without
    links = [["--lr", "--wd"]]       # optional: zipped dimensions (positionals: pos1, pos2...)
    sample = 20                      # optional: random search, N tasks
    seed = 0                         # optional: seed of sample
    repeat = 3                       # optional: replicates of every task
    no_tag_args = ["--seed"]         # optional: dimensions left out of the tag
    tag_jobname = false              # optional: false leaves the job name out of tags
    gin_flag = "--gin_bindings"      # optional: the option of gin_args bindings
    exclude = [{"--mode" = "mc", "--coef" = [-1, 1]}]   # optional: one table per rule

    [args]                           # a grid, first entry fastest, as on the command line
    "--lr" = [0.1, 0.01]
    "--wd" = {logspace = [1e-4, 1e-1, 4]}
    "--cuda" = []                    # no values: on every command

    [gin_args]                       # +gin-arg: NAME = value spec, after the args
    "GridWorldEnv.size" = [42, 84]

    [overrides]                      # +override: KEY = value spec, after the gin args
    "optimizer.lr" = [0.1, 0.01]

A value spec is a list of values (strings, numbers, booleans, or generator tables), a
single value, or a generator table with one key: range, linspace, logspace, files,
uniform, loguniform, randint.
"""
from __future__ import annotations

import json
import os
import sys
from typing import Any

from onager.errors import UsageError
from onager.sweep import Files, Linspace, Logspace, LogUniform, RandInt, Range, Sweep, Uniform, Values

KEYS = ("jobname", "command", "tag", "tag_args", "tag_number", "jobfile", "args", "pos_args",
        "flags", "links", "sample", "seed", "gin_args", "gin_flag", "overrides", "exclude", "repeat",
        "no_tag_args", "tag_jobname")

_GENERATORS = {
    "range": (Range, 2, 3), "linspace": (Linspace, 3, 3), "logspace": (Logspace, 3, 3),
    "files": (Files, 1, 1), "uniform": (Uniform, 2, 2), "loguniform": (LogUniform, 2, 2),
    "randint": (RandInt, 2, 2),
}


def _read(path: str) -> dict[str, Any]:
    if not os.path.isfile(path):
        raise UsageError(f"no sweep file at {path}: check the path given to +from")
    with open(path, "rb") as handle:
        data = handle.read()
    is_json = path.lower().endswith(".json") or (
        not path.lower().endswith(".toml") and data.lstrip().startswith(b"{"))
    if is_json:
        try:
            loaded = json.loads(data.decode("utf-8"))
        except (ValueError, UnicodeDecodeError) as exc:
            raise UsageError(f"{path} is not valid JSON ({exc}); fix the file") from exc
    else:
        toml = _toml_module()
        try:
            loaded = toml.loads(data.decode("utf-8"))
        except (ValueError, UnicodeDecodeError) as exc:  # tomllib.TOMLDecodeError is a ValueError
            raise UsageError(f"{path} is not valid TOML ({exc}); fix the file") from exc
    if not isinstance(loaded, dict):
        raise UsageError(f"{path} must hold a table/object of settings (jobname, command, args...)")
    return loaded


def _toml_module() -> Any:
    if sys.version_info >= (3, 11):
        import tomllib
        return tomllib
    try:
        import tomli  # type: ignore[import-not-found]
        return tomli
    except ImportError:
        raise UsageError("reading a .toml sweep file on Python < 3.11 needs tomli: "
                         "pip install 'onager[toml]' (or write the sweep file as .json)") from None


def _spec(value: Any, where: str) -> Any:
    """A value spec -> what Sweep.arg/pos_arg accept (plain values and generators)."""
    if isinstance(value, dict):
        return _generator(value, where)
    if isinstance(value, list):
        out = []
        for item in value:
            if isinstance(item, dict):
                out.append(_generator(item, where))
            elif isinstance(item, list):
                raise UsageError(f"{where}: a value list cannot hold a list ({item!r}); flatten it")
            else:
                out.append(item)
        return out
    return [value]


def _generator(table: dict[str, Any], where: str) -> Values:
    if len(table) != 1 or next(iter(table)) not in _GENERATORS:
        raise UsageError(f"{where}: a generator is a table with one key among "
                         f"{', '.join(_GENERATORS)}, e.g. {{logspace = [1e-4, 1e-1, 4]}}; got {table!r}")
    name, params = next(iter(table.items()))
    cls, low, high = _GENERATORS[name]
    if not isinstance(params, list):
        params = [params]
    if not low <= len(params) <= high:
        count = low if low == high else f"{low} or {high}"
        raise UsageError(f"{where}: {name} needs a list of {count} values, got {params!r}")
    return cls(*params)


def _strings(value: Any, key: str, path: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise UsageError(f"{path}: {key} must be a list of strings, got {value!r}")
    return value


def load(path: str) -> tuple[Sweep, dict[str, Any]]:
    """The sweep described by `path`, and its other settings (jobname, jobfile)."""
    data = _read(path)
    unknown = [k for k in data if k not in KEYS]
    if unknown:
        raise UsageError(f"{path}: unknown key {unknown[0]!r}; the keys are {', '.join(KEYS)}")
    command = data.get("command", "")
    if not isinstance(command, str):
        raise UsageError(f"{path}: command must be a string, e.g. command = \"python train.py\"")
    sweep = Sweep(command)
    for values in data.get("pos_args", []) if isinstance(data.get("pos_args", []), list) else [None]:
        if values is None:
            raise UsageError(f"{path}: pos_args must be a list of value lists, e.g. pos_args = [[\"a\", \"b\"]]")
        sweep.pos_arg(_spec(values, f"{path}: pos_args"))
    args = data.get("args", {})
    if not isinstance(args, dict):
        raise UsageError(f"{path}: args must be a table of name = values, e.g. [args] \"--lr\" = [0.1, 0.01]")
    for name, values in args.items():
        sweep.arg(name, _spec(values, f"{path}: args {name}"))
    for key, method in (("gin_args", sweep.gin_arg), ("overrides", sweep.override)):
        table = data.get(key, {})
        if not isinstance(table, dict):
            raise UsageError(f"{path}: {key} must be a table of name = values, e.g. [{key}] \"a.b\" = [1, 2]")
        for name, values in table.items():
            method(name, _spec(values, f"{path}: {key} {name}"))
    if "gin_flag" in data:
        if not isinstance(data["gin_flag"], str):
            raise UsageError(f"{path}: gin_flag must be a string such as \"--gin_bindings\"")
        sweep.gin_flag = data["gin_flag"]
    rules = data.get("exclude", [])
    if not isinstance(rules, list) or not all(isinstance(rule, dict) and rule for rule in rules):
        raise UsageError(f"{path}: exclude must be a list of rules, each a table of name = values, "
                         "e.g. exclude = [{\"--mode\" = \"mc\", \"--coef\" = [-1, 1]}]")
    for rule in rules:
        sweep.exclude({name: _spec(values, f"{path}: exclude {name}") for name, values in rule.items()})
    for name in _strings(data.get("flags", []), "flags", path):
        sweep.flag(name)
    links = data.get("links", [])
    if not isinstance(links, list):
        raise UsageError(f"{path}: links must be a list of name lists, e.g. links = [[\"--lr\", \"--wd\"]]")
    for group in links:
        sweep.link(*_strings(group, "each entry of links", path))
    tag = data.get("tag", False)
    tag_number = data.get("tag_number", True)
    if not isinstance(tag_number, bool):
        raise UsageError(f"{path}: tag_number must be true or false")
    tag_args = data.get("tag_args")
    if tag_args is not None:
        tag_args = _strings(tag_args, "tag_args", path)
    if tag is True:
        sweep.tag("--tag", tag_args, tag_number)
    elif isinstance(tag, str) and tag:
        sweep.tag(tag, tag_args, tag_number)
    elif tag is not False:
        raise UsageError(f"{path}: tag must be an argument name such as \"--run-tag\", or true for --tag")
    else:
        sweep.tag_args, sweep.tag_number = tag_args, tag_number
    sweep.tag_skip = _strings(data.get("no_tag_args", []), "no_tag_args", path)
    tag_jobname = data.get("tag_jobname", True)
    if not isinstance(tag_jobname, bool):
        raise UsageError(f"{path}: tag_jobname must be true or false")
    sweep.tag_jobname = tag_jobname
    if "repeat" in data:
        if isinstance(data["repeat"], bool):
            raise UsageError(f"{path}: repeat must be a whole number of replicates, e.g. repeat = 3")
        sweep.repeat(data["repeat"])
    if "sample" in data:
        sweep.sample(data["sample"], data.get("seed", 0))
    elif "seed" in data:
        raise UsageError(f"{path}: seed needs sample = N (the seed of the random draws)")
    settings: dict[str, Any] = {}
    for key in ("jobname", "jobfile"):
        if key in data:
            if not isinstance(data[key], str):
                raise UsageError(f"{path}: {key} must be a string")
            settings[key] = data[key]
    return sweep, settings
