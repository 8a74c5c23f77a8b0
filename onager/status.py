"""Status of launched tasks: the index, the state files, and ONE scheduler query per backend."""
from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from typing import Any, Callable, NamedTuple

from onager.backends import backend_class
from onager.errors import OnagerError, UsageError
from onager.index import JobIndex, LaunchRecord
from onager.layout import TUNE_JSON, iter_launch_tasks
from onager.state import (
    DONE,
    LOST,
    PENDING,
    POOL_ANSWER,
    RERUN_FAILED,
    TaskState,
    Verdict,
    parse_states,
    read_states,
    state_names,
    verdict,
    wrapper_names,
)
from onager.tasklist import Tasklist


class TaskRow(NamedTuple):
    jobname: str
    launch_id: str
    job_ids: str
    backend: str
    task_id: int
    status: str
    exit_code: int | None
    start: float | None
    end: float | None
    tag: str
    command: str
    params: dict[str, Any]
    attempt: int = 0     # the attempt shown (the latest, unless every attempt is listed); 0: none ran
    reason: str = ""     # why it ended, or why it waits (a scheduler's pending reason)
    blocked: bool = False  # it waits for something that cannot clear by itself

    @property
    def elapsed(self) -> float | None:
        if self.start is None:
            return None
        return (self.end if self.end is not None else time.time()) - self.start


def query_all(records: Sequence[LaunchRecord]) -> dict[str, dict[int, str] | None]:
    """Ask each backend once about all of its launches."""
    by_backend: dict[str, list[LaunchRecord]] = {}
    for r in records:
        by_backend.setdefault(r.backend, []).append(r)
    answers: dict[str, dict[int, str] | None] = {}
    for name, group in by_backend.items():
        try:
            backend = backend_class(name)(group[-1].options)
            answers.update(backend.query(group))
        except OnagerError:
            answers.update({r.key: None for r in group})
    return answers


def _decider(record: LaunchRecord, scheduler: dict[int, str] | None,
             states: dict[int, TaskState]) -> Callable[[int, TaskState | None], Verdict]:
    """The status of one task of `record` from its facts and the scheduler's answers: one
    function for the rows of `list` and for the counts of `list --summary`."""
    if scheduler is not None and os.path.exists(os.path.join(record.launch_dir, TUNE_JSON)):
        from onager.tune import trial_answers  # only for tuning launches: not at every start-up
        scheduler = trial_answers(record.launch_dir, scheduler, states)  # it knows the agents, not their trials
    queried = scheduler is not None
    get_sched = (scheduler if scheduler is not None else {}).get
    policy: list[Any] = []
    ended: dict[tuple[str | None, int | None, str], Verdict] = {}  # one Verdict per way of ending

    def decide(task_id: int, st: TaskState | None) -> Verdict:
        answer = get_sched(task_id)
        if answer is None and st is not None and st.end is not None and st.cancelled is None \
                and (st.start is None or st.end >= st.start):
            # ended, and the scheduler says nothing of it: how it ended (what `verdict` says then)
            key = (st.state, st.exit_code if st.state is None else 0, st.reason)
            found = ended.get(key)
            if found is None:
                found = ended[key] = verdict(st, None, queried)
            return found
        v = verdict(st, answer, queried)
        if st is not None and answer == POOL_ANSWER and v.status in RERUN_FAILED and st.cancelled is None:
            # a live pool runs an eligible task again itself (--retries, --requeue): not final yet
            if not policy:
                policy.append(_recovery(record))
            if policy[0] and policy[0].wants(v.status, max(0, st.attempts - 1), 0):
                v = Verdict(PENDING, "retrying")
        return v
    return decide


def array_job_id(record: LaunchRecord) -> Callable[[int], str] | None:
    """Task id -> the scheduler job id of the array that holds it, for a launch split into
    several arrays (None for one job id or none: every row shows the launch's own). A row
    of a split launch names its own array, not every job id of the launch (a 100k-task
    launch split below MaxArraySize has a hundred of them)."""
    if len(record.job_ids) < 2:
        return None
    import bisect

    from onager.backends.array import load_submissions, read_groups

    joined = ",".join(record.job_ids)
    per_node, submissions = load_submissions(record)
    spans = []
    try:
        for sub in submissions:
            offset, array = int(sub.get("offset", 0)), Tasklist.parse(str(sub["array"]))
            spans.append((offset + array.first, offset + array.last, str(sub["job_id"])))
    except (OnagerError, UsageError, ValueError, TypeError, KeyError, AttributeError):
        return lambda task_id: joined
    spans.sort()
    starts = [span[0] for span in spans]
    group_of: dict[int, int] | None = None
    if per_node > 1:  # the arrays count groups of tasks (--tasks-per-node)
        group_of = {task: number for number, tasks in enumerate(read_groups(record.launch_dir), 1)
                    for task in tasks}

    def job_id(task_id: int) -> str:
        number = task_id if group_of is None else group_of.get(task_id, 0)
        k = bisect.bisect_right(starts, number) - 1
        return spans[k][2] if k >= 0 and number <= spans[k][1] else joined
    return job_id


