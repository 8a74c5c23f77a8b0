"""The documentation is run and checked: the tutorial as written, the prelaunch examples of
README.md and docs/index.md, and docs/cli.md against the real command-line parsers.

Console blocks (```console) hold commands (`$ ` lines, a here-document's body included)
and, after each, lines of output. A shown output line must appear in what the command
printed (stdout and stderr), compared with runs of spaces collapsed; `H:MM:SS` elapsed
times match any time, and `...` stands for any text (a line of only `...` matches
anything). A trailing `# exits N` on a command line is the exit code it must give
(default 0).
"""
from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass, field

import pytest
from support import ROOT

DOCS = os.path.join(ROOT, "docs")
EXITS = re.compile(r"#\s*exits\s+(\d+)\s*$")
HEREDOC = re.compile(r"<<-?\s*(['\"]?)([A-Za-z_][A-Za-z0-9_]*)\1")
ELAPSED = re.compile(r"\b\d+:\d\d:\d\d\b")


# ------------------------------------------------------------------ parsing the docs
@dataclass
class Step:
    command: str
    exit_code: int = 0
    shown: list[str] = field(default_factory=list)
    line: int = 0  # where the command starts in its file (1-based), for messages


def console_blocks(path: str) -> list[list[tuple]]:
    """The ```console blocks of a markdown file, as lists of (line number, text)."""
    blocks: list[list[tuple]] = []
    current: list[tuple] | None = None
    with open(path, encoding="utf-8") as handle:
        for number, text in enumerate(handle.read().splitlines(), 1):
            stripped = text.strip()
            if current is None:
                if stripped.startswith("```console"):
                    current = []
            elif stripped.startswith("```"):
                blocks.append(current)
                current = None
            else:
                current.append((number, text))
    assert current is None, f"{path}: a ```console block is not closed"
    return blocks


def steps_of(block: list[tuple]) -> list[Step]:
    """Commands of one console block, each with its expected exit code and shown output."""
    steps: list[Step] = []
    lines = list(block)
    i = 0
    while i < len(lines):
        number, text = lines[i]
        i += 1
        if text.startswith("$ "):
            command = text[2:]
            match = EXITS.search(command)
            step = Step(command, int(match.group(1)) if match else 0, line=number)
            heredoc = HEREDOC.search(command)
            if heredoc:
                body = []
                while i < len(lines) and lines[i][1] != heredoc.group(2):
                    body.append(lines[i][1])
                    i += 1
                assert i < len(lines), f"line {number}: here-document without its {heredoc.group(2)} line"
                body.append(lines[i][1])
                i += 1
                step.command = "\n".join([command, *body])
            steps.append(step)
        else:
            assert steps, f"line {number}: output {text!r} before any command"
            if text.strip():
                steps[-1].shown.append(text)
    return steps


def _pattern(shown: str) -> re.Pattern[str]:
    """A shown output line as a regex over one real line (spaces collapsed on both sides)."""
    parts = []
    for piece in re.split(r"(\.\.\.|\b\d+:\d\d:\d\d\b)", " ".join(shown.split())):
        if piece == "...":
            parts.append(".*")
        elif piece and ELAPSED.fullmatch(piece):
            parts.append(r"\d+:\d\d:\d\d")
        else:
            parts.append(re.escape(piece))
    return re.compile("".join(parts))


def missing_lines(shown: list[str], output: str) -> list[str]:
    """Shown lines that no line of the real output matches."""
    real = [" ".join(line.split()) for line in output.splitlines()]
    return [s for s in shown if not any(_pattern(s).fullmatch(r) for r in real)]


