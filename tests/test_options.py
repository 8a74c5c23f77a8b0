"""Typed launch options: declared once (name, type, units, default, help, config key) and used by
the parser, `onager config --write`, the docs and launch-time config defaults."""
from __future__ import annotations

import inspect
import os
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support import ROOT

from onager import config as configmod
from onager.backends import BUILTIN, backend_class, declared_options
from onager.backends.base import OPTION_TYPES, Option
from onager.errors import UsageError
from onager.options import SHARED, all_options, feature_options, resolve


def _every_declaration():
    """(owner, option) for every declaration of the built-ins, shared and feature options."""
    out = [("shared", o) for o in SHARED] + [("feature", o) for o in feature_options()]
    for name in BUILTIN:
        out += [(name, o) for o in declared_options(backend_class(name))]
    return out


# ------------------------------------------------------------------ declarations
def test_every_builtin_backend_declares_typed_options():
    for name in BUILTIN:
        options = declared_options(backend_class(name))
        assert options, f"{name} declares no options"
        for option in options:
            assert isinstance(option, Option) and option.type in OPTION_TYPES and option.help


def test_option_names_and_flags_never_collide_between_backends():
    names, flags = {}, {}
    for owner, option in _every_declaration():
        assert option.name not in names, f"{option.name} declared by {names.get(option.name)} and {owner}"
        names[option.name] = owner
        for flag in option.option_strings:
            assert flag not in flags, f"{flag} declared by {flags.get(flag)} and {owner}"
            flags[flag] = owner


def _doc_tokens() -> set:
    tokens = set()
    for name in ("cli.md", "backends.md"):
        with open(os.path.join(ROOT, "docs", name), encoding="utf-8") as handle:
            for span in re.findall(r"`([^`\n]+)`", handle.read()):
                tokens.update(span.replace(",", " ").split())
    return tokens


def test_docs_list_every_declared_option_and_config_key():
    tokens = _doc_tokens()
    missing = []
    for owner, option in _every_declaration():
        missing += [f"{owner} {flag}" for flag in option.option_strings if flag not in tokens]
        if option.config_key and option.config_key not in tokens:
            missing.append(f"{owner} config key {option.config_key}")
    assert not missing, f"declared options missing from docs/cli.md and docs/backends.md: {missing}"


def test_cli_takes_launch_precedence_from_the_library_not_argparse_internals():
    from onager import cli
    for handler in (cli.cmd_launch, cli.cmd_config):
        source = inspect.getsource(handler)
        assert "_subparsers" not in source and "_actions" not in source, handler.__name__


def test_parser_gets_each_declared_option_with_its_type():
    from onager.cli import build_parser
    parser = build_parser(only="launch")
    for _, option in _every_declaration():
        if option.type in ("flag", "bool"):
            args = parser.parse_args(["launch", "--jobname", "j", option.flag])
            assert getattr(args, option.name) is True
        else:
            value = "7" if option.type in ("int", "size", "duration") else "x"
            args = parser.parse_args(["launch", "--jobname", "j", option.flag, value])
            expected = 7 if option.type == "int" else ([value] if option.type == "list" else value)
            assert getattr(args, option.name) == expected
        assert getattr(parser.parse_args(["launch", "--jobname", "j"]), option.name) is None  # config fills in
    with pytest.raises(UsageError, match="max-array-size"):
        parser.parse_args(["launch", "--jobname", "j", "--max-array-size", "many"])


# ------------------------------------------------------------------ conversion
@given(st.text(alphabet="0123456789.KMGTkmgtiBb :-x", max_size=8))
@settings(max_examples=300, deadline=None)
def test_size_type_accepts_what_the_schedulers_accept(text):
    from onager.backends.array import mem_megabytes
    try:
        mem_megabytes(text)
        accepted = True
    except UsageError as exc:
        accepted = "below 1 MB" in str(exc)  # a size, only too small
    option = Option("mem", "size")
    if accepted:
        option.convert(text)
    else:
        with pytest.raises(UsageError, match="size like 4G"):
            option.convert(text)


@given(st.text(alphabet="0123456789:-unlimdUNx ", max_size=12))
@settings(max_examples=300, deadline=None)
def test_duration_type_accepts_what_the_schedulers_accept(text):
    from onager.backends.array import duration_seconds
    try:
        duration_seconds(text)
        accepted = True
    except UsageError:
        accepted = False
    option = Option("duration", "duration")
    if accepted:
        option.convert(text)
    else:
        with pytest.raises(UsageError, match="D-HH:MM:SS"):
            option.convert(text)


@pytest.mark.parametrize("kind,text,expected", [
    ("int", "12", 12), ("int", " 3 ", 3), ("flag", "yes", True), ("flag", "off", False),
    ("bool", "TRUE", True), ("bool", "0", False), ("str", "a b", "a b"), ("size", "1.5G", "1.5G"),
])
def test_convert_gives_the_type(kind, text, expected):
    assert Option("x", kind).convert(text) == expected


