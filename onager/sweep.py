"""Sweeps: dimensions of values expanded into tasks with 0.1.3's order and tags.

Pure: no I/O. Rules kept from onager 0.1.3 (users' scripts and tags depend on them):

* command layout: base, positional values, `+arg`s, flags, then `<tagname> <tag>`;
* the FIRST dimension varies FASTEST; flags are the outermost dimensions, "with" first;
* tag: `<job>_<N>` then `__<value>` per positional, `__<key>_<value>` per tagged arg
  (key = name without `-`/`_`), `__+<flag>`/`__-<flag>`; N zero-padded to the width of
  the last number.

Values are shell-quoted only when they need it, so plain values print exactly as
0.1.3 printed them while `it's`, `$HOME` or `a b` reach the program byte for byte.
"""
from __future__ import annotations

import itertools
import json
import re
import shlex
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, NamedTuple, Optional, Sequence, Tuple

from onager.errors import UsageError

_SAFE = re.compile(r"^[\w@%+=:,./-]+$", re.ASCII)
_INT = re.compile(r"^[+-]?\d+$")
_FLOAT = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")
JOBNAME = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,199}$")

POS, ARG, FLAG = "pos", "arg", "flag"


def check_jobname(name: str) -> str:
    if not name or not JOBNAME.match(name):
        raise UsageError(
            f"bad job name {name!r}: use 1-200 letters, digits, '.', '_' or '-', not starting with '.'")
    return name


def quote(text: str) -> str:
    """shlex.quote, but leaving shell-safe text exactly as typed."""
    return text if _SAFE.match(text) else shlex.quote(text)


def param_value(text: str) -> Any:
    """A typed value for the params dict: int and float where the text is one."""
    if _INT.match(text):
        return int(text)
    if _FLOAT.match(text):
        return float(text)
    return text


def param_key(name: str) -> str:
    """`--batch-size` -> `batch_size`: a key usable in Python and in env var names."""
    key = re.sub(r"[^0-9A-Za-z_]", "_", name.lstrip("-+"))
    return key or "arg"


def _js(text: str) -> str:
    """JSON string body (no quotes). Escaping is per character, so bodies concatenate."""
    return json.dumps(text, ensure_ascii=False)[1:-1]


@dataclass
class Dimension:
    """One swept argument: its kind, its name in the command, and its values as typed."""

    kind: str
    name: str
    values: List[str]
    key: str = ""
    tagged: bool = True


class Choice(NamedTuple):
    """What one value of one dimension adds to a task: command, tag and params text."""

    cmd: str        # raw shell text, with its leading space
    cmd_json: str   # the same, JSON-escaped
    tag: str        # raw tag text ('' when not in the tag)
    tag_json: str
    params: str     # ', "key": value' JSON fragment
    tag_safe: bool  # tag text needs no shell quoting


class Task(NamedTuple):
    id: int
    command: str
    tag: str
    params: Dict[str, Any]


class Line(NamedTuple):
    """One expanded task as the jobfile writer wants it: strings ready to write."""

    id: int
    command: str
    command_json: str
    tag_json: str
    params_json: str


