"""Status of launched tasks: the index, the state files, and ONE scheduler query per backend."""
from __future__ import annotations

import os
import time
from typing import Any, Dict, Iterator, List, NamedTuple, Optional, Sequence, Tuple

from onager.backends import backend_class
from onager.errors import OnagerError, UsageError
from onager.index import JobIndex, LaunchRecord
from onager.state import read_states, status_of


class TaskRow(NamedTuple):
    jobname: str
    launch_id: str
    job_ids: str
    backend: str
    task_id: int
    status: str
    exit_code: Optional[int]
    start: Optional[float]
    end: Optional[float]
    tag: str
    command: str
    params: Dict[str, Any]

    @property
    def elapsed(self) -> Optional[float]:
        if self.start is None:
            return None
        return (self.end if self.end is not None else time.time()) - self.start


def query_all(records: Sequence[LaunchRecord]) -> Dict[str, Optional[Dict[int, str]]]:
    """Ask each backend once about all of its launches."""
    by_backend: Dict[str, List[LaunchRecord]] = {}
    for r in records:
        by_backend.setdefault(r.backend, []).append(r)
    answers: Dict[str, Optional[Dict[int, str]]] = {}
    for name, group in by_backend.items():
        try:
            backend = backend_class(name)(group[-1].options)
            answers.update(backend.query(group))
        except OnagerError:
            answers.update({r.key: None for r in group})
    return answers


def launch_rows(record: LaunchRecord, scheduler: Optional[Dict[int, str]],
                wanted: Optional[Any] = None) -> Iterator[TaskRow]:
    from onager.launch import iter_launch_tasks
    states = read_states(record.launch_dir)
    queried = scheduler is not None
    sched = scheduler if scheduler is not None else {}
    job_ids = ",".join(record.job_ids)
    head = (record.jobname, record.launch_id, job_ids, record.backend)
    get_state, get_sched = states.get, sched.get
    for task_id, command, tag, params in iter_launch_tasks(record.launch_dir):
        if wanted is not None and task_id not in wanted:
            continue
        st = get_state(task_id)
        status = status_of(st, get_sched(task_id), queried)
        if st is None:
            yield TaskRow(*head, task_id, status, None, None, None, tag, command, params)
        else:
            yield TaskRow(*head, task_id, status, st.exit_code, st.start, st.end, tag, command, params)


def select_records(index: JobIndex, jobname: Optional[str] = None, jobid: Optional[str] = None,
                   launch_id: Optional[str] = None, latest_only: bool = False) -> List[LaunchRecord]:
    records = index.find(jobname, jobid, launch_id)
    if not records:
        if jobname and not index.for_job(jobname):
            raise UsageError(f"no launch of job {jobname!r} in the index: check the name with onager list")
        if jobid:
            raise UsageError(f"no launch with job id {jobid!r} in the index: check it with onager list")
        if launch_id:
            raise UsageError(f"job {jobname!r} has no launch {launch_id!r}: check it with onager list")
    if latest_only and records:
        latest: Dict[str, LaunchRecord] = {}
        for r in records:
            latest[r.jobname] = r
        records = list(latest.values())
    return records


def job_task_statuses(jobname: str, root: str = ".") -> Dict[int, Tuple[str, LaunchRecord]]:
    """Each task's status in the most recent launch that ran it."""
    index = JobIndex(root)
    records = index.for_job(jobname)
    if not records:
        raise UsageError(f"job {jobname!r} has never been launched: nothing to relaunch")
    answers = query_all(records)
    out: Dict[int, Tuple[str, LaunchRecord]] = {}
    for record in records:
        if not os.path.isdir(record.launch_dir):
            continue
        for row in launch_rows(record, answers.get(record.key)):
            out[row.task_id] = (row.status, record)
    return out
