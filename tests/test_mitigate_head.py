"""Head-only mitigations on the demo: low-spuriosity head tuning, error tuning, DFR, and the comparison."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from spuraudit.mitigate import MitigationError, compare_models, list_mitigated_models, run_mitigation
from spuraudit.modelio import load_model
from tests.test_mitigate_fixtures import labelled_demo, private_demo  # noqa: F401  (fixture)

CARD_KEYS = ("test_accuracy", "test_per_class_accuracy", "test_group_accuracy", "test_worst_group_accuracy",
             "val_accuracy", "val_worst_group_accuracy", "diagnostics")


@pytest.fixture(scope="module")
def head_tuned(labelled_demo):
    project, _ = labelled_demo
    return run_mitigation(project, "head_tuning", {"seed": 0})


def _check_folder(project, folder, method):
    """A loadable model folder with a complete card, its features in the project's store."""
    model, card = load_model(folder)
    parent, parent_card = load_model(project.model_folder)
    assert card.source == "mitigation" and card.method == method and card.parent == parent_card.name
    assert card.options["seed"] == 0
    for key in CARD_KEYS:
        assert key in card.metrics, f"card lacks {key}"
    assert project.feature_store(folder) is not None
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".tmp")]  # nothing half-written left
    return model, parent, card


def test_head_tuning_halves_the_gap_at_no_accuracy_cost(labelled_demo, head_tuned):
    project, _ = labelled_demo
    model, parent, card = _check_folder(project, head_tuned, "head_tuning")
    # Only the head changed: the backbone is the parent's, bit for bit.
    for (name, a), (_, b) in zip(model.trunk.state_dict().items(), parent.trunk.state_dict().items()):
        assert torch.equal(a, b), name
    assert not torch.equal(model.head.weight, parent.head.weight)

    report = compare_models(project, [project.model_folder, head_tuned], split="test", k=100, n_boot=200)
    before, after = report.summary.iloc[0], report.summary.iloc[1]
    print(report.summary[["model", "avg_accuracy_plain", "worst_group_accuracy", "pooled_gap"]])
    assert abs(after["pooled_gap"]) <= abs(before["pooled_gap"]) / 2
    assert after["avg_accuracy_plain"] >= before["avg_accuracy_plain"] - 3
    # The card's test figures are those of the feature store the comparison read.
    assert card.metrics["test_accuracy"] == pytest.approx(after["avg_accuracy_plain"], abs=0.01)

    diag = card.metrics["diagnostics"]
    assert diag["stop_split"] == "val" and diag["chosen_epoch"] >= 1
    assert abs(diag["chosen_val_gap"]) < 5 or diag["stop_reason"] == "min_gap"
    assert diag["curve"]["epoch"][0] == 0 and diag["curve"]["gap"][0] > 50  # the parent's val gap was large
    assert diag["other_classes_used"] in ("balanced_sample", "none needed (every class tuned)")
    assert diag["verdict"].startswith("helped")
    assert list(report.gaps["model"]) == [before["model"], after["model"]]
    assert report.ranked_by == load_model(project.model_folder)[1].name


def test_head_tuning_is_reproducible(labelled_demo, head_tuned, tmp_path):
    project, _ = labelled_demo
    again = run_mitigation(project, "head_tuning", {"seed": 0}, out_folder=tmp_path / "again")
    assert torch.equal(load_model(again)[0].head.weight, load_model(head_tuned)[0].head.weight)


def test_balanced_sample_variant_records_its_choice(labelled_demo, tmp_path):
    project, _ = labelled_demo
    folder = run_mitigation(project, "head_tuning", {"other_classes": "balanced_sample", "min_steps": 0,
                                                     "typical": 0, "k_choice": "fixed", "seed": 3},
                            out_folder=tmp_path / "balanced")
    diag = load_model(folder)[1].metrics["diagnostics"]
    assert diag["other_classes_used"] == "balanced_sample"
    assert diag["tuning_images"] == {name: 100 for name in project.table.class_names}
    # With ordinary images beside the lowest-spuriosity ones, each tuned class gives k + typical images.
    folder = run_mitigation(project, "head_tuning", {"min_steps": 0, "typical": 40, "typical_choice": "always",
                                                     "k_choice": "fixed", "seed": 3}, out_folder=tmp_path / "typical")
    diag = load_model(folder)[1].metrics["diagnostics"]
    assert diag["tuning_images"] == {name: 140 for name in project.table.class_names}
    assert diag["tuning_set"] == "with typical images" and list(diag["tuning_sets_tried"]) == ["with typical images"]
    # By default k, k/2 and k/4, each without and with the typical images, are tuned, and the set with the best
    # held-out worst group is kept; its images are the ones recorded.
    folder = run_mitigation(project, "head_tuning", {"min_steps": 0, "typical": 40, "seed": 3},
                            out_folder=tmp_path / "chosen")
    diag = load_model(folder)[1].metrics["diagnostics"]
    tried = diag["tuning_sets_tried"]
    assert set(tried) == {f"k={k}, {w} typical images" for k in (100, 50, 25) for w in ("without", "with")}
    k = int(diag["tuning_set"].split(",")[0][2:])
    extra = 40 if "with typical" in diag["tuning_set"] else 0
    assert set(diag["tuning_images"].values()) == {k + extra}
    scores = {k: -1.0 if v is None else v for k, v in tried.items()}
    assert scores[diag["tuning_set"]] == max(scores.values())
    assert diag["chosen_val_worst_group"] == pytest.approx(tried[diag["tuning_set"]], abs=0.01)


