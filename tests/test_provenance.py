"""Provenance of launches, frozen code (--snapshot), --require-clean and `onager show`.

Every scenario runs the real CLI in a git repository the test creates: clean, dirty,
untracked files, detached HEAD, no repository, no git on PATH, a token in the remote.
"""
from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support import run_onager

from onager import provenance
from onager.errors import UsageError

GIT = shutil.which("git")
needs_git = pytest.mark.skipif(GIT is None, reason="git is not installed on this machine")
TOKEN = "ghp_SECRET123"


def git(repo, *args: str) -> str:
    out = subprocess.run(["git", "-c", "user.name=Test", "-c", "user.email=test@example.com",
                          "-c", "init.defaultBranch=main", *args], cwd=str(repo),
                         capture_output=True, text=True, check=True)
    return out.stdout.strip()


def write(path, text: str) -> None:
    os.makedirs(os.path.dirname(str(path)), exist_ok=True)
    with open(str(path), "w") as handle:
        handle.write(text)


@pytest.fixture
def env(tmp_path):
    """Private global config; git never looks above the test's directory."""
    return {"ONAGER_GLOBAL_CONFIG": str(tmp_path / "global.onagerconfig"),
            "GIT_CEILING_DIRECTORIES": str(tmp_path)}


@pytest.fixture
def repo(tmp_path):
    """A committed repository: value.py, sub/run.sh, a .gitignore of *.log."""
    path = tmp_path / "repo"
    path.mkdir()
    git(path, "init", "-q")
    write(path / "value.py", 'print("old")\n')
    write(path / "sub" / "run.sh", "echo sub\n")
    write(path / ".gitignore", "*.log\n")
    os.chmod(str(path / "sub" / "run.sh"), 0o755)
    git(path, "add", ".")
    git(path, "commit", "-q", "-m", "first")
    return path


def launch(cwd, env, *args: str) -> subprocess.CompletedProcess:
    return run_onager(["launch", "--backend", "local", *args], cwd=str(cwd), env=env)


def prov(cwd, job: str, launch_id: str = "1") -> dict:
    with open(os.path.join(str(cwd), ".onager", "launches", job, launch_id, "provenance.json")) as handle:
        return json.load(handle)


def launch_dir(cwd, job: str, launch_id: str = "1") -> str:
    return os.path.join(str(cwd), ".onager", "launches", job, launch_id)


def out_of(cwd, job: str, task: int = 1, launch_id: str = "1") -> str:
    with open(os.path.join(launch_dir(cwd, job, launch_id), "logs", f"{task}.out")) as handle:
        return handle.read()


def files_under(directory) -> list:
    found = []
    for current, _, names in os.walk(str(directory)):
        found += [os.path.join(current, n) for n in names]
    return found


# ------------------------------------------------------------- git repository
@needs_git
def test_clean_launch_records_everything(repo, env):
    result = launch(repo, env, "--jobname", "exp", "--command", "echo hi")
    assert result.returncode == 0, result.stderr
    p = prov(repo, "exp")
    assert p["git"]["repository"] is True
    assert p["git"]["commit"] == git(repo, "rev-parse", "HEAD")
    assert p["git"]["branch"] == "main" and p["git"]["detached"] is False
    assert p["git"]["dirty"] is False and p["git"]["changed"] == []
    assert p["git"]["untracked_count"] == 0 and p["git"]["remote_url"] is None
    assert "patch" not in p["git"]
    assert not os.path.exists(os.path.join(launch_dir(repo, "exp"), provenance.PATCH_FILE))
    assert p["command"].startswith("onager launch --backend local --jobname exp")
    assert p["onager_version"] == __import__("onager").__version__
    assert p["host"] == socket.gethostname() and p["user"]
    assert os.path.realpath(p["workdir"]) == os.path.realpath(str(repo)) == os.path.realpath(p["run_workdir"])
    assert p["python"]["executable"] == sys.executable and p["python"]["version"]
    assert p["snapshot"] is None and p["settings"]["snapshot"] is False
    packages = p["packages"]
    if "file" in packages:  # pip freeze answered within its 5 s
        with open(os.path.join(launch_dir(repo, "exp"), packages["file"])) as handle:
            assert "pytest==" in handle.read().lower()
    else:
        assert packages["error"]
    assert out_of(repo, "exp") == "hi\n"


