"""Launches: choose tasks, freeze them into an immutable launch directory, submit.

A launch directory holds everything its tasks will ever read (tasks, offsets index,
wrapper.sh), so a later prelaunch or launch of the same job never changes what an
earlier launch runs or shows.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import shutil
import sys
import tempfile
import time
import types
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Union

from onager import config as configmod
from onager.backends import backend_class
from onager.backends.base import Backend, LaunchInfo
from onager.errors import OnagerError, UsageError
from onager.fsutil import _umask, atomic_write, executable_mode, file_lock, os_error_message, read_text
from onager.index import JobIndex, LaunchRecord
from onager.jobfile import JobEntry, iter_jobfile, jobfile_path
from onager.layout import BUILD_PREFIX, LaunchPaths, ProjectPaths, iter_launch_tasks, load_meta  # noqa: F401  (their old home; callers may import them here)
from onager.scrub import scrub_argv, scrub_value
from onager.state import ERROR, RERUN_FAILED, RERUN_UNFINISHED
from onager.status import job_task_statuses
from onager.sweep import check_jobname, param_key
from onager.tasklist import Tasklist
from onager.wrapper import index_record, task_record, wrapper_text

Selection = Union[None, Tasklist, set[int]]


def launches_root(jobname: str, root: str = ".") -> str:
    return ProjectPaths(root).launches(jobname)


def _env_name(key: str) -> str:
    return param_key(key).upper()


def select(jobname: str, spec: str | None, root: str = ".") -> tuple[Selection, str]:
    """Turn `--tasklist` (ids, `failed`, `unfinished`, or None) into task ids."""
    if spec is None:
        return None, "all tasks"
    word = spec.strip().lower()
    if word in ("failed", "unfinished"):
        wanted = RERUN_FAILED if word == "failed" else RERUN_UNFINISHED
        statuses = job_task_statuses(jobname, root)
        ids = {i for i, (status, _) in statuses.items() if status in wanted}
        if not ids:
            counts: dict[str, int] = {}
            for status, _ in statuses.values():
                counts[status] = counts.get(status, 0) + 1
            summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "no tasks"
            raise OnagerError(f"no {word} task in job {jobname!r} to relaunch ({summary})")
        return ids, f"{word} tasks"
    return Tasklist.parse(spec), f"tasks {spec}"


def cancel_stuck(jobname: str, root: str = ".") -> None:
    """Delete tasks a scheduler holds in an error state (SGE's Eqw) before they are relaunched:
    left queued, an admin could release them and they would run twice."""
    stuck: dict[str, tuple[Any, list[int]]] = {}
    for task_id, (status, record) in job_task_statuses(jobname, root).items():
        if status == ERROR:
            stuck.setdefault(record.key, (record, []))[1].append(task_id)
    for record, ids in stuck.values():
        backend_class(record.backend)(record.options).cancel(record, Tasklist.from_ids(ids))


def _entries(jobname: str, jobfile: str | None, command: str | None) -> Iterator[JobEntry]:
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


def _check_all_found(found: int, selection: Selection, seen: set[int], jobname: str) -> None:
    if selection is None:
        if found == 0:
            raise UsageError(f"job {jobname!r} has no tasks: run onager prelaunch again")
        return
    wanted = len(selection)
    if found != wanted:
        missing = Tasklist.from_ids(i for i in selection if i not in seen)
        raise UsageError(f"tasks {missing} are not in job {jobname!r}: check --tasklist against onager list")


def _ids_dir(jobname: str, root: str) -> str:
    """`.onager/launch-ids/<job>/`: the job's id counter (`last`) and its locks, kept apart
    from its launch directories, which hold launches only."""
    return ProjectPaths(root).ids_dir(jobname)


def claim_launch_id(jobname: str, root: str = ".") -> str:
    """The next launch id of a job, never one handed out before, even to a launch that failed.

    `.onager/launch-ids/<job>/last` holds the last id handed out (changed under a lock): an id
    reused after a failed launch once let a ghost job of the failed launch run the tasks of
    the launch that got its id. Launch directories and index records made before the
    counter existed count too.
    """
    return str(_bump_counter(jobname, root, 1))


def _bump_counter(jobname: str, root: str, step: int) -> int:
    """Under the job's id lock: the highest id ever seen (counter, directories, index) plus
    `step`, written back as the new counter."""
    directory = _ids_dir(jobname, root)
    os.makedirs(directory, exist_ok=True)
    counter = os.path.join(directory, "last")
    with file_lock(os.path.join(directory, "lock")):
        try:
            text = read_text(counter, "").strip()
            last = int(text) if text.isdigit() else 0
        except (OSError, UnicodeDecodeError):
            last = 0
        parent = launches_root(jobname, root)
        with contextlib.suppress(FileNotFoundError):
            last = max([last] + [int(n) for n in os.listdir(parent) if n.isdigit()])
        last = max([last] + [int(r.launch_id) for r in JobIndex(root).for_job(jobname) if r.launch_id.isdigit()])
        atomic_write(counter, f"{last + step}\n")
    return last + step


class BuildLock:
    """Held (shared) by every launch of a job from the first byte it writes until its record
    is in the index; `clean` takes it exclusively, so it never removes a launch being built.
    A killed launch's lock goes with its process."""

    def __init__(self, jobname: str, root: str = "."):
        directory = _ids_dir(jobname, root)
        os.makedirs(directory, exist_ok=True)
        self.fd: int | None = os.open(os.path.join(directory, "building"), os.O_RDWR | os.O_CREAT, 0o666)

    def exclusive(self) -> bool:
        """Try to hold it alone (no launch of the job in progress); False if one is."""
        assert self.fd is not None
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            return False

    def shared(self) -> None:
        assert self.fd is not None
        fcntl.flock(self.fd, fcntl.LOCK_SH)

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing drops the lock
            self.fd = None


_BUILDING: dict[str, BuildLock] = {}  # launch dir -> its lock, until submit() records it


@dataclass
class Partial:
    """A launch directory no index record points to: left by a killed or failed launch."""

    path: str
    size: int
    job_ids: list[str]  # scheduler jobs it submitted but could not record (kept, never removed)


def find_partial(jobname: str, root: str = ".") -> list[Partial]:
    """Directories under `.onager/launches/<job>/` that are not a recorded launch: temporary
    build directories and numbered ones the index does not know."""
    parent = launches_root(jobname, root)
    try:
        names = sorted(os.listdir(parent))
    except (FileNotFoundError, NotADirectoryError):
        return []
    recorded = {r.launch_id for r in JobIndex(root).for_job(jobname)}
    out = []
    for name in names:
        path = os.path.join(parent, name)
        if name in recorded or not os.path.isdir(path) or os.path.islink(path):
            continue
        out.append(Partial(os.path.abspath(path), _tree_size(path), _submitted_ids(path)))
    return out


def _tree_size(path: str) -> int:
    """Bytes of the files under `path` (what removing it gives back, less directory blocks)."""
    total = 0
    for directory, _, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(directory, name)).st_size
    return total


