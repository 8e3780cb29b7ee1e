"""The common interface of the mitigation methods, and the small helpers they share.

A method is one file holding one `Mitigation` subclass: its name, its options (with defaults and help
text, which the app renders as a form) and `run`, which takes the project and the parent model and
returns a new `AuditModel` plus what the card should record. Evaluating the new model, writing its
folder and extracting its features is common work done once, in `spuraudit.mitigate.run_mitigation`.
"""

from __future__ import annotations

import math

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from ..modelio import AuditModel
from ..project import Project

Progress = Callable[[float, str], None]


class MitigationError(ValueError):
    """A mitigation that cannot run as asked; the message says why and what to do."""


@dataclass(frozen=True)
class Option:
    """One option of a method, as the app shows it: a default, a help text and the allowed values."""

    name: str
    default: Any
    help: str
    choices: tuple | None = None
    minimum: float | None = None
    maximum: float | None = None

    def check(self, value: Any) -> Any:
        """`value` converted to the default's type, or MitigationError naming the option."""
        kind = type(self.default)
        try:
            if kind is bool:
                if isinstance(value, str):
                    if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                        raise ValueError(value)
                    value = value.lower() in ("true", "1", "yes")
                else:
                    value = bool(value)
            elif kind is int:
                if isinstance(value, float) and not value.is_integer():
                    raise ValueError(value)
                value = int(value)
            elif kind is float:
                value = float(value)
            elif kind is str:
                value = str(value)
        except (TypeError, ValueError, OverflowError):
            raise MitigationError(f"option '{self.name}' must be a {kind.__name__}, got {value!r}.") from None
        if kind is float and not math.isfinite(value):  # nan passes every comparison below
            raise MitigationError(f"option '{self.name}' must be a finite number, got {value!r}.")
        if self.choices is not None and value not in self.choices:
            raise MitigationError(f"option '{self.name}' must be one of {list(self.choices)}, got {value!r}.")
        if self.minimum is not None and value < self.minimum:
            raise MitigationError(f"option '{self.name}' must be ≥ {self.minimum}, got {value!r}.")
        if self.maximum is not None and value > self.maximum:
            raise MitigationError(f"option '{self.name}' must be ≤ {self.maximum}, got {value!r}.")
        return value


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
        options = dict(options or {})
        known = {opt.name: opt for opt in self.options}
        unknown = sorted(set(options) - set(known))
        if unknown:
            raise MitigationError(f"{self.name} has no option(s) {unknown}; its options are {sorted(known)}.")
        return {name: opt.check(options.get(name, opt.default)) for name, opt in known.items()}

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
