"""Small pre-rendered JPEG thumbnails of a project's images, kept on disk.

    projects/<p>/cache/thumbs/<size>/<index // 1000>/<index>.jpg

A gallery page then reads a few kilobytes per image instead of decoding and resizing the original (a
full-size photo can take tens of milliseconds). A thumbnail shows the image as the model sees it
(resized to its input size), shrunk to fit `size` × `size` pixels, or, when smaller, enlarged by the
smallest whole factor that reaches `size` so digits stay crisp. Files are written atomically, so a reader never sees half a JPEG,
and sharded a thousand to a folder, so no directory grows to a million entries.

Rows are addressed by their index in the dataset table; `thumbs/<size>/table.txt` records which
version of `dataset.csv` the folder was rendered from, and a different version starts a fresh folder.
"""

from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
from PIL import Image

from .data.images import load_rgb
from .data.table import TABLE_CSV
from .explain.overlay import upscale_for_display

DEFAULT_SIZE = 96
JPEG_QUALITY = 90
_STAMP_FILE = "table.txt"
_lock = threading.Lock()


def _table_stamp(project_folder: Path) -> str:
    try:
        st = (project_folder / TABLE_CSV).stat()
    except OSError:
        return "none"
    return f"{st.st_size}:{st.st_mtime_ns}"


def thumbs_dir(project_folder: str | Path, size: int = DEFAULT_SIZE) -> Path:
    """The folder of `size`-pixel thumbnails, emptied first when dataset.csv changed since it was filled."""
    project_folder = Path(project_folder)
    folder = project_folder / "cache" / "thumbs" / str(int(size))
    stamp = _table_stamp(project_folder)
    stamp_file = folder / _STAMP_FILE
    try:
        if stamp_file.read_text() == stamp:
            return folder
    except OSError:
        pass
    with _lock:
        if folder.exists():
            try:
                current = stamp_file.read_text()
            except OSError:
                current = None
            if current == stamp:
                return folder
            # Stale: move aside in one rename (readers never mix versions), then delete.
            stale = folder.with_name(f".stale-{folder.name}.{os.getpid()}.{threading.get_ident()}")
            os.replace(folder, stale)
            shutil.rmtree(stale, ignore_errors=True)
        folder.mkdir(parents=True, exist_ok=True)
        _write_atomic(stamp_file, stamp.encode())
    return folder


def thumb_path(folder: Path, index: int) -> Path:
    index = int(index)
    return folder / str(index // 1000) / f"{index}.jpg"


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def render(image_path: str | Path, input_size=None, size: int = DEFAULT_SIZE) -> bytes:
    """JPEG bytes of one image as the model sees it, fitted into size × size."""
    import io

    image = load_rgb(image_path, tuple(input_size) if input_size is not None else None)
    if max(image.size) > size:
        image.thumbnail((size, size), Image.BILINEAR)
    elif min(image.size) < size:  # tiny inputs: whole-factor nearest-neighbour enlargement, kept crisp
        image = Image.fromarray(upscale_for_display(np.asarray(image), size))
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=JPEG_QUALITY)
    return buf.getvalue()


def thumbnails(project_folder: str | Path, indices: Iterable[int], path_of: Callable[[int], str],
               input_size=None, size: int = DEFAULT_SIZE) -> list[str]:
    """Paths of the thumbnails of table rows `indices`, rendering the missing ones.

    `path_of(i)` gives row i's image file; it is only called for thumbnails not rendered yet.
    """
    folder = thumbs_dir(project_folder, size)
    out = []
    for i in indices:
        file = thumb_path(folder, i)
        if not file.is_file():
            _write_atomic(file, render(path_of(int(i)), input_size, size))
        out.append(str(file))
    return out


def row_path(table) -> Callable[[int], str]:
    """Row i's image path, read from the table without converting the whole path column."""
    column = table.frame["path"]
    return lambda i: str(column.iat[int(i)])


def warm(project, size: int = DEFAULT_SIZE, indices: Iterable[int] | None = None,
         progress: Callable[[float, str], None] | None = None, chunk: int = 1000) -> int:
    """Render the thumbnails of `indices` (default: every row) ahead of time; returns how many exist."""
    from .modelio import ModelCard
    from .modelio.card import CARD_FILE

    card = ModelCard.from_yaml((Path(project.model_folder) / CARD_FILE).read_text())
    table = project.table
    indices = np.arange(len(table)) if indices is None else np.asarray(list(indices), dtype=np.int64)
    path_of = row_path(table)
    for start in range(0, len(indices), chunk):
        part = indices[start:start + chunk]
        thumbnails(project.folder, part, path_of, card.input_size, size)
        if progress:
            done = start + len(part)
            progress(done / max(len(indices), 1), f"thumbnails {done}/{len(indices)}")
    return len(indices)