def _submitted_ids(path: str) -> list[str]:
    try:
        with open(LaunchPaths(path).scheduler_json, encoding="utf-8") as handle:
            return [str(s["job_id"]) for s in json.load(handle)["submissions"]]
    except (OSError, ValueError, KeyError, TypeError):
        return []


def remove_partial(jobname: str, root: str = ".", lock: BuildLock | None = None,
                   dry_run: bool = False) -> tuple[list[Partial], list[Partial]]:
    """(removed, kept): partial launch directories of a job; kept are those whose scheduler
    jobs were submitted but never recorded (they may still run: cancel them first).

    Needs the job's build lock alone; raises OnagerError while a launch of the job is in progress.
    """
    own = lock is None
    if own:
        if not os.path.isdir(launches_root(jobname, root)):
            return [], []  # never launched: nothing to lock, nothing to write
        try:
            lock = BuildLock(jobname, root)
        except OSError as exc:
            raise OnagerError(f"cannot lock the launches of {jobname!r} ({exc.strerror or exc}: {exc.filename}); "
                              "fix permissions or free some space") from exc
    assert lock is not None
    try:
        if own and not lock.exclusive():
            raise OnagerError(f"a launch of job {jobname!r} is in progress; run onager clean {jobname} "
                              "again when it has been submitted")
        removed, kept = [], []
        partials = find_partial(jobname, root)
        if not dry_run and any(os.path.basename(p.path).isdigit() for p in partials):
            _bump_counter(jobname, root, 0)  # their ids stay used once the directories are gone
        for partial in partials:
            if partial.job_ids:
                kept.append(partial)
                continue
            if not dry_run:
                shutil.rmtree(partial.path, ignore_errors=True)
            removed.append(partial)
        return removed, kept
    finally:
        if own:
            lock.release()


