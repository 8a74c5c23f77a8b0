"""SSH backend: a few machines you can ssh into, used as one pool.

We call the system OpenSSH client (so `~/.ssh/config` aliases, the agent and
ProxyJump all work) with BatchMode and connection sharing: one master connection
per host (and per 8 slots), every task a cheap session on it.

Nothing is assumed shared between this machine and the hosts. Once per host, the
launch's `tasks.sh`, `tasks.idx`, a host copy of `wrapper.sh` (identical but for
its log redirection, so that output comes back over the channel) and a small
runner `onager-run.sh` are sent by tar over ssh into
`<remote-dir>/<job>/<launch>-<key>/<host>/`. Each task is then one ssh session running
`onager-run.sh ID NONCE [GPUS]`, which prints `NONCE start PGID` on stdout, runs
the wrapper with its stdout/stderr on the channel, and prints `NONCE end RC`.
The dispatcher copies the channel into the local `logs/<id>.out|err` (the marker
lines removed) and writes the usual `state/<id>.start@..` and `state/<id>.end@..@rc`
in the LOCAL launch dir, so list, wait, logs, cancel and `--tasklist failed` work
as for every other backend.

The runner's stdin stays open while the dispatcher watches the task: if the
dispatcher dies or the connection drops, the remote task's process group is
killed, so a lost host leaves nothing running behind it.

Modules: `hosts` (the --hosts grammar, GPU slots), `transport` (ssh calls, probes),
`remote` (the remote layout, sending a launch), `ledger` (outputs home, remote dirs
removed), `channel` and `dispatch` (the dispatcher on the shared pool engine,
onager.backends.pool); this module holds the backend. `python -m onager.backends.ssh
LAUNCH_DIR` runs a `--detach` dispatcher.
"""
from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from onager.backends.base import Backend, LaunchInfo, Option
from onager.backends.pool import (
    PER_TASK_CANCEL_MARKS,
    detached_setup,
    mark_skipped,
    query_pools,
    request_cancel,
    running_starts,
    spawn_detached,
    stop_on_signals,
    write_pool_file,
)
from onager.backends.ssh.channel import _MarkerFilter
from onager.backends.ssh.dispatch import Dispatcher
from onager.backends.ssh.hosts import _HOST_RE, HostSpec, _check_gpus, parse_hosts, slot_gpus
from onager.backends.ssh.ledger import (
    REMOTE_LEDGER,
    check_fetch,
    dispatcher_alive,
    fetch_home,
    record_remote,
    remote_entries,
    remove_command,
    remove_remote_dirs,
    sweep_stale,
)
from onager.backends.ssh.remote import (
    DEFAULT_REMOTE_DIR,
    RUNNER,
    RUNNER_TEXT,
    WRAPPER_LOG_LINE,
    host_wrapper,
    remote_dir_of,
    setup_command,
    setup_host,
    task_command,
)
from onager.backends.ssh.transport import (
    CONNECT_TIMEOUT,
    SESSIONS_PER_MASTER,
    HostInfo,
    _ssh_error,
    _truthy,
    control_dir,
    kill_command,
    probe_host,
    probe_hosts,
    ssh_base,
    ssh_master_run,
)
from onager.errors import OnagerError, UsageError
from onager.layout import LaunchPaths, project_root
from onager.notify import notify_pool
from onager.state import read_states
from onager.tasklist import Tasklist

#: what this module exported before it became a package (code and tests import these from here)
__all__ = ["BACKEND", "CONNECT_TIMEOUT", "DEFAULT_REMOTE_DIR", "REMOTE_LEDGER", "RUNNER", "RUNNER_TEXT",
           "SESSIONS_PER_MASTER", "WRAPPER_LOG_LINE", "Dispatcher", "HostInfo", "HostSpec", "SshBackend",
           "_MarkerFilter", "check_fetch", "control_dir", "dispatcher_alive", "fetch_home", "host_wrapper",
           "kill_command", "parse_hosts", "probe_host", "probe_hosts", "record_remote", "remote_dir_of",
           "remote_entries", "remove_command", "remove_remote_dirs", "setup_command", "setup_host", "slot_gpus",
           "ssh_base", "ssh_master_run", "sweep_stale", "task_command"]


