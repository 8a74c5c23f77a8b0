"""Launches: choose tasks, freeze them into an immutable launch directory, submit.

A launch directory holds everything its tasks will ever read (tasks, offsets index,
wrapper.sh), so a later prelaunch or launch of the same job never changes what an
earlier launch runs or shows.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import itertools
import json
import operator
import os
import shlex
import shutil
import sys
import tempfile
import time
import types
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Union

from onager import config as configmod
from onager import recovery
from onager.backends import backend_class
from onager.backends.base import OPTION_BACKENDS, Backend, LaunchInfo
from onager.errors import OnagerError, UsageError
from onager.fsutil import _umask, atomic_write, executable_mode, file_lock, os_error_message, read_text
from onager.index import JobIndex, LaunchRecord
from onager.jobfile import Columns, JobBlocks, JobEntry, iter_jobfile, jobfile_path  # noqa: F401
from onager.layout import BUILD_PREFIX, LaunchPaths, ProjectPaths, iter_launch_tasks, load_meta  # noqa: F401  (their old home; callers may import them here)
from onager.scrub import REDACTED, scrub_argv, scrub_value
from onager.state import ERROR, RERUN_FAILED, RERUN_UNFINISHED, STATUSES
from onager.status import job_task_statuses
from onager.sweep import check_jobname, param_key
from onager.tasklist import Tasklist
from onager.wrapper import INDEX_WIDTH, index_record, task_record, wrapper_text

Selection = Union[None, Tasklist, set[int]]


def launches_root(jobname: str, root: str = ".") -> str:
    return ProjectPaths(root).launches(jobname)


def _env_name(key: str) -> str:
    return param_key(key).upper()


#: what each status word of `--tasklist` selects: `failed` and `unfinished` are groups
#: (onager.state), the others one status each (the lifecycle's end states, error, unknown)
_GROUP_WORDS = {"failed": RERUN_FAILED, "unfinished": RERUN_UNFINISHED}
_SINGLE_WORDS = ("killed", "timeout", "oom", "preempted", "cancelled", "lost", "error", "unknown")
#: statuses never rerun by a word: done ran to its end, pending/running still may
_NEVER = ("done", "pending", "running")


def status_words(spec: str | None) -> frozenset[str] | None:
    """The statuses a `--tasklist` of status words (`failed`, `timeout,oom`) selects, or None
    for a tasklist of ids (or none). Unknown or never-rerun words are refused with one line."""
    if spec is None:
        return None
    parts = [p.strip().lower() for p in spec.split(",")]
    if not any(p.isalpha() for p in parts):
        return None
    words = ", ".join(sorted(_GROUP_WORDS) + list(_SINGLE_WORDS))
    if not all(p.isalpha() for p in parts):
        raise UsageError(f"--tasklist {spec!r} mixes task ids and statuses: give ids (1-3,5) or statuses "
                         f"({words}), not both")
    wanted: set[str] = set()
    for word in parts:
        if word in _GROUP_WORDS:
            wanted |= _GROUP_WORDS[word]
        elif word in _SINGLE_WORDS or (word in STATUSES and word not in _NEVER):
            wanted.add(word)
        elif word in _NEVER:
            raise UsageError(f"--tasklist {word}: {word} tasks are never rerun by status; give their ids "
                             "(e.g. --tasklist 3-5) to launch them again")
        else:
            raise UsageError(f"--tasklist {spec!r}: unknown status {word!r}; use task ids (1-3,5) or statuses "
                             f"({words})")
    return frozenset(wanted)


def select(jobname: str, spec: str | None, root: str = ".") -> tuple[Selection, str]:
    """Turn `--tasklist` (ids, status words such as `failed` or `timeout,oom`, or None) into task ids."""
    selection, text, _ = _select(jobname, spec, root)
    return selection, text


def _select(jobname: str, spec: str | None,
            root: str = ".") -> tuple[Selection, str, dict[int, LaunchRecord] | None]:
    """select(), and for status words the launch each selected task last ran in."""
    if spec is None:
        return None, "all tasks", None
    wanted = status_words(spec)
    if wanted is None:
        return Tasklist.parse(spec), f"tasks {spec}", None
    word = spec.strip().lower()
    statuses = job_task_statuses(jobname, root)  # each task's status in its latest launch
    where = {i: record for i, (status, record) in statuses.items() if status in wanted}
    if not where:
        counts: dict[str, int] = {}
        for status, _ in statuses.values():
            counts[status] = counts.get(status, 0) + 1
        summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "no tasks"
        raise OnagerError(f"no {word} task in job {jobname!r} to relaunch ({summary})")
    return set(where), f"{word} tasks", where


def _from_launches(where: dict[int, LaunchRecord]) -> Iterator[JobEntry]:
    """Each task as the launch it last ran in froze it (tasks.jsonl, immutable), not as
    today's jobfile has it: a rerun runs what failed. One read of each launch's tasks."""
    by_launch: dict[str, set[int]] = {}
    for task_id, record in where.items():
        by_launch.setdefault(record.launch_dir, set()).add(task_id)
    found: list[JobEntry] = []
    for launch_dir, ids in by_launch.items():
        for task_id, command, tag, params in iter_launch_tasks(launch_dir):
            if task_id in ids:
                found.append(JobEntry(task_id, command, tag, params))
    found.sort(key=lambda e: e.id)
    yield from found


def tasks_source(tasklist: str | None, from_jobfile: bool = False, command: str | None = None) -> str:
    """Where a launch takes its tasks' commands from, for the launch message ("" when from
    the jobfile as always)."""
    if command is not None or status_words(tasklist) is None:
        return ""
    if from_jobfile:
        return "commands from today's jobfile (--from-jobfile)"
    return "commands as they ran in each task's last launch (--from-jobfile: today's jobfile)"


@dataclass
class Reused:
    """What a rerun that names no backend takes from the job's last launch."""

    backend: str
    given: dict[str, Any]  # the command line's options, the last launch's where not given now
    venv: str | None
    workdir: str | None
    extra: list[str]       # scheduler arguments after --
    source: str            # the launch they come from, `job/id`
    shown: str             # the options taken, as flags, for the message


