"""Small planted-cue projects for the mitigation tests: synthetic shapes (no downloaded data), one cue.

Class 0 ('ring') is a hollow square outline, class 1 ('plus') a cross, each drawn grey at a random
place with noise; a planted cue (`spuraudit.mitigate.planted`) sits on most of one class's training
images. Validation and test are group-balanced: the cue on half of each class. A DigitNet trained
briefly on the training split takes the cue as a shortcut. Import the builders from here.
"""

from __future__ import annotations

import numpy as np
import pytest

from spuraudit.mitigate.planted import CueSpec, cue_flags, label_planted_cue, plant, write_cue_project

CLASS_NAMES = ["ring", "plus"]
SIZES = {"train": 600, "val": 200, "test": 200}


def shapes(labels: np.ndarray, rng: np.random.Generator, size: int = 28) -> np.ndarray:
    """uint8 [N, size, size, 3] grey shapes: a ring (label 0) or a plus (label 1), 10-14 px wide, placed
    at random away from the corners, on a dark noisy background."""
    n = len(labels)
    out = rng.integers(0, 70, size=(n, size, size)).astype(np.int32)
    for i, label in enumerate(labels):
        w = int(rng.integers(10, 15))
        top, left = (int(v) for v in rng.integers(7, size - w - 6, size=2))
        level = int(rng.integers(70, 120))
        if label == 0:
            out[i, top:top + w, left:left + 2] = level
            out[i, top:top + w, left + w - 2:left + w] = level
            out[i, top:top + 2, left:left + w] = level
            out[i, top + w - 2:top + w, left:left + w] = level
        else:
            mid = w // 2
            out[i, top:top + w, left + mid - 1:left + mid + 1] = level
            out[i, top + mid - 1:top + mid + 1, left:left + w] = level
    grey = np.clip(out, 0, 255).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=-1)


def cue_dataset(spec: CueSpec, strength: float = 0.95, seed: int = 0, sizes=None, favoured: int = 0):
    """(images uint8 [N, 28, 28, 3], labels [N], split [N], cue flags [N], cue pixels bool [N, 28, 28])."""
    sizes = sizes or SIZES
    rng = np.random.default_rng(seed)
    split = np.concatenate([[name] * n for name, n in sizes.items()])
    labels = rng.integers(0, 2, size=len(split))
    flags = np.zeros(len(split), dtype=bool)
    for name in sizes:
        part = split == name
        flags[part] = cue_flags(labels[part], strength if name == "train" else 0.5, rng, favoured)
    images, pixels = plant(shapes(labels, rng), spec, flags)
    return images, labels, split, flags, pixels


def cue_project(home, spec: CueSpec, strength: float = 0.95, seed: int = 0, label_cue: bool = True, epochs: int = 5,
                favoured: int = 0):
    """A project on `cue_dataset` with a trained ERM model; the cue's feature labelled spurious for the
    favoured class when `label_cue`. Returns (project, flags, pixels)."""
    images, labels, split, flags, pixels = cue_dataset(spec, strength, seed, favoured=favoured)
    project = write_cue_project(home, images, labels, split, flags, CLASS_NAMES, seed=seed, epochs=epochs)
    if label_cue:
        label_planted_cue(project, flags, favoured)
    return project, flags, pixels


@pytest.fixture(scope="module")
def blue_corner_project(tmp_path_factory):
    """A blue 3-px square in the bottom-right corner on 95 % of the rings' training images."""
    return cue_project(tmp_path_factory.mktemp("blue-corner"), CueSpec("square", 3, (0, 90, 255), "bottom_right"))


def test_the_erm_model_leans_on_the_planted_cue(blue_corner_project):
    """The fixture is what the mitigation tests need: a worst group (plus with the cue) far below the rest."""
    from spuraudit.mitigate.evaluate import split_metrics

    project, flags, pixels = blue_corner_project
    preds = np.asarray(project.feature_store().preds)
    test = split_metrics(project.table, preds, "test")
    print(test["group_accuracy"])
    assert test["worst_group"].startswith("plus") and test["worst_group"].endswith("planted_cue=1")
    assert test["worst_group_accuracy"] < 60
    assert max(test["group_accuracy"].values()) > 90
    assert pixels[flags].reshape(flags.sum(), -1).sum(1).min() == 9  # the 3×3 square, on every flagged image
