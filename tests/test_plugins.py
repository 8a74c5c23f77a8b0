"""Backends from other packages: found through the `onager.backends` entry-point group, and
usable for launch, list, cancel, wait and `config --write NAME ...` like the built-ins."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time

import pytest
from support import ROOT, run_onager

PLUGIN = '''
"""A backend from another package: the local pool, plus a note it leaves in each launch."""
import os
from onager.backends import LaunchInfo, Option
from onager.backends.local import LocalBackend


class EchoBackend(LocalBackend):
    name = "echo"
    OPTIONS = LocalBackend.OPTIONS + (
        Option("echo_note", help="echo: a note written to the launch directory", metavar="TEXT"),
        Option("echo_copies", "int", default=1, units="copies", help="echo: how many notes"),
    )

    def submit(self, launch: LaunchInfo):
        note = str(self.options.get("echo_note", "none"))
        with open(os.path.join(launch.launch_dir, "echo-note.txt"), "w") as handle:
            handle.write(note * int(self.options.get("echo_copies", 1)))
        return super().submit(launch)
'''


def _plugin_site(tmp_path, entry: str = "echo = onager_echo_plugin:EchoBackend", source: str = PLUGIN) -> str:
    """A directory laid out like site-packages after `pip install onager-echo-plugin`."""
    site = tmp_path / "site"
    (site / "onager_echo_plugin").mkdir(parents=True)
    (site / "onager_echo_plugin" / "__init__.py").write_text(textwrap.dedent(source))
    info = site / "onager_echo_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: onager-echo-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[onager.backends]\n{entry}\n")
    (info / "RECORD").write_text("")
    return str(site)


@pytest.fixture
def plugin(tmp_path, project):
    site = _plugin_site(tmp_path)

    def call(*args: str, **kwargs):
        return run_onager(list(args), cwd=str(project),
                          env={"PYTHONPATH": ROOT + os.pathsep + site + os.pathsep + os.environ.get("PYTHONPATH", "")},
                          **kwargs)
    return call


def test_contract_is_importable_from_onager_backends():
    import onager.backends as backends
    from onager.backends import base
    for name in backends.CONTRACT:
        assert getattr(backends, name) is getattr(base, name), name
    with pytest.raises(AttributeError):
        backends.NoSuchThing  # noqa: B018


def test_builtins_are_registered_as_entry_points():
    try:
        import tomllib
    except ImportError:  # Python < 3.11
        import tomli as tomllib
    from onager.backends import BUILTIN, backend_class
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as handle:
        group = tomllib.load(handle)["project"]["entry-points"]["onager.backends"]
    assert set(group) == set(BUILTIN)
    import importlib
    for name, value in group.items():
        module, _, attr = value.partition(":")
        assert getattr(importlib.import_module(module), attr) is backend_class(name)
        assert module == BUILTIN[name]


def test_plugin_backend_launches_lists_and_takes_config(plugin, project):
    res = plugin("prelaunch", "+jobname", "p", "+command", "echo hi >", "+pos-arg", "a.txt", "b.txt", "+q")
    assert res.returncode == 0, res.stderr
    res = plugin("config", "--write", "echo", "echo_note", "from-config", "--write", "echo", "max_tasks", "1")
    assert res.returncode == 0, res.stderr
    res = plugin("launch", "--backend", "echo", "--jobname", "p", "--echo-copies", "2", "-q")
    assert res.returncode == 0, res.stderr
    assert (project / "a.txt").read_text() == "hi\n" and (project / "b.txt").read_text() == "hi\n"
    launch_dir = project / ".onager" / "launches" / "p" / "1"
    assert (launch_dir / "echo-note.txt").read_text() == "from-config" * 2  # config default and CLI value
    res = plugin("list", "--jobname", "p", "--json")
    assert res.returncode == 0, res.stderr
    rows = json.loads(res.stdout)
    assert [(r["task_id"], r["status"], r["backend"]) for r in rows] == [(1, "done", "echo"), (2, "done", "echo")]
    res = plugin("wait", "--jobname", "p", "-q")
    assert res.returncode == 0, res.stderr


def test_plugin_option_values_are_typed(plugin, project):
    before = sorted(os.listdir(project))
    res = plugin("config", "--write", "echo", "echo_copies", "two")
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert "echo_copies" in res.stderr and "whole number" in res.stderr and "Traceback" not in res.stderr
    assert sorted(os.listdir(project)) == before


def test_plugin_backend_detach_cancel_and_wait(plugin, project):
    res = plugin("launch", "--backend", "echo", "--jobname", "s", "--command", "sleep 60", "--detach", "-q")
    assert res.returncode == 0, res.stderr
    state = project / ".onager" / "launches" / "s" / "1" / "state"
    deadline = time.time() + 30
    while not any(n.startswith("1.start") for n in os.listdir(state)) and time.time() < deadline:
        time.sleep(0.2)
    rows = json.loads(plugin("list", "--jobname", "s", "--json").stdout)
    assert [(r["status"], r["backend"]) for r in rows] == [("running", "echo")]
    res = plugin("cancel", "--jobname", "s", "-q")
    assert res.returncode == 0, res.stderr
    res = plugin("wait", "--jobname", "s", "-q", "--timeout", "60")
    assert res.returncode == 1, (res.returncode, res.stderr)  # ended, not every task done
    rows = json.loads(plugin("list", "--jobname", "s", "--json").stdout)
    assert [r["status"] for r in rows] == ["cancelled"]


def test_unknown_backend_names_the_plugins_too(plugin, project):
    res = plugin("launch", "--backend", "pbs", "--jobname", "x", "--command", "true")
    assert res.returncode == 2
    assert "unknown backend 'pbs'" in res.stderr and "echo" in res.stderr
    res = plugin("config", "--write", "pbs", "header", "x")
    assert res.returncode == 2 and "unknown config section 'pbs'" in res.stderr and "echo" in res.stderr
    assert not (project / ".onager").exists()


@pytest.mark.parametrize("entry,source,words", [
    ("echo = onager_echo_plugin:Missing", PLUGIN, "cannot be loaded"),
    ("echo = onager_echo_plugin:EchoBackend", "raise RuntimeError('plugin bug')\n", "plugin bug"),
    ("echo = onager_echo_plugin:thing", "thing = 42\n", "not an onager Backend"),
])
def test_broken_plugin_is_one_line_and_writes_nothing(tmp_path, project, entry, source, words):
    site = _plugin_site(tmp_path, entry, source)
    env = {"PYTHONPATH": ROOT + os.pathsep + site}
    res = run_onager(["launch", "--backend", "echo", "--jobname", "x", "--command", "true"], cwd=str(project), env=env)
    assert res.returncode == 2, res.stderr
    assert words in res.stderr and "Traceback" not in res.stderr and len(res.stderr.strip().splitlines()) == 1
    assert not (project / ".onager").exists()
    # the built-ins still work beside a broken plugin
    res = run_onager(["launch", "--backend", "local", "--jobname", "x", "--command", "true", "-q"],
                     cwd=str(project), env=env)
    assert res.returncode == 0, res.stderr


LIGHT = """
import contextlib, io, sys
from onager.cli import main
with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
    code = main(sys.argv[1:])
import onager.backends as b
print(code, b._plugins is None)
print("\\n".join(sorted(sys.modules)))
"""


def test_list_imports_no_backend_and_reads_no_entry_points(project):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    res = subprocess.run([sys.executable, "-c", LIGHT, "list"], cwd=str(project), capture_output=True,
                         text=True, env=env, timeout=60)
    assert res.returncode == 0, res.stderr
    first, *modules = res.stdout.splitlines()
    assert first.split()[1] == "True", "list scanned the entry points"
    assert not [m for m in modules if m.startswith("onager.backends.")], modules


def test_plugin_option_on_another_backend_is_refused(plugin, project):
    res = plugin("launch", "--backend", "local", "--jobname", "x", "--command", "true", "--echo-note", "hi")
    assert res.returncode == 2, res.stderr
    assert "local has no --echo-note" in res.stderr and "--backend echo" in res.stderr
    assert not (project / ".onager").exists()
