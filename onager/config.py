"""Settings in 0.1.3's INI files: `~/.onagerconfig` (global) and `.onager/config` (local).

One section per backend; keys `header`, `footer`, and defaults for launch options, so
users stop retyping `--partition` or `--mem`. The local file wins over the global one.
"""
from __future__ import annotations

import json
import os
from collections.abc import Iterable

from onager.errors import UsageError
from onager.fsutil import atomic_write, file_lock

TYPE_CHECKING = False
if TYPE_CHECKING:
    import configparser

BACKENDS = ("local", "slurm", "gridengine", "ssh")
SECTIONS = BACKENDS + ("project",)
ONAGER_DIR = ".onager"


def global_path() -> str:
    return os.environ.get("ONAGER_GLOBAL_CONFIG") or os.path.join(os.path.expanduser("~"), ".onagerconfig")


def local_path(root: str = ".") -> str:
    return os.path.join(root, ONAGER_DIR, "config")


def _parser() -> configparser.ConfigParser:
    """A ConfigParser whose keys keep their case (its class made on first use: configparser
    loads when a config is read, not with every `launch --help`)."""
    global _CaseKeepingParser
    if _CaseKeepingParser is None:
        import configparser

        class CaseKeepingParser(configparser.ConfigParser):
            def optionxform(self, optionstr: str) -> str:
                return optionstr  # keys keep their case

        _CaseKeepingParser = CaseKeepingParser
    return _CaseKeepingParser(interpolation=None)


_CaseKeepingParser: type[configparser.ConfigParser] | None = None


def _load(path: str) -> configparser.ConfigParser:
    import configparser

    parser = _parser()
    if os.path.exists(path):
        try:
            parser.read(path, encoding="utf-8")
        except configparser.Error as exc:
            raise UsageError(f"cannot read config {path}: {str(exc).splitlines()[0]}; fix or delete the file") from exc
    return parser


def _decode(value: str) -> str:
    if value.startswith('json:"'):
        try:
            decoded = json.loads(value[5:])
        except ValueError:
            return value
        return decoded if isinstance(decoded, str) else value  # 'json:"' starts a JSON string
    return value


def _encode(value: str) -> str:
    """Plain INI text when configparser gives it back unchanged, else a JSON string."""
    import io
    probe = _parser()
    probe["s"] = {"k": value}
    text = io.StringIO()
    probe.write(text)
    back = _parser()
    back.read_string(text.getvalue())
    if back["s"]["k"] == value and not value.startswith('json:"'):
        return value
    return "json:" + json.dumps(value, ensure_ascii=False)


def read_section(section: str, root: str = ".", which: str | None = None) -> dict[str, str]:
    """Merged values of one section (global, then local on top)."""
    values: dict[str, str] = {}
    paths = {"global": [global_path()], "local": [local_path(root)]}.get(which or "", [global_path(), local_path(root)])
    for path in paths:
        parser = _load(path)
        if parser.has_section(section):
            values.update({k: _decode(v) for k, v in parser[section].items()})
    return values


def read_all(root: str = ".", which: str | None = None) -> list[tuple[str, str, str, str]]:
    """(file, section, key, value) rows for `onager config --read`."""
    rows = []
    paths = {"global": [global_path()], "local": [local_path(root)]}.get(which or "", [global_path(), local_path(root)])
    for path in paths:
        parser = _load(path)
        for section in parser.sections():
            for key, value in parser[section].items():
                rows.append((path, section, key, _decode(value)))
    return rows


def check_section(section: str) -> None:
    """A section is `project` or a backend, built in or from another package."""
    if section in SECTIONS:
        return
    from onager.backends import names  # reads package metadata: only for a name not built in
    known = names()
    if section not in known:
        raise UsageError(f"unknown config section {section!r}: use one of {', '.join(known + ['project'])}")


def write(items: Iterable[tuple[str, str, str]], root: str = ".", use_global: bool = False,
          allowed_keys: Iterable[str] | None = None) -> str:
    """Set (section, key, value) items atomically; every item is checked before anything changes."""
    import io
    items = list(items)
    allowed = set(allowed_keys) if allowed_keys is not None else None
    for section, key, _ in items:
        check_section(section)
        if allowed is not None and key not in allowed:
            import difflib
            close = difflib.get_close_matches(key, sorted(allowed), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise UsageError(f"unknown config key {key!r} for {section}{hint}: use header, footer or a launch "
                             "option name")
    path = global_path() if use_global else local_path(root)
    if not use_global:
        ensure_onager_dir(root)
    with file_lock(path + ".lock"):
        parser = _load(path)
        for section, key, value in items:
            if not parser.has_section(section):
                parser.add_section(section)
            if value == "":
                parser.remove_option(section, key)
            else:
                parser[section][key] = _encode(value)
        text = io.StringIO()
        parser.write(text)
        atomic_write(path, text.getvalue())
    return path


def ensure_onager_dir(root: str = ".") -> str:
    """Create `.onager/` with a `.gitignore` of `*` (0.1.3 asked a question instead)."""
    directory = os.path.join(root, ONAGER_DIR)
    os.makedirs(directory, exist_ok=True)
    ignore = os.path.join(directory, ".gitignore")
    if not os.path.exists(ignore):
        atomic_write(ignore, "*\n")
    return directory
