"""`onager prelaunch`: the `+option` command line -> a Sweep -> jobs.json.

Parsed by hand rather than by argparse so that errors name the option and the fix,
unique prefixes work as they did in 0.1.3 (argparse abbreviations), and a value that
starts with `+` has a spelling (`++x` passes `+x`) instead of being dropped.
"""
from __future__ import annotations

import difflib
import os
import sys
from dataclasses import dataclass, field
from typing import Dict, List, Optional, TextIO, Tuple

from onager.errors import UsageError
from onager.sweep import Sweep, check_jobname

# option -> (min values, max values or None for any)
OPTIONS: Dict[str, Tuple[int, Optional[int]]] = {
    "+command": (1, 1), "+jobname": (1, 1), "+jobfile": (1, 1),
    "+arg": (1, None), "+pos-arg": (1, None), "+flag": (1, 1),
    "+tag": (0, 1), "+tag-args": (1, None), "+no-tag-number": (0, 0),
    "+append": (0, 0), "+a": (0, 0), "+quiet": (0, 0), "+q": (0, 0),
    "+help": (0, 0), "+h": (0, 0), "+dry-run": (0, 0),
}
ALIASES = {"+a": "+append", "+q": "+quiet", "+h": "+help"}

HELP = """usage: onager prelaunch +command CMD +jobname NAME [+arg --name [V ...]] [+pos-arg V [V ...]]
                        [+flag --name] [+tag [--tag]] [+tag-args --name ...] [+no-tag-number]
                        [+jobfile PATH] [+append] [+quiet] [+dry-run]

Expand every combination of the given values into a jobfile (.onager/scripts/NAME/jobs.json)
and print the commands. The first dimension varies fastest; flags are outermost.

  +command CMD          base command (shell text, e.g. "python train.py")
  +jobname NAME         job name: letters, digits, '.', '_', '-'
  +jobfile PATH         jobfile to write (default .onager/scripts/{jobname}/jobs.json)
  +arg --name [V ...]   an argument and its values (no values: --name on every command)
  +pos-arg V [V ...]    a positional argument and its values
  +flag --name          a flag, with and without (two variants)
  +tag [NAME]           pass a unique tag per task as NAME <tag> (NAME default --tag)
  +tag-args --name ...  which +arg names go into the tag (default: all)
  +no-tag-number        leave the task number out of tags
  +append, +a           add to the existing jobfile, numbering after its last task
  +quiet, +q            do not print the commands
  +dry-run              print the commands, write nothing

Values are passed byte for byte (quoted for the shell when needed). A value that starts
with '+' is written with one more '+': ++5 passes +5.

examples:
  onager prelaunch +jobname exp1 +command myscript +arg --lr 0.1 0.01 +arg --bs 32 64 +tag
  onager prelaunch +jobname exp2 +command ./run.sh +pos-arg a b +flag --verbose +tag --run-tag
"""


@dataclass
class PrelaunchArgs:
    sweep: Sweep
    jobname: Optional[str] = None
    jobfile: Optional[str] = None
    append: bool = False
    quiet: bool = False
    dry_run: bool = False
    help: bool = False


def _resolve(token: str) -> str:
    name = token.split("=", 1)[0]
    if name in OPTIONS:
        return name
    matches = [o for o in OPTIONS if o.startswith(name) and len(name) > 1]
    canonical = {ALIASES.get(m, m) for m in matches}
    if len(canonical) == 1:
        return matches[0]
    if len(canonical) > 1:
        raise UsageError(f"ambiguous option {name}: could be {', '.join(sorted(canonical))}")
    close = difflib.get_close_matches(name, [o for o in OPTIONS if o not in ALIASES], n=1, cutoff=0.5)
    hint = f"; did you mean {close[0]}?" if close else ""
    raise UsageError(f"unknown prelaunch option {name}{hint} (a value starting with '+' is written ++value)")


def _is_option(token: str) -> bool:
    return token.startswith("+") and not token.startswith("++") and token != "+"


def _value(token: str) -> str:
    return token[1:] if token.startswith("++") else token