@pytest.mark.parametrize("kind,text", [("int", "4X"), ("int", "1.5"), ("flag", "maybe"), ("bool", "2"),
                                       ("size", "4X"), ("size", ""), ("duration", "1h")])
def test_convert_refuses_with_one_line(kind, text):
    with pytest.raises(UsageError) as info:
        Option("some_option", kind).convert(text)
    assert "--some-option" in str(info.value) and repr(text) in str(info.value)
    assert "\n" not in str(info.value)


def test_unknown_type_is_a_declaration_error():
    with pytest.raises(ValueError):
        Option("x", "float")


# ------------------------------------------------------------------ config --write
@pytest.mark.parametrize("section,key,value,words", [
    ("slurm", "mem", "4X", "size like 4G"),
    ("slurm", "mem_per_task", "lots", "size like 4G"),
    ("gridengine", "duration", "1h", "D-HH:MM:SS"),
    ("slurm", "max-array-size", "big", "whole number"),
    ("local", "max_tasks", "four", "whole number"),
    ("local", "detach", "sometimes", "true or false"),
    ("ssh", "retries", "1.5", "whole number"),
    ("project", "snapshot", "perhaps", "true or false"),
])
def test_config_write_refuses_a_bad_value_and_writes_nothing(onager, project, section, key, value, words):
    before = sorted(os.listdir(project))
    result = onager("config", "--write", "slurm", "header", "ok", "--write", section, key, value)
    assert result.returncode == 2, result.stderr
    line = result.stderr.strip()
    assert "\n" not in line and "Traceback" not in line
    assert words in line and f"{section} {key}" in line and repr(value) in line
    assert sorted(os.listdir(project)) == before  # not even the good item before it


@pytest.mark.parametrize("key,value", [("mem", "4G"), ("mem", "2"), ("mem", "1.5GB"), ("duration", "48:00:00"),
                                       ("duration", "UNLIMITED"), ("max_tasks", "4"), ("debug", "true"),
                                       ("mem", "")])
def test_config_write_takes_good_values(onager, project, key, value):
    result = onager("config", "--write", "slurm", key, value)
    assert result.returncode == 0, result.stderr
    assert configmod.read_section("slurm").get(key) == (value or None)


# ------------------------------------------------------------------ precedence
def test_resolve_config_defaults_under_the_command_line(project):
    configmod.write([("local", "max_tasks", "3"), ("local", "detach", "yes"), ("local", "venv", "env"),
                     ("local", "snapshot", "true"), ("project", "backend", "local")])
    got = resolve(None, {"max_tasks": None, "detach": None, "snapshot": None})
    assert got.backend == "local" and got.venv == "env"
    assert got.options == {"max_tasks": 3, "detach": True, "snapshot": True}
    assert sorted(got.from_config) == [("detach", "detach"), ("max_tasks", "max_tasks"), ("snapshot", "snapshot")]
    got = resolve("local", {"max_tasks": 5, "detach": None, "snapshot": False}, venv="other", extra=["--x"])
    assert got.options == {"max_tasks": 5, "detach": True, "snapshot": False, "extra": ["--x"]}  # --no-snapshot wins
    assert got.venv == "other" and ("max_tasks", "max_tasks") not in got.from_config


def test_resolve_refuses_a_bad_config_default_naming_the_key(project):
    configmod.write([("slurm", "max-array-size", "lots")])  # written by hand, not through onager config
    with pytest.raises(UsageError, match=r"max-array-size='lots' for slurm.*onager config --write slurm "
                                         r"max-array-size"):
        resolve("slurm", {})


def test_resolve_needs_a_known_backend(project):
    with pytest.raises(UsageError, match="launch needs --backend"):
        resolve(None, {})
    with pytest.raises(UsageError, match="unknown backend 'pbs'"):
        resolve("pbs", {})


def test_every_known_option_is_in_all_options():
    assert {o.name for _, o in _every_declaration()} == set(all_options())


def test_explain_names_the_config_key_of_the_flag_in_the_message_only(project):
    configmod.write([("slurm", "max_tasks", "4"), ("slurm", "hold-jid", "12")])
    got = resolve("slurm", {})
    other = got.explain(UsageError("--max-tasks-per-node must be at least 1 (got 0)"))
    assert "onager config" not in str(other)
    named = got.explain(UsageError("--max-tasks must be at least 1 (got 0)"))
    assert "[slurm] max_tasks" in str(named) and "onager config --write slurm max_tasks VALUE" in str(named)
    assert "[slurm] hold-jid" in str(got.explain(UsageError("bad --hold-jid 'x'")))
