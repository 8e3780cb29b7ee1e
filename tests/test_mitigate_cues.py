"""Head tuning's mechanisms on small real cases: absolute per-class gaps, collisions, the guard, the verdict."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from torch import nn

from spuraudit.mitigate import MitigationError, compare_models, get_method, list_mitigated_models, run_mitigation
from spuraudit.mitigate.evaluate import split_metrics
from spuraudit.mitigate.guard import guard_failure, noise_margin, required_gain
from spuraudit.mitigate.head_training import GapMonitor, fit_head
from spuraudit.modelio import load_model
from tests.test_mitigate_cue_fixtures import blue_corner_project  # noqa: F401  (fixture)


# ---- head fitting on toy features -------------------------------------------------------------------

def _two_cue_features(n=400, seed=0):
    """2 features: [core, cue]. Class 0's cue images and class 1's cue images: the head below gets class 0
    right only WITH the cue and class 1 right only WITHOUT it, so the two classes' gaps are +100 and −100."""
    g = np.random.default_rng(seed)
    y = np.repeat([0, 1], n // 2)
    cue = g.random(n) < 0.5
    core = np.where(y == 1, 1.0, -1.0) + 0.3 * g.standard_normal(n)
    x = np.stack([core, cue.astype(float)], 1)
    return torch.tensor(x, dtype=torch.float32), torch.as_tensor(y), cue


def _sets(y, cue):
    sets = {}
    for c in (0, 1):
        members = np.flatnonzero(y.numpy() == c)
        sets[c] = (members[cue[members]][:50], members[~cue[members]][:50])
    high = np.concatenate([sets[0][0], sets[1][0]])
    low = np.concatenate([sets[0][1], sets[1][1]])
    return sets, torch.as_tensor(high), torch.as_tensor(low)


def test_stopping_gap_is_absolute_per_class_not_a_signed_pool():
    x, y, cue = _two_cue_features()
    sets, high, low = _sets(y, cue)
    head = nn.Linear(2, 2)
    with torch.no_grad():  # logit(1) - logit(0) = -10·cue + 0.1: the cue says "class 0"
        head.weight.copy_(torch.tensor([[0.0, 5.0], [0.0, -5.0]]))
        head.bias.copy_(torch.tensor([0.0, 0.1]))
    row = GapMonitor(features=x, labels=y, high=high, low=low, sets=sets)(head)
    assert row["class_gaps"]["0"] == pytest.approx(100) and row["class_gaps"]["1"] == pytest.approx(-100)
    assert abs(row["gap"]) < 1  # the signed pool cancels ...
    assert row["stop_gap"] == pytest.approx(100)  # ... the absolute per-class statistic does not
    mean = GapMonitor(features=x, labels=y, high=high, low=low, sets=sets, statistic="mean")(head)
    assert mean["stop_gap"] == pytest.approx(100)

    fit = fit_head(head, x, y, lr=0.5, momentum=0.9, batch_size=64, max_epochs=60, generator=torch.Generator()
                   .manual_seed(0), monitor=GapMonitor(features=x, labels=y, high=high, low=low, sets=sets),
                   gap_threshold=5.0, max_accuracy_drop=5.0, max_class_drop=10.0)
    assert fit.chosen_epoch > 0 and fit.helped, fit.verdict  # epoch 0 is not returned as "fixed"
    assert fit.history[fit.chosen_epoch]["stop_gap"] < 5


def test_a_collapsed_head_is_never_chosen_and_the_verdict_says_so():
    x, y, cue = _two_cue_features()
    sets, high, low = _sets(y, cue)
    monitor = GapMonitor(features=x, labels=y, high=high, low=low, sets=sets)
    head = nn.Linear(2, 2)
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[0.0, 5.0], [0.0, -5.0]]))
        head.bias.copy_(torch.tensor([0.0, 0.1]))
    collapsed = nn.Linear(2, 2)
    with torch.no_grad():
        collapsed.weight.zero_()
        collapsed.bias.copy_(torch.tensor([5.0, 0.0]))
    start, flat = monitor(head), monitor(collapsed)
    assert flat["stop_gap"] == 0 and flat["top_prediction_share"] == 100  # zero gaps: it would pass the threshold
    assert guard_failure(flat, start, max_accuracy_drop=100, max_class_drop=100) == \
        "collapsed: one class predicted for every image"
    # Tuning on class-0 images only drives the head to "class 0 everywhere"; that head is refused.
    only0 = y == 0
    fit = fit_head(head, x[only0], y[only0], lr=1.0, momentum=0.9, batch_size=64, max_epochs=100,
                   generator=torch.Generator().manual_seed(0), monitor=monitor, gap_threshold=5.0,
                   max_accuracy_drop=100.0, max_class_drop=10.0)
    chosen = fit.history[fit.chosen_epoch]
    assert chosen["top_prediction_share"] < 99
    assert not fit.helped and fit.verdict.startswith("did not help")


