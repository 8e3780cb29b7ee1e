"""Mitigation: new models that rely less on the spurious features an audit found (docs/methods.md §7).

One file per method over the small interface of `base.Mitigation`; `METHODS` maps a name to it, so a
string in a job or on the command line selects a method. `run_mitigation` does the common work:
run the method, compute the new model's features and predictions on the whole project, record
accuracy figures in its card, write `models/<parent>-<method>-<id>/` atomically, so the new model
can be audited and compared like any other.

    folder = run_mitigation(project, "head_tuning", {"k": 100, "seed": 0})
    tables = compare_models(project, [project.model_folder, folder])
"""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

from ..features import extract_features, store_key
from ..modelio import ModelCard, save_model, weights_hash
from ..modelio.card import CARD_FILE
from ..project import Project
from .base import Mitigation, MitigationError, MitigationResult, Option, Progress, stage
from .compare import ComparisonReport, compare_models
from .dfr import DeepFeatureReweighting
from .error_tuning import ErrorTuning
from .evaluate import card_metrics, split_metrics
from .head_tuning import HeadTuning
from .masking import mask_images, masks_from_heatmaps
from .masktune import MaskTune, masked_examples
from .selective import selective_classification, selective_from_stores
from .store import derive_head_store

METHODS: dict[str, Mitigation] = {
    m.name: m for m in (HeadTuning(), ErrorTuning(), DeepFeatureReweighting(), MaskTune())
}


def register_method(method):
    """Make a mitigation available to the Mitigate page, the CLI and jobs under its `name`. Takes a
    `Mitigation` instance or subclass (usable as a class decorator, then returns the class)."""
    instance = method() if isinstance(method, type) else method
    if not instance.name:
        raise ValueError(f"{type(instance).__qualname__} needs a `name` to be registered")
    METHODS[instance.name] = instance
    return method


def get_method(name: str) -> Mitigation:
    if name not in METHODS:
        raise MitigationError(f"unknown mitigation method '{name}'; known: {sorted(METHODS)}.")
    return METHODS[name]


def new_model_folder(parent_folder: Path, method: str) -> Path:
    """`<models>/<parent>-<method>-<6 hex>` beside the parent; the suffix keeps reruns apart."""
    return parent_folder.parent / f"{parent_folder.name}-{method.replace('_', '-')}-{uuid.uuid4().hex[:6]}"


def run_mitigation(
    project: Project,
    method: str,
    options: dict | None = None,
    progress: Progress | None = None,
    out_folder: str | Path | None = None,
    parent_folder: str | Path | None = None,
) -> Path:
    """Run `method` on the project's model (or `parent_folder`) and return the new model folder.

    The folder appears complete or not at all: features are computed and the metrics known before
    `save_model` writes it atomically, so a run that fails or is killed leaves no folder that looks
    finished. The card records parent, method, options (seed included), the method's diagnostics and
    accuracy figures (points) on val and test; the features are in the project's store on return.
    """
    mitigation = get_method(method)
    resolved = mitigation.resolve_options(options)
    parent_folder = Path(parent_folder or project.model_folder)
    _, parent_card = project.load_model(parent_folder)
    folder = Path(out_folder) if out_folder else new_model_folder(parent_folder, mitigation.name)
    if (folder / CARD_FILE).exists():
        raise MitigationError(f"{folder} already holds a model; choose another folder.")

    result = mitigation.run(project, parent_folder, resolved, stage(progress, 0.0, 0.8))
    model = result.model.cpu().eval()
    report = stage(progress, 0.8, 0.98)
    # A store this run adds is removed again if the run fails before its model folder exists.
    new_store = project.folder / "features" / store_key(weights_hash(model), project.table, parent_card.input_size)
    store_was_there = new_store.exists()
    try:
        return _finish(project, mitigation, result, model, folder, parent_folder, parent_card, report, progress)
    except BaseException:
        if not store_was_there and not (folder / CARD_FILE).exists():
            shutil.rmtree(new_store, ignore_errors=True)
        raise


def _finish(project, mitigation, result, model, folder, parent_folder, parent_card, report, progress) -> Path:
    """The new model's features, card and folder (the second half of `run_mitigation`)."""
    if result.head_only:
        from .data import parent_store

        report(0.0, "new head on the stored features")
        store = derive_head_store(project, parent_store(project, parent_folder), model, parent_card.input_size)
    else:
        store = extract_features(model, project.table, project.folder / "features", parent_card.input_size,
                                 progress=report, model_hash=weights_hash(model))

    card = ModelCard(
        name=folder.name,
        architecture=parent_card.architecture,
        class_names=list(parent_card.class_names),
        input_size=list(parent_card.input_size),
        mean=list(parent_card.mean),
        std=list(parent_card.std),
        source="mitigation",
        parent=parent_card.name,
        method=mitigation.name,
        options=result.options,
        metrics={**card_metrics(project.table, store.preds), "diagnostics": result.metrics},
        notes=[f"{mitigation.label} of {parent_card.name} ({parent_folder}) on project '{project.name}'",
               *result.notes],
    )
    if progress:
        progress(0.98, "writing the model folder")
    save_model(model, card, folder)
    project.extract(folder)  # finds the store written above; records the weights hash beside the weights
    if progress:
        progress(1.0, f"done: {folder.name}")
    return folder


def list_mitigated_models(project: Project, parent_folder: str | Path | None = None) -> list[tuple[Path, ModelCard]]:
    """(folder, card) of every mitigated model of the parent (default: the project's model), newest first.

    Looks in the parent's own models folder, where `run_mitigation` writes by default.
    """
    parent_folder = Path(parent_folder or project.model_folder)
    parent_name = ModelCard.from_yaml((parent_folder / CARD_FILE).read_text()).name
    found = []
    for card_path in parent_folder.parent.glob(f"*/{CARD_FILE}"):
        if card_path.parent.name.startswith("."):  # a save in progress (or killed mid-save): not a model
            continue
        try:
            card = ModelCard.from_yaml(card_path.read_text(), str(card_path))
        except Exception:  # a folder someone broke by hand must not hide the others
            continue
        if card.source == "mitigation" and card.parent == parent_name:
            found.append((card_path.parent, card))
    return sorted(found, key=lambda fc: fc[1].created, reverse=True)


__all__ = [
    "METHODS",
    "register_method",
    "ComparisonReport",
    "Mitigation",
    "MitigationError",
    "MitigationResult",
    "Option",
    "compare_models",
    "derive_head_store",
    "get_method",
    "list_mitigated_models",
    "mask_images",
    "masked_examples",
    "masks_from_heatmaps",
    "new_model_folder",
    "run_mitigation",
    "selective_classification",
    "selective_from_stores",
    "split_metrics",
]
