"""`onager report JOB`: one self-contained HTML file to look at a sweep.

Everything is inline (styles, plots as SVG, a small script) and nothing is fetched, so the
file can be copied off an offline cluster and opened anywhere. The page is complete with
JavaScript off: tables and plots are static; the script only adds sorting and filtering.
A Content-Security-Policy allows no network at all and only this script (by its hash), so
even a value that escaped escaping could not run. Plots are drawn with matplotlib when it
is installed (`pip install 'onager[report]'`); without it the same numbers are shown as
tables and bars made of plain HTML, and the page says so.
"""
from __future__ import annotations

import base64
import hashlib
import html
import io
import itertools
import json
import math
import os
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from onager.errors import OnagerError, UsageError
from onager.results import text_cell

#: the task table and the failure list stop here: a browser copes, a 100k-row page does not
MAX_TABLE_ROWS = 5000
MAX_FAILURES = 50
MAX_CURVE_TASKS = 40
MAX_CURVE_METRICS = 6
MAX_METRIC_COLUMNS = 8
STDERR_TAIL_BYTES = 4096
STDERR_TAIL_LINES = 20
#: statuses whose stderr tail is shown: the task ended without success
UNSUCCESSFUL = ("failed", "lost", "error", "cancelled")
STEP_KEY = "step"  # onager.log_result(step=epoch, loss=...): the x of the other metrics of that line


@dataclass
class TaskInfo:
    """One task's latest run, with what the report shows of it."""

    task_id: int
    launch_id: str
    launch_dir: str
    status: str
    reason: str
    exit_code: int | None
    elapsed: float | None
    tag: str
    params: dict[str, Any]
    metrics: dict[str, Any] = field(default_factory=dict)
    attempt: int | None = None


@dataclass
class ReportData:
    """Everything the page shows, gathered before anything is rendered."""

    jobname: str
    launch_id: str | None
    tasks: list[TaskInfo]
    provenance: list[tuple[str, dict[str, Any]]]  # (launch key, provenance.json)
    metrics: list[str]
    curves: dict[str, dict[int, list[tuple[float, float]]]]  # metric -> task -> (step, value)
    failures: list[tuple[TaskInfo, str]]  # task, tail of its stderr
    created: float = field(default_factory=time.time)


# ------------------------------------------------------------------ gathering
def gather(jobname: str, launch_id: str | None = None, root: str = ".") -> ReportData:
    """Each task's latest run across the job's launches (or in `launch_id` only), its metrics,
    learning curves and stderr tail, and each launch's provenance."""
    from onager.index import JobIndex
    from onager.layout import LaunchPaths
    from onager.provenance import load_provenance
    from onager.results import parse_results, read_result_files
    from onager.status import select_records, task_rows

    records = select_records(JobIndex(root), jobname, None, launch_id)
    if not records:
        raise UsageError(f"no launch of job {jobname!r} in the index: check the name with onager list --summary")
    present = [r for r in records if os.path.isdir(r.launch_dir)]
    if not present:
        raise OnagerError(f"every launch directory of job {jobname!r} is gone (deleted by hand?); nothing to report")
    latest: dict[int, TaskInfo] = {}
    dirs = {r.launch_id: r.launch_dir for r in present}
    for row in task_rows(present, skipped=lambda record, why: None):
        latest[row.task_id] = TaskInfo(
            row.task_id, row.launch_id, dirs[row.launch_id],
            row.status, str(getattr(row, "reason", "") or ""), row.exit_code, row.elapsed, row.tag,
            dict(row.params), attempt=getattr(row, "attempt", None))
    tasks = [latest[i] for i in sorted(latest)]
    by_launch: dict[str, list[TaskInfo]] = {}
    for task in tasks:
        by_launch.setdefault(task.launch_dir, []).append(task)
    curves: dict[str, dict[int, list[tuple[float, float]]]] = {}
    metric_names: dict[str, None] = {}
    for launch_dir, members in by_launch.items():
        blobs = read_result_files(LaunchPaths(launch_dir).results_dir, [t.task_id for t in members])
        found = parse_results(blobs)  # each file read once: its bytes give the curves too
        for task in members:
            task.metrics = found.get(task.task_id, {})
            for name in task.metrics:
                metric_names.setdefault(name, None)
            for name, points in curves_of(blobs.get(task.task_id, b"")).items():
                curves.setdefault(name, {})[task.task_id] = points
    # the stderr of the failures the page shows only, and one lookup per launch (not per task)
    failures = [(t, stderr_tail(LaunchPaths(t.launch_dir).log(t.task_id, "err")))
                for t in itertools.islice((t for t in tasks if t.status in UNSUCCESSFUL), MAX_FAILURES)]
    provenance = [(r.key, load_provenance(r.launch_dir) or {}) for r in present if r.launch_dir in by_launch]
    return ReportData(jobname, launch_id, tasks, provenance, list(metric_names), curves, failures)


