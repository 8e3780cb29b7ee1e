"""A project's settings: typed, with their defaults defined here and nowhere else.

Stored in `project.json` under "settings", next to "schema_version". Files written before the version
existed (version 1) are read as they are, missing settings taking their defaults, and carry the current
version from their next save on. An unknown setting or a value of the wrong type is an error naming the
file and the key, so a typo in a hand-edited file is not silently ignored.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from .analysis.importance import IMAGE_SET_MODES
from .typed import TypedValueError, from_mapping

PROJECT_SCHEMA_VERSION = 2  # 1: no version key; 2: typed settings, version recorded

IMAGE_SET_CHOICES = IMAGE_SET_MODES
STATS_CHOICES = ("train", "per-split")


@dataclass
class ProjectSettings:
    """The choices a project remembers between sessions (see docs/methods.md §2, §5 and §6)."""

    image_set: str = "correct"  # S_c, the images a class's feature importance is taken over
    top_k: int = 5  # top features shown per class
    gap_k: int = 100  # images per end of each class's ranking (clamped to n_c // 2)
    triage_k: int = 25  # images per end of the single-feature triage gap
    stats: str = "train"  # spuriosity mean/std: 'train' (fitted once) | 'per-split' (the original code)
    annotator: str = ""

    def __post_init__(self) -> None:
        _check_choice("image_set", self.image_set, IMAGE_SET_CHOICES)
        _check_choice("stats", self.stats, STATS_CHOICES)
        for name in ("top_k", "gap_k", "triage_k"):
            if getattr(self, name) < 1:
                raise ValueError(f"'{name}' must be at least 1, got {getattr(self, name)}")

    # Read like the dict the settings used to be, so `settings.get("gap_k", 100)` keeps working.
    def get(self, key: str, default: Any = None) -> Any:
        return getattr(self, key, default) if key in _FIELD_NAMES else default

    def __getitem__(self, key: str) -> Any:
        if key not in _FIELD_NAMES:
            raise KeyError(key)
        return getattr(self, key)

    def __contains__(self, key: object) -> bool:
        return key in _FIELD_NAMES

    def keys(self) -> list[str]:
        return list(_FIELD_NAMES)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def updated(self, changes: dict[str, Any], source: str = "settings") -> "ProjectSettings":
        """A copy with `changes` applied, checked like a file's settings."""
        return settings_from_dict({**self.to_dict(), **changes}, source)


_FIELD_NAMES = tuple(f.name for f in dataclasses.fields(ProjectSettings))


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"'{name}' must be one of {list(choices)}, got {value!r}")


def settings_from_dict(data: Any, source: str) -> ProjectSettings:
    """ProjectSettings from a file's "settings" mapping; TypedValueError naming `source` and the key."""
    try:
        return from_mapping(ProjectSettings, data, source, "settings")
    except TypedValueError:
        raise
    except ValueError as err:  # a value of the right type outside its range
        raise TypedValueError(f"{source}: settings: {err}.") from None
