"""Where object masks come from: the dataset's `mask_path` column, or a segmentation model.

A mask source answers one question: for these images, which pixels belong to the class's object?
It returns bool [k, H, W] at the audited model's input size (the NAMs' size). Segmentation models
are torchvision architectures built without any weights and loaded from a local checkpoint file,
so nothing is downloaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

import numpy as np

from ..common import IMAGENET_MEAN, IMAGENET_STD  # torchvision's segmentation models expect these
from .base import AutoLabelError

if TYPE_CHECKING:  # torch is imported where it is used, so the command-line options load without it
    import torch

FOREGROUND = "foreground"  # every segmentation class except 0 (background in VOC and COCO-with-VOC labels)

SEGMENTATION_ARCHITECTURES = (
    "deeplabv3_mobilenet_v3_large",
    "deeplabv3_resnet50",
    "deeplabv3_resnet101",
    "fcn_resnet50",
    "fcn_resnet101",
    "lraspp_mobilenet_v3_large",
)

# The classes of torchvision's pretrained segmentation checkpoints (COCO images, VOC labels),
# so a user can pick "dog" rather than 12.
VOC_CATEGORIES = (
    "__background__", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)


class MaskSource:
    """Object masks for dataset images."""

    description = ""

    def check(self, audit) -> None:
        """Raise AutoLabelError, before any work, when the source cannot serve this audit."""

    def masks(self, audit, indices: np.ndarray, images: torch.Tensor, class_index: int) -> np.ndarray:
        """bool [k, H, W] for the dataset rows `indices`, whose pixels `images` [k, 3, H, W] in [0, 1] are given."""
        raise NotImplementedError


class DatasetMasks(MaskSource):
    """The masks listed in the dataset's `mask_path` column (non-zero pixel = object)."""

    description = "dataset masks (mask_path column)"

    def check(self, audit) -> None:
        if not audit.table.has_masks:
            raise AutoLabelError(
                "this dataset has no object masks (no mask_path column). Add a mask_path column to the "
                "manifest, or choose the segmentation-model mask source with a local checkpoint."
            )

    def masks(self, audit, indices, images, class_index):
        from ..data.images import load_mask

        self.check(audit)
        table = audit.table
        size = tuple(images.shape[-2:])
        column = table.frame["mask_path"]
        out = np.zeros((len(indices), *size), dtype=bool)
        for row, i in enumerate(indices):
            path = column.iloc[int(i)]
            if not isinstance(path, str) or not path:
                raise AutoLabelError(f"image {int(i)} ({table.path(int(i))}) has no mask_path.")
            out[row] = load_mask(path, size)
        return out


