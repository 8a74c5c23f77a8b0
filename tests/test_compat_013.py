"""0.1.3 launch command lines keep their 0.1.3 meaning (issue 12, items 10-12).

`--cpus`/`--mem`/`--gpus` are for the whole allocation, also with `--tasks-per-node`
(0.1.3's multiwrapper ran T tasks inside ONE request of that size); the per-task spellings
are `--cpus-per-task`/`--mem-per-task`/`--gpus-per-task`. Grid Engine asks 0.1.3's names
(`-pe smp`, `-l vf=`, `-l gpus=`) when nothing is configured, and `launch --debug`/`--test`
mean what they did in 0.1.3.
"""
from __future__ import annotations

import os

import pytest
from support import golden, text

from onager.backends.base import LaunchInfo
from onager.backends.gridengine import GridEngineBackend
from onager.backends.slurm import SlurmBackend
from onager.errors import UsageError
from onager.tasklist import Tasklist

LAUNCH_DIR = "/work/exp/.onager/launches/exp1/1"


def info(tasks: str, **options) -> LaunchInfo:
    tl = Tasklist.parse(tasks)
    return LaunchInfo("exp1", "1", LAUNCH_DIR, LAUNCH_DIR + "/wrapper.sh", tl, len(tl), "/work/exp", options)


def qsub(tasks: str = "1-8", **options) -> str:
    options.setdefault("max_aj_tasks", 75000)
    return text(GridEngineBackend(options).submit_commands(info(tasks, **options)))


def sbatch(tasks: str = "1-8", **options) -> str:
    options.setdefault("max_array_size", 1001)
    return text(SlurmBackend(options).submit_commands(info(tasks, **options)))


# ------------------------------------------------------------- item 10: no T x T on Grid Engine
def test_gridengine_tasks_per_node_asks_what_0_1_3_asked():
    """The issue's line: `--tasks-per-node 4 --mem 3 --cpus 5` asked `-pe smp 20 -l h_vmem=12G`."""
    out = qsub(tasks_per_node=4, cpus=5, mem="3", mem_resource="h_vmem")
    assert out == golden("gridengine_013_tasks_per_node.txt")
    assert " -pe smp 5 -l h_vmem=3G " in out  # 0.1.3: `-pe smp 5 -l vf=3G`, whatever T


@pytest.mark.parametrize("per_node", [1, 2, 4, 16])
def test_gridengine_request_does_not_grow_with_tasks_per_node(per_node):
    out = qsub(tasks="1-32", tasks_per_node=per_node, cpus=5, mem="3")
    assert " -pe smp 5 -l vf=3G " in out


# ------------------------------------------------------------- item 11: per allocation vs per task
def test_slurm_tasks_per_node_asks_what_0_1_3_asked():
    out = sbatch(tasks_per_node=4, cpus=5, mem="3", gpus="1")
    assert out == golden("slurm_013_tasks_per_node.txt")
    assert " --cpus-per-task=5 --mem=3G --gres=gpu:1 " in out


def test_per_task_spellings_multiply_by_tasks_at_once():
    per_task = dict(tasks_per_node=4, max_tasks_per_node=2, cpus_per_task=3, mem_per_task="1.5G", gpus_per_task=1)
    assert sbatch(**per_task) == golden("slurm_per_task.txt")
    assert " --cpus-per-task=6 --mem=3G --gres=gpu:2 " in sbatch(**per_task)
    # SGE counts memory per slot: 2 x 1.5G over 6 slots is 512M a slot
    assert qsub(**per_task) == golden("gridengine_per_task.txt")
    assert " -pe smp 6 -l vf=512M -l gpus=2 " in qsub(**per_task)


def test_per_task_spellings_without_tasks_per_node_are_the_plain_ones():
    assert sbatch(cpus_per_task=3, mem_per_task="5G") == sbatch(cpus=3, mem="5G")
    assert qsub(cpus_per_task=3, mem_per_task="5G") != qsub(cpus=3, mem="5G")  # per slot vs as given
    assert " -pe smp 3 -l vf=1707M " in qsub(cpus_per_task=3, mem_per_task="5G")


@pytest.mark.parametrize("options, words", [
    ({"cpus": 2, "cpus_per_task": 1}, "--cpus .*--cpus-per-task"),
    ({"mem": "2G", "mem_per_task": "1G"}, "--mem .*--mem-per-task"),
    ({"gpus": "1", "gpus_per_task": 1}, "--gpus .*--gpus-per-task"),
    ({"mem_per_task": "4X"}, "bad --mem-per-task"),
    ({"cpus_per_task": 0}, "--cpus-per-task must be at least 1"),
])
@pytest.mark.parametrize("backend", [SlurmBackend, GridEngineBackend])
def test_conflicting_or_bad_per_task_options_are_usage_errors(backend, options, words):
    with pytest.raises(UsageError, match=words):
        backend(options).check_options()


