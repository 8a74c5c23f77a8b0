"""Adaptive search with no server: `+tune N +metric min:NAME` in prelaunch, `--agents K` in launch.

Prelaunch writes `tune.json` beside jobs.json: the search space (the sweep's dimensions,
lists as categorical choices), N, the metric and the sampler. jobs.json itself holds N
random draws of the same space (what `+sample N +seed S` writes), so 0.1.3 readers and a
launch without `--agents` still run it, as random search.

`onager launch --agents K` builds a launch whose only frozen tasks are K agents (ids N+1..N+K);
each agent (`onager.agent`) asks Optuna for a trial, runs it as task `trial number + 1`
through the launch's wrapper.sh (claims, attempts, end states, logs, params as for any task),
reads the metric the task logged with `onager.log_result` and tells the study. The study is
an Optuna JournalStorage file in the first tuning launch's directory, locked with O_EXCL lock
files (safe on NFS); launching again continues it until N trials have been asked.

Optuna is an optional extra (`pip install 'onager[tune]'`); nothing here imports it unless a
launch, an agent or a trial needs it.
"""
from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from onager.errors import UsageError
from onager.layout import TUNE_JSON, LaunchPaths

SAMPLERS = ("tpe", "random", "cmaes")
#: the file beside jobs.json (and in each tuning launch directory) that holds the search
SPEC_NAME = TUNE_JSON
#: inside a launch directory: the study's journal, its lock, and what the agents share
TUNE_DIR = "tune"
JOURNAL = "study.journal"
STUDY_NAME = "onager"
#: a pruned trial's end: its own end state once state.END_STATES names it, until then
#: `failed` with this reason
PRUNED = "pruned"
INSTALL_HINT = "tuning needs Optuna: pip install 'onager[tune]'"


def _launch_options() -> tuple[Any, ...]:
    from onager.backends.base import Option
    return (Option("agents", "int", metavar="K", config=False,
                   help="run the +tune search of the job: K agents (array elements or pool slots) each "
                        "ask for the next trial and run it as a task, until N trials (docs/tuning.md)"),)


def __getattr__(name: str) -> Any:
    if name == "LAUNCH_OPTIONS":  # declared lazily, as provenance's
        return _launch_options()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def add_launch_arguments(parser: Any) -> None:
    """`onager launch --agents K`, for every backend."""
    group = parser.add_argument_group("adaptive search (+tune)")
    for option in _launch_options():
        option.add_to(group)


def pruned_state() -> str:
    """`pruned` where state.END_STATES knows it, else `failed` (the reason says pruned)."""
    from onager import state
    return PRUNED if PRUNED in state.END_STATES else state.FAILED


# ----------------------------------------------------------------- prelaunch side
def spec_path(jobfile: str) -> str:
    """`tune.json` beside a jobs.json; `<file>.tune.json` beside a jobfile named otherwise."""
    if os.path.basename(jobfile) == "jobs.json":
        return os.path.join(os.path.dirname(jobfile), SPEC_NAME)
    return jobfile + "." + SPEC_NAME


def _positive(text: str, what: str) -> int:
    if not (text.isascii() and text.isdigit()) or int(text) < 1:
        raise UsageError(f"{what} needs a positive whole number, got {text!r}")
    return int(text)


def parse_metric(text: str) -> tuple[str, str]:
    """`min:loss` / `max:acc` -> (optuna direction, metric name)."""
    goal, sep, name = text.partition(":")
    directions = {"min": "minimize", "max": "maximize"}
    if not sep or goal not in directions or not name.strip() or name.startswith("@"):
        raise UsageError(f"+metric needs min:NAME or max:NAME (the name the task gives onager.log_result), "
                         f"got {text!r}")
    return directions[goal], name


