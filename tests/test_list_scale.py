"""Issue 17: `onager list` in constant memory, `--summary` without rows, and the same output.

- the table, --json and --csv stream their rows: the peak memory of `list` does not grow
  with the number of tasks (measured in a child with /usr/bin/time);
- `--summary` counts from the index and one listing of state/ (tasks.jsonl is not read),
  and counts exactly what the rows would;
- state names as the wrapper writes them are read by a fast path that gives the same
  TaskStates as the general reading;
- a launch split into several arrays names its own array's job id on each row;
- and the output keeps its bytes: the table (tabulate's layout, above FAST_TABLE_ROWS the
  column layout), --json (json.dump's indent=1) and --csv are what the rows made before.
"""
from __future__ import annotations

import csv
import io
import json
import os
import random
import shutil
import subprocess
import sys
import tracemalloc
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support import ROOT, call_onager

from onager import listing, state, status
from onager.index import JobIndex, LaunchRecord
from onager.jobfile import iter_jobfile
from onager.launch import write_tasks
from onager.tasklist import Tasklist

TIME = "/usr/bin/time"


def call(*argv: str) -> tuple[int, str, str]:
    return call_onager(*argv, errors="surrogateescape")


def fabricate(root, jobname: str, values: list[str], job_ids: list[str] | None = None,
              backend: str = "local") -> str:
    """A launch of `onager prelaunch +arg --a VALUES +arg --b 0..9 +tag`, built and indexed
    without running anything (no state names: every task is still to run); its directory."""
    code, _, err = call("prelaunch", "+jobname", jobname, "+command", "python train.py", "+arg", "--a", *values,
                        "+arg", "--b", *map(str, range(10)), "+tag", "+q")
    assert code == 0, err
    launch_dir = os.path.join(str(root), ".onager", "launches", jobname, "1")
    os.makedirs(os.path.join(launch_dir, "state"))
    os.makedirs(os.path.join(launch_dir, "logs"))
    count, _ = write_tasks(launch_dir, iter_jobfile(os.path.join(str(root), ".onager", "scripts", jobname,
                                                                 "jobs.json")))
    with open(os.path.join(launch_dir, "launch.json"), "w") as handle:
        handle.write(json.dumps({"jobname": jobname, "launch_id": "1"}) + "\n")
    JobIndex(str(root)).add(LaunchRecord(jobname, "1", backend, launch_dir, f"1-{count}", count, 1.0e9,
                                         job_ids or [], {}))
    return launch_dir


def touch(launch_dir: str, *names: str) -> None:
    for name in names:
        open(os.path.join(launch_dir, "state", name), "w").close()


def wrapper_names(task: int, rng: random.Random) -> list[str]:
    """What the wrapper leaves for one task: nothing, a start, or a start and its end."""
    t0 = f"{1.7e9 + rng.randrange(1000):.6f}"
    kind = rng.randrange(4)
    if kind == 0:
        return []
    start = f"{task}.start@{t0}@1"
    if kind == 1:
        return [start]
    code, how, why = rng.choice([(0, "done", ""), (1, "failed", ""), (137, "killed", "SIG9"),
                                 (143, "cancelled", "SIGTERM"), (124, "timeout", "warned-SIGUSR1")])
    return [start, f"{task}.end@{float(t0) + 5:.6f}@{code}@{t0}@1@{how}@{why}"]