def launch_rows(record: LaunchRecord, scheduler: dict[int, str] | None,
                wanted: Any | None = None, all_attempts: bool = False) -> Iterator[TaskRow]:
    """One row per task of a launch (its latest attempt), or per attempt with `all_attempts`;
    rows are made as tasks.jsonl is read, none kept."""
    states = read_states(record.launch_dir, history=all_attempts)
    decide = _decider(record, scheduler, states)
    job_of = array_job_id(record)
    job_ids = ",".join(record.job_ids)
    jobname, launch_id, backend = record.jobname, record.launch_id, record.backend
    get_state = states.get
    for task_id, command, tag, params in iter_launch_tasks(record.launch_dir):
        if wanted is not None and task_id not in wanted:
            continue
        st = get_state(task_id)
        v = decide(task_id, st)
        head = (jobname, launch_id, job_ids if job_of is None else job_of(task_id), backend)
        if st is None:
            yield TaskRow(*head, task_id, v.status, None, None, None, tag, command, params, 0, v.reason, v.blocked)
            continue
        if all_attempts and len(st.history) > 1:
            for attempt in st.history[:-1]:
                yield TaskRow(*head, task_id, attempt.state or LOST, attempt.exit_code, attempt.start, attempt.end,
                              tag, command, params, attempt.number, attempt.reason)
        yield TaskRow(*head, task_id, v.status, st.exit_code, st.start, st.end, tag, command, params,
                      st.attempt, v.reason, v.blocked)


def _recovery(record: LaunchRecord) -> Any:
    """The launch's retry policy (onager.recovery), or False when it has none or cannot be read."""
    from onager.recovery import from_options
    try:
        policy = from_options(dict(record.options or {}), record.backend)
    except (OnagerError, UsageError):
        return False
    return policy if policy.retries or policy.requeue else False


def select_records(index: JobIndex, jobname: str | None = None, jobid: str | None = None,
                   launch_id: str | None = None, latest_only: bool = False) -> list[LaunchRecord]:
    records = index.find(jobname, jobid, launch_id)
    if not records:
        if jobname and not index.for_job(jobname):
            raise UsageError(f"no launch of job {jobname!r} in the index: check the name with onager list")
        if jobid:
            raise UsageError(f"no launch with job id {jobid!r} in the index: check it with onager list")
        if launch_id:
            raise UsageError(f"job {jobname!r} has no launch {launch_id!r}: check it with onager list")
    if latest_only and records:
        latest: dict[str, LaunchRecord] = {}
        for r in records:
            latest[r.jobname] = r
        records = list(latest.values())
    return records


def job_task_statuses(jobname: str, root: str = ".") -> dict[int, tuple[str, LaunchRecord]]:
    """Each task's status in the most recent launch that ran it."""
    index = JobIndex(root)
    records = index.for_job(jobname)
    if not records:
        raise UsageError(f"job {jobname!r} has never been launched: nothing to relaunch")
    answers = query_all(records)
    out: dict[int, tuple[str, LaunchRecord]] = {}
    for record in records:
        if not os.path.isdir(record.launch_dir):
            continue
        for row in launch_rows(record, answers.get(record.key)):
            out[row.task_id] = (row.status, record)
    return out


def launch_groups(records: Sequence[LaunchRecord], wanted: Any | None = None,
                  statuses: set[str] | None = None,
                  all_attempts: bool = False) -> Iterator[tuple[LaunchRecord, Iterator[TaskRow] | str]]:
    """Per launch (one scheduler query per backend first): its rows as an iterator, or why it
    cannot be listed (its directory is gone). Iterating may raise OnagerError (damaged files)."""
    answers = query_all(records)
    for record in records:
        if not os.path.isdir(record.launch_dir):
            yield record, f"its directory {record.launch_dir} is gone"
            continue
        rows = launch_rows(record, answers.get(record.key), wanted, all_attempts)
        yield record, rows if statuses is None else (row for row in rows if row.status in statuses)


def task_rows(records: Sequence[LaunchRecord], wanted: Any | None = None,
              statuses: set[str] | None = None,
              skipped: Callable[[LaunchRecord, str], None] | None = None,
              all_attempts: bool = False) -> list[TaskRow]:
    """The rows of `records` (one scheduler query per backend), as `onager list` shows them.

    A launch whose directory is gone or whose files are damaged is left out and reported to
    `skipped(record, why)`, so the other launches still list; without `skipped` it raises.
    """
    rows: list[TaskRow] = []
    for record, group in launch_groups(records, wanted, statuses, all_attempts):
        if isinstance(group, str):
            if skipped is None:
                raise OnagerError(f"launch directory {record.launch_dir} of {record.key} is gone (deleted by hand?)")
            skipped(record, group)
            continue
        before = len(rows)
        try:
            rows.extend(group)
        except OnagerError as exc:
            if skipped is None:
                raise
            del rows[before:]
            skipped(record, str(exc))
    return rows


