"""The fast device path, exercised on the CPU: batched JPEG decoding, autocast precision, overlapped writes."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from spuraudit.data.images import EncodedImageDataset, collate_encoded, decode_batch, load_rgb, to_tensor
from spuraudit.data.table import ImageTable
from spuraudit.features import extract_features, run_extraction
from spuraudit.modelio import ModelCard, build_audit_model

SIZE = (28, 28)


def _photo(rng, h=45, w=60) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([np.sin(xx / 7.0), np.cos(yy / 5.0), np.sin((xx + yy) / 9.0)], -1) * 0.4 + 0.5
    return np.clip((base + rng.normal(0, 0.05, (h, w, 3))) * 255, 0, 255).astype(np.uint8)


@pytest.fixture
def mixed_images(tmp_path):
    """Plain JPEGs (colour and grey) and the files the batch decoder must leave to PIL."""
    rng = np.random.default_rng(0)
    paths = {}
    for i in range(5):
        paths[f"rgb{i}"] = tmp_path / f"rgb{i}.jpg"
        Image.fromarray(_photo(rng)).save(paths[f"rgb{i}"], quality=92)
    paths["grey"] = tmp_path / "grey.jpg"
    Image.fromarray(_photo(rng)[..., 0]).save(paths["grey"], quality=92)
    paths["png"] = tmp_path / "image.png"
    Image.fromarray(_photo(rng)).save(paths["png"])
    paths["cmyk"] = tmp_path / "cmyk.jpg"
    Image.fromarray(_photo(rng)).convert("CMYK").save(paths["cmyk"], quality=92)
    paths["rotated"] = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° when shown
    Image.fromarray(_photo(rng)).save(paths["rotated"], quality=92, exif=exif)
    return {k: str(v) for k, v in paths.items()}


def test_batched_decoding_matches_pil(mixed_images):
    names = list(mixed_images)
    paths = [mixed_images[k] for k in names]
    data = EncodedImageDataset(paths, SIZE)
    items, idx = collate_encoded([data[i] for i in range(len(paths))])
    kinds = {name: ("bytes" if t.dim() == 1 else "pil") for name, t in zip(names, items)}
    assert kinds == {**{f"rgb{i}": "bytes" for i in range(5)}, "grey": "bytes", "png": "pil", "cmyk": "pil",
                     "rotated": "pil"}
    batch = decode_batch(items, SIZE, torch.device("cpu"), paths)
    assert batch.shape == (len(paths), 3, *SIZE) and idx.tolist() == list(range(len(paths)))
    reference = torch.stack([to_tensor(load_rgb(p, SIZE)) for p in paths])
    diff = (batch - reference).abs()
    for k, name in enumerate(names):
        if kinds[name] == "pil":
            assert torch.equal(batch[k], reference[k]), name  # decoded by PIL either way
        else:  # another resampler: within a few levels of 255, on average far less
            assert diff[k].max() <= 6 / 255 and diff[k].mean() <= 1 / 255, (name, diff[k].max(), diff[k].mean())
    assert batch[names.index("rotated")].shape[1:] == SIZE  # EXIF-rotated by PIL, then resized


@pytest.fixture
def tiny(tmp_path):
    rng = np.random.default_rng(2)
    paths = []
    for i in range(40):
        path = tmp_path / "img" / f"{i:02d}.jpg"
        path.parent.mkdir(exist_ok=True)
        Image.fromarray(_photo(rng)).save(path, quality=92)
        paths.append(str(path))
    table = ImageTable(class_names=["a", "b"], frame=pd.DataFrame({"path": paths, "label": [i % 2 for i in range(40)],
                                                                   "split": "test"}))
    torch.manual_seed(0)
    model = build_audit_model(ModelCard(name="t", architecture="spuraudit:digitnet", class_names=["a", "b"],
                                        input_size=list(SIZE), mean=[0.5] * 3, std=[0.25] * 3)).eval()
    return table, model


def test_device_decoding_gives_the_same_store(tiny, tmp_path):
    table, model = tiny
    pil = extract_features(model, table, tmp_path / "pil", SIZE, batch_size=16, num_workers=0, device="cpu",
                           decode="pil", chunk_rows=10)
    dev = extract_features(model, table, tmp_path / "dev", SIZE, batch_size=16, num_workers=0, device="cpu",
                           decode="device", chunk_rows=10)
    assert dev.meta["decode"] == "device" and pil.meta["decode"] == "pil"
    np.testing.assert_allclose(np.asarray(dev.logits), np.asarray(pil.logits), atol=0.05)
    assert np.mean(np.asarray(dev.preds) == np.asarray(pil.preds)) >= 0.95


def test_bf16_autocast_on_the_cpu_and_fp16_refused(tiny):
    table, model = tiny
    x = torch.stack([to_tensor(load_rgb(p, SIZE)) for p in table.paths[:8]])
    batches = [(x, torch.arange(8))]
    cpu = torch.device("cpu")
    f32, z32 = run_extraction(model, batches, 8, cpu, precision="fp32")
    f16, z16 = run_extraction(model, batches, 8, cpu, precision="bf16")
    assert not np.array_equal(z32, z16)  # it really ran in bfloat16
    np.testing.assert_allclose(z16, z32, atol=0.1 * np.abs(z32).max())
    with pytest.raises(ValueError, match="fp16 autocast needs a CUDA device"):
        run_extraction(model, batches, 8, cpu, precision="fp16")
