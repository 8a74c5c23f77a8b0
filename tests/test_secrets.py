"""Issue 12, item 3: secrets never reach onager's recorded metadata, and files follow the umask.

A planted credential (git remotes, the launch's --command, scheduler arguments after `--`,
a secret-named environment variable) must appear in no file under .onager except the
records a task runs from (jobs.json, tasks.sh, tasks.jsonl, wrapper.sh), which keep it
byte for byte.
"""
from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys

import pytest
from support import ROOT, install_fake_scheduler, run_onager

from onager import provenance

GIT = shutil.which("git")
needs_git = pytest.mark.skipif(GIT is None, reason="git is not installed on this machine")
#: the files a task runs from: they must carry the user's real text
RUN_RECORDS = {"jobs.json", "tasks.sh", "tasks.jsonl", "wrapper.sh"}


def git(repo, *args: str) -> str:
    out = subprocess.run(["git", "-c", "user.name=Test", "-c", "user.email=test@example.com",
                          "-c", "init.defaultBranch=main", *args], cwd=str(repo),
                         capture_output=True, text=True, check=True)
    return out.stdout.strip()


def files_under(directory) -> list:
    found = []
    for current, _, names in os.walk(str(directory)):
        found += [os.path.join(current, n) for n in names]
    return found


# ------------------------------------------------------------------ the scrubber
@pytest.mark.parametrize("url, clean", [
    ("https://gitlab.com/x/y.git?private_token=glpat-PLANT&ref=main", "https://gitlab.com/x/y.git?private_token=REDACTED&ref=main"),
    ("https://h.example/y.git?access_token=PLANT", "https://h.example/y.git?access_token=REDACTED"),
    ("https://h.example/y.git?token=PLANT", "https://h.example/y.git?token=REDACTED"),
    ("https://a.blob.core.windows.net/c/y.git?sv=2020&sig=PL%2BANT&se=1",
     "https://a.blob.core.windows.net/c/y.git?sv=2020&sig=REDACTED&se=1"),
    ("https://b.s3.amazonaws.com/y?X-Amz-Credential=AKIA%2FPLANT&X-Amz-Signature=PLANT&X-Amz-Date=1",
     "https://b.s3.amazonaws.com/y?X-Amz-Credential=REDACTED&X-Amz-Signature=REDACTED&X-Amz-Date=1"),
    ("https://h.example/y?apikey=PLANT&api_key=PLANT&key=PLANT&password=PLANT&secret=PLANT&page=2",
     "https://h.example/y?apikey=REDACTED&api_key=REDACTED&key=REDACTED&password=REDACTED&secret=REDACTED&page=2"),
    ("deploy:PLANT@git.example.com:x/y.git", "deploy@git.example.com:x/y.git"),
    ("user:PLANT@10.0.0.1:/srv/y.git", "user@10.0.0.1:/srv/y.git"),
    # what is not a credential stays as it was
    ("git@github.com:x/y.git", "git@github.com:x/y.git"),
    ("https://github.com/x/y.git?ref=main&signal=1", "https://github.com/x/y.git?ref=main&signal=1"),
    ("ssh://git@github.com:22/x/y.git", "ssh://git@github.com:22/x/y.git"),
])
def test_recorded_git_remotes_lose_query_tokens_and_scp_passwords(url, clean):
    assert provenance.strip_credentials(url) == clean


@pytest.mark.parametrize("text, clean", [
    ("--export=ALL,WANDB_API_KEY=PLANT", "--export=ALL,WANDB_API_KEY=REDACTED"),
    ("HF_TOKEN=PLANT python train.py --lr 0.1", "HF_TOKEN=REDACTED python train.py --lr 0.1"),
    ("python t.py --password 'PLANT PLANT' --sigma 0.3", "python t.py --password REDACTED --sigma 0.3"),
    ("python t.py --api-key=PLANT --author me", "python t.py --api-key=REDACTED --author me"),
    ("--comment=see https://u:PLANT@h.example/x", "--comment=see https://h.example/x"),
    ("gpu1:4,user@host3:8,gpu2:2:gpus=0,1", "gpu1:4,user@host3:8,gpu2:2:gpus=0,1"),
    ("--export=ALL,ONAGER_TASK_OFFSET=0", "--export=ALL,ONAGER_TASK_OFFSET=0"),
])
def test_scrub_text(text, clean):
    from onager.scrub import scrub_text
    assert scrub_text(text, environ={}) == clean