@needs_git
def test_dirty_launch_saves_a_patch_that_recreates_the_tree(repo, env, tmp_path):
    write(repo / "value.py", 'print("edited")\n')
    write(repo / "added.py", "x = 1\n")
    git(repo, "add", "added.py")
    write(repo / "notes.txt", "UNTRACKED-CONTENT-7f3a\n")
    write(repo / "run.log", "ignored\n")
    result = launch(repo, env, "--jobname", "exp", "--command", "true")
    assert result.returncode == 0, result.stderr
    p = prov(repo, "exp")
    assert p["git"]["dirty"] is True
    assert sorted(p["git"]["changed"]) == ["added.py", "value.py"]
    assert p["git"]["untracked"] == ["notes.txt"] and p["git"]["untracked_count"] == 1  # run.log is ignored
    patch = os.path.join(launch_dir(repo, "exp"), p["git"]["patch"])
    # the patch applied on the recorded commit gives back the launched tree
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(repo), str(clone)], check=True)
    git(clone, "checkout", "-q", p["git"]["commit"])
    git(clone, "apply", patch)
    assert (clone / "value.py").read_text() == 'print("edited")\n'
    assert (clone / "added.py").read_text() == "x = 1\n"
    # names of untracked files are recorded, never their content
    for path in files_under(repo / ".onager"):
        with open(path, "rb") as handle:
            assert b"UNTRACKED-CONTENT-7f3a" not in handle.read(), path


@needs_git
def test_detached_head(repo, env):
    first = git(repo, "rev-parse", "HEAD")
    write(repo / "value.py", 'print("second")\n')
    git(repo, "commit", "-q", "-am", "second")
    git(repo, "checkout", "-q", "--detach", first)
    result = launch(repo, env, "--jobname", "exp", "--command", "true")
    assert result.returncode == 0, result.stderr
    g = prov(repo, "exp")["git"]
    assert g["commit"] == first and g["branch"] is None and g["detached"] is True and g["dirty"] is False


@needs_git
def test_repository_without_commits(tmp_path, env):
    path = tmp_path / "fresh"
    path.mkdir()
    git(path, "init", "-q")
    write(path / "a.py", "print(1)\n")
    git(path, "add", "a.py")
    result = launch(path, env, "--jobname", "exp", "--command", "true")
    assert result.returncode == 0, result.stderr
    g = prov(path, "exp")["git"]
    assert g["commit"] is None and g["branch"] == "main" and g["dirty"] is True and g["changed"] == ["a.py"]
    with open(os.path.join(launch_dir(path, "exp"), g["patch"])) as handle:
        assert "+print(1)" in handle.read()


def test_outside_git_everything_else_is_recorded(tmp_path, env):
    plain = tmp_path / "plain"
    plain.mkdir()
    result = launch(plain, env, "--jobname", "exp", "--command", "echo ok")
    assert result.returncode == 0, result.stderr
    p = prov(plain, "exp")
    assert p["git"]["repository"] is False
    assert p["git"]["reason"] in ("not a git repository", "git is not installed")
    assert p["host"] == socket.gethostname() and p["python"]["executable"] == sys.executable
    assert os.path.realpath(p["cwd"]) == os.path.realpath(str(plain))
    assert out_of(plain, "exp") == "ok\n"


def _path_without_git(tmp_path) -> str:
    """A PATH directory with what the wrapper and the tasks use, and no git."""
    bindir = tmp_path / "nogit-bin"
    bindir.mkdir()
    for tool in ("bash", "sh", "dd", "date", "hostname", "cat", "sleep", "env", "ls", "pwd", "uname", "id"):
        found = shutil.which(tool)
        if found:
            os.symlink(found, str(bindir / tool))
    os.symlink(sys.executable, str(bindir / "python3"))
    os.symlink(sys.executable, str(bindir / "python"))
    return str(bindir)


@needs_git
def test_git_not_installed_still_records_and_snapshots(repo, env, tmp_path):
    env = dict(env, PATH=_path_without_git(tmp_path))
    assert subprocess.run(["bash", "-c", "command -v git"], env=env, capture_output=True).returncode != 0
    write(repo / "debug.log", "ignored by .gitignore\n")
    (repo / "__pycache__").mkdir()
    write(repo / "__pycache__" / "x.pyc", "cache")
    result = launch(repo, env, "--jobname", "exp", "--snapshot", "--command", "python3 value.py")
    assert result.returncode == 0, result.stderr
    p = prov(repo, "exp")
    assert p["git"] == {"repository": False, "reason": "git is not installed"}
    snap = p["snapshot"]
    assert snap["mode"] == "directory" and snap["ignore_file"] == ".gitignore"
    code = os.path.join(launch_dir(repo, "exp"), "code")
    copied = sorted(os.path.relpath(f, code) for f in files_under(code))
    assert copied == [".gitignore", os.path.join("sub", "run.sh"), "value.py"]  # no .git, .onager, *.log, cache
    assert out_of(repo, "exp") == "old\n"


