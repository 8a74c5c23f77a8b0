"""The array-scheduler core: everything Slurm, Grid Engine (and PBS, LSF, OAR...) share.

An array scheduler takes a script and a set of array indexes, and sets one environment
variable to the index in each element. This module alone runs the scheduler commands
(through `base.run`, with retries on the adapter's transient errors): submission in
chunks (the adapter cuts the condensed tasklist below its MaxArraySize-like limit, with
offsets the wrapper adds back), one query per call for many launches, cancels by index,
rollback of a half-submitted launch, `--tasks-per-node` groups (`node.sh`, `groups.txt`)
and `scheduler.json`. An adapter (an `ArrayBackend` subclass) only builds argument lists
and parses what its scheduler prints, so it is testable without a scheduler.

The resource values (`--mem`, `--duration`, `--cpus`/`--gpus` per allocation or per task)
are parsed here too, so that every adapter reads them the same way.
"""
from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import shlex
import time
from collections.abc import Iterable, Sequence
from typing import Any, Optional

from onager import packing
from onager.backends.base import BLOCKED, QUEUED, STARTED, STUCK, Backend, LaunchInfo, Option, positive, run
from onager.errors import OnagerError, UsageError
from onager.fsutil import atomic_write, executable_mode
from onager.layout import GROUPS_TXT, NODE_SH, SCHEDULER_JSON, STATE, WRAPPER, LaunchPaths
from onager.state import END_STATES, KILLED, mark, parse_answer, read_states, record_accounting
from onager.tasklist import Tasklist
from onager.wrapper import shell_variable

# kept for importers; the paths are LaunchPaths.scheduler_json, .groups_txt, .node_sh
SCHEDULER_FILE, GROUPS_FILE, NODE_SCRIPT = SCHEDULER_JSON, GROUPS_TXT, NODE_SH

#: (job id, array indexes, answer: `pending (Reason)`, `blocked (Reason)`, `running`, `error`, an
#: end state such as `timeout (TimeLimit)`, or None for "ended: the state files decide")
QueryEntry = tuple[str, Iterable[int], Optional[str]]
#: a task shown twice (e.g. being deleted) keeps its most telling answer
_RANK = {STUCK: 4, STARTED: 3, BLOCKED: 2, QUEUED: 2}
#: a submit error that does not say whether the job was submitted (checked by token first)
UNCERTAIN = ("did not answer within",)


# ------------------------------------------------------------------ values
_MEM = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)i?B?\s*", re.IGNORECASE | re.ASCII)
_UNITS = "KMGT"
#: a leading `NAME=value` word of a submit command: set in the submit program's environment, as
#: the shell does with `NAME=value sbatch ...` (what a dry run prints)
_ASSIGNMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=", re.ASCII)
_DURATION_FORMS = [
    (re.compile(r"(\d+)", re.ASCII), ("m",)),
    (re.compile(r"(\d+):(\d+)", re.ASCII), ("m", "s")),
    (re.compile(r"(\d+):(\d+):(\d+)", re.ASCII), ("h", "m", "s")),
    (re.compile(r"(\d+)-(\d+)", re.ASCII), ("d", "h")),
    (re.compile(r"(\d+)-(\d+):(\d+)", re.ASCII), ("d", "h", "m")),
    (re.compile(r"(\d+)-(\d+):(\d+):(\d+)", re.ASCII), ("d", "h", "m", "s")),
]
_SECONDS = {"d": 86400, "h": 3600, "m": 60, "s": 1}
UNLIMITED = ("unlimited", "infinite")


def mem_megabytes(value: Any) -> int:
    """`4G`, `500M`, `1.5G`, `2` (= GB, as in 0.1.3) -> megabytes; bad text is a usage error."""
    match = _MEM.fullmatch(str(value))
    if not match:
        raise UsageError(f"bad --mem {value!r}: give a size like 4G, 500M or a number of GB like 2")
    number, unit = float(match.group(1)), (match.group(2) or "G").upper()
    megabytes = number * 1024 ** (_UNITS.index(unit) - 1)
    if megabytes < 1:
        raise UsageError(f"bad --mem {value!r}: below 1 MB; give a size like 4G or 500M")
    return int(round(megabytes))


def mem_text(value: Any, times: int = 1) -> str:
    """The scheduler's size text: whole G when it is one, else M (`2` -> `2G`, `1.5G` -> `1536M`)."""
    return megabytes_text(mem_megabytes(value) * times)


