"""Issue 12, items 4-6: a refused, killed or half-recorded launch leaves nothing behind.

* every usage error is found before the first write and before a launch id is taken;
* a launch killed while building (or stopped by a full disk) leaves no numbered launch
  directory, and its leftovers go with the next launch of the job or `onager clean JOB`;
* scheduler jobs whose record could not be written are cancelled (or their directory is
  kept and reported), and a launch id is never handed out twice.
"""
from __future__ import annotations

import hashlib
import json
import os

import pytest

from support import install_fake_scheduler, ok, refused, run_onager


def write_job(root, jobname: str, n: int, command: str = "true") -> None:
    path = os.path.join(str(root), ".onager", "scripts", jobname, "jobs.json")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        json.dump({str(i): [command, f"{jobname}_{i}", {}] for i in range(1, n + 1)}, handle)


def tree(root) -> dict:
    """Every path under root with its kind, size and content hash: a byte-exact snapshot."""
    out = {}
    for directory, dirs, files in os.walk(str(root)):
        for name in dirs:
            out[os.path.relpath(os.path.join(directory, name), str(root))] = "dir"
        for name in files:
            path = os.path.join(directory, name)
            with open(path, "rb") as handle:
                data = handle.read()
            out[os.path.relpath(path, str(root))] = (len(data), hashlib.sha256(data).hexdigest())
    return out


def launch_dirs(root, jobname: str) -> list:
    parent = os.path.join(str(root), ".onager", "launches", jobname)
    return sorted(os.listdir(parent)) if os.path.isdir(parent) else []


def first_good_launch_is_1(root) -> None:
    out = run_onager(["launch", "--backend", "local", "--jobname", "x", "--tasklist", "1-2"], cwd=str(root))
    ok(out)
    assert "launched x/1:" in out.stderr, out.stderr
    assert launch_dirs(root, "x") == ["1"]


# ------------------------------------------------------------------ item 4
BAD = [
    ("local", ["--mem", "4X"], "--mem"),
    ("local", ["--mem", "4G"], "local has no memory limits"),
    ("local", ["--duration", "xyz"], "--duration"),
    ("local", ["--cpus", "0"], "--cpus"),
    ("local", ["--cpus", "2"], "--cpus"),
    ("local", ["--max-tasks", "0"], "--max-tasks"),
    ("local", ["--gpus", "zz"], "--gpus"),
    ("local", ["--partition", "gpu"], "local has no partitions; drop --partition or use --backend slurm"),
    ("local", ["--tasks-per-node", "2"], "--tasks-per-node"),
    ("local", ["--hosts", "a:2"], "--hosts"),
    ("local", ["--", "--exclusive"], "--exclusive"),
    ("ssh", ["--hosts", "localhost:1", "--mem", "4G"], "--mem"),
    ("slurm", ["--mem", "4X"], "--mem"),
    ("slurm", ["--duration", "xyz"], "--duration"),
    ("slurm", ["--cpus", "0"], "--cpus"),
    ("slurm", ["--max-tasks", "0"], "--max-tasks"),
    ("slurm", ["--gpus", "a:b"], "--gpus"),
    ("slurm", ["--gpus", "2", "--tasks-per-node", "0"], "--tasks-per-node"),
    ("slurm", ["--max-array-size", "1"], "--max-array-size"),
    ("slurm", ["--pe", "smp"], "--pe"),
    ("slurm", ["--detach"], "--detach"),
    ("gridengine", ["--cpus", "4"], "parallel environment"),
    ("gridengine", ["--mem", "2"], "memory resource"),
    ("gridengine", ["--gpus", "1"], "GPU resource"),
    ("gridengine", ["--mem", "4X", "--mem-resource", "h_vmem"], "--mem"),
    ("gridengine", ["--partition", "p"], "--partition"),
]


@pytest.mark.parametrize("backend,options,words", BAD, ids=[f"{b}{' '.join(o)}" for b, o, _ in BAD])
def test_usage_error_writes_nothing_and_takes_no_id(tmp_path, monkeypatch, backend, options, words):
    fake = install_fake_scheduler(tmp_path, monkeypatch)
    project = tmp_path / "p"
    project.mkdir()
    write_job(project, "x", 3000)
    before = tree(project)
    refused(run_onager(["launch", "--backend", backend, "--jobname", "x", *options], cwd=str(project)), words)
    assert tree(project) == before
    assert fake.calls() == []  # refused before any scheduler was asked
    first_good_launch_is_1(project)