# ------------------------------------------------------------------ snapshot
def _gate_command(gate: str, script: str) -> str:
    return f"while [ ! -e {shlex.quote(gate)} ]; do sleep 0.05; done; {shlex.quote(sys.executable)} {script}"


@needs_git
def test_snapshot_runs_the_code_as_it_was_at_launch(repo, env, tmp_path):
    gate = str(tmp_path / "gate")
    command = _gate_command(gate, "value.py")
    frozen = launch(repo, env, "--jobname", "frozen", "--snapshot", "--detach", "--command", command)
    assert frozen.returncode == 0, frozen.stderr
    live = launch(repo, env, "--jobname", "live", "--detach", "--command", command)
    assert live.returncode == 0, live.stderr
    write(repo / "value.py", 'print("new")\n')  # edited while both tasks wait in the queue
    open(gate, "w").close()
    for job in ("frozen", "live"):
        waited = run_onager(["wait", "--jobname", job, "--timeout", "60", "--interval", "0.1", "-q"],
                            cwd=str(repo), env=env)
        assert waited.returncode == 0, waited.stderr
    assert out_of(repo, "frozen") == "old\n"
    assert out_of(repo, "live") == "new\n"  # the control: without --snapshot the edit is seen
    p = prov(repo, "frozen")
    code = os.path.join(launch_dir(repo, "frozen"), "code")
    assert p["snapshot"]["mode"] == "git" and p["snapshot"]["files"] == 3
    assert os.path.realpath(p["run_workdir"]) == os.path.realpath(code)
    assert not os.path.exists(os.path.join(code, ".git"))
    assert os.access(os.path.join(code, "sub", "run.sh"), os.X_OK)  # modes kept
    assert os.stat(os.path.join(code, "value.py")).st_ino != os.stat(str(repo / "value.py")).st_ino


@needs_git
def test_snapshot_copies_working_tree_changes_not_untracked_files(repo, env):
    write(repo / "value.py", 'print("uncommitted")\n')
    write(repo / "scratch.py", "untracked\n")
    write(repo / "big.log", "ignored\n")
    result = launch(repo, env, "--jobname", "exp", "--snapshot", "--command", f"{shlex.quote(sys.executable)} value.py")
    assert result.returncode == 0, result.stderr
    assert out_of(repo, "exp") == "uncommitted\n"
    code = os.path.join(launch_dir(repo, "exp"), "code")
    assert sorted(os.listdir(code)) == [".gitignore", "sub", "value.py"]
    assert "1 untracked file(s) left out" in result.stderr


@needs_git
def test_snapshot_from_a_subdirectory_runs_in_the_same_subdirectory(repo, env):
    sub = repo / "sub"
    result = launch(sub, env, "--jobname", "exp", "--snapshot", "--command", "pwd; bash run.sh; cat ../value.py")
    assert result.returncode == 0, result.stderr
    lines = out_of(sub, "exp").splitlines()
    code = os.path.join(launch_dir(sub, "exp"), "code")
    assert os.path.realpath(lines[0]) == os.path.realpath(os.path.join(code, "sub"))
    assert lines[1:] == ["sub", 'print("old")']
    assert prov(sub, "exp")["snapshot"]["subdir"] == "sub"


