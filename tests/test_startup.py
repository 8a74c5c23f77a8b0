"""Issue 17: start-up and the fixed cost of a launch. Cheap commands import no heavy module,
`launch --help` still documents every backend's options, and a launch starts no process and
parses no package metadata that it does not need."""
from __future__ import annotations

import glob
import json
import os
import stat
import subprocess
import sys

from support import ROOT, run_onager


def _fake_uname(tmp_path) -> tuple[str, str]:
    """A `uname` first on PATH that leaves a mark each time it runs; (bin dir, mark path)."""
    bindir, mark = tmp_path / "fakebin", tmp_path / "uname-ran"
    bindir.mkdir()
    script = bindir / "uname"
    script.write_text(f"#!/bin/sh\necho \"$@\" >> {mark}\necho x86_64\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return str(bindir), str(mark)


def test_launch_starts_no_uname_process(project, tmp_path):
    bindir, mark = _fake_uname(tmp_path)
    res = run_onager(["launch", "--backend", "local", "--jobname", "one", "--command", "true"], cwd=str(project),
                     env={"PATH": bindir + os.pathsep + os.environ["PATH"]})
    assert res.returncode == 0, res.stderr
    assert not os.path.exists(mark), "a launch ran `uname` (platform.platform())"
    [prov] = glob.glob(str(project / ".onager" / "launches" / "one" / "*" / "provenance.json"))
    with open(prov) as handle:
        recorded = json.load(handle)["platform"]
    u = os.uname()
    assert recorded.startswith(f"{u.sysname}-{u.release}-{u.machine}"), recorded


def test_platform_text_says_what_platform_platform_says():
    import platform

    from onager.provenance import platform_text
    assert platform_text() == platform.platform()


LIGHT_FREEZE = """
import sys
from onager.provenance import installed_packages
text = installed_packages()
print("email.feedparser" in sys.modules or "importlib.metadata" in sys.modules)
print(text)
"""


def test_installed_packages_parse_no_whole_metadata(tmp_path):
    """The in-process `pip freeze` reads each distribution's Name and Version from the head of
    its METADATA, never the email parser over the whole file (a third of a second per launch),
    and finds the distributions without importing importlib.metadata."""
    site = tmp_path / "site"
    info = site / "some_pkg-1.2.3.dist-info"
    info.mkdir(parents=True)
    body = "Metadata-Version: 2.1\nname: Some_Pkg\nVersion: 1.2.3\nSummary: x\n\nName: not-this\n" + "x\n" * 5000
    (info / "METADATA").write_text(body)
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + str(site))
    res = subprocess.run([sys.executable, "-c", LIGHT_FREEZE], capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 0, res.stderr
    parsed, *lines = res.stdout.splitlines()
    assert parsed == "False", "installed_packages ran the email parser or imported importlib.metadata"
    assert "Some_Pkg==1.2.3" in lines
    import importlib.metadata
    tabulate = importlib.metadata.version("tabulate")
    assert f"tabulate=={tabulate}" in lines


# what a command imports: `main(argv)` run in a fresh interpreter, then sys.modules
IMPORTS = """
import contextlib, io, json, sys
from onager.cli import main
with contextlib.redirect_stdout(io.StringIO()) as out, contextlib.redirect_stderr(io.StringIO()):
    try:
        code = main(sys.argv[1:])
    except SystemExit as exc:  # argparse's --help
        code = exc.code
print(json.dumps([code, sorted(sys.modules), out.getvalue()]))
"""

# modules that each cost a large share of a bare Python start, found with `python -X importtime`
HEAVY = ("dataclasses", "inspect", "importlib.metadata", "email", "typing_extensions", "tabulate", "difflib",
         "tempfile", "subprocess", "socket", "csv", "xml.etree.ElementTree", "hashlib", "platform", "zipfile")


def imported(args: list[str], cwd: str, env: dict | None = None) -> tuple[int, set[str], str]:
    """Exit code, the modules loaded, and stdout of `onager ARGS` run in a fresh interpreter."""
    full = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), **(env or {}))
    res = subprocess.run([sys.executable, "-c", IMPORTS, *args], cwd=cwd, capture_output=True, text=True, env=full,
                         timeout=120)
    assert res.returncode == 0, res.stderr
    code, modules, out = json.loads(res.stdout.splitlines()[-1])
    return code, set(modules), out


def test_list_in_an_empty_project_imports_nothing_heavy(project):
    code, modules, _ = imported(["list"], str(project))
    assert code == 0
    assert not sorted(m for m in HEAVY if m in modules)
    assert not [m for m in modules if m.startswith("onager.backends.")]


def test_prelaunch_help_loads_no_sweep_code(project):
    code, modules, out = imported(["prelaunch", "+help"], str(project))
    assert code == 0 and out.startswith("usage: onager prelaunch")
    assert "onager.sweep" not in modules and "onager.prelaunch" not in modules
    assert not sorted(m for m in HEAVY if m in modules)


def test_prelaunch_help_text_is_the_same_on_every_path(project):
    """+help alone takes the short path; with other words prelaunch parses them first: both
    print the one text (and `onager help prelaunch` too)."""
    from onager.prelaunch_help import HELP
    for args in (["prelaunch", "+help"], ["prelaunch", "+h"], ["prelaunch", "--help"], ["help", "prelaunch"],
                 ["prelaunch", "+jobname", "x", "+help"]):
        res = run_onager(args, cwd=str(project))
        assert res.returncode == 0, (args, res.stderr)
        assert res.stdout == HELP, args
    assert not (project / ".onager").exists()


def test_launch_help_reads_no_package_metadata_and_starts_no_process(project):
    code, modules, out = imported(["launch", "--help"], str(project))
    assert code == 0 and "--backend" in out
    assert not sorted(m for m in ("importlib.metadata", "email", "subprocess", "zipfile", "hashlib", "socket",
                                  "xml.etree.ElementTree", "tarfile", "secrets", "platform") if m in modules)


def test_launch_help_documents_every_backend_option(project):
    """Every option of every backend, and of the shared launch modules, is in `launch --help`."""
    from onager.backends import available, declared_options
    from onager.backends.base import Option
    from onager.cli import LAUNCH_OPTION_MODULES
    res = run_onager(["launch", "--help"], cwd=str(project))
    assert res.returncode == 0, res.stderr
    expected = set()
    for cls in available().values():
        expected |= {opt.flag for opt in declared_options(cls)}
    import importlib
    for module in LAUNCH_OPTION_MODULES:
        expected |= {opt.flag for opt in getattr(importlib.import_module(module), "LAUNCH_OPTIONS", ())
                     if isinstance(opt, Option)}
    assert len(expected) > 20
    words = set(res.stdout.replace(",", " ").split())
    assert not sorted(flag for flag in expected if flag not in words)
    for cls in available().values():
        assert f"{cls.name} backend:" in res.stdout


def test_entry_point_scan_agrees_with_importlib_metadata():
    """The scan of entry_points.txt files finds what importlib.metadata finds, for the backends'
    group and for a busy one (console_scripts)."""
    import importlib.metadata

    from onager.backends import ENTRY_POINT_GROUP, scan_entry_points
    for group in (ENTRY_POINT_GROUP, "console_scripts"):
        found = scan_entry_points(group)
        assert found is not None
        ours = sorted((ep.name, ep.value) for ep in found)
        theirs = sorted((ep.name, ep.value) for ep in importlib.metadata.entry_points(group=group))
        assert ours == theirs, group
