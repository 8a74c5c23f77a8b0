"""ssh: outputs come home and remote dirs go away.

Before anything is sent, the LOCAL launch dir notes each host's remote dir in
`remote-dirs/<host>.json`; before a remote dir is removed (end of a launch, interrupt,
cancel, the next contact after a lost host or kill -9), its `results/` (log_result records)
and the files matching `--fetch GLOB` are copied home; the note goes once the host confirmed
the removal."""
from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import sys
import time
from collections.abc import Sequence
from typing import IO, Any

from onager.backends.pool import alive, read_pool_file
from onager.backends.ssh.hosts import _HOST_RE, HostSpec
from onager.backends.ssh.transport import CONNECT_TIMEOUT, ssh_base
from onager.errors import OnagerError, UsageError
from onager.fsutil import atomic_write
from onager.layout import REMOTE_DIRS, RESULTS, LaunchPaths, launch_of_remote_dirs

#: in the LOCAL launch dir: one file per host whose remote launch dir may exist, written before
#: anything is sent and removed once that dir is gone; what is left after the dispatcher ended
#: (an interrupt during cleanup, a lost host, kill -9) is removed at the next contact
REMOTE_LEDGER = REMOTE_DIRS  # kept for importers; the paths are LaunchPaths.remote_dirs*

def check_fetch(globs: Any) -> list[str]:
    """--fetch GLOB values: relative, no `..`, printable (they reach a remote bash as data)."""
    if globs in (None, ""):
        return []
    values = [globs] if isinstance(globs, str) else list(globs)
    for glob in values:
        text = str(glob)
        if not text.strip() or text.startswith("/") or text.startswith("~") or ".." in text.split("/") or \
                any(ord(c) < 32 or ord(c) == 127 for c in text):
            raise UsageError(f"bad --fetch {text!r}: give a glob relative to the task's workdir, "
                             "without .. or control characters, e.g. --fetch 'out/*.png'")
    return [str(g) for g in values]


#: run by bash on a host: stage the --fetch files, then send results/ and them as one tar on stdout
FETCH_SCRIPT = r"""
cd "$1" 2>/dev/null || exit 0
R=$(pwd -P); W=$2; shift 2
rm -rf .fetch && mkdir .fetch || exit 1
if [ "$#" -gt 0 ] && [ -n "$W" ] && cd "$W" 2>/dev/null; then
  shopt -s nullglob globstar
  IFS=
  for p in "$@"; do for f in $p; do
    case "/$f/" in */../*) continue;; esac
    [ -f "$f" ] || continue
    mkdir -p -- "$R/.fetch/$(dirname -- "$f")" && cp -p -- "$f" "$R/.fetch/$f"
  done; done
  cd "$R" || exit 1
fi
set --
[ -d """ + RESULTS + " ] && set -- " + RESULTS + r"""
[ -n "$(ls -A .fetch)" ] && set -- "$@" .fetch
[ "$#" -eq 0 ] || exec tar -cf - "$@"
"""

def fetch_command(remote: str, workdir: str | None, globs: Sequence[str]) -> str:
    return shlex.join(["bash", "-c", FETCH_SCRIPT, "onager-fetch", remote, workdir or "", *globs])


