"""Entry points that the background job runner calls (`fn(ctx, **params) -> dict`).

Long work never runs in a page: a page submits one of these as a job and polls its progress.
"""

from __future__ import annotations

from pathlib import Path


def extract_features_job(ctx, project: str, model: str | None = None) -> dict:
    """Extract pooled features, logits and predictions of `model` (default: the project's) on `project`."""
    from .project import Project

    proj = Project.open(Path(project))
    ctx.log(f"extracting features: project {proj.name}, model {model or proj.model}")
    store = proj.extract(model_folder=model, progress=ctx.progress)
    ctx.log(f"done: {store.meta}")
    return {"store": str(store.path), **store.meta}


def build_demo_job(ctx, base: str | None = None, seed: int = 0) -> dict:
    """Build the built-in demo (data, model, project, features) under `base`."""
    from .demo import build_demo

    project = build_demo(base=Path(base) if base else None, seed=int(seed), progress=ctx.progress)
    ctx.log(f"demo ready: {project.folder}")
    return {"project": str(project.folder)}
