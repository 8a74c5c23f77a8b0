"""Every command at N and at 10N tasks: a time ratio above 15 (linear is ~10) fails the run.

Two projects are set up, one of N tasks and one of 10N, each with two jobs:

- `s`, tasks that sleep: `prelaunch` and `launch --backend local --detach --max-tasks 2`
  (the build, and a pool that starts two of them) are timed, then `cancel` of that launch
  and `wait` once it has ended;
- `a`, a slurm launch of N/100 arrays (MaxArraySize 101 given, as 1M tasks make N/1000 at
  1001), submitted and listed through shims of sbatch/squeue that reach no controller;
- `r`, a launch that "ran": built by `launch.prepare` (the real build) and recorded in the
  index, its state names, results files and logs written as the wrapper and
  `onager.log_result` write them (5% failed, 5% never started), no task actually run.
  `list` (table, `--json`, `--summary`), `results`, `report`, `show`, the rerun selections
  (`launch --tasklist failed|unfinished --dry-run`) and `launch --backend slurm --dry-run`
  read it.

Each command runs at N then at 10N (the two interleaved, `--repeat` times, best kept) so
that the load of a shared machine falls on both alike. The table shows the ratio of the
raw times (the figure that must stay under 15) and the ratio net of Python's start-up
(`onager list` of an empty project, measured in the same run), which shows super-linear
work that start-up hides at small N, and the ratio of the bytes each command printed (an
output that grows faster than N is quadratic work that fast C string code can hide at small
N: a row per task that repeats something of the size of N).

    python benchmarks/scaling_bench.py [--n 2000] [--repeat 1] [--limit 15] [--keep]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Callable

from _common import ROOT, onager_argv

sys.path.insert(0, ROOT)
from onager import launch as launchmod  # noqa: E402
from onager import prelaunch  # noqa: E402
from onager.index import JobIndex, LaunchRecord  # noqa: E402
from onager.layout import LaunchPaths  # noqa: E402

SLEEP_WIDTH = 2


ARRAY_SIZE = 101  # MaxArraySize of the shimmed slurm: N/100 arrays, as 1M tasks make at 1001

# sbatch that submits nothing (answers a job id, --parsable), a scheduler that knows no job
SHIMS = {
    "sbatch": '#!/bin/sh\necho x >>"$(dirname "$0")/calls"; echo $((900000000 + $(wc -l <"$(dirname "$0")/calls")))\n',
    "squeue": "#!/bin/sh\nexit 0\n",
    "scancel": "#!/bin/sh\nexit 0\n",
    "scontrol": "#!/bin/sh\nexit 0\n",
}


OUTPUT: dict[str, int] = {"last": 0}  # bytes the last command printed: output can be quadratic too


def _env(root: str, shims: str = "") -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=ROOT, ONAGER_GLOBAL_CONFIG=os.path.join(root, "global.onagerconfig"))
    if shims:
        env["PATH"] = shims + os.pathsep + env["PATH"]
    return env


def _shims(where: str) -> str:
    """A directory of slurm commands that reach no controller (a slurm launch of many arrays)."""
    os.makedirs(where)
    for name, text in SHIMS.items():
        with open(os.path.join(where, name), "w") as handle:
            handle.write(text)
        os.chmod(os.path.join(where, name), 0o755)
    return where


def _run(args: list[str], root: str, check: bool = True, shims: str = "") -> float:
    """Seconds one `python -m onager ARGS` takes in `root` (output discarded)."""
    with tempfile.TemporaryFile() as out:  # a file, not memory: an output may grow large
        start = time.perf_counter()
        done = subprocess.run(onager_argv() + args, cwd=root, env=_env(root, shims), stdin=subprocess.DEVNULL,
                              stdout=out, stderr=subprocess.PIPE)
        took = time.perf_counter() - start
        OUTPUT["last"] = os.fstat(out.fileno()).st_size
    err = done.stderr.decode(errors="replace")
    if "Traceback" in err or (check and done.returncode not in (0, 1)):
        raise RuntimeError(f"onager {' '.join(args[:4])} failed ({done.returncode}): {err[-600:]}")
    return took


def _dims(n: int) -> list[str]:
    """Two +pos-arg dimensions giving n tasks (n a multiple of 10)."""
    return ["+pos-arg", *map(str, range(10)), "+pos-arg", *map(str, range(n // 10))]


def prelaunch_args(jobname: str, n: int) -> list[str]:
    return ["prelaunch", "+jobname", jobname, "+command", "sleep 600", *_dims(n), "+q"]


def fabricate_ran(root: str, n: int) -> None:
    """Job `r`: n tasks built by the real launch code, ended as the wrapper records it."""
    cwd = os.getcwd()
    os.chdir(root)
    try:
        assert prelaunch.run(["+jobname", "r", "+command", "python train.py", "+arg", "--lr",
                              *[f"0.{i}" for i in range(1, 11)], "+arg", "--seed",
                              *map(str, range(n // 10)), "+tag", "+q"]) == 0
        backend, info = launchmod.prepare("r", "local", {})
    finally:
        os.chdir(cwd)
    launch_dir = info.launch_dir
    state, logs = os.path.join(launch_dir, "state"), os.path.join(launch_dir, "logs")
    paths = LaunchPaths(launch_dir)
    os.makedirs(paths.results_dir, exist_ok=True)
    now = time.time()
    for task in range(1, info.count + 1):
        if task % 20 == 7:
            continue  # never started: `unfinished`
        t0 = now - 100 + task / n
        with open(os.path.join(state, f"{task}.start@{t0:.6f}@1"), "w") as handle:
            handle.write(f"localhost {1000 + task} - 0\n")
        code = 1 if task % 20 == 3 else 0
        how = "failed" if code else "done"
        open(os.path.join(state, f"{task}.end@{t0 + 30:.6f}@{code}@{t0:.6f}@1@{how}@"), "w").close()
        accuracy = 0.5 + (task % 997) / 2000
        with open(paths.results(task), "w") as handle:
            handle.write(json.dumps({"@time": t0 + 10, "@attempt": 1, "loss": 2.0, "accuracy": accuracy / 2}) + "\n")
            handle.write(json.dumps({"@time": t0 + 20, "@attempt": 1, "loss": 0.1, "accuracy": accuracy}) + "\n")
        with open(os.path.join(logs, f"{task}.out"), "w") as handle:
            handle.write(f"epoch 1\nTest accuracy: {accuracy:.4f}\n")
    JobIndex(root).add(LaunchRecord("r", info.launch_id, "local", launch_dir, str(info.tasklist), info.count,
                                    now - 100, [], {}))


class Project:
    """A project directory of n tasks per job."""

    def __init__(self, n: int, base: str) -> None:
        self.n = n
        self.root = os.path.join(base, f"n{n}")
        os.makedirs(self.root)
        with open(os.path.join(self.root, ".gitignore"), "w") as handle:
            handle.write("*\n")

    def sleep_launch(self) -> float:
        """The detached local launch of job `s` (its build and the pool's start)."""
        took = _run(["launch", "--backend", "local", "--jobname", "s", "--detach",
                     "--max-tasks", str(SLEEP_WIDTH), "-q"], self.root)
        state = os.path.join(self.root, ".onager", "launches", "s", "1", "state")
        end = time.time() + 60
        while time.time() < end and sum(".start@" in x for x in os.listdir(state)) < SLEEP_WIDTH:
            time.sleep(0.05)
        return took

    def ended_wait(self) -> float:
        """`wait` on the cancelled launch, once it has ended (the first wait lets the pool stop)."""
        _run(["wait", "--jobname", "s", "--timeout", "120", "-q"], self.root, check=False)
        return _run(["wait", "--jobname", "s", "-q"], self.root, check=False)


Row = tuple[str, list[float], list[int]]  # command, best seconds and bytes printed per project


def measure(projects: list[Project], repeat: int) -> list[Row]:
    """(command, [best seconds per project], [bytes printed]) for every command, sizes interleaved."""
    rows: list[Row] = []

    def each(name: str, per_project: Callable[[Project], float], times: int = repeat) -> None:
        best = [float("inf")] * len(projects)
        printed = [0] * len(projects)
        for _ in range(times):
            for slot, project in enumerate(projects):
                best[slot] = min(best[slot], per_project(project))
                printed[slot] = OUTPUT["last"]
        rows.append((name, best, printed))
        print(f"  {name:<38} " + "  ".join(f"{b:7.2f} s" for b in best), file=sys.stderr, flush=True)

    each("start-up (list, empty project)", lambda p: _run(["list"], os.path.join(p.root, "..")))
    each("prelaunch", lambda p: _run(prelaunch_args("s", p.n), p.root))
    each("launch local --detach (build)", Project.sleep_launch, times=1)
    each("cancel (detached local)", lambda p: _run(["cancel", "--jobname", "s", "-q"], p.root), times=1)
    each("wait (ended launch)", Project.ended_wait, times=1)
    for p in projects:
        fabricate_ran(p.root, p.n)
    each("launch slurm --dry-run", lambda p: _run(["launch", "--backend", "slurm", "--jobname", "r",
                                                   "--dry-run", "-q"], p.root))
    each("list (table)", lambda p: _run(["list", "--jobname", "r"], p.root))
    each("list --json", lambda p: _run(["list", "--jobname", "r", "--json"], p.root))
    each("list --summary", lambda p: _run(["list", "--summary"], p.root))
    each("results", lambda p: _run(["results", "r"], p.root))
    each("results --sort -accuracy --top 10", lambda p: _run(["results", "r", "--sort", "-accuracy",
                                                              "--top", "10"], p.root))
    each("report", lambda p: _run(["report", "r", "--no-plots", "-o", os.path.join(p.root, "r.html")], p.root))
    each("rerun --tasklist failed --dry-run", lambda p: _run(["launch", "--jobname", "r", "--tasklist", "failed",
                                                              "--dry-run", "-q"], p.root))
    each("rerun --tasklist unfinished --dry-run", lambda p: _run(["launch", "--jobname", "r", "--tasklist",
                                                                  "unfinished", "--dry-run", "-q"], p.root))
    shims = _shims(os.path.join(os.path.dirname(projects[0].root), "shims"))
    for p in projects:
        _run(["prelaunch", "+jobname", "a", "+command", "true", *_dims(p.n), "+q"], p.root)
    each(f"launch slurm, {ARRAY_SIZE - 1}-task arrays (shims)",
         lambda p: _run(["launch", "--backend", "slurm", "--jobname", "a", "-q", "--max-array-size", str(ARRAY_SIZE),
                         "--duration", "00:01:00", "--mem", "0.1"], p.root, shims=shims), times=1)
    each("list (table) of that slurm launch", lambda p: _run(["list", "--jobname", "a"], p.root, shims=shims))
    each("list --json of that slurm launch", lambda p: _run(["list", "--jobname", "a", "--json"], p.root,
                                                            shims=shims))
    each("show", lambda p: _run(["show", "r"], p.root))
    each("show --task 5", lambda p: _run(["show", "r", "--task", "5"], p.root))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000, help="the small size (a multiple of 10); the large is 10N")
    parser.add_argument("--repeat", type=int, default=1, help="runs per command and size (best kept)")
    parser.add_argument("--limit", type=float, default=15.0, help="fail when a 10N/N time ratio exceeds this")
    parser.add_argument("--keep", action="store_true", help="keep the projects (their path is printed)")
    args = parser.parse_args(argv)
    if args.n < 10 or args.n % 10:
        parser.error("--n must be a positive multiple of 10")
    base = tempfile.mkdtemp(prefix="onager-scaling-")
    projects = [Project(args.n, base), Project(10 * args.n, base)]
    print(f"scaling, N={args.n:,} and 10N={10 * args.n:,} (load {os.getloadavg()[0]:.1f})", file=sys.stderr)
    try:
        rows = measure(projects, args.repeat)
    finally:
        for p in projects:  # never leave a pool of sleeping tasks behind
            subprocess.run(onager_argv() + ["cancel", "--jobname", "s", "-q"], cwd=p.root, env=_env(p.root),
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if args.keep:
            print(f"projects kept in {base}", file=sys.stderr)
        else:
            shutil.rmtree(base, ignore_errors=True)
    startup = min(rows[0][1])
    failed = []
    print(f"\n== every command at N={args.n:,} and 10N={10 * args.n:,}, {args.repeat} run(s) each, "
          f"best kept (load {os.getloadavg()[0]:.1f})")
    print(f"  {'command':<38} {'N':>9} {'10N':>9} {'ratio':>7} {'net':>7} {'output':>7}  result")
    for name, (small, large), (out_small, out_large) in rows[1:]:
        ratio = large / small
        net = (large - startup) / (small - startup) if small - startup > 0.05 else float("nan")
        # bytes printed: only an output of some size says anything (a one-line summary stays one line)
        out_ratio = out_large / out_small if out_small >= 1000 else float("nan")
        ok = ratio <= args.limit and not out_ratio > args.limit
        if not ok:
            failed.append(name)
        print(f"  {name:<38} {small:8.2f}s {large:8.2f}s {ratio:7.2f} {net:7.2f} {out_ratio:7.2f}  "
              f"{'pass' if ok else 'FAIL'}")
    print(f"  (start-up: {startup:.2f} s; net: both times less the start-up; output: ratio of the bytes printed; "
          f"a time or output ratio above {args.limit:g} fails)")
    if failed:
        print(f"super-linear: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
