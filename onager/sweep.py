"""Sweeps: dimensions of values expanded into tasks with 0.1.3's order and tags.

Rules kept from onager 0.1.3 (users' scripts and tags depend on them):

* command layout: base, positional values, `+arg`s, flags, then `<tagname> <tag>`;
* the FIRST dimension varies FASTEST; flags are the outermost dimensions, "with" first;
* tag: `<job>_<N>` then `__<value>` per positional, `__<key>_<value>` per tagged arg
  (key = name without `-`/`_`), `__+<flag>`/`__-<flag>`; N zero-padded to the width of
  the last number.

Beyond 0.1.3: value generators (`Range`, `Linspace`, `Logspace`, `Files`), linked
dimensions (zipped, one axis at the place of their first member), and random search
(`sample(n, seed)` over lists and `Uniform`/`LogUniform`/`RandInt`). The CLI
(`onager prelaunch`) and sweep files build a `Sweep` through these same methods, so
every front end produces the same jobfile.

Values are shell-quoted only when they need it, so plain values print exactly as
0.1.3 printed them while `it's`, `$HOME` or `a b` reach the program byte for byte.
Expansion is pure; only `Files` (a glob, when built) and `write()` touch the disk.
"""
from __future__ import annotations

import itertools
import json
import math
import os
import re
import shlex
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple, TextIO

from onager.errors import UsageError

if TYPE_CHECKING:  # random and glob load lazily: prelaunch of a plain grid needs neither
    import random

# Patterns are applied with fullmatch: `$` also matches before a trailing newline, and a
# value such as "a\n" once passed as "safe" was written raw into the shell text.
_SAFE = re.compile(r"[\w@%+=:,./-]+", re.ASCII)
_INT = re.compile(r"[+-]?\d+", re.ASCII)
_FLOAT = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?", re.ASCII)
JOBNAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,199}", re.ASCII)

POS, ARG, FLAG = "pos", "arg", "flag"
GIN, OVERRIDE = "gin", "override"  # config-system arguments: ordered and tagged like +arg
REPLICATE = "replicate"            # +repeat N: the outermost dimension, no command text
ROW = "row"                        # +from-results: one finished task of another job per value
ARG_KINDS = (ARG, GIN, OVERRIDE)
#: the params key (and ONAGER_PARAM_/ONAGER_ env suffix) that holds a task's replicate number
REPLICATE_KEY = "replicate"


def check_jobname(name: str) -> str:
    """Refuse names that could escape .onager/ or break the wrapper: a name is a path part."""
    if not isinstance(name, str) or not JOBNAME.fullmatch(name):
        problem = ""
        if isinstance(name, str):
            if not name:
                problem = "it is empty; "
            elif any(not c.isprintable() for c in name):
                problem = "it holds a control or unprintable character; "
            elif "/" in name or name.startswith("."):
                problem = "it would be a path outside the job's folder; "
        raise UsageError(
            f"bad job name {name!r}: {problem}use 1-200 letters, digits, '.', '_' or '-', not starting with '.'")
    return name


def is_safe(text: str) -> bool:
    """Whether `text` is one shell word as it stands (the whole text, trailing newline included)."""
    return bool(_SAFE.fullmatch(text))


def quote(text: str) -> str:
    """shlex.quote, but leaving shell-safe text exactly as typed."""
    return text if _SAFE.fullmatch(text) else shlex.quote(text)


def check_text(text: str, what: str) -> str:
    """Refuse text that is not UTF-8 (bytes decoded with surrogateescape, lone surrogates).

    Commands and values live in UTF-8 JSON files (jobs.json, tasks.jsonl) that 0.1.3 readers
    and params() read as text, so such bytes cannot be carried there; bash can still make
    them at run time from an escape written inside the command text.
    """
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        shown = repr(text.encode("utf-8", "surrogateescape") if _escaped_bytes(text) else text)
        raise UsageError(f"{what} {shown} is not UTF-8 text: onager keeps commands as UTF-8; write such "
                         "bytes as a bash escape inside the command text, e.g. +command \"prog $'\\xff'\"") from None
    return text


def _escaped_bytes(text: str) -> bool:
    """Whether every surrogate in `text` is one that surrogateescape made from a byte."""
    return all(not 0xD800 <= ord(c) <= 0xDFFF or 0xDC80 <= ord(c) <= 0xDCFF for c in text)


def param_value(text: str) -> Any:
    """The value for the params dict: a number only where the number prints back as the text.

    So `32` is 32 and `0.1` is 0.1 (str/repr give the typed text back), while `007`, `1e5`,
    `0.10`, `+5` or `٣` stay the strings typed: nothing the user typed is lost. Generated
    values (+range, +linspace...) are printed canonically, so they are always numbers.
    """
    if _INT.fullmatch(text):
        number = int(text)
        return number if str(number) == text else text
    if _FLOAT.fullmatch(text):
        value = float(text)
        return value if repr(value) == text else text
    return text


def param_key(name: str) -> str:
    """`--batch-size` -> `batch_size`: a key usable in Python and in env var names."""
    key = re.sub(r"[^0-9A-Za-z_]", "_", name.lstrip("-+"))
    return key or "arg"


def _js(text: str) -> str:
    """JSON string body (no quotes). Escaping is per character, so bodies concatenate."""
    return json.dumps(text, ensure_ascii=False)[1:-1]


