"""Issue 12 item 7: a full disk or a hand-damaged file gives one line, never a traceback,
and what the user needs (the local run's failure summary, the other jobs' rows) is kept."""
from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import subprocess
import sys

import pytest
from support import ROOT, call_onager, run_onager

ENOSPC = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def call(*argv: str) -> tuple[int, str, str]:
    return call_onager(*argv, errors="replace")


def one_line(err: str) -> str:
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    return lines[0]


def two_jobs(project) -> None:
    for name, values in (("a", ["1", "2"]), ("b", ["1", "2", "3"])):
        assert call("prelaunch", "+jobname", name, "+command", "true", "+pos-arg", *values, "+q")[0] == 0
        assert call("launch", "--backend", "local", "--jobname", name, "-q")[0] == 0


def listed_jobs(out: str) -> list[str]:
    return sorted({row["jobname"] for row in json.loads(out)})


# ----------------------------------------------------------------- disk full
def test_full_disk_while_writing_the_jobfile_names_it(project, monkeypatch):
    assert call("prelaunch", "+jobname", "w", "+command", "echo", "+pos-arg", "1", "+q")[0] == 0

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr("onager.fsutil.os.fsync", full)
    code, _, err = call("prelaunch", "+jobname", "x", "+command", "echo", "+pos-arg", "1", "2", "+q")
    line = one_line(err)
    assert code == 1
    assert "no space left on device writing .onager/scripts/x/jobs.json" in line and "free" in line
    assert not os.path.exists(".onager/scripts/x/jobs.json")
    assert [n for n in os.listdir(".onager/scripts/x") if n.endswith(".tmp")] == []


def test_full_disk_while_building_a_launch_names_it(project, monkeypatch):
    assert call("prelaunch", "+jobname", "x", "+command", "echo", "+pos-arg", "1", "2", "+q")[0] == 0

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr("onager.launch._TaskWriter.write", full)  # the writer of tasks.sh, .idx and .jsonl
    code, _, err = call("launch", "--backend", "local", "--jobname", "x")
    line = one_line(err)
    assert code == 1 and "no space left on device writing .onager/launches/x" in line and "nothing was launched" in line


@pytest.mark.parametrize("command", [["list"], ["list", "--json"], ["prelaunch", "+jobname", "y", "+command",
                                                                    "echo", "+pos-arg", "1", "2"]])
def test_output_to_a_full_disk_is_one_line(project, command):
    run_onager(["prelaunch", "+jobname", "a", "+command", "true", "+pos-arg", "1", "+q"], cwd=str(project))
    run_onager(["launch", "--backend", "local", "--jobname", "a", "-q"], cwd=str(project))
    env = dict(os.environ, PYTHONPATH=ROOT)
    with open("/dev/full", "w") as full:
        res = subprocess.run([sys.executable, "-m", "onager", *command], cwd=str(project), stdout=full,
                             stderr=subprocess.PIPE, text=True, env=env, timeout=120)
    line = one_line(res.stderr)
    assert res.returncode == 1
    assert "no space left on device writing <standard output>" in line


def test_end_of_a_local_run_on_a_full_disk_keeps_the_failure_summary(project, monkeypatch):
    assert call("prelaunch", "+jobname", "f", "+command", "sh -c", "+pos-arg", "exit 0", "exit 3", "+q")[0] == 0
    from onager.backends import local
    real = local._write_pool_file

    def pool_file(path: str, pid):
        if pid is None:  # the write once every task has run
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)
        real(path, pid)
    monkeypatch.setattr(local, "_write_pool_file", pool_file)
    code, _, err = call("launch", "--backend", "local", "--jobname", "f")
    assert code == 1 and "Traceback" not in err
    lines = err.splitlines()
    summary = [i for i, line in enumerate(lines) if "1 of 2 tasks failed: 2 (exit 3)" in line]
    error = [i for i, line in enumerate(lines) if "no space left on device writing" in line]
    assert summary and error and summary[0] < error[0], err
    assert "pool.json" in lines[error[0]]