def tune_spec(sweep: Any, options: dict[str, str], sample: str | None, seed: str | None) -> dict[str, Any]:
    """Check `+tune N +metric ... [+sampler S]` against a built Sweep and return the spec to
    store; the Sweep is set to draw min(N, grid) random placeholders for jobs.json."""
    from onager.sweep import _integer
    if "+tune" not in options:
        given = " ".join(sorted(options))
        raise UsageError(f"{given} needs +tune N (the number of trials of the search)")
    if sample is not None:
        raise UsageError("+tune N replaces +sample N: drop +sample (jobs.json gets N random draws as placeholders)")
    trials = _positive(options["+tune"], "+tune N")
    if "+metric" not in options:
        raise UsageError("+tune needs +metric min:NAME or max:NAME (what the task logs with onager.log_result)")
    direction, metric = parse_metric(options["+metric"])
    sampler = options.get("+sampler", "tpe")
    if sampler not in SAMPLERS:
        raise UsageError(f"+sampler needs one of {', '.join(SAMPLERS)}, got {sampler!r}")
    seed_value = _integer(seed, "+seed S") if seed is not None else 0
    if seed_value < 0:
        raise UsageError(f"+seed needs a non-negative integer, got {seed_value}")
    if not sweep.dimensions:
        raise UsageError("+tune needs a search space: +arg --x +uniform A B, +loguniform, +randint or a list")
    dims, axes = sweep._plan()
    placeholders = trials
    if all(d.dist is None for d in dims):
        placeholders = min(trials, sweep._grid_size(dims, axes))
    sweep.sample(placeholders, seed_value)
    spec = {"version": 1, "trials": trials, "metric": metric, "direction": direction, "sampler": sampler,
            "seed": seed_value, "command": sweep.command, "tag_name": sweep.tag_name,
            "tag_args": sweep.tag_args, "tag_number": sweep.tag_number,
            "dimensions": [_dimension_json(d) for d in sweep.dimensions]}
    Space(spec)  # checks the space can be built (categorical labels, links)
    return spec


def _dimension_json(dim: Any) -> dict[str, Any]:
    dist = None
    if dim.dist is not None:
        dist = [type(dim.dist).__name__, dim.dist.a, dim.dist.b]
    return {"kind": dim.kind, "name": dim.name, "values": list(dim.values), "key": dim.key,
            "tagged": dim.tagged, "group": dim.group, "dist": dist}


def write_spec(jobfile: str, spec: dict[str, Any] | None) -> None:
    """Store the spec beside the jobfile just written (atomic), or remove a stale one."""
    from onager.fsutil import atomic_write
    path = spec_path(jobfile)
    if spec is None:
        if os.path.exists(path):
            os.remove(path)
        return
    atomic_write(path, json.dumps(spec, indent=1, sort_keys=True) + "\n")


def read_spec(jobfile: str) -> dict[str, Any] | None:
    path = spec_path(jobfile)
    try:
        with open(path, encoding="utf-8") as handle:
            spec = json.load(handle)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise UsageError(f"{path} is unreadable ({exc}): run onager prelaunch with +tune again") from exc
    if not isinstance(spec, dict) or spec.get("version") != 1:
        raise UsageError(f"{path} is not a tune spec this onager reads: run onager prelaunch with +tune again")
    return spec


# ----------------------------------------------------------------- the space
@dataclass
class Param:
    """One Optuna parameter: an axis of the sweep (a dimension, or a linked group)."""

    name: str
    kind: str                   # float, int or categorical
    low: float = 0.0
    high: float = 0.0
    log: bool = False
    labels: list[str] = field(default_factory=list)  # categorical: one per choice index


