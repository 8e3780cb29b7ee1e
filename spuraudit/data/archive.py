"""Unpacking a dataset someone uploaded as a zip, without trusting anything in it; then finding its layout.

`extract_zip` refuses, naming the entry and the limit: paths that would land outside the destination
(`../`, absolute paths, drive letters, backslash tricks), symbolic links and other special files, more
files than allowed, more bytes than allowed (declared sizes are checked first, then the real bytes are
counted while streaming, since headers can lie), and entries whose compression ratio betrays a zip bomb.
Archives inside the archive are ordinary files; nothing recurses into them. Everything is extracted into a
temporary folder beside the destination and moved into place only when every entry passed, so a refusal
leaves nothing half-extracted.

`detect_layout` then says what the folder holds: an ImageFolder tree (with or without train/val/test), a
CSV manifest with its images, or the Waterbirds `metadata.csv`.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO

import pandas as pd

from .. import paths
from .images import is_image_file
from .imagefolder import SPLIT_NAMES
from .manifest import LABEL_COLUMNS, PATH_COLUMNS
from .table import DatasetError

DEFAULT_MAX_TOTAL_BYTES = 8 * 1024**3  # 8 GiB uncompressed
DEFAULT_MAX_FILES = 500_000
DEFAULT_MAX_RATIO = 200.0  # JPEG/PNG barely compress; even CSV text stays far below this
RATIO_EXEMPT_BYTES = 1024**2  # small files may compress extremely well (a blank image) and cost nothing
CHUNK = 1024**2
NAME_MAX = 255  # bytes in one file or folder name on Linux, macOS and Windows file systems
PATH_MAX = 4000  # bytes in a whole path, a little under Linux's 4096 to leave room for the destination

# Files that operating systems add to zips and that are never data.
_JUNK_PARTS = {"__MACOSX", ".DS_Store", "Thumbs.db", "desktop.ini", paths.UPLOAD_MARKER}
_DRIVE = re.compile(r"^[A-Za-z]:")


class ArchiveError(DatasetError):
    """The archive was refused; the message names the entry and the rule it broke."""


def _safe_parts(name: str) -> tuple[str, ...] | None:
    """The entry's path as safe parts, () for a directory-only entry, None for junk; raises when unsafe."""
    if "\x00" in name:
        raise ArchiveError(f"entry {name!r}: contains a NUL character; refused.")
    # Some Windows tools write '\' as the separator; treat it as one, then apply the same rules, so that
    # '..\\..\\x' cannot slip past a check that only looks for '/'.
    unified = name.replace("\\", "/")
    if unified.startswith("/") or _DRIVE.match(unified):
        raise ArchiveError(f"entry {name!r}: absolute path; archive entries must be relative. Refused.")
    parts = [p for p in PurePosixPath(unified).parts if p not in ("", ".")]
    long = [p for p in parts if len(p.encode("utf-8", "surrogateescape")) > NAME_MAX]
    if long:
        raise ArchiveError(
            f"entry {name[:80]!r}...: the name {long[0][:40]!r}... is {len(long[0].encode('utf-8', 'surrogateescape'))} "
            f"bytes long, over the {NAME_MAX}-byte limit of file systems. Refused; shorten it and zip again."
        )
    if len(unified.encode("utf-8", "surrogateescape")) > PATH_MAX:
        raise ArchiveError(f"entry {name[:80]!r}...: the path is longer than {PATH_MAX} bytes. Refused.")
    if any(p == ".." for p in parts):
        raise ArchiveError(f"entry {name!r}: '..' would write outside the destination folder. Refused.")
    if any(_DRIVE.match(p) for p in parts):
        raise ArchiveError(f"entry {name!r}: contains a drive letter ({unified}). Refused.")
    if any(p in _JUNK_PARTS or p.startswith("._") for p in parts):
        return None
    return tuple(parts)


def _is_symlink(info: zipfile.ZipInfo) -> bool:
    mode = info.external_attr >> 16
    return stat.S_ISLNK(mode)


def _is_special(info: zipfile.ZipInfo) -> bool:
    mode = info.external_attr >> 16
    kind = stat.S_IFMT(mode)
    return kind not in (0, stat.S_IFREG, stat.S_IFDIR)


def _check_ratio(name: str, size: int, compressed: int, max_ratio: float, declared: bool) -> None:
    if size <= RATIO_EXEMPT_BYTES:
        return
    ratio = size / max(compressed, 1)
    if ratio > max_ratio:
        what = "declares" if declared else "expands to"
        raise ArchiveError(
            f"entry {name!r} {what} {size:,} bytes from {compressed:,} compressed (ratio {ratio:,.0f}:1, limit "
            f"{max_ratio:,.0f}:1): this looks like a zip bomb. Refused; zip the images without padding."
        )


