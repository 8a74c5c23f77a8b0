"""prelaunch.parse reads its +options through one table (issue 13, item 7): option -> how its
words are read and what it does; the arity stays in OPTIONS / EXACT_OPTIONS."""
from __future__ import annotations

import pytest

from onager import prelaunch
from onager.errors import UsageError


def test_the_table_has_every_option_once() -> None:
    canonical = {prelaunch.ALIASES.get(o, o) for o in [*prelaunch.OPTIONS, *prelaunch.EXACT_OPTIONS]}
    assert set(prelaunch.TABLE) == canonical


def test_parse_runs_the_handler_the_table_names(monkeypatch) -> None:
    seen = []
    reader, handler = prelaunch.TABLE["+seed"]

    def spy(state, option, values):
        seen.append((option, list(values)))
        handler(state, option, values)
    monkeypatch.setitem(prelaunch.TABLE, "+seed", (reader, spy))
    args = prelaunch.parse(["+jobname", "j", "+command", "echo", "+arg", "--x", "+uniform", "0", "1",
                            "+sample", "2", "+seed", "5"])
    assert seen == [("+seed", ["5"])] and args.sweep.seed == 5


@pytest.mark.parametrize("argv, expected", [
    (["+jobname", "j", "+command", "echo", "+arg", "--lr", "1", "2", "+a", "+q"],
     dict(jobname="j", append=True, quiet=True, lines=["echo --lr 1", "echo --lr 2"])),
    (["+jobname=j", "+command=echo", "+pos-arg", "a", "+link", "+pos-arg", "b", "+tag", "+no-tag-number"],
     dict(jobname="j", append=False, quiet=False, lines=["echo a b --tag j__a__b"])),
    (["+jobname", "j", "+command", "echo", "+flag", "--amp", "+dry-run", "+jobfile", "x.json"],
     dict(jobname="j", jobfile="x.json", dry_run=True, lines=["echo --amp", "echo"])),
])
def test_what_the_options_set(argv, expected) -> None:
    args = prelaunch.parse(argv)
    lines = expected.pop("lines")
    assert [line.command for line in args.sweep.lines(args.jobname)] == lines
    for name, value in expected.items():
        assert getattr(args, name) == value


@pytest.mark.parametrize("argv, message", [
    (["+jobname", "j", "+command", "echo", "+arg", "--a", "1", "+link", "+tag"],
     "+link must be followed by the +arg or +pos-arg to link, not +tag"),
    (["+jobname", "j", "+command", "echo", "+arg", "--a", "1", "+link", "+flag", "--b"],
     "+link cannot join a +flag: flags are not linked; use +arg NAME with values"),
    (["+jobname", "j", "+command", "echo", "+tag", ""], "+tag needs a non-empty name, or none for --tag"),
    (["+jobname", "j", "+command", "echo", "+from", "a.toml", "+from", "b.toml"],
     "+from takes one sweep file; give the rest as options"),
    (["+jobname", "j", "+command"], "+command needs a value; see onager help prelaunch"),
    (["+jobname", "j", "+command", "echo", "+tag-args"], "+tag-args needs at least 1 value(s); see onager help "
                                                         "prelaunch"),
])
def test_messages_are_unchanged(argv, message) -> None:
    with pytest.raises(UsageError) as caught:
        prelaunch.parse(argv)
    assert str(caught.value) == message
