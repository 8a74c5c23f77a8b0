"""Grid Engine backend (SGE, Son of Grid Engine, UGE): one `qsub -t` per block of the tasklist.

`qsub -t` takes ONE range `A-B:S`, so a tasklist like `35-40:1,57,138-201:1` becomes three
array jobs; SGE limits the NUMBER of tasks per array (max_aj_tasks), not the index, so
task ids are used as they are (no offsets) and only a block longer than max_aj_tasks is
cut. Site names (parallel environment, memory and GPU resources, queue) come from
options or `onager config --write gridengine KEY VALUE`; with none configured, 0.1.3's
names are used (`-pe smp`, `-l vf=`, `-l gpus=`).

A task in `Eqw` (SGE could not start it) is reported as "error": `onager list` shows
it, and `--tasklist failed` relaunches it.
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from onager.backends.array import (
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
from onager.tasklist import Tasklist

DEFAULT_DURATION = "0-01:00:00"  # as slurm's default: an hour
DEFAULT_MAX_AJ_TASKS = 75000  # SGE's own default
TRANSIENT = ("unable to contact qmaster", "commlib error", "timed out", "temporarily unavailable")
SUBMIT_RETRIES = 3
# with nothing configured, 0.1.3's requests: `-pe smp N`, `-l vf=SIZE` (SGE's standard
# virtual_free), `-l gpus=N`; `onager config --write gridengine pe NAME` (or --pe) overrides
DEFAULT_NAMES = {"pe": "smp", "mem_resource": "vf", "gpu_resource": "gpus"}
DEBUG_MAX_SECONDS = 600  # 0.1.3: "Duration cannot exceed 10 minutes while in debug/test mode"
DEBUG_RESOURCE = "test"  # 0.1.3's test queue, asked for as `-l test`


hms = hms_text  # h_rt text: `H:MM:SS` (hours may exceed 24)
#: the job context variable (`qsub -ac`) holding a submission's token
TOKEN_VARIABLE = "ONAGER_TOKEN"
#: scheduling info (`qstat -j`) of a job that cannot start whatever else runs
NEVER_RUNS = ("cannot run in any queue", "no suitable queues", "cannot run because it exceeds limit")


def cut_block(block: tuple[int, int, int], most: int) -> list[tuple[int, int, int]]:
    """One (start, stop, step) block as pieces of at most `most` tasks (max_aj_tasks)."""
    a, b, s = block
    pieces = []
    while a <= b:
        end = min(b, a + (most - 1) * s)
        pieces.append((a, end, s))
        a = end + s
    return pieces


def sge_name(jobname: str) -> str:
    """SGE refuses job names that start with a digit ("not a valid object name")."""
    return f"onager_{jobname}" if jobname[:1].isdigit() else jobname


def sge_range(block: tuple[int, int, int]) -> str:
    a, b, s = block
    return str(a) if a == b else f"{a}-{b}:{s}"


class GridEngineBackend(ArrayBackend):
    name = "gridengine"
    index_variable = "SGE_TASK_ID"
    job_id_variable = "JOB_ID"
    submit_program = "qsub"
    transient = TRANSIENT
    submit_retries = SUBMIT_RETRIES
    OPTIONS: Sequence[Option] = (
        Option("pe", default="smp", help="gridengine: parallel environment for --cpus above 1 (qsub -pe PE N); "
                                         "default smp, as 0.1.3"),
        Option("mem_resource", default="vf", help="gridengine: resource that --mem sets (qsub -l NAME=SIZE), "
                                                  "e.g. h_vmem; default vf, as 0.1.3"),
        Option("gpu_resource", default="gpus", help="gridengine: resource that --gpus sets (qsub -l NAME=N), "
                                                    "e.g. gpu; default gpus, as 0.1.3"),
        Option("queue", help="gridengine: queue (qsub -q)"),
    )

    def __init__(self, options: dict[str, Any] | None = None):
        super().__init__(options)
        self._max_aj_tasks: int | None = None

    # ------------------------------------------------------------- helpers
    def max_aj_tasks(self) -> int:
        """max_aj_tasks of the cluster (`qconf -sconf`), read once; 0 there means no limit."""
        if self._max_aj_tasks is None:
            given = self.options.get("max_aj_tasks")
            if given not in (None, ""):
                self._max_aj_tasks = int(given)
            else:
                self._max_aj_tasks = cluster_setting(["qconf", "-sconf"], r"^max_aj_tasks\s+(\d+)",
                                                     DEFAULT_MAX_AJ_TASKS, retries=1, transient=TRANSIENT) or 10 ** 12
        return self._max_aj_tasks

    def _setting(self, key: str) -> str:
        """A site name (PE, resource): the option or config value, else 0.1.3's name."""
        value = self.options.get(key)
        return DEFAULT_NAMES[key] if value in (None, "") else str(value)

    def resources(self, times: int) -> list[str]:
        o = self.options
        for key, hint in (("partition", "--queue"), ("qos", "a --queue"), ("constraint", "-- -l FEATURE=1")):
            if o.get(key) not in (None, ""):
                raise UsageError(f"--{key} is a slurm option; for gridengine use {hint}")
        args: list[str] = []
        debug = bool(o.get("debug"))
        given = o.get("duration")
        seconds = duration_seconds(given or (hms(DEBUG_MAX_SECONDS) if debug else DEFAULT_DURATION))
        cpus, mem, gpus = allocation(o, times)
        slots = cpus or 1
        if debug:
            # 0.1.3's --debug/--test: one slot for at most 10 minutes, in its `test` queue
            if seconds is None or seconds > DEBUG_MAX_SECONDS:
                raise UsageError(f"--debug allows at most {hms(DEBUG_MAX_SECONDS)} on gridengine (got --duration "
                                 f"{given}): give a shorter --duration, or drop --debug")
            if slots > 1:
                raise UsageError(f"--debug takes one CPU on gridengine (got {slots}): drop --cpus, or drop --debug")
        if seconds is not None:
            args += ["-l", f"h_rt={hms(seconds)}"]
            warning = warning_seconds(o, seconds)
            if warning:
                # the soft limit: SGE sends SIGUSR1 at s_rt, the wrapper forwards it and records a
                # timeout when h_rt's SIGKILL follows (SIGKILL itself leaves the wrapper no word)
                args += ["-l", f"s_rt={hms(seconds - warning)}"]
        elif o.get("warning_signal") not in (None, "", 0, "0"):
            warning_seconds(o, None)  # refused: no time limit to warn of
        if slots > 1:
            args += ["-pe", self._setting("pe"), str(slots)]
        if mem is not None:
            # SGE counts memory per slot: --mem goes as given (0.1.3's `-l vf=`), a per-task
            # size is shared out over the slots so that the allocation gets mem-per-task x tasks
            per_slot = mem if o.get("mem") not in (None, "") else -(-mem // slots)
            args += ["-l", f"{self._setting('mem_resource')}={megabytes_text(per_slot)}"]
        if gpus:
            args += ["-l", f"{self._setting('gpu_resource')}={gpus.rpartition(':')[2]}"]
        if o.get("queue") not in (None, ""):
            args += ["-q", str(o["queue"])]
        elif debug and not gpus:
            args += ["-l", DEBUG_RESOURCE]
        if o.get("account") not in (None, ""):
            args += ["-A", str(o["account"])]
        hold = o.get("hold_jid") or o.get("dependency")
        if hold not in (None, ""):
            ids = [j for j in re.split(r"[,:\s]+", str(hold)) if j and not j.startswith("after")]
            args += ["-hold_jid", ",".join(ids)]
        return args

    # ------------------------------------------------------ adapter pieces
    def chunks(self, numbers: Tasklist) -> list[tuple[int, Tasklist]]:
        """`qsub -t` takes one range: one submission per block, cut at max_aj_tasks; no offsets."""
        most = self.max_aj_tasks()
        return [(0, Tasklist([piece])) for block in sorted(numbers.condensed().blocks)
                for piece in cut_block(block, most)]

    def array_text(self, indexes: Tasklist) -> str:
        return sge_range(indexes.blocks[0])

    def submit_command(self, launch: LaunchInfo, script: str, resources: list[str],
                       offset: int, indexes: Tasklist) -> list[str]:
        logs = launch.paths.scheduler_logs_dir + "/"
        command = ["qsub", "-terse", "-N", sge_name(launch.jobname), "-wd", launch.workdir, "-b", "n",
                   "-S", "/bin/bash", "-o", logs, "-e", logs, *resources]
        limit = positive(self.options, "max_tasks")
        if limit:
            command += ["-tc", str(limit)]
        extra = [str(x) for x in self.options.get("extra") or []]
        token = self.token(launch, offset + indexes.first)
        if token:
            command += ["-ac", f"{TOKEN_VARIABLE}={token}"]
        return [*command, "-t", self.array_text(indexes), *extra, script]

    def token(self, launch: LaunchInfo, number: int) -> str | None:
        """The submission's token, a job context variable (`qsub -ac ONAGER_TOKEN=...`)."""
        return submission_token(launch, number)

    def find_token_commands(self, launch: LaunchInfo, token: str) -> list[list[str]]:
        return [["qstat", "-j", sge_name(launch.jobname)]]  # every job of that name, with its context

    def parse_token(self, text: str, token: str) -> str | None:
        job_id, wanted = "", f"{TOKEN_VARIABLE}={token}"
        for line in text.splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "job_number":
                job_id = value.strip()
            elif key.strip() == "context" and job_id.isdigit() and wanted in [v.strip() for v in value.split(",")]:
                return job_id
        return None

    def reason_commands(self, job_ids: list[str]) -> list[list[str]]:
        # qstat -xml does not say why a job waits; qstat -j does (scheduling info), for all at once
        return [["qstat", "-j", ",".join(job_ids)]]

    def parse_reasons(self, text: str) -> dict[str, str]:
        return parse_scheduling_info(text)

    def accounting_commands(self, job_ids: list[str]) -> list[list[str]]:
        # qacct takes one job per -j (a second -j replaces the first): one call per array job
        return [["qacct", "-j", job_id] for job_id in job_ids]

    def parse_accounting(self, text: str) -> list[QueryEntry]:
        entries = parse_qacct(text)
        for job_id, task, when in qacct_end_times(text):
            self.note_end(job_id, task, when)
        return entries

    def parse_job_id(self, out: str) -> str:
        return out.splitlines()[-1].split(".")[0].strip()  # -terse: "id" or "id.1-9:1"

    def query_commands(self, job_ids: list[str]) -> list[list[str]]:
        import getpass
        return [["qstat", "-xml", "-u", getpass.getuser()]]

    def parse_query(self, text: str) -> list[QueryEntry]:
        return [(job_id, ids, state) for job_id, ids, state in parse_qstat_xml(text)]

    def cancel_commands(self, job_id: str, indexes: Tasklist | None) -> list[list[str]]:
        return qdel_commands(job_id, indexes)

    def already_gone(self, message: str) -> bool:
        return "does not exist" in message  # finished meanwhile: nothing left to delete


def qdel_commands(job_id: str, tasks: Tasklist | None) -> list[list[str]]:
    """`qdel J -t A-B:S` per block (qdel takes one range), or `qdel J` for the whole job."""
    if tasks is None:
        return [["qdel", job_id]]
    return [["qdel", job_id, "-t", block] for block in tasks.sge_blocks()]


def sge_state(code: str) -> str:
    """`Eqw`/`E` -> error; `qw`/`hqw` -> pending; `r`/`t`/`Rr`/`s`/`dr` -> running."""
    if "E" in code:
        return STUCK
    if any(c in code for c in "rtRsST"):
        return STARTED
    return QUEUED


def parse_qstat_xml(text: str) -> list[tuple[str, Tasklist, str]]:
    """(job id, task ids, state) of each `job_list` of `qstat -xml` (ranges like `3-9:3,57`)."""
    import xml.etree.ElementTree as ET
    try:
        root = ET.fromstring(text)
    except ET.ParseError as exc:
        raise OnagerError(f"qstat -xml printed something that is not XML ({exc})") from exc
    out = []
    for job in root.iter("job_list"):
        number = (job.findtext("JB_job_number") or "").strip()
        tasks = (job.findtext("tasks") or "").strip()
        code = (job.findtext("state") or "").strip()
        if not number or not tasks:
            continue
        try:
            ids = Tasklist.parse(tasks)
        except OnagerError:
            continue
        out.append((number, ids, sge_state(code)))
    return out


def _short(message: str) -> str:
    """A scheduling info line as a short reason (no quotes, at most 60 characters)."""
    text = " ".join(message.replace('"', "").split())
    return text if len(text) <= 60 else text[:57] + "..."


def parse_scheduling_info(text: str) -> dict[str, str]:
    """job id -> `pending (why)` or `blocked (why)` from `qstat -j` (its `scheduling info:`
    lines; continuation lines are indented). Blocked: SGE says it cannot run in any queue."""
    messages: dict[str, list[str]] = {}
    job_id, inside = "", False
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and not line[:1].isspace() and key.strip():
            inside = False
            if key.strip() == "job_number":
                job_id = value.strip()
            elif key.strip() == "scheduling info" and job_id:
                inside = True
                messages.setdefault(job_id, []).append(value.strip())
        elif inside and line.strip():
            messages.setdefault(job_id, []).append(line.strip())
    out = {}
    for job_id, lines in messages.items():
        lines = [m for m in lines if m and "Collecting of scheduler job information is turned off" not in m]
        if not lines:
            continue
        never = next((m for m in lines if any(n in m for n in NEVER_RUNS)), None)
        if never is not None:
            out[job_id] = f"{BLOCKED} ({_short(never)})"
        elif any("hold state" in m for m in lines):
            out[job_id] = f"{QUEUED} (hold)"
        else:
            out[job_id] = f"{QUEUED} ({_short(lines[0])})"
    return out


def qacct_word(fields: dict[str, str]) -> str | None:
    """The end word of one qacct record: `failed` (SGE's own failure code), `exit_status`,
    `maxvmem` against an h_vmem request in `category`."""
    failed = (fields.get("failed") or "0").split(":")[0].strip()
    status_text = (fields.get("exit_status") or "").split()
    if not failed.isdigit() or not status_text or not status_text[0].isdigit():
        return None
    code = int(status_text[0])
    if failed == "37":  # qmaster enforced h_rt, h_cpu, or h_vmem
        limit = re.search(r"h_vmem=([\d.]+[KMGT]?)", fields.get("category", ""), re.IGNORECASE)
        used = fields.get("maxvmem", "")
        if limit and used and _bytes(used) >= 0.95 * _bytes(limit.group(1)):
            return "oom (h_vmem)"
        return "timeout (h_rt)"
    if failed == "0":
        if code == 0:
            return "done"
        if 128 < code < 160:
            return f"killed (SIG{_signal_name(code - 128)})"
        return f"failed (exit_status={code})"
    if failed == "100" and 128 < code < 160:  # "assumedly after job": killed, qdel the likeliest
        return f"killed (SIG{_signal_name(code - 128)})"
    return f"failed (qacct-failed={failed})"


def _signal_name(number: int) -> str:
    import signal
    try:
        return signal.Signals(number).name.removeprefix("SIG")
    except ValueError:
        return str(number)


def _bytes(text: str) -> float:
    match = re.fullmatch(r"\s*([\d.]+)\s*([KMGT]?)B?\s*", text, re.IGNORECASE)
    if not match:
        return float("inf")
    return float(match.group(1)) * 1024 ** ("_KMGT".index(match.group(2).upper() or "_") if match.group(2) else 0)


def _qacct_records(text: str) -> list[dict[str, str]]:
    """The `key value` fields of each record of `qacct -j` (records split by `=====` lines)."""
    records = []
    for block in re.split(r"^=+\s*$", text, flags=re.M):
        fields: dict[str, str] = {}
        for line in block.splitlines():
            key, _, value = line.strip().partition(" ")
            if key:
                fields[key] = value.strip()
        records.append(fields)
    return records


def qacct_end_times(text: str) -> list[tuple[str, int, float]]:
    """(job id, task id, end_time as epoch seconds) of each record that has them."""
    out = []
    for fields in _qacct_records(text):
        job_id, task = fields.get("jobnumber", ""), fields.get("taskid", "")
        when = scheduler_time(fields.get("end_time", ""), "%a %b %d %H:%M:%S %Y")
        if job_id.isdigit() and task.isdigit() and when is not None:
            out.append((job_id, int(task), when))
    return out


def parse_qacct(text: str) -> list[QueryEntry]:
    """(job id, [task id], end word) per record of `qacct -j ID` (records split by `=====` lines),
    the latest first (a task rescheduled has a record per run, oldest first)."""
    out: list[QueryEntry] = []
    for fields in _qacct_records(text):
        job_id, task = fields.get("jobnumber", ""), fields.get("taskid", "")
        if not job_id.isdigit() or not task.isdigit():
            continue
        word = qacct_word(fields)
        if word is not None:
            out.append((job_id, [int(task)], word))
    return out[::-1]


BACKEND = GridEngineBackend
