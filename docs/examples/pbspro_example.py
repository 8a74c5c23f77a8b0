"""EXAMPLE ONLY: a PBS Pro adapter for onager's array-scheduler core.

This file shows how a scheduler becomes an onager backend (docs/adding-a-backend.md).
It is not a built-in backend and is NOT claimed to work on a real PBS Pro: it has only
been run against the fake `qsub`/`qstat`/`qdel` of tests/test_adding_a_backend.py.
Everything that runs a command, retries, splits, records and maps indexes to tasks is
the core's (`onager.backends.array`); this file builds argument lists and parses output.
"""
from __future__ import annotations

import json
import os
import re

from onager.backends.array import ArrayBackend, QueryEntry, allocation, duration_seconds, hms_text, per_node
from onager.backends.base import QUEUED, STARTED, LaunchInfo, refuse_foreign_options
from onager.errors import OnagerError, UsageError
from onager.tasklist import Tasklist

#: launch options this adapter honours (the others are refused, as base.py does for every backend)
HONOURS = {"cpus", "cpus_per_task", "mem", "mem_per_task", "duration", "tasks_per_node",
           "max_tasks_per_node", "account", "queue", "extra"}
TRANSIENT = ("Connection refused", "cannot connect to server", "Resources temporarily unavailable")
_STATES = {"Q": QUEUED, "H": QUEUED, "W": QUEUED, "T": QUEUED, "S": QUEUED,
           "R": STARTED, "E": STARTED, "B": STARTED}


class PBSProExample(ArrayBackend):
    name = "pbsexample"
    index_variable = "PBS_ARRAY_INDEX"   # set by PBS in each subjob
    job_id_variable = "PBS_ARRAY_ID"     # "123[].server": the array job
    submit_program = "qsub"
    transient = TRANSIENT
    #: the largest subjob index (the server's max_array_size); larger ids are sent with offsets
    max_index = 10000

    def check_options(self) -> None:
        """Refuse what PBS cannot be asked for here, before a launch writes anything."""
        refuse_foreign_options(self.name, {k: v for k, v in self.options.items() if k not in HONOURS})
        if self.options.get("max_tasks") not in (None, ""):
            raise UsageError(f"{self.name} has no limit on tasks at once; drop --max-tasks")
        tasks_per_node, at_once = per_node(self.options)
        self.resources(at_once if tasks_per_node > 1 else 1)

    # ------------------------------------------------------ adapter pieces
    def resources(self, times: int) -> list[str]:
        cpus, mem, _ = allocation(self.options, times)
        select = f"select=1:ncpus={cpus or 1}" + (f":mem={mem}mb" if mem else "")
        args = ["-l", select]
        duration = self.options.get("duration")
        if duration not in (None, ""):
            seconds = duration_seconds(duration)
            if seconds is not None:
                args += ["-l", f"walltime={hms_text(seconds)}"]
        for key, flag in (("account", "-A"), ("queue", "-q")):
            if self.options.get(key) not in (None, ""):
                args += [flag, str(self.options[key])]
        return args

    def chunks(self, numbers: Tasklist) -> list[tuple[int, Tasklist]]:
        """`qsub -J` takes one range `A-B:S`: one submission per block, below max_index."""
        return [(offset, Tasklist([block])) for offset, part in numbers.split_below(self.max_index)
                for block in part.blocks]

    def array_text(self, indexes: Tasklist) -> str:
        a, b, s = indexes.blocks[0]
        return f"{a}-{b}:{s}"

    def submit_command(self, launch: LaunchInfo, script: str, resources: list[str],
                       offset: int, indexes: Tasklist) -> list[str]:
        logs = os.path.join(launch.logs_dir, "scheduler") + "/"
        extra = [str(x) for x in self.options.get("extra") or []]
        return ["qsub", "-N", launch.jobname[:15], "-o", logs, "-e", logs, *resources,
                "-J", self.array_text(indexes), "-v", f"ONAGER_TASK_OFFSET={offset}", *extra, script]

    def parse_job_id(self, out: str) -> str:
        return out.splitlines()[-1].split("[")[0].strip()  # "123[].server" -> "123"

    def query_commands(self, job_ids: list[str]) -> list[list[str]]:
        return [["qstat", "-t", "-F", "json", "-f", *[f"{j}[]" for j in job_ids]]]

    def parse_query(self, text: str) -> list[QueryEntry]:
        """`{"Jobs": {"123[4].server": {"job_state": "R"}, ...}}` -> (123, [4], running)."""
        try:
            jobs = json.loads(text or "{}").get("Jobs", {})
        except (ValueError, AttributeError) as exc:
            raise OnagerError(f"qstat -F json printed something that is not JSON ({exc})") from exc
        out: list[QueryEntry] = []
        for ident, info in jobs.items():
            match = re.fullmatch(r"(\d+)\[(\d+)\].*", ident)
            if match:  # subjobs only; the array's own line says nothing per task
                # X (expired), F (finished): ended, the state files decide
                out.append((match.group(1), [int(match.group(2))], _STATES.get(str(info.get("job_state")))))
        return out

    def cancel_commands(self, job_id: str, indexes: Tasklist | None) -> list[list[str]]:
        if indexes is None:
            return [["qdel", f"{job_id}[]"]]
        return [["qdel", *[f"{job_id}[{a}]" if a == b else f"{job_id}[{a}-{b}:{s}]"
                           for a, b, s in indexes.condensed().blocks]]]

    def already_gone(self, message: str) -> bool:
        return "Unknown Job Id" in message or "Job has finished" in message


BACKEND = PBSProExample
