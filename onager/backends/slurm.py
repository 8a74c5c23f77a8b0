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

import argparse
import bisect
import getpass
import json
import os
import re
import shlex
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

from onager.backends.base import (QUEUED, STARTED, STUCK, Backend, LaunchInfo, Option, add_options,
                                  cluster_setting, run)
from onager.errors import OnagerError, UsageError
from onager.fsutil import atomic_write, executable_mode
from onager.state import mark, read_states
from onager.tasklist import Tasklist

DEFAULT_DURATION = "0-01:00:00"
DEFAULT_CPUS = 1
DEFAULT_MEM = "2"          # GB, as in 0.1.3
DEFAULT_MAX_ARRAY_SIZE = 1001  # Slurm's own default
DEBUG_MAX_SECONDS = 2 * 3600  # 0.1.3: "Duration cannot exceed 2 hours while in debug/test mode"
SCHEDULER_FILE = "scheduler.json"
GROUPS_FILE = "groups.txt"
NODE_SCRIPT = "node.sh"
TRANSIENT = ("Socket timed out", "Resource temporarily unavailable", "temporarily unable",
             "Unable to contact slurm controller", "Connection timed out", "Connection refused")
SUBMIT_RETRIES = 3
SQUEUE_IDS_MAX = 2000  # beyond this many job ids, ask for the user's jobs and filter

# ------------------------------------------------------------------ values
_MEM = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)i?B?\s*", re.IGNORECASE | re.ASCII)
_UNITS = "KMGT"
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


def duration_seconds(value: Any) -> Optional[int]:
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


def positive(options: Dict[str, Any], key: str, default: Optional[int] = None) -> Optional[int]:
    value = options.get(key)
    if value in (None, ""):
        return default
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise UsageError(f"bad --{key.replace('_', '-')} {value!r}: give a whole number")
    if number < 1:
        raise UsageError(f"--{key.replace('_', '-')} must be at least 1 (got {number})")
    return number


def gpu_count(options: Dict[str, Any]) -> Optional[str]:
    """`--gpus 2` or `--gpus a100:2` (a GPU type and a count) for a scheduler."""
    value = options.get("gpus")
    if value in (None, "", 0, "0"):
        return None
    text = str(value).strip()
    if not re.fullmatch(r"([A-Za-z0-9_.-]+:)?\d+", text, re.ASCII) or text.endswith(":0"):
        raise UsageError(f"bad --gpus {value!r} for a cluster: give a count per task like 2 (or type:count like a100:2)")
    return text


def megabytes_text(megabytes: int) -> str:
    """The scheduler's size text of a number of MB: whole G when it is one, else M."""
    return f"{megabytes // 1024}G" if megabytes % 1024 == 0 else f"{megabytes}M"


def _one_of(options: Dict[str, Any], whole: str, each: str) -> None:
    if options.get(whole) not in (None, "") and options.get(each) not in (None, ""):
        raise UsageError(f"--{whole} (for the whole allocation) and --{each.replace('_', '-')} (for each task) "
                         f"both given (one may come from onager config --read): keep one")


def allocation(options: Dict[str, Any], at_once: int,
               default_mem: Optional[str] = None) -> Tuple[Optional[int], Optional[int], Optional[str]]:
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
    mem: Optional[int] = None
    if options.get("mem") not in (None, ""):
        mem = mem_megabytes(options["mem"])
    elif options.get("mem_per_task") not in (None, ""):
        try:
            mem = mem_megabytes(options["mem_per_task"]) * at_once
        except UsageError:
            raise UsageError(f"bad --mem-per-task {options['mem_per_task']!r}: give a size like 4G, 500M "
                             "or a number of GB like 2")
    elif default_mem is not None:
        mem = mem_megabytes(default_mem)
    gpus = gpu_count(options)
    if gpus is None and options.get("gpus_per_task") not in (None, ""):
        each = positive(options, "gpus_per_task") or 1
        gpus = str(each * at_once)
    return cpus, mem, gpus


# ------------------------------------------------------------------ groups
def group_plan(tasks: Tasklist, per_node: int) -> List[List[int]]:
    """Task ids of each group, in launch order: group g (1-based) is the g-th slice of T ids."""
    groups: List[List[int]] = []
    current: List[int] = []
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
    atomic_write(os.path.join(launch_dir, GROUPS_FILE), text)
    return len(groups)


