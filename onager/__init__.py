"""onager: launch hyper-parameter sweeps and experiment batches with plain files."""
from __future__ import annotations

__version__ = "0.2.0"

_SWEEP_NAMES = ("Sweep", "Range", "Linspace", "Logspace", "Files", "Uniform", "LogUniform", "RandInt")
__all__ = [*_SWEEP_NAMES, "params", "log_result", "should_prune", "launch", "Launch", "launches", "__version__"]


def __getattr__(name):  # lazy, so `onager --help` stays fast
    if name in _SWEEP_NAMES:
        from onager import sweep
        return getattr(sweep, name)
    if name == "params":
        from onager.task import params
        return params
    if name == "log_result":
        from onager.task import log_result
        return log_result
    if name == "should_prune":
        from onager.tune import should_prune
        return should_prune
    if name in ("Launch", "launches"):
        from onager import api
        return getattr(api, name)
    if name == "launch":  # the module onager.launch, callable as onager.api.launch (see there)
        import importlib
        return importlib.import_module("onager.launch")
    raise AttributeError(name)
