"""Auto-labelers: machines that propose core/spurious labels for (class, feature) pairs.

One file per labeler over the small interface in `base`:

    segmentation.py  the feature's NAM against object masks (IoU, mass inside, lift)
    clip.py          CLIP similarity of the feature's NAM views with concepts a person names

A labeler declares its options and its evidence table; the review page's forms and the command
line's flags are built from those declarations. A new labeler is one file whose class is decorated
with `register_labeler` (the built-in ones are listed below by import path, so they load on first use).

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

# The registered labelers: name -> "module:class" (built-in, relative to this package), or the class.
LABELER_CLASSES: dict[str, Any] = {
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


def register_labeler(cls):
    """Class decorator: make an `AutoLabeler` subclass available under its `name` to the page, the command
    line and jobs. Returns the class unchanged."""
    if not getattr(cls, "name", ""):
        raise ValueError(f"{cls.__qualname__} needs a `name` to be registered")
    if isinstance(LABELER_CLASSES.get(cls.name), str):
        return cls  # a built-in, listed by import path above: keep the path (jobs name it by its name)
    LABELER_CLASSES[cls.name] = cls
    return cls


def _labeler_class(name: str):
    target = LABELER_CLASSES[name]
    if not isinstance(target, str):
        return target
    module, _, cls = target.partition(":")
    return getattr(importlib.import_module(f".{module}", __name__), cls)


def labeler_classes() -> dict[str, Any]:
    """name -> class of every registered labeler, built-in ones first (imports them)."""
    return {key: _labeler_class(key) for key in list(LABELER_CLASSES)}


def labeler_reference(name: str) -> str:
    """What a job names the labeler by: a built-in's name, or a plug-in's "package.module:Class" path (a
    worker process imports it from there, since the registration happened in another process)."""
    target = LABELER_CLASSES[name]
    if isinstance(target, str):
        return name
    return f"{target.__module__}:{target.__qualname__}"


def make_labeler(name: str, **options: Any):
    """The labeler registered under `name` (or at "package.module:Class"), built with `options`, each
    checked against its declaration."""
    from .base import AutoLabelError

    if name in LABELER_CLASSES:
        cls = _labeler_class(name)
    elif ":" in name:
        from ..jobs.kinds import load_target

        try:
            cls = load_target(name)
        except (ImportError, AttributeError) as err:
            raise AutoLabelError(f"auto-labeler {name!r} cannot be imported ({err}).") from None
    else:
        raise AutoLabelError(f"unknown auto-labeler {name!r}; choose one of {', '.join(LABELER_CLASSES)}.")
    try:
        return cls(**cls.check_options(options))
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
    "labeler_classes",
    "labeler_reference",
    "last_run_key",
    "make_labeler",
    "register_labeler",
    "run_autolabel",
    "run_autolabel_job",
    "store_proposals",
]
