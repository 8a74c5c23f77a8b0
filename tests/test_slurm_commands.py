"""Slurm backend without Slurm: exact command texts (golden files), and fake sbatch/squeue/scancel."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
from support import golden, install_fake_scheduler, text

from onager.backends.array import duration_seconds, mem_text, node_script_text, write_groups
from onager.backends.base import LaunchInfo
from onager.backends.slurm import SlurmBackend, parse_squeue_line
from onager.errors import OnagerError, UsageError
from onager.index import JobIndex, LaunchRecord
from onager.state import read_states
from onager.tasklist import Tasklist

LAUNCH_DIR = "/work/exp/.onager/launches/exp1/1"


def info(tasks: str, **options) -> LaunchInfo:
    tl = Tasklist.parse(tasks)
    return LaunchInfo("exp1", "1", LAUNCH_DIR, LAUNCH_DIR + "/wrapper.sh", tl, len(tl), "/work/exp",
                      options)


# ------------------------------------------------------------------ golden
@pytest.mark.parametrize("name, tasks, options", [
    ("slurm_default.txt", "1-9", {}),
    ("slurm_tasklist.txt", "1-3:1,5,8-9", {}),
    ("slurm_options.txt", "1-3:1,5,8-9",
     {"cpus": 2, "mem": "500M", "gpus": "2", "duration": "2-00:00:00", "partition": "gpu",
      "account": "lab", "qos": "high", "constraint": "a100", "max_tasks": 5, "dependency": "afterok:41",
      "hold_jid": "12,13", "extra": ["--exclusive", "--comment=it's {x}"]}),
    ("slurm_split.txt", "1-25", {"max_array_size": 11, "max_tasks": 3}),
    ("slurm_split_sparse.txt", "3,9-12,30-40:5", {"max_array_size": 11}),
    ("slurm_tasks_per_node.txt", "1-10", {"tasks_per_node": 4, "max_tasks_per_node": 2, "cpus": 2,
                                          "mem": "1.5G", "gpus": "1"}),
])
def test_sbatch_golden(name, tasks, options):
    options.setdefault("max_array_size", 1001)
    assert text(SlurmBackend(options).submit_commands(info(tasks, **options))) == golden(name)


def test_cancel_golden_for_0_1_3_form():
    commands = SlurmBackend().cancel_job_commands("13438569", Tasklist.parse("1-3:1,5,8-9"))
    assert text(commands) == golden("slurm_cancel_jobid.txt")
    assert SlurmBackend().cancel_job_commands("7", None) == [["scancel", "7"]]
    assert SlurmBackend().cancel_job_commands("7", Tasklist.parse("4")) == [["scancel", "7_4"]]
    with pytest.raises(UsageError):
        SlurmBackend().cancel_job_commands("7; rm -rf /", None)


def test_cancel_form_through_cli(onager):
    out = onager("cancel", "--backend", "slurm", "--jobid", "13438569", "--tasklist", "1-3:1,5,8-9", "--dry-run")
    assert out.returncode == 0, out.stderr
    assert out.stdout == golden("slurm_cancel_jobid.txt")


# ------------------------------------------------------------------ values
@pytest.mark.parametrize("given, expected", [
    ("4G", "4G"), ("500M", "500M"), ("2", "2G"), (2, "2G"), ("1.5G", "1536M"), ("4g", "4G"),
    ("1T", "1024G"), ("2048K", "2M"), ("8GB", "8G"), ("0.5", "512M")])
def test_mem_units(given, expected):
    assert mem_text(given) == expected


@pytest.mark.parametrize("bad", ["four", "4X", "-1G", "", "4 G B", "0"])
def test_mem_rejects(bad):
    with pytest.raises(UsageError, match="--mem"):
        mem_text(bad)


@pytest.mark.parametrize("given, seconds", [
    ("30", 1800), ("30:15", 1815), ("48:00:00", 172800), ("2-00:00:00", 172800), ("0-01:00:00", 3600),
    ("1-12", 129600), ("1-2:30", 95400), ("UNLIMITED", None)])
def test_duration_forms(given, seconds):
    assert duration_seconds(given) == seconds


@pytest.mark.parametrize("bad", ["1h", "1:2:3:4", "abc", "-5", "2-"])
def test_duration_rejects(bad):
    with pytest.raises(UsageError, match="--duration"):
        duration_seconds(bad)


def test_bad_option_is_one_line_exit_2(onager):
    onager("prelaunch", "+jobname", "j", "+command", "echo", "+arg", "--n", "1", "2")
    for args in (["--duration", "1h"], ["--mem", "lots"], ["--gpus", "two"], ["--pe", "smp"]):
        out = onager("launch", "--backend", "slurm", "--jobname", "j", "--dry-run", "--max-array-size", "1001",
                     *args)
        assert out.returncode == 2, (args, out.stderr)
        assert out.stderr.count("\n") == 1 and "Traceback" not in out.stderr
        assert out.stdout == ""


def test_million_tasks_dry_run_is_condensed_and_fast():
    start = time.time()
    commands = SlurmBackend({"max_array_size": 1001}).submit_commands(info("1-1000000"))
    assert time.time() - start < 5
    assert len(commands) == 1000  # ceil(1e6 / 1000)
    arrays = {next(a for a in c if a.startswith("--array=")) for c in commands}
    assert arrays == {"--array=1-1000"}
    offsets = [c[0] for c in commands]  # in sbatch's environment, not in an --export of its argv
    assert offsets[0] == "ONAGER_TASK_OFFSET=0"
    assert offsets[-1] == "ONAGER_TASK_OFFSET=999000"
    assert not any(a.startswith("--export") for c in commands for a in c)
    assert max(len(" ".join(c)) for c in commands) < 1000


def test_million_tasks_cli_dry_run(onager):
    # a jobfile of 1,000,000 tasks in our one-line-per-task form, written directly for speed
    path = ".onager/scripts/big/jobs.json"
    os.makedirs(os.path.dirname(path))
    with open(path, "w") as handle:
        handle.write("{" + ",\n".join(f'"{i}": ["echo {i}", "", {{}}]' for i in range(1, 1_000_001)) + "}\n")
    out = onager("launch", "--backend", "slurm", "--jobname", "big", "--dry-run", "--max-array-size", "1001",
                 timeout=300)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert len(lines) == 1000 and all("--array=1-1000 " in line for line in lines)
    assert "1000000 tasks" in out.stderr
    assert not os.path.exists(".onager/launches/big/1")


def test_no_site_defaults():
    command = SlurmBackend({"max_array_size": 1001}).submit_commands(info("1"))[0]
    assert "-p" not in command and "-n" not in command and not any(a.startswith("--partition") for a in command)


def test_max_array_size_read_once_from_scontrol(fake):
    fake.respond("scontrol", 0, "Configuration data as of now\nMaxArraySize            = 11\nMaxJobCount = 10000\n")
    backend = SlurmBackend()
    commands = backend.submit_commands(info("1-25"))
    backend.submit_commands(info("1-25"))
    assert [c for c in fake.calls() if c[0] == "scontrol"] == [["scontrol", "show", "config"]]
    assert [next(a for a in c if a.startswith("--array=")) for c in commands] == ["--array=1-10"] * 2 + ["--array=1-5"]


def test_max_array_size_too_small(fake):
    fake.respond("scontrol", 0, "MaxArraySize            = 0\n")
    with pytest.raises(OnagerError, match="MaxArraySize is 0"):
        SlurmBackend().submit_commands(info("1-3"))


@pytest.fixture
def fake(tmp_path, monkeypatch):
    return install_fake_scheduler(tmp_path, monkeypatch)


def prepared(project, tasks="1-12", **options):
    """A real launch directory of job `exp` (12 echo tasks), ready for submit."""
    from onager import launch as launchmod
    os.makedirs(".onager/scripts/exp", exist_ok=True)
    with open(".onager/scripts/exp/jobs.json", "w") as handle:
        json.dump({str(i): [f"echo task {i}", f"exp_{i}", {}] for i in range(1, 41)}, handle)
    options.setdefault("max_array_size", 1001)
    return launchmod.prepare("exp", "slurm", options, tasks)


def test_submit_records_job_ids_and_offsets(project, fake):
    from onager import launch as launchmod
    fake.respond("sbatch", [0, "101\n"], [0, "102;cluster\n"], [0, "103\n"])
    backend, linfo = prepared(project, "1-25", max_array_size=11)
    record = launchmod.submit(backend, linfo)
    assert record.job_ids == ["101", "102", "103"]
    with open(os.path.join(linfo.launch_dir, "scheduler.json")) as handle:
        meta = json.load(handle)
    assert [(s["job_id"], s["offset"], s["array"]) for s in meta["submissions"]] == [
        ("101", 0, "1-10"), ("102", 10, "1-10"), ("103", 20, "1-5")]
    assert os.path.isdir(os.path.join(linfo.launch_dir, "logs", "scheduler"))
    assert JobIndex().records()[0].job_ids == ["101", "102", "103"]


def test_refused_sbatch_is_an_error_and_leaves_nothing(project, fake):
    fake.respond("sbatch", 1, "", "sbatch: error: Batch job submission failed: Invalid partition name specified\n")
    out = subprocess.run([sys.executable, "-m", "onager", "prelaunch", "+jobname", "exp", "+command", "echo",
                          "+arg", "--n", "1", "2"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    out = subprocess.run([sys.executable, "-m", "onager", "launch", "--backend", "slurm", "--jobname", "exp",
                          "--partition", "nosuch", "--max-array-size", "1001"],
                         capture_output=True, text=True, stdin=subprocess.DEVNULL)
    assert out.returncode == 1
    assert "Invalid partition name specified" in out.stderr and "Traceback" not in out.stderr
    assert JobIndex().records() == []
    assert os.listdir(".onager/launches/exp") == []


def test_transient_error_is_retried(project, fake):
    from onager import launch as launchmod
    fake.respond("sbatch", [1, "", "sbatch: error: Socket timed out on send/recv operation\n"],
                 [1, "", "sbatch: error: Resource temporarily unavailable\n"], [0, "555\n"])
    backend, linfo = prepared(project)
    assert launchmod.submit(backend, linfo).job_ids == ["555"]
    assert [c[0] for c in fake.calls()].count("sbatch") == 3


def test_split_launch_failing_midway_cancels_what_went_through(project, fake):
    from onager import launch as launchmod
    fake.respond("sbatch", [0, "201\n"], [0, "202\n"], [1, "", "sbatch: error: QOSMaxSubmitJobPerUserLimit\n"])
    backend, linfo = prepared(project, "1-25", max_array_size=11)
    with pytest.raises(OnagerError, match="QOSMaxSubmitJobPerUserLimit"):
        launchmod.submit(backend, linfo)
    assert ["scancel", "201", "202"] in fake.calls()
    assert JobIndex().records() == [] and not os.path.exists(linfo.launch_dir)


def record_of(linfo, job_ids):
    return LaunchRecord("exp", linfo.launch_id, "slurm", linfo.launch_dir, str(linfo.tasklist), linfo.count,
                        0.0, job_ids, linfo.options)


def test_query_maps_offsets_back_to_task_ids(project, fake):
    from onager import launch as launchmod
    fake.respond("sbatch", [0, "301\n"], [0, "302\n"], [0, "303\n"])
    backend, linfo = prepared(project, "1-25", max_array_size=11)
    record = launchmod.submit(backend, linfo)
    fake.respond("squeue", 0, "302_[4-10%3]|PD|JobArrayTaskLimit\n301_2|R|None\n303_3|PD|"
                              "launch failed requeued held\n999_1|R|None\n303_1|CD|None\n")
    answer = SlurmBackend(record.options).query([record])[record.key]
    assert answer == {**{i: "pending (JobArrayTaskLimit)" for i in range(14, 21)}, 2: "running",
                      23: "error (launch_failed_requeued_held)"}
    squeues = [c for c in fake.calls() if c[0] == "squeue"]
    assert len(squeues) == 1 and squeues[0][1:6] == ["-h", "-t", "all", "-j", "301,302,303"]
    # long pending index lists are not cut at 64 characters ("..."), which would hide tasks
    with open(os.path.join(fake.base, "env.jsonl")) as handle:
        assert ["squeue", "0"] in [json.loads(line) for line in handle]


def test_query_survives_forgotten_job_ids(project, fake):
    fake.respond("squeue", [1, "", "slurm_load_jobs error: Invalid job id specified\n"], [0, "77_3|R|None\n"])
    _, linfo = prepared(project)
    record = record_of(linfo, ["77"])
    answer = SlurmBackend().query([record])
    assert answer == {record.key: {3: "running"}}
    assert fake.calls()[-1][:3] == ["squeue", "-h", "-u"]


def test_query_unreachable_controller_is_unknown(project, fake):
    fake.respond("squeue", 1, "", "slurm_load_jobs error: Unable to contact slurm controller (connect failure)\n")
    _, linfo = prepared(project)
    record = record_of(linfo, ["77"])
    assert SlurmBackend().query([record]) == {record.key: None}


def test_one_squeue_for_many_launches_in_list(onager, fake):
    onager("prelaunch", "+jobname", "a", "+command", "echo", "+arg", "--n", "1", "2", "3")
    env = {"PATH": os.environ["PATH"]}
    fake.respond("sbatch", [0, "11\n"], [0, "12\n"])
    assert onager("launch", "--backend", "slurm", "--jobname", "a", "--max-array-size", "1001", env=env).returncode == 0
    assert onager("launch", "--backend", "slurm", "--jobname", "a", "--tasklist", "2",
                  "--max-array-size", "1001", env=env).returncode == 0
    fake.respond("squeue", 0, "11_[1,3]|PD|Priority\n12_2|R|None\n")
    out = onager("list", "--json", env=env)
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)
    assert [(r["launch"], r["task_id"], r["status"]) for r in rows] == [
        ("1", 1, "pending"), ("1", 2, "lost"), ("1", 3, "pending"), ("2", 2, "running")]
    assert [c for c in fake.calls() if c[0] == "squeue"] == [
        ["squeue", "-h", "-t", "all", "-j", "11,12", "-o", "%i|%t|%r|%e"]]


@pytest.mark.parametrize("line, expected", [
    ("18_[3-6%2]|PD|JobArrayTaskLimit", ("18", [3, 4, 5, 6], "pending (JobArrayTaskLimit)")),
    ("19_[3,7]|PD|JobHeldUser", ("19", [3, 7], "blocked (JobHeldUser)")),
    ("18_1|R|None", ("18", [1], "running")),
    ("18_1|CG|None", ("18", [1], "running")),
    ("18_1|CD|None", ("18", [1], None)),
    ("20|R|None", None),
    ("garbage", None),
])
def test_parse_squeue_line(line, expected):
    parsed = parse_squeue_line(line)
    if expected is None:
        assert parsed is None
    else:
        assert (parsed[0], list(parsed[1]), parsed[2]) == expected


def test_cancel_maps_ids_to_array_jobs_and_marks(project, fake):
    from onager import launch as launchmod
    fake.respond("sbatch", [0, "401\n"], [0, "402\n"], [0, "403\n"])
    backend, linfo = prepared(project, "1-25", max_array_size=11)
    record = launchmod.submit(backend, linfo)
    done = os.path.join(linfo.launch_dir, "state", "4.end@1.0@0")
    open(done, "w").close()
    commands = SlurmBackend(record.options).cancel(record, Tasklist.parse("1-5,9,12-14,25"), dry_run=True)
    assert commands == [["scancel", "401_[1-3,5,9]"], ["scancel", "402_[2-4]"], ["scancel", "403_5"]]
    assert not any(s.cancelled for s in read_states(linfo.launch_dir).values())
    SlurmBackend(record.options).cancel(record, Tasklist.parse("1-5,9,12-14,25"))
    assert [c for c in fake.calls() if c[0] == "scancel"] == commands
    states = read_states(linfo.launch_dir)
    assert sorted(i for i, s in states.items() if s.cancelled) == [1, 2, 3, 5, 9, 12, 13, 14, 25]


def test_cancel_whole_groups_only_with_tasks_per_node(project, fake):
    from onager import launch as launchmod
    fake.respond("sbatch", 0, "501\n")
    backend, linfo = prepared(project, "1-10", tasks_per_node=4)
    record = launchmod.submit(backend, linfo)
    commands = SlurmBackend(record.options).cancel(record, Tasklist.parse("1-6"), dry_run=True)
    assert commands == [["scancel", "501_1"]]  # group 2 (5-8) only partly: its tasks are marked, skipped


# ----------------------------------------------------------- tasks per node
def test_node_script_runs_its_group(project):
    backend, linfo = prepared(project, "2-9:1,20", tasks_per_node=3, max_tasks_per_node=2)
    os.makedirs(os.path.join(linfo.launch_dir, "logs", "scheduler"))
    from onager.backends.array import write_node_script
    assert write_groups(linfo.launch_dir, linfo.tasklist, 3) == 3
    script = write_node_script(linfo, 3, 2, SlurmBackend.index_variable)
    with open(os.path.join(linfo.launch_dir, "groups.txt")) as handle:
        lines = handle.read().splitlines()
    assert [line.split() for line in lines] == [["2", "3", "4"], ["5", "6", "7"], ["8", "9", "20"]]
    assert len({len(line) for line in lines}) == 1  # fixed width: dd finds a group without a scan
    open(os.path.join(linfo.launch_dir, "state", "9.cancel@1.0"), "w").close()
    env = dict(os.environ, SLURM_ARRAY_TASK_ID="1", ONAGER_TASK_OFFSET="2")  # group 3
    out = subprocess.run(["bash", script], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    states = read_states(linfo.launch_dir)
    assert sorted(i for i, s in states.items() if s.end is not None) == [8, 20]
    with open(os.path.join(linfo.launch_dir, "logs", "20.out")) as handle:
        assert handle.read() == "task 20\n"


def test_node_script_failure_exit_code(project):
    backend, linfo = prepared(project, "1-2", tasks_per_node=2)
    with open(os.path.join(linfo.launch_dir, "tasks.sh"), "rb") as handle:
        assert b"echo task 2" in handle.read()
    write_groups(linfo.launch_dir, linfo.tasklist, 2)
    text_ = node_script_text(linfo.launch_dir, 5, 2, SlurmBackend.index_variable).replace('bash "$D/wrapper.sh" '
                                                                                          '"$id"', '(exit $id)')
    path = os.path.join(linfo.launch_dir, "node.sh")
    with open(path, "w") as handle:
        handle.write(text_)
    out = subprocess.run(["bash", path, "1"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 1
