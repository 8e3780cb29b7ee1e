"""Atomic files and folders, and the cleaner of what killed writers leave behind."""

from __future__ import annotations

import os
import tempfile
import time

import pytest

from spuraudit.atomic import atomic_dir, clean_stale_temp, is_temp_name, write_text_atomic


def test_atomic_dir_appears_whole_or_not_at_all(tmp_path):
    final = tmp_path / "models" / "m1"
    with atomic_dir(final) as tmp:
        assert tmp.name.startswith(".tmp-m1-") and tmp.parent == final.parent and is_temp_name(tmp.name)
        (tmp / "a.txt").write_text("a")
        assert not final.exists()
    assert (final / "a.txt").read_text() == "a" and not tmp.exists()

    with pytest.raises(FileExistsError):
        with atomic_dir(final):
            pass
    with pytest.raises(RuntimeError):
        with atomic_dir(tmp_path / "models" / "m2") as tmp:
            (tmp / "half").write_text("x")
            raise RuntimeError("failed halfway")
    assert not (tmp_path / "models" / "m2").exists() and not tmp.exists()

    with atomic_dir(final, overwrite=True) as tmp:
        (tmp / "b.txt").write_text("b")
    assert sorted(p.name for p in final.iterdir()) == ["b.txt"]
    assert sorted(p.name for p in final.parent.iterdir()) == ["m1"]


def test_a_folder_written_meanwhile_by_another_process_is_kept(tmp_path):
    final = tmp_path / "store"
    with pytest.raises(FileExistsError):
        with atomic_dir(final) as tmp:
            (tmp / "mine").write_text("mine")
            final.mkdir()
            (final / "theirs").write_text("theirs")
    assert [p.name for p in final.iterdir()] == ["theirs"]
    assert [p.name for p in tmp_path.iterdir()] == ["store"]


def test_write_text_atomic_replaces_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "sub" / "project.json"
    write_text_atomic(target, "one\r\n")
    write_text_atomic(target, "two\n")
    assert target.read_bytes() == b"two\n"
    assert [p.name for p in target.parent.iterdir()] == ["project.json"]


def test_cleaner_removes_old_leftovers_of_every_writer_and_keeps_recent_ones(tmp_path):
    # The names the feature extractor makes (tempfile.mkdtemp with a ".tmp-<key>-" prefix) and ours.
    old_store = tempfile.mkdtemp(prefix=".tmp-0123abcd-", dir=tmp_path)
    old_file = tempfile.mkstemp(prefix=".tmp-project.json-", dir=tmp_path)
    os.close(old_file[0])
    with atomic_dir(tmp_path / "finished"):
        pass
    recent = tempfile.mkdtemp(prefix=".tmp-model-", dir=tmp_path)
    lookalike = tmp_path / ".tmp-notes"  # no random part: not ours
    lookalike.mkdir()
    hour_ago = time.time() - 7200
    for path in (old_store, old_file[1], lookalike):
        os.utime(path, (hour_ago, hour_ago))
    removed = clean_stale_temp(tmp_path)
    assert sorted(p.name for p in removed) == sorted(os.path.basename(p) for p in (old_store, old_file[1]))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([".tmp-notes", "finished", os.path.basename(recent)])


def test_a_folder_whose_file_is_still_growing_counts_as_recent(tmp_path):
    folder = tempfile.mkdtemp(prefix=".tmp-features-", dir=tmp_path)
    (tmp_path / os.path.basename(folder) / "features.npy").write_bytes(b"x")
    hour_ago = time.time() - 7200
    os.utime(folder, (hour_ago, hour_ago))  # the folder's own time is old, its file's is new
    assert clean_stale_temp(tmp_path) == []
    assert clean_stale_temp(tmp_path / "missing") == []
