"""The store made for scale: float16 rows, stored per-class statistics, resumable extraction, old stores.

The audit's per-class answers are checked against the full-matrix computations of `spuraudit.analysis`
on the same data, on a small synthetic store and on the demo's real one.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from spuraudit import analysis
from spuraudit.audit import Audit
from spuraudit.data.table import ImageTable
from spuraudit.features import extract_features, run_extraction, store_key, write_store
from spuraudit.featurestats import STATS_DIR, build_stats
from spuraudit.modelio import load_model
from spuraudit.project import Project
from spuraudit.training import pick_device
from tests.fuzzcases import bad_input

ROOT = Path(__file__).resolve().parents[1]


# ---- a small synthetic store ------------------------------------------------------------------
def _small_project(tmp_path: Path, n: int = 600, d: int = 24, c: int = 5, seed: int = 0):
    """A real project folder (dataset.csv, project.json, labels.db) and a float16 store of random rows."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, c, n)
    split = rng.choice(["train", "val", "test"], n, p=[0.5, 0.2, 0.3])
    folder = tmp_path / "proj"
    table = ImageTable(class_names=[f"class{i}" for i in range(c)],
                       frame=pd.DataFrame({"path": [f"/nowhere/img{i}.png" for i in range(n)],
                                           "label": labels, "split": split}))
    project = Project(folder=folder, name="small", model="", settings={"stats": "train"})
    folder.mkdir(parents=True)
    table.save(folder)
    project.save()
    project = Project.open(folder)
    # Quantised values make ties (equal activations), which the orderings must break by index.
    features = np.round(rng.gamma(2.0, 1.0, (n, d)) * 4) / 4
    weight = rng.normal(size=(c, d))
    logits = features @ weight.T + rng.normal(scale=2.0, size=(n, c))
    logits[np.arange(n), labels] += 3.0  # mostly right, some wrong: every image-set mode differs
    store = write_store(tmp_path / "store", n, weight, np.zeros(c),
                        [(features[i:i + 128], logits[i:i + 128]) for i in range(0, n, 128)])
    build_stats(store, project.table)
    votes = project.labels()
    spurious = {0: [3, 7], 2: [5], 4: [1, 2, 11]}
    for cls, feats in spurious.items():
        for f in feats:
            votes.add_vote(cls, f, "background", annotator="tester")
    return project, store


def test_per_class_queries_equal_the_full_matrix_computations(tmp_path):
    project, store = _small_project(tmp_path)
    audit = Audit(project, store)
    assert audit.spurious == {0: [3, 7], 2: [5], 4: [1, 2, 11]}
    features = np.asarray(store.features, dtype=np.float64)  # the same float16 values, whole
    labels, preds = project.table.labels, np.asarray(store.preds)
    correct = labels == preds
    for split in ("test", "train", None):
        m = project.table.split_mask(split)
        for mode in analysis.IMAGE_SET_MODES:
            full = analysis.class_feature_importance(features[m], store.head_weight, labels[m], preds[m], mode)
            np.testing.assert_allclose(audit.importance(split, mode), full, rtol=1e-5)
            top = analysis.top_features(full, 6)
            for c in range(5):
                table = audit.top_features(c, k=6, split=split, mode=mode, triage_k=10)
                assert table["feature"].tolist() == [int(x) for x in top[c] if x >= 0]
                class_mask = m & (labels == c)
                expected = analysis.feature_gaps(correct, features, class_mask, table["feature"], k=10)
                np.testing.assert_array_equal(table["triage_gap"].to_numpy(), expected)
                in_set = m & analysis.image_set_mask(labels, preds, c, mode)
                for largest in (True, False):
                    np.testing.assert_array_equal(
                        audit.feature_images(c, 4, k=7, split=split, mode=mode, largest=largest),
                        analysis.top_images(features[:, 4], in_set, 7, largest=largest))
        fit = project.table.split_mask("train")
        stats = analysis.fit_spuriosity_stats(features[fit], labels[fit], audit.spurious)
        s_full = np.full(len(labels), np.nan)
        s_full[m] = analysis.spuriosity(features[m], labels[m], audit.spurious, stats=stats)
        s = audit.spuriosity(split)
        np.testing.assert_allclose(s, s_full, rtol=1e-5, atol=1e-6, equal_nan=True)
        for c in audit.spurious:
            order, scores = audit.ranking(c, split)
            np.testing.assert_array_equal(order, analysis.spuriosity_ranking(s_full, labels, c))
            low, high = audit.ranking_ends(c, 5, split)
            np.testing.assert_array_equal(low, order[:5])
            np.testing.assert_array_equal(high, order[::-1][:5])
        report = audit.gaps(split, k=20, n_boot=200)
        expected = analysis.spurious_gap(correct, s_full, labels, k=20)
        assert report.per_class["class_index"].tolist() == expected.classes
        np.testing.assert_allclose(report.per_class["gap"], [expected.per_class[c] for c in expected.classes])
        assert report.pooled_gap == pytest.approx(expected.pooled)
        for c in expected.classes:
            np.testing.assert_array_equal(report.high[c], expected.high[c])


