"""The review page under Streamlit's AppTest, on a private copy of the demo project."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from spuraudit.autolabel import SegmentationLabeler, run_autolabel

ROOT = Path(__file__).resolve().parents[1]
PAGE = str(ROOT / "pages" / "review.py")


@pytest.fixture
def review_project(demo_copy, monkeypatch):
    monkeypatch.setenv("SPURAUDIT_HOME", str(demo_copy.folder.parent.parent))
    return demo_copy


def _page(name: str | None = None, attacks: bool = False) -> AppTest:
    at = AppTest.from_file(PAGE, default_timeout=180)
    at.query_params["project"] = "demo"
    at.session_state["review_attacks"] = attacks  # the slow part, shown once in the first test
    if name is not None:
        at.session_state["reviewer"] = name
    at.run()
    _ok(at)
    return at


def _ok(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]


def _pair(at: AppTest) -> tuple[int, int]:
    """(class, feature) from the subheader "Class 0: digit 0-4 · feature 40 · rank 1 in its class"."""
    head = at.subheader[0].value
    return int(head.split(":")[0].split()[1]), int(head.split("feature")[1].split()[0])


def _pairs(project) -> int:
    """How many (class, feature) pairs the queue holds: top_k features for every class."""
    return project.table.num_classes * project.settings.top_k


def _metrics(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def test_vote_with_the_buttons_then_undo(review_project):
    at = _page("ana", attacks=True)
    assert at.title[0].value == "Review features"
    # The attacks run in the background: the page answers at once with the rest and says they are coming.
    if len(at.get("image")) < 4:
        assert any("in the background" in c.value for c in at.caption)
    for _ in range(600):  # then a rerun shows them (the page's own polling is a fragment AppTest does not run)
        if len(at.get("image")) == 4:
            break
        time.sleep(0.5)
        at.run()
    images = at.get("image")
    assert len(images) == 4  # top images, NAMs, feature attacks, examples of the class
    assert len(images[3].value) == 6
    assert len(images[0].captions) == 8 and images[0].captions[0].startswith("r=")
    first = _pair(at)
    assert _metrics(at)["Reviewed by you"] == f"0 of {_pairs(review_project)}"

    at.segmented_control(key="review_confidence").set_value(4)
    at.text_input(key="review_reason").input("fires on the red corner")
    at.button(key="vote-background").click().run()
    _ok(at)
    store = review_project.labels()
    [vote] = store.votes(annotator="ana")
    assert (vote.pair, vote.answer, vote.confidence, vote.reason) == (first, "background", 4, "fires on the red corner")
    assert vote.created and not vote.is_machine
    assert _pair(at) != first  # moved on to the next pair
    assert _metrics(at)["Reviewed by you"] == f"1 of {_pairs(review_project)}"
    assert at.text_input(key="review_reason").value == ""  # the form is fresh for the next pair

    at.button(key="review_undo").click().run()
    _ok(at)
    assert store.votes(annotator="ana") == []
    [retracted] = store.history(*first)
    assert retracted.retracted and retracted.answer == "background"
    assert _pair(at) == first  # back where the retracted vote was
    assert _metrics(at)["Reviewed by you"] == f"0 of {_pairs(review_project)}"


def test_the_name_is_asked_once_and_kept(review_project):
    at = _page()
    assert at.button(key="vote-main_object").disabled
    at.sidebar.text_input(key="reviewer").set_value("bo").run()
    assert not at.button(key="vote-main_object").disabled
    assert review_project.labels().get_setting("annotator") == "bo"
    again = _page()  # a new session is offered the remembered name, never given it unasked
    assert again.sidebar.text_input(key="reviewer").value == ""
    assert again.button(key="vote-main_object").disabled  # no votes under the last visitor's name
    claim = again.sidebar.button(key="review_claim_name")
    assert claim.label == "I am bo"
    claim.click().run()
    assert again.sidebar.text_input(key="reviewer").value == "bo"
    assert not again.button(key="vote-main_object").disabled
    assert not [b for b in again.sidebar.button if b.key == "review_claim_name"]  # the offer is gone once named
    again.sidebar.text_input(key="reviewer").set_value("auto:me").run()
    assert again.button(key="vote-main_object").disabled  # machine names are not for people


def test_navigation_filters_and_classes(review_project):
    at = _page("ana")
    first = _pair(at)
    at.button(key="review_next").click().run()
    second = _pair(at)
    assert second != first
    at.button(key="review_prev").click().run()
    assert _pair(at) == first
    at.button(key="vote-main_object").click().run()
    at.sidebar.radio(key="review_filter").set_value("not mine").run()
    _ok(at)
    assert _metrics(at)["Showing"] == f"{_pairs(review_project) - 1} pairs" and _pair(at) != first
    at.sidebar.multiselect(key="review_classes").set_value([1]).run()
    _ok(at)
    assert _pair(at)[0] == 1 and _metrics(at)["Showing"] == "5 pairs"
    assert _metrics(at)["Reviewed (any person)"] == "0 of 5"


def test_machine_proposals_show_their_evidence_and_one_click_confirms(review_project):
    at = _page("ana")
    pair = _pair(at)
    run_autolabel(review_project, SegmentationLabeler(images_per_pair=4), [pair])
    at.sidebar.radio(key="review_filter").set_value("to confirm").run()
    _ok(at)
    assert _pair(at) == pair and _metrics(at)["Machine proposals to confirm"] == "1"
    assert any("auto:segmentation" in m.value for m in at.markdown)
    [table] = [df.value for df in at.dataframe if "lift" in df.value.columns]
    assert len(table) == 4 and list(table.columns[:2]) == ["image", "activation"]
    proposed = review_project.labels().votes(*pair, machine=True)[0]

    at.button(key="confirm-auto:segmentation").click().run()
    _ok(at)
    [vote] = review_project.labels().votes(annotator="ana")
    assert vote.pair == pair and vote.answer == proposed.answer and vote.reason.startswith("confirmed")
    assert not review_project.labels().label(*pair).proposed
    assert any("Nothing to review" in s.value for s in at.success)


def test_override_flips_the_proposal(review_project):
    at = _page("ana")
    pair = _pair(at)
    review_project.labels().replace_machine_votes("auto:clip", [
        {"class_index": pair[0], "feature_index": pair[1], "answer": "main_object", "reason": "looks like a digit",
         "evidence": {"labeler": "clip", "images": [1, 2], "texts": ["digit 0-4", "a red square"],
                      "text_answers": ["main_object", "separate_object"],
                      "mean_similarity": {"whole": [0.3, 0.2]}, "decision_scores": [0.3, 0.2]}}])
    at.run()
    [table] = [df.value for df in at.dataframe if "text" in df.value.columns]
    assert list(table["text"]) == ["digit 0-4", "a red square"]
    at.button(key="override-auto:clip").click().run()
    _ok(at)
    label = review_project.labels().label(*pair)
    assert label.status == "spurious" and not label.proposed


GOOD_CSV = (
    "WorkerId,Input.wordnet_id,Input.class_index,Input.feature_index,Input.feature_rank,Answer.main,"
    "Answer.confidence,Answer.reasons\n"
    "w1,n01,0,40,1,background,4.0,corner\n"
    "w2,n01,0,40,1,main_object,3.0,\n"
)


def test_import_refuses_a_bad_file_and_accepts_a_good_one(review_project):
    at = _page("ana")
    bad = GOOD_CSV + "w3,n01,0,40,1,sky,4.0,\n"
    at.file_uploader(key="salient_upload").set_value(("votes.csv", bad.encode(), "text/csv"))
    at.run()
    at.button(key="salient_import").click().run()
    _ok(at)
    [error] = at.error
    assert "row 4" in error.value and "Answer.main" in error.value and "Nothing was imported" in error.value
    assert review_project.labels().count_votes() == 0

    at.file_uploader(key="salient_upload").set_value(("votes.csv", GOOD_CSV.encode(), "text/csv"))
    at.run()
    at.button(key="salient_import").click().run()
    _ok(at)
    assert any("imported 2 votes" in s.value for s in at.success)
    assert review_project.labels().count_votes() == 2
    labels = [b.label for b in at.get("download_button")]
    assert any("Salient ImageNet CSV (2 human votes)" in label for label in labels)
    assert len(labels) == 3


def test_auto_labelers_run_as_background_jobs(review_project, monkeypatch):
    """The page queues the job (and labels nothing itself); a worker process runs it into the store."""
    import subprocess
    import sys

    from spuraudit import paths
    from spuraudit.ui import jobs as ui_jobs

    submitted = []

    def submit(kind, params, title):  # queue only: this test runs the worker itself, in the foreground
        submitted.append((kind, params, title))
        return ui_jobs.queue().submit(kind, params, title=title)

    monkeypatch.setattr(ui_jobs, "submit", submit)
    at = _page("ana")
    at.button(key="run_seg").click().run()
    _ok(at)
    [(kind, params, title)] = submitted
    assert kind == "autolabel.run" and params["labeler"] == "segmentation"
    assert params["project"] == str(review_project.folder)
    assert params["options"]["metric"] == "lift" and params["options"]["threshold"] == 1.35
    assert review_project.labels().votes() == []  # the page itself labelled nothing

    at.button(key="run_clip").click().run()  # no concepts yet: refused on the page, nothing queued
    _ok(at)
    assert len(submitted) == 1 and any("at least one concept" in e.value for e in at.error)

    worker = subprocess.run([sys.executable, "-m", "spuraudit.jobs.worker", "--db", str(paths.jobs_db()), "--once"],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert worker.returncode == 0, worker.stdout + worker.stderr
    job = ui_jobs.queue().list(kind="autolabel.run")[0]
    assert job.status == "done", (job.status, job.error)
    assert len(review_project.labels().votes(annotator="auto:segmentation", machine=True)) == _pairs(review_project)
    at.run()
    _ok(at)
    assert _metrics(at)["Machine proposals to confirm"] == str(_pairs(review_project))
    assert any("done" in s.value for s in at.success)  # this session's finished job


def test_the_page_runs_inside_the_app_navigation(review_project):
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=180)
    at.query_params["project"] = "demo"
    at.run()
    at.switch_page("pages/review.py")
    at.session_state["review_attacks"] = False
    at.run()
    _ok(at)
    assert at.title[0].value == "Review features"
