"""jobs.json: one JSON object, task id -> [command, tag, params], one task per line.

0.1.3 wrote `{"1": [command, tag], ...}` and readers of that form still work on ours
(the params ride in a third element). Writing streams, so memory does not grow with
the number of tasks; reading streams too when the file is in our one-line-per-task form.
"""
from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable, Iterable, Iterator
from itertools import chain, compress, repeat
from typing import Any, NamedTuple, TextIO

from onager.errors import OnagerError, UsageError
from onager.fsutil import atomic_writer
from onager.layout import JOBFILE_TEMPLATE

DEFAULT_JOBFILE = JOBFILE_TEMPLATE


class JobEntry(NamedTuple):
    id: int
    command: str
    tag: str
    params: dict[str, Any]


class Columns(NamedTuple):
    """A block of consecutive jobfile lines in prelaunch's form, as columns (one list per
    field, no tuple per task), and `rows`: the same tasks as tasks.jsonl lines
    (`[id, command, tag, params]\n` each), the jobfile's own text with its id moved inside."""
    ids: list[int]
    commands: list[str]
    tags: list[str]
    params: list[dict[str, Any]]
    rows: str

    def entries(self) -> list[JobEntry]:
        return list(map(tuple.__new__, repeat(JobEntry), zip(self.ids, self.commands, self.tags, self.params)))


class JobBlocks:
    """The entries of a jobfile, iterable as JobEntry, and also by blocks (`blocks()`: Columns
    where the lines are prelaunch's own, lists of JobEntry elsewhere) for a launch build."""

    def __init__(self, path: str, keep: Callable[[int], bool] | None = None):
        self.path, self.keep = path, keep

    def blocks(self) -> Iterator[Columns | list[JobEntry]]:
        keep = self.keep
        for block in _iter_blocks(self.path):
            if keep is None:
                yield block
            elif isinstance(block, Columns):
                mask = list(map(keep, block.ids))
                if all(mask):
                    yield block
                elif any(mask):
                    rows = "\n".join(compress(block.rows.split("\n"), mask)) + "\n"
                    yield Columns(list(compress(block.ids, mask)), list(compress(block.commands, mask)),
                                  list(compress(block.tags, mask)), list(compress(block.params, mask)), rows)
            else:
                yield [entry for entry in block if keep(entry.id)]

    def ids(self) -> Iterator[list[int]]:
        """The ids, a block at a time, every entry decoded and checked as for blocks()."""
        keep = self.keep
        for block in _iter_blocks(self.path, with_rows=False):
            ids = block.ids if isinstance(block, Columns) else [entry.id for entry in block]
            yield ids if keep is None else list(filter(keep, ids))

    def __iter__(self) -> Iterator[JobEntry]:
        for block in self.blocks():
            yield from block.entries() if isinstance(block, Columns) else block

    def selected(self, keep: Callable[[int], bool]) -> JobBlocks:
        """These entries, only those whose id `keep` accepts."""
        if self.keep is None:
            return JobBlocks(self.path, keep)
        first = self.keep
        return JobBlocks(self.path, lambda i: first(i) and keep(i))


def jobfile_path(jobname: str, jobfile: str | None = None) -> str:
    return (jobfile or DEFAULT_JOBFILE).replace("{jobname}", jobname)


def write_jobfile(path: str, lines: Iterable[Any], keep: Iterable[JobEntry] = (),
                  echo: TextIO | None = None, chunks: Iterable[tuple[int, str]] | None = None) -> int:
    """Atomically replace `path` with `keep` entries, then `lines` (sweep.Line) or ready
    `chunks` ((count, text) blocks from Sweep.chunks); returns the number of tasks."""
    count = 0
    _remove_stale_temps(path)
    with atomic_writer(path) as out:
        write = out.write
        write("{")
        sep = "\n"
        for entry in keep:
            write(f'{sep}"{entry.id}": {json.dumps([entry.command, entry.tag, entry.params], ensure_ascii=False)}')
            sep = ",\n"
            count += 1
        for n, text in chunks if chunks is not None else _line_chunks(lines, echo):
            write(sep)
            write(text)
            sep = ",\n"
            count += n
        write("\n}\n")
    return count


def _remove_stale_temps(path: str, older_than: float = 60.0) -> None:
    """Delete temp files of this jobfile that a killed writer left behind.

    A prelaunch killed mid-write (SIGKILL, out of memory) cannot remove its hidden
    `.jobs.json.*.tmp`, and for a 1M-task sweep that is 160 MB. One untouched for a
    minute has no live writer: a live one writes megabytes a second.
    """
    target = os.path.realpath(path)
    directory, prefix = os.path.dirname(target), "." + os.path.basename(target) + "."
    try:
        names = os.listdir(directory)
    except OSError:
        return
    now = time.time()
    for name in names:
        if name.startswith(prefix) and name.endswith(".tmp"):
            full = os.path.join(directory, name)
            try:
                if now - os.stat(full).st_mtime > older_than:
                    os.unlink(full)
            except OSError:
                pass


