"""Provenance of a launch, and frozen code (`--snapshot`).

Weeks after a sweep, the question is "which code and which environment produced this
result?". Every launch therefore writes `provenance.json` into its launch directory:
the onager command line, versions, user, host, working directory, Python, backend and
options, and, inside a git repository, commit, branch, remote (credentials stripped),
dirtiness, the diff of tracked changes (`git-diff.patch`) and the names of untracked
files. The installed distributions go to `pip-freeze.txt`, in `pip freeze`'s format, read
in-process (the metadata directories on sys.path) rather than by a `pip freeze` child.

`--snapshot` copies the code as it is at launch (tracked files of the git repository
as they are in the working tree, or, outside git, the working directory less ignored
files) into `<launch_dir>/code/`, and the tasks run from there, so edits made after
the launch never reach queued tasks. `--require-clean` refuses a launch while tracked
files have uncommitted changes.

Recording never fails a launch: git and pip run with timeouts, and what could not be
obtained is noted in the file. Only the user's own requests (`--require-clean`, the
snapshot size limit) refuse a launch, before anything is submitted.
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import re
import shlex
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Callable

from onager.errors import OnagerError, UsageError
from onager.layout import CODE, PROVENANCE_JSON

PROVENANCE_FILE = PROVENANCE_JSON
PATCH_FILE = "git-diff.patch"
FREEZE_FILE = "pip-freeze.txt"
SNAPSHOT_DIR = CODE  # LaunchPaths.code_dir
DEFAULT_MAX_SIZE = 200 * 1024 ** 2
GIT_TIMEOUT = 5.0          # seconds per git call that only reads metadata
GIT_LIST_TIMEOUT = 30.0    # seconds for listing the files of a snapshot
FREEZE_TIMEOUT = 5.0       # seconds for pip freeze, counted from the start of the launch
UNTRACKED_LIMIT = 1000     # untracked names kept in provenance.json (the count is always exact)
ALWAYS_EXCLUDED = (".onager", ".git", ".venv", "__pycache__")
IGNORE_FILES = (".onagerignore", ".gitignore")
# fixed git settings, so that a user's config never changes what is recorded
_GIT_CONFIG = ["-c", "core.quotepath=false", "-c", "color.ui=false", "-c", "core.pager=cat",
               "-c", "diff.noprefix=false", "-c", "diff.mnemonicPrefix=false", "-c", "diff.relative=false"]

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off", "")


# --------------------------------------------------------------------- options
def _launch_options() -> tuple[Any, ...]:
    from onager.backends.base import Option
    return (
        Option("snapshot", "bool", default=False,
               help="copy the code as it is now (git: tracked files as in the working tree; "
                    "else the working directory less .onagerignore/.gitignore) into the launch "
                    "directory and run every task from that copy (config: project snapshot)"),
        Option("snapshot_max_size", metavar="SIZE", default="200M",
               help="refuse a snapshot bigger than this: 500M, 2G, a number of MB, or none "
                    "(default 200M; config: project snapshot_max_size)"),
        Option("require_clean", "bool", default=False,
               help="refuse to launch while tracked files have uncommitted changes "
                    "(config: project require_clean)"),
    )


def __getattr__(name: str) -> Any:
    if name == "LAUNCH_OPTIONS":  # declared lazily: importing provenance stays light
        return _launch_options()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def add_launch_arguments(parser: argparse.ArgumentParser) -> None:
    """`onager launch` options shared by every backend."""
    group = parser.add_argument_group("provenance and frozen code")
    for option in _launch_options():
        option.add_to(group)


@dataclass
class Settings:
    """What a launch asks of provenance: command line over `[project]` config over defaults."""

    snapshot: bool = False
    require_clean: bool = False
    max_size: int | None = DEFAULT_MAX_SIZE


def _flag(value: Any, name: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise UsageError(f"{name} must be true or false, not {value!r}: fix it with onager config --write project "
                     f"{name} true")


def parse_size(text: Any, name: str = "--snapshot-max-size") -> int | None:
    """`500M`, `2G`, `1.5GB`, `300KiB`, `200` (MB) -> bytes; `none`/`0` -> no limit."""
    if isinstance(text, int) and not isinstance(text, bool):
        return text if text > 0 else None
    raw = str(text).strip()
    if raw.lower() in ("none", "off", "unlimited", "0"):
        return None
    match = re.fullmatch(r"(\d+(?:\.\d*)?|\.\d+)\s*([kmgt]?)(i?b)?", raw, re.IGNORECASE)
    if not match or (not match.group(2) and match.group(3)):
        raise UsageError(f"bad {name} {raw!r}: give a size like 500M, 2G or 200 (MB), or none for no limit")
    unit = match.group(2).lower() or "m"
    return int(float(match.group(1)) * 1024 ** " kmgt".index(unit))


def resolve_settings(options: dict[str, Any], root: str = ".") -> Settings:
    """Launch options first, then `[project]` keys (`onager config --write project snapshot true`)."""
    from onager import config as configmod

    project = configmod.read_section("project", root)

    def pick(key: str) -> Any:
        if options.get(key) is not None:
            return options[key]
        for spelling in (key, key.replace("_", "-")):
            if spelling in project:
                return project[spelling]
        return None

    settings = Settings()
    value = pick("snapshot")
    if value is not None:
        settings.snapshot = _flag(value, "snapshot")
    value = pick("require_clean")
    if value is not None:
        settings.require_clean = _flag(value, "require_clean")
    value = pick("snapshot_max_size")
    if value is not None:
        settings.max_size = parse_size(value)
    return settings


# ------------------------------------------------------------------ credentials
def strip_credentials(text: str) -> str:
    """Drop credentials from recorded text (URL passwords and tokens, scp-style passwords,
    secret query parameters, secret options and variables): see `onager.scrub`.

    `https://user:ghp_x@github.com/a/b` -> `https://github.com/a/b`; an ssh login name
    (`ssh://git@host/...`) is not a secret and stays, but a password after it does not.
    """
    from onager.scrub import scrub_text
    return scrub_text(text)


# ------------------------------------------------------------------------- git
class Git:
    """Runs read-only git commands with timeouts; every failure becomes a message, never an exception."""

    def __init__(self, cwd: str, timeout: float = GIT_TIMEOUT):
        import shutil
        self.cwd = cwd
        self.timeout = timeout
        self.installed = shutil.which("git") is not None

    @staticmethod
    def _env() -> dict[str, str]:
        env = dict(os.environ)
        # no index.lock from `git status` (concurrent launches, an editor's git), no prompts,
        # and messages in English so that "not a git repository" can be recognised
        env.update(GIT_OPTIONAL_LOCKS="0", GIT_TERMINAL_PROMPT="0", LC_ALL="C", LANGUAGE="C")
        return env

    def run(self, *args: str, timeout: float | None = None, cwd: str | None = None) -> tuple[bytes | None, str]:
        """(stdout, "") on success, (None, one-line reason) otherwise."""
        import subprocess
        if not self.installed:
            return None, "git is not installed"
        limit = self.timeout if timeout is None else timeout
        try:
            proc = subprocess.run(["git", *_GIT_CONFIG, *args], cwd=cwd or self.cwd, stdin=subprocess.DEVNULL,
                                  capture_output=True, timeout=limit, env=self._env())
        except subprocess.TimeoutExpired:
            return None, f"git {args[0]} timed out after {limit:g} s"
        except OSError as exc:
            return None, f"git could not run: {exc.strerror or exc}"
        if proc.returncode != 0:
            lines = [line for line in proc.stderr.decode("utf-8", "replace").splitlines() if line.strip()]
            reason = lines[0].strip() if lines else f"exit status {proc.returncode}"
            return None, strip_credentials(f"git {args[0]}: {reason}")
        return proc.stdout, ""

    def text(self, *args: str, **kwargs: Any) -> tuple[str | None, str]:
        out, error = self.run(*args, **kwargs)
        return (None, error) if out is None else (os.fsdecode(out).strip(), "")


@dataclass
class GitState:
    """What git says about the working directory; `info` is what provenance.json records."""

    info: dict[str, Any] = field(default_factory=dict)
    toplevel: str | None = None   # repository root, when inside one
    prefix: str = ""                 # the workdir relative to the root ("" or "sub/dir/")
    changed: list[str] = field(default_factory=list)    # tracked files with uncommitted changes
    untracked: list[str] = field(default_factory=list)
    status_known: bool = False
    diff: bytes | None = None

    @property
    def repository(self) -> bool:
        return self.toplevel is not None


def _parse_status(data: bytes) -> tuple[list[str], list[str]]:
    """`git status --porcelain -z` -> (changed tracked paths, untracked paths)."""
    changed: list[str] = []
    untracked: list[str] = []
    entries = data.split(b"\0")
    i = 0
    while i < len(entries):
        entry = entries[i]
        i += 1
        if len(entry) < 4:
            continue
        code, path = entry[:2], os.fsdecode(entry[3:])
        if code == b"??":
            untracked.append(path)
        elif code != b"!!":
            changed.append(path)
            if code[:1] in (b"R", b"C"):
                i += 1  # the next entry is the path it was renamed or copied from
    return changed, untracked


def git_state(workdir: str, git: Git | None = None, want_diff: bool = True) -> GitState:
    """Repository, commit, branch, remotes, changed and untracked files, diff of tracked changes."""
    git = git or Git(workdir)
    state = GitState()
    info = state.info
    if not git.installed:
        info.update(repository=False, reason="git is not installed")
        return state
    if not os.path.isdir(workdir):
        info.update(repository=False, reason=f"working directory {workdir} does not exist")
        return state
    out, error = git.text("rev-parse", "--show-toplevel", "--show-prefix")
    if out is None:
        not_repo = "not a git repository" in error
        info.update(repository=False, reason="not a git repository" if not_repo else error)
        return state
    lines = out.split("\n")
    state.toplevel = lines[0]
    state.prefix = lines[1] if len(lines) > 1 else ""
    info.update(repository=True, root=state.toplevel, subdir=state.prefix.rstrip("/"))
    errors: list[str] = []

    commit, error = git.text("rev-parse", "-q", "--verify", "HEAD^{commit}")
    info["commit"] = commit or None
    if commit is None and error and "exit status" not in error:
        errors.append(error)
    branch, _ = git.text("symbolic-ref", "-q", "--short", "HEAD")
    info["branch"] = branch or None
    info["detached"] = branch is None and commit is not None

    remotes: dict[str, str] = {}
    out, _ = git.text("config", "--get-regexp", r"^remote\..*\.url$")
    for line in (out or "").splitlines():
        key, _, url = line.partition(" ")
        remotes[key[len("remote."):-len(".url")]] = strip_credentials(url)
    info["remotes"] = remotes
    info["remote_url"] = remotes.get("origin") or (next(iter(remotes.values())) if remotes else None)

    status, error = git.run("status", "--porcelain=v1", "-z", "--untracked-files=all")
    if status is None:
        errors.append(error)
        info["dirty"] = None
    else:
        state.status_known = True
        state.changed, state.untracked = _parse_status(status)
        info["dirty"] = bool(state.changed)
        info["changed"] = state.changed
        info["untracked_count"] = len(state.untracked)
        info["untracked"] = state.untracked[:UNTRACKED_LIMIT]
        if len(state.untracked) > UNTRACKED_LIMIT:
            info["untracked_truncated"] = True

    if want_diff and state.changed:
        base = commit
        if base is None:  # no commit yet: everything tracked is a change against the empty tree
            base, _ = git.text("hash-object", "-t", "tree", os.devnull)
        if base:
            diff, error = git.run("diff", "--binary", "--no-color", "--no-ext-diff", "--no-textconv", base,
                                  "--", cwd=state.toplevel)
            if diff is None:
                errors.append(error)
            else:
                state.diff = diff
    if errors:
        info["errors"] = errors
    return state


# ------------------------------------------------------------------ pip freeze
class Freeze:
    """`pip freeze` of the interpreter running onager, in the background while the launch is prepared.

    `commands` are tried in turn until one succeeds; all of them share one deadline.
    """

    def __init__(self, commands: Sequence[Sequence[str]] | None = None, timeout: float | None = None):
        import subprocess
        timeout = FREEZE_TIMEOUT if timeout is None else timeout
        # no commands: the installed distributions are read in-process (installed_packages),
        # in milliseconds where a `pip freeze` child took half a second of every launch
        self.commands = [list(c) for c in commands] if commands is not None else []
        self.deadline = time.monotonic() + timeout
        self.timeout = timeout
        self.started = time.monotonic()
        self.proc: subprocess.Popen | None = None
        self.which = 0
        if self.commands:
            self._start(0)

    def _start(self, which: int) -> None:
        import subprocess
        self.which = which
        env = dict(os.environ, PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_INPUT="1", PYTHONWARNINGS="ignore")
        try:
            self.proc = subprocess.Popen(self.commands[which], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                         stderr=subprocess.PIPE, env=env)
        except OSError:
            self.proc = None

    def finish(self) -> tuple[str | None, dict[str, Any]]:
        """(freeze text or None, what provenance.json says about it)."""
        import subprocess
        if not self.commands:
            try:
                found, tool = _installed_packages()
                text = strip_credentials(found)
            except Exception as exc:  # noqa: BLE001  # a broken distribution never fails a launch
                return None, {"error": f"cannot list the installed distributions: {exc}"}
            return text, {"tool": tool, "file": FREEZE_FILE, "python": sys.executable,
                          "count": sum(1 for line in text.splitlines() if line and not line.startswith("#")),
                          "seconds": round(time.monotonic() - self.started, 3)}
        errors: list[str] = []
        while True:
            if self.proc is None:
                errors.append(f"could not start {self.commands[self.which][0]}")
            else:
                left = self.deadline - time.monotonic()
                try:
                    out, err = self.proc.communicate(timeout=max(left, 0.01))
                except subprocess.TimeoutExpired:
                    self.kill()
                    return None, {"error": f"timed out after {self.timeout:g} s (not recorded)"}
                if self.proc.returncode == 0:
                    text = strip_credentials(out.decode("utf-8", "replace"))
                    command = self.commands[self.which]
                    tool = "uv pip freeze" if os.path.basename(command[0]) == "uv" else "pip freeze"
                    return text, {"tool": tool, "file": FREEZE_FILE, "python": sys.executable,
                                  "count": sum(1 for line in text.splitlines() if line and not line.startswith("#")),
                                  "seconds": round(time.monotonic() - self.started, 3)}
                lines = [line for line in err.decode("utf-8", "replace").splitlines() if line.strip()]
                errors.append(strip_credentials(lines[-1].strip() if lines else f"exit status {self.proc.returncode}"))
            if self.which + 1 >= len(self.commands) or time.monotonic() >= self.deadline:
                return None, {"error": "; ".join(errors)}
            self._start(self.which + 1)

    def kill(self) -> None:
        """Stop the child we started, if it still runs."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate()


