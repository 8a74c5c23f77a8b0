"""Results of a job: one row per task (its parameters and metrics), sorted, grouped, rendered.

Metrics come from two places, read in one pass over each launch directory, with no process
per task (100k tasks take about a second):

- `results/<id>.jsonl`, appended by `onager.log_result(accuracy=0.97)` inside the task;
  the last value logged for each metric wins;
- regexes over `logs/<id>.out` (or `.err`), for programs that do not import onager;
  the last match wins.

Parameters come from the launch's frozen `tasks.jsonl`, typed as in the jobfile, never
from parsing tags. By default each task's latest run across the job's launches is shown,
so a rerun of failed tasks replaces their rows.
"""
from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import operator
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Callable

from onager.errors import OnagerError, UsageError

FIXED_COLUMNS = ("task_id", "launch", "status")
NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]*")
RESERVED_PREFIX = "@"  # keys such as "@time" in results/*.jsonl are bookkeeping, not metrics
PLOT_HINT = "pip install 'onager[plot]' (or pip install matplotlib)"


# ------------------------------------------------------------------ metrics from logs
@dataclass(frozen=True)
class MetricPattern:
    """`NAME=REGEX`: the value of NAME is group 1 of the regex's last match in a task's log."""

    name: str
    regex: re.Pattern[str]
    stream: str = "out"  # "out" reads logs/<id>.out, "err" reads logs/<id>.err

    @property
    def option(self) -> str:
        return "--metric" if self.stream == "out" else "--metric-err"


def parse_metric(spec: str, stream: str = "out") -> MetricPattern:
    """Parse `NAME=REGEX`; every mistake is one UsageError line saying how to fix it."""
    option = "--metric" if stream == "out" else "--metric-err"
    example = f"{option} 'acc=Test accuracy: ([0-9.]+)'"
    name, sep, pattern = spec.partition("=")
    name = name.strip()
    if not sep or not name or not pattern:
        raise UsageError(f"{option} {spec!r} is not NAME=REGEX: write e.g. {example}")
    if not NAME_RE.fullmatch(name):
        raise UsageError(f"{option} name {name!r} is not a plain name: use letters, digits, '_', '.', '-' "
                         f"(e.g. {example})")
    try:
        regex = re.compile(pattern, re.MULTILINE)
    except re.error as exc:
        raise UsageError(f"bad regex for {option} {name}: {exc} in {pattern!r}; fix the pattern "
                         f"(and quote it for the shell)") from None
    if regex.groups < 1:
        raise UsageError(f"the regex for {option} {name} has no group: put the value in parentheses, "
                         f"e.g. {example}")
    return MetricPattern(name, regex, stream)


def to_value(text: str) -> Any:
    """A captured string as a number when it is one ('0.97' -> 0.97, '12' -> 12)."""
    text = text.strip()
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text


def last_match(text: str, regex: re.Pattern[str]) -> Any:
    """Group 1 of the last match whose group 1 took part, as a number when it is one."""
    found: str | None = None
    for match in regex.finditer(text):
        value = match.group(1)
        if value is not None:
            found = value
    return None if found is None else to_value(found)


# ------------------------------------------------------------------ metrics from log_result
def read_bytes(path: str, dir_fd: int | None = None) -> bytes | None:
    """The whole file, or None when it is missing: open, one read, close for a small file."""
    try:
        fd = os.open(path, os.O_RDONLY, dir_fd=dir_fd)
    except OSError:
        return None
    try:
        data = os.read(fd, 1 << 16)
        if len(data) == 1 << 16:  # a big file: read on to its end
            chunks = [data]
            while True:
                chunk = os.read(fd, 1 << 20)
                if not chunk:
                    break
                chunks.append(chunk)
            data = b"".join(chunks)
    finally:
        os.close(fd)
    return data


def _merge(objects: Iterable[Any]) -> dict[str, Any]:
    """The last value of each metric, from the lines of the latest attempt that logged any
    (a retried or requeued task logs again into the same file)."""
    objects = [obj for obj in objects if type(obj) is dict]
    attempts = [obj["@attempt"] for obj in objects if type(obj.get("@attempt")) is int]
    if attempts and min(attempts) != max(attempts):
        latest = max(attempts)
        objects = [obj for obj in objects if obj.get("@attempt", latest) == latest]
    merged: dict[str, Any] = {}
    for obj in objects:
        merged.update(obj)
    merged.pop("@time", None)
    if any(k[:1] == RESERVED_PREFIX for k in merged):
        for key in [k for k in merged if k[:1] == RESERVED_PREFIX]:
            del merged[key]
    return merged


