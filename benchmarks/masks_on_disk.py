"""Resident memory of MaskTune's mask storage, in memory against on disk, for a synthetic training set.

    PYTHONPATH=$PWD python benchmarks/masks_on_disk.py [N] [SIZE]

Writes N masks of SIZE × SIZE pixels (random, a quarter masked, like the default rule) in batches of 256
through `PackedMasks`, then reads them back in a shuffled order as the fine-tuning loader does. Each
storage runs in its own process; the figure is that process's peak resident memory (VmHWM).
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _peak_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def one(mode: str, n: int, size: int) -> None:
    import numpy as np
    import torch

    from spuraudit.mitigate.masking import PackedMasks

    batch = 256
    gen = torch.Generator().manual_seed(0)
    masks_batch = torch.rand(batch, size, size, generator=gen) > 0.75
    base = _peak_mb()
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        store = PackedMasks(n, (size, size), Path(tmp) / "masks.npy" if mode == "disk" else None)
        for start in range(0, n, batch):
            pos = np.arange(start, min(start + batch, n))
            store.add(pos, masks_batch[: len(pos)])
        write_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        order = np.random.default_rng(0).permutation(n)
        for start in range(0, n, 128):
            store[order[start:start + 128]]
        read_s = time.perf_counter() - t0
        store.close() if hasattr(store, "close") else None
    print(f"{mode}: N={n:,} at {size} px, bits {n * -(-size * size // 8) / 2**20:,.0f} MiB; peak RSS "
          f"{_peak_mb():,.0f} MB (before the first mask {base:,.0f} MB); write {write_s:.1f} s, shuffled read {read_s:.1f} s")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] in ("memory", "disk"):
        one(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
    else:
        n = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
        size = int(sys.argv[2]) if len(sys.argv) > 2 else 224
        for mode in ("memory", "disk"):
            subprocess.run([sys.executable, __file__, mode, str(n), str(size)], check=True)
