"""Shared fixtures: a real demo project built once per test run, in a temporary home."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def demo_home(tmp_path_factory) -> Path:
    """A home folder holding the built demo (data, trained model, project, features).

    SPURAUDIT_TEST_DEMO_HOME names a home where the demo was built already (by this version): it is copied
    instead of built again, to rerun a few tests quickly while working on them.
    """
    import shutil

    from spuraudit.demo import build_demo

    home = tmp_path_factory.mktemp("home")
    prebuilt = os.environ.get("SPURAUDIT_TEST_DEMO_HOME")
    if prebuilt:
        for name in ("projects", "models"):
            shutil.copytree(Path(prebuilt) / name, home / name, symlinks=True)
    else:
        build_demo(base=home)
    return home


@pytest.fixture(scope="session")
def demo_project(demo_home):
    from spuraudit import paths
    from spuraudit.project import Project

    return Project.open(paths.projects_dir(demo_home) / "demo")


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    """An empty home, set as SPURAUDIT_HOME for code that reads it."""
    monkeypatch.setenv("SPURAUDIT_HOME", str(tmp_path))
    return tmp_path


@pytest.fixture
def demo_copy(demo_home, tmp_path):
    """A private copy of the demo project (labels written here do not leak into other tests).

    The copy lives in its own home that shares the demo's model folder, so the CLI can find it.
    """
    import shutil

    from spuraudit import paths
    from spuraudit.project import Project

    home = tmp_path / "home"
    shutil.copytree(paths.projects_dir(demo_home) / "demo", paths.projects_dir(home) / "demo",
                    ignore=shutil.ignore_patterns("labels.db*"))
    (home / "models").symlink_to(paths.models_dir(demo_home))
    return Project.open(paths.projects_dir(home) / "demo")


@pytest.fixture(scope="session", autouse=True)
def _no_stray_workers(tmp_path_factory):
    """Workers that pages spawn for their jobs idle for minutes before exiting; stop those of this run."""
    yield
    from tests.processes import processes_naming, stop_processes

    base = str(tmp_path_factory.getbasetemp())
    stop_processes([pid for pid in processes_naming("spuraudit.jobs") if pid in processes_naming(base)])
