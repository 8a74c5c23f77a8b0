"""A toy training run for the examples of docs/sweeps.md: no data, no dependency.

Its validation accuracy peaks at --lr 0.03, grows with --epochs, and moves a little
with the replicate number that `+repeat` exports as ONAGER_REPLICATE.
"""
import argparse
import os

import onager

parser = argparse.ArgumentParser()
parser.add_argument("--lr", type=float, default=0.1)
parser.add_argument("--epochs", type=int, default=1)
args, _ = parser.parse_known_args()
replicate = int(os.environ.get("ONAGER_REPLICATE", "1"))
val_acc = 0.9 - abs(args.lr - 0.03) - 0.5 / (args.epochs + 1) + 0.01 * replicate
onager.log_result(val_acc=round(val_acc, 4))
print(f"lr={args.lr} epochs={args.epochs} replicate={replicate} val_acc={val_acc:.4f}")
