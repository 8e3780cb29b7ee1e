"""Fixtures of the mitigation tests: a private copy of the demo with its cue labelled spurious.

The copy has its own home, its own copy of the demo model folder (mitigated models are written beside
their parent, so they stay inside this home) and its own label store. Other mitigation test modules
import the fixtures from here.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.test_demo_audit import CUE_CLASS, _cue_feature


def private_demo(demo_home: Path, home: Path, label_cue: bool = True):
    """Copy the demo project and model into `home`; optionally label the square feature spurious.

    Returns (project, cue feature index or None when not labelled).
    """
    from spuraudit import paths
    from spuraudit.audit import Audit
    from spuraudit.project import Project

    source = Project.open(paths.projects_dir(demo_home) / "demo")
    model_copy = paths.models_dir(home) / source.model_folder.name
    shutil.copytree(source.model_folder, model_copy)
    project_copy = paths.projects_dir(home) / "demo"
    shutil.copytree(source.folder, project_copy, ignore=shutil.ignore_patterns("labels.db*"))
    data = json.loads((project_copy / "project.json").read_text())
    data["model"] = str(model_copy.resolve())
    (project_copy / "project.json").write_text(json.dumps(data))
    project = Project.open(project_copy)
    assert project.feature_store() is not None  # same weights and images: the copied store is found
    if not label_cue:
        return project, None
    feature, _ = _cue_feature(Audit(project, project.feature_store(), spurious={}))
    project.labels().add_vote(CUE_CLASS, feature, "background", annotator="t")
    return project, feature


@pytest.fixture(scope="module")
def labelled_demo(demo_home, tmp_path_factory):
    """(project, cue feature): the demo in a private home, the square feature labelled spurious."""
    return private_demo(demo_home, tmp_path_factory.mktemp("mitigate-home"))


def test_private_demo_is_isolated(labelled_demo, demo_project):
    project, feature = labelled_demo
    assert project.spurious_features() == {CUE_CLASS: [feature]}
    assert project.model_folder.parent != demo_project.model_folder.parent
    assert project.labels_path != demo_project.labels_path  # labels written here never reach the shared demo
