"""Slurm backend: one `sbatch --array` per launch, split only where MaxArraySize forces it.

MaxArraySize caps the array INDEX (largest index = MaxArraySize-1), not the number of
tasks, so a launch whose ids go beyond it is sent as several arrays whose indexes are
offsets; every submission passes `ONAGER_TASK_OFFSET` and the wrapper adds it back.
The array spec is always the condensed tasklist (`1-3,5,8-9`), never one id per task.

With `--tasks-per-node T`, array element g runs the g-th group of T tasks through
`node.sh` (a bash loop in the launch directory, at most `--max-tasks-per-node` at once),
so the array indexes groups instead of tasks. `groups.txt` maps a group to its task ids.
What was submitted (job id, offset, indexes) is kept in `<launch>/scheduler.json`.
"""
from __future__ import annotations

import getpass
import re
from collections.abc import Iterable, Sequence
from typing import Any

from onager.backends.array import (
    ArrayBackend,
    QueryEntry,
    allocation,
    duration_seconds,
    hms_text,
    megabytes_text,
    positive,
)
from onager.backends.base import QUEUED, STARTED, STUCK, LaunchInfo, Option, cluster_setting
from onager.errors import OnagerError, UsageError
from onager.tasklist import Tasklist

DEFAULT_DURATION = "0-01:00:00"
DEFAULT_CPUS = 1
DEFAULT_MEM = "2"          # GB, as in 0.1.3
DEFAULT_MAX_ARRAY_SIZE = 1001  # Slurm's own default
DEBUG_MAX_SECONDS = 2 * 3600  # 0.1.3: "Duration cannot exceed 2 hours while in debug/test mode"
TRANSIENT = ("Socket timed out", "Resource temporarily unavailable", "temporarily unable",
             "Unable to contact slurm controller", "Connection timed out", "Connection refused")
SUBMIT_RETRIES = 3
SQUEUE_IDS_MAX = 2000  # beyond this many job ids, ask for the user's jobs and filter


