"""Adaptive search against random search and the grid, with the same number of tasks each.

Two problems, each run for real through onager (prelaunch, launch --backend local, results):
a synthetic 2-D quadratic, and examples/mnist (scikit-learn's digits when no MNIST files are
there; skipped without torch). For each, TPE (`+tune N`), random search (`+tune N +sampler
random`) and a grid of N points: the best metric reached and the task-seconds spent (the sum
of the trials' elapsed times), printed as ratios to the grid's. On the quadratic, the spread
of TPE's and random search's best over seeds comes from Optuna in-process (no tasks run).

    python benchmarks/tune_bench.py [--trials 30] [--mnist-trials 6] [--seeds 10] [--no-mnist]
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from typing import Any

from _common import ROOT, onager_argv, report

QUADRATIC = """import onager
p = onager.params()
onager.log_result(loss=(p["x"] - 0.5) ** 2 + (p["y"] + 0.3) ** 2)
"""


def _onager(args: list[str], cwd: str, timeout: float = 3600) -> str:
    env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS="1")
    proc = subprocess.run(onager_argv() + args, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"onager {' '.join(args[:3])} failed: {proc.stderr[-800:]}")
    return proc.stdout


def run_method(cwd: str, job: str, command: str, space: list[str], grid: list[str], method: str, trials: int,
               metric: str, seed: int) -> tuple[float, float, int]:
    """(best metric, task-seconds, tasks) of one method, run as a real local launch."""
    goal, name = metric.split(":")
    if method == "grid":
        _onager(["prelaunch", "+jobname", job, "+command", command, *grid, "+q"], cwd)
        _onager(["launch", "--backend", "local", "--jobname", job, "--max-tasks", "1", "--quiet"], cwd)
    else:
        sampler = ["+sampler", "random"] if method == "random" else []
        _onager(["prelaunch", "+jobname", job, "+command", command, *space, "+tune", str(trials),
                 "+metric", metric, *sampler, "+seed", str(seed), "+q"], cwd)
        _onager(["launch", "--backend", "local", "--jobname", job, "--agents", "1", "--quiet"], cwd)
    rows = json.loads(_onager(["list", "--jobname", job, "--json"], cwd))
    limit = trials if method != "grid" else len(rows)
    tasks = [r for r in rows if r["task_id"] <= limit]
    seconds = sum(r["elapsed"] or 0.0 for r in tasks)
    values = []
    for r in tasks:
        path = os.path.join(cwd, ".onager", "launches", job, r["launch"], "results", f"{r['task_id']}.jsonl")
        if os.path.exists(path):
            with open(path, encoding="utf-8") as handle:
                last = [json.loads(line) for line in handle if name in line]
            if last:
                values.append(float(last[-1][name]))
    best = (min if goal == "min" else max)(values) if values else float("nan")
    return best, seconds, len(tasks)


def spread(trials: int, seeds: int) -> dict[str, list[float]]:
    """Best value over `seeds` seeds of TPE and random search on the quadratic, in-process."""
    import optuna
    optuna.logging.set_verbosity(optuna.logging.ERROR)

    def objective(trial: Any) -> float:
        x, y = trial.suggest_float("x", -2, 2), trial.suggest_float("y", -2, 2)
        return (x - 0.5) ** 2 + (y + 0.3) ** 2

    out: dict[str, list[float]] = {"tpe": [], "random": []}
    for seed in range(seeds):
        for name, sampler in (("tpe", optuna.samplers.TPESampler(seed=seed, constant_liar=True)),
                              ("random", optuna.samplers.RandomSampler(seed=seed))):
            study = optuna.create_study(sampler=sampler)
            study.optimize(objective, n_trials=trials)
            out[name].append(study.best_value)
    return out


def compare(title: str, results: dict[str, tuple[float, float, int]], goal: str) -> None:
    grid_best, grid_seconds, _ = results["grid"]
    figures = {}
    for method, (best, seconds, tasks) in results.items():
        figures[f"{method}: best, task-seconds, tasks"] = f"{best:.4g}, {seconds:.1f}, {tasks}"
    for method in ("tpe", "random"):
        best, seconds, _ = results[method]
        if goal == "min":  # how much closer to 0 than the grid (>1: better than the grid)
            quality = grid_best / best if best > 0 else float("inf")
            label = "grid best / best"
        else:
            quality = best / grid_best if grid_best else float("nan")
            label = "best / grid best"
        figures[f"{method} vs grid: {label}"] = f"{quality:.3g}"
        figures[f"{method} vs grid: task-seconds ratio"] = f"{seconds / grid_seconds:.3g}" if grid_seconds else "-"
    report(title, figures)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=30, help="trials of the quadratic (the grid: about as many)")
    parser.add_argument("--mnist-trials", type=int, default=6, help="trials of the MNIST search")
    parser.add_argument("--seeds", type=int, default=10, help="seeds of the in-process spread")
    parser.add_argument("--seed", type=int, default=1, help="the seed of the real runs")
    parser.add_argument("--no-mnist", action="store_true", help="the quadratic only")
    args = parser.parse_args()
    if importlib.util.find_spec("optuna") is None:
        print("tune_bench: needs Optuna: pip install 'onager[tune]'", file=sys.stderr)
        return 2
    work = tempfile.mkdtemp(prefix="onager-tune-bench.")
    try:
        with open(os.path.join(work, "quad.py"), "w", encoding="utf-8") as handle:
            handle.write(QUADRATIC)
        rows = max(1, int(args.trials ** 0.5))
        side = (rows, -(-args.trials // rows))  # the grid nearest N points: 5 x 6 for 30
        space = ["+arg", "--x", "+uniform", "-2", "2", "+arg", "--y", "+uniform", "-2", "2"]
        grid = ["+arg", "--x", "+linspace", "-2", "2", str(side[0]),
                "+arg", "--y", "+linspace", "-2", "2", str(side[1])]
        command = f"{sys.executable} quad.py"
        results = {m: run_method(work, f"quad-{m}", command, space, grid, m, args.trials, "min:loss", args.seed)
                   for m in ("tpe", "random", "grid")}
        compare(f"2-D quadratic, optimum 0 ({args.trials} trials; grid {side[0]}x{side[1]}; seed {args.seed})",
                results, "min")
        bests = spread(args.trials, args.seeds)
        report(f"2-D quadratic over {args.seeds} seeds (in-process, {args.trials} trials)", {
            f"{m}: median best, seeds within 0.005": f"{statistics.median(v):.4g}, {sum(b < 0.005 for b in v)}"
            for m, v in bests.items()})
        missing = [m for m in ("torch", "sklearn") if importlib.util.find_spec(m) is None]
        if args.no_mnist or missing:
            print(f"== MNIST skipped{': ' + ', '.join(missing) + ' not installed' if missing else ''}")
            return 0
        shutil.copy(os.path.join(ROOT, "examples", "mnist", "mnist.py"), work)
        n = args.mnist_trials
        command = f"{sys.executable} mnist.py --epochs 1 --no-cuda --log-interval 0 --data-dir ./nodata"
        space = ["+arg", "--lr", "+loguniform", "0.03", "10", "+arg", "--gamma", "+uniform", "0.5", "0.95"]
        lrs = [f"{10 ** (-1.5 + 2.5 * i / max(1, n // 2 - 1)):.3g}" for i in range(max(1, n // 2))]
        grid = ["+arg", "--lr", *lrs, "+arg", "--gamma", "0.6", "0.9"]
        results = {m: run_method(work, f"mnist-{m}", command, space, grid, m, n, "min:loss", args.seed)
                   for m in ("tpe", "random", "grid")}
        compare(f"MNIST (digits fallback), test loss, 1 epoch ({n} trials; grid {len(lrs)}x2)", results, "min")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
