"""Projects can move: paths are stored relative to a dataset root, the model relative to the home's models/."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pandas as pd
import pytest

from spuraudit import cli, paths
from spuraudit.audit import Audit
from spuraudit.data.table import TABLE_CSV, TABLE_META, ImageTable
from spuraudit.features import FeatureStore
from spuraudit.project import Project
from tests.fuzzcases import bad_input


def _figures(audit: Audit) -> dict:
    report = audit.gaps("test", k=50, n_boot=200)
    order, scores = audit.ranking(0, "test")
    return {"summary": audit.summary("test"), "pooled": report.pooled_gap, "ci": report.pooled_ci,
            "order": order.tolist(), "scores": np.round(scores, 6).tolist(),
            "top": audit.top_features(0, k=3, split="test").to_dict("records")}


def _model_store(project: Project) -> FeatureStore:
    """The store of the project's own model (other tests may have added stores of mitigated models)."""
    store = project.feature_store()
    assert store is not None, "the project's feature store was not found"
    return store


@pytest.fixture
def moved_home(demo_home, tmp_path):
    """A copy of the demo home with a label, measured, then moved to another folder."""
    first = tmp_path / "first-place"
    shutil.copytree(demo_home, first, symlinks=True, ignore=shutil.ignore_patterns("jobs.db*"))
    project = Project.open(paths.projects_dir(first) / "demo")
    audit = Audit(project, _model_store(project), spurious={})
    feature = int(audit.top_features(0, k=1, split="test")["feature"].iloc[0])
    project.labels().add_vote(0, feature, "background", annotator="tester")
    before = _figures(Audit(project, _model_store(project)))
    before["store"] = _model_store(project).path.name
    second = tmp_path / "elsewhere" / "second-place"
    second.parent.mkdir()
    shutil.move(first, second)
    return first, second, before


def test_project_files_store_relative_paths(demo_project):
    data = json.loads((demo_project.folder / "project.json").read_text())
    assert not data["model"].startswith("/") and demo_project.model_folder.is_dir()
    assert json.loads((demo_project.folder / TABLE_META).read_text())["root"] == "data"
    stored = pd.read_csv(demo_project.folder / TABLE_CSV)
    assert not stored["path"].str.startswith("/").any() and not stored["mask_path"].str.startswith("/").any()
    assert stored["path"].iloc[0].startswith("images/") and stored["mask_path"].iloc[0].startswith("masks/")


def test_moved_home_opens_with_its_labels_and_the_same_figures(moved_home):
    first, second, before = moved_home
    assert not first.exists()
    project = Project.open(paths.projects_dir(second) / "demo")
    assert project.model_folder.is_relative_to(second) and (project.model_folder / "model.yaml").is_file()
    table = project.table
    for column in ("path", "mask_path"):
        assert table.frame[column].str.startswith(str(second)).all()
    assert all(os.path.isfile(table.frame["path"].iat[i]) for i in (0, len(table) - 1))
    audit = Audit(project, _model_store(project))
    assert audit.spurious and {**_figures(audit), "store": audit.store.path.name} == before


def test_moved_home_finds_its_feature_store(moved_home):
    _, second, before = moved_home
    project = Project.open(paths.projects_dir(second) / "demo")
    audit = Audit.open(project)  # found by the project's own lookup, with no extraction
    assert audit.store.path.name == before["store"] and audit.store.path.is_relative_to(second)
    assert {**_figures(audit), "store": before["store"]} == before


def test_relocate_points_a_copied_project_at_moved_images(demo_copy, tmp_path, capsys):
    moved = tmp_path / "disk2" / "digits"
    moved.parent.mkdir()
    shutil.copytree(demo_copy.folder / "data", moved)
    shutil.rmtree(demo_copy.folder / "data")
    csv_bytes = (demo_copy.folder / TABLE_CSV).read_bytes()
    assert cli.main(["relocate", "--project", str(demo_copy.folder), "--dataset-root", str(moved)]) == 0
    assert (demo_copy.folder / TABLE_CSV).read_bytes() == csv_bytes  # the table (and its identity) is kept
    assert json.loads((demo_copy.folder / TABLE_META).read_text())["root"] == str(moved)  # outside the home
    table = ImageTable.load(demo_copy.folder)
    assert table.frame["path"].iat[0].startswith(str(moved / "images"))
    assert table.frame["mask_path"].iat[0].startswith(str(moved / "masks"))
    assert (moved / "images").joinpath(table.frame["path"].iat[-1].rsplit("/", 1)[1]).is_file()


@bad_input("datasets", "`spuraudit relocate` given a missing folder, or one that does not hold the table's images",
           "exit code 2 and an error naming dataset.csv's row and the path it looked for; dataset.json unchanged")
def test_relocate_refuses_a_root_without_the_images(demo_copy, tmp_path, capsys):
    meta = (demo_copy.folder / TABLE_META).read_bytes()
    assert cli.main(["relocate", "--project", str(demo_copy.folder), "--dataset-root", str(tmp_path / "nope")]) == 2
    assert "no such folder" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert cli.main(["relocate", "--project", str(demo_copy.folder), "--dataset-root", str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err
    assert "row 2" in err and str(tmp_path / "empty") in err
    assert (demo_copy.folder / TABLE_META).read_bytes() == meta


def test_old_project_with_absolute_paths_opens_and_relocates(demo_copy, tmp_path):
    folder = demo_copy.folder
    table = demo_copy.table
    # The files of an earlier version: absolute paths, no root, an absolute model folder.
    table.frame.to_csv(folder / TABLE_CSV, index=False)
    meta = json.loads((folder / TABLE_META).read_text())
    meta.pop("root")
    (folder / TABLE_META).write_text(json.dumps(meta))
    data = json.loads((folder / "project.json").read_text())
    data["model"] = str(demo_copy.model_folder.resolve())
    (folder / "project.json").write_text(json.dumps(data))
    old = Project.open(folder)
    assert old.model_folder == demo_copy.model_folder.resolve()
    pd.testing.assert_frame_equal(old.table.frame, table.frame)

    moved = tmp_path / "moved-data"
    shutil.move(folder / "data", moved)
    csv_bytes = (folder / TABLE_CSV).read_bytes()
    assert cli.main(["relocate", "--project", str(folder), "--dataset-root", str(moved)]) == 0
    assert (folder / TABLE_CSV).read_bytes() == csv_bytes
    frame = Project.open(folder).table.frame
    assert frame["path"].str.startswith(str(moved / "images") + "/").all()
    assert frame["mask_path"].str.startswith(str(moved / "masks") + "/").all()
    assert (moved / "images" / frame["path"].iat[7].rsplit("/", 1)[1]).is_file()
