"""Habits every command shares: the job name positionally or as --jobname, and "did you mean"
for a mistyped option, checked before argparse (whose first complaint about `--jobnme` is
otherwise that --jobname is missing)."""
from __future__ import annotations

from collections.abc import Sequence

from onager.errors import UsageError

TYPE_CHECKING = False
if TYPE_CHECKING:  # argparse is the caller's; difflib loads only for a mistyped option
    import argparse


def add_job_argument(parser: argparse.ArgumentParser, required: bool = True, option: bool = True,
                     help: str = "the job name (as given to prelaunch); or --jobname NAME") -> None:
    """`JOB` as an optional positional (dest `job`), and `--jobname/-n` unless the parser has it."""
    parser.add_argument("job", nargs="?", default=None, metavar="JOB", help=help)
    if option:
        parser.add_argument("--jobname", "-n", default=None, help="the job name, as an option (same as JOB)")
    parser.set_defaults(job_required=required)


def merge_job(args: argparse.Namespace) -> None:
    """Make `args.job` and `args.jobname` the one name given either way; refuse two different ones."""
    if not hasattr(args, "job") or not hasattr(args, "job_required"):
        return
    positional, option = args.job, getattr(args, "jobname", None)
    if positional is not None and option is not None and positional != option:
        raise UsageError(f"two job names, {positional!r} and --jobname {option!r}: give one")
    name = positional if positional is not None else option
    if name is None and args.job_required:
        command = args.subcommand
        raise UsageError(f"{command} needs a job: onager {command} JOB (or --jobname JOB)")
    args.job = args.jobname = name


def job_of(args: argparse.Namespace, command: str) -> str:
    """The job name after merge_job (for commands run without it, e.g. from tests)."""
    name = getattr(args, "job", None) or getattr(args, "jobname", None)
    if not name:
        raise UsageError(f"{command} needs a job: onager {command} JOB (or --jobname JOB)")
    return str(name)


def _options(parser: argparse.ArgumentParser) -> list[str]:
    return [s for action in parser._actions for s in action.option_strings]


def subparser(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser | None:
    group = parser._subparsers
    if group is None:
        return None
    for action in group._group_actions:
        choices = getattr(action, "choices", None)
        if isinstance(choices, dict) and name in choices:
            found: argparse.ArgumentParser = choices[name]
            return found
    return None


def suggestion(word: str, known: Sequence[str]) -> str:
    """`; did you mean --jobname?` for the closest known option, or ""."""
    import difflib
    close = difflib.get_close_matches(word, [k for k in known if k.startswith("--")], n=1, cutoff=0.6)
    return f"; did you mean {close[0]}?" if close else ""


def check_options(parser: argparse.ArgumentParser, argv: Sequence[str]) -> None:
    """Refuse the first `--word` that is neither an option of the command nor the start of
    one, naming the closest option. Words with a space are values to argparse, and so here."""
    if not argv:
        return
    if argv[0].startswith("--"):
        name = argv[0].split("=", 1)[0]
        top = _options(parser)
        if name not in top:
            hint = suggestion(name, top)
            raise UsageError(f"unknown option {name}{hint}" if hint else
                             f"unknown option {name}: give a command first (see onager --help)")
        return
    sub = subparser(parser, argv[0])
    if sub is None:
        return
    known = _options(sub)
    for word in argv[1:]:
        if word == "--":
            return
        if not word.startswith("--") or len(word) < 3 or " " in word:
            continue
        name = word.split("=", 1)[0]
        if name in known or any(k.startswith(name) for k in known):
            continue
        hint = suggestion(name, known)
        raise UsageError(f"unknown option {name}{hint}" if hint else
                         f"unknown option {name} for onager {argv[0]} (see onager {argv[0]} --help)")