def parse_result_lines(data: bytes) -> dict[str, Any]:
    """Merge the JSON lines of one results file: the last value of each metric wins.

    A damaged line (a task killed mid-write, a full disk) is skipped, never fatal.
    """
    text = data.strip()
    if not text:
        return {}
    try:
        return _merge(json.loads(b"[" + text.replace(b"\n", b",") + b"]"))
    except ValueError:
        objects = []
        for line in text.splitlines():
            try:
                objects.append(json.loads(line))
            except ValueError:
                continue
        return _merge(objects)


def read_results(results_dir: str, task_ids: Iterable[int]) -> dict[int, dict[str, Any]]:
    """Metrics of many tasks: every file read once, all parsed by ONE json.loads call.

    Should any file hold a damaged line, each file is parsed on its own instead.
    """
    return parse_results(read_result_files(results_dir, task_ids))


def read_result_files(results_dir: str, task_ids: Iterable[int]) -> dict[int, bytes]:
    """The bytes of each task's results file that holds more than blanks: one open per task,
    the directory opened once (a caller that also wants curves parses these, not the files)."""
    found: dict[int, bytes] = {}
    with _opened_dir(results_dir) as dir_fd:
        if dir_fd is None:
            return found
        for task_id in task_ids:
            data = read_bytes(f"{task_id}.jsonl", dir_fd)
            if data and not data.isspace():
                found[task_id] = data
    return found


def parse_results(blobs: dict[int, bytes]) -> dict[int, dict[str, Any]]:
    """Metrics of each task from its results file's bytes, by ONE json.loads call for all of
    them (or each on its own when any holds a damaged line)."""
    if not blobs:
        return {}
    ids, texts = list(blobs), [blob.strip() for blob in blobs.values()]
    try:
        parsed = json.loads(b"[[" + b"],[".join(texts).replace(b"\n", b",") + b"]]")
        if len(parsed) == len(ids) and all(type(p) is list for p in parsed):
            return {task_id: _merge(objects) for task_id, objects in zip(ids, parsed)}
    except ValueError:
        pass
    return {task_id: parse_result_lines(blob) for task_id, blob in zip(ids, texts)}


# ------------------------------------------------------------------ collecting rows
@dataclass
class ResultRow:
    task_id: int
    launch_id: str
    status: str
    params: dict[str, Any]
    metrics: dict[str, Any]


def collect(jobname: str, launch_id: str | None = None, patterns: Sequence[MetricPattern] = (),
            root: str = ".", warn: Callable[[str], None] | None = None) -> list[ResultRow]:
    """One row per task: its latest run across the job's launches (or in `launch_id` only).

    Status is decided exactly as `onager list` does (state files merged with one scheduler
    query per backend); only the per-task objects are skipped, for speed.
    """
    from onager.index import JobIndex
    from onager.layout import LaunchPaths, iter_launch_tasks
    from onager.state import read_states, status_of
    from onager.status import query_all, select_records

    records = select_records(JobIndex(root), jobname, None, launch_id)
    if not records:
        raise UsageError(f"no launch of job {jobname!r} in the index: check the name with onager list")
    answers = query_all(records)
    chosen: dict[int, tuple[int, str, dict[str, Any]]] = {}
    for position, record in enumerate(records):
        if not os.path.isdir(record.launch_dir):
            if warn:
                warn(f"launch {record.key} is in the index but its directory {record.launch_dir} is gone; skipped")
            continue
        states = read_states(record.launch_dir)
        scheduler = answers.get(record.key)
        queried = scheduler is not None
        sched = scheduler or {}
        for task_id, _command, _tag, params in iter_launch_tasks(record.launch_dir):
            status = status_of(states.get(task_id), sched.get(task_id), queried)
            previous = chosen.get(task_id)
            # the latest launch that ran it, unless only an earlier one succeeded
            if previous is None or previous[1] != "done" or status == "done":
                chosen[task_id] = (position, status, params)

    per_launch: dict[int, list[int]] = {}
    for task_id, (position, _, _) in chosen.items():
        per_launch.setdefault(position, []).append(task_id)
    metrics: dict[int, dict[str, Any]] = {}
    for position, task_ids in per_launch.items():
        launch_dir = records[position].launch_dir
        metrics.update(read_results(LaunchPaths(launch_dir).results_dir, task_ids))
        if patterns:
            _log_metrics(LaunchPaths(launch_dir).logs_dir, task_ids, patterns, metrics)
    return [ResultRow(task_id, records[position].launch_id, status, params, metrics.get(task_id, {}))
            for task_id, (position, status, params) in sorted(chosen.items())]


