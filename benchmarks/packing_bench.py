"""Dynamic packing against static groups: 200 tasks of random lengths (seeded, 0.05-1.0 s times
SCALE) on 2 slots, makespan (first start to last end) of

- dynamic: `--workers 2`, the two workers' shell loops (worker.sh) run directly as 2 processes;
- static halves: `--tasks-per-node 100 --max-tasks-per-node 1`, node.sh of groups 1 and 2 at once
  (what today's grouping gives two allocations);
- static groups of 20: `--tasks-per-node 20 --max-tasks-per-node 1`, the 10 groups fed to
  2 slots as they free up (a scheduler with 2 free slots; `xargs -P2`).

In this run, in turn, the same number of times; only the ratios mean anything on a loaded
machine. With `--slurm` (and a running Slurm), the same launches are also submitted for real
(`--workers 2` against `--tasks-per-node 100 --max-tasks-per-node 1`), makespan from the state files.

    python benchmarks/packing_bench.py [SCALE, default 0.2] [runs, default 3] [--slurm]
"""
from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time

from _common import ROOT, compiled, interleaved, median_spread, onager_argv, ratio, report

sys.path.insert(0, ROOT)

ARGS = [a for a in sys.argv[1:] if not a.startswith("--")]
SCALE = float(ARGS[0]) if ARGS else 0.2
RUNS = int(ARGS[1]) if len(ARGS) > 1 else 3
SLURM = "--slurm" in sys.argv
N, SEED = 200, 17


def lengths() -> list[float]:
    rng = random.Random(SEED)
    return [round(rng.uniform(0.05, 1.0) * SCALE, 4) for _ in range(N)]


def write_jobfile(root: str, jobname: str) -> None:
    path = os.path.join(root, ".onager", "scripts", jobname, "jobs.json")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as handle:
        json.dump({str(i): [f"sleep {s}", f"{jobname}_{i}", {}] for i, s in enumerate(lengths(), 1)}, handle)


class Builder:
    """Fresh launch directories (a new job each run: no claims or taken marks carried over)."""

    def __init__(self, root: str):
        self.root = root
        self.count = 0

    def build(self, **options) -> str:
        from onager import launch as launchmod
        from onager.backends.array import write_groups, write_node_script
        from onager.packing import write_worker

        self.count += 1
        jobname = f"b{self.count}"
        write_jobfile(self.root, jobname)
        cwd = os.getcwd()
        os.chdir(self.root)
        try:
            backend, info = launchmod.prepare(jobname, "slurm", dict(options, max_array_size=1001))
            per_node = int(options.get("tasks_per_node") or 1)
            if options.get("workers"):
                write_worker(info.launch_dir, info.tasklist, int(options["workers"]), None, "SLURM_ARRAY_TASK_ID")
            else:
                write_groups(info.launch_dir, info.tasklist, per_node)
                write_node_script(info, per_node, 1, "SLURM_ARRAY_TASK_ID")
            launchmod._release(info)  # run by hand below, never submitted
        finally:
            os.chdir(cwd)
        return info.launch_dir


def run_procs(argvs: list[list[str]]) -> float:
    start = time.perf_counter()
    procs = [subprocess.Popen(a, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
             for a in argvs]
    for p in procs:
        p.wait()
    return time.perf_counter() - start


def dynamic(builder: Builder):
    def run() -> float:
        d = builder.build(workers=2)
        return run_procs([["bash", os.path.join(d, "worker.sh"), str(k)] for k in (1, 2)])
    return run


def static_halves(builder: Builder):
    def run() -> float:
        d = builder.build(tasks_per_node=N // 2, max_tasks_per_node=1)
        return run_procs([["bash", os.path.join(d, "node.sh"), str(g)] for g in (1, 2)])
    return run


def static_groups(builder: Builder, size: int = 20):
    def run() -> float:
        d = builder.build(tasks_per_node=size, max_tasks_per_node=1)
        groups = "".join(f"{g}\n" for g in range(1, N // size + 1))
        start = time.perf_counter()
        subprocess.run(["xargs", "-P2", "-n1", "bash", os.path.join(d, "node.sh")], input=groups, text=True,
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return time.perf_counter() - start
    return run


def makespan(launch_dir: str) -> float:
    starts, ends = [], []
    for name in os.listdir(os.path.join(launch_dir, "state")):
        head, _, rest = name.partition(".")
        fields = rest.split("@")
        if fields[0] == "start":
            starts.append(float(fields[1]))
        elif fields[0] == "end":
            ends.append(float(fields[1]))
    return max(ends) - min(starts)


def on_slurm(root: str, env: dict[str, str], jobname: str, *options: str) -> float:
    write_jobfile(root, jobname)
    subprocess.run(onager_argv() + ["launch", "--backend", "slurm", "--jobname", jobname, "--mem", "100M",
                                    "--duration", "30", "-q", *options], cwd=root, env=env, check=True)
    subprocess.run(onager_argv() + ["wait", "--jobname", jobname], cwd=root, env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return makespan(os.path.join(root, ".onager", "launches", jobname, "1"))


def main() -> int:
    compiled()
    tmp = tempfile.mkdtemp(prefix="onager-packing-")
    os.environ["ONAGER_GLOBAL_CONFIG"] = os.path.join(tmp, "global.onagerconfig")
    env = dict(os.environ, PYTHONPATH=ROOT)
    try:
        builder = Builder(tmp)
        total = sum(lengths())
        names = ["dynamic (--workers 2)", "static halves (--tasks-per-node 100)", "static groups of 20, 2 slots"]
        results = dict(zip(names, interleaved(RUNS, dynamic(builder), static_halves(builder),
                                              static_groups(builder))))
        figures = {name: median_spread(values) for name, values in results.items()}
        figures["ideal (sum / 2)"] = f"{total / 2:.2f} s"
        figures["dynamic / static halves"] = ratio(results[names[0]], results[names[1]], "< 1")
        figures["dynamic / static groups of 20"] = ratio(results[names[0]], results[names[2]], "< 1")
        if SLURM and shutil.which("sbatch"):
            dyn, sta = [], []
            for k in range(RUNS):
                dyn.append(on_slurm(tmp, env, f"sd{k}", "--workers", "2"))
                sta.append(on_slurm(tmp, env, f"ss{k}", "--tasks-per-node", str(N // 2), "--max-tasks-per-node", "1"))
            figures["slurm dynamic (--workers 2)"] = median_spread(dyn)
            figures["slurm static halves"] = median_spread(sta)
            figures["slurm dynamic / static"] = ratio(dyn, sta, "< 1")
        report(f"packing: {N} tasks of {0.05 * SCALE:.3f}-{1.0 * SCALE:.3f} s (seed {SEED}, sum {total:.1f} s) on 2 "
               f"slots, {RUNS} interleaved runs (load {os.getloadavg()[0]:.1f})", figures)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