IN_PROCESS_TOOL = "dist-info on sys.path"  # what provenance.json names as the freeze's tool


def installed_packages() -> str:
    """What `pip freeze` prints for the Python running onager, read in-process: `name==version`
    sorted by name, `-e path` after a comment for an editable install, `name @ url` for one
    from a URL; pip itself (and, before Python 3.12, setuptools, wheel and distribute) left
    out, as pip freeze leaves them out. The metadata directories are found on sys.path
    (onager.dists: no import of importlib.metadata, a sixth of a launch's fixed cost), or by
    importlib.metadata where sys.path holds a zip."""
    return _installed_packages()[0]


def _installed_packages() -> tuple[str, str]:
    """installed_packages() and the tool that read them."""
    from onager import dists

    paths = dists.metadata_dirs()
    readers: Any
    tool = IN_PROCESS_TOOL
    if paths is None:
        import importlib.metadata
        tool = "importlib.metadata"
        readers = [dist.read_text for dist in importlib.metadata.distributions()]
    else:
        readers = [functools.partial(dists.read_text, path) for path in paths]
    skip = {"pip"} | ({"setuptools", "wheel", "distribute"} if sys.version_info < (3, 12) else set())
    lines: dict[str, tuple[str, str]] = {}  # normalized name -> (name, its line); the first on sys.path wins
    for read in readers:
        name, version = _name_version(read)
        if not name:
            continue
        key = re.sub(r"[-_.]+", "-", name).lower()
        if key in lines:
            continue
        lines[key] = (name, "" if key in skip else _freeze_line(read, name, version))
    return "".join(line for name, line in sorted(lines.values(), key=lambda item: item[0].lower())), tool