def read_curves(path: str) -> dict[str, list[tuple[float, float]]]:
    """Metric -> [(step, value)] from one results file, for metrics logged more than once.

    The step is what `log_result(step=...)` recorded with the values, else the line's position
    (1, 2, ...); damaged lines and values that are not numbers are skipped.
    """
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError:
        return {}
    return curves_of(data)


def curves_of(data: bytes) -> dict[str, list[tuple[float, float]]]:
    """read_curves of a results file's bytes already read."""
    series: dict[str, list[tuple[float, float]]] = {}
    for position, line in enumerate(data.splitlines(), 1):
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        if type(obj) is not dict:
            continue
        step = obj.get(STEP_KEY, position)
        if not _is_number(step):
            step = position
        for name, value in obj.items():
            if name[:1] != "@" and name != STEP_KEY and _is_number(value) and math.isfinite(float(value)):
                series.setdefault(name, []).append((float(step), float(value)))
    return {name: sorted(points) for name, points in series.items() if len(points) > 1}


def stderr_tail(path: str) -> str:
    """The last lines of a task's stderr (at most a few KB), decoded leniently."""
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - STDERR_TAIL_BYTES))
            data = handle.read()
    except OSError:
        return ""
    lines = data.decode("utf-8", "replace").splitlines()
    if size > STDERR_TAIL_BYTES and lines:
        lines = lines[1:]  # the first line is cut
    return "\n".join(lines[-STDERR_TAIL_LINES:])


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# ------------------------------------------------------------------ summaries
def swept_params(tasks: Sequence[TaskInfo]) -> list[str]:
    """Parameters that take more than one value across the tasks, in first-seen order."""
    seen: dict[str, set[str]] = {}
    for task in tasks:
        for name, value in task.params.items():
            seen.setdefault(name, set()).add(json.dumps(value, sort_keys=True, default=str))
    return [name for name, values in seen.items() if len(values) > 1]


def numeric_metrics(data: ReportData) -> list[str]:
    """Metrics with a number somewhere, the step (an x, not a result) left out."""
    return [m for m in data.metrics if m != STEP_KEY and any(_is_number(t.metrics.get(m)) for t in data.tasks)]


def param_summary(tasks: Sequence[TaskInfo], param: str, metric: str) -> list[tuple[Any, float | None,
                                                                                   float | None, int]]:
    """(value, mean, sample std, n) of `metric` per value of `param`, over everything else."""
    from onager.results import _order_key, mean_std
    groups: dict[str, tuple[Any, list[Any]]] = {}
    for task in tasks:
        if param not in task.params:
            continue
        value = task.params[param]
        key = json.dumps(value, sort_keys=True, default=str)
        groups.setdefault(key, (value, []))[1].append(task.metrics.get(metric))
    out = []
    for value, values in sorted(groups.values(), key=lambda g: _order_key(g[0])):
        mean, std, n = mean_std(v for v in values if not (isinstance(v, float) and math.isnan(v)))
        out.append((value, mean, std, n))
    return out


def histogram(values: Sequence[float], bins: int = 12) -> list[tuple[float, float, int]]:
    """(low, high, count) bins of equal width over the values."""
    if not values:
        return []
    low, high = min(values), max(values)
    if high <= low:
        return [(low, high, len(values))]
    width = (high - low) / bins
    counts = [0] * bins
    for v in values:
        counts[min(bins - 1, int((v - low) / width))] += 1
    return [(low + i * width, low + (i + 1) * width, c) for i, c in enumerate(counts)]


