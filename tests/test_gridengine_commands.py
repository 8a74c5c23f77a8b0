"""Grid Engine backend without SGE: exact qsub/qdel texts (golden files), fake qsub/qstat/qdel."""
from __future__ import annotations

import json
import os

import pytest
from support import golden, install_fake_scheduler, text

from onager.backends.base import LaunchInfo
from onager.backends.gridengine import GridEngineBackend, cut_block, hms, parse_qstat_xml, sge_state
from onager.errors import OnagerError, UsageError
from onager.index import JobIndex, LaunchRecord
from onager.state import read_states
from onager.tasklist import Tasklist

LAUNCH_DIR = "/work/exp/.onager/launches/test-eqw/1"


def info(tasks: str, jobname: str = "test-eqw", **options) -> LaunchInfo:
    tl = Tasklist.parse(tasks)
    return LaunchInfo(jobname, "1", LAUNCH_DIR, LAUNCH_DIR + "/wrapper.sh", tl, len(tl), "/work/exp", options)


@pytest.mark.parametrize("name, tasks, options", [
    ("gridengine_default.txt", "1-1000", {"duration": "00:02:00"}),
    ("gridengine_eqw_relaunch.txt", "35-40:1,57,138-201:1", {"duration": "00:02:00"}),
    ("gridengine_options.txt", "1-3:1,5,8-20:2",
     {"cpus": 4, "pe": "smp", "mem": "3", "mem_resource": "h_vmem", "gpus": "2", "gpu_resource": "gpu",
      "queue": "short.q", "max_tasks": 5, "duration": "2-00:00:00", "hold_jid": "77,78",
      "extra": ["-P", "proj", "-l", "scratch=10G"]}),
    ("gridengine_max_aj_tasks.txt", "1-25", {"max_aj_tasks": 10}),
    ("gridengine_tasks_per_node.txt", "1-10", {"tasks_per_node": 4, "max_tasks_per_node": 2, "cpus": 2,
                                               "pe": "smp", "mem": "1G", "mem_resource": "h_vmem"}),
])
def test_qsub_golden(name, tasks, options):
    options.setdefault("max_aj_tasks", 75000)
    assert text(GridEngineBackend(options).submit_commands(info(tasks, **options))) == golden(name)


def test_readme_eqw_cancel_form():
    commands = GridEngineBackend().cancel_job_commands("2323537", Tasklist.parse("35-40:1,57,138-201:1"))
    assert text(commands) == golden("gridengine_cancel_jobid.txt")
    assert commands == [["qdel", "2323537", "-t", "35-40:1"], ["qdel", "2323537", "-t", "57"],
                        ["qdel", "2323537", "-t", "138-201:1"]]
    assert GridEngineBackend().cancel_job_commands("5", None) == [["qdel", "5"]]


def test_readme_eqw_cancel_form_through_cli(onager):
    out = onager("cancel", "--backend", "gridengine", "--jobid", "2323537", "--tasklist", "35-40:1,57,138-201:1",
                 "--dry-run")
    assert out.returncode == 0, out.stderr
    assert out.stdout == golden("gridengine_cancel_jobid.txt")


def test_job_name_starting_with_a_digit_is_prefixed():
    command = GridEngineBackend({"max_aj_tasks": 75000}).submit_commands(info("1", jobname="1st"))[0]
    assert command[command.index("-N") + 1] == "onager_1st"


@pytest.mark.parametrize("options, words", [
    ({"partition": "gpu"}, "--queue"),
    ({"duration": "1h"}, "--duration"),
])
def test_missing_site_names_are_usage_errors(options, words):
    options["max_aj_tasks"] = 75000
    with pytest.raises(UsageError, match=words):
        GridEngineBackend(options).submit_commands(info("1-3"))


def test_config_keys_are_defaults(onager):
    onager("prelaunch", "+jobname", "j", "+command", "echo", "+arg", "--n", "1", "2")
    assert onager("config", "--write", "gridengine", "pe", "smp", "--write", "gridengine", "mem_resource",
                  "h_vmem").returncode == 0
    out = onager("launch", "--backend", "gridengine", "--jobname", "j", "--cpus", "2", "--mem", "4G", "--dry-run")
    assert out.returncode == 0, out.stderr
    assert "-pe smp 2 -l h_vmem=4G" in out.stdout


def test_values():
    assert hms(3600) == "1:00:00" and hms(172800 + 61) == "48:01:01"
    assert cut_block((1, 25, 1), 10) == [(1, 10, 1), (11, 20, 1), (21, 25, 1)]
    assert cut_block((3, 30, 3), 4) == [(3, 12, 3), (15, 24, 3), (27, 30, 3)]
    assert [sge_state(s) for s in ("Eqw", "E", "qw", "hqw", "r", "t", "Rr", "dr", "s")] == [
        "error", "error", "pending", "pending", "running", "running", "running", "running", "running"]


QSTAT_XML = """<?xml version='1.0'?>
<job_info>
  <queue_info>
    <job_list state="running"><JB_job_number>11</JB_job_number><state>r</state><tasks>2</tasks></job_list>
    <job_list state="running"><JB_job_number>99</JB_job_number><state>r</state><tasks>1</tasks></job_list>
  </queue_info>
  <job_info>
    <job_list state="pending"><JB_job_number>11</JB_job_number><state>qw</state><tasks>3-9:3</tasks></job_list>
    <job_list state="pending"><JB_job_number>12</JB_job_number><state>Eqw</state><tasks>35-40:1,57</tasks></job_list>
    <job_list state="pending"><JB_job_number>13</JB_job_number><state>qw</state></job_list>
  </job_info>
</job_info>
"""


