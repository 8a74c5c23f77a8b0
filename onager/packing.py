"""Dynamic packing: `launch --workers W` and `launch --backend local --join JOB`.

A packed launch submits W array elements instead of one per task. Each element is a
**worker** (`worker.sh`, a bash loop: no Python per task) that takes the next task nobody
has taken and runs it through the launch's own wrapper.sh, so every task keeps its claim,
attempts, start and end names and logs, exactly as an unpacked task. Tasks of uneven length
keep every worker busy until none is left, where static `--tasks-per-node` groups leave
allocations idle behind their longest task.

Taking a task is one O_EXCL create of `packing/taken/<id>` in the launch directory (noclobber,
safe on NFS), holding `<worker> <host> <pid> <pstart>`. Only the winner starts the wrapper:
a worker that comes second skips the task silently, so `list` never shows `dup` records for
tasks another worker merely got first, and the wrapper's own claim (which cannot tell two
elements of one array job apart) never sees the race. Worker k starts walking the task list
at its own offset ((k-1)/W of the way), so workers contend only where their walks meet; a
taken id costs a `stat`.

A worker stops taking tasks when its allocation has less time left than the median elapsed
time of the launch's ended tasks (read once from state/ at start, then its own runs): Slurm
gives the end time (`squeue -o %e`, asked once), elsewhere the limit onager submitted counts
from the worker's start.

`list` maps the scheduler's answer for worker k onto the tasks k holds (started, not
ended); tasks nobody has taken are `pending` while any worker is queued or running, and
`lost (never-started)` once every worker has ended without reaching them (`--tasklist
unfinished` reruns them). `--join JOB` runs the same worker loop on this machine as
`--max-tasks` processes over the latest launch of JOB: the same taken names, so no task
runs twice.
"""
from __future__ import annotations

import os
import shlex
import sys
import time
from collections.abc import Iterable
from typing import Any

from onager.backends.base import Option, positive
from onager.errors import UsageError
from onager.fsutil import atomic_write, executable_mode
from onager.layout import STATE, WRAPPER, LaunchPaths
from onager.wrapper import shell_variable

TYPE_CHECKING = False
if TYPE_CHECKING:  # subprocess, socket and signal load where used: not with `launch --help`
    import subprocess

PACKING_DIR = "packing"   # in a launch directory: ids, taken/
IDS = "ids"               # the launch's task ids in order, one a line
TAKEN = "taken"           # taken/<id>: `<worker> <host> <pid> <pstart>`, created with O_EXCL
WORKER_SH = "worker.sh"   # the worker loop, beside wrapper.sh
LOCAL_PREFIX = "local-"   # a joiner's worker name: local-<n>

WORKERS = Option("workers", "int", metavar="W", config=False,
                 help="slurm/gridengine: submit W array elements, each a worker that runs the next task "
                      "nobody has taken until none is left or its time runs short (dynamic packing)")
JOIN = Option("join", metavar="JOB", config=False,
              help="local: help the workers of JOB's latest launch (--workers) run its remaining tasks, "
                   "--max-tasks at once; no task runs twice")


def paths(launch_dir: str) -> tuple[str, str, str]:
    """(packing dir, ids file, taken dir) of a launch."""
    base = os.path.join(launch_dir, PACKING_DIR)
    return base, os.path.join(base, IDS), os.path.join(base, TAKEN)


def is_packed(launch_dir: str) -> bool:
    """Whether a launch was submitted as workers (one stat)."""
    return os.path.exists(paths(launch_dir)[1])


def worker_count(options: dict[str, Any]) -> int:
    """`--workers W` (0: not a packed launch); a bad value is a usage error."""
    if options.get("workers") is False:  # 0 == False, and 0 is refused
        return 0
    return positive(options, "workers", 0) or 0