def test_error_tuning_and_dfr_write_complete_models(labelled_demo, tmp_path):
    project, _ = labelled_demo
    err = run_mitigation(project, "error_tuning", {"seed": 0}, out_folder=tmp_path / "err")
    _, _, card = _check_folder(project, err, "error_tuning")
    parent_preds = np.asarray(project.feature_store().preds)
    train = project.table.split_mask("train")
    wrong = train & (parent_preds != project.table.labels)
    tuning = card.metrics["diagnostics"]["tuning_images"]
    for c, name in enumerate(project.table.class_names):  # classes without errors get a balanced sample
        n_wrong = int(np.sum(wrong & (project.table.labels == c)))
        assert tuning[name] == n_wrong or n_wrong == 0, name

    dfr = run_mitigation(project, "dfr", {"seed": 0, "n_subsamples": 3}, out_folder=tmp_path / "dfr")
    _, _, card = _check_folder(project, dfr, "dfr")
    assert card.metrics["diagnostics"]["fit_split"] == "val"
    # Refitted on group-balanced data, the head no longer trusts the square.
    assert card.metrics["test_worst_group_accuracy"] >= 50


def test_dfr_refuses_without_group_columns(demo_home, tmp_path):
    project, _ = private_demo(demo_home, tmp_path / "nogroups", label_cue=False)
    project.table.group_columns = []
    with pytest.raises(MitigationError, match="group"):
        run_mitigation(project, "dfr", {}, out_folder=tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_head_tuning_refuses_without_labels(demo_home, tmp_path):
    project, _ = private_demo(demo_home, tmp_path / "nolabels", label_cue=False)
    with pytest.raises(MitigationError, match="labelled spurious"):
        run_mitigation(project, "head_tuning", {})
    assert list_mitigated_models(project) == []


def test_listing_finds_the_mitigated_models(labelled_demo, head_tuned):
    project, _ = labelled_demo
    found = [folder for folder, _ in list_mitigated_models(project)]
    assert head_tuned in found


def test_a_derived_store_is_written_with_its_statistics(demo_home, tmp_path):
    """The derived store's per-class statistics exist as soon as it is written and match its new predictions."""
    from spuraudit.featurestats import STATS_DIR, StoreStats, compute_stats, table_split_ids
    from spuraudit.mitigate.store import derive_head_store

    project, _ = private_demo(demo_home, tmp_path, label_cue=False)
    model, card = load_model(project.model_folder)
    parent = project.feature_store()
    with torch.no_grad():
        model.head.weight.mul_(-1.0)  # another head: other predictions, so other "correct"/"predicted" sets
    store = derive_head_store(project, parent, model, card.input_size)
    assert (store.path / STATS_DIR / "stats.json").is_file()  # before anything opened the store for an audit
    stats = StoreStats.open(store.path / STATS_DIR)
    assert stats.info["table"] == project.table.content_hash()
    names, split_ids = table_split_ids(project.table)
    expected = compute_stats(store.features, np.asarray(store.preds), project.table.labels, names, split_ids,
                             int(store.head_weight.shape[0]))
    assert not np.array_equal(np.asarray(store.preds), np.asarray(parent.preds))
    for name in ("count_correct", "count_predicted", "count_labelled"):
        np.testing.assert_array_equal(np.load(store.path / STATS_DIR / f"{name}.npy"), expected[name])
    np.testing.assert_allclose(np.load(store.path / STATS_DIR / "mean_correct.npy"), expected["mean_correct"],
                               equal_nan=True)