def test_scrub_argv_hides_the_word_after_a_secret_option_and_secret_env_values():
    from onager.scrub import scrub_argv, scrub_env, scrub_value
    env = {"MY_SERVICE_TOKEN": "t0k-PLANT-value", "PATH": "/usr/bin", "SHORT_KEY": "1"}
    argv = ["onager", "launch", "--jobname", "x", "--", "--token", "PLANT", "--comment", "t0k-PLANT-value", "-x", "1"]
    assert scrub_argv(argv, env) == ["onager", "launch", "--jobname", "x", "--", "--token", "REDACTED",
                                     "--comment", "REDACTED", "-x", "1"]
    assert scrub_env({"AWS_SECRET_ACCESS_KEY": "a", "GITHUB_TOKEN": "b", "DB_PASSWORD": "c", "MYKEY": "d",
                      "X_PASSWD": "e", "GOOGLE_APPLICATION_CREDENTIALS": "f", "HTTP_AUTH": "g",
                      "HOME": "/root"}) == \
        {"AWS_SECRET_ACCESS_KEY": "REDACTED", "GITHUB_TOKEN": "REDACTED", "DB_PASSWORD": "REDACTED",
         "MYKEY": "REDACTED", "X_PASSWD": "REDACTED", "GOOGLE_APPLICATION_CREDENTIALS": "REDACTED",
         "HTTP_AUTH": "REDACTED", "HOME": "/root"}
    # numbers, booleans and None stay: launch.json options drive a --detach pool
    assert scrub_value({"ssh_no_host_key_check": True, "api_key": "PLANT", "max_tasks": 3, "hosts": "a:2,b:1",
                        "extra": ["--token", "PLANT"]}, {}) == \
        {"ssh_no_host_key_check": True, "api_key": "REDACTED", "max_tasks": 3, "hosts": "a:2,b:1",
         "extra": ["--token", "REDACTED"]}


# --------------------------------------------------- nothing planted reaches .onager
@needs_git
def test_planted_secrets_reach_no_metadata_file(tmp_path, monkeypatch):
    fake = install_fake_scheduler(tmp_path, monkeypatch)
    fake.respond("sbatch", 0, "4242\n")
    plants = {
        "remote_query": "glpatQUERYPLANT01",
        "remote_scp": "scpPASSWORDPLANT02",
        "remote_https": "httpsUSERINFOPLANT03",
        "extra_env": "EXTRAEXPORTPLANT04",
        "extra_option": "EXTRAOPTIONPLANT05",
        "command_option": "COMMANDOPTIONPLANT06",
        "env_value": "ENVIRONMENTPLANT07",
        "prelaunch": "PRELAUNCHPLANT08",
    }
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q")
    (repo / "train.py").write_text("print('x')\n")
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", "first")
    git(repo, "remote", "add", "origin", f"https://gitlab.com/x/y.git?private_token={plants['remote_query']}")
    git(repo, "remote", "add", "scp", f"deploy:{plants['remote_scp']}@git.example.com:x/y.git")
    git(repo, "remote", "add", "https", f"https://me:{plants['remote_https']}@example.org/y.git")
    env = {"ONAGER_GLOBAL_CONFIG": str(tmp_path / "global.onagerconfig"), "GIT_CEILING_DIRECTORIES": str(tmp_path),
           "MY_SERVICE_TOKEN": plants["env_value"]}
    pre = run_onager(["prelaunch", "+jobname", "pre", "+command", f"python3 train.py --api-key {plants['prelaunch']}",
                      "+arg", "--lr", "0.1", "0.01", "+q"], cwd=str(repo), env=env)
    assert pre.returncode == 0, pre.stderr
    for job, how in (("pre", []), ("one", ["--command", f"python3 train.py --token {plants['command_option']} "
                                                      f"--seed {plants['env_value']}"])):
        out = run_onager(["launch", "--backend", "slurm", "--jobname", job, *how, "--",
                          f"--export=ALL,WANDB_API_KEY={plants['extra_env']}", "--password", plants["extra_option"],
                          f"--comment=run by {plants['env_value']}"], cwd=str(repo), env=env)
        assert out.returncode == 0, out.stderr
        assert "4242" in out.stderr
    # the scheduler got the real arguments
    sbatch = [c for c in fake.calls() if c[0] == "sbatch"]
    assert len(sbatch) == 2 and all(plants["extra_option"] in c for c in sbatch)
    checked = files_under(repo / ".onager")
    assert len(checked) > 12
    for path in checked:
        with open(path, "rb") as handle:
            data = handle.read()
        if os.path.basename(path) in RUN_RECORDS:
            continue
        for what, value in plants.items():
            assert value.encode() not in data, (what, path)
    # what was recorded still says what it could: the remotes without their secrets
    with open(repo / ".onager" / "launches" / "one" / "1" / "provenance.json") as handle:
        prov = json.load(handle)
    assert prov["git"]["remotes"] == {"origin": "https://gitlab.com/x/y.git?private_token=REDACTED",
                                      "scp": "deploy@git.example.com:x/y.git", "https": "https://example.org/y.git"}
    assert "--password" in prov["argv"] and "REDACTED" in prov["argv"]
    # ... and the records the tasks run from carry the user's text byte for byte
    with open(repo / ".onager" / "launches" / "one" / "1" / "tasks.sh", "rb") as handle:
        assert plants["command_option"].encode() in handle.read()
    with open(repo / ".onager" / "launches" / "pre" / "1" / "tasks.sh", "rb") as handle:
        assert plants["prelaunch"].encode() in handle.read()