def check_options(options: dict[str, Any]) -> int:
    """W, after refusing what cannot go with workers (before anything is written)."""
    workers = worker_count(options)
    if not workers:
        return 0
    for key, why in (("tasks_per_node", "groups tasks statically"),
                     ("max_tasks_per_node", "groups tasks statically"),
                     ("agents", "runs +tune agents, which pick their own trials")):
        if options.get(key) not in (None, "", False):
            flag = "--" + key.replace("_", "-")
            raise UsageError(f"--workers cannot go with {flag} ({flag} {why}): drop one of them")
    return workers


# ------------------------------------------------------------------ the worker
def worker_script_text(launch_dir: str, workers: int, limit: int | None, index_variable: str,
                       slurm_end: bool = False) -> str:
    """worker.sh: walk the launch's ids from this worker's offset, take each free one
    (O_EXCL), run it through wrapper.sh; stop when none is left or the time left is
    below the median task. `$1`: a worker name (joiners), `$2`: where to start walking;
    without them the scheduler's array index (+ ONAGER_TASK_OFFSET) is the worker number.
    `limit`: seconds of the allocation (None: no limit); `slurm_end`: ask squeue once."""
    q = shlex.quote
    index = shell_variable(index_variable) if index_variable else "ONAGER_ARRAY_INDEX"
    end_query = ('[ -n "${SLURM_JOB_ID:-}" ] && e=$(squeue -h -j "$SLURM_JOB_ID" -o %e 2>/dev/null) '
                 '&& e=$(date -d "$e" +%s 2>/dev/null) && [ "${e:-0}" -gt 0 ] 2>/dev/null && END=$(( e * 1000 ))\n'
                 if slurm_end else "")
    return f"""#!/bin/bash
# onager worker (launch --workers): takes the next task nobody took and runs it through
# wrapper.sh, until none is left or less time is left than tasks have been taking
D=${{ONAGER_REMOTE_LAUNCH_DIR:-{q(launch_dir)}}}
P=$D/{PACKING_DIR}; T=$P/{TAKEN}
W={int(workers)}; LIMIT={int(limit or 0)}
if [ -n "${{1:-}}" ]; then k=$1; else
    k=${{{index}:-}}
    case $k in ''|*[!0-9]*) echo "onager worker: no worker number (got '$k')" >&2; exit 2;; esac
    k=$(( k + ${{ONAGER_TASK_OFFSET:-0}} ))
fi
case $k in ''|*[!A-Za-z0-9._-]*) echo "onager worker: bad worker name '$k'" >&2; exit 2;; esac
ms() {{ local s=${{1/,/.}} i f; i=${{s%%.*}}; f=${{s#*.}}; [ "$f" != "$s" ] || f=0; f=${{f}}000
    case $i${{f:0:3}} in ''|*[!0-9]*) v=;; *) v=$(( 10#$i * 1000 + 10#${{f:0:3}} ));; esac; }}
now() {{ local t=${{EPOCHREALTIME:-}}; [ -n "$t" ] || t=$(date +%s); ms "$t"; n_ms=$v; }}
now; START=$n_ms; END=0
[ "$LIMIT" -gt 0 ] && END=$(( START + LIMIT * 1000 ))
{end_query}hist=()  # elapsed ms of ended tasks, sorted; at 101, both ends go (the median stays)
add() {{ [ "$END" -gt 0 ] || return 0; local x=$1 i=${{#hist[@]}}
    while [ "$i" -gt 0 ] && [ "${{hist[i-1]}}" -gt "$x" ]; do hist[i]=${{hist[i-1]}}; i=$(( i - 1 )); done
    hist[i]=$x; [ "${{#hist[@]}}" -lt 101 ] || hist=("${{hist[@]:1:99}}"); }}
if [ "$END" -gt 0 ]; then  # what the launch's ended tasks took so far
    for e in "$D"/{STATE}/*.end@*; do
        [ -e "$e" ] || break
        r=${{e##*.end@}}; t=${{r%%@*}}; r=${{r#*@}}; r=${{r#*@}}; t0=${{r%%@*}}
        ms "$t"; a=$v; ms "$t0"; [ -n "$a" ] && [ -n "$v" ] && [ "$a" -ge "$v" ] && add $(( a - v ))
    done
fi
mapfile -t ids <"$P/{IDS}" || exit 1
n=${{#ids[@]}}
[ "$n" -gt 0 ] || exit 0
if [ -n "${{2:-}}" ]; then s=$2; else s=$(( (k - 1) * n / W )); fi
case $s in ''|*[!0-9]*) s=0;; esac
host=${{HOSTNAME:-$(hostname)}}; pst=-
read -r -a ps 2>/dev/null </proc/$$/stat && pst=${{ps[21]:--}}
stop=; child=; warned=
trap 'stop=TERM' TERM; trap 'stop=INT' INT; trap 'stop=HUP' HUP
warn() {{  # a time-limit warning (sbatch --signal=B:, s_rt) reaches the batch shell: this worker.
    # It takes no more tasks and passes the signal on to the running wrapper ONCE (the wrapper's
    # own forwarding reaches its process group, this worker included)
    stop=$1
    if [ -n "$child" ] && [ "$warned" != "$child" ]; then warned=$child; kill -s "$1" "$child" 2>/dev/null; fi
}}
trap 'warn USR1' USR1; trap 'warn USR2' USR2
ran=0
for (( j = 0; j < n; j++ )); do
    id=${{ids[(s + j) % n]}}
    [ -e "$T/$id" ] && continue
    [ -z "$stop" ] || break
    if [ "$END" -gt 0 ] && [ "${{#hist[@]}}" -gt 0 ]; then
        now; med=${{hist[${{#hist[@]}} / 2]}}
        if [ $(( n_ms + med )) -gt "$END" ]; then
            echo "onager worker $k: $(( (END - n_ms) / 1000 )) s left, tasks take ${{med}} ms: stopping" \\
                "after $ran task(s)" >&2
            break
        fi
    fi
    set -C; {{ echo "$k $host $$ $pst" >"$T/$id"; }} 2>/dev/null; ok=$?; set +C
    [ $ok -eq 0 ] || continue  # another worker took it first
    now; t1=$n_ms
    bash "$D/{WRAPPER}" "$id" </dev/null &
    child=$!
    while :; do wait "$child"; kill -0 "$child" 2>/dev/null || break; done  # a trap ends `wait` early
    child=
    now; add $(( n_ms - t1 )); ran=$(( ran + 1 ))
done
echo "onager worker $k: ran $ran task(s)" >&2
exit 0
"""


