"""Issue 14 on Slurm and Grid Engine without them: pending reasons, accounting (sacct, qacct,
squeue -t all) cached once, submission tokens adopted after a timeout, the warning signal.

Fake scheduler commands on PATH check the command text and the parsing; tests/engines/
test_lifecycle_slurm.py and test_lifecycle_sge.py run the real engines."""
from __future__ import annotations

import json
import os

import pytest
from support import FAKE, install_fake_scheduler, refused

from onager.backends.array import submission_token
from onager.backends.gridengine import GridEngineBackend, parse_qacct, parse_scheduling_info
from onager.backends.slurm import SlurmBackend, parse_sacct_line, parse_squeue_line
from onager.index import JobIndex
from onager.layout import LaunchPaths


@pytest.fixture
def fake(tmp_path, monkeypatch):
    fake = install_fake_scheduler(tmp_path, monkeypatch)
    for name in ("sacct", "qacct"):  # accounting stand-ins, recorded like the others
        path = os.path.join(fake.base, name)
        with open(path, "w") as handle:
            handle.write(FAKE.replace("{python}", __import__("sys").executable))
        os.chmod(path, 0o755)
    return fake


def calls_of(fake, name: str) -> list[list[str]]:
    return [c for c in fake.calls() if c[0] == name]


def prepare(backend: str, tasks: str = "1-3", **options):
    from onager import launch as launchmod
    os.makedirs(".onager/scripts/exp", exist_ok=True)
    with open(".onager/scripts/exp/jobs.json", "w") as handle:
        json.dump({str(i): [f"echo task {i}", f"exp_{i}", {}] for i in range(1, 11)}, handle)
    if backend == "slurm":
        options.setdefault("max_array_size", 1001)
    return launchmod.prepare("exp", backend, options, tasks)


def launched(fake, backend: str, job_id: str = "555", tasks: str = "1-3", **options):
    from onager import launch as launchmod
    fake.respond("sbatch" if backend == "slurm" else "qsub", 0, f"{job_id}\n")
    backend_obj, linfo = prepare(backend, tasks, **options)
    return launchmod.submit(backend_obj, linfo), linfo


def started(launch_dir: str, task_id: int, attempt: int = 1, t0: float = 1000.0) -> None:
    """The start name a wrapper writes (host pid jobid pstart)."""
    with open(LaunchPaths(launch_dir).state(f"{task_id}.start@{t0:.6f}@{attempt}"), "w") as handle:
        handle.write("node1 4242 555 99\n")


def ended(launch_dir: str, task_id: int, code: int, state: str, reason: str, attempt: int = 1,
          t0: float = 1000.0) -> None:
    name = f"{task_id}.end@{t0 + 5:.6f}@{code}@{t0:.6f}@{attempt}@{state}@{reason}"
    open(LaunchPaths(launch_dir).state(name), "w").close()


def acct_names(launch_dir: str) -> list[str]:
    return sorted(n for n in os.listdir(LaunchPaths(launch_dir).state_dir) if ".acct@" in n)


# ------------------------------------------------------------------ parsing
@pytest.mark.parametrize("line, answer", [
    ("7_[1-3]|PD|Priority", "pending (Priority)"),
    ("7_[1-3]|PD|Resources", "pending (Resources)"),
    ("7_[1-3]|PD|None", "pending"),
    ("7_1|PD|PartitionConfig", "blocked (PartitionConfig)"),
    ("7_1|PD|PartitionTimeLimit", "blocked (PartitionTimeLimit)"),
    ("7_1|PD|JobHeldAdmin", "blocked (JobHeldAdmin)"),
    ("7_1|RH|None", "blocked (RequeueHold)"),
    ("7_1|PD|DependencyNeverSatisfied", "error (DependencyNeverSatisfied)"),
    ("7_2|TO|TimeLimit", "timeout (TimeLimit)"),
    ("7_2|CA|None", "cancelled"),
    ("7_2|OOM|OutOfMemory", "oom (OutOfMemory)"),
    ("7_2|PR|None", "preempted"),
    ("7_2|NF|None", "lost (NODE_FAIL)"),
    ("7_2|F|NonZeroExitCode", "failed (NonZeroExitCode)"),
    ("7_2|CD|None", None),
])
def test_squeue_answers_carry_reasons_and_ends(line, answer):
    assert parse_squeue_line(line)[2] == answer


