"""The job index: one record per launch, so list/cancel/rerun find launches again.

`.onager/index.jsonl`, rewritten whole (temp file + rename) under a lock: sixteen
concurrent `onager launch` runs lose no record, and a kill -9 never leaves half a line.
"""
from __future__ import annotations

import json

from onager.errors import UsageError
from onager.fsutil import atomic_write, file_lock
from onager.layout import ProjectPaths
from onager.records import Record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


class LaunchRecord(Record):
    """One launch as the index records it (one JSON line, keys in FIELDS)."""

    FIELDS = ("jobname", "launch_id", "backend", "launch_dir", "tasklist", "count", "created", "job_ids", "options")

    def __init__(self, jobname: str, launch_id: str, backend: str, launch_dir: str, tasklist: str, count: int,
                 created: float, job_ids: list[str] | None = None, options: dict[str, Any] | None = None) -> None:
        self.jobname = jobname
        self.launch_id = launch_id
        self.backend = backend
        self.launch_dir = launch_dir
        self.tasklist = tasklist
        self.count = count
        self.created = created
        self.job_ids: list[str] = [] if job_ids is None else job_ids
        self.options: dict[str, Any] = {} if options is None else options

    @property
    def key(self) -> str:
        return f"{self.jobname}/{self.launch_id}"


class JobIndex:
    def __init__(self, root: str = "."):
        self.path = ProjectPaths(root).index
        self.lock_path = self.path + ".lock"

    def _lines(self) -> list[str]:
        """The file's lines; bytes that are not UTF-8 survive as surrogates (written back as they were)."""
        try:
            with open(self.path, "rb") as handle:
                data = handle.read()
        except FileNotFoundError:
            return []
        return data.decode("utf-8", "surrogateescape").splitlines()

    @staticmethod
    def _parse(line: str) -> LaunchRecord | None:
        try:
            line.encode("utf-8")  # not UTF-8 on disk (surrogates): damaged, not a record
            fields = json.loads(line)
            record = LaunchRecord(**fields)
        except (ValueError, TypeError, RecursionError):
            return None
        if fields.get("job_ids", []) is None or fields.get("options", {}) is None:
            return None  # null where a list or an object belongs: damaged, not defaults
        text = (record.jobname, record.launch_id, record.backend, record.launch_dir, record.tasklist)
        if not all(isinstance(t, str) for t in text) or not isinstance(record.count, int) \
                or not isinstance(record.created, (int, float)) or not isinstance(record.job_ids, list) \
                or not isinstance(record.options, dict) or not all(isinstance(j, str) for j in record.job_ids):
            return None  # valid JSON, wrong shape (edited by hand): as unreadable as a torn line
        return record

    def records(self) -> list[LaunchRecord]:
        """Every readable record, each job's launches in launch-id order (a damaged or
        foreign line never hides the others)."""
        out = [r for r in map(self._parse, self._lines()) if r is not None]
        first: dict[str, int] = {}
        for i, r in enumerate(out):
            first.setdefault(r.jobname, i)
        # jobs in the order they first appear; launches of a job by id, even when two
        # concurrent launches were recorded the other way round
        out.sort(key=lambda r: (first[r.jobname],
                                int(r.launch_id) if r.launch_id.isascii() and r.launch_id.isdigit() else 0))
        return out

    def damaged(self) -> list[int]:
        """Numbers (from 1) of the lines no record could be read from: `list` warns about them."""
        return [n for n, line in enumerate(self._lines(), 1) if line.strip() and self._parse(line) is None]

    def _write(self, lines: list[str]) -> None:
        atomic_write(self.path, "".join(line + "\n" for line in lines).encode("utf-8", "surrogateescape"))

    def add(self, record: LaunchRecord) -> None:
        with file_lock(self.lock_path):
            self._write(self._lines() + [json.dumps(record.as_dict(), sort_keys=True)])

    def update(self, key: str, **changes: Any) -> None:
        """Change one record; lines this version cannot read are kept as they are."""
        with file_lock(self.lock_path):
            lines = self._lines()
            for i, line in enumerate(lines):
                r = self._parse(line)
                if r is not None and r.key == key:
                    for k, v in changes.items():
                        setattr(r, k, v)
                    lines[i] = json.dumps(r.as_dict(), sort_keys=True)
            self._write(lines)

    def for_job(self, jobname: str) -> list[LaunchRecord]:
        return [r for r in self.records() if r.jobname == jobname]

    def latest(self, jobname: str) -> LaunchRecord:
        launches = self.for_job(jobname)
        if not launches:
            raise UsageError(f"job {jobname!r} has never been launched: run onager launch --jobname {jobname} first")
        return launches[-1]

    def find(self, jobname: str | None = None, jobid: str | None = None,
             launch_id: str | None = None) -> list[LaunchRecord]:
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
