"""`onager prelaunch`: the `+option` command line -> a Sweep -> jobs.json.

Parsed by hand rather than by argparse so that errors name the option and the fix,
unique prefixes work as they did in 0.1.3 (argparse abbreviations), and a value that
starts with `+` has a spelling (`++x` passes `+x`) instead of being dropped.
"""
from __future__ import annotations

import difflib
import os
import re
import shlex
import sys
from dataclasses import dataclass, field
from typing import Any, Callable, TextIO

from onager.errors import UsageError
from onager.prelaunch_help import HELP  # apart, so that +help loads no sweep code
from onager.sweep import Files, Linspace, Logspace, LogUniform, RandInt, Range, Sweep, Uniform, Values, check_jobname

_INTEGER = re.compile(r"[+-]?\d+", re.ASCII)

# option -> (min values, max values or None for any). These are the 0.1.3 options (plus
# +dry-run): only they may be abbreviated, so `+f` still means +flag now that +from exists.
OPTIONS: dict[str, tuple[int, int | None]] = {
    "+command": (1, 1), "+jobname": (1, 1), "+jobfile": (1, 1),
    "+arg": (1, None), "+pos-arg": (1, None), "+flag": (1, 1),
    "+tag": (0, 1), "+tag-args": (1, None), "+no-tag-number": (0, 0),
    "+append": (0, 0), "+a": (0, 0), "+quiet": (0, 0), "+q": (0, 0),
    "+help": (0, 0), "+h": (0, 0), "+dry-run": (0, 0),
}
ALIASES = {"+a": "+append", "+q": "+quiet", "+h": "+help"}
# newer options: exact spelling only
EXACT_OPTIONS: dict[str, tuple[int, int | None]] = {
    "+link": (0, 0), "+sample": (1, 1), "+seed": (1, 1), "+from": (1, 1),
    "+exclude": (2, None), "+or": (0, 0), "+gin-arg": (2, None), "+gin-flag": (1, 1),
    "+override": (2, None), "+repeat": (1, 1), "+no-tag-arg": (1, None), "+no-tag-jobname": (0, 0),
    "+from-results": (1, 1), "+top": (1, 1), "+by": (1, 1),
    "+tune": (1, 1), "+metric": (1, 1), "+sampler": (1, 1),
}
# value generators, inside the values of +arg / +pos-arg: word -> (min, max) arguments
GENERATORS: dict[str, tuple[int, int]] = {
    "+range": (2, 3), "+linspace": (3, 3), "+logspace": (3, 3), "+files": (1, 1),
    "+uniform": (2, 2), "+loguniform": (2, 2), "+randint": (2, 2),
}
GENERATOR_USAGE = {
    "+range": "+range START STOP [STEP]", "+linspace": "+linspace A B N", "+logspace": "+logspace A B N",
    "+files": "+files PATTERN", "+uniform": "+uniform A B", "+loguniform": "+loguniform A B",
    "+randint": "+randint A B",
}


@dataclass
class PrelaunchArgs:
    sweep: Sweep
    jobname: str | None = None
    jobfile: str | None = None
    append: bool = False
    quiet: bool = False
    dry_run: bool = False
    help: bool = False
    tune: dict[str, Any] | None = None  # the +tune spec (onager.tune), stored beside the jobfile


def _resolve(token: str) -> str:
    name = token.split("=", 1)[0]
    if name in OPTIONS or name in EXACT_OPTIONS:
        return name
    if name in GENERATORS:
        raise UsageError(f"{name} gives values to an option: write it after +arg NAME or +pos-arg "
                         f"(e.g. +arg --x {GENERATOR_USAGE[name]})")
    matches = [o for o in OPTIONS if o.startswith(name) and len(name) > 1]
    canonical = {ALIASES.get(m, m) for m in matches}
    if len(canonical) == 1:
        return matches[0]
    if len(canonical) > 1:
        raise UsageError(f"ambiguous option {name}: could be {', '.join(sorted(canonical))}")
    known = [o for o in OPTIONS if o not in ALIASES] + list(EXACT_OPTIONS) + list(GENERATORS)
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.5)
    hint = f"; did you mean {close[0]}?" if close else ""
    raise UsageError(f"unknown prelaunch option {name}{hint} (a value starting with '+' is written ++value)")


def _is_option(token: str) -> bool:
    return token.startswith("+") and not token.startswith("++") and token != "+"


def _value(token: str) -> str:
    return token[1:] if token.startswith("++") else token


