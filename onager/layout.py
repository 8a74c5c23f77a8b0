"""Where onager keeps its files: the one module that knows the `.onager/` and launch-directory layout.

Like submitit's `JobPaths`: every other module asks `ProjectPaths` (a project's `.onager/`)
or `LaunchPaths` (one launch directory) for a path instead of joining names itself, so the
layout can be read in one place and changed in one place. Both are small frozen
value classes; nothing here touches the disk except the two readers at the end, which read
a launch's frozen files (`launch.json`, `tasks.jsonl`) for every module that needs them.

```
<root>/.onager/
  index.jsonl                     one record per launch (index.py)
  config                          project settings (config.py)
  scripts/<job>/jobs.json         the jobfile prelaunch writes (+ .jobs.lock)
  launch-ids/<job>/               last (id counter), lock, building (build lock)
  claims/<job>/<id>               a task's claim: held by the attempt running it, free between
                                  attempts (it counts them); across all launches of the job
  tasks/<job>/<id>/               ONAGER_TASK_DIR: a task's own directory (checkpoints), kept
                                  across attempts and relaunches
  launches/<job>/<id>/            one launch, immutable once launch.json is in it
    tasks.sh  tasks.idx           task records and their fixed-width offsets
    tasks.jsonl                   [id, command, tag, params] per task
    wrapper.sh  launch.json       what a task runs; the launch's metadata (written last)
    provenance.json  git-diff.patch  pip-freeze.txt  code/
    scheduler.json  pool.json  pool.log   what a scheduler or a pool keeps about the launch
    state/<id>.start@..  <id>.end@..  <id>.cancel   task states as file names
    logs/<id>.out  logs/<id>.err  a task's output
    logs/scheduler/               what Slurm or Grid Engine itself writes (array backends)
    results/<id>.jsonl            log_result() lines
    node.sh  groups.txt           array backends with --tasks-per-node: the node script, its groups
    cancel.requested              touched by `onager cancel`; a running pool watches it
    remote-dirs/<host>.json       ssh: the remote dirs a launch made (removed when cleaned)
    fetched/<host>/..             ssh: files fetched home from a host's remote dir
```
"""
from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

from onager.errors import OnagerError

ONAGER_DIR = ".onager"
#: the jobfile prelaunch writes and launch reads unless --jobfile says otherwise
#: (relative to the working directory, as 0.1.3 had it)
JOBFILE_TEMPLATE = ONAGER_DIR + "/scripts/{jobname}/jobs.json"
BUILD_PREFIX = ".build-"  # a launch directory still being built (renamed to its id when complete)

TASKS_SH, TASKS_IDX, TASKS_JSONL = "tasks.sh", "tasks.idx", "tasks.jsonl"
WRAPPER, LAUNCH_JSON, PROVENANCE_JSON = "wrapper.sh", "launch.json", "provenance.json"
SCHEDULER_JSON, POOL_JSON, POOL_LOG = "scheduler.json", "pool.json", "pool.log"
STATE, LOGS, RESULTS = "state", "logs", "results"
CODE = "code"  # a --snapshot's frozen code (provenance.py)
SCHEDULER_LOGS = "scheduler"  # under logs/: a scheduler's own output
NODE_SH, GROUPS_TXT = "node.sh", "groups.txt"  # array backends, --tasks-per-node
CANCEL_REQUESTED = "cancel.requested"  # the flag a pool's CancelWatch stats
CLAIMS, TASK_DIRS = "claims", "tasks"  # job level under .onager/ (per launch on ssh hosts)
TUNE_JSON = "tune.json"  # a +tune search: beside the jobfile, and in each tuning launch
REMOTE_DIRS, FETCHED = "remote-dirs", "fetched"  # ssh: remote dirs made, outputs fetched home


class _Frozen:
    """A frozen value of one string field, equal and hashed by it: a frozen dataclass without
    the import of dataclasses, which (with inspect) costs every command a bare Python start."""

    _field = ""

    def __init__(self, value: str) -> None:
        object.__setattr__(self, self._field, value)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"cannot assign to field {name!r}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"cannot delete field {name!r}")

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return bool(getattr(self, self._field) == getattr(other, self._field))

    def __hash__(self) -> int:
        return hash((getattr(self, self._field),))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._field}={getattr(self, self._field)!r})"


