"""Slurm backend: one `sbatch --array` per launch, split only where MaxArraySize forces it.

MaxArraySize caps the array INDEX (largest index = MaxArraySize-1), not the number of
tasks, so a launch whose ids go beyond it is sent as several arrays whose indexes are
offsets; every submission passes `ONAGER_TASK_OFFSET` (in sbatch's environment, which
sbatch exports, and in a user's own --export) and the wrapper adds it back.
The array spec is always the condensed tasklist (`1-3,5,8-9`), never one id per task.

With `--tasks-per-node T`, array element g runs the g-th group of T tasks through
`node.sh` (a bash loop in the launch directory, at most `--max-tasks-per-node` at once),
so the array indexes groups instead of tasks. `groups.txt` maps a group to its task ids.
What was submitted (job id, offset, indexes) is kept in `<launch>/scheduler.json`.
"""
from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from typing import Any

from onager.backends.array import (
    WARNING_SIGNAL,
    ArrayBackend,
    QueryEntry,
    allocation,
    duration_seconds,
    hms_text,
    megabytes_text,
    scheduler_time,
    submission_token,
    warning_seconds,
)
from onager.backends.base import BLOCKED, QUEUED, STARTED, STUCK, LaunchInfo, Option, cluster_setting, positive
from onager.errors import OnagerError, UsageError
from onager.packing import WORKERS
from onager.state import END_STATES, parse_answer
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
        WARNING_SIGNAL,
        WORKERS,  # gridengine reads it too
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
        warning = warning_seconds(o, seconds)
        if warning:
            # only the batch shell (the wrapper) gets it; it forwards it to the task and records a timeout
            args.append(f"--signal=B:USR1@{warning}")
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
        extra = _with_offset([str(x) for x in self.options.get("extra") or []], offset)
        token = self.token(launch, offset + indexes.first)
        mark = [f"--comment={token}"] if token else []
        # the offset rides in sbatch's own environment (exported by default): a job given
        # --export=ALL,VAR=... has each task started about 200 ms later by slurmd
        return [f"ONAGER_TASK_OFFSET={offset}", "sbatch", "--parsable", "-J", launch.jobname,
                f"--chdir={launch.workdir}", "-o", f"{scheduler_logs}/%x_%A_%a.out",
                "-e", f"{scheduler_logs}/%x_%A_%a.err", *resources, f"--array={spec}", *mark, *extra, script]

    def token(self, launch: LaunchInfo, number: int) -> str | None:
        """The submission's token (`--comment`), None when the user's own --comment takes its place."""
        if any(str(x).startswith("--comment") for x in self.options.get("extra") or []):
            return None
        return submission_token(launch, number)

    def find_token_commands(self, launch: LaunchInfo, token: str) -> list[list[str]]:
        # -t all: a job that has already ended (MinJobAge) is found too
        import getpass
        return [["squeue", "-h", "-u", getpass.getuser(), "-t", "all", "-n", launch.jobname, "-o", "%F|%k"]]

    def parse_token(self, text: str, token: str) -> str | None:
        for line in text.splitlines():
            job_id, _, comment = line.strip().partition("|")
            if comment.strip() == token and job_id.strip().isdigit():
                return job_id.strip()
        return None

    def parse_job_id(self, out: str) -> str:
        return out.splitlines()[-1].split(";")[0].strip()  # --parsable: "id" or "id;cluster"

    def query_commands(self, job_ids: list[str]) -> list[list[str]]:
        # -t all: tasks that ended in the last MinJobAge seconds too (TO, CA, OOM, PR, NF: how
        # they ended, even where sacct has no accounting storage)
        import getpass
        fmt = "%i|%t|%r|%e"  # %e: when an ended element ended
        by_user = ["squeue", "-h", "-u", getpass.getuser(), "-t", "all", "-o", fmt]
        if len(job_ids) > SQUEUE_IDS_MAX:  # beyond this many ids, ask for the user's jobs and filter
            return [by_user]
        return [["squeue", "-h", "-t", "all", "-j", ",".join(job_ids), "-o", fmt], by_user]

    def query_fallback(self, message: str) -> bool:
        # every id is gone from the controller (squeue fails only then): ask by user
        return "Invalid job id" in message

    def parse_query(self, text: str) -> list[QueryEntry]:
        return self._with_end_times(text, parse_squeue_line, 3)

    def accounting_commands(self, job_ids: list[str]) -> list[list[str]]:
        # -X: the allocation only (one line per array element, not its steps)
        return [["sacct", "-X", "-P", "-n", "-j", ",".join(job_ids), "--format=JobID,State,ExitCode,End"]]

    def parse_accounting(self, text: str) -> list[QueryEntry]:
        return self._with_end_times(text, parse_sacct_line, 3)

    def _with_end_times(self, text: str, parse: Any, field: int) -> list[QueryEntry]:
        """Parsed lines; for an ended element, its end time (field `field`) is noted too."""
        out = []
        for line in text.splitlines():
            parsed = parse(line)
            if parsed is None:
                continue
            out.append(parsed)
            parts = line.split("|")
            if parsed[2] is not None and parse_answer(parsed[2])[0] in END_STATES and len(parts) > field:
                for index in parsed[1]:
                    self.note_end(parsed[0], index, scheduler_time(parts[field]))
        return out

    def cancel_commands(self, job_id: str, indexes: Tasklist | None) -> list[list[str]]:
        return [scancel_command(job_id, indexes)]

    def rollback_commands(self, job_ids: list[str]) -> list[list[str]]:
        return [["scancel", *job_ids]]


