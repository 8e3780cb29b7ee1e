"""The store of marks given to flagged images: real SQLite, real CSV, bad marks refused."""

from __future__ import annotations

import csv
import io
import threading

import pytest

from spuraudit.labels.marks import MarkError, MarkStore, marks_path
from tests.fuzzcases import bad_input


def test_marks_are_kept_replaced_per_annotator_and_exported(tmp_path):
    store = MarkStore(marks_path(tmp_path))
    assert store.marks() == [] and not store.path.exists()  # reading creates nothing
    store.add("images/test_00012.png", 7, "several_objects", "ann")
    store.add("images/test_00012.png", 7, "label_error", "bob")
    store.add("images/test_00012.png", 7, "fine", "ann")  # ann changes her mind: one mark each
    marks = {(m["annotator"], m["mark"]) for m in store.marks()}
    assert marks == {("ann", "fine"), ("bob", "label_error")}
    out = store.export_csv(tmp_path / "out" / "marks.csv")
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert {(r["image"], r["class_index"], r["annotator"], r["mark"]) for r in rows} == {
        ("images/test_00012.png", "7", "ann", "fine"), ("images/test_00012.png", "7", "bob", "label_error")}
    assert [p.name for p in out.parent.iterdir()] == ["marks.csv"]  # no temporary file left
    assert MarkStore(marks_path(tmp_path)).latest()["images/test_00012.png"] in {"fine", "label_error"}


def test_marks_from_threads_at_once_are_all_kept(tmp_path):
    store = MarkStore(tmp_path / "marks.db")
    threads = [threading.Thread(target=lambda i=i: [store.add(f"img{i}-{j}.png", 1, "fine", f"a{i}") for j in range(10)])
               for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(store.marks()) == 40


@bad_input("votes", "a mark that is not one of label_error / several_objects / fine, an empty image name, a "
           "negative class or an empty annotator",
           "refused with a message naming the value and what is allowed; the marks already stored are unchanged")
@pytest.mark.parametrize("image, cls, mark, who, message", [
    ("a.png", 1, "wrong", "ann", "mark must be one of"),
    ("", 1, "fine", "ann", "image must be"),
    ("a.png", -1, "fine", "ann", "class_index"),
    ("a.png", True, "fine", "ann", "class_index"),
    ("a.png", 1, "fine", "  ", "annotator"),
])
def test_bad_marks_are_refused(tmp_path, image, cls, mark, who, message):
    store = MarkStore(tmp_path / "marks.db")
    store.add("kept.png", 0, "fine", "ann")
    with pytest.raises((MarkError, ValueError), match=message):
        store.add(image, cls, mark, who)
    assert [m["image"] for m in store.marks()] == ["kept.png"]
