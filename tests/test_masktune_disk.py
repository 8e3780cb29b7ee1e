"""MaskTune's masks on disk: the same bits as in memory, a readable .npy file, and flat process memory."""

from __future__ import annotations

import gc
from pathlib import Path

import numpy as np
import torch

from spuraudit.mitigate.masking import PackedMasks


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def test_file_masks_match_memory_masks_in_any_order(tmp_path):
    gen = torch.Generator().manual_seed(0)
    size, n = (9, 11), 50  # 99 pixels: the last byte of each row is partly padding
    memory = PackedMasks(n, size)
    with PackedMasks(n, size, tmp_path / "masks.npy") as disk:
        for _ in range(4):
            positions = torch.randperm(n, generator=gen)[:17].numpy()  # shuffled, with gaps and runs
            new = torch.rand(len(positions), *size, generator=gen) > 0.8
            memory.add(positions, new)
            disk.add(positions, new)
            probe = torch.randperm(n, generator=gen)[:23].numpy()
            assert torch.equal(disk[probe], memory[probe])
        np.testing.assert_array_equal(disk.shares(chunk=7), memory.shares())
        # The file is a plain .npy of the packed rows.
        np.testing.assert_array_equal(np.load(tmp_path / "masks.npy"), memory.bits)


def test_untouched_rows_read_as_empty_masks(tmp_path):
    with PackedMasks(1000, (4, 4), tmp_path / "masks.npy") as disk:
        disk.add([3], torch.ones(1, 4, 4, dtype=torch.bool))
        assert not disk[[0, 999]].any() and disk[[3]].all()


def test_masks_on_disk_keep_process_memory_flat(tmp_path):
    """20,000 masks at 224 px are 125 MB of bits: written through, they never sit in the process."""
    n, size, batch = 20_000, (224, 224), 500
    gen = torch.Generator().manual_seed(0)
    one_batch = torch.rand(batch, *size, generator=gen) > 0.75
    with PackedMasks(n, size, tmp_path / "masks.npy") as disk:
        disk.add(np.arange(batch), one_batch)  # warm-up: the per-batch temporaries are allocated once
        gc.collect()
        before = _rss_mb()
        for start in range(batch, n, batch):
            disk.add(np.arange(start, start + batch), one_batch)
        growth = _rss_mb() - before
        shares = disk.shares()
    assert (tmp_path / "masks.npy").stat().st_size >= n * 224 * 224 // 8
    assert growth < 40, f"resident memory grew {growth:.0f} MB"
    np.testing.assert_allclose(shares[:batch], one_batch.flatten(1).float().mean(1).numpy())