def reuse_last_launch(jobname: str, tasklist: str | None, given: dict[str, Any], venv: str | None = None,
                      workdir: str | None = None, extra: list[str] | None = None,
                      root: str = ".") -> Reused | None:
    """For `onager launch --jobname J --tasklist failed` without --backend: the backend and every
    option of J's last launch (its launch.json), each option given now winning, so that the
    short rerun hint reruns on the same hosts, partition, venv, limits. None when the tasklist
    is not status words or the job was never launched (then --backend is needed as always)."""
    if status_words(tasklist) is None:
        return None
    records = JobIndex(root).for_job(jobname)
    if not records:
        return None
    last = records[-1]
    try:
        meta = load_meta(last.launch_dir)
    except OnagerError:
        meta = {}  # directory gone or damaged: the index record still holds backend and options
    named, recorded = meta.get("backend"), meta.get("options")
    backend: str = named if isinstance(named, str) else last.backend
    before: dict[str, Any] = recorded if isinstance(recorded, dict) else last.options
    merged = dict(given)
    taken: dict[str, Any] = {}
    for key, value in before.items():
        if key != "extra" and key in merged and merged[key] is None and value is not None:
            merged[key] = taken[key] = value
    new_extra = list(extra or [])
    if not new_extra and isinstance(before.get("extra"), list):
        new_extra = [str(word) for word in before["extra"]]
        if new_extra:
            taken["extra"] = new_extra
    if venv is None and isinstance(meta.get("venv"), str):
        venv = taken["venv"] = meta["venv"]
    if workdir is None:
        workdir = _original_workdir(last.launch_dir, meta)
        if workdir is not None and os.path.abspath(workdir) != os.getcwd():
            taken["workdir"] = workdir  # shown only where it is not the default (here)
    secret = sorted(k for k, v in taken.items() if REDACTED in json.dumps(v))
    if secret:
        flags = ", ".join("arguments after --" if k == "extra" else "--" + k.replace("_", "-") for k in secret)
        raise UsageError(f"the last launch of {jobname} ({last.key}) had a secret in {flags}, which onager never "
                         "records: give it again on this command line")
    shown = " ".join(_flag(k, v) for k, v in taken.items() if k != "extra")
    if "extra" in taken:
        shown += " -- " + " ".join(new_extra)
    return Reused(backend, merged, venv, workdir, new_extra, last.key, shown.strip())