def _name_version(read: Callable[[str], str | None]) -> tuple[str | None, str]:
    """Name and Version from the head of a distribution's METADATA (or PKG-INFO): the email
    parser over the whole file, long descriptions included, cost a launch a third of a
    second in a venv with numpy and optuna."""
    text = read("METADATA") or read("PKG-INFO") or read("") or ""  # "": an egg-info that is a file
    found: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            break  # the headers end at the first empty line; the description follows
        key, sep, value = line.partition(":")
        key = key.strip().lower()  # header names are case-insensitive, as for the email parser
        if sep and key in ("name", "version") and key not in found:
            found[key] = value.strip()
    return found.get("name") or None, found.get("version", "")


def _freeze_line(read: Callable[[str], str | None], name: str, version: str) -> str:
    """One distribution as pip freeze writes it (PEP 610's direct_url.json says how it came)."""
    from urllib.parse import unquote, urlsplit

    try:
        direct = json.loads(read("direct_url.json") or "null")
    except ValueError:
        direct = None
    url = direct.get("url") if isinstance(direct, dict) else None
    if isinstance(direct, dict) and isinstance(url, str):
        if (direct.get("dir_info") or {}).get("editable"):
            where = unquote(urlsplit(url).path) if url.startswith("file:") else url
            return f"# Editable install with no version control ({name}=={version})\n-e {where}\n"
        vcs = direct.get("vcs_info")
        if isinstance(vcs, dict) and vcs.get("vcs") and vcs.get("commit_id"):
            return f"{name} @ {vcs['vcs']}+{url}@{vcs['commit_id']}\n"
        if "archive_info" in direct or "dir_info" in direct:
            return f"{name} @ {url}\n"
    return f"{name}=={version}\n"