def duration_seconds(value: Any) -> int | None:
    """Seconds of a Slurm time (`30`, `30:00`, `48:00:00`, `2-00:00:00`, `2-12`); None = unlimited."""
    text = str(value).strip()
    if text.lower() in UNLIMITED:
        return None
    for pattern, parts in _DURATION_FORMS:
        match = pattern.fullmatch(text)
        if match:
            return sum(int(v) * _SECONDS[p] for v, p in zip(match.groups(), parts))
    raise UsageError(f"bad --duration {value!r}: use minutes (30), H:MM:SS (48:00:00) "
                     "or D-HH:MM:SS (2-00:00:00)")


def hms_text(seconds: int) -> str:
    """`H:MM:SS` (hours may exceed 24), for messages and SGE's h_rt."""
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"




def gpu_count(options: dict[str, Any]) -> str | None:
    """`--gpus 2` or `--gpus a100:2` (a GPU type and a count) for a scheduler."""
    value = options.get("gpus")
    if value in (None, "", 0, "0"):
        return None
    text = str(value).strip()
    if not re.fullmatch(r"([A-Za-z0-9_.-]+:)?\d+", text, re.ASCII) or text.endswith(":0"):
        raise UsageError(f"bad --gpus {value!r} for a cluster: give a count per task like 2 (or type:count like "
                         "a100:2)")
    return text


#: declared once (by slurm, as --hold_jid); Grid Engine reads it too
WARNING_SIGNAL = Option("warning_signal", "int", units="SECONDS", default="min(60, duration/10) with --duration",
                        help="slurm/gridengine: send SIGUSR1 this many seconds before the time limit "
                             "(slurm --signal=B:USR1@N, gridengine s_rt); 0: none")


