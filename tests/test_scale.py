"""Scale (issue 17): the fast paths of a launch build write and read exactly what the plain
paths did.

The references below are the per-task code the fast paths replaced (one json.loads per
jobfile line, one JSONEncoder.encode per value and per task, wrapper.task_record per task),
kept here verbatim so that every byte of tasks.sh, tasks.idx and tasks.jsonl is compared.
"""
from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from onager.errors import OnagerError
from onager.jobfile import JobEntry, _entry, _read_whole, iter_jobfile
from onager.launch import _env_name, write_tasks
from onager.layout import LaunchPaths
from onager.wrapper import index_record, task_record


# ------------------------------------------------------------------ references
def reference_iter_jobfile(path: str) -> Iterator[JobEntry]:
    """iter_jobfile as it was: one json.loads per line."""
    done = 0
    with open(path, encoding="utf-8") as handle:
        if handle.readline().strip() == "{":
            chunk: list[JobEntry] = []
            closed = False
            for raw in handle:
                raw = raw.strip()
                if raw == "":
                    continue
                if closed or raw == "}":
                    if closed:
                        break
                    closed = True
                    continue
                try:
                    obj = json.loads("{" + raw.rstrip(",") + "}")
                except (ValueError, RecursionError):
                    break
                for key, value in obj.items():
                    chunk.append(_entry(key, value, path))
                if len(chunk) >= 1024:
                    yield from chunk
                    done += len(chunk)
                    chunk = []
            else:
                if closed:
                    yield from chunk
                    return
    for number, entry in enumerate(_read_whole(path)):
        if number >= done:
            yield entry


def reference_write_tasks(launch_dir: str, entries: Any, prior: dict[int, int] | None = None) -> tuple[int, list[int]]:
    """write_tasks as it was: everything per task."""
    count, ids, offset, next_index_pos = 0, [], 0, 0
    env_names: dict[str, str] = {}
    encode = json.JSONEncoder(ensure_ascii=False).encode
    paths = LaunchPaths(launch_dir)
    with open(paths.tasks_sh, "wb") as records, open(paths.tasks_idx, "wb") as index, \
            open(paths.tasks_jsonl, "w", encoding="utf-8") as listing:
        for entry in entries:
            env = {}
            for key, value in entry.params.items():
                name = env_names.get(key)
                if name is None:
                    name = env_names[key] = _env_name(key)
                env[name] = value if isinstance(value, str) else encode(value)
            data = task_record(entry.id, entry.command, entry.tag, env,
                               prior_attempts=(prior or {}).get(entry.id, 0)).encode("utf-8")
            records.write(data)
            position = (entry.id - 1) * 24
            if position != next_index_pos:
                index.seek(position)
            index.write(index_record(offset, len(data)))
            next_index_pos = position + 24
            offset += len(data)
            listing.write(encode([entry.id, entry.command, entry.tag, entry.params]) + "\n")
            count += 1
            ids.append(entry.id)
    return count, ids


def _files(launch_dir: str) -> dict[str, bytes]:
    paths = LaunchPaths(launch_dir)
    out = {}
    for path in (paths.tasks_sh, paths.tasks_idx, paths.tasks_jsonl):
        with open(path, "rb") as handle:
            out[os.path.basename(path)] = handle.read()
    return out


def _both_ways(base: str, entries: list[JobEntry],
               prior: dict[int, int] | None = None) -> tuple[dict[str, bytes], dict[str, bytes]]:
    new, old = os.path.join(base, "new"), os.path.join(base, "old")
    os.makedirs(new, exist_ok=True)
    os.makedirs(old, exist_ok=True)
    count, ids = write_tasks(new, iter(entries), prior)
    assert (count, list(ids)) == reference_write_tasks(old, iter(entries), prior)
    return _files(new), _files(old)


# ------------------------------------------------------------------ a tricky sweep
TRICKY_VALUES: list[Any] = [
    "plain", "", "with space", "it's", 'say "hi"', "back\\slash", "tab\there", "new\nline", "$HOME", "`id`",
    "héllo wörld", "日本語", "emoji 🚀", "\u2028sep", "\x7f", "-", "a=b", 0, 1, -1, 10**20, 0.1, -0.0, 0.0, 1e100,
    float("inf"), float("-inf"), float("nan"), True, False, None, [1, "two", None], {"k": [1.5, {"x": "y"}]},
]


def tricky_entries(n: int = 9000) -> list[JobEntry]:
    """Unicode, quotes, escapes, every JSON scalar and nested values, clashing variable names
    (`a-b` and `a_b`), no params, and ids with gaps and out of order (the index seeks)."""
    entries = []
    ids = list(range(1, n + 1)) + [n + 50, n + 7, 3 * n]  # more than two write blocks, then jumps
    for number, task_id in enumerate(ids):
        value = TRICKY_VALUES[number % len(TRICKY_VALUES)]
        other = TRICKY_VALUES[(number * 7) % len(TRICKY_VALUES)]
        kind = number % 5
        if kind == 0:
            params: dict[str, Any] = {}
        elif kind == 1:
            params = {"lr": value, "seed": number}
        elif kind == 2:
            params = {"a-b": value, "a_b": other, "c": number}  # one variable name for two keys
        else:
            params = {"--batch-size": other, "pos1": value, "name": f"v{number % 13}"}
        text = value if isinstance(value, str) else json.dumps(value)
        entries.append(JobEntry(task_id, f"python train.py --x {json.dumps(text)} {number}", f"tag_{text}_{number}",
                                params))
    return entries