# ------------------------------------------------------------- item 12: 0.1.3's Grid Engine names
def test_gridengine_with_nothing_configured_asks_0_1_3_names():
    out = qsub(cpus=2, mem="2", gpus="1")
    assert out == golden("gridengine_013_names.txt")
    # what 0.1.3 printed for `--cpus 2 --mem 2 --gpus 1`: -l gpus=1 -pe smp 2 -l vf=2G
    for words in ("-pe smp 2", "-l vf=2G", "-l gpus=1"):
        assert f" {words} " in out


def test_configured_names_override_0_1_3_names():
    out = qsub(cpus=2, mem="2", gpus="1", pe="mpi", mem_resource="h_vmem", gpu_resource="gpu")
    assert " -pe mpi 2 -l h_vmem=2G -l gpu=1 " in out
    assert "vf=" not in out and "smp" not in out and "gpus=" not in out


def test_gridengine_memory_is_not_asked_unless_given():
    assert "vf=" not in qsub() and "-pe" not in qsub()


# ------------------------------------------------------------- item 12: --debug / --test
def test_slurm_debug_uses_0_1_3_partitions_unless_one_is_given():
    assert " -p debug " in sbatch(debug=True)
    assert " -p gpu-debug " in sbatch(debug=True, gpus="1")
    given = sbatch(debug=True, partition="short")
    assert " -p short " in given and "debug" not in given
    assert " -p " not in sbatch()
    with pytest.raises(UsageError, match="--debug allows at most 2:00:00"):
        SlurmBackend({"debug": True, "duration": "03:00:00"}).check_options()


def test_gridengine_debug_is_0_1_3_test_queue():
    out = qsub(debug=True)
    assert out == golden("gridengine_debug.txt")
    assert " -l h_rt=0:10:00 -l test " in out
    assert " -q all.q" in qsub(debug=True, queue="all.q") and "-l test" not in qsub(debug=True, queue="all.q")
    assert "-l test" not in qsub(debug=True, gpus="1")  # 0.1.3: GPU jobs went to the GPU hosts instead
    for options, words in (({"duration": "00:20:00"}, "at most 0:10:00"), ({"cpus": 2}, "one CPU")):
        with pytest.raises(UsageError, match=words):
            GridEngineBackend({"debug": True, **options}).check_options()


# ------------------------------------------------------------- through the command line
@pytest.fixture
def job(onager):
    out = onager("prelaunch", "+jobname", "j", "+command", "echo", "+arg", "--n", "1", "2", "3", "4")
    assert out.returncode == 0, out.stderr
    return onager


def tree(root: str) -> dict:
    found = {}
    for base, _, files in os.walk(root):
        for name in files:
            path = os.path.join(base, name)
            with open(path, "rb") as handle:
                found[os.path.relpath(path, root)] = handle.read()
    return found


@pytest.mark.parametrize("backend", ["slurm", "gridengine"])
@pytest.mark.parametrize("flag", ["--debug", "--test"])
def test_launch_accepts_0_1_3_debug_and_test(job, backend, flag):
    out = job("launch", "--backend", backend, "--jobname", "j", flag, "--duration", "00:05:00", "--dry-run")
    assert out.returncode == 0, out.stderr
    assert (" -p debug " if backend == "slurm" else " -l test ") in out.stdout


@pytest.mark.parametrize("backend", ["slurm", "gridengine"])
def test_gridengine_0_1_3_mem_works_with_nothing_configured(job, backend):
    out = job("launch", "--backend", backend, "--jobname", "j", "--mem", "2", "--cpus", "2", "--dry-run")
    assert out.returncode == 0, out.stderr
    assert ("-pe smp 2 -l vf=2G" if backend == "gridengine" else "--cpus-per-task=2 --mem=2G") in out.stdout


@pytest.mark.parametrize("argv", [
    ["--backend", "slurm", "--mem", "2G", "--mem-per-task", "1G"],
    ["--backend", "gridengine", "--cpus", "2", "--cpus-per-task", "1"],
    ["--backend", "gridengine", "--debug", "--duration", "1:00:00"],
    ["--backend", "slurm", "--test", "--duration", "2-00:00:00"],
])
def test_refusals_are_one_line_and_write_nothing(job, tmp_path, argv):
    before = tree(str(tmp_path))
    out = job("launch", "--jobname", "j", *argv)
    assert out.returncode == 2, out.stderr
    assert out.stderr.count("\n") == 1 and out.stderr.startswith("onager: error: ") and not out.stdout
    assert tree(str(tmp_path)) == before


