"""Issue 13, item 5 without sshd: --fetch is checked before anything is written."""
from __future__ import annotations


def test_fetch_is_refused_by_other_backends_and_checked(project, onager):
    assert onager("prelaunch", "+jobname", "w2c-f", "+command", "true").returncode == 0
    for args, words in ((["--backend", "local", "--fetch", "x"], "--fetch"),
                        (["--backend", "ssh", "--hosts", "h", "--fetch", "/abs/*"], "bad --fetch"),
                        (["--backend", "ssh", "--hosts", "h", "--fetch", "a\nb"], "bad --fetch")):
        out = onager("launch", "--jobname", "w2c-f", *args)
        assert out.returncode == 2 and words in out.stderr and len(out.stderr.strip().splitlines()) == 1, out.stderr
        assert "Traceback" not in out.stderr
    assert not (project / ".onager" / "launches").exists()


# ------------------------------------------------------------------ structure (issue 13, item 5)
def test_ssh_is_a_package_of_small_modules_on_the_shared_pool():
    import glob
    import os

    from onager.backends import local, pool, ssh
    from onager.backends.ssh import dispatch

    assert ssh.BACKEND is ssh.SshBackend and ssh.BACKEND.name == "ssh"
    here = os.path.dirname(ssh.__file__)
    assert os.path.isfile(os.path.join(here, "__main__.py"))  # python -m onager.backends.ssh (--detach)
    for path in glob.glob(os.path.join(here, "*.py")) + [pool.__file__, local.__file__]:
        with open(path) as handle:
            assert sum(1 for _ in handle) < 400, path
    # one engine: local runs pool.Pool, the ssh dispatcher watches cancels with the same class
    assert local.Pool is pool.Pool
    d = dispatch.Dispatcher("/nonexistent", "j", "1", [1], {"hosts": "h"})
    assert isinstance(d.cancels, pool.CancelWatch)


def test_remote_dirs_differ_per_project_and_launch():
    from onager.backends import ssh
    from onager.backends.ssh.remote import launch_key

    a = launch_key("/home/me/proj-a/.onager/launches/train/1", "1")
    b = launch_key("/home/me/proj-b/.onager/launches/train/1", "1")
    again = launch_key("/home/me/proj-a/.onager/launches/train/1", "1")
    assert len({a, b, again}) == 3 and all(k.startswith("1-") for k in (a, b, again))
    assert a[:10] == again[:10] != b[:10]  # the project part is stable, the nonce is not
    dirs = {ssh.remote_dir_of({}, "train", k, "host") for k in (a, b)}
    assert len(dirs) == 2 and all(d.startswith(".onager-remote/train/1-") for d in dirs)


def test_outputs_unpacked_safely_and_results_appended(tmp_path):
    import io
    import tarfile

    from onager.backends.ssh.ledger import _unpack_home

    launch = tmp_path / "launch"
    (launch / "results").mkdir(parents=True)
    (launch / "results" / "2.jsonl").write_bytes(b'{"a": 1}\n')
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        def add(name, data=b"x", kind=tarfile.REGTYPE):
            member = tarfile.TarInfo(name)
            member.type, member.size = kind, len(data) if kind == tarfile.REGTYPE else 0
            if kind == tarfile.SYMTYPE:
                member.linkname = "/etc/passwd"
            tar.addfile(member, io.BytesIO(data) if kind == tarfile.REGTYPE else None)
        add("results/2.jsonl", b'{"a": 5}\n')
        add("results/../../evil.jsonl")
        add("/abs/evil")
        add(".fetch/../../evil2")
        add(".fetch/out/link", kind=tarfile.SYMTYPE)
        add(".fetch/out/m.txt", b"model\n")
    buf.seek(0)
    assert _unpack_home(buf, str(launch), "h_1") is None
    assert (launch / "results" / "2.jsonl").read_bytes() == b'{"a": 1}\n{"a": 5}\n'
    assert (launch / "fetched" / "h_1" / "out" / "m.txt").read_bytes() == b"model\n"
    assert not (launch / "fetched" / "h_1" / "out" / "link").exists()
    found = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    assert found == ["launch/fetched/h_1/out/m.txt", "launch/results/2.jsonl"]
    assert _unpack_home(io.BytesIO(b""), str(launch), "h_1") is None  # nothing to bring home
