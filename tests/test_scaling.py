"""Issue 17, item 6: no command is quadratic. The work `onager report` does per task and per
launch, counted (file opens, comparisons), never timed: benchmarks/scaling_bench.py times
every command at N and 10N tasks."""
from __future__ import annotations

import builtins
import json
import os
import time
from typing import Any

import pytest

from onager import launch as launchmod
from onager import prelaunch, report
from onager.index import JobIndex, LaunchRecord
from onager.layout import LaunchPaths

TASKS = 120


def _launch(job: str, failed_every: int = 0) -> str:
    """One more launch of `job` (all its tasks), recorded in the index, every task ended as the
    wrapper records it, with two log_result lines each; every `failed_every`-th task failed."""
    backend, info = launchmod.prepare(job, "local", {})
    paths = LaunchPaths(info.launch_dir)
    os.makedirs(paths.results_dir, exist_ok=True)
    now = time.time()
    for task in range(1, info.count + 1):
        code = 1 if failed_every and task % failed_every == 0 else 0
        how = "failed" if code else "done"
        open(paths.state(f"{task}.end@{now:.6f}@{code}@{now - 5:.6f}@1@{how}@"), "w").close()
        with open(paths.results(task), "w") as handle:
            for step in (1, 2):
                line = {"@time": now, "@attempt": 1, "step": step, "loss": 1.0 / (step + task)}
                handle.write(json.dumps(line) + "\n")
        with open(paths.log(task, "err"), "w") as handle:
            handle.write(f"task {task} says why\n")
    JobIndex().add(LaunchRecord(job, info.launch_id, "local", info.launch_dir, str(info.tasklist), info.count,
                                now, [], {}))
    return info.launch_dir


@pytest.fixture
def job(tmp_path, monkeypatch) -> str:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ONAGER_GLOBAL_CONFIG", str(tmp_path / "global.onagerconfig"))
    assert prelaunch.run(["+jobname", "big", "+command", "true", "+arg", "--a", *map(str, range(TASKS // 4)),
                          "+arg", "--b", "0", "1", "2", "3", "+q"]) == 0
    return "big"


def _count_opens(monkeypatch, suffix: str) -> dict[str, int]:
    """Opens of files whose name ends with `suffix`, by os.open and by open(), per name."""
    counts: dict[str, int] = {}
    real_os_open, real_open = os.open, builtins.open

    def os_open(path: Any, *args: Any, **kwargs: Any) -> int:
        if str(path).endswith(suffix):
            name = os.path.basename(str(path))
            counts[name] = counts.get(name, 0) + 1
        return real_os_open(path, *args, **kwargs)

    def py_open(path: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(path, (str, os.PathLike)) and str(path).endswith(suffix):
            name = os.path.basename(str(path))
            counts[name] = counts.get(name, 0) + 1
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", os_open)
    monkeypatch.setattr(builtins, "open", py_open)
    return counts


def test_report_reads_each_results_file_once(job, monkeypatch):
    """Metrics and learning curves come from one read of each task's results file (they were
    read twice: once for the metrics, once more for the curves)."""
    _launch(job)
    counts = _count_opens(monkeypatch, ".jsonl")
    data = report.gather(job)
    results = {name: n for name, n in counts.items() if name.split(".")[0].isdigit()}
    assert len(results) == TASKS
    assert max(results.values()) == 1, sorted(results.items(), key=lambda kv: -kv[1])[:3]
    assert all(t.metrics["loss"] == pytest.approx(1.0 / (2 + t.task_id)) for t in data.tasks)
    assert data.curves["loss"][7] == [(1.0, 1.0 / 8), (2.0, 1.0 / 9)]


def test_report_reads_stderr_of_the_failures_it_shows_only(job, monkeypatch):
    """Only the MAX_FAILURES failures the page shows have their stderr read, however many failed."""
    _launch(job, failed_every=2)
    monkeypatch.setattr(report, "MAX_FAILURES", 5)
    counts = _count_opens(monkeypatch, ".err")
    data = report.gather(job)
    assert sum(t.status == "failed" for t in data.tasks) == TASKS // 2
    assert [t.task_id for t, _ in data.failures] == [2, 4, 6, 8, 10]
    assert [tail for _, tail in data.failures][0] == "task 2 says why"
    assert sum(counts.values()) == 5


def test_report_provenance_is_not_launches_times_tasks(job, monkeypatch):
    """Which launches' provenance the page shows is one lookup per launch, not a scan of every
    task per launch (launches x tasks comparisons of launch directories)."""
    compared = [0]

    class Counted(str):
        def __eq__(self, other: object) -> bool:
            if type(other) is str:  # a task's launch directory against a launch's
                compared[0] += 1
            return str.__eq__(self, other)

        __hash__ = str.__hash__

    real = report.TaskInfo

    def counted_task(*args: Any, **kwargs: Any) -> Any:
        task = real(*args, **kwargs)
        task.launch_dir = Counted(task.launch_dir)
        return task

    for _ in range(4):
        last = _launch(job)
    monkeypatch.setattr(report, "TaskInfo", counted_task)
    data = report.gather(job)
    assert compared[0] <= 4, compared[0]  # one per launch at most; the scan made 3 x TASKS
    assert {t.launch_dir for t in data.tasks} == {last}
    assert [key for key, _ in data.provenance] == [f"{job}/4"]


def test_report_curves_from_one_read_are_those_of_the_file(job):
    """The curves gathered from the bytes read once are read_curves' of each file, blank lines,
    damaged lines and lines without a step (whose step is the line's position) included."""
    launch_dir = _launch(job)
    paths = LaunchPaths(launch_dir)
    with open(paths.results(3), "w") as handle:
        handle.write('\n{"loss": 0.5}\n{"loss": 0.25, "acc": 1}\n{"loss": \n  \n{"loss": 0.125}\n')
    with open(paths.results(4), "w") as handle:
        handle.write(" \n\n")
    data = report.gather(job)
    for task in (3, 4, 5):
        expected = report.read_curves(paths.results(task))
        got = {name: points[task] for name, points in data.curves.items() if task in points}
        assert got == expected
    assert data.curves["loss"][3] == [(2.0, 0.5), (3.0, 0.25), (6.0, 0.125)]
    assert data.tasks[2].metrics == {"loss": 0.125, "acc": 1}
    assert data.tasks[3].metrics == {}
