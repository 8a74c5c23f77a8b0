"""Tasklists: the grammar users type, schedulers read and the index stores."""
from __future__ import annotations

import itertools
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from onager.errors import UsageError
from onager.tasklist import Tasklist


# ----------------------------------------------------------------- parsing
@pytest.mark.parametrize("text, ids", [
    ("1-3:1,5,8-9", [1, 2, 3, 5, 8, 9]),
    ("7", [7]),
    ("1-4", [1, 2, 3, 4]),
    ("1-9:2", [1, 3, 5, 7, 9]),
    ("1-10:3", [1, 4, 7, 10]),
    ("2-11:3", [2, 5, 8, 11]),
    ("1-10:4", [1, 5, 9]),          # stop not on the step: last id is 9
    ("5-5", [5]),
    ("5-5:3", [5]),
    ("35-40:1,57,138-201:1", list(range(35, 41)) + [57] + list(range(138, 202))),
    ("9,1,5", [1, 5, 9]),          # any order in, increasing order out
    ("1-5,3-7", [1, 2, 3, 4, 5, 6, 7]),  # overlaps counted once
    (" 1-3 , 5 ", [1, 2, 3, 5]),
    ("007", [7]),
])
def test_parse_iterates_ids_in_order_once(text, ids):
    tasks = Tasklist.parse(text)
    assert list(tasks) == ids
    assert len(tasks) == len(ids)
    for i in ids:
        assert i in tasks
    assert min(ids) - 1 not in tasks
    assert max(ids) + 1 not in tasks


def test_membership_respects_step():
    tasks = Tasklist.parse("1-9:2")
    assert [i for i in range(0, 12) if i in tasks] == [1, 3, 5, 7, 9]
    assert "3" not in tasks  # only ints are task ids
    assert 3.0 not in tasks or 3 in tasks  # no crash on floats


@pytest.mark.parametrize("bad", [
    "1-", "a-b", "5-3", "1-3:0", "0", "-1", "1,,2", "1;echo x", "", "   ", "1-3:", "1:2", "1-2-3",
    "1, 2;", "0-3", "1-3:-1", "x", "1 2", "1;", "$(reboot)", "1-3:1,", ",1", "١-٣",
])
def test_bad_tasklists_are_refused_in_one_line_quoting_the_block(bad):
    with pytest.raises(UsageError) as info:
        Tasklist.parse(bad)
    message = str(info.value)
    assert "\n" not in message
    assert "tasklist" in message
    if bad.strip():
        blocks = [b.strip() for b in bad.split(",")]
        # the message quotes the block that is wrong (not just the whole text)
        culprit = next(b for b in blocks if not _good_block(b))
        assert repr(culprit) in message or repr(culprit + "") in message, message


def _good_block(block: str) -> bool:
    try:
        Tasklist.parse(block)
        return True
    except UsageError:
        return False


def test_none_is_refused():
    with pytest.raises(UsageError):
        Tasklist.parse(None)  # type: ignore[arg-type]


def test_error_names_the_fix():
    with pytest.raises(UsageError) as info:
        Tasklist.parse("5-3")
    assert "'5-3'" in str(info.value)
    assert "below" in str(info.value)
    with pytest.raises(UsageError) as info:
        Tasklist.parse("1-3:0")
    assert "step" in str(info.value)
    with pytest.raises(UsageError) as info:
        Tasklist.parse("0")
    assert "start at 1" in str(info.value)


