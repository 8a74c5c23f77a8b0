"""Per-task state: what the wrapper recorded, merged with what the scheduler says.

Every run of a task is a numbered attempt. The wrapper writes facts as NAMES in
`<launch>/state/` (creating a name is atomic on every filesystem, NFS included, and one
directory listing reads a whole launch):

- `<id>.start@<t0>@<attempt>` when an attempt starts (content: host pid jobid pstart);
- `<id>.end@<t>@<code>@<t0>@<attempt>@<state>@<reason>` when it ends, how it ended
  (`state` is one of END_STATES; the older forms `<id>.end@<t>@<code>@<t0>` and
  `<id>.end@<t>@<code>` still read);
- `<id>.cancel@<t>[@why]` and `<id>.cancel` (onager cancel, Ctrl-C), `<id>.lost@<t>@<why>`
  (a pool or dispatcher gave up on an attempt), `<id>.acct@<t>@<attempt>@<state>@<why>` (the
  scheduler's accounting, cached: it refines an attempt the wrapper could not finish), and
  `<id>.dup@<t>@<holder>@<why>` (a duplicate that did not run: not an attempt).
"""
from __future__ import annotations

import gc
import os
import re
import time
from array import array
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, NamedTuple

from onager.errors import OnagerError
from onager.layout import LaunchPaths
from onager.records import Record

if TYPE_CHECKING:
    from onager.tasklist import Tasklist

PENDING, RUNNING, DONE, FAILED, CANCELLED, LOST, ERROR, UNKNOWN = (
    "pending", "running", "done", "failed", "cancelled", "lost", "error", "unknown")
KILLED, TIMEOUT, OOM, PREEMPTED, PRUNED = "killed", "timeout", "oom", "preempted", "pruned"
#: how an attempt can end (the wrapper's word, the scheduler's accounting, or a tuning study
#: that stopped a trial early: pruned)
END_STATES = (DONE, FAILED, KILLED, TIMEOUT, OOM, PREEMPTED, PRUNED, CANCELLED, LOST)
STATUSES = (PENDING, RUNNING, DONE, FAILED, KILLED, TIMEOUT, OOM, PREEMPTED, PRUNED, CANCELLED, LOST, ERROR,
            UNKNOWN)
# what `--tasklist failed` and `--tasklist unfinished` select
RERUN_FAILED = {FAILED, KILLED, TIMEOUT, OOM, PREEMPTED, LOST, ERROR}
RERUN_UNFINISHED = RERUN_FAILED | {CANCELLED, UNKNOWN}
#: what `--retries` retries unless --retry-on says otherwise
RETRY_ON_DEFAULT = frozenset({FAILED, KILLED, TIMEOUT, OOM, PREEMPTED, LOST})
#: a pool's answer for every task it has not finished (`pending (pool)`): unlike a
#: scheduler's, it does not mean that an ended attempt was requeued
POOL_REASON = "pool"
POOL_ANSWER = f"{PENDING} ({POOL_REASON})"
_REASON = re.compile(r"[A-Za-z0-9_.:+,=-]*", re.ASCII)


class Attempt(Record):
    """One run of a task, as its state names tell it."""

    FIELDS = ("number", "start", "end", "exit_code", "state", "reason", "start_name")

    def __init__(self, number: int, start: float | None = None, end: float | None = None,
                 exit_code: int | None = None, state: str | None = None, reason: str = "",
                 start_name: str = "") -> None:
        self.number = number
        self.start = start
        self.end = end
        self.exit_code = exit_code
        self.state = state  # one of END_STATES once it ended
        self.reason = reason
        self.start_name = start_name  # its start name in state/ (what the wrapper wrote: host pid jobid pstart)


