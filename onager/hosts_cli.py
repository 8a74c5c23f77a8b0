"""`onager hosts`: what each ssh host has (CPUs, memory, load, GPUs), before a launch uses it.

One ssh call per host, all at once, so a slow or dead host costs one connect timeout,
not one per host.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from onager.errors import UsageError


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "hosts", help="CPUs, memory, load and GPUs of the ssh hosts",
        epilog="examples:\n  onager hosts --hosts 'gpu1:4,gpu2:2'\n"
               "  onager hosts            (hosts from: onager config --write ssh hosts ...)\n"
               "  onager hosts --ssh-config ./cluster_ssh_config --json\n"
               "  onager hosts --clean    (remove remote dirs that finished launches left behind)",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--hosts", default=None, metavar="LIST",
                   help="hosts as [user@]host[:slots][:gpus=0,1] (default: config ssh hosts)")
    p.add_argument("--ssh-config", dest="ssh_config", default=None, metavar="FILE",
                   help="pass -F FILE to ssh (default: config ssh ssh_config)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--clean", action="store_true",
                   help="also remove, from the hosts that answer, the remote launch dirs that finished ssh "
                        "launches of this project left behind (a lost host, an interrupted cleanup)")


def _gib(kb: int | None) -> str:
    return "" if kb is None else f"{kb / 1048576:.1f}G"


def _gpu_text(gpus: list[dict[str, str]]) -> str:
    if not gpus:
        return "-"
    names: dict[str, int] = {}
    for g in gpus:
        names[g["name"]] = names.get(g["name"], 0) + 1
    used = "; ".join(f"{g['index']}:{g['mem_used']}/{g['mem_total']}MiB {g['util']}%" for g in gpus)
    return ", ".join(f"{n}x {name}" for name, n in names.items()) + f" ({used})"


def run(args: argparse.Namespace) -> int:
    from onager import config as configmod
    from onager.backends.ssh import parse_hosts, probe_hosts

    section = configmod.read_section("ssh")
    options: dict[str, Any] = {k.replace("-", "_"): v for k, v in section.items()}
    if args.hosts is not None:
        options["hosts"] = args.hosts
    if args.ssh_config is not None:
        options["ssh_config"] = args.ssh_config
    import os
    config = options.get("ssh_config")
    if config and not os.path.isfile(os.path.expanduser(str(config))):
        raise UsageError(f"--ssh-config {config}: no such file; give the path of an ssh config file")
    specs = parse_hosts(options.get("hosts"))
    infos = probe_hosts(options, [s.target for s in specs])
    if args.clean:
        from onager.backends.ssh import sweep_stale
        removed = sweep_stale(".", [i.target for i in infos if i.reachable])
        for key, host, remote in removed:
            print(f"onager: removed {remote} on {host} (left by {key})", file=sys.stderr)
        if not removed:
            print("onager: no remote launch dir left behind on the hosts that answer", file=sys.stderr)
    if args.json:
        rows = []
        for spec, info in zip(specs, infos):
            rows.append({"host": spec.target, "slots": spec.slots, "reachable": info.reachable,
                         "error": info.error or None, "hostname": info.hostname, "cpus": info.cpus,
                         "mem_kb": info.mem_kb, "avail_kb": info.avail_kb, "load": info.load,
                         "gpus": info.gpus})
        print(json.dumps(rows, indent=1))
    else:
        from tabulate import tabulate
        table = []
        for spec, info in zip(specs, infos):
            if info.reachable:
                table.append([spec.target, "yes", info.hostname, info.cpus if info.cpus is not None else "",
                              f"{_gib(info.avail_kb)}/{_gib(info.mem_kb)}" if info.avail_kb is not None
                              else _gib(info.mem_kb), info.load, _gpu_text(info.gpus)])
            else:
                table.append([spec.target, "NO: " + info.error, "", "", "", "", ""])
        print(tabulate(table, headers=["host", "reachable", "hostname", "cpus", "mem free/total",
                                       "load 1/5/15", "gpus"]))
    return 0 if all(i.reachable for i in infos) else 1
