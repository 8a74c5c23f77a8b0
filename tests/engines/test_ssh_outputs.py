"""Issue 13, item 5 on real sshd: remote dirs unique per project and launch, outputs come home.

Two projects launching a job of the same name on one host run side by side (each task runs
its own project's command exactly once), `onager results` shows the metrics that ssh tasks
logged with `onager.log_result`, and `--fetch GLOB` brings files back before the remote dir
is removed. Job names are unique to these tests (the sshd hosts are shared).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

from ssh_fixtures import ROOT, SSHD_A, SSHD_B, SSHD_MARKS, engines_env, run_onager, write_config

pytestmark = SSHD_MARKS


def _env(project) -> dict:
    env = dict(os.environ)
    env.update(engines_env())
    env["ONAGER_GLOBAL_CONFIG"] = str(project / "global.onagerconfig")
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _statuses(project, job):
    out = run_onager(["list", "--json", "--jobname", job], cwd=str(project), timeout=120)
    assert out.returncode == 0, out.stderr
    return {row["task_id"]: row["status"] for row in json.loads(out.stdout)}


def test_two_projects_same_job_on_one_host_run_side_by_side(tmp_path):
    job = "w2c-side-by-side"
    projects = [tmp_path / "alpha", tmp_path / "beta"]
    for project in projects:
        (project / "runs").mkdir(parents=True)
        write_config(str(project / "ssh_config"), [SSHD_A])
        # each task appends one line to its own marker: a task run twice, or a task that
        # ran the other project's command, shows in the counts
        command = f"sleep 2; echo run >> {project}/runs/$ONAGER_TASK_ID; true"
        out = run_onager(["prelaunch", "+jobname", job, "+command", command, "+arg", "--i", "1", "2", "3", "4"],
                         cwd=str(project), timeout=120)
        assert out.returncode == 0, out.stderr
    procs = [subprocess.Popen([sys.executable, "-m", "onager", "launch", "--backend", "ssh", "--jobname", job,
                               "--hosts", "ci-sshd-a:2", "--ssh-config", str(p / "ssh_config")],
                              cwd=str(p), env=_env(p), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for p in projects]
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err.decode()
    for project in projects:
        assert _statuses(project, job) == {1: "done", 2: "done", 3: "done", 4: "done"}
        runs = {name: (project / "runs" / name).read_text().splitlines() for name in os.listdir(project / "runs")}
        assert runs == {str(i): ["run"] for i in range(1, 5)}, (project, runs)
        # the remote dir of each launch is gone, and was not the other's
        ledger = project / ".onager" / "launches" / job / "1" / "remote-dirs"
        assert not ledger.exists() or not os.listdir(ledger)


def test_results_and_fetched_files_come_home(tmp_path):
    project = tmp_path / "proj"
    project.mkdir()
    cfg = write_config(str(project / "ssh_config"), [SSHD_A, SSHD_B])
    job = "w2c-outputs"
    script = ("import onager, os, sys; i = int(sys.argv[-1]); onager.log_result(acc=i / 10, step=i); "
              "os.makedirs('out', exist_ok=True); open(f'out/{i}.txt', 'w').write(f'out {i}\\n')")
    command = f"{sys.executable} -c {script!r}"
    out = run_onager(["prelaunch", "+jobname", job, "+command", command, "+arg", "--i", "1", "2", "3"],
                     cwd=str(project), timeout=120)
    assert out.returncode == 0, out.stderr
    out = run_onager(["launch", "--backend", "ssh", "--jobname", job, "--hosts", "ci-sshd-a:2,ci-sshd-b:1",
                      "--ssh-config", cfg, "--fetch", "*.nothing", "--fetch", "../x/*"], cwd=str(project), timeout=120)
    assert out.returncode == 2 and "--fetch" in out.stderr, out.stderr  # `..` refused, nothing written
    assert not (project / ".onager" / "launches").exists()
    # log_result records come home with no option at all
    out = run_onager(["launch", "--backend", "ssh", "--jobname", job, "--hosts", "ci-sshd-a:2,ci-sshd-b:1",
                      "--ssh-config", cfg], cwd=str(project), timeout=240)
    assert out.returncode == 0, out.stderr
    shown = run_onager(["results", job, "--json"], cwd=str(project), timeout=120)
    assert shown.returncode == 0, shown.stderr
    rows = {row["i"]: row for row in json.loads(shown.stdout)}
    assert {i: (rows[i].get("acc"), rows[i].get("step")) for i in rows} == {1: (0.1, 1), 2: (0.2, 2), 3: (0.3, 3)}, rows
    # --fetch is relative to the task's workdir (the project dir, the same path on the hosts here)
    out = run_onager(["launch", "--backend", "ssh", "--jobname", job, "--hosts", "ci-sshd-a:2,ci-sshd-b:1",
                      "--ssh-config", cfg, "--fetch", "out/*.txt", "--fetch", "*.nothing"],
                     cwd=str(project), timeout=240)
    assert out.returncode == 0, out.stderr
    fetched = project / ".onager" / "launches" / job / "2" / "fetched"
    found = {}
    for host in os.listdir(fetched):
        for name in os.listdir(fetched / host / "out"):
            found[name] = (fetched / host / "out" / name).read_text()
    assert found == {f"{i}.txt": f"out {i}\n" for i in (1, 2, 3)}


def test_results_and_fetched_files_come_home_on_ctrl_c(tmp_path):
    import signal
    import time
    import uuid

    from ssh_fixtures import pids_matching, start_files, wait_for

    project = tmp_path / "proj"
    project.mkdir()
    cfg = write_config(str(project / "ssh_config"), [SSHD_A])
    job = "w2c-outputs-intr"
    marker = f"w2c-intr-{uuid.uuid4().hex}"
    script = ("import onager, sys, time; i = int(sys.argv[-1]); onager.log_result(acc=i); "
              "open(f'part{i}.txt', 'w').write('partial'); time.sleep(120)")
    command = f"{sys.executable} -c {script!r} {marker}"
    out = run_onager(["prelaunch", "+jobname", job, "+command", command, "+arg", "--i", "1", "2"],
                     cwd=str(project), timeout=120)
    assert out.returncode == 0, out.stderr
    proc = subprocess.Popen([sys.executable, "-m", "onager", "launch", "--backend", "ssh", "--jobname", job,
                             "--hosts", "ci-sshd-a:2", "--ssh-config", cfg, "--fetch", "part*.txt"],
                            cwd=str(project), env=_env(project), stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    d = str(project / ".onager" / "launches" / job / "1")
    try:
        assert wait_for(lambda: os.path.isdir(os.path.join(d, "state")) and len(start_files(d)) == 2
                        and len(pids_matching(marker)) >= 2, 90)
        assert wait_for(lambda: all((project / f"part{i}.txt").exists() for i in (1, 2)), 30)
        time.sleep(1)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, err
    shown = run_onager(["results", job, "--json"], cwd=str(project), timeout=120)
    assert shown.returncode == 0, shown.stderr
    assert {row["i"]: row.get("acc") for row in json.loads(shown.stdout)} == {1: 1, 2: 2}, shown.stdout
    assert sorted(os.listdir(os.path.join(d, "fetched", "ci-sshd-a"))) == ["part1.txt", "part2.txt"]
