"""The installed distributions' metadata directories, found on sys.path without
importlib.metadata: importing it (email, zipfile, pathlib, csv) costs about four bare Python
starts, paid by `launch --help` (entry points) and by every launch (provenance's freeze)."""
from __future__ import annotations

import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator


def normalized(name: str) -> str:
    """A distribution name as PEP 503 compares them."""
    out = name.lower()
    for sep in ("_", "."):
        out = out.replace(sep, "-")
    while "--" in out:
        out = out.replace("--", "-")
    return out


def metadata_dirs() -> list[str] | None:
    """Paths of the *.dist-info and *.egg-info entries on sys.path, in path order (sorted in
    each directory); None when a sys.path entry is a file (a zip), which only
    importlib.metadata reads."""
    found: list[str] = []
    for entry in sys.path:
        directory = entry or "."
        try:
            names = sorted(os.listdir(directory))
        except NotADirectoryError:
            return None
        except OSError:  # missing (python3X.zip) or unreadable: nothing there
            continue
        found += [os.path.join(directory, name) for name in names
                  if name.lower().endswith((".dist-info", ".egg-info"))
                  or (name.lower() == "egg-info" and directory.lower().endswith(".egg"))]  # an .egg's EGG-INFO
    return found


def read_text(path: str, name: str) -> str | None:
    """A metadata file of one distribution (`name` "" for an egg-info that is itself a file)."""
    try:
        with open(os.path.join(path, name) if name else path, encoding="utf-8") as handle:
            return handle.read()
    except (OSError, UnicodeDecodeError):
        return None


def entry_points(group: str) -> Iterator[tuple[str, str]] | None:
    """(name, value) of the group's entry points, the first distribution of a name winning;
    None where metadata_dirs() is None."""
    paths = metadata_dirs()
    return None if paths is None else _entry_points(paths, f"[{group}]")


def _entry_points(paths: list[str], header: str) -> Iterator[tuple[str, str]]:
    seen: set[str] = set()
    for path in paths:
        base = os.path.basename(path)
        if base.lower() == "egg-info":  # EGG-INFO of a .egg: named by the .egg
            base = os.path.basename(os.path.dirname(path))
        dist = normalized(base.rsplit(".", 1)[0].split("-", 1)[0])
        if dist in seen:
            continue
        seen.add(dist)
        text = read_text(path, "entry_points.txt") if os.path.isdir(path) else None
        section = None
        for line in (text or "").splitlines():
            line = line.strip()
            if not line or line[0] in "#;":
                continue
            if line.startswith("["):
                section = line
            elif section == header and "=" in line:
                key, _, value = line.partition("=")
                yield key.strip(), value.strip()