class LaunchPaths(_Frozen):
    """The files of one launch directory (`.onager/launches/<job>/<id>/`, or a build directory)."""

    _field = "dir"
    dir: str

    def __init__(self, dir: str) -> None:
        super().__init__(dir)

    def file(self, name: str) -> str:
        """Any other file kept at the top of the launch directory (a backend's own)."""
        return os.path.join(self.dir, name)

    @property
    def tasks_sh(self) -> str:
        return os.path.join(self.dir, TASKS_SH)

    @property
    def tasks_idx(self) -> str:
        return os.path.join(self.dir, TASKS_IDX)

    @property
    def tasks_jsonl(self) -> str:
        return os.path.join(self.dir, TASKS_JSONL)

    @property
    def wrapper(self) -> str:
        return os.path.join(self.dir, WRAPPER)

    @property
    def launch_json(self) -> str:
        return os.path.join(self.dir, LAUNCH_JSON)

    @property
    def provenance_json(self) -> str:
        return os.path.join(self.dir, PROVENANCE_JSON)

    @property
    def scheduler_json(self) -> str:
        return os.path.join(self.dir, SCHEDULER_JSON)

    @property
    def pool_json(self) -> str:
        return os.path.join(self.dir, POOL_JSON)

    @property
    def pool_log(self) -> str:
        """Output of a detached pool (local --detach, ssh --detach)."""
        return os.path.join(self.dir, POOL_LOG)

    @property
    def code_dir(self) -> str:
        """A --snapshot's frozen code."""
        return os.path.join(self.dir, CODE)

    @property
    def node_sh(self) -> str:
        """The node script of an array launch with --tasks-per-node."""
        return os.path.join(self.dir, NODE_SH)

    @property
    def groups_txt(self) -> str:
        """The task groups node.sh reads (fixed-width lines)."""
        return os.path.join(self.dir, GROUPS_TXT)

    @property
    def cancel_flag(self) -> str:
        """Touched by `onager cancel`; a running pool re-reads cancel marks when it changes."""
        return os.path.join(self.dir, CANCEL_REQUESTED)

    @property
    def remote_dirs_dir(self) -> str:
        """ssh: one `<host>.json` per host with the remote dirs this launch made there."""
        return os.path.join(self.dir, REMOTE_DIRS)

    def remote_dirs(self, host_key: str) -> str:
        return os.path.join(self.dir, REMOTE_DIRS, host_key + ".json")

    def fetched(self, host_key: str, *parts: str) -> str:
        """ssh: a file fetched home from a host's remote dir (other than results)."""
        return os.path.join(self.dir, FETCHED, host_key, *parts)

    @property
    def state_dir(self) -> str:
        return os.path.join(self.dir, STATE)

    @property
    def claims_dir(self) -> str:
        """`claims/`: task claims of a launch run where the project's `.onager/` is not (ssh hosts)."""
        return os.path.join(self.dir, CLAIMS)

    @property
    def task_dirs_dir(self) -> str:
        """`tasks/`: the task directories of a launch run where the project's `.onager/` is not."""
        return os.path.join(self.dir, TASK_DIRS)

    def state(self, name: str) -> str:
        """A state file by its full name (`3.start@1700000000`, `3.cancel`)."""
        return os.path.join(self.dir, STATE, name)

    @property
    def logs_dir(self) -> str:
        return os.path.join(self.dir, LOGS)

    def log(self, task_id: int, stream: str = "out") -> str:
        """`logs/<id>.out` or `logs/<id>.err`."""
        return os.path.join(self.dir, LOGS, f"{task_id}.{stream}")

    @property
    def scheduler_logs_dir(self) -> str:
        """`logs/scheduler/`: what Slurm or Grid Engine itself writes."""
        return os.path.join(self.dir, LOGS, SCHEDULER_LOGS)

    @property
    def results_dir(self) -> str:
        return os.path.join(self.dir, RESULTS)

    def results(self, task_id: int) -> str:
        """`results/<id>.jsonl`: the lines log_result() appends."""
        return os.path.join(self.dir, RESULTS, f"{task_id}.jsonl")