def _log_metrics(logs_dir: str, task_ids: Iterable[int], patterns: Sequence[MetricPattern],
                 metrics: dict[int, dict[str, Any]]) -> None:
    """Regex metrics from each task's logs; they override a log_result value of the same name."""
    streams = sorted({p.stream for p in patterns})
    with _opened_dir(logs_dir) as dir_fd:
        if dir_fd is None:
            return
        for task_id in task_ids:
            for stream in streams:
                data = read_bytes(f"{task_id}.{stream}", dir_fd)
                if not data:
                    continue
                text = data.decode("utf-8", "replace")
                for pattern in patterns:
                    if pattern.stream == stream:
                        value = last_match(text, pattern.regex)
                        if value is not None:
                            metrics.setdefault(task_id, {})[pattern.name] = value


@contextlib.contextmanager
def _opened_dir(path: str) -> Iterator[int | None]:
    """A directory descriptor (opens relative to it skip the path walk), or None if missing."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        yield None
        return
    try:
        yield fd
    finally:
        os.close(fd)


# ------------------------------------------------------------------ tables
@dataclass
class Table:
    """Rows as dicts keyed by column name; which columns are parameters and which metrics."""

    columns: list[str]
    rows: list[dict[str, Any]]
    params: list[str] = field(default_factory=list)
    metrics: list[str] = field(default_factory=list)
    grouped: bool = False


def build_table(rows: Sequence[ResultRow], patterns: Sequence[MetricPattern] = ()) -> Table:
    """Columns: task_id, launch, status, each parameter, each metric (first-seen order).

    A metric named like a parameter or a fixed column is shown as `result:NAME`.
    """
    params: dict[str, None] = {}
    metrics: dict[str, None] = {}
    for r in rows:
        for key in r.params:
            if key not in params:
                params[key] = None
        for key in r.metrics:
            if key not in metrics:
                metrics[key] = None
    for p in patterns:  # a regex metric is a column even if no task matched it yet
        metrics.setdefault(p.name, None)
    taken = set(FIXED_COLUMNS) | set(params)
    rename = {m: (f"result:{m}" if m in taken else m) for m in metrics}
    metric_cols = list(rename.values())
    columns = list(FIXED_COLUMNS) + list(params) + metric_cols
    renamed = any(k != v for k, v in rename.items())
    blank = dict.fromkeys(columns)
    out_rows = []
    for r in rows:
        d = blank.copy()  # every column, in column order: renderers need no lookups
        d["task_id"], d["launch"], d["status"] = r.task_id, r.launch_id, r.status
        d.update(r.params)
        if renamed:
            for key, value in r.metrics.items():
                d[rename[key]] = value
        else:
            d.update(r.metrics)
        out_rows.append(d)
    return Table(columns, out_rows, list(params), metric_cols)


def filter_status(table: Table, statuses: Iterable[str]) -> None:
    wanted = set(statuses)
    table.rows = [r for r in table.rows if r.get("status") in wanted]


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not (isinstance(value, float) and math.isnan(value))


def _order_key(value: Any) -> tuple[int, Any]:
    """Numbers sort numerically, everything else as text after them."""
    if _is_number(value):
        return (0, float(value))
    if isinstance(value, (list, dict)):
        return (1, json.dumps(value, sort_keys=True))
    return (1, str(value))


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def resolve_column(table: Table, name: str, option: str) -> str:
    """A column name, or for grouped tables a metric name meaning its mean."""
    if name in table.columns:
        return name
    if table.grouped and f"{name}_mean" in table.columns:
        return f"{name}_mean"
    if f"result:{name}" in table.columns:
        return f"result:{name}"
    raise UsageError(f"unknown column {name!r} for {option}: use one of {', '.join(table.columns)}")


def parse_sort(specs: Iterable[str]) -> list[tuple[str, bool]]:
    """`-accuracy,lr` -> [("accuracy", True), ("lr", False)]; a leading '-' means descending."""
    keys = []
    for spec in specs:
        for item in spec.split(","):
            item = item.strip()
            if not item:
                continue
            descending = item.startswith("-")
            name = item[1:] if item[:1] in "-+" else item
            if not name:
                raise UsageError(f"--sort {spec!r} names no column: write e.g. --sort -accuracy")
            keys.append((name, descending))
    return keys


def sort_table(table: Table, keys: Sequence[tuple[str, bool]]) -> None:
    """Stable multi-key sort; rows missing a value (or NaN) always come last."""
    resolved = [(resolve_column(table, name, "--sort"), desc) for name, desc in keys]
    rows = table.rows
    for column, descending in reversed(resolved):
        present = [r for r in rows if not _missing(r.get(column))]
        absent = [r for r in rows if _missing(r.get(column))]
        present.sort(key=lambda r: _order_key(r[column]), reverse=descending)
        rows = present + absent
    table.rows = rows


def _hashable(value: Any) -> Any:
    return json.dumps(value, sort_keys=True) if isinstance(value, (list, dict)) else value


def mean_std(values: Iterable[Any]) -> tuple[float | None, float | None, int]:
    """Mean and sample standard deviation (n-1) of the numeric, non-NaN values, and their count."""
    numbers = [float(v) for v in values if _is_number(v)]
    n = len(numbers)
    if n == 0:
        return None, None, 0
    mean = math.fsum(numbers) / n
    if n < 2:
        return mean, None, n
    std = math.sqrt(math.fsum((x - mean) ** 2 for x in numbers) / (n - 1))
    return mean, std, n


def check_group_columns(table: Table, by: Sequence[str], option: str = "--group-by") -> list[str]:
    allowed = list(table.params) + ["status", "launch"]
    out = []
    for name in by:
        if name not in allowed:
            shown = ", ".join(table.params) or "(this job has no parameters)"
            raise UsageError(f"unknown parameter {name!r} for {option}: use one of {shown} (or status, launch)")
        out.append(name)
    return out


def replicate_groups(table: Table) -> list[str]:
    """What `--group-by` with no PARAM groups by: every parameter but +repeat's `replicate`,
    so each row is one combination with count, mean and std over its replicates."""
    from onager.sweep import REPLICATE_KEY
    return [p for p in table.params if p != REPLICATE_KEY]


def group_table(table: Table, by: Sequence[str]) -> Table:
    """One row per combination of `by` values: count, and mean/std of each metric over the rest."""
    by = check_group_columns(table, by)
    groups: dict[tuple, list[dict[str, Any]]] = {}
    firsts: dict[tuple, tuple] = {}
    for row in table.rows:
        values = tuple(row.get(b) for b in by)
        key = tuple(_hashable(v) for v in values)
        if key not in groups:
            groups[key] = []
            firsts[key] = values
        groups[key].append(row)
    count = "count" if "count" not in by else "tasks"
    columns = list(by) + [count]
    for m in table.metrics:
        columns += [f"{m}_mean", f"{m}_std"]
    ordered = sorted(groups, key=lambda k: [(_missing(v), _order_key(v)) for v in k])
    out_rows = []
    for key in ordered:
        members = groups[key]
        d: dict[str, Any] = dict(zip(by, firsts[key]))
        d[count] = len(members)
        for m in table.metrics:
            mean, std, _ = mean_std(r.get(m) for r in members)
            d[f"{m}_mean"], d[f"{m}_std"] = mean, std
        out_rows.append(d)
    return Table(columns, out_rows, list(by), [c for c in columns if c.endswith(("_mean", "_std"))], grouped=True)


# ------------------------------------------------------------------ rendering
def text_cell(value: Any) -> str:
    """A value as one table cell: floats to 6 significant digits, lists and dicts as JSON."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        return format(value, ".6g")
    if isinstance(value, (list, dict)):
        return json.dumps(value, default=str)
    return str(value)


