"""Collisions, flags and core cropping find what the demo planted.

Ground truth comes from the demo's own columns: the square is spurious for digit 0, digit 1 is drawn in
red (redness is its core), and a few test images of digit 7 also hold a red 1 (`multi_object`). The
square features of digit 0 are labelled spurious (as a reviewer who sees the square would); those of
them that are also top features of digit 1 are the collision, and a reviewer who sees them fire on the
red digits inside 7s labels them spurious for 7 as well.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from spuraudit.analysis import auroc
from spuraudit.analysis.collisions import DEFAULT_FLAG_CUT
from spuraudit.audit import Audit
from spuraudit.collisions import collision_flags, collision_report, core_cropping
from spuraudit.data.demo import MULTI_COLUMN, RED_COLUMN
from spuraudit.labels.marks import MarkStore, marks_path

from .test_demo_audit import CUE_CLASS, SPEC, square_features

RED_CLASS, CONFUSED_CLASS = SPEC.red_class, SPEC.confused_class


def ground_truth_labels(audit: Audit) -> dict[int, list[int]]:
    square = square_features(audit)
    red_top = {int(d) for d in audit.top_features(RED_CLASS, k=5, split="test")["feature"]}
    return {CUE_CLASS: square, CONFUSED_CLASS: sorted(d for d in square if d in red_top)}


@pytest.fixture(scope="module")
def labelled(demo_project):
    """(audit with the ground-truth labels, the collision report, the flags) on the test split."""
    audit = Audit(demo_project, demo_project.feature_store(), spurious={})
    audit = Audit(demo_project, demo_project.feature_store(), spurious=ground_truth_labels(audit))
    report = collision_report(audit, "test")
    return audit, report, collision_flags(audit, report, "test")


def test_the_planted_collision_is_found(labelled):
    audit, report, _ = labelled
    assert audit.spurious[CONFUSED_CLASS], "no square feature of digit 0 is a top feature of digit 1"
    found = report.collisions[(report.collisions["class_index"] == CUE_CLASS) & report.collisions["core_there"]]
    assert RED_CLASS in set(found["other_index"])
    test = audit.split_mask("test")
    red = audit.table.frame[RED_COLUMN].to_numpy().astype(bool)
    for d in found.loc[found["other_index"] == RED_CLASS, "feature"]:
        assert auroc(np.asarray(audit.features[test, int(d)]), red[test]) >= 0.9  # it is the redness detector
    # the cue class keeps its positive gap: the square helps it (the original story)
    gaps = report.gaps.per_class.set_index("class_index")["gap"]
    assert gaps[CUE_CLASS] >= 20


def test_the_negative_gap_class_is_explained_by_the_collision(labelled):
    audit, report, _ = labelled
    assert report.negative == [CONFUSED_CLASS]
    rows = report.collisions[(report.collisions["class_index"] == CONFUSED_CLASS)
                             & (report.collisions["other_index"] == RED_CLASS)]
    assert len(rows) and rows["core_there"].all()
    two = audit.table.frame[MULTI_COLUMN].to_numpy().astype(bool) & audit.split_mask("test")
    assert rows["flow_n"].max() >= 0.6 * two.sum()  # most of the two-digit 7s are predicted as the red 1
    flows = report.flows[report.flows["class_index"] == CONFUSED_CLASS].set_index("predicted_index")["n"]
    assert flows[RED_CLASS] == rows["flow_n"].max()


def test_flags_are_the_two_digit_images(labelled):
    audit, _, flags = labelled
    assert set(flags["class_index"]) == {CONFUSED_CLASS}
    assert flags["strength"].is_monotonic_decreasing
    flagged = set(flags.loc[flags["flagged"], "row"])
    truth = set(np.flatnonzero(audit.table.frame[MULTI_COLUMN].to_numpy().astype(bool) & audit.split_mask("test")))
    hit = len(flagged & truth)
    precision, recall = hit / max(1, len(flagged)), hit / len(truth)
    assert precision >= 0.8 and recall >= 0.8, (precision, recall, DEFAULT_FLAG_CUT)


def test_core_cropping_raises_accuracy_on_the_flagged_images(labelled):
    audit, report, flags = labelled
    result = core_cropping(audit, flags, report, "test").set_index("images")
    flagged = result.loc["flagged"]
    assert flagged["n"] == flags["flagged"].sum()
    assert flagged["acc_after"] >= flagged["acc_before"] + 20
    high = result.loc["high spuriosity"]
    assert high["acc_after"] >= high["acc_before"]


def test_cli_reports_collisions_flags_crops_and_marks(demo_copy, capsys):
    from spuraudit.cli import main

    audit = Audit(demo_copy, demo_copy.feature_store(), spurious={})
    for c, features in ground_truth_labels(audit).items():
        assert main(["mark", "--project", str(demo_copy.folder), "--class", str(c), "--feature",
                     *map(str, features)]) == 0
    capsys.readouterr()

    def run(*argv):
        assert main([*argv, "--project", str(demo_copy.folder), "--json"]) == 0
        return json.loads(capsys.readouterr().out)

    out = run("collisions")
    assert out["negative_gap_classes"] == [CONFUSED_CLASS]
    assert {(r["class_index"], r["other_index"]) for r in out["collisions"]} >= {(CUE_CLASS, RED_CLASS),
                                                                                (CONFUSED_CLASS, RED_CLASS)}
    flags = run("flags")["images"]
    assert flags and all(f["flagged"] and f["class_index"] == CONFUSED_CLASS for f in flags)
    crop = {r["images"]: r for r in run("crop")["results"]}
    assert crop["flagged"]["acc_after"] > crop["flagged"]["acc_before"]

    store = MarkStore(marks_path(demo_copy.folder))
    store.add(demo_copy.table.frame["path"].iloc[flags[0]["row"]], CONFUSED_CLASS, "several_objects", "tester")
    target = demo_copy.folder.parent / "marks.csv"
    assert run("marks", "export", str(target))["marks"] == 1
    assert "several_objects" in target.read_text()
    assert main(["marks", "export", "--project", str(demo_copy.folder)]) == 2  # no file named
    assert "needs the CSV file" in capsys.readouterr().err


def test_core_cropping_job_keeps_its_table_with_the_project(demo_copy, tmp_path):
    from spuraudit.collisions import core_cropping_job, crop_result_path
    from spuraudit.jobs import LocalContext
    from spuraudit.jobs.kinds import COLLISIONS_CROP, resolve_kind

    assert resolve_kind(COLLISIONS_CROP) is core_cropping_job
    audit = Audit(demo_copy, demo_copy.feature_store(), spurious={})
    for c, features in ground_truth_labels(audit).items():
        for d in features:
            demo_copy.labels().add_vote(c, d, "background", annotator="tester")
    result = core_cropping_job(LocalContext(tmp_path / "job"), str(demo_copy.folder), split="test")
    rows = {r["images"]: r for r in result["rows"]}
    assert rows["flagged"]["acc_after"] >= rows["flagged"]["acc_before"] + 20
    saved = crop_result_path(demo_copy, "test")
    assert result["file"] == str(saved) and saved.read_text().startswith("class_index,class,images,n,")


def test_collisions_page_shows_the_flows_flags_and_crop(demo_copy, monkeypatch):
    from pathlib import Path

    from streamlit.testing.v1 import AppTest

    audit = Audit(demo_copy, demo_copy.feature_store(), spurious={})
    for c, features in ground_truth_labels(audit).items():
        for d in features:
            demo_copy.labels().add_vote(c, d, "background", annotator="tester")
    monkeypatch.setenv("SPURAUDIT_HOME", str(demo_copy.folder.parent.parent))
    page = Path(__file__).resolve().parents[1] / "pages" / "collisions.py"
    at = AppTest.from_file(str(page), default_timeout=180)
    at.query_params["project"] = "demo"
    at.query_params["annotator"] = "ana"
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.title[0].value == "Spurious feature collisions"
    assert len(at.get("plotly_chart")) == 1  # the flows
    assert any("digit 7" in m.value and "gap -" in m.value for m in at.markdown)
    radios = [r for r in at.radio if r.key and r.key.startswith("mark-")]
    assert len(radios) >= 12  # one per flagged image
    radios[0].set_value("label_error").run()
    assert [m["mark"] for m in MarkStore(marks_path(demo_copy.folder)).marks()] == ["label_error"]
    next(b for b in at.button if b.label == "Crop and classify again").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert len(at.get("plotly_chart")) == 2  # and the before/after bars