def _flag(key: str, value: Any) -> str:
    flag = "--" + key.replace("_", "-")
    if value is True:
        return flag
    if value is False:
        return "--no-" + key.replace("_", "-")
    if isinstance(value, list):
        return " ".join(f"{flag} {word}" for word in value)
    return f"{flag} {value}"


def _original_workdir(launch_dir: str, meta: dict[str, Any]) -> str | None:
    """Where the launch's tasks ran before a snapshot moved them into its own code/ copy."""
    try:
        with open(LaunchPaths(launch_dir).provenance_json, encoding="utf-8") as handle:
            recorded = json.load(handle).get("workdir")
        if isinstance(recorded, str):
            return recorded
    except (OSError, ValueError, AttributeError):
        pass
    workdir = meta.get("workdir")
    if isinstance(workdir, str) and not workdir.startswith(launch_dir.rstrip("/") + "/"):
        return workdir
    return None


def prior_attempts(jobname: str, root: str = ".") -> dict[int, int]:
    """Attempts each task had in the job's recorded launches, from one listing of each
    launch's state dir: the base of a new launch's attempt numbers (ONAGER_PRIOR_ATTEMPTS).

    An attempt is a start: a `<id>.start@<t0>[@<attempt>]` name, or an end name that holds
    its start time `<t0>` (old launches renamed the start name into it); both name the same
    attempt once. An end with no start time and no start name beside it is one attempt.
    """
    counts: dict[int, int] = {}
    for record in JobIndex(root).for_job(jobname):
        try:
            names = os.listdir(LaunchPaths(record.launch_dir).state_dir)
        except OSError:
            continue  # gone or damaged: its attempts are unknown, not fatal
        starts: dict[int, set[str]] = {}
        bare_ends: set[int] = set()
        for name in names:
            head, _, rest = name.partition("@")
            task, _, kind = head.partition(".")
            if not (task.isascii() and task.isdigit()) or kind not in ("start", "end") or not rest:
                continue
            fields = rest.split("@")
            if kind == "start":
                starts.setdefault(int(task), set()).add(fields[0])
            elif len(fields) >= 3:
                starts.setdefault(int(task), set()).add(fields[2])
            else:
                bare_ends.add(int(task))
        for task_id in starts.keys() | bare_ends:
            counts[task_id] = counts.get(task_id, 0) + max(1, len(starts.get(task_id, ())))
    return counts


def cancel_stuck(jobname: str, root: str = ".") -> None:
    """Delete tasks a scheduler holds in an error state (SGE's Eqw) before they are relaunched:
    left queued, an admin could release them and they would run twice."""
    stuck: dict[str, tuple[Any, list[int]]] = {}
    for task_id, (status, record) in job_task_statuses(jobname, root).items():
        if status == ERROR:
            stuck.setdefault(record.key, (record, []))[1].append(task_id)
    for record, ids in stuck.values():
        backend_class(record.backend)(record.options).cancel(record, Tasklist.from_ids(ids))


def _entries(jobname: str, jobfile: str | None, command: str | None) -> Iterable[JobEntry]:
    if command is not None:
        return iter([JobEntry(1, command, "", {})])
    return JobBlocks(jobfile_path(jobname, jobfile))  # by blocks for write_tasks, by entries for the rest


def _selected(entries: Iterable[JobEntry], selection: Selection) -> Iterable[JobEntry]:
    if selection is None:
        return entries
    members = selection
    if isinstance(selection, Tasklist) and len(selection.blocks) > 64:
        members = set(selection)
    if isinstance(entries, JobBlocks):
        return entries.selected(members.__contains__)
    return (entry for entry in entries if entry.id in members)


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


