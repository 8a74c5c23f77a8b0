"""list, cancel, wait and logs: what users run after a launch."""
from __future__ import annotations

import itertools
import json
import os
import sys
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple

from onager.errors import OnagerError, UsageError
from onager.index import JobIndex, LaunchRecord
from onager.layout import LaunchPaths
from onager.state import RERUN_FAILED, STATUSES, describe_exit, read_states
from onager.status import (
    Progress,
    TaskRow,
    launch_counts,
    launch_groups,
    query_all,
    select_records,
    task_rows,
    wait_for,
)
from onager.tasklist import Tasklist

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse

COLUMNS = ["job_id", "launch", "task_id", "jobname", "status", "reason", "exit", "attempt", "elapsed", "tag", "command"]
# shown only when asked for with --show
OPTIONAL_COLUMNS = ["commit"]
SUMMARY_ALWAYS = ("pending", "running", "done", "failed", "cancelled", "lost")


FAST_TABLE_ROWS = 2000


def table(rows: list[list], headers: list[str]) -> str:
    """tabulate's plain table for a list of rows."""
    if len(rows) <= FAST_TABLE_ROWS:
        from tabulate import tabulate
        return tabulate(rows, headers=headers, disable_numparse=True)
    return column_table([list(column) for column in zip(*rows)], headers)


def column_table(columns: list[list], headers: list[str]) -> str:
    """The same layout as tabulate's plain table, built column by column: above a few
    thousand rows tabulate's per-cell work would dominate `list` of a 100k-task launch."""
    if not columns or len(columns[0]) <= FAST_TABLE_ROWS:
        from tabulate import tabulate
        return tabulate(list(zip(*columns)), headers=headers, disable_numparse=True)
    texts = []
    for column in columns:
        if set(map(type, column)) != {str}:
            column = ["" if c is None else str(c) for c in column]
        joined = "".join(column)
        if "\n" in joined:  # multi-line cells: tabulate knows how to lay them out
            from tabulate import tabulate
            return tabulate(list(zip(*columns)), headers=headers, disable_numparse=True)
        texts.append(list(map(str.strip, column)))  # tabulate strips cells
    widths = [max(len(h) + 2, max(map(len, column), default=0)) for h, column in zip(headers, texts)]
    line = "  ".join(f"{{:<{w}}}" for w in widths)
    out = [line.format(*headers).rstrip(), "  ".join("-" * w for w in widths)]
    out.extend(line.format(*row).rstrip() for row in zip(*texts))
    return "\n".join(out)


def _fmt_elapsed(seconds: float | None) -> str:
    if seconds is None:
        return ""
    seconds = int(seconds)
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}"


def _statuses(text: str) -> set:
    statuses = {s.strip() for s in text.split(",") if s.strip()}
    bad = statuses - set(STATUSES)
    if bad:
        raise UsageError(f"unknown status {', '.join(sorted(bad))}: use {', '.join(STATUSES)}")
    return statuses


def _warn_damaged_index(index: JobIndex) -> bool:
    """One warning for lines of the index no record could be read from; True if any."""
    lines = index.damaged()
    if lines:
        which = ", ".join(map(str, lines[:10])) + (" ..." if len(lines) > 10 else "")
        print(f"onager: warning: {os.path.normpath(index.path)} line {which} is damaged (not a launch record); "
              "skipped: "
              f"delete that line to silence this", file=sys.stderr)
    return bool(lines)


def _selection(args: argparse.Namespace, index: JobIndex) -> tuple[list[LaunchRecord], Any, set[str] | None]:
    """The launches, the task ids (--tasklist) and the statuses (--status) that `list` shows."""
    records = select_records(index, getattr(args, "jobname", None), getattr(args, "jobid", None),
                             getattr(args, "launch", None), latest_only=getattr(args, "latest", False))
    tasklist = Tasklist.parse(args.tasklist) if getattr(args, "tasklist", None) else None
    wanted: Tasklist | set[int] | None = tasklist
    if tasklist is not None and len(tasklist.blocks) > 64:
        wanted = set(tasklist)
    statuses = _statuses(args.status) if getattr(args, "status", None) else None
    return records, wanted, statuses


def _skipped(record: LaunchRecord, why: str, damaged: list[str] | None) -> None:
    """One warning for a launch left out; a damaged one (not a deleted one) goes into `damaged`."""
    if not os.path.isdir(record.launch_dir):
        print(f"onager: warning: launch {record.key} is in the index but its directory "
              f"{record.launch_dir} is gone; skipped", file=sys.stderr)
        return
    print(f"onager: warning: launch {record.key} skipped: {why}", file=sys.stderr)
    if damaged is not None:
        damaged.append(record.key)