# ------------------------------------------------------------------ running commands
def _shim_env(tmp_path) -> dict[str, str]:
    """PATH reaching this checkout's onager (and `python`, the interpreter running the tests)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    pythonpath = ROOT + (os.pathsep + os.environ["PYTHONPATH"] if os.environ.get("PYTHONPATH") else "")
    shim = bin_dir / "onager"
    shim.write_text(f"#!/bin/sh\nPYTHONPATH={shlex.quote(pythonpath)} exec {shlex.quote(sys.executable)} "
                    "-m onager \"$@\"\n")
    shim.chmod(0o755)
    python = bin_dir / "python"
    python.write_text(f"#!/bin/sh\nexec {shlex.quote(sys.executable)} \"$@\"\n")
    python.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ONAGER_")}
    env["PATH"] = str(bin_dir) + os.pathsep + env.get("PATH", "")
    env["PYTHONPATH"] = pythonpath
    env["ONAGER_GLOBAL_CONFIG"] = str(tmp_path / "global.onagerconfig")
    return env


def run_step(step: Step, cwd: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-c", step.command], cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=180)


def _report(path: str, step: Step, proc: subprocess.CompletedProcess, problem: str) -> str:
    return (f"{os.path.relpath(path, ROOT)}:{step.line}: {problem}\n$ {step.command}\n"
            f"--- exit {proc.returncode}; stdout:\n{proc.stdout}--- stderr:\n{proc.stderr}")


# ------------------------------------------------------------------ the parser of this file
def test_steps_of_reads_commands_heredocs_exit_codes_and_output():
    block = list(enumerate([
        "$ cat > a.txt <<'EOF'",
        "x",
        "$ not a command",
        "EOF",
        "$ false    # exits 1",
        "some output",
        "",
        "$ true",
    ], 1))
    steps = steps_of(block)
    assert [s.command for s in steps] == ["cat > a.txt <<'EOF'\nx\n$ not a command\nEOF",
                                          "false    # exits 1", "true"]
    assert [s.exit_code for s in steps] == [0, 1, 0]
    assert [s.shown for s in steps] == [[], ["some output"], []]
    assert [s.line for s in steps] == [1, 5, 8]


def test_shown_lines_match_whole_lines_with_elapsed_and_ellipsis():
    out = "a    b  0:00:03   c\nTraceback (most recent call last):\nKeyError: 'adam'\n"
    assert missing_lines(["a b 0:00:00 c", "KeyError: 'adam'", "...", "Trace...last):"], out) == []
    assert missing_lines(["a b 0:00:00 d"], out) == ["a b 0:00:00 d"]
    assert missing_lines(["KeyError"], out) == ["KeyError"]          # a whole line, not a part of one
    assert missing_lines(["KeyError: 'adam' x"], out) == ["KeyError: 'adam' x"]
    assert missing_lines(["a.b 0:00:00 c"], "axb 0:00:00 c") == ["a.b 0:00:00 c"]  # no regex leaks


# ------------------------------------------------------------------ the tutorial
TUTORIAL = os.path.join(DOCS, "tutorial.md")


def test_tutorial_runs_as_written(tmp_path):
    steps = [s for block in console_blocks(TUTORIAL) for s in steps_of(block)]
    text = " ".join(s.command for s in steps)
    for needed in ("onager prelaunch", "onager launch --backend local", "onager list",
                   "--tasklist failed", "onager results"):
        assert needed in text, f"the tutorial no longer runs {needed!r}"
    assert any(s.exit_code == 1 for s in steps), "the tutorial shows no failing launch"
    project = tmp_path / "project"
    project.mkdir()
    env = _shim_env(tmp_path)
    for step in steps:
        proc = run_step(step, str(project), env)
        assert proc.returncode == step.exit_code, _report(TUTORIAL, step, proc, f"exit {proc.returncode}, "
                                                          f"not {step.exit_code}")
        missing = missing_lines(step.shown, proc.stdout + proc.stderr)
        assert not missing, _report(TUTORIAL, step, proc, f"shown lines not printed: {missing}")


# ------------------------------------------------------------------ prelaunch examples
def prelaunch_examples() -> list[tuple]:
    """(file, step) for each `$ onager prelaunch` of README.md/docs/index.md console blocks
    that start with one."""
    found = []
    for path in (os.path.join(ROOT, "README.md"), os.path.join(DOCS, "index.md")):
        for block in console_blocks(path):
            steps = steps_of(block)
            if steps and steps[0].command.startswith("onager prelaunch"):
                found += [(path, s) for s in steps if s.command.startswith("onager prelaunch")]
    return found


def test_there_are_prelaunch_examples():
    assert prelaunch_examples(), "README.md and docs/index.md have no ```console prelaunch example"


@pytest.mark.parametrize("path, step", prelaunch_examples(),
                         ids=lambda v: f"{os.path.basename(v)}" if isinstance(v, str) else f"line{v.line}")
def test_prelaunch_example_prints_exactly_what_is_shown(tmp_path, path, step):
    project = tmp_path / "project"
    project.mkdir()
    proc = run_step(step, str(project), _shim_env(tmp_path))
    assert proc.returncode == step.exit_code, _report(path, step, proc, "wrong exit code")
    assert proc.stdout.splitlines() == step.shown, _report(path, step, proc, "stdout differs from the example")


# ------------------------------------------------------------------ cli.md is complete
CLI_MD = os.path.join(DOCS, "cli.md")


def _sections() -> dict[str, str]:
    """cli.md's `## ` sections by the command they document (`onager NAME` in the heading)."""
    with open(CLI_MD, encoding="utf-8") as handle:
        text = handle.read()
    sections: dict[str, str] = {"": text}
    for chunk in re.split(r"^## ", text, flags=re.MULTILINE)[1:]:
        heading = chunk.splitlines()[0]
        match = re.search(r"`onager ([a-z]+)`", heading)
        if match:
            sections[match.group(1)] = chunk
    return sections


def inline_tokens(text: str) -> set[str]:
    """Words of the inline code spans of markdown text (`--max-tasks N` gives --max-tasks, N)."""
    text = re.sub(r"^```.*?^```", "", text, flags=re.MULTILINE | re.DOTALL)
    tokens: set[str] = set()
    for span in re.findall(r"`([^`\n]+)`", text):
        tokens.update(t for t in re.split(r"[\s,|=\[\]()]+", span) if t)
    return tokens