def write_tasks(launch_dir: str, entries: Iterable[JobEntry],
                prior: dict[int, int] | None = None) -> tuple[int, Sequence[int]]:
    """tasks.sh (records), tasks.idx (fixed-width offsets by id), tasks.jsonl (for list).

    The bytes of tasks.sh and tasks.idx are those of `wrapper.task_record` and `index_record`
    for each task, built for a million tasks in seconds: tasks go a few thousand at a time,
    and a block of consecutive ids with the same parameter names (a sweep) is written column
    by column with C loops (`_TaskWriter.uniform`); any other block task by task. From a
    jobfile (JobBlocks), blocks in prelaunch's form come decoded as columns with their
    tasks.jsonl rows already made from the jobfile's own text (`jobfile.Columns`); other
    entries are encoded here. The ids come back as a range while they are consecutive
    (memory that does not grow with the launch).
    `prior`: attempts each task had in earlier launches, carried in its record.
    """
    paths = LaunchPaths(launch_dir)
    ids = _Ids()
    with open(paths.tasks_sh, "wb") as records, open(paths.tasks_idx, "wb") as index, \
            open(paths.tasks_jsonl, "w", encoding="utf-8") as listing:
        writer = _TaskWriter(records, index, listing, prior or {})
        for block in _blocks(entries):
            if isinstance(block, Columns):
                writer.columns(block)
                ids.add(block.ids)
            else:
                writer.write(block)
                ids.add([e.id for e in block])
    return ids.count, ids.result()


def _blocks(entries: Iterable[JobEntry]) -> Iterator[Columns | list[JobEntry]]:
    """Entries a block at a time (a jobfile's own blocks when it is one)."""
    if isinstance(entries, JobBlocks):
        yield from entries.blocks()
        return
    block: list[JobEntry] = []
    for entry in entries:
        block.append(entry)
        if len(block) >= 4096:
            yield block
            block = []
    if block:
        yield block


def _id_blocks(entries: Iterable[JobEntry]) -> Iterator[list[int]]:
    """The ids of entries a block at a time (a jobfile's decoded and checked without making
    entries or tasks.jsonl rows)."""
    if isinstance(entries, JobBlocks):
        yield from entries.ids()
        return
    for block in _blocks(entries):
        yield block.ids if isinstance(block, Columns) else [e.id for e in block]


class _Ids:
    """Task ids in the order written: a range while they run first, first+1, ..., a list after."""

    def __init__(self) -> None:
        self.first = self.next = 0
        self.listed: list[int] | None = None
        self.count = 0

    def add(self, block: list[int]) -> None:
        if not block:
            return
        self.count += len(block)
        if self.listed is None:
            start = block[0] if self.first == 0 else self.next
            if block == list(range(start, start + len(block))) and start >= 1:
                self.first = self.first or start
                self.next = start + len(block)
                return
            self.listed = list(range(self.first, self.next)) if self.first else []
        self.listed += block

    def result(self) -> Sequence[int]:
        return self.listed if self.listed is not None else range(self.first, self.next)


_INDEX_FORMAT = b"%013d %09d\n"  # wrapper.index_record, INDEX_WIDTH bytes
# shlex.quote's own test for a word that needs no quotes (the same result, without a call per word)
_FIND_UNSAFE: Callable[[str], Any] | None = getattr(shlex, "_find_unsafe", None)


def _quote_all(words: list[str]) -> list[str]:
    """[shlex.quote(w) for w in words]: shlex's test run once on the joined words when none
    needs quotes, and the quoting done on the joined words when all do (a command with its
    spaces); word by word only for a mixed column."""
    if _FIND_UNSAFE is None:
        return list(map(shlex.quote, words))
    joined = "".join(words)
    if _FIND_UNSAFE(joined) is None and all(words):  # the test is per character: the words are safe
        return list(words)
    if all(map(str.__contains__, words, itertools.repeat(" "))):  # a command with its spaces: all unsafe
        unsafe: list[Any] = words
    else:
        unsafe = list(map(_FIND_UNSAFE, words))
    if None not in unsafe and "\0" not in joined:  # each word needs quotes (none is empty)
        return ("'" + "\0".join(words).replace("'", "'\"'\"'").replace("\0", "'\0'") + "'").split("\0")
    return [w if u is None and w else "'" + w.replace("'", "'\"'\"'") + "'" for w, u in zip(words, unsafe)]