def test_per_split_statistics_setting_fits_each_split_on_itself(tmp_path):
    project, store = _small_project(tmp_path, seed=1)
    project.update_settings(stats="per-split")
    audit = Audit(project, store)
    features = np.asarray(store.features, dtype=np.float64)
    labels = project.table.labels
    for split in ("test", None):
        m = project.table.split_mask(split)
        expected = np.full(len(labels), np.nan)
        expected[m] = analysis.spuriosity(features[m], labels[m], audit.spurious)  # fitted on the split
        np.testing.assert_allclose(audit.spuriosity(split), expected, rtol=1e-5, atol=1e-6, equal_nan=True)


# ---- the demo's real store ----------------------------------------------------------------------
def _float32_features(project: Project) -> np.ndarray:
    """The demo's features recomputed in float32 by a direct pass of its model."""
    from spuraudit.features import _loader

    model, card = load_model(project.model_folder)
    dev = pick_device("cpu")
    n = len(project.table)
    feats, _ = run_extraction(model.eval(), _loader(project.table.paths, card.input_size, 256, 0), n, dev)
    return feats


def test_demo_figures_from_the_float16_store_match_a_float32_computation(demo_copy):
    store = demo_copy.feature_store()
    assert store.features.dtype == np.float16
    assert (store.path / STATS_DIR / "stats.json").is_file()  # made at extraction, not on first use
    f32 = _float32_features(demo_copy)
    np.testing.assert_allclose(np.asarray(store.features, dtype=np.float32), f32, rtol=1e-3, atol=1e-3)
    table = demo_copy.table
    labels, preds = table.labels, np.asarray(store.preds)
    test = table.split_mask("test")
    audit = Audit(demo_copy, store, spurious={})
    importance = analysis.class_feature_importance(f32[test], store.head_weight, labels[test], preds[test])
    for c in range(table.num_classes):
        top = audit.top_features(c, k=5, split="test")
        assert top["feature"].tolist() == analysis.top_features(importance, 5)[c].tolist()
        np.testing.assert_allclose(top["importance"], importance[c, top["feature"]], rtol=2e-3, atol=1e-5)
    cue_feature = int(audit.top_features(0, k=1, split="test")["feature"][0])
    spurious = {0: [cue_feature]}
    audit = Audit(demo_copy, store, spurious=spurious)
    train = table.split_mask("train")
    stats = analysis.fit_spuriosity_stats(f32[train], labels[train], spurious)
    s32 = np.full(len(labels), np.nan)
    s32[test] = analysis.spuriosity(f32[test], labels[test], spurious, stats=stats)
    order, scores = audit.ranking(0, "test")
    np.testing.assert_allclose(scores, s32[order], atol=5e-3)
    assert np.corrcoef(np.argsort(np.argsort(scores)), np.argsort(np.argsort(s32[order])))[0, 1] > 0.999
    report = audit.gaps("test", k=100, n_boot=200)
    expected = analysis.spurious_gap(labels == preds, s32, labels, k=100)
    assert abs(report.pooled_gap - expected.pooled) <= 2.0  # at most two images of 100 swap ends


