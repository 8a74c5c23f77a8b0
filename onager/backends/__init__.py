"""Backends: one small module per scheduler, found by name."""
from __future__ import annotations

import importlib
from typing import Dict, List, Type

from onager.errors import UsageError

BACKEND_MODULES: Dict[str, str] = {
    "local": "onager.backends.local",
    "slurm": "onager.backends.slurm",
    "gridengine": "onager.backends.gridengine",
    "ssh": "onager.backends.ssh",
}
NAMES: List[str] = list(BACKEND_MODULES)


def backend_class(name: str) -> "Type":
    if name not in BACKEND_MODULES:
        raise UsageError(f"unknown backend {name!r}: use one of {', '.join(NAMES)}")
    try:
        module = importlib.import_module(BACKEND_MODULES[name])
    except ImportError as exc:
        raise UsageError(f"backend {name!r} is not available in this onager ({exc})")
    return module.BACKEND


def available() -> Dict[str, "Type"]:
    """Every backend class that imports, for the CLI to register their options."""
    out = {}
    for name in NAMES:
        try:
            out[name] = backend_class(name)
        except UsageError:
            continue
    return out
