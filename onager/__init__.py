"""onager: launch hyper-parameter sweeps and experiment batches with plain files."""
from __future__ import annotations

__version__ = "0.2.0"

__all__ = ["Sweep", "params", "log_result", "__version__"]


def __getattr__(name):  # lazy, so `onager --help` stays fast
    if name == "Sweep":
        from onager.sweep import Sweep
        return Sweep
    if name == "params":
        from onager.task import params
        return params
    if name == "log_result":
        from onager.task import log_result
        return log_result
    raise AttributeError(name)