def _generator(word: str, params: list[str]) -> Values:
    if word == "+range":
        return Range(*params)
    if word == "+linspace":
        return Linspace(*params)
    if word == "+logspace":
        return Logspace(*params)
    if word == "+files":
        return Files(params[0])
    if word == "+uniform":
        return Uniform(*params)
    if word == "+loguniform":
        return LogUniform(*params)
    return RandInt(*params)


def _values(argv: list[str], i: int, option: str, values: list[Any]) -> int:
    """Collect the values of +arg/+pos-arg from argv[i:], generators included; returns the next index."""
    while i < len(argv):
        token = argv[i]
        if token in GENERATORS and (option == "+pos-arg" or values):
            low, high = GENERATORS[token]
            params: list[str] = []
            i += 1
            while i < len(argv) and len(params) < high and not _is_option(argv[i]):
                if len(params) >= low and not _INTEGER.fullmatch(argv[i]):
                    break  # +range's optional STEP is taken only when it is an integer
                params.append(_value(argv[i]))
                i += 1
            if len(params) < low:
                got = " ".join(params)
                raise UsageError(f"{token} needs {low if low == high else f'{low} or {high}'} value(s): "
                                 f"{GENERATOR_USAGE[token]} (got {token}{' ' + got if got else ''})")
            values.append(_generator(token, params))
            continue
        if _is_option(token):
            break
        values.append(_value(token))
        i += 1
    return i


def _shown(word: str) -> str:
    """A word as it would be typed to bash (quoted where needed), always on one line."""
    text = shlex.quote(word)
    if text.isprintable():
        return text
    out = []
    for c in word:  # bash's $'...' spelling for words with control characters
        if c in "\\'":
            out.append("\\" + c)
        elif c.isprintable():
            out.append(c)
        elif c in "\n\t\r":
            out.append({"\n": "\\n", "\t": "\\t", "\r": "\\r"}[c])
        elif ord(c) < 0x100:
            out.append(f"\\x{ord(c):02x}")
        else:
            out.append(f"\\U{ord(c):08x}")
    return "$'" + "".join(out) + "'"


def _stray(argv: list[str], start: int, i: int) -> UsageError:
    """The error for plain words no option takes: usually a value the shell split in two.

    It shows the words as onager received them, one [box] each, and how to type the line.
    """
    end = i
    while end < len(argv) and not _is_option(argv[end]):
        end += 1
    strays = argv[i:end]
    head = ("stray word " if len(strays) == 1 else "stray words ") + " ".join(_shown(w) for w in strays)
    elsewhere = "a value follows its option (+pos-arg V, +arg --name V) or belongs inside the quotes of +command"
    if i == 0:
        split = " ".join("[" + _shown(w) + "]" for w in strays)
        return UsageError(f"{head} before the first +option (the shell split the line into {split} ...): {elsewhere}")
    token = argv[start]
    option = ALIASES.get(_resolve(token), _resolve(token))
    split = " ".join("[" + _shown(w) + "]" for w in argv[start:end])
    given = argv[start + 1:i]
    if "=" in token:
        given = [token.split("=", 1)[1]] + given
    high = (OPTIONS.get(option) or EXACT_OPTIONS[option])[1]
    takes = "no value" if high == 0 else "one value" if high == 1 else f"at most {high} values"
    if option in ("+command", "+jobfile"):
        fix = f"quote it as one word: {option} {_shown(' '.join(given + strays))}"
    elif option == "+flag":
        fix = "write one +flag per flag: " + " ".join(f"+flag {_shown(w)}" for w in given + strays)
    else:
        fix = elsewhere
    return UsageError(f"{head} after {option}, which takes {takes} (the shell split the line into {split}): {fix}")


@dataclass
class _Parse:
    """What the +options said so far; handlers fill it in, `_build` turns it into a Sweep."""

    args: PrelaunchArgs
    command: str | None = None
    dims: list[tuple[str, list[Any], bool]] = field(default_factory=list)
    tag: str | None = None
    tag_args: list[str] | None = None
    no_number: bool = False
    link: bool = False
    sample: str | None = None
    seed: str | None = None
    source: str | None = None
    exclusions: list[list[tuple[str, list[Any]]]] = field(default_factory=list)
    previous: str = ""  # the option read before the current one (+exclude rules end at others)
    new_rule: bool = False  # +or was read: the next +exclude starts a rule
    repeat: str | None = None
    tag_skip: list[str] = field(default_factory=list)
    no_jobname: bool = False
    gin_flag: str | None = None
    from_results: str | None = None
    top: str | None = None
    by: str | None = None
    tune: dict[str, str] = field(default_factory=dict)  # +tune, +metric, +sampler as given