# ---- segmentation models ----------------------------------------------------------------------
def _unwrap_state_dict(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    """The state dict inside the common checkpoint layouts ({'model': ...} as torchvision's training
    references save it, {'state_dict': ...}, a plain dict), without DataParallel's 'module.' prefix."""
    import torch

    if isinstance(obj, torch.nn.Module):
        obj = obj.state_dict()
    for key in ("model", "state_dict", "model_state_dict"):
        if isinstance(obj, Mapping) and key in obj and isinstance(obj[key], Mapping):
            obj = obj[key]
            break
    if not isinstance(obj, Mapping) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise AutoLabelError(f"{path}: not a segmentation model state dict (expected a dict of tensors, "
                             "or one under 'model' or 'state_dict').")
    if all(k.startswith("module.") for k in obj):
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return dict(obj)


def _num_classes(state: Mapping[str, torch.Tensor]) -> int:
    # The last classifier layer's output channels are the number of segmentation classes; its name
    # differs per architecture (DeepLabV3 and FCN: classifier.4, LRASPP: classifier.high_classifier).
    for key in ("classifier.4.weight", "classifier.high_classifier.weight", "classifier.low_classifier.weight"):
        if key in state:
            return int(state[key].shape[0])
    raise AutoLabelError("cannot tell the number of segmentation classes from the checkpoint; pass num_classes.")


def load_segmentation_model(architecture: str, checkpoint: str | Path, num_classes: int | None = None,
                            trust_pickle: bool = False) -> torch.nn.Module:
    """A torchvision segmentation model built with no weights and loaded from a local file.

    Args:
        architecture: one of SEGMENTATION_ARCHITECTURES (e.g. "deeplabv3_mobilenet_v3_large").
        checkpoint: a state dict saved with torch.save (e.g. torchvision's released
            `deeplabv3_mobilenet_v3_large-fc3c493d.pth`, downloaded once by hand).
        num_classes: segmentation classes; read from the checkpoint when None.
        trust_pickle: allow full pickle loading (only for files you trust: it can run code).

    Returns:
        the model in eval mode; calling it on [B, 3, H, W] gives {"out": logits [B, K, H, W], ...}.
    """
    import torch
    from torchvision.models import segmentation

    if architecture not in SEGMENTATION_ARCHITECTURES:
        raise AutoLabelError(f"unknown segmentation architecture {architecture!r}; choose one of "
                             f"{', '.join(SEGMENTATION_ARCHITECTURES)}.")
    path = Path(checkpoint).expanduser()
    if not str(checkpoint).strip() or not path.is_file():
        raise AutoLabelError(
            f"segmentation checkpoint {str(checkpoint)!r} not found. Download the weights file once (for "
            f"torchvision's {architecture}: the URL in torchvision.models.segmentation's weight enums) and "
            "pass its local path; nothing is downloaded here."
        )
    try:
        raw = torch.load(path, map_location="cpu", weights_only=not trust_pickle)
    except Exception as err:  # torch raises several types for unreadable or untrusted files
        raise AutoLabelError(f"{path}: cannot be read as a PyTorch checkpoint ({err}). If it is a full pickle "
                             "you trust, allow pickle loading.") from None
    state = _unwrap_state_dict(raw, path)
    classes = int(num_classes) if num_classes else _num_classes(state)
    aux = any(k.startswith("aux_classifier.") for k in state)
    kwargs: dict[str, Any] = {"weights": None, "weights_backbone": None, "num_classes": classes}
    if not architecture.startswith("lraspp"):
        kwargs["aux_loss"] = aux
    model = getattr(segmentation, architecture)(**kwargs)
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise AutoLabelError(f"{path} does not fit {architecture} with {classes} classes: {err}") from None
    return model.eval()


def predict_segmentation(model: torch.nn.Module, images: torch.Tensor, target: int | str = FOREGROUND,
                         input_size: int | None = 224, mean=IMAGENET_MEAN, std=IMAGENET_STD,
                         batch_size: int = 8) -> np.ndarray:
    """Object masks from a segmentation model.

    Args:
        images: [k, 3, H, W] in [0, 1].
        target: a segmentation class index (mask = pixels predicted as it) or "foreground"
            (mask = pixels not predicted as class 0, the background).
        input_size: the shorter side the images are resized to for the model (small inputs such
            as 28 × 28 digits are far below what these models were trained on); None keeps H × W.

    Returns:
        bool [k, H, W] at the images' own size.
    """
    import torch
    import torch.nn.functional as F

    height, width = images.shape[-2:]
    if len(images) == 0:
        return np.zeros((0, height, width), dtype=bool)
    device = next(model.parameters()).device
    mean_t = torch.tensor(mean, device=device).view(1, 3, 1, 1)
    std_t = torch.tensor(std, device=device).view(1, 3, 1, 1)
    out = []
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            x = images[start:start + batch_size].to(device).float()
            if input_size:
                scale = float(input_size) / min(height, width)
                size = (max(1, round(height * scale)), max(1, round(width * scale)))
                x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
            result = model((x - mean_t) / std_t)
            logits = result["out"] if isinstance(result, Mapping) else result
            # Classes are decided at the model's resolution, then brought back with nearest neighbours
            # so a mask stays a set of whole pixels.
            labels = logits.argmax(1, keepdim=True).float()
            labels = F.interpolate(labels, size=(height, width), mode="nearest")[:, 0].long()
            mask = labels != 0 if target == FOREGROUND else labels == int(target)
            out.append(mask.cpu().numpy())
    return np.concatenate(out)


def parse_target(target: int | str, categories: tuple[str, ...] = VOC_CATEGORIES) -> int | str:
    """'foreground', a class index (as int or text) or a VOC category name -> what predict_segmentation takes."""
    if isinstance(target, (int, np.integer)):
        return int(target)
    text = str(target).strip()
    if text in ("", FOREGROUND, "not background"):
        return FOREGROUND
    if text.lstrip("-").isdigit():
        return int(text)
    if text in categories:
        return categories.index(text)
    raise AutoLabelError(f"segmentation target {target!r}: use 'foreground', a class index, or one of "
                         f"{', '.join(categories[1:])}.")


class SegmentationModelMasks(MaskSource):
    """Masks predicted by a torchvision segmentation model from a local checkpoint.

    target: "foreground", one segmentation class for every audited class, or a mapping
    {audited class index: segmentation class} (e.g. {0: "bird", 1: "bird"}).
    """

    def __init__(self, architecture: str, checkpoint: str | Path, target: int | str | Mapping = FOREGROUND,
                 num_classes: int | None = None, input_size: int | None = 224, trust_pickle: bool = False,
                 model: torch.nn.Module | None = None):
        self.architecture = architecture
        self.checkpoint = str(checkpoint)
        self.input_size = input_size
        self.model = model if model is not None else load_segmentation_model(
            architecture, checkpoint, num_classes, trust_pickle)
        if isinstance(target, Mapping):
            self.target: Callable[[int], int | str] = (
                lambda c, t={int(k): parse_target(v) for k, v in target.items()}: t.get(int(c), FOREGROUND))
        else:
            fixed = parse_target(target)
            self.target = lambda c: fixed
        self.description = f"{architecture} from {Path(self.checkpoint).name}"

    def masks(self, audit, indices, images, class_index):
        return predict_segmentation(self.model, images, self.target(class_index), self.input_size)
