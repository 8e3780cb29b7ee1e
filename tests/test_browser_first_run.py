"""A new user's first minutes: an empty home, the Home page offers the demo, one click builds it in the
background with visible progress, and the page then shows the demo's bias."""

from __future__ import annotations

import re

import pytest

from .browser_support import chromium_page, require_browser, screenshot, streamlit_server
from .processes import processes_naming, stop_processes

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def test_build_the_demo_from_an_empty_home(tmp_path):
    require_browser()
    home = (tmp_path / "home").resolve()
    home.mkdir()
    try:
        with streamlit_server(home) as url, chromium_page(height=1100) as page:
            page.goto(url, wait_until="networkidle")
            button = page.get_by_role("button", name=re.compile("Build the demo"))
            button.wait_for(timeout=60_000)
            button.click()
            # The job runs in a worker process; the page polls it and shows a progress bar meanwhile.
            page.locator("[data-testid='stProgress']").first.wait_for(timeout=60_000)
            screenshot(page, "first-run-building")
            page.get_by_text("Accuracy on the test split").wait_for(timeout=600_000)
            page.locator(".js-plotly-plot").first.wait_for(timeout=60_000)  # accuracy per group, drawn
            page.wait_for_timeout(1500)
            assert page.locator("[data-testid='stException']").count() == 0
            metrics = page.locator("[data-testid='stMetric']")
            values = {metrics.nth(i).locator("[data-testid='stMetricLabel']").inner_text().strip():
                      metrics.nth(i).locator("[data-testid='stMetricValue']").inner_text().strip()
                      for i in range(metrics.count())}
            average = float(values["Accuracy"].rstrip(" %"))
            worst = float(values["Worst-group accuracy"].rstrip(" %"))
            assert worst <= average - 30  # the demo is a real bias case, and the page says so
            screenshot(page, "first-run-home")
        assert (home / "projects" / "demo" / "project.json").is_file()
    finally:
        stop_processes(processes_naming(str(home)))
    assert processes_naming(str(home)) == []
