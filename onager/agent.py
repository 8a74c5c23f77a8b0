"""`launch --agents K` (`plan`: the K agent tasks a launch freezes) and the tuning agent: the
command of each agent task of such a launch (run as
`python -m onager.agent` by wrapper.sh, so the agent itself has a row, a log and an end).

It loops: under the ask lock, take a trial left unfinished by an earlier launch or ask the
study for a new one (until N trials exist); run it as task `number + 1` through the launch's
wrapper.sh (the record handed over as a pool does, so claims, attempts and end states apply);
tell the study the metric the task logged, or that it failed or was pruned.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from onager import tune
from onager.errors import UsageError
from onager.layout import LaunchPaths
from onager.state import CANCELLED, DONE, KILLED, LOST, PREEMPTED, read_states
from onager.sweep import param_key
from onager.wrapper import task_record

#: end states that say nothing about the trial's values: the trial stays open, and the next
#: launch runs it again
INTERRUPTED = (KILLED, CANCELLED, PREEMPTED, LOST)


class Agent:
    def __init__(self, launch_dir: str, task_id: int) -> None:
        data = tune.read_launch(launch_dir)
        if data is None:
            raise SystemExit(f"onager agent: {launch_dir} is not a tuning launch (no {tune.SPEC_NAME})")
        self.launch_dir = launch_dir
        self.data = data
        self.jobname = os.environ.get("ONAGER_JOB_NAME", "")
        self.space = tune.Space(data)
        self.slot = task_id - data["trials"]
        self.journal = tune.journal_of(launch_dir, data)
        os.makedirs(os.path.dirname(self.journal), exist_ok=True)
        fingerprint = data["fingerprint"]
        first = tune.open_study(self.journal, data["direction"], fingerprint)
        seed = data["seed"] + 1_000_003 * (self.slot - 1) + len(first.get_trials(deepcopy=False))
        self.study = tune.open_study(self.journal, data["direction"], fingerprint,
                                     tune.make_sampler(data["sampler"], seed))
        self.lock = tune.AskLock(os.path.join(os.path.dirname(self.journal), "ask.lock"))
        self.stopping = False

    def next_trial(self) -> tuple[int, dict[str, Any]] | None:
        """(trial number, values) of the next trial this agent runs, or None: none left."""
        with self.lock:
            taken = os.path.join(self.launch_dir, tune.TUNE_DIR, "taken")
            os.makedirs(taken, exist_ok=True)
            trials = {t.number: t for t in self.study.get_trials(deepcopy=False)}
            for task_id in self.data.get("rerun", []):
                try:
                    os.close(os.open(os.path.join(taken, str(task_id)), os.O_WRONLY | os.O_CREAT | os.O_EXCL))
                except FileExistsError:
                    continue
                old = trials.get(task_id - 1)
                if old is not None and len(old.params) == len(self.space.params):
                    return old.number, dict(old.params)
            if len(trials) >= self.data["trials"]:
                return None
            trial = self.study.ask()
            self.space.suggest(trial)
            return trial.number, dict(trial.params)

    def run_trial(self, number: int, values: dict[str, Any]) -> None:
        task_id = number + 1
        paths = LaunchPaths(self.launch_dir)
        command, tag, params = self.space.task(task_id, values, self.jobname)
        row = json.JSONEncoder(ensure_ascii=False).encode([task_id, command, tag, params]) + "\n"
        fd = os.open(paths.tasks_jsonl, os.O_WRONLY | os.O_APPEND)
        try:
            os.write(fd, row.encode("utf-8"))  # one O_APPEND write: `list` sees the row whole or not at all
        finally:
            os.close(fd)
        env_params = {param_key(k).upper(): v if isinstance(v, str) else json.dumps(v, ensure_ascii=False)
                      for k, v in params.items()}
        env = {k: v for k, v in os.environ.items() if not k.startswith("ONAGER_PARAM_")}
        env.update(ONAGER_RECORD=task_record(task_id, command, tag, env_params), ONAGER_TUNE_JOURNAL=self.journal,
                   ONAGER_TUNE_TRIAL=str(number), ONAGER_TUNE_METRIC=self.data["metric"])
        print(f"onager agent {self.slot}: trial {task_id}: {command}", flush=True)
        subprocess.run(["bash", paths.wrapper, str(task_id)], env=env, stdin=subprocess.DEVNULL, check=False)
        self.tell(number, task_id)

    def tell(self, number: int, task_id: int) -> None:
        from optuna.trial import TrialState
        st = read_states(self.launch_dir).get(task_id)
        if st is None or st.end is None or st.state in INTERRUPTED or self.stopping:
            why = "did not end" if st is None or st.end is None else f"ended {st.state}"
            print(f"onager agent {self.slot}: trial {task_id} {why}: left open for the next launch", flush=True)
            return
        marker = tune.pruned_marker(self.launch_dir, task_id)
        try:
            if os.path.exists(marker):
                mark_pruned(self.launch_dir, task_id, st.attempt)
                self.study.tell(number, state=TrialState.PRUNED)
                outcome = "pruned"
            elif st.state == DONE:
                value = tune.last_metric(self.launch_dir, task_id, st.attempt, self.data["metric"])
                if value is None:
                    self.study.tell(number, state=TrialState.FAIL)
                    outcome = f"failed: it logged no number named {self.data['metric']!r} with onager.log_result"
                else:
                    self.study.tell(number, value)
                    outcome = f"{self.data['metric']}={value}"
            else:
                self.study.tell(number, state=TrialState.FAIL)
                outcome = f"failed ({st.state})"
        except (ValueError, RuntimeError) as exc:  # told already (another agent, a rerun)
            outcome = f"not told: {exc}"
        print(f"onager agent {self.slot}: trial {task_id}: {outcome}", flush=True)

    def run(self) -> int:
        def stop(signum: int, frame: Any) -> None:
            self.stopping = True
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, stop)
        while not self.stopping:
            picked = self.next_trial()
            if picked is None:
                break
            self.run_trial(*picked)
        return 143 if self.stopping else 0


# ----------------------------------------------------------------- launch side
@dataclass
class Plan:
    """What `launch --agents K` freezes into the launch directory."""

    spec: dict[str, Any]
    agents: int
    journal: str | None          # an earlier launch's study, or None: a new one in this launch
    rerun: list[int]             # trial task ids asked earlier whose attempt never ended
    done: int                    # trials finished before this launch

    def entries(self, python: str = sys.executable) -> list[Any]:
        """The launch's frozen tasks: K agents, ids N+1..N+K."""
        import shlex

        from onager.jobfile import JobEntry
        command = f"{shlex.quote(python)} -m onager.agent"
        n = self.spec["trials"]
        return [JobEntry(n + k, command, "", {"agent": k}) for k in range(1, self.agents + 1)]

    def write(self, launch_dir: str) -> None:
        """`tune.json` in the (build) launch directory: the spec, where the study is, the agents."""
        from onager.fsutil import atomic_write
        os.makedirs(os.path.join(launch_dir, tune.TUNE_DIR), exist_ok=True)
        n = self.spec["trials"]
        data = {**self.spec, "journal": self.journal, "agents": [n + 1, n + self.agents], "rerun": self.rerun,
                "fingerprint": tune.Space(self.spec).fingerprint()}
        atomic_write(os.path.join(launch_dir, tune.SPEC_NAME), json.dumps(data, indent=1, sort_keys=True) + "\n")