@pytest.mark.parametrize("line, answer", [
    ("123_4|TIMEOUT|0:0", "timeout (TIMEOUT)"),
    ("123_4|OUT_OF_MEMORY|0:125", "oom (OUT_OF_MEMORY)"),
    ("123_4|CANCELLED by 1000|0:15", "cancelled (by 1000)"),
    ("123_4|FAILED|3:0", "failed (ExitCode=3:0)"),
    ("123_4|PREEMPTED|0:15", "preempted (PREEMPTED)"),
    ("123_4|NODE_FAIL|0:0", "lost (NODE_FAIL)"),
    ("123_4|COMPLETED|0:0", "done"),
    ("123_4|RUNNING|0:0", None),
    ("123_[5-9]|PENDING|0:0", None),
    ("123|TIMEOUT|0:0", None),
])
def test_sacct_lines(line, answer):
    parsed = parse_sacct_line(line)
    assert (parsed[2] if parsed else None) == answer
    if answer:
        assert parsed[0] == "123" and list(parsed[1]) == [4]


QSTAT_J = """==============================================================
job_number:                 220
exec_file:                  job_scripts/220
scheduling info:            cannot run in PE "smp" because it only offers 0 slots
==============================================================
job_number:                 221
scheduling info:            Job is in hold state
==============================================================
job_number:                 222
context:                    ONAGER_TOKEN=onager:abc.1
scheduling info:            (-l arch=nosuch) cannot run at host "vm" because it offers only hl:arch=lx-amd64
                            cannot run in any queue instance because of resource requirements
"""


def test_scheduling_info_reasons():
    assert parse_scheduling_info(QSTAT_J) == {
        "220": "pending (cannot run in PE smp because it only offers 0 slots)",
        "221": "pending (hold)",
        "222": "blocked (cannot run in any queue instance because of resource requ...)"}


QACCT = """==============================================================
qname        all.q
jobnumber    224
taskid       1
category     -l h_rt=10,h_vmem=100M
failed       37  : qmaster enforced h_rt, h_cpu, or h_vmem limit
exit_status  137                  (Killed)
maxvmem      9.9MB
==============================================================
jobnumber    224
taskid       2
category     -l h_rt=10,h_vmem=100M
failed       37  : qmaster enforced h_rt, h_cpu, or h_vmem limit
exit_status  137                  (Killed)
maxvmem      99.500MB
==============================================================
jobnumber    224
taskid       3
failed       100 : assumedly after job
exit_status  137                  (Killed)
==============================================================
jobnumber    224
taskid       4
failed       0
exit_status  3
==============================================================
jobnumber    224
taskid       5
failed       0
exit_status  0
==============================================================
jobnumber    225
taskid       undefined
failed       0
exit_status  0
"""


def test_qacct_records():
    words = {tuple(ids)[0]: word for _, ids, word in parse_qacct(QACCT)}
    assert words == {1: "timeout (h_rt)", 2: "oom (h_vmem)", 3: "killed (SIGKILL)", 4: "failed (exit_status=3)",
                     5: "done"}


# ------------------------------------------------------------------ pending reasons, wait stops
def test_blocked_reason_listed_and_wait_stops(onager, fake):
    assert onager("prelaunch", "+jobname", "a", "+command", "echo", "+arg", "--n", "1", "2").returncode == 0
    fake.respond("sbatch", 0, "11\n")
    assert onager("launch", "--backend", "slurm", "--jobname", "a", "--max-array-size", "1001").returncode == 0
    fake.respond("squeue", 0, "11_[1-2]|PD|PartitionConfig\n")
    rows = json.loads(onager("list", "--json").stdout)
    assert [(r["status"], r["reason"]) for r in rows] == [("pending", "PartitionConfig")] * 2
    out = onager("wait", "--jobname", "a", "--timeout", "30", "--interval", "0.1", "--quiet")
    assert out.returncode == 3, out.stderr
    assert "PartitionConfig" in out.stderr and out.stderr.count("\n") == 1


def test_priority_is_a_reason_not_a_block(onager, fake):
    assert onager("prelaunch", "+jobname", "a", "+command", "echo", "+arg", "--n", "1").returncode == 0
    fake.respond("sbatch", 0, "12\n")
    assert onager("launch", "--backend", "slurm", "--jobname", "a", "--max-array-size", "1001").returncode == 0
    fake.respond("squeue", 0, "12_1|PD|Priority\n")
    rows = json.loads(onager("list", "--json").stdout)
    assert [(r["status"], r["reason"]) for r in rows] == [("pending", "Priority")]
    out = onager("wait", "--jobname", "a", "--timeout", "1", "--interval", "0.2")
    assert out.returncode not in (0, 3)  # timed out waiting: it can still start


