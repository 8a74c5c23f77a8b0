"""`onager show`: what a launch ran and from where (code, environment, command), and how a task went."""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

from onager.errors import OnagerError, UsageError
from onager.layout import LaunchPaths
from onager.state import start_fields

EXAMPLES = """examples:
  onager show exp1                  the latest launch of exp1
  onager show exp1 --launch 2       launch 2 of exp1 (or: onager show exp1/2)
  onager show exp1 --task 5         the latest launch that ran task 5, and how task 5 went
  onager show exp1 --json           everything, as JSON
"""


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser("show", help="what a launch ran and from where: code, environment, command",
                              epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    from onager.cli_habits import add_job_argument
    add_job_argument(p, help="job name, jobname/launch, or a scheduler job id (or --jobname NAME)")
    p.add_argument("--launch", default=None, help="a launch id of the job (default: the latest)")
    p.add_argument("--task", "-t", type=int, default=None, help="also show how this task ran")
    p.add_argument("--json", action="store_true", help="print JSON")
    return p


# ---------------------------------------------------------------- choosing
def _choose(job: str, launch: str | None, task: int | None):
    from onager.index import JobIndex
    from onager.tasklist import Tasklist

    index = JobIndex()
    if "/" in job and launch is None:
        job, launch = job.rsplit("/", 1)
    records = index.find(jobname=job, launch_id=launch)
    if not records and launch is None:
        records = index.find(jobid=job)
    if not records:
        if not index.records():
            raise UsageError("no launches yet: onager launch records them in .onager/index.jsonl")
        if launch is not None and index.for_job(job):
            raise UsageError(f"job {job!r} has no launch {launch!r}: check it with onager list --summary")
        raise UsageError(f"no launch of job {job!r} in the index: check the name with onager list --summary")
    if task is None:
        return records[-1]
    for record in reversed(records):
        if task in Tasklist.parse(record.tasklist):
            return record
    where = f"launch {records[-1].key}" if launch is not None else f"any launch of job {job!r}"
    raise UsageError(f"task {task} is not in {where}: check it with onager list --jobname {records[-1].jobname}")


def _start_host(launch_dir: str, task_id: int) -> tuple[str | None, str | None, str | None]:
    """(host, pid, scheduler job id) that the wrapper wrote when the task's latest attempt started."""
    fields = (start_fields(launch_dir, task_id) or []) + [None] * 3
    return fields[0], fields[1], fields[2]


def _task_info(record: Any, task_id: int) -> dict[str, Any]:
    from onager.status import launch_rows, query_all

    answers = query_all([record])
    row = next(iter(launch_rows(record, answers.get(record.key), {task_id})), None)
    if row is None:
        raise OnagerError(f"task {task_id} is missing from {record.launch_dir}/tasks.jsonl (edited by hand?)")
    host, pid, job_id = _start_host(record.launch_dir, task_id)
    return {"task_id": task_id, "status": row.status, "exit": row.exit_code, "host": host, "pid": pid,
            "scheduler_job_id": job_id, "start": row.start, "end": row.end, "elapsed": row.elapsed,
            "tag": row.tag, "command": row.command, "params": row.params,
            "stdout": LaunchPaths(record.launch_dir).log(task_id, "out"),
            "stderr": LaunchPaths(record.launch_dir).log(task_id, "err")}


# ---------------------------------------------------------------- printing
def _when(epoch: float | None) -> str:
    if epoch is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(epoch))