class TaskState(Record):
    """What the files say about one task: its latest attempt, and marks on the task."""

    FIELDS = ("start", "end", "exit_code", "cancelled", "lost", "attempts", "attempt", "state", "reason",
              "duplicates", "start_name", "history")

    def __init__(self, start: float | None = None, end: float | None = None, exit_code: int | None = None,
                 cancelled: float | None = None, lost: str | None = None, attempts: int = 0, attempt: int = 0,
                 state: str | None = None, reason: str = "", duplicates: int = 0, start_name: str = "",
                 history: list[Attempt] | None = None) -> None:
        self.start = start
        self.end = end
        self.exit_code = exit_code
        self.cancelled = cancelled
        self.lost = lost
        self.attempts = attempts      # how many attempts this launch's files show
        self.attempt = attempt        # the latest attempt's number (0: none started)
        self.state = state            # how the latest attempt ended (None: it did not, or unknown)
        self.reason = reason
        self.duplicates = duplicates  # duplicate runs refused by the claim
        self.start_name = start_name  # the latest attempt's start name, if it wrote one
        self.history: list[Attempt] = [] if history is None else history


def ended_state(code: int | None) -> str:
    """The end state an exit code alone tells (older end names carry no state)."""
    if code == 0:
        return DONE
    if code is not None and 128 < code < 160:
        return KILLED
    return FAILED


def reason_token(text: str) -> str:
    """`text` as a reason field of a state name: no `@`, no spaces, no path separators."""
    cleaned = re.sub(r"[^A-Za-z0-9_.:+,=-]+", "-", text).strip("-")
    return cleaned[:80]


def mark(launch_dir: str, task_id: int, kind: str, *fields: object) -> None:
    """Create a state name such as `<id>.cancel@<epoch>` (atomic: only the name matters).

    A cancel also creates `<id>.cancel`, a fixed name the wrapper tests right after it
    records its start, so a task starting while it is being cancelled stops by itself.
    """
    name = "@".join([f"{task_id}.{kind}", f"{time.time():.6f}", *map(str, fields)])
    for each in ((name, f"{task_id}.cancel") if kind == "cancel" else (name,)):
        with open(LaunchPaths(launch_dir).state(each), "w"):
            pass


def record_end(launch_dir: str, task_id: int, code: int, started: float | str | None, attempt: int | str,
               state: str, reason: str = "") -> None:
    """An end name written by a pool or dispatcher for an attempt whose wrapper could not (killed)."""
    fields: list[object] = [code]
    if started is not None:
        fields += [started, attempt, state, reason_token(reason)]
    mark(launch_dir, task_id, "end", *fields)


def record_accounting(launch_dir: str, task_id: int, attempt: int, state: str, reason: str = "",
                      when: float | None = None) -> None:
    """Cache the scheduler's accounting answer for one attempt (so it is asked once)."""
    if state not in END_STATES:
        raise ValueError(f"not an end state: {state!r}")
    name = f"{task_id}.acct@{(when or time.time()):.6f}@{int(attempt)}@{state}@{reason_token(reason)}"
    with open(LaunchPaths(launch_dir).state(name), "w"):
        pass


_NAME = re.compile(r"^(\d+)\.(start|end|cancel|lost|acct|dup)@(\d+(?:\.\d*)?)((?:@[^@\n]*)*)$", re.M | re.ASCII)


def _is_int(text: str) -> bool:
    return text.isascii() and text.isdigit()


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def read_states(launch_dir: str, history: bool = False) -> dict[int, TaskState]:
    """Every task's recorded facts, from one listing of `state/` (names only, no file reads).

    One regular expression over all names at once keeps a 100k-task launch fast; a
    corrupted or foreign name simply does not match, and is never fatal. With `history`,
    each TaskState also lists every attempt (`onager list --all-attempts`).
    """
    return parse_states(state_names(launch_dir), history)


def state_names(launch_dir: str) -> list[str]:
    """The ONE listing of `state/` that everything a launch's status says is read from."""
    try:
        return os.listdir(LaunchPaths(launch_dir).state_dir)
    except FileNotFoundError:
        return []
    except OSError as exc:  # a file where the directory should be, unreadable, ...
        raise OnagerError(f"cannot read the task states in {LaunchPaths(launch_dir).state_dir} "
                          f"({exc.strerror or exc}): fix or move it away, or launch the job again") from exc