@needs_git
def test_snapshot_size_guard_refuses_and_leaves_nothing(repo, env):
    with open(str(repo / "weights.bin"), "wb") as handle:
        handle.write(b"\0" * (3 * 1024 * 1024))
    git(repo, "add", "weights.bin")
    git(repo, "commit", "-q", "-m", "weights")
    result = launch(repo, env, "--jobname", "exp", "--snapshot", "--snapshot-max-size", "1M", "--command", "true")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "weights.bin (3.0 MB)" in lines[0] and "--snapshot-max-size" in lines[0]
    assert "Traceback" not in result.stderr
    assert not os.path.exists(launch_dir(repo, "exp"))
    index = repo / ".onager" / "index.jsonl"
    assert not index.exists() or "exp" not in index.read_text()
    # the same limit as project defaults
    for key, value in (("snapshot", "true"), ("snapshot_max_size", "1M")):
        wrote = run_onager(["config", "--write", "project", key, value], cwd=str(repo), env=env)
        assert wrote.returncode == 0, wrote.stderr
    assert launch(repo, env, "--jobname", "exp", "--command", "true").returncode == 2
    raised = launch(repo, env, "--jobname", "exp", "--snapshot-max-size", "10M", "--command", "true")
    assert raised.returncode == 0, raised.stderr
    assert prov(repo, "exp")["snapshot"]["bytes"] > 3 * 1024 * 1024
    # or leave the file out of snapshots
    write(repo / ".onagerignore", "*.bin\n")
    left_out = launch(repo, env, "--jobname", "exp2", "--command", "true")
    assert left_out.returncode == 0, left_out.stderr
    assert not os.path.exists(os.path.join(launch_dir(repo, "exp2"), "code", "weights.bin"))
    assert os.path.exists(os.path.join(launch_dir(repo, "exp2"), "code", "value.py"))


def test_bad_snapshot_size_is_a_usage_error(tmp_path, env):
    result = launch(tmp_path, env, "--jobname", "exp", "--snapshot", "--snapshot-max-size", "lots", "--command", "true")
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "--snapshot-max-size 'lots'" in result.stderr
    assert not os.path.exists(launch_dir(tmp_path, "exp"))


# ------------------------------------------------------------ credentials
@needs_git
def test_token_in_remote_url_is_never_written(repo, env):
    git(repo, "remote", "add", "origin", f"https://user:{TOKEN}@github.com/x/y.git")
    git(repo, "remote", "add", "mirror", f"https://{TOKEN}@example.org/y.git")
    write(repo / "value.py", 'print("dirty")\n')
    result = launch(repo, env, "--jobname", "exp", "--snapshot", "--command", "true")
    assert result.returncode == 0, result.stderr
    g = prov(repo, "exp")["git"]
    assert g["remote_url"] == "https://github.com/x/y.git"
    assert g["remotes"] == {"origin": "https://github.com/x/y.git", "mirror": "https://example.org/y.git"}
    shown = run_onager(["show", "exp", "--task", "1"], cwd=str(repo), env=env)
    assert shown.returncode == 0 and "https://github.com/x/y.git" in shown.stdout
    assert TOKEN not in shown.stdout + shown.stderr + result.stderr
    checked = files_under(repo / ".onager")
    assert len(checked) > 10
    for path in checked:
        with open(path, "rb") as handle:
            assert TOKEN.encode() not in handle.read(), path


@pytest.mark.parametrize("url, clean", [
    ("https://user:ghp_SECRET123@github.com/x/y.git", "https://github.com/x/y.git"),
    ("https://ghp_SECRET123@github.com/x/y.git", "https://github.com/x/y.git"),
    ("http://a:p@ss@host:8080/r", "http://host:8080/r"),
    ("ssh://git@github.com/x/y.git", "ssh://git@github.com/x/y.git"),
    ("ssh://git:hunter2@github.com/x/y.git", "ssh://git@github.com/x/y.git"),
    ("git@github.com:x/y.git", "git@github.com:x/y.git"),
    ("pkg @ git+https://tok@github.com/x/y@v1", "pkg @ git+https://github.com/x/y@v1"),
    ("/srv/git/y.git", "/srv/git/y.git"),
])
def test_strip_credentials(url, clean):
    assert provenance.strip_credentials(url) == clean


# ------------------------------------------------------------ require clean
@needs_git
def test_require_clean_refuses_uncommitted_changes(repo, env):
    write(repo / "scratch.py", "untracked files do not count\n")
    ok = launch(repo, env, "--jobname", "exp", "--require-clean", "--command", "true")
    assert ok.returncode == 0, ok.stderr
    write(repo / "value.py", 'print("edited")\n')
    refused = launch(repo, env, "--jobname", "exp", "--require-clean", "--command", "true")
    assert refused.returncode == 2
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and "value.py" in lines[0] and "scratch.py" not in lines[0]
    assert not os.path.exists(launch_dir(repo, "exp", "2"))
    index = (repo / ".onager" / "index.jsonl").read_text().splitlines()
    assert len(index) == 1
    # a project default, overridden for one launch
    wrote = run_onager(["config", "--write", "project", "require_clean", "true"], cwd=str(repo), env=env)
    assert wrote.returncode == 0, wrote.stderr
    assert launch(repo, env, "--jobname", "exp", "--command", "true").returncode == 2
    forced = launch(repo, env, "--jobname", "exp", "--no-require-clean", "--command", "true")
    assert forced.returncode == 0, forced.stderr
    assert prov(repo, "exp", "2")["git"]["dirty"] is True


