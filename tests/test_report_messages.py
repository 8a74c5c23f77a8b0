"""Issue 16, item 5: messages a new user reads (tasks not jobs, condensed ids, whole scheduler
errors, pasteable demo commands, a --venv hint for `No module named X`)."""
from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys

from support import ROOT, install_fake_scheduler, ok

from onager.messages import failed_ids_text


def test_prelaunch_says_tasks_not_jobs(onager):
    """onager 0.1.3 printed `Prelaunched 4 jobs`; each line of the jobfile is a task, and the
    message now says so (documented in docs/migrating-from-0.1.3.md)."""
    result = onager("prelaunch", "+jobname", "exp1", "+command", "echo", "+arg", "--lr", "1", "2", "+arg", "--s",
                    "a", "b")
    ok(result)
    assert "Prelaunched 4 tasks for exp1 in " in result.stderr
    assert "jobs for" not in result.stderr
    again = onager("prelaunch", "+jobname", "exp1", "+command", "echo", "+arg", "--lr", "3", "+append")
    assert "Prelaunched 1 more tasks for exp1 (5 in all)" in again.stderr
    with open(os.path.join(ROOT, "docs", "migrating-from-0.1.3.md"), encoding="utf-8") as handle:
        assert "Prelaunched N tasks" in handle.read()


def test_failed_ids_text_sorts_and_condenses():
    failures = [(9, 1), (4, 1), (7, 137), (3, 1), (5, 1)]
    text = failed_ids_text(failures)
    assert text.startswith("3-5,9 (exit 1)")
    assert "7 (exit 137" in text
    assert failed_ids_text([]) == ""


def test_local_launch_condenses_failed_ids(onager):
    """Tasks finishing out of order used to be listed as they ended: `5 (exit 1), 3 (exit 1), ...`."""
    ok(onager("prelaunch", "+jobname", "f", "+command", "python3 -c 'import sys,time; n=int(sys.argv[1]); "
              "time.sleep((9-n)*0.05); sys.exit(n in (3,4,5,8))'", "+pos-arg", *map(str, range(1, 10))))
    result = onager("launch", "--backend", "local", "--jobname", "f", "--max-tasks", "9")
    assert result.returncode == 1, result.stderr
    assert "4 of 9 tasks failed: 3-5,8 (exit 1);" in result.stderr, result.stderr


def test_sbatch_error_keeps_every_line(project, tmp_path, monkeypatch):
    """Only the last lines of a long scheduler message used to survive (e.g. `Try "sbatch --help"`)."""
    fake = install_fake_scheduler(tmp_path, monkeypatch)
    lines = [f"sbatch: error: reason part {i}" for i in range(1, 8)] + ['Try "sbatch --help" for more information']
    fake.respond("sbatch", 1, "", "\n".join(lines) + "\n")
    env = {"PATH": os.environ["PATH"], "FAKE_SCHED_DIR": os.environ["FAKE_SCHED_DIR"]}
    ok(subprocess.run([sys.executable, "-m", "onager", "prelaunch", "+jobname", "exp", "+command", "echo", "+arg",
                       "--n", "1", "2"], capture_output=True, text=True, env={**os.environ, **env}))
    out = subprocess.run([sys.executable, "-m", "onager", "launch", "--backend", "slurm", "--jobname", "exp",
                          "--max-array-size", "1001"], capture_output=True, text=True, stdin=subprocess.DEVNULL,
                         env={**os.environ, **env})
    assert out.returncode == 1
    assert out.stderr.count("\n") == 1, out.stderr
    positions = [out.stderr.index(line) for line in lines]
    assert positions == sorted(positions)  # every line, in order


def test_no_module_hint_in_list_and_logs(onager):
    """The launching Python imports tabulate; the task's Python (run with -S) cannot."""
    command = f"{shlex.quote(sys.executable)} -S -c 'import tabulate'"
    ok(onager("prelaunch", "+jobname", "nm", "+command", command, "+arg", "--x", "1", "2", "3"))
    assert onager("launch", "--backend", "local", "--jobname", "nm").returncode == 1
    listed = onager("list", "nm")
    assert listed.returncode == 0, listed.stderr
    hints = [line for line in listed.stderr.splitlines() if "hint" in line]
    assert len(hints) == 1, listed.stderr
    assert "tasks 1-3 of nm/1" in hints[0] and "No module named 'tabulate'" in hints[0]
    assert "--venv" in hints[0] and "onager config --write local header" in hints[0]
    logs = onager("logs", "nm", "2", "--err")
    assert "No module named 'tabulate'" in logs.stdout
    assert "hint: task 2 of nm/1" in logs.stderr and "--venv" in logs.stderr


def test_no_hint_for_a_module_nobody_has(onager):
    ok(onager("prelaunch", "+jobname", "nm2", "+command", "python3 -c 'import no_such_module_xyz'"))
    assert onager("launch", "--backend", "local", "--jobname", "nm2").returncode == 1
    listed = onager("list", "nm2")
    assert "No module" not in listed.stderr and "hint" not in listed.stderr


def test_demo_prints_pasteable_commands_and_ends_with_its_report(tmp_path):
    work = tmp_path / "demo"
    work.mkdir()
    env = dict(os.environ, DEMO_DIR=str(work), PYTHONPATH=ROOT,
               PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"])
    proc = subprocess.run(["bash", os.path.join(ROOT, "examples", "quickstart", "demo.sh")], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    shown = [re.sub(r"\x1b\[[0-9;]*m", "", line)[2:] for line in proc.stdout.splitlines()
             if re.sub(r"\x1b\[[0-9;]*m", "", line).startswith("$ ")]
    prelaunch = next(line for line in shown if line.startswith("onager prelaunch"))
    words = shlex.split(prelaunch)
    assert words[words.index("+command") + 1] == "python train.py"  # one word when pasted
    report = str(work / "demo_report.html")
    assert proc.stdout.rstrip().splitlines()[-1].endswith(report)
    with open(report, encoding="utf-8") as handle:
        page = handle.read()
    assert page.count('<tr class="task"') == 12
    assert "Learning curves" in page and "loss" in page

