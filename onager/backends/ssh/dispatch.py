"""ssh: the dispatcher, which keeps every host filled up to its slots until each task ran once
(cancel requests, Ctrl-C, progress and the pool file come from onager.backends.pool)."""
from __future__ import annotations

import contextlib
import os
import selectors
import sys
import time
from collections import deque
from collections.abc import Sequence
from typing import Any, Callable

import onager.backends.ssh.faults as faults
from onager.backends.pool import (
    CancelWatch,
    Stop,
    current_stop,
    mark_skipped,
    progress_line,
    show_progress,
    stop_on_signals,
)
from onager.backends.ssh.channel import _Host, _MarkerFilter, _Run
from onager.backends.ssh.hosts import _check_gpus, parse_hosts, slot_gpus
from onager.backends.ssh.ledger import record_remote, remote_entries, remove_remote_dirs
from onager.backends.ssh.remote import launch_key, remote_dir_of, remote_workdir, setup_host, task_command
from onager.backends.ssh.transport import (
    SESSIONS_PER_MASTER,
    HostInfo,
    kill_command,
    probe_hosts,
    ssh_base,
    ssh_master_run,
)
from onager.errors import OnagerError
from onager.fsutil import atomic_write
from onager.layout import LaunchPaths
from onager.recovery import pool_retry
from onager.state import mark
from onager.tasklist import Tasklist