def test_require_clean_outside_git_refuses(tmp_path, env):
    result = launch(tmp_path, env, "--jobname", "exp", "--require-clean", "--command", "true")
    assert result.returncode == 2 and "needs a git repository" in result.stderr
    assert not os.path.exists(launch_dir(tmp_path, "exp"))


# ------------------------------------------------------------------- show
@needs_git
def test_show_prints_provenance_and_the_task_run(repo, env):
    write(repo / "value.py", 'print("edited")\n')
    result = launch(repo, env, "--jobname", "exp", "--snapshot", "--command", "echo one; exit 3")
    assert result.returncode == 1
    head = git(repo, "rev-parse", "HEAD")
    shown = run_onager(["show", "exp"], cwd=str(repo), env=env)
    assert shown.returncode == 0, shown.stderr
    assert f"{head} on branch main (dirty: 1 tracked file(s) changed)" in shown.stdout
    assert "git-diff.patch" in shown.stdout and "snapshot" in shown.stdout and "code" in shown.stdout
    assert re.search(r"^backend +local +snapshot=true$", shown.stdout, re.M)
    task = run_onager(["show", "exp/1", "--task", "1", "--json"], cwd=str(repo), env=env)
    assert task.returncode == 0, task.stderr
    data = json.loads(task.stdout)
    assert data["provenance"]["git"]["commit"] == head
    assert data["task"]["status"] == "failed" and data["task"]["exit"] == 3
    assert data["task"]["host"] == socket.gethostname()
    assert data["task"]["start"] <= data["task"]["end"]
    text = run_onager(["show", "exp", "--task", "1"], cwd=str(repo), env=env).stdout
    assert f"failed, exit 3 on {socket.gethostname()}" in text


@needs_git
def test_show_errors_are_one_line(repo, env):
    assert launch(repo, env, "--jobname", "exp", "--command", "true").returncode == 0
    for args, words in ((["show", "nope"], "no launch of job 'nope'"),
                        (["show", "exp", "--launch", "9"], "has no launch '9'"),
                        (["show", "exp", "--task", "5"], "task 5 is not in")):
        result = run_onager(args, cwd=str(repo), env=env)
        assert result.returncode == 2, args
        assert result.stderr.count("\n") == 1 and words in result.stderr, result.stderr


# ------------------------------------------------------------- in-process
@pytest.fixture
def inproc(tmp_path, monkeypatch):
    monkeypatch.setenv("ONAGER_GLOBAL_CONFIG", str(tmp_path / "global.onagerconfig"))
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    directory = tmp_path / "launch"
    directory.mkdir()
    return str(directory)


def test_pip_freeze_timeout_is_noted_not_fatal(inproc, tmp_path, monkeypatch):
    slow = [[sys.executable, "-c", "import time; time.sleep(30)"]]
    real = provenance.Freeze
    monkeypatch.setattr(provenance, "Freeze", lambda: real(slow, timeout=0.3))
    started = time.monotonic()
    workdir = provenance.prepare_launch(inproc, str(tmp_path), {})
    assert time.monotonic() - started < 10
    assert workdir == str(tmp_path)
    p = provenance.load_provenance(inproc)
    assert "timed out" in p["packages"]["error"]
    assert not os.path.exists(os.path.join(inproc, provenance.FREEZE_FILE))


def test_freeze_falls_back_to_the_next_tool():
    freeze = provenance.Freeze([[sys.executable, "-c", "import sys; sys.exit('No module named pip')"],
                                [sys.executable, "-c", "print('a==1'); print('b==2')"]], timeout=10)
    text, info = freeze.finish()
    assert text == "a==1\nb==2\n" and info["count"] == 2 and info["file"] == provenance.FREEZE_FILE