class ProjectPaths(_Frozen):
    """A project's `.onager/` directory under `root` (the working directory by default)."""

    _field = "root"
    root: str

    def __init__(self, root: str = ".") -> None:
        super().__init__(root)

    @property
    def onager_dir(self) -> str:
        return os.path.join(self.root, ONAGER_DIR)

    @property
    def index(self) -> str:
        return os.path.join(self.root, ONAGER_DIR, "index.jsonl")

    @property
    def config(self) -> str:
        return os.path.join(self.root, ONAGER_DIR, "config")

    def jobfile(self, jobname: str) -> str:
        """The default jobfile of a job, relative to `root` as 0.1.3 wrote it."""
        path = JOBFILE_TEMPLATE.replace("{jobname}", jobname)
        return path if self.root == "." else os.path.join(self.root, path)

    def launches(self, jobname: str) -> str:
        """`.onager/launches/<job>/`: the job's launch directories, and nothing else."""
        return os.path.join(self.root, ONAGER_DIR, "launches", jobname)

    def ids_dir(self, jobname: str) -> str:
        """`.onager/launch-ids/<job>/`: the job's id counter and locks, apart from its launches."""
        return os.path.join(self.root, ONAGER_DIR, "launch-ids", jobname)

    def launch(self, jobname: str, launch_id: str) -> LaunchPaths:
        return LaunchPaths(os.path.abspath(os.path.join(self.launches(jobname), launch_id)))

    def claims(self, jobname: str) -> str:
        """`.onager/claims/<job>/`: one claim per task, shared by every launch of the job."""
        return os.path.join(self.root, ONAGER_DIR, CLAIMS, jobname)

    def task_dirs(self, jobname: str) -> str:
        """`.onager/tasks/<job>/`: the parent of each task's ONAGER_TASK_DIR."""
        return os.path.join(self.root, ONAGER_DIR, TASK_DIRS, jobname)


def project_root(launch_dir: str) -> str:
    """The project root of a launch directory `<root>/.onager/launches/<job>/<id>` (four levels up)."""
    return os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(launch_dir))))


def launch_of_remote_dirs(path: str) -> str:
    """The launch directory of an ssh `remote-dirs/<host>.json` file (two levels up)."""
    return os.path.dirname(os.path.dirname(path))


# ------------------------------------------------------------- frozen launch files
def load_meta(launch_dir: str) -> dict[str, Any]:
    """launch.json of a launch (its options, workdir, argv), or one clear error."""
    path = LaunchPaths(launch_dir).launch_json
    try:
        with open(path, encoding="utf-8") as handle:
            meta = json.load(handle)
        if not isinstance(meta, dict):
            raise ValueError
        return meta
    except FileNotFoundError:
        raise OnagerError(f"launch directory {launch_dir} is missing (deleted by hand?); "
                          "its record stays in .onager/index.jsonl") from None
    except (ValueError, RecursionError):
        raise OnagerError(f"{path} is damaged; relaunch the job to get a fresh launch") from None


def iter_launch_tasks(launch_dir: str) -> Iterator[tuple[int, str, str, dict[str, Any]]]:
    """(id, command, tag, params) of each task frozen into a launch, read in large chunks."""
    path = LaunchPaths(launch_dir).tasks_jsonl
    try:  # opened apart from the `with` below, so that only errors of the open itself are caught here
        handle = open(path, encoding="utf-8")  # noqa: SIM115
    except FileNotFoundError:
        raise OnagerError(f"launch directory {launch_dir} is missing its tasks (deleted by hand?)") from None
    except OSError as exc:  # a directory where the file should be, unreadable, ...
        raise _damaged(path, 1, exc.strerror or str(exc)) from exc
    with handle:
        number = 0  # lines read before this chunk
        while True:
            try:
                lines = handle.readlines(1 << 20)  # a megabyte of lines: decoded, some 5 MB
            except ValueError:  # not UTF-8
                raise _damaged(path, number + 1, "not UTF-8 text") from None
            if not lines:
                break
            try:
                chunk = json.loads("[" + ",".join(lines) + "]")
            except (ValueError, RecursionError):
                chunk = list(_good_lines(path, lines, number))
            for n, item in enumerate(chunk, number + 1):
                try:
                    task_id, command, tag, params = item
                except (ValueError, TypeError):
                    raise _damaged(path, n, "edited by hand") from None
                yield task_id, command, tag, params
            number += len(lines)


def _damaged(path: str, line: int, why: str) -> OnagerError:
    return OnagerError(f"{path} is damaged at line {line} ({why}): launch the job again for a fresh launch")


def _good_lines(path: str, lines: list[str], before: int) -> Iterator[tuple[int, str, str, dict[str, Any]]]:
    """The tasks of a chunk that did not parse, up to its first bad line (which raises)."""
    for n, line in enumerate(lines, before + 1):
        try:
            task_id, command, tag, params = json.loads(line)
        except (ValueError, TypeError, RecursionError):
            raise _damaged(path, n, "truncated or edited by hand") from None
        yield task_id, command, tag, params
