"""The segmentation auto-labeler: its scores on constructed maps, the demo's ground truth, the model path."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from spuraudit.analysis import auroc
from spuraudit.audit import Audit
from spuraudit.autolabel import (
    AutoLabelError,
    Proposal,
    SegmentationLabeler,
    make_labeler,
    run_autolabel,
    run_autolabel_job,
    store_proposals,
)
from spuraudit.autolabel.masks import (
    FOREGROUND,
    SegmentationModelMasks,
    load_segmentation_model,
    parse_target,
    predict_segmentation,
)
from spuraudit.autolabel.segmentation import nam_mask_scores, pair_score, segmentation_answer
from spuraudit.data.demo import CUE_COLUMN

from .test_demo_audit import CUE_CLASS, SQUARE_AUROC as CUE_AUROC


# ---- scores on constructed maps ----------------------------------------------------------------
def _square(size: int, top: int, left: int, side: int) -> np.ndarray:
    out = np.zeros((size, size), dtype=bool)
    out[top:top + side, left:left + side] = True
    return out


def test_scores_of_a_nam_on_the_object_outside_it_and_half_on_it():
    mask = _square(10, 2, 2, 4)  # 16 of 100 pixels
    on = mask.astype(np.float32)
    off = _square(10, 6, 6, 4).astype(np.float32)
    half = np.where(mask | _square(10, 2, 6, 4), 1.0, 0.0).astype(np.float32)  # 16 px on, 16 px beside
    scores = nam_mask_scores(np.stack([on, off, half]), np.stack([mask, mask, mask]))
    np.testing.assert_allclose(scores["iou"], [1.0, 0.0, 0.5])
    np.testing.assert_allclose(scores["mass_inside"], [1.0, 0.0, 0.5])
    np.testing.assert_allclose(scores["mask_area"], [0.16, 0.16, 0.16])
    np.testing.assert_allclose(scores["lift"], [1 / 0.16, 0.0, 0.5 / 0.16])
    np.testing.assert_allclose(scores["nam_area"], [0.16, 0.16, 0.32])


def test_soft_nam_iou_binarises_at_half_and_mass_uses_the_soft_values():
    mask = np.zeros((1, 4, 4), dtype=bool)
    mask[0, :2] = True  # top half
    nam = np.zeros((1, 4, 4), dtype=np.float32)
    nam[0, :2] = 0.4  # below 0.5: not "on" for the IoU, but mass all the same
    nam[0, 3, 3] = 1.0
    scores = nam_mask_scores(nam, mask)
    assert scores["iou"][0] == pytest.approx(0.0)  # only the bottom-right pixel is on, outside the mask
    assert scores["mass_inside"][0] == pytest.approx(3.2 / 4.2)


def test_undefined_images_give_nan_and_are_left_out_of_the_pair_score():
    mask = _square(6, 0, 0, 3)
    nams = np.stack([np.zeros((6, 6)), mask.astype(float)])  # an all-zero NAM, then a perfect one
    masks = np.stack([mask, mask])
    scores = nam_mask_scores(nams, masks)
    assert np.isnan(scores["mass_inside"][0]) and scores["mass_inside"][1] == 1.0
    assert pair_score(scores, "mass_inside") == 1.0
    empty = nam_mask_scores(mask[None].astype(float), np.zeros((1, 6, 6), dtype=bool))
    assert np.isnan(empty["lift"][0]) and empty["mass_inside"][0] == 0.0
    with pytest.raises(AutoLabelError):
        segmentation_answer(float("nan"), 1.0)
    with pytest.raises(ValueError):
        nam_mask_scores(np.zeros((2, 4, 4)), np.zeros((2, 4, 5), dtype=bool))


def test_answer_and_confidence_follow_the_threshold():
    assert segmentation_answer(1.0, 1.35) == "background"
    assert segmentation_answer(1.35, 1.35) == "main_object"
    with pytest.raises(AutoLabelError, match="metric"):
        SegmentationLabeler(metric="dice")
    with pytest.raises(AutoLabelError, match="unknown auto-labeler"):
        make_labeler("ocr")
    with pytest.raises(AutoLabelError, match="threshold_x"):
        make_labeler("segmentation", threshold_x=1)


# ---- the demo ---------------------------------------------------------------------------------
def _cue_detector(audit: Audit, class_index: int, feature: int) -> bool:
    """Ground truth from the demo's own data: on the class's own test images, the feature's activation
    detects the planted square (which sits off the digit)."""
    rows = audit.class_rows(class_index, "test")
    cue = audit.table.frame[CUE_COLUMN].to_numpy().astype(bool)[rows]
    return auroc(np.asarray(audit.features[rows, feature]), cue) >= CUE_AUROC


def test_demo_proposals_match_the_planted_cue(demo_copy):
    """The labeler finds the planted-cue feature and agrees with the demo's ground truth on ≥ 80 % of
    the top-5 features of every class.

    Ground truth per pair: spurious when the feature detects the red square on the class's own test
    images (AUROC ≥ 0.85), else core. Digit 0 leans on the square; the other classes' top features
    look at the digit (digit 1's at its red strokes, which are on the object: core).
    """
    audit = Audit(demo_copy, demo_copy.feature_store(), spurious={})
    top0 = [int(d) for d in audit.top_features(CUE_CLASS, k=5, split="test")["feature"]]
    scores = {d: auroc(np.asarray(audit.features[audit.class_rows(CUE_CLASS, "test"), d]),
                       audit.table.frame[CUE_COLUMN].to_numpy().astype(bool)[audit.class_rows(CUE_CLASS, "test")])
              for d in top0}
    cue_feature = max(scores, key=scores.get)  # the top-5 feature that best detects the square
    demo_copy.labels().add_vote(1, 3, "background", annotator="ana")  # a person's vote stays untouched
    report = run_autolabel(demo_copy, SegmentationLabeler(), audit=audit)
    proposals = {p.pair: p for p in report.proposals}
    classes = len(audit.class_names)
    assert len(proposals) == 5 * classes and not report.skipped

    assert proposals[(CUE_CLASS, cue_feature)].answer == "background"
    agree = [proposals[pair].is_spurious == _cue_detector(audit, *pair) for pair in proposals]
    assert np.mean(agree) >= 0.8, {pair: (round(proposals[pair].evidence["score"], 2), _cue_detector(audit, *pair))
                                   for pair in proposals}
    core_truth = [pair for pair in proposals if not _cue_detector(audit, *pair)]
    assert np.mean([not proposals[pair].is_spurious for pair in core_truth]) >= 0.8

    # stored as machine votes, with the evidence and the images it came from
    store = demo_copy.labels()
    machine = store.votes(annotator="auto:segmentation", machine=True)
    assert {v.pair for v in machine} == set(proposals)
    vote = next(v for v in machine if v.pair == (CUE_CLASS, cue_feature))
    expected = audit.feature_images(CUE_CLASS, cue_feature, 8, "test", "correct")
    assert vote.evidence["images"] == [int(i) for i in expected]
    assert len(vote.evidence["per_image"]["iou"]) == len(expected) and vote.evidence["metric"] == "lift"
    assert store.label(CUE_CLASS, cue_feature).proposed
    assert [v.annotator for v in store.votes(1, 3)] == ["ana"]

    # a re-run replaces the earlier proposals (none doubled) and leaves the person's vote alone
    run_autolabel(demo_copy, SegmentationLabeler(threshold=0.5), audit=audit)
    machine = store.votes(annotator="auto:segmentation", machine=True)
    assert len(machine) == 5 * classes and all(v.answer == "main_object" for v in machine)
    assert store.votes(annotator="ana")[0].answer == "background"


def test_job_runs_on_chosen_pairs_reports_progress_and_keeps_other_proposals(demo_copy, tmp_path):
    from spuraudit.jobs import LocalContext

    store = demo_copy.labels()
    store.replace_machine_votes("auto:segmentation", [{"class_index": 1, "feature_index": 99, "answer": "background"}])
    ctx = LocalContext(tmp_path / "job")
    result = run_autolabel_job(ctx, str(demo_copy.folder), "segmentation", {"images_per_pair": 4},
                               pairs=[[0, 5], [1, 7]])
    assert result["n_proposals"] == 2 and result["annotator"] == "auto:segmentation"
    assert ctx.reports[-1][0] == 1.0 and len(ctx.reports) >= 3
    assert "auto:segmentation: 2 proposals" in ctx.log_path.read_text()
    pairs = {v.pair for v in store.votes(annotator="auto:segmentation")}
    assert pairs == {(0, 5), (1, 7), (1, 99)}  # the run over two pairs kept the proposal on a third
    assert store.get_setting("autolabel.segmentation.last_run")["n_proposals"] == 2


def test_cancelled_job_writes_nothing(demo_copy, tmp_path):
    from spuraudit.jobs import JobCancelled, LocalContext

    ctx = LocalContext(tmp_path / "job")
    ctx.request_cancel()
    with pytest.raises(JobCancelled):
        run_autolabel_job(ctx, str(demo_copy.folder), "segmentation", {}, pairs=[[0, 5], [1, 7]])
    assert demo_copy.labels().votes() == []


def test_job_kinds_resolve_to_the_job_functions():
    from spuraudit.autolabel import JOB_KINDS, concept_scores_job, ensure_job_kinds
    from spuraudit.jobs import resolve_kind

    ensure_job_kinds()
    assert resolve_kind("autolabel.run") is run_autolabel_job
    assert resolve_kind("autolabel.concepts") is concept_scores_job
    assert set(JOB_KINDS) == {"autolabel.run", "autolabel.concepts"}


def test_store_proposals_replaces_only_the_pairs_it_ran_on(tmp_path):
    from spuraudit.labels import LabelStore

    store = LabelStore(tmp_path / "labels.db")
    store_proposals(store, "auto:x", [Proposal(0, 1, "background", 2, "r", {"images": [1]}),
                                      Proposal(0, 2, "main_object", 3, "r", {})])
    store_proposals(store, "auto:x", [Proposal(0, 1, "main_object", 4, "again", {"images": [2]})])
    votes = {v.pair: v for v in store.votes(annotator="auto:x")}
    assert votes[(0, 1)].answer == "main_object" and votes[(0, 1)].evidence == {"images": [2]}
    assert votes[(0, 2)].answer == "main_object" and len(votes) == 2
    store_proposals(store, "auto:x", [], keep_other_pairs=False)
    assert store.votes(annotator="auto:x") == []


# ---- masks from a segmentation model (plumbing, with a random model) ---------------------------
@pytest.fixture(scope="module")
def tiny_segmenter(tmp_path_factory):
    from torchvision.models.segmentation import lraspp_mobilenet_v3_large

    torch.manual_seed(0)
    model = lraspp_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=3).eval()
    folder = tmp_path_factory.mktemp("seg")
    plain = folder / "lraspp.pth"
    torch.save(model.state_dict(), plain)
    wrapped = folder / "lraspp-wrapped.pth"  # as torchvision's training references save, behind DataParallel
    torch.save({"model": {f"module.{k}": v for k, v in model.state_dict().items()}, "epoch": 3}, wrapped)
    return model, plain, wrapped


def test_segmentation_model_loads_from_local_files_and_predicts_masks(tiny_segmenter):
    model, plain, wrapped = tiny_segmenter
    x = torch.rand(2, 3, 20, 24)
    for path in (plain, wrapped):
        loaded = load_segmentation_model("lraspp_mobilenet_v3_large", path)  # 3 classes read from the file
        masks = predict_segmentation(loaded, x, FOREGROUND, input_size=32)
        assert masks.shape == (2, 20, 24) and masks.dtype == bool
        with torch.no_grad():
            big = torch.nn.functional.interpolate(x, size=(32, 38), mode="bilinear", align_corners=False)
            mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
            std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
            labels = model((big - mean) / std)["out"].argmax(1, keepdim=True).float()
        expected = torch.nn.functional.interpolate(labels, size=(20, 24), mode="nearest")[:, 0] == 2
        np.testing.assert_array_equal(predict_segmentation(loaded, x, 2, input_size=32), expected.numpy())
    assert parse_target("dog") == 12 and parse_target("2") == 2 and parse_target("") == FOREGROUND


def test_segmentation_model_errors_say_what_to_do(tiny_segmenter, tmp_path):
    _, plain, _ = tiny_segmenter
    with pytest.raises(AutoLabelError, match="local path"):
        load_segmentation_model("deeplabv3_resnet50", tmp_path / "missing.pth")
    with pytest.raises(AutoLabelError, match="unknown segmentation architecture"):
        load_segmentation_model("unet", plain)
    with pytest.raises(AutoLabelError, match="does not fit"):
        load_segmentation_model("deeplabv3_mobilenet_v3_large", plain)
    with pytest.raises(AutoLabelError, match="VOC name|foreground"):
        parse_target("unicorn")


def test_labeler_with_model_masks_on_the_demo(demo_project, tiny_segmenter):
    _, plain, _ = tiny_segmenter
    audit = Audit(demo_project, demo_project.feature_store(), spurious={})
    labeler = SegmentationLabeler(mask_source="model", seg_architecture="lraspp_mobilenet_v3_large",
                                  seg_checkpoint=str(plain), seg_target=1, seg_input_size=32, images_per_pair=3)
    skipped: list = []
    proposals = labeler.propose(audit, [(0, 5), (1, 7)], skipped=skipped)
    for p in proposals:  # a random segmenter's masks mean nothing; the evidence must still be complete
        assert p.evidence["mask_source"] == "lraspp_mobilenet_v3_large from lraspp.pth"
        assert len(p.evidence["per_image"]["mask_area"]) == 3
    assert len(proposals) + len(skipped) == 2
    assert labeler.options()["seg_target"] == 1
    assert isinstance(labeler._masks, SegmentationModelMasks)


def test_command_line_runs_the_labeler(demo_copy, capsys):
    import argparse
    import json

    from spuraudit.autolabel.cli import cmd_autolabel, configure_autolabel_parser

    parser = argparse.ArgumentParser()  # what `spuraudit`'s sub-command helper adds around the options
    parser.add_argument("--project")
    parser.add_argument("--split")
    parser.add_argument("--json", action="store_true")
    configure_autolabel_parser(parser)
    args = parser.parse_args(["--project", str(demo_copy.folder), "--labeler", "segmentation", "--pair", "0", "5",
                              "--pair", "1", "7", "--images-per-pair", "4", "--json"])
    assert cmd_autolabel(args) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["n_proposals"] == 2 and result["options"]["images_per_pair"] == 4
    assert {v.pair for v in demo_copy.labels().votes(annotator="auto:segmentation")} == {(0, 5), (1, 7)}
