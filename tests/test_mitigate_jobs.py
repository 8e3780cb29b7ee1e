"""Mitigation as a background job: progress, cancellation, and no half-written model folder ever."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from spuraudit.jobs import JobCancelled, LocalContext
from spuraudit.mitigate import list_mitigated_models, run_mitigation
from spuraudit.mitigate.jobs import JOB_KIND, run_mitigation_job
from spuraudit.modelio import load_model
from tests.test_mitigate_fixtures import labelled_demo  # noqa: F401  (fixture)

REPO = Path(__file__).resolve().parents[1]


def _model_folders(parent: Path) -> set[str]:
    return {p.name for p in parent.iterdir() if p.is_dir()}


def test_job_runs_and_reports(labelled_demo, tmp_path):
    project, _ = labelled_demo
    ctx = LocalContext(tmp_path / "job")
    result = run_mitigation_job(ctx, project=str(project.folder), method="head_tuning", options={"seed": 1})
    assert JOB_KIND == "mitigate.run"
    folder = Path(result["model_folder"])
    assert load_model(folder)[1].options["seed"] == 1
    assert result["test_accuracy"] > 0 and "test_worst_group_accuracy" in result
    fractions = [f for f, _ in ctx.reports if f is not None]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert "Low-spuriosity head tuning" in (ctx.work_dir / "log.txt").read_text()


def test_cancelled_job_leaves_no_model(labelled_demo, tmp_path):
    project, _ = labelled_demo
    parent_dir = project.model_folder.parent
    before = _model_folders(parent_dir)

    class CancelMidway(LocalContext):
        def progress(self, fraction, message=""):
            super().progress(fraction, message)
            if fraction is not None and fraction > 0.5:
                self.request_cancel()

    with pytest.raises(JobCancelled):
        run_mitigation_job(CancelMidway(tmp_path / "job"), project=str(project.folder), method="head_tuning",
                           options={"seed": 2})
    assert _model_folders(parent_dir) == before


def test_failure_while_saving_leaves_nothing(labelled_demo, tmp_path, monkeypatch):
    project, _ = labelled_demo
    import spuraudit.modelio.card as card_module

    def broken_save(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(card_module.torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        run_mitigation(project, "head_tuning", {"seed": 0}, out_folder=tmp_path / "models" / "new")
    assert not (tmp_path / "models" / "new").exists()
    assert list((tmp_path / "models").iterdir()) == []  # the temporary folder went too


def test_killed_mid_save_leaves_no_complete_looking_folder(labelled_demo):
    """SIGKILL at the worst moment: weights and card written, the final rename not yet done."""
    project, _ = labelled_demo
    models = project.model_folder.parent
    before = _model_folders(models)
    out = models / "killed-mid-save"
    script = textwrap.dedent(f"""
        import os, signal
        import spuraudit.atomic as atomic
        from spuraudit.mitigate import run_mitigation
        from spuraudit.project import Project

        rename = os.rename

        def die(src, dst):
            if os.path.dirname(os.fspath(dst)) != {str(models)!r}:
                return rename(src, dst)  # other folders (the derived feature store) are published as usual
            os.kill(os.getpid(), signal.SIGKILL)

        atomic.os.rename = die  # the rename that publishes the finished model folder
        run_mitigation(Project.open({str(project.folder)!r}), "head_tuning", {{"seed": 0}}, out_folder={str(out)!r})
    """)
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == -9, proc.stderr[-2000:]
    new = _model_folders(models) - before
    try:
        assert not out.exists()
        assert new and all(name.startswith(".tmp-") for name in new)  # obviously temporary
        assert any((models / name / "model.yaml").exists() for name in new)  # killed after the card was written
        # ... and yet the listing does not take it for a model.
        assert not [f for f, _ in list_mitigated_models(project) if f.name in new]
    finally:
        for name in new:
            shutil.rmtree(models / name)
