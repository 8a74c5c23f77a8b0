"""jobs.json: streamed writing and reading, our form and 0.1.3's, and clear errors on bad files."""
from __future__ import annotations

import io
import json
import os
import time

import pytest

from onager.errors import OnagerError, UsageError
from onager.jobfile import JobEntry, iter_jobfile, jobfile_path, max_id, write_jobfile
from onager.sweep import Sweep


def _sweep() -> Sweep:
    return Sweep("python train.py").arg("--lr", ["0.1", "0.01"]).arg("--msg", ["it's", "a b"]).tag("--tag")


def test_jobfile_path_default_and_custom():
    assert jobfile_path("exp1") == ".onager/scripts/exp1/jobs.json"
    assert jobfile_path("exp1", "runs/{jobname}/j.json") == "runs/exp1/j.json"
    assert jobfile_path("exp1", "fixed.json") == "fixed.json"


def test_write_then_read_round_trips(tmp_path):
    path = str(tmp_path / "jobs.json")
    sweep = _sweep()
    count = write_jobfile(path, sweep.lines("j"))
    assert count == 4
    entries = list(iter_jobfile(path))
    tasks = list(sweep.tasks("j"))
    assert [e.id for e in entries] == [1, 2, 3, 4]
    assert [(e.command, e.tag, e.params) for e in entries] == [(t.command, t.tag, t.params) for t in tasks]
    assert entries[0].params == {"lr": 0.1, "msg": "it's"}
    assert max_id(path) == 4


def test_written_file_is_one_task_per_line_and_a_013_reader_reads_it(tmp_path):
    path = tmp_path / "jobs.json"
    write_jobfile(str(path), _sweep().lines("j"))
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines()
    assert lines[0] == "{" and lines[-1] == "}"
    assert len(lines) == 4 + 2
    assert all(line.startswith(f'"{i}": [') for i, line in enumerate(lines[1:-1], 1))
    data = json.loads(text)  # what 0.1.3 did: json.load, then data[str(id)][0] and [1]
    assert list(data) == ["1", "2", "3", "4"]
    command, tag = data["2"][0], data["2"][1]
    assert command == "python train.py --lr 0.01 --msg 'it'\"'\"'s' --tag 'j_2__lr_0.01__msg_it'\"'\"'s'"
    assert tag == "j_2__lr_0.01__msg_it's"


def test_keep_entries_come_first_and_echo_gets_every_command(tmp_path):
    path = str(tmp_path / "jobs.json")
    keep = [JobEntry(1, "old one", "t1", {"a": 1}), JobEntry(5, "old five", "", {})]
    sweep = Sweep("e").arg("--i", [str(i) for i in range(5000)])
    echo = io.StringIO()
    count = write_jobfile(path, sweep.lines("j", start_id=6), keep, echo=echo)
    assert count == 5002
    entries = list(iter_jobfile(path))
    assert entries[:2] == keep
    assert entries[2].id == 6 and entries[-1].id == 5005
    assert echo.getvalue().splitlines() == [f"e --i {i}" for i in range(5000)]  # more than one buffer


def test_unicode_and_control_characters_round_trip(tmp_path):
    path = str(tmp_path / "jobs.json")
    values = ["héllo", "日本", "line1\nline2", "tab\t", "quote\"", "back\\slash", "\u2028sep"]
    sweep = Sweep("e").pos_arg(values).tag()
    write_jobfile(path, sweep.lines("j"))
    entries = list(iter_jobfile(path))
    assert [e.tag for e in entries] == [t.tag for t in sweep.tasks("j")]
    assert [e.params["pos1"] for e in entries] == values
    with open(path, encoding="utf-8") as handle:
        assert len(json.load(handle)) == len(values)