class Space:
    """The sweep of a spec, and its axes as Optuna parameters; turns a trial's values into a
    task (command, tag, params) exactly as prelaunch would have written it."""

    def __init__(self, spec: dict[str, Any]) -> None:
        from onager.sweep import Dimension, LogUniform, RandInt, Sweep, Uniform
        dists = {"Uniform": Uniform, "LogUniform": LogUniform, "RandInt": RandInt}
        dims = []
        for d in spec["dimensions"]:
            dist = dists[d["dist"][0]](d["dist"][1], d["dist"][2]) if d.get("dist") else None
            dims.append(Dimension(d["kind"], d["name"], list(d["values"]), d["key"], d["tagged"], dist, d["group"]))
        self.spec = spec
        self.trials: int = spec["trials"]
        self.sweep = Sweep(spec["command"], dims, spec.get("tag_name"), spec.get("tag_args"),
                           spec.get("tag_number", True))
        self.dims, self.axes = self.sweep._plan()
        self.finite = [None if d.dist is not None else self.sweep.choices(d) for d in self.dims]
        self.params: list[Param] = []
        used: set[str] = set()
        for axis in self.axes:
            first = self.dims[axis[0]]
            name = "+".join(self.dims[p].key for p in axis)
            if name in used:
                raise UsageError(f"+tune: two dimensions are both named {name!r}; give them different names")
            used.add(name)
            if isinstance(first.dist, RandInt):
                self.params.append(Param(name, "int", first.dist.a, first.dist.b))
            elif isinstance(first.dist, (Uniform, LogUniform)):
                self.params.append(Param(name, "float", first.dist.a, first.dist.b, isinstance(first.dist, LogUniform)))
            else:
                labels = [",".join(self._label(self.dims[p], i) for p in axis)
                          for i in range(len(self.finite[axis[0]] or []))]
                if len(set(labels)) != len(labels):
                    labels = [f"{i}:{label}" for i, label in enumerate(labels)]
                self.params.append(Param(name, "categorical", labels=labels))

    def _label(self, dim: Any, i: int) -> str:
        if dim.kind == "flag":
            return ("on", "off")[i]
        return dim.values[i] if dim.values else "on"

    def fingerprint(self) -> str:
        """What must match for a later launch to continue a study: space, metric, command."""
        import hashlib
        keep = {k: self.spec.get(k) for k in ("metric", "direction", "command", "tag_name", "tag_args",
                                               "tag_number", "dimensions")}
        return hashlib.sha256(json.dumps(keep, sort_keys=True).encode()).hexdigest()[:16]

    def suggest(self, trial: Any) -> None:
        """Ask the trial for a value of every parameter (Optuna's define-by-run)."""
        for p in self.params:
            if p.kind == "float":
                trial.suggest_float(p.name, p.low, p.high, log=p.log)
            elif p.kind == "int":
                trial.suggest_int(p.name, int(p.low), int(p.high))
            else:
                trial.suggest_categorical(p.name, p.labels)

    def task(self, task_id: int, values: dict[str, Any], jobname: str) -> tuple[str, str, dict[str, Any]]:
        """(command, tag, params) of the task that runs these trial values, as prelaunch writes them."""
        from onager.sweep import _EMPTY, _SAFE, _fmt, _join_all, _js, quote
        picks = [_EMPTY] * len(self.dims)
        for p, axis in zip(self.params, self.axes):
            first = self.dims[axis[0]]
            value = values[p.name]
            if p.kind != "categorical":
                text = str(int(value)) if p.kind == "int" else _fmt(float(value))
                picks[axis[0]] = self.sweep._value_choice(first, text, self.sweep._tagged(first))
                continue
            i = p.labels.index(value)
            for position in axis:
                picks[position] = self.finite[position][i]  # type: ignore[index]
        choice = _join_all(picks)
        sweep = self.sweep
        tagging = sweep.tag_name is not None
        prefix = prefix_json = tag_arg = tag_arg_json = ""
        width = 0
        if tagging:
            tag_arg = " " + quote(sweep.tag_name or "") + " "
            tag_arg_json = _js(tag_arg)
            prefix = jobname + "_" if sweep.tag_number else jobname
            width = len(str(self.trials)) if sweep.tag_number else 0
            prefix_json = _js(prefix)
        safe = choice.tag_safe and bool(_SAFE.fullmatch(prefix or "x"))
        line = next(sweep._emit(iter([choice]), task_id, sweep.command, _js(sweep.command), tagging, prefix,
                                prefix_json, width, safe, tag_arg, tag_arg_json))
        return (line.command, json.loads('"' + line.tag_json + '"'), json.loads("{" + line.params_json + "}"))


# ----------------------------------------------------------------- optuna
def require_optuna(sampler: str = "tpe") -> Any:
    """The optuna module, or a one-line UsageError naming the extra to install."""
    try:
        import optuna
    except ImportError:
        raise UsageError(INSTALL_HINT) from None
    if sampler == "cmaes":
        import importlib.util
        if importlib.util.find_spec("cmaes") is None:
            raise UsageError("+sampler cmaes needs the cmaes package: pip install 'onager[tune]'")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def storage(journal: str) -> Any:
    """The study's JournalStorage: one append-only file, locked with O_EXCL lock files (NFS-safe)."""
    optuna = require_optuna()
    from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock
    return optuna.storages.JournalStorage(JournalFileBackend(journal, lock_obj=JournalFileOpenLock(journal)))


def make_sampler(name: str, seed: int) -> Any:
    optuna = require_optuna(name)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed, constant_liar=True)


def pruner() -> Any:
    """Median pruning: a trial whose intermediate value is worse than the median of the
    earlier trials at the same step stops (after 5 trials have finished)."""
    return require_optuna().pruners.MedianPruner(n_startup_trials=5)


def open_study(journal: str, direction: str, fingerprint: str, sampler: Any = None) -> Any:
    """Create (once, concurrent agents included) or load the study in `journal`."""
    optuna = require_optuna()
    study = optuna.create_study(storage=storage(journal), study_name=STUDY_NAME, direction=direction,
                                sampler=sampler, pruner=pruner(), load_if_exists=True)
    if study.user_attrs.get("onager_space") != fingerprint:
        study.set_user_attr("onager_space", fingerprint)
    return study


