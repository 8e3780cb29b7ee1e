"""Many processes through torchrun on the CPU (gloo): the same store and the same tuned model as one process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from spuraudit import distributed
from spuraudit.features import FeatureStore

REPO = Path(__file__).resolve().parents[1]


def torchrun(nproc: int, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    env.pop("SPURAUDIT_DEVICE", None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", *args]
    out = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out


def test_shards_cover_every_row_once():
    for n in (0, 1, 5, 37, 1000):
        for world in (1, 2, 3, 8):
            rows = [distributed.shard(n, r, world) for r in range(world)]
            assert rows[0][0] == 0 and rows[-1][1] == n
            assert all(a[1] == b[0] for a, b in zip(rows, rows[1:]))
            assert max(hi - lo for lo, hi in rows) - min(hi - lo for lo, hi in rows) <= 1


def test_two_processes_extract_the_same_store_as_one(demo_project, demo_copy):
    import shutil

    one = demo_project.feature_store()
    shutil.rmtree(demo_copy.folder / "features")
    out = torchrun(2, "-m", "spuraudit", "extract", "--project", str(demo_copy.folder), "--device", "cpu",
                   "--workers", "0", "--batch-size", "100", "--json")
    two = FeatureStore.open(demo_copy.feature_store().path)
    assert two.path.name == one.path.name
    assert two.meta["processes"] == 2 and '"processes": 2' in out.stdout
    assert out.stdout.count('"key"') == 1  # rank 0 alone reports
    np.testing.assert_array_equal(two.preds, one.preds)
    np.testing.assert_allclose(np.asarray(two.features, np.float32), np.asarray(one.features, np.float32),
                               rtol=2e-3, atol=1e-3)
    np.testing.assert_allclose(two.logits, one.logits, rtol=1e-4, atol=1e-4)
    names = sorted(p.name for p in one.path.iterdir())
    assert sorted(p.name for p in two.path.iterdir()) == names  # no progress files left, nothing missing
    assert not list(two.path.parent.glob(".partial-*"))


@pytest.mark.slow
@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_ddp_masktune_epoch_equals_one_process(tmp_path, optimizer):
    from tests.ddp_tune_script import tune

    single = tune(tmp_path, optimizer)
    torchrun(2, str(REPO / "tests" / "ddp_tune_script.py"), str(tmp_path), str(tmp_path / "ddp.pt"), optimizer)
    ddp = torch.load(tmp_path / "ddp.pt")
    start = __import__("tests.ddp_tune_script", fromlist=["tiny_model"]).tiny_model().state_dict()
    for name, value in single.items():
        assert not torch.equal(value, start[name]) or name.endswith("num_batches_tracked")  # it trained
        torch.testing.assert_close(ddp[name], value, rtol=1e-5, atol=1e-6)


def test_batch_size_must_split_evenly_over_processes(monkeypatch):
    monkeypatch.setattr(distributed, "world_size", lambda: 3)
    monkeypatch.setattr(distributed, "rank", lambda: 1)
    with pytest.raises(ValueError, match="multiple of the 3 processes"):
        distributed.EpochShard.of(np.arange(10), 8)
    shard = distributed.EpochShard.of(np.arange(10), 6)
    assert shard.order.tolist() == [2, 3, 8, 9] and shard.batch_size == 2
    assert shard.loss_weight(0) == 3 / 6 and shard.loss_weight(1) == 3 / 4


@pytest.mark.slow
def test_masktune_through_torchrun_writes_one_model(demo_home, tmp_path):
    """The documented launcher end to end: 2 processes tune, rank 0 alone writes the model folder, and the
    new model's store (extracted by both) is the one its weights name."""
    from spuraudit.mitigate import list_mitigated_models
    from spuraudit.modelio import load_model
    from tests.test_mitigate_fixtures import private_demo

    project, _ = private_demo(demo_home, tmp_path / "home", label_cue=False)
    before = {p.name for p in project.model_folder.parent.iterdir()}
    out = torchrun(2, "-m", "spuraudit", "mitigate", "--project", str(project.folder), "--method", "masktune",
                   "--device", "cpu", "-o", "seed=4", "-o", "batch_size=64", "--json")
    assert out.stdout.count('"model_folder"') == 1
    made = {p.name for p in project.model_folder.parent.iterdir()} - before
    assert len(made) == 1
    (folder, card), = list_mitigated_models(project)
    assert folder.name in made and card.method == "masktune" and card.options["batch_size"] == 64
    store = project.feature_store(folder)
    assert store is not None and store.meta["processes"] == 2
    model, _ = load_model(folder)
    assert store.meta["model_hash"] == __import__("spuraudit.modelio", fromlist=["weights_hash"]).weights_hash(model)
    assert not list(project.cache_dir.glob(".rank-*"))  # the other rank's scratch copy is gone
