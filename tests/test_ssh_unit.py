"""The ssh backend without an sshd: host specs, quoting, the marker filter, the runner, and
whole launches through a stand-in `ssh` that runs the remote command locally in a per-host
directory (so the dispatcher, lost hosts and cancel are tested on any laptop)."""
from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import subprocess
import sys
import time

import pytest
from support import live_in_group

from onager.backends import ssh
from onager.errors import OnagerError, UsageError
from onager.tasklist import Tasklist
from onager.wrapper import wrapper_text


def _root_conftest():
    """tests/conftest.py by path: with tests/engines/conftest.py present, `import conftest` may be that one."""
    import importlib.util
    name = "onager_tests_root_conftest"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            name, os.path.join(os.path.dirname(os.path.abspath(__file__)), "conftest.py"))
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        sys.modules[name] = module
    return sys.modules[name]


ROOT = _root_conftest().ROOT
run_onager = _root_conftest().run_onager

HOSTILE = ["it's a \"test\" {x} $HOME ; rm -rf /tmp/nothing", "`id` $(id) \\ \\n * -x ~ é\t'\"'"]


# ------------------------------------------------------------------ host specs
def test_parse_hosts_forms():
    specs = ssh.parse_hosts("gpu1:4,gpu2:2:gpus=0,1,user@host3:8 box4  alias-5:gpus=auto:3")
    assert [(s.target, s.slots, s.gpus) for s in specs] == [
        ("gpu1", 4, None), ("gpu2", 2, "0,1"), ("user@host3", 8, None), ("box4", None, None),
        ("alias-5", 3, "auto")]
    assert ssh.parse_hosts("a:gpus=2-3,b")[0].gpus == "2,3"
    assert ssh.parse_hosts("a:gpus=3-3")[0].gpus == "3,"       # GPU 3 alone
    assert ssh.parse_hosts("a:gpus=4")[0].gpus == "4"           # a count, like --gpus 4
    assert ssh.parse_hosts("a:gpus=0,1,2,3,b:2")[1].target == "b"


@pytest.mark.parametrize("text, words", [
    ("", "needs hosts"), ("-oProxyCommand=touch /tmp/x", "bad host"), ("a b;c", "bad host"),
    ("a:0", "at least 1"), ("a:2:3", "bad field"), ("a:fast", "bad field"), ("a,a:2", "listed twice"),
    ("a:gpus=x", "bad gpus"), ("a:gpus=3-1", "low-high"), ("user@-x", "bad host"), ("a/b", "bad host"),
])
def test_parse_hosts_rejects(text, words):
    with pytest.raises(UsageError) as err:
        ssh.parse_hosts(text)
    assert words in str(err.value) and "\n" not in str(err.value)


def test_slots_and_gpus():
    assert ssh.slot_gpus(None, [], 3, None, "h") == (3, [None] * 3)
    assert ssh.slot_gpus(None, [], None, None, "h", cpus=5) == (5, [None] * 5)
    assert ssh.slot_gpus("none", ["0", "1"], 2, None, "h") == (2, [None, None])
    # GPUs found, nothing said: one GPU per slot, shared when slots outnumber GPUs
    assert ssh.slot_gpus(None, ["0", "1"], 3, None, "h") == (3, ["0", "1", "0"])
    assert ssh.slot_gpus("auto", ["0", "1"], None, None, "h") == (2, ["0", "1"])
    # explicit GPUs: each slot its own, slots capped by GPU groups
    assert ssh.slot_gpus("0,1,2,3", [], 8, None, "h") == (4, ["0", "1", "2", "3"])
    assert ssh.slot_gpus("0,1,2,3", [], None, 2, "h") == (2, ["0,1", "2,3"])
    assert ssh.slot_gpus("4", [], 1, None, "h") == (1, ["0"])
    assert ssh.slot_gpus("5,", [], 1, None, "h") == (1, ["5"])
    assert ssh.slot_gpus(None, ["0", "1", "2"], None, 2, "h") == (1, ["0,1"])
    with pytest.raises(OnagerError, match="fewer than --gpus-per-task 2"):
        ssh.slot_gpus(None, [], 2, 2, "h")


