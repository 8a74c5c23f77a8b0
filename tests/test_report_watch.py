"""Issue 16, item 2: `onager list --watch`, on a pseudo-terminal and into a pipe."""
from __future__ import annotations

import os
import pty
import select
import signal
import subprocess
import sys
import time

import pytest
from support import ROOT, ok, refused


def start_launch(onager, project, name: str, command: str, *values: str) -> subprocess.Popen:
    """Prelaunch, then a local launch in the background (it runs in the foreground normally)."""
    ok(onager("prelaunch", "+jobname", name, "+command", command, "+pos-arg", *values))
    env = dict(os.environ, PYTHONPATH=ROOT)
    proc = subprocess.Popen([sys.executable, "-m", "onager", "launch", "--backend", "local", "--jobname", name,
                             "--max-tasks", "4"], cwd=project, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    deadline = time.time() + 60
    while not os.path.exists(project / ".onager" / "index.jsonl") or \
            name not in (project / ".onager" / "index.jsonl").read_text():
        assert time.time() < deadline, "the launch was never recorded"
        time.sleep(0.05)
    return proc


def run_in_pty(argv: list[str], cwd, until: float, interrupt_after: float | None = None) -> tuple[int, str]:
    """Run argv with a pseudo-terminal as stdout (and stdin); (exit code, all it wrote)."""
    leader, follower = pty.openpty()
    env = dict(os.environ, PYTHONPATH=ROOT, TERM="xterm", COLUMNS="100", LINES="30")
    proc = subprocess.Popen(argv, cwd=cwd, env=env, stdin=follower, stdout=follower, stderr=follower,
                            start_new_session=True)
    os.close(follower)
    chunks: list[bytes] = []
    start = time.time()
    sent = False
    while time.time() - start < until:
        if interrupt_after is not None and not sent and time.time() - start > interrupt_after:
            os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C does: the terminal's foreground group
            sent = True
        ready, _, _ = select.select([leader], [], [], 0.1)
        if ready:
            try:
                data = os.read(leader, 65536)
            except OSError:
                break
            if not data:
                break
            chunks.append(data)
        elif proc.poll() is not None:
            break
    try:
        code = proc.wait(timeout=30)
    finally:
        os.close(leader)
    return code, b"".join(chunks).decode("utf-8", "replace")


def test_watch_on_a_terminal_redraws_until_all_ended(onager, project):
    launch = start_launch(onager, project, "w1", "python3 -c 'import sys,time; n=int(sys.argv[1]); "
                          "time.sleep(1.5); sys.exit(n == 3)'", "1", "2", "3")
    code, out = run_in_pty([sys.executable, "-m", "onager", "list", "w1", "--watch", "--interval", "0.3"], project,
                           until=90)
    launch.wait(timeout=60)
    assert code == 1, out  # task 3 failed
    frames = out.split("\x1b[H\x1b[2J")
    assert len(frames) >= 3, out  # redrawn in place, several times
    assert any("running (" in f for f in frames[:-1]), out
    last = frames[-1]
    assert "3 tasks: 2 done, 1 failed" in last
    assert "latest failures (1: 3)" in last and "failed exit 1" in last
    assert "\x1b[?25h" in out  # the cursor is shown again


def test_watch_into_a_pipe_prints_plain_lines(onager, project):
    launch = start_launch(onager, project, "w2", "python3 -c 'import time; time.sleep(1.2)'", "1", "2")
    result = onager("list", "w2", "--watch", "--interval", "0.3")
    launch.wait(timeout=60)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) >= 2
    assert "\x1b" not in result.stdout
    assert lines[-1].endswith("| 2 tasks: 2 done")
    assert any("running" in line for line in lines[:-1])


def test_ctrl_c_stops_watching_with_130(onager, project):
    launch = start_launch(onager, project, "w3", "python3 -c 'import time; time.sleep(30)'", "1")
    try:
        code, out = run_in_pty([sys.executable, "-m", "onager", "list", "w3", "--watch", "--interval", "0.2"],
                               project, until=60, interrupt_after=2.0)
        assert code == 130, out
        assert "Traceback" not in out
        assert "1 tasks: 1 running" in out or "1 running" in out
    finally:
        ok(onager("cancel", "w3"))
        launch.wait(timeout=60)


@pytest.mark.parametrize("argv, words", [
    (["list", "--watch", "--json"], ["--watch", "--json"]),
    (["list", "--interval", "3"], ["--interval goes with --watch"]),
    (["list", "--watch", "--interval", "0"], ["--interval"]),
])
def test_watch_refuses_what_it_cannot_do(onager, project, argv, words):
    ok(onager("prelaunch", "+jobname", "w4", "+command", "true"))
    ok(onager("launch", "--backend", "local", "--jobname", "w4"))
    refused(onager(*argv), *words)
