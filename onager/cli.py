"""The command line: parse, call the library, print. Nothing else lives here."""
from __future__ import annotations

import contextlib
import importlib
import os
import sys

from onager import __version__
from onager.errors import OnagerError, UsageError

TYPE_CHECKING = False
if TYPE_CHECKING:  # argparse and typing load only when a command parses its options
    import argparse
    from typing import Any

# commands implemented in their own modules: name -> module with add_parser() and run()
EXTRA_COMMANDS: dict[str, str] = {
    "results": "onager.results_cli",
    "show": "onager.provenance_cli",
    "hosts": "onager.hosts_cli",
    "clean": "onager.clean_cli",
    "report": "onager.report_cli",
}

KNOWN_COMMANDS = ("launch", "list", "cancel", "wait", "logs", "config", "results", "show", "hosts", "clean", "report")

# modules adding launch options that every backend shares (add_launch_arguments(parser));
# their LAUNCH_OPTIONS declare them for config defaults (see onager.options)
LAUNCH_OPTION_MODULES: list[str] = ["onager.provenance", "onager.recovery", "onager.tune"]

LAUNCH_EXAMPLES = """examples:
  onager launch --backend local --jobname exp1 --max-tasks 4
  onager launch --jobname exp1 --tasklist failed      (a rerun: same backend and options)
  onager launch --backend slurm --jobname exp1 --cpus 2 --mem 5 --duration 00:30:00 -max 5
  onager launch --backend slurm --jobname exp1 --tasklist 1-3:1,5,8-9 --dry-run
  onager launch --backend slurm --jobname exp1 -- --exclusive      (after --: passed to sbatch)
"""


def _parser_class() -> type[argparse.ArgumentParser]:
    """argparse that raises UsageError (one line, exit 2) instead of printing usage; made on
    first use, so that `onager --help`, `--version` and `prelaunch` never import argparse."""
    import argparse

    class _Parser(argparse.ArgumentParser):
        def error(self, message: str) -> None:  # type: ignore[override]
            raise UsageError(f"{self.prog}: {message} (see {self.prog} --help)")

    return _Parser


def _shared_launch_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--backend", default=None, help="local, slurm, gridengine or ssh (config: project backend)")
    from onager.cli_habits import add_job_argument
    add_job_argument(p, help="the job name given to prelaunch (or --jobname NAME)")
    p.add_argument("--command", default=None, help="launch this single command instead of a jobfile")
    p.add_argument("--jobfile", default=None, help="jobfile to read (default .onager/scripts/{jobname}/jobs.json)")
    p.add_argument("--tasklist", "-t", default=None,
                   help="tasks to launch: ids like 1-3,5,8-20:2, or statuses: 'failed', 'unfinished', "
                        "'timeout,oom', ... (rerun as they last ran; without --backend, with the last launch's "
                        "backend and options)")
    p.add_argument("--from-jobfile", action="store_true",
                   help="with --tasklist failed etc.: take the commands from today's jobfile, not from the "
                        "launches the tasks last ran in")
    p.add_argument("--venv", default=None, help="virtualenv to activate before each task")
    p.add_argument("--workdir", default=None, help="directory the tasks run in (default: the current one)")
    p.add_argument("-d", "--dry-run", action="store_true", help="print what would be submitted; write nothing")
    p.add_argument("-q", "--quiet", action="store_true", help="print less")
    from onager.backends.base import add_options
    from onager.options import SHARED
    add_options(p, SHARED)  # typed: --cpus, --mem, --duration, --max-tasks, ...


