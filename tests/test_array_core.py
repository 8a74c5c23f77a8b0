"""The array-scheduler core and the wrapper: the backend names where a task's array index
and job id come from; wrapper.py and node.sh name no scheduler."""
from __future__ import annotations

import os
import re
import subprocess

import pytest
from support import ROOT, install_fake_scheduler, run_onager

from onager.backends.array import node_script_text
from onager.backends.gridengine import GridEngineBackend
from onager.backends.slurm import SlurmBackend
from onager.jobfile import JobEntry
from onager.launch import write_tasks
from onager.wrapper import wrapper_text

SCHEDULER_WORDS = re.compile(r"SLURM_|SGE_|\bJOB_ID\b|PBS_|LSB_|OAR_")


def _launch_dir(project):
    d = project / "L"
    (d / "logs").mkdir(parents=True)
    (d / "state").mkdir()
    write_tasks(str(d), iter([JobEntry(i, f"echo task {i}", "", {}) for i in range(1, 6)]))
    return d


def test_wrapper_reads_the_variables_the_backend_names(project):
    d = _launch_dir(project)
    (d / "wrapper.sh").write_text(wrapper_text(str(d), "j", "1", str(project),
                                               index_variable="MY_INDEX", job_id_variable="MY_JOB"))
    env = dict(os.environ, MY_INDEX="1", ONAGER_TASK_OFFSET="2", MY_JOB="77")
    assert subprocess.run(["bash", str(d / "wrapper.sh")], env=env, timeout=60).returncode == 0
    assert (d / "logs/3.out").read_text() == "task 3\n"
    [start] = [n for n in os.listdir(d / "state") if n.startswith("3.start@")]
    assert (d / "state" / start).read_text().split()[2] == "77"  # host, pid, scheduler job id, pstart
    assert [n.split("@")[-2:] for n in os.listdir(d / "state") if n.startswith("3.end@")] == [["done", ""]]
    # another scheduler's variable is not this wrapper's business
    other = dict(os.environ, SLURM_ARRAY_TASK_ID="4", SGE_TASK_ID="4")
    out = subprocess.run(["bash", str(d / "wrapper.sh")], env=other, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "no task id" in out.stderr
    assert not (d / "logs/4.out").exists()


@pytest.mark.parametrize("bad", ["", "1X", "A-B", "X;rm -rf ~", "$(id)"])
def test_variable_names_are_checked_before_they_reach_a_script(bad):
    with pytest.raises(ValueError):
        wrapper_text("/l", "j", "1", "/w", index_variable=bad or " ")
    with pytest.raises(ValueError):
        node_script_text("/l", 10, 2, bad)


def test_wrapper_and_core_name_no_scheduler():
    for module in ("wrapper.py", os.path.join("backends", "array.py")):
        with open(os.path.join(ROOT, "onager", module)) as handle:
            assert not SCHEDULER_WORDS.findall(handle.read()), module
    for backend in (SlurmBackend, GridEngineBackend):
        text = node_script_text("/l", 10, 2, backend.index_variable)
        assert f"${{{backend.index_variable}:-}}" in text


@pytest.mark.parametrize("backend, answer, index, others", [
    ("slurm", "41\n", "SLURM_ARRAY_TASK_ID", ("SGE_TASK_ID",)),
    ("gridengine", "42\n", "SGE_TASK_ID", ("SLURM",)),
])
def test_a_launch_writes_its_backends_variables_into_wrapper_sh(project, tmp_path, monkeypatch,
                                                                  backend, answer, index, others):
    fake = install_fake_scheduler(tmp_path, monkeypatch)
    fake.respond("sbatch" if backend == "slurm" else "qsub", 0, answer)
    env = {"PATH": os.environ["PATH"]}
    out = run_onager(["prelaunch", "+jobname", "v", "+command", "echo", "+arg", "--n", "1", "2", "+q"],
                     cwd=str(project))
    assert out.returncode == 0, out.stderr
    out = run_onager(["launch", "--backend", backend, "--jobname", "v", "--max-array-size", "1001"]
                     if backend == "slurm" else ["launch", "--backend", backend, "--jobname", "v"],
                     cwd=str(project), env=env)
    assert out.returncode == 0, out.stderr
    launch = project / ".onager/launches/v/1"
    text = (launch / "wrapper.sh").read_text()
    assert f"${{{index}:-}}" in text and not any(o in text for o in others)
    run = subprocess.run(["bash", str(launch / "wrapper.sh")], env=dict(os.environ, **{index: "2"}), timeout=60)
    assert run.returncode == 0
    assert (launch / "logs/2.out").read_text() == "--n 2\n"


@pytest.mark.parametrize("backend, option, message", [
    ("slurm", ["--hosts", "a:1"], "slurm has no host list; drop --hosts or use --backend ssh"),
    ("slurm", ["--detach"], "slurm has no pool of its own to detach; drop --detach"),
    ("gridengine", ["--ssh-config", "/x"], "gridengine has no ssh config; drop --ssh-config"),
    ("gridengine", ["--retries", "-1"], "--retries must be 0 or more"),
    ("slurm", ["--max-array-size", "1"], "--max-array-size must be at least 2"),
    ("slurm", ["--max-tasks", "0"], "--max-tasks must be at least 1"),
    ("gridengine", ["--max-tasks", "0"], "--max-tasks must be at least 1"),
])
def test_array_backends_refuse_options_before_anything_is_written(project, tmp_path, monkeypatch,
                                                                   backend, option, message):
    """Options only pools honour, and bad limits, are refused like every other bad option:
    one line, exit 2, no launch directory, no launch id taken, no scheduler called."""
    fake = install_fake_scheduler(tmp_path, monkeypatch)
    fake.respond("sbatch", 0, "41\n")
    fake.respond("qsub", 0, "42\n")
    out = run_onager(["prelaunch", "+jobname", "r", "+command", "echo", "+arg", "--n", "1", "2", "+q"],
                     cwd=str(project))
    assert out.returncode == 0, out.stderr
    before = sorted(str(p.relative_to(project)) for p in project.rglob("*"))
    out = run_onager(["launch", "--backend", backend, "--jobname", "r", *option], cwd=str(project),
                     env={"PATH": os.environ["PATH"]})
    assert out.returncode == 2, out.stdout + out.stderr
    assert message in out.stderr and len(out.stderr.strip().splitlines()) == 1 and "Traceback" not in out.stderr
    assert sorted(str(p.relative_to(project)) for p in project.rglob("*")) == before
    assert not [c for c in fake.calls() if c[0] in ("sbatch", "qsub")]
