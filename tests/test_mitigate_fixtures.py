"""Fixtures of the mitigation tests: a private copy of the demo with its cue labelled spurious, and a small
two-class biased-digits project (the MaskTune protocol).

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


def biased_digits_project(home: Path, sizes=(3000, 1000, 1000), epochs: int = 6, seed: int = 0,
                          name: str = "biased-digits"):
    """The two-class biased-digits protocol (docs/methods.md §7.3) as a project in `home`, with the square
    labelled spurious for class 0.

    Digits 0-4 against 5-9 from the bundled digits, the square on 98 % of class 0's training images and 2 % of
    class 1's, on half of each class in val and test; a DigitNet trained with Adam as the demo's model is: the
    demo as it was before it had ten classes. Its card holds the test figures a mitigated model's card gets.
    Returns (project, cue feature index).
    """
    import torch

    from spuraudit import paths
    from spuraudit.data.demo import CLASS_NAMES, CUE_COLUMN, BiasSpec, bundled_digits, write_biased_digits
    from spuraudit.mitigate.evaluate import card_metrics
    from spuraudit.mitigate.planted import label_planted_cue
    from spuraudit.modelio import ModelCard, build_audit_model, save_model
    from spuraudit.project import Project
    from spuraudit.training import load_tensors, predict, train_classifier

    images, digits = bundled_digits()
    table = write_biased_digits(paths.projects_dir(home) / name / "data", images, digits, sizes,
                                BiasSpec(cue_rate_class0=0.98, cue_rate_class1=0.02), seed=seed)
    card = ModelCard(name=f"{name}-digitnet", architecture="spuraudit:digitnet", class_names=list(CLASS_NAMES),
                     input_size=[28, 28], mean=[0.5] * 3, std=[0.5] * 3, source="trained here",
                     options={"epochs": epochs, "seed": seed, "optimizer": "Adam lr 1e-3"})
    torch.manual_seed(seed)
    model = build_audit_model(card)
    train = table.split_mask("train")
    x = load_tensors([p for p, m in zip(table.paths, train) if m], (28, 28))
    train_classifier(model, x, torch.as_tensor(table.labels[train]), epochs=epochs, seed=seed)
    card.metrics = card_metrics(table, predict(model, load_tensors(list(table.paths), (28, 28))))
    project = Project.create(name, table, save_model(model, card, paths.models_dir(home) / card.name), base=home)
    project.extract(num_workers=0)
    feature = label_planted_cue(project, table.frame[CUE_COLUMN].to_numpy().astype(bool), 0)
    return project, feature


@pytest.fixture(scope="module")
def biased_digits(tmp_path_factory):
    """(project, cue feature): two-class biased digits whose ERM model leans on the square."""
    return biased_digits_project(tmp_path_factory.mktemp("biased-digits-home"))


@pytest.fixture(scope="module")
def labelled_demo(demo_home, tmp_path_factory):
    """(project, cue feature): the demo in a private home, the square feature labelled spurious."""
    return private_demo(demo_home, tmp_path_factory.mktemp("mitigate-home"))


def test_private_demo_is_isolated(labelled_demo, demo_project):
    project, feature = labelled_demo
    assert project.spurious_features() == {CUE_CLASS: [feature]}
    assert project.model_folder.parent != demo_project.model_folder.parent
    assert project.labels_path != demo_project.labels_path  # labels written here never reach the shared demo