def test_gridengine_reason_from_one_qstat_j(project, fake):
    record, linfo = launched(fake, "gridengine", "220", "1-2")
    fake.respond("qstat", [0, QSTAT_XML.format(job="220", state="qw", tasks="1-2:1")],
                 [0, QSTAT_J.replace("222", "999")])
    answer = GridEngineBackend().query([record])[record.key]
    assert answer == {1: "pending (cannot run in PE smp because it only offers 0 slots)",
                      2: "pending (cannot run in PE smp because it only offers 0 slots)"}
    assert [c[1:] for c in calls_of(fake, "qstat")][1] == ["-j", "220"]


def test_gridengine_never_runs_is_blocked(project, fake):
    record, linfo = launched(fake, "gridengine", "222", "1")
    fake.respond("qstat", [0, QSTAT_XML.format(job="222", state="qw", tasks="1")], [0, QSTAT_J])
    answer = GridEngineBackend().query([record])[record.key]
    assert answer[1].startswith("blocked (cannot run in any queue")


QSTAT_XML = """<?xml version='1.0'?>
<job_info><queue_info></queue_info><job_info>
<job_list state="pending"><JB_job_number>{job}</JB_job_number><JB_name>exp</JB_name>
<state>{state}</state><tasks>{tasks}</tasks></job_list>
</job_info></job_info>
"""


# ------------------------------------------------------------------ accounting
def test_sacct_asked_once_for_a_task_without_end_and_cached(onager, fake):
    record, linfo = launched(fake, "slurm", "555")
    started(linfo.launch_dir, 1)
    started(linfo.launch_dir, 2)
    ended(linfo.launch_dir, 2, 143, "killed", "SIGTERM")
    started(linfo.launch_dir, 3)
    ended(linfo.launch_dir, 3, 0, "done", "")
    fake.respond("squeue", 0, "")
    fake.respond("sacct", 0, "555_1|TIMEOUT|0:0\n555_2|CANCELLED by 1000|0:15\n555_3|COMPLETED|0:0\n")
    rows = json.loads(onager("list", "--json").stdout)
    assert [(r["task_id"], r["status"], r["reason"]) for r in rows] == [
        (1, "timeout", "TIMEOUT"), (2, "cancelled", "by-1000"), (3, "done", "")]
    sacct = calls_of(fake, "sacct")
    assert sacct == [["sacct", "-X", "-P", "-n", "-j", "555", "--format=JobID,State,ExitCode,End"]]
    assert [n.split("@")[0] + "@" + "@".join(n.split("@")[2:]) for n in acct_names(linfo.launch_dir)] == [
        "1.acct@1@timeout@TIMEOUT", "2.acct@1@cancelled@by-1000"]
    rows = json.loads(onager("list", "--json").stdout)  # cached: not asked again
    assert [(r["status"], r["reason"]) for r in rows][:2] == [("timeout", "TIMEOUT"), ("cancelled", "by-1000")]
    assert len(calls_of(fake, "sacct")) == 1


def test_squeue_end_word_is_cached_without_sacct(onager, fake):
    record, linfo = launched(fake, "slurm", "556", "1")
    started(linfo.launch_dir, 1)
    fake.respond("squeue", 0, "556_1|TO|TimeLimit|N/A\n")
    rows = json.loads(onager("list", "--json").stdout)
    assert [(r["status"], r["reason"]) for r in rows] == [("timeout", "TimeLimit")]
    assert calls_of(fake, "sacct") == []
    assert len(acct_names(linfo.launch_dir)) == 1
    fake.respond("squeue", 0, "")  # gone from squeue after MinJobAge: the cache still says it
    rows = json.loads(onager("list", "--json").stdout)
    assert [(r["status"], r["reason"]) for r in rows] == [("timeout", "TimeLimit")]
    assert calls_of(fake, "sacct") == []


