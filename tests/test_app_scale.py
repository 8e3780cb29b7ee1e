"""The pages keep nothing per rerun: memory stays flat, and the gallery reads pre-rendered thumbnails.

Run as a script to time the Features and Rankings pages (first and cached render) on the demo project:

    PYTHONPATH=$PWD python tests/test_app_scale.py [SPURAUDIT_HOME]
"""

from __future__ import annotations

import gc
import os
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from spuraudit import thumbnails
from spuraudit.audit import Audit

APP = str(Path(__file__).resolve().parents[1] / "app.py")
RERUNS = 20
GROWTH_LIMIT_MB = 50


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def _page(page: str) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=300)
    at.query_params["project"] = "demo"
    at.run()
    at.switch_page(page)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _images(at: AppTest) -> list:
    return list(at.get("image")) + list(at.get("imgs"))


@pytest.fixture
def labelled_home(demo_copy, monkeypatch):
    """A private demo home where class 0's top feature is labelled spurious (the Rankings page needs one)."""
    audit = Audit(demo_copy, demo_copy.feature_store(), spurious={})
    feature = int(audit.top_features(0, k=1, split="test")["feature"].iloc[0])
    demo_copy.labels().add_vote(0, feature, "background", annotator="tester")
    home = demo_copy.folder.parent.parent
    monkeypatch.setenv("SPURAUDIT_HOME", str(home))
    return demo_copy


@pytest.mark.parametrize("page", ["pages/features.py", "pages/rankings.py"])
def test_memory_stays_flat_over_reruns(labelled_home, page):
    at = _page(page)
    for _ in range(3):  # warm-up: imports, caches, first renders
        at.run()
    gc.collect()
    before = _rss_mb()
    for _ in range(RERUNS):
        at.run()
        assert not at.exception, [e.value for e in at.exception]
    gc.collect()
    growth = _rss_mb() - before
    print(f"{page}: RSS {before:.0f} MB -> {before + growth:.0f} MB over {RERUNS} reruns")
    assert growth < GROWTH_LIMIT_MB
    assert _images(at)


def test_gallery_shows_thumbnail_files_rendered_once(labelled_home):
    at = _page("pages/rankings.py")
    folder = labelled_home.folder / "cache" / "thumbs" / str(thumbnails.DEFAULT_SIZE)
    files = sorted(folder.glob("*/*.jpg"))
    assert len(files) == 24  # the first gallery page
    with Image.open(files[0]) as im:
        assert im.format == "JPEG" and im.size == (112, 112)  # 28 px enlarged 4 times
    stamps = {f: f.stat().st_mtime_ns for f in files}
    at.run()
    assert {f: f.stat().st_mtime_ns for f in files} == stamps  # read back, not rendered again
    at.number_input[0].set_value(2).run()  # next gallery page
    assert not at.exception
    assert len(list(folder.glob("*/*.jpg"))) == 48


def test_thumbnails_are_rendered_anew_when_the_table_changes(demo_copy):
    table = demo_copy.table
    path_of = thumbnails.row_path(table)
    first = thumbnails.thumbnails(demo_copy.folder, [0, 1, 1500], path_of, (28, 28))
    assert [Path(f).name for f in first] == ["0.jpg", "1.jpg", "1500.jpg"]
    assert Path(first[2]).parent.name == "1"  # sharded a thousand to a folder
    with Image.open(first[0]) as im:
        assert im.size == (112, 112)  # 28 px enlarged by a whole factor
    second = Path(first[1]).read_bytes()
    # The same row index now names another image: the old thumbnails must not be shown for it.
    frame = table.frame.copy()
    frame.loc[0, "path"] = frame.loc[1, "path"]
    type(table)(table.class_names, frame, table.group_columns).save(demo_copy.folder)
    again = thumbnails.thumbnails(demo_copy.folder, [0], thumbnails.row_path(type(table).load(demo_copy.folder)),
                                  (28, 28))
    assert Path(again[0]).read_bytes() == second
    assert not Path(first[2]).exists()


def test_warm_renders_every_requested_row(demo_copy):
    done = thumbnails.warm(demo_copy, indices=range(10))
    folder = thumbnails.thumbs_dir(demo_copy.folder)
    assert done == 10 and all(thumbnails.thumb_path(folder, i).is_file() for i in range(10))


def benchmark(home: str) -> None:
    """First and cached render time of the Features and Rankings pages (the first one includes imports)."""
    os.environ["SPURAUDIT_HOME"] = home
    for page in ["pages/features.py", "pages/rankings.py"]:
        at = AppTest.from_file(APP, default_timeout=600)
        at.query_params["project"] = "demo"
        at.run()
        at.switch_page(page)
        t0 = time.perf_counter()
        at.run()
        first = time.perf_counter() - t0
        times = []
        for _ in range(5):
            t0 = time.perf_counter()
            at.run()
            times.append(time.perf_counter() - t0)
        print(f"{page}: first {first:.2f} s, cached median {np.median(times):.2f} s, RSS {_rss_mb():.0f} MB")


if __name__ == "__main__":
    import sys

    benchmark(sys.argv[1] if len(sys.argv) > 1 else str(Path.home() / ".spuraudit"))