#: a start name and an end name as the wrapper writes them; a listing made only of these is
#: read by two regular expressions over all names at once (`wrapper_names`). Each pattern
#: starts with a newline, so the scan jumps from line to line instead of trying every position.
_START = re.compile(r"\n(\d+)\.start@(\d+\.?\d*)@(\d+)(?=\n)", re.ASCII)
_END = re.compile(r"\n(\d+)\.end@(\d+\.?\d*)@(-?\d+)@(\d+\.?\d*)@(\d+)@(" + "|".join(END_STATES)
                  + r")@([A-Za-z0-9_.:+,=-]*)(?=\n)", re.ASCII)


@contextmanager
def _no_gc() -> Iterator[None]:
    """No cyclic collection while a listing becomes millions of (acyclic) tuples: each
    collection would walk them all again."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


_START_ONE = re.compile(_START.pattern[2:-6], re.ASCII)  # one name: no newlines around it
_END_ONE = re.compile(_END.pattern[2:-6], re.ASCII)


class WrapperNames:
    """A listing of state/ holding only what the wrapper writes, one attempt per task, kept
    flat (a million tasks must not become a million tuples): per task slot the index in
    `names` of its start and of its end, the end states counted, and the indices of the ends
    that are not `done`; `running_starts` and `other_ends` give those few names' fields."""

    __slots__ = ("names", "counts", "others", "_start_at", "_end_at", "_slot")

    def __init__(self, names: list[str], counts: Counter[str], others: array[int], start_at: array[int],
                 end_at: array[int], slot: Callable[[int], int]):
        self.names, self.counts, self.others = names, counts, others
        self._start_at, self._end_at, self._slot = start_at, end_at, slot

    def named(self, task_id: int) -> bool:
        """Whether the task has a start or an end name."""
        k = self._slot(task_id)
        return k >= 0 and (self._start_at[k] >= 0 or self._end_at[k] >= 0)

    def named_count(self) -> int:
        """How many tasks have a start or an end name."""
        return sum(1 for s, e in zip(self._start_at, self._end_at) if s >= 0 or e >= 0)

    def running_starts(self) -> Iterator[tuple[str, str, str]]:
        """(id, t0, attempt) of each start that has no end."""
        for s, e in zip(self._start_at, self._end_at):
            if s >= 0 and e < 0:
                match = _START_ONE.fullmatch(self.names[s])
                assert match is not None
                yield match.groups()  # type: ignore[misc]

    def other_ends(self) -> Iterator[tuple[str, str, str, str, str, str, str]]:
        """(id, t, code, t0, attempt, state, reason) of each end that is not `done`, in listing order."""
        for i in self.others:
            match = _END_ONE.fullmatch(self.names[i])
            assert match is not None
            yield match.groups()  # type: ignore[misc]


def wrapper_names(names: list[str], within: Tasklist | None = None) -> WrapperNames | None:
    """`names` read one at a time into flat per-task arrays, or None when any name is of
    another kind or form (cancel, lost, accounting, duplicate, older end forms, a name made
    by hand, one holding a newline), a task shows more than one attempt, the same attempt is
    spelled two ways, an end precedes its start, or (given `within`) a task is not in it:
    the general reading (`parse_states`) decides those."""
    slot: Callable[[int], int] | None = None  # task id -> its slot, -1 outside `within` (None: id - first)
    lookup: Callable[[int], int]
    if within is not None and len(within.blocks) == 1 and within.blocks[0][2] == 1:
        first, size = within.first, within.last - within.first + 1

        def lookup(task_id: int) -> int:
            k = task_id - first
            return k if 0 <= k < size else -1
        start_at, end_at = array("q", [-1]) * size, array("q", [-1]) * size
    else:  # other tasklists: a slot per task seen
        slots: dict[int, int] = {}
        start_at, end_at = array("q"), array("q")
        first, size = 0, 1 << 62  # slots grow as tasks are seen

        def lookup(task_id: int) -> int:
            return slots.get(task_id, -1)

        def slot(task_id: int) -> int:
            k = slots.get(task_id)
            if k is None:
                if within is not None and task_id not in within:
                    return -1
                k = slots[task_id] = len(slots)
                start_at.append(-1)
                end_at.append(-1)
            return k
    counts: Counter[str] = Counter()
    others = array("q")
    start_one, end_one = _START_ONE.fullmatch, _END_ONE.fullmatch
    for i, name in enumerate(names):  # the loop of a million tasks: no call that can be avoided
        match = start_one(name)
        if match is not None:
            k = int(match[1]) - first if slot is None else slot(int(match[1]))
            if not 0 <= k < size:
                return None  # a task the launch does not have
            seen = start_at[k]
            if seen >= 0:
                if names[seen] != name:
                    return None  # two starts: two attempts, or one spelled two ways
                continue
            start_at[k] = i
            end = end_at[k]
            if end >= 0 and _start_of(names[end]) != name:
                return None  # a start of another attempt than the end
            continue
        match = end_one(name)
        if match is None:
            return None  # another kind or form of name
        task, when, _, t0, number, how, _ = match.groups()
        k = int(task) - first if slot is None else slot(int(task))
        if not 0 <= k < size or end_at[k] >= 0:
            return None  # a task the launch does not have, or two ends: two attempts
        end_at[k] = i
        start = start_at[k]
        if start >= 0 and names[start] != f"{task}.start@{t0}@{number}":
            return None
        if float(when) < float(t0):
            return None  # an end before its start (clocks)
        counts[how] += 1
        if how != "done":
            others.append(i)
    return WrapperNames(names, counts, others, start_at, end_at, lookup)