def test_accounting_disabled_falls_back_silently(onager, fake):
    record, linfo = launched(fake, "slurm", "557", "1-2")
    started(linfo.launch_dir, 1)
    started(linfo.launch_dir, 2)
    ended(linfo.launch_dir, 2, 143, "killed", "SIGTERM")
    fake.respond("squeue", 0, "")
    fake.respond("sacct", 1, "", "Slurm accounting storage is disabled\n")
    out = onager("list", "--json")
    assert out.returncode == 0 and out.stderr == ""
    rows = json.loads(out.stdout)
    assert [(r["status"], r["reason"]) for r in rows] == [("lost", "no-end-recorded"), ("killed", "SIGTERM")]
    assert len(calls_of(fake, "sacct")) == 1 and acct_names(linfo.launch_dir) == []


def test_no_accounting_asked_while_everything_is_queued(project, fake):
    record, linfo = launched(fake, "slurm", "558", "1-3")
    fake.respond("squeue", 0, "558_[1-3]|PD|Priority\n")
    SlurmBackend().query([record])
    assert calls_of(fake, "sacct") == []


def test_qacct_refines_a_task_killed_without_a_word(project, fake):
    record, linfo = launched(fake, "gridengine", "224", "1-3")
    for i in (1, 2, 3):
        started(linfo.launch_dir, i)
    fake.respond("qstat", 0, "<?xml version='1.0'?><job_info><queue_info/><job_info/></job_info>")
    fake.respond("qacct", 0, QACCT)
    answer = GridEngineBackend().query([record])[record.key]
    assert answer == {1: "timeout (h_rt)", 2: "oom (h_vmem)", 3: "killed (SIGKILL)"}
    assert calls_of(fake, "qacct") == [["qacct", "-j", "224"]]
    assert len(acct_names(linfo.launch_dir)) == 3
    GridEngineBackend().query([record])
    assert len(calls_of(fake, "qacct")) == 1  # cached, killed included


# ------------------------------------------------------------------ submission tokens
def test_sbatch_timeout_adopts_the_job_it_submitted(project, fake):
    from onager import launch as launchmod
    backend, linfo = prepare("slurm", "1-3")
    token = submission_token(linfo, 1)
    fake.respond("sbatch", 1, "", "sbatch: error: Socket timed out on send/recv operation\n")
    fake.respond("squeue", 0, f"77|other\n555|{token}\n")
    record = launchmod.submit(backend, linfo)
    assert record.job_ids == ["555"]
    sbatch = calls_of(fake, "sbatch")
    assert len(sbatch) == 1 and f"--comment={token}" in sbatch[0]
    assert calls_of(fake, "squeue")[0][:8] == ["squeue", "-h", "-u", calls_of(fake, "squeue")[0][3], "-t", "all",
                                               "-n", "exp"]
    assert JobIndex().records()[0].job_ids == ["555"]


def test_sbatch_timeout_without_a_job_submits_again(project, fake):
    from onager import launch as launchmod
    backend, linfo = prepare("slurm", "1-3")
    fake.respond("sbatch", [1, "", "sbatch: error: Socket timed out on send/recv operation\n"], [0, "556\n"])
    fake.respond("squeue", 0, "")
    assert launchmod.submit(backend, linfo).job_ids == ["556"]
    assert len(calls_of(fake, "sbatch")) == 2


def test_users_own_comment_wins_over_the_token(project, fake):
    backend, linfo = prepare("slurm", "1-3", extra=["--comment=mine"])
    (command,) = backend.submit_commands(linfo)
    assert [a for a in command if a.startswith("--comment")] == ["--comment=mine"]


def test_qsub_timeout_adopts_the_job_it_submitted(project, fake):
    from onager import launch as launchmod
    backend, linfo = prepare("gridengine", "1-3")
    token = submission_token(linfo, 1)
    fake.respond("qsub", 1, "", "error: commlib error: got select error (Connection timed out)\n")
    fake.respond("qstat", 0, f"job_number:                 90\ncontext:                    ONAGER_TOKEN=other\n"
                             f"job_number:                 91\ncontext:                    ONAGER_TOKEN={token}\n")
    assert launchmod.submit(backend, linfo).job_ids == ["91"]
    qsub = calls_of(fake, "qsub")
    assert len(qsub) == 1 and f"ONAGER_TOKEN={token}" in qsub[0]
    assert calls_of(fake, "qstat")[0] == ["qstat", "-j", "exp"]


def test_tokens_differ_per_launch_and_submission(project):
    _, first = prepare("slurm", "1-3")
    tokens = {submission_token(first, 1), submission_token(first, 11)}
    assert len(tokens) == 2 and all(t.startswith("onager:") for t in tokens)