def _ledger_workdir(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8") as handle:
            value = json.load(handle).get("workdir")
    except (OSError, ValueError, AttributeError):
        return None
    return value if isinstance(value, str) else None


def fetch_home(options: dict[str, Any], ledger: str, host: str, remote: str,
               timeout: float = 600) -> str | None:
    """Copy a host's `results/` (log_result records, appended to the local ones) and its --fetch
    files (into `fetched/<host>/`) into the local launch dir; returns None or an error."""
    import subprocess
    import threading
    launch_dir = launch_of_remote_dirs(ledger)
    globs = check_fetch(options.get("fetch"))
    command = fetch_command(remote, _ledger_workdir(ledger), globs)
    try:
        proc = subprocess.Popen(ssh_base(options) + [host, command], stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    except (OSError, OnagerError) as exc:
        return str(exc)
    assert proc.stdout is not None  # PIPE
    timer = threading.Timer(timeout, proc.kill)
    timer.start()
    try:
        error = _unpack_home(proc.stdout, launch_dir, HostSpec(host).key)
    finally:
        proc.stdout.close()
        code = proc.wait()
        timer.cancel()
    return error or (f"ssh exit code {code}" if code else None)


def _unpack_home(stream: IO[bytes], launch_dir: str, host_key: str) -> str | None:
    """Read the fetch tar: only plain files under results/ and .fetch/, no absolute or `..` name."""
    import tarfile
    paths = LaunchPaths(launch_dir)
    try:
        with tarfile.open(fileobj=stream, mode="r|") as tar:
            for member in tar:
                parts = member.name.split("/")
                if not member.isfile() or member.name.startswith("/") or ".." in parts or len(parts) < 2:
                    continue
                handle = tar.extractfile(member)
                data = handle.read() if handle is not None else b""
                if parts[0] == RESULTS and len(parts) == 2 and re.fullmatch(r"\d+\.jsonl", parts[1]):
                    os.makedirs(paths.results_dir, exist_ok=True)
                    with open(os.path.join(paths.results_dir, parts[1]), "ab") as out:
                        out.write(data)
                elif parts[0] == ".fetch":
                    atomic_write(paths.fetched(host_key, *parts[1:]), data)
    except tarfile.ReadError as exc:
        if "empty file" in str(exc):
            return None  # nothing to bring home
        return f"bad fetch stream ({exc})"
    except OSError as exc:
        return str(exc)
    return None


def fetch_all(options: dict[str, Any], entries: Sequence[tuple[str, str, str]],
              timeout: float = 600) -> None:
    """fetch_home for every entry, all hosts at once; a failure is one line on stderr."""
    import threading
    def work(path: str, host: str, remote: str) -> None:
        error = fetch_home(options, path, host, remote, timeout)
        if error:
            print(f"onager: could not fetch the outputs from {host}:{remote} ({error})", file=sys.stderr)

    threads = [threading.Thread(target=work, args=e, daemon=True) for e in entries]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout + 5)


def remove_command(remote: str) -> str:
    """Remove a launch's dir on a host (`<base>/<job>/<launch>/<host>`), and its launch, job and
    base dirs when they are left empty (never anything above the base)."""
    parts = remote.split("/")
    parents = " ".join(shlex.quote("/".join(parts[:n])) for n in range(len(parts) - 1, max(len(parts) - 4, 0), -1)
                       if "/".join(parts[:n]) not in ("", ".", ".."))
    return f"rm -rf {shlex.quote(remote)}; rmdir {parents} 2>/dev/null; true"


def record_remote(launch_dir: str, host: str, remote: str, workdir: str | None = None) -> None:
    """Note, before anything is sent, that `host` may get this launch's dir at `remote` (and where
    its tasks run there, for --fetch)."""
    key = HostSpec(host).key
    atomic_write(LaunchPaths(launch_dir).remote_dirs(key),
                 json.dumps({"host": host, "remote": remote, "workdir": workdir}) + "\n")


def remote_entries(launch_dir: str) -> list[tuple[str, str, str]]:
    """(ledger file, host, remote dir) of every remote dir this launch may have left."""
    folder = LaunchPaths(launch_dir).remote_dirs_dir
    try:
        names = sorted(os.listdir(folder))
    except OSError:
        return []
    out = []
    for name in names:
        if not name.endswith(".json") or name.startswith("."):
            continue
        path = os.path.join(folder, name)
        try:
            with open(path, encoding="utf-8") as handle:
                data = json.load(handle)
            host, remote = str(data["host"]), str(data["remote"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if _HOST_RE.match(host) and remote:
            out.append((path, host, remote))
    return out


def remove_remote_dirs(options: dict[str, Any], entries: Sequence[tuple[str, str, str]],
                       timeout: float = CONNECT_TIMEOUT + 30) -> list[tuple[str, str]]:
    """Remove remote launch dirs, all hosts at once, after their outputs came home (results,
    --fetch); an entry is forgotten only once its host confirmed the removal. Returns the
    (host, dir) pairs removed."""
    import subprocess
    fetch_all(options, entries, max(timeout, 600) if options.get("fetch") else timeout)
    procs = []
    for path, host, remote in entries:
        try:
            procs.append((path, host, remote, subprocess.Popen(
                ssh_base(options) + [host, remove_command(remote)],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)))
        except (OSError, OnagerError):
            continue
    deadline = time.monotonic() + timeout
    removed = []
    for path, host, remote, proc in procs:
        try:
            code = proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            continue
        if code == 0:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            removed.append((host, remote))
    return removed


def dispatcher_alive(launch_dir: str) -> bool:
    """Whether the dispatcher of a launch may still run (and so still use its remote dirs).
    A dispatcher on another machine cannot be checked from here: it counts as alive."""
    import socket
    info = read_pool_file(LaunchPaths(launch_dir).pool_json)
    if info is None or info.get("pid") is None:
        return False
    if info.get("host") != socket.gethostname():
        return True
    try:
        return alive(int(info["pid"]), info.get("pstart"))
    except (TypeError, ValueError):
        return False


def sweep_stale(root: str = ".", hosts: Sequence[str] | None = None, skip: Sequence[str] = (),
                timeout: float = CONNECT_TIMEOUT + 30) -> list[tuple[str, str, str]]:
    """Remove the remote dirs left by finished ssh launches of this project (their dispatcher
    is gone), on `hosts` only when given (those known to answer). Returns (launch, host, dir)."""
    import threading

    from onager.index import JobIndex
    skipped = {os.path.abspath(p) for p in skip}
    wanted = None if hosts is None else set(hosts)
    removed: list[tuple[str, str, str]] = []
    try:
        records = JobIndex(root).records()
    except (OSError, ValueError, OnagerError):
        return removed
    work = []
    for record in records:
        if record.backend != "ssh" or os.path.abspath(record.launch_dir) in skipped:
            continue
        entries = [e for e in remote_entries(record.launch_dir) if wanted is None or e[1] in wanted]
        if entries and not dispatcher_alive(record.launch_dir):
            work.append((record, entries))
    results: list[list[tuple[str, str]]] = [[] for _ in work]

    def clean(i: int, record: Any, entries: Sequence[tuple[str, str, str]]) -> None:
        results[i] = remove_remote_dirs(dict(record.options or {}), entries, timeout)

    threads = [threading.Thread(target=clean, args=(i, r, e), daemon=True) for i, (r, e) in enumerate(work)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout + 5)
    for (record, _), done in zip(work, results):
        removed += [(record.key, host, remote) for host, remote in done]
    return removed