def _rows(args: argparse.Namespace, index: JobIndex, damaged: list[str] | None = None) -> list[TaskRow]:
    """The rows of the selected launches; a launch whose files are damaged is skipped with one
    warning (its key goes into `damaged`), so the other jobs still list."""
    records, wanted, statuses = _selection(args, index)
    return task_rows(records, wanted, statuses, lambda record, why: _skipped(record, why, damaged),
                     all_attempts=getattr(args, "all_attempts", False))


def run_list(args: argparse.Namespace) -> int:
    index = JobIndex()
    if args.tasklist:
        Tasklist.parse(args.tasklist)  # bad input is refused even before anything was launched
    if args.status:
        _statuses(args.status)
    broken = _warn_damaged_index(index)
    if not index.records():
        if not broken:
            print("no launches yet (onager launch records them in .onager/index.jsonl)", file=sys.stderr)
        return 1 if broken else 0
    damaged: list[str] = []
    if args.summary:
        counts = _summary_counts(args, index, damaged)
        # damaged files: the rest is listed, and the exit code says that something was skipped
        return _summary(counts, args) or (1 if broken or damaged else 0)
    hide = set(args.hide or [])
    unknown = hide - set(COLUMNS)
    if unknown:
        raise UsageError(f"unknown column {', '.join(sorted(unknown))} for --hide: use {', '.join(COLUMNS)}")
    show = set(getattr(args, "show", None) or [])
    unknown = show - set(OPTIONAL_COLUMNS)
    if unknown:
        raise UsageError(f"unknown column {', '.join(sorted(unknown))} for --show: use {', '.join(OPTIONAL_COLUMNS)}")
    columns = [c for c in COLUMNS if c not in hide] + [c for c in OPTIONAL_COLUMNS if c in show]
    commits = _commits(index) if args.json or "commit" in show else {}
    records, wanted, statuses = _selection(args, index)
    groups = launch_groups(records, wanted, statuses, all_attempts=getattr(args, "all_attempts", False))
    out: _Output
    if args.json:
        out = _JsonOutput(commits)
    elif args.csv:
        out = _CsvOutput(columns, commits)
    else:
        out = _TableOutput(columns, commits)
    with out:
        for record, group in groups:
            if isinstance(group, str):
                _skipped(record, group, damaged)
                continue
            out.begin()
            try:
                for batch in _batches(group):
                    out.add(batch)
            except OnagerError as exc:
                out.drop()  # a launch damaged part way is left out whole, as before any row was shown
                _skipped(record, str(exc), damaged)
                continue
            out.keep()
        out.finish()
    if not (args.json or args.csv):
        from onager.hints import print_hints
        print_hints(out.failed)  # e.g. "No module named X" where the launching Python has X: use --venv
    # damaged files: the rest is listed, and the exit code says that something was skipped
    return 1 if broken or damaged else 0


BATCH = 4096


def _batches(rows: Iterator[TaskRow]) -> Iterator[list[TaskRow]]:
    """Rows in lists of BATCH: each is turned into text column by column, then dropped."""
    while True:
        batch = list(itertools.islice(rows, BATCH))
        if not batch:
            return
        yield batch


class _Output:
    """Where the rows of `list` go: written a launch at a time into a spill file (in memory
    while small, then an unnamed temporary file), so that memory stays flat in the number of
    rows and a launch found damaged part way can be taken back whole (`drop`)."""

    def __init__(self, commits: dict[str, str]):
        import tempfile  # loaded by the listing of a launch, not by every command

        self.commits = commits
        self.spill = tempfile.SpooledTemporaryFile(  # noqa: SIM115 (closed by __exit__)
            max_size=SPILL_IN_MEMORY, mode="w+", encoding="utf-8", errors="surrogatepass", newline="")
        self.mark = 0
        self.failed: list[TaskRow] = []  # the first failed rows, for the hints after the table
        self.failed_mark = 0

    def __enter__(self) -> _Output:
        return self

    def __exit__(self, *exc: object) -> None:
        self.spill.close()

    def begin(self) -> None:
        self.mark = self.spill.tell()
        self.failed_mark = len(self.failed)

    def add(self, batch: list[TaskRow]) -> None:
        if len(self.failed) < MAX_HINT_ROWS:
            self.failed.extend(itertools.islice((r for r in batch if r.status == "failed"),
                                                MAX_HINT_ROWS - len(self.failed)))
        self.write(batch)

    def write(self, batch: list[TaskRow]) -> None:
        raise NotImplementedError

    def drop(self) -> None:
        self.spill.seek(self.mark)
        self.spill.truncate()
        del self.failed[self.failed_mark:]

    def keep(self) -> None:
        """The launch was read to its end: its rows stay."""

    def finish(self) -> None:
        raise NotImplementedError

    def copy_out(self, skip: int = 0) -> None:
        """What the spill holds, to stdout (less its first `skip` characters), and empty it."""
        self.spill.seek(0)
        if skip:
            self.spill.read(skip)
        while True:
            chunk = self.spill.read(1 << 20)
            if not chunk:
                break
            sys.stdout.write(chunk)
        self.spill.seek(0)
        self.spill.truncate()


