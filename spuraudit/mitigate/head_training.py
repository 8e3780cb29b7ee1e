"""Training a linear head on precomputed features, early-stopped on a held-out spurious gap.

Shared by head tuning, error tuning and DFR's SGD variant. The stopping split's High/Low sets are
fixed up front (from the parent's spuriosity ranking), so each epoch costs one matrix product.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from ..analysis.metrics import accuracy, high_low_gap
from .base import Progress


@dataclass
class GapMonitor:
    """Scores a head on a held-out split: accuracy and the pooled spurious gap on fixed sets.

    features: float [n, D] of the split's images; labels: int [n];
    high / low: positions (into `features`) of the pooled High and Low sets.
    Accuracies and gaps are in points. The head runs in torch; the figures come from
    `spuraudit.analysis.metrics`, like every other reported accuracy and gap.
    """

    features: torch.Tensor
    labels: torch.Tensor
    high: torch.Tensor
    low: torch.Tensor

    @torch.no_grad()
    def __call__(self, head: nn.Linear) -> dict:
        correct = (head(self.features).argmax(1) == self.labels).cpu().numpy()
        acc_high, acc_low, gap = high_low_gap(correct, self.high.cpu().numpy(), self.low.cpu().numpy())
        return {"accuracy": accuracy(correct), "gap": gap, "acc_high": acc_high, "acc_low": acc_low}


@dataclass
class HeadFit:
    """Outcome of `fit_head`: the chosen head and how it was chosen.

    history: one row per epoch, epoch 0 being the starting head: epoch, loss (mean cross-entropy
      over the epoch, NaN at 0), and the monitor's accuracy/gap/acc_high/acc_low (points);
    chosen_epoch: the epoch whose head is returned; stop_reason: 'threshold' (first epoch with
      |gap| < threshold), 'min_gap' (threshold never reached: the epoch with the smallest |gap|) or
      'max_epochs' (no monitor: the last epoch). Only epochs within `max_accuracy_drop` of the starting
    head's monitored accuracy qualify for either choice.
    """

    head: nn.Linear
    history: list[dict] = field(default_factory=list)
    chosen_epoch: int = 0
    stop_reason: str = "max_epochs"
    steps_per_epoch: int = 1


def _abs_gap(row: dict) -> float:
    gap = row.get("gap", float("nan"))
    return abs(gap) if np.isfinite(gap) else float("inf")


def fit_head(
    head: nn.Linear,
    features: torch.Tensor,
    labels: torch.Tensor,
    *,
    lr: float,
    momentum: float,
    batch_size: int,
    max_epochs: int,
    min_steps: int = 0,
    weight_decay: float = 0.0,
    generator: torch.Generator,
    monitor: GapMonitor | None = None,
    gap_threshold: float = 5.0,
    max_accuracy_drop: float = float("inf"),
    frozen_rows: list[int] | None = None,
    progress: Progress | None = None,
) -> HeadFit:
    """SGD with cross-entropy on (features [N, D], labels [N]) from the given head (not modified).

    Runs at most `max_epochs` epochs, extended to at least `min_steps` SGD steps when the set is small
    (an epoch of a few hundred images is one or two steps, too few to move the head at a small rate);
    the monitor checks the head after every epoch.

    frozen_rows: classes whose weight row and bias stay exactly as they were (restored after each
    step, so weight decay and momentum cannot move them either).
    max_accuracy_drop: points of monitored accuracy an epoch may lose against the starting head and
    still be chosen. A head that predicts one class for everything has a gap of 0 (High and Low are
    equally wrong), so without this guard the gap criterion can select a collapsed head.
    """
    head = copy.deepcopy(head).float().train()
    original = {name: p.detach().clone() for name, p in head.named_parameters()}
    frozen = torch.as_tensor(sorted(frozen_rows or []), dtype=torch.long)
    opt = torch.optim.SGD(head.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    loss_fn = nn.CrossEntropyLoss()
    n = len(features)
    steps_per_epoch = max(1, -(-n // batch_size))
    max_epochs = max(max_epochs, -(-min_steps // steps_per_epoch))
    history = [{"epoch": 0, "loss": float("nan"), **(monitor(head) if monitor else {})}]
    # Only the best head so far is kept (smallest |gap|), not one per epoch: thousands of epochs of a
    # 1000-class head would otherwise hold gigabytes.
    best_state, best_epoch, best_gap = copy.deepcopy(head.state_dict()), 0, _abs_gap(history[0])
    chosen, reason = None, "max_epochs"

    def eligible(row: dict) -> bool:
        return row.get("accuracy", 0.0) >= history[0].get("accuracy", 0.0) - max_accuracy_drop

    if monitor is not None and abs(history[0]["gap"]) < gap_threshold:
        chosen, reason = 0, "threshold"  # nothing to fix: the starting head already passes
    for epoch in range(1, max_epochs + 1 if chosen is None else 1):
        order = torch.randperm(n, generator=generator)
        total = 0.0
        for start in range(0, n, batch_size):
            idx = order[start:start + batch_size]
            loss = loss_fn(head(features[idx]), labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if len(frozen):
                with torch.no_grad():
                    for name, p in head.named_parameters():
                        p[frozen] = original[name][frozen]
            total += loss.item() * len(idx)
        row = {"epoch": epoch, "loss": total / max(n, 1), **(monitor(head) if monitor else {})}
        history.append(row)
        if monitor is not None and eligible(row) and _abs_gap(row) < best_gap:
            best_state, best_epoch, best_gap = copy.deepcopy(head.state_dict()), epoch, _abs_gap(row)
        if progress and (epoch % max(1, max_epochs // 100) == 0 or epoch == max_epochs):
            gap = f", held-out gap {row['gap']:+.1f} pts" if monitor else ""
            progress(epoch / max_epochs, f"epoch {epoch}/{max_epochs}: loss {row['loss']:.3f}{gap}")
        if monitor is not None and abs(row["gap"]) < gap_threshold and eligible(row):
            chosen, reason = epoch, "threshold"
            break
    if chosen is None and monitor is not None:
        chosen, reason = best_epoch, "min_gap"
    elif chosen is None or chosen == len(history) - 1:
        chosen, best_state = len(history) - 1, head.state_dict()  # the last epoch: the head as it is
    head.load_state_dict(best_state)
    return HeadFit(head=head.eval(), history=history, chosen_epoch=chosen, stop_reason=reason,
                   steps_per_epoch=steps_per_epoch)


def curve_for_card(history: list[dict], chosen: int, keys=("gap", "accuracy", "loss"), max_points: int = 200) -> dict:
    """The training curve thinned to at most ~`max_points` epochs (the chosen and last ones always kept),
    as {'epoch': [...], key: [...]} lists with values rounded for a readable card."""
    epochs = np.unique(np.r_[np.linspace(0, len(history) - 1, min(max_points, len(history))).round().astype(int),
                             chosen, len(history) - 1])
    out = {"epoch": [int(e) for e in epochs]}
    for key in keys:
        if key in history[0]:
            out[key] = [None if not np.isfinite(history[e][key]) else round(float(history[e][key]), 4) for e in epochs]
    return out