def extract_zip(
    zip_source: str | Path | BinaryIO,
    dest: str | Path,
    max_total_bytes: int = DEFAULT_MAX_TOTAL_BYTES,
    max_files: int = DEFAULT_MAX_FILES,
    max_ratio: float = DEFAULT_MAX_RATIO,
) -> Path:
    """Extract a zip (path or binary file object) into `dest`, which must not exist yet or be empty.

    Returns `dest`. Raises `ArchiveError` (a `DatasetError`) naming the offending entry and the limit;
    on any error `dest` is left as it was.
    """
    dest = Path(dest)
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise ArchiveError(f"{dest}: already exists and is not empty; choose a new folder to extract into.")
    label = str(zip_source) if isinstance(zip_source, (str, Path)) else getattr(zip_source, "name", "the upload")
    try:
        archive = zipfile.ZipFile(zip_source)
    except zipfile.BadZipFile as exc:
        raise ArchiveError(f"{label}: not a zip file ({exc}). Upload a .zip of the dataset folder.") from None
    except OSError as exc:
        raise ArchiveError(f"{label}: cannot be read ({exc}).") from None
    if len(dest.name.encode("utf-8", "surrogateescape")) > NAME_MAX:
        archive.close()
        raise ArchiveError(f"{label}: the name is too long for a folder ({len(dest.name)} characters, limit "
                           f"{NAME_MAX} bytes); rename the file and upload it again.")
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".tmp-extract-", dir=dest.parent))
    except OSError as exc:
        archive.close()
        raise ArchiveError(f"{dest.parent}: cannot create the folder to extract into ({exc}).") from None
    try:
        with archive:
            plan = _plan(archive, max_total_bytes, max_files, max_ratio)
            _write_all(archive, plan, tmp, max_total_bytes, max_ratio)
        # Manifests below this marker may name files inside this upload only (see data/manifest.py).
        (tmp / paths.UPLOAD_MARKER).write_text("extracted upload\n")
        if dest.exists():
            dest.rmdir()  # empty, checked above
        os.replace(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


def _plan(archive: zipfile.ZipFile, max_total_bytes: int, max_files: int, max_ratio: float):
    """Check every entry's header before writing a byte: (info, parts) of the files to write."""
    plan: list[tuple[zipfile.ZipInfo, tuple[str, ...]]] = []
    seen: set[str] = set()
    folders: dict[str, str] = {}  # every folder the entries need (lower-cased, as case-blind systems see it)
    declared_total = 0
    for info in archive.infolist():
        parts = _safe_parts(info.filename)
        if parts is None:
            continue
        if _is_symlink(info):
            raise ArchiveError(f"entry {info.filename!r}: a symbolic link; links are refused (they can point anywhere).")
        if _is_special(info):
            raise ArchiveError(f"entry {info.filename!r}: not a regular file or folder (device, pipe, ...). Refused.")
        if info.flag_bits & 0x1:
            raise ArchiveError(f"entry {info.filename!r}: encrypted; upload an archive without a password.")
        if not parts:
            continue
        key = "/".join(parts).lower()
        for depth in range(1, len(parts) if not info.is_dir() else len(parts) + 1):
            folder = "/".join(parts[:depth]).lower()
            if folder in seen:
                raise ArchiveError(
                    f"entry {info.filename!r}: needs a folder '{'/'.join(parts[:depth])}', but the archive also "
                    f"holds a file of that name. Refused; rename one of them and zip again."
                )
            folders.setdefault(folder, info.filename)
        if info.is_dir():
            continue
        if key in folders:
            raise ArchiveError(
                f"entry {info.filename!r}: a file with the same name as the folder of entry {folders[key]!r}. "
                "Refused; rename one of them and zip again."
            )
        if key in seen:
            raise ArchiveError(f"entry {info.filename!r}: appears twice in the archive; refused rather than overwrite.")
        seen.add(key)
        if len(plan) + 1 > max_files:
            raise ArchiveError(
                f"the archive holds more than {max_files:,} files (limit {max_files:,}), at entry {info.filename!r}. "
                "Split the dataset or raise the limit."
            )
        declared_total += info.file_size
        if declared_total > max_total_bytes:
            raise ArchiveError(
                f"entry {info.filename!r} brings the declared uncompressed size to {declared_total:,} bytes, over "
                f"the limit of {max_total_bytes:,} bytes. Refused."
            )
        _check_ratio(info.filename, info.file_size, info.compress_size, max_ratio, declared=True)
        plan.append((info, parts))
    return plan


def _write_all(archive, plan, root: Path, max_total_bytes: int, max_ratio: float) -> None:
    """Stream each entry to disk, counting the real bytes against the limits as they come."""
    written_total = 0
    for info, parts in plan:
        target = root.joinpath(*parts)
        # Belt and braces: the resolved target must still be inside the extraction folder.
        if os.path.commonpath([root.resolve(), target.resolve()]) != str(root.resolve()):
            raise ArchiveError(f"entry {info.filename!r}: resolves outside the destination folder. Refused.")
        written = 0
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            with archive.open(info) as src, open(target, "xb") as out:
                while chunk := src.read(CHUNK):
                    written += len(chunk)
                    written_total += len(chunk)
                    if written > info.file_size:
                        raise ArchiveError(
                            f"entry {info.filename!r}: yields more than the {info.file_size:,} bytes its header "
                            "declares; the header lies. Refused."
                        )
                    if written_total > max_total_bytes:
                        raise ArchiveError(
                            f"entry {info.filename!r}: the extracted data passed the limit of {max_total_bytes:,} "
                            "bytes. Refused."
                        )
                    _check_ratio(info.filename, written, info.compress_size, max_ratio, declared=False)
                    out.write(chunk)
        except zipfile.BadZipFile as exc:
            raise ArchiveError(
                f"entry {info.filename!r}: its data does not match its header ({exc}); the archive is corrupt or "
                "was tampered with. Refused."
            ) from None
        except (RuntimeError, NotImplementedError, OSError, EOFError) as exc:
            if isinstance(exc, ArchiveError):
                raise
            raise ArchiveError(f"entry {info.filename!r}: cannot be extracted ({exc}).") from None
        if written != info.file_size:
            raise ArchiveError(
                f"entry {info.filename!r}: {written:,} bytes extracted but {info.file_size:,} declared; the header "
                "lies or the archive is truncated. Refused."
            )


# ---- layout detection ---------------------------------------------------------------------------
@dataclass(frozen=True)
class DatasetLayout:
    """What a folder holds: `kind` is 'imagefolder', 'manifest' or 'waterbirds'; `root` the folder to read
    (for CSV kinds, the CSV file itself)."""

    kind: str
    root: Path
    splits: tuple[str, ...] = ()

    @property
    def is_csv(self) -> bool:
        return self.kind in ("manifest", "waterbirds")


WATERBIRDS_COLUMNS = {"img_filename", "y", "split", "place"}


def _visible(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if not p.name.startswith(".") and p.name not in _JUNK_PARTS)


def _csv_columns(path: Path) -> list[str]:
    try:
        return [c.strip() for c in pd.read_csv(path, nrows=0).columns]
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError):
        return []


