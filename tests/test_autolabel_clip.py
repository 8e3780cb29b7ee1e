"""The CLIP auto-labeler: decisions on constructed embeddings, and the plumbing with a tiny random CLIP."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from spuraudit.audit import Audit
from spuraudit.autolabel import AutoLabelError, ClipLabeler, run_autolabel
from spuraudit.autolabel.clip import (
    Concept,
    clip_decision,
    compute_concept_similarities,
    concept_spuriosity,
    concept_spuriosity_scores,
    cosine_similarity,
    load_clip,
    load_concept_similarities,
    nam_views,
    parse_concepts,
)

# ---- pure functions -----------------------------------------------------------------------------


def test_parse_concepts_from_text_and_lists():
    concepts = parse_concepts("a red square | separate_object\nwater\n\ngrass, sky | background\nwater")
    assert concepts == [Concept("a red square", "separate_object"), Concept("water"),
                        Concept("grass, sky", "background")]
    assert parse_concepts("water, sand") == [Concept("water"), Concept("sand")]
    assert parse_concepts([{"text": "dog", "answer": "separate_object"}, "lake"]) == [
        Concept("dog", "separate_object"), Concept("lake")]
    with pytest.raises(AutoLabelError, match="after '\\|'"):
        parse_concepts("water | wet")


def test_cosine_similarity_normalises():
    sims = cosine_similarity(np.array([[2.0, 0.0], [1.0, 1.0]]), np.array([[0.0, 3.0], [5.0, 0.0]]))
    np.testing.assert_allclose(sims, [[0.0, 1.0], [np.sqrt(0.5), np.sqrt(0.5)]])


def _unit(*values):
    v = np.asarray(values, dtype=float)
    return v / np.linalg.norm(v)


def _constructed(image_directions, noise=0.05, seed=0):
    """Image embeddings [k, V, E] near given directions; texts: class, 'a red square', 'water'."""
    rng = np.random.default_rng(seed)
    texts = np.eye(4)[:3]  # class text = e0, red square = e1, water = e2 (e3 is "anything else")
    images = np.stack([[_unit(*(d + noise * rng.standard_normal(4))) for d in views] for views in image_directions])
    return images, texts


def test_decision_on_constructed_embeddings():
    e = np.eye(4)
    answers = ["separate_object", "background"]
    # the NAM views show a red square, the whole image shows the class: spurious, separate object
    images, texts = _constructed([[e[1] + 0.3 * e[0], e[1]] for _ in range(5)])
    sims = cosine_similarity(images.reshape(-1, 4), texts).reshape(5, 2, 3)
    decision = clip_decision(sims, answers)
    assert decision.answer == "separate_object" and decision.best_concept == 0 and decision.gap > 0.5
    # views that match the class itself: core
    images, texts = _constructed([[e[0], e[0] + 0.2 * e[2]] for _ in range(5)])
    sims = cosine_similarity(images.reshape(-1, 4), texts).reshape(5, 2, 3)
    decision = clip_decision(sims, answers)
    assert decision.answer == "main_object" and decision.best_concept == 1 and decision.gap < 0
    # water slightly ahead of the class: spurious without a margin, core with a margin above the gap
    images, texts = _constructed([[_unit(1.0, 0, 1.1, 0.5)] for _ in range(4)], noise=0.0)
    sims = cosine_similarity(images.reshape(-1, 4), texts).reshape(4, 1, 3)
    gap = clip_decision(sims, answers).gap
    assert 0 < gap < 0.1
    assert clip_decision(sims, answers, margin=0.0).answer == "background"
    assert clip_decision(sims, answers, margin=gap + 0.01).answer == "main_object"
    with pytest.raises(ValueError):
        clip_decision(sims, ["background"])


def test_decision_by_hand_computed_similarities():
    # two images, one view; columns: class, concept A, concept B
    sims = np.array([[[0.20, 0.25, 0.10]], [[0.22, 0.27, 0.30]]])
    decision = clip_decision(sims, ["background", "separate_object"])
    np.testing.assert_allclose(decision.scores, [0.21, 0.26, 0.20])
    assert decision.answer == "background" and decision.gap == pytest.approx(0.05)


def test_concept_spuriosity_is_a_within_class_z_score():
    sims = np.array([[1.0, 0.0], [3.0, 0.0], [5.0, 10.0], [7.0, 20.0], [0.5, 0.5], [0.5, 0.5]])
    labels = np.array([0, 0, 1, 1, 2, 2])
    scores = concept_spuriosity(sims, labels, [0])
    np.testing.assert_allclose(scores, [-1, 1, -1, 1, 0, 0])  # class 2: constant similarity, std 0 -> 0
    both = concept_spuriosity(sims, labels, [0, 1])
    np.testing.assert_allclose(both[:4], [-0.5, 0.5, -1, 1])  # class 0's concept 1 is constant
    per_class = concept_spuriosity(sims, labels, {1: [1]})
    assert np.isnan(per_class[:2]).all() and np.isnan(per_class[4:]).all()
    np.testing.assert_allclose(per_class[2:4], [-1, 1])
    masked = concept_spuriosity(sims, labels, [0], mask=np.array([1, 1, 1, 1, 0, 0], dtype=bool))
    assert np.isnan(masked[4:]).all()


def test_nam_views_weight_and_crop_the_image():
    image = np.full((20, 20, 3), 200, dtype=np.uint8)
    nam = np.zeros((5, 5), dtype=np.float32)
    nam[0, 0] = 1.0  # the top-left corner, at a fifth of the resolution
    views = nam_views(image, nam)
    assert views["whole"] is image
    assert views["nam_weighted"][0, 0, 0] > 100 and views["nam_weighted"][-1, -1, 0] == 0
    crop = views["nam_crop"]
    assert crop.shape[0] < 10 and crop.shape[1] < 10
    assert nam_views(image, np.zeros((5, 5)))["nam_crop"].shape == image.shape


# ---- loading: clear errors, never a random CLIP by accident ------------------------------------


def test_missing_weights_explain_how_to_give_a_local_file(tmp_path, monkeypatch):
    import open_clip.factory

    with pytest.raises(AutoLabelError, match="local path|local weights file"):
        load_clip("ViT-B-32", "")
    with pytest.raises(AutoLabelError, match="not found.*pretrained="):
        load_clip("ViT-B-32", str(tmp_path / "clip.bin"))
    with pytest.raises(AutoLabelError, match="neither a file nor a pretrained tag"):
        load_clip("ViT-B-32", "my-weights")
    with pytest.raises(AutoLabelError, match="unknown CLIP architecture"):
        load_clip("ViT-Z-99", "openai")
    with pytest.raises(AutoLabelError, match="no open_clip_config.json"):
        load_clip(f"local-dir:{tmp_path}", None)

    def offline(*args, **kwargs):
        raise RuntimeError("Name or service not known")

    monkeypatch.setattr(open_clip.factory, "download_pretrained", offline)
    with pytest.raises(AutoLabelError, match="no network.*pass its local path"):
        load_clip("RN50", "openai")


# ---- plumbing with a tiny random CLIP saved as a local checkpoint ------------------------------
TINY = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 16, "head_width": 16},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    """A folder with open_clip_config.json and random weights, like a downloaded local-dir model."""
    import open_clip

    torch.manual_seed(0)
    model = open_clip.CLIP(**TINY)
    folder = tmp_path_factory.mktemp("tinyclip")
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": TINY, "preprocess_cfg": {}}))
    torch.save(model.state_dict(), folder / "open_clip_pytorch_model.bin")
    return folder, model


def test_local_clip_loads_the_saved_weights_and_encodes(tiny_clip, tmp_path):
    import open_clip

    folder, model = tiny_clip
    clip = load_clip(f"local-dir:{folder}", None)
    for name, param in clip.model.state_dict().items():
        torch.testing.assert_close(param, model.state_dict()[name])
    images = clip.encode_images([np.zeros((28, 28, 3), np.uint8), np.full((40, 30, 3), 99, np.uint8)])
    texts = clip.encode_texts(["water", "a red square", "digit 0-4"])
    assert images.shape == (2, 32) and texts.shape == (3, 32)
    np.testing.assert_allclose(np.linalg.norm(texts, axis=1), 1.0, rtol=1e-5)

    # the same weights through the other local route: a named architecture + pretrained=<file>
    config = tmp_path / "spuraudit-test-tiny.json"
    config.write_text(json.dumps(TINY))
    open_clip.add_model_config(config)
    by_file = load_clip("spuraudit-test-tiny", str(folder / "open_clip_pytorch_model.bin"))
    np.testing.assert_allclose(by_file.encode_texts(["water"]), texts[:1], atol=1e-5)


def test_clip_labeler_end_to_end_stores_votes_with_evidence(demo_copy, tiny_clip, monkeypatch):
    folder, _ = tiny_clip
    audit = Audit(demo_copy, demo_copy.feature_store(), spurious={})
    labeler = ClipLabeler(concepts="a red square | separate_object\na black background", model_name=f"local-dir:{folder}",
                          pretrained=None, images_per_pair=3, margin=0.0)
    pairs = [(0, int(audit.top_features(0, k=1, split="test")["feature"][0])),
             (1, int(audit.top_features(1, k=1, split="test")["feature"][0]))]
    report = run_autolabel(demo_copy, labeler, pairs, audit=audit)
    assert [p.pair for p in report.proposals] == pairs

    votes = {v.pair: v for v in demo_copy.labels().votes(annotator="auto:clip", machine=True)}
    assert set(votes) == set(pairs)
    for (c, d), vote in votes.items():
        ev = vote.evidence
        assert ev["images"] == [int(i) for i in audit.feature_images(c, d, 3, "test", "correct")]
        assert ev["texts"] == [audit.class_names[c], "a red square", "a black background"]
        assert np.asarray(ev["similarity"]).shape == (3, 3, 3)  # images × views × texts
        assert ev["views"] == ["whole", "nam_weighted", "nam_crop"] and ev["model"].startswith("local-dir:")
        best = ev["decision_scores"][1:]
        expected = "main_object" if max(best) - ev["decision_scores"][0] <= 0 else (
            "separate_object" if int(np.argmax(best)) == 0 else "background")
        assert vote.answer == expected and vote.reason
        assert 1 <= vote.confidence <= 5

    # the review page shows the proposal with its similarity table
    from pathlib import Path

    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("SPURAUDIT_HOME", str(demo_copy.folder.parent.parent))
    at = AppTest.from_file(str(Path(__file__).resolve().parents[1] / "pages" / "review.py"), default_timeout=180)
    at.query_params["project"] = "demo"
    at.session_state["review_attacks"] = False
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("`auto:clip` proposes" in m.value for m in at.markdown)
    tables = [df.value for df in at.dataframe if "text" in df.value.columns]
    assert tables and list(tables[0]["text"]) == [audit.class_names[0], "a red square", "a black background"]
    assert {"whole", "nam_weighted", "nam_crop", "decision score"} <= set(tables[0].columns)


def test_concept_scores_are_stored_and_give_a_ranking(demo_copy, tiny_clip):
    folder, _ = tiny_clip
    clip = load_clip(f"local-dir:{folder}", None)
    result = compute_concept_similarities(demo_copy, "a red square\nwater", split="val", clip_model=clip,
                                          batch_size=256)
    val = demo_copy.table.split_mask("val")
    assert np.isfinite(result.similarity[val]).all() and np.isnan(result.similarity[~val]).all()
    stored = load_concept_similarities(demo_copy)
    assert stored.concepts == ["a red square", "water"]
    np.testing.assert_array_equal(stored.similarity, result.similarity)
    scores = concept_spuriosity_scores(demo_copy, ["a red square"])
    labels = demo_copy.table.labels
    assert np.isnan(scores[~val]).all()
    for c in (0, 1):  # z-scored within each class
        assert abs(np.mean(scores[val & (labels == c)])) < 1e-6
    with pytest.raises(AutoLabelError, match="not scored"):
        concept_spuriosity_scores(demo_copy, ["grass"])