def _line_chunks(lines: Iterable[Any], echo: TextIO | None, size: int = 4096) -> Iterable[tuple[int, str]]:
    block: list[str] = []
    commands: list[str] = []
    for line in lines:
        block.append(f'"{line.id}": ["{line.command_json}", "{line.tag_json}", {{{line.params_json}}}]')
        if echo is not None:
            commands.append(line.command + "\n")
        if len(block) >= size:
            if echo is not None:
                echo.write("".join(commands))
                commands.clear()
            yield len(block), ",\n".join(block)
            block.clear()
    if echo is not None and commands:
        echo.write("".join(commands))
    if block:
        yield len(block), ",\n".join(block)


def _entry(key: str, value: Any, path: str) -> JobEntry:
    try:
        if not (key.isascii() and key.isdigit()):  # not " 1", "+1", "1_0" or non-ASCII digits
            raise ValueError
        task_id = int(key)
        if task_id < 1 or not isinstance(value, list) or len(value) < 1 or not isinstance(value[0], str):
            raise ValueError
        tag = value[1] if len(value) > 1 and isinstance(value[1], str) else ""
        params = value[2] if len(value) > 2 and isinstance(value[2], dict) else {}
    except (ValueError, TypeError):
        raise OnagerError(f"{path}: entry {key!r} is not task id (1, 2, ...) -> [command, tag]; re-run onager "
                          "prelaunch to rewrite it") from None
    if not _utf8(value[0]) or not _utf8(tag) or not all(_utf8(v) for v in params.values() if isinstance(v, str)):
        raise OnagerError(f"{path}: task {key} holds a \\udcXX escape (bytes that are not UTF-8), which no task "
                          "can be given byte for byte; re-run onager prelaunch to rewrite it")
    return JobEntry(task_id, value[0], tag, params)


def _utf8(text: str) -> bool:
    """Whether text encodes as UTF-8 (JSON can spell lone surrogates, which do not)."""
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def iter_jobfile(path: str) -> Iterator[JobEntry]:
    """Entries in file order. Streams our line form; falls back to json.load otherwise.

    Our form is `{`, one `"id": [...]` per line, `}`: read line by line so a 1M-task
    jobfile never sits in memory. Any other valid JSON object (0.1.3's one-line file, an
    indented or hand-edited one) is read whole; a file that is neither is one clear error.
    """
    yield from JobBlocks(path)


def _iter_blocks(path: str, with_rows: bool = True) -> Iterator[Columns | list[JobEntry]]:
    """iter_jobfile's entries a block at a time: Columns for lines in prelaunch's form."""
    if not os.path.exists(path):
        raise UsageError(f"no jobfile at {path}: run onager prelaunch first, or pass --jobfile")
    done = 0  # entries already yielded by the streaming reader
    try:
        with open(path, encoding="utf-8") as handle:
            if handle.readline().strip() == "{":
                closed, ours = False, True
                while ours:
                    block = handle.readlines(_BLOCK)
                    if not block:
                        break
                    head = 0 if closed else _task_lines(block)
                    columns = _columns(block[:head], with_rows) if head else None
                    if columns is not None:
                        yield columns
                        done += len(columns.ids)
                        chunk: list[JobEntry] | None = []
                    else:
                        chunk = _decode_block(block[:head], path) if head else None
                    if chunk is None:
                        head, chunk = 0, []
                    lines: list[str] = []
                    for raw in block[head:]:
                        raw = raw.strip()
                        if raw == "":
                            continue
                        if closed:
                            ours = False  # text after the closing brace: let the whole-file reader judge
                            break
                        if raw == "}":
                            closed = True
                            continue
                        lines.append(raw.rstrip(","))
                    more, complete = _decode_lines(lines, path)
                    if not complete:
                        ours = False  # not one task per line (e.g. indented): parse the whole file
                    chunk += more
                    if chunk:
                        yield chunk
                    done += len(chunk)
                if closed and ours:
                    return
    except UnicodeDecodeError:
        raise OnagerError(f"{path} is not UTF-8 text; re-run onager prelaunch to rewrite it") from None
    except OSError as exc:
        raise OnagerError(f"cannot read jobfile {path}: {exc.strerror or exc}") from exc
    rest = [entry for number, entry in enumerate(_read_whole(path)) if number >= done]
    for start in range(0, len(rest), 4096):
        yield rest[start:start + 4096]


_LINE_START = re.compile(r'\n"[0-9]+": \[')
_BLOCK = 1 << 20  # bytes of jobfile lines read, and mostly decoded, at once


def _task_lines(block: list[str]) -> int:
    """How many leading lines of `block` end with `,\\n`: all but the last two (the last task
    and `}`) of the last block, all of any other block of our form."""
    head = len(block)
    while head and not block[head - 1].endswith(",\n"):
        head -= 1
    return head