# -------------------------------------------------------------- ignore rules
class IgnoreRules:
    """Simple `.gitignore`-style globs: `*.log`, `data/`, `/build`, `docs/*.pdf`, `# comments`.

    A pattern with a slash (not at the end) is anchored at the root; otherwise it matches
    a name at any depth; a trailing slash matches directories only. `!negation` is not
    supported (such lines are ignored).
    """

    def __init__(self, patterns: Sequence[str] = ()):
        self.rules: list[tuple[str, bool, bool]] = []  # (glob, anchored, directories only)
        for raw in patterns:
            line = raw.rstrip("\n").rstrip()
            if not line or line.startswith("#") or line.startswith("!"):
                continue
            if line.startswith("\\"):
                line = line[1:]
            dir_only = line.endswith("/")
            line = line.rstrip("/")
            anchored = "/" in line
            line = line.lstrip("/")
            if line.startswith("**/"):
                line, anchored = line[3:], "/" in line[3:]
            if line:
                self.rules.append((line, anchored, dir_only))

    @classmethod
    def from_dir(cls, directory: str, names: Sequence[str] = IGNORE_FILES) -> tuple[IgnoreRules, str | None]:
        """Rules of the first ignore file found among `names` (and which one it was)."""
        for name in names:
            try:
                with open(os.path.join(directory, name), encoding="utf-8", errors="replace") as handle:
                    return cls(handle.read().splitlines()), name
            except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
                continue
            except OSError:
                continue
        return cls(), None

    def __bool__(self) -> bool:
        return bool(self.rules)

    def matches(self, relpath: str, is_dir: bool) -> bool:
        """Whether `relpath` (slash-separated, relative to the root) is ignored."""
        import fnmatch
        name = relpath.rsplit("/", 1)[-1]
        for glob, anchored, dir_only in self.rules:
            if dir_only and not is_dir:
                continue
            if anchored:
                if fnmatch.fnmatchcase(relpath, glob):
                    return True
            elif fnmatch.fnmatchcase(name, glob):
                return True
        return False

    def ignores_path(self, relpath: str, is_dir: bool = False) -> bool:
        """Whether `relpath` or any directory above it is ignored (for lists of files)."""
        parts = relpath.split("/")
        for i in range(1, len(parts)):
            if self.matches("/".join(parts[:i]), True):
                return True
        return self.matches(relpath, is_dir)


