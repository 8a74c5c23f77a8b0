"""Tasklists: `1-3:1,5,8-9` parsed, counted, iterated lazily and condensed back.

Pure: no I/O. Schedulers need the condensed text (Slurm's `--array`, SGE's one range
per `qsub -t`), users type it, and the index stores it; one grammar serves all three.
"""
from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Iterator, Sequence

from onager.errors import UsageError

_BLOCK = re.compile(r"(\d+)(?:-(\d+)(?::(\d+))?)?", re.ASCII)

# the largest task id: a count of ids must fit len() (sys.maxsize), and 16 digits
# keep int() far from Python's limit on converting long digit strings
MAX_ID = 10 ** 15 - 1
_MAX_DIGITS = len(str(MAX_ID))

# above this many ids, condensing works on blocks instead of listing the ids
_MATERIALISE_LIMIT = 1 << 16

HELP = "a tasklist is comma-separated blocks N, A-B or A-B:STEP with 1 <= A <= B (e.g. 1-3,5,8-20:2)"


def _shorten(text: str) -> str:
    """repr() of user text, cut so that an error stays one readable line."""
    return repr(text) if len(text) <= 80 else repr(text[:60]) + f"... ({len(text)} characters)"


def _greedy_form(blocks: list[tuple[int, int, int]]) -> bool:
    """Whether sorted disjoint merged blocks are already what from_ids makes of their ids (a
    split launch's chunks: condensed without listing ids). True when every block has step 1
    and no two single ids follow each other: from_ids runs through consecutive ids, and a
    stepped run needs three ids at an equal gap, two of them single (a run of 2+ ids is one
    block, so the id after its first is one more)."""
    single = False
    for a, b, s in blocks:
        if s != 1 and a != b:
            return False
        if a == b:
            if single:
                return False
            single = True
        else:
            single = False
    return True


