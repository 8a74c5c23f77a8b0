"""The launch-directory layout lives in onager.layout alone, and no onager module imports
another that (directly or not) imports it back (issue 13, item 6)."""
from __future__ import annotations

import ast
import os
import re
import subprocess
import sys

import pytest

import onager
from onager.layout import ProjectPaths, iter_launch_tasks, launch_of_remote_dirs, load_meta, project_root

PACKAGE_DIR = os.path.dirname(onager.__file__)


def _modules() -> dict[str, str]:
    """Dotted module name -> file, for every module of the onager package."""
    out = {}
    for directory, _, files in os.walk(PACKAGE_DIR):
        for name in files:
            if not name.endswith(".py"):
                continue
            path = os.path.join(directory, name)
            rel = os.path.relpath(path, os.path.dirname(PACKAGE_DIR))[:-3].replace(os.sep, ".")
            out[rel[:-9] if rel.endswith(".__init__") else rel] = path
    return out


def import_graph() -> dict[str, set[str]]:
    """Module -> the onager modules it imports, at module level OR inside a function
    (a lazy import is still a dependency: launch.py and status.py once imported each
    other that way). The package `onager` itself is left out: Python imports it before
    any of its modules, and its `__getattr__` only re-exports names on access."""
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        if name == "onager":
            continue
        with open(path, encoding="utf-8") as handle:
            tree = ast.parse(handle.read(), path)
        deps: set[str] = set()
        for node in ast.walk(tree):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            for target in targets:
                if target in modules and target != "onager" and target != name:
                    deps.add(target)
        graph[name] = deps
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str]:
    """One import cycle as a list of modules (first == last), or [] if there is none."""
    colour: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str]:
        colour[node] = 1
        stack.append(node)
        for dep in sorted(graph.get(node, ())):
            if colour.get(dep) == 1:
                return stack[stack.index(dep):] + [dep]
            if dep not in colour:
                found = visit(dep)
                if found:
                    return found
        stack.pop()
        colour[node] = 2
        return []

    for node in sorted(graph):
        if node not in colour:
            found = visit(node)
            if found:
                return found
    return []


def test_cycle_finder_finds_a_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) == []


def test_no_import_cycle_between_onager_modules() -> None:
    graph = import_graph()
    assert "onager.launch" in graph and "onager.status" in graph["onager.launch"]
    cycle = find_cycle(graph)
    assert cycle == [], "import cycle: " + " -> ".join(cycle)


@pytest.mark.parametrize("module", sorted(m for m in _modules() if not m.endswith(".__main__")))
def test_each_module_imports_alone(module: str) -> None:
    """In a fresh interpreter, so no other import has already loaded what it needs."""
    done = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


# The layout's names as other modules would spell them: a file name, a path piece, or a
# directory name joined with os.path.join.
LAYOUT_FILES = re.compile(r"tasks\.(sh|idx|jsonl)|wrapper\.sh|launch\.json|index\.jsonl|provenance\.json"
                          r"|scheduler\.json|pool\.(json|log)|node\.sh|groups\.txt|cancel\.requested"
                          r"|(^|/)\.onager/|(^|/)(launches|launch-ids|scripts|state|logs|results|remote-dirs|fetched)/")
LAYOUT_DIRS = {".onager", "launches", "launch-ids", "scripts", "state", "logs", "results",
               "tasks.sh", "tasks.idx", "tasks.jsonl", "wrapper.sh", "launch.json", "provenance.json",
               "scheduler.json", "pool.json", "pool.log", "node.sh", "groups.txt", "cancel.requested",
               "remote-dirs", "fetched", "code", "scheduler"}


