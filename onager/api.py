"""The library under the CLI: launch a job or a Sweep from Python (a notebook, a script), then
wait for it, read its statuses and results, or cancel it.

    import onager
    sweep = onager.Sweep("python train.py").arg("--lr", [0.1, 0.01]).tag()
    run = onager.launch(sweep, jobname="lr", backend="local", max_tasks=2)
    run.wait()
    run.statuses()          # {1: 'done', 2: 'failed'}
    run.results()           # [{'task_id': 1, 'launch': '1', 'status': 'done', 'lr': 0.1, 'loss': 0.3}, ...]

`onager launch`, `list`, `wait`, `cancel` and `results` run the same functions (status.py,
listing.py, results.py); the CLI only parses arguments and prints. Errors are raised as
`UsageError` (bad input; nothing was written) or `OnagerError`, never printed.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from onager.errors import OnagerError, UsageError
from onager.index import JobIndex, LaunchRecord
from onager.layout import LaunchPaths
from onager.sweep import Sweep
from onager.tasklist import Tasklist


@dataclass(frozen=True)
class Launch:
    """One recorded launch of a job, as `onager list --jobname JOB --launch ID` would find it."""

    jobname: str
    launch_id: str
    backend: str
    root: str = "."  # the project directory holding .onager/ (absolute when made by launch())

    @property
    def record(self) -> LaunchRecord:
        """The launch's index record, read afresh (a scheduler's job ids come in later)."""
        found = JobIndex(self.root).find(self.jobname, None, self.launch_id)
        if not found:
            raise UsageError(f"job {self.jobname!r} has no launch {self.launch_id!r} in "
                             f"{JobIndex(self.root).path}: check it with onager list")
        return found[-1]

    @property
    def paths(self) -> LaunchPaths:
        """Where its tasks, states and logs are (onager.layout)."""
        return LaunchPaths(self.record.launch_dir)

    def rows(self, tasks: str | Sequence[int] | None = None) -> list[Any]:
        """Every task as `onager list` shows it (status.TaskRow: status, exit code, times, tag, command, params)."""
        from onager.status import task_rows
        return task_rows([self.record], _tasks(tasks))

    def statuses(self, tasks: str | Sequence[int] | None = None) -> dict[int, str]:
        """Task id -> pending | running | done | failed | cancelled | lost | error | unknown."""
        return {row.task_id: row.status for row in self.rows(tasks)}

    def wait(self, timeout: float | None = None, interval: float = 1.0) -> dict[int, str]:
        """Block until no task is pending or running; the final statuses (as `onager wait`).

        Raises TimeoutError after `timeout` seconds with tasks still unfinished.
        """
        from onager.status import wait_for
        look, timed_out = wait_for([self.record], timeout, interval)
        if timed_out:
            raise TimeoutError(f"{look.active} task(s) of {self.jobname}/{self.launch_id} still unfinished "
                               f"after {timeout:g} s")
        return self.statuses()

    def results(self, frame: bool = False) -> Any:
        """One dict per task: task_id, launch, status, its parameters and the last value of each
        metric it logged with onager.log_result (the columns of `onager results --launch ID`).

        `frame=True` gives a pandas DataFrame with the same columns (pandas must be installed).
        """
        from onager import results as resultsmod
        table = resultsmod.build_table(resultsmod.collect(self.jobname, self.launch_id, root=self.root))
        rows = [{column: row.get(column) for column in table.columns} for row in table.rows]
        if not frame:
            return rows
        try:
            import pandas
        except ImportError:
            raise OnagerError("results(frame=True) needs pandas: pip install pandas, or use results() for a list "
                              "of dicts") from None
        return pandas.DataFrame(rows, columns=table.columns)

    def results_frame(self) -> Any:
        """results(frame=True): a pandas DataFrame."""
        return self.results(frame=True)

    def cancel(self, tasks: str | Sequence[int] | None = None) -> list[int]:
        """Cancel the launch's unfinished tasks (or only `tasks`, e.g. "2-3" or [2, 3]);
        the ids asked for when something was still unfinished, else []."""
        from onager.listing import cancel_records
        wanted = _tasks(tasks)
        done = cancel_records([self.record], wanted)
        return [] if done[0].finished else list(done[0].tasks)


def _tasks(tasks: str | Sequence[int] | None) -> Tasklist | None:
    if tasks is None:
        return None
    if isinstance(tasks, str):
        return Tasklist.parse(tasks)
    return Tasklist.from_ids(int(t) for t in tasks)


def launches(jobname: str, root: str = ".") -> list[Launch]:
    """Every recorded launch of a job, oldest first."""
    return [Launch(r.jobname, r.launch_id, r.backend, root) for r in JobIndex(root).for_job(jobname)]


def launch(job: str | Sweep, backend: str | None = None, *, jobname: str | None = None,
           tasklist: str | None = None, jobfile: str | None = None, command: str | None = None,
           workdir: str | None = None, venv: str | None = None, **options: Any) -> Launch:
    """Launch a prelaunched job (its name) or a Sweep (written to its jobfile first, as
    `onager prelaunch` does; give `jobname`); returns the recorded Launch.

    `options` are the launch options of the CLI, by their Python names (`max_tasks=4`,
    `partition="gpu"`, `detach=True`); unset ones come from onager config as on the command
    line. A local launch runs its tasks before returning unless `detach=True`. Everything is
    checked before the first write; a bad option raises UsageError and writes nothing.
    """
    from onager import config as configmod
    from onager import launch as launchmod

    if isinstance(job, Sweep):
        if not jobname:
            raise UsageError("launch(sweep) needs jobname='NAME': the job the sweep is written to")
        name = jobname
    elif isinstance(job, str):
        if jobname is not None and jobname != job:
            raise UsageError(f"launch({job!r}, jobname={jobname!r}): give the job name once")
        name = job
    else:
        raise UsageError(f"launch() takes a job name or an onager.Sweep, not {type(job).__name__}")
    backend = backend or configmod.read_section("project").get("backend")
    if not backend:
        raise UsageError("launch() needs backend='local' (or slurm, gridengine, ssh; "
                         "or onager config --write project backend NAME)")
    merged, venv = _options(backend, options, venv)
    if isinstance(job, Sweep):
        from onager.sweep import check_jobname
        check_jobname(name)
        job.validate()  # before the jobfile is written
        from onager.backends import backend_class
        backend_class(backend)(merged).check_options()
        job.write(name, jobfile)
    argv = cli_argv(name, backend, options, tasklist=tasklist, jobfile=jobfile, command=command,
                    workdir=workdir, venv=venv)
    backend_obj, info = launchmod.prepare(name, backend, merged, tasklist, jobfile, command,
                                          workdir=workdir, venv=venv, argv=argv)
    try:
        backend_obj.submit_commands(info)  # what the CLI prints; it also checks what prepare cannot
    except BaseException:
        launchmod.discard(info)
        raise
    record = launchmod.submit(backend_obj, info)
    end_error = getattr(backend_obj, "end_error", None)
    if end_error is not None:
        raise end_error
    return Launch(record.jobname, record.launch_id, record.backend, os.getcwd())


def cli_argv(jobname: str, backend: str, options: dict[str, Any], **generic: Any) -> list[str]:
    """The `onager launch` command line that does what this call does: launch.json and
    provenance record it, and credentials in it are scrubbed word by word as for the CLI
    (`extra=["--comment", "password=x"]` must not reach disk as one Python repr)."""
    argv = ["onager", "launch", "--backend", backend, "--jobname", jobname]
    for key, value in [*sorted(generic.items()), *sorted(options.items())]:
        if value is None or value is False or key == "extra":
            continue
        argv.append("--" + key.replace("_", "-"))
        if value is not True:
            argv.append(str(value))
    extra = options.get("extra")
    if extra:
        argv += ["--", *map(str, extra)]
    return argv


def _options(backend: str, given: dict[str, Any], venv: str | None) -> tuple[dict[str, Any], str | None]:
    """`given` over the backend's onager config section, as the CLI resolves them (one place:
    `onager.options.resolve`)."""
    from onager import options as optionsmod
    known = optionsmod.all_options()
    unknown = sorted(k for k in given if k not in known and k != "extra")
    if unknown:
        raise UsageError(f"unknown launch option {', '.join(unknown)}: use one of "
                         f"{', '.join(sorted(known))} (the CLI's --options, with _ for -)")
    values = {k: v for k, v in given.items() if k != "extra"}
    resolved = optionsmod.resolve(backend, values, venv, extra=[str(x) for x in given.get("extra") or ()])
    return resolved.options, resolved.venv


__all__ = ["Launch", "launch", "launches"]