def _read_plain(argv: list[str], i: int, option: str, values: list[Any]) -> int:
    """Words up to the next +option, at most the option's arity; returns the next index."""
    high = (OPTIONS.get(option) or EXACT_OPTIONS[option])[1]
    while i < len(argv) and not _is_option(argv[i]) and (high is None or len(values) < high):
        values.append(_value(argv[i]))
        i += 1
    return i


def _read_dimension(argv: list[str], i: int, option: str, values: list[Any]) -> int:
    """+arg's name, then the values of +arg/+pos-arg, generators included."""
    if option in NAMED and not values and i < len(argv) and not _is_option(argv[i]):
        values.append(_value(argv[i]))  # the name
        i += 1
    return _values(argv, i, option, values)


def _dimension(state: _Parse, option: str, values: list[Any]) -> None:
    if state.link and option == "+flag":
        raise UsageError("+link cannot join a +flag: flags are not linked; use +arg NAME with values")
    state.dims.append((option, values, state.link))
    state.link = False


def _tag(state: _Parse, option: str, values: list[Any]) -> None:
    state.tag = values[0] if values else "--tag"
    if state.tag == "":
        raise UsageError("+tag needs a non-empty name, or none for --tag")


def _tag_args(state: _Parse, option: str, values: list[Any]) -> None:
    state.tag_args = values


def _exclude(state: _Parse, option: str, values: list[Any]) -> None:
    """Consecutive +exclude options are one rule; after any other option or +or, a new one."""
    if not values[0].strip():
        raise UsageError("+exclude needs a dimension name, e.g. +exclude --optim sgd")
    if state.previous == "+exclude" and not state.new_rule and state.exclusions:
        state.exclusions[-1].append((values[0], values[1:]))
    else:
        state.exclusions.append([(values[0], values[1:])])
    state.new_rule = False


def _or(state: _Parse, option: str, values: list[Any]) -> None:
    if state.previous != "+exclude":
        raise UsageError("+or separates two +exclude rules: write +exclude NAME V ... +or +exclude NAME V ...")
    state.new_rule = True


def _no_tag_arg(state: _Parse, option: str, values: list[Any]) -> None:
    state.tag_skip.extend(v for v in values if v not in state.tag_skip)


def _link(state: _Parse, option: str, values: list[Any]) -> None:
    if not state.dims and state.source is None:
        raise UsageError("+link joins the next +arg/+pos-arg to the one before it: put it between two of them")
    state.link = True


def _from(state: _Parse, option: str, values: list[Any]) -> None:
    if state.source is not None:
        raise UsageError("+from takes one sweep file; give the rest as options")
    state.source = values[0]


def _tune(state: _Parse, option: str, values: list[Any]) -> None:
    state.tune[option] = values[0]


def _setter(target: str, value: Any = None) -> Callable[[_Parse, str, list[Any]], None]:
    """A handler that stores the option's first value (or `value`, for a switch) at `target`
    ("name" on the parse state, "args.name" on the PrelaunchArgs)."""
    def handle(state: _Parse, option: str, values: list[Any]) -> None:
        owner: Any = state
        name = target
        if target.startswith("args."):
            owner, name = state.args, target[5:]
        setattr(owner, name, values[0] if value is None else value)
    return handle


Handler = Callable[[_Parse, str, list[Any]], None]
Reader = Callable[[list[str], int, str, list[Any]], int]
#: canonical +option -> (how its words are read, what it does); arity is in OPTIONS / EXACT_OPTIONS
TABLE: dict[str, tuple[Reader, Handler]] = {
    "+command": (_read_plain, _setter("command")),
    "+jobname": (_read_plain, _setter("args.jobname")),
    "+jobfile": (_read_plain, _setter("args.jobfile")),
    "+arg": (_read_dimension, _dimension),
    "+pos-arg": (_read_dimension, _dimension),
    "+flag": (_read_plain, _dimension),
    "+tag": (_read_plain, _tag),
    "+tag-args": (_read_plain, _tag_args),
    "+no-tag-number": (_read_plain, _setter("no_number", True)),
    "+link": (_read_plain, _link),
    "+sample": (_read_plain, _setter("sample")),
    "+seed": (_read_plain, _setter("seed")),
    "+from": (_read_plain, _from),
    "+exclude": (_read_dimension, _exclude),
    "+or": (_read_plain, _or),
    "+gin-arg": (_read_dimension, _dimension),
    "+gin-flag": (_read_plain, _setter("gin_flag")),
    "+override": (_read_dimension, _dimension),
    "+repeat": (_read_plain, _setter("repeat")),
    "+no-tag-arg": (_read_plain, _no_tag_arg),
    "+no-tag-jobname": (_read_plain, _setter("no_jobname", True)),
    "+from-results": (_read_plain, _setter("from_results")),
    "+top": (_read_plain, _setter("top")),
    "+by": (_read_plain, _setter("by")),
    "+tune": (_read_plain, _tune),
    "+metric": (_read_plain, _tune),
    "+sampler": (_read_plain, _tune),
    "+append": (_read_plain, _setter("args.append", True)),
    "+quiet": (_read_plain, _setter("args.quiet", True)),
    "+dry-run": (_read_plain, _setter("args.dry_run", True)),
    "+help": (_read_plain, _setter("args.help", True)),
}
DIMENSIONS = ("+arg", "+pos-arg", "+flag", "+gin-arg", "+override")
#: options whose first word is a name and the rest values (generators allowed)
NAMED = ("+arg", "+exclude", "+gin-arg", "+override")