def test_write_tasks_writes_the_bytes_of_the_per_task_path(tmp_path):
    new, old = _both_ways(str(tmp_path), tricky_entries())
    assert new.keys() == old.keys()
    for name in new:
        assert new[name] == old[name], name


def sweep_entries(first: int, n: int) -> list[JobEntry]:
    """A sweep: consecutive ids, the same keys in every task, values of every kind."""
    out = []
    for number in range(n):
        value = TRICKY_VALUES[number % len(TRICKY_VALUES)]
        text = value if isinstance(value, str) else json.dumps(value)
        out.append(JobEntry(first + number, f"python train.py --lr {text!r} --seed {number}", f"t_{text}_{number}",
                            {"lr": value, "seed": number, "name": f"v{number % 13}", "ünï": text}))
    return out


@pytest.mark.parametrize("first", [1, 2])
def test_sweep_blocks_written_by_columns_are_the_bytes_of_the_per_task_path(tmp_path, monkeypatch, first):
    """Blocks of a sweep go through the column writer (not task by task), across blocks,
    then a gap in the ids and a task with other keys (task by task again), then a sweep again."""
    from onager import launch

    calls: list[int] = []
    real = launch._TaskWriter.one_by_one

    def counted(self: Any, block: list[JobEntry]) -> None:
        calls.append(len(block))
        real(self, block)

    monkeypatch.setattr(launch._TaskWriter, "one_by_one", counted)
    entries = sweep_entries(first, 9000) + [JobEntry(first + 9100, "echo gap", "", {"other": 1})] \
        + sweep_entries(first + 9101, 5000)
    new, old = _both_ways(str(tmp_path), entries)
    for name in new:
        assert new[name] == old[name], name
    assert calls == [4096]  # only the block with the gap and the other keys, of four


@pytest.mark.parametrize("ids", [[1, 2, 3], [5, 6], [2, 1], [1, 3, 4], [7]])
def test_ids_come_back_in_order_and_consecutive_ones_as_one_tasklist_block(tmp_path, ids):
    from onager.tasklist import Tasklist

    count, written = write_tasks(str(tmp_path), iter([JobEntry(i, "true", "", {}) for i in ids]))
    assert (count, list(written)) == (len(ids), ids)
    assert str(Tasklist.from_ids(written)) == str(Tasklist.from_ids(list(ids)))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(
    st.text(max_size=20), st.text(max_size=8),
    st.dictionaries(st.text(min_size=1, max_size=6),
                    st.one_of(st.text(max_size=10), st.integers(), st.floats(), st.booleans(), st.none()),
                    max_size=4)), min_size=1, max_size=30))
def test_write_tasks_matches_the_per_task_path_on_any_values(tmp_path_factory, tasks):
    """Lone surrogates aside (a jobfile cannot hold them), any text, number or key."""
    def clean(text: str) -> str:
        return text.encode("utf-8", "replace").decode("utf-8")

    entries = [JobEntry(i, clean(c), clean(t), {clean(k): clean(v) if isinstance(v, str) else v
                                                  for k, v in p.items()})
               for i, (c, t, p) in enumerate(tasks, 1)]
    new, old = _both_ways(str(tmp_path_factory.mktemp("w")), entries)
    assert new == old


def _jobfile_text(entries: list[JobEntry]) -> str:
    lines = [f'"{e.id}": {json.dumps([e.command, e.tag, e.params], ensure_ascii=False)}' for e in entries]
    return "{\n" + ",\n".join(lines) + "\n}\n"


def test_reading_a_jobfile_gives_the_entries_of_the_per_line_reader(tmp_path):
    entries = [e for e in tricky_entries() if e.id <= 9000]
    path = tmp_path / "jobs.json"
    path.write_text(_jobfile_text(entries), encoding="utf-8")
    got = list(iter_jobfile(str(path)))
    assert got == list(reference_iter_jobfile(str(path)))
    assert [e.id for e in got] == [e.id for e in entries]
    assert json.dumps(got, allow_nan=True) == json.dumps(entries, allow_nan=True)  # nan != nan: compare text


HAND_EDITED = [
    # escapes, a \\u escape, spacing, a line with two tasks, duplicate ids, leading zeros,
    # blank lines, trailing commas, a one-element entry, non-canonical numbers
    '{\n"1": ["echo \\u00e9", "t", {"a": 1e5, "b": -0}],\n\n"2":["x","y",{}],\n  "3": ["z", "w", {"k": 0.10}] ,\n'
    '"4": ["a"], "5": ["b", "c"],\n"4": ["dup", "d", {}],\n"06": ["lead", "", {}],,\n"7": ["last", "", {}]\n}\n',
    # a line that is not one task: the whole-file reader takes over
    '{\n"1": ["a", "", {}],\n"2": [\n  "b", "", {}\n],\n"3": ["c", "", {}]\n}\n',
    # 0.1.3's single-line file
    '{"1": ["echo a", "t1"], "2": ["echo b", "t2"]}',
]


