"""`onager list` of one 100,000-task launch (every task finished, 5% failed). Target < 1 s
(0.1.3: 3.8 s). Also times `--summary` and `--json`, and a bare Python start for reference.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time

from _common import ROOT, onager_argv, report, timed

sys.path.insert(0, ROOT)
from onager.index import JobIndex, LaunchRecord  # noqa: E402
from onager.jobfile import JobEntry  # noqa: E402
from onager.launch import write_tasks  # noqa: E402

N = 100_000


def fabricate(root: str) -> None:
    launch_dir = os.path.join(root, ".onager", "launches", "big", "1")
    os.makedirs(os.path.join(launch_dir, "state"))
    os.makedirs(os.path.join(launch_dir, "logs"))
    write_tasks(launch_dir, (JobEntry(i, f"python train.py --lr 0.{i % 10} --seed {i} --tag big_{i:06d}",
                                      f"big_{i:06d}", {"lr": i % 10, "seed": i}) for i in range(1, N + 1)))
    now = time.time()
    state = os.path.join(launch_dir, "state")
    for i in range(1, N + 1):
        open(os.path.join(state, f"{i}.end@{now:.6f}@{1 if i % 20 == 0 else 0}@{now - 60:.6f}"), "w").close()
    with open(os.path.join(launch_dir, "launch.json"), "w") as handle:
        json.dump({"jobname": "big", "launch_id": "1"}, handle)
    JobIndex(root).add(LaunchRecord("big", "1", "local", launch_dir, f"1-{N}", N, now, [], {}))


def main() -> int:
    tmp = tempfile.mkdtemp(prefix="onager-list-")
    try:
        fabricate(tmp)
        base = min(timed([sys.executable, "-c", "pass"], cwd=tmp)[0] for _ in range(3))
        table = min(timed(onager_argv() + ["list", "--jobname", "big"], cwd=tmp) for _ in range(3))
        summary = min(timed(onager_argv() + ["list", "--summary"], cwd=tmp) for _ in range(3))
        as_json = min(timed(onager_argv() + ["list", "--json", "--status", "failed"], cwd=tmp) for _ in range(3))
        report(f"onager list, one launch of {N:,} tasks", {
            "table (tabulate)": f"{table[0]:.2f} s, {table[1]:.0f} MB  (target < 1 s; 0.1.3: 3.8 s)",
            "--summary": f"{summary[0]:.2f} s, {summary[1]:.0f} MB",
            "--json --status failed": f"{as_json[0]:.2f} s",
            "python -c pass (reference)": f"{base:.3f} s",
        })
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