def test_state_names_the_pool_cannot_write_do_not_stop_it(project, monkeypatch):
    """The pool writes an end only for a wrapper killed outright; a full disk then must not stop it."""
    assert call("prelaunch", "+jobname", "r", "+command", "sh -c",
                "+pos-arg", "exit 0", "exit 4", "kill -9 -$(ps -o pgid= -p $$ | tr -d ' ')", "exit 0",
                "+q")[0] == 0
    from onager.backends import pool as poolmod

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(poolmod, "record_end", full)
    code, _, err = call("launch", "--backend", "local", "--jobname", "r", "--max-tasks", "1")
    assert code == 1 and "Traceback" not in err
    assert "2 of 4 tasks failed: 2 (exit 4), 3 (exit 137" in err
    assert "no space left on device writing .onager/launches/r/1/state" in err.splitlines()[-1]


def _mount_tiny_tmpfs(path: str, size: str) -> None:
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    os.makedirs(path)
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", path],
                         capture_output=True, text=True)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {res.stderr.strip()}")


def test_a_really_full_disk(tmp_path):
    """prelaunch, launch and list on a 64 kB tmpfs: one line each, exit 1, nothing half-written."""
    disk = str(tmp_path / "disk")
    _mount_tiny_tmpfs(disk, "64k")
    try:
        env = {"ONAGER_GLOBAL_CONFIG": os.path.join(disk, "global")}
        small = run_onager(["prelaunch", "+jobname", "s", "+command", "true", "+pos-arg", "1", "+q"], cwd=disk, env=env)
        assert small.returncode == 0, small.stderr
        big = run_onager(["prelaunch", "+jobname", "big", "+command", "echo " + "x" * 200,
                          "+arg", "--a", "+range", "0", "100", "+arg", "--b", "+range", "0", "20", "+q"],
                         cwd=disk, env=env)
        line = one_line(big.stderr)
        assert big.returncode == 1 and "no space left on device writing .onager/scripts/big/jobs.json" in line
        assert not [n for n in os.listdir(os.path.join(disk, ".onager/scripts/big")) if n.endswith(".tmp")]
        with contextlib.suppress(OSError), open(os.path.join(disk, "filler"), "wb") as filler:
            while True:  # take whatever is left
                filler.write(b"\0" * 1024)
                filler.flush()
        launch = run_onager(["launch", "--backend", "local", "--jobname", "s"], cwd=disk, env=env)
        line = one_line(launch.stderr)
        assert launch.returncode == 1 and "no space left on device" in line and ".onager/" in line
        listed = run_onager(["list"], cwd=disk, env=env)
        assert listed.returncode == 0 and "Traceback" not in listed.stderr
    finally:
        subprocess.run(["umount", disk], capture_output=True)


# ------------------------------------------------------------ damaged files
def test_non_utf8_index_line(project):
    two_jobs(project)
    with open(".onager/index.jsonl", "ab") as handle:
        handle.write(b'{"jobname": "\xff\xfe"}\n')
    code, out, err = call("list", "--json")
    assert code == 1 and listed_jobs(out) == ["a", "b"]
    assert "index.jsonl line 3 is damaged" in one_line(err)
    # a later launch keeps the damaged line as it was and records the new launch
    assert call("launch", "--backend", "local", "--jobname", "a", "-q")[0] == 0
    with open(".onager/index.jsonl", "rb") as handle:
        assert b'"\xff\xfe"' in handle.read()
    code, out, err = call("list", "--json", "--jobname", "a")
    assert code == 1 and [r["launch"] for r in json.loads(out)] == ["1", "1", "2", "2"]