SPILL_IN_MEMORY = 1 << 20
MAX_HINT_ROWS = 64  # module_hints looks at 50 failed rows at most


class _JsonOutput(_Output):
    """`--json`: the bytes of json.dump(rows, indent=1), one launch at a time."""

    def __init__(self, commits: dict[str, str]):
        super().__init__(commits)
        self.started = False

    def write(self, batch: list[TaskRow]) -> None:
        commits = self.commits
        text = json.dumps([
            {"job_id": r.job_ids, "launch": r.launch_id, "task_id": r.task_id, "jobname": r.jobname,
             "backend": r.backend, "status": r.status, "reason": r.reason, "attempt": r.attempt,
             "exit": r.exit_code, "start": r.start, "end": r.end, "elapsed": r.elapsed, "tag": r.tag,
             "command": r.command, "params": r.params, "commit": commits.get(f"{r.jobname}/{r.launch_id}", "")}
            for r in batch], indent=1)
        # one call per batch (indent makes json build its encoder per call), its brackets off:
        # "\n {row},\n {row}", each row as json.dump(all rows) spells it
        self.spill.write("," + text[1:-2])

    def keep(self) -> None:
        if self.spill.tell():
            if not self.started:
                sys.stdout.write("[")
            self.copy_out(skip=0 if self.started else 1)  # the first row's comma goes
            self.started = True

    def finish(self) -> None:
        sys.stdout.write("\n]\n" if self.started else "[]\n")


class _CsvOutput(_Output):
    """`--csv`: csv.writer's rows, one launch at a time."""

    def __init__(self, columns: list[str], commits: dict[str, str]):
        import csv

        super().__init__(commits)
        self.columns = columns
        self.writer = csv.writer(self.spill)
        csv.writer(sys.stdout).writerow(columns)

    def write(self, batch: list[TaskRow]) -> None:
        self.writer.writerows(zip(*_columns(batch, self.columns, self.commits)))

    def keep(self) -> None:
        self.copy_out()

    def finish(self) -> None:
        pass


