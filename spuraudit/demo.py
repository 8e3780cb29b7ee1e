"""Build the built-in demo end to end: ten planted-cue digit classes -> a small CNN trained here -> a project."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import torch

from . import paths
from .analysis.metrics import accuracy, group_accuracies, worst_group_accuracy
from .common import Progress
from .data.demo import CUE_COLUMN, DIGIT_NAMES, DemoSpec, bundled_digits, write_demo_digits
from .modelio import ModelCard, build_audit_model, save_model
from .project import Project
from .training import load_tensors, predict, train_classifier

DEMO_PROJECT = "demo"
DEMO_MODEL = "demo-digitnet"
DEMO_SIZES = (3000, 1000, 1000)  # train, val, test out of the 5,000 bundled digits
DEMO_SPEC = DemoSpec()
DEMO_EPOCHS = 6


def _stage(progress: Progress | None, start: float, end: float) -> Progress:
    """Map a stage's own 0..1 progress into its slice of the whole build."""

    def report(fraction: float, message: str) -> None:
        if progress:
            progress(start + (end - start) * min(max(fraction, 0.0), 1.0), message)

    return report


def build_demo(
    base: Path | None = None,
    seed: int = 0,
    epochs: int = DEMO_EPOCHS,
    spec: DemoSpec = DEMO_SPEC,
    sizes: tuple[int, int, int] = DEMO_SIZES,
    name: str = DEMO_PROJECT,
    progress: Progress | None = None,
) -> Project:
    """Generate the data, train the demo model, create the project and extract its features."""
    base = base or paths.home()
    t0 = time.perf_counter()
    torch.manual_seed(seed)
    project_folder = paths.projects_dir(base) / name
    data_folder = project_folder / "data"
    if data_folder.exists():
        shutil.rmtree(data_folder)

    images, digits = bundled_digits()
    table = write_demo_digits(
        data_folder, images, digits, sizes, spec, seed=seed, progress=_stage(progress, 0.0, 0.1)
    )

    card = ModelCard(
        name=f"{name}-digitnet" if name != DEMO_PROJECT else DEMO_MODEL,
        architecture="spuraudit:digitnet",
        class_names=list(DIGIT_NAMES),
        input_size=[28, 28],
        mean=[0.5, 0.5, 0.5],
        std=[0.5, 0.5, 0.5],
        source="trained here",
        options={"epochs": epochs, "seed": seed, "optimizer": "Adam lr 1e-3"},
    )
    model = build_audit_model(card)
    train = table.split_mask("train")
    report = _stage(progress, 0.1, 0.15)
    report(0.0, "loading training images")
    x_train = load_tensors([p for p, m in zip(table.paths, train) if m], (28, 28))
    y_train = torch.as_tensor(table.labels[train])
    train_classifier(model, x_train, y_train, epochs=epochs, seed=seed, progress=_stage(progress, 0.15, 0.85))

    test = table.split_mask("test")
    x_test = load_tensors([p for p, m in zip(table.paths, test) if m], (28, 28))
    correct = predict(model, x_test) == table.labels[test]
    cue = table.frame[CUE_COLUMN].to_numpy()[test]
    cells = 2 * table.labels[test] + cue  # group id of (class c, cue s) is 2c + s
    groups = {f"{DIGIT_NAMES[g // 2]} | {CUE_COLUMN}={g % 2}": round(acc, 1)
              for g, acc in group_accuracies(correct, cells).items()}
    card.metrics = {"test_accuracy": round(accuracy(correct), 1), "test_group_accuracy": groups,
                    "test_worst_group_accuracy": round(worst_group_accuracy(correct, cells), 1)}
    model_folder = save_model(model, card, paths.models_dir(base) / card.name)

    project = Project.create(name, table, model_folder, base=base)
    project.extract(progress=_stage(progress, 0.85, 1.0), num_workers=0)
    if progress:
        progress(1.0, f"demo ready in {time.perf_counter() - t0:.0f} s")
    return project