def _with_offset(extra: list[str], offset: int) -> list[str]:
    """The user's words after `--`, their last --export (the one sbatch keeps; else the
    SBATCH_EXPORT of the environment) carrying ONAGER_TASK_OFFSET too: an --export that
    names variables exports only those, the environment's offset included or not."""
    at = max((i for i, word in enumerate(extra) if word == "--export" or word.startswith("--export=")),
             default=None)
    if at is None:
        given = os.environ.get("SBATCH_EXPORT", "")
        if given.strip().upper() in ("", "ALL"):
            return extra  # the whole environment, the offset in it
        extra, at = [*extra, f"--export={given}"], len(extra)
    word = extra[at]
    value = word[len("--export="):] if word.startswith("--export=") else (extra[at + 1] if at + 1 < len(extra)
                                                                         else "")
    if not value.strip():
        raise UsageError("--export after -- needs a value (e.g. --export=ALL,VAR=1): sbatch would refuse it")
    if value.strip().upper() == "ALL":
        return extra  # the whole environment, the offset in it: as without --export
    if value.strip().upper() == "NONE":
        if offset:
            raise UsageError("--export=NONE passes no variable to the tasks, and this launch's ids go beyond "
                             "MaxArraySize (ONAGER_TASK_OFFSET must reach them): use --export=ALL or name "
                             "variables, e.g. --export=PATH,HOME")
        return extra  # nothing is exported: the wrapper's default offset 0 holds
    merged = f"--export={value},ONAGER_TASK_OFFSET={offset}"
    if word.startswith("--export="):
        return [*extra[:at], merged, *extra[at + 1:]]
    return [*extra[:at], merged, *extra[at + 2:]]


def scancel_command(job_id: str, tasks: Tasklist | None) -> list[str]:
    """`scancel J`, `scancel J_5` or `scancel J_[1-3,5]`: one argument, whatever the count."""
    if tasks is None:
        return ["scancel", job_id]
    if len(tasks.blocks) == 1 and tasks.blocks[0][0] == tasks.blocks[0][1]:
        return ["scancel", f"{job_id}_{tasks.blocks[0][0]}"]
    return ["scancel", f"{job_id}_[{tasks.slurm()}]"]


_RUNNING = {"R", "CG", "CF", "S", "ST", "SI", "SO", "RS", "RD"}
_WAITING = {"PD", "RQ", "RF"}
_STUCK_REASONS = ("launch failed requeued held", "launch_failed_requeued_held", "DependencyNeverSatisfied")
#: JOB REASON CODES (squeue(1)) of a pending job that cannot clear by themselves: the request
#: does not fit the partition, account or QOS, or the job is held until someone releases it
BLOCKED_REASONS = frozenset({
    "PartitionConfig", "PartitionNodeLimit", "PartitionTimeLimit", "PartitionDown", "PartitionInactive",
    "BadConstraints", "InvalidAccount", "InvalidQOS", "AccountNotAllowed", "QOSNotAllowed",
    "AssociationTimeLimit", "QOSTimeLimit", "JobHeldUser", "JobHeldAdmin",
})
#: squeue -t all codes of ended jobs -> (end state, reason when squeue gives none); CD
#: (completed) and unknown codes leave it to the task's files
_ENDED = {"TO": ("timeout", "TimeLimit"), "DL": ("timeout", "Deadline"), "CA": ("cancelled", ""),
          "OOM": ("oom", "OUT_OF_MEMORY"), "PR": ("preempted", ""), "NF": ("lost", "NODE_FAIL"),
          "BF": ("lost", "BOOT_FAIL"), "F": ("failed", "")}
