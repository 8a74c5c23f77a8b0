"""`onager results JOB`: a table of parameters and metrics per task, sorted, grouped or plotted."""
from __future__ import annotations

import argparse
import gc
import sys
from typing import Any

from onager.errors import UsageError

EXAMPLES = """examples:
  onager results exp1
  onager results exp1 --sort -accuracy --top 5
  onager results exp1 --group-by lr --sort -accuracy
  onager results exp1 --group-by lr bs --csv > summary.csv
  onager results exp1 --group-by               (over +repeat's replicates: every other parameter)
  onager results exp1 --metric 'acc=Test accuracy: ([0-9.]+)' --metric 'loss=loss ([0-9.e+-]+)'
  onager results exp1 --metric-err 'step=step (\\d+)'       (searches logs/<id>.err)
  onager results exp1 --plot accuracy --x lr --group-by bs --out acc.png

Metrics are what tasks logged with onager.log_result(name=value) (the last value of each
name), plus --metric regexes over each task's stdout log (group 1 of the last match).
Without --launch, each task's latest run across the job's launches is shown, so a rerun
of failed tasks replaces their rows. --sort -NAME sorts descending; missing values go last.
--group-by shows count, and mean and sample std (n-1) of each metric over the other
parameters (e.g. seeds); NaN values are left out of means and sorts. --group-by with no
PARAM groups by every parameter but `replicate`: mean, std and count over replicates.
"""


def _accept_dash_values(parser: argparse.ArgumentParser) -> None:
    """Let `--sort -accuracy` through: argparse would take `-accuracy` for an unknown option."""
    base = type(parser)

    class ResultsParser(base):  # type: ignore[valid-type, misc]
        def _parse_optional(self, arg_string: str) -> Any:
            if len(arg_string) > 1 and arg_string[0] == "-" and arg_string[1] != "-":
                head = arg_string.split("=", 1)[0]
                if not any(option.startswith(head) for option in self._option_string_actions):
                    return None
            return super()._parse_optional(arg_string)

    parser.__class__ = ResultsParser


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser("results", help="a table of metrics per task, sorted or grouped",
                              description="One row per task: id, launch, status, each parameter, each metric.",
                              epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    _accept_dash_values(p)
    from onager.cli_habits import add_job_argument
    add_job_argument(p)
    p.add_argument("--launch", default=None, help="only this launch of the job (default: each task's latest run)")
    p.add_argument("--metric", action="append", default=[], metavar="NAME=REGEX",
                   help="a metric read from logs/<id>.out: group 1 of the regex's last match (repeatable)")
    p.add_argument("--metric-err", action="append", default=[], metavar="NAME=REGEX",
                   help="the same over logs/<id>.err (for programs that log to stderr)")
    p.add_argument("--status", default=None, help="only tasks with these statuses, e.g. done or done,failed")
    p.add_argument("--sort", action="append", default=[], metavar="[-]COL",
                   help="sort by these columns (comma-separated or repeated); -COL sorts descending")
    p.add_argument("--top", type=_positive, default=None, metavar="N", help="only the first N rows (after sorting)")
    p.add_argument("--group-by", nargs="*", action="extend", default=None, metavar="PARAM",
                   help="one row per value of these parameters: count, mean and std of each metric "
                        "(no PARAM: every parameter but replicate, to aggregate over +repeat)")
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--csv", action="store_true", help="print CSV")
    fmt.add_argument("--json", action="store_true", help="print a JSON array of objects")
    p.add_argument("--plot", default=None, metavar="METRIC",
                   help="draw METRIC against --x (needs matplotlib: pip install 'onager[plot]')")
    p.add_argument("--x", default=None, metavar="PARAM", help="the parameter on the plot's x axis")
    p.add_argument("--out", default=None, metavar="FILE",
                   help="where --plot writes (.png, .pdf, .svg; default JOB_METRIC_vs_X.png)")
    return p


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not at least 1")
    return value


def _split(values: list[str]) -> list[str]:
    return [item.strip() for value in values for item in value.split(",") if item.strip()]


def run(args: argparse.Namespace) -> int:
    """Collect, shape and print; the cyclic GC is paused meanwhile (100k rows of dicts make
    it rescan the heap again and again, a quarter of the time, for no garbage)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        return _run(args)
    finally:
        if enabled:
            gc.enable()


def _run(args: argparse.Namespace) -> int:
    from onager import results
    from onager.state import STATUSES

    patterns = [results.parse_metric(s, "out") for s in args.metric]
    patterns += [results.parse_metric(s, "err") for s in args.metric_err]
    seen = set()
    for pattern in patterns:
        if pattern.name in seen:
            raise UsageError(f"metric {pattern.name!r} is given twice: name each --metric/--metric-err once")
        seen.add(pattern.name)
    sort_keys = results.parse_sort(args.sort)
    group_by = _split(args.group_by or [])
    over_replicates = args.group_by is not None and not group_by
    statuses = None
    if args.status:
        statuses = _split([args.status])
        bad = sorted(set(statuses) - set(STATUSES))
        if bad:
            raise UsageError(f"unknown status {', '.join(bad)} for --status: use {', '.join(STATUSES)}")
    if args.plot is None and (args.x is not None or args.out is not None):
        raise UsageError("--x and --out go with --plot METRIC, e.g. --plot accuracy --x lr")
    if args.plot is not None:
        if args.x is None:
            raise UsageError(f"--plot {args.plot} needs --x PARAM: the parameter on the x axis, e.g. --x lr")
        if args.csv or args.json or sort_keys or args.top:
            raise UsageError("--plot draws a file: leave out --csv, --json, --sort and --top")
        results.import_pyplot()  # fail fast, before reading 100k files

    rows = results.collect(args.job, args.launch, patterns,
                           warn=lambda message: print(f"onager: warning: {message}", file=sys.stderr))
    table = results.build_table(rows, patterns)
    if over_replicates:
        group_by = results.replicate_groups(table)
    if statuses is not None:
        results.filter_status(table, statuses)

    if args.plot is not None:
        out = args.out or f"{args.job}_{args.plot}_vs_{args.x}.png"
        title = f"{args.job}: {args.plot} vs {args.x}" + (f" ({args.launch})" if args.launch else "")
        path = results.draw_plot(table, args.plot, args.x, group_by, out, title)
        print(f"wrote {path}", file=sys.stderr)
        return 0

    if group_by or over_replicates:
        table = results.group_table(table, group_by)
    if sort_keys:
        results.sort_table(table, sort_keys)
    if args.top is not None:
        table.rows = table.rows[:args.top]
    if args.json:
        sys.stdout.write(results.render_json(table))
    elif args.csv:
        sys.stdout.write(results.render_csv(table))
    else:
        sys.stdout.write(results.render_text(table))
    return 0
