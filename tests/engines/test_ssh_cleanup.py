"""Issue 12, item 3: remote launch dirs do not stay behind on ssh hosts (real sshd).

An interrupted foreground dispatcher (SIGINT, SIGTERM, SIGHUP) removes them before it
exits; a host lost mid-run keeps its dir until the next contact (`onager hosts --clean`
here, or the next launch) removes it. Each test uses its own absolute --remote-dir, so
the "remote" side can be checked on this machine (the test sshd's run on 127.0.0.1).
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid

import pytest
from ssh_fixtures import (
    ROOT,
    SSHD_A,
    SSHD_B,
    SSHD_MARKS,
    kill_sshd,
    pids_matching,
    run_onager,
    start_files,
    start_sshd,
    throwaway_sshd,
    wait_for,
    write_config,
)

pytestmark = SSHD_MARKS
KILL_PORT, KILL_DIR = 2225, "/tmp/ci-sshd-kill-cleanup"


@pytest.fixture
def remote_base():
    path = f"/tmp/onager-remote-test-{uuid.uuid4().hex[:12]}"
    yield path
    subprocess.run(["rm", "-rf", path])


def onager(project, *args, timeout=240):
    return run_onager(list(args), cwd=str(project), timeout=timeout)


def launch_remote(remote_base, job, launch="1"):
    """The remote dir of a launch: <base>/<job>/<launch>-<project hash + nonce> (one such dir)."""
    folder = os.path.join(remote_base, job)
    found = [n for n in os.listdir(folder) if n.startswith(launch + "-")] if os.path.isdir(folder) else []
    assert len(found) == 1, found
    return os.path.join(folder, found[0])


def ledger(project, job, launch="1"):
    folder = os.path.join(str(project), ".onager", "launches", job, launch, "remote-dirs")
    return sorted(os.listdir(folder)) if os.path.isdir(folder) else []


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_interrupted_dispatcher_removes_its_remote_dirs(project, remote_base, sig):
    cfg = write_config(str(project / "ssh_config"), [SSHD_A, SSHD_B])
    marker = f"onager-intr-{uuid.uuid4().hex}"
    assert onager(project, "prelaunch", "+jobname", "intr", "+command", f"sh -c 'sleep 120; true' {marker}",
                  "+arg", "--i", *map(str, range(1, 6))).returncode == 0
    env = dict(os.environ, PYTHONPATH=ROOT)
    proc = subprocess.Popen([sys.executable, "-m", "onager", "launch", "--backend", "ssh", "--jobname", "intr",
                             "--hosts", "ci-sshd-a:2,ci-sshd-b:1", "--ssh-config", cfg, "--remote-dir", remote_base],
                            cwd=str(project), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    d = os.path.join(str(project), ".onager", "launches", "intr", "1")
    try:
        assert wait_for(lambda: os.path.isdir(os.path.join(d, "state")) and len(start_files(d)) == 3
                        and len(pids_matching(marker)) >= 3, 90)
        assert sorted(os.listdir(launch_remote(remote_base, "intr"))) == ["ci-sshd-a", "ci-sshd-b"]
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert wait_for(lambda: not pids_matching(marker), 20), pids_matching(marker)
    assert not os.path.exists(remote_base), os.listdir(remote_base)
    assert ledger(project, "intr") == []


@pytest.fixture
def kill_host():
    """A throw-away sshd that the test kills and starts again (a host lost, then back)."""
    with throwaway_sshd(KILL_PORT, KILL_DIR) as directory:
        yield directory


def test_dir_left_on_a_lost_host_is_removed_when_it_is_back(project, remote_base, kill_host):
    cfg = write_config(str(project / "ssh_config"), [SSHD_A, kill_host])
    alias = "ci-sshd-kill-cleanup"
    with open(cfg) as handle:
        assert f"Host {alias}" in handle.read()
    assert onager(project, "prelaunch", "+jobname", "lost", "+command", "sleep 1; echo done-", "+arg", "--i",
                  *map(str, range(1, 13))).returncode == 0
    env = dict(os.environ, PYTHONPATH=ROOT)
    proc = subprocess.Popen([sys.executable, "-m", "onager", "launch", "--backend", "ssh", "--jobname", "lost",
                             "--hosts", f"{alias}:2,ci-sshd-a:2", "--ssh-config", cfg, "--remote-dir", remote_base],
                            cwd=str(project), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    d = os.path.join(str(project), ".onager", "launches", "lost", "1")
    try:
        assert wait_for(lambda: os.path.isdir(os.path.join(d, "state")) and any(
            c[-1].startswith(alias + " ") for c in start_files(d).values()), 90)
        assert kill_sshd(kill_host)
        _, err = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert f"host {alias} was lost" in err
    # the host that stayed is clean; the lost one still has the dir, and the ledger says so
    lost_dir = launch_remote(remote_base, "lost")
    assert os.listdir(lost_dir) == [alias]
    assert ledger(project, "lost") == [alias + ".json"]
    # the host comes back: the next contact removes what the finished launch left there
    start_sshd(KILL_PORT, kill_host)
    out = onager(project, "hosts", "--hosts", f"{alias},ci-sshd-a", "--ssh-config", cfg, "--clean")
    assert out.returncode == 0, out.stderr
    assert f"removed {lost_dir}/{alias} on {alias} (left by lost/1)" in out.stderr
    assert not os.path.exists(remote_base)
    assert ledger(project, "lost") == []
    again = onager(project, "hosts", "--hosts", alias, "--ssh-config", cfg, "--clean")
    assert again.returncode == 0 and "no remote launch dir left behind" in again.stderr


def test_next_launch_removes_dirs_a_killed_dispatcher_left(project, remote_base):
    cfg = write_config(str(project / "ssh_config"), [SSHD_A, SSHD_B])
    marker = f"onager-k9-{uuid.uuid4().hex}"
    assert onager(project, "prelaunch", "+jobname", "k9", "+command", f"sh -c 'sleep 120; true' {marker}",
                  "+arg", "--i", "1", "2").returncode == 0
    env = dict(os.environ, PYTHONPATH=ROOT)
    proc = subprocess.Popen([sys.executable, "-m", "onager", "launch", "--backend", "ssh", "--jobname", "k9",
                             "--hosts", "ci-sshd-a:1,ci-sshd-b:1", "--ssh-config", cfg, "--remote-dir", remote_base],
                            cwd=str(project), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    d = os.path.join(str(project), ".onager", "launches", "k9", "1")
    try:
        assert wait_for(lambda: os.path.isdir(os.path.join(d, "state")) and len(start_files(d)) == 2, 90)
        proc.kill()  # kill -9: no cleanup at all
        proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    # the runners see their stdin close and stop the tasks; the dirs stay
    assert wait_for(lambda: not pids_matching(marker), 30), pids_matching(marker)
    assert sorted(os.listdir(launch_remote(remote_base, "k9"))) == ["ci-sshd-a", "ci-sshd-b"]
    assert onager(project, "prelaunch", "+jobname", "next", "+command", "true").returncode == 0
    out = onager(project, "launch", "--backend", "ssh", "--jobname", "next", "--hosts", "ci-sshd-a,ci-sshd-b",
                 "--ssh-config", cfg, "--remote-dir", remote_base)
    assert out.returncode == 0, out.stderr
    assert "removed 2 remote launch dir(s) left behind: k9/1 on ci-sshd-a, k9/1 on ci-sshd-b" in out.stderr
    assert not os.path.exists(remote_base)
    assert ledger(project, "k9") == [] and ledger(project, "next") == []
