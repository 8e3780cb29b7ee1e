"""Device throughput, end to end from JPEG files against the bare model on pre-decoded tensors.

Three pairs, each with ResNet-50 at 224 px on the same images:

1. extraction: `extract_features` from JPEG files (decoding, resizing, the store's writes included)
   against a bare forward over tensors already on the device;
2. MaskTune's mask generation (XGradCAM of the predicted class, masks packed to disk) from the files
   against a bare forward + backward over tensors on the device;
3. MaskTune's fine-tuning epoch from the files (masks applied) against a plain training loop
   (forward, cross-entropy, backward, Adam step) over tensors on the device.

    python benchmarks/gpu.py                       # CUDA when there is one, else a small CPU run
    python benchmarks/gpu.py --device cpu --images 32
    python benchmarks/gpu.py --device cuda --images 8192 --precision bf16

Prints a table (and JSON with --json). The images are synthetic photographs-like JPEGs of 500 × 375
(ImageNet's typical size): smooth colour fields with some texture, quality 90.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image


def make_jpegs(folder: Path, n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[0:375, 0:500].astype(np.float32)
    paths = []
    for i in range(n):
        a, b, c = rng.uniform(0.005, 0.03, 3)
        base = np.stack([np.sin(a * xx + i), np.cos(b * yy + 2 * i), np.sin(c * (xx + yy))], -1)
        noise = rng.normal(0, 0.15, (375, 500, 3))
        img = np.clip((base * 0.5 + 0.5 + noise) * 255, 0, 255).astype(np.uint8)
        path = folder / f"{i:06d}.jpg"
        Image.fromarray(img).save(path, quality=90)
        paths.append(str(path))
    return paths


def table_of(paths: list[str]):
    import pandas as pd

    from spuraudit.data.table import ImageTable

    frame = pd.DataFrame({"path": paths, "label": [i % 2 for i in range(len(paths))], "split": "train"})
    return ImageTable(class_names=["a", "b"], frame=frame)


def resnet50(device: torch.device):
    from spuraudit.modelio import ModelCard, build_audit_model

    torch.manual_seed(0)
    card = ModelCard(name="bench", architecture="torchvision:resnet50", class_names=["a", "b"], input_size=[224, 224])
    model = build_audit_model(card).to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    return model


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def device_batches(n: int, batch: int, device: torch.device):
    """Pre-decoded inputs already on the device (what a bare benchmark of the model measures)."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(min(n, batch), 3, 224, 224, generator=g).to(device)
    if device.type == "cuda":
        x = x.contiguous(memory_format=torch.channels_last)
    sizes = [min(batch, n - s) for s in range(0, n, batch)]
    return [x[:k] for k in sizes]


def timed(fn, device) -> float:
    sync(device)
    t = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t


def bench_extraction(paths, device, batch, precision, workers) -> tuple[float, float]:
    from spuraudit.features import autocast_dtype, extract_features

    model = resnet50(device).eval()
    amp = autocast_dtype(precision, device)
    xs = device_batches(len(paths), batch, device)

    def bare():
        with torch.inference_mode(), torch.autocast(device.type, dtype=amp, enabled=amp is not None):
            for x in xs:
                model(x)

    bare()  # warm-up (cuDNN autotuning, allocator)
    t_bare = timed(bare, device)
    table = table_of(paths)
    with tempfile.TemporaryDirectory() as tmp:
        extract_features(model, table_of(paths[:batch]), Path(tmp) / "warm", [224, 224], batch_size=batch,
                         num_workers=workers, device=str(device), precision=precision)
        t_full = timed(lambda: extract_features(model, table, Path(tmp) / "store", [224, 224], batch_size=batch,
                                                num_workers=workers, device=str(device), precision=precision), device)
    n = len(paths)
    return n / t_full, n / t_bare


def bench_masks(paths, device, batch) -> tuple[float, float]:
    from spuraudit.mitigate.masking import PackedMasks
    from spuraudit.mitigate.masktune import MaskTune

    model = resnet50(device).eval()
    xs = device_batches(len(paths), batch, device)

    def bare():
        for x in xs:  # the predicted class's score, back through the whole network (as grad-cam does)
            model.zero_grad(set_to_none=True)
            model(x).max(1).values.sum().backward()

    bare()
    t_bare = timed(bare, device)
    labels = torch.as_tensor(np.arange(len(paths)) % 2)
    options = {"mask_batch_size": batch, "rule": "top_fraction", "fraction": 0.25}
    with tempfile.TemporaryDirectory() as tmp, PackedMasks(len(paths), (224, 224), Path(tmp) / "m.npy") as masks:
        t_masks = timed(lambda: MaskTune._mask_round(model, paths, (224, 224), masks, labels, options,
                                                     lambda f, m: None), device)
    n = len(paths)
    return n / t_masks, n / t_bare