class _TaskWriter:
    """Appends blocks of tasks to the three files, keeping the offset and index position."""

    def __init__(self, records: Any, index: Any, listing: Any, prior: dict[int, int] | None = None):
        self.records, self.index, self.listing = records, index, listing
        self.prior = prior or {}  # task id -> attempts in earlier launches (a line in its record)
        self.offset = 0
        self.next_index_pos = 0
        self.encode = _encoder()
        self.one = _one_encoder()
        self.prefixes: dict[tuple[str, ...], list[str] | None] = {}  # keys -> "export ONAGER_PARAM_<NAME>=" each
        self.quoted: dict[str, str] = {}  # param value -> shlex-quoted (bounded)

    def names(self, keys: tuple[str, ...]) -> list[str] | None:
        if keys not in self.prefixes:
            self.prefixes[keys] = _param_prefixes(keys)
        return self.prefixes[keys]

    def write(self, block: list[JobEntry]) -> None:
        if not block:
            return
        ids, commands, tags, params = (list(column) for column in zip(*block))
        if not self.uniform(ids, commands, tags, params):
            self.one_by_one(block)

    def columns(self, block: Columns) -> None:
        """A jobfile's block, its tasks.jsonl rows already made."""
        if block.ids and not self.uniform(block.ids, block.commands, block.tags, block.params, block.rows):
            self.one_by_one(block.entries(), block.rows)

    def uniform(self, ids: list[int], commands: list[str], tags: list[str], params: list[dict[str, Any]],
                rows: str | None = None) -> bool:
        """A block of ids first..first+n-1 whose params share their keys, written by columns;
        False (nothing written) for any other block. `rows`: its tasks.jsonl text, if made."""
        one = self.one
        if one is None and rows is None:
            return False
        first = ids[0]
        if (set(map(type, ids)) != {int} or ids != list(range(first, first + len(ids)))
                or set(map(type, commands)) != {str} or set(map(type, tags)) != {str}):
            return False
        key_sets = set(map(tuple, params))
        if len(key_sets) != 1:
            return False
        keys = key_sets.pop()
        names = self.names(keys)
        if names is None or _REPLICATE in names or (self.prior and any(map(self.prior.__contains__, ids))):
            return False  # records with extra lines: task by task
        columns: list[Any] = [ids, _quote_all(tags), _quote_all(commands)]
        for key in keys:
            values = list(map(operator.itemgetter(key), params))
            kinds = set(map(type, values))
            if kinds == {int}:
                values = list(map(int.__repr__, values))
            elif kinds != {str}:
                encode = self.encode
                values = [v if type(v) is str else encode(v) for v in values]  # noqa: E721
            columns.append(self.quote_values(values))
        layout = "ONAGER_TASK_ID=%d\nONAGER_TAG=%s\nONAGER_COMMAND=%s\n" + "".join(p + "%s\n" for p in names)
        texts = list(map(layout.__mod__, zip(*columns)))
        data = "".join(texts)
        if data.isascii():
            lengths = list(map(len, texts))
            raw = data.encode("ascii")
        else:
            encoded = [t.encode("utf-8") for t in texts]
            lengths = list(map(len, encoded))
            raw = b"".join(encoded)
        offsets = list(itertools.accumulate(lengths, initial=self.offset))
        self.records.write(raw)
        if (first - 1) * INDEX_WIDTH != self.next_index_pos:
            self.index.seek((first - 1) * INDEX_WIDTH)
        # one format of the whole block's entries (b"%013d %09d\n" each: index_record's bytes)
        self.index.write((_INDEX_FORMAT * len(lengths)) % tuple(itertools.chain.from_iterable(zip(offsets, lengths))))
        if rows is None:
            rows = "\n".join(map("".join, map(one, zip(ids, commands, tags, params), itertools.repeat(0)))) + "\n"
        self.listing.write(rows)
        self.offset = offsets[-1]
        self.next_index_pos = (ids[-1]) * INDEX_WIDTH
        return True

    def quote_values(self, values: list[str]) -> list[str]:
        quoted = self.quoted
        out = list(map(quoted.get, values))
        if None in out:
            missing = [i for i, q in enumerate(out) if q is None]
            if len(quoted) + len(missing) > 65536:
                quoted.clear()
            words = [values[i] for i in missing]
            for i, word, done in zip(missing, words, _quote_all(words)):
                out[i] = quoted[word] = done
        return out  # type: ignore[return-value]

    def one_by_one(self, block: list[JobEntry], rows: str | None = None) -> None:
        encode, quote, quoted = self.encode, shlex.quote, self.quoted
        records: list[bytes] = []
        index_block: list[bytes] = []
        listing_block: list[str] = []
        for task_id, command, tag, params in block:
            names = self.names(tuple(params))
            attempts = self.prior.get(task_id, 0)
            if names is None or _REPLICATE in names:
                # two keys, one variable name (task_record's dict keeps the last value), or a replicate
                env = {_env_name(k): v if isinstance(v, str) else encode(v) for k, v in params.items()}
                text = task_record(task_id, command, tag, env, prior_attempts=attempts)
            else:
                parts = [f"ONAGER_TASK_ID={task_id}\nONAGER_TAG={quote(tag)}\nONAGER_COMMAND={quote(command)}\n"]
                if attempts > 0:
                    parts.append(f"ONAGER_PRIOR_ATTEMPTS={int(attempts)}\n")
                for prefix, value in zip(names, params.values()):
                    if not isinstance(value, str):
                        value = encode(value)
                    done = quoted.get(value)
                    if done is None:
                        if len(quoted) >= 65536:
                            quoted.clear()
                        done = quoted[value] = quote(value)
                    parts.append(prefix + done + "\n")
                text = "".join(parts)
            data = text.encode("utf-8")
            records.append(data)
            position = (task_id - 1) * INDEX_WIDTH
            if position != self.next_index_pos:
                self.index.write(b"".join(index_block))
                index_block.clear()
                self.index.seek(position)
            index_block.append(index_record(self.offset, len(data)))
            self.next_index_pos = position + INDEX_WIDTH
            self.offset += len(data)
            if rows is None:
                listing_block.append(encode([task_id, command, tag, params]) + "\n")
        self.records.write(b"".join(records))
        self.index.write(b"".join(index_block))
        self.listing.write(rows if rows is not None else "".join(listing_block))