def read_groups(launch_dir: str) -> List[List[int]]:
    try:
        with open(os.path.join(launch_dir, GROUPS_FILE)) as handle:
            return [[int(x) for x in line.split()] for line in handle]
    except OSError:
        return []


def node_script_text(launch_dir: str, width: int, at_once: int) -> str:
    """bash that runs one group's tasks through wrapper.sh, at most `at_once` at a time.

    A task marked cancelled before its turn is skipped; the script exits 1 if any task failed.
    """
    q = shlex.quote
    return f"""#!/bin/bash
# onager: runs one group of tasks of this launch inside one allocation
D=${{ONAGER_REMOTE_LAUNCH_DIR:-{q(launch_dir)}}}
if [ -n "${{1:-}}" ]; then g=$1; else g=${{SLURM_ARRAY_TASK_ID:-${{SGE_TASK_ID:-}}}}; fi
case $g in ''|*[!0-9]*) echo "onager node.sh: no group id (got '$g')" >&2; exit 2;; esac
[ -n "${{1:-}}" ] || g=$(( g + ${{ONAGER_TASK_OFFSET:-0}} ))
ids=$(dd if="$D/{GROUPS_FILE}" bs={width} skip=$(( g - 1 )) count=1 2>/dev/null)
[ -n "${{ids// /}}" ] || {{ echo "onager node.sh: group $g is not in $D" >&2; exit 2; }}
rc=0
for id in $ids; do
    if compgen -G "$D/state/$id.cancel@*" >/dev/null; then continue; fi
    while [ "$(jobs -rp | wc -l)" -ge {at_once} ]; do wait -n || rc=1; done
    bash "$D/wrapper.sh" "$id" &
done
while [ "$(jobs -rp | wc -l)" -gt 0 ]; do wait -n || rc=1; done
wait
exit $rc
"""


def write_node_script(launch: LaunchInfo, per_node: int, at_once: int) -> str:
    path = os.path.join(launch.launch_dir, NODE_SCRIPT)
    atomic_write(path, node_script_text(launch.launch_dir, groups_width(launch.tasklist, per_node), at_once))
    os.chmod(path, executable_mode())
    return path


def per_node(options: Dict[str, Any]) -> Tuple[int, int]:
    """(tasks per allocation, tasks at once in it); (1, 1) = one task per array element."""
    tasks = positive(options, "tasks_per_node", 1) or 1
    at_once = positive(options, "max_tasks_per_node", tasks) or tasks
    return tasks, min(at_once, tasks)


# ------------------------------------------------------------ scheduler.json
def save_submissions(launch_dir: str, backend: str, groups: int, submissions: List[Dict[str, Any]]) -> None:
    atomic_write(os.path.join(launch_dir, SCHEDULER_FILE),
                 json.dumps({"backend": backend, "tasks_per_node": groups, "submissions": submissions},
                            indent=1))


def load_submissions(record: Any) -> Tuple[int, List[Dict[str, Any]]]:
    """(tasks per node, [{job_id, offset, array}]) of a launch; old records: one array, offset 0."""
    try:
        with open(os.path.join(record.launch_dir, SCHEDULER_FILE)) as handle:
            meta = json.load(handle)
        return int(meta.get("tasks_per_node", 1)), list(meta["submissions"])
    except (OSError, ValueError, KeyError, TypeError):
        return 1, [{"job_id": j, "offset": 0, "array": record.tasklist} for j in record.job_ids]


class _Mapper:
    """Scheduler index of a submission <-> task ids of the launch (offsets and groups)."""

    def __init__(self, record: Any):
        self.record = record
        self.per_node, self.submissions = load_submissions(record)
        self.groups = read_groups(record.launch_dir) if self.per_node > 1 else []
        self.offsets = {str(s["job_id"]): int(s.get("offset", 0)) for s in self.submissions}

    def task_ids(self, job_id: str, index: int) -> List[int]:
        number = index + self.offsets.get(job_id, 0)
        if self.per_node > 1:
            return self.groups[number - 1] if 0 < number <= len(self.groups) else []
        return [number]

    def indexes(self, tasks: Iterable[int]) -> Dict[str, List[int]]:
        """job id -> scheduler indexes that hold exactly these tasks (whole groups only)."""
        numbers: Iterable[int]
        if self.per_node > 1:
            wanted = set(tasks)
            numbers = [g for g, ids in enumerate(self.groups, 1) if ids and all(i in wanted for i in ids)]
        else:
            numbers = tasks
        # submissions cover disjoint spans of numbers (Slurm: offset windows; SGE: one block each)
        spans = []
        for sub in self.submissions:
            offset, array = int(sub.get("offset", 0)), Tasklist.parse(str(sub["array"]))
            spans.append((offset + array.first, offset + array.last, offset, array, str(sub["job_id"])))
        spans.sort(key=lambda span: span[0])
        starts = [span[0] for span in spans]
        out: Dict[str, List[int]] = {}
        for number in numbers:
            k = bisect.bisect_right(starts, number) - 1
            if k < 0 or number > spans[k][1]:
                continue
            _, _, offset, array, job_id = spans[k]
            if number - offset in array:
                out.setdefault(job_id, []).append(number - offset)
        return out