def test_per_task_config_keys(job):
    assert job("config", "--write", "slurm", "mem_per_task", "3G", "--write", "slurm", "cpus_per_task",
               "2").returncode == 0
    out = job("launch", "--backend", "slurm", "--jobname", "j", "--tasks-per-node", "2", "--dry-run")
    assert out.returncode == 0, out.stderr
    assert " --cpus-per-task=4 --mem=6G " in out.stdout


def test_a_refused_submission_shows_the_schedulers_reason():
    """qsub prints its reason, then `Exiting.`: the one-line error keeps both (found with --test)."""
    import sys

    from onager.backends.base import run
    from onager.errors import OnagerError
    script = "import sys; sys.stderr.write('Unable to run job: unknown resource \"test\"\\nExiting.\\n'); sys.exit(1)"
    with pytest.raises(OnagerError) as caught:
        run([sys.executable, "-c", script])
    message = str(caught.value)
    assert 'failed: Unable to run job: unknown resource "test"; Exiting. (command: ' in message
    assert "\n" not in message


# ------------------------------------------------------------- item 14: the migration guide is true
GUIDE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs", "migrating-from-0.1.3.md")


def guide_rows(heading: str) -> list:
    """Cells of each table row under a `## heading` of the migration guide."""
    import re
    with open(GUIDE, encoding="utf-8") as handle:
        text = handle.read()
    section = text.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        if line.startswith("| `onager "):
            rows.append([c.strip() for c in re.split(r"(?<!\\)\|", line.strip("|"))])
    assert rows, f"no rows under {heading!r}"
    return rows


def spans(cell: str) -> list:
    import re
    return re.findall(r"`([^`]+)`", cell)


def claimed(cell: str) -> list:
    """(sent?, words) the cell says of the scheduler command: its leading code spans, up to
    the first explanation (`:`, `;` or `(` outside code); "no `-p`" says `-p` is not sent."""
    import re
    out = []
    before = ""
    for code, plain in re.findall(r"`([^`]+)`|([^`]+)", cell):
        if plain:
            if re.search(r"[:;(]", plain):
                break
            before = plain
        elif code.startswith("-"):
            out.append((not before.endswith("no "), code))
    return out


def guide_argv(line: str, dry_run: bool = True) -> list:
    import shlex
    argv = shlex.split(line)[1:]
    if dry_run and argv[0] == "launch":
        argv.insert(1, "--dry-run")
    return argv


@pytest.fixture
def nine(onager):
    out = onager("prelaunch", "+jobname", "exp1", "+command", "true", "+arg", "--n", *map(str, range(1, 10)))
    assert out.returncode == 0, out.stderr
    return onager


@pytest.mark.parametrize("row", guide_rows("0.1.3 command lines that are refused now"), ids=lambda r: r[0][:60])
def test_guide_refused_lines_are_refused_and_their_replacements_run(nine, tmp_path, row):
    before = tree(str(tmp_path))
    old = nine(*guide_argv(spans(row[0])[0], dry_run=False))
    assert old.returncode == 2 and old.stderr.count("\n") == 1, old.stderr
    assert tree(str(tmp_path)) == before
    new = [s for s in spans(row[2]) if s.startswith("onager ")]
    assert new
    for line in new:
        out = nine(*guide_argv(line))
        assert out.returncode == 0, (line, out.stderr)


@pytest.mark.parametrize("heading, request_column", [
    ("0.1.3 command lines that 0.1.3 itself refused, and that run now", 2),
    ("The same line, a different request", 2),
])
def test_guide_lines_run_and_ask_what_the_guide_says(nine, heading, request_column):
    for row in guide_rows(heading):
        line = spans(row[0])[0]
        out = nine(*guide_argv(line))
        assert out.returncode == 0, (line, out.stderr)
        words = " " + out.stdout.replace("\n", " ")
        for sent, claim in claimed(row[request_column]):
            assert (f" {claim} " in words) == sent, (line, claim, sent, out.stdout)
        for again in (s for s in spans(row[3] if len(row) > 3 else "") if s.startswith("onager ")):
            rerun = nine(*guide_argv(again))
            assert rerun.returncode == 0, (again, rerun.stderr)
