"""A real browser opens the Collisions page on the demo with its planted labels, sees the flow chart and the
flagged two-digit images, marks one, and crops."""

from __future__ import annotations

import pytest

from spuraudit.audit import Audit
from spuraudit.labels.marks import MarkStore, marks_path

from .browser_support import chromium_page, require_browser, screenshot, streamlit_server
from .test_demo_collisions import CONFUSED_CLASS, ground_truth_labels

pytestmark = pytest.mark.browser
LOAD = 120_000


def test_collisions_page_in_chromium(demo_copy):
    require_browser()
    from playwright.sync_api import expect

    audit = Audit(demo_copy, demo_copy.feature_store(), spurious={})
    for c, features in ground_truth_labels(audit).items():
        for d in features:
            demo_copy.labels().add_vote(c, d, "background", annotator="tester")
    home = demo_copy.folder.parent.parent
    with streamlit_server(home) as url, chromium_page() as page:
        page.goto(f"{url}/collisions?project=demo&annotator=ana", wait_until="domcontentloaded")
        page.get_by_text("Spurious feature collisions").wait_for(timeout=LOAD)
        page.locator(".js-plotly-plot .sankey").first.wait_for(timeout=LOAD)  # the class -> class flows
        page.get_by_text("digit 7 (high spuriosity)").first.wait_for(timeout=LOAD)
        page.get_by_text("Classes with a negative gap").wait_for(timeout=LOAD)
        assert page.get_by_text("predicted digit 1").count() > 0
        page.locator("[data-testid='stImage'] img").first.wait_for(timeout=LOAD)  # the flagged images
        assert page.locator("[data-testid='stImage'] img").count() >= 5
        # the first flagged image's own radio (the caption above the gallery names the marks too)
        first = page.locator("[class*='st-key-mark-']").first
        first.get_by_text("several objects", exact=True).click()
        expect(first.get_by_role("radio", name="several objects")).to_be_checked()
        page.get_by_text("marked several objects").first.wait_for(timeout=LOAD)  # stored on the rerun the click starts
        page.get_by_text("Crop and classify again").click()
        page.get_by_text("Accuracy before and after core cropping").wait_for(timeout=LOAD)
        assert page.locator("[data-testid='stException']").count() == 0
        shot = screenshot(page, "collisions-page")
        assert shot.stat().st_size > 20_000
    marks = MarkStore(marks_path(demo_copy.folder)).marks()
    assert [(m["class_index"], m["mark"], m["annotator"]) for m in marks] == [(CONFUSED_CLASS, "several_objects", "ana")]
