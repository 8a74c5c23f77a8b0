"""`python -m onager.after LAUNCH_DIR`: the follow-up job of a Slurm or Grid Engine launch.

It runs once every array job of the launch has ended (`afterany` / `-hold_jid`), on a
compute node, with nobody logged in. It reads what each task's latest attempt came to,
relaunches the tasks that `--retries` / `--requeue` allow as the NEXT launch of the job
(same options, memory and time escalated, the commands taken from this launch, not from
today's jobfile), which gets a follow-up job of its own; when nothing is left to run again,
it runs `--notify` once for the whole chain.
"""
from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
from typing import Any

from onager import launch as launchmod
from onager.errors import OnagerError
from onager.index import JobIndex, LaunchRecord
from onager.layout import ProjectPaths, iter_launch_tasks, load_meta, project_root
from onager.notify import chain_records, run_notify
from onager.recovery import Chain, Recovery, escalate, from_options, read_chain, without_warning, write_chain
from onager.status import job_task_statuses, task_rows
from onager.tasklist import Tasklist


def eligible(record: LaunchRecord, chain: Chain, policy: Recovery) -> dict[int, tuple[list[int], str]]:
    """Tasks of this launch to run again: what they will have spent, and the end state that sends them."""
    again: dict[int, tuple[list[int], str]] = {}
    for row in task_rows([record]):
        spent = list(chain.spent.get(row.task_id, [0, 0]))
        how = policy.wants(row.status, spent[0], spent[1])
        if how is None:
            continue
        spent[0 if how == "retry" else 1] += 1
        again[row.task_id] = (spent, row.status)
    return again


def _jobfile_of(launch_dir: str, ids: set[int], directory: str) -> str:
    """A jobfile (0.1.3's jobs.json form) holding these tasks as this launch ran them."""
    fd, path = tempfile.mkstemp(prefix=".after-", suffix=".json", dir=directory)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write("{")
        sep = "\n"
        for task_id, command, tag, params in iter_launch_tasks(launch_dir):
            if task_id in ids:
                out.write(f"{sep}{json.dumps(str(task_id))}: {json.dumps([command, tag, params], ensure_ascii=False)}")
                sep = ",\n"
        out.write("\n}\n")
    return path


def relaunch(launch_dir: str, meta: dict[str, Any], chain: Chain, again: dict[int, list[int]],
             options: dict[str, Any]) -> LaunchRecord:
    """The next launch of the job: these tasks, these options; recovery.json names its chain."""
    root = project_root(launch_dir)
    jobname = str(meta["jobname"])
    options = {k: v for k, v in options.items() if k not in ("snapshot", "require_clean")}  # the same code again
    directory = ProjectPaths(root).launches(jobname)
    jobfile = _jobfile_of(launch_dir, set(again), directory)
    try:
        backend, info = launchmod.prepare(jobname, str(meta["backend"]), options, str(Tasklist.from_ids(again)),
                                          jobfile=jobfile, root=root, workdir=meta.get("workdir"),
                                          venv=meta.get("venv"),
                                          argv=[sys.executable, "-m", "onager.after", launch_dir])
    finally:
        with contextlib.suppress(OSError):
            os.remove(jobfile)
    try:
        write_chain(info.launch_dir, Chain(chain.origin, chain.launches + [info.launch_id], again))
    except BaseException:
        launchmod.discard(info)
        raise
    return launchmod.submit(backend, info, root)


def main(launch_dir: str) -> int:
    """Relaunch what may run again, or notify; 0 when it did what it had to."""
    launch_dir = os.path.abspath(launch_dir)
    meta = load_meta(launch_dir)
    root = project_root(launch_dir)
    jobname, launch_id = str(meta["jobname"]), str(meta["launch_id"])
    options = without_warning(dict(meta.get("options") or {}))  # prepare's check_launch decides it again
    policy = from_options(options)
    chain = read_chain(launch_dir, launch_id)
    records = [r for r in JobIndex(root).for_job(jobname) if r.launch_id == launch_id]
    if not records:
        raise OnagerError(f"launch {jobname}/{launch_id} is not in the index of {root}")
    found = eligible(records[0], chain, policy) if policy.active else {}
    if found:  # a task that a later launch ran meanwhile (a rerun by hand) is that launch's now
        latest = job_task_statuses(jobname, root)
        found = {i: f for i, f in found.items() if i not in latest or latest[i][1].launch_id == launch_id}
    again = {i: spent for i, (spent, _) in found.items()}
    states = {state for _, state in found.values()}
    if again:
        try:
            new = relaunch(launch_dir, meta, chain, again, escalate(options, states, policy))
        except OnagerError as exc:
            print(f"onager: error: tasks {Tasklist.from_ids(again)} of {jobname} could not be relaunched: {exc}",
                  file=sys.stderr, flush=True)
            if policy.notify:  # the chain ends here: say so
                run_notify(policy.notify, _origin_dir(root, jobname, chain),
                           chain_records(root, jobname, chain.launches))
            return 1
        print(f"onager: relaunched tasks {Tasklist.from_ids(again)} of {jobname} as launch {new.launch_id} "
              f"({', '.join(sorted(states))})", flush=True)
        if policy.notify and not os.path.exists(os.path.join(new.launch_dir, "after.json")):
            # no follow-up for the relaunch (it could not be submitted): nobody else will notify
            run_notify(policy.notify, _origin_dir(root, jobname, chain), chain_records(
                root, jobname, chain.launches + [new.launch_id]))
        return 0
    if policy.notify:
        code = run_notify(policy.notify, _origin_dir(root, jobname, chain),
                          chain_records(root, jobname, chain.launches))
        print(f"onager: --notify ran for {jobname}/{chain.origin} (exit {code})" if code is not None
              else f"onager: --notify of {jobname}/{chain.origin} had already run", flush=True)
    return 0


def _origin_dir(root: str, jobname: str, chain: Chain) -> str:
    return ProjectPaths(root).launch(jobname, chain.origin).dir


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print("usage: python -m onager.after LAUNCH_DIR", file=sys.stderr)
        raise SystemExit(2)
    try:
        raise SystemExit(main(sys.argv[1]))
    except OnagerError as exc:
        print(f"onager: error: {exc}", file=sys.stderr)
        raise SystemExit(exc.exit_code) from None