# ------------------------------------------------------------------ quoting
@pytest.mark.parametrize("remote_dir", ["~/.onager-remote", "/abs/with space", "rel/it's \"x\" $HOME;`id`"])
def test_task_command_reaches_the_remote_shell_intact(remote_dir):
    remote = ssh.remote_dir_of({"remote_dir": remote_dir}, "job", "3", "user_host")
    text = ssh.task_command(remote, 7, "abc123", "0,1")
    # the remote shell sees exactly these words (ssh passes the one string to it)
    assert shlex.split(text) == ["exec", "bash", remote + "/onager-run.sh", "7", "abc123", "0,1"]
    words = subprocess.run(["bash", "-c", text.replace("exec bash", "printf '%s\\n'", 1)],
                           capture_output=True, text=True).stdout.splitlines()
    assert words == [remote + "/onager-run.sh", "7", "abc123", "0,1"]
    assert remote.endswith("/job/3/user_host") and not remote.startswith("~")


def test_remote_dir_forms():
    assert ssh.remote_dir_of({}, "j", "1", "h") == ".onager-remote/j/1/h"
    assert ssh.remote_dir_of({"remote_dir": "/scratch/me/"}, "j", "1", "h") == "/scratch/me/j/1/h"
    with pytest.raises(UsageError, match="remote-dir"):
        ssh.remote_dir_of({"remote_dir": "~other/x"}, "j", "1", "h")


def test_ssh_base_is_batch_mode_shared_and_checks_host_keys():
    argv = ssh.ssh_base({"ssh_config": "cfg"})
    text = " ".join(argv)
    assert argv[:3] == ["ssh", "-F", os.path.abspath("cfg")]
    assert "BatchMode=yes" in text and "ControlMaster=no" in text and "StrictHostKeyChecking" not in text
    path = next(a for a in argv if a.startswith("ControlPath="))[len("ControlPath="):]
    assert len(path.replace("%C", "x" * 40)) < 100 and oct(os.stat(os.path.dirname(path)).st_mode)[-3:] == "700"
    master = " ".join(ssh.ssh_base({}, group=2, master=True))
    assert "ControlMaster=auto" in master and "ControlPersist=" in master and "%C-2" in master
    unsafe = " ".join(ssh.ssh_base({"ssh_no_host_key_check": True}))
    assert "StrictHostKeyChecking=no" in unsafe and "UserKnownHostsFile=/dev/null" in unsafe


def test_host_wrapper_keeps_output_on_the_channel(tmp_path):
    (tmp_path / "wrapper.sh").write_text(wrapper_text(str(tmp_path), "j", "1", "/w"))
    text = ssh.host_wrapper(str(tmp_path)).decode()
    assert ssh.WRAPPER_LOG_LINE not in text and 'cd /w' in text
    assert text.replace(": # ssh: output goes to the channel, the dispatcher writes the logs",
                        ssh.WRAPPER_LOG_LINE) == (tmp_path / "wrapper.sh").read_text()


def test_kill_command_kills_a_whole_process_group():
    proc = subprocess.Popen(["bash", "-c", "trap '' TERM; sleep 60 & sleep 60 & wait"], start_new_session=True)
    time.sleep(0.3)
    t0 = time.time()
    subprocess.run(["bash", "-c", ssh.kill_command([proc.pid], grace=0.5)], check=True, timeout=20)
    assert proc.wait(timeout=10) == -signal.SIGKILL    # TERM ignored: KILL after the grace time
    assert time.time() - t0 < 5
    assert not live_in_group(proc.pid)


# ------------------------------------------------------------------ marker filter
def _filter_all(chunks, nonce="n0nce"):
    out, events = [], []
    flt = ssh._MarkerFilter(nonce, out.append, lambda w, v: events.append((w, v)))
    for chunk in chunks:
        flt.feed(chunk)
    flt.close()
    return b"".join(out), events


def test_marker_filter_in_any_chunking():
    payload = b"n0nce start 42\nline one\nn0nc partial n0 no newline at end"
    stream = payload + b"n0nce end 3\n"
    for size in (1, 2, 3, 7, 1000):
        data, events = _filter_all([stream[i:i + size] for i in range(0, len(stream), size)])
        assert data == b"line one\nn0nc partial n0 no newline at end"
        assert events == [("start", "42"), ("end", "3")]
    data, events = _filter_all([b"output ends in n0n"])
    assert data == b"output ends in n0n" and events == []