def _one_encoder() -> Any:
    """The C encoder JSONEncoder(ensure_ascii=False) builds for each call, built once:
    `"".join(one(value, 0))` is json.dumps(value, ensure_ascii=False); None without C."""
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:
        return None
    plain = json.JSONEncoder(ensure_ascii=False)
    # the arguments JSONEncoder.iterencode passes for ensure_ascii=False and the other defaults
    return make({}, plain.default, json.encoder.encode_basestring, None, ": ", ", ", False, False, True)


def _encoder() -> Callable[[Any], str]:
    """json.dumps(value, ensure_ascii=False), without building an encoder per call (which is
    most of the time JSONEncoder.encode takes for a small value)."""
    one = _one_encoder()
    if one is None:
        return json.JSONEncoder(ensure_ascii=False).encode

    def encode(value: Any) -> str:
        if isinstance(value, str):
            return json.encoder.encode_basestring(value)
        return "".join(one(value, 0))
    return encode


_REPLICATE = "export ONAGER_PARAM_REPLICATE="  # +repeat: task_record adds ONAGER_REPLICATE after it


def _param_prefixes(keys: tuple[str, ...]) -> list[str] | None:
    """`export ONAGER_PARAM_<NAME>=` for each param key, or None when two keys share a name."""
    names = [_env_name(key) for key in keys]
    if len(set(names)) != len(names):
        return None
    return [f"export ONAGER_PARAM_{name}=" for name in names]


def backend_options(backend_name: str, cli_options: dict[str, Any], root: str = ".") -> dict[str, Any]:
    """CLI options over config defaults: `onager config --write slurm partition gpu`."""
    merged = {k: v for k, v in configmod.read_section(backend_name, root).items()
              if k not in ("header", "footer")}
    merged.update({k: v for k, v in cli_options.items() if v is not None})
    return merged


