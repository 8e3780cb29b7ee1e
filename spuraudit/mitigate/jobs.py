"""The background-job entry point of mitigation (job kind "mitigate.run").

    run_mitigation_job(ctx, project="/home/projects/demo", method="masktune", options={"seed": 0})

The job runner calls it in a worker process with a context offering `progress(fraction, message)`,
`log(message)` and `check_cancelled()` (which raises `JobCancelled`). Progress reports double as
cancellation points, so a cancel request stops the run at its next report. The new model folder is
written atomically at the very end (`run_mitigation`), so a failed, cancelled or killed job leaves no
folder that looks complete.
"""

from __future__ import annotations

from pathlib import Path

from ..jobs.kinds import MITIGATE_RUN as JOB_KIND  # noqa: F401  (the kind this module serves)


def _reporter(ctx):
    """Progress callback that is also a cancellation point (the context rate-limits its own writes)."""

    def report(fraction: float, message: str) -> None:
        ctx.check_cancelled()
        ctx.progress(fraction, message)

    return report


def run_mitigation_job(ctx, project: str, method: str, options: dict | None = None, parent: str | None = None,
                       out_folder: str | None = None) -> dict:
    """Run `method` on the project at folder `project`; returns the new model folder, its name and its
    headline test metrics (points)."""
    from ..project import Project
    from . import get_method, run_mitigation

    proj = Project.open(Path(project))
    mitigation = get_method(method)
    resolved = mitigation.resolve_options(options)  # fail fast, before any work, on a bad option
    ctx.log(f"{mitigation.label} of {parent or proj.model} on project {proj.name}; options {resolved}")
    folder = run_mitigation(proj, method, resolved, progress=_reporter(ctx), out_folder=out_folder,
                            parent_folder=parent)
    from ..modelio import ModelCard
    from ..modelio.card import CARD_FILE

    card = ModelCard.from_yaml((folder / CARD_FILE).read_text())
    headline = {k: v for k, v in card.metrics.items()
                if k in ("test_accuracy", "test_worst_group_accuracy", "val_accuracy", "val_worst_group_accuracy")}
    ctx.log(f"wrote {folder}: {headline}")
    return {"model_folder": str(folder), "name": card.name, "method": method, **headline}