def _start_of(end_name: str) -> str:
    """The start name of the attempt that an end name (of `_END_ONE`'s form) ends."""
    fields = end_name.split("@")
    return f"{fields[0][:-4]}.start@{fields[3]}@{fields[4]}"


def parse_states(names: list[str], history: bool = False) -> dict[int, TaskState]:
    """`read_states` of names already listed (`state_names`)."""
    states = _wrapper_states(names, history)
    return states if states is not None else _parse_any(names, history)


def _parse_any(names: list[str], history: bool) -> dict[int, TaskState]:
    """`parse_states` of any names: every kind and older form, one name at a time."""
    joined = "\n".join(names)
    if joined.count("\n") != len(names) - 1:  # a name holding a newline must not read as two names
        joined = "\n".join(name for name in names if "\n" not in name)
    # per task: attempts by (number, start time) -> Attempt
    tries: dict[int, dict[tuple[int, float], Attempt]] = {}
    loose_ends: dict[int, tuple[float, int]] = {}  # end names without a start time: (when, code)
    accounting: dict[tuple[int, int], tuple[float, str, str]] = {}
    unnumbered: dict[int, list[tuple[float, float, int, str, str]]] = {}
    states: dict[int, TaskState] = {}
    for task, kind, when_text, rest in _NAME.findall(joined):
        task_id = int(task)
        when = float(when_text)
        parts = rest.split("@")[1:] if rest else []
        if kind == "start":
            number = int(parts[0]) if parts and _is_int(parts[0]) else 1
            bucket = tries.setdefault(task_id, {})
            attempt = bucket.get((number, when))
            if attempt is None:
                attempt = bucket[(number, when)] = Attempt(number, when)
            attempt.start_name = f"{task}.start@{when_text}{rest}"
            continue
        if kind == "end":
            if not parts or not _is_int(parts[0].lstrip("-")):
                continue
            code = int(parts[0])
            started = _number(parts[1]) if len(parts) > 1 else None
            if started is None:
                previous = loose_ends.get(task_id)
                if previous is None or when > previous[0]:
                    loose_ends[task_id] = (when, code)
                continue
            state = parts[3] if len(parts) > 3 and parts[3] in END_STATES else ended_state(code)
            reason = parts[4] if len(parts) > 4 else ""
            if len(parts) > 2 and parts[2] == "-":  # written by a pool that knows only the start time
                unnumbered.setdefault(task_id, []).append((started, when, code, state, reason))
                continue
            number = int(parts[2]) if len(parts) > 2 and _is_int(parts[2]) else 1
            bucket = tries.setdefault(task_id, {})
            attempt = bucket.get((number, started))
            if attempt is None:
                attempt = bucket[(number, started)] = Attempt(number, started)
            if attempt.end is None or when < attempt.end:  # the first end recorded wins (the wrapper's)
                attempt.end, attempt.exit_code, attempt.state, attempt.reason = when, code, state, reason
            continue
        st = states.get(task_id)
        if st is None:
            st = states[task_id] = TaskState()
        if kind == "cancel":
            st.cancelled = max(when, st.cancelled or 0)
        elif kind == "lost":
            st.lost = (parts[0] if parts else "") or "lost"
        elif kind == "acct" and len(parts) >= 2 and _is_int(parts[0]) and parts[1] in END_STATES:
            accounting[(task_id, int(parts[0]))] = (when, parts[1], parts[2] if len(parts) > 2 else "")
        elif kind == "dup":
            st.duplicates += 1
    for task_id, ends in unnumbered.items():
        bucket = tries.setdefault(task_id, {})
        for started, when, code, state, reason in ends:
            key = next((k for k in bucket if k[1] == started), (1, started))
            attempt = bucket.get(key) or bucket.setdefault(key, Attempt(key[0], started))
            if attempt.end is None:
                attempt.end, attempt.exit_code, attempt.state, attempt.reason = when, code, state, reason
    for task_id, bucket in tries.items():
        st = states.get(task_id)
        if st is None:
            st = states[task_id] = TaskState()
        latest = bucket[max(bucket)]
        st.attempts = len(bucket)
        st.attempt = latest.number
        st.start = latest.start
        if latest.end is None:
            loose = loose_ends.pop(task_id, None)
            if loose is not None and latest.start is not None and loose[0] >= latest.start:
                latest.end, latest.exit_code = loose
                latest.state = ended_state(loose[1])
        cached = accounting.get((task_id, latest.number))
        if cached is not None and (latest.end is None or latest.state == KILLED):
            latest.end = latest.end if latest.end is not None else cached[0]
            latest.state, latest.reason = cached[1], cached[2] or latest.reason
        st.end, st.exit_code, st.state, st.reason = latest.end, latest.exit_code, latest.state, latest.reason
        st.start_name = latest.start_name
        if history:
            st.history = [bucket[key] for key in sorted(bucket)]
    for task_id, (when, code) in loose_ends.items():  # an end with no start at all (never ran)
        st = states.get(task_id)
        if st is None:
            st = states[task_id] = TaskState()
        st.end, st.exit_code, st.state = when, code, ended_state(code)
        if history:
            st.history = [Attempt(0, None, when, code, st.state)]
    return states