# ------------------------------------------------------------------ through a stand-in ssh
FAKE_SSH = r"""#!/bin/bash
# stand-in for ssh: runs the remote command here, in $FAKE_SSH_ROOT/<host> as its home
while [ $# -gt 0 ]; do case $1 in -F|-o|-p|-i|-l) shift 2;; -*) shift;; *) break;; esac; done
host=$1; shift
if [ -e "$FAKE_SSH_ROOT/down-$host" ]; then
    echo "ssh: connect to host $host port 22: Connection refused" >&2; exit 255
fi
if [ -e "$FAKE_SSH_ROOT/broken-$host" ] && [[ "$*" == *onager-run.sh* ]]; then
    echo "bash: onager-run.sh: No such file or directory" >&2; exit 127
fi
mkdir -p "$FAKE_SSH_ROOT/$host" && cd "$FAKE_SSH_ROOT/$host" || exit 255
HOME=$FAKE_SSH_ROOT/$host exec bash -c "$*"
"""


@pytest.fixture
def fake(project, tmp_path_factory):
    bindir = tmp_path_factory.mktemp("fakebin")
    (bindir / "ssh").write_text(FAKE_SSH)
    (bindir / "ssh").chmod(0o755)
    root = tmp_path_factory.mktemp("hosts")
    env = {"PATH": f"{bindir}{os.pathsep}{os.environ['PATH']}", "FAKE_SSH_ROOT": str(root)}

    def call(*args, timeout=120):
        return run_onager(list(args), cwd=str(project), env=env, timeout=timeout)

    call.root = root
    call.env = env
    return call


def _rows(fake, job):
    out = fake("list", "--json", "--jobname", job)
    assert out.returncode == 0, out.stderr
    return {r["task_id"]: r for r in json.loads(out.stdout)}


def _starts(project, job, launch="1"):
    d = project / ".onager" / "launches" / job / launch / "state"
    out = {}
    for name in sorted(os.listdir(d)):
        if ".start@" in name and not name.startswith("."):
            out.setdefault(int(name.split(".")[0]), []).append((d / name).read_text().split())
    return out


def test_launch_through_stand_in_ssh(fake, project):
    script = "import json,sys,os; a=sys.argv[1:]; print(json.dumps([a, os.environ.get('CUDA_VISIBLE_DEVICES')])); " \
             "print('to-err', file=sys.stderr); sys.exit(5 if a[-1] == '3' else 0)"
    assert fake("prelaunch", "+jobname", "f", "+command", f"{sys.executable} -c {shlex.quote(script)}",
                "+pos-arg", *HOSTILE, "+arg", "--i", "1", "2", "3").returncode == 0
    (fake.root / "down-hdown").touch()
    out = fake("launch", "--backend", "ssh", "--jobname", "f", "--hosts", "ha:2:gpus=0,1,hb:1,hdown",
               "--remote-dir", "~/o n'a\"g $x")
    assert "host hdown is unreachable" in out.stderr
    assert out.returncode == 1, out.stderr
    assert "2 of 6 tasks failed: " in out.stderr and "(exit 5)" in out.stderr
    rows = _rows(fake, "f")
    d = project / ".onager" / "launches" / "f" / "1"
    for task_id, row in rows.items():
        argv, gpu = json.loads((d / "logs" / f"{task_id}.out").read_text())
        assert argv == [row["params"]["pos1"], "--i", str(row["params"]["i"])]
        assert (d / "logs" / f"{task_id}.err").read_text() == "to-err\n"
        host = _starts(project, "f")[task_id][-1][0]
        assert gpu in ({"ha": "0", "hb": None}[host], {"ha": "1", "hb": None}[host])
        assert (row["status"], row["exit"]) == (("failed", 5) if row["params"]["i"] == 3 else ("done", 0))
    # the remote copies are gone, the "home" of each host is clean again
    for host in ("ha", "hb"):
        assert not (fake.root / host / "o n'a\"g $x").exists(), list((fake.root / host).iterdir())


