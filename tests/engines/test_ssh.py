"""The ssh backend on real sshd instances (ci/start-sshd.sh): two "hosts" on 127.0.0.1.

Skips when /tmp/onager-engines.env (or the environment) lacks ONAGER_TEST_SSHD_A/B.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from ssh_fixtures import (
    ENV,
    ROOT,
    SSHD_A,
    SSHD_B,
    SSHD_MARKS,
    dead_block,
    group_alive,
    kill_sshd,
    pids_matching,
    run_onager,
    start_files,
    throwaway_sshd,
    wait_for,
    write_config,
)

pytestmark = SSHD_MARKS

HOSTILE = ["it's a \"test\" {x} $HOME ; rm -rf /tmp/nothing", "`id` $(id) \\ \\n *  -x ~ é \t"]
PRINT_ARGV = (f"{sys.executable} -c 'import json,sys; a=sys.argv[1:]; print(json.dumps(a)); "
              f"sys.exit(3 if a[-1] == \"7\" else 0)'")
KILL_PORT, KILL_DIR = 2224, "/tmp/ci-sshd-kill"


@pytest.fixture
def cfg(project):
    """One ssh config with both test hosts and a dead alias (nothing listens on 2299)."""
    return write_config(str(project / "ssh_config"), [SSHD_A, SSHD_B], dead_block("ci-dead", 2299, SSHD_A))


def onager(project, *args, timeout=240):
    return run_onager(list(args), cwd=str(project), timeout=timeout)


def listing(project, job):
    out = onager(project, "list", "--json", "--jobname", job)
    assert out.returncode == 0, out.stderr
    return {row["task_id"]: row for row in json.loads(out.stdout)}


def launch_dir(project, job, launch="1"):
    return str(project / ".onager" / "launches" / job / launch)


def max_overlap(intervals):
    events = sorted([(s, 1) for s, e in intervals] + [(e, -1) for s, e in intervals], key=lambda x: (x[0], x[1]))
    most = now = 0
    for _, step in events:
        now += step
        most = max(most, now)
    return most


def test_sweep_of_20_tasks_over_two_hosts(project, cfg):
    assert onager(project, "prelaunch", "+jobname", "sw", "+command", PRINT_ARGV, "+pos-arg", *HOSTILE,
                  "+arg", "--i", *map(str, range(1, 11))).returncode == 0
    t0 = time.time()
    out = onager(project, "launch", "--backend", "ssh", "--jobname", "sw", "--hosts", "ci-sshd-a:2,ci-sshd-b:1",
                 "--ssh-config", cfg)
    elapsed = time.time() - t0
    assert out.returncode == 1, out.stderr            # two tasks fail on purpose
    assert "2 of 20 tasks failed" in out.stderr and "--tasklist failed" in out.stderr
    rows = listing(project, "sw")
    assert len(rows) == 20
    failed = {i for i, r in rows.items() if r["status"] == "failed"}
    assert failed == {i for i, r in rows.items() if r["params"]["i"] == 7} and len(failed) == 2
    assert all(rows[i]["exit"] == 3 for i in failed)
    assert all(r["status"] == "done" and r["exit"] == 0 for i, r in rows.items() if i not in failed)
    d = launch_dir(project, "sw")
    for task_id, row in rows.items():
        with open(os.path.join(d, "logs", f"{task_id}.out"), "rb") as handle:
            data = handle.read()
        pos = row["params"]["pos1"]
        assert json.loads(data.decode("utf-8")) == [pos, "--i", str(row["params"]["i"])], data
        assert pos in HOSTILE
    # logs works unchanged, byte for byte
    shown = onager(project, "logs", "sw", "1")
    assert shown.returncode == 0 and shown.stdout.encode() == Path(d, "logs", "1.out").read_bytes()
    # both hosts were used, never more tasks at once than their slots
    starts = start_files(d)
    by_host = {}
    from onager.state import read_states
    states = read_states(d)
    for task_id, contents in starts.items():
        host = contents[-1].split()[0]
        by_host.setdefault(host, []).append((states[task_id].start, states[task_id].end))
    assert set(by_host) == {"ci-sshd-a", "ci-sshd-b"}
    assert max_overlap(by_host["ci-sshd-a"]) <= 2 and max_overlap(by_host["ci-sshd-b"]) <= 1
    # the launch's files were removed from the hosts
    for host in ("ci-sshd-a", "ci-sshd-b"):
        left = subprocess.run(["ssh", "-F", cfg, host, "test -e .onager-remote/sw && echo left || echo gone"],
                              capture_output=True, text=True, timeout=60)
        assert left.stdout.strip() == "gone", left
    print(f"\n20 tasks on 2+1 slots: {elapsed:.1f} s")

    # --tasklist failed reruns exactly the two failures (still failing: exit 3)
    again = onager(project, "launch", "--backend", "ssh", "--jobname", "sw", "--tasklist", "failed",
                   "--hosts", "ci-sshd-b:2", "--ssh-config", cfg)
    assert again.returncode == 1 and "launched sw/2: 2 tasks" in again.stderr


def test_gpu_slots_get_their_own_cuda_visible_devices(project, cfg):
    assert onager(project, "prelaunch", "+jobname", "g", "+command",
                  "echo \"${CUDA_VISIBLE_DEVICES-unset}\"; sleep 0.3; true", "+arg", "--i",
                  *map(str, range(1, 9))).returncode == 0
    out = onager(project, "launch", "--backend", "ssh", "--jobname", "g", "--ssh-config", cfg,
                 "--hosts", "ci-sshd-a:2:gpus=0,1,ci-sshd-b:1:gpus=5-5")
    assert out.returncode == 0, out.stderr
    d = launch_dir(project, "g")
    from onager.state import read_states
    states = read_states(d)
    seen = {}
    for task_id, contents in start_files(d).items():
        gpu = Path(d, "logs", f"{task_id}.out").read_text().split()[0]
        host = contents[-1].split()[0]
        seen.setdefault((host, gpu), []).append((states[task_id].start, states[task_id].end))
    assert {h for h, _ in seen} == {"ci-sshd-a", "ci-sshd-b"}
    assert {g for h, g in seen if h == "ci-sshd-a"} <= {"0", "1"}
    assert {g for h, g in seen if h == "ci-sshd-b"} == {"5"}
    for intervals in seen.values():     # one GPU is never given to two running tasks
        assert max_overlap(intervals) == 1


def test_cancel_mid_run_leaves_no_remote_process(project, cfg):
    marker = f"onager-cancel-{uuid.uuid4().hex}"
    assert onager(project, "prelaunch", "+jobname", "c", "+command", f"sh -c 'sleep 120; true' {marker}",
                  "+arg", "--i", *map(str, range(1, 7))).returncode == 0
    out = onager(project, "launch", "--backend", "ssh", "--jobname", "c", "--hosts", "ci-sshd-a:2,ci-sshd-b:1",
                 "--ssh-config", cfg, "--detach")
    assert out.returncode == 0, out.stderr
    d = launch_dir(project, "c")
    assert wait_for(lambda: len(start_files(d)) == 3 and len(pids_matching(marker)) >= 3, 60), \
        (start_files(d), Path(d, "pool.log").read_text())
    pgids = [int(c[-1].split()[1]) for c in start_files(d).values()]
    assert all(group_alive(p) for p in pgids)
    running = listing(project, "c")
    assert sorted(r["status"] for r in running.values()) == ["pending"] * 3 + ["running"] * 3
    out = onager(project, "cancel", "--jobname", "c")
    assert out.returncode == 0, out.stderr
    assert wait_for(lambda: not pids_matching(marker), 20), pids_matching(marker)
    assert not any(group_alive(p) for p in pgids)
    # the dispatcher finished too, and never started the three pending tasks
    assert wait_for(lambda: json.loads(Path(d, "pool.json").read_text())["pid"] is None, 30)
    rows = listing(project, "c")
    assert all(r["status"] == "cancelled" for r in rows.values()), rows
    assert len(start_files(d)) == 3
    assert not pids_matching(marker)


def test_unreachable_host_is_reported_and_work_goes_to_the_others(project, cfg):
    assert onager(project, "prelaunch", "+jobname", "u", "+command", "echo ok", "+arg", "--i",
                  *map(str, range(1, 6))).returncode == 0
    # hosts and ssh config from the config file this time
    assert onager(project, "config", "--write", "ssh", "hosts", "ci-dead:4,ci-sshd-a:2",
                  "--write", "ssh", "ssh_config", cfg).returncode == 0
    out = onager(project, "launch", "--backend", "ssh", "--jobname", "u")
    assert out.returncode == 0, out.stderr
    assert "host ci-dead is unreachable (ssh: connect to host 127.0.0.1 port 2299: Connection refused); " \
           "skipping it" in out.stderr
    assert "Traceback" not in out.stderr
    rows = listing(project, "u")
    assert all(r["status"] == "done" for r in rows.values())
    assert {c[-1].split()[0] for c in start_files(launch_dir(project, "u")).values()} == {"ci-sshd-a"}


def test_no_reachable_host_is_one_clear_error(project, cfg):
    assert onager(project, "prelaunch", "+jobname", "n", "+command", "echo ok").returncode == 0
    out = onager(project, "launch", "--backend", "ssh", "--jobname", "n", "--hosts", "ci-dead", "--ssh-config", cfg)
    assert out.returncode == 1
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "no ssh host is reachable (ci-dead: ssh: connect to host 127.0.0.1 port 2299: " \
                               "Connection refused)" in lines[0], out.stderr


def test_wrong_host_key_is_refused(project, tmp_path):
    """Host keys are checked: sshd A presenting a key that known_hosts gives to another host is refused."""
    with open(os.path.join(SSHD_B, "known_hosts")) as handle:
        key = handle.readline().split(None, 1)[1]       # B's host key ...
    known = tmp_path / "wrong_known_hosts"
    known.write_text(f"[localhost]:{ENV.get('ONAGER_TEST_SSHD_A_PORT', '2222')} {key}")  # ... claimed for A
    # HostName localhost: another master socket name than ci-sshd-a's, so a fresh connection is checked
    bad = tmp_path / "bad_config"
    bad.write_text(f"Host spoofed\n    HostName localhost\n    Port {ENV.get('ONAGER_TEST_SSHD_A_PORT', '2222')}\n"
                   f"    User root\n    IdentityFile {SSHD_A}/client_key\n    IdentitiesOnly yes\n"
                   f"    UserKnownHostsFile {known}\n    StrictHostKeyChecking yes\n")
    out = onager(project, "hosts", "--hosts", "spoofed", "--ssh-config", str(bad))
    assert out.returncode == 1 and "Host key verification failed" in out.stdout, out.stdout


def test_hosts_table(project, cfg):
    out = onager(project, "hosts", "--hosts", "ci-sshd-a:2,ci-sshd-b:1", "--ssh-config", cfg)
    assert out.returncode == 0, out.stderr
    print("\n" + out.stdout)
    lines = out.stdout.splitlines()
    assert lines[0].split()[:3] == ["host", "reachable", "hostname"]
    rows = {line.split()[0]: line.split() for line in lines[2:]}
    assert set(rows) == {"ci-sshd-a", "ci-sshd-b"}
    cpus = str(os.cpu_count())
    assert all(r[1] == "yes" and r[3] == cpus for r in rows.values()), rows
    out = onager(project, "hosts", "--hosts", "ci-sshd-a,ci-dead", "--ssh-config", cfg, "--json")
    assert out.returncode == 1
    data = {r["host"]: r for r in json.loads(out.stdout)}
    assert data["ci-sshd-a"]["reachable"] and data["ci-sshd-a"]["cpus"] == os.cpu_count()
    assert not data["ci-dead"]["reachable"] and "Connection refused" in data["ci-dead"]["error"]


@pytest.fixture
def kill_host():
    """A THIRD, throw-away sshd (port 2224) that a test may kill; stopped afterwards in any case."""
    with throwaway_sshd(KILL_PORT, KILL_DIR) as directory:
        yield directory


def test_host_lost_mid_run_reruns_its_tasks_elsewhere(project, kill_host):
    cfg = write_config(str(project / "ssh_config"), [SSHD_A, kill_host])
    assert onager(project, "prelaunch", "+jobname", "k", "+command", "sleep 1; echo done-", "+arg", "--i",
                  *map(str, range(1, 21))).returncode == 0
    env = dict(os.environ, PYTHONPATH=ROOT)
    proc = subprocess.Popen([sys.executable, "-m", "onager", "launch", "--backend", "ssh", "--jobname", "k",
                             "--hosts", "ci-sshd-kill:2,ci-sshd-a:2", "--ssh-config", cfg],
                            cwd=str(project), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    d = launch_dir(project, "k")
    try:
        assert wait_for(lambda: os.path.isdir(os.path.join(d, "state")) and sum(
            1 for c in start_files(d).values() if c[-1].startswith("ci-sshd-kill ")) >= 2, 60)
        on_killed = {i for i, c in start_files(d).items() if c[-1].startswith("ci-sshd-kill ")}
        assert kill_sshd(kill_host)
        _, err = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "host ci-sshd-kill was lost" in err and "Traceback" not in err
    rows = listing(project, "k")
    assert len(rows) == 20 and all(r["status"] == "done" for r in rows.values()), rows
    starts = start_files(d)
    states = os.listdir(os.path.join(d, "state"))
    lost = {int(n.split(".")[0]) for n in states if ".lost@" in n and n.endswith("@host-lost")}
    assert lost and lost <= on_killed | {i for i, c in starts.items() if c[0].startswith("ci-sshd-kill ")}
    for task_id in lost:  # ran again, on the host that is left, and its output is there
        assert starts[task_id][-1].startswith("ci-sshd-a ")
        assert "done-" in Path(d, "logs", f"{task_id}.out").read_text()


def test_snapshot_is_sent_once_and_tasks_run_the_frozen_code(project, cfg):
    """--snapshot: the code as it was at launch reaches the host with the launch, not the edited file."""
    (project / "value.txt").write_text("frozen\n")
    (project / "show.sh").write_text('cat value.txt; pwd\n')
    assert onager(project, "prelaunch", "+jobname", "snap", "+command", "sh show.sh", "+arg", "--i", "1", "2",
                  "+q").returncode == 0
    out = onager(project, "launch", "--backend", "ssh", "--jobname", "snap", "--hosts", "ci-sshd-a:1",
                 "--ssh-config", cfg, "--snapshot", "--detach")
    assert out.returncode == 0, out.stderr
    (project / "value.txt").write_text("edited after launch\n")
    assert onager(project, "wait", "--jobname", "snap", "--timeout", "120", "--interval", "0.5").returncode == 0
    for task in ("1", "2"):
        lines = onager(project, "logs", "snap", task).stdout.splitlines()
        assert lines[0] == "frozen"
        assert "/.onager-remote/" in lines[1] and lines[1].endswith("/code")
