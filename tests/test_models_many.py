"""Several models of the same classes in one project: storage, extraction, and the views across them.

Two real models on the demo: the demo's own and a second DigitNet trained here for one epoch. The
effective-robustness numbers and the gap correlations are checked against plain NumPy and SciPy on the
same arrays (the ranking recomputed here from the stored features, not taken from spuraudit).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats

from spuraudit.cli import main as cli_main
from spuraudit.modelio import ModelCard, build_audit_model, save_model
from spuraudit.multimodel import models_report
from spuraudit.project import Project, ProjectError
from spuraudit.training import load_tensors, train_classifier


def _second_model(project: Project, folder: Path) -> Path:
    """A fresh network of the demo's architecture and classes, trained one epoch with another seed."""
    _, card = project.load_model()
    twin = ModelCard(name="second-digitnet", architecture=card.architecture, class_names=list(card.class_names),
                     input_size=list(card.input_size), mean=list(card.mean), std=list(card.std), source="trained here")
    torch.manual_seed(1)
    model = build_audit_model(twin)
    table = project.table
    train = np.flatnonzero(table.split_mask("train"))[:1500]
    x = load_tensors([table.paths[int(i)] for i in train], tuple(card.input_size))
    train_classifier(model, x, torch.as_tensor(table.labels[train]), epochs=1, seed=1)
    return save_model(model, twin, folder / twin.name)


@pytest.fixture
def two_models(demo_copy, tmp_path):
    project = demo_copy
    second = _second_model(project, tmp_path / "more-models")
    project.add_model(second)
    project.extract(model_folder=second, num_workers=0)
    return project, second


def _ranking_by_hand(project: Project, spurious: dict[int, list[int]], split: str, k: int):
    """Per class: (Low, High) dataset indices from mean z-scores with train-split μ, σ (ddof 0)."""
    store = project.feature_store()
    table = project.table
    features = np.asarray(store.features, dtype=np.float64)
    sets = {}
    for c, ids in spurious.items():
        train = np.flatnonzero(table.split_mask("train") & (table.labels == c))
        rows = np.flatnonzero(table.split_mask(split) & (table.labels == c))
        mu, sd = features[np.ix_(train, ids)].mean(0), features[np.ix_(train, ids)].std(0)
        scores = ((features[np.ix_(rows, ids)] - mu) / sd).mean(1)
        order = rows[np.lexsort((rows, scores))]
        kc = min(k, len(rows) // 2)
        sets[c] = (order[:kc], order[len(order) - kc:])
    return sets


def test_project_keeps_its_models_and_old_files_still_open(two_models, tmp_path):
    project, second = two_models
    again = Project.open(project.folder)
    assert [p.resolve() for p in again.model_folders()] == [project.model_folder.resolve(), second.resolve()]
    assert again.feature_store(second) is not None
    data = json.loads((project.folder / "project.json").read_text())
    assert data["models"] == [str(second.resolve())]  # outside the home's models/: stored absolute
    # a file of an earlier version, without "models", opens with the one model and is saved without the key
    del data["models"]
    (project.folder / "project.json").write_text(json.dumps(data))
    old = Project.open(project.folder)
    assert old.models == [] and old.model_folders() == [old.model_folder]
    old.save()
    assert "models" not in json.loads((project.folder / "project.json").read_text())
    old.add_model(second)
    old.add_model(second)  # twice: no duplicate
    assert len(Project.open(project.folder).models) == 1
    assert old.remove_model(second) and Project.open(project.folder).models == []


def test_a_model_with_other_classes_is_refused_by_name(demo_copy, tmp_path):
    _, card = demo_copy.load_model()
    names = list(card.class_names)
    other = ModelCard(name="shuffled", architecture=card.architecture, class_names=names[1:] + names[:1],
                      input_size=list(card.input_size))
    folder = save_model(build_audit_model(other), other, tmp_path / "shuffled")
    before = (demo_copy.folder / "project.json").read_text()
    with pytest.raises(ProjectError, match=r"shuffled.*differ first at position 0.*same order"):
        demo_copy.add_model(folder)
    assert (demo_copy.folder / "project.json").read_text() == before  # nothing written
    with pytest.raises(ProjectError, match="no model.yaml"):
        demo_copy.add_model(tmp_path)


def test_effective_robustness_and_gap_correlations_match_numpy_and_scipy(two_models):
    project, second = two_models
    report = models_report(project, split="test", k=40, proxy=True)
    assert report.models == ["demo-digitnet", "second-digitnet"] and report.missing == []
    assert sorted(report.ranking_features) == list(range(project.table.num_classes))  # every class ranked
    split_k = 40
    sets = _ranking_by_hand(project, report.ranking_features, "test", split_k)
    gaps = []
    for folder, name in zip(project.model_folders(), report.models):
        correct = np.asarray(project.feature_store(folder).preds) == project.table.labels
        rows = report.per_class[report.per_class["model"] == name].set_index("class_index")
        model_gaps = []
        for c, (low, high) in sets.items():
            assert rows.loc[c, "k"] == len(high)
            assert rows.loc[c, "acc_low"] == pytest.approx(100 * correct[low].mean())
            assert rows.loc[c, "acc_high"] == pytest.approx(100 * correct[high].mean())
            model_gaps.append(100 * correct[high].mean() - 100 * correct[low].mean())
        assert rows["gap"].to_numpy() == pytest.approx(np.array(model_gaps))
        gaps.append(model_gaps)
    a, b = np.array(gaps)
    assert np.diag(report.pearson.to_numpy()) == pytest.approx(np.ones(2)) or len(a) < 3
    if len(a) >= 3 and a.std() > 0 and b.std() > 0:
        assert report.pearson.iat[0, 1] == pytest.approx(stats.pearsonr(a, b)[0])
        assert report.spearman.iat[0, 1] == pytest.approx(stats.spearmanr(a, b)[0])
        assert report.pearson.iat[1, 0] == report.pearson.iat[0, 1]
    else:  # too few classes for a correlation: reported as missing, not as a number
        assert math.isnan(report.pearson.iat[0, 1])


def test_models_cli_lists_and_reports_as_json(two_models, capsys):
    project, second = two_models
    assert cli_main(["models", "list", "--project", str(project.folder), "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)["models"]
    assert [m["role"] for m in listed] == ["reference", "added"] and all(m["extracted"] for m in listed)
    assert cli_main(["models", "report", "--project", str(project.folder), "--proxy", "-k", "40", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["models"] == ["demo-digitnet", "second-digitnet"]
    assert len(out["per_class"]) == 2 * project.table.num_classes and len(out["pearson"]) == 2
    assert cli_main(["models", "add", str(project.folder), "--project", str(project.folder)]) == 2
    assert "no model.yaml" in capsys.readouterr().err


def test_extraction_job_for_added_models(demo_copy, tmp_path):
    from spuraudit.multimodel import extract_models_job

    second = _second_model(demo_copy, tmp_path / "more-models")
    demo_copy.add_model(second)
    seen = []

    class Ctx:
        def progress(self, fraction, message=""):
            seen.append(fraction)

        def log(self, message):
            pass

    result = extract_models_job(Ctx(), str(demo_copy.folder), [str(second)])
    assert Path(result["stores"][0]).is_dir() and demo_copy.feature_store(second) is not None
    assert seen and max(seen) <= 1.0
