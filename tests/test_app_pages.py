"""The audit pages under Streamlit's AppTest, on the real demo project."""

from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest

from pathlib import Path

APP = str(Path(__file__).resolve().parents[1] / "app.py")


@pytest.fixture
def app_env(demo_home, monkeypatch):
    monkeypatch.setenv("SPURAUDIT_HOME", str(demo_home))
    return demo_home


def _run(page: str | None = None, project: str | None = "demo", timeout: float = 120) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=timeout)
    if project:
        at.query_params["project"] = project
    at.run()
    if page:
        at.switch_page(page)
        at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _images(at: AppTest) -> list:
    """Every `st.image` row on the page (AppTest names the element "image" in new Streamlit, "imgs" before)."""
    return list(at.get("image")) + list(at.get("imgs"))


def test_home_with_no_project_offers_the_demo(home):
    at = _run(project=None)
    assert any("Build the demo" in b.label for b in at.button)
    assert any("built-in demo" in h.value for h in at.header)


def test_home_shows_the_demo_bias(app_env):
    at = _run()
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Images"] == "5,000"
    assert "Worst-group accuracy" in metrics
    worst = float(metrics["Worst-group accuracy"].rstrip(" %"))
    average = float(metrics["Accuracy"].rstrip(" %"))
    assert worst <= average - 30


def test_features_page_lists_top_features_with_images(app_env):
    at = _run("pages/features.py")
    assert at.title[0].value == "Features the model relies on"
    subheaders = [s.value for s in at.subheader]
    assert len(subheaders) == 5 and subheaders[0].startswith("#1 · feature")
    assert len(_images(at)) >= 5  # one image row per feature (top images tab)


def test_features_page_k_and_class_controls(app_env):
    at = _run("pages/features.py")
    at.sidebar.slider(key="top_k").set_value(3).run()
    assert len(at.subheader) == 3
    at.sidebar.selectbox(key="class").set_value(1).run()
    assert not at.exception
    assert "digit 1" in at.markdown[0].value


def test_labelling_a_feature_feeds_the_rankings_page(demo_copy, monkeypatch):
    monkeypatch.setenv("SPURAUDIT_HOME", str(demo_copy.folder.parent.parent))
    at = _run("pages/rankings.py")
    assert any("No feature is labelled spurious" in i.value for i in at.info)
    at = _run("pages/features.py")
    first = at.subheader[0].value  # "#1 · feature 17"
    feature = int(first.split("feature")[1])
    at.sidebar.text_input(key="annotator").set_value("ana").run()
    at.segmented_control(key=f"label-0-{feature}").set_value("spurious (background)").run()
    at.button(key=f"save-0-{feature}").click().run()
    assert not at.exception
    assert demo_copy.labels().spurious_features() == {0: [feature]}
    at.switch_page("pages/rankings.py")
    at.run()
    assert not at.exception
    metrics = {m.label: m.value for m in at.metric}
    assert "Pooled spurious gap" in metrics
    assert len(_images(at)) >= 1