# ------------------------------------------------------------------ memory
def peak_mb(argv: list[str], cwd) -> float:
    """Peak RSS of `python -m onager ARGV`, its own (not inherited from this process)."""
    env = dict(os.environ, PYTHONPATH=ROOT)
    proc = subprocess.run([TIME, "-f", "%M", sys.executable, "-m", "onager", *argv], cwd=str(cwd), env=env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    return int(proc.stderr.split()[-1]) / 1024


@pytest.mark.skipif(not os.access(TIME, os.X_OK), reason="needs /usr/bin/time")
def test_list_memory_does_not_grow_with_the_tasks(project):
    """The rows of 60,000 tasks take no more memory than those of 4,000 (rows are streamed):
    before, every row was kept (about a kilobyte each, some 60 MB more at 60k)."""
    fabricate(project, "small", [str(v) for v in range(400)])
    fabricate(project, "large", [str(v) for v in range(6000)])
    for form in ([], ["--json"], ["--csv"]):
        small = peak_mb(["list", "--jobname", "small", *form], project)
        large = peak_mb(["list", "--jobname", "large", *form], project)
        assert large - small < 15, (form, small, large)


# ------------------------------------------------------------------ summary
def test_summary_reads_no_tasks_and_makes_no_rows(project, monkeypatch):
    launch_dir = fabricate(project, "s", [str(v) for v in range(30)])
    rng = random.Random(7)
    touch(launch_dir, *[name for task in range(1, 301) for name in wrapper_names(task, rng)])
    expected = Counter(row.status for row in status.task_rows(JobIndex().records()))

    def refused(*args, **kwargs):
        raise AssertionError("--summary read tasks.jsonl")
    monkeypatch.setattr(status, "iter_launch_tasks", refused)
    code, out, err = call("list", "--summary", "--json")
    assert code == 0, err
    (row,) = json.loads(out)
    assert row["tasks"] == 300 and {s: n for s, n in row.items() if s in state.STATUSES and n} == expected


def scenario(draw_names: list[list[str]], launch_dir: str) -> None:
    touch(launch_dir, *[name for names in draw_names for name in names])


ODD_NAMES = st.sampled_from([
    "{t}.start@1700000000.000000@2",              # a second attempt that is running
    "{t}.end@1700000009.0@1@1700000001.0@2@failed@",  # a second attempt that failed
    "{t}.cancel@1700000003.0",                    # cancelled
    "{t}.cancel",
    "{t}.lost@1700000004.0@pool-gone",
    "{t}.acct@1700000005.0@1@oom@oom-kill",
    "{t}.dup@1700000006.0@1.1@running",
    "{t}.end@1700000007.0@0",                     # older end forms
    "{t}.end@1700000007.0@2@1700000000.000000",
    "{t}.end@1690000000.0@0@1700000000.000000@1@done@",  # an end before its start (clocks)
    "{t}.start@1700000000.0@1",                   # the same start spelled another way
    "0{t}.end@1700000008.0@0@1700000000.000000@1@done@",
    "{t}.end@1700000008.0@0@1700000000.000000@1@done@odd reason",
])


@settings(max_examples=25, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 40), ODD_NAMES), max_size=4), st.integers(0, 2 ** 32),
       st.sampled_from(["none", "plain", "pool"]))
def test_summary_counts_what_the_rows_count(tmp_path_factory, odd, seed, answers):
    """--summary (its fast path for the wrapper's names, and the general one) against the
    statuses of the rows, over random launches: the wrapper's names, odd names made by hand
    or by other writers, and a scheduler's answers of each kind."""
    root = tmp_path_factory.mktemp("summary")
    cwd = os.getcwd()
    os.chdir(root)
    try:
        launch_dir = fabricate(root, "s", [str(v) for v in range(4)])
        rng = random.Random(seed)
        names = [name for task in range(1, 41) for name in wrapper_names(task, rng)]
        names += [template.format(t=task) for task, template in odd]
        touch(launch_dir, *set(names))
        (record,) = JobIndex().records()
        scheduler: dict[int, str] | None
        if answers == "none":
            scheduler = None
        elif answers == "plain":
            scheduler = {task: rng.choice(["pending", "running", "pending (Priority)", "blocked (Dependency)",
                                           "timeout (TIMEOUT)", "error (launch failed)"])
                         for task in rng.sample(range(1, 45), 10)}
        else:
            from onager.backends._cancel import _AllUnfinished
            scheduler = _AllUnfinished()
        rows = Counter(row.status for row in status.launch_rows(record, scheduler))
        assert status.launch_counts(record, scheduler) == rows
        wanted = set(rng.sample(range(1, 41), 12))
        rows = Counter(row.status for row in status.launch_rows(record, scheduler, wanted))
        assert status.launch_counts(record, scheduler, wanted) == rows
    finally:
        os.chdir(cwd)
        shutil.rmtree(root, ignore_errors=True)


# ------------------------------------------------------------------ state names
@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2 ** 32), st.lists(st.tuples(st.integers(1, 30), ODD_NAMES), max_size=3),
       st.booleans())
def test_wrapper_names_read_as_the_general_reading_reads_them(seed, odd, history):
    rng = random.Random(seed)
    names = [name for task in range(1, 31) for name in wrapper_names(task, rng)]
    names += [template.format(t=task) for task, template in odd]
    names = sorted(set(names), key=lambda _: rng.random())
    assert state.parse_states(names, history) == state._parse_any(names, history)


def test_wrapper_names_take_the_fast_path():
    rng = random.Random(3)
    names = [name for task in range(1, 200) for name in wrapper_names(task, rng)]
    assert state.wrapper_names(names) is not None
    assert state.wrapper_names([*names, "5.cancel"]) is None


