"""Selective classification with an ERM and a MaskTune model (docs/methods.md §7.2).

The two models look at different evidence, so where they agree the combined prediction is more
trustworthy. Each image's combined distribution is the elementwise product of the two models'
class probabilities, renormalised to sum to 1; its largest entry is the confidence and its argmax the
prediction. For each target coverage a confidence threshold is chosen on the validation split
(accept the `coverage` share of validation images with the highest confidence) and applied to the
test split, where the error on the accepted images is reported.

`combine='softmax'` instead applies a softmax to the product of probabilities, the literal reading of
the MaskTune description; as those products lie in [0, 1], its confidences are squeezed into a narrow
band (for two classes, [0.5, 0.73]) and can order images differently; it is kept for faithful
comparisons.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

COVERAGES = (0.8, 0.85, 0.9, 0.95, 1.0)


def combined_probabilities(erm_probs: np.ndarray, masktune_probs: np.ndarray, combine: str = "normalise") -> np.ndarray:
    """[N, C] × [N, C] class probabilities -> combined distribution [N, C] (rows sum to 1)."""
    product = np.asarray(erm_probs, dtype=np.float64) * np.asarray(masktune_probs, dtype=np.float64)
    if combine == "normalise":
        total = product.sum(1, keepdims=True)
        # Both models certain of different classes: no evidence either way, so uniform.
        return np.where(total > 0, product / np.where(total > 0, total, 1.0), 1.0 / product.shape[1])
    if combine == "softmax":
        z = np.exp(product - product.max(1, keepdims=True))
        return z / z.sum(1, keepdims=True)
    raise ValueError(f"combine must be 'normalise' or 'softmax', got '{combine}'.")


def softmax(logits: np.ndarray) -> np.ndarray:
    """logits [N, C] -> probabilities [N, C]."""
    z = np.asarray(logits, dtype=np.float64)
    z = np.exp(z - z.max(1, keepdims=True))
    return z / z.sum(1, keepdims=True)


def selective_classification(
    erm_probs_val: np.ndarray,
    masktune_probs_val: np.ndarray,
    labels_val: np.ndarray,
    erm_probs_test: np.ndarray,
    masktune_probs_test: np.ndarray,
    labels_test: np.ndarray,
    coverages=COVERAGES,
    combine: str = "normalise",
) -> pd.DataFrame:
    """The accuracy-coverage table.

    probs: float [N, C] per model and split; labels: int [N]. For each target coverage (fraction):
    threshold (confidence, chosen on val), val_coverage and test_coverage (percent of images
    accepted), test_accuracy and test_error on the accepted test images (points), accepted (count).
    """
    val = combined_probabilities(erm_probs_val, masktune_probs_val, combine)
    test = combined_probabilities(erm_probs_test, masktune_probs_test, combine)
    conf_val, conf_test = val.max(1), test.max(1)
    correct_test = test.argmax(1) == np.asarray(labels_test)
    rows = []
    for coverage in coverages:
        if not 0 < coverage <= 1:
            raise ValueError(f"coverages are fractions in (0, 1], got {coverage}.")
        if coverage >= 1:
            threshold = -np.inf  # full coverage: accept everything, whatever the test confidences
        else:
            # The (1 - coverage) quantile of val confidences: the top `coverage` share lies at or above it.
            threshold = float(np.quantile(conf_val, 1 - coverage, method="higher"))
        accepted = conf_test >= threshold
        n_acc = int(accepted.sum())
        acc = 100.0 * float(correct_test[accepted].mean()) if n_acc else float("nan")
        rows.append({
            "coverage_target": 100.0 * coverage,
            "threshold": threshold,
            "val_coverage": 100.0 * float(np.mean(conf_val >= threshold)),
            "test_coverage": 100.0 * n_acc / max(len(conf_test), 1),
            "accepted": n_acc,
            "test_accuracy": acc,
            "test_error": 100.0 - acc if n_acc else float("nan"),
        })
    return pd.DataFrame(rows)


def selective_from_stores(project, erm_store, masktune_store, coverages=COVERAGES, combine: str = "normalise",
                          val_split: str = "val", test_split: str = "test") -> pd.DataFrame:
    """`selective_classification` on two models' feature stores of one project (their stored logits)."""
    table = project.table
    labels = table.labels
    v, t = table.split_mask(val_split), table.split_mask(test_split)
    erm = softmax(np.asarray(erm_store.logits))
    mt = softmax(np.asarray(masktune_store.logits))
    return selective_classification(erm[v], mt[v], labels[v], erm[t], mt[t], labels[t], coverages, combine)
