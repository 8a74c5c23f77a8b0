"""Atomic writes and file locks: the one place that knows how files change safely.

Every file onager rewrites (jobfile, index, config, state) goes through here, so a
killed process leaves either the old file or the new one, never half of one.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
from collections.abc import Iterator

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import IO, Any


@contextlib.contextmanager
def atomic_writer(path: str, mode: str = "w", encoding: str = "utf-8",
                  buffering: int = 1 << 20) -> Iterator[IO[Any]]:
    """Yield a file that replaces `path` by rename only when the block ends cleanly.

    A symlink is followed (the file it points to is replaced, the link stays), and the
    new file keeps the old one's permissions (a `chmod 600` config stays private); a new
    file gets the usual 0666 minus the umask.
    """
    target = os.path.realpath(path)
    directory = os.path.dirname(target)
    os.makedirs(directory, exist_ok=True)
    try:
        file_mode = stat.S_IMODE(os.stat(target).st_mode)
    except OSError:
        file_mode = 0o666 & ~_umask()
    import tempfile  # here: it imports random (and hashlib) for its names, a cost on every command

    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(target) + ".", suffix=".tmp",
                               dir=directory)
    try:
        kwargs: dict[str, Any] = {} if "b" in mode else {"encoding": encoding, "newline": "\n"}
        with os.fdopen(fd, mode, buffering=buffering, **kwargs) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        with contextlib.suppress(OSError):
            os.chmod(tmp, file_mode)
        os.replace(tmp, target)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError) and exc.filename is None:
            exc.filename = path  # a failed write (disk full) names no file: the CLI needs one
        raise


def atomic_write(path: str, data: str | bytes) -> None:
    mode = "wb" if isinstance(data, bytes) else "w"
    with atomic_writer(path, mode) as handle:
        handle.write(data)


def _umask() -> int:
    """The process umask, read from /proc where possible: setting it to probe it would
    briefly give files created by other threads no umask at all. Read each time, not
    cached: a caller may change its umask between two launches."""
    try:
        with open("/proc/self/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def executable_mode() -> int:
    """Mode of a script onager creates (wrapper.sh, node scripts): 0777 less the umask, as a
    compiler or `cp` gives; never wider than the user allows (0700 under umask 077)."""
    return 0o777 & ~_umask()


def masked_mode(mode: int) -> int:
    """`mode` (a copied file's) less the umask, as `cp` gives."""
    return mode & ~_umask()


@contextlib.contextmanager
def file_lock(path: str) -> Iterator[None]:
    """Hold an exclusive advisory lock on `path` (created if missing) for the block."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)  # less the umask, like every file onager creates
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        try:
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)


def read_text(path: str, default: str | None = None) -> str:
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except FileNotFoundError:
        if default is None:
            raise
        return default


# errno -> (what happened, how to fix it), for the one line the CLI prints
_OS_ERRORS = {
    errno.ENOSPC: ("no space left on device", "free some space on that disk (or run from another one) and run the "
                                              "command again"),
    errno.EDQUOT: ("disk quota exceeded", "free some space or ask for a larger quota, then run the command again"),
    errno.EROFS: ("read-only file system", "run onager from a writable directory"),
    errno.EACCES: ("permission denied", "fix its permissions (ls -ld, chmod, chown) or run from a directory you own"),
    errno.EPERM: ("operation not permitted", "fix its permissions (ls -ld, chmod, chown) or run from a directory "
                                             "you own"),
    errno.EIO: ("input/output error", "check the disk (dmesg) and run the command again"),
    errno.EFBIG: ("file too large", "free space or raise the file size limit (ulimit -f)"),
    errno.EMFILE: ("too many open files", "raise the limit (ulimit -n) and run the command again"),
}


def os_error_message(exc: OSError) -> str:
    """One line for an OSError: what failed, on which path, and how to fix it.

    A path that should be a directory but is a file (`.onager` created by hand) is named
    as such, since the raw error names a file below it.
    """
    path = exc.filename
    shown = _display(path) if isinstance(path, (str, bytes)) else None
    if exc.errno in (errno.ENOTDIR, errno.EEXIST) and isinstance(path, str):
        blocker = _file_in_the_way(path)
        if blocker is not None:
            return (f"{_display(blocker)} is a file, not a directory: move it away (onager keeps its files "
                    f"in the directory .onager) and run the command again")
    if exc.errno == errno.EISDIR and shown:
        return f"{shown} is a directory, not a file: move it away and run the command again"
    what, fix = _OS_ERRORS.get(exc.errno or 0, (exc.strerror or type(exc).__name__, "check that path and run the "
                                                                                    "command again"))
    where = f" writing {shown}" if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG) and shown else \
        (f" for {shown}" if shown else "")
    return f"{what}{where}: {fix}"


def _display(path: str | bytes) -> str:
    text = os.fsdecode(path)
    if text.startswith("<"):
        return text  # <standard output>
    try:
        relative = os.path.relpath(text)
    except ValueError:
        return text
    return text if relative.startswith("..") else relative


def _file_in_the_way(path: str) -> str | None:
    """The first existing non-directory among the parents of `path` (or `path` itself)."""
    absolute = os.path.abspath(path)
    parts = absolute.split(os.sep)
    for end in range(2, len(parts) + 1):
        prefix = os.sep.join(parts[:end])
        if os.path.lexists(prefix) and not os.path.isdir(prefix):
            return prefix
    return None
