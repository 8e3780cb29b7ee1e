"""Exporting a selection, tagging images, and what sets a feature apart: real files, real SQLite."""

from __future__ import annotations

import io
import threading
import zipfile

import numpy as np
import pandas as pd
import pytest

from spuraudit.analysis.distinctness import group_separation, top_set_overlap
from spuraudit.analysis.projection import pca_2d
from spuraudit.image_tags import TagError, TagStore
from spuraudit.selection_export import ExportError, safe_name, to_csv_bytes, zip_bytes

from .fuzzcases import bad_input


@bad_input("manifests", "a manifest row whose image path leaves the dataset root (`root/../secret.txt`), exported as a zip",
           "the export stops with 'outside the dataset root'; nothing outside the root is archived")
def test_the_zip_refuses_files_outside_the_dataset_root(tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    (tmp_path / "secret.txt").write_text("no")
    bad = pd.DataFrame({"index": [1], "path": [str(root / ".." / "secret.txt")], "label": ["c"], "split": ["s"]})
    with pytest.raises(ExportError, match="outside the dataset root"):
        zip_bytes(bad, root)


@bad_input("names", "class and split names `../../x` and `/abs`, a file named `a b?.png`, exported as an ImageFolder zip",
           "entries are rebuilt from safe characters: no absolute path, no `..`, no duplicate names")
def test_names_inside_the_archive_are_safe(tmp_path):
    root = tmp_path / "data"
    (root / "cls").mkdir(parents=True)
    image = root / "cls" / "a b?.png"
    image.write_bytes(b"png bytes")
    frame = pd.DataFrame({"index": [0, 0], "path": [str(image)] * 2, "label": ["../../x"] * 2, "split": ["/abs"] * 2})
    with zipfile.ZipFile(io.BytesIO(zip_bytes(frame, root, "imagefolder"))) as z:
        names = z.namelist()
        assert z.read("abs/x/0_a_b_.png") == b"png bytes"
    assert all(not n.startswith("/") and ".." not in n.split("/") for n in names), names
    assert len(names) == len(set(names)) == 3  # two images (the second renamed) and selection.csv
    assert safe_name("..") == "item" and safe_name(".hidden") == "hidden"


@bad_input("names", "a class name `=HYPERLINK(...)` in an exported CSV", "the cell starts with a quote, so a spreadsheet shows it as text")
def test_csv_cells_never_run_as_formulas():
    text = to_csv_bytes(pd.DataFrame({"label": ["=HYPERLINK(\"http://x\")", "cat"], "n": [1, 2]})).decode()
    assert "'=HYPERLINK" in text and "\ncat," in text


def test_tags_are_stored_with_the_project_and_survive_concurrent_writers(tmp_path):
    store = TagStore(tmp_path)
    assert store.all_tags() == [] and store.tags_of(["a.png"]) == {}
    assert store.add(["a.png", "b.png"], "check later") == 2
    assert store.add(["a.png"], "check later") == 0  # already there
    threads = [threading.Thread(target=TagStore(tmp_path).add, args=([f"img{i}.png"], "mislabelled")) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert store.images_with("mislabelled") == {f"img{i}.png" for i in range(8)}
    assert store.tags_of(["a.png", "zzz.png"]) == {"a.png": ["check later"]}
    assert store.remove(["a.png"], "check later") == 1
    assert store.all_tags() == ["check later", "mislabelled"]
    assert (tmp_path / "tags.db").is_file()


@bad_input("names", "an image tag of 200 characters, or one starting with `<`", "refused with what a tag may look like; no tag is stored")
def test_bad_tags_are_refused(tmp_path):
    store = TagStore(tmp_path)
    for tag in ["x" * 200, "<script>", "   "]:
        with pytest.raises(TagError, match="use 1-40 letters"):
            store.add(["a.png"], tag)
    assert store.all_tags() == []


def test_group_separation_names_the_value_a_feature_fires_on():
    activation = np.array([0.1, 0.2, 0.3, 2.0, 2.5, 3.0])
    values = np.array(["0", "0", "0", "1", "1", "1"], dtype=object)
    assert group_separation(activation, values) == (1.0, "1")
    assert group_separation(-activation, values) == (1.0, "0")
    score, value = group_separation(activation, np.array(["a", "b"] * 3, dtype=object))
    assert 0.5 <= score < 1.0
    assert group_separation(activation, np.array(["a"] * 6, dtype=object)) == (pytest.approx(np.nan, nan_ok=True), None)


def test_top_set_overlap_counts_shared_strongest_images():
    acts = np.array([[5, 5, 0], [4, 4, 0], [0, 0, 9], [1, 1, 8]], dtype=float)
    overlap = top_set_overlap(acts, 2)
    assert overlap[0, 1] == 1.0 and overlap[0, 2] == 0.0 and np.allclose(np.diag(overlap), 1.0)


def test_pca_map_keeps_clusters_apart_and_does_not_flip():
    rng = np.random.default_rng(0)
    a = rng.normal(0, 0.1, (20, 8))
    b = rng.normal(0, 0.1, (20, 8)) + 3.0
    xy = pca_2d(np.vstack([a, b]))
    assert xy.shape == (40, 2)
    assert abs(xy[:20, 0].mean() - xy[20:, 0].mean()) > 5 * xy[:20, 0].std()
    assert np.allclose(pca_2d(np.vstack([a, b])), xy)
    assert np.all(pca_2d(np.ones((1, 4))) == 0)


@bad_input("names", "deleting a project named `../models` or a model another project still uses",
           "refused with the reason; nothing is deleted")
def test_delete_project_and_model_only_inside_their_folders(tmp_path):
    from spuraudit.removal import RemovalError, delete_model, delete_project

    (tmp_path / "projects" / "p").mkdir(parents=True)
    (tmp_path / "projects" / "p" / "project.json").write_text('{"name": "p", "model": "m1"}')
    for m in ("m1", "m2"):
        (tmp_path / "models" / m).mkdir(parents=True)
        (tmp_path / "models" / m / "model.yaml").write_text("name: x\n")
    with pytest.raises(RemovalError, match="not a folder directly under"):
        delete_project("../models", base=tmp_path)
    with pytest.raises(RemovalError, match="used by project p"):
        delete_model("m1", base=tmp_path)
    delete_model("m2", base=tmp_path)
    assert not (tmp_path / "models" / "m2").exists() and (tmp_path / "models" / "m1").is_dir()
    delete_project("p", base=tmp_path)
    assert list((tmp_path / "projects").iterdir()) == []
    delete_model("m1", base=tmp_path)  # no project uses it any more
    assert list((tmp_path / "models").iterdir()) == []