# ------------------------------------------------------------------ plots
def have_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


class Plotter:
    """Figures as inline SVG text from matplotlib (Agg, no display), each with its own ids."""

    def __init__(self) -> None:
        import matplotlib
        matplotlib.use("Agg", force=True)
        import matplotlib.pyplot as plt
        self.plt = plt
        self.count = 0

    def svg(self, fig: Any, label: str) -> str:
        self.count += 1
        buffer = io.StringIO()
        with self.plt.rc_context({"svg.hashsalt": f"onager-report-{self.count}", "svg.fonttype": "path"}):
            fig.savefig(buffer, format="svg", bbox_inches="tight", metadata={"Date": None})
        self.plt.close(fig)
        text = buffer.getvalue()
        text = text[text.index("<svg"):]  # drop the XML prologue and doctype
        text = re.sub(r"<metadata>.*?</metadata>\s*", "", text, flags=re.S)  # creator, format: noise here
        # every figure defines the same glyph ids: give each figure's ids (and references) its own prefix
        ids = set(re.findall(r'\bid="([^"]+)"', text))
        prefix = f"fig{self.count}-"
        text = re.sub(r'\bid="([^"]+)"', lambda m: f'id="{prefix}{m.group(1)}"', text)
        text = re.sub(r"#([A-Za-z_][\w.-]*)", lambda m: f"#{prefix}{m.group(1)}" if m.group(1) in ids else m.group(0),
                      text)
        return text.replace("<svg ", f'<svg role="img" aria-label="{_e(label)}" class="plot" ', 1)

    def figure(self, width: float = 5.0, height: float = 3.2) -> tuple[Any, Any]:
        fig, ax = self.plt.subplots(figsize=(width, height))
        ax.grid(True, alpha=0.3)
        return fig, ax

    def elapsed(self, values: Sequence[float]) -> str:
        fig, ax = self.figure()
        ax.hist(values, bins=min(30, max(5, len(values) // 2)), color="#4c72b0")
        ax.set_xlabel("elapsed (s)")
        ax.set_ylabel("tasks")
        return self.svg(fig, "elapsed time distribution")

    def param(self, param: str, metric: str, summary: Sequence[tuple[Any, float | None, float | None, int]]) -> str:
        fig, ax = self.figure()
        points = [(v, m, s or 0.0) for v, m, s, _ in summary if m is not None]
        numeric = all(_is_number(v) for v, _, _ in points)
        xs: list[Any] = [v for v, _, _ in points] if numeric else list(range(len(points)))
        ax.errorbar(xs, [m for _, m, _ in points], yerr=[s for _, _, s in points], fmt="o-", capsize=4,
                    color="#dd8452")
        if numeric and xs and min(xs) > 0 and max(xs) / min(xs) >= 100:
            ax.set_xscale("log")
        if not numeric:
            ax.set_xticks(xs)
            ax.set_xticklabels([str(v) for v, _, _ in points], rotation=30, ha="right")
        ax.set_xlabel(param)
        ax.set_ylabel(f"{metric} (mean ± std)")
        return self.svg(fig, f"{metric} against {param}")

    def curves(self, metric: str, series: dict[int, list[tuple[float, float]]]) -> str:
        fig, ax = self.figure()
        for task_id, points in list(series.items())[:MAX_CURVE_TASKS]:
            ax.plot([p[0] for p in points], [p[1] for p in points], linewidth=1, label=f"task {task_id}")
        if len(series) <= 10:
            ax.legend(fontsize="small")
        ax.set_xlabel("step")
        ax.set_ylabel(metric)
        return self.svg(fig, f"learning curves of {metric}")


# ------------------------------------------------------------------ rendering
def _e(value: Any) -> str:
    """Escaped for HTML text and attribute values: every user-controlled string goes through here."""
    return html.escape(value if isinstance(value, str) else _text(value), quote=True)


def _text(value: Any) -> str:
    return text_cell(value)  # a cell as `onager results` prints it


def _elapsed_text(seconds: float | None) -> str:
    if seconds is None:
        return ""
    if seconds < 60:
        return f"{seconds:.1f} s" if seconds < 10 else f"{seconds:.0f} s"
    s = int(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def _sort_key(value: Any) -> str:
    """data-sort for a cell: numbers sort as numbers in the script."""
    if _is_number(value) and math.isfinite(float(value)):
        return repr(float(value))
    return _text(value)


def _section(ident: str, title: str, body: str) -> str:
    return f'<section id="{ident}"><h2>{_e(title)}</h2>\n{body}\n</section>'


def _table(headers: Sequence[str], rows: Iterable[Sequence[Any]], cls: str = "") -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "\n".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>\n{body}\n</tbody></table>'


def _bars(rows: Sequence[tuple[str, int]]) -> str:
    """A bar chart in plain HTML (no script, no library): label, bar, count."""
    top = max((c for _, c in rows), default=0) or 1
    out = []
    for label, count in rows:
        width = 100.0 * count / top
        out.append(f'<div class="bar"><span class="label">{_e(label)}</span>'
                   f'<span class="fill" style="width:{width:.1f}%"></span><span class="n">{count}</span></div>')
    return '<div class="bars">' + "\n".join(out) + "</div>"


def _counts(data: ReportData) -> str:
    from onager.state import STATUSES
    counts: dict[str, int] = {}
    reasons: dict[tuple[str, str], int] = {}
    for t in data.tasks:
        counts[t.status] = counts.get(t.status, 0) + 1
        if t.reason:
            reasons[(t.status, t.reason)] = reasons.get((t.status, t.reason), 0) + 1
    order = [s for s in STATUSES if s in counts] + sorted(s for s in counts if s not in STATUSES)
    chips = " ".join(f'<span class="chip st-{_e(s)}">{_e(s)} <b>{counts[s]}</b></span>' for s in order)
    body = f'<p class="chips">{len(data.tasks)} tasks: {chips}</p>'
    if reasons:
        body += "<h3>by reason</h3>" + _table(["status", "reason", "tasks"],
                                               [(s, r, n) for (s, r), n in sorted(reasons.items())], "small")
    return _section("counts", "Tasks by end state", body)


def _elapsed_section(data: ReportData, plotter: Plotter | None) -> str:
    values = [t.elapsed for t in data.tasks if t.elapsed is not None and t.status not in ("running", "pending")]
    if not values:
        return _section("elapsed", "Elapsed time", "<p>No task has ended yet.</p>")
    values = [float(v) for v in values]
    ordered = sorted(values)
    median = ordered[len(ordered) // 2]
    body = (f"<p>{len(values)} ended tasks: min {_elapsed_text(ordered[0])}, median {_elapsed_text(median)}, "
            f"max {_elapsed_text(ordered[-1])}.</p>")
    if plotter is not None:
        body += plotter.elapsed(values)
    else:
        body += _bars([(f"{lo:.1f}–{hi:.1f} s", n) for lo, hi, n in histogram(values)])
    return _section("elapsed", "Elapsed time", body)


def _task_table(data: ReportData, params: list[str], metrics: list[str]) -> str:
    from onager.state import describe_exit
    headers = ["id", "tag", "params", "status", "reason", "exit", "elapsed"] + metrics
    rows = []
    for t in data.tasks[:MAX_TABLE_ROWS]:
        param_text = " ".join(f"{k}={_text(v)}" for k, v in t.params.items())
        cells: list[tuple[Any, str]] = [
            (t.task_id, str(t.task_id)), (t.tag, t.tag), (param_text, param_text), (t.status, t.status),
            (t.reason, t.reason), (t.exit_code, describe_exit(t.exit_code)),
            (t.elapsed, _elapsed_text(t.elapsed))]
        cells += [(t.metrics.get(m), _text(t.metrics.get(m))) for m in metrics]
        attrs = " ".join(f'data-p-{_attr_name(k)}="{_e(_text(v))}"' for k, v in t.params.items()
                         if k in params)
        tds = "".join(f'<td data-sort="{_e(_sort_key(raw))}">{_e(shown)}</td>' for raw, shown in cells)
        rows.append(f'<tr class="task" data-status="{_e(t.status)}" {attrs}>{tds}</tr>')
    head = "".join(f'<th scope="col" data-col="{i}">{_e(h)}</th>' for i, h in enumerate(headers))
    statuses = sorted({t.status for t in data.tasks})
    options = "".join(f'<option value="{_e(s)}">{_e(s)}</option>' for s in statuses)
    param_options = "".join(f'<option value="{_e(_attr_name(p))}">{_e(p)}</option>' for p in params)
    controls = (
        '<form class="filters" id="filters" hidden>'
        f'<label>status <select id="f-status"><option value="">all</option>{options}</select></label> '
        f'<label>parameter <select id="f-param"><option value="">any</option>{param_options}</select></label> '
        '<label>value <input id="f-value" size="12" placeholder="e.g. 0.1"></label> '
        '<label>text <input id="f-text" size="16" placeholder="tag, params, reason"></label> '
        '<span id="f-count"></span></form>')
    note = ""
    if len(data.tasks) > MAX_TABLE_ROWS:
        note = (f"<p class=\"note\">The first {MAX_TABLE_ROWS} of {len(data.tasks)} tasks are shown; "
                f"`onager results {_e(data.jobname)} --csv` has them all.</p>")
    table = (f'<table id="task-table" class="sortable"><thead><tr>{head}</tr></thead><tbody>\n'
             + "\n".join(rows) + "\n</tbody></table>")
    return _section("tasks", "Tasks", controls + note + '<div class="scroll">' + table + "</div>")


def _attr_name(name: str) -> str:
    """A parameter name as the tail of a data- attribute (letters, digits and dashes only)."""
    safe = "".join(c.lower() if c.isascii() and c.isalnum() else "-" for c in name)
    return safe + "-" + hashlib.sha1(name.encode("utf-8")).hexdigest()[:6]


def _params_section(data: ReportData, params: list[str], metric: str | None, plotter: Plotter | None) -> str:
    if not params:
        return _section("params", "Parameters", "<p>No parameter takes more than one value.</p>")
    if metric is None:
        return _section("params", "Parameters", "<p>No numeric metric was logged (onager.log_result), so there is "
                                                  "nothing to plot against the parameters.</p>")
    parts = [f"<p>Each swept parameter against <b>{_e(metric)}</b>: the mean and sample standard deviation over "
             "the tasks that share its value (other parameters, seeds). Choose another metric with "
             f"<code>onager report {_e(data.jobname)} --metric NAME</code>.</p>"]
    for param in params:
        summary = param_summary(data.tasks, param, metric)
        figure = plotter.param(param, metric, summary) if plotter is not None and \
            any(m is not None for _, m, _, _ in summary) else ""
        rows = [(v, "" if m is None else format(m, ".6g"), "" if s is None else format(s, ".6g"), n)
                for v, m, s, n in summary]
        parts.append(f'<div class="param"><h3>{_e(metric)} vs {_e(param)}</h3>{figure}'
                     + _table([param, f"{metric} mean", "std", "n"], rows, "small") + "</div>")
    return _section("params", "Parameters", "\n".join(parts))


def _curves_section(data: ReportData, plotter: Plotter | None) -> str:
    if not data.curves:
        return _section("curves", "Learning curves",
                        "<p>No metric was logged more than once per task. Log one per step with "
                        "<code>onager.log_result(step=epoch, loss=loss)</code>.</p>")
    parts = []
    for metric in list(data.curves)[:MAX_CURVE_METRICS]:
        series = data.curves[metric]
        if plotter is not None:
            figure = plotter.curves(metric, series)
        else:
            figure = _table(["task", "steps", "first", "last"],
                            [(t, len(p), _text(p[0][1]), _text(p[-1][1])) for t, p in list(series.items())
                             [:MAX_CURVE_TASKS]], "small")
        parts.append(f'<div class="curve"><h3>{_e(metric)}</h3>{figure}</div>')
    return _section("curves", "Learning curves", "\n".join(parts))


def _failures_section(data: ReportData) -> str:
    if not data.failures:
        return _section("failures", "Failed tasks", "<p>None.</p>")
    from onager.state import describe_exit
    parts = []
    for task, tail in data.failures:
        why = f", {task.reason}" if task.reason else ""
        parts.append(f'<details open><summary>task {task.task_id} ({_e(task.status)}{_e(why)}, exit '
                     f'{_e(describe_exit(task.exit_code))}) {_e(task.tag)}</summary>'
                     f'<pre class="stderr">{_e(tail) or "(no stderr)"}</pre></details>')
    total = sum(1 for t in data.tasks if t.status in UNSUCCESSFUL)
    note = f"<p>The first {len(data.failures)} of {total}.</p>" if total > len(data.failures) else ""
    return _section("failures", "Failed tasks: the tail of their stderr", note + "\n".join(parts))


def _provenance_section(data: ReportData) -> str:
    rows = []
    for key, prov in data.provenance:
        git = prov.get("git") or {}
        commit = git.get("commit") or ""
        dirty = "" if not commit else ("yes" if git.get("dirty") else "no")
        rows.append((key, prov.get("time", ""), commit[:12], dirty, prov.get("backend") or "", prov.get("host", ""),
                     prov.get("command", "")))
    body = _table(["launch", "time", "commit", "dirty", "backend", "host", "command line"], rows, "small")
    return _section("provenance", "Provenance", body)


STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:1.5em auto;max-width:1200px;
 padding:0 1em;color:#222;background:#fff}
h1{font-size:1.5em;margin-bottom:.2em}h2{font-size:1.2em;border-bottom:1px solid #ddd;padding-bottom:.2em;
 margin-top:1.6em}h3{font-size:1em;margin:.8em 0 .3em}
table{border-collapse:collapse;font-size:.85em}th,td{border:1px solid #ddd;padding:.25em .5em;text-align:left;
 vertical-align:top}th{background:#f3f3f3}table.sortable th{cursor:pointer;user-select:none}
tr.task:nth-child(even){background:#fafafa}
.scroll{overflow-x:auto}.small{margin:.3em 0}.note,.meta{color:#555;font-size:.9em}
.chip{display:inline-block;padding:.15em .6em;border-radius:1em;background:#eee;margin:.1em}
.st-done{background:#d4edda}.st-failed,.st-error,.st-lost{background:#f8d7da}.st-running{background:#d1ecf1}
.st-cancelled{background:#fff3cd}
tr[data-status=failed] td:nth-child(4),tr[data-status=error] td:nth-child(4),tr[data-status=lost] td:nth-child(4)
 {color:#a00;font-weight:bold}
.bars{max-width:600px}.bar{display:flex;align-items:center;gap:.5em;font-size:.85em}
.bar .label{width:9em;text-align:right}.bar .fill{background:#4c72b0;height:.9em;display:inline-block}
.param,.curve{display:inline-block;vertical-align:top;margin-right:1.5em}
svg.plot{max-width:100%;height:auto;display:block}
pre.stderr{background:#2b2b2b;color:#eee;padding:.6em;overflow-x:auto;font-size:.8em;max-height:24em}
summary{cursor:pointer}.filters{margin:.5em 0}
"""

SCRIPT = """
(function(){
var table=document.getElementById('task-table');if(!table)return;
var body=table.tBodies[0],rows=Array.prototype.slice.call(body.rows);
document.getElementById('filters').hidden=false;
var fs=document.getElementById('f-status'),fp=document.getElementById('f-param'),
 fv=document.getElementById('f-value'),ft=document.getElementById('f-text'),fc=document.getElementById('f-count');
function apply(){var s=fs.value,p=fp.value,v=fv.value.trim(),t=ft.value.trim().toLowerCase(),shown=0;
 rows.forEach(function(r){var ok=(!s||r.getAttribute('data-status')===s);
  if(ok&&p&&v){ok=(r.getAttribute('data-p-'+p)===v);}
  if(ok&&t){ok=r.textContent.toLowerCase().indexOf(t)>=0;}
  r.style.display=ok?'':'none';if(ok)shown++;});
 fc.textContent=shown+' of '+rows.length+' tasks';}
[fs,fp].forEach(function(e){e.addEventListener('change',apply);});
[fv,ft].forEach(function(e){e.addEventListener('input',apply);});
var heads=table.tHead.rows[0].cells,dir={};
Array.prototype.forEach.call(heads,function(th,i){th.title='click to sort';th.addEventListener('click',function(){
 var d=dir[i]=-(dir[i]||-1);
 rows.sort(function(a,b){var x=a.cells[i].getAttribute('data-sort'),y=b.cells[i].getAttribute('data-sort');
  if(x===''||y==='')return x===y?0:(x===''?1:-1);
  if(isFinite(x)&&isFinite(y))return d*(parseFloat(x)-parseFloat(y));
  return d*x.localeCompare(y);});
 rows.forEach(function(r){body.appendChild(r);});});});
apply();
})();
"""


def render(data: ReportData, metric: str | None = None, plots: bool = True) -> str:
    """The whole page. `metric` picks the one plotted against the parameters (default: the
    first numeric one); `plots=False` (or no matplotlib) gives the plain-HTML fallback."""
    numeric = numeric_metrics(data)
    if metric is not None and metric not in data.metrics:
        raise UsageError(f"no task of {data.jobname} logged a metric {metric!r}: use one of "
                         f"{', '.join(data.metrics) or '(none logged yet)'}")
    chosen = metric if metric is not None else (numeric[0] if numeric else None)
    plotter = Plotter() if plots and have_matplotlib() else None
    params = swept_params(data.tasks)
    shown_metrics = data.metrics[:MAX_METRIC_COLUMNS]
    script = SCRIPT.strip()
    digest = base64.b64encode(hashlib.sha256(script.encode("utf-8")).digest()).decode("ascii")
    csp = (f"default-src 'none'; style-src 'unsafe-inline'; img-src data:; script-src 'sha256-{digest}'; "
           "base-uri 'none'; form-action 'none'")
    scope = f"launch {data.launch_id}" if data.launch_id else "each task's latest run"
    made = time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(data.created))
    note = ""
    if plotter is None:
        why = ("Plots are off (--no-plots)" if not plots else
               "Plots need matplotlib, which is not installed here (pip install 'onager[report]')")
        note = f'<p class="note" id="no-plots">{why}; the numbers are shown as tables and plain bars instead.</p>'

    sections = [
        _counts(data),
        _elapsed_section(data, plotter),
        _task_table(data, params, shown_metrics),
        _params_section(data, params, chosen, plotter),
        _curves_section(data, plotter),
        _failures_section(data),
        _provenance_section(data),
    ]
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n"
        f'<meta http-equiv="Content-Security-Policy" content="{csp}">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>onager report: {_e(data.jobname)}</title>\n<style>{STYLE}</style></head>\n<body>\n"
        f"<h1>onager report: {_e(data.jobname)}</h1>\n"
        f'<p class="meta">{len(data.tasks)} tasks ({_e(scope)}); made {_e(made)} by onager.</p>\n{note}\n'
        + "\n".join(sections)
        + f"\n<script>{script}</script>\n</body></html>\n"
    )


def default_output(jobname: str) -> str:
    return f"{jobname.replace(os.sep, '_')}_report.html"


def check_output(path: str) -> None:
    """Refuse an output path that cannot be written, before reading anything."""
    if os.path.isdir(path):
        raise UsageError(f"-o {path} is a directory: give a file name, e.g. -o {os.path.join(path, 'report.html')}")
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise UsageError(f"-o {path}: the directory {parent} does not exist; create it first")


def write_report(jobname: str, out: str | None = None, launch_id: str | None = None, metric: str | None = None,
                 root: str = ".", plots: bool = True) -> str:
    """Gather, render, write atomically; returns the path written."""
    from onager.fsutil import atomic_write
    path = out or default_output(jobname)
    check_output(path)
    page = render(gather(jobname, launch_id, root), metric, plots)
    atomic_write(path, page)
    return path
