"""What a running task can ask onager: its parameters, and a place to report results."""
from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

from onager.layout import LaunchPaths

_WARNED = False


def _task() -> tuple:
    launch_dir = os.environ.get("ONAGER_LAUNCH_DIR")
    task_id = os.environ.get("ONAGER_TASK_ID")
    if not launch_dir or not task_id:
        raise RuntimeError("not inside an onager task (ONAGER_LAUNCH_DIR / ONAGER_TASK_ID unset)")
    return launch_dir, int(task_id)


def params() -> dict[str, Any]:
    """This task's parameter values as typed (e.g. {'lr': 0.1, 'seed': '007', 'amp': True}).

    A value is a number only where the number prints back as exactly the text typed
    (`0.1`, `32`; +range/+linspace values always are); `007`, `1e5` or `٣` stay strings.
    """
    launch_dir, task_id = _task()
    path = LaunchPaths(launch_dir).tasks_jsonl
    prefix = f"[{task_id},"
    try:
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                if line.startswith(prefix):
                    return json.loads(line)[3]
    except FileNotFoundError:
        pass
    # no launch snapshot readable here (e.g. a remote host): fall back to the environment
    # (values as typed: `007` and `1e5` stay text, as in the jobfile; flags are true/false)
    from onager.sweep import param_value
    out: dict[str, Any] = {}
    for key, value in os.environ.items():
        if key.startswith("ONAGER_PARAM_"):
            out[key[13:].lower()] = value == "true" if value in ("true", "false") else param_value(value)
    return out


def _plain(value: Any) -> Any:
    """numpy scalars and 0-d tensors as plain numbers (default=str would turn them into text)."""
    item = getattr(value, "item", None)
    if callable(item):
        try:
            return item()
        except (TypeError, ValueError):
            pass
    tolist = getattr(value, "tolist", None)
    if callable(tolist):
        return tolist()
    try:
        return float(value)
    except (TypeError, ValueError):
        return str(value)


def log_result(**metrics: Any) -> None:
    """Append one line of metrics for this task (a single O_APPEND write: safe to call often).

    `onager results` shows the last value logged for each name. The line also carries
    "@time" (epoch seconds), which is bookkeeping and never shown as a metric. In a
    +tune trial, `step=S` (kept as a metric too) also reports the tuned metric at step S
    to the study, for `onager.should_prune()`.
    """
    if not metrics:
        return
    if "step" in metrics and os.environ.get("ONAGER_TUNE_TRIAL"):
        from onager.tune import report
        report(metrics["step"], metrics)
    if not (os.environ.get("ONAGER_LAUNCH_DIR") and os.environ.get("ONAGER_TASK_ID")):
        # run by hand, outside onager: the program still works, the metrics go nowhere
        global _WARNED
        if not _WARNED:
            _WARNED = True
            print("onager.log_result: not inside an onager task, metrics are not recorded", file=sys.stderr)
        return
    launch_dir, task_id = _task()
    paths = LaunchPaths(launch_dir)
    os.makedirs(paths.results_dir, exist_ok=True)
    attempt = os.environ.get("ONAGER_ATTEMPT", "")
    stamp: dict[str, Any] = {"@time": time.time()}
    if attempt.isascii() and attempt.isdigit():
        stamp["@attempt"] = int(attempt)  # `results` shows the latest attempt's values only
    line = json.dumps({**stamp, **metrics}, default=_plain) + "\n"
    data = line.encode("utf-8")
    fd = os.open(paths.results(task_id), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o666)
    try:
        while data:  # a regular file takes it whole; loop in case a signal cut the write short
            written = os.write(fd, data)
            data = data[written:]
    finally:
        os.close(fd)
