"""A real browser opens the demo's Features page and sees features, images and heatmaps."""

from __future__ import annotations

import pytest

from .browser_support import chromium_page, require_browser, screenshot, streamlit_server

pytestmark = pytest.mark.browser


def test_features_page_in_chromium(demo_home):
    require_browser()
    with streamlit_server(demo_home) as url, chromium_page() as page:
        page.goto(f"{url}/features?project=demo", wait_until="networkidle")
        page.get_by_text("Features the model relies on").wait_for(timeout=60_000)
        page.get_by_text("feature", exact=False).first.wait_for(timeout=60_000)
        # The first feature's top images are real <img> elements rendered by the server.
        page.locator("[data-testid='stImage'] img").first.wait_for(timeout=90_000)
        page.wait_for_timeout(1500)
        n_images = page.locator("[data-testid='stImage'] img").count()
        assert n_images >= 8
        assert page.get_by_text("importance").count() > 0
        assert page.locator("[data-testid='stException']").count() == 0
        shot = screenshot(page, "features-page")
        assert shot.stat().st_size > 20_000