def _is_manifest(columns: list[str]) -> bool:
    lower = {c.lower() for c in columns}
    return bool(lower & set(PATH_COLUMNS)) and bool(lower & set(LABEL_COLUMNS))


def _has_images(folder: Path, limit: int = 2000) -> bool:
    for i, f in enumerate(folder.rglob("*")):
        if i > limit:
            return False
        if f.is_file() and is_image_file(f):
            return True
    return False


def detect_layout(path: str | Path) -> DatasetLayout:
    """Say whether `path` is an ImageFolder tree, a CSV manifest or Waterbirds metadata (a CSV file or a
    folder holding one). A folder holding nothing but one sub-folder is looked into (zips often wrap
    everything in one folder)."""
    path = Path(path)
    if path.is_file():
        if path.suffix.lower() != ".csv":
            raise DatasetError(f"{path}: give a folder, a .csv manifest or a .zip of them (this is {path.suffix or 'no'} file).")
        columns = _csv_columns(path)
        if WATERBIRDS_COLUMNS <= {c.lower() for c in columns}:
            return DatasetLayout("waterbirds", path, ("train", "val", "test"))
        if _is_manifest(columns):
            return DatasetLayout("manifest", path)
        raise DatasetError(
            f"{path}: a CSV without an image-path column ({list(PATH_COLUMNS)}) and a label column "
            f"({list(LABEL_COLUMNS)}); found columns {columns}."
        )
    if not path.is_dir():
        raise DatasetError(f"{path}: no such file or folder.")
    folder = path
    while True:
        entries = _visible(folder)
        if len(entries) == 1 and entries[0].is_dir() and entries[0].name.lower() not in SPLIT_NAMES:
            folder = entries[0]
            continue
        break
    csvs = [e for e in entries if e.is_file() and e.suffix.lower() == ".csv"]
    metadata = [c for c in csvs if WATERBIRDS_COLUMNS <= {x.lower() for x in _csv_columns(c)}]
    if metadata:
        return DatasetLayout("waterbirds", metadata[0], ("train", "val", "test"))
    manifests = [c for c in csvs if _is_manifest(_csv_columns(c))]
    if len(manifests) == 1:
        return DatasetLayout("manifest", manifests[0])
    if len(manifests) > 1:
        raise DatasetError(
            f"{folder}: holds several CSV manifests ({[m.name for m in manifests]}); give the path of the one to use."
        )
    dirs = [e for e in entries if e.is_dir()]
    split_dirs = [d for d in dirs if d.name.lower() in SPLIT_NAMES]
    if split_dirs and len(split_dirs) == len(dirs):
        if any(_has_images(d) for d in split_dirs):
            return DatasetLayout("imagefolder", folder, tuple(SPLIT_NAMES[d.name.lower()] for d in split_dirs))
    elif dirs and any(_has_images(d) for d in dirs):
        return DatasetLayout("imagefolder", folder)
    if folder != path and any(e.is_file() and is_image_file(e) for e in entries):
        raise DatasetError(
            f"{path}: holds one class folder ({folder.name!r}) with images; a classification dataset needs at "
            "least 2 classes. Add a folder per class next to it."
        )
    raise DatasetError(
        f"{folder}: found no dataset here. Expected <class>/<image> folders (optionally under train/ val/ test/), "
        f"a CSV manifest with path and label columns, or Waterbirds' metadata.csv. Found: "
        f"{[e.name for e in entries[:20]]}."
    )
