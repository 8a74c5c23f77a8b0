"""Helpers shared by the tests (a module of its own: `conftest` names clash across directories)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def engines_env() -> dict:
    """Engines started by ci/start-engines.sh (or `make engines`), from its summary file."""
    found = {k: v for k, v in os.environ.items() if k.startswith("ONAGER_TEST_")}
    path = os.environ.get("ONAGER_ENGINES_ENV", "/tmp/onager-engines.env")
    try:
        with open(path) as handle:
            for line in handle:
                line = line.strip()
                if line and not line.startswith("#") and "=" in line:
                    key, value = line.split("=", 1)
                    found.setdefault(key, value)
    except OSError:
        pass
    return found


def run_onager(args: list[str], cwd=None, input: str | None = None, env: dict | None = None,
               timeout: float = 120) -> subprocess.CompletedProcess:
    """Run `python -m onager ARGS` the way a user would; stdin is closed unless given."""
    full_env = dict(os.environ)
    full_env["PYTHONPATH"] = ROOT + os.pathsep + full_env.get("PYTHONPATH", "")
    if env:
        full_env.update(env)
    return subprocess.run([sys.executable, "-m", "onager", *args], cwd=cwd, input=input,
                          stdin=None if input is not None else subprocess.DEVNULL,
                          capture_output=True, text=True, env=full_env, timeout=timeout)


# ------------------------------------------------ fake scheduler commands (unit tests of command text)
FAKE = r'''#!{python}
import json, os, sys
name = os.path.basename(sys.argv[0])
base = os.environ["FAKE_SCHED_DIR"]
with open(os.path.join(base, "calls.jsonl"), "a") as log:
    log.write(json.dumps([name] + sys.argv[1:]) + "\n")
with open(os.path.join(base, "env.jsonl"), "a") as log:
    log.write(json.dumps([name, os.environ.get("SLURM_BITSTR_LEN")]) + "\n")
path = os.path.join(base, name + ".json")
answers = json.load(open(path)) if os.path.exists(path) else [[0, "", ""]]
rc, out, err = answers[0]
if len(answers) > 1:
    json.dump(answers[1:], open(path, "w"))
sys.stdout.write(out)
sys.stderr.write(err)
sys.exit(rc)
'''


class Fake:
    """Fake scheduler commands on PATH: each records its argv and gives queued answers."""

    def __init__(self, base):
        self.base = str(base)

    def respond(self, name, *answers):
        """respond(name, rc, out[, err]) or respond(name, [rc, out, err], [...]) in order; the last repeats."""
        if answers and not isinstance(answers[0], (list, tuple)):
            answers = (answers,)
        with open(os.path.join(self.base, name + ".json"), "w") as handle:
            json.dump([list(a) + [""] * (3 - len(a)) for a in answers], handle)

    def calls(self):
        try:
            with open(os.path.join(self.base, "calls.jsonl")) as handle:
                return [json.loads(line) for line in handle]
        except FileNotFoundError:
            return []


def install_fake_scheduler(tmp_path, monkeypatch) -> Fake:
    """sbatch/squeue/scancel/scontrol/qsub/qstat/qdel/qconf stand-ins on PATH (never the only
    proof that a backend works: tests/engines/ runs the real ones)."""
    base = tmp_path / "fakebin"
    base.mkdir()
    for name in ("sbatch", "squeue", "scancel", "scontrol", "qsub", "qstat", "qdel", "qconf"):
        path = base / name
        path.write_text(FAKE.replace("{python}", sys.executable))
        path.chmod(0o755)
    monkeypatch.setenv("PATH", f"{base}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_SCHED_DIR", str(base))
    monkeypatch.setattr("time.sleep", lambda s: None)
    return Fake(base)


# ------------------------------------------------------------ shared assertions
def ok(result) -> str:
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    return result.stdout


def refused(result, *words: str) -> str:
    """Exit 2, exactly one stderr line, no traceback, nothing on stdout; returns the line."""
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1 and result.stderr.endswith("\n"), result.stderr
    assert result.stdout == ""
    for word in words:
        assert word in result.stderr, result.stderr
    return result.stderr


def live_in_group(pgid: int) -> list:
    """Processes of a process group that are not zombies (PID 1 here may never reap them)."""
    out = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat") as handle:
                    fields = handle.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid and fields[0] != "Z":
                out.append(int(name))
    return out


# ----------------------------------------------- golden scheduler command texts
GOLDEN = os.path.join(ROOT, "tests", "golden")


def text(commands) -> str:
    """Commands as the golden files hold them: one shell-quoted command per line."""
    import shlex
    return "".join(shlex.join(c) + "\n" for c in commands)


def golden(name: str) -> str:
    with open(os.path.join(GOLDEN, name), encoding="utf-8") as handle:
        return handle.read()


def wait_for(predicate, timeout: float = 20.0, interval: float = 0.05) -> bool:
    """Poll `predicate` until it is true (True) or `timeout` seconds have passed (False)."""
    end = time.time() + timeout
    while time.time() < end:
        if predicate():
            return True
        time.sleep(interval)
    return False


def call_onager(*argv: str, errors: str = "replace") -> tuple[int, str, str]:
    """`onager ARGV` in this process: (exit code, stdout, stderr), stdout decoded with `errors`
    (bytes as written: newlines untranslated); any other exception escapes."""
    import contextlib
    import io

    from onager import cli

    out, err = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", newline=""), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = cli.main(list(argv))
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        out.flush()
        text = out.buffer.getvalue().decode("utf-8", errors)
    return code, text, err.getvalue()


def uneven_jobfile(root, name: str, lengths: list[float], counts: str, count_first: bool = False) -> str:
    """A jobfile of job `name` whose task i sleeps lengths[i-1] s and appends its id to the file
    `counts` (one line per run; before the sleep with `count_first`: runs started, not ended)."""
    counts = os.path.join(str(root), counts)
    count = f"echo $ONAGER_TASK_ID >> {counts}"
    entries = {str(i): [f"{count}; sleep {s}" if count_first else f"sleep {s}; {count}", f"{name}_{i}", {}]
               for i, s in enumerate(lengths, 1)}
    os.makedirs(os.path.join(str(root), ".onager", "scripts", name), exist_ok=True)
    with open(os.path.join(str(root), ".onager", "scripts", name, "jobs.json"), "w") as handle:
        json.dump(entries, handle)
    return counts