@pytest.mark.parametrize("damage", ["truncated", "wrong types"])
def test_damaged_index_line(project, damage):
    two_jobs(project)
    with open(".onager/index.jsonl", encoding="utf-8") as handle:
        lines = handle.read().splitlines()
    if damage == "truncated":
        lines[0] = lines[0][: len(lines[0]) // 2]
    else:
        record = json.loads(lines[0])
        record["launch_id"], record["jobname"] = 1, ["a"]
        lines[0] = json.dumps(record)
    with open(".onager/index.jsonl", "w", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")
    code, out, err = call("list", "--json")
    assert code == 1 and listed_jobs(out) == ["b"]
    assert "index.jsonl line 1 is damaged" in one_line(err)


@pytest.mark.parametrize("damage", [b"cut", b"\xff\xfe\n", b"[1, 2]\n"])
def test_damaged_tasks_jsonl(project, damage):
    two_jobs(project)
    path = ".onager/launches/a/1/tasks.jsonl"
    with open(path, "rb") as handle:
        data = handle.read()
    with open(path, "wb") as handle:
        handle.write(data[: len(data) // 2 + 5] if damage == b"cut" else data + damage)
    code, out, err = call("list", "--json")
    assert code == 1 and listed_jobs(out) == ["b"]
    line = one_line(err)
    assert "launch a/1 skipped" in line and "tasks.jsonl is damaged at line" in line
    code, out, err = call("list", "--jobname", "a")
    assert code == 1 and "tasks.jsonl is damaged" in one_line(err)
    code, out, err = call("launch", "--backend", "local", "--jobname", "a", "--tasklist", "failed")
    assert code == 1 and "tasks.jsonl is damaged" in one_line(err)


@pytest.mark.parametrize("command", [["list"], ["prelaunch", "+jobname", "x", "+command", "true", "+pos-arg", "1"],
                                     ["launch", "--backend", "local", "--jobname", "x"],
                                     ["config", "--write", "local", "max-tasks", "2"]])
def test_dot_onager_is_a_file(project, command):
    (project / ".onager").write_text("not a directory\n")
    code, _, err = call(*command)
    assert code == 1 and ".onager is a file, not a directory" in one_line(err)
    assert (project / ".onager").read_text() == "not a directory\n"


@pytest.mark.parametrize("garbage", [bytes(range(256)) * 8, b'{"1": ' + b"[" * 100_000 + b"\n",
                                     b'{\n"1": ' + b"[" * 100_000 + b"\n}\n", b"\0\0\0", b'{\n"1": ["echo 1", "", '
                                                                                         b'{}],\n'])
def test_garbage_jobs_json(project, garbage):
    two_jobs(project)
    with open(".onager/scripts/a/jobs.json", "wb") as handle:
        handle.write(garbage)
    code, _, err = call("launch", "--backend", "local", "--jobname", "a")
    assert code == 1 and "jobs.json" in one_line(err)
    code, _, err = call("prelaunch", "+jobname", "a", "+command", "true", "+pos-arg", "9", "+append", "+q")
    assert code == 1 and "jobs.json" in one_line(err)
    code, out, err = call("list", "--json")
    assert code == 0 and listed_jobs(out) == ["a", "b"]


@pytest.mark.parametrize("name", ["7.end@5@\u00b2@1", "8.end@5@\u0663@\u0661",
                                  "1.end@9999999999@3@1\n2.end@9999999999@7@1", "\u0661.end@9999999999@5@1"])
def test_state_name_made_by_hand(project, name):
    two_jobs(project)
    open(os.path.join(".onager/launches/a/1/state", name), "w").close()
    code, out, err = call("list", "--json")
    assert code == 0 and "Traceback" not in err, err
    rows = json.loads(out)
    assert listed_jobs(out) == ["a", "b"] and {r["status"] for r in rows} == {"done"}


@pytest.mark.parametrize("swap", ["state", "tasks.jsonl"])
def test_file_and_directory_swapped_in_a_launch(project, swap):
    two_jobs(project)
    path = os.path.join(".onager/launches/a/1", swap)
    shutil.rmtree(path) if os.path.isdir(path) else os.unlink(path)
    if swap == "state":
        open(path, "w").close()
    else:
        os.mkdir(path)
    code, out, err = call("list", "--json")
    assert code == 1 and listed_jobs(out) == ["b"]
    assert "launch a/1 skipped" in one_line(err) and swap in err