def _column(table: Table, column: str) -> list[Any]:
    try:
        return list(map(operator.itemgetter(column), table.rows))
    except KeyError:  # a row without this column
        return [r.get(column) for r in table.rows]


def _cells(values: list[Any], cell: Callable[[Any], Any]) -> list[Any]:
    """`cell` applied to a column, with shortcuts for the common one-type columns."""
    kinds = set(map(type, values))
    if kinds == {str}:
        return values
    if kinds == {int}:
        return list(map(str, values))
    if kinds == {float} and cell is text_cell:
        return [format(v, ".6g") for v in values]
    return list(map(cell, values))


def render_text(table: Table) -> str:
    """A plain aligned table (numbers right-aligned); fast for 100k rows, unlike tabulate."""
    texts: list[list[str]] = []
    specs: list[str] = []
    for c in table.columns:
        values = _column(table, c)
        cells = _cells(values, text_cell)
        width = max([len(c)] + list(map(len, cells)))
        numeric = set(map(type, values)) <= {int, float, type(None)}
        texts.append([c, "-" * width] + cells)
        specs.append(f"%{width}s" if numeric else f"%-{width}s")
    template = "  ".join(specs)
    return "".join((template % line).rstrip() + "\n" for line in zip(*texts))


def _csv_cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return value