# ------------------------------------------------------------------ split launches
def test_a_split_launch_names_each_tasks_own_array(project):
    """Tasks 1-40 in three arrays (501: 1-15, 502: 16-30 as 1-15 + offset 15, 503: 31-40):
    each row shows its own array's id, not all three; --summary shows the launch's ids."""
    launch_dir = fabricate(project, "split", [str(v) for v in range(4)], job_ids=["501", "502", "503"])
    with open(os.path.join(launch_dir, "scheduler.json"), "w") as handle:
        json.dump({"backend": "slurm", "tasks_per_node": 1, "submissions": [
            {"job_id": "501", "offset": 0, "array": "1-15"}, {"job_id": "502", "offset": 15, "array": "1-15"},
            {"job_id": "503", "offset": 30, "array": "1-10"}]}, handle)
    code, out, err = call("list", "--json")
    assert code == 0, err
    got = {row["task_id"]: row["job_id"] for row in json.loads(out)}
    assert got == {t: "501" if t <= 15 else "502" if t <= 30 else "503" for t in range(1, 41)}
    code, out, _ = call("list", "--csv")
    assert {row["job_id"] for row in csv.DictReader(io.StringIO(out))} == {"501", "502", "503"}
    code, out, _ = call("list", "--summary", "--json")
    assert [row["job_id"] for row in json.loads(out)] == ["501,502,503"]


# ------------------------------------------------------------------ the same bytes
def old_table(rows: list, columns: list[str]) -> str:
    """What `list` printed before its rows were streamed: every row at once."""
    return listing.column_table(listing._columns(rows, columns, {}), columns) + "\n"


def old_json(rows: list) -> str:
    out = [{"job_id": r.job_ids, "launch": r.launch_id, "task_id": r.task_id, "jobname": r.jobname,
            "backend": r.backend, "status": r.status, "reason": r.reason, "attempt": r.attempt,
            "exit": r.exit_code, "start": r.start, "end": r.end, "elapsed": r.elapsed, "tag": r.tag,
            "command": r.command, "params": r.params, "commit": ""} for r in rows]
    return json.dumps(out, indent=1) + "\n"


def old_csv(rows: list, columns: list[str]) -> str:
    text = io.StringIO(newline="")
    writer = csv.writer(text)
    writer.writerow(columns)
    writer.writerows(zip(*listing._columns(rows, columns, {})))
    return text.getvalue()


@pytest.mark.parametrize("values", [3, 300])  # 30 rows (tabulate) and 3,000 (the column layout)
def test_list_output_keeps_its_bytes(project, monkeypatch, values):
    monkeypatch.setattr(status.time, "time", lambda: 1.8e9)  # elapsed of running tasks: fixed
    first = fabricate(project, "a", [f"v{v} 'q' \u00e9" for v in range(values)])
    fabricate(project, "b", [str(v) for v in range(2)])
    rng = random.Random(values)
    touch(first, *[name for task in range(1, values * 10 + 1) for name in wrapper_names(task, rng)])
    rows = status.task_rows(JobIndex().records())
    columns = listing.COLUMNS
    assert call("list")[1] == old_table(rows, columns)
    assert call("list", "--json")[1] == old_json(rows)
    assert call("list", "--csv")[1] == old_csv(rows, columns)
    failed = [r for r in rows if r.status == "failed"]
    assert call("list", "--status", "failed", "--hide", "command")[1] == old_table(
        failed, [c for c in columns if c != "command"])
    assert call("list", "--json", "--status", "running,lost")[1] == old_json(
        [r for r in rows if r.status in ("running", "lost")])
    assert call("list", "--json", "--status", "oom")[1] == "[]\n"


def test_a_launch_damaged_part_way_is_left_out_whole(project):
    """tasks.jsonl cut after 2,500 of its 3,000 tasks: none of that launch's rows show (its
    first rows were already read when the damage turned up), the other launch's all do."""
    first = fabricate(project, "a", [str(v) for v in range(300)])
    fabricate(project, "b", [str(v) for v in range(2)])
    path = os.path.join(first, "tasks.jsonl")
    with open(path, encoding="utf-8") as handle:
        lines = handle.readlines()
    with open(path, "w", encoding="utf-8") as handle:
        handle.writelines(lines[:2500] + [lines[2500][:10] + "\n"] + lines[2501:])
    kept = status.task_rows([r for r in JobIndex().records() if r.jobname == "b"])
    for form, expected in (([], old_table(kept, listing.COLUMNS)), (["--json"], old_json(kept)),
                           (["--csv"], old_csv(kept, listing.COLUMNS))):
        code, out, err = call("list", *form)
        assert code == 1 and out == expected
        assert "launch a/1 skipped" in err and "damaged at line 2501" in err


def test_cells_with_newlines_and_nuls_still_lay_out(project):
    """A tag holding a newline goes to tabulate (multi-line cells), one holding a NUL to the
    column layout, as before; neither can break the spill's one line per row."""
    fabricate(project, "a", ["x\ny", "p\0q"] + [str(v) for v in range(250)])
    rows = status.task_rows(JobIndex().records())
    assert call("list")[1] == old_table(rows, listing.COLUMNS)
    keep = [r for r in rows if "\n" not in r.tag]
    tasklist = str(Tasklist.from_ids(r.task_id for r in keep))
    assert call("list", "--tasklist", tasklist)[1] == old_table(keep, listing.COLUMNS)


