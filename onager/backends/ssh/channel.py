"""ssh: one task attempt's ssh session, and the filter that takes the runner's markers out of
its output."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import IO, Any, Callable

from onager.backends.ssh.hosts import HostSpec
from onager.backends.ssh.transport import HostInfo

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: the processes are started elsewhere
    import subprocess


class _MarkerFilter:
    """Copies a channel to a log file, taking out the runner's `NONCE word value` lines."""

    def __init__(self, nonce: str, sink: Callable[[bytes], object], on_event: Callable[[str, str], None]):
        self.tag = nonce.encode() + b" "
        self.sink = sink
        self.on_event = on_event
        self.carry = b""

    def feed(self, data: bytes) -> None:
        buf = self.carry + data
        while True:
            i = buf.find(self.tag)
            if i < 0:
                hold = 0
                for k in range(min(len(self.tag) - 1, len(buf)), 0, -1):
                    if buf.endswith(self.tag[:k]):
                        hold = k
                        break
                if len(buf) - hold:
                    self.sink(buf[:len(buf) - hold])
                self.carry = buf[len(buf) - hold:]
                return
            j = buf.find(b"\n", i)
            if j < 0:
                if i:
                    self.sink(buf[:i])
                self.carry = buf[i:]
                if len(self.carry) > 256:  # not a marker after all
                    self.sink(self.carry)
                    self.carry = b""
                return
            if i:
                self.sink(buf[:i])
            words = buf[i + len(self.tag):j].decode("ascii", "replace").split()
            if len(words) == 2:
                self.on_event(words[0], words[1])
            buf = buf[j + 1:]

    def close(self) -> None:
        if self.carry:
            self.sink(self.carry)
            self.carry = b""


@dataclass
class _Host:
    spec: HostSpec
    info: HostInfo
    remote: str
    slots: list[str | None]          # CUDA_VISIBLE_DEVICES per slot
    free: list[int] = field(default_factory=list)
    alive: bool = True
    checking: subprocess.Popen[bytes] | None = None  # kills the suspects' groups: proves the host answers
    checked: list[_Run] = field(default_factory=list)  # the runs that call covers
    suspects: list[_Run] = field(default_factory=list)  # channel closed without an end; not checked yet
    start_failures: int = 0

    @property
    def name(self) -> str:
        return self.spec.target


@dataclass
class _Run:
    """One attempt of one task on one host slot."""

    task_id: int
    host: _Host
    slot: int
    nonce: str
    proc: subprocess.Popen[bytes]
    out: IO[bytes]
    err: IO[bytes]
    filters: dict[int, Any] = field(default_factory=dict)
    open_streams: int = 2
    pgid: int | None = None
    rc: int | None = None
    ended: bool = False       # end marker seen: the slot is free again
    kill_sent: bool = False
