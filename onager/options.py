"""Launch options: the ones every backend shares, and how config defaults, the command line
and `--no-X` combine. A library function, so the CLI and Python callers get the same answer
without reaching into argparse."""
from __future__ import annotations

import importlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from onager import config as configmod
from onager.backends import available, backend_class, declared_options, names
from onager.backends.base import Option
from onager.errors import UsageError

#: launch options every backend reads (a backend that cannot honour one refuses it)
SHARED: tuple[Option, ...] = (
    Option("cpus", "int", units="CPUs", metavar="CPUS", default=1,
           help="CPUs of each allocation (one task's, unless --tasks-per-node), as in 0.1.3"),
    Option("cpus_per_task", "int", units="CPUs", metavar="CPUS_PER_TASK",
           help="CPUs of each task: with --tasks-per-node, the allocation gets this times the tasks at once"),
    Option("gpus", help="GPUs of each allocation (slurm/gridengine); local/ssh: GPU ids 0,1,2 or a count"),
    Option("mem", "size", units="GB", metavar="MEM", default="2G",
           help="memory of each allocation (one task's, unless --tasks-per-node): 4G, 500M, or a number of GB"),
    Option("mem_per_task", "size", units="GB", metavar="MEM_PER_TASK",
           help="memory of each task: with --tasks-per-node, the allocation gets this times the tasks at once"),
    Option("duration", "duration", metavar="DURATION", default="0-01:00:00",
           help="time limit: 30, 48:00:00, 2-00:00:00"),
    Option("max_tasks", "int", flags=("--max-tasks", "--maxtasks", "-max"), units="tasks", metavar="MAX_TASKS",
           help="most tasks running at once (local default: number of CPUs)"),
    Option("tasks_per_node", "int", units="tasks", metavar="TASKS_PER_NODE",
           help="tasks run together in one allocation"),
    Option("max_tasks_per_node", "int", units="tasks", metavar="MAX_TASKS_PER_NODE",
           help="most tasks at once in one allocation"),
    Option("debug", "flag", flags=("--debug", "--test"),
           help="0.1.3's short test job: slurm partition debug (at most 2 h), gridengine -l test "
                "(at most 10 min, 1 CPU); a given --partition/--queue wins"),
)

#: modules adding launch options that every backend shares: LAUNCH_OPTIONS and add_launch_arguments
LAUNCH_OPTION_MODULES: list[str] = ["onager.provenance", "onager.recovery", "onager.tune"]

#: config keys that are not launch options
PLAIN_KEYS = ("header", "footer", "venv", "backend")


def new_options(cls: Any, seen: dict[str, Option]) -> list[Option]:
    """`cls`'s declared options not in `seen` (then added to it). One a backend re-declares as
    it is (a plugin wrapping local reuses LocalBackend.OPTIONS) is the same option; the same
    name declared differently is refused: option names never collide between backends."""
    if not seen:
        seen.update((o.name, o) for o in SHARED)
    fresh = []
    for option in declared_options(cls):
        if option.name in seen:
            if seen[option.name] != option:
                raise UsageError(f"backend {cls.name!r} declares --{option.name.replace('_', '-')}, which another "
                                 "backend declares differently; rename it in that backend's package")
            continue
        seen[option.name] = option
        fresh.append(option)
    return fresh


def feature_options() -> list[Option]:
    """Options of the feature modules (provenance), where they import."""
    out: list[Option] = []
    for module in LAUNCH_OPTION_MODULES:
        try:
            out.extend(getattr(importlib.import_module(module), "LAUNCH_OPTIONS", ()))
        except ImportError:
            continue
    return out


def all_options() -> dict[str, Option]:
    """Every declared launch option by name: shared, each backend's, the feature modules'."""
    out: dict[str, Option] = {o.name: o for o in SHARED}
    for cls in available().values():
        for option in declared_options(cls):
            out.setdefault(option.name, option)
    for option in feature_options():
        out.setdefault(option.name, option)
    return out


def config_keys() -> list[str]:
    """Keys `onager config --write` accepts in any section (`-` or `_`)."""
    keys = set(PLAIN_KEYS) | {o.name for o in all_options().values() if o.config}
    for cls in available().values():
        keys |= set(getattr(cls, "config_keys", ()) or ())
    return sorted(keys | {k.replace("_", "-") for k in keys})