def _columns(lines: list[str], with_rows: bool = True) -> Columns | None:
    """Task lines that each end with `,\\n`, decoded as Columns when each is exactly
    prelaunch's `"<id>": [command, tag, {params}],` (id >= 1 without leading zeros, no escape
    that could spell a lone surrogate); None otherwise (the caller decodes them another way).

    The text becomes tasks.jsonl's rows by moving each id inside its list (`"7": [` -> `[7, `),
    which str.replace does for the whole block at once when `": [` occurs only at the start
    of each line; one json.loads then decodes the rows, and every check runs in C loops."""
    text = "".join(lines)
    n = len(lines)
    # each line starts `"<digits>": [` (one match at most per line: `\n` ends lines only),
    # and `": [` is nowhere else, so the replace below touches the line starts only
    if "\\u" in text or text.count('": [') != n or len(_LINE_START.findall("\n" + text)) != n:
        return None
    rows = "[" + text[1:].replace('\n"', "\n[").replace('": [', ", ")
    try:
        objects = json.loads("[" + rows[:-2] + "]")
    except (ValueError, RecursionError):
        return None
    if len(objects) != n or set(map(type, objects)) != {list} or set(map(len, objects)) != {4}:
        return None
    ids, commands, tags, params = map(list, zip(*objects))
    if (set(map(type, ids)) != {int} or min(ids) < 1 or set(map(type, commands)) != {str}
            or set(map(type, tags)) != {str} or set(map(type, params)) != {dict}):
        return None  # (an id with a leading zero is not JSON: `[01, ` fails above)
    return Columns(ids, commands, tags, params, rows.replace(",\n", "\n") if with_rows else "")


def _decode_block(lines: list[str], path: str) -> list[JobEntry] | None:
    """The entries of task lines that each end with `,\\n`, with one json.loads; None when
    they are not all `"id": [...]` lines (the caller then reads them line by line).

    The lines become `[{line},\\n{line}]`: the newline joins no string (JSON strings hold
    none), and a line holding anything but one object's members changes the count of
    objects, so this decodes exactly what one json.loads per line decoded, at half the cost.
    """
    text = "".join(lines)
    if text.count(",\n") != len(lines):
        return None
    try:
        objects = json.loads("[{" + text[:-2].replace(",\n", "},\n{") + "}]")
    except (ValueError, RecursionError):
        return None
    if len(objects) != len(lines):
        return None
    fast = _plain_entries(objects, text)
    if fast is not None:
        return fast
    return [_entry(key, value, path) for obj in objects for key, value in obj.items()]


def _plain_entries(objects: list[Any], text: str) -> list[JobEntry] | None:
    """The entries of decoded task lines checked all at once (C loops, no Python code per
    task), when every line is what prelaunch writes: one `"id": [command, tag, {params}]`
    member with id >= 1 and no escape that could spell a lone surrogate; None otherwise,
    and `_entry` checks each one (with the same outcome for every valid entry)."""
    if "\\u" in text or set(map(type, objects)) != {dict} or set(map(len, objects)) != {1}:
        return None
    keys = list(chain.from_iterable(objects))
    values = list(chain.from_iterable(map(dict.values, objects)))
    joined = "".join(keys)
    if (not joined.isdigit() or not joined.isascii() or not all(keys) or set(map(type, values)) != {list}
            or set(map(len, values)) != {3}):
        return None
    commands, tags, params = zip(*values)
    if set(map(type, commands)) != {str} or set(map(type, tags)) != {str} or set(map(type, params)) != {dict}:
        return None
    ids = list(map(int, keys))
    if min(ids) < 1:
        return None
    return list(map(tuple.__new__, repeat(JobEntry), zip(ids, commands, tags, params)))


def _decode_lines(lines: list[str], path: str) -> tuple[list[JobEntry], bool]:
    """The entries of stripped task lines, one json.loads each, up to the first line that is
    not `"id": [...]`, and whether there was none such (an entry that is not a task raises
    as it is reached)."""
    entries: list[JobEntry] = []
    for line in lines:
        try:
            obj = json.loads("{" + line + "}")
        except (ValueError, RecursionError):
            return entries, False
        entries += [_entry(key, value, path) for key, value in obj.items()]
    return entries, True


def _read_whole(path: str) -> Iterator[JobEntry]:
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except (ValueError, RecursionError) as exc:  # includes UnicodeDecodeError; nesting too deep
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise OnagerError(f"{path} is not a valid jobfile ({reason}); re-run onager prelaunch to rewrite it") from exc
    except OSError as exc:
        raise OnagerError(f"cannot read jobfile {path}: {exc.strerror or exc}") from exc
    if not isinstance(data, dict):
        raise OnagerError(f"{path} is not a JSON object of tasks; re-run onager prelaunch to rewrite it")
    for key, value in data.items():
        yield _entry(key, value, path)


def max_id(path: str) -> int:
    return max((e.id for e in iter_jobfile(path)), default=0)