# ------------------------------------------------------------------ backend
class SlurmBackend(ArrayBackend):
    name = "slurm"
    index_variable = "SLURM_ARRAY_TASK_ID"
    job_id_variable = "SLURM_ARRAY_JOB_ID"
    submit_program = "sbatch"
    transient = TRANSIENT
    submit_retries = SUBMIT_RETRIES
    # squeue cuts a pending array's index list at 64 characters ("123_[1,3,...]") unless
    # told not to: cut lists would make queued tasks look lost
    query_env = {"SLURM_BITSTR_LEN": "0"}
    OPTIONS: Sequence[Option] = (
        Option("partition", help="slurm: partition (sbatch -p)"),
        Option("account", help="slurm: account to charge (sbatch -A)"),
        Option("qos", help="slurm: quality of service (sbatch --qos)"),
        Option("constraint", help="slurm: node features (sbatch -C)"),
        Option("dependency", help="slurm: start after other jobs, e.g. afterok:123 (sbatch --dependency)"),
        Option("hold_jid", flags=("--hold_jid", "--hold-jid"),
               help="slurm/gridengine: wait until these job ids end (slurm: afterany)"),
        Option("max_array_size", "int", default="read from scontrol show config",
               help="slurm: MaxArraySize to assume (default: read from scontrol show config)"),
    )

    def __init__(self, options: dict[str, Any] | None = None):
        super().__init__(options)
        self._max_array_size: int | None = None

    def check_options(self) -> None:
        """The core's checks, and a --max-array-size that allows arrays at all."""
        super().check_options()
        given = positive(self.options, "max_array_size")
        if given is not None and given < 2:
            raise UsageError(f"--max-array-size must be at least 2 (got {given}): onager submits job arrays")

    # ------------------------------------------------------------- helpers
    def max_array_size(self) -> int:
        """MaxArraySize from `scontrol show config`, read once per backend (= per launch)."""
        if self._max_array_size is None:
            given = self.options.get("max_array_size")
            if given not in (None, ""):
                self._max_array_size = int(given)
            else:
                self._max_array_size = cluster_setting(
                    ["scontrol", "show", "config"], r"^\s*MaxArraySize\s*=\s*(\d+)", DEFAULT_MAX_ARRAY_SIZE,
                    retries=2, transient=TRANSIENT)
        if self._max_array_size < 2:
            raise OnagerError(f"this cluster's MaxArraySize is {self._max_array_size}: job arrays are off, "
                              "and onager submits arrays; ask the admins, or use --max-array-size")
        return self._max_array_size

    def _check_foreign(self) -> None:
        for key, hint in (("queue", "--partition"), ("pe", "--cpus"), ("mem_resource", "--mem"),
                          ("gpu_resource", "--gpus")):
            if self.options.get(key) not in (None, ""):
                raise UsageError(f"--{key.replace('_', '-')} is a gridengine option; for slurm use {hint}")

    def resources(self, times: int) -> list[str]:
        self._check_foreign()
        o = self.options
        duration = str(o.get("duration") or DEFAULT_DURATION).strip()
        seconds = duration_seconds(duration)  # validates every Slurm form
        cpus, mem, gpus = allocation(o, times, DEFAULT_MEM)
        args = ["-t", duration, f"--cpus-per-task={cpus or DEFAULT_CPUS}", f"--mem={megabytes_text(mem or 0)}"]
        if gpus:
            args.append(f"--gres=gpu:{gpus}")
        partition = o.get("partition")
        if o.get("debug"):
            # 0.1.3's --debug/--test: a short job on the debug partition, unless one is given or configured
            if seconds is None or seconds > DEBUG_MAX_SECONDS:
                raise UsageError(f"--debug allows at most {hms_text(DEBUG_MAX_SECONDS)} on slurm (got --duration "
                                 f"{duration}): give a shorter --duration, or drop --debug")
            if partition in (None, ""):
                partition = "gpu-debug" if gpus else "debug"
        for _key, flag, value in (("partition", "-p", partition), ("account", "-A", o.get("account")),
                                 ("qos", "--qos", o.get("qos")), ("constraint", "-C", o.get("constraint"))):
            if value not in (None, ""):
                args += [flag, str(value)]
        dependency = o.get("dependency")
        hold = o.get("hold_jid")
        if hold not in (None, ""):
            ids = [j for j in re.split(r"[,:\s]+", str(hold)) if j]
            after = "afterany:" + ":".join(ids)
            dependency = f"{dependency},{after}" if dependency else after
        if dependency not in (None, ""):
            args.append(f"--dependency={dependency}")
        return args

    # ------------------------------------------------------ adapter pieces
    def chunks(self, numbers: Tasklist) -> list[tuple[int, Tasklist]]:
        """MaxArraySize caps the index: ids beyond it go in further arrays, with offsets."""
        return numbers.split_below(self.max_array_size() - 1)

    def submit_command(self, launch: LaunchInfo, script: str, resources: list[str],
                       offset: int, indexes: Tasklist) -> list[str]:
        scheduler_logs = launch.paths.scheduler_logs_dir.replace("%", "%%")
        limit = positive(self.options, "max_tasks")
        spec = indexes.slurm() + (f"%{limit}" if limit else "")
        return ["sbatch", "--parsable", "-J", launch.jobname, f"--chdir={launch.workdir}",
                "-o", f"{scheduler_logs}/%x_%A_%a.out", "-e", f"{scheduler_logs}/%x_%A_%a.err", *resources,
                f"--array={spec}", f"--export=ALL,ONAGER_TASK_OFFSET={offset}",
                *[str(x) for x in self.options.get("extra") or []], script]

    def parse_job_id(self, out: str) -> str:
        return out.splitlines()[-1].split(";")[0].strip()  # --parsable: "id" or "id;cluster"

    def query_commands(self, job_ids: list[str]) -> list[list[str]]:
        fmt = "%i|%t|%r"
        by_user = ["squeue", "-h", "-u", getpass.getuser(), "-o", fmt]
        if len(job_ids) > SQUEUE_IDS_MAX:  # beyond this many ids, ask for the user's jobs and filter
            return [by_user]
        return [["squeue", "-h", "-j", ",".join(job_ids), "-o", fmt], by_user]

    def query_fallback(self, message: str) -> bool:
        # every id is gone from the controller (squeue fails only then): ask by user
        return "Invalid job id" in message

    def parse_query(self, text: str) -> list[QueryEntry]:
        return [parsed for parsed in map(parse_squeue_line, text.splitlines()) if parsed is not None]

    def cancel_commands(self, job_id: str, indexes: Tasklist | None) -> list[list[str]]:
        return [scancel_command(job_id, indexes)]

    def rollback_commands(self, job_ids: list[str]) -> list[list[str]]:
        return [["scancel", *job_ids]]


def scancel_command(job_id: str, tasks: Tasklist | None) -> list[str]:
    """`scancel J`, `scancel J_5` or `scancel J_[1-3,5]`: one argument, whatever the count."""
    if tasks is None:
        return ["scancel", job_id]
    if len(tasks.blocks) == 1 and tasks.blocks[0][0] == tasks.blocks[0][1]:
        return ["scancel", f"{job_id}_{tasks.blocks[0][0]}"]
    return ["scancel", f"{job_id}_[{tasks.slurm()}]"]


_RUNNING = {"R", "CG", "CF", "S", "ST", "SI", "SO", "RS", "RD"}
_WAITING = {"PD", "RQ", "RF", "RH"}
_STUCK_REASONS = ("launch failed requeued held", "launch_failed_requeued_held", "DependencyNeverSatisfied")


def parse_squeue_line(line: str) -> tuple[str, Iterable[int], str | None] | None:
    """`18_[3-6%2]|PD|reason`, `18_1|R|None` -> (job id, indexes, pending|running|error|None)."""
    parts = line.strip().split("|")
    if len(parts) < 2 or not parts[0]:
        return None
    ident, code = parts[0], parts[1].strip()
    reason = parts[2] if len(parts) > 2 else ""
    job_id, _, rest = ident.partition("_")
    if not rest:
        return None  # not an array job: not ours
    try:
        if rest.startswith("["):
            indexes: Iterable[int] = Tasklist.parse(rest.strip("[]").split("%")[0])
        else:
            indexes = [int(rest)]
    except (OnagerError, ValueError):
        return None
    if code in _WAITING:
        state: str | None = STUCK if any(r in reason for r in _STUCK_REASONS) else QUEUED
    elif code in _RUNNING:
        state = STARTED
    elif code == "SE":
        state = STUCK
    else:
        state = None  # ended: the state files decide
    return job_id, indexes, state


BACKEND = SlurmBackend