_KILLABLE = textwrap.dedent("""
    import sys, time, torch
    torch.set_num_threads(1)
    from spuraudit.features import extract_features
    from spuraudit.modelio import load_model
    from spuraudit.project import Project
    project = Project.open(sys.argv[1])
    model, card = load_model(project.model_folder)
    extract_features(model, project.table, sys.argv[2], card.input_size, batch_size=64, num_workers=0,
                     device="cpu", chunk_rows=128, progress=lambda f, m: time.sleep(0.05))
""")


def _rows_done(root: Path) -> int:
    for progress in root.glob(".partial-*/progress.json"):
        try:
            return int(json.loads(progress.read_text())["rows_done"])
        except (ValueError, KeyError, OSError):
            return 0
    return 0


@bad_input("disk", "an extraction killed with SIGKILL part-way through, then started again",
           "the second run continues after the rows already written and gives the same store as an "
           "uninterrupted run")
def test_extraction_killed_mid_way_resumes_to_the_same_store(demo_copy, tmp_path):
    root = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    child = subprocess.Popen([sys.executable, "-c", _KILLABLE, str(demo_copy.folder), str(root)], env=env)
    try:
        deadline = time.time() + 240
        while _rows_done(root) < 512 and time.time() < deadline and child.poll() is None:
            time.sleep(0.1)
        assert child.poll() is None, "extraction finished before it could be killed"
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait()
    done = _rows_done(root)
    n = len(demo_copy.table)
    assert 512 <= done < n and done % 128 == 0
    assert not list(root.glob("*/meta.json"))  # nothing looks finished
    model, card = load_model(demo_copy.model_folder)
    messages = []
    resumed = extract_features(model, demo_copy.table, root, card.input_size, batch_size=64, num_workers=0,
                               device="cpu", chunk_rows=128, progress=lambda f, m: messages.append(m))
    assert messages[0] == f"resuming the extraction at image {done}/{n}"
    whole = extract_features(model, demo_copy.table, tmp_path / "whole", card.input_size, batch_size=64,
                             num_workers=0, device="cpu", chunk_rows=128)
    assert resumed.path.name == whole.path.name == demo_copy.feature_store_path().name
    np.testing.assert_allclose(np.asarray(resumed.features, np.float32), np.asarray(whole.features, np.float32),
                               rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(resumed.logits, whole.logits, rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(resumed.preds, whole.preds)
    for name in ("class_order", "class_offsets", "count_correct"):
        np.testing.assert_array_equal(np.load(resumed.path / STATS_DIR / f"{name}.npy"),
                                      np.load(whole.path / STATS_DIR / f"{name}.npy"))
    assert not (resumed.path / "progress.json").exists()


@bad_input("disk", "a project whose feature store was made by an earlier version (float32, no statistics, "
           "keyed by a stat of every image)",
           "it opens, its statistics are computed once and saved beside it, and its labels are untouched")
def test_old_format_store_still_opens_with_its_labels(demo_copy):
    project = demo_copy
    new = project.feature_store()
    model_hash = project._model_hash(project.model_folder)
    _, card = load_model(project.model_folder)
    old_key = store_key(model_hash, project.table.legacy_content_hash(), card.input_size)
    old = project.features_dir / old_key
    old.mkdir()
    np.save(old / "features.npy", np.asarray(new.features, dtype=np.float32))
    for name in ("logits", "preds", "head_weight", "head_bias"):
        np.save(old / f"{name}.npy", np.asarray(getattr(new, name)))
    meta = {k: v for k, v in new.meta.items() if k not in ("table", "model_hash", "feature_dtype")}
    (old / "meta.json").write_text(json.dumps({**meta, "key": old_key}))
    import shutil

    shutil.rmtree(new.path)
    project.labels().add_vote(0, 3, "background", annotator="tester")
    labels_before = project.labels_path.read_bytes()

    reopened = Project.open(project.folder)
    store = reopened.feature_store()
    assert store is not None and store.path == old and store.features.dtype == np.float32
    index = json.loads((reopened.features_dir / "index.json").read_text())
    assert old_key in index.values()  # found once by the old key, then looked up by the index
    audit = Audit(reopened, store)
    assert audit.spurious == {0: [3]}
    order, scores = audit.ranking(0, "test")
    assert len(order) == int(((reopened.table.labels == 0) & reopened.table.split_mask("test")).sum())
    assert (old / STATS_DIR / "stats.json").is_file()
    assert not audit.top_features(0, k=3, split="test").empty
    assert project.labels_path.read_bytes() == labels_before
    assert reopened.extract().path == old  # nothing is extracted again


@bad_input("disk", "image files deleted or rewritten after their features were extracted",
           "`spuraudit verify` names the missing and the changed files; nothing is recomputed or deleted")
def test_verify_names_missing_and_changed_images(tmp_path, monkeypatch):
    from PIL import Image

    from spuraudit.cli import main
    from spuraudit.verify import verify_dataset

    images = tmp_path / "images"
    images.mkdir()
    paths = []
    for i in range(6):
        Image.new("RGB", (8, 8), (i * 40, 0, 0)).save(images / f"{i}.png")
        paths.append(str(images / f"{i}.png"))
    folder = tmp_path / "proj"
    folder.mkdir()
    table = ImageTable(class_names=["a", "b"], frame=pd.DataFrame(
        {"path": paths, "label": [0, 1] * 3, "split": ["test"] * 6}))
    table.save(folder)
    model_folder = tmp_path / "model"
    from spuraudit.modelio import ModelCard, build_audit_model, save_model

    card = ModelCard(name="tiny", architecture="spuraudit:digitnet", class_names=["a", "b"], input_size=[8, 8])
    torch.manual_seed(0)
    save_model(build_audit_model(card), card, model_folder)
    project = Project(folder=folder, name="proj", model=str(model_folder))
    project.save()
    project = Project.open(folder)
    project.extract(num_workers=0, device="cpu")
    assert verify_dataset(project).ok
    os.remove(paths[1])
    Image.new("RGB", (8, 8), (0, 255, 0)).save(paths[4])
    os.utime(paths[4], ns=(1, 1))
    report = verify_dataset(project)
    assert not report.ok
    assert report.missing == [paths[1]] and report.changed == [paths[4]]
    assert (report.n_missing, report.n_changed, report.checked) == (1, 1, 6)
    assert main(["verify", "--project", str(folder)]) == 1
    assert project.feature_store() is not None  # the store is still there, still found


def test_vectorised_gap_intervals_agree_with_the_one_class_bootstrap():
    rng = np.random.default_rng(3)
    correct = rng.random(5000) < 0.7
    high = [rng.choice(5000, 100, replace=False) for _ in range(40)]
    low = [rng.choice(5000, 60, replace=False) for _ in range(40)]
    low[7] = np.zeros(0, dtype=np.int64)  # a class without a Low set gets no interval
    one = analysis.bootstrap_gap_ci(correct, high[0], low[0], n_boot=500, seed=11)
    many = analysis.bootstrap_gap_cis(correct, high[:1], low[:1], n_boot=500, seed=11)
    np.testing.assert_allclose(many[0], one)  # one class: the very same draws
    small_blocks = analysis.bootstrap_gap_cis(correct, high, low, n_boot=500, seed=11, max_elements=3000)
    assert np.isnan(small_blocks[7]).all() and not np.isnan(np.delete(small_blocks, 7, axis=0)).any()
    for c in (0, 13, 39):  # each class's interval is its own bootstrap distribution's, in any block
        gap = 100 * (correct[high[c]].mean() - correct[low[c]].mean())
        lo, hi = small_blocks[c]
        assert lo <= gap <= hi and hi - lo < 40
        solo = analysis.bootstrap_gap_ci(correct, high[c], low[c], n_boot=4000, seed=5)
        assert abs(lo - solo[0]) < 4 and abs(hi - solo[1]) < 4