# -------------------------------------------------------------------- lazy
def test_huge_range_is_never_materialised():
    start = time.perf_counter()
    tasks = Tasklist.parse("1-1000000000")
    assert len(tasks) == 10 ** 9
    assert 999_999_999 in tasks
    assert 10 ** 9 + 1 not in tasks
    assert list(itertools.islice(tasks, 3)) == [1, 2, 3]
    assert tasks.first == 1 and tasks.last == 10 ** 9
    assert tasks.slurm() == "1-1000000000"
    assert tasks.sge_blocks() == ["1-1000000000:1"]
    chunks = tasks.split_below(10 ** 6 + 1)
    assert len(chunks) == -(-10 ** 9 // (10 ** 6 + 1))
    assert chunks[0][0] == 0 and chunks[0][1].slurm() == "1-1000001"
    assert chunks[-1][1].last + chunks[-1][0] == 10 ** 9
    assert time.perf_counter() - start < 30  # materialising 10**9 ints would take minutes and GBs


def test_huge_multi_block_lists_stay_lazy():
    tasks = Tasklist.parse("1-1000000000:2,2-1000000000:2,5")
    assert list(itertools.islice(tasks, 5)) == [1, 2, 3, 4, 5]
    assert 123456789 in tasks
    assert tasks.first == 1 and tasks.last == 10 ** 9


def test_overlapping_huge_ranges_count_without_iterating():
    tasks = Tasklist.parse("1-1000000000,5,10-20,999999990-1000000000:5")
    assert len(tasks) == 10 ** 9
    assert tasks.slurm() == "1-1000000000"
    tasks = Tasklist.parse("1-600000000,400000000-1000000000")
    assert len(tasks) == 10 ** 9
    assert tasks.slurm() == "1-1000000000"
    assert Tasklist.parse("1-500000000,500000001-1000000000").slurm() == "1-1000000000"


# ---------------------------------------------------------------- from_ids
@pytest.mark.parametrize("ids, text", [
    ([1, 2, 3, 5, 8, 9], "1-3,5,8-9"),
    ([1, 3, 5, 7, 9], "1-9:2"),
    ([1, 3], "1,3"),                     # a 2-element stepped run is two singles
    ([1, 2], "1-2"),
    ([4], "4"),
    ([], ""),
    ([9, 8, 7, 7, 1], "1,7-9"),
    ([1, 2, 3, 10, 20, 30], "1-3,10-30:10"),
    ([2, 4, 6, 7, 8, 9], "2-6:2,7-9"),   # greedy: the first run wins
    ([1, 5, 6, 100], "1,5-6,100"),
    ([10, 20, 30, 31], "10-30:10,31"),
])
def test_from_ids_condenses_greedily(ids, text):
    assert str(Tasklist.from_ids(ids)) == text
    if ids:
        assert Tasklist.from_ids(ids).slurm() == text


def test_from_ids_accepts_a_generator_and_empty_is_falsy():
    assert str(Tasklist.from_ids(i for i in (3, 2, 1))) == "1-3"
    assert not Tasklist.from_ids([])
    assert len(Tasklist.from_ids([])) == 0
    assert Tasklist.from_ids([1])


# ------------------------------------------------------------------ render
@pytest.mark.parametrize("text, slurm, sge", [
    ("1-3:1,5,8-9", "1-3,5,8-9", ["1-3:1", "5", "8-9:1"]),
    ("1-9:2", "1-9:2", ["1-9:2"]),
    ("35-40:1,57,138-201:1", "35-40,57,138-201", ["35-40:1", "57", "138-201:1"]),
    ("1,2,3,4", "1-4", ["1-4:1"]),
    ("5,1-3", "1-3,5", ["1-3:1", "5"]),
    ("1-3,2-6", "1-6", ["1-6:1"]),
    ("1-3:2", "1,3", ["1", "3"]),
    ("1-10:4", "1-9:4", ["1-9:4"]),
])
def test_render_for_slurm_and_sge(text, slurm, sge):
    tasks = Tasklist.parse(text)
    assert tasks.slurm() == slurm
    assert tasks.sge_blocks() == sge
    # every SGE block is ONE range (qsub -t takes one) and they cover the list exactly once
    covered = []
    for block in tasks.sge_blocks():
        assert "," not in block
        covered.extend(Tasklist.parse(block))
    assert covered == list(tasks)


def test_str_parses_back_and_repr_is_useful():
    tasks = Tasklist.parse("1-3:1,5,8-9")
    assert list(Tasklist.parse(str(tasks))) == list(tasks)
    assert repr(tasks) == "Tasklist('1-3,5,8-9')"
    assert Tasklist.parse("1-3") == Tasklist.parse("1,2,3")
    assert Tasklist.parse("1-3") != Tasklist.parse("1-4")
    assert Tasklist.parse("1-3") != "1-3"


def test_range_helper():
    assert list(Tasklist.range(3, 5)) == [3, 4, 5]
    assert not Tasklist.range(5, 4)


# ------------------------------------------------------------- split_below
def _check_split(tasks: Tasklist, limit: int) -> None:
    chunks = tasks.split_below(limit)
    seen = []
    offsets = []
    for offset, chunk in chunks:
        assert offset % limit == 0
        offsets.append(offset)
        ids = list(chunk)
        assert ids, "no empty chunk"
        assert all(1 <= i <= limit for i in ids), (offset, str(chunk))
        seen.extend(i + offset for i in ids)
        assert chunk.slurm()  # renders
    assert offsets == sorted(set(offsets))
    assert seen == list(tasks)


@pytest.mark.parametrize("text, limit, expected", [
    ("1-10", 1001, [(0, "1-10")]),
    ("1-2500", 1000, [(0, "1-1000"), (1000, "1-1000"), (2000, "1-500")]),
    ("999-1003", 1000, [(0, "999-1000"), (1000, "1-3")]),
    ("1-3001:1000", 1000, [(0, "1"), (1000, "1"), (2000, "1"), (3000, "1")]),
    ("5,5000", 1001, [(0, "5"), (4004, "996")]),
    ("1-20:3", 10, [(0, "1-10:3"), (10, "3-9:3")]),
])
def test_split_below_examples(text, limit, expected):
    chunks = Tasklist.parse(text).split_below(limit)
    assert [(o, c.slurm()) for o, c in chunks] == expected
    _check_split(Tasklist.parse(text), limit)


def test_split_below_rejects_bad_limit():
    with pytest.raises(ValueError):
        Tasklist.parse("1-3").split_below(0)


# -------------------------------------------------------------- properties
ID_SETS = st.sets(st.integers(min_value=1, max_value=400), max_size=60)


@given(ID_SETS)
def test_property_from_ids_round_trips(ids):
    condensed = Tasklist.from_ids(ids)
    assert len(condensed) == len(ids)
    assert list(condensed) == sorted(ids)
    if ids:
        assert list(Tasklist.parse(str(condensed))) == sorted(ids)
        assert list(Tasklist.parse(condensed.slurm())) == sorted(ids)
        assert len(str(condensed)) <= len(",".join(map(str, sorted(ids))))


BLOCKS = st.lists(
    st.tuples(st.integers(1, 300), st.integers(0, 80), st.integers(1, 7)).map(
        lambda t: (t[0], t[0] + t[1], t[2])),
    min_size=1, max_size=8)


def _text(blocks) -> str:
    return ",".join(f"{a}-{b}:{s}" if a != b else str(a) for a, b, s in blocks)


@given(BLOCKS)
def test_property_parse_len_membership_and_render(blocks):
    text = _text(blocks)
    expected = sorted({i for a, b, s in blocks for i in range(a, b + 1, s)})
    tasks = Tasklist.parse(text)
    assert list(tasks) == expected
    assert len(tasks) == len(expected)
    universe = set(expected)
    for i in range(0, 400):
        assert (i in tasks) == (i in universe)
    assert list(Tasklist.parse(tasks.slurm())) == expected
    assert [i for block in tasks.sge_blocks() for i in Tasklist.parse(block)] == expected
    assert list(Tasklist.parse(str(tasks))) == expected


@settings(max_examples=200)
@given(BLOCKS, st.integers(1, 120))
def test_property_split_below_covers_each_id_once(blocks, limit):
    _check_split(Tasklist.parse(_text(blocks)), limit)


@given(BLOCKS)
def test_property_block_path_for_huge_lists_renders_the_same_ids(blocks):
    """Above the size limit, condensing works on blocks; it must keep exactly the same ids."""
    from unittest import mock

    import onager.tasklist as module

    text = _text(blocks)
    expected = sorted({i for a, b, s in blocks for i in range(a, b + 1, s)})
    with mock.patch.object(module, "_MATERIALISE_LIMIT", 0):
        tasks = Tasklist.parse(text)
        assert len(tasks) == len(expected)
        assert list(Tasklist.parse(tasks.slurm())) == expected
        assert [i for block in tasks.sge_blocks() for i in Tasklist.parse(block)] == expected
        _check_split(tasks, 17)


def test_100k_ids_one_by_one_condense_to_one_range():
    """0.1.3 wrote --array=1,2,3,... (589 kB for 100k tasks); the condensed text is tiny."""
    tasks = Tasklist.parse(",".join(str(i) for i in range(1, 100_001)))
    assert len(tasks) == 100_000
    assert tasks.slurm() == "1-100000"
    assert Tasklist.from_ids(range(1, 100_001)).slurm() == "1-100000"
    assert Tasklist.from_ids(range(2, 200_001, 2)).slurm() == "2-200000:2"


@pytest.mark.parametrize("text", ["9" * 5000, "1-" + "9" * 30, "1-1000000000000000", "1-5:" + "9" * 5000])
def test_absurdly_large_numbers_are_refused_not_crashed(text):
    with pytest.raises(UsageError) as info:
        Tasklist.parse(text)
    message = str(info.value)
    assert "\n" not in message and len(message) < 400
    assert "999999999999999" in message


def test_largest_id_works_with_len():
    tasks = Tasklist.parse("1-999999999999999")
    assert len(tasks) == 999_999_999_999_999
    assert 999_999_999_999_999 in tasks
    assert Tasklist.parse("000000000000000000007").slurm() == "7"  # leading zeros are not digits of size


def test_long_bad_lists_give_short_messages():
    with pytest.raises(UsageError) as info:
        Tasklist.parse(",".join(str(i) for i in range(1, 100_000)) + ",x")
    assert len(str(info.value)) < 400 and "'x'" in str(info.value)


def test_bools_are_not_task_ids():
    assert True not in Tasklist.parse("1")
    assert 1 in Tasklist.parse("1")
