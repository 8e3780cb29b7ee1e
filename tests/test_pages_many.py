"""The Feature sensitivity and Many models pages on the demo: under AppTest, and in a real browser.

The demo copy gets real labels (its cue feature spurious, found from ground truth), a second model trained
here, and a saved sensitivity run, so each page has its charts to draw.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from spuraudit.analysis import auroc

from .browser_support import chromium_page, require_browser, screenshot, streamlit_server
from .test_models_many import _second_model

APP = str(Path(__file__).resolve().parents[1] / "app.py")


@pytest.fixture
def prepared(demo_copy, tmp_path, monkeypatch):
    """The demo copy with a cue label, a core label, a second model and a saved sensitivity run."""
    from spuraudit.audit import Audit
    from spuraudit.data.demo import CUE_COLUMN
    from spuraudit.sensitivity import measure_sensitivity, save_report

    project = demo_copy
    audit = Audit.open(project)
    table = project.table
    cue = table.frame[CUE_COLUMN].to_numpy().astype(bool)
    train = table.split_mask("train")
    cls = int(np.argmax([cue[train & (table.labels == c)].mean() for c in range(table.num_classes)]))
    rows = audit.class_rows(cls, "test")
    top = [int(d) for d in audit.top_features(cls, k=5, split="test")["feature"]]
    separation = {d: auroc(np.asarray(audit.features[rows, d], dtype=np.float64), cue[rows]) for d in top}
    cue_feature = max(separation, key=separation.get)
    core_feature = min(separation, key=separation.get)
    store = project.labels()
    store.add_vote(cls, cue_feature, "background", "tester")
    if core_feature != cue_feature:
        store.add_vote(cls, core_feature, "main_object", "tester")
    second = _second_model(project, tmp_path / "more-models")
    project.add_model(second)
    project.extract(model_folder=second, num_workers=0)
    report = measure_sensitivity(project, classes=[cls], k=20, max_images=40)
    save_report(project, report, None, report.params["split"])
    home = project.folder.parent.parent
    monkeypatch.setenv("SPURAUDIT_HOME", str(home))
    return home


def _page(script: str) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=180)
    at.query_params["project"] = "demo"
    at.run()
    at.switch_page(script)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_pages_draw_their_charts_under_apptest(prepared):
    at = _page("pages/sensitivity.py")
    assert len(at.get("plotly_chart")) == 2  # per-feature drops, core/spurious accuracy
    at = _page("pages/models.py")
    assert len(at.get("plotly_chart")) >= 1  # effective robustness from the labelled class
    at.sidebar.checkbox(key="models_proxy").check().run()
    assert not at.exception
    assert len(at.get("plotly_chart")) == 3  # + Pearson and Spearman matrices over every class


@pytest.mark.browser
def test_pages_in_chromium(prepared):
    require_browser()
    with streamlit_server(prepared) as url, chromium_page() as page:
        page.goto(f"{url}/sensitivity?project=demo", wait_until="networkidle")
        page.get_by_text("Core and spurious accuracy").wait_for(timeout=90_000)
        page.locator("[data-testid='stPlotlyChart']").nth(1).wait_for(timeout=90_000)
        assert page.locator(".js-plotly-plot").count() == 2
        assert page.locator("[data-testid='stException']").count() == 0
        assert screenshot(page, "sensitivity-page").stat().st_size > 20_000

        page.goto(f"{url}/models?project=demo", wait_until="networkidle")
        page.get_by_text("Effective robustness").first.wait_for(timeout=90_000)
        page.get_by_text("Rank unlabelled classes by a proxy feature").click()
        page.get_by_text("Spearman ρ of per-class gaps").wait_for(timeout=90_000)
        page.wait_for_timeout(1500)
        assert page.locator(".js-plotly-plot").count() == 3
        assert page.locator("[data-testid='stException']").count() == 0
        assert screenshot(page, "models-page").stat().st_size > 20_000
