"""Scoring a model being fine-tuned on the validation split, to keep its best checkpoint.

MaskTune's one epoch is scored at a few points along the way: each checkpoint is copied, its batch-norm
statistics re-estimated on a sample of whole training images (as the finished model's will be), and its
predictions on val scored by the worst group (real groups when the dataset has group columns) or, without
groups, by accuracy. Only the best copy is kept in memory.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np
import torch

from ..training import recalibrate_batchnorm
from .guard import held_out_figures


def predict_batches(model, batches, n: int, device) -> np.ndarray:
    """Predicted class int [n] of `model` (put in eval mode) over (images, positions) batches."""
    preds = np.empty(n, dtype=np.int64)
    model.eval()
    with torch.no_grad():
        for x, pos in batches:
            preds[np.asarray(pos)] = model(x.to(device)).argmax(1).cpu().numpy()
    return preds


@dataclass
class CheckpointScorer:
    """val_batches / recal_batches: callables returning fresh iterators of (images [B, 3, H, W], positions [B])
    over the val images and over the training sample that re-estimates batch norm (None: not re-estimated); labels, group_ids: int [n_val]."""

    val_batches: object
    recal_batches: object
    labels: np.ndarray
    group_ids: np.ndarray | None
    device: torch.device | str = "cpu"
    history: list[dict] = field(default_factory=list)
    best_state: dict | None = None
    best_score: float = -np.inf

    best_fraction: float | None = None

    def reset(self) -> None:
        """Forget earlier checkpoints (a new epoch starts)."""
        self.history, self.best_state, self.best_score, self.best_fraction = [], None, -np.inf, None

    def predictions(self, model) -> np.ndarray:
        return predict_batches(model, self.val_batches(), len(self.labels), self.device)

    def __call__(self, model, fraction: float) -> dict:
        """Score a copy of `model` (left untouched) at `fraction` of the epoch; keep it if it is the best so far."""
        trial = copy.deepcopy(model)
        if self.recal_batches is not None:  # None: the statistics stay as training left them
            recalibrate_batchnorm(trial, (x for x, _ in self.recal_batches()), self.device)
        figures = held_out_figures(self.predictions(trial), self.labels, self.group_ids)
        score = figures["worst_group"] if np.isfinite(figures["worst_group"]) else figures["accuracy"]
        row = {"epoch_fraction": round(fraction, 3), "val_accuracy": round(figures["accuracy"], 2),
               "val_worst_group": round(figures["worst_group"], 2) if np.isfinite(figures["worst_group"]) else None}
        self.history.append(row)
        if score >= self.best_score:  # ties: the later checkpoint, which has trained more
            self.best_score, self.best_state = score, {k: v.detach().cpu().clone()
                                                       for k, v in trial.state_dict().items()}
            self.best_fraction = row["epoch_fraction"]
        return row