#: sacct states -> end state; the state is the reason (e.g. `timeout (TIMEOUT)`)
_SACCT = {"COMPLETED": "done", "FAILED": "failed", "TIMEOUT": "timeout", "DEADLINE": "timeout",
          "OUT_OF_MEMORY": "oom", "PREEMPTED": "preempted", "CANCELLED": "cancelled", "NODE_FAIL": "lost",
          "BOOT_FAIL": "lost"}


def _word(state: str, reason: str) -> str:
    return f"{state} ({reason})" if reason else state


def _array_indexes(ident: str) -> tuple[str, Iterable[int]] | None:
    """`18_[3-6%2]` -> ("18", 3..6), `18_1` -> ("18", [1]); None for a job that is not an array."""
    job_id, _, rest = ident.strip().partition("_")
    if not rest or not job_id.isdigit():
        return None
    try:
        if rest.startswith("["):
            return job_id, Tasklist.parse(rest.strip("[]").split("%")[0])
        return job_id, [int(rest)]
    except (OnagerError, ValueError):
        return None


def parse_squeue_line(line: str) -> tuple[str, Iterable[int], str | None] | None:
    """`18_[3-6%2]|PD|Priority`, `18_1|R|None`, `18_2|TO|TimeLimit` -> (job id, indexes, answer).

    The answer is `pending (Reason)`, `blocked (Reason)` (a reason that cannot clear by itself),
    `running`, `error (Reason)`, an end word for a task that ended in the last MinJobAge seconds
    (`timeout (TimeLimit)`, `cancelled`, ...), or None (completed: the state files decide)."""
    parts = line.strip().split("|")
    if len(parts) < 2 or not parts[0]:
        return None
    parsed = _array_indexes(parts[0])
    if parsed is None:
        return None  # not an array job: not ours
    job_id, indexes = parsed
    code = parts[1].strip()
    reason = parts[2].strip() if len(parts) > 2 else ""
    reason = "" if reason in ("None", "(null)") else reason
    state: str | None
    if code in _WAITING:
        if any(r in reason for r in _STUCK_REASONS):
            state = _word(STUCK, reason.replace(" ", "_"))
        elif reason in BLOCKED_REASONS:
            state = _word(BLOCKED, reason)
        else:
            state = _word(QUEUED, reason)
    elif code == "RH":  # requeued and held: waits for scontrol release
        state = _word(BLOCKED, reason or "RequeueHold")
    elif code in _RUNNING:
        state = STARTED
    elif code == "SE":
        state = _word(STUCK, reason or "SpecialExit")
    elif code in _ENDED:
        ended, default = _ENDED[code]
        state = _word(ended, reason or default)
    else:
        state = None  # completed: the state files decide
    return job_id, indexes, state


def parse_sacct_line(line: str) -> tuple[str, Iterable[int], str | None] | None:
    """`123_4|TIMEOUT|0:0`, `123_5|CANCELLED by 1000|0:15`, `123_6|FAILED|3:0` -> (job id, indexes,
    end word); None for lines that are not array elements or have not ended."""
    parts = line.strip().split("|")
    if len(parts) < 2:
        return None
    parsed = _array_indexes(parts[0])
    if parsed is None:
        return None
    job_id, indexes = parsed
    words = parts[1].split()
    if not words or words[0] not in _SACCT:
        return None  # PENDING, RUNNING, REQUEUED, ...: not an end
    state = _SACCT[words[0]]
    exit_code = parts[2].strip() if len(parts) > 2 else ""
    if words[0] == "CANCELLED":
        reason = " ".join(words[1:])  # "by 1000"
    elif words[0] == "FAILED":
        reason = f"ExitCode={exit_code}" if exit_code else ""
    elif words[0] == "COMPLETED":
        reason = ""
    else:
        reason = words[0]
    return job_id, indexes, _word(state, reason)


BACKEND = SlurmBackend