@needs_git
def test_git_errors_never_fail_the_launch(inproc, repo, monkeypatch):
    real = provenance.Git.run

    def failing(self, *args, **kwargs):
        if args[0] == "status":
            return None, "git status timed out after 5 s"
        return real(self, *args, **kwargs)

    monkeypatch.setattr(provenance.Git, "run", failing)
    provenance.prepare_launch(inproc, str(repo), {})
    g = provenance.load_provenance(inproc)["git"]
    assert g["commit"] and g["dirty"] is None and g["errors"] == ["git status timed out after 5 s"]
    with pytest.raises(UsageError, match="cannot tell whether the tree is clean"):
        provenance.prepare_launch(inproc, str(repo), {"require_clean": True})


@needs_git
def test_launch_commit_for_the_list_column(inproc, repo):
    assert provenance.launch_commit(inproc) == ""
    provenance.prepare_launch(inproc, str(repo), {})
    head = git(repo, "rev-parse", "HEAD")
    assert provenance.launch_commit(inproc) == head[:10]
    write(repo / "value.py", "changed\n")
    other = os.path.join(os.path.dirname(inproc), "launch2")
    os.mkdir(other)
    provenance.prepare_launch(other, str(repo), {})
    assert provenance.launch_commit(other) == head[:10] + "-dirty"


@needs_git
def test_check_launch_refuses_without_writing(repo, tmp_path, monkeypatch):
    monkeypatch.setenv("ONAGER_GLOBAL_CONFIG", str(tmp_path / "g"))
    write(repo / "value.py", "changed\n")
    before = sorted(files_under(repo))
    with pytest.raises(UsageError, match="value.py"):
        provenance.check_launch(str(repo), {"require_clean": True}, root=str(repo))
    with pytest.raises(UsageError, match="over the 1 B limit"):
        provenance.check_launch(str(repo), {"snapshot": True, "snapshot_max_size": "0.000001M"}, root=str(repo))
    assert provenance.check_launch(str(repo), {"snapshot": True}, root=str(repo)).snapshot is True
    assert sorted(files_under(repo)) == before


# ------------------------------------------------------------------ units
@pytest.mark.parametrize("text, size", [
    ("500M", 500 * 2 ** 20), ("2G", 2 * 2 ** 30), ("1.5GB", int(1.5 * 2 ** 30)), ("300KiB", 300 * 1024),
    ("200", 200 * 2 ** 20), ("64k", 64 * 1024), ("none", None), ("0", None), (1000, 1000),
])
def test_parse_size(text, size):
    assert provenance.parse_size(text) == size


@pytest.mark.parametrize("text", ["", "lots", "5X", "M", "-3M", "1.2.3G", "5B"])
def test_parse_size_rejects(text):
    with pytest.raises(UsageError, match="give a size like"):
        provenance.parse_size(text)


def test_ignore_rules():
    rules = provenance.IgnoreRules(["# comment", "", "*.log", "data/", "/build", "docs/*.pdf", "!keep.log",
                                    "**/tmp"])
    assert rules.matches("a.log", False) and rules.matches("x/y/a.log", False)
    assert rules.matches("data", True) and rules.matches("x/data", True) and not rules.matches("data", False)
    assert rules.matches("build", True) and not rules.matches("x/build", True)
    assert rules.matches("docs/a.pdf", False) and not rules.matches("x/docs/a.pdf", False)
    assert rules.matches("x/tmp", True) and not rules.matches("keep.py", False)
    assert rules.ignores_path("data/x/y.csv") and not rules.ignores_path("src/data.py")


def test_parse_status_handles_renames_and_untracked():
    data = b" M a.py\0R  new.py\0old.py\0?? notes.txt\0A  added.py\0!! ignored.log\0"
    assert provenance._parse_status(data) == (["a.py", "new.py", "added.py"], ["notes.txt"])


def test_settings_from_project_config(inproc, tmp_path):
    from onager import config as configmod
    configmod.write([("project", "snapshot", "yes"), ("project", "snapshot-max-size", "1G")], root=str(tmp_path))
    settings = provenance.resolve_settings({}, str(tmp_path))
    assert settings.snapshot is True and settings.max_size == 2 ** 30 and settings.require_clean is False
    assert provenance.resolve_settings({"snapshot": False}, str(tmp_path)).snapshot is False
    configmod.write([("project", "require_clean", "maybe")], root=str(tmp_path))
    with pytest.raises(UsageError, match="require_clean must be true or false"):
        provenance.resolve_settings({}, str(tmp_path))


