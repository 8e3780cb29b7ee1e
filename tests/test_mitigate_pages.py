"""The Mitigate and Compare pages under Streamlit's AppTest, each run as its own entry point."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from spuraudit.mitigate import run_mitigation
from spuraudit.modelio import load_model
from tests.test_mitigate_fixtures import labelled_demo  # noqa: F401  (fixture)

PAGES = Path(__file__).resolve().parents[1] / "pages"


@pytest.fixture(scope="module")
def with_models(labelled_demo):
    """The labelled demo with one head-tuned and one DFR model beside its own."""
    project, _ = labelled_demo
    head = run_mitigation(project, "head_tuning", {"seed": 0})
    dfr = run_mitigation(project, "dfr", {"seed": 0, "n_subsamples": 2})
    return project, head, dfr


def _page(name: str, project, monkeypatch, **state) -> AppTest:
    monkeypatch.setenv("SPURAUDIT_HOME", str(project.folder.parent.parent))
    at = AppTest.from_file(str(PAGES / name), default_timeout=120)
    at.query_params["project"] = "demo"
    for key, value in state.items():
        at.session_state[key] = value
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_mitigate_page_shows_methods_options_and_models(with_models, monkeypatch):
    project, head, dfr = with_models
    at = _page("mitigate.py", project, monkeypatch)
    assert at.title[0].value == "Mitigate"
    method = at.selectbox(key="mitigate_method")
    assert set(method.options) >= {"Low-spuriosity head tuning", "MaskTune", "Deep feature reweighting (DFR)"}
    # Head tuning's options with their defaults; an empty learning rate is the feature-scaled one.
    assert at.number_input(key="opt-head_tuning-k").value == 100
    assert at.number_input(key="opt-head_tuning-typical").value == 100
    assert at.number_input(key="opt-head_tuning-lr").value is None
    assert at.selectbox(key="opt-head_tuning-other_classes").value == "balanced_sample"
    assert any(b.label == "Launch" for b in at.button)
    # The models made above are listed with their test figures.
    listed = at.dataframe[0].value
    assert {head.name, dfr.name} <= set(listed["model"])
    acc = load_model(head)[1].metrics["test_accuracy"]
    assert acc in set(listed.loc[listed["model"] == head.name, "test accuracy (%)"])


def test_launch_submits_a_mitigation_job(with_models, monkeypatch):
    project, _, _ = with_models
    import spuraudit.ui.jobs as ui_jobs

    submitted = []
    monkeypatch.setattr(ui_jobs, "submit", lambda kind, params, title: submitted.append((kind, params, title)) or 7)
    monkeypatch.setattr(ui_jobs, "watch", lambda ids, on_done_rerun=True: None)
    at = _page("mitigate.py", project, monkeypatch)
    at.number_input(key="opt-head_tuning-k").set_value(50)
    at.button[0].click().run()
    assert not at.exception, [e.value for e in at.exception]
    kind, params, title = submitted[0]
    assert kind == "mitigate.run" and params["method"] == "head_tuning"
    assert params["options"]["k"] == 50 and params["options"]["seed"] == 0
    assert params["options"]["lr"] is None  # left empty: the method scales it to the features
    assert params["project"] == str(project.folder)


def test_mitigate_page_previews_masktune_masks(with_models, monkeypatch):
    project, _, _ = with_models
    at = _page("mitigate.py", project, monkeypatch, mitigate_method="masktune")
    assert any("MaskTune's masks" in h.value for h in at.header)
    metrics = {m.label: m.value for m in at.metric}
    mean = float(metrics["Mean share masked"].rstrip(" %"))
    assert 20 <= mean <= 26  # the default rule masks the hottest quarter
    assert "Images with nothing masked" in metrics
    assert len(at.get("image")) >= 3 * 8  # original, heatmap and masked for each image of the page
    assert at.selectbox(key="preview_fill").value == "others"  # the epoch's default fill
    at.selectbox(key="preview_fill").set_value("zero").run()
    assert not at.exception and len(at.get("image")) >= 3 * 8
    at.selectbox(key="preview_rule").set_value("official").run()
    assert not at.exception
    official = {m.label: m.value for m in at.metric}
    assert float(official["Mean share masked"].rstrip(" %")) < mean


def test_compare_page_tables_and_charts(with_models, monkeypatch):
    project, head, dfr = with_models
    at = _page("compare.py", project, monkeypatch)
    assert at.title[0].value == "Compare models"
    # The headline figures in one table, the rest in a second one under "More columns".
    summary = at.dataframe[0].value
    assert {"accuracy, plain average (%)", "worst-group accuracy (%)", "pooled gap (pts)"} <= set(summary.columns)
    assert {head.name, dfr.name} <= set(summary["model"])
    more = next(e for e in at.expander if e.label.startswith("More columns")).dataframe[0].value
    assert {"accuracy, weighted by training groups (%)", "worst group"} <= set(more.columns)
    assert list(more["model"]) == list(summary["model"])
    gaps = dict(zip(summary["model"], summary["pooled gap (pts)"]))
    original = load_model(project.model_folder)[1].name
    assert abs(gaps[head.name]) <= abs(gaps[original]) / 2
    assert len(at.get("plotly_chart")) >= 2  # group accuracy and per-class gaps
    assert not any("Selective classification" in s.value for s in at.subheader)  # no MaskTune model here
