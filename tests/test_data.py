"""Datasets: ImageFolder, CSV manifests, Waterbirds metadata, corrupt files, the demo generator."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from spuraudit.data import DatasetError, ImageTable, read_imagefolder, read_manifest, read_waterbirds
from spuraudit.data.demo import BiasSpec, add_square, bundled_digits, write_biased_digits

from .conftest import SHARED_DATA


def _png(path, value=128, size=(8, 8)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((*size, 3), value, dtype=np.uint8)).save(path)


def test_imagefolder_flat_with_corrupt_and_stray_files(tmp_path):
    for cls in ("cat", "dog"):
        for i in range(3):
            _png(tmp_path / cls / f"{i}.png")
    (tmp_path / "dog" / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    (tmp_path / "dog" / "notes.txt").write_text("hello")
    table = read_imagefolder(tmp_path)
    assert table.class_names == ["cat", "dog"]
    assert len(table) == 6 and table.splits == ["all"]
    assert np.bincount(table.labels).tolist() == [3, 3]
    reasons = dict(table.skipped)
    assert "cannot decode" in reasons[str(tmp_path / "dog" / "broken.jpg")]
    assert "not an image" in reasons[str(tmp_path / "dog" / "notes.txt")]


def test_imagefolder_with_splits_and_model_classes(tmp_path):
    for split in ("train", "val", "test"):
        for cls in ("b", "a"):
            _png(tmp_path / split / cls / "x.png")
    table = read_imagefolder(tmp_path, class_names=["b", "a"])
    assert table.splits == ["train", "val", "test"]
    assert table.frame.query("split == 'train'")["label"].tolist() == [1, 0]  # a -> 1, b -> 0 (model order)
    with pytest.raises(DatasetError, match=r"\['a'\] are not among"):
        read_imagefolder(tmp_path, class_names=["b", "c"])


def test_imagefolder_errors(tmp_path):
    with pytest.raises(DatasetError, match="not a folder"):
        read_imagefolder(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="found no images"):
        read_imagefolder(tmp_path)


def test_manifest_names_groups_masks_and_round_trip(tmp_path):
    for i in range(4):
        _png(tmp_path / "img" / f"{i}.png", value=40 * i)
        _png(tmp_path / "mask" / f"{i}.png", value=255)
    (tmp_path / "m.csv").write_text(
        "filepath,label,split,place,mask_path\n"
        "img/0.png,water,train,1,mask/0.png\n"
        "img/1.png,land,train,0,mask/1.png\n"
        "img/2.png,water,test,0,mask/2.png\n"
        "img/3.png,land,val,1,mask/3.png\n"
        "img/missing.png,land,val,1,\n"
    )
    table = read_manifest(tmp_path / "m.csv", group_columns=["place"])
    assert table.class_names == ["land", "water"]
    assert table.labels.tolist() == [1, 0, 1, 0]
    assert table.splits == ["train", "val", "test"]
    assert table.has_masks
    assert "line 6" in table.skipped[0][1]
    ids, names = table.group_ids()
    assert names == ["land | place=0", "land | place=1", "water | place=0", "water | place=1"]
    assert ids.tolist() == [3, 0, 2, 1]
    table.save(tmp_path / "saved")
    again = ImageTable.load(tmp_path / "saved")
    assert again.group_ids()[1] == names and again.paths == table.paths


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "empty"),
        ("path,label\n", "no rows"),
        ("image_name,label\nimg/0.png,0\n", "no image path column"),
        ("path,label\nimg/0.png,7\n", "line 2: label '7'"),
        ("path,label,split\nimg/0.png,0,holdout\n", "line 2: split 'holdout'"),
    ],
)
def test_malformed_manifests_name_the_line(tmp_path, text, message):
    _png(tmp_path / "img" / "0.png")
    (tmp_path / "m.csv").write_text(text)
    with pytest.raises(DatasetError, match=message):
        read_manifest(tmp_path / "m.csv", class_names=["a", "b"] if "label" in text else None)


def test_waterbirds_metadata_layout(tmp_path):
    rows = ["img_id,img_filename,y,split,place,place_filename"]
    for i, (y, split, place) in enumerate([(1, 0, 1), (0, 0, 0), (1, 1, 0), (0, 2, 1)]):
        name = f"001.Bird/{i}.jpg"
        _png(tmp_path / name)
        rows.append(f"{i},{name},{y},{split},{place},/x/y.jpg")
    (tmp_path / "metadata.csv").write_text("\n".join(rows) + "\n")
    table = read_waterbirds(tmp_path / "metadata.csv")
    assert table.class_names == ["landbird", "waterbird"]
    assert table.frame["split"].tolist() == ["train", "train", "val", "test"]
    assert table.group_ids()[1] == ["landbird | place=0", "landbird | place=1",
                                   "waterbird | place=0", "waterbird | place=1"]


def test_group_ids_are_in_natural_order_and_name_each_row():
    """Class 10 sorts after class 2 and attribute -1 before 1; every row's id names its own (class, attribute)."""
    import pandas as pd
    frame = pd.DataFrame({"path": [f"/{i}.png" for i in range(6)], "label": [1, 0, 10, 2, 1, 10],
                          "split": "train", "cue": ["1", "0", "0", "1", "-1", "0"]})
    table = ImageTable(class_names=[f"c{i}" for i in range(11)], frame=frame, group_columns=["cue"])
    ids, names = table.group_ids()
    assert names == ["c0 | cue=0", "c1 | cue=-1", "c1 | cue=1", "c2 | cue=1", "c10 | cue=0"]
    assert [names[i] for i in ids] == [f"c{y} | cue={c}" for y, c in zip(frame.label, frame.cue)]