def test_failed_write_leaves_the_old_file(tmp_path):
    path = tmp_path / "jobs.json"
    write_jobfile(str(path), _sweep().lines("j"))
    before = path.read_bytes()

    def broken():
        yield from _sweep().lines("k")
        raise RuntimeError("generator failed")

    with pytest.raises(RuntimeError):
        write_jobfile(str(path), broken())
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["jobs.json"]  # no temp file left behind


# -------------------------------------------------------------- 0.1.3 form
@pytest.mark.parametrize("dump", [
    lambda d: json.dumps(d),
    lambda d: json.dumps(d, indent=4),
    lambda d: json.dumps(d, indent=2, ensure_ascii=False) + "\n",
    lambda d: json.dumps(d, separators=(",", ":")),
])
def test_013_forms_are_read(tmp_path, dump):
    data = {"1": ["echo a", "j_1__a"], "2": ["echo 'b c'", ""], "10": ["echo é", "j_10"]}
    path = tmp_path / "jobs.json"
    path.write_text(dump(data), encoding="utf-8")
    entries = list(iter_jobfile(str(path)))
    assert entries == [JobEntry(1, "echo a", "j_1__a", {}), JobEntry(2, "echo 'b c'", "", {}),
                       JobEntry(10, "echo é", "j_10", {})]
    assert max_id(str(path)) == 10


def test_entry_with_only_a_command_has_empty_tag(tmp_path):
    path = tmp_path / "jobs.json"
    path.write_text('{"3": ["echo x"]}')
    assert list(iter_jobfile(str(path))) == [JobEntry(3, "echo x", "", {})]


def test_empty_object_has_no_entries(tmp_path):
    path = tmp_path / "jobs.json"
    path.write_text("{}\n")
    assert list(iter_jobfile(str(path))) == []
    assert max_id(str(path)) == 0


def test_line_form_with_one_pretty_printed_entry_is_still_read(tmp_path):
    """Hand-edited files: our line form that stops being one-per-line is read whole, each entry once."""
    lines = [f'"{i}": ["echo {i}", "t{i}"],' for i in range(1, 3000)]
    text = "{\n" + "\n".join(lines) + '\n"3000": [\n  "echo 3000",\n  "t3000"\n]\n}\n'
    path = tmp_path / "jobs.json"
    path.write_text(text)
    entries = list(iter_jobfile(str(path)))
    assert [e.id for e in entries] == list(range(1, 3001))
    assert entries[-1] == JobEntry(3000, "echo 3000", "t3000", {})


# -------------------------------------------------------------- streaming
def test_reading_streams(tmp_path):
    """The first entries come out before a bad line far down the file is ever read."""
    good = "".join(f'"{i}": ["echo {i}", ""],\n' for i in range(1, 5000))
    path = tmp_path / "jobs.json"
    path.write_text("{\n" + good + "THIS IS NOT JSON\n}\n")
    reader = iter_jobfile(str(path))
    assert next(reader) == JobEntry(1, "echo 1", "", {})
    with pytest.raises(OnagerError):
        list(reader)


MEMORY_PROBE = """
import os, resource, sys
from onager.jobfile import iter_jobfile, write_jobfile
from onager.sweep import Sweep

def rss():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

path = sys.argv[1]
sweep = Sweep("python train.py --some --long --base --command").arg("--a", [str(i) for i in range(500)]) \\
    .arg("--b", [str(i) for i in range(200)]).tag()
base = rss()
write_jobfile(path, sweep.lines("memory"))
written = rss()
count = last = 0
for entry in iter_jobfile(path):
    count += 1
    last = entry.id
print(written - base, rss() - base, count, last, os.path.getsize(path))
"""