def _layout_spellings(tree: ast.AST) -> list[str]:
    """String literals outside docstrings and messages that spell part of the layout."""
    docs = {id(n.body[0].value) for n in ast.walk(tree)
            if isinstance(n, (ast.Module, ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef))
            and n.body and isinstance(n.body[0], ast.Expr)}
    messages = set()  # text inside f-strings and exception/print arguments is prose for people
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr) or (isinstance(node, ast.Call) and getattr(node.func, "id", "") in (
                "OnagerError", "UsageError", "print", "warn")):
            messages.update(id(c) for c in ast.walk(node))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and ast.unparse(node.func) == "os.path.join":
            found += [a.value for a in node.args if isinstance(a, ast.Constant) and a.value in LAYOUT_DIRS]
        elif (isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs
              and id(node) not in messages and not re.search(r"\s", node.value)  # prose, help text
              and LAYOUT_FILES.search(node.value)):
            found.append(node.value)
    return found


def test_layout_spellings_are_found() -> None:
    code = 'import os\nP = os.path.join(d, "logs", "1.out")\nQ = d + "/state/" + n\nR = "tasks.idx"\n'
    assert sorted(_layout_spellings(ast.parse(code))) == ["/state/", "logs", "tasks.idx"]


def test_only_layout_spells_the_layout() -> None:
    offenders = []
    for name, path in _modules().items():
        if name == "onager.layout":
            continue
        with open(path, encoding="utf-8") as handle:
            tree = ast.parse(handle.read(), path)
        offenders += [f"{name}: {text!r}" for text in _layout_spellings(tree)]
    assert offenders == []


def test_paths_of_a_launch(tmp_path) -> None:
    project = ProjectPaths(str(tmp_path))
    launch = project.launch("exp", "3")
    assert launch.dir == os.path.join(str(tmp_path), ".onager", "launches", "exp", "3")
    assert launch.log(7, "err") == os.path.join(launch.dir, "logs", "7.err")
    assert launch.state("7.cancel") == os.path.join(launch.dir, "state", "7.cancel")
    assert launch.results(7) == os.path.join(launch.dir, "results", "7.jsonl")
    assert os.path.basename(launch.tasks_idx) == "tasks.idx"
    assert launch.scheduler_logs_dir == os.path.join(launch.dir, "logs", "scheduler")
    assert launch.remote_dirs("h") == os.path.join(launch.dir, "remote-dirs", "h.json")
    assert launch.fetched("h", "out", "a.png") == os.path.join(launch.dir, "fetched", "h", "out", "a.png")
    assert [os.path.basename(p) for p in (launch.node_sh, launch.groups_txt, launch.cancel_flag, launch.code_dir)] \
        == ["node.sh", "groups.txt", "cancel.requested", "code"]
    assert project_root(launch.dir) == str(tmp_path)
    assert launch_of_remote_dirs(launch.remote_dirs("h")) == launch.dir
    assert project.index == os.path.join(str(tmp_path), ".onager", "index.jsonl")
    assert ProjectPaths().jobfile("exp") == ".onager/scripts/exp/jobs.json"  # relative, as 0.1.3 wrote it
    with pytest.raises(AttributeError):  # dataclasses.FrozenInstanceError is one
        launch.dir = "elsewhere"  # type: ignore[misc]  # frozen


def test_a_launch_is_where_layout_says(tmp_path, monkeypatch) -> None:
    """A real launch writes its files where LaunchPaths points, and the readers read them back."""
    monkeypatch.chdir(tmp_path)
    run = subprocess.run([sys.executable, "-m", "onager", "launch", "--backend", "local", "--jobname", "lay",
                          "--command", "echo hi; echo oops >&2"], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    launch = ProjectPaths(str(tmp_path)).launch("lay", "1")
    for path in (launch.tasks_sh, launch.tasks_idx, launch.tasks_jsonl, launch.wrapper, launch.launch_json):
        assert os.path.isfile(path), path
    with open(launch.log(1, "out")) as handle:
        assert "hi" in handle.read().splitlines()
    with open(launch.log(1, "err")) as handle:
        assert "oops" in handle.read().splitlines()
    assert any(n.startswith("1.end@") for n in os.listdir(launch.state_dir))
    assert load_meta(launch.dir)["jobname"] == "lay"
    assert [t[0] for t in iter_launch_tasks(launch.dir)] == [1]