# -------------------------------------------------------------------- snapshot
@dataclass
class Plan:
    """Files a snapshot will copy, decided (and sized) before anything is copied."""

    source: str                                   # directory the relative paths start from
    mode: str                                     # "git" or "directory"
    files: list[tuple[str, int, int]] = field(default_factory=list)   # (relative path, size, mode)
    links: list[str] = field(default_factory=list)               # symbolic links, copied as links
    dirs: list[str] = field(default_factory=list)                # directories that must exist
    ignore_file: str | None = None
    ignored: int = 0
    partial: bool = False    # planning stopped early: already over the size limit

    @property
    def size(self) -> int:
        return sum(size for _, size, _ in self.files)


def _human(size: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TB"


def _classify(plan: Plan, rel: str, full: str) -> None:
    import stat
    try:
        st = os.lstat(full)
    except OSError:
        return  # tracked but deleted in the working tree: not part of the code as it is now
    if stat.S_ISLNK(st.st_mode):
        plan.links.append(rel)
    elif stat.S_ISREG(st.st_mode):
        plan.files.append((rel, st.st_size, stat.S_IMODE(st.st_mode)))
    elif stat.S_ISDIR(st.st_mode):
        plan.dirs.append(rel)  # e.g. a submodule that is not checked out


def plan_git(state: GitState, git: Git) -> Plan:
    """Tracked files (as they are in the working tree) of the repository, less `.onagerignore`."""
    assert state.toplevel is not None
    plan = Plan(state.toplevel, "git")
    out, error = git.run("ls-files", "-z", "--recurse-submodules", cwd=state.toplevel, timeout=GIT_LIST_TIMEOUT)
    if out is None and "timed out" not in error:
        out, error = git.run("ls-files", "-z", cwd=state.toplevel, timeout=GIT_LIST_TIMEOUT)
    if out is None:
        raise OnagerError(f"cannot list the files to snapshot ({error}); launch without --snapshot or fix git")
    rules, plan.ignore_file = IgnoreRules.from_dir(state.toplevel, (".onagerignore",))
    seen = set()
    for raw in out.split(b"\0"):
        if not raw:
            continue
        rel = os.fsdecode(raw)
        if rel in seen:
            continue  # an unmerged file is listed once per stage
        seen.add(rel)
        if rel.split("/", 1)[0] in (".onager",) or (rules and rules.ignores_path(rel)):
            plan.ignored += 1
            continue
        _classify(plan, rel, os.path.join(state.toplevel, rel))
    return plan


def plan_directory(workdir: str, launch_dir: str, max_size: int | None = None) -> Plan:
    """The working directory less `.onagerignore` (or `.gitignore`) and onager/VCS/venv/cache dirs.

    Stops walking once the files seen exceed `max_size` (a launch from a huge directory
    is refused without reading all of it).
    """
    plan = Plan(workdir, "directory")
    total = 0
    rules, plan.ignore_file = IgnoreRules.from_dir(workdir)
    skip_real = {os.path.realpath(launch_dir)}
    for current, dirnames, filenames in os.walk(workdir):
        rel_dir = os.path.relpath(current, workdir)
        rel_dir = "" if rel_dir == "." else rel_dir.replace(os.sep, "/") + "/"
        kept = []
        for name in dirnames:
            rel = rel_dir + name
            full = os.path.join(current, name)
            if name in ALWAYS_EXCLUDED or (rules and rules.matches(rel, True)) \
                    or os.path.realpath(full) in skip_real:
                plan.ignored += 1
                continue
            if os.path.islink(full):
                plan.links.append(rel)  # a linked directory stays a link: never followed
                continue
            kept.append(name)
            plan.dirs.append(rel)
        dirnames[:] = kept
        for name in filenames:
            rel = rel_dir + name
            if rules and rules.matches(rel, False):
                plan.ignored += 1
                continue
            before = len(plan.files)
            _classify(plan, rel, os.path.join(current, name))
            if len(plan.files) > before:
                total += plan.files[-1][1]
        if max_size is not None and total > max_size:
            plan.partial = True
            break
    return plan


def check_size(plan: Plan, max_size: int | None) -> None:
    """Refuse a snapshot above the limit, naming the biggest files."""
    total = plan.size
    if max_size is None or total <= max_size:
        return
    biggest = sorted(plan.files, key=lambda f: -f[1])[:3]
    names = ", ".join(f"{rel} ({_human(size)})" for rel, size, _ in biggest)
    hint = ".onagerignore" if plan.mode == "git" else (plan.ignore_file or ".onagerignore")
    at_least = "at least " if plan.partial else ""
    raise UsageError(f"snapshot of {plan.source} would copy {at_least}{_human(total)} in {len(plan.files)} files, "
                     f"over the {_human(max_size)} limit; biggest: {names}; leave them out with {hint} "
                     f"or raise --snapshot-max-size (e.g. {_suggest(total)})")


def _suggest(total: int) -> str:
    mb = int(total / 1024 ** 2) + 1
    return f"{-(-mb // 100) * 100}M" if mb < 10240 else f"{-(-mb // 1024)}G"


def copy_plan(plan: Plan, dest: str) -> None:
    """Real copies (never hard links, so later edits cannot reach them), modes kept, links as links."""
    import shutil
    import stat

    from onager.fsutil import masked_mode
    made = {dest}
    os.makedirs(dest, exist_ok=True)

    def parent(rel: str) -> None:
        directory = os.path.dirname(os.path.join(dest, rel))
        if directory not in made:
            os.makedirs(directory, exist_ok=True)
            made.add(directory)

    for rel in plan.dirs:
        path = os.path.join(dest, rel)
        if path not in made:
            os.makedirs(path, exist_ok=True)
            made.add(path)
    for rel, _, mode in plan.files:
        src, dst = os.path.join(plan.source, rel), os.path.join(dest, rel)
        parent(rel)
        try:
            shutil.copyfile(src, dst, follow_symlinks=False)
            os.chmod(dst, masked_mode(mode | stat.S_IRUSR | stat.S_IWUSR))
        except FileNotFoundError:
            continue  # deleted while we copied: the snapshot holds the tree as it now is
        except OSError as exc:
            raise OnagerError(f"cannot copy {src} into the snapshot: {exc.strerror or exc}") from exc
    for rel in plan.links:
        parent(rel)
        try:
            os.symlink(os.readlink(os.path.join(plan.source, rel)), os.path.join(dest, rel))
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise OnagerError(f"cannot copy link {rel} into the snapshot: {exc.strerror or exc}") from exc


def make_snapshot(launch_dir: str, workdir: str, state: GitState, max_size: int | None,
                  git: Git | None = None) -> tuple[dict[str, Any], str]:
    """Copy the code into `<launch_dir>/code/`; returns (record, the directory tasks run in)."""
    if not os.path.isdir(workdir):
        raise UsageError(f"working directory {workdir} does not exist: nothing to snapshot")
    started = time.monotonic()
    if state.repository:
        plan = plan_git(state, git or Git(workdir))
        sub = state.prefix.rstrip("/")
    else:
        plan = plan_directory(workdir, launch_dir, max_size)
        sub = ""
    check_size(plan, max_size)
    dest = os.path.join(launch_dir, SNAPSHOT_DIR)
    copy_plan(plan, dest)
    run_in = os.path.join(dest, sub) if sub else dest
    os.makedirs(run_in, exist_ok=True)  # a workdir holding no tracked file still exists in the copy
    record = {"path": SNAPSHOT_DIR, "mode": plan.mode, "source": plan.source, "workdir": run_in,
              "subdir": sub, "files": len(plan.files), "links": len(plan.links), "bytes": plan.size,
              "ignore_file": plan.ignore_file, "ignored": plan.ignored,
              "max_size": max_size, "seconds": round(time.monotonic() - started, 3)}
    if state.repository and state.untracked:
        record["untracked_left_out"] = len(state.untracked)
    return record, run_in


# ---------------------------------------------------------------------- launch
def _user() -> str:
    import getpass
    try:
        return getpass.getuser()
    except Exception:  # no name for this uid (containers): the number still says who
        return str(os.getuid()) if hasattr(os, "getuid") else "unknown"


def platform_text() -> str:
    """What platform.platform() says on Linux (system-release-machine-with-libc), read from
    os.uname() and confstr: platform.platform() starts a `uname -p` process and scans the
    Python binary for its libc version, a fixed cost of every launch."""
    import platform
    if not hasattr(os, "uname"):  # Windows: no process to save
        return platform.platform()
    u = os.uname()
    text = f"{u.sysname}-{u.release}-{u.machine}"
    try:
        libc = os.confstr("CS_GNU_LIBC_VERSION") or ""  # "glibc 2.36"
    except (ValueError, OSError):
        libc = ""
    return text + (f"-with-{libc.replace(' ', '')}" if libc else "")


def _scrubbed(value: Any) -> Any:
    from onager.scrub import scrub_value
    return scrub_value(json.loads(json.dumps(value, default=str)))


def _version() -> str:
    from onager import __version__
    return __version__


def check_launch(workdir: str, options: dict[str, Any], root: str = ".", launch_dir: str = "") -> Settings:
    """The refusals of prepare_launch without writing anything (for --dry-run)."""
    settings = resolve_settings(options, root)
    if not (settings.require_clean or settings.snapshot):
        return settings
    git = Git(workdir)
    state = git_state(workdir, git, want_diff=False)
    if settings.require_clean:
        _check_clean(state, workdir)
    if settings.snapshot:
        if not os.path.isdir(workdir):
            raise UsageError(f"working directory {workdir} does not exist: nothing to snapshot")
        if state.repository:
            plan = plan_git(state, git)
        else:
            plan = plan_directory(workdir, launch_dir or os.devnull, settings.max_size)
        check_size(plan, settings.max_size)
    return settings


def _check_clean(state: GitState, workdir: str) -> None:
    if not state.repository:
        raise UsageError(f"--require-clean needs a git repository, and {workdir} is not in one "
                         f"({state.info.get('reason', 'unknown reason')}): launch without --require-clean")
    if not state.status_known:
        errors = "; ".join(state.info.get("errors", [])) or "git status failed"
        raise UsageError(f"--require-clean: cannot tell whether the tree is clean ({errors}); "
                         "fix git or launch without --require-clean")
    if state.changed:
        shown = ", ".join(state.changed[:5]) + (f" and {len(state.changed) - 5} more" if len(state.changed) > 5 else "")
        raise UsageError(f"--require-clean: tracked files have uncommitted changes: {shown}; "
                         "commit or stash them, or launch with --no-require-clean")


def prepare_launch(launch_dir: str, workdir: str, options: dict[str, Any], *, backend: str | None = None,
                   argv: Sequence[str] | None = None, venv: str | None = None, root: str = ".") -> str:
    """Record provenance into `launch_dir` (and freeze the code with --snapshot); returns where tasks run.

    Raises UsageError for --require-clean on a dirty tree and for a snapshot over its
    size limit; the caller removes the launch directory, so a refusal leaves nothing.
    """
    import platform
    import socket

    from onager.scrub import scrub_argv, scrub_env
    started = time.monotonic()
    settings = resolve_settings(options, root)
    freeze = Freeze()
    try:
        git = Git(workdir)
        state = git_state(workdir, git)
        if settings.require_clean:
            _check_clean(state, workdir)
        run_in = workdir
        snapshot = None
        if settings.snapshot:
            snapshot, run_in = make_snapshot(launch_dir, workdir, state, settings.max_size, git)
            if state.repository and state.untracked:
                print(f"onager: note: the snapshot holds tracked files only; {len(state.untracked)} untracked "
                      f"file(s) left out, e.g. {', '.join(state.untracked[:3])}", file=sys.stderr)
        gitinfo = dict(state.info)
        if state.diff:
            _write(os.path.join(launch_dir, PATCH_FILE), state.diff)
            gitinfo["patch"] = PATCH_FILE
            gitinfo["patch_bytes"] = len(state.diff)
        freeze_text, packages = freeze.finish()
        if freeze_text is not None:
            _write(os.path.join(launch_dir, FREEZE_FILE), freeze_text.encode("utf-8"))
        words = list(argv) if argv else ["onager"] + sys.argv[1:]
        now = time.time()
        record = {
            "format": 1,
            "command": shlex.join(scrub_argv(words)),
            "argv": scrub_argv(words),
            "onager_version": _version(),
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)),
            "created": now,
            "user": _user(),
            "host": socket.gethostname(),
            "cwd": os.getcwd(),
            "workdir": workdir,
            "run_workdir": run_in,
            "python": {"version": platform.python_version(), "implementation": platform.python_implementation(),
                       "executable": sys.executable, "prefix": sys.prefix},
            "platform": platform_text(),
            "environment": scrub_env({k: os.environ[k] for k in ("VIRTUAL_ENV", "CONDA_PREFIX", "CONDA_DEFAULT_ENV")
                                      if os.environ.get(k)}),
            "venv": venv,
            "backend": backend,
            "options": _scrubbed(options),
            "settings": {"snapshot": settings.snapshot, "require_clean": settings.require_clean,
                         "snapshot_max_size": settings.max_size},
            "git": gitinfo,
            "packages": packages,
            "snapshot": snapshot,
            "seconds": round(time.monotonic() - started, 3),
        }
        _write(os.path.join(launch_dir, PROVENANCE_FILE),
               (json.dumps(record, indent=1, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8"))
    finally:
        freeze.kill()
    return run_in


def _write(path: str, data: bytes) -> None:
    from onager.fsutil import atomic_write
    try:
        atomic_write(path, data)
    except OSError as exc:
        raise OnagerError(f"cannot write {path}: {exc.strerror or exc}; free some space or fix permissions") from exc


# ----------------------------------------------------------------------- read
def load_provenance(launch_dir: str) -> dict[str, Any] | None:
    """provenance.json of a launch, or None when the launch has none (or it is damaged)."""
    try:
        with open(os.path.join(launch_dir, PROVENANCE_FILE), encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


@functools.lru_cache(maxsize=4096)
def _commit_of(launch_dir: str, mtime: float) -> str:
    data = load_provenance(launch_dir) or {}
    gitinfo = data.get("git") or {}
    commit = gitinfo.get("commit")
    if not commit:
        return ""
    return commit[:10] + ("-dirty" if gitinfo.get("dirty") else "")


def launch_commit(launch_dir: str) -> str:
    """`0123abcd45` or `0123abcd45-dirty` for `onager list`'s commit column; "" when unknown."""
    try:
        mtime = os.stat(os.path.join(launch_dir, PROVENANCE_FILE)).st_mtime
    except OSError:
        return ""
    return _commit_of(launch_dir, mtime)