def prepare(jobname: str, backend_name: str, options: dict[str, Any], tasklist: str | None = None,
            jobfile: str | None = None, command: str | None = None, root: str = ".",
            dry_run: bool = False, workdir: str | None = None, venv: str | None = None,
            argv: list[str] | None = None, from_jobfile: bool = False) -> tuple[Backend, LaunchInfo]:
    """Everything up to submission. In dry-run, nothing is written.

    Tasks selected by status (`failed`, `timeout,oom`, ...) run as the launch they last ran
    in froze them; `from_jobfile` takes today's jobfile entries for those ids instead."""
    check_jobname(jobname)
    if from_jobfile and command is not None:
        raise UsageError("--from-jobfile and --command both say what to run: give one of them")
    # a time-limit warning the user asked for (or --requeue's checkpoint hook) reaches the task;
    # one onager adds only to tell a timeout apart stays with the wrapper
    forward_warning = (backend_name not in OPTION_BACKENDS["warning_signal"][0] or bool(options.get("requeue"))
                       or options.get("warning_signal") not in (None, ""))
    options = recovery.check_launch(backend_name, options)  # --retries, --notify, ...: checked before any write
    backend: Backend = backend_class(backend_name)(options)
    backend.check_options()
    selection, _, where = _select(jobname, tasklist, root)
    section = configmod.read_section(backend_name, root)
    header, footer = section.get("header", ""), section.get("footer", "")
    workdir = os.path.abspath(workdir or os.getcwd())
    if venv and not os.path.isabs(venv):
        venv = os.path.join(workdir, venv)  # as before, relative to the workdir, which a snapshot replaces
    from_launches = where is not None and command is None and not from_jobfile
    tune_plan = None
    entries: Iterable[JobEntry]
    if options.get("agents") is not None:  # a +tune search: the launch's tasks are its agents (onager.agent)
        from onager.agent import plan
        tune_plan = plan(jobname, jobfile, options, tasklist, command, root)
        entries = iter(tune_plan.entries())
    elif from_launches:
        assert where is not None
        entries = _from_launches(where)
    else:
        entries = _selected(_entries(jobname, jobfile, command), selection)
        if tasklist is not None:  # a trial of a +tune job reruns with its own values
            from onager.agent import trial_entries
            entries = trial_entries(jobname, jobfile, iter(entries), root)
    if dry_run:
        try:
            from onager import provenance
        except ImportError:
            pass
        else:
            provenance.check_launch(workdir, options, root)  # --require-clean, snapshot size: refuse as a launch would
        ids = _Ids()  # every task read and checked; its ids kept as a range while consecutive
        for block in _id_blocks(entries):
            ids.add(block)
        listed = ids.result()
        _check_all_found(ids.count, selection,
                         set(listed) if selection is not None and ids.count != len(selection) else set(), jobname)
        info = LaunchInfo(jobname, "DRY-RUN", os.path.abspath(os.path.join(launches_root(jobname, root), "DRY-RUN")),
                          "", Tasklist.from_ids(listed), ids.count, workdir, options, header, footer)
        info.wrapper = LaunchPaths(info.launch_dir).wrapper
        return backend, info

    _check_provenance(workdir, options, root)  # --require-clean, snapshot size: before any write
    if ERROR in (status_words(tasklist) or ()):
        cancel_stuck(jobname, root)  # before they are relaunched, as they are selected
    prior = prior_attempts(jobname, root)
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
        count, written = write_tasks(build, entries, prior)
        if tune_plan is not None:
            tune_plan.write(build)
        found = set(written) if selection is not None and count != len(selection) else set()
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
        tasks = Tasklist.from_ids(written)
        wrapper = LaunchPaths(launch_dir).wrapper
        with open(wrapper, "w", encoding="utf-8") as handle:
            project = ProjectPaths(os.path.abspath(root))
            os.makedirs(project.claims(jobname), exist_ok=True)
            handle.write(wrapper_text(launch_dir, jobname, launch_id, workdir, header, footer, venv,
                                      backend.index_variable, backend.job_id_variable,
                                      claims_dir=project.claims(jobname), task_dirs=project.task_dirs(jobname),
                                      forward_warning=forward_warning))
        os.chmod(wrapper, executable_mode())
        info = LaunchInfo(jobname, launch_id, launch_dir, wrapper, tasks, count, workdir, options, header, footer)
        meta = {"jobname": jobname, "launch_id": launch_id, "backend": backend_name,
                "tasklist": str(tasks), "count": count, "created": time.time(),
                "workdir": workdir, "options": _jsonable(options),
                "argv": scrub_argv(argv or sys.argv),
                "jobfile": None if command is not None or from_launches else jobfile_path(jobname, jobfile),
                "tasks_from": "launches" if from_launches else ("command" if command is not None else "jobfile"),
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
    try:  # retries, requeue, --notify on a scheduler: a follow-up job, no daemon
        recovery.submit_follow_up(backend.name, info.jobname, info.launch_dir, record.job_ids, info.options)
    except OnagerError as exc:
        print(f"onager: warning: {exc}", file=sys.stderr)
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