# ------------------------------------------------------------------ summary in flat memory
FLAT_TASKS = 100_000  # 200k names


def flat_names(tasks: int, rng: random.Random) -> list[str]:
    """What the wrapper leaves for `tasks` tasks: mostly a start and a `done` end, a few
    failed ones, a few still running and a few with no name yet."""
    names = []
    for task in range(1, tasks + 1):
        t0 = f"{1.7e9 + task:.6f}"
        kind = rng.randrange(100)
        if kind == 0:
            continue
        names.append(f"{task}.start@{t0}@1")
        if kind == 1:
            continue
        how, code = ("failed", 1) if kind == 2 else ("done", 0)
        names.append(f"{task}.end@{float(t0) + 5:.6f}@{code}@{t0}@1@{how}@")
    rng.shuffle(names)
    return names


def counts_of(tmp_path, names: list[str], tasks: int) -> Counter[str]:
    """`launch_counts` of a launch of `tasks` tasks whose state/ holds `names`."""
    (tmp_path / "state").mkdir(exist_ok=True)
    record = LaunchRecord("big", "1", "local", str(tmp_path), f"1-{tasks}", tasks, 1.0e9, [], {})
    original = state.state_names
    status.state_names = lambda _: names  # type: ignore[assignment]
    try:
        return status.launch_counts(record, None)
    finally:
        status.state_names = original  # type: ignore[assignment]


def general_counts(tmp_path, names: list[str], tasks: int) -> Counter[str]:
    """The counts that the rows of the launch show: the general reading, task by task."""
    states = state._parse_any(names, False)
    record = LaunchRecord("big", "1", "local", str(tmp_path), f"1-{tasks}", tasks, 1.0e9, [], {})
    decide = status._decider(record, None, states)
    return Counter(decide(i, states.get(i)).status for i in range(1, tasks + 1))


def test_summary_of_200k_names_takes_flat_memory(tmp_path):
    """A tuple of 3 or 7 strings per name (and sets of them) took some 100 MB more than the
    listing at 200k names; the summary now needs a few bytes per task."""
    names = flat_names(FLAT_TASKS, random.Random(5))
    tracemalloc.start()
    try:
        counts = counts_of(tmp_path, names, FLAT_TASKS)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 12 * 2 ** 20, f"peak {peak / 2 ** 20:.1f} MiB"
    assert counts == general_counts(tmp_path, names, FLAT_TASKS)
    assert counts["running" if counts["running"] else "unknown"] and counts["failed"]


@pytest.mark.parametrize("extra", [
    ["7.start@1700000007.000000@1"],                      # a duplicate start name in the list
    ["30.start@1700000030.000000@1"],                     # a task still running
    ["07.start@1700000007.000000@1"],                     # the same task spelled another way
    ["7.end@1700000012.000000@0@1700000007.000000@1@done@"],  # a duplicate end
    ["100001.start@1@1"],                                 # a task the launch does not have
    ["0.start@1@1"],
    ["7.start@1700000007.0@1"],
    ["7.cancel@1700000009.0"],
])
def test_odd_listings_count_as_the_general_reading_counts(tmp_path, extra):
    """Names the fast reading must hand to the general one give the same counts as rows."""
    base = [f"{t}.start@{1.7e9 + t:.6f}@1" for t in range(1, 20)]
    base += [f"{t}.end@{1.7e9 + t + 5:.6f}@{t % 2}@{1.7e9 + t:.6f}@1@{'failed' if t % 2 else 'done'}@"
             for t in range(1, 15)]
    names = base + extra
    assert counts_of(tmp_path, names, 30) == general_counts(tmp_path, names, 30)
    fast = extra[0].startswith(("7.start@1700000007.000000@", "30."))  # the rest: the general reading
    assert (state.wrapper_names(names, Tasklist.parse("1-30")) is not None) == fast


def test_the_wrapper_names_of_a_stepped_tasklist():
    """A tasklist of several blocks keeps a slot per task seen; ids outside it are refused."""
    names = ["3.start@1.0@1", "3.end@2.0@0@1.0@1@done@", "7.start@1.0@1"]
    simple = state.wrapper_names(names, Tasklist.parse("1-9:2"))
    assert simple is not None and simple.named(3) and simple.named(7) and not simple.named(5)
    assert simple.named_count() == 2 and list(simple.running_starts()) == [("7", "1.0", "1")]
    assert state.wrapper_names([*names, "4.start@1.0@1"], Tasklist.parse("1-9:2")) is None