@pytest.mark.skipif(not (SHARED_DATA / "waterbirds" / "metadata.csv").is_file(), reason="shared data absent")
def test_real_waterbirds_metadata_columns_are_understood(tmp_path):
    """The real file (images absent here): every row is read and reported as not found, by line."""
    table_error = None
    try:
        read_waterbirds(SHARED_DATA / "waterbirds" / "metadata.csv", image_root=tmp_path)
    except DatasetError as exc:
        table_error = str(exc)
    assert table_error is not None and "none of the 11788 listed images" in table_error


def test_bundled_digits_and_biased_generator(tmp_path):
    x, y = bundled_digits()
    assert x.shape == (5000, 28, 28) and x.dtype == np.uint8
    assert np.bincount(y).tolist() == [500] * 10
    table = write_biased_digits(tmp_path, x, y, (300, 100, 100), BiasSpec(0.9, 0.1), seed=3)
    f = table.frame
    train = f[f.split == "train"]
    assert train.groupby("label")["square"].mean().round(2).tolist() == [0.9, 0.1]
    test = f[f.split == "test"]
    assert test.groupby("label")["square"].mean().round(2).tolist() == [0.5, 0.5]
    assert (f.label == (f.digit >= 5)).all()
    # The square is really in the pixels, exactly where the cue column says.
    first = np.asarray(Image.open(f.path[f.square == 1].iloc[0]))
    assert first[:4, :4].tolist() == [[[255, 0, 0]] * 4] * 4
    plain = np.asarray(Image.open(f.path[f.square == 0].iloc[0]))
    assert (plain[:4, :4, 0] == plain[:4, :4, 1]).all()
    mask = np.asarray(Image.open(f.mask_path.iloc[0]))
    assert 0.05 < (mask > 0).mean() < 0.5


def test_add_square_copies():
    img = np.zeros((2, 6, 6, 3), dtype=np.uint8)
    out = add_square(img)
    assert img.sum() == 0 and out[:, :4, :4, 0].min() == 255 and out[:, 4:, :, :].sum() == 0


def test_ten_class_demo_generator_plants_what_its_columns_say(tmp_path):
    from spuraudit.data.demo import DIGIT_NAMES, MULTI_COLUMN, RED_COLUMN, DemoSpec, write_demo_digits

    x, y = bundled_digits()
    spec = DemoSpec(two_digit_images=(0, 5, 5))
    table = write_demo_digits(tmp_path, x, y, (600, 200, 200), spec, seed=1)
    f = table.frame
    assert table.class_names == DIGIT_NAMES and (f.label == f.digit).all()
    train = f[f.split == "train"]
    rates = train.groupby("label")["square"].mean()
    assert rates[spec.cue_class] == pytest.approx(spec.cue_rate, abs=0.02)
    assert rates.drop(spec.cue_class).max() <= 0.05
    test = f[f.split == "test"]
    assert test[test[MULTI_COLUMN] == 0].groupby("label")["square"].mean().between(0.45, 0.55).all()
    two = f[f[MULTI_COLUMN] == 1]
    assert (two.label == spec.confused_class).all() and two.split.value_counts().to_dict() == {"val": 5, "test": 5}
    assert (two.square == 0).all() and (two[RED_COLUMN] == 1).all()
    assert (f[RED_COLUMN] == ((f.label == spec.red_class) | (f[MULTI_COLUMN] == 1))).all()
    side = spec.square_size

    def pixels(row):
        return np.asarray(Image.open(row.path)).astype(int), np.asarray(Image.open(row.mask_path)) > 0

    square, _ = pixels(f[f.square == 1].iloc[0])
    assert (square[:side, :side] == [255, 0, 0]).all()
    red, red_mask = pixels(f[(f.label == spec.red_class) & (f.square == 0)].iloc[0])
    assert (red[..., 1:] == 0).all() and red[..., 0].max() > 200 and red_mask.any()  # drawn in red only
    both, both_mask = pixels(two.iloc[0])
    is_red = (both[..., 0] > 128) & (both[..., 1] == 0)
    is_grey = (both[..., 0] > 128) & (both[..., 1] == both[..., 0])
    assert is_red.sum() > 20 and is_grey.sum() > 20  # a grey digit and a red one
    assert not (both_mask & is_red).any() and (both_mask & is_grey).sum() >= 0.5 * is_grey.sum()  # the mask: grey only
    assert is_grey.nonzero()[1].mean() < is_red.nonzero()[1].mean()  # the labelled digit on the left
