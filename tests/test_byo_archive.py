"""Safe extraction of uploaded dataset zips, and layout detection, on archives built here (hostile ones too)."""

from __future__ import annotations

import io
import stat
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from spuraudit.data.archive import ArchiveError, detect_layout, extract_zip
from spuraudit.data.table import DatasetError


def _png(seed: int = 0, size: int = 8) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def _zip(entries: dict[str, bytes], compression=zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as zf:
        for name, data in entries.items():
            zf.writestr(zipfile.ZipInfo(name), data, compress_type=compression)
    return buf.getvalue()


def _assert_left_nothing(dest: Path) -> None:
    assert not dest.exists()
    assert not [p for p in dest.parent.iterdir() if p.name.startswith(".tmp-")]


# ---- refusals ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "bad_name, words",
    [
        ("../x.png", "'..'"),
        ("data/../../x.png", "'..'"),
        ("/etc/x.png", "absolute"),
        ("C:/windows/x.png", "absolute"),
        ("..\\..\\x.png", "'..'"),
        ("data\\..\\..\\x.png", "'..'"),
        ("data/C:x.png", "drive letter"),
    ],
)
def test_paths_escaping_the_destination_are_refused(tmp_path, bad_name, words):
    archive = _zip({"cat/a.png": _png(0), bad_name: _png(1)})
    dest = tmp_path / "out"
    with pytest.raises(ArchiveError) as err:
        extract_zip(io.BytesIO(archive), dest)
    assert repr(bad_name) in str(err.value) and words in str(err.value)
    _assert_left_nothing(dest)
    assert not (tmp_path / "x.png").exists()


def test_symlink_entries_are_refused(tmp_path):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("cat/a.png", _png(0))
        link = zipfile.ZipInfo("cat/b.png")
        link.create_system = 3  # Unix: the mode lives in the high 16 bits of external_attr
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(link, "/etc/passwd")
    dest = tmp_path / "out"
    with pytest.raises(ArchiveError, match="'cat/b.png': a symbolic link"):
        extract_zip(io.BytesIO(buf.getvalue()), dest)
    _assert_left_nothing(dest)


def test_too_many_files(tmp_path):
    archive = _zip({f"cat/{i}.png": _png(i) for i in range(6)})
    with pytest.raises(ArchiveError) as err:
        extract_zip(io.BytesIO(archive), tmp_path / "out", max_files=5)
    assert "more than 5 files" in str(err.value) and "cat/5.png" in str(err.value)
    _assert_left_nothing(tmp_path / "out")


def test_zip_bomb_refused_by_ratio(tmp_path):
    archive = _zip({"cat/a.png": _png(0), "cat/bomb.bmp": bytes(4 * 1024**2)})
    assert len(archive) < 50_000  # 4 MB of zeros squeezed into a few KB
    with pytest.raises(ArchiveError) as err:
        extract_zip(io.BytesIO(archive), tmp_path / "out")
    assert "'cat/bomb.bmp'" in str(err.value) and "zip bomb" in str(err.value) and "limit 200:1" in str(err.value)
    _assert_left_nothing(tmp_path / "out")


def test_declared_size_over_the_limit(tmp_path):
    archive = _zip({"cat/a.png": _png(0), "cat/big.bin": bytes(3 * 1024**2)})
    with pytest.raises(ArchiveError) as err:
        extract_zip(io.BytesIO(archive), tmp_path / "out", max_total_bytes=1024**2, max_ratio=10**6)
    assert "'cat/big.bin'" in str(err.value) and "limit of 1,048,576 bytes" in str(err.value)
    _assert_left_nothing(tmp_path / "out")


def _lie_about_size(archive: bytes, declared: int) -> bytes:
    """Rewrite the uncompressed size of the archive's LAST entry in its local and central headers."""
    data = bytearray(archive)
    local = data.rfind(b"PK\x03\x04")
    central = data.rfind(b"PK\x01\x02")
    struct.pack_into("<I", data, local + 22, declared)
    struct.pack_into("<I", data, central + 24, declared)
    return bytes(data)


