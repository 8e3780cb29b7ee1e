"""Visual evidence for a (class, feature) pair: NAMs, class activation maps, feature attacks, overlays.

Models are `spuraudit.modelio.AuditModel`s taking images [B, 3, H, W] in [0, 1]. Heatmaps come back
as float32 NumPy arrays [B, H, W] in [0, 1]; display images as uint8 [H, W, 3]. Every function that
runs the model does so in eval mode and leaves the model's state (training flags, requires_grad,
gradients) as it found it. `pytorch_grad_cam` and matplotlib are imported only when first needed.
"""

from __future__ import annotations

from .attack import FeatureAttackResult, default_step_size, feature_attack
from .cam import CAM_METHODS, class_activation_maps
from .nam import nam_for_feature, neural_activation_maps
from .overlay import colorize, image_grid, overlay_heatmap, save_png, to_uint8_image, upscale_for_display

__all__ = [
    "CAM_METHODS",
    "FeatureAttackResult",
    "class_activation_maps",
    "colorize",
    "default_step_size",
    "feature_attack",
    "image_grid",
    "nam_for_feature",
    "neural_activation_maps",
    "overlay_heatmap",
    "save_png",
    "to_uint8_image",
    "upscale_for_display",
]