def launch_counts(record: LaunchRecord, scheduler: dict[int, str] | None,
                  wanted: Any | None = None) -> Counter[str]:
    """status -> number of tasks of one launch, as its rows would count them, from ONE listing
    of state/ and the index's tasklist: tasks.jsonl is not read and no row is made.

    A launch whose names are all a start and the end of that same attempt (what the wrapper
    writes), with at most one attempt per task, is counted by regular expressions and set
    operations over all names at once; only the tasks that did not end `done`, started ones
    that did not end and ids the scheduler answers for are looked at one by one. Any other
    launch goes through the same per-task decision as its rows, without tasks.jsonl."""
    try:
        tasks = Tasklist.parse(record.tasklist)
    except UsageError as exc:
        raise OnagerError(f"its tasklist in the index is damaged ({exc})") from None
    names = state_names(record.launch_dir)
    fast = None
    if wanted is None and not os.path.exists(os.path.join(record.launch_dir, TUNE_JSON)):
        fast = _simple_counts(record, scheduler, names, tasks)
    if fast is not None:
        return fast
    states = parse_states(names)
    decide = _decider(record, scheduler, states)
    counts: Counter[str] = Counter()
    ids = tasks if wanted is None else (i for i in tasks if i in wanted)
    for task_id in ids:
        counts[decide(task_id, states.get(task_id)).status] += 1
    return counts


def _simple_counts(record: LaunchRecord, scheduler: dict[int, str] | None, names: list[str],
                   tasks: Tasklist) -> Counter[str] | None:
    """`launch_counts` of a launch whose state names are only what the wrapper writes, or None."""
    simple = wrapper_names(names, tasks)
    if simple is None:
        return None
    decide = _decider(record, scheduler, {})
    counts: Counter[str] = Counter(simple.counts)
    other = counts.keys() - {DONE}  # `done` is final whatever the scheduler says; the rest are decided
    for task, t, code, t0, number, state, reason in simple.other_ends() if other else ():
        counts[state] -= 1
        st = TaskState(float(t0), float(t), int(code), attempts=1, attempt=int(number), state=state,
                       reason=reason)
        counts[decide(int(task), st).status] += 1
    for task, t0, number in simple.running_starts():
        counts[decide(int(task), TaskState(float(t0), attempts=1, attempt=int(number))).status] += 1
    named = simple.named_count()
    rest = len(tasks) - named
    if rest:  # tasks with no name at all: what the scheduler says of each
        if scheduler is None or type(scheduler) is dict:
            answered = [i for i in (scheduler or {}) if i in tasks and not simple.named(i)]
            for task_id in answered:
                counts[decide(task_id, None).status] += 1
            if rest - len(answered):
                counts[verdict(None, None, scheduler is not None).status] += rest - len(answered)
        else:  # a pool's answers are computed per task
            for task_id in tasks:
                if not simple.named(task_id):
                    counts[decide(task_id, None).status] += 1
    return +counts


#: statuses that may still change: a task neither ran to its end nor was given up on
#: (unknown: the scheduler could not be asked; the task may well still run)
ACTIVE = ("pending", "running", "unknown")


class Progress(NamedTuple):
    """One look at the launches being waited for."""

    counts: dict[str, int]   # status -> number of tasks
    unsuccessful: list[int]  # ids of finished tasks that did not end `done`
    active: int              # tasks still pending, running or unknown
    elapsed: float           # seconds since the wait began
    blocked: int = 0         # active tasks waiting for a reason that cannot clear by itself
    reasons: tuple[str, ...] = ()  # those reasons

    @property
    def finished(self) -> bool:
        return self.active == 0

    @property
    def stuck(self) -> bool:
        """Every task still active waits for something that cannot clear: waiting is pointless."""
        return self.active > 0 and self.blocked == self.active


def wait_for(records: Sequence[LaunchRecord], timeout: float | None = None, interval: float = 1.0,
             progress: Callable[[Progress], None] | None = None) -> tuple[Progress, bool]:
    """Poll until no task of `records` is active; (last look, timed out). `progress` sees each look."""
    start = time.time()
    while True:
        counts: dict[str, int] = {}
        unsuccessful: list[int] = []
        blocked = 0
        reasons: set[str] = set()
        for row in task_rows(records):
            counts[row.status] = counts.get(row.status, 0) + 1
            if row.status not in ACTIVE and row.status != "done":
                unsuccessful.append(row.task_id)
            if row.blocked:
                blocked += 1
                reasons.add(row.reason)
        active = sum(counts.get(s, 0) for s in ACTIVE)
        look = Progress(counts, unsuccessful, active, time.time() - start, blocked, tuple(sorted(reasons)))
        if progress is not None:
            progress(look)
        if look.finished or look.stuck:
            return look, False
        if timeout is not None and time.time() - start > timeout:
            return look, True
        time.sleep(max(0.05, interval))
