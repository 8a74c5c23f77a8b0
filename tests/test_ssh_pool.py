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