class _TableOutput(_Output):
    """The table: a first pass spills each row's cells (one line, cells apart by NUL) and
    keeps the widest cell of each column; the second pass reads the spill back and prints
    each row padded to those widths, the layout tabulate gives (up to FAST_TABLE_ROWS rows,
    tabulate itself lays them out). Cells holding a newline or a NUL cannot go on one line:
    from the first such row on, rows are kept in memory (and multi-line cells go to tabulate,
    as before)."""

    def __init__(self, columns: list[str], commits: dict[str, str]):
        super().__init__(commits)
        self.columns = columns
        self.widths = [0] * len(columns)
        self.launch_widths = list(self.widths)
        self.count = 0
        self.launch_count = 0
        self.held: list[tuple[str, ...]] | None = None  # rows whose cells cannot be spilled
        self.multiline = False
        self.before: tuple[bool, int, bool] = (True, 0, False)

    def begin(self) -> None:
        super().begin()
        self.launch_widths = list(self.widths)
        self.launch_count = 0
        self.before = (self.held is None, len(self.held or ()), self.multiline)

    def write(self, batch: list[TaskRow]) -> None:
        raws, texts = [], []
        for k, column in enumerate(_columns(batch, self.columns, self.commits)):
            if set(map(type, column)) != {str}:
                column = ["" if c is None else str(c) for c in column]
            joined = "".join(column)
            if "\n" in joined or "\0" in joined:
                if self.held is None:
                    self.held = []
                self.multiline = self.multiline or "\n" in joined
            stripped = list(map(str.strip, column))  # tabulate strips cells
            self.launch_widths[k] = max(self.launch_widths[k], max(map(len, stripped), default=0))
            raws.append(column)
            texts.append(stripped)
        self.launch_count += len(batch)
        if self.held is not None:
            self.held.extend(zip(*raws))  # as they are: tabulate splits multi-line cells itself
        else:
            self.spill.write("\n".join(map("\0".join, zip(*texts))) + "\n")

    def drop(self) -> None:
        super().drop()
        was_none, held, self.multiline = self.before
        if was_none:
            self.held = None
        elif self.held is not None:
            del self.held[held:]

    def keep(self) -> None:
        self.widths = self.launch_widths
        self.count += self.launch_count

    def _spilled(self) -> Iterator[list[str]]:
        self.spill.seek(0)
        rest = ""
        while True:
            chunk = self.spill.read(1 << 20)
            if not chunk:
                break
            lines = (rest + chunk).split("\n")
            rest = lines.pop()
            yield from (line.split("\0") for line in lines)

    def finish(self) -> None:
        headers = self.columns
        held = self.held or []
        if self.count <= FAST_TABLE_ROWS or self.multiline:
            from tabulate import tabulate
            print(tabulate([*self._spilled(), *held], headers=headers, disable_numparse=True))
            return
        widths = [max(len(h) + 2, w) for h, w in zip(headers, self.widths)]
        line = "  ".join(f"{{:<{w}}}" for w in widths)
        write = sys.stdout.write
        write(line.format(*headers).rstrip() + "\n" + "  ".join("-" * w for w in widths) + "\n")
        batch: list[str] = []
        for row in itertools.chain(self._spilled(), (map(str.strip, row) for row in held)):
            batch.append(line.format(*row).rstrip())
            if len(batch) >= BATCH:
                write("\n".join(batch) + "\n")
                batch.clear()
        if batch:
            write("\n".join(batch) + "\n")


def _commits(index: JobIndex) -> dict[str, str]:
    """Launch key -> the commit its provenance recorded (`0123abcd45`, `...-dirty`, or "")."""
    from onager.provenance import launch_commit
    return {r.key: launch_commit(r.launch_dir) for r in index.records()}


def _columns(rows: list[TaskRow], names: list[str], commits: dict[str, str]) -> list[list]:
    """The table's columns, each built in one pass (a 100k-task launch stays fast)."""
    exits: dict[int | None, str] = {}
    elapsed: dict[int | None, str] = {}

    def exit_text(code: int | None) -> str:
        text = exits.get(code)
        if text is None:
            text = exits[code] = describe_exit(code)
        return text

    def elapsed_text(seconds: float | None) -> str:
        key = None if seconds is None else int(seconds)
        text = elapsed.get(key)
        if text is None:
            text = elapsed[key] = _fmt_elapsed(seconds)
        return text

    makers = {
        "job_id": lambda: [r.job_ids or "-" for r in rows],
        "launch": lambda: [r.launch_id for r in rows],
        "task_id": lambda: [str(r.task_id) for r in rows],
        "jobname": lambda: [r.jobname for r in rows],
        "status": lambda: [r.status for r in rows],
        "exit": lambda: [exit_text(r.exit_code) for r in rows],
        "reason": lambda: [r.reason for r in rows],
        "attempt": lambda: [str(r.attempt) if r.attempt else "" for r in rows],
        "elapsed": lambda: [elapsed_text(r.elapsed) for r in rows],
        "tag": lambda: [r.tag for r in rows],
        "command": lambda: [r.command for r in rows],
        "commit": lambda: [commits.get(f"{r.jobname}/{r.launch_id}", "") for r in rows],
    }
    return [makers[name]() for name in names]


