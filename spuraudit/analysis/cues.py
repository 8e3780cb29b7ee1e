"""How much of a known cue a mask covers.

With the cue's pixels known (a planted cue or an annotated mask), the share of them a
method's mask hides, per image; an image counts as covered from `COVERED_AT` on.
"""

from __future__ import annotations

import numpy as np

COVERED_AT = 0.8  # share of the cue's pixels a mask must hide for the image to count as covered


def cue_coverage(masks: np.ndarray, cue: np.ndarray) -> np.ndarray:
    """Share (fraction) of each image's cue pixels that its mask hides: bool [N, H, W] × bool [N, H, W] -> [N];
    NaN for an image with no cue pixel."""
    masks = np.asarray(masks, dtype=bool)
    cue = np.asarray(cue, dtype=bool)
    if masks.shape != cue.shape:
        raise ValueError(f"masks {masks.shape} and cue {cue.shape} must have the same shape")
    n_cue = cue.reshape(len(cue), -1).sum(1)
    hidden = (masks & cue).reshape(len(cue), -1).sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n_cue > 0, hidden / np.maximum(n_cue, 1), np.nan)


def coverage_summary(shares: np.ndarray) -> dict:
    """Mean share of cue pixels masked and share of cue-bearing images covered (≥ `COVERED_AT`), in percent."""
    s = np.asarray(shares, dtype=np.float64)
    s = s[np.isfinite(s)]
    if not len(s):
        return {"cue_images": 0}
    return {"cue_images": int(len(s)), "cue_pixels_masked_pct": round(100 * float(s.mean()), 2),
            "cue_images_covered_pct": round(100 * float(np.mean(s >= COVERED_AT)), 2)}
