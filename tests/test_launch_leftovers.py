"""Issue 12, items 4-6: a refused, killed or half-recorded launch leaves nothing behind.

* every usage error is found before the first write and before a launch id is taken;
* a launch killed while building (or stopped by a full disk) leaves no numbered launch
  directory, and its leftovers go with the next launch of the job or `onager clean JOB`;
* scheduler jobs whose record could not be written are cancelled (or their directory is
  kept and reported), and a launch id is never handed out twice.
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import signal
import subprocess
import sys
import time

import pytest
from support import ROOT, install_fake_scheduler, ok, refused, run_onager


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
    ("gridengine", ["--cpus", "0"], "--cpus"),
    ("gridengine", ["--cpus", "2", "--cpus-per-task", "2"], "--cpus-per-task"),
    ("gridengine", ["--duration", "xyz"], "--duration"),
    ("local", ["--mem-per-task", "1G"], "local has no memory limits"),
    ("local", ["--debug"], "--debug"),
    ("ssh", ["--hosts", "localhost:1", "--cpus-per-task", "2"], "--cpus-per-task"),
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


@pytest.mark.parametrize("key,value,words", [("mem", "4X", "[slurm] mem"), ("cpus", "0", "[slurm] cpus"),
                                             ("duration", "soon", "[slurm] duration"), ("hosts", "a:1", "--hosts")])
def test_bad_config_default_writes_nothing(tmp_path, monkeypatch, key, value, words):
    fake = install_fake_scheduler(tmp_path, monkeypatch)
    project = tmp_path / "p"
    project.mkdir()
    write_job(project, "x", 50)
    # written as by hand: `onager config --write` refuses values of the wrong type itself
    from onager import config as configmod
    configmod.write([("slurm", key, value)], root=str(project))
    before = tree(project)
    refused(run_onager(["launch", "--backend", "slurm", "--jobname", "x"], cwd=str(project)), words)
    assert tree(project) == before and fake.calls() == []
    first_good_launch_is_1(project)


def test_missing_task_takes_no_launch_id(tmp_path):
    write_job(tmp_path, "x", 5)
    refused(run_onager(["launch", "--backend", "local", "--jobname", "x", "--tasklist", "4-9"], cwd=str(tmp_path)),
            "6-9")
    assert launch_dirs(tmp_path, "x") == []
    first_good_launch_is_1(tmp_path)


# ------------------------------------------------------------------ item 5
def _start_big_launch(root) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.Popen([sys.executable, "-m", "onager", "launch", "--backend", "local", "--jobname", "big"],
                            cwd=str(root), env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, start_new_session=True)


def _kill_while_building(root) -> None:
    """kill -9 a 200k-task launch once its task files hold a megabyte (long before they are done)."""
    proc = _start_big_launch(root)
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            parent = os.path.join(str(root), ".onager", "launches", "big")
            sizes = [os.path.getsize(os.path.join(parent, name, "tasks.sh")) for name in launch_dirs(root, "big")
                     if os.path.exists(os.path.join(parent, name, "tasks.sh"))]
            if sizes and max(sizes) > 1 << 20:
                break
            assert proc.poll() is None, proc.stderr.read().decode()
            time.sleep(0.01)
        else:
            raise AssertionError("the launch never started writing its tasks")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        proc.stderr.close()


def test_kill_9_while_building_leaves_nothing_to_trip_on(tmp_path):
    write_job(tmp_path, "big", 200_000)
    _kill_while_building(tmp_path)
    left = launch_dirs(tmp_path, "big")
    assert left and not any(name.isdigit() for name in left), left  # no numbered (= real-looking) launch

    for args in (["list"], ["list", "--jobname", "big"], ["wait", "--timeout", "5"], ["list", "--summary"]):
        out = run_onager(args, cwd=str(tmp_path))
        assert "Traceback" not in out.stderr and out.returncode in (0, 2), (args, out.stderr)
        assert out.stderr.count("\n") <= 1

    out = ok(run_onager(["clean", "big", "--dry-run"], cwd=str(tmp_path)))
    assert out.startswith("would free 1 partial launch directory of big (") and launch_dirs(tmp_path, "big") == left
    out = ok(run_onager(["clean", "big"], cwd=str(tmp_path)))
    assert out.startswith("freed 1 partial launch directory of big (") and " MB)" in out, out
    assert launch_dirs(tmp_path, "big") == []
    assert ok(run_onager(["clean", "big"], cwd=str(tmp_path))).startswith("nothing to clean for big")

    # killed again: the next launch of the job removes the leftovers, and gets id 1
    _kill_while_building(tmp_path)
    out = run_onager(["launch", "--backend", "local", "--jobname", "big", "--tasklist", "1-2"], cwd=str(tmp_path))
    ok(out)
    assert "removed 1 partial launch directory of big" in out.stderr and "launched big/1:" in out.stderr
    assert launch_dirs(tmp_path, "big") == ["1"]


def test_clean_never_touches_recorded_launches(tmp_path):
    write_job(tmp_path, "x", 3)
    first_good_launch_is_1(tmp_path)
    stray = tmp_path / ".onager" / "launches" / "x" / "7"
    (stray / "state").mkdir(parents=True)
    (stray / "tasks.sh").write_text("a" * 1000)
    recorded = tree(tmp_path / ".onager" / "launches" / "x" / "1")
    out = ok(run_onager(["clean", "x"], cwd=str(tmp_path)))
    assert out == "freed 1 partial launch directory of x (1000 bytes)\n"
    assert launch_dirs(tmp_path, "x") == ["1"]
    assert tree(tmp_path / ".onager" / "launches" / "x" / "1") == recorded
    # id 7 was seen once: never handed out again
    out = ok(run_onager(["launch", "--backend", "local", "--jobname", "x", "--tasklist", "1"], cwd=str(tmp_path)))
    assert launch_dirs(tmp_path, "x") == ["1", "8"]
    refused(run_onager(["clean", "no/such"], cwd=str(tmp_path)))
    before = tree(tmp_path)
    assert ok(run_onager(["clean", "never"], cwd=str(tmp_path))).startswith("nothing to clean for never")
    assert tree(tmp_path) == before


def test_clean_leaves_a_launch_being_built_alone(tmp_path):
    from onager.launch import BuildLock
    write_job(tmp_path, "x", 3)
    first_good_launch_is_1(tmp_path)
    building = tmp_path / ".onager" / "launches" / "x" / ".build-abc"
    building.mkdir()
    lock = BuildLock("x", str(tmp_path))
    lock.shared()  # as a launch of x does while it writes
    try:
        out = run_onager(["clean", "x"], cwd=str(tmp_path))
        assert out.returncode == 1 and out.stderr.count("\n") == 1 and "in progress" in out.stderr
        assert building.is_dir()
    finally:
        lock.release()
    assert ok(run_onager(["clean", "x"], cwd=str(tmp_path))).startswith("freed 1 partial launch directory")
    assert not building.exists()


def test_disk_full_while_writing_tasks_is_one_line_and_leaves_nothing(tmp_path, monkeypatch, capsys):
    from onager import cli
    from onager import launch as launchmod
    write_job(tmp_path, "x", 5000)
    monkeypatch.chdir(tmp_path)
    real = launchmod._TaskWriter.write  # tasks are written a block of 4096 at a time
    calls = []

    def filling(*args, **kwargs):
        calls.append(1)
        if len(calls) > 1:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(*args, **kwargs)

    monkeypatch.setattr(launchmod._TaskWriter, "write", filling)
    assert cli.main(["launch", "--backend", "local", "--jobname", "x"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no space left on device" in err.lower() and "Traceback" not in err
    assert launch_dirs(tmp_path, "x") == []
    monkeypatch.setattr(launchmod._TaskWriter, "write", real)
    first_good_launch_is_1(tmp_path)


def test_disk_full_on_a_real_tiny_filesystem(tmp_path):
    """A 1 MB tmpfs under .onager/launches (root only; skipped elsewhere)."""
    write_job(tmp_path, "x", 50_000)
    target = tmp_path / ".onager" / "launches"
    target.mkdir(parents=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(target)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        out = run_onager(["launch", "--backend", "local", "--jobname", "x"], cwd=str(tmp_path))
        assert out.returncode == 1 and out.stderr.count("\n") == 1, out.stderr
        assert "no space left on device" in out.stderr.lower() and "Traceback" not in out.stderr
        assert launch_dirs(tmp_path, "x") == []
        ok(run_onager(["list"], cwd=str(tmp_path)))
        first_good_launch_is_1(tmp_path)
    finally:
        subprocess.run(["umount", str(target)], check=False)


# ------------------------------------------------------------------ item 6
SUBMIT = {"slurm": ("sbatch", "4242\n", "scancel", ["scancel", "4242"]),
          "gridengine": ("qsub", "4242\n", "qdel", ["qdel", "4242"])}


def _failing_index(monkeypatch):
    from onager.index import JobIndex

    def full(self, record):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), self.path)

    monkeypatch.setattr(JobIndex, "add", full)


@pytest.mark.parametrize("backend", sorted(SUBMIT))
def test_unrecordable_submission_is_cancelled_and_its_id_not_reused(tmp_path, monkeypatch, capsys, backend):
    from onager import cli
    from onager.index import JobIndex
    submit, answer, cancel, cancel_call = SUBMIT[backend]
    fake = install_fake_scheduler(tmp_path, monkeypatch)
    fake.respond(submit, [0, answer], [0, "5151\n"])
    project = tmp_path / "p"
    project.mkdir()
    write_job(project, "x", 4)
    monkeypatch.chdir(project)
    with monkeypatch.context() as m:
        _failing_index(m)
        assert cli.main(["launch", "--backend", backend, "--jobname", "x"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no space left on device" in err.lower(), err
    assert "cancelled" in err and "4242" in err, err
    assert cancel_call in fake.calls()
    assert launch_dirs(project, "x") == [] and JobIndex().records() == []
    # the next launch gets a new id: a ghost of launch 1 could never run launch 2's tasks
    assert cli.main(["launch", "--backend", backend, "--jobname", "x"]) == 0
    assert "launched x/2:" in capsys.readouterr().err
    assert [(r.launch_id, r.job_ids) for r in JobIndex().records()] == [("2", ["5151"])]


def test_jobs_that_cannot_be_cancelled_either_are_kept_and_reported(tmp_path, monkeypatch, capsys):
    from onager import cli
    fake = install_fake_scheduler(tmp_path, monkeypatch)
    fake.respond("sbatch", 0, "777\n")
    fake.respond("scancel", 1, "", "scancel: error: Unable to contact slurm controller\n")
    project = tmp_path / "p"
    project.mkdir()
    write_job(project, "x", 4)
    monkeypatch.chdir(project)
    with monkeypatch.context() as m:
        _failing_index(m)
        assert cli.main(["launch", "--backend", "slurm", "--jobname", "x"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "could not cancel slurm jobs 777" in err and "is kept" in err, err
    assert launch_dirs(project, "x") == ["1"]
    assert cli.main(["clean", "x"]) == 0
    out, err = capsys.readouterr()
    assert "nothing to clean" in out and "777" in err and launch_dirs(project, "x") == ["1"]
    fake.respond("sbatch", 0, "778\n")
    assert cli.main(["launch", "--backend", "slurm", "--jobname", "x"]) == 0
    assert launch_dirs(project, "x") == ["1", "2"]


def test_refused_submission_uses_up_its_id(tmp_path, monkeypatch):
    fake = install_fake_scheduler(tmp_path, monkeypatch)
    fake.respond("sbatch", [1, "", "sbatch: error: Invalid partition name specified\n"], [0, "99\n"])
    project = tmp_path / "p"
    project.mkdir()
    write_job(project, "x", 2)
    out = run_onager(["launch", "--backend", "slurm", "--jobname", "x", "--partition", "nosuch"], cwd=str(project))
    assert out.returncode == 1 and "Invalid partition" in out.stderr
    assert launch_dirs(project, "x") == []
    out = ok(run_onager(["launch", "--backend", "slurm", "--jobname", "x"], cwd=str(project)))
    assert launch_dirs(project, "x") == ["2"]
