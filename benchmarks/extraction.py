"""Feature-extraction throughput: the feature store's loop against a bare `model(x)` loop.

Both loops run over the SAME pre-decoded batches, so the ratio isolates what the store adds
(the feature map / pooled split, copies into the arrays, progress). A third figure runs the whole
`extract_features` path, decoding the image files included.

    python benchmarks/extraction.py                  # demo model (28 px) + ResNet-18 (224 px) on CPU
    python benchmarks/extraction.py --device cuda    # the same on a GPU
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from spuraudit.data.table import ImageTable
from spuraudit.features import extract_features, run_extraction
from spuraudit.modelio import ModelCard, build_audit_model


def _images(folder: Path, n: int, size: int, seed: int = 0) -> ImageTable:
    import pandas as pd

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        path = folder / f"{i}.jpg"
        Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(path, quality=90)
        rows.append({"path": str(path), "label": i % 2, "split": "test"})
    return ImageTable(class_names=["a", "b"], frame=pd.DataFrame(rows))


def _bare_loop(model, batches, device):
    with torch.inference_mode():
        for x, _ in batches:
            model(x.to(device, non_blocking=True))
    if device.type == "cuda":
        torch.cuda.synchronize()


def bench(arch: str, size: int, n: int, batch: int, device: str, repeats: int = 3) -> dict:
    dev = torch.device(device)
    card = ModelCard(name="bench", architecture=arch, class_names=["a", "b"], input_size=[size, size])
    torch.manual_seed(0)
    model = build_audit_model(card).to(dev).eval()
    if dev.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    x_all = torch.rand(n, 3, size, size)
    batches = [(x_all[i:i + batch], torch.arange(i, min(i + batch, n))) for i in range(0, n, batch)]
    if dev.type == "cuda":
        batches = [(x.to(dev).contiguous(memory_format=torch.channels_last), idx) for x, idx in batches]
    _bare_loop(model, batches[:2], dev)  # warm-up
    bare, store = [], []
    for _ in range(repeats):  # interleaved, so drift on a noisy machine hits both alike
        t = time.perf_counter()
        _bare_loop(model, batches, dev)
        bare.append(time.perf_counter() - t)
        t = time.perf_counter()
        run_extraction(model, batches, n, dev)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        store.append(time.perf_counter() - t)
    with tempfile.TemporaryDirectory() as tmp:
        table = _images(Path(tmp) / "img", n, size)
        t = time.perf_counter()
        extract_features(model, table, Path(tmp) / "store", [size, size], batch_size=batch, device=device)
        full = time.perf_counter() - t
    return {
        "model": arch, "input": size, "images": n, "batch": batch, "device": device,
        "bare_img_s": round(n / min(bare), 1), "store_img_s": round(n / min(store), 1),
        "ratio": round(min(bare) / min(store), 3),
        "end_to_end_img_s_with_decoding": round(n / full, 1),
    }


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    cuda = args.device == "cuda"
    results = [
        bench("spuraudit:digitnet", 28, 4096 if not cuda else 32768, 256, args.device),
        bench("torchvision:resnet18", 224, 256 if not cuda else 4096, 64 if not cuda else 256, args.device),
    ]
    info = {"machine": platform.processor() or platform.machine(), "torch": torch.__version__,
            "threads": torch.get_num_threads()}
    if cuda:
        info["gpu"] = torch.cuda.get_device_name()
    print(json.dumps({"info": info, "results": results}, indent=1))


if __name__ == "__main__":
    main()
