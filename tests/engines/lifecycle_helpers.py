"""What the lifecycle engine tests share: a per-run job-name prefix (the engines are shared),
and a task command that counts its runs."""
from __future__ import annotations

import json
import os
import shlex

#: job names of this run: the engines are shared, and a name like "rq" may be another test's too
P = f"lc{os.getpid() % 100000}"


def runs_command(root, name: str, then: str) -> str:
    """Append the attempt number to runs/<name> (one line per run), then run `then`."""
    path = os.path.join(str(root), "runs", name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    return f'echo "${{ONAGER_ATTEMPT:-?}}" >> {shlex.quote(path)}; {then}'


def runs(root, name: str) -> list[str]:
    try:
        with open(os.path.join(str(root), "runs", name)) as handle:
            return handle.read().split()
    except FileNotFoundError:
        return []


def job_ids(helpers, root, jobname: str, launch_id: str = "1") -> list[str]:
    with open(os.path.join(helpers.launch_dir(root, jobname, launch_id), "scheduler.json")) as handle:
        return [str(s["job_id"]) for s in json.load(handle)["submissions"]]