def _summary_counts(args: argparse.Namespace, index: JobIndex,
                    damaged: list[str]) -> dict[tuple[str, str, str, str], Counter[str]]:
    """(jobname, launch, backend, job ids) -> status counts of each launch listed, from the index
    and one listing of state/ per launch (`launch_counts`); rows only with --all-attempts."""
    records, wanted, statuses = _selection(args, index)
    all_attempts = getattr(args, "all_attempts", False)
    out: dict[tuple[str, str, str, str], Counter[str]] = {}
    answers = query_all(records) if not all_attempts else {}
    groups = launch_groups(records, wanted, statuses, all_attempts=True) if all_attempts else None
    for record in records:
        try:
            if groups is not None:
                _, group = next(groups)
                if isinstance(group, str):
                    raise FileNotFoundError(group)
                counts = Counter(row.status for row in group)
            elif not os.path.isdir(record.launch_dir):
                raise FileNotFoundError(record.launch_dir)
            else:
                counts = launch_counts(record, answers.get(record.key), wanted)
        except FileNotFoundError as exc:
            _skipped(record, str(exc), damaged)
            continue
        except OnagerError as exc:
            _skipped(record, str(exc), damaged)
            continue
        if statuses is not None:
            counts = Counter({s: n for s, n in counts.items() if s in statuses})
        if counts:
            out[(record.jobname, record.launch_id, record.backend, ",".join(record.job_ids) or "-")] = counts
    return out


def _summary(counts: dict[tuple[str, str, str, str], Counter[str]], args: argparse.Namespace) -> int:
    """One row per launch: its tasks, and how many have each status."""
    seen = {status for c in counts.values() for status in c}
    # the table shows the common statuses and any other one that occurs; JSON and CSV all of them
    shown = STATUSES if args.json or args.csv else tuple(s for s in STATUSES if s in SUMMARY_ALWAYS or s in seen)
    headers = ["jobname", "launch", "backend", "job_id", "tasks"] + list(shown)
    cells = [[*key, sum(c.values())] + [c.get(s, 0) for s in shown] for key, c in counts.items()]
    if args.json:
        json.dump([dict(zip(headers, row)) for row in cells], sys.stdout, indent=1)
        sys.stdout.write("\n")
        return 0
    if args.csv:
        import csv
        writer = csv.writer(sys.stdout)
        writer.writerow(headers)
        writer.writerows(cells)
        return 0
    print(table(cells, headers))
    return 0


# ---------------------------------------------------------------- cancel
class Cancelled(NamedTuple):
    """What cancelling one launch did: the tasks asked for and the scheduler commands run
    (none when they had all finished already)."""

    record: LaunchRecord
    tasks: Tasklist
    commands: list[list[str]]
    finished: bool  # every selected task had already ended: nothing was cancelled


def cancel_records(records: Sequence[LaunchRecord], tasks: Tasklist | None = None,
                   dry_run: bool = False) -> list[Cancelled]:
    """Cancel `tasks` (default: all) of each launch; checks every launch before cancelling any."""
    from onager.backends import backend_class

    plans = []
    for record in records:
        if not os.path.isdir(record.launch_dir):
            raise OnagerError(f"launch directory {record.launch_dir} of {record.key} is gone (deleted by hand?)")
        own = Tasklist.parse(record.tasklist)
        selected = own
        if tasks is not None:
            outside = [i for i in tasks if i not in own] if len(tasks) < 1_000_000 else []
            if outside:
                raise UsageError(f"tasks {Tasklist.from_ids(outside)} are not in launch {record.key} "
                                 f"(it has {record.tasklist})")
            selected = tasks
        plans.append((record, selected))
    done: list[Cancelled] = []
    for record, selected in plans:
        states = read_states(record.launch_dir)
        if all(states.get(i) is not None and states[i].end is not None for i in selected):
            done.append(Cancelled(record, selected, [], True))
            continue
        backend = backend_class(record.backend)(record.options)
        done.append(Cancelled(record, selected, backend.cancel(record, selected, dry_run=dry_run), False))
    return done


def run_cancel(args: argparse.Namespace) -> int:
    import shlex

    from onager.backends import backend_class

    if not args.jobname and not args.jobid:
        raise UsageError("cancel needs --jobname NAME or --jobid ID")
    tasks = Tasklist.parse(args.tasklist) if args.tasklist else None
    index = JobIndex()
    records = index.find(args.jobname, args.jobid, args.launch)
    if not records and args.jobid and args.backend:
        # 0.1.3's form for a job this index does not know: cancel by scheduler id
        backend = backend_class(args.backend)()
        commands = backend.cancel_job_commands(args.jobid, tasks)
        from onager.backends.base import run
        for command in commands:
            if not args.quiet:
                print(shlex.join(command))
            if not args.dry_run:
                run(command, retries=2, transient=("timed out", "temporarily unavailable"))
        return 0
    if not records:
        select_records(index, args.jobname, args.jobid, args.launch)  # raises the right message
        raise UsageError("nothing to cancel")
    if args.jobname and not args.launch and not args.jobid:
        records = records[-1:]
    if args.backend and any(r.backend != args.backend for r in records):
        raise UsageError(f"launch {records[0].key} ran on {records[0].backend}, not {args.backend}")
    for each in cancel_records(records, tasks, dry_run=args.dry_run):
        if args.quiet:
            continue
        if each.finished:
            print(f"nothing to cancel: tasks {each.tasks} of {each.record.key} have all finished", file=sys.stderr)
            continue
        for command in each.commands:
            print(" ".join(command) if command and command[0].startswith("#") else shlex.join(command))
        if not args.dry_run:
            print(f"cancelled tasks {each.tasks} of {each.record.key}", file=sys.stderr)
    return 0


