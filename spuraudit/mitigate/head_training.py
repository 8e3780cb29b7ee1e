"""Training a linear head on precomputed features, early-stopped on held-out spurious gaps.

Shared by head tuning, error tuning and DFR's SGD variant. The stopping split's High/Low sets are
fixed up front (from the parent's spuriosity ranking), so each epoch costs one matrix product.

Stopping looks at every ranked class's own gap (and at the gap a class's cue opens in another class,
a collision), as the largest or the mean ABSOLUTE gap: a signed pool over classes lets a +90 gap
cancel a −90 one and call an untouched head "fixed". An epoch may only be chosen if no class and no
monitored group lost more than the allowed accuracy, so a head that predicts one class everywhere
(whose gaps are all 0) is never chosen, and `HeadFit.helped` says plainly whether the chosen head is
better than the starting one.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from ..analysis.metrics import high_low_gap
from .base import Progress
from .guard import guard_failure, held_out_figures

GAP_STATISTICS = ("max", "mean")


@dataclass
class GapMonitor:
    """Scores a head on a held-out split: accuracies and spurious gaps on fixed sets.

    features: float [n, D] of the split's images; labels: int [n];
    high / low: positions (into `features`) of the pooled High and Low sets;
    sets: name -> (high positions, low positions), one entry per ranked class (and per collision:
      another class's images ranked by a class's cue); without it the pooled sets are the only one;
    group_ids: int [n] real group of each image (class × attribute), when the dataset has groups.
    Accuracies and gaps are in points; the figures come from `spuraudit.analysis.metrics`.
    """

    features: torch.Tensor
    labels: torch.Tensor
    high: torch.Tensor
    low: torch.Tensor
    sets: dict | None = None
    group_ids: np.ndarray | None = None
    statistic: str = "max"

    @torch.no_grad()
    def __call__(self, head: nn.Linear) -> dict:
        preds = head(self.features).argmax(1).cpu().numpy()
        labels = self.labels.cpu().numpy()
        correct = preds == labels
        acc_high, acc_low, gap = high_low_gap(correct, self.high.cpu().numpy(), self.low.cpu().numpy())
        sets = self.sets or {"pooled": (self.high, self.low)}
        gaps, set_accuracy = {}, []
        for name, (hi, lo) in sets.items():
            a_hi, a_lo, g = high_low_gap(correct, np.asarray(hi), np.asarray(lo))
            gaps[str(name)] = g
            set_accuracy += [a for a in (a_hi, a_lo) if np.isfinite(a)]
        finite = [abs(g) for g in gaps.values() if np.isfinite(g)]
        stop_gap = (max(finite) if self.statistic == "max" else float(np.mean(finite))) if finite else float("nan")
        figures = held_out_figures(preds, labels, self.group_ids)  # what the guard compares
        if not np.isfinite(figures["worst_group"]):  # no real groups: the High and Low sets stand in
            figures["worst_group"] = min(set_accuracy) if set_accuracy else float("nan")
        return {**figures, "gap": gap, "acc_high": acc_high, "acc_low": acc_low, "stop_gap": stop_gap,
                "class_gaps": gaps}


@dataclass
class HeadFit:
    """Outcome of `fit_head`: the chosen head and how it was chosen.

    history: one row per epoch, epoch 0 being the starting head: epoch, loss (mean cross-entropy
      over the epoch, NaN at 0), and the monitor's figures (points);
    chosen_epoch: the epoch whose head is returned; stop_reason: 'threshold' (first eligible epoch
      whose stopping gap is below the threshold), 'min_gap' (threshold never reached: the eligible
      epoch with the smallest stopping gap) or 'max_epochs' (no monitor: the last epoch);
    helped: with a monitor, whether the chosen head is a real change for the better (a later epoch,
      a smaller stopping gap, no monitored group worse); verdict: one line saying why or why not.
    """

    head: nn.Linear
    history: list[dict] = field(default_factory=list)
    chosen_epoch: int = 0
    stop_reason: str = "max_epochs"
    steps_per_epoch: int = 1
    helped: bool | None = None
    verdict: str = ""


def _stop_gap(row: dict) -> float:
    gap = row.get("stop_gap", row.get("gap", float("nan")))
    return abs(gap) if np.isfinite(gap) else float("inf")


def feature_scaled_lr(features: torch.Tensor) -> float:
    """1 / mean squared norm of the rows of `features` [N, D]: an SGD rate whose first steps move the logits
    by a similar amount whatever the backbone's feature scale (about 1e-3 for ImageNet ResNet-50 features)."""
    mean_sq = float(features.float().pow(2).sum(1).mean()) if len(features) else 0.0
    return 1.0 / mean_sq if mean_sq > 0 else 1e-3


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
    max_class_drop: float = float("inf"),
    frozen_rows: list[int] | None = None,
    progress: Progress | None = None,
) -> HeadFit:
    """SGD with cross-entropy on (features [N, D], labels [N]) from the given head (not modified).

    Runs at most `max_epochs` epochs, extended to at least `min_steps` SGD steps when the set is small
    (an epoch of a few hundred images is one or two steps, too few to move the head at a small rate);
    the monitor checks the head after every epoch.

    frozen_rows: classes whose weight row and bias stay exactly as they were (restored after each
    step, so weight decay and momentum cannot move them either). In a softmax this does not freeze
    those classes' predictions: they depend on the other rows too.
    max_accuracy_drop / max_class_drop: see `guard_failure`; an epoch failing the guard is never chosen.
    """
    head = copy.deepcopy(head).float().train()
    original = {name: p.detach().clone() for name, p in head.named_parameters()}
    frozen = torch.as_tensor(sorted(frozen_rows or []), dtype=torch.long)
    opt = torch.optim.SGD(head.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    loss_fn = nn.CrossEntropyLoss()
    n = len(features)
    steps_per_epoch = max(1, -(-n // batch_size))
    max_epochs = max(max_epochs, -(-min_steps // steps_per_epoch))
    total_steps = max_epochs * steps_per_epoch
    history = [{"epoch": 0, "loss": float("nan"), **(monitor(head) if monitor else {})}]
    start = history[0]
    # Only the best head so far is kept (smallest stopping gap), not one per epoch: thousands of epochs
    # of a 1000-class head would otherwise hold gigabytes.
    best_state, best_epoch, best_gap = copy.deepcopy(head.state_dict()), 0, _stop_gap(start)
    chosen, reason = None, "max_epochs"
    refusals: dict[str, int] = {}

    def eligible(row: dict) -> bool:
        why = guard_failure(row, start, max_accuracy_drop, max_class_drop)
        if why:
            key = why.split(" fell")[0]
            refusals[key] = refusals.get(key, 0) + 1
        return why is None

    if monitor is not None and _stop_gap(start) < gap_threshold:
        chosen, reason = 0, "threshold"  # nothing to fix: the starting head already passes
    for epoch in range(1, max_epochs + 1 if chosen is None else 1):
        order = torch.randperm(n, generator=generator)
        total = 0.0
        for begin in range(0, n, batch_size):
            idx = order[begin:begin + batch_size]
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
        ok = monitor is not None and eligible(row)
        if ok and _stop_gap(row) < best_gap:
            best_state, best_epoch, best_gap = copy.deepcopy(head.state_dict()), epoch, _stop_gap(row)
        if progress and (epoch % max(1, max_epochs // 100) == 0 or epoch == max_epochs):
            gap = f", held-out gap {row['stop_gap']:.1f} pts" if monitor else ""
            # Steps, not epochs, are the budget a small tuning set is measured in.
            progress(epoch / max_epochs, f"SGD step {epoch * steps_per_epoch}/{total_steps} "
                                         f"({epoch} pass(es) over {n} images): loss {row['loss']:.3f}{gap}")
        if ok and _stop_gap(row) < gap_threshold:
            chosen, reason = epoch, "threshold"
            break
    if chosen is None and monitor is not None:
        chosen, reason = best_epoch, "min_gap"
    elif chosen is None or chosen == len(history) - 1:
        chosen, best_state = len(history) - 1, head.state_dict()  # the last epoch: the head as it is
    head.load_state_dict(best_state)
    fit = HeadFit(head=head.eval(), history=history, chosen_epoch=chosen, stop_reason=reason,
                  steps_per_epoch=steps_per_epoch)
    if monitor is not None:
        fit.helped, fit.verdict = _verdict(history, chosen, gap_threshold, refusals)
    return fit


def _verdict(history: list[dict], chosen: int, threshold: float, refusals: dict) -> tuple[bool, str]:
    """(helped, one line): did the chosen epoch change the head for the better on the held-out split?"""
    start, end = history[0], history[chosen]
    if chosen == 0:
        if _stop_gap(start) < threshold:
            return False, (f"did not help: nothing to fix, the starting head's held-out gap "
                           f"({_stop_gap(start):.1f} points) is already under {threshold:g}")
        why = (", ".join(f"{k} ({n} epochs)" for k, n in refusals.items()) if refusals
               else "no epoch reduced the gap")
        return False, f"did not help: no epoch improved on the starting head without a loss ({why})"
    if _stop_gap(end) >= _stop_gap(start) - 1.0:
        return False, (f"did not help: the held-out gap barely moved "
                       f"({_stop_gap(start):.1f} -> {_stop_gap(end):.1f} points)")
    return True, (f"helped: held-out gap {_stop_gap(start):.1f} -> {_stop_gap(end):.1f} points, worst group "
                  f"{start.get('worst_group', float('nan')):.1f} -> {end.get('worst_group', float('nan')):.1f} %")


def curve_for_card(history: list[dict], chosen: int, keys=("gap", "stop_gap", "worst_group", "accuracy", "loss"),
                   max_points: int = 200) -> dict:
    """The training curve thinned to at most ~`max_points` epochs (the chosen and last ones always kept),
    as {'epoch': [...], key: [...]} lists with values rounded for a readable card."""
    epochs = np.unique(np.r_[np.linspace(0, len(history) - 1, min(max_points, len(history))).round().astype(int),
                             chosen, len(history) - 1])
    out = {"epoch": [int(e) for e in epochs]}
    for key in keys:
        if key in history[0]:
            out[key] = [None if not np.isfinite(history[e][key]) else round(float(history[e][key]), 4) for e in epochs]
    return out