def render_csv(table: Table) -> str:
    """CSV with a header; floats at full precision (repr), empty cells for missing values."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(table.columns)
    writer.writerows(zip(*[_cells(_column(table, c), _csv_cell) for c in table.columns]))
    return buffer.getvalue()


def _json_value(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None  # NaN and infinities are not JSON
    return value


def render_json(table: Table) -> str:
    """A JSON array of objects, one per line (the C encoder: fast at 100k rows).

    Every object has every column; NaN and infinities, which JSON cannot hold, become null.
    """
    columns = table.columns
    if not table.rows:
        return "[]\n"
    objects = [r if list(r) == columns else {c: r.get(c) for c in columns} for r in table.rows]
    try:
        dumps = json.JSONEncoder(ensure_ascii=False, allow_nan=False, default=str).encode
        lines = list(map(dumps, objects))
    except ValueError:
        dumps = json.JSONEncoder(ensure_ascii=False, default=str).encode
        lines = [dumps({k: _json_value(v) for k, v in o.items()}) for o in objects]
    return "[\n" + ",\n".join(lines) + "\n]\n"


# ------------------------------------------------------------------ plotting
def import_pyplot() -> Any:
    """pyplot on a file-only backend, or one OnagerError line when matplotlib is missing."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise OnagerError(f"--plot needs matplotlib, which is not installed: {PLOT_HINT}") from None
    return plt


def plot_series(table: Table, metric: str, x: str, by: Sequence[str]
                ) -> list[tuple[str, list[Any], list[float], list[float]]]:
    """(label, xs, means, stds) per value of `by`: the numbers a plot draws, testable without matplotlib."""
    if metric not in table.metrics:
        metric = resolve_column(table, metric, "--plot")
        if metric not in table.metrics:
            raise UsageError(f"--plot {metric!r} is not a metric: use one of "
                             f"{', '.join(table.metrics) or '(none yet)'}")
    [x] = check_group_columns(table, [x], "--x")
    by = check_group_columns(table, by)
    series: dict[tuple, dict[Any, list[Any]]] = {}
    labels: dict[tuple, str] = {}
    for row in table.rows:
        value = row.get(metric)
        if not _is_number(value):
            continue
        key = tuple(_hashable(row.get(b)) for b in by)
        if key not in labels:
            labels[key] = ", ".join(f"{b}={text_cell(row.get(b))}" for b in by)
        series.setdefault(key, {}).setdefault(_hashable(row.get(x)), []).append(value)
    if not series:
        raise OnagerError(f"no task has a numeric value of {metric} to plot (check onager results first)")
    out = []
    for key in sorted(series, key=lambda k: [(_missing(v), _order_key(v)) for v in k]):
        points = series[key]
        xs = sorted(points, key=lambda v: (_missing(v), _order_key(v)))
        means: list[float] = []
        stds: list[float] = []
        for xv in xs:
            mean, std, _ = mean_std(points[xv])
            assert mean is not None  # every point is a number (filtered above)
            means.append(mean)
            stds.append(std or 0.0)
        out.append((labels[key], xs, means, stds))
    return out


def draw_plot(table: Table, metric: str, x: str, by: Sequence[str], out: str, title: str) -> str:
    """Draw mean +- std of `metric` against `x`, one line per value of `by`; returns the file."""
    plt = import_pyplot()
    series = plot_series(table, metric, x, by)
    all_x = [v for _, xs, _, _ in series for v in xs]
    numeric_x = all(_is_number(v) and not isinstance(v, bool) for v in all_x)
    categories: list[Any] = []
    if not numeric_x:
        for v in sorted(set(map(str, all_x))):
            categories.append(v)
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    try:
        for label, xs, means, stds in series:
            pos = xs if numeric_x else [categories.index(str(v)) for v in xs]
            ax.errorbar(pos, means, yerr=stds, marker="o", capsize=3, label=label or None)
        if numeric_x:
            positive = [float(v) for v in all_x if float(v) > 0]
            if len(positive) == len(all_x) and positive and max(positive) / min(positive) >= 100:
                ax.set_xscale("log")
        else:
            ax.set_xticks(range(len(categories)))
            ax.set_xticklabels(categories)
        ax.set_xlabel(x)
        ax.set_ylabel(metric)
        ax.set_title(title)
        if by:
            ax.legend(title=", ".join(by))
        ax.grid(True, alpha=0.3)
        fig.tight_layout()
        fmt = os.path.splitext(out)[1].lstrip(".").lower() or "png"
        from onager.fsutil import atomic_writer
        try:
            with atomic_writer(out, "wb") as handle:
                fig.savefig(handle, format=fmt)
        except ValueError as exc:
            raise UsageError(f"cannot write {out}: {exc}; use --out with .png, .pdf or .svg") from None
    finally:
        plt.close(fig)
    return out
