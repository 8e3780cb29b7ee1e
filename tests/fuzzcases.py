"""A registry of the bad inputs and faults that the fuzz tests try.

Each fuzz test is decorated with `@bad_input(area, tried, outcome)`: `area` groups it (images, datasets,
manifests, zips, checkpoints, votes, names, queries, server, jobs, disk), `tried` says in a sentence what
the test feeds spuraudit, `outcome` what a user then sees and what stays intact. `docs/bad-input.md` is
generated from this registry, so the page lists exactly what the tests assert.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
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


# ---- the generated page ----------------------------------------------------------------------------
DOC = Path(__file__).resolve().parents[1] / "docs" / "bad-input.md"
# Areas in the order the page lists them; any other area follows, alphabetically.
AREA_ORDER = ("images", "datasets", "manifests", "zips", "checkpoints", "votes", "names", "queries", "server",
              "jobs", "disk")


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def render(cases: list[BadInput]) -> str:
    """The markdown page: one table per area, the cases in the order their modules define them."""
    unique = list({c.test: c for c in cases}.values())
    areas = sorted({c.area for c in unique}, key=lambda a: (AREA_ORDER.index(a) if a in AREA_ORDER else len(AREA_ORDER), a))
    lines = [
        "# Bad input and faults",
        "",
        "What spuraudit does with hostile or broken input. Every row is a test that feeds it exactly that and",
        "asserts the outcome: a message naming the file, row or entry, no traceback, nothing written outside",
        "spuraudit's home, nothing half-made, earlier data intact.",
        "",
        "Generated from the tests by `python -m tests.fuzzcases`; a test fails when this page and the tests",
        "disagree, so edit the `@bad_input(...)` decorators, not this file.",
        "",
        f"{len(unique)} cases in {len(areas)} areas.",
    ]
    for area in areas:
        lines += ["", f"## {area.capitalize()}", "", "| Tried | Outcome | Test |", "| --- | --- | --- |"]
        for case in (c for c in unique if c.area == area):
            module, name = case.test.split("::")
            lines.append(f"| {_cell(case.tried)} | {_cell(case.outcome)} | `{module.split('.')[-1]}.py::{name}` |")
    return "\n".join(lines) + "\n"


def collect() -> list[BadInput]:
    """Import every `tests/test_fuzz*.py` module so that their decorators fill the registry."""
    import importlib

    registry = importlib.import_module("tests.fuzzcases")  # the copy the test modules register into
    for path in sorted(Path(__file__).resolve().parent.glob("test_fuzz*.py")):
        importlib.import_module(f"tests.{path.stem}")
    return list(registry.REGISTRY)


def main(argv: list[str] | None = None) -> int:
    """Write docs/bad-input.md from the tests; with --check, only say whether the committed page is current."""
    import os
    import sys

    argv = sys.argv[1:] if argv is None else argv
    text = render(collect())
    if "--check" in argv:
        current = DOC.read_text(encoding="utf-8") if DOC.exists() else ""
        if current != text:
            print(f"{DOC} is out of date: run `python -m tests.fuzzcases` and commit the result.", file=sys.stderr)
            return 1
        return 0
    tmp = DOC.with_suffix(".md.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, DOC)
    print(f"wrote {DOC}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
