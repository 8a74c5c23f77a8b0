"""Building a launch and scheduler dry runs (issue 17): what the fast paths must keep.

- A launch built from a prelaunched jobfile holds the bytes of the per-task reference
  (tests/test_scale.py), whole or for a tasklist, and makes tasks.jsonl from the jobfile's
  own text instead of encoding each task again.
- sbatch gets ONAGER_TASK_OFFSET in its own environment, not as `--export=ALL,...` (which
  makes slurmd start each task later); a user's own --export after `--` carries it too.
"""
from __future__ import annotations

import json
import os
import stat
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st
from support import run_onager
from test_scale import _files, reference_iter_jobfile, reference_write_tasks

from onager import launch as launchmod
from onager.backends.base import LaunchInfo
from onager.backends.slurm import SlurmBackend
from onager.errors import UsageError
from onager.tasklist import Tasklist

# strings only (and the ints prelaunch makes of whole numbers): a record then needs no JSON
# encoding at all, so an encoder call can only come from tasks.jsonl
TRICKY = ["it's", 'say "hi"', "back\\slash", "tab\there", "new\nline", "héllo wörld", "日本語", "emoji 🚀",
          "$HOME", "`id`", "", "a b", "plain", "007", "1e5", "-", "a=b", "7"]


def _prelaunch(project, n_third: int = 300) -> str:
    out = run_onager(["prelaunch", "+jobname", "big", "+command", "python train.py 'x y'", "+arg", "--lr", *TRICKY,
                      "+arg", "--seed", "1", "2", "+pos-arg", *map(str, range(1, n_third + 1)), "+tag", "+q"],
                     cwd=str(project))
    assert out.returncode == 0, out.stderr
    path = os.path.join(str(project), ".onager", "scripts", "big", "jobs.json")
    assert sum(1 for _ in reference_iter_jobfile(path)) == len(TRICKY) * 2 * n_third
    return path


def _built(tasklist: str | None) -> tuple[dict[str, bytes], int]:
    _, info = launchmod.prepare("big", "local", {}, tasklist)
    try:
        return _files(info.launch_dir), info.count
    finally:
        launchmod.discard(info)


@pytest.mark.parametrize("tasklist", [None, "2-9000:3,9500-10800", "1,10800"])
def test_a_launch_of_a_prelaunched_jobfile_holds_the_bytes_of_the_per_task_reference(project, tasklist):
    path = _prelaunch(project)
    files, count = _built(tasklist)
    wanted = Tasklist.parse(tasklist) if tasklist else None
    os.makedirs("ref")
    n, _ = reference_write_tasks("ref", (e for e in reference_iter_jobfile(path) if wanted is None or e.id in wanted))
    assert count == n
    assert files == _files("ref")


def test_the_build_encodes_no_task_again_for_tasks_jsonl(project, monkeypatch):
    """tasks.jsonl is the jobfile's text with each id moved inside its list: before, every
    task went through the JSON encoder once more (a fifth of the build)."""
    _prelaunch(project, 200)
    calls = []
    make = json.encoder.c_make_encoder
    assert make is not None

    def counting(*args):
        encoder = make(*args)

        def encode(value, *a):
            if isinstance(value, (list, tuple)) and len(value) == 4:  # a task: [id, command, tag, params]
                calls.append(value)
            return encoder(value, *a)
        return encode

    monkeypatch.setattr(json.encoder, "c_make_encoder", counting)
    files, count = _built(None)
    assert count == len(TRICKY) * 2 * 200
    assert files["tasks.jsonl"].count(b"\n") == count
    assert len(calls) <= 1  # the file's last line (no comma after it) is read on its own


def test_a_hand_edited_jobfile_line_still_reads_the_same(project):
    """A line that is not prelaunch's exact form (spacing, an id with a leading zero) goes the
    decoding way; the launch lists the same tasks."""
    _prelaunch(project, 2)
    path = ".onager/scripts/big/jobs.json"
    with open(path, encoding="utf-8") as handle:
        lines = handle.read().split("\n")
    lines[1] = lines[1].replace('"1": [', '"01":[')
    lines[3] = lines[3].replace(", {", ",{")
    with open(path, "w", encoding="utf-8") as handle:
        handle.write("\n".join(lines))
    files, count = _built(None)
    os.makedirs("ref")
    assert (count, files) == (reference_write_tasks("ref", reference_iter_jobfile(path))[0], _files("ref"))


# ------------------------------------------------------------------ sbatch and its environment
FAKE_SBATCH = r'''#!{python}
import json, os, sys
with open(os.environ["FAKE_LOG"], "a") as log:
    log.write(json.dumps([os.environ.get("ONAGER_TASK_OFFSET"), sys.argv[1:]]) + "\n")
print(100 + sum(1 for _ in open(os.environ["FAKE_LOG"])))
'''


def _fake_sbatch(tmp_path, monkeypatch) -> str:
    bin_dir = tmp_path / "fakebin"
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text(FAKE_SBATCH.replace("{python}", sys.executable))
    (bin_dir / "sbatch").chmod(stat.S_IRWXU)
    log = str(tmp_path / "sbatch.jsonl")
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_LOG", log)
    return log


