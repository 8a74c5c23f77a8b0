"""Backends: one small module per scheduler, found by name.

Backends are registered in the entry-point group `onager.backends` (name = "module:Class" or a
module with a `BACKEND` attribute); the built-ins are registered the same way in pyproject.toml,
and BUILTIN below finds them in a source checkout that was never installed. Discovery is lazy:
`onager list` on built-in launches imports no backend module and reads no package metadata.

The contract a backend from another package implements is importable from here:
`from onager.backends import Backend, LaunchInfo, Option, run, QUEUED, STARTED, STUCK`.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from onager.errors import UsageError

if TYPE_CHECKING:  # pragma: no cover
    from onager.backends.base import Backend

ENTRY_POINT_GROUP = "onager.backends"

#: the built-in backends (also registered as entry points), name -> module with BACKEND
BUILTIN: dict[str, str] = {
    "local": "onager.backends.local",
    "slurm": "onager.backends.slurm",
    "gridengine": "onager.backends.gridengine",
    "ssh": "onager.backends.ssh",
}
NAMES: list[str] = list(BUILTIN)  # the built-ins; names() adds those of other packages

#: the documented contract, re-exported lazily from base.py (importing it costs `list` time)
CONTRACT = ("Backend", "LaunchInfo", "Option", "OPTION_TYPES", "add_options", "run", "cluster_setting",
            "refuse_foreign_options", "QUEUED", "STARTED", "STUCK")
__all__ = ["BUILTIN", "ENTRY_POINT_GROUP", "backend_class", "names", "available", "declared_options",
           *CONTRACT]

_plugins: dict[str, Any] | None = None


def __getattr__(name: str) -> Any:
    if name in CONTRACT:
        from onager.backends import base
        return getattr(base, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _entry_points() -> dict[str, Any]:
    """Entry points of the group, by name (read once per process, only when needed)."""
    global _plugins
    if _plugins is None:
        found: Any = scan_entry_points(ENTRY_POINT_GROUP)
        if found is None:  # a zip on sys.path: importlib.metadata reads those
            from importlib import metadata
            try:
                found = metadata.entry_points(group=ENTRY_POINT_GROUP)  # type: ignore[call-arg]
            except TypeError:  # Python 3.9: no selection by group
                # Python 3.9's entry_points() is a dict; the checked stubs (3.10+) say otherwise
                found = metadata.entry_points().get(ENTRY_POINT_GROUP, [])  # type: ignore[attr-defined,arg-type]
        _plugins = {}
        for ep in found or ():
            _plugins.setdefault(ep.name, ep)
    return _plugins


class EntryPoint:
    """One `name = module:attr` line of an entry_points.txt, loaded like importlib.metadata's."""

    __slots__ = ("name", "value", "group")

    def __init__(self, name: str, value: str, group: str):
        self.name, self.value, self.group = name, value, group

    def load(self) -> Any:
        module_name, _, attr = self.value.partition(":")
        loaded = importlib.import_module(module_name.strip())
        for part in attr.split("[", 1)[0].strip().split(".") if attr.strip() else ():
            loaded = getattr(loaded, part)
        return loaded


def scan_entry_points(group: str) -> list[EntryPoint] | None:
    """The group's entry points from the *.dist-info and *.egg-info directories on sys.path,
    as importlib.metadata finds them but without importing it (onager.dists); None when a
    sys.path entry is a zip, which importlib.metadata reads."""
    from onager import dists

    found = dists.entry_points(group)
    return None if found is None else [EntryPoint(name, value, group) for name, value in found]


#: modules of this package that are not backends (the core and what pools share)
SUPPORT_MODULES = frozenset({"base", "array", "pool", "gpus"})


def module_backends() -> dict[str, str]:
    """Backends that are one file (or package) in onager/backends/ named after the backend:
    adding `pbspro.py` with `BACKEND = ...` is all a new built-in needs. Lists names only;
    nothing is imported until the backend is used."""
    import pkgutil
    found = {info.name: f"{__name__}.{info.name}" for info in pkgutil.iter_modules(__path__)
             if not info.name.startswith("_") and info.name not in SUPPORT_MODULES}
    return {**BUILTIN, **found}


def names() -> list[str]:
    """Every backend name: the built-ins, other files in onager/backends/, then those other
    packages register."""
    inside = module_backends()
    return NAMES + sorted(n for n in inside if n not in BUILTIN) + \
        sorted(n for n in _entry_points() if n not in inside)


def backend_class(name: str) -> type[Backend]:
    """The class of backend `name`; an unknown or broken one is one line."""
    module_name = BUILTIN.get(name)  # no scan for the built-ins: `list` stays quick
    if module_name is None and name and name.isidentifier():
        module_name = module_backends().get(name)
    if module_name is not None:
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise UsageError(f"backend {name!r} is not available in this onager ({exc})") from exc
        return module.BACKEND  # type: ignore[no-any-return]
    ep = _entry_points().get(name) if name and name.isprintable() else None
    if ep is None:
        raise UsageError(f"unknown backend {name!r}: use one of {', '.join(names())}")
    try:
        loaded = ep.load()
    except Exception as exc:  # a plugin's own bug: name it, do not crash with its traceback
        raise UsageError(f"backend {name!r} ({ep.value}) cannot be loaded: {type(exc).__name__}: {exc}; "
                         "reinstall or uninstall the package that provides it") from exc
    cls = getattr(loaded, "BACKEND", loaded)
    from onager.backends.base import Backend
    if not (isinstance(cls, type) and issubclass(cls, Backend)):
        raise UsageError(f"backend {name!r} ({ep.value}) is not an onager Backend class; "
                         "fix or uninstall the package that provides it")
    if not cls.name:
        cls.name = name
    return cls  # type: ignore[no-any-return]


def available() -> dict[str, type[Backend]]:
    """Every backend class that imports, for the CLI to register their options."""
    out = {}
    for name in names():
        try:
            out[name] = backend_class(name)
        except UsageError:
            continue
    return out


def declared_options(cls: type[Backend]) -> list[Any]:
    """A backend's typed launch options (its OPTIONS), [] for one that declares none."""
    return list(getattr(cls, "OPTIONS", ()) or ())