def write_worker(launch_dir: str, ids: Iterable[int], workers: int, limit: int | None,
                 index_variable: str, slurm_end: bool = False) -> str:
    """packing/ids, packing/taken/ and worker.sh of a launch (atomic writes); returns worker.sh."""
    base, ids_file, taken = paths(launch_dir)
    os.makedirs(taken, exist_ok=True)
    atomic_write(ids_file, "".join(f"{i}\n" for i in ids))
    script = os.path.join(launch_dir, WORKER_SH)
    atomic_write(script, worker_script_text(launch_dir, workers, limit, index_variable, slurm_end))
    os.chmod(script, executable_mode())
    return script


# ------------------------------------------------------------------- what list sees
def taker(launch_dir: str, task_id: int) -> tuple[str, str, int, str] | None:
    """(worker, host, pid, pstart) that took a task, or None (nobody, or unreadable)."""
    try:
        with open(os.path.join(paths(launch_dir)[2], str(task_id)), encoding="utf-8") as handle:
            fields = handle.read().split()
    except OSError:
        return None
    if len(fields) < 4 or not fields[2].isdigit():
        return None
    return fields[0], fields[1], int(fields[2]), fields[3]


class Holdings:
    """Which worker holds which started, unended task of a packed launch (read once, lazily)."""

    def __init__(self, launch_dir: str):
        self.launch_dir = launch_dir
        self._by_worker: dict[int, list[int]] | None = None
        self._of_task: dict[int, int] = {}
        self.local: dict[int, tuple[str, int, str]] = {}  # task -> (host, pid, pstart) of a joiner
        self.unstarted: list[int] = []

    def load(self) -> None:
        from onager.state import read_states
        states = read_states(self.launch_dir)
        by_worker: dict[int, list[int]] = {}
        try:
            with open(paths(self.launch_dir)[1], encoding="utf-8") as handle:
                ids = [int(line) for line in handle if line.strip().isdigit()]
        except OSError:
            ids = []
        for task_id in ids:
            st = states.get(task_id)
            if st is None or st.start is None:
                if st is None or st.cancelled is None:
                    self.unstarted.append(task_id)
                continue
            if st.end is not None and st.end >= st.start:
                continue
            who = taker(self.launch_dir, task_id)
            if who is None:
                continue
            if who[0].isdigit():
                by_worker.setdefault(int(who[0]), []).append(task_id)
                self._of_task[task_id] = int(who[0])
            else:
                self.local[task_id] = who[1:]
        self._by_worker = by_worker

    def held_by(self, worker: int) -> list[int]:
        if self._by_worker is None:
            self.load()
        assert self._by_worker is not None
        return self._by_worker.get(worker, [])

    def active(self) -> set[int]:
        """Every task of the launch that has not ended: untaken, or held by a worker or joiner."""
        if self._by_worker is None:
            self.load()
        return set(self.unstarted) | set(self._of_task) | set(self.local)

    def worker_of(self, task_id: int) -> int | None:
        if self._by_worker is None:
            self.load()
        return self._of_task.get(task_id)


