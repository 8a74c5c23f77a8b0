"""Atomic writes and file locks: the one place that knows how files change safely.

Every file onager rewrites (jobfile, index, config, state) goes through here, so a
killed process leaves either the old file or the new one, never half of one.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
from typing import IO, Iterator, Union


@contextlib.contextmanager
def atomic_writer(path: str, mode: str = "w", encoding: str = "utf-8",
                  buffering: int = 1 << 20) -> Iterator[IO]:
    """Yield a file that replaces `path` by rename only when the block ends cleanly."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp",
                               dir=directory)
    try:
        kwargs = {} if "b" in mode else {"encoding": encoding, "newline": "\n"}
        with os.fdopen(fd, mode, buffering=buffering, **kwargs) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.chmod(tmp, 0o644 & ~_umask())
        except OSError:
            pass
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def atomic_write(path: str, data: Union[str, bytes]) -> None:
    mode = "wb" if isinstance(data, bytes) else "w"
    with atomic_writer(path, mode) as handle:
        handle.write(data)


_UMASK = None


def _umask() -> int:
    global _UMASK
    if _UMASK is None:
        _UMASK = os.umask(0)
        os.umask(_UMASK)
    return _UMASK


@contextlib.contextmanager
def file_lock(path: str) -> Iterator[None]:
    """Hold an exclusive advisory lock on `path` (created if missing) for the block."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        try:
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)


def read_text(path: str, default: str = None) -> str:
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except FileNotFoundError:
        if default is None:
            raise
        return default
