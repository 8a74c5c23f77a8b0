"""Atomic writes and locks: a crash leaves the old file, two processes never interleave."""
from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time

import pytest

from onager.fsutil import atomic_write, atomic_writer, file_lock, read_text

FORK = multiprocessing.get_context("fork")


def test_atomic_write_text_and_bytes(tmp_path):
    path = str(tmp_path / "deep" / "dir" / "f.txt")
    atomic_write(path, "héllo\n")
    with open(path, encoding="utf-8") as handle:
        assert handle.read() == "héllo\n"
    atomic_write(path, b"\x00\xff")
    with open(path, "rb") as handle:
        assert handle.read() == b"\x00\xff"
    assert os.listdir(tmp_path / "deep" / "dir") == ["f.txt"]


def test_newlines_are_written_as_is(tmp_path):
    path = tmp_path / "f"
    atomic_write(str(path), "a\nb\r\nc")
    assert path.read_bytes() == b"a\nb\r\nc"


def test_exception_leaves_the_old_file_and_no_temp(tmp_path):
    path = tmp_path / "f.json"
    path.write_text("old")
    with pytest.raises(ValueError), atomic_writer(str(path)) as handle:
        handle.write("new and half-written")
        raise ValueError("boom")
    assert path.read_text() == "old"
    assert os.listdir(tmp_path) == ["f.json"]


def test_keyboard_interrupt_leaves_the_old_file(tmp_path):
    path = tmp_path / "f"
    path.write_text("old")
    with pytest.raises(KeyboardInterrupt), atomic_writer(str(path)) as handle:
        handle.write("x" * 100000)
        raise KeyboardInterrupt
    assert path.read_text() == "old"
    assert os.listdir(tmp_path) == ["f"]


def test_exception_before_first_write_does_not_create_the_file(tmp_path):
    path = tmp_path / "new"
    with pytest.raises(RuntimeError), atomic_writer(str(path)):
        raise RuntimeError
    assert not path.exists()
    assert os.listdir(tmp_path) == []


def test_new_file_mode_follows_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write(str(tmp_path / "f"), "x")
    finally:
        os.umask(old)
    assert (os.stat(tmp_path / "f").st_mode & 0o777) in (0o644, 0o666 & ~old)


def test_existing_file_keeps_its_mode(tmp_path):
    path = tmp_path / "secret.cfg"
    path.write_text("a")
    os.chmod(path, 0o600)
    atomic_write(str(path), "b")
    assert os.stat(path).st_mode & 0o777 == 0o600
    script = tmp_path / "run.sh"
    script.write_text("#!/bin/sh\n")
    os.chmod(script, 0o755)
    atomic_write(str(script), "#!/bin/sh\necho\n")
    assert os.stat(script).st_mode & 0o777 == 0o755


def test_symlink_is_followed_not_replaced(tmp_path):
    real = tmp_path / "real.cfg"
    real.write_text("old")
    link = tmp_path / "link.cfg"
    link.symlink_to(real)
    atomic_write(str(link), "new")
    assert link.is_symlink()
    assert real.read_text() == "new"


def test_readers_see_old_or_new_never_a_mix(tmp_path):
    path = str(tmp_path / "f")
    versions = ["A" * 300_000, "B" * 300_000]
    atomic_write(path, versions[0])
    stop = threading.Event()
    seen = set()
    bad = []

    def reader():
        while not stop.is_set():
            with open(path) as handle:
                text = handle.read()
            if text not in versions:
                bad.append(len(text))
            seen.add(text[:1])

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for i in range(60):
            atomic_write(path, versions[i % 2])
    finally:
        stop.set()
        thread.join()
    assert not bad
    assert seen <= {"A", "B"}


def test_killed_writer_leaves_the_old_file(tmp_path):
    path = str(tmp_path / "f")
    atomic_write(path, "old")
    started = FORK.Event()

    def writer():
        with atomic_writer(path) as handle:
            handle.write("partial")
            handle.flush()
            started.set()
            time.sleep(60)

    proc = FORK.Process(target=writer)
    proc.start()
    assert started.wait(20)
    os.kill(proc.pid, signal.SIGKILL)
    proc.join()
    assert read_text(path) == "old"


def test_read_text(tmp_path):
    assert read_text(str(tmp_path / "missing"), default="d") == "d"
    assert read_text(str(tmp_path / "missing"), default="") == ""
    with pytest.raises(FileNotFoundError):
        read_text(str(tmp_path / "missing"))
    atomic_write(str(tmp_path / "f"), "é")
    assert read_text(str(tmp_path / "f")) == "é"


# -------------------------------------------------------------------- locks
def _increment(lock: str, counter: str, times: int) -> None:
    for _ in range(times):
        with file_lock(lock):
            with open(counter) as handle:
                value = int(handle.read())
            time.sleep(0.0005)  # widen the race window: without the lock, updates get lost
            with open(counter, "w") as handle:
                handle.write(str(value + 1))


def test_file_lock_serialises_processes(tmp_path):
    lock, counter = str(tmp_path / "sub" / "x.lock"), str(tmp_path / "counter")
    with open(counter, "w") as handle:
        handle.write("0")
    procs = [FORK.Process(target=_increment, args=(lock, counter, 40)) for _ in range(4)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(60)
        assert proc.exitcode == 0
    with open(counter) as handle:
        assert int(handle.read()) == 160


def _hold(lock: str, held, release) -> None:
    with file_lock(lock):
        held.set()
        release.wait(30)


def _try_lock(lock: str, got) -> None:
    with file_lock(lock):
        got.set()


def test_file_lock_excludes_a_second_process_until_released(tmp_path):
    lock = str(tmp_path / "x.lock")
    held, release, got = FORK.Event(), FORK.Event(), FORK.Event()
    holder = FORK.Process(target=_hold, args=(lock, held, release))
    holder.start()
    assert held.wait(20)
    waiter = FORK.Process(target=_try_lock, args=(lock, got))
    waiter.start()
    assert not got.wait(0.5)  # blocked while the first process holds the lock
    release.set()
    assert got.wait(20)  # and gets it as soon as it is released
    holder.join(20)
    waiter.join(20)
    assert holder.exitcode == 0 and waiter.exitcode == 0


def test_file_lock_is_freed_when_the_holder_is_killed(tmp_path):
    lock = str(tmp_path / "x.lock")
    held, release = FORK.Event(), FORK.Event()
    holder = FORK.Process(target=_hold, args=(lock, held, release))
    holder.start()
    assert held.wait(20)
    os.kill(holder.pid, signal.SIGKILL)
    holder.join()
    got = FORK.Event()
    waiter = FORK.Process(target=_try_lock, args=(lock, got))
    waiter.start()
    assert got.wait(20)
    waiter.join(20)


def test_file_lock_released_after_exception(tmp_path):
    lock = str(tmp_path / "x.lock")
    with pytest.raises(RuntimeError), file_lock(lock):
        raise RuntimeError
    got = FORK.Event()
    proc = FORK.Process(target=_try_lock, args=(lock, got))
    proc.start()
    assert got.wait(20)
    proc.join(20)