def parse(argv: list[str]) -> PrelaunchArgs:
    """The +options of argv, read with TABLE, as a checked Sweep and where to write it."""
    if argv[:1] in (["-h"], ["--help"]):
        return PrelaunchArgs(Sweep(""), help=True)
    state = _Parse(PrelaunchArgs(Sweep("")))
    i = 0
    start = 0  # where the current option's words begin
    while i < len(argv):
        token = argv[i]
        if not _is_option(token):
            raise _stray(argv, start, i)
        start = i
        option = ALIASES.get(_resolve(token), _resolve(token))
        low, high = OPTIONS.get(option) or EXACT_OPTIONS[option]
        values: list[Any] = [_value(token.split("=", 1)[1])] if "=" in token else []
        reader, handler = TABLE[option]
        i = reader(argv, i + 1, option, values)
        if len(values) < low:
            raise UsageError(f"{option} needs {'a value' if low == 1 and high == 1 else f'at least {low} value(s)'}"
                             f"; see onager help prelaunch")
        if state.link and option not in DIMENSIONS:
            raise UsageError(f"+link must be followed by the +arg or +pos-arg to link, not {option}")
        if state.new_rule and option != "+exclude":
            raise UsageError(f"+or must be followed by the +exclude that starts the next rule, not {option}")
        handler(state, option, values)
        state.previous = option
    if state.link:
        raise UsageError("+link must be followed by the +arg or +pos-arg to link")
    if state.new_rule:
        raise UsageError("+or must be followed by the +exclude that starts the next rule")
    if state.args.help:
        return state.args
    return _build(state)


def _build(state: _Parse) -> PrelaunchArgs:
    """The Sweep the options describe (+from's file first, the options over it), checked."""
    args, command, source = state.args, state.command, state.source
    if state.from_results is None and (state.top is not None or state.by is not None):
        raise UsageError(f"{'+top' if state.top is not None else '+by'} goes with +from-results JOB "
                         "(e.g. +from-results exp1 +top 25% +by -val_acc)")
    if state.from_results is not None:
        sweep = _from_results(state)
    elif source is not None:
        from onager.sweepfile import load
        sweep, settings = load(source)
        args.jobname = args.jobname if args.jobname is not None else settings.get("jobname")
        args.jobfile = args.jobfile if args.jobfile is not None else settings.get("jobfile")
        if command is not None:
            sweep.command = command
        elif not sweep.command:
            raise UsageError(f"{source} has no command: add command = \"...\" to it, or give +command CMD")
    else:
        if command is None:
            raise UsageError("prelaunch needs +command CMD (e.g. +command \"python train.py\")")
        sweep = Sweep(command)
    if state.from_results is None and not sweep.command.strip():
        raise UsageError('+command needs a non-empty command, e.g. +command "python train.py"')
    if args.jobname is None:
        raise UsageError("prelaunch needs +jobname NAME" + (f" (or jobname = \"...\" in {source})" if source else ""))
    check_jobname(args.jobname)
    for option, values, linked in state.dims:
        if option in ("+arg", "+flag") and not values[0].strip():
            raise UsageError(f"{option} needs a non-empty name such as --lr")
        if option == "+arg":
            sweep.arg(values[0], values[1:], link=linked)
        elif option == "+pos-arg":
            sweep.pos_arg(values, link=linked)
        elif option == "+gin-arg":
            sweep.gin_arg(values[0], values[1:], link=linked)
        elif option == "+override":
            sweep.override(values[0], values[1:], link=linked)
        else:
            sweep.flag(values[0])
    for rule in state.exclusions:
        sweep.exclude(rule)
    if state.repeat is not None:
        sweep.repeat(state.repeat)
    if state.gin_flag is not None:
        sweep.gin_flag = state.gin_flag
    skip = sweep.tag_skip + [name for name in state.tag_skip if name not in sweep.tag_skip]
    tag_jobname = sweep.tag_jobname and not state.no_jobname
    tag, tag_args, no_number = state.tag, state.tag_args, state.no_number
    if tag is not None or sweep.tag_name is not None:
        sweep.tag(tag if tag is not None else sweep.tag_name,  # type: ignore[arg-type]
                  tag_args if tag_args is not None else sweep.tag_args,
                  number=sweep.tag_number and not no_number)
    elif tag_args is not None or no_number:
        sweep.tag_args = tag_args
    sweep.tag_skip, sweep.tag_jobname = skip, tag_jobname
    sample, seed = state.sample, state.seed
    if state.tune:
        from onager.tune import tune_spec
        if args.append:
            raise UsageError("+tune writes a whole search: drop +append")
        args.tune = tune_spec(sweep, state.tune, sample, seed)
        sample, seed = str(sweep.sample_count), str(sweep.seed)
    if sample is not None or seed is not None:
        if sample is None and sweep.sample_count is None:
            raise UsageError("+seed needs +sample N (the seed of the random draws)")
        sweep.sample(sample if sample is not None else sweep.sample_count,
                     seed if seed is not None else sweep.seed)
    sweep.check()
    args.sweep = sweep
    return args