# ------------------------------------------------------------------ warning signal
@pytest.mark.parametrize("options, expected", [
    ({"duration": "0-00:10:00"}, "--signal=B:USR1@60"),
    ({"duration": "1"}, "--signal=B:USR1@6"),
    ({"duration": "0-00:01:00", "warning_signal": 20}, "--signal=B:USR1@20"),
    ({"warning_signal": 90}, "--signal=B:USR1@90"),  # the default hour
    ({"duration": "0-00:10:00", "warning_signal": 0}, None),
    ({}, None),
])
def test_slurm_warning_signal(project, options, expected):
    backend, linfo = prepare("slurm", "1-2", **options)
    (command,) = backend.submit_commands(linfo)
    assert [a for a in command if a.startswith("--signal")] == ([expected] if expected else [])


@pytest.mark.parametrize("options, expected", [
    ({"duration": "0-00:10:00"}, ["h_rt=0:10:00", "s_rt=0:09:00"]),
    ({"duration": "0-00:00:10"}, ["h_rt=0:00:10", "s_rt=0:00:09"]),
    ({"duration": "0-00:10:00", "warning_signal": 0}, ["h_rt=0:10:00"]),
    ({}, ["h_rt=1:00:00"]),
])
def test_gridengine_soft_limit(project, options, expected):
    backend, linfo = prepare("gridengine", "1-2", **options)
    (command,) = backend.submit_commands(linfo)
    assert [command[i + 1] for i, a in enumerate(command) if a == "-l" and "_rt=" in command[i + 1]] == expected


@pytest.mark.parametrize("args, words", [
    (["--duration", "0-00:01:00", "--warning-signal", "60"], ["--warning-signal 60", "below"]),
    (["--duration", "UNLIMITED", "--warning-signal", "30"], ["--warning-signal", "--duration"]),
    (["--warning-signal", "-5"], ["--warning-signal"]),
])
def test_bad_warning_signal_refused_before_anything_is_written(onager, fake, args, words):
    assert onager("prelaunch", "+jobname", "w", "+command", "echo", "+arg", "--n", "1").returncode == 0
    before = sorted(os.listdir(".onager"))
    refused(onager("launch", "--backend", "slurm", "--jobname", "w", "--max-array-size", "1001", *args), *words)
    assert sorted(os.listdir(".onager")) == before and calls_of(fake, "sbatch") == []
    assert not os.path.exists(".onager/launches/w") or os.listdir(".onager/launches/w") == []


def test_warning_signal_refused_on_local(onager):
    assert onager("prelaunch", "+jobname", "w", "+command", "echo", "+arg", "--n", "1").returncode == 0
    refused(onager("launch", "--backend", "local", "--jobname", "w", "--warning-signal", "5"), "--warning-signal")


def local_text(epoch: float, form: str) -> str:
    import time
    return time.strftime(form, time.localtime(epoch))


def test_cached_end_has_the_schedulers_end_time(project, fake):
    # elapsed stops when the task ended, not when onager happened to ask
    record, linfo = launched(fake, "slurm", "560", "1-2")
    started(linfo.launch_dir, 1, t0=1000.0)
    started(linfo.launch_dir, 2, t0=1000.0)
    fake.respond("squeue", 0, f"560_1|TO|TimeLimit|{local_text(1061, '%Y-%m-%dT%H:%M:%S')}\n")
    fake.respond("sacct", 0, f"560_2|OUT_OF_MEMORY|0:125|{local_text(1042, '%Y-%m-%dT%H:%M:%S')}\n")
    SlurmBackend().query([record])
    from onager.state import read_states
    states = read_states(linfo.launch_dir)
    assert (states[1].state, states[1].end) == ("timeout", 1061.0)
    assert (states[2].state, states[2].end) == ("oom", 1042.0)


def test_qacct_end_time_dates_the_cached_end(project, fake):
    record, linfo = launched(fake, "gridengine", "224", "3")
    started(linfo.launch_dir, 3, t0=1000.0)
    fake.respond("qstat", 0, "<?xml version='1.0'?><job_info><queue_info/><job_info/></job_info>")
    fake.respond("qacct", 0, QACCT.replace("taskid       3\n", "taskid       3\nend_time     "
                                           + local_text(1077, "%a %b %d %H:%M:%S %Y") + "\n"))
    GridEngineBackend().query([record])
    from onager.state import read_states
    assert (read_states(linfo.launch_dir)[3].state, read_states(linfo.launch_dir)[3].end) == ("killed", 1077.0)