class Dispatcher:
    """Keeps every host filled up to its slots until each task has run once."""

    def __init__(self, launch_dir: str, jobname: str, launch_id: str, ids: Sequence[int],
                 options: dict[str, Any], progress: bool = False, log: Callable[[str], None] | None = None):
        import subprocess
        self.launch_dir = launch_dir
        self.paths = LaunchPaths(launch_dir)
        self.jobname = jobname
        self.launch_id = launch_id
        self.options = options
        self.ids = list(ids)
        self.pending: deque[int] = deque(self.ids)
        self.attempts: dict[int, int] = {}
        self.retries = int(options.get("retries", 1) if options.get("retries") not in (None, "") else 1)
        self.max_tasks = options.get("max_tasks")
        self.progress = progress
        self.log = log or _log
        self.hosts: list[_Host] = []
        self.runs: dict[int, _Run] = {}            # fd -> run (both fds of a run)
        self.active: list[_Run] = []
        self.selector = selectors.DefaultSelector()
        self.helpers: list[subprocess.Popen[bytes]] = []
        self.done = self.failed = self.cancelled = self.lost = 0
        self.failures: list[tuple[int, int]] = []
        self.lost_ids: list[int] = []
        self.cancels = CancelWatch(launch_dir, lambda ids: self._kill_cancelled())
        self.label = f"{jobname}/{launch_id}: "
        self.retry = pool_retry(launch_dir, options)  # --retries/--requeue for attempts that ended badly
        self.interrupted: str | None = None  # the account of a stop (Ctrl-C, SIGTERM, SIGHUP)
        self._skipped: list[int] = []  # pending tasks dropped for a launch-level cancel, to name

    # ---------------------------------------------------------------- hosts
    def prepare_hosts(self, probed: list[HostInfo] | None = None) -> None:
        """Probe every host, skip the unreachable ones, send the launch files to the others."""
        import threading
        specs = parse_hosts(self.options.get("hosts"))
        infos = probed or probe_hosts(self.options, [s.target for s in specs])
        per_task = self.options.get("gpus_per_task")
        default_gpus = self.options.get("gpus")
        if default_gpus is not None:
            default_gpus = _check_gpus(str(default_gpus), "--gpus")
        candidates = []
        key = launch_key(self.launch_dir, self.launch_id)
        for spec, info in zip(specs, infos):
            if not info.reachable:
                self.log(f"host {spec.target} is unreachable ({info.error}); skipping it")
                continue
            if not info.bash:
                self.log(f"host {spec.target} has no bash; skipping it")
                continue
            gpus = spec.gpus if spec.gpus is not None else default_gpus
            try:
                count, slots = slot_gpus(gpus, info.gpu_ids, spec.slots,
                                         int(per_task) if per_task is not None else None, spec.target, info.cpus)
            except OnagerError as exc:
                self.log(f"{exc}; skipping it")
                continue
            if count < 1:
                self.log(f"host {spec.target} has no slot to run tasks in; skipping it")
                continue
            remote = remote_dir_of(self.options, self.jobname, key, spec.key)
            candidates.append(_Host(spec, info, remote, slots, list(range(count))))
        errors: list[str | None] = [None] * len(candidates)
        for host in candidates:
            record_remote(self.launch_dir, host.name, host.remote, remote_workdir(self.launch_dir, host.remote))

        def work(i: int, host: _Host) -> None:
            try:
                for group in range(1, (len(host.slots) - 1) // SESSIONS_PER_MASTER + 1):
                    ssh_master_run(self.options, host.name, "true", group)
                errors[i] = setup_host(self.options, host.name, self.launch_dir, host.remote)
            except OnagerError as exc:
                errors[i] = str(exc)

        threads = [threading.Thread(target=work, args=(i, h), daemon=True) for i, h in enumerate(candidates)]
        try:
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        except BaseException:  # interrupted while sending: what reached a host goes again
            self._cleanup()
            raise
        for host, error in zip(candidates, errors):
            if error:
                self.log(f"cannot send the launch to host {host.name} ({error}); skipping it")
            else:
                self.hosts.append(host)
        if not self.hosts:
            self._cleanup()
            raise OnagerError("no ssh host is usable (see the messages above): check them with onager hosts")

    # ---------------------------------------------------------------- cancel
    def _kill_cancelled(self) -> None:
        import subprocess
        by_host: dict[str, list[int]] = {}
        for run in self.active:
            if self.cancels.marked(run.task_id) and run.pgid and not run.kill_sent:
                run.kill_sent = True
                by_host.setdefault(run.host.name, []).append(run.pgid)
        for host, pgids in by_host.items():
            self.helpers.append(subprocess.Popen(ssh_base(self.options) + [host, kill_command(pgids)],
                                                 stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                                 stderr=subprocess.DEVNULL))

    # ---------------------------------------------------------------- spawn
    def _free_slot(self) -> tuple[_Host, int] | None:
        best = None
        for host in self.hosts:
            if host.alive and host.checking is None and host.free and (
                    best is None or len(host.free) / len(host.slots) > len(best.free) / len(best.slots)):
                best = host
        if best is None:
            return None
        return best, best.free.pop(0)

    def _running_count(self) -> int:
        return sum(1 for r in self.active if not r.ended)

    def _spawn(self, task_id: int, host: _Host, slot: int) -> None:
        import secrets
        import subprocess
        nonce = secrets.token_hex(12)
        argv = ssh_base(self.options, slot // SESSIONS_PER_MASTER) + \
            [host.name, task_command(host.remote, task_id, nonce, host.slots[slot])]
        # the task's log files live as long as its run: _finish closes them
        out = open(self.paths.log(task_id, "out"), "ab", buffering=0)  # noqa: SIM115
        err = open(self.paths.log(task_id, "err"), "ab", buffering=0)  # noqa: SIM115
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                start_new_session=True, close_fds=True)
        assert proc.stdout is not None and proc.stderr is not None  # PIPE
        run = _Run(task_id, host, slot, nonce, proc, out, err)
        self.attempts[task_id] = self.attempts.get(task_id, 0) + 1

        def on_event(word: str, value: str, r: _Run = run) -> None:
            self._event(r, word, value)

        run.filters[proc.stdout.fileno()] = _MarkerFilter(nonce, out.write, on_event)
        run.filters[proc.stderr.fileno()] = None
        for stream in (proc.stdout, proc.stderr):
            os.set_blocking(stream.fileno(), False)
            self.selector.register(stream, selectors.EVENT_READ, run)
        self.active.append(run)

    def _event(self, run: _Run, word: str, value: str) -> None:
        if word == "start" and value.isdigit() and run.pgid is None:
            run.pgid = int(value)
            run.host.start_failures = 0
            name = f"{run.task_id}.start@{time.time():.6f}"
            atomic_write(self.paths.state(name), f"{run.host.name} {run.pgid} ssh -\n")
            if self.cancels.marked(run.task_id) or run.task_id in self.cancels:
                self._kill_cancelled()
        elif word == "end" and value.lstrip("-").isdigit() and run.rc is None:
            run.rc = int(value)
            self._finish(run, run.rc)

    def _finish(self, run: _Run, rc: int) -> None:
        """The task ended (its end marker came, or it was cancelled): record it, free the slot."""
        run.ended = True
        mark(self.launch_dir, run.task_id, "end", rc)
        if run.task_id in self.cancels and rc != 0:
            self.cancelled += 1
        elif rc == 0:
            self.done += 1
        elif self.retry is not None and self.retry(run.task_id, rc):
            self.pending.append(run.task_id)  # --retries: a new attempt, on whichever host is free
        else:
            self.failed += 1
            self.failures.append((run.task_id, rc))
        run.host.free.append(run.slot)
        if run.proc.stdin is not None:
            with contextlib.suppress(OSError):
                run.proc.stdin.close()  # the runner's watcher sees EOF: the channel can close

    # ---------------------------------------------------------------- reading
    def _read(self, key: selectors.SelectorKey) -> None:
        run: _Run = key.data
        stream = key.fileobj
        fd = stream if isinstance(stream, int) else stream.fileno()
        try:
            data = os.read(fd, 1 << 16)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if data:
            flt = run.filters[fd]
            if flt is None:
                run.err.write(data)
            else:
                flt.feed(data)
            return
        self.selector.unregister(stream)
        flt = run.filters[fd]
        if flt is not None:
            flt.close()
        run.open_streams -= 1
        if run.open_streams == 0:
            self._closed(run)

    def _closed(self, run: _Run) -> None:
        """Both streams of a run are at their end: reap ssh, decide what happened."""
        import subprocess
        try:
            code = run.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            run.proc.kill()
            code = run.proc.wait()
        for stream in (run.proc.stdin, run.proc.stdout, run.proc.stderr, run.out, run.err):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        self.active.remove(run)
        if run.ended:
            return
        if run.task_id in self.cancels:
            self._finish(run, 143 if code in (0, 255) else code)
            return
        # no end marker: the connection broke or the runner was killed. The task may still run
        # there: it goes elsewhere only once the host confirmed its group is dead (killed), and
        # its slot (its GPUs) is given out again only then
        if not run.host.alive:
            self._lose(run.host, [run], "host-lost")
            return
        run.host.suspects.append(run)
        if run.host.checking is None:
            self._check(run.host)

    def _check(self, host: _Host) -> None:
        faults.check(self, host)

    def _check_hosts(self) -> None:
        faults.check_hosts(self)

    def _lose(self, host: _Host, runs: Sequence[_Run], reason: str) -> None:
        for run in runs:
            if run.pgid is None:
                # never started: safe to send again, no attempt spent (a host that keeps failing
                # to start tasks is dropped after 3, so this cannot loop forever)
                self.attempts[run.task_id] -= 1
                self.pending.appendleft(run.task_id)
                continue
            mark(self.launch_dir, run.task_id, "lost", reason)
            if self.attempts.get(run.task_id, 0) <= self.retries:
                self.pending.appendleft(run.task_id)
            else:
                self.lost += 1
                self.lost_ids.append(run.task_id)
                self.log(f"task {run.task_id} was lost ({reason} on {host.name}) after "
                         f"{self.attempts.get(run.task_id, 0)} attempts; not retried again")

    # ---------------------------------------------------------------- main loop
    def _show(self, start: float, final: bool = False) -> None:
        running = self._running_count()
        hosts = " ".join(f"{h.name}:{sum(1 for r in self.active if r.host is h and not r.ended)}/{len(h.slots)}"
                         + ("" if h.alive else "(lost)") for h in self.hosts)
        show_progress(progress_line(self.label, self.done, self.failed, running, len(self.pending),
                                    time.time() - start, self.cancelled, self.lost, " " + hosts), final)

    def run(self) -> int:
        """Run every task; return the number that failed (raises when every host is lost).
        Ctrl-C, SIGTERM or SIGHUP kill every task (see `_interrupt`) and raise KeyboardInterrupt."""
        with stop_on_signals():
            return self._run()

    def _run(self) -> int:
        import subprocess
        start = time.time()
        last_shown = 0.0
        try:
            self.cancels.refresh()
            while True:
                cap = int(self.max_tasks) if self.max_tasks not in (None, "", -1, "-1") else None
                while self.pending and (cap is None or self._running_count() < cap):
                    task_id = self.pending[0]
                    if task_id in self.cancels:
                        self.pending.popleft()
                        self.cancelled += 1
                        if task_id not in self.cancels.ids:  # a launch-level cancel: name it
                            self._skipped.append(task_id)
                        continue
                    slot = self._free_slot()
                    if slot is None:
                        break
                    self.pending.popleft()
                    self._spawn(task_id, *slot)
                self._name_skipped()
                if not self.active and not any(h.checking for h in self.hosts):
                    if not self.pending:
                        break
                    if not any(h.alive for h in self.hosts):
                        break
                for key, _ in self.selector.select(timeout=0.25):
                    self._read(key)
                self._check_hosts()
                self.helpers = [p for p in self.helpers if p.poll() is None]
                if time.time() - last_shown > 0.5:
                    self.cancels.refresh()
                    if self.progress:
                        self._show(start)
                    last_shown = time.time()
        except KeyboardInterrupt:
            self._interrupt(current_stop())
            self._cleanup()
            raise
        finally:
            for p in self.helpers:
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    p.kill()
        if self.progress:
            self._show(start, final=True)
        self._cleanup()
        if self.pending:
            left = Tasklist.from_ids(sorted(self.pending))
            raise OnagerError(f"every ssh host was lost; tasks {left} did not run: resume with onager launch "
                              f"--jobname {self.jobname} --tasklist unfinished")
        return self.failed

    def _name_skipped(self) -> None:
        if self._skipped:
            with contextlib.suppress(OSError):
                mark_skipped(self.launch_dir, self._skipped, "cancel")
            self._skipped = []

    def _interrupt(self, stop: Stop) -> None:
        faults.interrupt(self, stop)

    def _cleanup(self) -> None:
        """Remove this launch's dir from every host it may have reached, except hosts known to be
        lost (a connect timeout each): their dirs stay in the ledger for the next contact."""
        lost = {h.name for h in self.hosts if not h.alive}
        entries = [e for e in remote_entries(self.launch_dir) if e[1] not in lost]
        remove_remote_dirs(self.options, entries)


def _log(text: str) -> None:
    """One message line; a terminal that went away (SIGHUP) must not stop the dispatcher."""
    with contextlib.suppress(OSError, ValueError):
        print(f"onager: {text}", file=sys.stderr)
