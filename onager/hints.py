"""Hints for failures with a known cure, shown by `list` and `logs` on stderr.

A task that dies with `No module named 'numpy'` while the Python that ran `onager launch`
imports numpy fine ran outside the user's environment (a scheduler node starts a fresh
shell): the cure is `--venv`, or activating the environment in a config header.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterable, Sequence
from typing import Any

_NO_MODULE = re.compile(r"No module named '([A-Za-z_][A-Za-z0-9_.]*)'")
#: how many failed tasks' stderr `list` reads at most, so a huge failed launch stays quick
MAX_CHECKED = 50
TAIL_BYTES = 4096
_CHECK = "import importlib.util, sys; sys.exit(0 if importlib.util.find_spec(sys.argv[1]) else 1)"


def missing_module(text: str) -> str | None:
    """The top-level module of the last `No module named 'x.y'` in `text`, or None."""
    found = _NO_MODULE.findall(text)
    return found[-1].split(".")[0] if found else None


def _tail(path: str) -> str:
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - TAIL_BYTES))
            return handle.read().decode("utf-8", "replace")
    except OSError:
        return ""


def _launch_python(launch_dir: str) -> tuple[str, str] | None:
    """(python executable, environment prefix) that ran `onager launch`, when the launch used
    no --venv and that Python is still here."""
    from onager.provenance import load_provenance
    prov = load_provenance(launch_dir) or {}
    if prov.get("venv"):
        return None  # the tasks activated an environment already: not this mistake
    python = prov.get("python") or {}
    executable, prefix = python.get("executable"), python.get("prefix") or ""
    if not isinstance(executable, str) or not os.path.isfile(executable):
        return None
    return executable, str(prefix)


def importable(python: str, module: str) -> bool:
    """Whether `python` can import `module` (run from / so that only installed modules count)."""
    try:
        proc = subprocess.run([python, "-c", _CHECK, module], cwd="/", stdin=subprocess.DEVNULL,
                              capture_output=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return False
    return proc.returncode == 0


def hint_text(key: str, ids: Sequence[int], module: str, python: str, prefix: str, backend: str) -> str:
    from onager.tasklist import Tasklist
    which = f"task {ids[0]}" if len(ids) == 1 else f"tasks {Tasklist.from_ids(ids)}"
    if prefix and os.path.isfile(os.path.join(prefix, "bin", "activate")):
        venv, activate = prefix, f"source {os.path.join(prefix, 'bin', 'activate')}"
    else:
        venv, activate = "DIR", "source DIR/bin/activate"
    import shlex
    return (f"onager: hint: {which} of {key} failed with \"No module named '{module}'\", which {python} "
            f"(the Python that launched them) can import: the tasks ran outside that environment; launch with "
            f"--venv {shlex.quote(venv)}, or activate it in a config header: onager config --write {backend} "
            f"header {shlex.quote(activate)}")


def module_hints(rows: Iterable[Any]) -> list[str]:
    """One hint per (launch, missing module) among the failed rows that the launch's Python has."""
    from onager.layout import LaunchPaths
    groups: dict[tuple[str, str], list[int]] = {}
    where: dict[str, tuple[str, str, str]] = {}  # launch key -> dir, backend
    checked = 0
    for row in rows:
        if row.status != "failed" or checked >= MAX_CHECKED:
            continue
        checked += 1
        key = f"{row.jobname}/{row.launch_id}"
        if key not in where:
            from onager.index import JobIndex
            record = next((r for r in JobIndex().find(row.jobname, None, row.launch_id)), None)
            if record is None:
                continue
            where[key] = (record.launch_dir, record.backend, key)
        module = missing_module(_tail(LaunchPaths(where[key][0]).log(row.task_id, "err")))
        if module:
            groups.setdefault((key, module), []).append(row.task_id)
    hints = []
    for (key, module), ids in groups.items():
        launch_dir, backend, _ = where[key]
        found = _launch_python(launch_dir)
        if found is None or not importable(found[0], module):
            continue
        hints.append(hint_text(key, sorted(ids), module, found[0], found[1], backend))
    return hints


def print_hints(rows: Iterable[Any]) -> None:
    """For `onager list`: the hints on stderr, after the table."""
    for line in module_hints(rows):
        print(line, file=sys.stderr)


def print_task_hint(record: Any, task_id: int) -> None:
    """For `onager logs`: the hint for one task, if it failed that way."""
    from onager.layout import LaunchPaths
    from onager.state import read_states
    state = read_states(record.launch_dir).get(task_id)
    if state is None or not state.exit_code:
        return
    module = missing_module(_tail(LaunchPaths(record.launch_dir).log(task_id, "err")))
    found = _launch_python(record.launch_dir) if module else None
    if module and found is not None and importable(found[0], module):
        print(hint_text(record.key, [task_id], module, found[0], found[1], record.backend), file=sys.stderr)
