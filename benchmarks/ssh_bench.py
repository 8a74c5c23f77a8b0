"""SSH backend: per-task dispatch overhead on loopback. N x `true` over the two test sshd
(ci/start-sshd.sh) with slots 4+4, against the floor: the same number of bare `ssh host true`
sessions on the same shared connections, 8 at a time (xargs -P8).

The fixed cost of a launch (probe + sending the launch files) is measured with a 1-task launch
and taken out of the per-task figure.
"""
from __future__ import annotations

import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

from _common import ROOT, compiled, interleaved, median_spread, onager_argv, ratio, report

N = int(os.environ.get("SSH_BENCH_TASKS", "400"))
RUNS = int(os.environ.get("SSH_BENCH_RUNS", "3"))


def engines() -> dict:
    found = {}
    try:
        with open(os.environ.get("ONAGER_ENGINES_ENV", "/tmp/onager-engines.env")) as handle:
            for line in handle:
                if "=" in line and not line.startswith("#"):
                    key, value = line.strip().split("=", 1)
                    found[key] = value
    except OSError:
        pass
    return found


CPU = {}


def wall(argv, cwd, env, stdin_text=None) -> float:
    """Wall seconds; CPU seconds of the command and its children go to CPU[argv[-1]]."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(argv, cwd=cwd, env=env, input=stdin_text, text=True, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    took = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    CPU[argv[-1]] = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return took


def main() -> int:
    env_file = engines()
    a, b = env_file.get("ONAGER_TEST_SSHD_A"), env_file.get("ONAGER_TEST_SSHD_B")
    if not (a and b):
        print("ssh bench skipped: no test sshd (run ci/start-engines.sh)")
        return 0
    compiled()
    tmp = tempfile.mkdtemp(prefix="onager-ssh-")
    env = dict(os.environ, PYTHONPATH=ROOT, ONAGER_GLOBAL_CONFIG=os.path.join(tmp, "global"))
    try:
        cfg = os.path.join(tmp, "ssh_config")
        with open(cfg, "w") as out:
            for d in (a, b):
                with open(os.path.join(d, "ssh_config")) as handle:
                    out.write(handle.read() + "\n")
        ids = [str(i) for i in range(1, N + 1)]
        subprocess.run(onager_argv() + ["prelaunch", "+jobname", "t", "+command", "true", "+pos-arg", *ids, "+q"],
                       cwd=tmp, env=env, check=True, stderr=subprocess.DEVNULL)
        hosts = ["--hosts", "ci-sshd-a:4,ci-sshd-b:4", "--ssh-config", cfg, "-q"]
        lines = "".join(f"ci-sshd-{'ab'[i % 2]}\n" for i in range(N))
        fixed_run = lambda: wall(onager_argv() + ["launch", "--backend", "ssh", "--jobname", "t",  # noqa: E731
                                                  "--tasklist", "1"] + hosts, tmp, env)
        full_run = lambda: wall(onager_argv() + ["launch", "--backend", "ssh", "--jobname", "t"] + hosts,  # noqa: E731
                                tmp, env)
        floor_run = lambda: wall(["xargs", "-P8", "-I{}", "ssh", "-F", cfg, "-o", "ControlMaster=auto",  # noqa: E731
                                  "-o", "ControlPersist=60", "{}", "true"], tmp, env, lines)
        one_ssh = lambda: wall(["ssh", "-F", cfg, "ci-sshd-a", "true"], tmp, env)  # noqa: E731
        fixed, full, floor, single = interleaved(RUNS, fixed_run, full_run, floor_run, one_ssh)
        per_task = [(f - x) / (N - 1) for f, x in zip(full, fixed)]
        ours_cpu = CPU["-q"]
        floor_cpu = CPU["true"]
        report(f"ssh backend, {N} x `true`, slots 4+4 on two loopback sshd, {RUNS} interleaved runs each "
               f"(load {os.getloadavg()[0]:.1f}, {os.cpu_count()} CPUs)", {
                   "launch of 1 task (probe + setup + 1 task + cleanup)": median_spread(fixed),
                   "one bare `ssh host true` (new connection)": median_spread(single),
                   "fixed cost / one ssh session": ratio(fixed, single),
                   f"launch of {N} tasks": median_spread(full),
                   "dispatch, fixed cost taken out": median_spread(per_task, "ms/task", 1000, 1),
                   f"floor: {N} bare `ssh host true` on shared connections, 8 at once": median_spread(floor),
                   f"launch of {N} / floor": ratio(full, floor),
                   "local CPU per task, onager launch (dispatcher + ssh clients)":
                       f"{ours_cpu / N * 1000:.1f} ms (last launch)",
                   "local CPU per session, bare ssh": f"{floor_cpu / N * 1000:.1f} ms",
               })
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
