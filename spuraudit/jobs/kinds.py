"""Job kinds: short names that map to job functions by import path.

A job function has the signature `fn(ctx: JobContext, **params) -> dict | None` and returns a
JSON-able result. Workers run it in a fresh process, so functions are named by import path
("package.module:function") rather than passed as objects; a kind containing ':' is itself such
a path (handy for tests and plug-ins).

Built-in kinds go in `KINDS` below. Entries
added at run time with `register_kind` also work in workers, because `JobQueue.submit` stores the
resolved path in the job row.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

# The built-in kinds, named once; pages, the CLI and tests submit jobs with these constants.
DEMO_BUILD = "demo.build"
FEATURES_EXTRACT = "features.extract"
MITIGATE_RUN = "mitigate.run"
AUTOLABEL_RUN = "autolabel.run"
AUTOLABEL_CONCEPTS = "autolabel.concepts"
PROJECT_CREATE = "project.create"
COLLISIONS_CROP = "collisions.crop"
SENSITIVITY_RUN = "sensitivity.run"
MODELS_EXTRACT = "models.extract"

KINDS: dict[str, str] = {
    DEMO_BUILD: "spuraudit.tasks:build_demo_job",
    FEATURES_EXTRACT: "spuraudit.tasks:extract_features_job",
    MITIGATE_RUN: "spuraudit.mitigate.jobs:run_mitigation_job",
    AUTOLABEL_RUN: "spuraudit.autolabel.base:run_autolabel_job",
    AUTOLABEL_CONCEPTS: "spuraudit.autolabel.clip:concept_scores_job",
    PROJECT_CREATE: "spuraudit.create:create_project_job",
    COLLISIONS_CROP: "spuraudit.collisions:core_cropping_job",
    SENSITIVITY_RUN: "spuraudit.sensitivity:sensitivity_job",
    MODELS_EXTRACT: "spuraudit.multimodel:extract_models_job",
}


class UnknownJobKind(ValueError):
    """A job kind that is neither registered nor an import path."""


def register_kind(name: str, target: str) -> None:
    """Map the kind `name` to the job function at `target` ("package.module:function")."""
    _check_target(target)
    KINDS[name] = target


def target_for(kind: str) -> str:
    """The import path of `kind`'s job function (without importing it)."""
    if kind in KINDS:
        return KINDS[kind]
    if ":" in kind:
        _check_target(kind)
        return kind
    known = ", ".join(sorted(KINDS)) or "none registered"
    raise UnknownJobKind(f"unknown job kind '{kind}' (known kinds: {known}; or use 'package.module:function')")


def load_target(target: str) -> Callable[..., Any]:
    """Import and return the callable at "package.module:attr[.attr...]"."""
    _check_target(target)
    module_name, _, attr_path = target.partition(":")
    obj: Any = importlib.import_module(module_name)
    for attr in attr_path.split("."):
        obj = getattr(obj, attr)
    if not callable(obj):
        raise TypeError(f"job target {target} is not callable")
    return obj


def resolve_kind(kind: str) -> Callable[..., Any]:
    """The job function of `kind`."""
    return load_target(target_for(kind))


def _check_target(target: str) -> None:
    module_name, sep, attr_path = target.partition(":")
    if not sep or not module_name.strip() or not attr_path.strip():
        raise UnknownJobKind(f"job target '{target}' is not of the form 'package.module:function'")
