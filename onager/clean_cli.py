"""`onager clean JOB`: remove what interrupted launches of a job left behind.

A launch killed while it was being built (kill -9, a full disk, a lost machine) leaves a
launch directory that no index record points to; it can hold megabytes of tasks. `clean`
removes those, and only those: a launch in the index is never touched, nor one that is
being built right now, nor one whose scheduler jobs were submitted but never recorded
(those are reported, so that they can be cancelled first).
"""
from __future__ import annotations

import argparse
import sys
from typing import Any


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "clean", help="remove the partial launch directories that interrupted launches of a job left",
        epilog="examples:\n  onager clean exp1\n  onager clean exp1 --dry-run",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    from onager.cli_habits import add_job_argument
    add_job_argument(p, help="the job whose partial launch directories to remove (or --jobname NAME)")
    p.add_argument("-d", "--dry-run", action="store_true", help="say what would be removed; remove nothing")


def run(args: argparse.Namespace) -> int:
    from onager import launch as launchmod
    from onager.sweep import check_jobname

    check_jobname(args.jobname)
    removed, kept = launchmod.remove_partial(args.jobname, dry_run=args.dry_run)
    for partial in kept:
        print(f"onager: kept {partial.path}: its scheduler jobs {', '.join(partial.job_ids)} were submitted but "
              "never recorded; cancel them (onager cancel --backend B --jobid ID), then delete the directory",
              file=sys.stderr)
    size = launchmod._size(sum(p.size for p in removed))
    if not removed:
        print(f"nothing to clean for {args.jobname}: no partial launch directory")
    elif args.dry_run:
        print(f"would free {launchmod._dirs(len(removed))} of {args.jobname} ({size}): "
              + ", ".join(p.path for p in removed))
    else:
        print(f"freed {launchmod._dirs(len(removed))} of {args.jobname} ({size})")
    return 0