def warning_seconds(options: dict[str, Any], limit: int | None) -> int | None:
    """Seconds before the time limit at which the wrapper gets SIGUSR1 (None: no signal).

    `--warning-signal N` (0: none); by default, with `--duration` given, a tenth of it, 1 to
    60 s, so that the wrapper forwards it to the task and records `timeout` when the limit
    kills it. Without a limit (UNLIMITED) there is nothing to warn of."""
    value = options.get("warning_signal")
    if value in (None, ""):
        if options.get("duration") in (None, "") or limit is None:
            return None
        return max(1, min(60, limit // 10))
    try:
        seconds = int(value)
    except (TypeError, ValueError):
        raise UsageError(f"bad --warning-signal {value!r}: give a number of seconds, or 0 for none") from None
    if seconds < 0:
        raise UsageError(f"bad --warning-signal {seconds}: give a number of seconds, or 0 for none")
    if seconds == 0:
        return None
    if limit is None:
        raise UsageError("--warning-signal needs a time limit: give a --duration, or drop --warning-signal")
    if seconds >= limit:
        raise UsageError(f"--warning-signal {seconds} is not below the time limit ({limit} s): give fewer "
                         "seconds, or 0 for none")
    return seconds


def submission_token(launch: LaunchInfo, number: int) -> str:
    """A token naming one submission of one launch (its first array number), a function of the
    launch directory (golden tests stay exact): after a timeout, the scheduler is asked for it
    before submitting again, so that a submission that went through is adopted, not repeated."""
    import hashlib
    digest = hashlib.sha1(f"{launch.launch_dir}\0{launch.launch_id}".encode()).hexdigest()[:12]
    return f"onager:{digest}.{number}"


def megabytes_text(megabytes: int) -> str:
    """The scheduler's size text of a number of MB: whole G when it is one, else M."""
    return f"{megabytes // 1024}G" if megabytes % 1024 == 0 else f"{megabytes}M"


def _one_of(options: dict[str, Any], whole: str, each: str) -> None:
    if options.get(whole) not in (None, "") and options.get(each) not in (None, ""):
        raise UsageError(f"--{whole} (for the whole allocation) and --{each.replace('_', '-')} (for each task) "
                         f"both given (one may come from onager config --read): keep one")


def allocation(options: dict[str, Any], at_once: int,
               default_mem: str | None = None) -> tuple[int | None, int | None, str | None]:
    """(CPUs, memory in MB, GPUs) that ONE allocation asks for; None = not given.

    `--cpus`, `--mem` and `--gpus` are for the whole allocation, whatever --tasks-per-node
    says: a 0.1.3 command line keeps its meaning. `--cpus-per-task`, `--mem-per-task` and
    `--gpus-per-task` are per task, times the tasks that run at once in the allocation.
    """
    _one_of(options, "cpus", "cpus_per_task")
    _one_of(options, "mem", "mem_per_task")
    _one_of(options, "gpus", "gpus_per_task")
    cpus = positive(options, "cpus")
    if cpus is None and options.get("cpus_per_task") not in (None, ""):
        cpus = (positive(options, "cpus_per_task") or 1) * at_once
    mem: int | None = None
    if options.get("mem") not in (None, ""):
        mem = mem_megabytes(options["mem"])
    elif options.get("mem_per_task") not in (None, ""):
        try:
            mem = mem_megabytes(options["mem_per_task"]) * at_once
        except UsageError:
            raise UsageError(f"bad --mem-per-task {options['mem_per_task']!r}: give a size like 4G, 500M "
                             "or a number of GB like 2") from None
    elif default_mem is not None:
        mem = mem_megabytes(default_mem)
    gpus = gpu_count(options)
    if gpus is None and options.get("gpus_per_task") not in (None, ""):
        each = positive(options, "gpus_per_task") or 1
        gpus = str(each * at_once)
    return cpus, mem, gpus


# ------------------------------------------------------------------ groups
def group_plan(tasks: Tasklist, per_node: int) -> list[list[int]]:
    """Task ids of each group, in launch order: group g (1-based) is the g-th slice of T ids."""
    groups: list[list[int]] = []
    current: list[int] = []
    for task_id in tasks:
        current.append(task_id)
        if len(current) == per_node:
            groups.append(current)
            current = []
    if current:
        groups.append(current)
    return groups


def group_count(tasks: Tasklist, per_node: int) -> int:
    return -(-len(tasks) // per_node)


def groups_width(tasks: Tasklist, per_node: int) -> int:
    """Bytes per groups.txt line: fixed, so `dd skip=g-1` finds group g without a scan."""
    return per_node * (len(str(tasks.last)) + 1) + 1


def write_groups(launch_dir: str, tasks: Tasklist, per_node: int) -> int:
    width = groups_width(tasks, per_node)
    groups = group_plan(tasks, per_node)
    text = "".join(" ".join(map(str, g)).ljust(width - 1) + "\n" for g in groups)
    atomic_write(LaunchPaths(launch_dir).groups_txt, text)
    return len(groups)


def read_groups(launch_dir: str) -> list[list[int]]:
    try:
        with open(LaunchPaths(launch_dir).groups_txt) as handle:
            return [[int(x) for x in line.split()] for line in handle]
    except OSError:
        return []


def node_script_text(launch_dir: str, width: int, at_once: int, index_variable: str) -> str:
    """bash that runs one group's tasks through wrapper.sh, at most `at_once` at a time.

    The group is `$1`, else the scheduler's array index (`index_variable`) + ONAGER_TASK_OFFSET.
    A task marked cancelled before its turn is skipped; the script exits 1 if any task failed.
    """
    q = shlex.quote
    index = shell_variable(index_variable)
    return f"""#!/bin/bash
# onager: runs one group of tasks of this launch inside one allocation
D=${{ONAGER_REMOTE_LAUNCH_DIR:-{q(launch_dir)}}}
if [ -n "${{1:-}}" ]; then g=$1; else g=${{{index}:-}}; fi
case $g in ''|*[!0-9]*) echo "onager node.sh: no group id (got '$g')" >&2; exit 2;; esac
[ -n "${{1:-}}" ] || g=$(( g + ${{ONAGER_TASK_OFFSET:-0}} ))
ids=$(dd if="$D/{GROUPS_TXT}" bs={width} skip=$(( g - 1 )) count=1 2>/dev/null)
[ -n "${{ids// /}}" ] || {{ echo "onager node.sh: group $g is not in $D" >&2; exit 2; }}
rc=0
for id in $ids; do
    if compgen -G "$D/{STATE}/$id.cancel@*" >/dev/null; then continue; fi
    while [ "$(jobs -rp | wc -l)" -ge {at_once} ]; do wait -n || rc=1; done
    bash "$D/{WRAPPER}" "$id" &
done
while [ "$(jobs -rp | wc -l)" -gt 0 ]; do wait -n || rc=1; done
wait
exit $rc
"""


def write_node_script(launch: LaunchInfo, per_node: int, at_once: int, index_variable: str) -> str:
    path = launch.paths.node_sh
    atomic_write(path, node_script_text(launch.launch_dir, groups_width(launch.tasklist, per_node), at_once,
                                        index_variable))
    os.chmod(path, executable_mode())
    return path


def per_node(options: dict[str, Any]) -> tuple[int, int]:
    """(tasks per allocation, tasks at once in it); (1, 1) = one task per array element."""
    tasks = positive(options, "tasks_per_node", 1) or 1
    at_once = positive(options, "max_tasks_per_node", tasks) or tasks
    return tasks, min(at_once, tasks)


# ------------------------------------------------------------ scheduler.json
def save_submissions(launch_dir: str, backend: str, groups: int, submissions: list[dict[str, Any]]) -> None:
    atomic_write(LaunchPaths(launch_dir).scheduler_json,
                 json.dumps({"backend": backend, "tasks_per_node": groups, "submissions": submissions},
                            indent=1))


def load_submissions(record: Any) -> tuple[int, list[dict[str, Any]]]:
    """(tasks per node, [{job_id, offset, array}]) of a launch; old records: one array, offset 0."""
    try:
        with open(LaunchPaths(record.launch_dir).scheduler_json) as handle:
            meta = json.load(handle)
        return int(meta.get("tasks_per_node", 1)), list(meta["submissions"])
    except (OSError, ValueError, KeyError, TypeError):
        return 1, [{"job_id": j, "offset": 0, "array": record.tasklist} for j in record.job_ids]


class Mapper:
    """Scheduler index of a submission <-> task ids of the launch (offsets and groups)."""

    def __init__(self, record: Any):
        self.record = record
        self.per_node, self.submissions = load_submissions(record)
        self.groups = read_groups(record.launch_dir) if self.per_node > 1 else []
        self.offsets = {str(s["job_id"]): int(s.get("offset", 0)) for s in self.submissions}
        # --workers: element k is worker k, answering for the tasks it holds (onager.packing)
        self.packed = packing.Holdings(record.launch_dir) if packing.is_packed(record.launch_dir) else None

    def task_ids(self, job_id: str, index: int) -> list[int]:
        number = index + self.offsets.get(job_id, 0)
        if self.packed is not None:
            return self.packed.held_by(number)
        if self.per_node > 1:
            return self.groups[number - 1] if 0 < number <= len(self.groups) else []
        return [number]

    def indexes(self, tasks: Iterable[int]) -> dict[str, list[int]]:
        """job id -> scheduler indexes that hold exactly these tasks (whole groups only)."""
        import bisect
        numbers: Iterable[int]
        if self.per_node > 1:
            wanted = set(tasks)
            numbers = [g for g, ids in enumerate(self.groups, 1) if ids and all(i in wanted for i in ids)]
        elif self.packed is not None:
            numbers = self._workers_of(tasks)
        else:
            numbers = tasks
        # submissions cover disjoint spans of numbers (offset windows, or one block each)
        spans = []
        for sub in self.submissions:
            offset, array = int(sub.get("offset", 0)), Tasklist.parse(str(sub["array"]))
            spans.append((offset + array.first, offset + array.last, offset, array, str(sub["job_id"])))
        spans.sort(key=lambda span: span[0])
        starts = [span[0] for span in spans]
        out: dict[str, list[int]] = {}
        for number in numbers:
            k = bisect.bisect_right(starts, number) - 1
            if k < 0 or number > spans[k][1]:
                continue
            _, _, offset, array, job_id = spans[k]
            if number - offset in array:
                out.setdefault(job_id, []).append(number - offset)
        return out

    def _workers_of(self, tasks: Iterable[int]) -> list[int]:
        """The workers that run these tasks now (a --workers launch)."""
        assert self.packed is not None
        return sorted({w for w in map(self.packed.worker_of, tasks) if w is not None})


def _accounted(launch_dir: str) -> set[tuple[int, int]]:
    """(task, attempt) pairs whose accounting answer is cached in state/ already."""
    try:
        names = os.listdir(LaunchPaths(launch_dir).state_dir)
    except OSError:
        return set()
    found = set()
    for name in names:
        head, sep, rest = name.partition(".acct@")
        fields = rest.split("@")
        if sep and head.isdigit() and len(fields) > 1 and fields[1].isdigit():
            found.add((int(head), int(fields[1])))
    return found


def _cache(launch_dir: str, task_id: int, attempt: int, word: str, started: float | None = None,
           ended: float | None = None) -> None:
    """Record an end answer for one attempt (only end states; a read-only launch is no error),
    dated when the scheduler says it ended if that is after the start, else now."""
    state, reason = parse_answer(word)
    if state in END_STATES:
        now = time.time()
        when = ended if ended is not None and (started or 0) <= ended <= now else None
        with contextlib.suppress(OSError):
            record_accounting(launch_dir, task_id, attempt, state, reason, when)


def scheduler_time(text: str, form: str = "%Y-%m-%dT%H:%M:%S") -> float | None:
    """Epoch seconds of a scheduler's local time text (`2026-11-30T23:24:20`), None if not one."""
    try:
        return time.mktime(time.strptime(text.strip(), form))
    except (ValueError, OverflowError):
        return None


# ------------------------------------------------------------------ the core
class ArrayBackend(Backend):
    """Submit, query and cancel for any array scheduler; the adapter fills in the pieces below.

    Adapter pieces (pure: argument lists in, parsed output out):
    `resources`, `chunks`, `array_text`, `submit_command`, `parse_job_id`, `query_commands`,
    `parse_query`, `cancel_commands`, `rollback_commands`; and the class attributes
    `index_variable`/`job_id_variable` (what the wrapper reads on a compute node),
    `submit_program` (for messages) and `transient` (error texts worth a retry).
    """

    #: the environment variable holding the array index in each element
    index_variable = ""
    #: the environment variable holding the scheduler's job id (for the task's start record)
    job_id_variable = ""
    #: the command that prints the job id a cancel by `--jobid` wants (for messages)
    submit_program = ""
    #: parts of error messages that mean "try again" (controller busy, socket timed out)
    transient: Sequence[str] = ()
    submit_retries = 3
    query_retries = 2
    cancel_retries = 2
    #: variables the query command needs besides the environment (e.g. to get uncut output)
    query_env: dict[str, str] = {}
    #: set once accounting answered that it is off (or absent): not asked again by this object
    _no_accounting = False
    #: (job id, index) -> when the scheduler says that element ended, noted by the adapters'
    #: parse_query/parse_accounting (see note_end), so that a cached end has its real time
    _ended: dict[tuple[str, int], float] | None = None

    def note_end(self, job_id: str, index: int, when: float | None) -> None:
        """Remember when the scheduler says an element ended (its query or accounting said)."""
        if when is not None:
            if self._ended is None:
                self._ended = {}
            self._ended[(job_id, index)] = when

    def _ended_at(self, job_id: str, index: int) -> float | None:
        return self._ended.get((job_id, index)) if self._ended else None

    def _end_of(self, mapper: Any, task_id: int) -> float | None:
        if not self._ended:
            return None
        for job_id, indexes in mapper.indexes([task_id]).items():
            for index in indexes:
                if (job_id, index) in self._ended:
                    return self._ended[(job_id, index)]
        return None

    def check_options(self) -> None:
        """Every option, config defaults included, checked before a launch writes anything or
        takes a launch id: the adapter's resources (whose own hints for another scheduler's
        options come first), options only other backends honour, and --max-tasks."""
        packing.check_options(self.options)
        tasks_per_node, at_once = per_node(self.options)
        self.resources(at_once if tasks_per_node > 1 else 1)
        super().check_options()
        positive(self.options, "max_tasks")

    # ----------------------------------------------------- adapter pieces
    def resources(self, times: int) -> list[str]:
        """Scheduler arguments for the allocation of one array element running `times` tasks
        at once; raises UsageError for options it cannot honour."""
        return []

    def chunks(self, numbers: Tasklist) -> list[tuple[int, Tasklist]]:
        """(offset, indexes) per submission, cut where the scheduler's limits force it; the
        array element with index i runs number i + offset (a task id, or a group)."""
        return [(0, numbers.condensed())]

    def array_text(self, indexes: Tasklist) -> str:
        """How a chunk is written in scheduler.json (and re-read by `Mapper`)."""
        return str(indexes)

    def submit_command(self, launch: LaunchInfo, script: str, resources: list[str],
                       offset: int, indexes: Tasklist) -> list[str]:
        raise NotImplementedError

    def parse_job_id(self, out: str) -> str:
        """The job id in what the submit command printed ("" if none)."""
        return out.strip().splitlines()[-1].strip() if out.strip() else ""

    def query_commands(self, job_ids: list[str]) -> list[list[str]]:
        """The query to run for these job ids, then fallbacks (tried while `query_fallback` says so)."""
        raise NotImplementedError

    def query_fallback(self, message: str) -> bool:
        """Whether a failed query should be retried with the next of `query_commands`."""
        return False

    def parse_query(self, text: str) -> list[QueryEntry]:
        raise NotImplementedError

    def reason_commands(self, job_ids: list[str]) -> list[list[str]]:
        """Commands that say why these plainly pending jobs wait (none: the query says it)."""
        return []

    def parse_reasons(self, text: str) -> dict[str, str]:
        """job id -> `pending (Reason)` or `blocked (Reason)`, from reason_commands' output."""
        return {}

    def accounting_commands(self, job_ids: list[str]) -> list[list[str]]:
        """Commands that tell how the ended elements of these jobs ended (none: no accounting)."""
        return []

    def parse_accounting(self, text: str) -> list[QueryEntry]:
        """(job id, indexes, end word such as `timeout (TIMEOUT)`) from accounting_commands' output."""
        return []

    def token(self, launch: LaunchInfo, number: int) -> str | None:
        """The token the submission whose first array number is `number` carries (None: none)."""
        return None

    def find_token_commands(self, launch: LaunchInfo, token: str) -> list[list[str]]:
        """Commands that list this user's jobs with their tokens (see parse_token)."""
        return []

    def parse_token(self, text: str, token: str) -> str | None:
        """The job id carrying `token` in find_token_commands' output, or None."""
        return None

    def cancel_commands(self, job_id: str, indexes: Tasklist | None) -> list[list[str]]:
        """Commands that cancel these indexes of one job (None: the whole job)."""
        raise NotImplementedError

    def rollback_commands(self, job_ids: list[str]) -> list[list[str]]:
        """Commands that cancel the arrays of a launch whose submission failed half way."""
        return [command for job_id in job_ids for command in self.cancel_commands(job_id, None)]

    def already_gone(self, message: str) -> bool:
        """Whether a failed cancel only says the job has ended meanwhile."""
        return False

    # -------------------------------------------------------------- plan
    def plan(self, launch: LaunchInfo) -> tuple[int, int, list[str], list[tuple[int, Tasklist]]]:
        """(tasks per node, at once, resource arguments, [(offset, indexes)]) of a launch."""
        tasks_per_node, at_once = per_node(self.options)
        resources = self.resources(at_once if tasks_per_node > 1 else 1)
        workers = packing.check_options(self.options)
        if workers:  # W workers walk the tasks (onager.packing): the array indexes workers
            return 1, 1, resources, self.chunks(Tasklist.range(1, min(workers, launch.count) or 1))
        if tasks_per_node > 1:
            numbers = Tasklist.range(1, group_count(launch.tasklist, tasks_per_node))
        else:
            numbers = launch.tasklist
        return tasks_per_node, at_once, resources, self.chunks(numbers)

    def submit_commands(self, launch: LaunchInfo) -> list[list[str]]:
        tasks_per_node, _, resources, chunks = self.plan(launch)
        script = launch.wrapper if tasks_per_node == 1 else launch.paths.node_sh
        if packing.worker_count(self.options):
            script = os.path.join(launch.launch_dir, packing.WORKER_SH)
        return [self.submit_command(launch, script, resources, offset, indexes) for offset, indexes in chunks]

    # ------------------------------------------------------------ submit
    def submit(self, launch: LaunchInfo) -> list[str]:
        tasks_per_node, at_once, _, chunks = self.plan(launch)
        commands = self.submit_commands(launch)
        os.makedirs(launch.paths.scheduler_logs_dir, exist_ok=True)
        if tasks_per_node > 1:
            write_groups(launch.launch_dir, launch.tasklist, tasks_per_node)
            write_node_script(launch, tasks_per_node, at_once, self.index_variable)
        if packing.worker_count(self.options):
            self.write_workers(launch, sum(len(indexes) for _, indexes in chunks))
        job_ids: list[str] = []
        submissions: list[dict[str, Any]] = []
        try:
            for (offset, indexes), command in zip(chunks, commands):
                job_id = self.submit_one(launch, command, self.token(launch, offset + indexes.first))
                job_ids.append(job_id)
                submissions.append({"job_id": job_id, "offset": offset, "array": self.array_text(indexes)})
        except BaseException:
            if job_ids:  # a split launch is all or nothing
                for command in self.rollback_commands(job_ids):
                    with contextlib.suppress(OnagerError):
                        run(command, retries=self.cancel_retries, transient=self.transient)
            raise
        save_submissions(launch.launch_dir, self.name, tasks_per_node, submissions)
        return job_ids

    def write_workers(self, launch: LaunchInfo, workers: int) -> None:
        """worker.sh and the packing files of a `--workers` launch, before it is submitted."""
        limit = duration_seconds(self.options.get("duration") or "0-01:00:00")
        packing.write_worker(launch.launch_dir, launch.tasklist, workers, limit, self.index_variable,
                             slurm_end=self.name == "slurm")

    def submit_one(self, launch: LaunchInfo, command: list[str], token: str | None) -> str:
        """Run one submit command; after an error that leaves it unknown whether the job went
        through (socket timed out, no answer), ask the scheduler for the submission's token and
        adopt the job it finds before trying again: a launch is never submitted twice."""
        delay = 1.0
        assignments = list(itertools.takewhile(_ASSIGNMENT.match, command))  # `NAME=value sbatch ...`
        env = dict(os.environ, **dict(a.split("=", 1) for a in assignments)) if assignments else None
        argv = command[len(assignments):]
        for attempt in range(self.submit_retries + 1):
            try:
                out = run(argv, transient=self.transient, env=env).stdout.strip()
            except OnagerError as exc:
                message = str(exc)
                if not any(t in message for t in (*self.transient, *UNCERTAIN)):
                    raise
                found = self.find_token(launch, token) if token else None
                if found:
                    return found
                if attempt == self.submit_retries:
                    raise
                time.sleep(delay)
                delay *= 2
                continue
            job_id = self.parse_job_id(out) if out else ""
            if not job_id.isdigit():
                raise OnagerError(f"{argv[0]} printed no job id (got {out!r}); command: {shlex.join(command)}")
            return job_id
        raise AssertionError("unreachable")

    def find_token(self, launch: LaunchInfo, token: str) -> str | None:
        """The job id of the submission carrying `token`, or None (not found, or cannot ask)."""
        for command in self.find_token_commands(launch, token):
            try:
                found = self.parse_token(run(command, retries=1, transient=self.transient).stdout, token)
            except OnagerError:
                continue
            if found:
                return found
        return None

    # ------------------------------------------------------------- query
    def query(self, records: Sequence[Any]) -> dict[str, dict[int, str] | None]:
        """One scheduler query for every launch of this backend that `list`/`wait` look at."""
        owners: dict[str, Mapper] = {}
        out: dict[str, dict[int, str] | None] = {}
        for record in records:
            mapper = Mapper(record)
            out[record.key] = {}
            for sub in mapper.submissions:
                owners[str(sub["job_id"])] = mapper
        if not owners:
            return out
        try:
            entries = self.parse_query(self._query_output(sorted(owners, key=lambda j: (len(j), j))))
        except OnagerError:
            return {r.key: None for r in records}
        entries = self._with_reasons([e for e in entries if e[0] in owners])
        self._spread(entries, owners, out)
        self._spread_packed(entries, owners, out)
        self._settle(records, owners, out)
        return out

    def _spread(self, entries: Iterable[QueryEntry], owners: dict[str, Mapper],
                out: dict[str, dict[int, str] | None]) -> None:
        """Each entry's answer to the task ids its indexes hold."""
        for job_id, indexes, state in entries:
            owner = owners.get(job_id)
            if owner is None or state is None:
                continue
            answer = out[owner.record.key]
            assert answer is not None
            rank = _RANK.get(parse_answer(state)[0] or "", 1)
            for index in indexes:
                for task_id in owner.task_ids(job_id, index):
                    # a task shown twice (e.g. being deleted) keeps its most telling state
                    held = answer.get(task_id)
                    if held is None or rank > _RANK.get(parse_answer(held)[0] or "", 1):
                        answer[task_id] = state

    def _spread_packed(self, entries: Sequence[QueryEntry], owners: dict[str, Mapper],
                       out: dict[str, dict[int, str] | None]) -> None:
        """`--workers` launches: tasks nobody has taken wait while a worker is queued or runs;
        a joiner's task (`--join`) runs while its local process does."""
        answers: dict[int, list[str | None]] = {}
        for job_id, indexes, state in entries:
            owner = owners.get(job_id)
            if owner is not None and owner.packed is not None:
                answers.setdefault(id(owner), []).extend(state for _ in indexes)
        seen: set[int] = set()
        for owner in owners.values():
            if owner.packed is None or id(owner) in seen:
                continue
            seen.add(id(owner))
            answer = out[owner.record.key]
            assert answer is not None
            owner.packed.held_by(0)  # loads the holdings once
            word = packing.pending_word(answers.get(id(owner), []))
            if word is not None:
                for task_id in owner.packed.unstarted:
                    answer.setdefault(task_id, word)
            for task_id, (host, pid, pstart) in owner.packed.local.items():
                local = packing.local_answer(host, pid, pstart)
                if local is not None:
                    answer.setdefault(task_id, local)

    def _with_reasons(self, entries: list[QueryEntry]) -> list[QueryEntry]:
        """Plain `pending` entries with the reason a second, batched call gives (Grid Engine's
        `qstat -j`); adapters whose query already says why ask nothing."""
        waiting = sorted({job_id for job_id, _, state in entries if state == QUEUED}, key=lambda j: (len(j), j))
        commands = self.reason_commands(waiting) if waiting else []
        if not commands:
            return entries
        reasons: dict[str, str] = {}
        for command in commands:
            try:
                reasons.update(self.parse_reasons(run(command, transient=self.transient).stdout))
            except OnagerError:
                continue
        return [(job_id, indexes, reasons.get(job_id, state) if state == QUEUED else state)
                for job_id, indexes, state in entries]

    def _settle(self, records: Sequence[Any], owners: dict[str, Mapper],
                out: dict[str, dict[int, str] | None]) -> None:
        """Tasks whose latest attempt shows no end, or only `killed`: cache the end the query
        gave (`state.record_accounting`), and ask accounting ONCE (one batched call) for the
        started ones the scheduler no longer shows; each answer is cached, so asked once."""
        # (launch key, task) -> (record, attempt, its start)
        wanted: dict[tuple[str, int], tuple[Any, int, float | None]] = {}
        job_ids: set[str] = set()
        for record in records:
            answer = out.get(record.key)
            if answer is None:
                continue
            if len(answer) >= record.count and not any(
                    parse_answer(a)[0] in END_STATES for a in answer.values()):
                continue  # every task queued or running: nothing has ended unseen
            try:
                states = read_states(record.launch_dir)
                done = _accounted(record.launch_dir)
            except OnagerError:
                continue
            mapper = Mapper(record)
            for task_id, st in states.items():
                if st.start is None or not st.attempt or (st.end is not None and st.state != KILLED):
                    continue
                if (task_id, st.attempt) in done:
                    continue
                word = answer.get(task_id)
                if word is not None:
                    _cache(record.launch_dir, task_id, st.attempt, word, st.start, self._end_of(mapper, task_id))
                    continue
                wanted[(record.key, task_id)] = (record, st.attempt, st.start)
                job_ids.update(mapper.indexes([task_id]))
        if not wanted or self._no_accounting:
            return
        entries: list[QueryEntry] = []
        for command in self.accounting_commands(sorted(job_ids, key=lambda j: (len(j), j))):
            try:
                entries += self.parse_accounting(run(command, transient=self.transient).stdout)
            except OnagerError as exc:
                if "not found:" in str(exc) or "disabled" in str(exc):
                    self._no_accounting = True  # no accounting here: the files and the query decide
                    return
                continue
        for job_id, indexes, word in entries:
            owner = owners.get(job_id)
            if owner is None or word is None or parse_answer(word)[0] not in END_STATES:
                continue
            for index in indexes:
                for task_id in owner.task_ids(job_id, index):
                    hit = wanted.pop((owner.record.key, task_id), None)
                    if hit is None:
                        continue
                    record, attempt, started = hit
                    _cache(record.launch_dir, task_id, attempt, word, started, self._ended_at(job_id, index))
                    answer = out[record.key]
                    assert answer is not None
                    answer[task_id] = word

    def _query_output(self, job_ids: list[str]) -> str:
        env = dict(os.environ, **self.query_env) if self.query_env else None
        commands = self.query_commands(job_ids)
        for k, command in enumerate(commands):
            try:
                return run(command, retries=self.query_retries, transient=self.transient, env=env).stdout
            except OnagerError as exc:
                if k + 1 == len(commands) or not self.query_fallback(str(exc)):
                    raise
        raise AssertionError("unreachable")

    # ------------------------------------------------------------ cancel
    def cancel(self, record: Any, tasks: Tasklist, dry_run: bool = False) -> list[list[str]]:
        states = read_states(record.launch_dir)
        targets = [i for i in tasks if not (i in states and states[i].end is not None)]
        commands: list[list[str]] = []
        mapper = Mapper(record)
        if mapper.packed is not None and targets and mapper.packed.active() <= set(targets):
            # every task left of a --workers launch: the workers go, not only their current tasks
            for sub in mapper.submissions:
                commands += self.cancel_commands(str(sub["job_id"]), None)
        else:
            for job_id, indexes in mapper.indexes(targets).items():
                commands += self.cancel_commands(job_id, Tasklist.from_ids(indexes))
        if dry_run:
            return commands or [["# nothing to cancel:", f"tasks {tasks} of {record.key} have all finished"]]
        for task_id in targets:
            mark(record.launch_dir, task_id, "cancel")
        for command in commands:
            try:
                run(command, retries=self.cancel_retries, transient=self.transient)
            except OnagerError as exc:
                if not self.already_gone(str(exc)):
                    raise
        return commands

    def cancel_job_commands(self, job_id: str, tasks: Tasklist | None) -> list[list[str]]:
        if not re.fullmatch(r"\d+", str(job_id), re.ASCII):
            raise UsageError(f"bad {self.name} job id {job_id!r}: give the number {self.submit_program} printed")
        return self.cancel_commands(str(job_id), tasks)