def test_noise_margin_is_binomial_standard_errors_and_never_zero_at_the_extremes():
    """Two standard errors of 75 % on 250 images is 5.5 points; a group at 0 % still needs a rise (p held at 5 %);
    more images, a smaller margin; z = 0 asks for nothing."""
    assert noise_margin(75.0, 250, 2.0) == pytest.approx(200 * np.sqrt(0.75 * 0.25 / 250))
    assert noise_margin(0.0, 100, 2.0) == pytest.approx(200 * np.sqrt(0.05 * 0.95 / 100))
    assert noise_margin(75.0, 2500, 2.0) < noise_margin(75.0, 250, 2.0)
    assert noise_margin(75.0, 250, 0.0) == 0.0 and noise_margin(75.0, 0, 2.0) == 0.0


def test_the_guard_asks_the_worst_group_to_rise_beyond_the_smallest_groups_noise():
    """The margin comes from the smallest group (40 images, not 400); a rise below it is refused with the figures,
    a rise above it passes, and without groups nothing is asked."""
    groups = np.repeat([0, 1, 2], [400, 400, 40])
    margin, smallest = required_gain(60.0, groups, 2.0)
    assert smallest == 40 and margin == pytest.approx(noise_margin(60.0, 40, 2.0))
    start = {"accuracy": 80.0, "class_accuracy": {0: 80.0, 1: 80.0}, "worst_group": 60.0, "top_prediction_share": 50.0}
    small = {**start, "worst_group": 60.0 + margin / 2}
    large = {**start, "worst_group": 60.0 + margin + 0.1}
    assert guard_failure(small, start, 5.0, 10.0, margin).startswith(f"worst group rose {margin / 2:.1f} points")
    assert guard_failure(large, start, 5.0, 10.0, margin) is None
    assert guard_failure(small, start, 5.0, 10.0) is None
    assert required_gain(60.0, None, 2.0) == (0.0, 0) and required_gain(float("nan"), groups, 2.0) == (0.0, 0)


def test_freezing_a_row_does_not_freeze_its_predictions_in_a_two_class_softmax():
    """Why 'freeze_rows' is no longer the default: class 1's row stays fixed, yet tuning class 0's row on
    class-0 images moves every class-1 prediction towards class 0."""
    x, y, _ = _two_cue_features()
    head = nn.Linear(2, 2)
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[-1.0, 0.0], [1.0, 0.0]]))
        head.bias.zero_()
    only0 = y == 0
    fit = fit_head(head, x[only0], y[only0], lr=0.5, momentum=0.9, batch_size=64, max_epochs=200,
                   generator=torch.Generator().manual_seed(0), frozen_rows=[1])
    assert torch.equal(fit.head.weight[1], head.weight[1])
    with torch.no_grad():
        before = (head(x[~only0]).argmax(1) == 1).float().mean().item()
        after = (fit.head(x[~only0]).argmax(1) == 1).float().mean().item()
    assert before > 0.95 and after < 0.8
    assert get_method("head_tuning").default_options()["other_classes"] == "balanced_sample"


# ---- head tuning on a planted cue -----------------------------------------------------------------

def _test_groups(project, folder):
    model, _ = load_model(folder)
    feats = torch.from_numpy(np.asarray(project.feature_store().features, dtype=np.float32))
    with torch.no_grad():
        preds = model.head(feats).argmax(1).numpy()
    return split_metrics(project.table, preds, "test")


