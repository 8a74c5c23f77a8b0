"""ssh: what the dispatcher does when things go wrong: a channel that closed without an end
(kill the attempt's group on the host before the task may run elsewhere; no answer: the host
is lost) and a stop (Ctrl-C, SIGTERM, SIGHUP: mark, kill on every host, say what was done)."""
from __future__ import annotations

import contextlib
import time
from typing import Any

from onager.backends.pool import GRACE, NOT_STARTED_MARKS, Stop, interrupt_message, mark_skipped, request_cancel
from onager.backends.ssh.channel import _Host
from onager.backends.ssh.transport import CONNECT_TIMEOUT, kill_command, ssh_base
from onager.state import mark

#: `d` below is the Dispatcher (onager.backends.ssh.dispatch), not imported here: that module
#: imports this one, and imports go one way
Dispatcher = Any


def check(d: Dispatcher, host: _Host) -> None:
    """Kill the suspects' process groups on the host (SIGTERM, SIGKILL after the grace), in
    a master=True call: when the host answers, it also gets a fresh master connection."""
    import subprocess
    host.checked, host.suspects = host.suspects, []
    pgids = [r.pgid for r in host.checked if r.pgid]
    host.checking = subprocess.Popen(ssh_base(d.options, master=True) +
                                     [host.name, kill_command(pgids) if pgids else "true"],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)


def check_hosts(d: Dispatcher) -> None:
    for host in d.hosts:
        if host.checking is None or host.checking.poll() is None:
            continue
        ok = host.checking.returncode == 0
        host.checking = None
        suspects, host.checked = host.checked, []
        if ok:
            host.free.extend(r.slot for r in suspects)
            host.start_failures += sum(1 for r in suspects if r.pgid is None)
            if host.start_failures >= 3:
                # it answers, but its tasks do not even start: stop sending work there
                host.alive = False
                d.log(f"host {host.name} answers but cannot start tasks (see logs/"
                         f"{suspects[-1].task_id}.err); no more tasks go there")
            d._lose(host, suspects, "connection-lost")
            if host.suspects and host.alive:  # closed while that call ran: check them too
                check(d, host)
            elif host.suspects:
                d._lose(host, host.suspects, "host-lost")
                host.suspects = []
            continue
        suspects, host.suspects = suspects + host.suspects, []
        host.alive = False
        others = [r for r in d.active if r.host is host and not r.ended]
        d.log(f"host {host.name} was lost; {len(suspects) + len(others)} of its running tasks "
                 f"will run elsewhere (up to --retries {d.retries} times)")
        for run in others:
            with contextlib.suppress(OSError):
                run.proc.kill()
            run.ended = True
        d._lose(host, suspects + others, "host-lost")


def interrupt(d: Dispatcher, stop: Stop) -> None:
    """Ctrl-C, SIGTERM or SIGHUP: mark every unfinished task cancelled (reason interrupted),
    then kill the running ones on their hosts (SIGTERM, SIGKILL after the grace; a second
    signal sends SIGKILL at once) and close their channels. Later signals never cut this
    short; `d.interrupted` says what was done and what could not be confirmed."""
    import subprocess
    why = "interrupted"
    d._name_skipped()
    runs = [r for r in d.active if not r.ended]
    checking = [r for h in d.hosts for r in h.checked + h.suspects]
    pending = [t for t in d.pending if not d.cancels.marked(t)]
    for run in runs + checking:
        with contextlib.suppress(OSError):
            mark(d.launch_dir, run.task_id, "cancel", why)
    with contextlib.suppress(OSError):
        request_cancel(d.launch_dir, pending, why, per_task=())
    by_host: dict[str, list[int]] = {}
    for run in runs:
        if run.pgid:
            by_host.setdefault(run.host.name, []).append(run.pgid)
    procs = {h: subprocess.Popen(ssh_base(d.options) + [h, kill_command(p)], stdin=subprocess.DEVNULL,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
             for h, p in by_host.items()}
    deadline = time.monotonic() + GRACE + CONNECT_TIMEOUT + 5
    hurried: dict[str, subprocess.Popen[bytes]] = {}
    while any(p.poll() is None for p in procs.values()) and time.monotonic() < deadline:
        if stop.hurry and not hurried:
            hurried = {h: subprocess.Popen(ssh_base(d.options) + [h, kill_command(by_host[h], grace=0)],
                                           stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                           stderr=subprocess.DEVNULL)
                       for h, p in procs.items() if p.poll() is None}
        if hurried and all(p.poll() is not None for p in hurried.values()):
            break
        time.sleep(0.05)
    confirmed = set()
    for host, proc in procs.items():
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.returncode == 0 or (host in hurried and hurried[host].poll() == 0):
            confirmed.add(host)
    for proc in hurried.values():
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    for run in list(d.active):
        with contextlib.suppress(OSError):
            run.proc.kill()  # the channel closes: the runner's watcher kills what is left too
    marked = 0
    with contextlib.suppress(OSError):
        marked = mark_skipped(d.launch_dir, pending[:NOT_STARTED_MARKS], why)
    d.cancelled += len(pending)
    killed = sum(len(by_host[h]) for h in confirmed)
    text = interrupt_message(f"{d.label.rstrip(': ')} stopped", killed, [], len(pending), marked)
    unsure = sorted(set(by_host) - confirmed)
    if unsure:
        text += (f"; {sum(len(by_host[h]) for h in unsure)} task(s) on {', '.join(unsure)} could not be "
                 "confirmed killed (no answer); their runner kills them when it sees the channel closed")
    d.interrupted = text
