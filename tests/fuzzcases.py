"""A registry of the bad inputs and faults that the fuzz tests try.

Each fuzz test is decorated with `@bad_input(area, tried, outcome)`: `area` groups it (images, datasets,
manifests, zips, checkpoints, votes, names, queries, server, jobs, disk), `tried` says in a sentence what
the test feeds spuraudit, `outcome` what a user then sees and what stays intact. `docs/bad-input.md` is
generated from this registry, so the page lists exactly what the tests assert.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class BadInput:
    area: str
    tried: str
    outcome: str
    test: str  # module::function, where to read the assertion


REGISTRY: list[BadInput] = []


def bad_input(area: str, tried: str, outcome: str) -> Callable:
    """Register the decorated test as one kind of bad input or fault (see the module docstring)."""

    def register(fn: Callable) -> Callable:
        REGISTRY.append(BadInput(area, tried, outcome, f"{fn.__module__}::{fn.__name__}"))
        return fn

    return register