GENERIC = {"backend", "jobname", "command", "jobfile", "tasklist", "venv", "workdir", "dry_run", "from_jobfile",
           "quiet", "subcommand", "extra", "func", "job", "job_required"}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The whole parser, or (`only`) just what one command needs: `list` then imports no
    backend or feature module, which keeps it quick on big launches."""
    import argparse

    def want(name: str) -> bool:
        return only is None or name == only or (only == "config" and name == "launch")

    _Parser = _parser_class()
    parser = _Parser(prog="onager", description="Launch hyper-parameter sweeps locally, over SSH, "
                     "or on Slurm and Grid Engine, with nothing but plain files.",
                     formatter_class=argparse.RawDescriptionHelpFormatter,
                     epilog="run 'onager help CMD' or 'onager CMD --help' for one command")
    parser.add_argument("--version", action="version", version=f"onager {__version__}")
    sub = parser.add_subparsers(dest="subcommand", metavar="COMMAND", parser_class=_Parser)

    sub.add_parser("prelaunch", help="expand +arg/+pos-arg/+flag combinations into a jobfile", add_help=False)

    if want("launch"):
        _launch_parser(sub)

    if want("list"):
        p = sub.add_parser("list", help="one row per task: status, exit code, elapsed, tag, command",
                           epilog="examples:\n  onager list\n  onager list --jobname exp1 --status failed\n"
                                  "  onager list --summary\n  onager list --jobid 13438569 --tasklist 1-3 --hide "
                                  "command",
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        from onager.cli_habits import add_job_argument
        add_job_argument(p, required=False, option=False, help="only this job (or --jobname NAME)")
        p.add_argument("--jobname", "-n", default=None, help="only this job")
        p.add_argument("--jobid", "-j", default=None, help="only this scheduler job id (or launch id)")
        p.add_argument("--launch", default=None, help="only this launch of the job (default: all launches)")
        p.add_argument("--latest", action="store_true", help="only the latest launch of each job")
        p.add_argument("--tasklist", "-t", default=None, help="only these task ids")
        p.add_argument("--status", default=None, help="only these statuses, e.g. failed,cancelled")
        p.add_argument("--hide", nargs="+", default=None, metavar="COL", help="hide these columns")
        p.add_argument("--show", nargs="+", default=None, metavar="COL",
                       help="add optional columns: commit (the git commit each launch ran)")
        p.add_argument("--summary", action="store_true", help="one row per launch with counts per status")
        p.add_argument("--all-attempts", action="store_true",
                       help="one row per attempt of each task (retries, requeues), not just the latest")
        fmt = p.add_mutually_exclusive_group()
        fmt.add_argument("--json", action="store_true", help="print JSON")
        fmt.add_argument("--csv", action="store_true", help="print CSV")
        p.add_argument("--watch", "-w", action="store_true",
                       help="redraw counts, running tasks and latest failures until every task has ended")
        p.add_argument("--interval", type=float, default=None, help="seconds between --watch redraws (default 2)")

    if want("cancel"):
        p = sub.add_parser("cancel", help="cancel tasks of a launch through its backend",
                           epilog="examples:\n  onager cancel --jobname exp1\n  onager cancel --jobname exp1 "
                                  "--tasklist 3-5\n"
                                  "  onager cancel --backend slurm --jobid 13438569 --tasklist 1-3:1,5,8-9",
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        from onager.cli_habits import add_job_argument
        add_job_argument(p, required=False, option=False, help="the job (or --jobname NAME)")
        p.add_argument("--jobname", "-n", default=None, help="cancel the latest launch of this job")
        p.add_argument("--jobid", "-j", default=None, help="scheduler job id (or launch id)")
        p.add_argument("--launch", default=None, help="a launch id of the job (default: the latest)")
        p.add_argument("--backend", default=None, help="backend of a job id that is not in the index")
        p.add_argument("--tasklist", "-t", default=None, help="only these task ids")
        p.add_argument("-d", "--dry-run", action="store_true", help="print the commands; cancel nothing")
        p.add_argument("-q", "--quiet", action="store_true", help="print nothing")

    if want("wait"):
        p = sub.add_parser("wait", help="block until a launch has finished; exit 0 only if every task succeeded",
                           epilog="examples:\n  onager wait --jobname exp1\n  onager wait --jobname exp1 "
                                  "--timeout 3600",
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        from onager.cli_habits import add_job_argument
        add_job_argument(p, required=False, option=False, help="the job (or --jobname NAME)")
        p.add_argument("--jobname", "-n", default=None, help="the job (default: every job's latest launch)")
        p.add_argument("--launch", default=None, help="a launch id of the job (default: the latest)")
        p.add_argument("--interval", type=float, default=2.0, help="seconds between checks")
        p.add_argument("--timeout", type=float, default=None, help="give up after this many seconds (exit 124)")
        p.add_argument("-q", "--quiet", action="store_true", help="no progress line")

    if want("logs"):
        p = sub.add_parser("logs", help="print a task's output",
                           epilog="examples:\n  onager logs exp1 5\n  onager logs exp1 5 --err\n  onager logs "
                                  "exp1 5 --follow",
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        from onager.cli_habits import add_job_argument
        add_job_argument(p)
        p.add_argument("task", type=int)
        p.add_argument("--launch", default=None, help="a launch id (default: the latest that ran the task)")
        p.add_argument("--err", action="store_true", help="stderr instead of stdout")
        p.add_argument("--follow", "-f", action="store_true", help="keep printing as the task writes")

    if want("config"):
        p = sub.add_parser("config", help="read or write headers, footers and launch defaults",
                           epilog="examples:\n  onager config --write slurm header \"module load cuda\"\n"
                                  "  onager config --write slurm partition gpu --write slurm mem 8G\n"
                                  "  onager config --global --write gridengine pe smp\n  onager config --read",
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        scope = p.add_mutually_exclusive_group()
        scope.add_argument("--global", dest="global_", action="store_true", help="use ~/.onagerconfig only")
        scope.add_argument("--local", action="store_true", help="use .onager/config only (default for --write)")
        p.add_argument("--read", action="store_true", help="print the settings")
        p.add_argument("--write", nargs=3, action="append", metavar=("BACKEND", "KEY", "VALUE"),
                       help="set KEY of BACKEND (local, slurm, gridengine, ssh, project); empty VALUE removes it")

    if want("help"):
        p = sub.add_parser("help", help="show help for a command")
        p.add_argument("topic", nargs="?", default=None)

    for name, module in EXTRA_COMMANDS.items():
        if not want(name):
            continue
        try:
            importlib.import_module(module).add_parser(sub)
        except ImportError:
            continue
    return parser


def _launch_parser(sub) -> None:
    import argparse

    from onager.backends import available
    from onager.backends.base import add_options

    p = sub.add_parser("launch", help="submit a job's tasks as one array job", epilog=LAUNCH_EXAMPLES,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    _shared_launch_options(p)
    from onager.options import new_options
    seen: dict[str, Any] = {}
    for cls in available().values():
        group = p.add_argument_group(f"{cls.name} backend")
        try:
            if getattr(cls, "OPTIONS", None):
                add_options(group, new_options(cls, seen))  # typed; a reused one (a wrapper's) once
            else:
                cls.add_arguments(group)
        except argparse.ArgumentError as exc:  # a plugin reusing another backend's option name
            raise UsageError(f"backend {cls.name!r} declares an option another backend has ({exc}); "
                             "rename it in that backend's package") from exc
    for module in LAUNCH_OPTION_MODULES:
        try:
            importlib.import_module(module).add_launch_arguments(p)
        except ImportError:
            continue


# ------------------------------------------------------------------- commands
def cmd_launch(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from onager import launch as launchmod
    from onager.options import resolve

    given = {k: v for k, v in vars(args).items() if k not in GENERIC}
    if given.get("join"):  # local workers for a --workers launch, not a new launch
        from onager.packing import cmd_join
        return cmd_join(args, given)
    venv, workdir, extra = args.venv, args.workdir, args.extra
    # a rerun by status without --backend: the last launch's backend and options, under those given now
    reused = None if args.backend else launchmod.reuse_last_launch(args.jobname, args.tasklist, given, venv,
                                                                    workdir, extra)
    if reused is not None:
        given, venv, workdir, extra = reused.given, reused.venv, reused.workdir, reused.extra
    resolved = resolve(reused.backend if reused else args.backend, given, venv=venv, extra=extra)
    backend = resolved.backend
    try:
        backend_obj, info = launchmod.prepare(args.jobname, backend, resolved.options, args.tasklist, args.jobfile,
                                              args.command, dry_run=args.dry_run, workdir=workdir,
                                              venv=resolved.venv, argv=["onager"] + sys.argv[1:],
                                              from_jobfile=args.from_jobfile)
    except UsageError as exc:  # name the config setting a bad default came from
        raise resolved.explain(exc) from exc
    try:
        commands = backend_obj.submit_commands(info)
    except BaseException:
        if not args.dry_run:
            launchmod.discard(info)
        raise
    source = launchmod.tasks_source(args.tasklist, args.from_jobfile, args.command)
    if reused is not None and not args.quiet:
        print(f"onager: rerun on {backend} with the options of {reused.source}"
              + (f": {reused.shown}" if reused.shown else ""), file=sys.stderr)
    if args.dry_run:
        import shlex
        for command in commands:
            print(shlex.join(command) if not command[0].startswith("#") else " ".join(command))
        print(f"dry run: {_tasks(info.count)} ({info.tasklist}) of job {args.jobname}"
              f"{'; ' + source if source else ''}; nothing written", file=sys.stderr)
        return 0
    try:
        record = launchmod.submit(backend_obj, info)
    except KeyboardInterrupt:
        # the pool's own account of what it killed (checked), else no claim beyond the stop
        done = getattr(backend_obj, "interrupted", None) or f"{args.jobname}/{info.launch_id} stopped"
        with contextlib.suppress(OSError):  # the terminal may be gone (SIGHUP)
            print(f"\nonager: interrupted: {done}; resume with: "
                  f"{rerun_hint(args.jobname, 'unfinished')}", file=sys.stderr)
        return 130
    if not args.quiet:
        import shlex
        if not backend_obj.runs_in_foreground:
            for command in commands:
                print(shlex.join(command))
        ids = f" as {', '.join(record.job_ids)}" if record.job_ids else ""
        print(f"launched {args.jobname}/{record.launch_id}: {_tasks(record.count)}{ids} "
              f"(logs in {os.path.relpath(info.launch_dir)}/logs){'; ' + source if source else ''}", file=sys.stderr)
    failed = getattr(backend_obj, "failed", 0)
    if failed:
        pool = getattr(backend_obj, "summary", None)
        from onager.messages import failed_ids_text
        shown = failed_ids_text(pool.failures if pool else [])  # sorted, condensed: 3-5,9 (exit 1)
        print(f"onager: {failed} of {record.count} tasks failed: {shown}; rerun them with: "
              f"{rerun_hint(args.jobname, 'failed')}", file=sys.stderr)
    end_error = getattr(backend_obj, "end_error", None)
    if end_error is not None:
        raise end_error  # after the summary above, which a full disk must not swallow
    return 1 if failed else 0


def rerun_hint(jobname: str, which: str) -> str:
    """The command that reruns a job's failed (or unfinished) tasks as they ran, on the same
    backend with the same options: it needs nothing else (launch.reuse_last_launch)."""
    import shlex
    return f"onager launch --jobname {shlex.quote(jobname)} --tasklist {which}"


def _tasks(count: int) -> str:
    return f"{count} task" + ("" if count == 1 else "s")


def cmd_list(args: argparse.Namespace) -> int:
    from onager import listing
    if args.watch or args.interval is not None:
        from onager.watch import run_watch
        return run_watch(args)
    return listing.run_list(args)


def cmd_cancel(args: argparse.Namespace) -> int:
    from onager import listing
    return listing.run_cancel(args)


def cmd_wait(args: argparse.Namespace) -> int:
    from onager import listing
    return listing.run_wait(args)


def cmd_logs(args: argparse.Namespace) -> int:
    from onager import listing
    return listing.run_logs(args)


def cmd_config(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from onager import config as configmod
    which = "global" if args.global_ else ("local" if args.local else None)
    if args.write:
        from onager.options import check_config_items, config_keys
        check_config_items(args.write)  # section, key and value type, before anything is written
        path = configmod.write(args.write, use_global=args.global_, allowed_keys=config_keys())
        print(f"wrote {len(args.write)} setting(s) to {path}", file=sys.stderr)
        if not args.read:
            return 0
    from tabulate import tabulate
    rows = configmod.read_all(which=which)
    if not rows:
        print("no settings (write one with: onager config --write slurm header \"module load cuda\")", file=sys.stderr)
        return 0
    print(tabulate([(s, k, v, f) for f, s, k, v in rows], headers=["section", "key", "value", "file"]))
    return 0


class _NamedOutput:
    """sys.stdout whose write errors name it: a full disk under `onager list > out.txt`
    becomes one line naming standard output rather than a nameless OSError."""

    def __init__(self, stream: Any, name: str = "<standard output>"):
        self._stream, self._name = stream, name

    def _tag(self, exc: OSError) -> OSError:
        if exc.filename is None:
            exc.filename = self._name
        return exc

    def write(self, data: Any) -> Any:
        try:
            return self._stream.write(data)
        except BrokenPipeError:
            raise
        except OSError as exc:
            raise self._tag(exc) from exc

    def flush(self) -> None:
        try:
            self._stream.flush()
        except BrokenPipeError:
            raise
        except OSError as exc:
            raise self._tag(exc) from exc

    @property
    def buffer(self) -> _NamedOutput:
        return _NamedOutput(self._stream.buffer, self._name)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def _silence_stdout(original: Any) -> None:
    """After stdout failed, point it at /dev/null so the flush at exit cannot fail again."""
    if original is sys.__stdout__ and original is not None:
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, original.fileno())
            os.close(devnull)
        except (OSError, ValueError, AttributeError):
            pass


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    original = sys.stdout
    sys.stdout = _NamedOutput(original)  # type: ignore[assignment]
    try:
        code = _main(argv)
        sys.stdout.flush()
        return code
    except UsageError as exc:
        print(f"onager: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except OnagerError as exc:
        print(f"onager: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("onager: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        with contextlib.suppress(OSError):
            original = open(os.devnull, "w")  # noqa: SIM115  # becomes sys.stdout until exit
        return 0
    except OSError as exc:
        from onager.fsutil import os_error_message
        if exc.filename == "<standard output>":
            _silence_stdout(original)
        print(f"onager: error: {os_error_message(exc)}", file=sys.stderr)
        return 1
    finally:
        sys.stdout = original


def _main(argv: list[str]) -> int:
    for position, word in enumerate(argv, 1):  # bytes that are not UTF-8: one line, not a traceback
        if not word.isascii():
            from onager.sweep import check_text
            check_text(word, f"argument {position}")
    if argv and argv[0] == "prelaunch" or argv[:2] == ["help", "prelaunch"]:
        from onager.prelaunch_help import HELP, only_help
        if argv[0] == "help" or only_help(argv[1:]):  # the text alone: no sweep code to load
            sys.stdout.write(HELP)
            return 0
        from onager import prelaunch
        return prelaunch.run(argv[1:], sys.stdout, sys.stderr)  # as they are now, not at import
    if argv and argv[0] == "help":
        topic = argv[1] if len(argv) > 1 else None
        if topic is None:
            _print_top_help()  # the same as onager --help
            return 0
        return _main([topic, "--help"])
    if not argv or argv[0] in ("-h", "--help"):
        _print_top_help()
        return 0 if argv else 2
    if argv[0] == "--version":
        print(f"onager {__version__}")
        return 0
    extra: list[str] = []
    if argv[0] == "launch" and "--" in argv:
        cut = argv.index("--")
        argv, extra = argv[:cut], argv[cut + 1:]
    parser = build_parser(only=argv[0] if argv[0] in KNOWN_COMMANDS else None)
    from onager.cli_habits import check_options, merge_job
    check_options(parser, argv)  # "did you mean", before argparse misses a required option
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        sub = parser._subparsers._group_actions[0].choices.get(args.subcommand) if args.subcommand else None  # type: ignore[union-attr]
        (sub or parser).error(f"unrecognized arguments: {' '.join(unknown)}"
                              + (" (options for the scheduler go after --)" if args.subcommand == "launch" else ""))
    args.extra = extra
    if getattr(args, "join", None) and args.job is None and args.jobname is None:
        args.jobname = args.join  # `launch --join JOB` names the job (onager.packing)
    merge_job(args)
    name = args.subcommand
    if name in ("list", "results", "show"):
        # short-lived readers that build many small objects: the cycle collector only slows
        # them down (about a third of `list` on a 100k-task launch); `launch` keeps it
        import gc
        gc.disable()
    if name == "launch":
        return cmd_launch(args, parser)
    if name == "config":
        return cmd_config(args, parser)
    if name in EXTRA_COMMANDS:
        return importlib.import_module(EXTRA_COMMANDS[name]).run(args)
    return {"list": cmd_list, "cancel": cmd_cancel, "wait": cmd_wait, "logs": cmd_logs}[name](args)


TOP_HELP = f"""usage: onager COMMAND [options]     (onager {__version__})

Launch hyper-parameter sweeps locally, over SSH, or on Slurm and Grid Engine,
with nothing but plain files.

commands:
  prelaunch   expand +arg/+pos-arg/+flag combinations into a jobfile
  launch      submit a job's tasks (--backend local|slurm|gridengine|ssh)
  list        one row per task: status, exit code, elapsed, tag, command
  wait        block until a launch has finished
  logs        print a task's output
  cancel      cancel tasks of a launch
  config      read or write headers, footers and launch defaults
  results     a table of metrics per task, sorted or grouped
  show        what a launch ran and from where
  hosts       CPUs, memory, load and GPUs of the ssh hosts
  clean       remove what interrupted launches of a job left behind
  report      one self-contained HTML page about a job: counts, tasks, plots
  help        help for a command

example:
  onager prelaunch +jobname exp1 +command "python train.py" +arg --lr 0.1 0.01 +tag
  onager launch --backend local --jobname exp1
  onager list exp1

run 'onager help CMD' or 'onager CMD --help' for one command.
"""


def _print_top_help() -> None:
    sys.stdout.write(TOP_HELP)


if __name__ == "__main__":
    raise SystemExit(main())
