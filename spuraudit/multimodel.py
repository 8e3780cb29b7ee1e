"""Several user models of the same classes in one project: effective robustness and gap agreement.

The project's own model is the reference: its features and the project's spurious labels rank each
class's images (docs/methods.md §5) and fix the High and Low sets once; every model is then scored on
those same images from its own feature store (only its predictions are read). The numbers come from
`analysis.models`.

Without spurious labels a class has no ranking. `proxy=True` ranks such a class by one stand-in
feature instead: of the reference model's top features of the class, the one whose single-feature
triage gap is largest in size (the feature whose activation most changes accuracy). Reports name the
classes ranked that way, so a proxy ranking is never mistaken for a labelled one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from . import analysis
from .analysis import models as formulas
from .audit import Audit
from .modelio import ModelCard
from .modelio.card import CARD_FILE
from .project import Project, ProjectError

PER_CLASS_COLUMNS = ["model", "class_index", "class", "k", "acc_low", "acc_high", "gap"]


@dataclass
class ModelsReport:
    """per_class: model, class_index, class, k, acc_low, acc_high, gap (points), a row per (model, class);
    pearson, spearman: model × model correlation of the per-class gaps; models: display names in order;
    missing: names of models whose features are not extracted (left out); ranked_by: the reference model;
    ranking_features: class -> features that rank it; proxy_classes: classes ranked by a proxy feature."""

    per_class: pd.DataFrame
    pearson: pd.DataFrame
    spearman: pd.DataFrame
    models: list[str]
    split: str | None
    k: int
    ranked_by: str
    ranking_features: dict[int, list[int]] = field(default_factory=dict)
    proxy_classes: list[int] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "split": self.split, "k": self.k, "ranked_by": self.ranked_by, "models": self.models,
            "missing": self.missing, "ranking_features": {str(c): f for c, f in self.ranking_features.items()},
            "proxy_classes": self.proxy_classes,
            "pearson": self.pearson.astype(object).where(self.pearson.notna(), None).values.tolist(),
            "spearman": self.spearman.astype(object).where(self.spearman.notna(), None).values.tolist(),
            "per_class": self.per_class.astype(object).where(self.per_class.notna(), None).to_dict(orient="records"),
        }


def model_name(folder: str | Path) -> str:
    """The card's name of a model folder (the folder's name when the card cannot be read)."""
    card_file = Path(folder) / CARD_FILE
    try:
        return ModelCard.from_yaml(card_file.read_text(), str(card_file)).name
    except (OSError, ValueError):
        return Path(folder).name


def model_table(project: Project) -> pd.DataFrame:
    """The project's models: name, folder, role (reference / added) and whether features are extracted."""
    rows = []
    for i, folder in enumerate(project.model_folders()):
        try:
            extracted = project.feature_store(folder) is not None
        except (OSError, ValueError, StopIteration):
            extracted = False  # a model folder that was removed or damaged
        rows.append({"model": model_name(folder), "folder": str(folder),
                     "role": "reference" if i == 0 else "added", "extracted": extracted})
    return pd.DataFrame(rows, columns=["model", "folder", "role", "extracted"])


def proxy_features(audit: Audit, classes: list[int], split: str | None, top: int = 5) -> dict[int, list[int]]:
    """Per class, the one of its `top` features with the largest |triage gap| (see the module docstring)."""
    out = {}
    for c in classes:
        table = audit.top_features(c, k=top, split=split, triage_k=int(audit.project.settings.get("triage_k", 25)))
        gaps = table["triage_gap"].abs().fillna(-1.0).to_numpy()
        if len(table):
            out[c] = [int(table["feature"].iloc[int(np.argmax(gaps))])]
    return out


def models_report(project: Project, split: str | None = None, k: int | None = None,
                  folders: list[str | Path] | None = None, proxy: bool = False,
                  progress: Callable[[float, str], None] | None = None) -> ModelsReport:
    """Effective robustness and gap correlations of the project's models (or `folders`, same classes).

    split: default test when present; k: images per end of each ranking (default the project's gap_k),
    clamped to ⌊n_c / 2⌋. Models without extracted features are listed in `missing` and left out (all of
    them while the reference's are missing: a report without numbers); never computes features (extract
    them first: `Project.extract(folder)` or the extraction job).
    """
    say = progress or (lambda f, m: None)
    k = int(k or project.settings.get("gap_k", 100))
    folders = [Path(f) for f in (folders if folders is not None else project.model_folders())]
    if project.feature_store() is None:  # the reference's features rank the images: nothing to score yet
        missing = [model_name(f) for f in [project.model_folder, *folders] if project.feature_store(f) is None]
        empty = pd.DataFrame(columns=PER_CLASS_COLUMNS)
        return ModelsReport(per_class=empty, pearson=pd.DataFrame(), spearman=pd.DataFrame(), models=[], split=split,
                            k=k, ranked_by=model_name(project.model_folder), missing=list(dict.fromkeys(missing)))
    reference = Audit.open(project)
    split = split or reference.default_split()
    spurious = {c: list(f) for c, f in reference.spurious.items() if f}
    proxy_classes: list[int] = []
    if proxy:
        unlabelled = [c for c in range(len(reference.class_names)) if c not in spurious]
        found = proxy_features(reference, unlabelled, split)
        spurious.update(found)
        proxy_classes = sorted(found)
    ranked = Audit(project, reference.store, spurious=spurious)
    scores = ranked.spuriosity(split)
    sets = analysis.high_low_indices(scores, ranked.labels, k=k, classes=sorted(spurious))

    names, corrects, missing = [], [], []
    for i, folder in enumerate(folders):
        say(i / max(len(folders), 1), f"reading {model_name(folder)}")
        if folder.resolve() != project.model_folder.resolve():
            _check_same_classes(project, folder)
        store = project.feature_store(folder)
        if store is None:
            missing.append(model_name(folder))
            continue
        names.append(_unique(model_name(folder), names))
        corrects.append(np.asarray(store.preds) == ranked.labels)

    rows = []
    for name, correct in zip(names, corrects):
        acc_low, acc_high = formulas.low_high_accuracy(correct, sets.high, sets.low)
        for c in sorted(sets.high):
            rows.append({"model": name, "class_index": c, "class": ranked.class_names[c], "k": len(sets.high[c]),
                         "acc_low": acc_low[c], "acc_high": acc_high[c], "gap": acc_high[c] - acc_low[c]})
    gaps, _ = formulas.gap_matrix(corrects, sets.high, sets.low)
    pearson = pd.DataFrame(formulas.pairwise_correlation(gaps, "pearson"), index=names, columns=names)
    spearman = pd.DataFrame(formulas.pairwise_correlation(gaps, "spearman"), index=names, columns=names)
    say(1.0, "done")
    return ModelsReport(
        per_class=pd.DataFrame(rows, columns=PER_CLASS_COLUMNS),
        pearson=pearson, spearman=spearman, models=names, split=split, k=k, ranked_by=model_name(project.model_folder),
        ranking_features={c: list(map(int, f)) for c, f in sorted(spurious.items())}, proxy_classes=proxy_classes,
        missing=missing)


