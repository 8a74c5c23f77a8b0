"""`+from-results J +top N|N% +by [-]METRIC`: a new job made of the best tasks of job J.

Successive halving by relaunch: each chosen task keeps its own command and parameters
(byte for byte, as it ran, read from its launch) with its old tag taken off; arguments
given again in the new prelaunch replace their old value in every task, and new ones
are added. Nothing here writes: the rows go into a `Sweep` like any other dimension.
"""
from __future__ import annotations

import math
import re
import shlex
from typing import Any

from onager.errors import UsageError
from onager.sweep import REPLICATE_KEY, Dimension, Sweep, param_key, quote

_TOP = re.compile(r"([0-9]+)(%?)", re.ASCII)
_PERCENT = re.compile(r"([0-9]+(?:\.[0-9]*)?)%", re.ASCII)


def parse_top(text: str) -> tuple[int | None, float | None]:
    """`+top 5` -> (5, None); `+top 25%` -> (None, 25.0); anything else is a usage error."""
    whole = _TOP.fullmatch(text)
    if whole and not whole.group(2) and int(whole.group(1)) >= 1:
        return int(whole.group(1)), None
    percent = _PERCENT.fullmatch(text)
    if percent and 0 < float(percent.group(1)) <= 100:
        return None, float(percent.group(1))
    raise UsageError(f"+top {text!r}: give a number of tasks (+top 5) or a percentage above 0 and "
                     "at most 100 (+top 25%)")


def parse_by(text: str) -> tuple[str, bool]:
    """`+by -val_acc` -> ("val_acc", True): best first is the highest; `+by loss`: the lowest."""
    descending = text.startswith("-")
    name = text[1:] if descending else text
    if not name:
        raise UsageError("+by needs a metric name: +by -val_acc (highest first) or +by loss (lowest first)")
    return name, descending


def _text(value: Any) -> str:
    """A params value back to the text that was in the command (see sweep.param_value)."""
    if isinstance(value, str):
        return value
    if isinstance(value, float):
        return repr(value)
    return str(value)


def untagged(command: str, tag: str) -> str:
    """The command without its trailing `<tag option> <tag>` (as Sweep.lines wrote them)."""
    if not tag:
        return command
    suffix = " " + quote(tag)
    if not command.endswith(suffix):
        return command
    head = command[:-len(suffix)]
    cut = head.rfind(" ")
    while cut > 0:
        word = head[cut + 1:]
        try:
            words = shlex.split(word)
        except ValueError:
            words = []
        if len(words) == 1 and quote(words[0]) == word:
            return head[:cut]
        cut = head.rfind(" ", 0, cut)
    return command


def _remove(command: str, text: str) -> str | None:
    """`command` without the last whole-word occurrence of `text`, or None when absent."""
    at = command.rfind(text)
    while at >= 0:
        end = at + len(text)
        if end == len(command) or command[end] == " ":
            return command[:at] + command[end:]
        at = command.rfind(text, 0, at)
    return None


def _configurations(rows: list[Any], score: dict[int, float]) -> tuple[list[Any], dict[int, float]]:
    """Replicates (+repeat) of one combination as one candidate scored by their mean, so that
    a combination is taken once: its first replicate stands for it."""
    import json
    groups: dict[str, list[Any]] = {}
    for r in rows:
        key = json.dumps({k: v for k, v in r.params.items() if k != REPLICATE_KEY}, sort_keys=True)
        groups.setdefault(key, []).append(r)
    firsts = [members[0] for members in groups.values()]
    means = {members[0].task_id: math.fsum(score[m.task_id] for m in members) / len(members)
             for members in groups.values()}
    return firsts, means


def best_rows(job: str, top: tuple[int | None, float | None], by: tuple[str, bool],
              replaced: list[tuple[str, str]], renderer: Sweep, root: str = ".",
              warnings: list[str] | None = None) -> list[tuple[str, str, dict[str, Any]]]:
    """(command, tag part, params) of the best tasks of `job`, best first.

    Only done tasks with a number for the metric count (ties keep task order); the
    replicates of a combination count as one, scored by their mean.
    `replaced` names the (kind, name) dimensions the new sweep gives again: their old
    text and parameter are taken out of each task, to be added back with the new values.
    """
    from onager import results
    from onager.index import JobIndex
    from onager.layout import iter_launch_tasks
    from onager.state import DONE
    from onager.status import select_records

    metric, descending = by
    rows = results.collect(job, None, (), root)
    known = sorted({name for row in rows for name in row.metrics if not name.startswith("@")})
    if metric not in known:
        raise UsageError(f"+by {metric}: job {job!r} has no metric {metric!r} (its metrics: "
                         f"{', '.join(known) or 'none yet: tasks log them with onager.log_result'})")
    scored = [r for r in rows if r.status == DONE and results._is_number(r.metrics.get(metric))]
    if not scored:
        raise UsageError(f"+from-results {job}: no done task of {job!r} has a number for {metric!r} yet; "
                         f"wait for it (onager wait {job}) or check onager results {job}")
    score = {r.task_id: float(r.metrics[metric]) for r in scored}
    if any(REPLICATE_KEY in r.params for r in scored):
        scored, score = _configurations(scored, score)
    scored.sort(key=lambda r: score[r.task_id], reverse=descending)
    count, percent = top
    if percent is not None:
        count = max(1, math.ceil(len(scored) * percent / 100))
    assert count is not None
    if count > len(scored) and warnings is not None:
        warnings.append(f"+top {count}: job {job!r} has only {len(scored)} done task(s) with {metric!r}; "
                        "taking them all")
    chosen = scored[:count]

    dirs = {r.launch_id: r.launch_dir for r in select_records(JobIndex(root), job)}
    wanted: dict[str, set[int]] = {}
    for r in chosen:
        wanted.setdefault(r.launch_id, set()).add(r.task_id)
    tasks: dict[tuple[str, int], tuple[str, str]] = {}
    for launch_id, ids in wanted.items():
        for task_id, command, tag, _params in iter_launch_tasks(dirs[launch_id]):
            if task_id in ids:
                tasks[(launch_id, task_id)] = (command, tag)

    out = []
    for r in chosen:
        command, tag = tasks[(r.launch_id, r.task_id)]
        command = untagged(command, tag)
        params = {k: v for k, v in r.params.items() if k != REPLICATE_KEY}
        for kind, name in replaced:
            key = param_key(name)
            if key not in params:
                continue
            value = params.pop(key)
            if value is False:
                continue  # a flag that was off: no text to take out
            dim = Dimension(kind, name, [], key)
            text = " " + quote(name) if value is True else renderer._value_choice(dim, _text(value), False).cmd
            command = _remove(command, text) or command
        out.append((command, f"__{job}_{r.task_id}", params))
    return out