def bench_tuning(paths, device, batch) -> tuple[float, float]:
    from spuraudit.mitigate.masking import PackedMasks
    from spuraudit.mitigate.masktune import MaskTune

    n = len(paths)
    labels = torch.as_tensor(np.arange(n) % 2)
    model = resnet50(device).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    xs = device_batches(n, batch, device)
    ys = [labels[:len(x)].to(device) for x in xs]
    loss_fn = torch.nn.CrossEntropyLoss()

    def plain():
        for x, y in zip(xs, ys):
            loss = loss_fn(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    plain()
    t_plain = timed(plain, device)
    options = {"optimizer": "adam", "lr": 1e-4, "momentum": 0.9, "weight_decay": 0.0, "batch_size": batch}
    with tempfile.TemporaryDirectory() as tmp, PackedMasks(n, (224, 224), Path(tmp) / "m.npy") as masks:
        t_tune = timed(lambda: MaskTune._tune_epoch(model, paths, (224, 224), masks, labels, options,
                                                    torch.Generator().manual_seed(0), device, lambda f, m: None), device)
    return n / t_tune, n / t_plain


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--images", type=int, default=None, help="default: 8192 on CUDA, 32 on the CPU")
    p.add_argument("--batch", type=int, default=None, help="default: 256 on CUDA, 16 on the CPU")
    p.add_argument("--train-batch", type=int, default=None, help="default: 128 on CUDA, 16 on the CPU")
    p.add_argument("--precision", default=None, help="extraction autocast: fp32, bf16, fp16 (default fp16 on CUDA)")
    p.add_argument("--workers", type=int, default=None, help="loader processes (default: the CPU count - 1, at most 8)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    if cuda:
        torch.backends.cudnn.benchmark = True
        os.environ.setdefault("SPURAUDIT_DEVICE", str(device))
    n = args.images or (8192 if cuda else 32)
    batch = args.batch or (256 if cuda else 16)
    train_batch = args.train_batch or (128 if cuda else 16)
    workers = args.workers if args.workers is not None else max(0, min(8, (os.cpu_count() or 1) - 1))
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        paths = make_jpegs(Path(tmp) / "jpeg", n)
        made = time.perf_counter() - t
        rows = []
        e2e, bare = bench_extraction(paths, device, batch, args.precision, workers)
        rows.append(("extraction from JPEG files", e2e, "bare forward, tensors on the device", bare))
        m, fb = bench_masks(paths, device, batch)
        rows.append(("MaskTune mask generation", m, "bare forward + backward", fb))
        tune, plain = bench_tuning(paths, device, train_batch)
        rows.append(("MaskTune fine-tuning epoch", tune, "plain training loop", plain))
    info = {"device": torch.cuda.get_device_name(device) if cuda else (platform.processor() or platform.machine()),
            "cpus": os.cpu_count(), "torch": torch.__version__, "images": n, "batch": batch,
            "train_batch": train_batch, "workers": workers, "precision": args.precision or ("fp16" if cuda else "fp32"),
            "jpeg_seconds": round(made, 1)}
    if args.json:
        print(json.dumps({"info": info, "rows": [{"path": a, "img_s": round(b, 1), "reference": c,
                                                  "reference_img_s": round(d, 1), "ratio": round(b / d, 3)}
                                                 for a, b, c, d in rows]}, indent=1))
        return
    print(" · ".join(f"{k} {v}" for k, v in info.items()))
    print(f"| {'path':<28} | {'img/s':>8} | {'reference':<36} | {'img/s':>8} | {'ratio':>6} |")
    print(f"|{'-' * 30}|{'-' * 10}|{'-' * 38}|{'-' * 10}|{'-' * 8}|")
    for a, b, c, d in rows:
        print(f"| {a:<28} | {b:8.1f} | {c:<36} | {d:8.1f} | {b / d:6.2f} |")


if __name__ == "__main__":
    main()