def _subparsers():
    from onager.cli import build_parser
    parser = build_parser()
    return parser, parser._subparsers._group_actions[0].choices  # type: ignore[union-attr]


EVERYWHERE = {"-h", "--help"}  # every command has them: documented once, at the top of the page


def _option_strings(parser) -> set[str]:
    return {s for action in parser._actions for s in action.option_strings}


def test_cli_md_has_a_section_for_every_command():
    _, commands = _subparsers()
    sections = _sections()
    missing = sorted(name for name in commands if name not in sections)
    assert not missing, f"docs/cli.md has no '## `onager NAME`' section for {missing}"


def test_cli_md_documents_every_option_of_every_command():
    parser, commands = _subparsers()
    sections = _sections()
    page = inline_tokens(sections[""])
    missing = sorted(s for s in _option_strings(parser) | EVERYWHERE if s not in page)
    for name, sub in commands.items():
        tokens = inline_tokens(sections.get(name, ""))
        missing += sorted(f"onager {name} {s}" for s in _option_strings(sub) - EVERYWHERE if s not in tokens)
    assert not missing, f"options missing from docs/cli.md (as `inline code` in their command's section): {missing}"


def test_cli_md_documents_every_prelaunch_option_and_generator():
    from onager import prelaunch
    words = set(prelaunch.OPTIONS) | set(getattr(prelaunch, "EXACT_OPTIONS", {})) | \
        set(getattr(prelaunch, "GENERATORS", {}))
    tokens = inline_tokens(_sections().get("prelaunch", ""))
    missing = sorted(w for w in words if w not in tokens)
    assert not missing, f"prelaunch words missing from the prelaunch section of docs/cli.md: {missing}"


def test_cli_md_names_no_option_that_does_not_exist():
    """The first word of each inline span in a command's section, when it is an option,
    is one of that command's options: a renamed or removed option is caught."""
    from onager import prelaunch
    _, commands = _subparsers()
    words = set(prelaunch.OPTIONS) | set(getattr(prelaunch, "EXACT_OPTIONS", {})) | \
        set(getattr(prelaunch, "GENERATORS", {}))
    stale = []
    for name, text in _sections().items():
        if not name or name not in commands:
            continue
        known = _option_strings(commands[name]) | (words if name == "prelaunch" else set())
        body = re.sub(r"^```.*?^```", "", text, flags=re.MULTILINE | re.DOTALL)
        for span in re.findall(r"`([^`\n]+)`", body):
            first = span.split()[0]
            if name == "prelaunch":  # its options are +words (a prefix is an abbreviation); --x are values
                if re.fullmatch(r"\+[a-z][a-z-]*(=.*)?", first) and \
                        not any(w.startswith(first.split("=")[0]) for w in known):
                    stale.append(f"onager {name}: `{span}`")
            elif re.fullmatch(r"--?[a-z][a-z_-]*", first) and first not in known:
                stale.append(f"onager {name}: `{span}`")
    assert not stale, f"docs/cli.md names options that do not exist there: {stale}"


# ------------------------------------------------------------------ backends.md, links
def test_backends_md_documents_every_backend_option():
    import argparse

    from onager.backends import available
    with open(os.path.join(DOCS, "backends.md"), encoding="utf-8") as handle:
        tokens = inline_tokens(handle.read())
    missing = []
    for cls in available().values():
        parser = argparse.ArgumentParser(add_help=False)
        cls.add_arguments(parser.add_argument_group(cls.name))
        missing += [f"{cls.name} {s}" for s in _option_strings(parser) if s not in tokens]
    assert not missing, f"backend options missing from docs/backends.md: {missing}"


def _slug(heading: str) -> str:
    """The anchor a markdown renderer (GitHub's rules) gives a heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


@pytest.mark.parametrize("name", ["README.md", "docs/index.md", "docs/tutorial.md", "docs/cli.md",
                                  "docs/backends.md"])
def test_relative_links_reach_files_and_headings(name):
    path = os.path.join(ROOT, name)
    with open(path, encoding="utf-8") as handle:
        text = re.sub(r"^```.*?^```", "", handle.read(), flags=re.MULTILINE | re.DOTALL)
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target):
            continue
        file_part, _, anchor = target.partition("#")
        linked = os.path.normpath(os.path.join(os.path.dirname(path), file_part)) if file_part else path
        if not os.path.exists(linked):
            broken.append(target)
        elif anchor and linked.endswith(".md"):
            with open(linked, encoding="utf-8") as handle:
                body = re.sub(r"^```.*?^```", "", handle.read(), flags=re.MULTILINE | re.DOTALL)
            slugs = {_slug(h) for h in re.findall(r"^#+ (.+)$", body, flags=re.MULTILINE)}
            if anchor not in slugs:
                broken.append(target)
    assert not broken, f"{name}: broken links {broken}"