def test_lying_header_is_caught_while_streaming(tmp_path):
    """The header declares 1 KB; the data inflates to 3 MB. Declared checks pass; streaming refuses."""
    honest = _zip({"cat/a.png": _png(0), "cat/liar.png": bytes(3 * 1024**2)})
    archive = _lie_about_size(honest, 1000)
    info = zipfile.ZipFile(io.BytesIO(archive)).getinfo("cat/liar.png")
    assert info.file_size == 1000
    dest = tmp_path / "out"
    with pytest.raises(ArchiveError) as err:
        extract_zip(io.BytesIO(archive), dest, max_total_bytes=2 * 1024**2)
    assert "'cat/liar.png'" in str(err.value)
    assert "header" in str(err.value)
    _assert_left_nothing(dest)


def test_not_a_zip_and_non_empty_destination(tmp_path):
    with pytest.raises(ArchiveError, match="not a zip file"):
        extract_zip(io.BytesIO(b"hello"), tmp_path / "out")
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("mine")
    with pytest.raises(ArchiveError, match="not empty"):
        extract_zip(io.BytesIO(_zip({"cat/a.png": _png()})), busy)
    assert (busy / "keep.txt").read_text() == "mine"


# ---- accepted archives and their layouts ------------------------------------------------------------
def test_imagefolder_in_a_wrapper_folder_with_junk_and_a_nested_zip(tmp_path):
    inner = _zip({"x.png": _png(9)})
    archive = _zip({
        "mydata/": b"",
        "mydata/cat/a.png": _png(0),
        "mydata/cat/b.png": _png(1),
        "mydata/dog/c.png": _png(2),
        "mydata/dog/more.zip": inner,
        "__MACOSX/mydata/cat/._a.png": b"\x00\x05",
        "mydata/.DS_Store": b"junk",
    })
    path = tmp_path / "upload.zip"
    path.write_bytes(archive)
    dest = extract_zip(path, tmp_path / "out")
    assert not (dest / "__MACOSX").exists() and not (dest / "mydata" / ".DS_Store").exists()
    assert (dest / "mydata" / "dog" / "more.zip").read_bytes() == inner  # nested archive: just a file
    layout = detect_layout(dest)
    assert layout.kind == "imagefolder" and layout.root == dest / "mydata" and layout.splits == ()
    from spuraudit.data import read_imagefolder

    table = read_imagefolder(layout.root)
    assert table.class_names == ["cat", "dog"] and len(table) == 3
    assert any("more.zip" in f for f, _ in table.skipped)


def test_imagefolder_with_splits(tmp_path):
    archive = _zip({f"{s}/{c}/{i}.png": _png(i) for s in ("train", "test") for c in ("a", "b") for i in range(2)})
    dest = extract_zip(io.BytesIO(archive), tmp_path / "out")
    layout = detect_layout(dest)
    assert layout.kind == "imagefolder" and set(layout.splits) == {"train", "test"}


def test_csv_manifest_and_waterbirds_layouts(tmp_path):
    manifest = "path,label,split,background\nimg/0.png,cat,train,grass\nimg/1.png,dog,test,water\n"
    archive = _zip({"set/labels.csv": manifest.encode(), "set/img/0.png": _png(0), "set/img/1.png": _png(1)})
    layout = detect_layout(extract_zip(io.BytesIO(archive), tmp_path / "m"))
    assert layout.kind == "manifest" and layout.root.name == "labels.csv"

    meta = "img_id,img_filename,y,split,place,place_filename\n1,birds/a.png,1,0,1,x\n2,birds/b.png,0,2,0,y\n"
    archive = _zip({"metadata.csv": meta.encode(), "birds/a.png": _png(0), "birds/b.png": _png(1)})
    layout = detect_layout(extract_zip(io.BytesIO(archive), tmp_path / "w"))
    assert layout.kind == "waterbirds" and layout.root.name == "metadata.csv"


def test_nothing_recognisable(tmp_path):
    archive = _zip({"notes/readme.txt": b"hello"})
    dest = extract_zip(io.BytesIO(archive), tmp_path / "out")
    with pytest.raises(DatasetError, match="found no dataset here"):
        detect_layout(dest)


SHARED_WATERBIRDS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "waterbirds" / "metadata.csv"


@pytest.mark.skipif(not SHARED_WATERBIRDS.is_file(), reason="shared Waterbirds metadata not present")
def test_real_waterbirds_metadata_is_recognised():
    layout = detect_layout(SHARED_WATERBIRDS)
    assert layout.kind == "waterbirds" and layout.is_csv