def plan(jobname: str, jobfile: str | None, options: dict[str, Any], tasklist: str | None,
         command: str | None, root: str = ".") -> Plan:
    """Check `--agents K` and find the study to continue; raises UsageError before any write."""
    from onager.index import JobIndex
    from onager.jobfile import jobfile_path
    agents = options.get("agents")
    if not isinstance(agents, int) or isinstance(agents, bool) or agents < 1:
        raise UsageError(f"--agents needs a positive number of agents, got {agents!r}")
    if tasklist is not None or command is not None:
        raise UsageError("--agents runs the trials of a +tune job: drop --tasklist/--command "
                         "(the agents ask for the trials still to run)")
    path = jobfile_path(jobname, jobfile)
    spec = tune.read_spec(path)
    if spec is None:
        raise UsageError(f"job {jobname!r} has no search to tune ({tune.spec_path(path)} is missing): prelaunch it "
                         "with +tune N +metric min:NAME, or launch without --agents")
    tune.require_optuna(spec["sampler"])
    fingerprint = tune.Space(spec).fingerprint()
    journal = None
    for record in reversed(JobIndex(root).for_job(jobname)):
        data = tune.read_launch(record.launch_dir)
        if data is not None and data.get("fingerprint") == fingerprint:
            candidate = tune.journal_of(record.launch_dir, data)
            if os.path.exists(candidate):
                journal = candidate
                break
    trials = spec["trials"]
    if journal is None:
        return Plan(spec, min(agents, trials), None, [], 0)
    from optuna.trial import TrialState
    optuna = tune.require_optuna()
    study = optuna.load_study(study_name=tune.STUDY_NAME, storage=tune.storage(journal))  # reads, writes nothing
    asked = study.get_trials(deepcopy=False)
    running = [t.number + 1 for t in asked if t.state == TrialState.RUNNING]
    rerun: list[int] = []
    if running:
        from onager.status import ACTIVE, job_task_statuses
        statuses = job_task_statuses(jobname, root)
        rerun = [i for i in running if statuses.get(i, ("lost", None))[0] not in ACTIVE]
    finished = sum(1 for t in asked if t.state.is_finished())
    left = trials - len(asked) + len(rerun)
    if left <= 0:
        raise UsageError(f"the search of job {jobname!r} has asked all its {trials} trials ({finished} finished, "
                         f"{len(running) - len(rerun)} running): prelaunch it again with a larger +tune N to go on")
    return Plan(spec, min(agents, left), journal, rerun, finished)


