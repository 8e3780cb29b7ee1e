"""Write a file so that readers see either the old content or the new one, never half of it."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_text_atomic(path: str | Path, text: str, encoding: str = "utf-8") -> Path:
    """Write `text` to a temporary file beside `path`, flush it to disk, then rename it over `path`.

    The temporary file lives in the same folder because os.replace is only atomic within one
    file system. Newlines are written exactly as given (no platform translation).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding=encoding, newline="") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp_name, path)
    except BaseException:
        # Leave no stray temporary file behind when writing fails (disk full, interrupted).
        try:
            os.unlink(temp_name)
        except FileNotFoundError:
            pass
        raise
    return path