def _from_results(state: _Parse) -> Sweep:
    """The rows of +from-results (the best tasks of another job), checked before any read."""
    from onager.from_results import best_rows, parse_by, parse_top
    from onager.sweep import ARG, FLAG, GIN, OVERRIDE

    job = state.from_results
    assert job is not None
    if state.source is not None or state.command is not None:
        raise UsageError(f"+from-results {job} takes each task's command from {job}: "
                         f"leave out {'+from' if state.source is not None else '+command'}")
    if state.top is None or state.by is None:
        raise UsageError(f"+from-results {job} needs +top N (or N%) and +by [-]METRIC, "
                         "e.g. +top 25% +by -val_acc (highest val_acc first)")
    check_jobname(job)
    top, by = parse_top(state.top), parse_by(state.by)
    kinds = {"+arg": ARG, "+flag": FLAG, "+gin-arg": GIN, "+override": OVERRIDE}
    replaced = [(kinds[option], values[0]) for option, values, _ in state.dims if option in kinds]
    sweep = Sweep("")
    if state.gin_flag is not None:
        sweep.gin_flag = state.gin_flag
    return sweep.rows(best_rows(job, top, by, replaced, sweep, warnings=sweep.warnings))


def run(argv: list[str], out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    from onager.jobfile import iter_jobfile, jobfile_path

    args = parse(argv)
    if args.help:
        out.write(HELP)
        return 0
    jobname = args.jobname
    assert jobname is not None  # parse() refuses a missing +jobname
    for warning in args.sweep.warnings:
        err.write(f"onager: warning: {warning}\n")
    if args.dry_run:
        path = jobfile_path(jobname, args.jobfile)
        start = 1
        if args.append and os.path.exists(path):
            start = max((e.id for e in iter_jobfile(path)), default=0) + 1
        for line in args.sweep.lines(jobname, start):
            if not args.quiet:
                out.write(line.command + "\n")
        return 0
    if not args.append:
        from onager.tune import write_spec
        write_spec(jobfile_path(jobname, args.jobfile), None)  # a search the new jobfile no longer is
    written = args.sweep.write(jobname, args.jobfile, args.append, echo=None if args.quiet else out)
    path, count, new = written.path, written.count, written.added
    if args.tune is not None:
        from onager.tune import spec_path, write_spec
        write_spec(path, args.tune)  # after the jobfile: a spec never describes another jobfile
        err.write(f"Search of {args.tune['trials']} trials ({args.tune['sampler']}, "
                  f"{args.tune['direction']} {args.tune['metric']}) in {spec_path(path)}; run it with "
                  f"onager launch --backend BACKEND --jobname {jobname} --agents K\n")
    if args.append and written.existed:
        err.write(f"Prelaunched {new} more tasks for {args.jobname} ({count} in all) in {path}.\n")
    elif written.existed:
        err.write(f"Prelaunched {count} tasks for {args.jobname}; replaced the previous jobfile {path}.\n")
    else:
        err.write(f"Prelaunched {count} tasks for {args.jobname} in {path}.\n")
    return 0