def pending_word(worker_answers: Iterable[str | None]) -> str | None:
    """What an untaken task is while workers live: `pending`, or the workers' own pending or
    blocked reason when none runs; None when every worker has ended (never started: lost)."""
    from onager.state import parse_answer
    waiting: list[str] = []
    for answer in worker_answers:
        word = parse_answer(answer)[0] if answer else None
        if word == "running":
            return "pending"
        if word in ("pending", "blocked"):
            waiting.append(str(answer))
    if not waiting:
        return None
    return next((w for w in waiting if w.startswith("pending")), waiting[0])


def local_answer(host: str, pid: int, pstart: str) -> str | None:
    """A joiner's task: running while its process lives (this host), else nothing known."""
    import socket

    if host != socket.gethostname():
        return "running"  # another workstation: it cannot be asked from here
    from onager.backends._kill import alive
    return "running" if alive(pid, pstart if pstart != "-" else None) else None


# ------------------------------------------------------------------- join
def find_join_launch(jobname: str, root: str = ".") -> Any:
    """The latest launch of `jobname`, which must be a packed one; UsageError otherwise."""
    from onager.index import JobIndex
    record = JobIndex(root).latest(jobname)
    if not os.path.isdir(record.launch_dir):
        raise UsageError(f"the latest launch of {jobname!r} ({record.launch_dir}) is gone: nothing to join")
    if not is_packed(record.launch_dir):
        raise UsageError(f"the latest launch of {jobname!r} ({record.key}) was not launched with --workers: "
                         f"nothing to join; launch it with --backend slurm --workers W first")
    return record


def check_join(options: dict[str, Any], jobname: str | None) -> str:
    """The job to join, after refusing options a join cannot honour (before anything runs)."""
    join = str(options.get("join") or "")
    if jobname not in (None, "", join):
        raise UsageError(f"--join {join!r} and job {jobname!r} differ: give the job once (--join JOB)")
    for key in ("tasklist", "command", "detach", "workers", "agents", "retries", "requeue", "notify", "gpus",
                "snapshot", "from_jobfile", "jobfile"):
        if options.get(key) not in (None, "", False, 0, [], ()):
            flag = "--" + key.replace("_", "-")
            raise UsageError(f"--join runs the tasks of an existing launch as it froze them: drop {flag}")
    return join


