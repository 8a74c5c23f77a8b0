"""Scale runs (not part of `make test` or `make bench`; `make scale` runs them).

1. prelaunch: a 1M-task and a 10M-task jobfile (`+arg --a` x `+arg --b`, command `true`):
   the time must grow linearly in N (ratio ~10) and the peak RSS of the child (from
   `os.wait4`, i.e. getrusage of the child) stay flat.
2. slurm, 1M tasks (only when `ONAGER_TEST_SLURM=1` and `sbatch` is on PATH):
   a. the submission of a 1M-task launch with `sbatch` and `squeue` replaced by shims on PATH
      (sbatch records its argv and answers a job id; squeue answers nothing): onager's own
      submission time and number of sbatch calls at 1M tasks, and `list --summary` of that
      launch (its table with `--list-table`: about 20 GB of memory at 1M tasks, see docs). A
      real 1M-element submission cannot be made on the shared test cluster: its MaxJobCount
      (10,000 on the CI machine) counts every array element, so the controller would refuse
      it after ten arrays, and would refuse every other user's jobs meanwhile.
   b. a real submission of `--real-tasks` tasks (default 3,000, a few arrays at MaxArraySize
      1001) that do nothing, HELD (`-- --hold`: nothing runs), through a recording sbatch
      shim that runs the real one: submission time, sbatch calls, `list` time; then every
      job it submitted is cancelled (`onager cancel`, then `scancel` of each recorded id).

    python benchmarks/scale_runs.py [--sizes 1000000 10000000] [--real-tasks 3000] [--skip-prelaunch]
                                    [--skip-slurm] [--slurm-tasks 1000000] [--list-table]
"""
from __future__ import annotations

import argparse
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import time

from _common import ROOT, onager_argv

SBATCH_SHIM = """#!/bin/sh
# records each call; {real} empty: answers a made-up job id (--parsable), else runs the real sbatch
echo "$*" >>"{log}"
if [ -n "{real}" ]; then
  out=$("{real}" "$@") || exit $?
  echo "$out"; echo "${{out%%;*}}" >>"{ids}"
else
  n=$(wc -l <"{log}"); echo $((900000000 + n))
fi
"""

SQUEUE_SHIM = "#!/bin/sh\nexit 0\n"

# `list` (table) of the shimmed launch: each row repeats every job id of the launch, so at 1M
# tasks in 1,000 arrays it took 159 s and 20 GB; opt-in on a shared machine
LIST_TABLE = [False]


CPU: dict[str, float] = {}  # CPU seconds (user + system) of the last child, by its command


