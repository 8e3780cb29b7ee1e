"""Class activation maps through the `pytorch-grad-cam` package (docs/methods.md §3).

The CAM methods themselves come from the package (PyPI name ``grad-cam``); this module only picks
the layer, the targets and the batching, and protects the model's state. The package is imported
on first use: it takes seconds to import, and pages that only list the method names should not pay
for it.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

import numpy as np
import torch

from ._model_state import explanation_mode, model_device, model_dtype

# Method name -> class name in `pytorch_grad_cam`. Only methods that take (model, target_layers),
# accept `ClassifierOutputTarget` targets and produce one map per image are listed; wrappers with
# their own calling conventions (FinerCAM, RefineCAM, SESS) and the RandomCAM baseline are left out.
_CAM_CLASS_NAMES: dict[str, str] = {
    "gradcam": "GradCAM",
    "xgradcam": "XGradCAM",
    "gradcam++": "GradCAMPlusPlus",
    "scorecam": "ScoreCAM",
    "eigencam": "EigenCAM",
    "layercam": "LayerCAM",
    "hirescam": "HiResCAM",
    "gradcamelementwise": "GradCAMElementWise",
    "eigengradcam": "EigenGradCAM",
    "ablationcam": "AblationCAM",
    "fullgrad": "FullGrad",
    "kpcacam": "KPCA_CAM",
    "fem": "FEM",
    "shapleycam": "ShapleyCAM",
}


class _LazyCamMethods(Mapping):
    """Read-only mapping method name -> `pytorch_grad_cam` class, importing the package on first lookup.

    Listing the names (`list(CAM_METHODS)`, `in`) never imports it.
    """

    def __getitem__(self, name: str) -> type:
        class_name = _CAM_CLASS_NAMES[name]
        import pytorch_grad_cam

        return getattr(pytorch_grad_cam, class_name)

    def __iter__(self) -> Iterator[str]:
        return iter(_CAM_CLASS_NAMES)

    def __len__(self) -> int:
        return len(_CAM_CLASS_NAMES)

    def __repr__(self) -> str:
        return f"CAM_METHODS({', '.join(_CAM_CLASS_NAMES)})"


CAM_METHODS: Mapping[str, type] = _LazyCamMethods()


def _method_class(method: str) -> type:
    key = method.lower().replace("-", "").replace("_", "").replace(" ", "")
    if key not in _CAM_CLASS_NAMES:
        raise ValueError(f"unknown CAM method {method!r}; choose one of {list(_CAM_CLASS_NAMES)}")
    return CAM_METHODS[key]


def class_activation_maps(
    model: torch.nn.Module,
    x: torch.Tensor,
    target_classes: Sequence[int] | None = None,
    method: str = "gradcam",
    batch_size: int = 32,
) -> np.ndarray:
    """CAMs of `model.target_layer` (the feature map) for one class per image.

    The model runs in eval mode; its training flags, parameters' `requires_grad` and `.grad` are
    restored afterwards (parameters are made to require gradients during the call so that
    gradient-based methods work on a frozen model too). The package's hooks are released after
    each batch.

    Args:
        model: an `AuditModel` (needs `target_layer` and `num_classes`).
        x: images [B, 3, H, W] in [0, 1], any device (moved to the model's).
        target_classes: B class indices, one per image; None explains each image's predicted class.
        method: a key of `CAM_METHODS` (case, '-' and '_' are ignored: "GradCAM++" works).
        batch_size: images per CAM call (ScoreCAM and AblationCAM run many forward passes per image).

    Returns:
        float32 [B, H, W] in [0, 1]: each map min-max scaled per image by the package, 1 = most
        relevant to the target class.
    """
    cam_class = _method_class(method)
    height, width = x.shape[-2:]
    num_images = x.shape[0]
    if target_classes is not None:
        target_classes = [int(c) for c in target_classes]
        if len(target_classes) != num_images:
            raise ValueError(f"{len(target_classes)} target classes for {num_images} images")
        num_classes = getattr(model, "num_classes", None)
        if num_classes is not None and any(not 0 <= c < num_classes for c in target_classes):
            raise ValueError(f"target classes must lie in [0, {num_classes}), got {sorted(set(target_classes))}")
    if num_images == 0:
        return np.zeros((0, height, width), dtype=np.float32)

    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    device, dtype = model_device(model), model_dtype(model)
    maps = []
    with explanation_mode(model, params_require_grad=True), torch.enable_grad():
        for start in range(0, num_images, batch_size):
            batch = x[start : start + batch_size].detach().to(device=device, dtype=dtype)
            targets = (
                None
                if target_classes is None
                else [ClassifierOutputTarget(c) for c in target_classes[start : start + batch_size]]
            )
            cam = cam_class(model=model, target_layers=[model.target_layer])
            # try/finally rather than the package's context manager: its __exit__ swallows an
            # IndexError (printing it and returning None), which would hide real errors.
            try:
                maps.append(np.asarray(cam(input_tensor=batch, targets=targets), dtype=np.float32))
            finally:
                cam.activations_and_grads.release()
    return np.clip(np.concatenate(maps), 0.0, 1.0)