@dataclass
class Sweep:
    """A command and the dimensions swept over it; `Sweep(...).arg(...).tag()` etc."""

    command: str
    dimensions: List[Dimension] = field(default_factory=list)
    tag_name: Optional[str] = None
    tag_args: Optional[List[str]] = None
    tag_number: bool = True
    warnings: List[str] = field(default_factory=list)

    # ------------------------------------------------------------ building
    def arg(self, name: str, values: Sequence[Any] = ()) -> "Sweep":
        values = [_text(v) for v in values]
        for dim in self.dimensions:
            if dim.kind == ARG and dim.name == name:
                dim.values = values  # 0.1.3: a repeated +arg keeps its place, takes the new values
                return self
        self.dimensions.append(Dimension(ARG, name, values, param_key(name)))
        return self

    def pos_arg(self, values: Sequence[Any]) -> "Sweep":
        values = [_text(v) for v in values]
        if not values:
            raise UsageError("+pos-arg needs at least one value")
        count = sum(1 for d in self.dimensions if d.kind == POS)
        self.dimensions.append(Dimension(POS, "", values, f"pos{count + 1}"))
        return self

    def flag(self, name: str) -> "Sweep":
        self.dimensions.append(Dimension(FLAG, name, ["1", ""], param_key(name)))
        return self

    def tag(self, name: str = "--tag", args: Optional[Sequence[str]] = None,
            number: bool = True) -> "Sweep":
        if name == "":
            raise UsageError("+tag needs a non-empty argument name (default --tag)")
        self.tag_name = name
        self.tag_args = list(args) if args is not None else None
        self.tag_number = number
        return self

    # ------------------------------------------------------------ expansion
    def layout(self) -> List[Dimension]:
        """Dimensions in command order, which is also speed order (first = fastest)."""
        order = {POS: 0, ARG: 1, FLAG: 2}
        return sorted(self.dimensions, key=lambda d: order[d.kind])

    def _tagged(self, dim: Dimension) -> bool:
        if self.tag_name is None:
            return False
        if dim.kind != ARG or self.tag_args is None:
            return True
        return dim.name in self.tag_args

    def choices(self, dim: Dimension) -> List[Choice]:
        tagged = self._tagged(dim)
        out = []
        if dim.kind == FLAG:
            bare = dim.name.replace("-", "").replace("+", "")
            for on in (True, False):
                cmd = " " + quote(dim.name) if on else ""
                tag = ("__+" if on else "__-") + bare if tagged else ""
                out.append(_choice(cmd, tag, dim.key, on))
            return out
        if dim.kind == ARG and not dim.values:
            key = dim.name.replace("_", "").replace("-", "")
            return [_choice(" " + quote(dim.name), "__" + key if tagged else "", dim.key, True)]
        for value in dim.values:
            if dim.kind == POS:
                cmd, tag = " " + quote(value), "__" + value
            else:
                key = dim.name.replace("_", "").replace("-", "")
                cmd, tag = " " + quote(dim.name) + " " + quote(value), f"__{key}_{value}"
            out.append(_choice(cmd, tag if tagged else "", dim.key, param_value(value)))
        return out

    def axes(self) -> List[List[Choice]]:
        """Lists of choices, fastest first; a task takes one choice from each."""
        return [self.choices(d) for d in self.layout()]

    def __len__(self) -> int:
        count = 1
        for axis in self.axes():
            count *= len(axis)
        return count

    def check(self) -> None:
        if self.tag_args is not None:
            names = [d.name for d in self.dimensions if d.kind == ARG]
            for name in self.tag_args:
                if name not in names:
                    self.warnings.append(f"+tag-args {name} is not one of the +arg names ({' '.join(names) or 'none'})")

    def lines(self, jobname: str, start_id: int = 1) -> Iterator[Line]:
        """Every task as ready-to-write strings, in 0.1.3 order, without holding them all."""
        axes = self.axes()
        total = 1
        for axis in axes:
            total *= len(axis)
        base = self.command
        base_json = _js(base)
        tagging = self.tag_name is not None
        tag_prefix = tag_json_prefix = ""
        width = 0
        if tagging:
            tag_arg = " " + quote(self.tag_name) + " "
            tag_arg_json = _js(tag_arg)
            if self.tag_number:
                tag_prefix = jobname + "_"
                width = len(str(start_id + total - 1))
            else:
                tag_prefix = jobname
            tag_json_prefix = _js(tag_prefix)
        safe = all(c.tag_safe for axis in axes for c in axis) and bool(_SAFE.match(tag_prefix or "x"))

        task_id = start_id - 1
        for c in _combine(axes):
            task_id += 1
            if tagging:
                number = str(task_id).zfill(width) if width else ""
                tag = tag_prefix + number + c.tag
                if safe:
                    command = base + c.cmd + tag_arg + tag
                    command_json = base_json + c.cmd_json + tag_arg_json + tag
                    tag_json = tag
                else:
                    qtag = quote(tag)
                    command = base + c.cmd + tag_arg + qtag
                    command_json = base_json + c.cmd_json + tag_arg_json + _js(qtag)
                    tag_json = tag_json_prefix + number + c.tag_json
            else:
                command = base + c.cmd
                command_json = base_json + c.cmd_json
                tag_json = ""
            yield Line(task_id, command, command_json, tag_json, c.params[2:])

    def tasks(self, jobname: str, start_id: int = 1) -> Iterator[Task]:
        for line in self.lines(jobname, start_id):
            yield Task(line.id, line.command, json.loads('"' + line.tag_json + '"'),
                       json.loads("{" + line.params_json + "}"))


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    return str(value)


def _choice(cmd: str, tag: str, key: str, value: Any) -> Choice:
    params = ", " + json.dumps(key) + ": " + json.dumps(value, ensure_ascii=False)
    return Choice(cmd, _js(cmd), tag, _js(tag), params, bool(_SAFE.match(tag)) or tag == "")


_INNER_LIMIT = 4096


def _combine(axes: List[List[Choice]]) -> Iterator[Choice]:
    """Concatenate one choice per axis, first axis fastest.

    The fastest axes are joined once into an inner block; each outer combination is
    joined once and reused for the whole block, so each task costs a few concatenations.
    """
    if not axes:
        yield Choice("", "", "", "", "", True)
        return
    inner = [Choice("", "", "", "", "", True)]
    k = 0
    while k < len(axes) and (k == 0 or len(inner) * len(axes[k]) <= _INNER_LIMIT):
        inner = [_join(i, v) for v in axes[k] for i in inner]
        k += 1
    outer_axes = axes[k:]
    if not outer_axes:
        yield from inner
        return
    for combo in itertools.product(*reversed(outer_axes)):
        o = combo[-1]
        for part in combo[-2::-1]:
            o = _join(o, part)
        o_cmd, o_cmd_json, o_tag, o_tag_json, o_params = o[:5]
        for i in inner:
            yield Choice(i.cmd + o_cmd, i.cmd_json + o_cmd_json, i.tag + o_tag,
                         i.tag_json + o_tag_json, i.params + o_params, True)


def _join(a: Choice, b: Choice) -> Choice:
    return Choice(a.cmd + b.cmd, a.cmd_json + b.cmd_json, a.tag + b.tag,
                  a.tag_json + b.tag_json, a.params + b.params, a.tag_safe and b.tag_safe)
