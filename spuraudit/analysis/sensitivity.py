"""Feature sensitivity: what a model loses when one feature's region is corrupted (docs/methods.md §8).

Accuracies and accuracy drops are in percentage points; activation drops in percent of the clean mean. Relative core sensitivity (Salient ImageNet's core
risk paper) is a unitless number in [-1, 1]:

    RCS = (acc_core − acc_spurious) / (2 · min(ā, 1 − ā)),   ā = (acc_core + acc_spurious) / 2,

with the accuracies as fractions. *Core accuracy* is measured with noise on the spurious features'
regions (the core is left intact), *spurious accuracy* with noise on the core features' regions. A
model that relies on the core keeps its core accuracy and loses its spurious accuracy (RCS > 0); a
model that relies on the cue does the opposite (RCS < 0). The denominator is the largest difference
the two accuracies could have at that mean, so RCS compares models of different accuracy.
"""

from __future__ import annotations

import numpy as np


def points(correct: np.ndarray) -> float:
    """Accuracy in points of a bool array; NaN when empty."""
    correct = np.asarray(correct, dtype=bool)
    return 100.0 * float(correct.mean()) if correct.size else float("nan")


def accuracy_drop(clean_correct: np.ndarray, corrupted_correct: np.ndarray) -> float:
    """Accuracy on the clean images minus accuracy on the same images corrupted (points).

    Positive: the corruption hurts, so the model uses what it removed.
    """
    clean_correct, corrupted_correct = np.asarray(clean_correct), np.asarray(corrupted_correct)
    if clean_correct.shape != corrupted_correct.shape:
        raise ValueError(f"clean {clean_correct.shape} and corrupted {corrupted_correct.shape} must match image for image")
    return points(clean_correct) - points(corrupted_correct)


def activation_drop(clean: np.ndarray, corrupted: np.ndarray) -> float:
    """How much of a feature's mean activation a corruption removes, in percent of the clean mean.

    100 × (mean r_d(x) − mean r_d(x')) / mean r_d(x) over the same images: 0 when the feature does not
    care, 100 when it goes silent, negative when the corruption excites it. NaN when the clean mean is
    not positive (the feature is silent on these images). Unlike accuracy, it does not saturate on a
    confident model, so it tells what the feature itself encodes.
    """
    clean, corrupted = np.asarray(clean, dtype=np.float64), np.asarray(corrupted, dtype=np.float64)
    if clean.shape != corrupted.shape:
        raise ValueError(f"clean {clean.shape} and corrupted {corrupted.shape} must match image for image")
    base = float(clean.mean()) if clean.size else float("nan")
    if not base > 0:
        return float("nan")
    return 100.0 * (base - float(corrupted.mean())) / base


def relative_core_sensitivity(core_accuracy: float, spurious_accuracy: float) -> float:
    """RCS from core and spurious accuracy given in POINTS (0-100); NaN when undefined (ā is 0 or 1)."""
    a_core, a_spur = core_accuracy / 100.0, spurious_accuracy / 100.0
    if not (np.isfinite(a_core) and np.isfinite(a_spur)):
        return float("nan")
    mean = (a_core + a_spur) / 2.0
    bound = 2.0 * min(mean, 1.0 - mean)
    return float((a_core - a_spur) / bound) if bound > 0 else float("nan")
