"""Launches: choose tasks, freeze them into an immutable launch directory, submit.

A launch directory holds everything its tasks will ever read (tasks, offsets index,
wrapper.sh), so a later prelaunch or launch of the same job never changes what an
earlier launch runs or shows.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import time
from typing import Any, Dict, Iterator, List, Optional, Set, Tuple, Union

from onager import config as configmod
from onager.backends import backend_class
from onager.backends.base import Backend, LaunchInfo
from onager.errors import OnagerError, UsageError
from onager.fsutil import executable_mode
from onager.index import JobIndex, LaunchRecord
from onager.jobfile import JobEntry, iter_jobfile, jobfile_path
from onager.scrub import scrub_argv, scrub_value
from onager.state import RERUN_FAILED, RERUN_UNFINISHED
from onager.sweep import check_jobname, param_key
from onager.tasklist import Tasklist
from onager.wrapper import index_record, task_record, wrapper_text

Selection = Union[None, Tasklist, Set[int]]


def launches_root(jobname: str, root: str = ".") -> str:
    return os.path.join(root, ".onager", "launches", jobname)


def _env_name(key: str) -> str:
    return param_key(key).upper()


def select(jobname: str, spec: Optional[str], root: str = ".") -> Tuple[Selection, str]:
    """Turn `--tasklist` (ids, `failed`, `unfinished`, or None) into task ids."""
    if spec is None:
        return None, "all tasks"
    word = spec.strip().lower()
    if word in ("failed", "unfinished"):
        from onager.status import job_task_statuses
        wanted = RERUN_FAILED if word == "failed" else RERUN_UNFINISHED
        statuses = job_task_statuses(jobname, root)
        ids = {i for i, (status, _) in statuses.items() if status in wanted}
        if not ids:
            counts: Dict[str, int] = {}
            for status, _ in statuses.values():
                counts[status] = counts.get(status, 0) + 1
            summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "no tasks"
            raise OnagerError(f"no {word} task in job {jobname!r} to relaunch ({summary})")
        return ids, f"{word} tasks"
    return Tasklist.parse(spec), f"tasks {spec}"


def cancel_stuck(jobname: str, root: str = ".") -> None:
    """Delete tasks a scheduler holds in an error state (SGE's Eqw) before they are relaunched:
    left queued, an admin could release them and they would run twice."""
    from onager.state import ERROR
    from onager.status import job_task_statuses
    stuck: Dict[str, Tuple[Any, List[int]]] = {}
    for task_id, (status, record) in job_task_statuses(jobname, root).items():
        if status == ERROR:
            stuck.setdefault(record.key, (record, []))[1].append(task_id)
    for record, ids in stuck.values():
        backend_class(record.backend)(record.options).cancel(record, Tasklist.from_ids(ids))


def _entries(jobname: str, jobfile: Optional[str], command: Optional[str]) -> Iterator[JobEntry]:
    if command is not None:
        yield JobEntry(1, command, "", {})
        return
    yield from iter_jobfile(jobfile_path(jobname, jobfile))


def _selected(entries: Iterator[JobEntry], selection: Selection) -> Iterator[JobEntry]:
    if selection is None:
        yield from entries
        return
    members = selection
    if isinstance(selection, Tasklist) and len(selection.blocks) > 64:
        members = set(selection)
    for entry in entries:
        if entry.id in members:
            yield entry


def _check_all_found(found: int, selection: Selection, seen: Set[int], jobname: str) -> None:
    if selection is None:
        if found == 0:
            raise UsageError(f"job {jobname!r} has no tasks: run onager prelaunch again")
        return
    wanted = len(selection)
    if found != wanted:
        missing = Tasklist.from_ids(i for i in selection if i not in seen)
        raise UsageError(f"tasks {missing} are not in job {jobname!r}: check --tasklist against onager list")


def _new_launch_dir(jobname: str, root: str) -> Tuple[str, str]:
    """Allocate the next launch id by atomic mkdir: concurrent launches never collide."""
    parent = launches_root(jobname, root)
    os.makedirs(parent, exist_ok=True)
    existing = [int(n) for n in os.listdir(parent) if n.isdigit()]
    n = max(existing, default=0) + 1
    while True:
        path = os.path.join(parent, str(n))
        try:
            os.mkdir(path)
            return str(n), os.path.abspath(path)
        except FileExistsError:
            n += 1


def write_tasks(launch_dir: str, entries: Iterator[JobEntry]) -> Tuple[int, List[int]]:
    """tasks.sh (records), tasks.idx (fixed-width offsets by id), tasks.jsonl (for list)."""
    count = 0
    ids: List[int] = []
    offset = 0
    next_index_pos = 0
    env_names: Dict[str, str] = {}
    encode = json.JSONEncoder(ensure_ascii=False).encode
    with open(os.path.join(launch_dir, "tasks.sh"), "wb") as records, \
            open(os.path.join(launch_dir, "tasks.idx"), "wb") as index, \
            open(os.path.join(launch_dir, "tasks.jsonl"), "w", encoding="utf-8") as listing:
        for entry in entries:
            env = {}
            for key, value in entry.params.items():
                name = env_names.get(key)
                if name is None:
                    name = env_names[key] = _env_name(key)
                env[name] = value if isinstance(value, str) else encode(value)
            data = task_record(entry.id, entry.command, entry.tag, env).encode("utf-8")
            records.write(data)
            position = (entry.id - 1) * 24
            if position != next_index_pos:
                index.seek(position)
            index.write(index_record(offset, len(data)))
            next_index_pos = position + 24
            offset += len(data)
            listing.write(encode([entry.id, entry.command, entry.tag, entry.params]) + "\n")
            count += 1
            ids.append(entry.id)
    return count, ids


def backend_options(backend_name: str, cli_options: Dict[str, Any], root: str = ".") -> Dict[str, Any]:
    """CLI options over config defaults: `onager config --write slurm partition gpu`."""
    merged = {k: v for k, v in configmod.read_section(backend_name, root).items()
              if k not in ("header", "footer")}
    merged.update({k: v for k, v in cli_options.items() if v is not None})
    return merged


def prepare(jobname: str, backend_name: str, options: Dict[str, Any], tasklist: Optional[str] = None,
            jobfile: Optional[str] = None, command: Optional[str] = None, root: str = ".",
            dry_run: bool = False, workdir: Optional[str] = None, venv: Optional[str] = None,
            argv: Optional[List[str]] = None) -> Tuple[Backend, LaunchInfo]:
    """Everything up to submission. In dry-run, nothing is written."""
    check_jobname(jobname)
    backend: Backend = backend_class(backend_name)(options)
    backend.check_options()
    selection, _ = select(jobname, tasklist, root)
    section = configmod.read_section(backend_name, root)
    header, footer = section.get("header", ""), section.get("footer", "")
    workdir = os.path.abspath(workdir or os.getcwd())
    if venv and not os.path.isabs(venv):
        venv = os.path.join(workdir, venv)  # as before, relative to the workdir, which a snapshot replaces
    entries = _selected(_entries(jobname, jobfile, command), selection)
    if dry_run:
        try:
            from onager import provenance
        except ImportError:
            provenance = None
        if provenance is not None:
            provenance.check_launch(workdir, options, root)  # --require-clean, snapshot size: refuse as a launch would
        seen: Set[int] = set()
        ids = []
        for e in entries:
            ids.append(e.id)
        seen.update(ids)
        _check_all_found(len(ids), selection, seen, jobname)
        info = LaunchInfo(jobname, "DRY-RUN", os.path.abspath(os.path.join(launches_root(jobname, root), "DRY-RUN")),
                          "", Tasklist.from_ids(ids), len(ids), workdir, options, header, footer)
        info.wrapper = os.path.join(info.launch_dir, "wrapper.sh")
        return backend, info

    if tasklist is not None and tasklist.strip().lower() in ("failed", "unfinished"):
        cancel_stuck(jobname, root)
    configmod.ensure_onager_dir(root)
    launch_id, launch_dir = _new_launch_dir(jobname, root)
    try:
        os.mkdir(os.path.join(launch_dir, "logs"))
        os.mkdir(os.path.join(launch_dir, "state"))
        count, ids = write_tasks(launch_dir, entries)
        workdir = _provenance_hook(launch_dir, workdir, options, backend=backend_name,
                                   argv=argv or sys.argv, venv=venv, root=root)
        _check_all_found(count, selection, set(ids) if selection is not None and count != len(selection) else set(), jobname)
        tasks = Tasklist.from_ids(ids)
        wrapper = os.path.join(launch_dir, "wrapper.sh")
        with open(wrapper, "w", encoding="utf-8") as handle:
            handle.write(wrapper_text(launch_dir, jobname, launch_id, workdir, header, footer, venv))
        os.chmod(wrapper, executable_mode())
        info = LaunchInfo(jobname, launch_id, launch_dir, wrapper, tasks, count, workdir, options, header, footer)
        meta = {"jobname": jobname, "launch_id": launch_id, "backend": backend_name,
                "tasklist": str(tasks), "count": count, "created": time.time(),
                "workdir": workdir, "options": _jsonable(options),
                "argv": scrub_argv(argv or sys.argv),
                "jobfile": None if command is not None else jobfile_path(jobname, jobfile),
                "venv": venv}
        with open(os.path.join(launch_dir, "launch.json"), "w", encoding="utf-8") as handle:
            json.dump(meta, handle, indent=1, sort_keys=True)
    except BaseException as exc:
        shutil.rmtree(launch_dir, ignore_errors=True)
        if isinstance(exc, OSError) and exc.filename is None:
            exc.filename = launch_dir  # a failed write (disk full) names no file: the CLI needs one
        raise
    return backend, info


def _provenance_hook(launch_dir: str, workdir: str, options: Dict[str, Any], **context: Any) -> str:
    """Record provenance (and freeze the code with --snapshot); returns where tasks run."""
    try:
        from onager import provenance
    except ImportError:
        return workdir
    return provenance.prepare_launch(launch_dir, workdir, options, **context)


def _jsonable(options: Dict[str, Any]) -> Dict[str, Any]:
    """Options as launch.json and the index record them: credentials scrubbed (onager.scrub)."""
    return scrub_value(json.loads(json.dumps(options, default=str)))


def submit(backend: Backend, info: LaunchInfo, root: str = ".") -> LaunchRecord:
    """Submit a prepared launch and record it; a refused submission leaves no trace."""
    index = JobIndex(root)
    record = LaunchRecord(info.jobname, info.launch_id, backend.name, info.launch_dir,
                          str(info.tasklist), info.count, time.time(), [], _jsonable(info.options))
    if backend.runs_in_foreground:
        try:
            backend.preflight(info)
        except BaseException:
            shutil.rmtree(info.launch_dir, ignore_errors=True)
            raise
        index.add(record)  # list/cancel must see a local launch while it runs
        record.job_ids = backend.submit(info) or []
        if record.job_ids:
            index.update(record.key, job_ids=record.job_ids)
        return record
    try:
        record.job_ids = backend.submit(info)
    except BaseException:
        shutil.rmtree(info.launch_dir, ignore_errors=True)
        raise
    index.add(record)
    return record


def load_meta(launch_dir: str) -> Dict[str, Any]:
    try:
        with open(os.path.join(launch_dir, "launch.json"), encoding="utf-8") as handle:
            meta = json.load(handle)
        if not isinstance(meta, dict):
            raise ValueError
        return meta
    except FileNotFoundError:
        raise OnagerError(f"launch directory {launch_dir} is missing (deleted by hand?); "
                          "its record stays in .onager/index.jsonl")
    except (ValueError, RecursionError):
        raise OnagerError(f"{launch_dir}/launch.json is damaged; relaunch the job to get a fresh launch")


def iter_launch_tasks(launch_dir: str) -> Iterator[Tuple[int, str, str, Dict[str, Any]]]:
    path = os.path.join(launch_dir, "tasks.jsonl")
    try:
        handle = open(path, encoding="utf-8")
    except FileNotFoundError:
        raise OnagerError(f"launch directory {launch_dir} is missing its tasks (deleted by hand?)")
    except OSError as exc:  # a directory where the file should be, unreadable, ...
        raise _damaged(path, 1, exc.strerror or str(exc))
    with handle:
        number = 0  # lines read before this chunk
        while True:
            try:
                lines = handle.readlines(1 << 22)
            except ValueError:  # not UTF-8
                raise _damaged(path, number + 1, "not UTF-8 text")
            if not lines:
                break
            try:
                chunk = json.loads("[" + ",".join(lines) + "]")
            except (ValueError, RecursionError):
                chunk = list(_good_lines(path, lines, number))
            for n, item in enumerate(chunk, number + 1):
                try:
                    task_id, command, tag, params = item
                except (ValueError, TypeError):
                    raise _damaged(path, n, "edited by hand")
                yield task_id, command, tag, params
            number += len(lines)


def _damaged(path: str, line: int, why: str) -> OnagerError:
    return OnagerError(f"{path} is damaged at line {line} ({why}): launch the job again for a fresh launch")


def _good_lines(path: str, lines: List[str], before: int) -> Iterator[Tuple[int, str, str, Dict[str, Any]]]:
    """The tasks of a chunk that did not parse, up to its first bad line (which raises)."""
    for n, line in enumerate(lines, before + 1):
        try:
            task_id, command, tag, params = json.loads(line)
        except (ValueError, TypeError, RecursionError):
            raise _damaged(path, n, "truncated or edited by hand")
        yield task_id, command, tag, params