@pytest.mark.parametrize("retries", [1, 0])
def test_unreachable_and_lost_hosts_through_stand_in_ssh(fake, project, retries):
    (fake.root / "down-hdown").touch()
    assert fake("prelaunch", "+jobname", "l", "+command", "sleep 1; echo ran", "+arg", "--i",
                *map(str, range(1, 9))).returncode == 0
    env = dict(os.environ, PYTHONPATH=ROOT, **fake.env)
    proc = subprocess.Popen([sys.executable, "-m", "onager", "launch", "--backend", "ssh", "--jobname", "l",
                             "--hosts", "hdown,hgone:2,hok:2", "--retries", str(retries)], cwd=str(project), env=env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            gone = [s for s in _starts(project, "l").values() if s[-1][0] == "hgone"]
        except FileNotFoundError:
            gone = []
        if len(gone) >= 2:
            break
        time.sleep(0.1)
    (fake.root / "down-hgone").touch()       # the host goes away with its two running tasks
    for s in gone:
        os.killpg(int(s[-1][1]), signal.SIGKILL)
    _, err = proc.communicate(timeout=120)
    assert "host hdown is unreachable (ssh: connect to host hdown port 22: Connection refused); skipping it" in err
    assert "host hgone was lost" in err
    rows = _rows(fake, "l")
    state = os.listdir(project / ".onager" / "launches" / "l" / "1" / "state")
    lost = {int(n.split(".")[0]) for n in state if n.endswith("@host-lost")}
    assert len(lost) == 2
    if retries == 0:   # not run again: lost, exit 1, and the way to rerun them
        assert proc.returncode == 1
        assert err.strip().splitlines()[-1] == (
            f"onager: error: tasks {Tasklist.from_ids(sorted(lost))} were lost with their host (--retries 0 used up); "
            "rerun them with: onager launch --jobname l --tasklist failed")
        assert {i for i, r in rows.items() if r["status"] == "lost"} == lost
        assert all(r["status"] == "done" for i, r in rows.items() if i not in lost)
        return
    assert proc.returncode == 0, err
    assert all(r["status"] == "done" for r in rows.values()), rows
    starts = _starts(project, "l")
    assert all([s[0] for s in starts[i]] == ["hgone", "hok"] for i in lost)


def test_every_host_lost_stops_with_resume_hint(fake, project):
    assert fake("prelaunch", "+jobname", "z", "+command", "sleep 30; true", "+arg", "--i",
                *map(str, range(1, 6))).returncode == 0
    env = dict(os.environ, PYTHONPATH=ROOT, **fake.env)
    proc = subprocess.Popen([sys.executable, "-m", "onager", "launch", "--backend", "ssh", "--jobname", "z",
                             "--hosts", "solo:2", "--retries", "0"], cwd=str(project), env=env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    starts = {}
    while time.time() < deadline and len(starts) < 2:
        with contextlib.suppress(FileNotFoundError):
            starts = _starts(project, "z")
        time.sleep(0.1)
    (fake.root / "down-solo").touch()
    for s in starts.values():
        os.killpg(int(s[-1][1]), signal.SIGKILL)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 1
    assert err.strip().splitlines()[-1] == ("onager: error: every ssh host was lost; tasks 3-5 did not run: resume "
                                            "with onager launch --jobname z --tasklist unfinished")
    rows = _rows(fake, "z")
    assert sorted(r["status"] for r in rows.values()) == ["lost"] * 5
    again = fake("launch", "--backend", "ssh", "--jobname", "z", "--hosts", "solo:5", "--tasklist", "unfinished",
                 "--dry-run")
    assert again.returncode == 0 and "dry run: 5 tasks (1-5)" in again.stderr, again.stderr


def test_detach_and_cancel_through_stand_in_ssh(fake, project):
    marker = f"onager-unit-{os.getpid()}-{time.time_ns()}"
    assert fake("prelaunch", "+jobname", "d", "+command", f"sh -c 'sleep 60; true' {marker}", "+arg", "--i",
                *map(str, range(1, 5))).returncode == 0
    out = fake("launch", "--backend", "ssh", "--jobname", "d", "--hosts", "h1:2", "--detach")
    assert out.returncode == 0, out.stderr
    deadline = time.time() + 60
    while time.time() < deadline and \
            subprocess.run(["pgrep", "-f", marker], capture_output=True).stdout.count(b"\n") < 2:
        time.sleep(0.1)
    rows = _rows(fake, "d")
    assert sorted(r["status"] for r in rows.values()) == ["pending", "pending", "running", "running"]
    assert fake("cancel", "--jobname", "d").returncode == 0
    deadline = time.time() + 20
    while time.time() < deadline and subprocess.run(["pgrep", "-f", marker], capture_output=True).returncode == 0:
        time.sleep(0.1)
    assert subprocess.run(["pgrep", "-f", marker], capture_output=True).returncode == 1
    pool = project / ".onager" / "launches" / "d" / "1" / "pool.json"
    deadline = time.time() + 20
    while time.time() < deadline and json.loads(pool.read_text())["pid"] is not None:
        time.sleep(0.1)
    assert json.loads(pool.read_text())["pid"] is None
    assert all(r["status"] == "cancelled" for r in _rows(fake, "d").values())


def test_hosts_command_through_stand_in_ssh(fake, project):
    (fake.root / "down-off").touch()
    out = fake("hosts", "--hosts", "on:2,off")
    assert out.returncode == 1
    lines = out.stdout.splitlines()
    assert lines[2].split()[:2] == ["on", "yes"] and lines[2].split()[3] == str(os.cpu_count())
    assert lines[3].startswith("off") and "NO: ssh: connect to host off port 22: Connection refused" in lines[3]


# ------------------------------------------------------------------ usage errors
@pytest.mark.parametrize("args, words", [
    ([], "needs hosts"),
    (["--hosts", "a:0"], "at least 1"),
    (["--hosts", "a", "--ssh-config", "/nonexistent/cfg"], "no such file"),
    (["--hosts", "a", "--retries", "-1"], "--retries must be 0 or more"),
    (["--hosts", "a", "--gpus", "x"], "bad gpus"),
])
def test_bad_launch_options_are_one_line_exit_2(onager, args, words):
    assert onager("prelaunch", "+jobname", "b", "+command", "true").returncode == 0
    out = onager("launch", "--backend", "ssh", "--jobname", "b", "--dry-run", *args)
    assert out.returncode == 2 and words in out.stderr and len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert "Traceback" not in out.stderr


def test_dry_run_prints_the_ssh_commands_and_writes_nothing(onager, project):
    assert onager("prelaunch", "+jobname", "dr", "+command", "true", "+arg", "--i", "1", "2").returncode == 0
    out = onager("launch", "--backend", "ssh", "--jobname", "dr", "--dry-run", "--hosts", "u@a:2,b")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert len(lines) == 2
    first = shlex.split(lines[0])
    assert first[0] == "ssh" and "BatchMode=yes" in first and first[-2] == "u@a"
    assert first[-1] == "exec bash .onager-remote/dr/DRY-RUN/u_a/onager-run.sh ID NONCE"
    assert not (project / ".onager" / "launches" / "dr").exists()


def test_host_that_cannot_start_tasks_is_dropped(fake, project):
    (fake.root / "broken-bad").touch()
    assert fake("prelaunch", "+jobname", "br", "+command", "echo ran", "+arg", "--i",
                *map(str, range(1, 7))).returncode == 0
    out = fake("launch", "--backend", "ssh", "--jobname", "br", "--hosts", "bad:2,good:1")
    assert out.returncode == 0, out.stderr
    assert "host bad answers but cannot start tasks" in out.stderr
    rows = _rows(fake, "br")
    assert all(r["status"] == "done" for r in rows.values()), rows
    assert {s[-1][0] for s in _starts(project, "br").values()} == {"good"}


def test_sigterm_to_a_foreground_launch_kills_remote_tasks(fake, project):
    marker = f"onager-term-{os.getpid()}-{time.time_ns()}"
    assert fake("prelaunch", "+jobname", "t", "+command", f"sh -c 'sleep 60; true' {marker}", "+arg", "--i",
                *map(str, range(1, 4))).returncode == 0
    env = dict(os.environ, PYTHONPATH=ROOT, **fake.env)
    proc = subprocess.Popen([sys.executable, "-m", "onager", "launch", "--backend", "ssh", "--jobname", "t",
                             "--hosts", "h:2"], cwd=str(project), env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while time.time() < deadline and \
            subprocess.run(["pgrep", "-f", marker], capture_output=True).stdout.count(b"\n") < 2:
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "--tasklist unfinished" in err, err
    assert subprocess.run(["pgrep", "-f", marker], capture_output=True).returncode == 1
    rows = _rows(fake, "t")
    # the task never started is cancelled too (reason interrupted), as under the local pool
    assert sorted(r["status"] for r in rows.values()) == ["cancelled"] * 3, rows


def test_zero_slots_and_zero_max_tasks_are_refused():
    with pytest.raises(UsageError, match="at least 1 slot"):
        ssh.parse_hosts("h:slots=0")
    with pytest.raises(UsageError, match="--max-tasks must be at least 1"):
        ssh.SshBackend({"hosts": "h:2", "max_tasks": 0}).check_options()


def test_auto_gpus_on_a_host_without_gpus_gives_cpu_slots():
    count, slots = ssh.slot_gpus("auto", [], 4, None, "h")
    assert count == 4 and slots == [None] * 4
    count, slots = ssh.slot_gpus("auto", [], None, None, "h", 3)
    assert count == 3 and slots == [None] * 3