# ------------------------------------------------------------------ wait
def run_wait(args: argparse.Namespace) -> int:
    index = JobIndex()
    records = select_records(index, args.jobname, None, args.launch, latest_only=not args.launch)
    if not records:
        raise UsageError("no launch to wait for: run onager launch first")
    tty = sys.stderr.isatty() and not args.quiet
    last = [""]

    def show(look: Progress) -> None:
        line = ", ".join(f"{look.counts[s]} {s}" for s in STATUSES if look.counts.get(s))
        if tty:
            sys.stderr.write(f"\r\033[K{line} [{int(look.elapsed)}s]")
            sys.stderr.flush()
        elif not args.quiet and line != last[0]:
            print(line, file=sys.stderr)
        last[0] = line

    look, timed_out = wait_for(records, args.timeout, args.interval, show)
    if tty:
        sys.stderr.write("\n")
    if timed_out:
        print(f"onager: still {look.active} task(s) unfinished after {args.timeout:g} s", file=sys.stderr)
        return 124
    if look.stuck:
        print(f"onager: the {look.active} unfinished task(s) wait for {', '.join(look.reasons)}, which will not "
              "clear by itself: fix the request (onager list shows the reason) or cancel them with onager cancel",
              file=sys.stderr)
        return 3
    if look.unsuccessful:
        which = "failed" if set(look.counts) <= RERUN_FAILED | {"done"} else "unfinished"
        # the short rerun: the backend and options come from each job's last launch
        import shlex
        hints = "; ".join(f"onager launch --jobname {shlex.quote(name)} --tasklist {which}"
                          for name in dict.fromkeys(r.jobname for r in records))
        print(f"onager: {len(look.unsuccessful)} task(s) did not succeed: {Tasklist.from_ids(look.unsuccessful)}; "
              f"rerun with: {hints}", file=sys.stderr)
        return 1
    return 0


# ------------------------------------------------------------------ logs
def run_logs(args: argparse.Namespace) -> int:
    index = JobIndex()
    records = select_records(index, args.jobname, None, args.launch)
    suffix = "err" if args.err else "out"
    chosen: LaunchRecord | None = None
    for record in reversed(records):
        if args.task in Tasklist.parse(record.tasklist):
            chosen = record
            break
    if chosen is None:
        raise UsageError(f"task {args.task} is not in any launch of job {args.jobname!r}")
    path = LaunchPaths(chosen.launch_dir).log(args.task, suffix)
    if not os.path.exists(path) and not args.follow:
        if not os.path.isdir(chosen.launch_dir):
            raise OnagerError(f"launch directory {chosen.launch_dir} is gone (deleted by hand?)")
        print(f"onager: task {args.task} of {chosen.key} has written no std{suffix} yet", file=sys.stderr)
        return 0
    if not args.follow:
        from onager.hints import print_task_hint
        print_task_hint(chosen, args.task)  # on stderr, before the log: its last line stays the log's
    out = sys.stdout.buffer
    position = 0
    while True:
        try:
            with open(path, "rb") as handle:
                handle.seek(position)
                while True:
                    chunk = handle.read(1 << 16)
                    if not chunk:
                        break
                    out.write(chunk)
                    position += len(chunk)
            out.flush()
        except FileNotFoundError:
            pass
        if not args.follow:
            return 0
        from onager.status import launch_rows as rows_of
        answers = query_all([chosen])
        status = next((r.status for r in rows_of(chosen, answers.get(chosen.key), {args.task})), "unknown")
        if status not in ("pending", "running"):
            # one last read for what was written just before the end
            with open(path, "rb") if os.path.exists(path) else open(os.devnull, "rb") as handle:
                handle.seek(position)
                out.write(handle.read())
                out.flush()
            return 0
        time.sleep(0.5)
