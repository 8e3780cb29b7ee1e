"""A real browser labels a (class, feature) pair on the Review page, reloads, and the vote is still there.

Then a teammate's browser joins the same server: the vote counts as someone else's for them, and each
browser keeps its own name.
"""

from __future__ import annotations

import re

import pytest

from .browser_support import chromium_page, require_browser, screenshot, streamlit_server

pytestmark = pytest.mark.browser

SLOW = 180_000  # ms: the first run of the page computes the evidence and feature attacks on a (busy) CPU


def _metric(page, label: str):
    """The value element of the st.metric whose label is `label`."""
    card = page.locator("[data-testid='stMetric']").filter(
        has=page.locator("[data-testid='stMetricLabel']", has_text=label))
    return card.locator("[data-testid='stMetricValue']")


def _current_pair(page) -> tuple[int, int]:
    """(class, feature) from the subheader "Class 0: digit 0 · feature 40 · rank 1 in its class"."""
    head = page.get_by_role("heading", name=re.compile(r"^Class \d+: .* · feature \d+")).first
    head.wait_for(timeout=SLOW)
    match = re.match(r"Class (\d+): .* · feature (\d+)", head.inner_text())
    assert match, head.inner_text()
    return int(match.group(1)), int(match.group(2))


def _wait_until_idle(page) -> None:
    """Until Streamlit has finished the current script run (no 'Running...' status widget)."""
    page.wait_for_function(
        "() => !document.querySelector(\"[data-testid='stStatusWidget']\")"
        " || !document.querySelector(\"[data-testid='stStatusWidget']\").innerText.includes('Running')",
        timeout=SLOW,
    )


def _no_exception(page) -> None:
    assert page.locator("[data-testid='stException']").count() == 0, \
        page.locator("[data-testid='stException']").first.inner_text()


