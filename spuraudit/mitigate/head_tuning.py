"""Low-spuriosity head tuning (Spuriosity Rankings; docs/methods.md §7.1).

The backbone stays frozen; the head, started from the model's own, is trained with SGD on the
pooled features of the k lowest-spuriosity training images of each ranked class — the images where
the class's spurious cues are weakest, so the head must lean on the rest. Training stops as soon as
the spurious gap on the validation split falls below a threshold; the card reports test figures, so
the split that stops training is never the split that reports.

Tuning on ranked classes only can shift the class priors towards them; by default the other classes'
head rows are frozen (`other_classes`). The alternative, a random sample of their training images,
is offered but re-teaches the bias on a biased dataset: a random image of another class usually lacks
the cue, so it tells the head "no cue, so another class" once more.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..modelio import load_model
from ..project import Project
from .base import SEED_OPTION, Mitigation, MitigationError, MitigationResult, Option, Progress, seed_everything, stage
from .data import (
    feature_rows,
    gap_sets,
    parent_spuriosity,
    parent_store,
    ranked_classes,
    require_split,
    spurious_labels,
)
from .head_training import GapMonitor, curve_for_card, fit_head

OTHER_CLASSES = ("balanced_sample", "freeze_rows", "none")

TRAINING_OPTIONS = (
    Option("lr", 1e-3, "SGD learning rate (paper: 1e-3).", minimum=0.0),
    Option("momentum", 0.9, "SGD momentum (paper: 0.9).", minimum=0.0, maximum=1.0),
    Option("batch_size", 128, "Images per SGD step (paper: 128).", minimum=1),
    Option("max_epochs", 20, "Most epochs over the tuning set (paper: 20); fewer when the gap stops it.",
           minimum=1),
    Option("min_steps", 2000, "Budget floor in SGD steps: a small tuning set gets more epochs, up to this many steps "
                             "(the paper's 20 epochs over ~100 images × 1000 ImageNet classes are ~15,000 steps; 20 "
                             "epochs over a few hundred images are a handful, too few to move the head at lr 1e-3). "
                             "The held-out gap still stops training early.", minimum=0),
    Option("weight_decay", 0.0, "L2 penalty on the head.", minimum=0.0),
    Option("gap_threshold", 5.0, "Stop at the first epoch whose |pooled spurious gap| on the validation split "
                                 "is below this many points (5 is the usual choice). When no epoch gets there, "
                                 "the epoch with the smallest |gap| is kept.", minimum=0.0),
    Option("max_accuracy_drop", 5.0, "An epoch can stop training only if its validation accuracy is at most this many "
                                     "points below the original head's: a head that predicts one class everywhere "
                                     "also has a zero gap. 100 turns the guard off (the paper has none).",
           minimum=0.0),
    Option("gap_k", 100, "Images per end of each class's validation ranking for the stopping gap (clamped to "
                         "half the class).", minimum=1),
)


class _FrozenBackboneTuning(Mitigation):
    """Shared by head tuning and error tuning: pick training rows, fit the head, early-stop on val."""

    head_only = True
    needs_labels = True

    def select(self, project: Project, store, scores: np.ndarray, train: np.ndarray, options: dict,
               rng: np.random.Generator) -> dict[int, np.ndarray]:
        """class -> dataset indices of its training images to tune on (the method's own choice)."""
        raise NotImplementedError

    def run(self, project: Project, parent_folder: Path, options: dict, progress: Progress) -> MitigationResult:
        gen = seed_everything(options["seed"])
        rng = np.random.default_rng(options["seed"])
        table = project.table
        labels = table.labels
        train = require_split(project, "train", "supplies the images to tune on")
        val = require_split(project, "val", "stops the training (the test split only reports)")
        store = parent_store(project, parent_folder, stage(progress, 0.0, 0.1))
        spurious = spurious_labels(project)
        if self.needs_labels and not spurious:
            raise MitigationError(
                f"{self.label} needs features labelled spurious: none is labelled in project '{project.name}' yet. "
                "Label them on the Features page (or import votes), then run it again."
            )
        scores = parent_spuriosity(project, store, spurious) if spurious else np.full(len(table), np.nan)
        chosen = {c: idx for c, idx in self.select(project, store, scores, train, options, rng).items() if len(idx)}
        if not chosen:
            raise MitigationError(f"{self.label}: no training image was selected; nothing to tune on.")

        rows = dict(chosen)
        frozen: list[int] = []
        others = [c for c in range(table.num_classes) if c not in chosen]
        per_class = int(round(np.mean([len(v) for v in chosen.values()])))
        if options["other_classes"] == "balanced_sample":
            for c in others:
                pool = np.flatnonzero(train & (labels == c))
                if len(pool):
                    rows[c] = np.sort(rng.choice(pool, size=min(per_class, len(pool)), replace=False))
        elif options["other_classes"] == "freeze_rows":
            frozen = others
        indices = np.concatenate([rows[c] for c in sorted(rows)])

        model, _ = load_model(parent_folder)
        x = feature_rows(store, indices)
        y = torch.as_tensor(labels[indices])
        monitor, val_sets = None, {}
        if spurious:
            high, low = gap_sets(scores, labels, val, options["gap_k"])
            if len(high):
                val_idx = np.flatnonzero(val)
                position = {int(i): p for p, i in enumerate(val_idx)}
                monitor = GapMonitor(
                    features=feature_rows(store, val_idx),
                    labels=torch.as_tensor(labels[val_idx]),
                    high=torch.as_tensor([position[int(i)] for i in high]),
                    low=torch.as_tensor([position[int(i)] for i in low]),
                )
                val_sets = {"val_high": len(high), "val_low": len(low)}
        fit = fit_head(
            model.head, x, y,
            lr=options["lr"], momentum=options["momentum"], batch_size=options["batch_size"],
            max_epochs=options["max_epochs"], min_steps=options["min_steps"], weight_decay=options["weight_decay"],
            generator=gen, monitor=monitor, gap_threshold=options["gap_threshold"],
            max_accuracy_drop=options["max_accuracy_drop"], frozen_rows=frozen,
            progress=stage(progress, 0.1, 1.0),
        )
        with torch.no_grad():
            model.head.weight.copy_(fit.head.weight)
            if model.head.bias is not None:
                model.head.bias.copy_(fit.head.bias)

        names = table.class_names
        metrics = {
            "tuning_images": {names[c]: int(len(rows[c])) for c in sorted(rows)},
            "other_classes_used": options["other_classes"] if others else "none needed (every class tuned)",
            "frozen_rows": [names[c] for c in frozen],
            "chosen_epoch": fit.chosen_epoch,
            "steps_per_epoch": fit.steps_per_epoch,
            "epochs_run": len(fit.history) - 1,
            "stop_reason": fit.stop_reason,
            "stop_split": "val" if monitor else None,
            "chosen_val_gap": round(fit.history[fit.chosen_epoch]["gap"], 2) if monitor else None,
            "chosen_val_accuracy": round(fit.history[fit.chosen_epoch]["accuracy"], 2) if monitor else None,
            # gap and accuracy on val (points), mean training loss; epoch 0 = the parent's head
            "curve": curve_for_card(fit.history, fit.chosen_epoch),
            **val_sets,
        }
        notes = [
            f"backbone frozen; head tuned on {len(indices)} training images "
            f"({', '.join(f'{names[c]}: {len(rows[c])}' for c in sorted(rows))})",
            (f"stopped on the val split's spurious gap (epoch {fit.chosen_epoch}, {fit.stop_reason}); "
             "figures reported on test") if monitor else
            f"no spurious labels: trained all {len(fit.history) - 1} epochs without early stopping",
        ]
        return MitigationResult(model=model, head_only=True, options=dict(options), metrics=metrics, notes=notes)


class HeadTuning(_FrozenBackboneTuning):
    name = "head_tuning"
    label = "Low-spuriosity head tuning"
    summary = (
        "Freeze the backbone and retrain the last layer, starting from the model's own, on the training images "
        "where each class's spurious features are weakest (its bottom-k by spuriosity). Stops once the spurious "
        "gap on the validation split is small. Fast: runs on the stored features."
    )
    options = (
        Option("k", 100, "At most this many lowest-spuriosity training images per ranked class (paper: 100; clamped "
                         "to half the class).", minimum=1),
        Option("other_classes", "freeze_rows",
               "Classes without spurious labels: 'freeze_rows' keeps their head rows fixed; 'balanced_sample' adds "
               "a random sample of their training images (as many per class as each ranked class gives), which on a "
               "biased dataset carries the bias back in (a random image of another class usually lacks the cue); "
               "'none' leaves them out and lets their rows move.", choices=OTHER_CLASSES),
        *TRAINING_OPTIONS,
        SEED_OPTION,
    )

    def select(self, project, store, scores, train, options, rng):
        labels = project.table.labels
        chosen = {}
        for c in ranked_classes(scores, labels, train):
            idx = np.flatnonzero(train & (labels == c) & ~np.isnan(scores))
            k = min(options["k"], len(idx) // 2)
            # Stable sort: ties keep dataset order, so the choice is reproducible.
            chosen[c] = np.sort(idx[np.argsort(scores[idx], kind="stable")[:k]])
        return chosen
