"""Feature sensitivity of a project's model: corrupt a feature's region and classify again.

Two measurements (docs/methods.md §8), both run the model, so they are jobs rather than page work:

* per (class, feature): the accuracy drop under each corruption of `explain.corrupt`, on the class's
  k images where the feature fires most (where its soft NAM mask marks something), and the drop of
  the feature's own activation (what the feature encodes; accuracy saturates on a confident model);
* per class: Salient ImageNet's core accuracy (noise on the spurious features' masks), spurious
  accuracy (noise on the core features' masks) and the relative core sensitivity, over the class's
  images of the split.

The formulas are in `analysis.sensitivity`. Results are written as JSON under the project's cache, one
file per (model store, split), so the app shows the last run without recomputing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd
import torch

from .analysis import sensitivity as formulas
from .atomic import write_text_atomic
from .audit import Audit
from .explain.corrupt import CORRUPTIONS, NOISE_SIGMA, corrupt, feature_mask
from .project import Project
from .training import load_tensors

FEATURE_COLUMNS = (["class_index", "class", "feature", "label", "n", "acc_clean"] + [f"drop_{c}" for c in CORRUPTIONS]
                   + [f"act_drop_{c}" for c in CORRUPTIONS])
CLASS_COLUMNS = ["class_index", "class", "n", "core_features", "spurious_features", "acc_clean", "core_accuracy",
                 "spurious_accuracy", "rcs"]


@dataclass
class SensitivityReport:
    """features: a row per (class, feature), FEATURE_COLUMNS (points); classes: a row per class, CLASS_COLUMNS."""

    features: pd.DataFrame
    classes: pd.DataFrame
    params: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        def rows(frame: pd.DataFrame) -> list[dict]:
            return json.loads(frame.to_json(orient="records"))  # NaN -> null

        return {"params": self.params, "features": rows(self.features), "classes": rows(self.classes)}

    @classmethod
    def from_dict(cls, data: dict) -> "SensitivityReport":
        return cls(pd.DataFrame(data.get("features", []), columns=FEATURE_COLUMNS),
                   pd.DataFrame(data.get("classes", []), columns=CLASS_COLUMNS), dict(data.get("params", {})))


def _predict(model: torch.nn.Module, x: torch.Tensor, batch_size: int = 128) -> np.ndarray:
    return _run(model, x, None, batch_size)[0]


def _run(model: torch.nn.Module, x: torch.Tensor, feature: int | None, batch_size: int = 128
         ) -> tuple[np.ndarray, np.ndarray]:
    """(predictions [B], the activation r_d [B] of `feature`, or empty) in one pass per batch."""
    preds, acts = [], []
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            _, feats, logits = model.forward_all(x[i:i + batch_size])
            preds.append(logits.argmax(1).cpu().numpy())
            if feature is not None:
                acts.append(feats[:, feature].float().cpu().numpy())
    if not preds:
        return np.zeros(0, dtype=np.int64), np.zeros(0)
    return np.concatenate(preds), (np.concatenate(acts) if acts else np.zeros(0))


def _images(audit: Audit, rows: np.ndarray, input_size) -> torch.Tensor:
    paths = [audit.table.paths[int(r)] for r in rows]
    return load_tensors(paths, tuple(int(v) for v in input_size))


def _pair_labels(project: Project) -> dict[tuple[int, int], str]:
    if not project.labels_path.exists():
        return {}
    return {pair: label.status for pair, label in project.labels().labels().items()}


def _spread(rows: np.ndarray, limit: int) -> np.ndarray:
    """At most `limit` of the (ascending) rows, evenly spaced: a sample that needs no random state."""
    if len(rows) <= limit:
        return rows
    return rows[np.linspace(0, len(rows) - 1, limit).round().astype(np.int64)]


def measure_sensitivity(
    project: Project,
    classes: Sequence[int] | None = None,
    features: dict[int, Sequence[int]] | None = None,
    split: str | None = None,
    k: int = 50,
    max_images: int = 200,
    corruptions: Sequence[str] = tuple(CORRUPTIONS),
    sigma: float = NOISE_SIGMA,
    seed: int = 0,
    model_folder: str | Path | None = None,
    progress: Callable[[float, str], None] | None = None,
) -> SensitivityReport:
    """Per-feature drops and per-class core/spurious accuracy of one model of the project.

    classes: class indices (default: every class). features: class -> features to corrupt (default: the
    class's top features, the project's `top_k`, plus any it has labelled). split: default test when
    present. k: images per feature (its class's top-k by activation). max_images: per class for core and
    spurious accuracy (evenly spaced over the class when it has more). sigma: the noise's σ. seed: every
    random corruption draws from its own generator seeded with it.
    """
    say = progress or (lambda f, m: None)
    unknown = [c for c in corruptions if c not in CORRUPTIONS]
    if unknown:
        raise ValueError(f"unknown corruption '{unknown[0]}'; choose from {', '.join(CORRUPTIONS)}")
    audit = Audit.open(project, model_folder)
    model, card = project.load_model(model_folder)
    model.eval()
    split = split or audit.default_split()
    names = audit.class_names
    classes = list(range(len(names))) if classes is None else [int(c) for c in classes]
    bad = [c for c in classes if not 0 <= c < len(names)]
    if bad:
        raise ValueError(f"class {bad[0]} does not exist: the project has classes 0-{len(names) - 1}")
    labels = _pair_labels(project)
    top_k = int(project.settings.get("top_k", 5))
    feature_rows, class_rows = [], []
    for step, c in enumerate(classes):
        say(step / max(len(classes), 1), f"class {names[c]}")
        labelled = sorted(d for (cc, d) in labels if cc == c)
        chosen = list(features[c]) if features and c in features else list(
            dict.fromkeys([int(d) for d in audit.top_features(c, k=top_k, split=split)["feature"]] + labelled))
        for d in chosen:
            rows = np.sort(audit.feature_images(c, int(d), k=k, split=split, mode="labelled"))
            x = _images(audit, rows, card.input_size)
            preds, activation = _run(model, x, int(d))
            clean = preds == c
            mask = feature_mask(model, x, [int(d)])
            row = {"class_index": c, "class": names[c], "feature": int(d), "label": labels.get((c, int(d)), "unlabelled"),
                   "n": int(len(rows)), "acc_clean": formulas.points(clean)}
            for name in CORRUPTIONS:
                if name not in corruptions:
                    row[f"drop_{name}"] = row[f"act_drop_{name}"] = float("nan")
                    continue
                options = {"sigma": float(sigma)} if name == "noise" else {}
                preds_after, activation_after = _run(model, corrupt(name, x, mask, seed=seed, **options), int(d))
                row[f"drop_{name}"] = formulas.accuracy_drop(clean, preds_after == c)
                row[f"act_drop_{name}"] = formulas.activation_drop(activation, activation_after)
            feature_rows.append(row)
        core = sorted(d for (cc, d), s in labels.items() if cc == c and s == "core")
        spurious = sorted(d for (cc, d), s in labels.items() if cc == c and s == "spurious")
        if core or spurious:
            class_rows.append(core_spurious_accuracy(model, audit, c, core, spurious, split, max_images, sigma, seed,
                                                     card.input_size))
    say(1.0, "done")
    params = {"split": split, "k": int(k), "max_images": int(max_images), "sigma": float(sigma), "seed": int(seed),
              "corruptions": list(corruptions), "model": card.name, "store": audit.store.key}
    return SensitivityReport(pd.DataFrame(feature_rows, columns=FEATURE_COLUMNS),
                             pd.DataFrame(class_rows, columns=CLASS_COLUMNS), params)


def core_spurious_accuracy(model, audit: Audit, class_index: int, core: Sequence[int], spurious: Sequence[int],
                           split: str | None, max_images: int, sigma: float, seed: int, input_size) -> dict:
    """One class's clean, core and spurious accuracy (points) and RCS. A side without labelled features
    gets no noise, so its accuracy is the clean one."""
    rows = _spread(audit.class_rows(class_index, split), max_images)
    x = _images(audit, rows, input_size)
    clean = _predict(model, x) == class_index
    noisy_spurious = corrupt("noise", x, feature_mask(model, x, spurious), seed=seed, sigma=sigma)
    noisy_core = corrupt("noise", x, feature_mask(model, x, core), seed=seed, sigma=sigma)
    core_acc = formulas.points(_predict(model, noisy_spurious) == class_index)
    spurious_acc = formulas.points(_predict(model, noisy_core) == class_index)
    return {"class_index": class_index, "class": audit.class_names[class_index], "n": int(len(rows)),
            "core_features": list(map(int, core)), "spurious_features": list(map(int, spurious)),
            "acc_clean": formulas.points(clean), "core_accuracy": core_acc, "spurious_accuracy": spurious_acc,
            "rcs": formulas.relative_core_sensitivity(core_acc, spurious_acc)}


# ---- results on disk ---------------------------------------------------------------------------
def result_path(project: Project, model_folder: str | Path | None = None, split: str | None = None) -> Path:
    store = project.feature_store(model_folder)
    key = store.key if store is not None else "none"
    return project.cache_dir / "sensitivity" / f"{key}-{split or 'default'}.json"


def save_report(project: Project, report: SensitivityReport, model_folder: str | Path | None = None,
                split: str | None = None) -> Path:
    path = result_path(project, model_folder, split)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, json.dumps(report.to_dict(), indent=1))
    return path


def load_report(project: Project, model_folder: str | Path | None = None, split: str | None = None
                ) -> SensitivityReport | None:
    """The last saved run for this model and split, or None."""
    path = result_path(project, model_folder, split)
    if not path.is_file():
        return None
    try:
        return SensitivityReport.from_dict(json.loads(path.read_text()))
    except (ValueError, TypeError):
        return None  # a damaged result is simply run again


def sensitivity_job(ctx, project: str, model: str | None = None, split: str | None = None,
                    classes: list[int] | None = None, k: int = 50, max_images: int = 200,
                    sigma: float = NOISE_SIGMA, seed: int = 0) -> dict:
    """Job entry point: `measure_sensitivity` with JSON parameters, saved beside the project."""
    proj = Project.open(Path(project))
    report = measure_sensitivity(proj, classes=classes, split=split, k=k, max_images=max_images, sigma=sigma,
                                 seed=seed, model_folder=model, progress=ctx.progress)
    path = save_report(proj, report, model, split)
    ctx.log(f"sensitivity saved: {path}")
    return {"result": str(path), "features": len(report.features), "classes": len(report.classes)}