def test_sbatch_gets_the_offset_in_its_environment_not_in_an_export(project, monkeypatch):
    log = _fake_sbatch(project, monkeypatch)
    assert run_onager(["prelaunch", "+jobname", "j", "+command", "true", "+pos-arg", *"1234567", "+q"],
                      cwd=str(project)).returncode == 0
    out = run_onager(["launch", "--backend", "slurm", "--jobname", "j", "--max-array-size", "3"], cwd=str(project),
                     env={"ONAGER_TASK_OFFSET": "999", "SBATCH_EXPORT": ""})  # a stale value is not passed on
    assert out.returncode == 0, out.stderr
    with open(log, encoding="utf-8") as handle:
        calls = [json.loads(line) for line in handle]
    assert [offset for offset, _ in calls] == ["0", "2", "4", "6"]
    assert [next(a for a in argv if a.startswith("--array=")) for _, argv in calls] == ["--array=1-2"] * 3 + [
        "--array=1"]
    assert not [a for _, argv in calls for a in argv if a.startswith("--export")]
    printed = [line for line in out.stdout.splitlines() if "sbatch" in line]
    assert printed[1].startswith("ONAGER_TASK_OFFSET=2 sbatch ")  # what was run, runnable as printed


def _info(tasks: str) -> LaunchInfo:
    tl = Tasklist.parse(tasks)
    return LaunchInfo("j", "1", "/w/.onager/launches/j/1", "/w/.onager/launches/j/1/wrapper.sh", tl, len(tl), "/w",
                      {})


@pytest.mark.parametrize("extra, expected", [
    (["--export=ALL,FOO=1"], ["--export=ALL,FOO=1,ONAGER_TASK_OFFSET={}"]),
    (["--export", "FOO,BAR"], ["--export=FOO,BAR,ONAGER_TASK_OFFSET={}"]),
    (["--export=ALL", "--exclusive", "--export=PATH"], ["--export=ALL", "--exclusive",
                                                         "--export=PATH,ONAGER_TASK_OFFSET={}"]),
    (["--export=ALL"], ["--export=ALL"]),  # the environment, the offset in it
])
def test_a_users_own_export_carries_the_offset(monkeypatch, extra, expected):
    monkeypatch.delenv("SBATCH_EXPORT", raising=False)
    commands = SlurmBackend({"extra": extra, "max_array_size": 3}).submit_commands(_info("1-3"))
    for command, offset in zip(commands, (0, 2)):
        assert command[0] == f"ONAGER_TASK_OFFSET={offset}"
        assert command[-1 - len(expected):-1] == [word.format(offset) for word in expected]


def test_sbatch_export_from_the_environment_carries_the_offset(monkeypatch):
    monkeypatch.setenv("SBATCH_EXPORT", "HOME,PATH")
    command = SlurmBackend({"max_array_size": 3}).submit_commands(_info("3"))[0]
    assert "--export=HOME,PATH,ONAGER_TASK_OFFSET=2" in command
    monkeypatch.setenv("SBATCH_EXPORT", "ALL")
    command = SlurmBackend({"max_array_size": 3}).submit_commands(_info("3"))[0]
    assert not [word for word in command if word.startswith("--export")]


def test_export_none_is_refused_only_where_an_offset_is_needed(monkeypatch):
    monkeypatch.delenv("SBATCH_EXPORT", raising=False)
    backend = SlurmBackend({"extra": ["--export=NONE"], "max_array_size": 3})
    assert backend.submit_commands(_info("1-2"))[0][-2] == "--export=NONE"
    with pytest.raises(UsageError, match="--export=NONE"):
        backend.submit_commands(_info("1-3"))


# ------------------------------------------------------------------ dry runs of split launches
def test_chunks_of_a_split_launch_render_without_listing_their_ids(monkeypatch):
    """Each of the 1,000 windows of a 1M-task launch was condensed by listing its ids."""
    chunks = Tasklist.range(1, 10 ** 6).split_below(1000)
    sparse = Tasklist.parse("1-5,7,9-2500,2502,2600-2601").split_below(1000)

    def listed(cls, ids):
        raise AssertionError("ids listed")
    monkeypatch.setattr(Tasklist, "from_ids", classmethod(listed))
    assert {tl.slurm() for _, tl in chunks} == {"1-1000"}
    assert [tl.slurm() for _, tl in sparse] == ["1-5,7,9-1000", "1-1000", "1-500,502,600-601"]
    assert [tl.sge_blocks() for _, tl in chunks[:1]] == [["1-1000:1"]]


@given(st.lists(st.integers(1, 80), max_size=60), st.lists(st.tuples(st.integers(1, 60), st.integers(0, 20),
                                                                    st.integers(1, 4)), max_size=5))
def test_condensed_is_the_greedy_form_of_from_ids(ids, blocks):
    for tasklist in (Tasklist.from_ids(ids), Tasklist([(a, a + n, s) for a, n, s in blocks])):
        if tasklist:
            assert str(tasklist.condensed()) == str(Tasklist.from_ids(list(tasklist)))
