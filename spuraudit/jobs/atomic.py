"""Write an output folder so that it only ever exists complete.

    with atomic_output_dir(models / "resnet-masktune") as tmp:
        save_weights(tmp / "model.safetensors")
        (tmp / "model.yaml").write_text(card)
    # now models/resnet-masktune exists, with both files

The work happens in a hidden sibling folder (`.tmp-<name>.<pid>.<token>`, same file system, so the
final step is a rename, which is atomic). If the block raises, the temporary folder is removed; if
the process is killed, it stays behind under its obviously temporary name and the final folder
never appears. `clean_stale_temp_dirs` removes such leftovers once their process is gone.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .util import pid_alive

TEMP_PREFIX = ".tmp-"
_TEMP_RE = re.compile(r"^\.tmp-.*\.(\d+)\.[0-9a-f]{8}$")


def temp_sibling(final_path: str | Path, tag: str = "") -> Path:
    """A fresh, not yet existing temporary path next to `final_path`, naming this process."""
    final = Path(final_path)
    return final.parent / f"{TEMP_PREFIX}{tag}{final.name}.{os.getpid()}.{secrets.token_hex(4)}"


@contextmanager
def atomic_output_dir(final_path: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield an empty temporary folder; on success it becomes `final_path` in one rename.

    Args:
        final_path: the folder to create. Its parent is created if needed.
        overwrite: replace an existing `final_path`; otherwise an existing one raises
            FileExistsError before any work is done.
    """
    final = Path(final_path)
    if final.exists() and not overwrite:
        raise FileExistsError(f"{final} already exists")
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_sibling(final)
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        # BaseException too: a cancelled job (JobCancelled) or Ctrl-C must not leave output behind.
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    try:
        _publish(tmp, final, overwrite)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _publish(tmp: Path, final: Path, overwrite: bool) -> None:
    if not final.exists():
        # Another process may create `final` between the check and the rename; rename onto a
        # non-empty folder fails, which is what we want (never merge two outputs).
        os.rename(tmp, final)
        return
    if not overwrite:
        raise FileExistsError(f"{final} appeared while it was being written")
    # A folder cannot be replaced by rename in one step: move the old one aside first (under a
    # temporary name, so that a crash between the two renames leaves something cleanable).
    old = temp_sibling(final, tag="old-")
    os.rename(final, old)
    os.rename(tmp, final)
    shutil.rmtree(old, ignore_errors=True)


def clean_stale_temp_dirs(parent: str | Path) -> list[Path]:
    """Remove temporary folders left in `parent` by processes that no longer run; returns them.

    Folders of live processes are kept: they may be outputs being written right now.
    """
    folder = Path(parent)
    removed: list[Path] = []
    if not folder.is_dir():
        return removed
    for entry in folder.iterdir():
        match = _TEMP_RE.match(entry.name)
        if not match or not entry.is_dir() or entry.is_symlink():
            continue
        if pid_alive(int(match.group(1))):
            continue
        shutil.rmtree(entry, ignore_errors=True)
        removed.append(entry)
    return removed
