"""Types and constants shared across packages, defined once.

Kept free of heavy imports (no torch, no numpy) so any module, the CLI included, can use them.
"""

from __future__ import annotations

from collections.abc import Callable

# A progress report: `progress(fraction in [0, 1], message)`. Jobs pass their context's reporter;
# interactive callers pass a print or a Streamlit progress bar.
Progress = Callable[[float, str], None]

# The per-channel normalisation torchvision's ImageNet models were trained with.
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
