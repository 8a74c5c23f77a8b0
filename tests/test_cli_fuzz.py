"""Issue 12 item 8: random command lines, mutations of valid ones for every subcommand.

Each runs in this process through `onager.cli.main` in a scratch project with one finished
local launch. Never a traceback, exit codes 0/1/2 only (and wait's documented 124), and a
command that exits 2 changed nothing on disk. Schedulers and ssh are fakes that refuse, so
nothing leaves this machine; local launches run (a task is `true`/`echo`).
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import os
import random
import shutil
import signal
import stat
import time
import traceback
from collections import Counter

import pytest

from onager import cli

CASES = 2000
SEED = 20261130
CASE_SECONDS = 20

# valid command lines: every subcommand, most options; local launches are the only ones that run
SEEDS: list[list[str]] = [
    ["prelaunch", "+jobname", "n", "+command", "echo hi", "+arg", "--lr", "0.1", "0.01", "+tag", "+q"],
    ["prelaunch", "+jobname", "n", "+command", "echo", "+pos-arg", "a", "b", "+flag", "--v", "+tag", "--run"],
    ["prelaunch", "+jobname", "j", "+command", "echo", "+arg", "--x", "1", "2", "+link", "+arg", "--y", "3", "4",
     "+append", "+q"],
    ["prelaunch", "+jobname", "m", "+command", "echo", "+arg", "--lr", "+loguniform", "1e-5", "1", "+sample", "3",
     "+seed", "1", "+dry-run"],
    ["prelaunch", "+jobname", "r", "+command", "echo", "+arg", "--s", "+range", "0", "3", "+arg", "--t",
     "+linspace", "0", "1", "3", "+tag-args", "--s", "+no-tag-number", "+jobfile", "jobs/r.json"],
    ["prelaunch", "+help"],
    ["launch", "--backend", "local", "--jobname", "j", "--dry-run"],
    ["launch", "--backend", "local", "--jobname", "j", "--tasklist", "1", "--max-tasks", "2", "-q"],
    ["launch", "--backend", "local", "--jobname", "j", "--tasklist", "failed", "-q"],
    ["launch", "--backend", "local", "--command", "true", "--jobname", "c", "-q"],
    ["launch", "--backend", "slurm", "--jobname", "j", "--cpus", "2", "--mem", "4G", "--duration", "1:00:00",
     "--partition", "gpu", "--dry-run", "--", "--exclusive"],
    ["launch", "--backend", "gridengine", "--jobname", "j", "--tasklist", "1-2", "--pe", "smp", "--cpus", "2",
     "--dry-run"],
    ["launch", "--backend", "ssh", "--jobname", "j", "--hosts", "localhost", "--dry-run"],
    ["list"],
    ["list", "--jobname", "j", "--status", "done,failed", "--hide", "command", "--json"],
    ["list", "--summary", "--csv", "--latest", "--tasklist", "1-3"],
    ["list", "--jobid", "1", "--show", "commit", "--launch", "1"],
    ["cancel", "--jobname", "j", "--tasklist", "1", "--dry-run"],
    ["cancel", "--jobid", "123", "--backend", "slurm", "--dry-run"],
    ["wait", "--jobname", "j", "--timeout", "1", "--interval", "0.05", "-q"],
    ["logs", "j", "1"],
    ["logs", "j", "2", "--err", "--launch", "1"],
    ["config", "--read"],
    ["config", "--write", "local", "max-tasks", "2", "--write", "slurm", "header", "module load x"],
    ["config", "--global", "--write", "project", "backend", "local"],
    ["results", "j", "--metric", "acc=acc (\\S+)", "--sort", "-acc", "--top", "2", "--json"],
    ["results", "j", "--status", "done", "--group-by", "x", "--csv"],
    ["show", "j", "--task", "1", "--json"],
    ["show", "j/1"],
    ["hosts", "--hosts", "localhost", "--json"],
    ["launch", "--backend", "slurm", "--jobname", "j", "--tasks-per-node", "2", "--cpus-per-task", "2",
     "--mem-per-task", "1G", "--debug", "--dry-run"],
    ["launch", "--backend", "gridengine", "--jobname", "j", "--test", "--mem", "2", "--dry-run"],
    ["clean", "j", "--dry-run"], ["clean", "j"],
    ["help"], ["help", "launch"], ["help", "prelaunch"], ["--version"], ["list", "--help"],
]

OPTIONS = sorted({t for s in SEEDS for t in s if t.startswith(("-", "+"))} | {
    "--venv", "--workdir", "--jobfile", "--gpus", "--tasks-per-node", "--max-tasks-per-node", "--account",
    "--qos", "--constraint", "--dependency", "--retries", "--remote-dir", "--mem-resource", "--queue",
    "--require-clean", "--no-require-clean", "--gpus-per-task", "--follow", "--local", "--metric-err",
    "+from", "+a", "+f", "+t", "-n", "-j", "-t", "-d", "-h", "--help"})
# values that often break parsers
VALUES = ["", " ", "-", "--", "0", "-1", "1", "3", "2-1", "1-3:1,5", "99999999999999999999", "1e5", "nan", "inf",
          "abc", "x" * 300, "a b", "'", '"', "\\", "$(true)", "`true`", ";", "|", "&", ">", "*", "?", "~", "..",
          "/", "./", "j", "k", "n", "j/1", "j/2", "failed", "unfinished", "done", "local", "slurm", "gridengine",
          "ssh", "project", "header", "footer", "4X", "0G", "-5", "xyz", "1:2:3:4", "0,1", "+x", "++y", "%s",
          "{jobname}", "λ", "\u00b2", "\u0663", "\u200b", "=", "a=b", "acc=(", "acc=(\\d", "-acc",
          # control characters (a shell line break must stay inside its value) and bytes that are not
          # UTF-8, as Python hands them over from argv (surrogate escapes)
          "a\n", "x\ny", "\r\n", "\t", "a\n touch pwned", "\x1b[2J", "\udcff", "ok\udcfe"]
# Left out: NUL (no real argv can hold it), and --detach and --snapshot, which start background
# processes or copy the tree (slow, not a parser matter).


def _mutate(rng: random.Random, argv: list[str]) -> list[str]:
    argv = list(argv)
    for _ in range(rng.choice((1, 1, 2, 3))):
        kind = rng.randrange(7)
        where = rng.randrange(len(argv) + 1)
        if kind == 0 and len(argv) > 1:
            del argv[rng.randrange(1, len(argv))]
        elif kind == 1 and argv:
            i = rng.randrange(len(argv))
            argv.insert(i, argv[i])
        elif kind == 2 and len(argv) > 2:
            i = rng.randrange(1, len(argv) - 1)
            argv[i], argv[i + 1] = argv[i + 1], argv[i]
        elif kind == 3:
            argv.insert(max(1, where), rng.choice(OPTIONS))
        elif kind == 4:
            argv.insert(max(1, where), rng.choice(VALUES))
        elif kind == 5 and len(argv) > 1:
            argv[rng.randrange(1, len(argv))] = rng.choice(VALUES + OPTIONS)
        elif kind == 6 and len(argv) > 1:
            i = rng.randrange(1, len(argv))
            argv[i] = argv[i][: rng.randrange(len(argv[i]) + 1)]
    return argv


def command_lines(count: int = CASES, seed: int = SEED) -> list[tuple[list[str], str | None]]:
    """(argv, name of the damage done to the project first, or None)."""
    rng = random.Random(seed)
    lines: list[tuple[list[str], str | None]] = [(list(s), None) for s in SEEDS]  # the valid ones first
    damages = sorted(DAMAGES)
    while len(lines) < count:
        argv = rng.choice(SEEDS)
        damage = rng.choice(damages) if rng.random() < 0.2 else None
        lines.append((list(argv) if damage and rng.random() < 0.5 else _mutate(rng, argv), damage))
    return lines


def tree_hash(root: str, empty_launch_dirs: bool = True) -> str:
    """Names, kinds, modes and contents of everything under root (without empty
    `.onager/launches/*` directories when `empty_launch_dirs` is False)."""
    digest = hashlib.sha256()
    launches = os.path.join(root, ".onager", "launches")
    for directory, dirs, files in os.walk(root):
        dirs.sort()
        for name in sorted(dirs) + sorted(files):
            path = os.path.join(directory, name)
            if not empty_launch_dirs and directory in (launches, os.path.dirname(launches)) \
                    and os.path.isdir(path) and not os.path.islink(path) and _empty_tree(path):
                continue
            st = os.lstat(path)
            digest.update(f"{os.path.relpath(path, root)}\0{stat.S_IFMT(st.st_mode)}\0{stat.S_IMODE(st.st_mode)}\0"
                          .encode("utf-8", "surrogateescape"))
            if stat.S_ISREG(st.st_mode):
                with open(path, "rb") as handle:
                    digest.update(hashlib.sha256(handle.read()).digest())
            elif stat.S_ISLNK(st.st_mode):
                digest.update(os.readlink(path).encode("utf-8", "surrogateescape"))
    return digest.hexdigest()


def _empty_tree(path: str) -> bool:
    return all(not files for _, _, files in os.walk(path))


class _Timeout(BaseException):
    pass


def _alarm(signum, frame):  # type: ignore[no-untyped-def]
    raise _Timeout()


def run_in_process(argv: list[str]) -> tuple[int | None, str, str, str | None]:
    """(exit code, stdout, stderr, escaped exception text or None)."""
    out, err = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", errors="replace"), io.StringIO()
    escaped = None
    code: int | None = None
    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, CASE_SECONDS)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = cli.main(list(argv))
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
            except _Timeout:
                escaped = f"no answer within {CASE_SECONDS} s"
            except BaseException:  # noqa: B902 - anything else escaping main is the bug we look for
                escaped = traceback.format_exc()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    out.flush()
    return code, out.buffer.getvalue().decode("utf-8", "replace"), err.getvalue(), escaped


def _append(path: str, data: bytes) -> None:
    with open(path, "ab") as handle:
        handle.write(data)


def _cut(path: str) -> None:
    with open(path, "rb") as handle:
        data = handle.read()
    with open(path, "wb") as handle:
        handle.write(data[: len(data) * 2 // 3])


def _touch(path: str) -> None:
    open(path, "w").close()


# hand damage (issue 12 item 7) that some command lines meet: the same commands must still
# answer in one line with 0, 1 or 2
DAMAGES = {
    "index line not UTF-8": lambda: _append(".onager/index.jsonl", b'{"jobname": "\xff"}\n'),
    "index line truncated": lambda: _append(".onager/index.jsonl", b'{"jobname": "j", "launch_id": "7", "back'),
    "index line of wrong types": lambda: _append(".onager/index.jsonl", b'{"jobname": 1, "launch_id": 2, '
                                                 b'"backend": "local", "launch_dir": 3, "tasklist": "1", '
                                                 b'"count": 1, "created": 0}\n'),
    "tasks.jsonl truncated": lambda: _cut(".onager/launches/j/1/tasks.jsonl"),
    "jobs.json garbage": lambda: _append(".onager/scripts/j/jobs.json", bytes(range(256))),
    "jobs.json nested too deep": lambda: _append(".onager/scripts/k/jobs.json", b"[" * 100_000),
    "state name made by hand": lambda: _touch(".onager/launches/j/1/state/9.end@5@\u00b2@1"),
}


FAKE = "#!/bin/sh\necho \"fuzz: no $(basename \"$0\") on this test machine\" >&2\nexit 1\n"
FAKES = ["sbatch", "squeue", "scancel", "sacct", "scontrol", "sinfo", "qsub", "qstat", "qdel", "qacct", "qconf",
         "qhost", "ssh", "scp", "rsync"]


@pytest.fixture
def scratch(tmp_path, monkeypatch):
    """A project with two prelaunched jobs, one launched and finished, and refusing fake schedulers."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in FAKES:
        (bin_dir / name).write_text(FAKE)
        (bin_dir / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    # `pip freeze` costs each launch about a second; an empty freeze keeps this test on the command line
    from onager import provenance

    class NoFreeze(provenance.Freeze):
        def __init__(self, commands=None, timeout=None):  # type: ignore[no-untyped-def]
            super().__init__([["true"]], timeout)
    monkeypatch.setattr(provenance, "Freeze", NoFreeze)
    template, work = tmp_path / "template", tmp_path / "work"
    template.mkdir()
    monkeypatch.setenv("ONAGER_GLOBAL_CONFIG", str(template / "global.onagerconfig"))
    monkeypatch.chdir(template)
    for argv in (["prelaunch", "+jobname", "j", "+command", "echo acc", "+arg", "--x", "1", "2", "3", "+tag", "+q"],
                 ["prelaunch", "+jobname", "k", "+command", "true", "+pos-arg", "a", "+q"],
                 ["launch", "--backend", "local", "--jobname", "j", "-q"]):
        code, _, err, escaped = run_in_process(argv)
        assert code == 0 and escaped is None, err + (escaped or "")
    monkeypatch.setenv("ONAGER_GLOBAL_CONFIG", str(work / "global.onagerconfig"))
    shutil.copytree(template, work, symlinks=True)
    monkeypatch.chdir(work)
    return str(template), str(work)


def test_cli_fuzz(scratch, capsys):
    template, work = scratch
    clean = tree_hash(work)
    problems: list[str] = []
    codes: Counter = Counter()
    commands: Counter = Counter()
    restored = 0
    lines = command_lines()
    slowest: list[tuple[float, list[str]]] = []
    damaged: Counter = Counter()
    for argv, damage in lines:
        before = clean
        if damage is not None:
            DAMAGES[damage]()
            damaged[damage] += 1
            before = tree_hash(work)
        started = time.monotonic()
        code, _, err, escaped = run_in_process(argv)
        slowest = sorted(slowest + [(time.monotonic() - started, argv)], key=lambda t: -t[0])[:5]
        name = argv[0] if argv else "(none)"
        commands[name] += 1
        codes[code] += 1
        if escaped is not None:
            problems.append(f"{argv!r} ({damage or 'intact project'}): exception escaped main:\n{escaped}")
        elif "Traceback" in err:
            problems.append(f"{argv!r} ({damage or 'intact project'}): traceback on stderr:\n{err}")
        elif code not in (0, 1, 2) and not (name == "wait" and code == 124):
            problems.append(f"{argv!r} ({damage or 'intact project'}): exit code {code}: {err.strip()}")
        os.chdir(work)  # a command may not move us, but a restore below replaces the directory
        if os.path.lexists(os.path.join(work, "pwned")):  # a value ran as shell code
            problems.append(f"{argv!r}: a value ran as shell code (pwned was created)")
        after = tree_hash(work)
        if code == 2 and after != before:
            problems.append(f"{argv!r}: exit 2 but the project changed: {err.strip()}")
        if after != clean or damage is not None:
            shutil.rmtree(work)
            shutil.copytree(template, work, symlinks=True)
            os.chdir(work)
            restored += 1
        if len(problems) >= 30:
            break
    with capsys.disabled():
        print(f"\ncli fuzz: {sum(commands.values())} command lines (seed {SEED}); by command: "
              f"{dict(sorted(commands.items()))}; by exit code: {dict(sorted(codes.items(), key=str))}; "
              f"on a damaged project: {sum(damaged.values())} ({dict(sorted(damaged.items()))}); "
              f"project restored {restored} times; slowest: "
              + "; ".join(f"{t:.1f} s {' '.join(a)[:80]!r}" for t, a in slowest))
    assert len(lines) >= 2000
    assert set(commands) >= {"prelaunch", "launch", "list", "cancel", "wait", "logs", "config", "results",
                             "show", "hosts", "help"}
    assert not problems, "\n\n".join(problems[:30])