def write_tasks(launch_dir: str, entries: Iterator[JobEntry]) -> tuple[int, list[int]]:
    """tasks.sh (records), tasks.idx (fixed-width offsets by id), tasks.jsonl (for list)."""
    count = 0
    ids: list[int] = []
    offset = 0
    next_index_pos = 0
    env_names: dict[str, str] = {}
    encode = json.JSONEncoder(ensure_ascii=False).encode
    paths = LaunchPaths(launch_dir)
    with open(paths.tasks_sh, "wb") as records, \
            open(paths.tasks_idx, "wb") as index, \
            open(paths.tasks_jsonl, "w", encoding="utf-8") as listing:
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


def backend_options(backend_name: str, cli_options: dict[str, Any], root: str = ".") -> dict[str, Any]:
    """CLI options over config defaults: `onager config --write slurm partition gpu`."""
    merged = {k: v for k, v in configmod.read_section(backend_name, root).items()
              if k not in ("header", "footer")}
    merged.update({k: v for k, v in cli_options.items() if v is not None})
    return merged


def prepare(jobname: str, backend_name: str, options: dict[str, Any], tasklist: str | None = None,
            jobfile: str | None = None, command: str | None = None, root: str = ".",
            dry_run: bool = False, workdir: str | None = None, venv: str | None = None,
            argv: list[str] | None = None) -> tuple[Backend, LaunchInfo]:
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
    tune_plan = None
    if options.get("agents") is not None:  # a +tune search: the launch's tasks are its agents (onager.agent)
        from onager.agent import plan
        tune_plan = plan(jobname, jobfile, options, tasklist, command, root)
        entries = iter(tune_plan.entries())
    elif tasklist is not None:  # a trial of a +tune job reruns with its own values
        from onager.agent import trial_entries
        entries = trial_entries(jobname, jobfile, entries, root)
    if dry_run:
        try:
            from onager import provenance
        except ImportError:
            pass
        else:
            provenance.check_launch(workdir, options, root)  # --require-clean, snapshot size: refuse as a launch would
        seen: set[int] = set()
        ids = []
        for e in entries:
            ids.append(e.id)
        seen.update(ids)
        _check_all_found(len(ids), selection, seen, jobname)
        info = LaunchInfo(jobname, "DRY-RUN", os.path.abspath(os.path.join(launches_root(jobname, root), "DRY-RUN")),
                          "", Tasklist.from_ids(ids), len(ids), workdir, options, header, footer)
        info.wrapper = LaunchPaths(info.launch_dir).wrapper
        return backend, info

    _check_provenance(workdir, options, root)  # --require-clean, snapshot size: before any write
    if tasklist is not None and tasklist.strip().lower() in ("failed", "unfinished"):
        cancel_stuck(jobname, root)
    try:
        configmod.ensure_onager_dir(root)
        parent = launches_root(jobname, root)
        os.makedirs(parent, exist_ok=True)
        lock = BuildLock(jobname, root)
    except OSError as exc:
        raise _write_error(launches_root(jobname, root), exc) from exc
    build = launch_dir = ""
    try:
        if lock.exclusive():  # no other launch of the job in progress: clear what killed ones left
            removed, _ = remove_partial(jobname, root, lock)
            if removed:
                print(f"onager: removed {_dirs(len(removed))} of {jobname} left by interrupted launches "
                      f"({_size(sum(p.size for p in removed))})", file=sys.stderr)
        lock.shared()
        # built under a temporary name: a kill leaves no numbered directory, and a usage
        # error found while reading the jobfile takes no launch id
        build = tempfile.mkdtemp(prefix=BUILD_PREFIX, dir=parent)
        os.chmod(build, 0o777 & ~_umask())  # mkdtemp's 0700 would outlive the rename
        os.mkdir(LaunchPaths(build).logs_dir)
        os.mkdir(LaunchPaths(build).state_dir)
        count, ids = write_tasks(build, entries)
        if tune_plan is not None:
            tune_plan.write(build)
        found = set(ids) if selection is not None and count != len(selection) else set()
        _check_all_found(count, selection, found, jobname)
        while True:
            launch_id = claim_launch_id(jobname, root)
            launch_dir = os.path.abspath(os.path.join(parent, launch_id))
            try:
                os.rename(build, launch_dir)
                break
            except OSError as exc:  # taken by an older onager, which allocates by mkdir
                if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                    raise
        build = ""
        workdir = _provenance_hook(launch_dir, workdir, options, backend=backend_name,
                                   argv=argv or sys.argv, venv=venv, root=root)
        tasks = Tasklist.from_ids(ids)
        wrapper = LaunchPaths(launch_dir).wrapper
        with open(wrapper, "w", encoding="utf-8") as handle:
            project = ProjectPaths(os.path.abspath(root))
            os.makedirs(project.claims(jobname), exist_ok=True)
            handle.write(wrapper_text(launch_dir, jobname, launch_id, workdir, header, footer, venv,
                                      backend.index_variable, backend.job_id_variable,
                                      claims_dir=project.claims(jobname), task_dirs=project.task_dirs(jobname)))
        os.chmod(wrapper, executable_mode())
        info = LaunchInfo(jobname, launch_id, launch_dir, wrapper, tasks, count, workdir, options, header, footer)
        meta = {"jobname": jobname, "launch_id": launch_id, "backend": backend_name,
                "tasklist": str(tasks), "count": count, "created": time.time(),
                "workdir": workdir, "options": _jsonable(options),
                "argv": scrub_argv(argv or sys.argv),
                "jobfile": None if command is not None else jobfile_path(jobname, jobfile),
                "venv": venv}
        # launch.json last, by rename: a launch directory that has it is complete
        atomic_write(LaunchPaths(launch_dir).launch_json, json.dumps(meta, indent=1, sort_keys=True))
    except BaseException as exc:
        for path in (build, launch_dir):
            if path:
                shutil.rmtree(path, ignore_errors=True)
        lock.release()
        if isinstance(exc, OSError):
            raise _write_error(build or launch_dir or parent, exc) from exc
        raise
    _BUILDING[launch_dir] = lock
    return backend, info


