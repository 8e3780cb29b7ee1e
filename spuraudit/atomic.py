"""Writes that readers see whole or not at all: files and folders, via a temporary sibling and a rename.

    with atomic_dir(models / "resnet-masktune") as tmp:
        torch.save(state, tmp / "weights.pt")
        (tmp / "model.yaml").write_text(card)
    # now models/resnet-masktune exists, with both files

    write_text_atomic(project / "project.json", text)

Every temporary name is `.tmp-<final name>-<random>` in the final path's folder (same file system, so
the last step is a rename, which is atomic). The feature extractor names its folders the same way
(`tempfile.mkdtemp(prefix=f".tmp-{key}-")`). If the writing code raises, the temporary is removed; if
the process is killed, it stays behind under its obviously temporary name and the final path never
appears. `clean_stale_temp` removes such leftovers once they are older than a grace period; it runs
when a project is opened and when a job worker starts.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

TEMP_PREFIX = ".tmp-"
# `.tmp-<name>-<random>`; tempfile's random part is 8 characters of [a-z0-9_].
_TEMP_RE = re.compile(r"^\.tmp-.+-[a-z0-9_]{8}$")
# A temporary untouched for this long belongs to a process that died: no write in spuraudit keeps one
# open without writing into it for an hour.
DEFAULT_GRACE_SECONDS = 3600.0


def temp_prefix(final: Path) -> str:
    return f"{TEMP_PREFIX}{final.name}-"


def is_temp_name(name: str) -> bool:
    """Whether `name` is one of our temporary files or folders."""
    return bool(_TEMP_RE.match(name))


@contextmanager
def atomic_dir(final_path: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield an empty temporary folder; when the block ends without error it becomes `final_path`.

    Args:
        final_path: the folder to create. Its parent is created if needed.
        overwrite: replace an existing `final_path`. Otherwise an existing one raises FileExistsError
            before any work is done, and one that appears while the block runs (another process won a
            race) raises FileExistsError at the end, leaving the other process's folder untouched.
    """
    final = Path(final_path)
    if final.exists() and not overwrite:
        raise FileExistsError(f"{final} already exists")
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=temp_prefix(final), dir=final.parent))
    try:
        yield tmp
        _publish(tmp, final, overwrite)
    except BaseException:
        # BaseException too: a cancelled job or Ctrl-C must not leave output behind.
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _publish(tmp: Path, final: Path, overwrite: bool) -> None:
    if final.exists():
        if not overwrite:
            raise FileExistsError(f"{final} appeared while it was being written")
        # A folder cannot be swapped in one step: move the old one aside under a temporary name first,
        # so a crash between the two renames leaves something the cleaner recognises.
        old = final.parent / f"{temp_prefix(final)}{secrets.token_hex(4)}"
        os.rename(final, old)
        os.rename(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
        return
    try:
        # Renaming onto a folder another process just created fails, which is what we want: two
        # outputs are never merged.
        os.rename(tmp, final)
    except OSError:
        if final.exists():
            raise FileExistsError(f"{final} appeared while it was being written") from None
        raise


def write_bytes_atomic(path: str | Path, data: bytes) -> Path:
    """Write `data` to a temporary file beside `path`, flush it to disk, then rename it over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp_name = tempfile.mkstemp(prefix=temp_prefix(path), dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
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


def write_text_atomic(path: str | Path, text: str, encoding: str = "utf-8") -> Path:
    """`write_bytes_atomic` for text; newlines are written exactly as given (no platform translation)."""
    return write_bytes_atomic(path, text.encode(encoding))


def _last_touched(entry: Path) -> float:
    """The newest modification time of `entry` and, for a folder, of what it directly holds (a file
    being filled changes its own time, not its folder's)."""
    newest = entry.lstat().st_mtime
    if entry.is_dir() and not entry.is_symlink():
        for child in entry.iterdir():
            try:
                newest = max(newest, child.lstat().st_mtime)
            except FileNotFoundError:
                continue
    return newest


def clean_stale_temp(parent: str | Path, grace_seconds: float = DEFAULT_GRACE_SECONDS) -> list[Path]:
    """Remove temporaries (`.tmp-<name>-<random>`) in `parent` untouched for `grace_seconds`; returns them.

    Newer ones are kept: they may be outputs another process is writing right now. Only `parent`
    itself is looked at, never its subfolders.
    """
    folder = Path(parent)
    removed: list[Path] = []
    if not folder.is_dir():
        return removed
    now = time.time()
    for entry in sorted(folder.iterdir()):
        if not is_temp_name(entry.name):
            continue
        try:
            if now - _last_touched(entry) < grace_seconds:
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
        except OSError:
            continue  # gone already, or not ours to remove
        removed.append(entry)
    return removed


def remembered_beside(source: str | Path, cache: str | Path, compute: Callable[[], object]):
    """`compute()`, remembered in the JSON file `cache` under `source`'s size and mtime.

    One stat when the remembered value is current; otherwise computed and saved (a read-only folder
    just computes it each time). For hashes and card fields that are slow to derive at ImageNet size.
    """
    st = Path(source).stat()
    stamp = f"{st.st_size}:{st.st_mtime_ns}"
    try:
        data = json.loads(Path(cache).read_text())
        if isinstance(data, dict) and data.get("stamp") == stamp and "value" in data:
            return data["value"]
    except (OSError, ValueError):
        pass
    value = compute()
    try:
        write_text_atomic(cache, json.dumps({"stamp": stamp, "value": value}))
    except OSError:
        pass
    return value
