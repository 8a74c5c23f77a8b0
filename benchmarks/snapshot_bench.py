"""How long `--snapshot` and the provenance record take for a repository of N small files.

Creates a temporary git repository (2,000 files of 1-4 KB in 40 directories by default,
a few of them edited after the commit), then times, each several times:
  - git metadata alone (commit, branch, remotes, status, diff),
  - the snapshot (listing tracked files + copying them into a launch directory),
  - the snapshot outside git (directory walk with a .gitignore),
  - the whole provenance hook (prepare_launch with --snapshot, pip freeze included),
and an end-to-end `onager launch --snapshot` of one task on the local backend.

    python benchmarks/snapshot_bench.py [--files 2000] [--repeat 5]
"""
from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from onager import provenance  # noqa: E402


def git(repo: str, *args: str) -> None:
    subprocess.run(["git", "-c", "user.name=Bench", "-c", "user.email=bench@example.com",
                    "-c", "init.defaultBranch=main", *args], cwd=repo, check=True, capture_output=True)


def make_repo(path: str, files: int) -> int:
    rng = random.Random(0)
    total = 0
    for i in range(files):
        directory = os.path.join(path, f"pkg{i % 40:02d}")
        os.makedirs(directory, exist_ok=True)
        data = (f"# file {i}\n" + "x = 1\n" * rng.randint(150, 650)).encode()
        total += len(data)
        with open(os.path.join(directory, f"mod{i:05d}.py"), "wb") as handle:
            handle.write(data)
    with open(os.path.join(path, ".gitignore"), "w") as handle:
        handle.write("*.log\n")
    git(path, "init", "-q")
    git(path, "add", ".")
    git(path, "commit", "-q", "-m", "bench")
    for i in range(0, files, max(1, files // 10)):  # ten dirty files, like a tree being worked on
        with open(os.path.join(path, f"pkg{i % 40:02d}", f"mod{i:05d}.py"), "a") as handle:
            handle.write("y = 2\n")
    return total


def timed(repeat: int, fn) -> list:
    out = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def show(label: str, seconds: list) -> None:
    print(f"{label:<44} median {statistics.median(seconds) * 1000:8.1f} ms   "
          f"min {min(seconds) * 1000:8.1f} ms   max {max(seconds) * 1000:8.1f} ms")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    if shutil.which("git") is None:
        print("git is not installed: nothing to measure", file=sys.stderr)
        return 1
    tmp = tempfile.mkdtemp(prefix="onager-snapshot-bench-")
    try:
        repo = os.path.join(tmp, "repo")
        os.mkdir(repo)
        size = make_repo(repo, args.files)
        print(f"repository: {args.files} files, {size / 1024 ** 2:.1f} MB, 10 dirty; git "
              f"{subprocess.run(['git', '--version'], capture_output=True, text=True).stdout.split()[-1]}; "
              f"python {sys.version.split()[0]}; {args.repeat} runs each")
        counter = iter(range(10 ** 6))

        def new_dir() -> str:
            path = os.path.join(tmp, "launches", str(next(counter)))
            os.makedirs(path)
            return path

        show("git metadata (status, diff, remotes)", timed(args.repeat, lambda: provenance.git_state(repo)))
        state = provenance.git_state(repo)
        show("snapshot, git (ls-files + copy)", timed(args.repeat, lambda: provenance.make_snapshot(
            new_dir(), repo, state, provenance.DEFAULT_MAX_SIZE)))
        gitrunner = provenance.Git(repo)
        show("  of which: plan (ls-files + lstat)", timed(args.repeat, lambda: provenance.plan_git(state, gitrunner)))
        plan = provenance.plan_git(state, gitrunner)
        show("  of which: copy", timed(args.repeat, lambda: provenance.copy_plan(
            plan, os.path.join(new_dir(), provenance.SNAPSHOT_DIR))))
        plain = provenance.GitState()
        show("snapshot, no git (walk + .gitignore + copy)", timed(args.repeat, lambda: provenance.make_snapshot(
            new_dir(), repo, plain, provenance.DEFAULT_MAX_SIZE)))
        show("provenance hook, no snapshot (pip freeze incl.)", timed(args.repeat, lambda: provenance.prepare_launch(
            new_dir(), repo, {"snapshot": False}, root=tmp)))
        show("provenance hook with --snapshot", timed(args.repeat, lambda: provenance.prepare_launch(
            new_dir(), repo, {"snapshot": True}, root=tmp)))
        record, _ = provenance.make_snapshot(new_dir(), repo, state, provenance.DEFAULT_MAX_SIZE)
        print(f"snapshot copied {record['files']} files, {record['bytes'] / 1024 ** 2:.1f} MB")

        env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
                   ONAGER_GLOBAL_CONFIG=os.path.join(tmp, "global.onagerconfig"))
        for label, extra in (("onager launch (1 task), no snapshot", []),
                             ("onager launch --snapshot (1 task)", ["--snapshot"])):
            runs = []
            for _i in range(args.repeat):
                start = time.perf_counter()
                subprocess.run([sys.executable, "-m", "onager", "launch", "--backend", "local", "--jobname",
                                f"b{len(extra)}", "--command", "true", "-q", *extra], cwd=repo, env=env, check=True,
                               stdin=subprocess.DEVNULL)
                runs.append(time.perf_counter() - start)
            show(label, runs)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