# ------------------------------------------- integration with launch, list, wrapper
def _list_has_show_option() -> bool:
    from onager import listing
    return hasattr(listing, "OPTIONAL_COLUMNS")


def _hook_passes_context() -> bool:
    import inspect

    from onager import launch as launchmod
    params = inspect.signature(launchmod._provenance_hook).parameters.values()
    return any(p.kind is p.VAR_KEYWORD or p.name == "backend" for p in params)


def _dry_run_checks() -> bool:
    import inspect

    from onager import launch as launchmod
    return "check_launch" in inspect.getsource(launchmod.prepare)


def _wrapper_follows_launch_dir() -> bool:
    from onager.wrapper import wrapper_text
    return '"$D"/code' in wrapper_text("/l", "j", "1", "/l/code")


@needs_git
@pytest.mark.skipif(not _list_has_show_option(), reason="onager list has no --show commit column in this tree")
def test_list_commit_column(repo, env):
    assert launch(repo, env, "--jobname", "exp", "--command", "true").returncode == 0
    write(repo / "value.py", "changed\n")
    assert launch(repo, env, "--jobname", "exp", "--command", "true").returncode == 0
    head = git(repo, "rev-parse", "HEAD")[:10]
    listed = run_onager(["list", "--show", "commit"], cwd=str(repo), env=env)
    assert listed.returncode == 0, listed.stderr
    assert re.search(rf"\b{head}\s*$", listed.stdout, re.M) and f"{head}-dirty" in listed.stdout
    plain = run_onager(["list"], cwd=str(repo), env=env)
    assert head not in plain.stdout
    data = json.loads(run_onager(["list", "--json"], cwd=str(repo), env=env).stdout)
    assert [row["commit"] for row in data] == [head, f"{head}-dirty"]


@needs_git
@pytest.mark.skipif(not _hook_passes_context(), reason="launch.prepare does not pass the backend to provenance")
def test_provenance_names_the_backend(repo, env):
    assert launch(repo, env, "--jobname", "exp", "--command", "true").returncode == 0
    p = prov(repo, "exp")
    assert p["backend"] == "local" and p["argv"][:2] == ["onager", "launch"]


@needs_git
@pytest.mark.skipif(not _dry_run_checks(), reason="launch --dry-run does not check provenance requests")
def test_dry_run_refuses_like_a_launch(repo, env):
    write(repo / "value.py", "changed\n")
    result = launch(repo, env, "--jobname", "exp", "--require-clean", "--dry-run", "--command", "true")
    assert result.returncode == 2 and "value.py" in result.stderr
    assert launch(repo, env, "--jobname", "exp", "--dry-run", "--command", "true").returncode == 0


@needs_git
@pytest.mark.skipif(not _wrapper_follows_launch_dir(), reason="wrapper.sh does not place the snapshot under $D")
def test_snapshot_moves_with_the_launch_dir(repo, env, tmp_path):
    result = launch(repo, env, "--jobname", "exp", "--snapshot", "--command", f"{shlex.quote(sys.executable)} value.py")
    assert result.returncode == 0, result.stderr
    moved = str(tmp_path / "elsewhere")
    shutil.copytree(launch_dir(repo, "exp"), moved, symlinks=True)
    shutil.rmtree(os.path.join(launch_dir(repo, "exp"), "code"))
    write(os.path.join(moved, "code", "value.py"), 'print("moved")\n')
    ran = subprocess.run(["bash", os.path.join(moved, "wrapper.sh"), "1"], capture_output=True, text=True,
                         env=dict(os.environ, ONAGER_REMOTE_LAUNCH_DIR=moved))
    assert ran.returncode == 0, Path(moved, "logs", "1.err").read_text()
    with open(os.path.join(moved, "logs", "1.out")) as handle:
        assert handle.read() == "old\nmoved\n"


def test_directory_snapshot_stops_walking_once_over_the_limit(tmp_path):
    for d in range(30):
        write(tmp_path / "tree" / f"d{d:02d}" / "f.bin", "x" * 1000)
    plan = provenance.plan_directory(str(tmp_path / "tree"), os.devnull, max_size=2500)
    assert plan.partial and 3 <= len(plan.files) < 30
    with pytest.raises(UsageError, match=r"would copy at least .* over the 2\.4 KB limit"):
        provenance.check_size(plan, 2500)
    full = provenance.plan_directory(str(tmp_path / "tree"), os.devnull)
    assert not full.partial and len(full.files) == 30