def discard(info: LaunchInfo) -> None:
    """Remove a prepared launch that will not be submitted (its id stays used)."""
    shutil.rmtree(info.launch_dir, ignore_errors=True)
    _release(info)


def _release(info: LaunchInfo) -> None:
    lock = _BUILDING.pop(info.launch_dir, None)
    if lock is not None:
        lock.release()


def _check_provenance(workdir: str, options: dict[str, Any], root: str) -> None:
    try:
        from onager import provenance
    except ImportError:
        return
    provenance.check_launch(workdir, options, root)


def _write_error(path: str, exc: OSError) -> OnagerError:
    """One line for a failed write (disk full, permissions, .onager a file) while building a
    launch: the path shown is the job's launches directory, never a temporary build name."""
    named = os.fsdecode(exc.filename) if isinstance(exc.filename, (str, bytes)) else ""
    if not named or "/.build-" in named or os.path.basename(path).startswith(".build-"):
        exc.filename = os.path.dirname(path) if os.path.basename(path).startswith(".build-") else path
    return OnagerError(f"{os_error_message(exc)}; nothing was launched")


def _dirs(n: int) -> str:
    return f"{n} partial launch director{'y' if n == 1 else 'ies'}"


def _size(n: int) -> str:
    for unit in ("bytes", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return f"{n} bytes"


def _provenance_hook(launch_dir: str, workdir: str, options: dict[str, Any], **context: Any) -> str:
    """Record provenance (and freeze the code with --snapshot); returns where tasks run."""
    try:
        from onager import provenance
    except ImportError:
        return workdir
    return provenance.prepare_launch(launch_dir, workdir, options, **context)


def _jsonable(options: dict[str, Any]) -> dict[str, Any]:
    """Options as launch.json and the index record them: credentials scrubbed (onager.scrub)."""
    scrubbed: dict[str, Any] = scrub_value(json.loads(json.dumps(options, default=str)))
    return scrubbed


def submit(backend: Backend, info: LaunchInfo, root: str = ".") -> LaunchRecord:
    """Submit a prepared launch and record it; a refused submission leaves no trace, and
    scheduler jobs that cannot be recorded are cancelled (or their directory is kept)."""
    index = JobIndex(root)
    record = LaunchRecord(info.jobname, info.launch_id, backend.name, info.launch_dir,
                          str(info.tasklist), info.count, time.time(), [], _jsonable(info.options))
    if backend.runs_in_foreground:
        try:
            backend.preflight(info)
            index.add(record)  # list/cancel must see a local launch while it runs
        except BaseException as exc:
            discard(info)
            if isinstance(exc, OSError):
                raise _record_error(index, exc, "nothing was run; fix that (e.g. free some space) and launch "
                                                "again") from exc
            raise
        _release(info)
        record.job_ids = backend.submit(info) or []
        if record.job_ids:
            index.update(record.key, job_ids=record.job_ids)
        return record
    try:
        record.job_ids = backend.submit(info)
    except BaseException:
        discard(info)
        raise
    try:
        index.add(record)
    except BaseException as exc:
        raise _unrecorded(backend, info, index, record.job_ids, exc) from exc
    _release(info)
    return record


def _record_error(index: JobIndex, exc: BaseException, outcome: str) -> OnagerError:
    if isinstance(exc, OSError) and exc.strerror:
        reason = exc.strerror + (f" ({exc.filename})" if exc.filename else "")
    else:
        reason = str(exc) or type(exc).__name__
    return OnagerError(f"cannot record the launch in {index.path}: {reason}; {outcome}")


def _unrecorded(backend: Backend, info: LaunchInfo, index: JobIndex, job_ids: list[str],
                exc: BaseException) -> BaseException:
    """Jobs went in but their record did not: cancel them rather than leave ghosts nobody
    lists or cancels; if cancelling fails too, keep the launch directory (its
    scheduler.json names them, and `onager clean` reports them)."""
    failed: list[str] = []
    for job_id in job_ids:
        try:
            for command in backend.cancel_job_commands(job_id, None):
                run_command(command)
        except (OnagerError, OSError):
            failed.append(job_id)
    if isinstance(exc, KeyboardInterrupt) and not failed:
        discard(info)
        return exc
    if not failed:
        discard(info)
        return _record_error(index, exc, f"cancelled the {backend.name} jobs just submitted "
                                         f"({', '.join(job_ids)}); fix that (e.g. free some space) and launch again")
    _release(info)
    return _record_error(index, exc, f"could not cancel {backend.name} jobs {', '.join(failed)} either: "
                                     f"cancel them with onager cancel --backend {backend.name} --jobid ID; "
                                     f"their launch directory {info.launch_dir} is kept")


def run_command(argv: list[str]) -> None:
    from onager.backends.base import run
    run(argv, retries=2)


class _CallableModule(types.ModuleType):
    """`onager.launch(job_or_sweep, backend=...)` is the library call (onager.api.launch), while
    `onager.launch` stays this module for the CLI: Python binds a package's submodule to the
    attribute of the same name, so the module itself answers the call. The call is forwarded
    at run time, not imported: onager.api sits above this module (it imports it)."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        import importlib
        return importlib.import_module("onager.api").launch(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