def test_a_vote_in_the_browser_survives_a_reload(demo_copy):
    require_browser()
    from playwright.sync_api import expect

    home = demo_copy.folder.parent.parent  # holds projects/demo and the demo's models (a link)
    with streamlit_server(home) as url, chromium_page() as page:
        page.goto(f"{url}/review?project=demo", wait_until="domcontentloaded")
        page.get_by_role("heading", name="Review features", exact=True).wait_for(timeout=SLOW)
        first = _current_pair(page)
        background = page.locator(".st-key-vote-background button")
        expect(background).to_be_disabled(timeout=SLOW)  # no name yet: no vote
        expect(page.get_by_text("Type your name in the sidebar to vote.")).to_be_visible()
        expect(_metric(page, "Reviewed by you")).to_have_text(re.compile(r"^0 of \d+$"), timeout=SLOW)
        total = int(_metric(page, "Reviewed by you").inner_text().split(" of ")[1])

        # The name, asked once in the sidebar (Enter commits a text input).
        name = page.get_by_role("textbox", name="Your name", exact=True)
        name.fill("ana")
        name.press("Enter")
        expect(background).to_be_enabled(timeout=SLOW)
        _wait_until_idle(page)
        page.locator("[data-testid='stImage'] img").first.wait_for(timeout=SLOW)
        _no_exception(page)

        # Feature attacks are off by default (minutes per pair on a CPU; when on they run in the background).
        attacks = page.locator(".st-key-review_attacks input[type='checkbox']")
        expect(attacks).not_to_be_checked()
        expect(page.get_by_text("Feature attacks (the image pushed")).to_have_count(0, timeout=SLOW)
        _wait_until_idle(page)

        # Label the current pair: its feature looks at the background, so it is spurious.
        background.click()
        expect(_metric(page, "Reviewed by you")).to_have_text(f"1 of {total}", timeout=SLOW)
        expect(_metric(page, "Reviewed (any person)")).to_have_text(f"1 of {total}", timeout=SLOW)
        # The page moves on to the next pair (waited for: the old subheader may linger until replaced).
        expect(page.get_by_role("heading", name=re.compile(rf"^Class {first[0]}: .* · feature {first[1]}( |$)"))
               ).to_have_count(0, timeout=SLOW)
        second = _current_pair(page)
        assert second != first

        # The real label store on disk has the vote, with the name typed in the browser.
        store = demo_copy.labels()
        [vote] = store.votes(annotator="ana")
        assert (vote.pair, vote.answer, vote.is_machine, vote.retracted) == (first, "background", False, False)
        assert store.get_setting("annotator") == "ana"
        label = store.label(*first)
        assert (label.status, label.subtype, label.n_votes) == ("spurious", "background", 1)

        # A reload is a new Streamlit session: the name comes back (from the address), and so does the vote.
        page.reload(wait_until="domcontentloaded")
        page.get_by_role("heading", name="Review features", exact=True).wait_for(timeout=SLOW)
        expect(page.get_by_role("textbox", name="Your name", exact=True)).to_have_value("ana", timeout=SLOW)
        expect(_metric(page, "Reviewed by you")).to_have_text(f"1 of {total}", timeout=SLOW)
        expect(_metric(page, "Reviewed (any person)")).to_have_text(f"1 of {total}", timeout=SLOW)
        assert _current_pair(page) == second  # the address kept the pair being looked at
        page.locator(".st-key-review_prev button").click()  # back to the pair voted on
        expect(page.get_by_role("heading", name=re.compile(rf"^Class {first[0]}: .* · feature {first[1]}( |$)"))
               ).to_have_count(1, timeout=SLOW)
        assert "annotator=ana" in page.url  # the name rides in this browser's address
        caption = page.get_by_text(re.compile(r"^Current label: "))
        expect(caption).to_contain_text("spurious (background)", timeout=SLOW)
        expect(caption).to_contain_text("your vote: Background (spurious)")
        expect(page.locator(".st-key-vote-background button")).to_be_enabled()
        # Your current answer is the highlighted button; the other two look alike.
        for answer, kind in [("background", "primary"), ("main_object", "secondary"), ("separate_object", "secondary")]:
            expect(page.locator(f".st-key-vote-{answer} button")).to_have_attribute(
                "data-testid", f"stBaseButton-{kind}")

        # The pair's history lists the vote.
        page.get_by_text("Vote history of this pair").click()
        history = page.locator("[data-testid='stExpander']").filter(has_text="Vote history of this pair")
        expect(history.locator("[data-testid='stDataFrame']")).to_be_visible(timeout=SLOW)
        expect(history.get_by_text("No votes yet.")).to_have_count(0)

        _wait_until_idle(page)
        page.locator("[data-testid='stImage'] img").first.wait_for(timeout=SLOW)
        page.wait_for_function(  # every image has loaded before the screenshot
            "() => [...document.querySelectorAll(\"[data-testid='stImage'] img\")]"
            ".every(img => img.complete && img.naturalWidth > 0)", timeout=SLOW)
        assert page.locator("[data-testid='stImage'] img").count() >= 2 * 8  # top images, NAMs, class examples
        _no_exception(page)
        shot = screenshot(page, "review-page")  # the whole page
        assert shot.stat().st_size > 20_000

        # A teammate in another browser against the same server: the name field starts empty (never the
        # last visitor's name), which is offered as an "I am ana" button; once they type theirs, the vote
        # above counts as someone else's.
        mate = page.context.browser.new_page(viewport={"width": 1400, "height": 1000})
        mate.goto(f"{url}/review?project=demo", wait_until="domcontentloaded")
        mate_name = mate.get_by_role("textbox", name="Your name", exact=True)
        expect(mate.get_by_role("button", name="I am ana")).to_be_visible(timeout=SLOW)
        expect(mate_name).to_have_value("")
        mate_name.fill("bo")
        mate_name.press("Enter")
        expect(_metric(mate, "Reviewed by you")).to_have_text(f"0 of {total}", timeout=SLOW)
        expect(_metric(mate, "Reviewed (any person)")).to_have_text(f"1 of {total}")
        expect(mate.get_by_role("button", name="I am ana")).to_have_count(0)
        mate.wait_for_url(re.compile(r"annotator=bo"), timeout=SLOW)
        assert store.get_setting("annotator") == "bo"
        # ana's reload keeps ana (from her address), not the teammate's name from the store.
        page.reload(wait_until="domcontentloaded")
        expect(page.get_by_role("textbox", name="Your name", exact=True)).to_have_value("ana", timeout=SLOW)
        expect(_metric(page, "Reviewed by you")).to_have_text(f"1 of {total}", timeout=SLOW)
        _no_exception(mate)
        _no_exception(page)

    # Still there once the server is gone: the vote lives in the project's SQLite file.
    assert [v.answer for v in demo_copy.labels().votes(*first)] == ["background"]
