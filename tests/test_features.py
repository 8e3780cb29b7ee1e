"""The feature store: real extraction, caching by content, memory-mapped reopening."""

from __future__ import annotations

import numpy as np
import torch

from spuraudit.features import FeatureStore
from spuraudit.modelio import load_model
from spuraudit.training import load_tensors


def test_store_matches_a_direct_forward_pass(demo_project):
    store = demo_project.feature_store()
    assert store is not None
    table = demo_project.table
    model, card = load_model(demo_project.model_folder)
    picks = [0, 17, len(table) - 1]
    x = load_tensors([table.paths[i] for i in picks], tuple(card.input_size))
    with torch.no_grad():
        _, feats, logits = model.forward_all(x)
    # features are stored as float16: half a unit in the last place is 2^-11 relative
    np.testing.assert_allclose(store.features[picks], feats.numpy(), rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(store.logits[picks], logits.numpy(), rtol=1e-4, atol=1e-5)
    assert store.preds[picks].tolist() == logits.argmax(1).tolist()
    assert isinstance(store.features, np.memmap)
    np.testing.assert_array_equal(store.head_weight, model.head.weight.detach().numpy())


def test_reopening_recomputes_nothing(demo_project):
    store = demo_project.feature_store()
    messages = []
    again = demo_project.extract(progress=lambda f, m: messages.append(m))
    assert again.path == store.path
    assert messages == ["features already computed (cached)"]


def test_changing_the_weights_changes_the_store(demo_project, tmp_path):
    from spuraudit.modelio import save_model

    model, card = load_model(demo_project.model_folder)
    with torch.no_grad():
        model.head.bias += 1.0
    other = save_model(model, card, tmp_path / "shifted")
    assert demo_project.feature_store(other) is None  # not computed yet, and never computed implicitly
    path_a = demo_project.feature_store_path()
    path_b = demo_project.feature_store_path(other)
    assert path_a != path_b
    store_b = demo_project.extract(other, num_workers=0)
    np.testing.assert_allclose(store_b.logits, demo_project.feature_store().logits + 1.0, atol=1e-4)
    assert isinstance(FeatureStore.open(store_b.path).preds, np.memmap)