def trial_entries(jobname: str, jobfile: str | None, entries: Iterator[Any], root: str = ".") -> Iterator[Any]:
    """A relaunch of chosen tasks (`--tasklist failed`) of a +tune job, without --agents: each
    trial runs again with the values its agent gave it (its latest row), not the jobfile's
    random placeholder of the same id. The study is not told (a plain task)."""
    from onager.index import JobIndex
    from onager.jobfile import JobEntry, jobfile_path
    from onager.layout import iter_launch_tasks
    spec = tune.read_spec(jobfile_path(jobname, jobfile))
    trials: dict[int, Any] = {}
    if spec is not None:
        for record in JobIndex(root).for_job(jobname):
            data = tune.read_launch(record.launch_dir)
            if data is None or not data.get("agents"):
                continue
            first = data["agents"][0]
            for task_id, command, tag, params in iter_launch_tasks(record.launch_dir):
                if task_id < first:
                    trials[task_id] = JobEntry(task_id, command, tag, params)
    for entry in entries:
        yield trials.get(entry.id, entry)


def mark_pruned(launch_dir: str, task_id: int, attempt: int) -> None:
    """Rename the attempt's end name to the pruned end state (`failed` + reason `pruned` until
    state.END_STATES has `pruned`): one atomic rename, the name still whole."""
    state_dir = LaunchPaths(launch_dir).state_dir
    prefix = f"{task_id}.end@"
    for name in os.listdir(state_dir):
        parts = name.split("@")
        if name.startswith(prefix) and len(parts) == 7 and parts[4] == str(attempt):
            parts[5], parts[6] = tune.pruned_state(), tune.PRUNED
            os.rename(os.path.join(state_dir, name), os.path.join(state_dir, "@".join(parts)))
            return


def main() -> int:
    launch_dir = os.environ.get("ONAGER_LAUNCH_DIR")
    task_id = os.environ.get("ONAGER_TASK_ID", "")
    if not launch_dir or not task_id.isdigit():
        print("onager agent: run by wrapper.sh of a tuning launch (ONAGER_LAUNCH_DIR, ONAGER_TASK_ID unset)",
              file=sys.stderr)
        return 2
    return Agent(launch_dir, int(task_id)).run()


if __name__ == "__main__":
    sys.exit(main())
