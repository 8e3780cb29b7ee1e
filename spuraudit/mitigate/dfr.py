"""Deep feature reweighting (DFR; docs/methods.md §7.1): refit the last layer on group-balanced held-out data.

The backbone stays frozen. The head is refitted on the VALIDATION split's features, downsampled so every
group (class × attribute cell) has the same number of images, and the card reports test figures. Groups
come from the dataset's group columns (e.g. the demo's `square`); without them DFR has nothing to balance
and refuses.

The default fit is L1-penalised logistic regression on standardised features (as the DFR paper), averaged
over several balanced subsamples (each subsample drops different images of the large groups), with the
penalty chosen on one half of the validation split by worst-group accuracy on the other half. The
alternative fit is the SGD head of head tuning, started from the model's own head.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..analysis.metrics import worst_group_accuracy
from ..logistic import fit_logistic_head
from ..modelio import load_model
from ..project import Project
from .base import SEED_OPTION, Mitigation, MitigationError, MitigationResult, Option, Progress, seed_everything, stage
from .data import feature_rows, parent_store, require_split
from .head_training import fit_head

C_GRID = (1.0, 0.3, 0.1, 0.03, 0.01)


def balanced_sample(groups: np.ndarray, rng: np.random.Generator, per_group: int | None = None) -> np.ndarray:
    """Positions with the same number of rows from every group present: int [G * per_group], sorted.

    groups: int [n] group id per row; per_group defaults to the smallest group's size.
    """
    present = np.unique(groups)
    sizes = {g: int(np.sum(groups == g)) for g in present}
    per_group = min(sizes.values()) if per_group is None else min(per_group, *sizes.values())
    picks = [rng.choice(np.flatnonzero(groups == g), size=per_group, replace=False) for g in present]
    return np.sort(np.concatenate(picks))


def fit_logistic(x: torch.Tensor, y: torch.Tensor, num_classes: int, C: float) -> tuple[torch.Tensor, torch.Tensor]:
    """DFR's head fit: L1-penalised multinomial logistic regression (`spuraudit.logistic`), as torch tensors.

    x: float [n, D] raw features; y: int [n]. Returns W [num_classes, D], b [num_classes] for the raw
    features.
    """
    w, b = fit_logistic_head(x.numpy(), y.numpy(), num_classes, C, penalty="l1")
    return torch.from_numpy(w), torch.from_numpy(b)


class DeepFeatureReweighting(Mitigation):
    name = "dfr"
    label = "Deep feature reweighting (DFR)"
    summary = (
        "Freeze the backbone and refit the last layer on a group-balanced sample of the validation split "
        "(needs group columns, e.g. background or the demo's square). Reports on test. Fast: runs on the stored "
        "features."
    )
    head_only = True
    options = (
        Option("fit", "logistic", "'logistic': L1 logistic regression on standardised features (DFR); 'sgd_head': "
                                  "the SGD head of head tuning, from the model's own head.",
               choices=("logistic", "sgd_head")),
        Option("C", 0.0, "Inverse L1 strength of the logistic fit; 0 = choose from "
                         f"{list(C_GRID)} by worst-group accuracy on half of the validation split.", minimum=0.0),
        Option("n_subsamples", 10, "Balanced subsamples to fit and average (each drops different images of the "
                                   "larger groups).", minimum=1),
        Option("lr", 1e-3, "SGD learning rate ('sgd_head' only).", minimum=0.0),
        Option("momentum", 0.9, "SGD momentum ('sgd_head' only).", minimum=0.0, maximum=1.0),
        Option("batch_size", 128, "Images per SGD step ('sgd_head' only).", minimum=1),
        Option("epochs", 20, "Epochs per subsample ('sgd_head' only; no early stopping: there is no second "
                             "held-out split to stop on).", minimum=1),
        SEED_OPTION,
    )

    def run(self, project: Project, parent_folder: Path, options: dict, progress: Progress) -> MitigationResult:
        gen = seed_everything(options["seed"])
        rng = np.random.default_rng(options["seed"])
        table = project.table
        if not table.group_columns:
            raise MitigationError(
                f"DFR needs group labels, and project '{project.name}' has no group columns. Add an attribute "
                "column (e.g. background, or a cue flag) to the dataset's CSV manifest and name it as a group "
                "column, or use head tuning, which needs only spurious feature labels."
            )
        val = require_split(project, "val", "DFR refits the head on")
        store = parent_store(project, parent_folder, stage(progress, 0.0, 0.1))
        group_ids, group_names = table.group_ids()
        val_idx = np.flatnonzero(val)
        groups = group_ids[val_idx]
        train_groups = set(np.unique(group_ids[table.split_mask(table.fit_split())]).tolist())
        missing = sorted(train_groups - set(groups.tolist()))
        x = feature_rows(store, val_idx)
        y = torch.as_tensor(table.labels[val_idx])
        model, _ = load_model(parent_folder)
        num_classes = model.num_classes
        if len(np.unique(y.numpy())) < num_classes:
            raise MitigationError("DFR: the validation split lacks images of some class; it cannot refit the head.")
        metrics: dict = {
            "fit_split": "val",
            "groups_balanced": [group_names[g] for g in np.unique(groups)],
            "per_group_in_sample": int(min(np.sum(groups == g) for g in np.unique(groups))),
            "missing_groups_in_val": [group_names[g] for g in missing],
        }
        report = stage(progress, 0.1, 1.0)
        if options["fit"] == "logistic":
            C = options["C"]
            if C <= 0:
                C, scores = self._choose_C(x, y, groups, num_classes, options["n_subsamples"], rng, report)
                metrics["C_worst_group_on_half_val"] = {str(c): round(s, 2) for c, s in scores.items()}
            weights, biases = [], []
            for r in range(options["n_subsamples"]):
                pick = balanced_sample(groups, rng)
                w, b = fit_logistic(x[pick], y[pick], num_classes, C)
                weights.append(w)
                biases.append(b)
                report(0.5 + 0.5 * (r + 1) / options["n_subsamples"], f"fitted subsample {r + 1}")
            head_w, head_b = torch.stack(weights).mean(0), torch.stack(biases).mean(0)
            metrics["C"] = C
        else:
            head_ws, head_bs = [], []
            for r in range(options["n_subsamples"]):
                pick = balanced_sample(groups, rng)
                fit = fit_head(model.head, x[pick], y[pick], lr=options["lr"], momentum=options["momentum"],
                               batch_size=options["batch_size"], max_epochs=options["epochs"], generator=gen)
                head_ws.append(fit.head.weight.detach())
                head_bs.append(fit.head.bias.detach())
                report((r + 1) / options["n_subsamples"], f"fitted subsample {r + 1}")
            head_w, head_b = torch.stack(head_ws).mean(0), torch.stack(head_bs).mean(0)
        with torch.no_grad():
            model.head.weight.copy_(head_w)
            if model.head.bias is not None:
                model.head.bias.copy_(head_b)
        notes = ["backbone frozen; head refitted on group-balanced validation images, so validation figures are "
                 "in-sample and test figures are the ones to read"]
        if missing:
            notes.append(f"groups of the training split absent from validation: {metrics['missing_groups_in_val']}")
        return MitigationResult(model=model, head_only=True, options=dict(options), metrics=metrics, notes=notes)

    @staticmethod
    def _choose_C(x, y, groups, num_classes, n_subsamples, rng, report):
        """Fit on a balanced sample of one half of val, score worst-group accuracy on the other half."""
        order = rng.permutation(len(y))
        a, b = np.sort(order[: len(order) // 2]), np.sort(order[len(order) // 2:])
        scores = {}
        for i, C in enumerate(C_GRID):
            ws, bs = [], []
            for _ in range(max(1, n_subsamples // 2)):
                pick = a[balanced_sample(groups[a], rng)]
                w, bias = fit_logistic(x[pick], y[pick], num_classes, C)
                ws.append(w)
                bs.append(bias)
            w, bias = torch.stack(ws).mean(0), torch.stack(bs).mean(0)
            scores[C] = worst_group_accuracy((x[b] @ w.T + bias).argmax(1).numpy() == y[b].numpy(), groups[b])
            report(0.5 * (i + 1) / len(C_GRID), f"penalty C={C}: worst group {scores[C]:.1f} % on half of val")
        best = max(scores, key=lambda c: (scores[c], -c))  # ties: the stronger penalty
        return best, scores