def _unique(name: str, taken: list[str]) -> str:
    candidate, i = name, 2
    while candidate in taken:
        candidate, i = f"{name} ({i})", i + 1
    return candidate


def _check_same_classes(project: Project, folder: Path) -> None:
    card_file = folder / CARD_FILE
    if not card_file.is_file():
        raise ProjectError(f"{folder}: no {CARD_FILE}; not a spuraudit model folder.")
    card = ModelCard.from_yaml(card_file.read_text(), str(card_file))
    if list(card.class_names) != list(project.table.class_names):
        raise ProjectError(f"model {card.name} does not have the project's classes in the same order; "
                           f"add it with `spuraudit models add` to see where they differ.")


def add_checkpoint(project: Project, checkpoint: str | Path, arch: str, name: str | None = None,
                   size: int | None = None, mean=None, std=None, trust_pickle: bool = False,
                   base: Path | None = None) -> Path:
    """Import a user's checkpoint of the project's classes as a model folder under models/ and add it.

    The same checks as creating a project (`create.inspect_model`): a checkpoint whose head does not
    have the project's number of classes, or that needs pickle trust not given, is refused and nothing is
    written. `size`, `mean`, `std`: None takes the architecture's defaults. Returns the model folder.
    """
    from . import paths
    from .create import architecture_defaults, check_name, inspect_model, parse_floats
    from .modelio import CheckpointError, UntrustedPickleError
    from .modelio.importing import import_model

    checkpoint = Path(str(checkpoint)).expanduser()
    if not checkpoint.is_file():
        raise CheckpointError(f"{checkpoint}: no such checkpoint file.")
    defaults = architecture_defaults(arch) if None in (size, mean, std) else {}
    size = int(defaults["input_size"] if size is None else size)
    mean_values = parse_floats(defaults["mean"] if mean is None else mean, "Normalisation mean")
    std_values = parse_floats(defaults["std"] if std is None else std, "Normalisation std")
    summary = inspect_model(checkpoint, arch, trust_pickle, None, size)
    if summary.refusal:
        raise (UntrustedPickleError if summary.needs_trust else CheckpointError)(summary.refusal)
    classes = list(project.table.class_names)
    if summary.num_classes is not None and summary.num_classes != len(classes):
        raise ProjectError(f"{checkpoint}: its head has {summary.num_classes} classes, the project "
                           f"'{project.name}' has {len(classes)}; every model of a project must have its classes.")
    models = paths.models_dir(base if base is not None else project.folder.parent.parent)
    folder_name = check_name(name or checkpoint.stem, "model name")
    folder, i = models / folder_name, 2
    while folder.exists():  # never overwrite another model
        folder, i = models / f"{folder_name}-{i}", i + 1
    card = ModelCard(name=folder.name, architecture=arch, class_names=classes, input_size=[size, size],
                     mean=mean_values, std=std_values, source="path",
                     options={"checkpoint": str(checkpoint.resolve())})
    import_model(checkpoint, card, folder, trust_pickle=trust_pickle)
    project.add_model(folder)
    return folder


def extract_models_job(ctx, project: str, models: list[str] | None = None) -> dict:
    """Job entry point: extract the features of each of the project's models that has none yet."""
    proj = Project.open(Path(project))
    folders = [Path(m) for m in models] if models else proj.model_folders()
    done = []
    for i, folder in enumerate(folders):
        share = 1.0 / max(len(folders), 1)
        ctx.log(f"extracting {model_name(folder)}")
        store = proj.extract(model_folder=folder,
                             progress=lambda f, m, i=i: ctx.progress(share * (i + f), f"{model_name(folder)}: {m}"))
        done.append(str(store.path))
    return {"stores": done}