# ------------------------------------------------------------------ backend
class SlurmBackend(Backend):
    name = "slurm"
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
    config_keys: Sequence[str] = ()  # every setting is a launch option, so config defaults apply

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        add_options(parser, cls.OPTIONS)

    def __init__(self, options: Optional[Dict[str, Any]] = None):
        super().__init__(options)
        self._max_array_size: Optional[int] = None

    def check_options(self) -> None:
        """Every option, config defaults included, checked before a launch writes anything."""
        self._check_foreign()
        super().check_options()
        tasks_per_node, at_once = per_node(self.options)
        self._resources(at_once if tasks_per_node > 1 else 1)
        positive(self.options, "max_tasks")
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

    def _resources(self, times: int) -> List[str]:
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
        for key, flag, value in (("partition", "-p", partition), ("account", "-A", o.get("account")),
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

    def check_options(self) -> None:
        self._check_foreign()
        tasks_per_node, at_once = per_node(self.options)
        self._resources(at_once if tasks_per_node > 1 else 1)

    def plan(self, launch: LaunchInfo) -> Tuple[int, int, List[Tuple[int, Tasklist]]]:
        """(tasks per node, at once, [(offset, indexes)]): what each sbatch covers."""
        self._check_foreign()
        tasks_per_node, at_once = per_node(self.options)
        if tasks_per_node > 1:
            numbers = Tasklist.range(1, group_count(launch.tasklist, tasks_per_node))
        else:
            numbers = launch.tasklist
        return tasks_per_node, at_once, numbers.split_below(self.max_array_size() - 1)

    def submit_commands(self, launch: LaunchInfo) -> List[List[str]]:
        tasks_per_node, at_once, chunks = self.plan(launch)
        scheduler_logs = os.path.join(launch.logs_dir, "scheduler").replace("%", "%%")
        script = launch.wrapper if tasks_per_node == 1 else os.path.join(launch.launch_dir, NODE_SCRIPT)
        common = ["sbatch", "--parsable", "-J", launch.jobname, f"--chdir={launch.workdir}",
                  "-o", f"{scheduler_logs}/%x_%A_%a.out", "-e", f"{scheduler_logs}/%x_%A_%a.err",
                  *self._resources(at_once if tasks_per_node > 1 else 1)]
        limit = positive(self.options, "max_tasks")
        extra = [str(x) for x in self.options.get("extra") or []]
        commands = []
        for offset, indexes in chunks:
            spec = indexes.slurm() + (f"%{limit}" if limit else "")
            commands.append([*common, f"--array={spec}", f"--export=ALL,ONAGER_TASK_OFFSET={offset}",
                             *extra, script])
        return commands

    # -------------------------------------------------------------- submit
    def submit(self, launch: LaunchInfo) -> List[str]:
        tasks_per_node, at_once, chunks = self.plan(launch)
        commands = self.submit_commands(launch)
        os.makedirs(os.path.join(launch.logs_dir, "scheduler"), exist_ok=True)
        if tasks_per_node > 1:
            write_groups(launch.launch_dir, launch.tasklist, tasks_per_node)
            write_node_script(launch, tasks_per_node, at_once)
        job_ids: List[str] = []
        submissions: List[Dict[str, Any]] = []
        try:
            for (offset, indexes), command in zip(chunks, commands):
                out = run(command, retries=SUBMIT_RETRIES, transient=TRANSIENT).stdout.strip()
                job_id = out.splitlines()[-1].split(";")[0].strip() if out else ""
                if not job_id.isdigit():
                    raise OnagerError(f"sbatch printed no job id (got {out!r}); command: {shlex.join(command)}")
                job_ids.append(job_id)
                submissions.append({"job_id": job_id, "offset": offset, "array": str(indexes)})
        except BaseException:
            if job_ids:  # a split launch is all or nothing
                try:
                    run(["scancel", *job_ids], retries=2, transient=TRANSIENT)
                except OnagerError:
                    pass
            raise
        save_submissions(launch.launch_dir, self.name, tasks_per_node, submissions)
        return job_ids

    # --------------------------------------------------------------- query
    def query(self, records: Sequence[Any]) -> Dict[str, Optional[Dict[int, str]]]:
        owners: Dict[str, Tuple[Any, _Mapper]] = {}
        out: Dict[str, Optional[Dict[int, str]]] = {}
        for record in records:
            mapper = _Mapper(record)
            out[record.key] = {}
            for sub in mapper.submissions:
                owners[str(sub["job_id"])] = (record, mapper)
        if not owners:
            return out
        try:
            lines = self._squeue(sorted(owners, key=lambda j: (len(j), j)))
        except OnagerError:
            return {r.key: None for r in records}
        for line in lines:
            parsed = parse_squeue_line(line)
            if parsed is None:
                continue
            job_id, indexes, state = parsed
            if job_id not in owners or state is None:
                continue
            record, mapper = owners[job_id]
            answer = out[record.key]
            assert answer is not None
            for index in indexes:
                for task_id in mapper.task_ids(job_id, index):
                    answer[task_id] = state
        return out

    def _squeue(self, job_ids: List[str]) -> List[str]:
        fmt = "%i|%t|%r"
        # squeue cuts a pending array's index list at 64 characters ("123_[1,3,...]") unless
        # told not to: cut lists would make queued tasks look lost
        env = dict(os.environ, SLURM_BITSTR_LEN="0")
        if len(job_ids) <= SQUEUE_IDS_MAX:
            try:
                return run(["squeue", "-h", "-j", ",".join(job_ids), "-o", fmt], retries=2,
                           transient=TRANSIENT, env=env).stdout.splitlines()
            except OnagerError as exc:
                if "Invalid job id" not in str(exc):
                    raise
                # every id is gone from the controller (squeue fails only then): ask by user
        return run(["squeue", "-h", "-u", getpass.getuser(), "-o", fmt], retries=2,
                   transient=TRANSIENT, env=env).stdout.splitlines()

    # -------------------------------------------------------------- cancel
    def cancel(self, record: Any, tasks: Tasklist, dry_run: bool = False) -> List[List[str]]:
        states = read_states(record.launch_dir)
        targets = [i for i in tasks if not (i in states and states[i].end is not None)]
        mapper = _Mapper(record)
        commands = [scancel_command(job_id, Tasklist.from_ids(indexes))
                    for job_id, indexes in mapper.indexes(targets).items()]
        if dry_run:
            return commands or [["# nothing to cancel:", f"tasks {tasks} of {record.key} have all finished"]]
        for task_id in targets:
            mark(record.launch_dir, task_id, "cancel")
        for command in commands:
            run(command, retries=2, transient=TRANSIENT)
        return commands

    def cancel_job_commands(self, job_id: str, tasks: Optional[Tasklist]) -> List[List[str]]:
        if not re.fullmatch(r"\d+", str(job_id), re.ASCII):
            raise UsageError(f"bad slurm job id {job_id!r}: give the number sbatch printed")
        return [scancel_command(str(job_id), tasks)]


def scancel_command(job_id: str, tasks: Optional[Tasklist]) -> List[str]:
    """`scancel J`, `scancel J_5` or `scancel J_[1-3,5]`: one argument, whatever the count."""
    if tasks is None:
        return ["scancel", job_id]
    if len(tasks.blocks) == 1 and tasks.blocks[0][0] == tasks.blocks[0][1]:
        return ["scancel", f"{job_id}_{tasks.blocks[0][0]}"]
    return ["scancel", f"{job_id}_[{tasks.slurm()}]"]


_RUNNING = {"R", "CG", "CF", "S", "ST", "SI", "SO", "RS", "RD"}
_WAITING = {"PD", "RQ", "RF", "RH"}
_STUCK_REASONS = ("launch failed requeued held", "launch_failed_requeued_held", "DependencyNeverSatisfied")


def parse_squeue_line(line: str) -> Optional[Tuple[str, Iterable[int], Optional[str]]]:
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
        state: Optional[str] = STUCK if any(r in reason for r in _STUCK_REASONS) else QUEUED
    elif code in _RUNNING:
        state = STARTED
    elif code == "SE":
        state = STUCK
    else:
        state = None  # ended: the state files decide
    return job_id, indexes, state


BACKEND = SlurmBackend