@pytest.mark.parametrize("text", HAND_EDITED)
@pytest.mark.parametrize("repeat", [1, 3000])
def test_hand_edited_jobfiles_read_as_before(tmp_path, text, repeat):
    """Odd but valid files, alone and after thousands of plain lines (so they fall inside a
    block that the fast reader decodes at once)."""
    if repeat > 1 and text.startswith("{\n"):
        plain = "".join(f'"{i}": ["p {i}", "", {{"i": {i}}}],\n' for i in range(100, 100 + repeat))
        text = "{\n" + plain + text[2:]
    path = tmp_path / "jobs.json"
    path.write_text(text, encoding="utf-8")
    assert list(iter_jobfile(str(path))) == list(reference_iter_jobfile(str(path)))


@pytest.mark.parametrize("bad", ['"9": ["echo \\ud800", "", {}]', '"0": ["zero", "", {}]', '"x": ["a", "", {}]',
                                 '"9": [5, "", {}]'])
def test_a_bad_entry_inside_a_block_is_still_one_clear_error(tmp_path, bad):
    plain = "".join(f'"{i}": ["p {i}", "", {{}}],\n' for i in range(1, 3000))
    path = tmp_path / "jobs.json"
    path.write_text("{\n" + plain + bad + ',\n"5000": ["e", "", {}]\n}\n', encoding="utf-8")
    with pytest.raises(OnagerError) as new:
        list(iter_jobfile(str(path)))
    with pytest.raises(OnagerError) as old:
        list(reference_iter_jobfile(str(path)))
    assert str(new.value) == str(old.value)


# ------------------------------------------------------------------ provenance without pip freeze
def test_provenance_lists_packages_without_a_pip_freeze_child(tmp_path, monkeypatch):
    """A launch used to wait ~0.5 s for a `pip freeze` process; the distributions are now read
    in-process, in pip freeze's format (what pip itself lists is compared where pip runs)."""
    import subprocess
    import sys

    from onager import provenance

    started: list[Any] = []
    real_popen = subprocess.Popen

    def watch(argv: Any, *args: Any, **kwargs: Any) -> Any:
        started.append(argv)
        return real_popen(argv, *args, **kwargs)

    monkeypatch.setattr(subprocess, "Popen", watch)
    monkeypatch.setenv("ONAGER_GLOBAL_CONFIG", str(tmp_path / "global.onagerconfig"))
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    launch_dir = tmp_path / "launch"
    launch_dir.mkdir()
    # sys.path as the installed `onager` script has it: pytest puts the source tree first, and
    # the tree's own onager.egg-info (left by the editable install) would be read before it
    source_tree = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p and os.path.abspath(p) != source_tree])
    provenance.prepare_launch(str(launch_dir), str(tmp_path), {})
    monkeypatch.setattr(subprocess, "Popen", real_popen)
    assert not [argv for argv in started if "freeze" in argv], started
    record = provenance.load_provenance(str(launch_dir))
    assert record is not None
    packages = record["packages"]
    text = (launch_dir / packages["file"]).read_text()
    assert packages["count"] == sum(1 for line in text.splitlines() if line and not line.startswith("#"))
    assert "pytest==" in text and "\npip==" not in "\n" + text
    frozen = subprocess.run([sys.executable, "-m", "pip", "freeze"], capture_output=True, text=True, cwd=tmp_path)
    if frozen.returncode == 0:
        # the same name==version set as pip's own, and as many editable installs (pip names an
        # editable checkout with a git remote by its URL, `-e git+...#egg=NAME`, ours by its path)
        assert _pins(frozen.stdout) == _pins(text)
        assert _editables(frozen.stdout) == _editables(text)


def _pins(text: str) -> set[str]:
    import re

    return set(re.findall(r"^[A-Za-z0-9_.-]+==[^\s)]+$", text, re.M))


def _editables(text: str) -> int:
    return sum(1 for line in text.splitlines() if line.startswith("-e "))


def test_records_with_prior_attempts_or_a_replicate_are_the_bytes_of_the_per_task_path(tmp_path):
    """Reruns carry ONAGER_PRIOR_ATTEMPTS and +repeat adds ONAGER_REPLICATE: both in every writer."""
    entries = sweep_entries(1, 50)
    new, old = _both_ways(str(tmp_path / "prior"), entries, {3: 2, 40: 1})
    assert new == old and b"ONAGER_PRIOR_ATTEMPTS=2\n" in new["tasks.sh"]
    replicated = [JobEntry(e.id, e.command, e.tag, {**e.params, "replicate": e.id % 3 + 1}) for e in entries]
    new, old = _both_ways(str(tmp_path / "rep"), replicated)
    assert new == old and b"export ONAGER_REPLICATE=2\n" in new["tasks.sh"]