def _elapsed(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def _rel(path: str) -> str:
    try:
        rel = os.path.relpath(path)
    except ValueError:
        return path
    return path if rel.startswith("../..") else rel


def _options_text(options: dict[str, Any]) -> str:
    return " ".join(f"{k}={json.dumps(v) if not isinstance(v, str) else v}" for k, v in sorted(options.items())) or "-"


def _git_lines(gitinfo: dict[str, Any], launch_dir: str) -> list[tuple[str, str]]:
    if not gitinfo.get("repository"):
        return [("git", f"none ({gitinfo.get('reason', 'not recorded')})")]
    commit = gitinfo.get("commit") or "no commit yet"
    if gitinfo.get("branch"):
        where = f"on branch {gitinfo['branch']}"
    else:
        where = "detached HEAD" if gitinfo.get("detached") else ""
    dirty = gitinfo.get("dirty")
    changed = gitinfo.get("changed") or []
    state = {True: f"dirty: {len(changed)} tracked file(s) changed", False: "clean", None: "cleanliness unknown"}[dirty]
    lines = [("commit", " ".join(x for x in (commit, where, f"({state})") if x)),
             ("repository",
              gitinfo.get("root", "-") + (f"  (workdir: {gitinfo['subdir']})" if gitinfo.get("subdir") else ""))]
    remotes = gitinfo.get("remotes") or {}
    if remotes:
        lines.append(("remote", ", ".join(f"{name} {url}" for name, url in sorted(remotes.items()))))
    else:
        lines.append(("remote", "none"))
    if changed:
        shown = ", ".join(changed[:8]) + (f" and {len(changed) - 8} more" if len(changed) > 8 else "")
        lines.append(("changed", shown))
    if gitinfo.get("patch"):
        lines.append(("patch", f"{_rel(os.path.join(launch_dir, gitinfo['patch']))} "
                               f"({gitinfo.get('patch_bytes', 0)} bytes; git apply it on {commit[:10]})"))
    count = gitinfo.get("untracked_count")
    if count:
        names = gitinfo.get("untracked") or []
        shown = ", ".join(names[:8]) + (f" and {count - min(len(names), 8)} more" if count > 8 else "")
        lines.append(("untracked", f"{count} file(s), not recorded: {shown}"))
    elif count == 0:
        lines.append(("untracked", "none"))
    for error in gitinfo.get("errors") or []:
        lines.append(("git error", error))
    return lines


def _text(data: dict[str, Any]) -> str:
    launch = data["launch"]
    prov = data.get("provenance")
    launch_dir = launch["launch_dir"]
    rows: list[tuple[str, str]] = [
        ("launch", f"{launch['key']} on {launch.get('backend') or '-'}: {launch.get('count', '?')} task(s) "
                   f"{launch.get('tasklist', '')}"
                   + (f", job id {launch['job_ids']}" if launch.get("job_ids") else "")),
        ("directory", _rel(launch_dir)),
    ]
    if prov is None:
        rows.append(("provenance", "not recorded for this launch (launched by an onager that did not record it)"))
        rows.append(("command", launch.get("command") or "-"))
        rows.append(("workdir", launch.get("workdir") or "-"))
    else:
        python = prov.get("python") or {}
        rows += [
            ("command", prov.get("command", "-")),
            ("when", f"{_when(prov.get('created'))} by {prov.get('user', '?')} on {prov.get('host', '?')}"),
            ("onager", prov.get("onager_version", "-")),
            ("workdir", prov.get("workdir", "-")),
            ("python", f"{python.get('version', '?')} {python.get('executable', '')}".strip()),
        ]
        env = prov.get("environment") or {}
        if prov.get("venv") or env:
            words = ([f"--venv {prov['venv']}"] if prov.get("venv") else []) + \
                [f"{k}={v}" for k, v in sorted(env.items())]
            rows.append(("environment", " ".join(words)))
        rows.append(("backend", f"{prov.get('backend') or launch.get('backend') or '-'}  "
                                f"{_options_text(prov.get('options') or {})}"))
        rows += _git_lines(prov.get("git") or {}, launch_dir)
        packages = prov.get("packages") or {}
        if packages.get("file"):
            rows.append(("packages", f"{_rel(os.path.join(launch_dir, packages['file']))} "
                                     f"({packages.get('count', '?')} from {packages.get('tool', 'pip freeze')})"))
        else:
            rows.append(("packages", f"not recorded: {packages.get('error', 'unknown reason')}"))
        snap = prov.get("snapshot")
        if snap:
            rows.append(("snapshot", f"{_rel(os.path.join(launch_dir, snap['path']))}: {snap.get('files', 0)} files, "
                                     f"{snap.get('bytes', 0)} bytes from {snap.get('source', '?')} "
                                     f"({snap.get('mode')}, {snap.get('seconds', 0):.2f} s); tasks run in "
                                     f"{_rel(snap.get('workdir', ''))}"))
        else:
            rows.append(("snapshot", "no: tasks ran in the live working directory"))
    task = data.get("task")
    if task:
        exit_text = "" if task["exit"] is None else f", exit {task['exit']}"
        rows += [
            (f"task {task['task_id']}", f"{task['status']}{exit_text} on {task['host'] or '-'}"
                                        + (f" (pid {task['pid']})" if task.get("pid") else "")),
            ("start", _when(task["start"])),
            ("end", _when(task["end"]) + (f"  (elapsed {_elapsed(task['elapsed'])})" if task["start"] else "")),
            ("task command", task["command"]),
        ]
        if task.get("tag"):
            rows.append(("tag", task["tag"]))
        rows.append(("logs", f"{_rel(task['stdout'])}, {_rel(task['stderr'])}"))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k.ljust(width)}  {v}" for k, v in rows)


def run(args: argparse.Namespace) -> int:
    from onager.layout import load_meta
    from onager.provenance import load_provenance, strip_credentials

    record = _choose(args.job, args.launch, args.task)
    if not os.path.isdir(record.launch_dir):
        raise OnagerError(f"launch directory {record.launch_dir} of {record.key} is gone (deleted by hand?)")
    meta = load_meta(record.launch_dir)
    argv = meta.get("argv")
    import shlex
    launch = {"key": record.key, "jobname": record.jobname, "launch_id": record.launch_id,
              "backend": record.backend, "launch_dir": record.launch_dir, "tasklist": record.tasklist,
              "count": record.count, "job_ids": ",".join(record.job_ids), "created": record.created,
              "workdir": meta.get("workdir"),
              "command": strip_credentials(shlex.join(argv)) if isinstance(argv, list) else None}
    data: dict[str, Any] = {"launch": launch, "provenance": load_provenance(record.launch_dir)}
    if data["provenance"] is not None and not data["provenance"].get("backend"):
        data["provenance"]["backend"] = record.backend
    if args.task is not None:
        data["task"] = _task_info(record, args.task)
    if args.json:
        json.dump(data, sys.stdout, indent=1, sort_keys=True)
        sys.stdout.write("\n")
        return 0
    print(_text(data))
    return 0