class SshBackend(Backend):
    name = "ssh"
    runs_in_foreground = True
    # --detach and --gpus-per-task are the local backend's options, read from options too
    OPTIONS: Sequence[Option] = (
        Option("hosts", metavar="LIST", help="ssh: hosts as [user@]host[:slots][:gpus=0,1], comma-separated "
                                             "(any ~/.ssh/config alias; config: ssh hosts)"),
        Option("ssh_config", metavar="FILE", help="ssh: pass -F FILE to every ssh call"),
        Option("remote_dir", default=DEFAULT_REMOTE_DIR, metavar="DIR",
               help=f"ssh: where the launch files go on each host (default {DEFAULT_REMOTE_DIR})"),
        Option("fetch", "list", metavar="GLOB",
               help="ssh: copy the files matching GLOB (relative to the task's workdir) back into "
                    "<launch>/fetched/<host>/ before the remote dir goes; repeatable"),
        Option("ssh_no_host_key_check", "flag", help="ssh: UNSAFE, accept any host key (open to "
                                                     "man-in-the-middle); for throw-away test machines only"),
    )

    def __init__(self, options=None):
        super().__init__(options)
        self.failed = 0
        self.probed: list[HostInfo] | None = None

    def check_options(self) -> None:
        """Refuse bad ssh options with one line (called before anything is written, and by submit_commands)."""
        self._checked_hosts()

    def _checked_hosts(self) -> list[HostSpec]:
        """check_options, and the parsed --hosts."""
        super().check_options()
        specs = parse_hosts(self.options.get("hosts"))
        config = self.options.get("ssh_config")
        if config and not os.path.isfile(os.path.expanduser(str(config))):
            raise UsageError(f"--ssh-config {config}: no such file; give the path of an ssh config file")
        retries = self.options.get("retries")
        if retries not in (None, "") and int(retries) < 0:
            raise UsageError("--retries must be 0 or more")
        most = self.options.get("max_tasks")
        if most not in (None, "", -1, "-1") and int(most) < 1:
            raise UsageError("--max-tasks must be at least 1")
        if self.options.get("gpus") is not None:
            _check_gpus(str(self.options["gpus"]), "--gpus")
        remote_dir_of(self.options, "job", "1", "host")
        check_fetch(self.options.get("fetch"))
        return specs

    def submit_commands(self, launch: LaunchInfo) -> list[list[str]]:
        specs = self._checked_hosts()
        out = []
        for spec in specs:
            remote = remote_dir_of(self.options, launch.jobname, launch.launch_id, spec.key)
            out.append(ssh_base(self.options) + [spec.target, task_command(remote, 0, "NONCE", None)
                                                 .replace(" 0 NONCE", " ID NONCE")])
        return out

    def preflight(self, launch: LaunchInfo) -> None:
        """Refuse before anything is recorded when no host answers (probes are kept for submit)."""
        self.check_options()
        self.probed = probe_hosts(self.options, [s.target for s in parse_hosts(self.options["hosts"])])
        if not any(i.reachable for i in self.probed):
            detail = "; ".join(f"{i.target}: {i.error}" for i in self.probed)
            raise OnagerError(f"no ssh host is reachable ({detail}): check them with onager hosts")

    def submit(self, launch: LaunchInfo) -> list[str]:
        if self.probed is None:
            self.preflight(launch)
        self._sweep(launch)
        pool_file = launch.paths.pool_json
        if _truthy(self.options.get("detach")):
            for info in self.probed or []:
                if not info.reachable:
                    print(f"onager: host {info.target} is unreachable ({info.error}); skipping it", file=sys.stderr)
            write_pool_file(pool_file, spawn_detached("onager.backends.ssh", launch.launch_dir))
            return []
        write_pool_file(pool_file, os.getpid())
        dispatcher = Dispatcher(launch.launch_dir, launch.jobname, launch.launch_id, list(launch.tasklist),
                                self.options, progress=sys.stderr.isatty())
        # Ctrl-C, kill and a closed terminal all stop the tasks and remove the remote dirs
        try:
            with stop_on_signals():
                dispatcher.prepare_hosts(self.probed)
                self.failed = dispatcher.run()
        finally:
            self.interrupted = dispatcher.interrupted
            write_pool_file(pool_file, None)
            notify_pool(launch.launch_dir, self.options)  # --notify: the launch has ended
        self.summary = dispatcher
        if dispatcher.lost_ids:
            text = (f"tasks {Tasklist.from_ids(sorted(dispatcher.lost_ids))} were lost with their host "
                    f"(--retries {dispatcher.retries} used up); rerun them with: onager launch "
                    f"--jobname {launch.jobname} --tasklist failed")
            if not self.failed:
                raise OnagerError(text)
            print(f"onager: {text}", file=sys.stderr)
        return []

    def _sweep(self, launch: LaunchInfo) -> None:
        """The next contact with a host removes the dirs that finished launches left there."""
        root = project_root(launch.launch_dir)
        answering = [i.target for i in self.probed or [] if i.reachable]
        removed = sweep_stale(root, answering, skip=[launch.launch_dir])
        if removed:
            shown = ", ".join(f"{key} on {host}" for key, host, _ in removed)
            print(f"onager: removed {len(removed)} remote launch dir(s) left behind: {shown}", file=sys.stderr)

    def query(self, records) -> dict[str, dict[int, str] | None]:
        return query_pools(records)

    def cancel(self, record, tasks: Tasklist, dry_run: bool = False) -> list[list[str]]:
        """Mark, then kill the running tasks' groups on their hosts (SIGTERM, SIGKILL after the
        grace): one listing of state/ for the starts, one ssh call per host."""
        import subprocess
        states = read_states(record.launch_dir)
        targets = [i for i in tasks if not ((st := states.get(i)) is not None and st.end is not None)]
        chosen = set(targets)
        starts = {i: s for i, s in running_starts(record.launch_dir, chosen.__contains__).items()
                  if _HOST_RE.fullmatch(s.host)}
        by_host: dict[str, list[int]] = {}
        for start in starts.values():
            by_host.setdefault(start.host, []).append(start.pid)
        options = dict(record.options or {})
        commands = [ssh_base(options) + [host, kill_command(pgids)] for host, pgids in by_host.items()]
        if dry_run:
            return commands or [["# nothing running to kill;", f"{len(targets)} tasks would be marked cancelled"]]
        not_started = [i for i in targets if i not in starts]
        few = len(not_started) <= PER_TASK_CANCEL_MARKS
        request_cancel(record.launch_dir, targets, "cancel", per_task=list(starts) + (not_started if few else []))
        if not few and not dispatcher_alive(record.launch_dir):
            mark_skipped(record.launch_dir, not_started, "cancel")  # no dispatcher will skip them
        procs = [subprocess.Popen(c, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE) for c in commands]
        for command, proc in zip(commands, procs):
            try:
                _, err = proc.communicate(timeout=CONNECT_TIMEOUT + 20)
            except subprocess.TimeoutExpired:
                proc.kill()
                err = b"no answer"
            if proc.returncode:
                print(f"onager: could not reach {command[-2]} to kill its tasks "
                      f"({_ssh_error(err.decode('utf-8', 'replace'), proc.returncode)}); they are marked cancelled",
                      file=sys.stderr)
        if not dispatcher_alive(record.launch_dir):  # a live dispatcher removes its dirs itself
            remove_remote_dirs(options, remote_entries(record.launch_dir), timeout=CONNECT_TIMEOUT + 5)
        return commands


def _detached_main(launch_dir: str) -> int:
    """Entry of a `--detach` dispatcher: options come from the launch's own launch.json."""
    meta = detached_setup(launch_dir)
    dispatcher = Dispatcher(launch_dir, meta["jobname"], meta["launch_id"],
                            list(Tasklist.parse(meta["tasklist"])), meta.get("options", {}),
                            log=lambda text: print(f"onager: {text}", file=sys.stderr, flush=True))
    try:
        dispatcher.prepare_hosts()
        failed = dispatcher.run()
    except KeyboardInterrupt:
        print(f"onager: {dispatcher.interrupted or 'stopped'}", file=sys.stderr, flush=True)
        return 130
    except OnagerError as exc:
        print(f"onager: error: {exc}", file=sys.stderr, flush=True)
        return 1
    finally:
        write_pool_file(LaunchPaths(launch_dir).pool_json, None)
        notify_pool(launch_dir, meta.get("options", {}))
    return 1 if failed else 0


BACKEND = SshBackend
