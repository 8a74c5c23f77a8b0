"""Shared fixtures: a scratch project directory and the onager CLI run as a subprocess."""
from __future__ import annotations

import subprocess

import pytest
from support import ROOT, engines_env, run_onager  # noqa: F401  (re-exported for older imports)


@pytest.fixture
def project(tmp_path, monkeypatch):
    """An empty project directory as cwd, with a private global config."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ONAGER_GLOBAL_CONFIG", str(tmp_path / "global.onagerconfig"))
    return tmp_path


@pytest.fixture
def onager(project):
    def call(*args: str, **kwargs) -> subprocess.CompletedProcess:
        return run_onager(list(args), cwd=str(project), **kwargs)
    return call
