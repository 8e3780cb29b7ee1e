"""A real browser launches a mitigation on a private labelled demo, watches it finish, and compares the models.

The Streamlit server gets its own SPURAUDIT_HOME holding a copy of the demo project and model with the
planted square labelled spurious (`private_demo`), so the new model, the job queue and the worker's log
stay in that home and the shared demo is never written to. The worker the app starts is detached (its own
session; it exits by itself only after minutes idle), so the test stops it by pid afterwards and checks
that no process serving that home's job database is left.
"""

from __future__ import annotations

import contextlib
import re
import time
from pathlib import Path

import pytest

from .browser_support import chromium_page, require_browser, screenshot, streamlit_server
from .processes import processes_naming, stop_processes
from .test_mitigate_fixtures import private_demo

pytestmark = pytest.mark.browser

METHOD = "head_tuning"
METHOD_LABEL = "Low-spuriosity head tuning"  # ~1 s of compute: a new head on the stored features
LOAD = 90_000  # ms for a page to render on a slow, shared machine
JOB = 240_000  # ms for the job: a worker and a job process each import torch before the work starts


def _no_exception(page) -> None:
    boxes = page.locator("[data-testid='stException']")
    assert boxes.count() == 0, boxes.first.inner_text()


def _full_screenshot(page, name: str) -> Path:
    """The whole page: Streamlit scrolls inside its main block, so grow the viewport to its height first."""
    height = page.evaluate("() => (document.querySelector(\"[data-testid='stMain']\") || document.body).scrollHeight")
    size = page.viewport_size
    page.set_viewport_size({"width": size["width"], "height": min(max(int(height), size["height"]), 8000)})
    page.wait_for_timeout(1500)  # charts re-layout to the new size
    try:
        return screenshot(page, name)
    finally:
        page.set_viewport_size(size)


