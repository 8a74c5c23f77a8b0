"""`onager report JOB`: write one self-contained HTML page about a job (see onager.report)."""
from __future__ import annotations

import argparse
import sys
from typing import Any

EXAMPLES = """examples:
  onager report exp1                       writes exp1_report.html
  onager report exp1 -o ~/www/exp1.html --metric accuracy
  onager report exp1 --launch 2            only launch 2 of exp1

The page needs no network and works with JavaScript off (the script only sorts and
filters the task table); copy it off the cluster and open it in any browser. Plots need
matplotlib (pip install 'onager[report]'); without it the page shows tables instead.
"""


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    from onager.cli_habits import add_job_argument
    p = subparsers.add_parser("report", help="one self-contained HTML page: counts, table, plots, failures",
                              epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_job_argument(p)
    p.add_argument("-o", "--out", default=None, metavar="FILE", help="where to write (default JOB_report.html)")
    p.add_argument("--launch", default=None, help="only this launch of the job (default: each task's latest run)")
    p.add_argument("--metric", default=None, metavar="NAME",
                   help="the metric plotted against each parameter (default: the first one logged)")
    p.add_argument("--no-plots", action="store_true", help="tables only, even where matplotlib is installed")
    return p


def run(args: argparse.Namespace) -> int:
    from onager.cli_habits import job_of
    from onager.report import write_report
    path = write_report(job_of(args, "report"), args.out, args.launch, args.metric, plots=not args.no_plots)
    print(f"wrote {path}", file=sys.stderr)
    return 0