# ---------------------------------------------------------------- value generators
def _fmt(x: float) -> str:
    """A generated float as text: rounded to 12 significant digits, then its shortest repr.

    So `Logspace(1e-4, 1e-1, 4)` prints 0.0001, not 0.00010000000000000009.
    """
    return repr(float(f"{x:.12g}") + 0.0)  # + 0.0 turns -0.0 into 0.0


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool):
        raise UsageError(f"{what} needs numbers, got {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise UsageError(f"{what} needs numbers, got {value!r}") from None
    if number != number or number in (float("inf"), float("-inf")):
        raise UsageError(f"{what} needs finite numbers, got {value!r}")
    return number


def _integer(value: Any, what: str, hint: str = "") -> int:
    if isinstance(value, bool):
        raise UsageError(f"{what} needs integers, got {value!r}{hint}")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and _INT.fullmatch(value.strip()):
        return int(value)
    raise UsageError(f"{what} needs integers, got {value!r}{hint}")


def _count(value: Any, what: str) -> int:
    n = _integer(value, what)
    if n < 1:
        raise UsageError(f"{what} needs a count N of at least 1, got {n}")
    return n


class Values:
    """A value generator usable wherever a list of values is accepted."""

    spelling = ""

    def values(self) -> list[str]:
        """The generated values as text (finite generators only)."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return self.spelling


class Range(Values):
    """`+range START STOP [STEP]`: integers as Python's range (STOP excluded)."""

    def __init__(self, start: Any, stop: Any, step: Any = 1) -> None:
        what = "+range START STOP [STEP]"
        hint = "; use +linspace A B N for floats"
        self.start, self.stop = _integer(start, what, hint), _integer(stop, what, hint)
        self.step = _integer(step, what, hint)
        self.spelling = f"+range {self.start} {self.stop} {self.step}"
        if self.step == 0:
            raise UsageError("+range STEP must not be 0")
        if not range(self.start, self.stop, self.step):
            fix = (f"; to count down give a negative STEP: +range {self.start} {self.stop} -1"
                   if self.start > self.stop and self.step > 0 else "")
            raise UsageError(f"{self.spelling} is empty (STOP is excluded){fix}")

    def values(self) -> list[str]:
        return [str(v) for v in range(self.start, self.stop, self.step)]


class Linspace(Values):
    """`+linspace A B N`: N evenly spaced floats from A to B, both included."""

    def __init__(self, a: Any, b: Any, n: Any) -> None:
        self.a, self.b = _number(a, "+linspace A B N"), _number(b, "+linspace A B N")
        self.n = _count(n, "+linspace A B N")
        self.spelling = f"+linspace {a} {b} {n}"

    def values(self) -> list[str]:
        if self.n == 1:
            return [_fmt(self.a)]
        span = self.b - self.a
        last = self.n - 1
        return [_fmt(self.a + span * i / last) if 0 < i < last else _fmt(self.a if i == 0 else self.b)
                for i in range(self.n)]


class Logspace(Values):
    """`+logspace A B N`: N floats evenly spaced on a log scale from A to B, both included.

    That is numpy's geomspace(A, B, N), not numpy's logspace (which takes exponents).
    """

    def __init__(self, a: Any, b: Any, n: Any) -> None:
        self.a, self.b = _number(a, "+logspace A B N"), _number(b, "+logspace A B N")
        self.n = _count(n, "+logspace A B N")
        self.spelling = f"+logspace {a} {b} {n}"
        if self.a <= 0 or self.b <= 0:
            raise UsageError(f"{self.spelling}: A and B must be positive (they are the values "
                             "themselves, not exponents: +logspace 1e-4 1e-1 4)")

    def values(self) -> list[str]:
        if self.n == 1:
            return [_fmt(self.a)]
        la, lb = math.log(self.a), math.log(self.b)
        last = self.n - 1
        return [_fmt(math.exp(la + (lb - la) * i / last)) if 0 < i < last else _fmt(self.a if i == 0 else self.b)
                for i in range(self.n)]


class Files(Values):
    """`+files PATTERN`: the paths a glob matches, sorted (`**` recurses)."""

    def __init__(self, pattern: Any) -> None:
        self.pattern = str(pattern)
        self.spelling = f"+files {self.pattern}"
        import glob
        self._values = sorted(glob.glob(self.pattern, recursive=True))
        if not self._values:
            raise UsageError(f"+files {self.pattern!r} matches no file: check the path (relative to the "
                             "current directory) and quote the pattern so that the shell passes it as typed")

    def values(self) -> list[str]:
        return list(self._values)


class Distribution(Values):
    """A continuous or random dimension: drawn per task under `Sweep.sample`."""

    def draw(self, rng: random.Random) -> str:
        raise NotImplementedError

    def values(self) -> list[str]:
        raise UsageError(f"{self.spelling} draws random values: it needs +sample N (random search)")


class Uniform(Distribution):
    """`+uniform A B`: a float drawn uniformly between A and B."""

    def __init__(self, a: Any, b: Any) -> None:
        self.a, self.b = _number(a, "+uniform A B"), _number(b, "+uniform A B")
        self.spelling = f"+uniform {a} {b}"

    def draw(self, rng: random.Random) -> str:
        return _fmt(self.a + (self.b - self.a) * rng.random())


class LogUniform(Distribution):
    """`+loguniform A B`: a float whose logarithm is uniform between log A and log B."""

    def __init__(self, a: Any, b: Any) -> None:
        self.a, self.b = _number(a, "+loguniform A B"), _number(b, "+loguniform A B")
        self.spelling = f"+loguniform {a} {b}"
        if self.a <= 0 or self.b <= 0:
            raise UsageError(f"{self.spelling}: A and B must be positive")

    def draw(self, rng: random.Random) -> str:
        la, lb = math.log(self.a), math.log(self.b)
        return _fmt(math.exp(la + (lb - la) * rng.random()))


class RandInt(Distribution):
    """`+randint A B`: an integer from A to B, both included (like random.randint)."""

    def __init__(self, a: Any, b: Any) -> None:
        self.a, self.b = _integer(a, "+randint A B"), _integer(b, "+randint A B")
        self.spelling = f"+randint {self.a} {self.b}"
        if self.b < self.a:
            raise UsageError(f"{self.spelling}: B must be at least A (both are included)")

    def draw(self, rng: random.Random) -> str:
        return str(self.a + _below(rng, self.b - self.a + 1))


def _below(rng: random.Random, n: int) -> int:
    """A uniform integer in [0, n) from Random.random() alone.

    random() is the one method whose sequence Python promises to keep for a seed, so
    the same seed draws the same tasks on every machine and Python version.
    """
    if n <= 1 << 40:
        return min(int(rng.random() * n), n - 1)
    r, m = 0, 1
    while m < n << 20:
        r = (r << 40) | int(rng.random() * (1 << 40))
        m <<= 40
    return r % n


def _distinct(rng: random.Random, total: int, k: int) -> Iterator[int]:
    """k distinct indices of range(total) in draw order (a partial Fisher-Yates shuffle)."""
    moved: dict[int, int] = {}
    for i in range(k):
        j = i + _below(rng, total - i)
        yield moved.get(j, j)
        moved[j] = moved.get(i, i)


def _expand(values: Any, what: str) -> tuple[list[str], Distribution | None]:
    """Plain values and finite generators -> texts; a lone distribution stays one."""
    if isinstance(values, (Values, str, bytes, int, float)):
        values = [values]
    out: list[str] = []
    dist: Distribution | None = None
    items = list(values)
    for item in items:
        if isinstance(item, Distribution):
            if len(items) > 1:
                raise UsageError(f"{what}: {item.spelling} takes no other values in the same list")
            dist = item
        elif isinstance(item, Values):
            out.extend(item.values())
        else:
            out.append(_text(item))
    return out, dist


@dataclass
class Dimension:
    """One swept argument: its kind, its name in the command, and its values as typed."""

    kind: str
    name: str
    values: list[str]
    key: str = ""
    tagged: bool = True
    dist: Distribution | None = None
    group: int = 0
    #: ROW only: (command, tag part, params) of each task taken from another job
    rows: list[tuple[str, str, dict[str, Any]]] | None = None

    @property
    def label(self) -> str:
        """How errors name it: the arg or flag name, or pos1, pos2..."""
        return self.name if self.kind not in (POS, REPLICATE) else self.key


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
    params: dict[str, Any]


class Line(NamedTuple):
    """One expanded task as the jobfile writer wants it: strings ready to write."""

    id: int
    command: str
    command_json: str
    tag_json: str
    params_json: str


class Written(NamedTuple):
    """What `Sweep.write` did: the jobfile, its task count, how many are new, and
    whether it replaced or extended an existing file."""

    path: str
    count: int  # type: ignore[assignment]  # shadows tuple.count; a public field name since 0.2
    added: int
    existed: bool


_EMPTY = Choice("", "", "", "", "", True)


@dataclass
class Sweep:
    """A command and the dimensions swept over it; `Sweep(...).arg(...).tag()` etc."""

    command: str
    dimensions: list[Dimension] = field(default_factory=list)
    tag_name: str | None = None
    tag_args: list[str] | None = None
    tag_number: bool = True
    warnings: list[str] = field(default_factory=list)
    sample_count: int | None = None
    seed: int = 0
    #: +exclude rules: each a list of (dimension label, values); a task matching every
    #: entry of one rule is skipped
    exclusions: list[list[tuple[str, list[str]]]] = field(default_factory=list)
    #: +repeat N: N replicates of every task (None: no replicate dimension)
    replicates: int | None = None
    #: +no-tag-arg: dimension labels left out of tags
    tag_skip: list[str] = field(default_factory=list)
    #: +no-tag-jobname: tags do not start with the job name
    tag_jobname: bool = True
    #: +gin-flag: the option that carries each +gin-arg binding
    gin_flag: str = "--gin_bindings"
    _last: Dimension | None = field(default=None, repr=False, compare=False)
    _groups: int = field(default=0, repr=False, compare=False)

    # ------------------------------------------------------------ building
    def _new_group(self) -> int:
        self._groups += 1
        return self._groups

    def _linked(self, dim: Dimension, link: bool, what: str) -> None:
        if not link:
            return
        previous = self._last
        if previous is None or previous is dim:
            raise UsageError(f"{what}: +link joins a dimension to the one given just before it, "
                             "and there is none; put +link between two +arg/+pos-arg")
        if previous.kind == FLAG:
            raise UsageError(f"+link cannot join {previous.name}: flags are not linked; "
                             "use +arg NAME with values instead")
        old = dim.group
        for d in self.dimensions:
            if d.group == old:
                d.group = previous.group
        dim.group = previous.group

    def arg(self, name: str, values: Any = (), link: bool = False) -> Sweep:
        """`+arg NAME V...`: NAME with each value; no values: NAME on every command.

        `values` may hold generators (`Range`, `Logspace`...); `link=True` zips this
        dimension with the one added just before (`+link` on the command line).
        """
        texts, dist = _expand(values, f"+arg {name}")
        for dim in self.dimensions:
            if dim.kind == ARG and dim.name == name:
                dim.values, dim.dist = texts, dist  # 0.1.3: a repeated +arg keeps its place, takes the new values
                self._linked(dim, link, f"+arg {name}")
                self._last = dim
                return self
        dim = Dimension(ARG, name, texts, param_key(name), dist=dist, group=self._new_group())
        self._linked(dim, link, f"+arg {name}")
        self.dimensions.append(dim)
        self._last = dim
        return self

    def gin_arg(self, name: str, values: Any, link: bool = False) -> Sweep:
        """`+gin-arg NAME V...`: `--gin_bindings 'NAME = V'` per value (gin-config bindings).

        The value is gin text as typed (a string value needs gin's quotes: '"relu"');
        the option is `gin_flag` (`+gin-flag`).
        """
        return self._config_arg(GIN, "+gin-arg", name, values, link)

    def override(self, key: str, values: Any, link: bool = False) -> Sweep:
        """`+override KEY V...`: a Hydra-style `KEY=V` word per value."""
        return self._config_arg(OVERRIDE, "+override", key, values, link)

    def _config_arg(self, kind: str, option: str, name: str, values: Any, link: bool) -> Sweep:
        if not isinstance(name, str) or not name.strip():
            raise UsageError(f"{option} needs a non-empty name, e.g. {option} "
                             f"{'Model.size' if kind == GIN else 'optimizer.lr'} 1 2")
        texts, dist = _expand(values, f"{option} {name}")
        if not texts and dist is None:
            raise UsageError(f"{option} {name} needs at least one value")
        for dim in self.dimensions:
            if dim.kind == kind and dim.name == name:
                dim.values, dim.dist = texts, dist  # as +arg: a repeated name takes the new values
                self._linked(dim, link, f"{option} {name}")
                self._last = dim
                return self
        dim = Dimension(kind, name, texts, param_key(name), dist=dist, group=self._new_group())
        self._linked(dim, link, f"{option} {name}")
        self.dimensions.append(dim)
        self._last = dim
        return self

    def pos_arg(self, values: Any, link: bool = False) -> Sweep:
        """`+pos-arg V...`: a positional argument taking each value."""
        texts, dist = _expand(values, "+pos-arg")
        if not texts and dist is None:
            raise UsageError("+pos-arg needs at least one value")
        count = sum(1 for d in self.dimensions if d.kind == POS)
        dim = Dimension(POS, "", texts, f"pos{count + 1}", dist=dist, group=self._new_group())
        self._linked(dim, link, "+pos-arg")
        self.dimensions.append(dim)
        self._last = dim
        return self

    def flag(self, name: str) -> Sweep:
        """`+flag NAME`: two variants, with NAME and without."""
        dim = Dimension(FLAG, name, ["1", ""], param_key(name), group=self._new_group())
        self.dimensions.append(dim)
        self._last = dim
        return self

    def link(self, *names: str) -> Sweep:
        """Zip the named dimensions (arg names, or pos1, pos2... for positionals)."""
        if len(names) < 2:
            raise UsageError("link needs at least two dimension names, e.g. link('--lr', '--wd')")
        found = []
        for name in names:
            match = [d for d in self.dimensions if d.kind != FLAG and d.label == name]
            if not match:
                flags = [d for d in self.dimensions if d.kind == FLAG and d.name == name]
                if flags:
                    raise UsageError(f"cannot link {name}: flags are not linked; use an arg with values instead")
                known = " ".join(d.label for d in self.dimensions if d.kind != FLAG) or "none"
                raise UsageError(f"cannot link {name}: no such dimension (known: {known})")
            found.append(match[0])
        target = found[0].group
        olds = {d.group for d in found}
        for d in self.dimensions:
            if d.group in olds:
                d.group = target
        return self

    def tag(self, name: str = "--tag", args: Sequence[str] | None = None,
            number: bool = True, *, skip: Sequence[str] = (), jobname: bool = True) -> Sweep:
        """`+tag NAME`: pass each task a unique tag as `NAME <tag>`.

        `args` (+tag-args) keeps only those arguments in the tag, `skip` (+no-tag-arg)
        leaves those dimensions out; `number=False` (+no-tag-number) and `jobname=False`
        (+no-tag-jobname) leave the task number and the job name out.
        """
        if name == "":
            raise UsageError("+tag needs a non-empty argument name (default --tag)")
        self.tag_name = name
        self.tag_args = list(args) if args is not None else None
        self.tag_number = number
        self.tag_skip = list(skip)
        self.tag_jobname = jobname
        return self

    def exclude(self, rule: Any) -> Sweep:
        """`+exclude NAME V... [+exclude NAME2 W...]`: one rule; skip every task in which each
        named dimension takes one of its listed values. Call once per rule; rules add up.

        `rule` maps dimension names (`"--lr"`, `"pos1"`, a flag with true/false, a
        +gin-arg/+override name, `"replicate"`) to a value or a list of values. Task
        ids stay consecutive over the tasks kept.
        """
        items = list(rule.items()) if hasattr(rule, "items") else list(rule)
        if not items:
            raise UsageError("+exclude needs a name and values, e.g. +exclude --optim sgd")
        entries: list[tuple[str, list[str]]] = []
        for item in items:
            if not isinstance(item, (tuple, list)) or len(item) != 2 or not isinstance(item[0], str):
                raise UsageError(f"an exclusion rule maps names to values, e.g. {{'--optim': ['sgd']}}; got {item!r}")
            name, values = item
            texts, dist = _expand(values, f"+exclude {name}")
            if dist is not None or not texts:
                raise UsageError(f"+exclude {name} needs the values to skip, e.g. +exclude {name} 0.1")
            entries.append((name, texts))
        self.exclusions.append(entries)
        return self

    def repeat(self, n: Any) -> Sweep:
        """`+repeat N`: N replicates of every task (the outermost dimension).

        A replicate changes nothing in the command: it is the param `replicate`
        (1..N; ONAGER_REPLICATE in the task's environment) and `__rep_<k>` in the tag.
        """
        self.replicates = _count(n, "+repeat N")
        return self

    def rows(self, rows: Sequence[tuple[str, str, dict[str, Any]]]) -> Sweep:
        """Tasks of another job as one dimension (+from-results): (command, tag part, params)
        each. The command is the whole command, so the sweep's own `command` is empty."""
        if not rows:
            raise UsageError("no task to take: the list of tasks is empty")
        dim = Dimension(ROW, "", [str(i) for i in range(1, len(rows) + 1)], "", group=self._new_group(),
                        rows=list(rows))
        self.dimensions = [d for d in self.dimensions if d.kind != ROW] + [dim]
        return self

    def sample(self, n: Any, seed: Any = 0) -> Sweep:
        """`+sample N +seed S`: N random tasks instead of the full grid.

        Over lists only, N distinct grid points (N larger than the grid is an error);
        with a `Uniform`/`LogUniform`/`RandInt` dimension, each task draws every
        dimension independently. Raising N keeps the first tasks of a smaller N.
        """
        self.sample_count = _count(n, "+sample N")
        seed = _integer(seed, "+seed S")
        if seed < 0:
            raise UsageError(f"+seed needs a non-negative integer, got {seed}")
        self.seed = seed
        return self

    # ------------------------------------------------------------ expansion
    def layout(self, replicates: bool = True) -> list[Dimension]:
        """Dimensions in command order, which is also speed order (first = fastest).

        Replicates (+repeat) are the outermost dimension, after the flags.
        """
        order = {ROW: -1, POS: 0, ARG: 1, GIN: 1, OVERRIDE: 1, FLAG: 2}
        dims = sorted(self.dimensions, key=lambda d: order[d.kind])
        if replicates and self.replicates is not None:
            dims.append(Dimension(REPLICATE, REPLICATE_KEY, [str(k) for k in range(1, self.replicates + 1)],
                                  REPLICATE_KEY))
        return dims

    def _tagged(self, dim: Dimension) -> bool:
        if self.tag_name is None:
            return False
        if dim.kind == REPLICATE:
            return True
        if dim.label in self.tag_skip:
            return False
        if dim.kind not in ARG_KINDS or self.tag_args is None:
            return True
        return dim.name in self.tag_args

    def _value_choice(self, dim: Dimension, value: str, tagged: bool) -> Choice:
        key = dim.name.replace("_", "").replace("-", "")
        if dim.kind == POS:
            cmd, tag = " " + quote(value), "__" + value
        elif dim.kind == GIN:
            cmd, tag = " " + quote(self.gin_flag) + " " + quote(f"{dim.name} = {value}"), f"__{key}_{value}"
        elif dim.kind == OVERRIDE:
            cmd, tag = " " + quote(f"{dim.name}={value}"), f"__{key}_{value}"
        elif dim.kind == REPLICATE:
            cmd, tag = "", f"__rep_{value}"
        else:
            cmd, tag = " " + quote(dim.name) + " " + quote(value), f"__{key}_{value}"
        return _choice(cmd, tag if tagged else "", dim.key, param_value(value))

    def choices(self, dim: Dimension) -> list[Choice]:
        tagged = self._tagged(dim)
        out = []
        if dim.rows is not None:
            for command, tag, params in dim.rows:
                body = json.dumps(params, ensure_ascii=False)[1:-1]
                part = tag if tagged else ""
                out.append(Choice(command, _js(command), part, _js(part), ", " + body if body else "",
                                  bool(_SAFE.fullmatch(part)) or part == ""))
            return out
        if dim.kind == FLAG:
            bare = dim.name.replace("-", "").replace("+", "")
            for on in (True, False):
                cmd = " " + quote(dim.name) if on else ""
                tag = ("__+" if on else "__-") + bare if tagged else ""
                out.append(_choice(cmd, tag, dim.key, on))
            return out
        if dim.dist is not None:
            dim.dist.values()  # raises: a random dimension outside +sample
        if dim.kind == ARG and not dim.values:
            key = dim.name.replace("_", "").replace("-", "")
            return [_choice(" " + quote(dim.name), "__" + key if tagged else "", dim.key, True)]
        return [self._value_choice(dim, value, tagged) for value in dim.values]

    def _plan(self, replicates: bool = True) -> tuple[list[Dimension], list[list[int]]]:
        """Dimensions in layout order, and the axes: lists of layout positions, fastest first.

        A linked group is one axis, placed where its first member sits in the layout.
        """
        dims = self.layout(replicates)
        axes: dict[int, list[int]] = {}
        for position, dim in enumerate(dims):
            axes.setdefault(dim.group or -1 - position, []).append(position)
        return dims, list(axes.values())

    def validate(self) -> None:
        """Raise UsageError for a sweep that cannot be expanded (before anything is written)."""
        self._check_texts()
        dims, axes = self._plan()
        for axis in axes:
            members = [dims[p] for p in axis]
            if len(members) > 1:
                for d in members:
                    if d.dist is not None:
                        raise UsageError(f"cannot link {d.label}: {d.dist.spelling} has no list of values; "
                                         "linked dimensions need lists of the same length")
                first = members[0]
                size = _size(first)
                for d in members[1:]:
                    if _size(d) != size:
                        raise UsageError(f"+link: {first.label} has {size} value(s) but {d.label} has "
                                         f"{_size(d)}; linked dimensions need the same number of values")
        self._check_extras(dims)
        randoms = [d for d in dims if d.dist is not None]
        rules = self._rules(dims, axes)
        if self.sample_count is None:
            if randoms:
                d = randoms[0]
                assert d.dist is not None
                raise UsageError(f"{d.dist.spelling} ({d.label}) draws random values: add +sample N "
                                 "(random search), or use +linspace/+logspace/+range for a grid")
            if rules and self._allowed(dims, axes, rules) == 0:
                raise UsageError("the +exclude rules skip every task of the grid: check their names and values")
            return
        base_dims, base_axes = self._plan(replicates=False)
        base_rules = self._rules(base_dims, base_axes)
        allowed = self._allowed(base_dims, base_axes, base_rules)
        if not randoms:
            what = "combinations left by +exclude" if base_rules else "combinations"
            if self.sample_count > allowed:
                raise UsageError(f"+sample {self.sample_count} asks for more tasks than the grid's {allowed} "
                                 f"{what}; use +sample {allowed} or fewer, or drop +sample for the whole grid")
        elif allowed == 0:
            raise UsageError("the +exclude rules skip every combination of the listed values: check them")

    def _check_extras(self, dims: list[Dimension]) -> None:
        """+repeat, +no-tag-arg, +no-tag-jobname and +gin-flag: refuse what cannot work."""
        labels = [d.label for d in dims if d.kind not in (ROW, REPLICATE)]
        for name in self.tag_skip:
            if name not in labels:
                raise UsageError(f"+no-tag-arg {name}: no such dimension (known: {' '.join(labels) or 'none'}); "
                                 "name an +arg, +flag, +gin-arg or +override, or pos1, pos2... for positionals")
        if self.replicates is not None:
            for d in dims:
                if d.kind not in (ROW, REPLICATE) and d.key == REPLICATE_KEY:
                    raise UsageError(f"+repeat records the replicate as the parameter {REPLICATE_KEY!r}, which "
                                     f"{d.label} also names: rename that argument or drop +repeat")
        if any(d.kind == GIN for d in dims) and not self.gin_flag.strip():
            raise UsageError("+gin-flag needs the option that carries gin bindings, e.g. +gin-flag --gin_bindings")
        if self.tag_name is not None and not self.tag_number and not self.tag_jobname \
                and not any(self._tagged(d) for d in dims):
            raise UsageError("with +no-tag-number and +no-tag-jobname, no dimension is left in the tag: every "
                             "tag would be empty; keep one of them or tag an argument")

    def _rules(self, dims: list[Dimension], axes: list[list[int]]) -> list[list[tuple[int, frozenset[int]]]]:
        """The +exclude rules as (axis, value indices) entries, checked against the dimensions."""
        if not self.exclusions:
            return []
        axis_of = {p: a for a, axis in enumerate(axes) for p in axis}
        out = []
        for rule in self.exclusions:
            entries: dict[int, frozenset[int]] = {}
            for name, values in rule:
                found = [p for p, d in enumerate(dims) if d.label == name and d.kind != ROW]
                if not found:
                    known = " ".join(d.label for d in dims if d.kind != ROW) or "none"
                    raise UsageError(f"+exclude {name}: no such dimension (known: {known}); name an +arg, +flag, "
                                     "+gin-arg or +override of this sweep, or pos1, pos2... for positionals")
                d = dims[found[0]]
                if d.dist is not None:
                    raise UsageError(f"+exclude {name}: {d.dist.spelling} draws random values, which cannot be "
                                     "listed; exclude values of list dimensions only")
                if d.kind == ARG and not d.values:
                    raise UsageError(f"+exclude {name}: {name} has no values (it is on every command); "
                                     "there is nothing to exclude")
                texts = ["true", "false"] if d.kind == FLAG else d.values
                hits: set[int] = set()
                for value in values:
                    wanted = value.lower() if d.kind == FLAG else value
                    found_at = [i for i, t in enumerate(texts) if t == wanted]
                    if not found_at:
                        raise UsageError(f"+exclude {name} {value}: {value!r} is not a value of {name} "
                                         f"(its values: {' '.join(texts)})")
                    hits.update(found_at)
                axis = axis_of[found[0]]
                entries[axis] = entries[axis] & hits if axis in entries else frozenset(hits)
            out.append(sorted(entries.items()))
        return out

    @staticmethod
    def _allowed(dims: list[Dimension], axes: list[list[int]],
                 rules: list[list[tuple[int, frozenset[int]]]]) -> int:
        """How many combinations of the list dimensions the rules keep (random ones count once)."""
        sizes = [1 if dims[axis[0]].dist is not None else _size(dims[axis[0]]) for axis in axes]
        total = math.prod(sizes)
        if not rules:
            return total
        if len(rules) <= 10:
            # inclusion-exclusion: the tasks of a rule are a box (its values on its axes, any
            # value elsewhere), and boxes intersect into boxes; no walk over the grid
            skipped = 0
            for k in range(1, len(rules) + 1):
                for chosen in itertools.combinations(rules, k):
                    box: dict[int, frozenset[int]] = {}
                    for rule in chosen:
                        for a, keep in rule:
                            box[a] = box[a] & keep if a in box else keep
                    size = math.prod(len(box[a]) if a in box else s for a, s in enumerate(sizes))
                    skipped += size if k % 2 else -size
            return total - skipped
        constrained = sorted({a for rule in rules for a, _ in rule})
        other = math.prod(s for a, s in enumerate(sizes) if a not in constrained)
        skipped = 0
        for combo in itertools.product(*[range(sizes[a]) for a in constrained]):
            at = dict(zip(constrained, combo))
            if any(all(at[a] in keep for a, keep in rule) for rule in rules):
                skipped += 1
        return total - skipped * other

    def _check_texts(self) -> None:
        """Every text that reaches jobs.json must be UTF-8 (see check_text)."""
        check_text(self.command, "the command")
        if self.tag_name is not None:
            check_text(self.tag_name, "the tag name")
        for name in self.tag_args or ():
            check_text(name, "+tag-args name")
        for name in self.tag_skip:
            check_text(name, "+no-tag-arg name")
        check_text(self.gin_flag, "+gin-flag")
        for rule in self.exclusions:
            for name, values in rule:
                for text in [name, *values]:
                    check_text(text, "+exclude")
        for dim in self.dimensions:
            check_text(dim.name, f"{dim.kind} name")
            for value in dim.values:
                check_text(value, f"the value of {dim.label or dim.kind}")

    @staticmethod
    def _grid_size(dims: list[Dimension], axes: list[list[int]]) -> int:
        total = 1
        for axis in axes:
            total *= _size(dims[axis[0]])
        return total

    def axes(self) -> list[list[Choice]]:
        """Lists of choices, fastest first; a task takes one choice from each.

        Linked members are joined into one choice; valid when each linked group is
        contiguous in the layout (`lines()` handles the general case).
        """
        dims, axes = self._plan()
        out = []
        for axis in axes:
            lists = [self.choices(dims[p]) for p in axis]
            joined = lists[0]
            for more in lists[1:]:
                joined = [_join(a, b) for a, b in zip(joined, more)]
            out.append(joined)
        return out

    def __len__(self) -> int:
        self.validate()
        if self.sample_count is not None:
            return self.sample_count * (self.replicates or 1)
        dims, axes = self._plan()
        rules = self._rules(dims, axes)
        return self._allowed(dims, axes, rules) if rules else self._grid_size(dims, axes)

    def check(self) -> None:
        """Validate, and note harmless oddities in `warnings`."""
        self.validate()
        if self.tag_args is not None:
            names = [d.name for d in self.dimensions if d.kind in ARG_KINDS]
            for name in self.tag_args:
                if name not in names:
                    warning = f"+tag-args {name} is not one of the +arg names ({' '.join(names) or 'none'})"
                    if warning not in self.warnings:
                        self.warnings.append(warning)

    def _stream(self) -> tuple[int, Iterator[Choice], bool]:
        """(task count, one joined choice per task in order, whether all tags are shell-safe)."""
        self.validate()
        dims, axes = self._plan()
        finite = [None if d.dist is not None else self.choices(d) for d in dims]
        safe = all(c.tag_safe for lst in finite if lst is not None for c in lst)
        if self.sample_count is not None:
            return self.sample_count * (self.replicates or 1), self._replicated_samples(), safe
        rules = self._rules(dims, axes)
        total = self._allowed(dims, axes, rules) if rules else self._grid_size(dims, axes)
        if all(axis == list(range(axis[0], axis[0] + len(axis))) for axis in axes):
            return total, _combine(self.axes(), rules), safe  # the fast path: 0.1.3 grids, adjacent links
        return total, _general(finite, axes, rules), safe

    def _replicated_samples(self) -> Iterator[Choice]:
        """+sample's tasks, then again for each further replicate (the same draws each time)."""
        dims, axes = self._plan(replicates=False)
        finite = [None if d.dist is not None else self.choices(d) for d in dims]
        rules = self._rules(dims, axes)
        if self.replicates is None:
            yield from self._sampled(dims, axes, finite, rules)
            return
        for replicate in self.choices(self.layout()[-1]):
            for choice in self._sampled(dims, axes, finite, rules):
                yield _join(choice, replicate)

    def _sampled(self, dims: list[Dimension], axes: list[list[int]], finite: list[list[Choice] | None],
                 rules: list[list[tuple[int, frozenset[int]]]]) -> Iterator[Choice]:
        """N random tasks; excluded draws are skipped (redrawn), which leaves the draws of a
        sweep without +exclude exactly as they were."""
        import random
        rng = random.Random(self.seed)
        count = self.sample_count or 0
        picks: list[Choice] = [_EMPTY] * len(dims)
        if all(lst is not None for lst in finite):
            sizes = [len(finite[axis[0]]) for axis in axes]  # type: ignore[arg-type]
            total = self._grid_size(dims, axes)
            made = 0
            for index in _distinct(rng, total, total if rules else count):
                if made == count:
                    return
                at = []
                for size in sizes:
                    index, i = divmod(index, size)
                    at.append(i)
                if rules and _excluded(at, rules):
                    continue
                for axis, i in zip(axes, at):
                    for p in axis:
                        picks[p] = finite[p][i]  # type: ignore[index]
                yield _join_all(picks)
                made += 1
            return
        tagged = [self._tagged(d) for d in dims]
        for _ in range(count):
            while True:
                at = [0] * len(axes)
                for a, axis in enumerate(axes):
                    first = axis[0]
                    dist = dims[first].dist
                    if dist is not None:
                        picks[first] = self._value_choice(dims[first], dist.draw(rng), tagged[first])
                        continue
                    i = at[a] = _below(rng, len(finite[first]))  # type: ignore[arg-type]
                    for p in axis:
                        picks[p] = finite[p][i]  # type: ignore[index]
                if not (rules and _excluded(at, rules)):
                    break
            yield _join_all(picks)

    def lines(self, jobname: str, start_id: int = 1) -> Iterator[Line]:
        """Every task as ready-to-write strings, in 0.1.3 order, without holding them all."""
        total, stream, safe = self._stream()
        base = self.command
        base_json = _js(base)
        tagging = self.tag_name is not None
        tag_prefix = tag_json_prefix = ""
        width = 0
        if self.tag_name is not None:
            tag_arg = " " + quote(self.tag_name) + " "
            tag_arg_json = _js(tag_arg)
            name = jobname if self.tag_jobname else ""
            if self.tag_number:
                tag_prefix = name + "_" if name else ""
                width = len(str(start_id + total - 1))
            else:
                tag_prefix = name
            tag_json_prefix = _js(tag_prefix)
        safe = safe and bool(_SAFE.fullmatch(tag_prefix or "x"))
        bare = tagging and not self.tag_number and not self.tag_jobname
        return self._emit(stream, start_id, base, base_json, tagging, tag_prefix, tag_json_prefix,
                          width, safe, tag_arg if tagging else "", tag_arg_json if tagging else "", bare)

    @staticmethod
    def _emit(stream: Iterator[Choice], start_id: int, base: str, base_json: str, tagging: bool,
              tag_prefix: str, tag_json_prefix: str, width: int, safe: bool,
              tag_arg: str, tag_arg_json: str, bare: bool = False) -> Iterator[Line]:
        """`bare`: neither job name nor number, so the tag is its parts without the first `__`."""
        task_id = start_id - 1
        for c in stream:
            task_id += 1
            if bare:
                c = c._replace(tag=c.tag[2:], tag_json=c.tag_json[2:])
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

    def chunks(self, jobname: str, start_id: int = 1,
               echo: TextIO | None = None) -> Iterator[tuple[int, str]] | None:
        """The jobfile's task lines as (count, text) blocks, or None where only `lines` applies.

        For plain grids with shell-safe tags (the 0.1.3 case, and nearly every sweep) each
        block of tasks is formatted by one comprehension of f-strings: a million tasks
        then cost little more than writing the file.
        """
        self.validate()
        dims, axes = self._plan()
        if self.sample_count is not None or any(d.dist is not None for d in dims):
            return None
        if self.tag_name is not None and not self.tag_number and not self.tag_jobname:
            return None
        if not all(axis == list(range(axis[0], axis[0] + len(axis))) for axis in axes):
            return None
        all_axes = self.axes()
        if not all(c.tag_safe for axis in all_axes for c in axis):
            return None
        tagging = self.tag_name is not None
        rules = self._rules(dims, axes)
        total = self._allowed(dims, axes, rules)
        tag_arg = " " + quote(self.tag_name) + " " if self.tag_name is not None else ""
        name = jobname if self.tag_jobname else ""
        if tagging and self.tag_number:
            prefix, width = (name + "_" if name else ""), len(str(start_id + total - 1))
        else:
            prefix, width = (name if tagging else ""), 0
        if tagging and prefix and not _SAFE.fullmatch(prefix):
            return None
        return self._chunks(all_axes, start_id, tagging, tag_arg, prefix, width, echo, rules)

    def _chunks(self, axes: list[list[Choice]], start_id: int, tagging: bool, tag_arg: str,
                prefix: str, width: int, echo: TextIO | None,
                rules: list[list[tuple[int, frozenset[int]]]] | None = None) -> Iterator[tuple[int, str]]:
        base, base_json = self.command, _js(self.command)
        tag_arg_json = _js(tag_arg)
        n = start_id
        for o, inner in _blocks(axes, rules):
            m = len(inner)
            ids = range(n, n + m)
            nums = [str(k).zfill(width) for k in ids] if width else [""] * m
            inner_has_params = bool(inner[0].params)
            o_params = o.params if inner_has_params else o.params[2:]
            triples = [(i.cmd_json, i.tag, i.params[2:]) for i in inner]
            if tagging:
                mid = o.cmd_json + tag_arg_json + prefix
                text = ",\n".join([
                    f'"{k}": ["{base_json}{ic}{mid}{num}{it}{o.tag}", "{prefix}{num}{it}{o.tag}", {{{ip}{o_params}}}]'
                    for k, num, (ic, it, ip) in zip(ids, nums, triples)])
                if echo is not None:
                    mid_raw = o.cmd + tag_arg + prefix
                    echo.write("".join([f"{base}{i.cmd}{mid_raw}{num}{i.tag}{o.tag}\n"
                                        for num, i in zip(nums, inner)]))
            else:
                text = ",\n".join([f'"{k}": ["{base_json}{ic}{o.cmd_json}", "", {{{ip}{o_params}}}]'
                                    for k, (ic, _, ip) in zip(ids, triples)])
                if echo is not None:
                    echo.write("".join([f"{base}{i.cmd}{o.cmd}\n" for i in inner]))
            yield m, text
            n += m

    def tasks(self, jobname: str, start_id: int = 1) -> Iterator[Task]:
        for line in self.lines(jobname, start_id):
            yield Task(line.id, line.command, json.loads('"' + line.tag_json + '"'),
                       json.loads("{" + line.params_json + "}"))

    # ------------------------------------------------------------ output
    def write(self, jobname: str, jobfile: str | None = None, append: bool = False, *,
              echo: TextIO | None = None) -> Written:
        """Write the jobfile `onager launch --jobname JOBNAME` reads (what prelaunch does).

        `jobfile` defaults to .onager/scripts/{jobname}/jobs.json; `append` keeps the
        existing tasks and numbers the new ones after them; `echo` gets each command.
        The file is replaced atomically under a lock; a sweep that cannot be expanded
        raises UsageError before anything is created.
        """
        from onager.config import ensure_onager_dir
        from onager.fsutil import file_lock
        from onager.jobfile import iter_jobfile, jobfile_path, write_jobfile
        from onager.layout import ONAGER_DIR

        check_jobname(jobname)
        self.validate()
        path = jobfile_path(jobname, jobfile)
        if path.startswith(ONAGER_DIR + "/") or path.startswith("./" + ONAGER_DIR + "/"):
            ensure_onager_dir(".")
        directory = os.path.dirname(os.path.abspath(path))
        os.makedirs(directory, exist_ok=True)
        with file_lock(os.path.join(directory, ".jobs.lock")):
            keep = []
            existed = os.path.exists(path)
            if append and existed:
                keep = list(iter_jobfile(path))
            start = max((e.id for e in keep), default=0) + 1
            chunks = self.chunks(jobname, start, echo)
            lines = self.lines(jobname, start) if chunks is None else ()
            count = write_jobfile(path, lines, keep, echo=echo, chunks=chunks)
        return Written(path, count, count - len(keep), existed)


def _size(dim: Dimension) -> int:
    if dim.kind == FLAG:
        return 2
    if dim.dist is not None:
        return 0
    return len(dim.values) or (1 if dim.kind == ARG else 0)


def _join_all(picks: list[Choice]) -> Choice:
    return Choice("".join(c.cmd for c in picks), "".join(c.cmd_json for c in picks),
                  "".join(c.tag for c in picks), "".join(c.tag_json for c in picks),
                  "".join(c.params for c in picks), all(c.tag_safe for c in picks))


def _excluded(at: Sequence[int], rules: list[list[tuple[int, frozenset[int]]]]) -> bool:
    """Whether the value indices `at` (one per axis) match every entry of some +exclude rule."""
    return any(all(at[a] in keep for a, keep in rule) for rule in rules)


def _general(finite: list[list[Choice] | None], axes: list[list[int]],
             rules: list[list[tuple[int, frozenset[int]]]] | None = None) -> Iterator[Choice]:
    """The grid when a linked group is split by other dimensions in the layout, or when
    +exclude skips some combinations (slower than the block path)."""
    sizes = [len(finite[axis[0]]) for axis in axes]  # type: ignore[arg-type]
    picks: list[Choice] = [_EMPTY] * len(finite)
    for combo in itertools.product(*[range(s) for s in reversed(sizes)]):
        if rules and _excluded(combo[::-1], rules):
            continue
        for axis, i in zip(reversed(axes), combo):
            for p in axis:
                picks[p] = finite[p][i]  # type: ignore[index]
        yield _join_all(picks)


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    return str(value)


def _choice(cmd: str, tag: str, key: str, value: Any) -> Choice:
    params = ", " + json.dumps(key) + ": " + json.dumps(value, ensure_ascii=False)
    return Choice(cmd, _js(cmd), tag, _js(tag), params, bool(_SAFE.fullmatch(tag)) or tag == "")


_INNER_LIMIT = 4096


def _blocks(axes: list[list[Choice]], rules: list[list[tuple[int, frozenset[int]]]] | None = None
            ) -> Iterator[tuple[Choice, list[Choice]]]:
    """(outer, inner block) pairs: the tasks in order are inner[0]+outer, inner[1]+outer, ...

    The fastest axes are joined once into an inner block; each outer combination is
    joined once and reused for the whole block, so each task costs a few concatenations.
    With +exclude `rules`, a block keeps only the inner tasks no rule matches; the kept
    list is computed once per set of rules whose outer part the outer combination meets.
    """
    empty = Choice("", "", "", "", "", True)
    if not axes:
        yield empty, [empty]
        return
    inner = [empty]
    inner_at: list[tuple[int, ...]] = [()]
    k = 0
    while k < len(axes) and (k == 0 or len(inner) * len(axes[k]) <= _INNER_LIMIT):
        inner = [_join(i, v) for v in axes[k] for i in inner]
        if rules:
            inner_at = [at + (j,) for j in range(len(axes[k])) for at in inner_at]
        k += 1
    outer_axes = axes[k:]
    split = [([(a, keep) for a, keep in rule if a < k], [(a - k, keep) for a, keep in rule if a >= k])
             for rule in rules or ()]
    kept_for: dict[tuple[int, ...], list[Choice]] = {(): inner}

    def kept(active: tuple[int, ...]) -> list[Choice]:
        if active not in kept_for:
            parts = [split[n][0] for n in active]
            kept_for[active] = [] if any(not part for part in parts) else [
                c for c, at in zip(inner, inner_at)
                if not any(all(at[a] in keep for a, keep in part) for part in parts)]
        return kept_for[active]

    if not outer_axes:
        block = kept(tuple(range(len(split))))
        if block:
            yield empty, block
        return
    if not split:
        for combo in itertools.product(*reversed(outer_axes)):
            o = combo[-1]
            for part in combo[-2::-1]:
                o = _join(o, part)
            yield o, inner
        return
    slowest_first = list(reversed(outer_axes))
    for combo_at in itertools.product(*[range(len(axis)) for axis in slowest_first]):
        at = combo_at[::-1]  # outer indices, fastest first (outer axis a is axis a + k)
        block = kept(tuple(n for n, (_, outer) in enumerate(split) if all(at[a] in keep for a, keep in outer)))
        if not block:
            continue
        o = slowest_first[-1][combo_at[-1]]
        for j in range(len(slowest_first) - 2, -1, -1):
            o = _join(o, slowest_first[j][combo_at[j]])
        yield o, block


def _combine(axes: list[list[Choice]],
             rules: list[list[tuple[int, frozenset[int]]]] | None = None) -> Iterator[Choice]:
    """One joined choice per task, first axis fastest (less those +exclude `rules` match)."""
    for o, inner in _blocks(axes, rules):
        o_cmd, o_cmd_json, o_tag, o_tag_json, o_params = o[:5]
        for i in inner:
            yield Choice(i.cmd + o_cmd, i.cmd_json + o_cmd_json, i.tag + o_tag,
                         i.tag_json + o_tag_json, i.params + o_params, True)


def _join(a: Choice, b: Choice) -> Choice:
    return Choice(a.cmd + b.cmd, a.cmd_json + b.cmd_json, a.tag + b.tag,
                  a.tag_json + b.tag_json, a.params + b.params, a.tag_safe and b.tag_safe)