# ------------------------------------------------------------------------ umask
def _under_umask(umask: int, args, cwd, env) -> subprocess.CompletedProcess:
    full = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), **env)
    return subprocess.run([sys.executable, "-m", "onager", *args], cwd=str(cwd), env=full, capture_output=True,
                          text=True, stdin=subprocess.DEVNULL, timeout=120, preexec_fn=lambda: os.umask(umask))


@pytest.mark.parametrize("umask", [0o077, 0o022, 0o002])
def test_files_onager_creates_follow_the_umask(tmp_path, monkeypatch, umask):
    fake = install_fake_scheduler(tmp_path, monkeypatch)
    fake.respond("sbatch", 0, "77\n")
    project = tmp_path / "project"
    project.mkdir()
    (project / "data.txt").write_text("x\n")
    (project / "run.sh").write_text("#!/bin/sh\necho hi\n")
    os.chmod(project / "data.txt", 0o644)
    os.chmod(project / "run.sh", 0o755)
    env = {"ONAGER_GLOBAL_CONFIG": str(tmp_path / "global.onagerconfig"), "GIT_CEILING_DIRECTORIES": str(tmp_path)}
    steps = [["prelaunch", "+jobname", "u", "+command", "sh run.sh", "+arg", "--i", "1", "2", "3", "+q"],
             ["launch", "--backend", "local", "--jobname", "u", "--snapshot"],
             ["launch", "--backend", "slurm", "--jobname", "u", "--tasks-per-node", "2"],
             ["list"]]
    for args in steps:
        out = _under_umask(umask, args, project, env)
        assert out.returncode == 0, (args, out.stderr)
    plain, executable, directory = 0o666 & ~umask, 0o777 & ~umask, 0o777 & ~umask
    launches = project / ".onager" / "launches" / "u"
    assert stat.S_IMODE(os.stat(launches / "1" / "wrapper.sh").st_mode) == executable
    assert stat.S_IMODE(os.stat(launches / "1" / "code" / "run.sh").st_mode) == 0o755 & ~umask
    assert stat.S_IMODE(os.stat(launches / "1" / "code" / "data.txt").st_mode) == 0o644 & ~umask  # as cp copies
    for name in ("launch.json", "provenance.json", "tasks.sh"):
        assert stat.S_IMODE(os.stat(launches / "1" / name).st_mode) == plain, name
    seen = 0
    for current, dirs, names in os.walk(str(project / ".onager")):
        for name in dirs:
            mode = stat.S_IMODE(os.stat(os.path.join(current, name)).st_mode)
            assert mode == directory, (os.path.join(current, name), oct(mode))
        for name in names:
            path = os.path.join(current, name)
            mode = stat.S_IMODE(os.stat(path).st_mode)
            assert mode & umask == 0, (path, oct(mode))
            if "/code/" not in path:
                assert mode in (plain, executable), (path, oct(mode))
            seen += 1
    assert seen > 20


def test_pip_freeze_keeps_package_names_that_look_secret():
    from onager.scrub import scrub_text
    freeze = "keyring==24.3.0\ntokenizers==0.15.0\nsecretstorage==3.3.3\npkg @ git+https://u:PLANT@h.example/x@v1\n"
    assert scrub_text(freeze, environ={}) == \
        "keyring==24.3.0\ntokenizers==0.15.0\nsecretstorage==3.3.3\npkg @ git+https://h.example/x@v1\n"


def test_key_counts_as_a_word_in_options_and_anywhere_in_variable_names():
    from onager.scrub import is_secret_name, is_secret_variable, scrub_argv
    argv = ["python", "t.py", "--monkey", "3", "--keyboard", "us", "--api-key", "abcdefgh", "--ssh-key=k1k2k3"]
    assert scrub_argv(argv) == ["python", "t.py", "--monkey", "3", "--keyboard", "us",
                                "--api-key", "REDACTED", "--ssh-key=REDACTED"]
    assert not is_secret_name("--hotkey") and is_secret_name("apikey") and is_secret_name("X-Amz-Signature")
    assert is_secret_variable("MYKEY") and is_secret_variable("WANDB_API_KEY")


def test_a_slurm_warning_signal_is_not_taken_for_a_login():
    from onager.scrub import scrub_argv
    assert scrub_argv(["sbatch", "--signal=B:USR1@60", "--", "alice:pw@gpu01:/x"]) == [
        "sbatch", "--signal=B:USR1@60", "--", "alice@gpu01:/x"]