def parse(argv: List[str]) -> PrelaunchArgs:
    if argv[:1] in (["-h"], ["--help"]):
        return PrelaunchArgs(Sweep(""), help=True)
    command: Optional[str] = None
    args = PrelaunchArgs(Sweep(""))
    dims: List[Tuple[str, List[str]]] = []
    tag: Optional[str] = None
    tag_args: Optional[List[str]] = None
    no_number = False
    i = 0
    while i < len(argv):
        token = argv[i]
        if not _is_option(token):
            raise UsageError(f"unexpected value {token!r}: values follow an option such as +arg --name V "
                             "(a value starting with '+' is written ++value)")
        option = ALIASES.get(_resolve(token), _resolve(token))
        low, high = OPTIONS[option]
        values: List[str] = []
        if "=" in token:
            values.append(_value(token.split("=", 1)[1]))
        i += 1
        while i < len(argv) and not _is_option(argv[i]) and (high is None or len(values) < high):
            values.append(_value(argv[i]))
            i += 1
        if len(values) < low:
            raise UsageError(f"{option} needs {'a value' if low == 1 and high == 1 else 'at least %d value(s)' % low}"
                             f"; see onager help prelaunch")
        if option == "+command":
            command = values[0]
        elif option == "+jobname":
            args.jobname = values[0]
        elif option == "+jobfile":
            args.jobfile = values[0]
        elif option in ("+arg", "+pos-arg", "+flag"):
            dims.append((option, values))
        elif option == "+tag":
            tag = values[0] if values else "--tag"
            if tag == "":
                raise UsageError("+tag needs a non-empty name, or none for --tag")
        elif option == "+tag-args":
            tag_args = values
        elif option == "+no-tag-number":
            no_number = True
        elif option == "+append":
            args.append = True
        elif option == "+quiet":
            args.quiet = True
        elif option == "+dry-run":
            args.dry_run = True
        elif option == "+help":
            args.help = True
    if args.help:
        return args
    if command is None:
        raise UsageError("prelaunch needs +command CMD (e.g. +command \"python train.py\")")
    if args.jobname is None:
        raise UsageError("prelaunch needs +jobname NAME")
    check_jobname(args.jobname)
    sweep = Sweep(command)
    for option, values in dims:
        if option == "+arg":
            sweep.arg(values[0], values[1:])
        elif option == "+pos-arg":
            sweep.pos_arg(values)
        else:
            sweep.flag(values[0])
    if tag is not None:
        sweep.tag(tag, tag_args, number=not no_number)
    elif tag_args is not None or no_number:
        sweep.tag_args = tag_args
    sweep.check()
    args.sweep = sweep
    return args


def run(argv: List[str], out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    from onager.config import ensure_onager_dir
    from onager.fsutil import file_lock
    from onager.jobfile import iter_jobfile, jobfile_path, write_jobfile

    args = parse(argv)
    if args.help:
        out.write(HELP)
        return 0
    for warning in args.sweep.warnings:
        err.write(f"onager: warning: {warning}\n")
    path = jobfile_path(args.jobname, args.jobfile)
    if args.dry_run:
        start = 1
        if args.append and os.path.exists(path):
            start = max((e.id for e in iter_jobfile(path)), default=0) + 1
        for line in args.sweep.lines(args.jobname, start):
            if not args.quiet:
                out.write(line.command + "\n")
        return 0
    if path.startswith(".onager/") or path.startswith("./.onager/"):
        ensure_onager_dir(".")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with file_lock(os.path.join(os.path.dirname(os.path.abspath(path)), ".jobs.lock")):
        keep = []
        existed = os.path.exists(path)
        if args.append and existed:
            keep = list(iter_jobfile(path))
        start = max((e.id for e in keep), default=0) + 1
        count = write_jobfile(path, args.sweep.lines(args.jobname, start), keep,
                              echo=None if args.quiet else out)
    new = count - len(keep)
    if args.append and existed:
        err.write(f"Prelaunched {new} more jobs for {args.jobname} ({count} in all) in {path}.\n")
    elif existed:
        err.write(f"Prelaunched {count} jobs for {args.jobname}; replaced the previous jobfile {path}.\n")
    else:
        err.write(f"Prelaunched {count} jobs for {args.jobname} in {path}.\n")
    return 0
