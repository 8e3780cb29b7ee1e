"""One multinomial logistic-regression fit of a linear head, with scikit-learn (DFR and the linear probe).

    W, b = fit_logistic_head(features, labels, num_classes, C=0.1)        # L1, as the DFR paper
    logits = features @ W.T + b

Features are standardised for the fit (the solvers converge far faster on unit-scale inputs, and one
penalty then means the same for every feature), and the scaling is folded back into W and b so the head
applies to the raw features. `C` is scikit-learn's: the fit minimises
`penalty(W) + C · Σ_i loss_i`, so a smaller C is a stronger penalty (an L2 strength λ on the mean loss,
`mean loss + λ/2 ||W||²`, is `C = 1 / (λ n)`). See docs/methods.md §7.1.
"""

from __future__ import annotations

import inspect

import numpy as np

PENALTIES = ("l1", "l2")


def _penalty_arguments(penalty: str, n_classes: int) -> dict:
    from sklearn.linear_model import LogisticRegression

    if penalty not in PENALTIES:
        raise ValueError(f"penalty must be one of {PENALTIES}, not {penalty!r}")
    # L1: liblinear for two classes (what DFR's released code uses; fast), saga for more (liblinear would
    # fit one-vs-rest); L2: lbfgs.
    solver = "lbfgs" if penalty == "l2" else ("liblinear" if n_classes == 2 else "saga")
    # scikit-learn 1.8 replaced `penalty` by `l1_ratio`; older releases only know `penalty`.
    if inspect.signature(LogisticRegression).parameters["penalty"].default == "deprecated":
        return {"l1_ratio": 1.0 if penalty == "l1" else 0.0, "solver": solver}
    return {"penalty": penalty, "solver": solver}


def fit_logistic_head(
    features: np.ndarray,
    labels: np.ndarray,
    num_classes: int,
    C: float,
    penalty: str = "l1",
    class_balanced: bool = False,
    fit_bias: bool = True,
    max_iter: int = 1000,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """features float [n, D], labels int [n] -> (W float32 [num_classes, D], b float32 [num_classes]).

    class_balanced: weight each class's loss by n / (classes present · n_c).
    fit_bias: without it the returned b is all zeros (for heads without a bias), and the features are
        scaled but not centred, since centring would need an intercept to undo.
    A class absent from `labels` gets zero weights and a bias below every fitted one, so it is predicted
    only where no class has evidence.
    """
    from sklearn.linear_model import LogisticRegression

    x = np.asarray(features, dtype=np.float64)
    y = np.asarray(labels, dtype=np.int64)
    if x.ndim != 2 or len(x) != len(y) or len(y) == 0:
        raise ValueError(f"need features [n, D] and labels [n] with n > 0; got {x.shape} and {y.shape}")
    if C <= 0:
        raise ValueError(f"C must be positive, not {C}")
    mean = x.mean(0) if fit_bias else np.zeros(x.shape[1])
    scale = x.std(0)
    scale = np.where(scale > 1e-6, scale, 1.0)  # constant features stay at 0 after centring
    z = (x - mean) / scale
    present = np.unique(y)
    w = np.zeros((num_classes, x.shape[1]))
    b = np.zeros(num_classes)
    if len(present) == 1:  # nothing to separate: predict the one class everywhere
        b[present[0]] = 1.0
    else:
        fit = LogisticRegression(C=C, fit_intercept=fit_bias, max_iter=max_iter, random_state=seed,
                                 class_weight="balanced" if class_balanced else None,
                                 **_penalty_arguments(penalty, len(present))).fit(z, y)
        coef, intercept = fit.coef_, np.broadcast_to(fit.intercept_, (len(fit.coef_),))
        if len(present) == 2:
            # A binary fit has one row, the log-odds of the second class; split it evenly between both
            # rows so the softmax of the two equals the fitted sigmoid.
            coef = np.stack([-coef[0] / 2, coef[0] / 2])
            intercept = np.array([-intercept[0] / 2, intercept[0] / 2])
        w[present] = coef
        b[present] = intercept
    if len(present) < num_classes and fit_bias:
        b[np.setdiff1d(np.arange(num_classes), present)] = b[present].min() - 10.0
    # W z + b = (W / s)(x - m) + b
    w_raw = w / scale
    b_raw = b - w_raw @ mean if fit_bias else np.zeros(num_classes)
    return w_raw.astype(np.float32), b_raw.astype(np.float32)
