"""The common interface of the mitigation methods, and the small helpers they share.

A method is one file holding one `Mitigation` subclass: its name, its options (with defaults and help
text, which the app renders as a form) and `run`, which takes the project and the parent model and
returns a new `AuditModel` plus what the card should record. Evaluating the new model, writing its
folder and extracting its features is common work done once, in `spuraudit.mitigate.run_mitigation`.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..common import Progress  # noqa: F401  (re-exported for callers)
from ..modelio import AuditModel
from ..options import Option as BaseOption
from ..options import resolve_options
from ..project import Project


class MitigationError(ValueError):
    """A mitigation that cannot run as asked; the message says why and what to do."""


@dataclass(frozen=True)
class Option(BaseOption):
    """One option of a method, as the app shows it (see `spuraudit.options.Option`)."""

    error = MitigationError


SEED_OPTION = Option("seed", 0, "Seed of every random choice (sampling, shuffling, initialisation): the same "
                                "seed and options give the same model.", minimum=0)


@dataclass
class MitigationResult:
    """What a method hands back.

    model: the new classifier (images in [0, 1] -> logits [B, C]);
    head_only: True when its backbone is the parent's, unchanged (only `model.head` differs), which
      lets its features be reused instead of recomputed;
    options: the options actually used, defaults filled in (and choices the method made itself);
    metrics: method diagnostics for the card (curves, chosen epoch, masked shares ...);
    notes: one-line remarks for the card (e.g. which split stopped training, which reported).
    """

    model: AuditModel
    head_only: bool
    options: dict
    metrics: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


class Mitigation:
    """Base class: subclasses set the class attributes and implement `run`."""

    name: str = ""  # registry key; also part of the new model's folder name
    label: str = ""  # human name
    summary: str = ""  # one paragraph for the app
    head_only: bool = True
    options: Sequence[Option] = ()

    def default_options(self) -> dict:
        return {opt.name: opt.default for opt in self.options}

    def resolve_options(self, options: dict | None) -> dict:
        """Defaults overlaid with `options`, each checked; unknown names are an error, not ignored."""
        return resolve_options(self.name, self.options, options, MitigationError)

    def run(self, project: Project, parent_folder: Path, options: dict, progress: Progress) -> MitigationResult:
        raise NotImplementedError


# ---- helpers shared by the methods -------------------------------------------------------------

def seed_everything(seed: int) -> torch.Generator:
    """Seed torch, NumPy and `random` globally (layers built later draw from them) and return a
    dedicated torch generator for the method's own shuffles and samples."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def stage(progress: Progress | None, start: float, end: float) -> Progress:
    """Map a stage's own 0..1 progress into its slice [start, end] of the whole run."""

    def report(fraction: float, message: str) -> None:
        if progress is not None:
            progress(start + (end - start) * min(max(float(fraction), 0.0), 1.0), message)

    return report


def quiet(fraction: float, message: str) -> None:
    """A progress callback that reports nowhere."""
