"""Mitigation building blocks on small synthetic inputs: options, masks, head fitting, DFR, selection."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from spuraudit.mitigate import METHODS, MitigationError, get_method
from spuraudit.mitigate.base import Option
from spuraudit.mitigate.dfr import balanced_sample, fit_logistic
from spuraudit.mitigate.head_training import GapMonitor, curve_for_card, fit_head
from spuraudit.mitigate.masking import (
    HeatmapMaker,
    PackedMasks,
    _RawXGradCAM,
    apply_masks,
    fill_from_others,
    mask_batch,
    masks_from_heatmaps,
    normalise_and_upsample,
    share_summary,
    thresholds,
)
from spuraudit.mitigate.selective import combined_probabilities, selective_classification
from spuraudit.mitigate.store import head_logits
from spuraudit.modelio import ModelCard, build_audit_model


def _digitnet(seed: int = 0):
    torch.manual_seed(seed)
    card = ModelCard(name="t", architecture="spuraudit:digitnet", class_names=["a", "b"], input_size=[28, 28],
                     mean=[0.5] * 3, std=[0.5] * 3)
    return build_audit_model(card)


# ---- options ----------------------------------------------------------------------------------------

def test_every_method_has_documented_defaults():
    for name, method in METHODS.items():
        assert method.name == name and method.label and method.summary
        defaults = method.default_options()
        assert "seed" in defaults
        assert method.resolve_options(None) == defaults
        for option in method.options:
            assert option.help, f"{name}.{option.name} has no help text"


def test_options_are_checked_and_converted():
    head = get_method("head_tuning")
    assert head.resolve_options({"k": "30", "lr": "0.01"})["k"] == 30
    with pytest.raises(MitigationError, match="no option"):
        head.resolve_options({"epochs": 3})
    with pytest.raises(MitigationError, match="one of"):
        head.resolve_options({"other_classes": "all"})
    with pytest.raises(MitigationError, match="≥"):
        head.resolve_options({"k": 0})
    with pytest.raises(MitigationError, match="int"):
        Option("n", 1, "h").check(1.5)
    with pytest.raises(MitigationError, match="unknown mitigation method"):
        get_method("nope")


# ---- masks ------------------------------------------------------------------------------------------

def test_official_threshold_can_mask_nothing_on_a_concentrated_map():
    heat = torch.zeros(1, 28, 28)
    heat[0, :2, :2] = 1.0  # 4 hot pixels, everything else cold
    # Over the positive values only, all are 1: mean + 2·std = 1, and nothing lies strictly above it.
    assert masks_from_heatmaps(heat, "official").sum() == 0
    assert masks_from_heatmaps(heat, "all_pixels").sum() == 4
    assert masks_from_heatmaps(heat, "top_fraction", 0.1).sum() == 4  # never a zero-heat pixel


def test_thresholds_match_numpy_per_image():
    gen = torch.Generator().manual_seed(0)
    heat = torch.rand(3, 10, 10, generator=gen) ** 3
    heat[1] = 0.0
    thr = thresholds(heat, "official")
    for i in (0, 2):
        pos = heat[i][heat[i] > 0].numpy()
        assert thr[i].item() == pytest.approx(pos.mean() + 2 * pos.std(), rel=1e-5)
    assert torch.isinf(thr[1])  # an all-zero map masks nothing
    thr = thresholds(heat, "all_pixels")
    assert thr[0].item() == pytest.approx(heat[0].numpy().mean() + 2 * heat[0].numpy().std(), rel=1e-5)
    share = masks_from_heatmaps(heat, "top_fraction", 0.25).flatten(1).float().mean(1)
    assert share[0].item() == pytest.approx(0.25, abs=0.011)
    assert share[1].item() == 0.0


def test_filling_from_others_takes_another_images_pixels_and_keeps_the_rest():
    """Each image's holes hold the same pixels of one other image of the batch (never its own); the rest is
    untouched; the same generator seed gives the same fill."""
    x = torch.arange(5, dtype=torch.float32)[:, None, None, None].expand(5, 3, 4, 4).clone()  # image i is all i
    masks = torch.zeros(5, 4, 4, dtype=torch.bool)
    masks[:, :2, :2] = True
    out = fill_from_others(x, masks, torch.Generator().manual_seed(0))
    donors = out[:, 0, 0, 0].long()
    assert torch.all(out[:, :, :2, :2] == donors[:, None, None, None])  # one donor per image, all channels
    assert torch.all(donors != torch.arange(5)) and sorted(donors.tolist()) == list(range(5))
    assert torch.equal(out[:, :, 2:], x[:, :, 2:]) and torch.equal(out[:, :, :2, 2:], x[:, :, :2, 2:])
    assert torch.equal(out, fill_from_others(x, masks, torch.Generator().manual_seed(0)))


def test_masking_zeroes_pixels_in_raw_space_on_all_channels():
    x = torch.rand(2, 3, 4, 4)
    masks = torch.zeros(2, 4, 4, dtype=torch.bool)
    masks[0, 1, 2] = True
    out = apply_masks(x, masks)
    assert torch.all(out[0, :, 1, 2] == 0)
    assert torch.equal(out[1], x[1])
    assert share_summary(masks.flatten(1).float().mean(1))["nothing_masked_pct"] == 50.0


def test_packed_masks_round_trip_and_accumulate():
    gen = torch.Generator().manual_seed(0)
    first = torch.rand(6, 5, 7, generator=gen) > 0.7
    second = torch.rand(6, 5, 7, generator=gen) > 0.7
    packed = PackedMasks(10, (5, 7))
    packed.add(np.arange(2, 8), first)
    assert torch.equal(packed[np.arange(2, 8)], first)
    packed.add(np.arange(2, 8), second)
    assert torch.equal(packed[np.arange(2, 8)], first | second)
    shares = packed.shares(chunk=3)
    np.testing.assert_allclose(shares[2:8], (first | second).flatten(1).float().mean(1).numpy())
    assert shares[0] == 0 and shares[9] == 0


def test_normalise_and_upsample():
    cams = torch.tensor([[[-1.0, 2.0], [0.5, 1.0]], [[0.0, 0.0], [0.0, 0.0]]])
    out = normalise_and_upsample(cams, (8, 8))
    assert out.shape == (2, 8, 8)
    assert out.min() >= 0 and out.max() <= 1
    assert torch.all(out[1] == 0)  # all-zero map stays zero (no division by zero)
    assert out[0, :4, 4:].mean() > out[0, :4, :4].mean()  # the hot cell stays hot where it was


def test_cut_graph_gives_the_library_xgradcam():
    """Stopping backward at the feature map changes the cost, not the heatmap."""
    model = _digitnet().eval()
    x = torch.rand(5, 3, 28, 28, generator=torch.Generator().manual_seed(1))
    reference = _RawXGradCAM(model=model, target_layers=[model.target_layer])
    full = reference(input_tensor=x, targets=None)  # whole backward, parameters requiring grad
    reference.activations_and_grads.release()
    with HeatmapMaker(model) as make:
        heat, preds = make(x)
    expected = normalise_and_upsample(torch.from_numpy(full), (28, 28))
    torch.testing.assert_close(heat, expected, rtol=1e-4, atol=1e-5)
    assert torch.equal(preds, model(x).argmax(1))
    assert all(p.requires_grad for p in model.parameters())  # restored
    assert all(p.grad is None for p in model.parameters())  # no parameter gradient was computed


def test_mask_batch_shapes():
    model = _digitnet()
    x = torch.rand(4, 3, 28, 28)
    with HeatmapMaker(model) as make:
        out = mask_batch(make, x, "top_fraction", 0.1)
    assert out.heatmaps.shape == (4, 28, 28) and out.masks.shape == (4, 28, 28)
    assert out.masked.shape == x.shape
    assert torch.all(out.share <= 0.11)


# ---- head fitting -------------------------------------------------------------------------------------

def _toy_features(n=200, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 3, (n,), generator=g)
    x = torch.randn(n, 6, generator=g) + nn.functional.one_hot(y, 6).float() * 3
    return x, y


def test_fit_head_learns_and_keeps_frozen_rows():
    x, y = _toy_features()
    head = nn.Linear(6, 3)
    before = head.weight.detach().clone(), head.bias.detach().clone()
    fit = fit_head(head, x, y, lr=0.1, momentum=0.9, batch_size=32, max_epochs=5, weight_decay=1e-2,
                   generator=torch.Generator().manual_seed(0), frozen_rows=[2])
    assert torch.equal(fit.head.weight[2], before[0][2]) and fit.head.bias[2] == before[1][2]
    assert not torch.equal(fit.head.weight[0], before[0][0])
    assert torch.equal(head.weight, before[0])  # the given head is not modified
    assert fit.stop_reason == "max_epochs" and fit.chosen_epoch == 5


def test_fit_head_stops_on_the_monitor_and_honours_min_steps():
    x, y = _toy_features()
    monitor = GapMonitor(features=x, labels=y, high=torch.arange(0, 20), low=torch.arange(20, 40))
    fit = fit_head(nn.Linear(6, 3), x, y, lr=0.05, momentum=0.9, batch_size=256, max_epochs=1, min_steps=50,
                   generator=torch.Generator().manual_seed(0), monitor=monitor, gap_threshold=1000.0)
    assert fit.chosen_epoch == 0 and fit.stop_reason == "threshold"  # already below a huge threshold
    fit = fit_head(nn.Linear(6, 3), x, y, lr=0.05, momentum=0.9, batch_size=256, max_epochs=1, min_steps=50,
                   generator=torch.Generator().manual_seed(0), monitor=monitor, gap_threshold=-1.0)
    assert len(fit.history) == 51  # 1 step per epoch, extended to 50 steps
    assert fit.stop_reason == "min_gap"
    gaps = [abs(r["gap"]) for r in fit.history]
    assert gaps[fit.chosen_epoch] == min(gaps)
    curve = curve_for_card(fit.history, fit.chosen_epoch, max_points=10)
    assert fit.chosen_epoch in curve["epoch"] and curve["epoch"][-1] == 50 and len(curve["gap"]) == len(curve["epoch"])


def test_head_logits_match_the_linear_layer():
    head = nn.Linear(5, 3)
    x = torch.randn(10, 5)
    out = head_logits(x.numpy(), head.weight.detach().numpy(), head.bias.detach().numpy())
    np.testing.assert_allclose(out, head(x).detach().numpy(), rtol=1e-5, atol=1e-6)


# ---- DFR pieces ---------------------------------------------------------------------------------------

def test_balanced_sample_has_equal_groups():
    groups = np.array([0] * 10 + [1] * 3 + [2] * 7)
    pick = balanced_sample(groups, np.random.default_rng(0))
    assert np.bincount(groups[pick]).tolist() == [3, 3, 3]
    assert len(set(pick)) == len(pick)


def test_fit_logistic_separates_and_penalises():
    x, y = _toy_features()
    w, b = fit_logistic(x, y, 3, C=1.0)
    assert ((x @ w.T + b).argmax(1) == y).float().mean() > 0.9
    w_small, _ = fit_logistic(x, y, 3, C=0.001)
    assert w_small.norm() < w.norm()


# ---- selective classification -------------------------------------------------------------------------

def test_selective_classification_table():
    rng = np.random.default_rng(0)
    n = 400
    y = rng.integers(0, 2, n)
    conf = rng.uniform(0.5, 1.0, n)
    # Confident predictions are right more often: the accuracy must rise as coverage falls.
    right = rng.uniform(size=n) < conf
    pred = np.where(right, y, 1 - y)
    probs = np.where(np.eye(2)[pred] == 1, conf[:, None], 1 - conf[:, None])
    table = selective_classification(probs[:200], probs[:200], y[:200], probs[200:], probs[200:], y[200:])
    assert list(table["coverage_target"]) == [80, 85, 90, 95, 100]
    full = table.iloc[-1]
    assert full["test_coverage"] == 100 and full["accepted"] == 200
    assert full["test_accuracy"] == pytest.approx(100 * np.mean(pred[200:] == y[200:]))
    assert table["test_accuracy"].iloc[0] >= full["test_accuracy"]
    assert (table["test_error"] + table["test_accuracy"]).round(6).eq(100).all()
    assert abs(table["val_coverage"].iloc[0] - 80) <= 1


def test_combined_probabilities():
    a = np.array([[0.9, 0.1], [1.0, 0.0]])
    b = np.array([[0.6, 0.4], [0.0, 1.0]])
    c = combined_probabilities(a, b)
    np.testing.assert_allclose(c[0], [0.54 / 0.58, 0.04 / 0.58])
    np.testing.assert_allclose(c[1], [0.5, 0.5])  # certain disagreement: no evidence either way
    s = combined_probabilities(a, b, "softmax")
    assert np.all(s.max(1) <= 1 / (1 + np.exp(-1)) + 1e-9)  # softmax of values in [0, 1] stays below 0.73


def test_batchnorm_recalibration_gives_the_statistics_of_the_images():
    """After re-estimation each batch-norm layer holds its input's mean and (unbiased) variance over all the
    images, whatever the training left there; weights and momentum are untouched."""
    from spuraudit.training import recalibrate_batchnorm, train_classifier

    torch.manual_seed(0)
    card = ModelCard(name="m", architecture="spuraudit:digitnet", class_names=["a", "b"], input_size=[28, 28],
                     mean=[0.5] * 3, std=[0.5] * 3, source="test")
    model = build_audit_model(card)
    gen = torch.Generator().manual_seed(0)
    images = torch.rand(300, 3, 28, 28, generator=gen)
    labels = (images[:, 0, :14].mean((1, 2)) > images[:, 0, 14:].mean((1, 2))).long()
    train_classifier(model, images, labels, epochs=1, seed=0)
    layers = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    first, last = layers[0], layers[-1]
    inputs = {}
    hooks = [m.register_forward_hook(lambda mod, args, out, key=key: inputs.setdefault(key, []).append(args[0]))
             for key, m in (("first", first), ("last", last))]
    weights = {k: v.clone() for k, v in model.state_dict().items() if "running" not in k and "num_batches" not in k}
    stale = last.running_mean.clone()
    seen = recalibrate_batchnorm(model, (images[i:i + 60] for i in range(0, 300, 60)))  # equal batches
    for h in hooks:
        h.remove()
    assert seen == 300
    for key, layer in (("first", first), ("last", last)):
        x = torch.cat(inputs[key])  # the layer's input over the 300 images, [300, C, h, w]
        per_channel = x.transpose(0, 1).flatten(1)
        torch.testing.assert_close(layer.running_mean, per_channel.mean(1), rtol=1e-4, atol=1e-5)
        # momentum None averages the batches' unbiased variances.
        expected_var = torch.stack([b.transpose(0, 1).flatten(1).var(1) for b in inputs[key]]).mean(0)
        torch.testing.assert_close(layer.running_var, expected_var, rtol=1e-4, atol=1e-5)
        assert layer.momentum == 0.1
    assert not torch.allclose(stale, last.running_mean)  # the stored statistics did move
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in weights.items())
    assert not model.training


@pytest.mark.parametrize("share", [1.0, 0.5, 0.0])
def test_the_tuning_epoch_shows_the_chosen_share_of_images_masked(tmp_path, share):
    """Every image is fully masked here, so an image the epoch shows masked arrives as zeros: counting them
    counts the draw. The same options and seed draw the same images."""
    from spuraudit.mitigate.masking import PackedMasks
    from spuraudit.mitigate.masktune import MaskTune
    from tests.ddp_tune_script import N, SIZE, tiny_images, tiny_model

    paths = tiny_images(tmp_path / "images")
    options = {"optimizer": "adam", "lr": 1e-3, "momentum": 0.9, "weight_decay": 0.0, "batch_size": 8,
               "masked_share": share, "fill": "zero"}  # black holes: a masked image is a blank one

    def blank_per_epoch():
        model = tiny_model()
        seen = []
        model.register_forward_hook(lambda mod, args, out: seen.append(args[0].flatten(1).abs().sum(1) == 0))
        with PackedMasks(N, SIZE) as masks:
            masks.add(np.arange(N), torch.ones(N, *SIZE, dtype=torch.bool))
            MaskTune._tune_epoch(model, paths, SIZE, masks, torch.as_tensor(np.arange(N) % 3), options,
                                 torch.Generator().manual_seed(0), torch.device("cpu"), lambda f, m: None)
        return torch.cat(seen)

    blank = blank_per_epoch()
    assert len(blank) == N
    if share == 1.0:
        assert blank.all()
    elif share == 0.0:
        assert not blank.any()
    else:
        assert 0.25 * N < int(blank.sum()) < 0.75 * N  # about half of the 37, drawn
        assert torch.equal(blank, blank_per_epoch())  # seeded


def test_the_tuning_epoch_fills_holes_from_other_images_when_asked(tmp_path):
    """With every image fully masked, fill='others' shows each image another image of its batch: no blank
    input reaches the model, and every input is one of the training images."""
    from spuraudit.mitigate.masking import PackedMasks
    from spuraudit.mitigate.masktune import MaskTune, _loader
    from tests.ddp_tune_script import N, SIZE, tiny_images, tiny_model

    paths = tiny_images(tmp_path / "images")
    options = {"optimizer": "adam", "lr": 1e-3, "momentum": 0.9, "weight_decay": 0.0, "batch_size": 8,
               "masked_share": 1.0, "fill": "others", "seed": 0}
    whole = torch.cat([x for x, _ in _loader(paths, SIZE, 64)])
    model, seen = tiny_model(), []
    model.register_forward_hook(lambda mod, args, out: seen.append(args[0].detach().clone()))
    with PackedMasks(N, SIZE) as masks:
        masks.add(np.arange(N), torch.ones(N, *SIZE, dtype=torch.bool))
        MaskTune._tune_epoch(model, paths, SIZE, masks, torch.as_tensor(np.arange(N) % 3), options,
                             torch.Generator().manual_seed(0), torch.device("cpu"), lambda f, m: None)
    inputs = torch.cat(seen)
    assert len(inputs) == N and (inputs.flatten(1).abs().sum(1) > 0).all()
    largest_difference = (inputs[:, None] - whole[None]).abs().flatten(2).amax(2)  # [inputs, training images]
    assert torch.all(largest_difference.min(1).values < 1e-6)
