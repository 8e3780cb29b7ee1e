"""A 2-D map of one class's images from their stored features (principal components)."""

from __future__ import annotations

import numpy as np


def pca_2d(features: np.ndarray) -> np.ndarray:
    """float [n, 2]: the images' coordinates on the two directions of largest variance of `features`
    [n, D] (centred; signs fixed so the largest loading of each direction is positive, so the map does
    not flip between runs). Fewer than two images or no variance give zeros."""
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"features must be [n, D], got shape {x.shape}")
    n = x.shape[0]
    out = np.zeros((n, 2))
    if n < 2:
        return out
    x = x - x.mean(axis=0, keepdims=True)
    # The n × n Gram matrix is smaller than D × D for a class of up to a few thousand images.
    _, _, vt = np.linalg.svd(x, full_matrices=False)
    k = min(2, vt.shape[0])
    directions = vt[:k]
    signs = np.sign(directions[np.arange(k), np.abs(directions).argmax(axis=1)])
    signs[signs == 0] = 1.0
    out[:, :k] = x @ (directions * signs[:, None]).T
    return out