class AskLock:
    """One agent at a time counts the trials and asks for the next one (an O_EXCL lock file
    with a grace period, as Optuna's journal lock: it works on NFS)."""

    def __init__(self, path: str) -> None:
        from optuna.storages.journal import JournalFileOpenLock
        self.lock = JournalFileOpenLock(path, grace_period=60)

    def __enter__(self) -> AskLock:
        while not self.lock.acquire():
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self.lock.release()


# ----------------------------------------------------------------- launch side
def journal_of(launch_dir: str, data: dict[str, Any]) -> str:
    """The study file a tuning launch uses (its own, or the earlier launch's it continues)."""
    return data.get("journal") or os.path.join(launch_dir, TUNE_DIR, JOURNAL)


def read_launch(launch_dir: str) -> dict[str, Any] | None:
    """A launch directory's tune.json, or None for a launch that is not tuning."""
    try:
        with open(os.path.join(launch_dir, SPEC_NAME), encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def trial_answers(launch_dir: str, scheduler: dict[int, str], states: dict[int, Any]) -> dict[int, str]:
    """The scheduler knows the agents (array elements or pool slots), not the trials they run:
    a trial whose attempt started and has not ended runs while one of its launch's agents does."""
    data = read_launch(launch_dir)
    if data is None or not data.get("agents"):
        return scheduler
    first, last = data["agents"]
    active = any(scheduler.get(i, "").split(" (")[0] in ("pending", "running") for i in range(first, last + 1))
    if not active:
        return scheduler
    out = dict(scheduler)
    for task_id, st in states.items():
        if task_id < first and task_id not in out and st.start is not None and st.end is None:
            out[task_id] = "running"
    return out


# ----------------------------------------------------------------- the task side
_TRIAL: Any = None


def _trial() -> Any:
    """This process's trial, when it runs as a tuning trial (the agent exports where it is)."""
    global _TRIAL
    if _TRIAL is not None:
        return _TRIAL
    journal = os.environ.get("ONAGER_TUNE_JOURNAL")
    number = os.environ.get("ONAGER_TUNE_TRIAL")
    if not journal or not number or not number.isdigit():
        return None
    optuna = require_optuna()
    study = optuna.load_study(study_name=STUDY_NAME, storage=storage(journal), pruner=pruner())
    trial_id = study._storage.get_trial_id_from_study_id_trial_number(study._study_id, int(number))
    _TRIAL = optuna.trial.Trial(study, trial_id)
    return _TRIAL


def report(step: Any, metrics: dict[str, Any]) -> None:
    """An intermediate value for the pruner: the tuned metric at `step` (log_result(step=...))."""
    import math
    name = os.environ.get("ONAGER_TUNE_METRIC")
    if not name or name not in metrics or _trial() is None:
        return
    try:
        value, at = float(metrics[name]), int(step)
    except (TypeError, ValueError):
        return
    if math.isfinite(value):
        try:
            _trial().report(value, at)
        except Exception as exc:  # noqa: BLE001  (a step reported twice: the first value stands)
            print(f"onager: could not report {name}={value} at step {at}: {exc}", file=sys.stderr)


def should_prune() -> bool:
    """True when the study's pruner says this trial should stop (then return or exit: the
    agent records it as pruned). Always False outside a tuning trial."""
    trial = _trial()
    if trial is None:
        return False
    if not trial.should_prune():
        return False
    launch_dir, task_id = os.environ.get("ONAGER_LAUNCH_DIR", ""), os.environ.get("ONAGER_TASK_ID", "")
    if launch_dir and task_id.isdigit():
        marker = pruned_marker(launch_dir, int(task_id))
        os.makedirs(os.path.dirname(marker), exist_ok=True)
        with open(marker, "w", encoding="utf-8") as handle:
            handle.write(os.environ.get("ONAGER_ATTEMPT", "") + "\n")
    return True


def pruned_marker(launch_dir: str, task_id: int) -> str:
    return os.path.join(launch_dir, TUNE_DIR, "pruned", str(task_id))


def last_metric(launch_dir: str, task_id: int, attempt: int, name: str) -> float | None:
    """The last value of `name` that this attempt of the task logged (None: none, or not a number)."""
    import math
    value = None
    try:
        with open(LaunchPaths(launch_dir).results(task_id), encoding="utf-8") as handle:
            for line in handle:
                try:
                    item = json.loads(line)
                except ValueError:
                    continue
                if isinstance(item, dict) and name in item and item.get("@attempt", attempt) == attempt:
                    value = item[name]
    except FileNotFoundError:
        return None
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None
