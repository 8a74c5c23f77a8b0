"""The block writer (Sweep.chunks) and the per-task writer (Sweep.lines) write the same bytes."""
from __future__ import annotations

import io

import pytest

from onager.jobfile import write_jobfile
from onager.sweep import Sweep


def _sweeps():
    yield Sweep("python t.py").arg("--lr", ["0.1", "0.01"]).arg("--bs", ["32", "64", "128"]).tag()
    yield Sweep("x").pos_arg(["a", "b"]).flag("--v").flag("--no-cuda").arg("--seed", ["1", "2"]).tag("--run-tag")
    yield Sweep("x").arg("--cuda").arg("--lr", ["1", "2"]).tag(args=["--lr"], number=False)
    yield Sweep("x").arg("--lr", ["1", "2"]).arg("--wd", ["3", "4"], link=True).arg("--s", ["5", "6", "7"])
    yield Sweep("echo").arg("--a", [str(i) for i in range(70)]).arg("--b", [str(i) for i in range(70)]).tag()
    yield Sweep("echo").pos_arg(["héllo", "plain"]).arg("--m", ["x"]).tag()   # unsafe tag: no block path


@pytest.mark.parametrize("sweep", list(_sweeps()))
@pytest.mark.parametrize("start", [1, 95])
def test_blocks_equal_lines(tmp_path, sweep, start):
    slow_echo, fast_echo = io.StringIO(), io.StringIO()
    write_jobfile(str(tmp_path / "slow.json"), sweep.lines("job", start), echo=slow_echo)
    chunks = sweep.chunks("job", start, fast_echo)
    if chunks is None:
        assert not all(c.tag_safe for axis in sweep.axes() for c in axis)
        return
    write_jobfile(str(tmp_path / "fast.json"), (), chunks=chunks)
    assert (tmp_path / "fast.json").read_bytes() == (tmp_path / "slow.json").read_bytes()
    assert fast_echo.getvalue() == slow_echo.getvalue()
