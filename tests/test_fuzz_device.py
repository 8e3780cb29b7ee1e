"""Bad input on the fast device path: broken JPEGs decoded in a batch, a store that cannot be written."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from spuraudit.data.images import EncodedImageDataset, collate_encoded, decode_batch, load_rgb, to_tensor
from spuraudit.features import run_extraction
from tests.fuzzcases import bad_input
from tests.test_device_path import SIZE, _photo, tiny  # noqa: F401  (fixture)


@bad_input("images", "a JPEG whose header is whole but whose data is cut off, decoded in a batch on the device",
           "an error names the file and says it cannot be decoded and what to do; the batch is not used")
def test_a_broken_jpeg_in_a_batch_names_the_file(tmp_path):
    rng = np.random.default_rng(1)
    good = tmp_path / "good.jpg"
    Image.fromarray(_photo(rng)).save(good, quality=92)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(good.read_bytes()[:len(good.read_bytes()) // 2])
    data = EncodedImageDataset([str(good), str(broken)], SIZE)
    items, _ = collate_encoded([data[0], data[1]])
    assert items[1].dim() == 1  # its header is fine: it goes to the batch decoder
    with pytest.raises(ValueError, match="broken.jpg: cannot decode this JPEG"):
        decode_batch(items, SIZE, torch.device("cpu"), [str(good), str(broken)])


@bad_input("disk", "the store's rows cannot be written (a row file replaced by a folder) while the model computes "
                   "the next chunk", "the error of the background writer stops the extraction; the rows recorded "
                                     "as done are only those on disk")
def test_a_failed_background_write_stops_the_extraction(tiny, tmp_path):
    import json

    table, model = tiny
    x = torch.stack([to_tensor(load_rgb(p, SIZE)) for p in table.paths])
    batches = [(x[i:i + 10], torch.arange(i, i + 10)) for i in range(0, 40, 10)]
    folder = tmp_path / "store"
    folder.mkdir()
    original = run_extraction

    def sabotage():
        for k, batch in enumerate(batches):
            if k == 2:  # after the first chunks went out: the file is gone and a folder stands in its way
                (folder / "logits.npy").unlink()
                (folder / "logits.npy").mkdir()
            yield batch

    with pytest.raises((OSError, RuntimeError)):
        original(model, sabotage(), 40, torch.device("cpu"), folder=folder, chunk_rows=10)
    done = json.loads((folder / "progress.json").read_text())["rows_done"]
    assert done <= 20