def test_launch_head_tuning_and_compare_in_chromium(demo_home, tmp_path, monkeypatch):
    require_browser()
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    from playwright.sync_api import expect

    from spuraudit import paths
    from spuraudit.mitigate import compare_models, list_mitigated_models

    # No file watcher: it would watch the whole checkout (virtualenv included) for a server that never reloads.
    monkeypatch.setenv("STREAMLIT_SERVER_FILE_WATCHER_TYPE", "none")
    home = tmp_path / "home"
    project, _ = private_demo(demo_home, home)
    db = paths.jobs_db(home)
    shared_models = sorted(p.name for p in paths.models_dir(demo_home).iterdir())
    try:
        with streamlit_server(home) as url, chromium_page() as page:
            frames: list[float] = []  # arrival times of the server's websocket messages (each rerun sends many)
            page.on("websocket", lambda ws: ws.on("framereceived", lambda _: frames.append(time.monotonic())))
            # ---- Mitigate: pick head tuning, launch it, watch the job end -------------------------------
            page.goto(f"{url}/mitigate?project=demo", wait_until="domcontentloaded")
            page.get_by_role("heading", name="Mitigate").first.wait_for(timeout=LOAD)
            method_box = page.get_by_role("combobox", name="Method")
            method_box.wait_for(timeout=LOAD)
            method_box.click()
            page.get_by_role("option", name=METHOD_LABEL, exact=True).click()
            expect(method_box).to_have_value(METHOD_LABEL, timeout=LOAD)
            page.get_by_text(f"Options of {METHOD_LABEL}").wait_for(timeout=LOAD)
            page.get_by_text("Spurious features: digit 0: #").wait_for(timeout=LOAD)
            launch = page.get_by_test_id("stBaseButton-primaryFormSubmit").filter(has_text="Launch")
            expect(launch).to_be_enabled(timeout=LOAD)
            page.get_by_test_id("stNumberInput").filter(has_text="seed").wait_for(timeout=LOAD)
            _no_exception(page)
            launch.click()

            page.get_by_role("heading", name="Mitigation jobs").wait_for(timeout=LOAD)
            with contextlib.suppress(PlaywrightTimeout):  # the live progress bar; a fast machine may skip past it
                page.get_by_test_id("stProgress").first.wait_for(timeout=15_000)
            done = page.get_by_text(re.compile(rf"#\d+ {METHOD_LABEL}: demo: done\. New model demo-digitnet-"))
            done.wait_for(timeout=JOB)

            made = list_mitigated_models(project)
            assert len(made) == 1, made
            folder, card = made[0]
            assert folder.parent == paths.models_dir(home)  # beside the private copy of the parent
            assert (card.method, card.parent) == (METHOD, "demo-digitnet")
            assert card.name in done.inner_text()
            # The page reran once when the job ended: the new model is listed, and it stops polling.
            grid = page.get_by_test_id("stDataFrame").first
            expect(grid).to_contain_text(card.name, timeout=LOAD)
            expect(grid).to_contain_text("original (audited)")
            expect(page.get_by_test_id("stProgress")).to_have_count(0)
            page.get_by_text("Compare them with the original model").wait_for(timeout=LOAD)
            _no_exception(page)
            # Once the job has ended the page stays still: no fragment left polling, no rerun after rerun.
            page.wait_for_timeout(2000)
            since = time.monotonic()
            page.wait_for_timeout(4000)
            quiet = [t for t in frames if t >= since]
            assert len(quiet) < 10, f"the page keeps rerunning after the job ended ({len(quiet)} messages in 4 s)"
            _full_screenshot(page, "mitigate-page")

            # ---- Jobs: the same job, done ----------------------------------------------------------------
            page.goto(f"{url}/jobs?project=demo", wait_until="domcontentloaded")
            page.get_by_role("heading", name="Background jobs").wait_for(timeout=LOAD)
            page.get_by_text(re.compile(rf"^#\d+ {METHOD_LABEL}: demo: done$")).wait_for(timeout=LOAD)
            _no_exception(page)
            screenshot(page, "jobs-page")

            # ---- Compare: the original and the new model, their figures and charts -----------------------
            page.goto(f"{url}/compare?project=demo", wait_until="domcontentloaded")
            page.get_by_role("heading", name="Compare models").wait_for(timeout=LOAD)
            page.get_by_text("Metrics on the test split").wait_for(timeout=LOAD)
            models = page.get_by_test_id("stMultiSelect")
            expect(models).to_contain_text("original (audited) model", timeout=LOAD)
            expect(models).to_contain_text(f"{card.name} · {METHOD_LABEL}")
            charts = page.get_by_test_id("stPlotlyChart")
            charts.nth(1).locator(".main-svg").first.wait_for(timeout=LOAD)  # group accuracy and per-class gaps
            assert charts.count() >= 2
            for i in range(2):
                legend = charts.nth(i).locator(".legendtext")
                expect(legend.filter(has_text=re.compile(rf"^{card.name}$"))).to_have_count(1, timeout=LOAD)
                expect(legend.filter(has_text=re.compile(r"^demo-digitnet$"))).to_have_count(1)
            expect(page.get_by_test_id("stDataFrame").first).to_contain_text(card.name)
            _no_exception(page)

            # Each model's card shows the figures the comparison computes (same function, same seed).
            report = compare_models(project, [project.model_folder, folder], split="test", k=100,
                                    extract_missing=False)
            rows = report.summary.set_index("model")
            assert abs(rows.loc[card.name, "pooled_gap"]) < abs(rows.loc["demo-digitnet", "pooled_gap"])
            for name in ("demo-digitnet", card.name):
                title = page.locator("strong", has_text=re.compile(rf"^{name}$"))
                box = page.get_by_test_id("stColumn").filter(has=title).filter(has=page.get_by_test_id("stMetric"))
                expect(box).to_have_count(1, timeout=LOAD)
                expect(box).to_contain_text(f"{rows.loc[name, 'avg_accuracy_plain']:.1f} %", timeout=LOAD)
                expect(box).to_contain_text(f"{rows.loc[name, 'worst_group_accuracy']:.1f} %")
                expect(box).to_contain_text(f"{rows.loc[name, 'pooled_gap']:+.1f} pts")
            expect(page.get_by_test_id("stMetricDelta").filter(has_text="vs original")).to_have_count(3)
            _full_screenshot(page, "compare-page")
    finally:
        # The app's worker is detached and idles for minutes: stop it (and any job process) by pid.
        started = processes_naming(str(db))
        stop_processes(started)
    assert started, "the app should have started a worker for the job"
    assert not processes_naming(str(db)), "a worker or job process of the test's home outlived the test"
    assert sorted(p.name for p in paths.models_dir(demo_home).iterdir()) == shared_models  # shared demo untouched
