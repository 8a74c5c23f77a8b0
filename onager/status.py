"""Status of launched tasks: the index, the state files, and ONE scheduler query per backend."""
from __future__ import annotations

import os
import time
from collections.abc import Iterator, Sequence
from typing import Any, Callable, NamedTuple

from onager.backends import backend_class
from onager.errors import OnagerError, UsageError
from onager.index import JobIndex, LaunchRecord
from onager.layout import TUNE_JSON, iter_launch_tasks
from onager.state import (
    LOST,
    PENDING,
    POOL_ANSWER,
    RERUN_FAILED,
    Verdict,
    read_states,
    verdict,
)


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


def launch_rows(record: LaunchRecord, scheduler: dict[int, str] | None,
                wanted: Any | None = None, all_attempts: bool = False) -> Iterator[TaskRow]:
    """One row per task of a launch (its latest attempt), or per attempt with `all_attempts`."""
    states = read_states(record.launch_dir, history=all_attempts)
    if scheduler is not None and os.path.exists(os.path.join(record.launch_dir, TUNE_JSON)):
        from onager.tune import trial_answers  # only for tuning launches: not at every start-up
        scheduler = trial_answers(record.launch_dir, scheduler, states)  # it knows the agents, not their trials
    queried = scheduler is not None
    sched = scheduler if scheduler is not None else {}
    job_ids = ",".join(record.job_ids)
    head = (record.jobname, record.launch_id, job_ids, record.backend)
    get_state, get_sched = states.get, sched.get
    policy: Any = None
    for task_id, command, tag, params in iter_launch_tasks(record.launch_dir):
        if wanted is not None and task_id not in wanted:
            continue
        st = get_state(task_id)
        if st is None:
            v = verdict(None, get_sched(task_id), queried)
            yield TaskRow(*head, task_id, v.status, None, None, None, tag, command, params, 0, v.reason, v.blocked)
            continue
        answer = get_sched(task_id)
        v = verdict(st, answer, queried)
        if answer == POOL_ANSWER and v.status in RERUN_FAILED and st.cancelled is None:
            # a live pool runs an eligible task again itself (--retries, --requeue): not final yet
            if policy is None:
                policy = _recovery(record)
            if policy and policy.wants(v.status, max(0, st.attempts - 1), 0):
                v = Verdict(PENDING, "retrying")
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


def task_rows(records: Sequence[LaunchRecord], wanted: Any | None = None,
              statuses: set[str] | None = None,
              skipped: Callable[[LaunchRecord, str], None] | None = None,
              all_attempts: bool = False) -> list[TaskRow]:
    """The rows of `records` (one scheduler query per backend), as `onager list` shows them.

    A launch whose directory is gone or whose files are damaged is left out and reported to
    `skipped(record, why)`, so the other launches still list; without `skipped` it raises.
    """
    answers = query_all(records)
    rows: list[TaskRow] = []
    for record in records:
        if not os.path.isdir(record.launch_dir):
            why = f"its directory {record.launch_dir} is gone"
            if skipped is None:
                raise OnagerError(f"launch directory {record.launch_dir} of {record.key} is gone (deleted by hand?)")
            skipped(record, why)
            continue
        before = len(rows)
        try:
            for row in launch_rows(record, answers.get(record.key), wanted, all_attempts):
                if statuses is None or row.status in statuses:
                    rows.append(row)
        except OnagerError as exc:
            if skipped is None:
                raise
            del rows[before:]
            skipped(record, str(exc))
    return rows


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
