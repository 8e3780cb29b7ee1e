"""Salient ImageNet vote file: lossless round trip, refusals that write nothing, odd encodings."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest

from spuraudit.labels import (
    BACKGROUND,
    CORE,
    MAIN_OBJECT,
    SALIENT_COLUMNS,
    SEPARATE_OBJECT,
    SPURIOUS,
    LabelStore,
    SalientCSVError,
    export_salient_csv,
    import_salient_csv,
)

NUM_CLASSES = 1000
NUM_FEATURES = 2048

# Per (class, feature): the five workers' answers. Chosen to hit every outcome of the rule.
PAIR_ANSWERS = {
    (0, 1696): ["main_object", "main_object", "separate_object", "separate_object", "main_object"],
    (0, 1697): ["background", "background", "background", "main_object", "separate_object"],
    (0, 421): ["separate_object", "background", "separate_object", "background", "main_object"],
    (207, 1111): ["main_object"] * 5,
    (207, 16): ["separate_object", "separate_object", "separate_object", "main_object", "main_object"],
    (999, 2047): ["background"] * 5,
}
WORDNET = {0: "n01440764", 207: "n02099601", 999: "n15075141"}
REASONS = [
    "focus is on body of tench",
    "The focus of the red region is on the fish, not the hands.",
    'the "leash", and a bit of grass',
    "water\nand reeds",  # a reason spanning two lines
    "Hintergrund: Wasser – très flou 🐟",
]


def realistic_rows() -> list[list[str]]:
    """Rows as the released file writes them: numeric worker ids, confidences like '4.0'."""
    rows = []
    for rank, ((c, d), answers) in enumerate(PAIR_ANSWERS.items()):
        for w, answer in enumerate(answers):
            confidence = "" if (c, w) == (207, 3) else f"{(w + rank) % 5 + 1}.0"  # one vote without confidence
            rows.append([str(50 + 7 * w + rank), WORDNET[c], str(c), str(d), str(rank % 5 + 1), answer,
                         confidence, REASONS[(w + rank) % len(REASONS)]])
    return rows


def csv_text(rows: list[list[str]], header=SALIENT_COLUMNS, newline: str = "\n") -> str:
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer, lineterminator=newline)
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


def parse(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text.removeprefix("\ufeff"), newline="")))


@pytest.fixture
def store(tmp_path: Path) -> LabelStore:
    return LabelStore(tmp_path / "labels.db")


def test_round_trip_is_lossless(store: LabelStore, tmp_path: Path):
    text = csv_text(realistic_rows())
    source = tmp_path / "discover_spurious_features.csv"
    source.write_bytes(text.encode("utf-8"))

    report = import_salient_csv(store, source, NUM_CLASSES, NUM_FEATURES)
    assert (report.n_votes, report.n_pairs, report.n_classes, report.n_workers) == (30, 6, 3, 30)
    assert report.import_id == store.imports()[0]["id"]
    assert "imported 30 votes" in report.summary()

    out = tmp_path / "export.csv"
    assert export_salient_csv(store, out) == 30
    assert out.read_text(encoding="utf-8") == text  # same bytes: columns, order, "4.0", quoting

    buffer = io.StringIO()
    export_salient_csv(store, buffer)
    assert buffer.getvalue() == text
    binary = io.BytesIO()
    export_salient_csv(store, binary)
    assert binary.getvalue() == text.encode("utf-8")
    assert report.answers == {"main_object": 12, "separate_object": 8, "background": 10}

    # Votes keep worker, wordnet id and rank; confidence "4.0" is read as 4, "" as None.
    first = store.votes()[0]
    assert (first.annotator, first.wordnet_id, first.feature_rank, first.confidence) == ("50", "n01440764", 1, 1)
    assert any(v.confidence is None for v in store.votes())
    assert "\n" in store.votes()[3].reason


def test_imported_labels_follow_the_official_rule(store: LabelStore, tmp_path: Path):
    source = tmp_path / "votes.csv"
    source.write_text(csv_text(realistic_rows()), encoding="utf-8")
    import_salient_csv(store, source, NUM_CLASSES, NUM_FEATURES)
    labels = store.labels()
    for pair, answers in PAIR_ANSWERS.items():
        official_spurious = sum(a != MAIN_OBJECT for a in answers) >= 3  # >= 3 of 5
        assert labels[pair].is_spurious == official_spurious, pair
    assert (labels[(0, 1696)].status, labels[(0, 1697)].subtype) == (CORE, BACKGROUND)
    assert (labels[(0, 421)].status, labels[(0, 421)].subtype) == (SPURIOUS, "ambiguous")
    assert labels[(207, 16)].subtype == SEPARATE_OBJECT
    assert store.spurious_features() == {0: [421, 1697], 207: [16], 999: [2047]}


def test_export_adds_app_votes_and_skips_machine_and_retracted(store: LabelStore, tmp_path: Path):
    rows = realistic_rows()[:5]
    source = tmp_path / "votes.csv"
    source.write_text(csv_text(rows), encoding="utf-8")
    import_salient_csv(store, source, NUM_CLASSES, NUM_FEATURES)
    store.add_vote(3, 9, BACKGROUND, "ann", confidence=5, reason="sand, sea")
    store.add_vote(3, 10, MAIN_OBJECT, "ann", wordnet_id="n01443537", feature_rank=2)
    store.add_vote(3, 11, MAIN_OBJECT, "ann")
    store.undo_last("ann")
    store.replace_machine_votes("auto:seg", [{"class_index": 3, "feature_index": 9, "answer": BACKGROUND}])

    buffer = io.StringIO()
    assert export_salient_csv(store, buffer) == 7
    assert parse(buffer.getvalue()) == [list(SALIENT_COLUMNS)] + rows + [
        ["ann", "", "3", "9", "", "background", "5", "sand, sea"],
        ["ann", "n01443537", "3", "10", "2", "main_object", "", ""],
    ]


def test_bom_and_crlf(store: LabelStore, tmp_path: Path):
    rows = realistic_rows()
    source = tmp_path / "votes.csv"
    source.write_bytes(b"\xef\xbb\xbf" + csv_text(rows, newline="\r\n").encode("utf-8"))
    assert import_salient_csv(store, source, NUM_CLASSES, NUM_FEATURES).n_votes == len(rows)
    assert store.votes()[0].annotator == "50"  # the BOM did not stick to the first cell
    buffer = io.StringIO()
    export_salient_csv(store, buffer)
    assert parse(buffer.getvalue()) == [list(SALIENT_COLUMNS)] + rows
    assert "water\nand reeds" in {v.reason for v in store.votes()}  # the quoted newline is kept


def test_upload_buffer_and_blank_lines(store: LabelStore):
    text = csv_text(realistic_rows()[:3]) + "\n\n"
    upload = io.BytesIO(text.encode("utf-8"))
    upload.name = "upload.csv"
    report = import_salient_csv(store, upload, NUM_CLASSES, NUM_FEATURES)
    assert (report.path, report.n_votes) == ("upload.csv", 3)


@pytest.mark.parametrize("content", [b"", b"\xef\xbb\xbf", b"\n \r\n", csv_text([]).encode()])
def test_empty_file_imports_nothing(store: LabelStore, tmp_path: Path, content: bytes):
    source = tmp_path / "empty.csv"
    source.write_bytes(content)
    report = import_salient_csv(store, source, NUM_CLASSES, NUM_FEATURES)
    assert report.n_votes == 0 and report.import_id is None
    assert "no votes" in report.warnings[0]
    assert store.count_votes(include_retracted=True) == 0 and store.imports() == []


def test_same_file_twice_is_refused_unless_allowed(store: LabelStore, tmp_path: Path):
    source = tmp_path / "votes.csv"
    source.write_text(csv_text(realistic_rows()[:4]), encoding="utf-8")
    import_salient_csv(store, source, NUM_CLASSES, NUM_FEATURES)
    with pytest.raises(SalientCSVError, match="already imported"):
        import_salient_csv(store, source, NUM_CLASSES, NUM_FEATURES)
    assert store.count_votes() == 4
    report = import_salient_csv(store, source, NUM_CLASSES, NUM_FEATURES, allow_duplicate=True)
    assert "repeat a worker's earlier vote" not in " ".join(report.warnings)  # repeats within the file only
    assert store.count_votes() == 8 and len(store.imports()) == 2


def test_repeated_worker_vote_is_reported(store: LabelStore, tmp_path: Path):
    rows = realistic_rows()[:2]
    source = tmp_path / "votes.csv"
    source.write_text(csv_text(rows + [rows[0]]), encoding="utf-8")
    report = import_salient_csv(store, source, NUM_CLASSES, NUM_FEATURES)
    assert "1 vote(s) repeat" in report.warnings[0]


# ---- refusals: the message names file, row and reason, and nothing is written ---------------
def _with_cell(column: str, value: str, row_index: int = 2) -> list[list[str]]:
    rows = realistic_rows()[:6]
    rows[row_index][SALIENT_COLUMNS.index(column)] = value
    return rows


GOOD = realistic_rows()[:6]
DROPPED = [row[:4] + row[5:] for row in GOOD]  # without Input.feature_rank


@pytest.mark.parametrize(
    "text, row, reason",
    [
        (csv_text(DROPPED, header=[c for c in SALIENT_COLUMNS if c != "Input.feature_rank"]), 1,
         "missing column(s) Input.feature_rank"),
        (csv_text([r + ["x"] for r in GOOD], header=list(SALIENT_COLUMNS) + ["Answer.extra"]), 1,
         "unexpected column(s) 'Answer.extra'"),
        (csv_text(GOOD, header=list(SALIENT_COLUMNS[:-1]) + ["WorkerId"]), 1, "repeated in the header: WorkerId"),
        (csv_text(_with_cell("Answer.main", "sky")), 4, "Answer.main 'sky' is not one of"),
        (csv_text(_with_cell("Answer.main", "Main_Object")), 4, "is not one of"),
        (csv_text(_with_cell("Input.class_index", "dog")), 4, "Input.class_index 'dog' is not a whole number"),
        (csv_text(_with_cell("Input.class_index", "3.5")), 4, "is not a whole number"),
        (csv_text(_with_cell("Input.class_index", "1000")), 4, "Input.class_index 1000 is out of range 0..999"),
        (csv_text(_with_cell("Input.class_index", "-1")), 4, "out of range"),
        (csv_text(_with_cell("Input.feature_index", "2048")), 4, "Input.feature_index 2048 is out of range 0..2047"),
        (csv_text(_with_cell("Input.feature_index", "")), 4, "Input.feature_index '' is not a whole number"),
        (csv_text(_with_cell("Answer.confidence", "6.0")), 4, "Answer.confidence '6.0' is outside 1..5"),
        (csv_text(_with_cell("Answer.confidence", "0")), 4, "outside 1..5"),
        (csv_text(_with_cell("Answer.confidence", "4.5")), 4, "Answer.confidence '4.5' is not a whole number"),
        (csv_text(_with_cell("Answer.confidence", "high")), 4, "is not a whole number"),
        (csv_text(_with_cell("Input.feature_rank", "first")), 4, "Input.feature_rank 'first' is not a whole number"),
        (csv_text(_with_cell("WorkerId", " ")), 4, "WorkerId is empty"),
        (csv_text(GOOD[:5]) + "7,n01440764,0,3\n", 7, "has 4 cells but the header has 8 columns"),
        # The bad row follows a blank line and a two-line quoted reason: rows are records, not lines.
        (csv_text(GOOD[:3]) + "\n" + '9,n,0,1,1,background,3,"a\nb"\n' + "9,n,0,1,1,nope,3,\n",
         7, "Answer.main 'nope'"),
    ],
)
def test_malformed_file_is_refused_and_nothing_written(store: LabelStore, tmp_path: Path, text, row, reason):
    store.add_vote(5, 5, MAIN_OBJECT, "ann", reason="before the import")
    before = store.votes(include_retracted=True)
    source = tmp_path / "bad_votes.csv"
    source.write_text(text, encoding="utf-8")

    with pytest.raises(SalientCSVError) as caught:
        import_salient_csv(store, source, NUM_CLASSES, NUM_FEATURES)
    message = str(caught.value)
    assert str(source) in message
    assert f"row {row} (the header is row 1)" in message
    assert reason in message
    assert "Nothing was imported" in message
    assert caught.value.row == row

    assert store.votes(include_retracted=True) == before
    assert store.imports() == []


def test_not_utf8_is_refused(store: LabelStore, tmp_path: Path):
    source = tmp_path / "latin1.csv"
    source.write_bytes(csv_text(GOOD[:1]).encode("utf-8") + "7,n,0,1,1,background,3,trés\n".encode("latin-1"))
    with pytest.raises(SalientCSVError, match="latin1.csv: is not UTF-8"):
        import_salient_csv(store, source, NUM_CLASSES, NUM_FEATURES)
    assert store.count_votes(include_retracted=True) == 0


def test_missing_file_is_refused(store: LabelStore, tmp_path: Path):
    with pytest.raises(SalientCSVError, match="nope.csv: cannot be read"):
        import_salient_csv(store, tmp_path / "nope.csv", NUM_CLASSES, NUM_FEATURES)


def test_ranges_come_from_the_model(store: LabelStore, tmp_path: Path):
    """Indices are checked against the project's model, not against ImageNet's sizes."""
    source = tmp_path / "votes.csv"
    source.write_text(csv_text(realistic_rows()), encoding="utf-8")
    with pytest.raises(SalientCSVError, match=r"row 2 \(the header is row 1\): Input.feature_index 1696 "
                                              r"is out of range 0..511 \(the model has 512 features\)"):
        import_salient_csv(store, source, num_classes=1000, num_features=512)
    with pytest.raises(SalientCSVError, match=r"row 17 \(the header is row 1\): Input.class_index 207 "
                                              r"is out of range 0..1 \(the model has 2 classes\)"):
        import_salient_csv(store, source, num_classes=2, num_features=2048)
    assert store.count_votes(include_retracted=True) == 0