def child(argv: list[str], cwd: str, env: dict[str, str]) -> tuple[float, float, str]:
    """Wall seconds, peak RSS (MB) of this child alone (os.wait4's rusage) and its stdout's head;
    its CPU time goes to CPU["last"] (on a loaded machine, the figure that wall time blurs)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        CPU["last"] = usage.ru_utime + usage.ru_stime
        out.seek(0)
        err.seek(0)
        # the head only: a parent grown by reading a huge output would pass its peak RSS on to
        # the next children (a vfork'd child's maxrss starts at its parent's at exec)
        text, problem = out.read(1 << 16).decode(errors="replace"), err.read().decode(errors="replace")
    if proc.returncode not in (0, 1) or "Traceback" in problem:
        raise RuntimeError(f"{argv[2:6]} failed ({proc.returncode}): {problem[-600:]}")
    return wall, usage.ru_maxrss / 1024, text


def onager(args: list[str], cwd: str, env: dict[str, str]) -> tuple[float, float, str]:
    return child(onager_argv() + args, cwd, env)


def project(base: str, name: str) -> tuple[str, dict[str, str]]:
    root = os.path.join(base, name)
    os.makedirs(root)
    env = dict(os.environ, PYTHONPATH=ROOT, ONAGER_GLOBAL_CONFIG=os.path.join(root, "global.onagerconfig"))
    return root, env


def prelaunch_args(job: str, n: int) -> list[str]:
    return ["prelaunch", "+jobname", job, "+command", "true", "+arg", "--a", *map(str, range(1000)),
            "+arg", "--b", *map(str, range(max(1, n // 1000))), "+q"]


def prelaunch_runs(base: str, sizes: list[int]) -> None:
    """Time and peak memory of prelaunch at each size, smallest first (memory is a running max)."""
    print(f"== prelaunch (load {os.getloadavg()[0]:.1f})", flush=True)
    first = None
    for n in sorted(sizes):
        root, env = project(base, f"pre{n}")
        wall, rss, _ = onager(prelaunch_args("p", n), root, env)
        cpu = CPU["last"]
        size = os.path.getsize(os.path.join(root, ".onager", "scripts", "p", "jobs.json"))
        note = "" if first is None else (f"  ratios for {n / first[0]:.0f}x the tasks: wall {wall / first[1]:.2f}, "
                                         f"CPU {cpu / first[2]:.2f}")
        print(f"  {n:>11,} tasks  {wall:8.1f} s (CPU {cpu:6.1f} s)  peak RSS {rss:6.0f} MB  jobs.json "
              f"{size / 1e6:7.0f} MB  (load {os.getloadavg()[0]:.1f}){note}", flush=True)
        first = first or (n, wall, cpu)
        shutil.rmtree(root, ignore_errors=True)


def shims(where: str, real: str) -> tuple[str, str, str]:
    """A bin directory with a recording sbatch (and, without `real`, a silent squeue)."""
    os.makedirs(where)
    log, ids = os.path.join(where, "sbatch.log"), os.path.join(where, "ids.txt")
    open(log, "w").close()
    open(ids, "w").close()
    with open(os.path.join(where, "sbatch"), "w") as handle:
        handle.write(SBATCH_SHIM.format(log=log, ids=ids, real=real))
    if not real:
        with open(os.path.join(where, "squeue"), "w") as handle:
            handle.write(SQUEUE_SHIM)
        for name in ("scancel", "scontrol"):  # nothing made-up may reach the real controller
            with open(os.path.join(where, name), "w") as handle:
                handle.write("#!/bin/sh\nexit 0\n")
    for name in os.listdir(where):
        path = os.path.join(where, name)
        if not name.endswith((".log", ".txt")):
            os.chmod(path, os.stat(path).st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return where, log, ids


def _lines(path: str) -> list[str]:
    with open(path) as handle:
        return [line.strip() for line in handle if line.strip()]


def slurm_run(base: str, n: int, real: bool) -> None:
    """Submit an n-task launch of `true` (real: held, then cancelled) and list it."""
    kind = "real sbatch, held" if real else "sbatch/squeue shims"
    root, env = project(base, f"slurm-{'real' if real else 'shim'}")
    bindir, log, ids = shims(os.path.join(base, f"bin-{'real' if real else 'shim'}"),
                             shutil.which("sbatch") or "" if real else "")
    env["PATH"] = bindir + os.pathsep + env["PATH"]
    onager(prelaunch_args("big", n), root, env)
    extra = ["--max-array-size", "1001"] if not real else []
    launch = ["launch", "--backend", "slurm", "--jobname", "big", "-q", "--duration", "00:01:00", "--mem", "0.1",
              *extra] + (["--", "--hold"] if real else [])
    try:
        wall, rss, _ = onager(launch, root, env)
        calls = len(_lines(log))
        lwall, lrss, out = onager(["list", "--jobname", "big", "--summary"], root, env)
        table = real or LIST_TABLE[0]
        twall, trss, _ = onager(["list", "--jobname", "big"], root, env) if table else (0.0, 0.0, "")
        print(f"== slurm launch of {n:,} tasks ({kind}; load {os.getloadavg()[0]:.1f})")
        print(f"  submission (build + sbatch)  {wall:8.1f} s  peak RSS {rss:5.0f} MB  sbatch calls {calls}")
        print(f"  sbatch calls per 1,000 tasks {1000 * calls / n:8.2f}")
        print(f"  list --summary               {lwall:8.1f} s  peak RSS {lrss:5.0f} MB")
        if table:
            print(f"  list (table)                 {twall:8.1f} s  peak RSS {trss:5.0f} MB")
        else:
            print("  list (table)                 not run (--list-table runs it: 20 GB at 1M tasks in 1,000 arrays)")
        print("  " + out.strip().replace("\n", "\n  "), flush=True)
    finally:
        if real:
            onager(["cancel", "--jobname", "big", "-q"], root, env)
            submitted = _lines(ids)
            if submitted:
                subprocess.run(["scancel", *submitted], check=False)
                left = subprocess.run(["squeue", "-h", "-j", ",".join(submitted), "-o", "%i"], capture_output=True,
                                      text=True).stdout.split()
                print(f"  cancelled {len(submitted)} array job(s); left in the queue: {len(left)}", flush=True)
        shutil.rmtree(root, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 10_000_000],
                        help="prelaunch sizes (multiples of 1000)")
    parser.add_argument("--slurm-tasks", type=int, default=1_000_000, help="tasks of the shim submission")
    parser.add_argument("--real-tasks", type=int, default=3000, help="tasks of the real, held submission")
    parser.add_argument("--skip-prelaunch", action="store_true")
    parser.add_argument("--skip-slurm", action="store_true")
    parser.add_argument("--list-table", action="store_true",
                        help="also `list` (table) the shimmed launch (about 20 GB of memory at 1M tasks)")
    args = parser.parse_args(argv)
    LIST_TABLE[0] = args.list_table
    base = tempfile.mkdtemp(prefix="onager-scale-")
    try:
        if not args.skip_prelaunch:
            prelaunch_runs(base, args.sizes)
        if args.skip_slurm:
            return 0
        if os.environ.get("ONAGER_TEST_SLURM") != "1" or not shutil.which("sbatch"):
            print("slurm runs skipped: ONAGER_TEST_SLURM=1 and sbatch on PATH are needed "
                  "(set -a; . /tmp/onager-engines.env)")
            return 0
        slurm_run(base, args.slurm_tasks, real=False)
        if args.real_tasks:
            slurm_run(base, args.real_tasks, real=True)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