class Tasklist:
    """An ordered set of task ids made of (start, stop, step) blocks, stop inclusive."""

    __slots__ = ("blocks",)

    def __init__(self, blocks: Sequence[tuple[int, int, int]]):
        self.blocks: tuple[tuple[int, int, int], ...] = tuple(
            (a, a + ((b - a) // s) * s, s) for a, b, s in blocks)

    # ------------------------------------------------------------------ build
    @classmethod
    def parse(cls, text: str) -> Tasklist:
        if text is None or not str(text).strip():
            raise UsageError(f"empty tasklist: {HELP}")
        text = str(text)
        where = _shorten(text)
        blocks = []
        for raw in text.split(","):
            block = raw.strip()
            match = _BLOCK.fullmatch(block)
            if not match:
                raise UsageError(f"bad tasklist block {_shorten(block)} in {where}: {HELP}")
            if any(g is not None and len(g.lstrip("0")) > _MAX_DIGITS for g in match.groups()):
                raise UsageError(f"bad tasklist block {_shorten(block)} in {where}: task ids and steps go up to "
                                 f"{MAX_ID}")
            start = int(match.group(1))
            stop = int(match.group(2)) if match.group(2) is not None else start
            step = int(match.group(3)) if match.group(3) is not None else 1
            if start < 1:
                raise UsageError(f"bad tasklist block {_shorten(block)} in {where}: task ids start at 1")
            if stop < start:
                raise UsageError(f"bad tasklist block {_shorten(block)} in {where}: {stop} is below {start}")
            if step < 1:
                raise UsageError(f"bad tasklist block {_shorten(block)} in {where}: the step must be at least 1")
            blocks.append((start, stop, step))
        return cls(blocks)

    @classmethod
    def from_ids(cls, ids: Iterable[int]) -> Tasklist:
        """The shortest block form of `ids` (greedy runs of equal step)."""
        if isinstance(ids, range) and ids.step == 1:  # a launch's ids: one block, without listing them
            return cls([(ids.start, ids.stop - 1, 1)] if len(ids) else [])
        ordered = sorted(set(ids))
        blocks: list[tuple[int, int, int]] = []
        i, n = 0, len(ordered)
        while i < n:
            start = ordered[i]
            if i + 1 == n:
                blocks.append((start, start, 1))
                break
            step = ordered[i + 1] - start
            j = i + 1
            while j + 1 < n and ordered[j + 1] - ordered[j] == step:
                j += 1
            length = j - i + 1
            if step == 1 or length >= 3:
                blocks.append((start, ordered[j], step))
                i = j + 1
            else:
                blocks.append((start, start, 1))
                i += 1
        return cls(blocks)

    @classmethod
    def range(cls, start: int, stop: int) -> Tasklist:
        return cls([(start, stop, 1)] if stop >= start else [])

    # ------------------------------------------------------------------ query
    def __iter__(self) -> Iterator[int]:
        """Ids in increasing order, each once, without building a list."""
        import heapq
        if len(self.blocks) == 1:
            a, b, s = self.blocks[0]
            yield from range(a, b + 1, s)
            return
        previous = 0
        for value in heapq.merge(*(range(a, b + 1, s) for a, b, s in self.blocks)):
            if value != previous:
                previous = value
                yield value

    def _disjoint_blocks(self) -> list[tuple[int, int, int]] | None:
        """The same ids as sorted, non-overlapping blocks, found without iterating ids.

        Step-1 ranges and single ids are merged (overlapping or adjacent); a stepped block
        inside one such range is dropped. None when stepped blocks still overlap others:
        only iterating can tell what their union is.
        """
        import bisect
        spans: list[list[int]] = []
        stepped: list[tuple[int, int, int]] = []
        for a, b, s in sorted(self.blocks):
            if s == 1 or a == b:
                if spans and a <= spans[-1][1] + 1:
                    spans[-1][1] = max(spans[-1][1], b)
                else:
                    spans.append([a, b])
            else:
                stepped.append((a, b, s))
        starts = [a for a, _ in spans]
        blocks = [(a, b, 1) for a, b in spans]
        for a, b, s in stepped:
            k = bisect.bisect_right(starts, a) - 1
            if k < 0 or spans[k][1] < b:
                blocks.append((a, b, s))
        blocks.sort()
        last = 0
        for a, b, _ in blocks:
            if a <= last:
                return None
            last = b
        return blocks

    def __len__(self) -> int:
        blocks = self._disjoint_blocks()
        if blocks is not None:
            return sum((b - a) // s + 1 for a, b, s in blocks)
        return sum(1 for _ in self)

    def __bool__(self) -> bool:
        return bool(self.blocks)

    def __contains__(self, task_id: object) -> bool:
        if not isinstance(task_id, int) or isinstance(task_id, bool):
            return False
        return any(a <= task_id <= b and (task_id - a) % s == 0 for a, b, s in self.blocks)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Tasklist):
            return False
        missing = object()
        return all(x == y for x, y in itertools.zip_longest(self, other, fillvalue=missing))

    def __repr__(self) -> str:
        return f"Tasklist({str(self)!r})"

    @property
    def first(self) -> int:
        return min(a for a, _, _ in self.blocks)

    @property
    def last(self) -> int:
        return max(b for _, b, _ in self.blocks)

    def condensed(self) -> Tasklist:
        """Sorted, disjoint, merged blocks: `from_ids`' greedy form for lists of ordinary
        size; for huge ones (a 10**9-wide range) the merged blocks, without listing ids."""
        blocks = self._disjoint_blocks()
        if blocks is not None and (sum((b - a) // s + 1 for a, b, s in blocks) > _MATERIALISE_LIMIT
                                   or _greedy_form(blocks)):
            return Tasklist(blocks)
        return Tasklist.from_ids(self)

    # ----------------------------------------------------------------- render
    @staticmethod
    def _block_text(a: int, b: int, s: int, keep_step: bool = False) -> str:
        if a == b:
            return str(a)
        if s == 1:
            return f"{a}-{b}:1" if keep_step else f"{a}-{b}"
        return f"{a}-{b}:{s}"

    def __str__(self) -> str:
        return ",".join(self._block_text(a, b, s) for a, b, s in self.blocks)

    def slurm(self) -> str:
        """Slurm `--array` text: `1-3,5,8-9`, steps as `1-9:2`."""
        return ",".join(self._block_text(a, b, s) for a, b, s in self.condensed().blocks)

    def sge_blocks(self) -> list[str]:
        """One `qsub -t`/`qdel -t` range per block: SGE takes one range per call."""
        return [f"{a}-{b}:{s}" if a != b else str(a) for a, b, s in self.condensed().blocks]

    def shifted(self, offset: int) -> Tasklist:
        return Tasklist([(a - offset, b - offset, s) for a, b, s in self.blocks])

    def split_below(self, limit: int) -> list[tuple[int, Tasklist]]:
        """Cut into (offset, tasklist-minus-offset) chunks whose ids are all <= limit.

        Slurm's MaxArraySize caps the array INDEX, so a launch with large ids is sent
        as several arrays whose indexes are offsets; the wrapper adds the offset back.
        """
        if limit < 1:
            raise ValueError("limit must be >= 1")
        chunks: list[tuple[int, Tasklist]] = []
        blocks = sorted(self.condensed().blocks)
        window = 0  # chunk k holds ids in (k*limit, (k+1)*limit]
        current: list[tuple[int, int, int]] = []
        for a, b, s in blocks:
            while a <= b:
                k = (a - 1) // limit
                if k != window and current:
                    chunks.append((window * limit, Tasklist(current).shifted(window * limit)))
                    current = []
                window = k
                hi = (k + 1) * limit
                end = min(b, a + ((hi - a) // s) * s)
                current.append((a, end, s))
                a = end + s
        if current:
            chunks.append((window * limit, Tasklist(current).shifted(window * limit)))
        return chunks