_WORDS = {word: word for word in END_STATES}  # one string per end state, not one per task


def _wrapper_states(names: list[str], history: bool) -> dict[int, TaskState] | None:
    """What `_parse_any` reads from names that are all what the wrapper writes, one attempt
    per task, read match by match (no list of every name's fields), or None for any other
    listing."""
    joined = "\n" + "\n".join(names) + "\n"
    if joined.count("\n") != len(names) + 1:
        return None  # a name holding a newline
    states: dict[int, TaskState] = {}
    found = 0
    with _no_gc():
        for match in _END.finditer(joined):
            task, when, code, t0, number, how, reason = match.groups()
            task_id = int(task)
            if task_id in states:
                return None  # two ends: two attempts
            states[task_id] = TaskState(float(t0), float(when), int(code), attempts=1, attempt=int(number),
                                        state=_WORDS[how], reason=reason)
            found += 1
        for match in _START.finditer(joined):
            task, t0, number = match.groups()
            task_id, start, attempt = int(task), float(t0), int(number)
            st = states.get(task_id)
            if st is None:
                states[task_id] = TaskState(start, attempts=1, attempt=attempt, start_name=match.group()[1:])
            elif st.end is None or st.start_name or st.start != start or st.attempt != attempt:
                return None  # a start of another attempt, or a second start
            else:
                st.start_name = match.group()[1:]
            found += 1
        if found != len(names):
            return None  # other kinds of names, or other forms
        if history:
            for st in states.values():
                st.history = [Attempt(st.attempt, st.start, st.end, st.exit_code, st.state, st.reason,
                                      st.start_name)]
    return states


