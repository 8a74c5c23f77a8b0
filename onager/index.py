"""The job index: one record per launch, so list/cancel/rerun find launches again.

`.onager/index.jsonl`, rewritten whole (temp file + rename) under a lock: sixteen
concurrent `onager launch` runs lose no record, and a kill -9 never leaves half a line.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional

from onager.errors import UsageError
from onager.fsutil import atomic_write, file_lock


@dataclass
class LaunchRecord:
    jobname: str
    launch_id: str
    backend: str
    launch_dir: str
    tasklist: str
    count: int
    created: float
    job_ids: List[str] = field(default_factory=list)
    options: Dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.jobname}/{self.launch_id}"


class JobIndex:
    def __init__(self, root: str = "."):
        self.path = os.path.join(root, ".onager", "index.jsonl")
        self.lock_path = self.path + ".lock"

    def records(self) -> List[LaunchRecord]:
        try:
            with open(self.path, encoding="utf-8") as handle:
                lines = handle.read().splitlines()
        except FileNotFoundError:
            return []
        out = []
        for line in lines:
            try:
                out.append(LaunchRecord(**json.loads(line)))
            except (ValueError, TypeError):
                continue  # a damaged line never hides the others
        return out

    def _rewrite(self, records: List[LaunchRecord]) -> None:
        atomic_write(self.path, "".join(json.dumps(asdict(r), sort_keys=True) + "\n" for r in records))

    def add(self, record: LaunchRecord) -> None:
        with file_lock(self.lock_path):
            records = self.records()
            records.append(record)
            self._rewrite(records)

    def update(self, key: str, **changes: Any) -> None:
        with file_lock(self.lock_path):
            records = self.records()
            for r in records:
                if r.key == key:
                    for k, v in changes.items():
                        setattr(r, k, v)
            self._rewrite(records)

    def for_job(self, jobname: str) -> List[LaunchRecord]:
        return [r for r in self.records() if r.jobname == jobname]

    def latest(self, jobname: str) -> LaunchRecord:
        launches = self.for_job(jobname)
        if not launches:
            raise UsageError(f"job {jobname!r} has never been launched: run onager launch --jobname {jobname} first")
        return launches[-1]

    def find(self, jobname: Optional[str] = None, jobid: Optional[str] = None,
             launch_id: Optional[str] = None) -> List[LaunchRecord]:
        out = []
        for r in self.records():
            if jobname and r.jobname != jobname:
                continue
            if launch_id and r.launch_id != str(launch_id):
                continue
            if jobid and jobid not in r.job_ids and jobid != r.launch_id and jobid != r.key:
                continue
            out.append(r)
        return out
