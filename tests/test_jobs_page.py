"""The Jobs page under Streamlit's AppTest."""

from __future__ import annotations

from pathlib import Path

from streamlit.testing.v1 import AppTest

APP = str(Path(__file__).resolve().parents[1] / "app.py")


def _jobs_page() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60)
    at.run()
    at.switch_page("pages/jobs.py")
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_jobs_page_shows_the_lost_job_notes(home):
    from spuraudit.ui import jobs as ui_jobs

    at = _jobs_page()
    assert not at.warning and not at.expander  # nothing lost, no jobs: no warning

    queue = ui_jobs.queue()
    note = "2026-12-02T10:00:00.000Z jobs.db was unreadable; jobs up to id 7 are lost from the list"
    queue.lost_path.parent.mkdir(parents=True, exist_ok=True)
    queue.lost_path.write_text(note + "\n", encoding="utf-8")
    assert queue.lost_notes() == [note]
    at = _jobs_page()
    assert any("lost and recreated 1 time" in w.value for w in at.warning)
    assert [e.label for e in at.expander] == ["What was lost"]
    assert note in at.expander[0].code[0].value