def read_attempts(launch_dir: str) -> dict[int, list[Attempt]]:
    """Each task's attempts in this launch, oldest first."""
    return {task_id: st.history for task_id, st in read_states(launch_dir, history=True).items()}


def start_fields(launch_dir: str, task_id: int) -> list[str] | None:
    """What the task's latest attempt wrote when it started (host pid jobid pstart), or None."""
    state_dir = LaunchPaths(launch_dir).state_dir
    try:
        names = os.listdir(state_dir)
    except OSError:
        return None
    best, key = None, (-1, -1.0)
    prefix = f"{task_id}.start@"
    for name in names:
        if not name.startswith(prefix):
            continue
        parts = name.split("@")
        started = _number(parts[1])
        if started is None:
            continue
        this = (int(parts[2]) if len(parts) > 2 and _is_int(parts[2]) else 1, started)
        if this > key:
            best, key = name, this
    if best is None:
        return None
    try:
        with open(os.path.join(state_dir, best), encoding="utf-8", errors="replace") as handle:
            return handle.read().split()
    except OSError:
        return None


class Verdict(NamedTuple):
    """A task's status, why, and whether it waits for something that cannot clear by itself."""

    status: str
    reason: str = ""
    blocked: bool = False


def parse_answer(answer: str | None) -> tuple[str | None, str]:
    """A scheduler's word for a task, `word` or `word (reason)`, split."""
    if not answer:
        return None, ""
    word, _, rest = answer.partition(" (")
    return word, rest[:-1] if rest.endswith(")") else rest


def verdict(st: TaskState | None, scheduler: str | None, queried: bool) -> Verdict:
    """One status from the task's files and the scheduler's word.

    `scheduler` is the backend's answer (pending/running/blocked/error, an accounting end
    word, with an optional `(reason)`) or None (it does not know the task); `queried` is
    False when the scheduler could not be asked at all.
    """
    word, why = parse_answer(scheduler)
    if st is not None and st.end is not None and (st.start is None or st.end >= st.start):
        ended = st.state or ended_state(st.exit_code)
        if st.cancelled is not None and st.exit_code != 0:
            return Verdict(CANCELLED, st.reason if ended == CANCELLED else "")
        if ended != DONE and word in (PENDING, RUNNING, "blocked") and why != POOL_REASON:
            # the attempt ended, and the scheduler runs or queues the task again: requeued
            return Verdict(RUNNING if word == RUNNING else PENDING, "requeued", word == "blocked")
        if ended == KILLED and word in END_STATES:
            return Verdict(word, why or st.reason)
        return Verdict(ended, st.reason)
    if st is not None and st.cancelled is not None:
        return Verdict(CANCELLED)
    if word == ERROR:
        return Verdict(ERROR, why)
    if word in (PENDING, RUNNING, "blocked"):
        if word == RUNNING or (st is not None and st.start and why == POOL_REASON):
            return Verdict(RUNNING)
        if st is not None and st.start:
            # started, never ended, and the scheduler queues it again: killed outright, then requeued
            return Verdict(PENDING, "requeued", word == "blocked")
        return Verdict(PENDING, "" if why == POOL_REASON else why, word == "blocked")
    if word in END_STATES:
        return Verdict(word, why)
    if not queried:
        return Verdict(UNKNOWN)
    if st is not None and st.lost:
        return Verdict(LOST, st.lost)
    # the scheduler no longer knows it, and it never wrote its end: killed or never ran
    return Verdict(LOST, "no-end-recorded" if st is not None and st.start else "never-started")


def status_of(st: TaskState | None, scheduler: str | None, queried: bool) -> str:
    """The status alone (see `verdict`)."""
    return verdict(st, scheduler, queried).status


def describe_exit(code: int | None) -> str:
    if code is None:
        return ""
    if code > 128:
        try:
            import signal
            return f"{code} ({signal.Signals(code - 128).name})"
        except ValueError:
            return str(code)
    return str(code)


def statuses(launch_dir: str, ids: Iterable[int], scheduler: dict[int, str],
             queried: bool) -> dict[int, str]:
    states = read_states(launch_dir)
    return {i: status_of(states.get(i), scheduler.get(i), queried) for i in ids}