def test_big_jobfile_is_written_and_read_in_little_memory(tmp_path):
    """100k tasks (16 MB of JSON): peak memory grows by a small fraction of the file size
    (json.load of the same file takes more than twice its size)."""
    import subprocess
    import sys

    from support import ROOT

    env = dict(os.environ, PYTHONPATH=ROOT)
    result = subprocess.run([sys.executable, "-c", MEMORY_PROBE, str(tmp_path / "jobs.json")],
                            capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    write_growth, read_growth, count, last, size = map(int, result.stdout.split())
    assert count == 100_000 and last == 100_000
    assert size > 15_000_000
    assert write_growth < size / 4, (write_growth, size)
    assert read_growth < size / 4, (read_growth, size)


# ------------------------------------------------------------------ errors
@pytest.mark.parametrize("content", [
    b"",
    b"not json at all",
    b'{"1": ["echo a", "t"],',                       # truncated, 0.1.3 form
    b'{\n"1": ["echo a", "t", {}],\n"2": ["echo',   # truncated in the middle of a line
    b'{\n"1": ["echo a", "t", {}],\n',               # truncated at a line end: no closing brace
    b'{\n"1": ["echo a", "t", {}]\n}\ngarbage\n',    # text after the end
    b'["echo a", "t"]',                               # not an object
    b'{"1": "echo a"}',                               # entry is not a list
    b'{"1": []}',
    b'{"1": [5, "t"]}',                               # command is not text
    b'{"x": ["echo a", "t"]}',                        # id is not a number
    b'{"0": ["echo a", "t"]}',                        # ids start at 1
    b'{"-3": ["echo a", "t"]}',
    b'{" 1": ["echo a", "t"]}',
    b'{"1_0": ["echo a", "t"]}',
    b'{\n"1": ["echo a", "t", {}],\n"x": ["echo b", "t", {}]\n}\n',
    b'\xff\xfe{"1": ["a", "b"]}',                     # not UTF-8
    b'{\n"1": ["echo \xff", "t", {}]\n}\n',
])
def test_corrupted_jobfile_is_one_clear_error(tmp_path, content):
    path = tmp_path / "jobs.json"
    path.write_bytes(content)
    with pytest.raises(OnagerError) as info:
        list(iter_jobfile(str(path)))
    message = str(info.value)
    assert "\n" not in message
    assert str(path) in message
    assert "prelaunch" in message or "UTF-8" in message


def test_missing_jobfile_is_a_usage_error_naming_prelaunch(tmp_path):
    with pytest.raises(UsageError) as info:
        list(iter_jobfile(str(tmp_path / "nope.json")))
    assert "prelaunch" in str(info.value) and "nope.json" in str(info.value)


def test_jobfile_that_is_a_directory(tmp_path):
    (tmp_path / "jobs.json").mkdir()
    with pytest.raises(OnagerError) as info:
        list(iter_jobfile(str(tmp_path / "jobs.json")))
    assert "jobs.json" in str(info.value)


def test_corrupted_jobfile_through_the_cli(onager, project):
    path = project / ".onager" / "scripts" / "bad"
    path.mkdir(parents=True)
    (path / "jobs.json").write_text('{"1": ["echo a", "t"')
    result = onager("launch", "--backend", "local", "--jobname", "bad")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1
    assert "jobs.json" in result.stderr
    # prelaunch +append onto it fails the same way and leaves the file alone
    result = onager("prelaunch", "+jobname", "bad", "+command", "echo", "+pos-arg", "b", "+append")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert (path / "jobs.json").read_text() == '{"1": ["echo a", "t"'


def test_stale_temp_files_of_a_killed_writer_are_removed(tmp_path):
    path = tmp_path / "jobs.json"
    stale = tmp_path / ".jobs.json.abc123.tmp"
    fresh = tmp_path / ".jobs.json.def456.tmp"
    other = tmp_path / ".other.json.abc.tmp"
    for leftover in (stale, fresh, other):
        leftover.write_text("half a jobfile")
    old = time.time() - 3600
    os.utime(stale, (old, old))
    os.utime(other, (old, old))
    write_jobfile(str(path), _sweep().lines("j"))
    assert not stale.exists()           # a killed writer's leftover
    assert fresh.exists()               # might belong to a writer still running
    assert other.exists()               # not this jobfile's
    assert len(list(iter_jobfile(str(path)))) == 4