def test_parse_qstat_xml():
    rows = [(j, list(t), s) for j, t, s in parse_qstat_xml(QSTAT_XML)]
    assert rows == [("11", [2], "running"), ("99", [1], "running"), ("11", [3, 6, 9], "pending"),
                    ("12", [35, 36, 37, 38, 39, 40, 57], "error")]
    with pytest.raises(OnagerError, match="not XML"):
        parse_qstat_xml("error: commlib error")


@pytest.fixture
def fake(tmp_path, monkeypatch):
    return install_fake_scheduler(tmp_path, monkeypatch)


def prepared(tasks="1-12", **options):
    from onager import launch as launchmod
    os.makedirs(".onager/scripts/exp", exist_ok=True)
    with open(".onager/scripts/exp/jobs.json", "w") as handle:
        json.dump({str(i): [f"echo task {i}", f"exp_{i}", {}] for i in range(1, 61)}, handle)
    return launchmod.prepare("exp", "gridengine", options, tasks)


def test_max_aj_tasks_read_from_qconf(fake):
    fake.respond("qconf", 0, "execd_spool_dir /var\nmax_aj_instances 2000\nmax_aj_tasks 11\n")
    commands = GridEngineBackend().submit_commands(info("1-30"))
    assert [c[c.index("-t") + 1] for c in commands] == ["1-11:1", "12-22:1", "23-30:1"]


def test_submit_one_qsub_per_block(project, fake):
    from onager import launch as launchmod
    fake.respond("qsub", [0, "21.35-40:1\n"], [0, "22.57-57:1\n"], [0, "23\n"])
    backend, linfo = prepared("35-40:1,57,50-55", max_aj_tasks=75000)
    record = launchmod.submit(backend, linfo)
    assert record.job_ids == ["21", "22", "23"]
    assert [c[c.index("-t") + 1] for c in fake.calls() if c[0] == "qsub"] == ["35-40:1", "50-55:1", "57"]


def test_refused_qsub_leaves_nothing_and_deletes_earlier_blocks(project, fake):
    from onager import launch as launchmod
    fake.respond("qsub", [0, "31.1-3:1\n"], [1, "", "Unable to run job: job rejected: the requested parallel "
                                                   "environment \"nosuch\" does not exist.\nExiting.\n"])
    backend, linfo = prepared("1-3,5", max_aj_tasks=75000)
    with pytest.raises(OnagerError, match="Exiting|parallel environment"):
        launchmod.submit(backend, linfo)
    assert ["qdel", "31"] in fake.calls()
    assert JobIndex().records() == [] and not os.path.exists(linfo.launch_dir)


def test_eqw_shows_as_error_in_list(onager, fake):
    onager("prelaunch", "+jobname", "e", "+command", "echo", "+arg", "--n", *map(str, range(1, 11)))
    fake.respond("qsub", 0, "41.1-10:1\n")
    fake.respond("qconf", 0, "max_aj_tasks 75000\n")
    assert onager("launch", "--backend", "gridengine", "--jobname", "e").returncode == 0
    fake.respond("qstat", 0, QSTAT_XML.replace(">12<", ">41<").replace(">11<", ">40<").replace(
        "35-40:1,57", "3-5:1,9"))
    out = onager("list", "--json")
    assert out.returncode == 0, out.stderr
    status = {r["task_id"]: r["status"] for r in json.loads(out.stdout)}
    assert status == {1: "lost", 2: "lost", 3: "error", 4: "error", 5: "error", 6: "lost", 7: "lost",
                      8: "lost", 9: "error", 10: "lost"}
    assert sum(1 for c in fake.calls() if c[0] == "qstat") == 1


def test_cancel_blocks_per_job_and_marks(project, fake):
    from onager import launch as launchmod
    fake.respond("qsub", [0, "51.1-10:1\n"], [0, "52.20-30:2\n"])
    backend, linfo = prepared("1-10,20-30:2", max_aj_tasks=75000)
    record = launchmod.submit(backend, linfo)
    open(os.path.join(linfo.launch_dir, "state", "2.end@1.0@0"), "w").close()
    fake.respond("qdel", [0, "ok\n"], [1, "", 'denied: job "52" does not exist\n'])
    commands = GridEngineBackend(record.options).cancel(record, Tasklist.parse("1-4,7,22-26:2"))
    assert commands == [["qdel", "51", "-t", "1"], ["qdel", "51", "-t", "3-4:1"], ["qdel", "51", "-t", "7"],
                        ["qdel", "52", "-t", "22-26:2"]]
    states = read_states(linfo.launch_dir)
    assert sorted(i for i, s in states.items() if s.cancelled) == [1, 3, 4, 7, 22, 24, 26]


def test_query_unreachable_qmaster_is_unknown(project, fake):
    fake.respond("qstat", 1, "", "error: unable to contact qmaster using port 6444 on host \"h\"\n")
    _, linfo = prepared("1-3", max_aj_tasks=75000)
    record = LaunchRecord("exp", "1", "gridengine", linfo.launch_dir, "1-3", 3, 0.0, ["5"], {})
    assert GridEngineBackend().query([record]) == {record.key: None}