@pytest.mark.slow
def test_head_tuning_with_a_collision_lifts_the_colliding_cue_group(blue_corner_project, tmp_path):
    """The blue square is labelled spurious for rings; it hurts the pluses that carry it. Those pluses are
    the collision: tuned on, they lift that group, and the card says why training stopped."""
    project, _, _ = blue_corner_project
    parent = split_metrics(project.table, np.asarray(project.feature_store().preds), "test")
    folder = run_mitigation(project, "head_tuning", {"seed": 0}, out_folder=tmp_path / "tuned")
    after = _test_groups(project, folder)
    cue_group = "plus | planted_cue=1"
    print(parent["group_accuracy"], after["group_accuracy"])
    assert parent["group_accuracy"][cue_group] < 20
    assert after["group_accuracy"][cue_group] >= parent["group_accuracy"][cue_group] + 40
    assert after["accuracy"] >= parent["accuracy"]
    diag = load_model(folder)[1].metrics["diagnostics"]
    # k is chosen on val among 100, 50 and 25; the collisions tuned on are the chosen k of them.
    k = int(re.match(r"k=(\d+),", diag["tuning_set"]).group(1))
    assert k in (100, 50, 25)
    assert diag["collisions"] == {"ring→plus": k} and "ring→plus" in diag["stop_sets"]
    assert diag["verdict"].startswith("helped") and diag["chosen_epoch"] >= 1
    report = compare_models(project, [project.model_folder, folder], split="test", n_boot=50)
    assert report.summary["verdict"].tolist() == ["original", "worst group improved"]
    # The val worst group had to rise beyond two standard errors of the smallest val group, and did.
    val_groups = project.table.group_ids()[0][project.table.split_mask("val")]
    smallest = int(np.bincount(val_groups)[np.bincount(val_groups) > 0].min())
    assert diag["required_val_gain"] == pytest.approx(noise_margin(diag["start_val_worst_group"], smallest, 2.0),
                                                      abs=0.05)
    assert diag["chosen_val_worst_group"] - diag["start_val_worst_group"] >= diag["required_val_gain"] > 0
    card = load_model(folder)[1]
    assert any(re.search(rf"beyond the [\d.]+ points sampling noise alone gives on a group of {smallest} images", note)
               for note in card.notes), card.notes


@pytest.mark.slow
def test_head_tuning_refuses_a_rise_within_the_noise_margin(blue_corner_project, tmp_path):
    """The same run, asked for a rise no accuracy can reach (1,000 standard errors of the smallest val group):
    the head closed the gap but did not beat the noise margin, so the run refuses, says by how much, and
    writes nothing."""
    project, _, _ = blue_corner_project
    before = list_mitigated_models(project)
    with pytest.raises(MitigationError, match=r"did not help: the held-out \(val\) worst group rose [\d.]+ points at "
                                              r"most .* less than the [\d.]+ that sampling noise alone gives on a "
                                              r"group of \d+ images"):
        run_mitigation(project, "head_tuning", {"seed": 0, "required_gain_se": 1000.0}, out_folder=tmp_path / "nope")
    assert not (tmp_path / "nope").exists() and list_mitigated_models(project) == before


@pytest.mark.slow
def test_head_tuning_without_collisions_says_it_did_not_help(blue_corner_project, tmp_path):
    """Rings are right with or without the square (class gap 0): without the collision nothing is left to
    fix, and the run says so instead of writing the unchanged head as a new model."""
    project, _, _ = blue_corner_project
    before = list_mitigated_models(project)
    with pytest.raises(MitigationError, match="did not help: nothing to fix"):
        run_mitigation(project, "head_tuning", {"collisions": False, "seed": 0}, out_folder=tmp_path / "nope")
    assert not (tmp_path / "nope").exists() and list_mitigated_models(project) == before


def test_the_comparison_flags_a_worst_group_that_did_not_improve():
    import pandas as pd

    from spuraudit.mitigate.compare import flag_worst_group

    summary = pd.DataFrame({"model": ["erm", "a", "b", "c"], "worst_group_accuracy": [10.0, 10.5, 45.0, float("nan")]})
    flag_worst_group(summary, "erm")
    assert summary["verdict"].tolist() == ["original", "worst group did not improve", "worst group improved",
                                           "no groups to judge"]
    assert summary["worst_group_change"].tolist()[:3] == [0.0, 0.5, 35.0]
