"""jobs.json: one JSON object, task id -> [command, tag, params], one task per line.

0.1.3 wrote `{"1": [command, tag], ...}` and readers of that form still work on ours
(the params ride in a third element). Writing streams, so memory does not grow with
the number of tasks; reading streams too when the file is in our one-line-per-task form.
"""
from __future__ import annotations

import json
import os
from typing import Any, Dict, Iterable, Iterator, NamedTuple, Optional, TextIO

from onager.errors import OnagerError, UsageError
from onager.fsutil import atomic_writer

DEFAULT_JOBFILE = ".onager/scripts/{jobname}/jobs.json"


class JobEntry(NamedTuple):
    id: int
    command: str
    tag: str
    params: Dict[str, Any]


def jobfile_path(jobname: str, jobfile: Optional[str] = None) -> str:
    return (jobfile or DEFAULT_JOBFILE).replace("{jobname}", jobname)


def write_jobfile(path: str, lines: Iterable, keep: Iterable[JobEntry] = (),
                  echo: Optional[TextIO] = None) -> int:
    """Atomically replace `path` with `keep` entries then `lines` (sweep.Line); returns count."""
    count = 0
    with atomic_writer(path) as out:
        write = out.write
        write("{")
        sep = "\n"
        for entry in keep:
            write(f'{sep}"{entry.id}": {json.dumps([entry.command, entry.tag, entry.params], ensure_ascii=False)}')
            sep = ",\n"
            count += 1
        buffer = []
        for line in lines:
            write(f'{sep}"{line.id}": ["{line.command_json}", "{line.tag_json}", {{{line.params_json}}}]')
            sep = ",\n"
            count += 1
            if echo is not None:
                buffer.append(line.command)
                if len(buffer) >= 4096:
                    echo.write("\n".join(buffer) + "\n")
                    buffer.clear()
        if echo is not None and buffer:
            echo.write("\n".join(buffer) + "\n")
        write("\n}\n")
    return count


def _entry(key: str, value: Any, path: str) -> JobEntry:
    try:
        task_id = int(key)
        if task_id < 1 or not isinstance(value, list) or len(value) < 1 or not isinstance(value[0], str):
            raise ValueError
        tag = value[1] if len(value) > 1 and isinstance(value[1], str) else ""
        params = value[2] if len(value) > 2 and isinstance(value[2], dict) else {}
    except (ValueError, TypeError):
        raise OnagerError(f"{path}: entry {key!r} is not [command, tag]; re-run onager prelaunch to rewrite it")
    return JobEntry(task_id, value[0], tag, params)


def iter_jobfile(path: str) -> Iterator[JobEntry]:
    """Entries in file order. Streams our line form; falls back to json.load otherwise."""
    if not os.path.exists(path):
        raise UsageError(f"no jobfile at {path}: run onager prelaunch first, or pass --jobfile")
    with open(path, encoding="utf-8") as handle:
        if handle.readline().strip() == "{":
            yielded = False
            chunk = []
            for number, raw in enumerate(handle, 2):
                raw = raw.strip()
                if raw in ("}", ""):
                    continue
                try:
                    obj = json.loads("{" + raw.rstrip(",") + "}")
                except ValueError:
                    if yielded or chunk:
                        raise OnagerError(f"{path}: line {number} is not a task entry; "
                                          "re-run onager prelaunch to rewrite the jobfile")
                    break  # not one task per line (e.g. indented): parse the whole file
                for key, value in obj.items():
                    chunk.append(_entry(key, value, path))
                if len(chunk) >= 1024:
                    yield from chunk
                    yielded, chunk = True, []
            else:
                yield from chunk
                return
    yield from _read_whole(path)


def _read_whole(path: str) -> Iterator[JobEntry]:
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except ValueError as exc:
        raise OnagerError(f"{path} is not valid JSON ({exc}); re-run onager prelaunch to rewrite it")
    if not isinstance(data, dict):
        raise OnagerError(f"{path} is not a JSON object of tasks; re-run onager prelaunch to rewrite it")
    for key, value in data.items():
        yield _entry(key, value, path)


def max_id(path: str) -> int:
    return max((e.id for e in iter_jobfile(path)), default=0)