def check_config_items(items: Iterable[tuple[str, str, str]]) -> None:
    """Refuse an unknown section or key, or a value of the wrong type, with one line, before
    `onager config --write` changes anything."""
    items = list(items)
    allowed = set(config_keys())
    declared = all_options()
    for section, key, value in items:
        check_section(section)
        if key not in allowed:
            import difflib
            close = difflib.get_close_matches(key, sorted(allowed), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise UsageError(f"unknown config key {key!r} for {section}{hint}: use header, footer or a launch "
                             "option name")
        option = declared.get(key.replace("-", "_"))
        if option is not None and value != "":
            option.convert(value, f"value for {section} {key}:")


check_section = configmod.check_section


def _refuse_plugin_options(backend: str, options: dict[str, Any]) -> None:
    """An option only other packages' backends declare, given to one that does not declare it,
    is refused with one line rather than ignored (the built-ins' own are refused by
    base.refuse_foreign_options, with their messages)."""
    from onager.backends import BUILTIN
    builtin = {o.name for n in BUILTIN for o in declared_options(backend_class(n))} | {o.name for o in SHARED}
    mine = {o.name for o in declared_options(backend_class(backend))}
    for cls in available().values():
        if cls.name in BUILTIN or cls.name == backend:
            continue
        for option in declared_options(cls):
            if option.name in options and option.name not in mine and option.name not in builtin:
                raise UsageError(f"{backend} has no {option.flag} (an option of the {cls.name} backend); "
                                 f"drop it or use --backend {cls.name}")


@dataclass
class Resolved:
    """What a launch runs with: the backend, its options and venv, and where each default came from."""

    backend: str
    options: dict[str, Any]
    venv: str | None = None
    from_config: list[tuple[str, str]] = field(default_factory=list)  # (option name, config key)

    def explain(self, exc: UsageError) -> UsageError:
        """`exc`, naming the config setting its bad value came from, if one did."""
        for name, key in self.from_config:
            option = _known().get(name)
            flags = [f for f in (option.option_strings if option else ()) if f.startswith("--")]
            flags.append("--" + name.replace("_", "-"))
            # whole flags only: --max-tasks is not named by a message about --max-tasks-per-node
            if any(re.search(re.escape(flag) + r"(?![\w-])", str(exc)) for flag in flags):
                return UsageError(f"{exc} (the value is onager config's [{self.backend}] {key}: change it with "
                                  f"onager config --write {self.backend} {key} VALUE)")
        return exc


_KNOWN: dict[str, Option] | None = None


def _known() -> dict[str, Option]:
    global _KNOWN
    if _KNOWN is None:
        _KNOWN = all_options()
    return _KNOWN


def resolve(backend: str | None, given: dict[str, Any], venv: str | None = None,
            extra: Sequence[str] = (), root: str = ".") -> Resolved:
    """Config defaults under the command line: `given` holds the options as parsed (None where
    not given; `--no-X` gives False and so wins over config). The backend comes from `backend`
    or `[project] backend`; each default of its section is converted to the option's type here,
    so a bad one is refused before anything is written."""
    project = configmod.read_section("project", root)
    name = backend or project.get("backend")
    if not name:
        raise UsageError("launch needs --backend local|slurm|gridengine|ssh (or onager config --write project "
                         "backend NAME)")
    if name not in names():
        raise UsageError(f"unknown backend {name!r}: use one of {', '.join(names())}")
    backend_class(name)  # a plugin that does not load: one line now, not mid-launch
    defaults = configmod.read_section(name, root)
    known = _known()
    values = dict(given)
    from_config: list[tuple[str, str]] = []
    for key, text in defaults.items():
        dest = key.replace("-", "_")
        option = known.get(dest)
        if option is None or values.get(dest) is not None:
            continue
        from_config.append((dest, key))
        try:
            # str-like values go to the backend as they are: it names what it cannot honour
            values[dest] = option.convert(text) if option.type in ("int", "flag", "bool") else text
        except UsageError:
            raise UsageError(f"config value {key}={text!r} for {name} is not valid; fix it with "
                             f"onager config --write {name} {key} VALUE") from None
    options = {k: v for k, v in values.items() if v is not None}
    _refuse_plugin_options(name, options)
    if extra:
        options["extra"] = list(extra)
    return Resolved(name, options, venv if venv is not None else defaults.get("venv"), from_config)
