"""Hostile input against the real CLI and the real pages: every case must end in a clear message that names
the file, row or entry, with no traceback, nothing written outside the home, nothing half-made, and the
project that was there before still intact.

Each test is one kind of bad input, registered with `@bad_input` so `docs/bad-input.md` lists it.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import shutil
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from streamlit.testing.v1 import AppTest

from spuraudit import paths
from spuraudit.auth import add_user
from spuraudit.cli import main
from spuraudit.data.table import DatasetError
from spuraudit.modelio.digitnet import DigitNet
from spuraudit.create import unpack_dataset_zip
from tests.fuzzcases import bad_input

ROOT = Path(__file__).resolve().parents[1]


# ---- a world to attack: a home with an earlier project, data inside a data root, a secret outside ------
def _png_bytes(seed: int, colour=(200, 30, 30)) -> bytes:
    rng = np.random.default_rng(seed)
    pixels = np.clip(np.array(colour)[None, None, :] + rng.integers(-20, 20, (28, 28, 3)), 0, 255)
    buf = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def _imagefolder(root: Path, per_class: int = 3) -> Path:
    for name, colour in (("red", (200, 30, 30)), ("green", (30, 200, 40))):
        for i in range(per_class):
            (root / name).mkdir(parents=True, exist_ok=True)
            (root / name / f"{i}.png").write_bytes(_png_bytes(i, colour))
    return root


@pytest.fixture(scope="module")
def earlier(tmp_path_factory) -> Path:
    """A home holding one real project, made once; each test works on its own copy."""
    from spuraudit.create import create_project

    base = tmp_path_factory.mktemp("earlier")
    data = _imagefolder(base / "data")
    weights = base / "digitnet.pt"
    torch.manual_seed(0)
    torch.save(DigitNet(2).state_dict(), weights)
    project = create_project("earlier", data, arch="spuraudit:digitnet", checkpoint=weights, size=28,
                             mean="0.5,0.5,0.5", std="0.5,0.5,0.5", base=base / "home")
    project.extract(device="cpu", num_workers=0)
    project.labels().add_vote(0, 1, "background", annotator="earlier")  # a vote that must survive
    return base


def _digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


class World:
    """tmp_path/home (SPURAUDIT_HOME), tmp_path/data (the only data root), tmp_path/outside (a secret)."""

    def __init__(self, tmp_path: Path, earlier: Path, monkeypatch):
        self.tmp = tmp_path
        self.home = tmp_path / "home"
        shutil.copytree(earlier / "home", self.home, symlinks=True)
        # the model folder's card points at the checkpoint it came from; keep it where it was
        self.data = _imagefolder(tmp_path / "data" / "colours")
        self.outside = tmp_path / "outside"
        self.outside.mkdir()
        self.secret = self.outside / "secret.png"
        self.secret.write_bytes(_png_bytes(99))
        self.weights = tmp_path / "data" / "digitnet.pt"
        torch.save(DigitNet(2).state_dict(), self.weights)
        monkeypatch.setenv("SPURAUDIT_HOME", str(self.home))
        monkeypatch.setenv("HOME", str(tmp_path))
        monkeypatch.setenv(paths.DATA_ROOTS_ENV, str(tmp_path / "data"))
        self.before = _digest(self.home)
        self.outside_before = sorted(p.name for p in self.tmp.iterdir())

    def create(self, capsys, data, checkpoint=None, *extra: str, name: str = "attempt") -> str:
        """Run `spuraudit create` in-process; it must refuse (exit 2) and say why on stderr."""
        rc = main(["create", "--name", name, "--data", str(data), "--arch", "spuraudit:digitnet",
                   "--checkpoint", str(checkpoint or self.weights), "--input-size", "28", "--mean", "0.5,0.5,0.5",
                   "--std", "0.5,0.5,0.5", "--json", *extra])
        err = capsys.readouterr().err
        assert rc == 2, err
        assert err.startswith("error: ") and "Traceback" not in err
        return err

    def intact(self) -> None:
        """The earlier project is untouched, nothing new or half-made is left, nothing appeared outside."""
        after = _digest(self.home)
        changed = [k for k, v in self.before.items() if after.get(k) != v]
        assert not changed, f"earlier files changed or vanished: {changed}"
        new = sorted(set(after) - set(self.before))
        assert not [n for n in new if n.startswith(("projects/", "models/"))], f"half-made: {new}"
        assert not [n for n in new if "/.tmp" in n or n.startswith(".tmp")], f"temporary leftovers: {new}"
        assert sorted(p.name for p in self.tmp.iterdir()) == self.outside_before
        assert [p.name for p in self.outside.iterdir()] == ["secret.png"]


@pytest.fixture
def world(tmp_path, earlier, monkeypatch) -> World:
    return World(tmp_path, earlier, monkeypatch)


def _zip(entries: dict[str, bytes], symlinks: tuple[str, ...] = ()) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries.items():
            info = zipfile.ZipInfo(name)
            if name in symlinks:
                info.external_attr = 0o120777 << 16
            zf.writestr(info, data, compress_type=zipfile.ZIP_DEFLATED)
    return buf.getvalue()


def _good_entries(prefix: str = "set/") -> dict[str, bytes]:
    return {f"{prefix}{c}/{i}.png": _png_bytes(i, col) for c, col in (("red", (200, 30, 30)), ("green", (30, 200, 40)))
            for i in range(3)}


def _zip_file(world: World, entries: dict[str, bytes], name: str = "upload.zip", **kw) -> Path:
    path = world.tmp / "data" / name
    path.write_bytes(_zip(entries, **kw))
    return path


# ---- images and datasets --------------------------------------------------------------------------
@bad_input("images", "An ImageFolder whose class folder holds a symbolic link to an image outside the dataset.",
           "The link is listed as skipped (not followed); the file it points at is never read or shown.")
def test_symlinked_image_is_not_followed(world):
    from spuraudit.create import preview_dataset

    (world.data / "red" / "link.png").symlink_to(world.secret)
    preview = preview_dataset(world.data)
    assert str(world.secret) not in set(preview.table.paths)
    assert any(path.endswith("link.png") and "symbolic link" in why for path, why in preview.table.skipped)
    world.intact()


@bad_input("datasets", "An ImageFolder whose class folder is a symbolic link to a folder outside the data root.",
           "Its images are skipped as outside the dataset once links are resolved; none is read or shown.")
def test_symlinked_class_folder_is_not_followed(world):
    from spuraudit.create import preview_dataset

    (world.data / "blue").symlink_to(world.outside, target_is_directory=True)
    preview = preview_dataset(world.data)
    assert str(world.secret) not in set(preview.table.paths) and "blue" not in preview.table.class_names
    assert any("secret.png" in path and "outside" in why for path, why in preview.table.skipped)
    world.intact()


# ---- zips --------------------------------------------------------------------------------------
@bad_input("zips", "A zip entry named `../../outside/evil.png` (zip slip).",
           "Refused before a byte is written, naming the entry and '..'; nothing lands outside the upload folder.")
def test_zip_slip_with_dot_dot(world, capsys):
    err = world.create(capsys, _zip_file(world, {**_good_entries(), "../../outside/evil.png": b"x"}))
    assert "'../../outside/evil.png'" in err and "'..'" in err
    world.intact()


@bad_input("zips", "A zip entry with an absolute name (`/tmp/evil.png`).",
           "Refused, naming the entry: archive entries must be relative.")
def test_zip_absolute_entry(world, capsys):
    err = world.create(capsys, _zip_file(world, {**_good_entries(), "/tmp/evil.png": b"x"}))
    assert "/tmp/evil.png" in err and "absolute" in err
    world.intact()


@bad_input("zips", "A zip entry written with Windows separators that climbs out (`..\\..\\evil.png`).",
           "Refused like `../`: backslashes count as separators.")
def test_zip_backslash_traversal(world, capsys):
    err = world.create(capsys, _zip_file(world, {**_good_entries(), "..\\..\\evil.png": b"x"}))
    assert "'..'" in err
    world.intact()


@bad_input("zips", "A zip holding a symbolic link entry (pointing at `/etc/passwd`).",
           "Refused, naming the entry: links can point anywhere on the server.")
def test_zip_symlink_entry(world, capsys):
    err = world.create(capsys, _zip_file(world, {**_good_entries(), "set/red/link.png": b"/etc/passwd"},
                                         symlinks=("set/red/link.png",)))
    assert "set/red/link.png" in err and "symbolic link" in err
    world.intact()


@bad_input("zips", "A zip holding a file `set/red` and a folder `set/red/` of the same name.",
           "Refused, naming both entries (before: FileExistsError traceback).")
def test_zip_file_and_folder_with_one_name(world, capsys):
    entries = {"set/red": b"a file", **_good_entries()}
    err = world.create(capsys, _zip_file(world, entries))
    assert "set/red" in err and "same name" in err or "holds a file of that name" in err
    world.intact()


@bad_input("zips", "A zip whose folder entry comes after a file of the same name (`set/x` then `set/x/1.png`).",
           "Refused the same way whatever the order of the entries.")
def test_zip_file_then_folder_order(world, capsys):
    entries = {**_good_entries(), "set/x": b"file", "set/x/1.png": _png_bytes(1)}
    err = world.create(capsys, _zip_file(world, entries))
    assert "set/x" in err and "file of that name" in err
    world.intact()


@bad_input("zips", "A zip entry whose name is 300 characters long.",
           "Refused, naming the entry and the 255-byte limit (before: `OSError: File name too long`).")
def test_zip_overlong_entry_name(world, capsys):
    long = "a" * 300 + ".png"
    err = world.create(capsys, _zip_file(world, {**_good_entries(), f"set/red/{long}": _png_bytes(5)}))
    assert "255-byte limit" in err and "aaaa" in err
    world.intact()


@bad_input("zips", "An uploaded zip whose own file name is 300 characters long.",
           "Refused with a message to rename it (before: `OSError: File name too long` while previewing).")
def test_zip_upload_with_overlong_file_name(world):
    data = io.BytesIO(_zip(_good_entries()))
    with pytest.raises(DatasetError, match="too long"):
        unpack_dataset_zip(data, "b" * 300 + ".zip")
    world.intact()


@bad_input("zips", "A zip bomb: one entry of 50 MB of zeros compressed to a few kilobytes.",
           "Refused by compression ratio, naming the entry; nothing is extracted.")
def test_zip_bomb_by_ratio(world, capsys):
    err = world.create(capsys, _zip_file(world, {**_good_entries(), "set/red/bomb.png": bytes(50 * 1024**2)}))
    assert "zip bomb" in err and "set/red/bomb.png" in err
    world.intact()


@bad_input("zips", "A zip whose entries add up to more uncompressed bytes than the server allows.",
           "Refused on the declared sizes before extraction, naming the entry that crossed the limit.")
def test_zip_total_size_limit(world):
    with pytest.raises(DatasetError, match="declared uncompressed size"):
        unpack_dataset_zip(io.BytesIO(_zip(_good_entries())), "big.zip", max_total_bytes=1000)
    world.intact()


@bad_input("zips", "A zip with more members than the server allows.",
           "Refused, naming the limit and the entry where it was reached.")
def test_zip_member_count_limit(world):
    with pytest.raises(DatasetError, match="more than 4 files"):
        unpack_dataset_zip(io.BytesIO(_zip(_good_entries())), "many.zip", max_files=4)
    world.intact()


@bad_input("zips", "A file named `.zip` that is not a zip at all.",
           "Refused: not a zip file, with what to upload instead.")
def test_not_a_zip(world, capsys):
    path = world.tmp / "data" / "fake.zip"
    path.write_bytes(b"PK\x03\x04 this is not really a zip" * 10)
    err = world.create(capsys, path)
    assert "fake.zip" in err and "not a zip" in err
    world.intact()


@bad_input("zips", "A zip holding nothing but what operating systems add (`__MACOSX/`, `.DS_Store`).",
           "Refused: no dataset found, with the layouts expected; the extracted junk is removed.")
def test_zip_of_only_junk(world, capsys):
    err = world.create(capsys, _zip_file(world, {"__MACOSX/._x.png": b"x", "set/.DS_Store": b"x"}, "junk.zip"))
    assert "found no dataset here" in err
    assert not [p for p in (world.home / "uploads").iterdir()]
    world.intact()


@bad_input("zips", "A zip entry flagged as encrypted.",
           "Refused, asking for an archive without a password.")
def test_zip_encrypted_entry(world, capsys):
    raw = bytearray(_zip({"set/red/0.png": _png_bytes(0), **_good_entries()}))
    # set the 'encrypted' flag bit of the first entry in its local and central headers
    for sig in (b"PK\x03\x04", b"PK\x01\x02"):
        at = raw.find(sig)
        offset = at + (6 if sig == b"PK\x03\x04" else 8)
        raw[offset] |= 0x1
    path = world.tmp / "data" / "locked.zip"
    path.write_bytes(bytes(raw))
    err = world.create(capsys, path)
    assert "encrypted" in err and "set/red/0.png" in err
    world.intact()


# ---- manifests ---------------------------------------------------------------------------------
def _manifest_zip(world: World, rows: list[str], name: str = "manifest.zip") -> Path:
    entries = {f"set/img/{i}.png": _png_bytes(i) for i in range(4)}
    lines = ["path,label"] + [f"img/{i}.png,{'a' if i % 2 else 'b'}" for i in range(4)] + rows
    entries["set/labels.csv"] = ("\n".join(lines) + "\n").encode()
    return _zip_file(world, entries, name)


@bad_input("manifests", "A CSV manifest inside an uploaded zip naming `../../../../etc/passwd`.",
           "Refused, naming the CSV, the line and the upload it must stay in; /etc/passwd is never opened.")
def test_manifest_in_zip_climbs_out(world, capsys):
    err = world.create(capsys, _manifest_zip(world, ["../../../../../../etc/passwd,a"]))
    assert "labels.csv, line 6" in err and "outside the uploaded archive" in err and "/etc/passwd" in err
    world.intact()


@bad_input("manifests", "A CSV manifest inside an uploaded zip naming an absolute path (`/etc/shadow`).",
           "Refused, naming the line; a manifest in an upload may only name files inside that upload.")
def test_manifest_in_zip_absolute_path(world, capsys):
    err = world.create(capsys, _manifest_zip(world, ["/etc/shadow,a"]))
    assert "line 6" in err and "/etc/shadow" in err and "outside the uploaded archive" in err
    world.intact()


@bad_input("manifests", "A CSV manifest inside an upload naming another file on the server, inside the data roots.",
           "Refused: inside an upload the data roots do not count, only the upload itself.")
def test_manifest_in_zip_names_a_data_root_file(world, capsys):
    err = world.create(capsys, _manifest_zip(world, [f"{world.data / 'red' / '0.png'},a"]))
    assert "line 6" in err and "outside the uploaded archive" in err
    world.intact()


@bad_input("manifests", "An uploaded manifest with `--image-root` set to a server folder, so its relative rows point there.",
           "Refused: the rows still resolve outside the upload.")
def test_manifest_in_zip_with_outside_image_root(world, capsys):
    err = world.create(capsys, _manifest_zip(world, []), None, "--image-root", str(world.outside))
    assert "line 2" in err and "outside the uploaded archive" in err
    world.intact()


def _server_manifest(world: World, rows: list[str], mask: str | None = None) -> Path:
    folder = world.tmp / "data" / "csvset"
    lines = ["path,label" + (",mask" if mask is not None else "")]
    for i in range(2):
        (folder / "img").mkdir(parents=True, exist_ok=True)
        (folder / "img" / f"{i}.png").write_bytes(_png_bytes(i))
        lines.append(f"img/{i}.png,{'a' if i else 'b'}" + (",img/0.png" if mask is not None else ""))
    lines += rows
    if mask is not None:
        lines.append(f"img/1.png,a,{mask}")
    (folder / "labels.csv").write_text("\n".join(lines) + "\n")
    return folder / "labels.csv"


@bad_input("manifests", "A manifest on the server naming a file outside the data roots by absolute path.",
           "Refused, naming the CSV line, the resolved file and the data roots.")
def test_server_manifest_absolute_outside_roots(world, capsys):
    err = world.create(capsys, _server_manifest(world, [f"{world.secret},a"]))
    assert "line 4" in err and str(world.secret) in err and str(world.tmp / "data") in err
    world.intact()


@bad_input("manifests", "A manifest on the server whose relative row climbs out of the data roots with `../`.",
           "Refused, naming the line and where the path resolves.")
def test_server_manifest_dot_dot(world, capsys):
    err = world.create(capsys, _server_manifest(world, ["../../outside/secret.png,a"]))
    assert "line 4" in err and "resolves to" in err and "data roots" in err
    world.intact()


@bad_input("manifests", "A manifest row naming a symbolic link inside the data root that points outside it.",
           "Refused: links are resolved before the check.")
def test_server_manifest_symlink_out(world, capsys):
    csv = _server_manifest(world, ["img/link.png,a"])
    (csv.parent / "img" / "link.png").symlink_to(world.secret)
    err = world.create(capsys, csv)
    assert "line 4" in err and str(world.secret) in err
    world.intact()


@bad_input("manifests", "A manifest whose mask column names a file outside the data roots.",
           "Refused like an image path, naming the line.")
def test_server_manifest_mask_outside(world, capsys):
    err = world.create(capsys, _server_manifest(world, [], mask=str(world.secret)))
    assert "line 4" in err and str(world.secret) in err
    world.intact()


# ---- checkpoints -----------------------------------------------------------------------------------
def _safetensors(header: dict | bytes, data: bytes = b"", declared: int | None = None) -> bytes:
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack("<Q", len(raw) if declared is None else declared) + raw + data


def _checkpoint(world: World, name: str, content: bytes) -> Path:
    path = world.tmp / "data" / name
    path.write_bytes(content)
    return path


@bad_input("checkpoints", "A `.safetensors` file of random bytes.",
           "Refused as not a valid .safetensors file, naming it (before: a raw traceback).")
def test_safetensors_garbage(world, capsys):
    path = _checkpoint(world, "garbage.safetensors", np.random.default_rng(0).bytes(4096))
    err = world.create(capsys, world.data, path)
    assert "garbage.safetensors" in err and "not a valid .safetensors" in err
    world.intact()


@bad_input("checkpoints", "A `.safetensors` file whose header claims to be 2^60 bytes long.",
           "Refused before anything is allocated: the header size does not fit the file.")
def test_safetensors_huge_header(world, capsys):
    path = _checkpoint(world, "huge.safetensors", _safetensors(b"{}", declared=2**60))
    err = world.create(capsys, world.data, path)
    assert "huge.safetensors" in err and "header claims" in err
    world.intact()


@bad_input("checkpoints", "A `.safetensors` file whose tensor shapes claim more data than it holds.",
           "Refused, naming the tensor, its shape and the bytes it claims.")
def test_safetensors_lying_shapes(world, capsys):
    header = {"fc.weight": {"dtype": "F32", "shape": [1000, 1000], "data_offsets": [0, 16]}}
    path = _checkpoint(world, "liar.safetensors", _safetensors(header, bytes(16)))
    err = world.create(capsys, world.data, path)
    assert "liar.safetensors" in err and "fc.weight" in err and "[1000, 1000]" in err
    world.intact()


@bad_input("checkpoints", "A `.safetensors` file whose offsets point past the end of the file.",
           "Refused, naming the tensor and the bytes available.")
def test_safetensors_offsets_past_end(world, capsys):
    header = {"fc.weight": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}
    path = _checkpoint(world, "short.safetensors", _safetensors(header, bytes(8)))
    err = world.create(capsys, world.data, path)
    assert "short.safetensors" in err and "fc.weight" in err and "8 bytes" in err
    world.intact()


@bad_input("checkpoints", "A `.safetensors` file whose header is not JSON.",
           "Refused: the header is not JSON.")
def test_safetensors_header_not_json(world, capsys):
    path = _checkpoint(world, "notjson.safetensors", _safetensors(b"\xff\xfe not json at all"))
    err = world.create(capsys, world.data, path)
    assert "notjson.safetensors" in err and "not JSON" in err
    world.intact()


@bad_input("checkpoints", "A `.safetensors` file shorter than its 8-byte header size.",
           "Refused, saying how long the file is.")
def test_safetensors_truncated(world, capsys):
    err = world.create(capsys, world.data, _checkpoint(world, "tiny.safetensors", b"\x01\x02"))
    assert "tiny.safetensors" in err and "only 2 bytes" in err
    world.intact()


@bad_input("checkpoints", "A `.safetensors` file declaring an unknown dtype.",
           "Refused, naming the tensor and the dtype.")
def test_safetensors_unknown_dtype(world, capsys):
    header = {"fc.weight": {"dtype": "Q7", "shape": [2], "data_offsets": [0, 2]}}
    err = world.create(capsys, world.data, _checkpoint(world, "dtype.safetensors", _safetensors(header, bytes(2))))
    assert "dtype.safetensors" in err and "'Q7'" in err
    world.intact()


@bad_input("checkpoints", "A state dict whose weights hold NaN.",
           "Refused, naming the tensors and how many values are not finite (before: accepted silently).")
def test_nan_weights(world, capsys):
    state = DigitNet(2).state_dict()
    state["fc.weight"][0, 0] = float("nan")
    path = world.tmp / "data" / "nan.pt"
    torch.save(state, path)
    err = world.create(capsys, world.data, path)
    assert "nan.pt" in err and "fc.weight (1 of" in err and "NaN or infinite" in err
    world.intact()


@bad_input("checkpoints", "A `.safetensors` checkpoint whose weights hold +/-infinity.",
           "Refused the same way as NaN.")
def test_infinite_weights_in_safetensors(world, capsys):
    from safetensors.torch import save_file

    state = {k: v.contiguous() for k, v in DigitNet(2).state_dict().items()}
    state["fc.bias"][:] = float("inf")
    path = world.tmp / "data" / "inf.safetensors"
    save_file(state, str(path))
    err = world.create(capsys, world.data, path)
    assert "inf.safetensors" in err and "fc.bias (2 of 2 values)" in err
    world.intact()


class _Payload:
    """Unpickling this creates a file: the proof that code ran."""

    def __init__(self, target: str):
        self.target = target

    def __reduce__(self):
        return (open, (self.target, "w"))


@bad_input("checkpoints", "A pickled checkpoint whose unpickling would run code (creates a file), without `--trust-pickle`.",
           "Refused as needing trust; the payload never runs.")
def test_malicious_pickle_is_not_run(world, capsys):
    target = world.tmp / "outside" / "pwned"
    path = world.tmp / "data" / "evil.pt"
    with open(path, "wb") as f:
        pickle.dump({"state_dict": _Payload(str(target))}, f)
    err = world.create(capsys, world.data, path)
    assert "evil.pt" in err and "--trust-pickle" in err
    assert not target.exists()
    world.intact()


@bad_input("checkpoints", "A `.pt` file cut off half-way.",
           "Refused as not a readable PyTorch checkpoint, naming the file.")
def test_truncated_torch_file(world, capsys):
    whole = world.weights.read_bytes()
    path = _checkpoint(world, "cut.pt", whole[: len(whole) // 2])
    err = world.create(capsys, world.data, path)
    assert "cut.pt" in err and "not a readable PyTorch checkpoint" in err
    world.intact()


# ---- vote CSVs ---------------------------------------------------------------------------------------
@bad_input("votes", "Random binary bytes given to `spuraudit labels import` as a vote CSV.",
           "Refused as not UTF-8 text, naming the file; no vote is added.")
def test_vote_csv_binary(world, capsys):
    votes = world.tmp / "data" / "votes.csv"
    votes.write_bytes(b"\xff\xfe\x00" + np.random.default_rng(1).bytes(500))
    project = world.home / "projects" / "earlier"
    rc = main(["labels", "import", str(votes), "--project", str(project)])
    err = capsys.readouterr().err
    assert rc == 2 and "votes.csv" in err and "UTF-8" in err and "Traceback" not in err
    world.intact()


# ---- names -------------------------------------------------------------------------------------------
def _users(world: World, *users: tuple[str, str, str]) -> Path:
    path = world.tmp / "home" / "users.tsv"
    for name, role, password in users:
        add_user(path, name, role, password)
    world.before = _digest(world.home)
    return path


def _users_add(name: str, role: str, file: Path, password: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "spuraudit.cli", "users", "add", name, "--role", role,
                           "--file", str(file)], input=password + "\n", capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})


@bad_input("names", "`spuraudit users add` with a name that imitates an auto-labeler (`auto:clip`).",
           "Refused: names are letters, digits, '.', '_', '@', '-'; the users file is not created.")
def test_user_name_imitating_a_machine(world):
    file = world.home / "users.tsv"
    done = _users_add("auto:clip", "annotator", file, "secret")
    assert done.returncode == 2 and "'auto:clip'" in done.stderr and "Traceback" not in done.stderr
    assert not file.exists()
    world.intact()


@bad_input("names", "`spuraudit users add` with an empty password on stdin.",
           "Refused; the users file keeps its earlier users.")
def test_user_empty_password(world):
    file = _users(world, ("ana", "admin", "pw-ana"))
    done = _users_add("bo", "annotator", file, "")
    assert done.returncode == 2 and "empty password" in done.stderr and "Traceback" not in done.stderr
    assert "ana\tadmin" in file.read_text() and "bo\t" not in file.read_text()
    world.intact()


@bad_input("names", "A users file with a malformed line, given to `spuraudit app --users`.",
           "The app refuses to start, naming the file and the line.")
def test_malformed_users_file(world):
    file = world.tmp / "home" / "users.tsv"
    file.write_text("ana\tadmin\tscrypt$1$2$3$00$00\nmallory everything\n")
    world.before = _digest(world.home)
    done = subprocess.run([sys.executable, "-m", "spuraudit.cli", "app", "--users", str(file), "--port", "1"],
                          capture_output=True, text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                          timeout=60)
    assert done.returncode == 2 and "users.tsv, line 2" in done.stderr and "Traceback" not in done.stderr
    world.intact()


# ---- the server ----------------------------------------------------------------------------------
@bad_input("server", "`spuraudit app --host 0.0.0.0` with no token and no users file.",
           "The app refuses to start and says how to add sign-in; nothing listens.")
def test_shared_server_without_sign_in_refuses(world):
    done = subprocess.run([sys.executable, "-m", "spuraudit.cli", "app", "--host", "0.0.0.0", "--port", "1"],
                          capture_output=True, text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                          timeout=60)
    assert done.returncode != 0 and "--token" in done.stderr and "--users" in done.stderr
    assert "Traceback" not in done.stderr
    world.intact()


@bad_input("server", "`spuraudit app --data-root` naming a folder that does not exist.",
           "The app refuses to start, naming the folder.")
def test_missing_data_root(world):
    done = subprocess.run([sys.executable, "-m", "spuraudit.cli", "app", "--data-root", str(world.tmp / "nope"),
                           "--port", "1"], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=60)
    assert done.returncode != 0 and "nope" in done.stderr and "Traceback" not in done.stderr
    world.intact()


def _app(monkeypatch, **env: str) -> AppTest:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)


def _texts(at: AppTest) -> str:
    return " ".join(str(e.value) for e in [*at.markdown, *at.error, *at.info, *at.title, *at.caption])


@bad_input("server", "A Streamlit process told it is shared (`SPURAUDIT_SHARED=1`) but given no sign-in.",
           "Every page shows only an error saying sign-in is missing; no project, no form.")
def test_shared_without_sign_in_shows_nothing(world, monkeypatch):
    at = _app(monkeypatch, SPURAUDIT_SHARED="1")
    at.run()
    assert not at.exception
    assert any("no sign-in configured" in e.value for e in at.error)
    assert not at.text_input and not at.button and not at.metric
    world.intact()


@bad_input("queries", "`?token=` with a wrong access token.",
           "Only the sign-in form is shown; nothing of the projects.")
def test_wrong_token_in_query(world, monkeypatch):
    at = _app(monkeypatch, SPURAUDIT_AUTH_TOKEN="the-right-token")
    at.query_params["token"] = "a-wrong-token"
    at.run()
    assert not at.exception
    assert at.title[0].value == "spuraudit: sign in" and not at.metric
    assert "earlier" not in _texts(at)
    world.intact()


@bad_input("queries", "A wrong password in the sign-in form.",
           "'Unknown user name or wrong password', the form again, nothing else.")
def test_wrong_password(world, monkeypatch):
    users = _users(world, ("ana", "admin", "right-password"))
    at = _app(monkeypatch, SPURAUDIT_USERS_FILE=str(users))
    at.run()
    at.text_input(key="signin_name").set_value("ana")
    at.text_input(key="signin_password").set_value("wrong-password")
    at.button[0].click().run()
    assert not at.exception
    assert any("wrong password" in e.value for e in at.error) and not at.metric
    world.intact()


def _signed_in(monkeypatch, users: Path, name: str, password: str, page: str | None = None) -> AppTest:
    at = _app(monkeypatch, SPURAUDIT_USERS_FILE=str(users))
    at.query_params["project"] = "earlier"
    at.run()
    at.text_input(key="signin_name").set_value(name)
    at.text_input(key="signin_password").set_value(password)
    at.button[0].click().run()
    assert not at.exception, [e.value for e in at.exception]
    if page:
        at.switch_page(page)
        at.run()
        assert not at.exception, [e.value for e in at.exception]
    return at


@bad_input("queries", "An annotator (not admin) opens the Add data & model page.",
           "The page says it needs the admin role and shows no upload or path field.")
def test_annotator_cannot_add_data(world, monkeypatch):
    users = _users(world, ("bo", "annotator", "pw-bo"))
    at = _signed_in(monkeypatch, users, "bo", "pw-bo", "pages/data.py")
    assert any("needs the **admin** role" in i.value for i in at.info)
    assert not at.get("file_uploader") and "data_path" not in [t.key for t in at.text_input]
    world.intact()


@bad_input("queries", "A viewer on the Home page of a project without extracted features.",
           "No 'Extract features', 'Build the demo' or own-data form: launching jobs needs the admin role.")
def test_viewer_sees_no_job_buttons(world, monkeypatch):
    users = _users(world, ("cy", "viewer", "pw-cy"))
    at = _signed_in(monkeypatch, users, "cy", "pw-cy")
    labels = [b.label for b in at.button]
    assert "Extract features" not in labels and "Create project and extract features" not in labels
    assert any("Signed in as **cy** (viewer)" in c.value for c in at.sidebar.caption)
    world.intact()


@bad_input("server", "A server-side dataset path outside the data roots typed into Add data & model.",
           "Refused with the path and the data roots; nothing of it is read or shown.")
def test_typed_dataset_path_outside_roots(world, monkeypatch):
    users = _users(world, ("ana", "admin", "pw-ana"))
    at = _signed_in(monkeypatch, users, "ana", "pw-ana", "pages/data.py")
    at.text_input(key="data_path").set_value(str(world.outside)).run()
    assert not at.exception
    assert any("outside the data roots" in e.value and str(world.outside) in e.value for e in at.error)
    assert not at.metric and not at.get("image")
    world.intact()


@bad_input("server", "A dataset path inside the data root that is a symbolic link to a folder outside it.",
           "Refused: the link is resolved before the check.")
def test_typed_symlink_path_out_of_roots(world, monkeypatch):
    users = _users(world, ("ana", "admin", "pw-ana"))
    link = world.tmp / "data" / "looks-inside"
    link.symlink_to(world.outside, target_is_directory=True)
    at = _signed_in(monkeypatch, users, "ana", "pw-ana", "pages/data.py")
    at.text_input(key="data_path").set_value(str(link)).run()
    assert any("outside the data roots" in e.value for e in at.error) and not at.metric
    world.intact()


@bad_input("server", "A checkpoint path outside the data roots typed into Add data & model (`/etc/passwd`).",
           "Refused with the path and the data roots; the file is never opened.")
def test_typed_checkpoint_outside_roots(world, monkeypatch):
    users = _users(world, ("ana", "admin", "pw-ana"))
    at = _signed_in(monkeypatch, users, "ana", "pw-ana", "pages/data.py")
    at.radio(key="model_source").set_value("Path on the server").run()
    at.text_input(key="checkpoint_path").set_value("/etc/passwd").run()
    assert any("checkpoint path /etc/passwd" in e.value and "data roots" in e.value for e in at.error)
    world.intact()


@bad_input("server", "A pickled checkpoint given to a signed-in (shared) server, where anyone could try it.",
           "No 'I trust this file' box: the file is refused as needing pickle, and its code never runs.")
def test_no_trust_box_on_a_shared_server(world, monkeypatch):
    users = _users(world, ("ana", "admin", "pw-ana"))
    target = world.outside / "pwned"
    evil = world.tmp / "data" / "evil.pt"
    with open(evil, "wb") as f:
        pickle.dump({"state_dict": _Payload(str(target))}, f)
    at = _signed_in(monkeypatch, users, "ana", "pw-ana", "pages/data.py")
    assert "trust" not in [c.key for c in at.checkbox]
    at.text_input(key="checkpoint_path").set_value(str(evil)).run()
    assert any(e.value.startswith("Refused:") for e in at.error)
    assert any("tensors only" in i.value for i in at.info)
    assert not target.exists()
    world.intact()


def test_the_bad_input_page_lists_exactly_the_tests():
    """docs/bad-input.md is generated from the `@bad_input` registry; it must match the tests as they are."""
    done = subprocess.run([sys.executable, "-m", "tests.fuzzcases", "--check"], capture_output=True, text=True,
                          cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=300)
    assert done.returncode == 0, done.stderr
