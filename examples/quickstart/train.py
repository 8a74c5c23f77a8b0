"""A stand-in for a training script: pure Python, a fraction of a second per run.

It "trains" for a few steps, prints its progress, and reports its final accuracy both as a
log line and through onager.log_result. The run with --lr 3.0 and --seed 1 crashes on its
first attempt (as real runs sometimes do), so the demo has a failure to find and rerun.
"""
import argparse
import contextlib
import math
import os
import random
import sys
import time


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--run-tag", default="untagged")
    args = parser.parse_args()

    crash_marker = os.path.join(os.path.dirname(os.path.abspath(__file__)), f".crashed-{args.run_tag}")
    if args.lr == 3.0 and args.seed == 1 and not os.path.exists(crash_marker):
        open(crash_marker, "w").close()
        print("CUDA out of memory (simulated): this run crashes once", file=sys.stderr)
        return 3

    rng = random.Random(args.seed)
    best = 1.0 - abs(math.log10(args.lr)) * 0.15  # lr = 1.0 is best in this toy problem
    accuracy = 0.0
    log_result = None
    if os.environ.get("ONAGER_LAUNCH_DIR"):
        with contextlib.suppress(ImportError):
            from onager import log_result
    for step in range(1, args.steps + 1):
        accuracy = best * (1 - 0.5 ** step) + rng.uniform(-0.01, 0.01)
        print(f"step {step}: accuracy {accuracy:.4f}")
        if log_result is not None:
            log_result(step=step, loss=round(1 - accuracy, 4))  # a learning curve in onager report
        time.sleep(0.02)
    print(f"Test accuracy: {accuracy:.4f}")
    try:
        import onager
        if os.environ.get("ONAGER_LAUNCH_DIR"):
            onager.log_result(accuracy=round(accuracy, 4))
    except ImportError:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
