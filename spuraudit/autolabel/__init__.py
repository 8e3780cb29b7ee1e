"""Auto-labelers: machines that propose core/spurious labels for (class, feature) pairs.

One file per labeler over the small interface in `base`:

    segmentation.py  the feature's NAM against object masks (IoU, mass inside, lift)
    clip.py          CLIP similarity of the feature's NAM views with concepts a person names

Proposals are stored as the votes of a machine annotator (`auto:segmentation`, `auto:clip`);
people confirm or override them on the review page. Running a labeler over a whole project is a
background job (`run_autolabel_job`, kind "autolabel.run").

The names below are imported on first use, so `spuraudit.autolabel.cli` (the command-line
options) loads without torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ..jobs.kinds import AUTOLABEL_CONCEPTS, AUTOLABEL_RUN, KINDS

MACHINE_PREFIX = "auto:"

# Job kinds and the import paths of their functions (entries of `spuraudit.jobs.kinds.KINDS`).
JOB_KINDS = {kind: KINDS[kind] for kind in (AUTOLABEL_RUN, AUTOLABEL_CONCEPTS)}

# The registered labelers: name -> "module:class" (one file each).
LABELER_CLASSES = {
    "segmentation": "segmentation:SegmentationLabeler",
    "clip": "clip:ClipLabeler",
}

_LAZY = {
    "AutoLabeler": "base", "AutoLabelError": "base", "PairImages": "base", "Proposal": "base", "RunReport": "base",
    "confidence_from_margin": "base", "default_pairs": "base", "last_run_key": "base", "run_autolabel": "base",
    "run_autolabel_job": "base", "store_proposals": "base",
    "ClipLabeler": "clip", "concept_scores_job": "clip", "concept_spuriosity_scores": "clip",
    "compute_concept_similarities": "clip",
    "SegmentationLabeler": "segmentation",
}

if TYPE_CHECKING:
    from .base import (AutoLabeler, AutoLabelError, PairImages, Proposal, RunReport, confidence_from_margin,
                       default_pairs, last_run_key, run_autolabel, run_autolabel_job, store_proposals)
    from .clip import ClipLabeler, compute_concept_similarities, concept_scores_job, concept_spuriosity_scores
    from .segmentation import SegmentationLabeler


def __getattr__(name: str) -> Any:
    if name == "LABELERS":
        return {key: _labeler_class(key) for key in LABELER_CLASSES}
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _labeler_class(name: str):
    module, _, cls = LABELER_CLASSES[name].partition(":")
    return getattr(importlib.import_module(f".{module}", __name__), cls)


def make_labeler(name: str, **options: Any):
    """The labeler registered under `name` (a key of LABELER_CLASSES), built with `options`."""
    from .base import AutoLabelError

    if name not in LABELER_CLASSES:
        raise AutoLabelError(f"unknown auto-labeler {name!r}; choose one of {', '.join(LABELER_CLASSES)}.")
    try:
        return _labeler_class(name)(**options)
    except TypeError as err:  # an option the labeler does not take
        raise AutoLabelError(f"{name}: {err}") from None


def ensure_job_kinds() -> None:
    """Register JOB_KINDS with the job runner where they are missing (a submitted job row stores the
    resolved import path, so workers find the function even if their own registry lacks the kind)."""
    from ..jobs import KINDS, register_kind

    for kind, target in JOB_KINDS.items():
        if kind not in KINDS:
            register_kind(kind, target)


def is_machine_annotator(name: str) -> bool:
    return str(name).startswith(MACHINE_PREFIX)


__all__ = [
    "JOB_KINDS",
    "LABELERS",
    "LABELER_CLASSES",
    "MACHINE_PREFIX",
    "AutoLabelError",
    "AutoLabeler",
    "ClipLabeler",
    "PairImages",
    "Proposal",
    "RunReport",
    "SegmentationLabeler",
    "compute_concept_similarities",
    "concept_scores_job",
    "concept_spuriosity_scores",
    "confidence_from_margin",
    "default_pairs",
    "ensure_job_kinds",
    "is_machine_annotator",
    "last_run_key",
    "make_labeler",
    "run_autolabel",
    "run_autolabel_job",
    "store_proposals",
]