def run_join(jobname: str, width: int, root: str = ".", quiet: bool = False) -> int:
    """Run `width` local workers over the latest packed launch of `jobname` until none is
    left; a task of theirs that `onager cancel` marks is stopped (its joiner with it).
    Ctrl-C stops every joiner (each wrapper records its task as killed). Returns 0, or 130."""
    import signal
    import subprocess

    record = find_join_launch(jobname, root)
    launch_dir = os.path.abspath(record.launch_dir)
    script = os.path.join(launch_dir, WORKER_SH)
    with open(paths(launch_dir)[1], encoding="utf-8") as handle:
        total = sum(1 for _ in handle)
    procs: list[subprocess.Popen[bytes]] = []
    for m in range(1, width + 1):
        start = total * (2 * m - 1) // (2 * width) if total else 0  # between the cluster workers' offsets
        procs.append(subprocess.Popen(["bash", script, f"{LOCAL_PREFIX}{m}", str(start)],
                                      stdin=subprocess.DEVNULL, start_new_session=True))
    if not quiet:
        print(f"onager: joined {record.key} with {width} local worker(s)", file=sys.stderr)
    try:
        while any(p.poll() is None for p in procs):
            _stop_cancelled(launch_dir, {p.pid: p for p in procs})
            time.sleep(0.5)
    except KeyboardInterrupt:
        for p in procs:
            if p.poll() is None:
                with _suppress():  # TERM, not INT: a shell's background jobs ignore SIGINT
                    os.killpg(p.pid, signal.SIGTERM)
        for p in procs:
            with _suppress():
                p.wait(timeout=30)
        return 130
    return 0


def _stop_cancelled(launch_dir: str, mine: dict[int, Any]) -> None:
    """SIGTERM the joiner (process group) whose current task `onager cancel` marked."""
    import signal
    import socket

    try:
        names = os.listdir(LaunchPaths(launch_dir).state_dir)
    except OSError:
        return
    cancelled, ended = set(), set()
    for name in names:
        head, _, kind = name.partition(".")
        if kind == "cancel" and head.isdigit():
            cancelled.add(head)
        elif kind.startswith("end@"):
            ended.add(head)
    for head in cancelled - ended:  # marked, and still running (or not started)
        who = taker(launch_dir, int(head))
        if who is None or who[0].isdigit() or who[1] != socket.gethostname():
            continue
        for pid, proc in mine.items():
            if proc.poll() is None and _in_group(who[2], pid):
                with _suppress():
                    os.killpg(pid, signal.SIGTERM)


def _in_group(pid: int, group: int) -> bool:
    try:
        return os.getpgid(pid) == group
    except OSError:
        return False


class _suppress:
    """contextlib.suppress(OSError, subprocess.TimeoutExpired), without the import at start-up."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: Any, value: Any, tb: Any) -> bool:
        import subprocess

        return kind is not None and issubclass(kind, (OSError, subprocess.TimeoutExpired))


def join_width(value: Any) -> int:
    """Local workers of a join: `--max-tasks`, as the local pool reads it (default: the CPUs)."""
    if value in (None, "", -1, "-1"):
        return os.cpu_count() or 1
    try:
        width = int(value)
    except (TypeError, ValueError):
        raise UsageError(f"bad --max-tasks {value!r}: give a whole number") from None
    if width < 1:
        raise UsageError("--max-tasks must be at least 1")
    return width


def cmd_join(args: Any, given: dict[str, Any]) -> int:
    """`onager launch --backend local --join JOB`: checks first (one line, exit 2, nothing
    run), then the local workers, in the foreground."""
    if getattr(args, "backend", None) not in (None, "local"):
        raise UsageError(f"--join runs local workers beside the cluster's: use --backend local, not "
                         f"--backend {args.backend}")
    options = dict(given, tasklist=args.tasklist, command=args.command, jobfile=args.jobfile,
                   from_jobfile=args.from_jobfile)
    jobname = check_join(options, args.jobname)
    from onager.backends.base import refuse_foreign_options
    refuse_foreign_options("local", {k: v for k, v in given.items() if k != "join"})
    width = join_width(given.get("max_tasks"))
    record = find_join_launch(jobname)
    if args.dry_run:
        print(f"# join: {width} local worker(s) over {record.key}: {os.path.join(record.launch_dir, WORKER_SH)}")
        print(f"dry run: would join {record.key}; nothing run", file=sys.stderr)
        return 0
    return run_join(jobname, width, quiet=bool(getattr(args, "quiet", False)))
