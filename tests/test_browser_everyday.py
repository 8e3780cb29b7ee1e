"""A real browser on the demo: Review answers a vote on an unseen pair at once, the gallery's inspector,
filters, CSV export and links, and the checkpoint step's architecture suggestion.

Class names, counts and feature indices are read from the project, never assumed.
"""

from __future__ import annotations

import csv
import io
import os
import re
from pathlib import Path

import pytest

from .browser_support import chromium_page, require_browser, screenshot, streamlit_server
from .conftest import SHARED_DATA

pytestmark = pytest.mark.browser

SLOW = 240_000  # ms: a page's first run on a busy CPU (opening the store, rendering evidence)
PROMPT = 30_000  # ms: what a person would still call "at once" on a busy 2-core machine (the page, not a timer)


def _idle(page) -> None:
    page.wait_for_function(
        "() => !document.querySelector(\"[data-testid='stStatusWidget']\")"
        " || !document.querySelector(\"[data-testid='stStatusWidget']\").innerText.includes('Running')",
        timeout=SLOW)


def _no_exception(page) -> None:
    assert page.locator("[data-testid='stException']").count() == 0, \
        page.locator("[data-testid='stException']").first.inner_text()


def _pair(page) -> tuple[int, int]:
    head = page.get_by_role("heading", name=re.compile(r"^Class \d+: .* · feature \d+")).first
    head.wait_for(timeout=SLOW)
    match = re.match(r"Class (\d+): .* · feature (\d+)", head.inner_text())
    return int(match.group(1)), int(match.group(2))


def test_a_vote_on_an_unseen_pair_moves_on_without_waiting_for_attacks(demo_copy):
    require_browser()
    from playwright.sync_api import expect

    home = demo_copy.folder.parent.parent
    with streamlit_server(home) as url, chromium_page() as page:
        page.goto(f"{url}/review?project=demo", wait_until="domcontentloaded")
        first = _pair(page)
        name = page.get_by_role("textbox", name="Your name", exact=True)
        name.fill("ana")
        name.press("Enter")
        expect(page.locator(".st-key-vote-background button")).to_be_enabled(timeout=SLOW)
        _idle(page)
        # Turn the slow evidence on: it must not hold up the next vote either.
        page.locator(".st-key-review_attacks label").click()
        expect(page.get_by_text(re.compile("feature attacks in the background"))).to_be_visible(timeout=SLOW)
        _idle(page)

        page.locator(".st-key-vote-background button").click()  # the next pair is one nobody has opened
        expect(page.get_by_role("heading", name=re.compile(rf"^Class {first[0]}: .* · feature {first[1]}( |$)"))
               ).to_have_count(0, timeout=PROMPT)
        second = _pair(page)
        assert second != first
        # Its evidence is there at once; its attacks are announced as coming, not waited for.
        expect(page.get_by_text("Top images", exact=False).first).to_be_visible(timeout=PROMPT)
        _no_exception(page)
        # The address holds the pair: a reload comes back to it, not to the first pair of the queue.
        page.wait_for_url(re.compile(rf"pair={second[0]}-{second[1]}"), timeout=PROMPT)
        page.reload(wait_until="domcontentloaded")
        assert _pair(page) == second
        _idle(page)
        screenshot(page, "review-after-vote")
    assert [v.answer for v in demo_copy.labels().votes(*first)] == ["background"]


def _label_top_features_spurious(project, classes: int = 2) -> list[int]:
    """Label each of the first classes' top feature spurious (real votes), as a person would on Features."""
    from spuraudit.audit import Audit

    audit = Audit.open(project)
    store = project.labels()
    ranked = []
    for c in range(min(classes, len(audit.class_names))):
        d = int(audit.top_features(c, 1)["feature"].iloc[0])
        store.add_vote(c, d, "background", annotator="ana")
        ranked.append(c)
    return ranked


def test_gallery_inspector_filters_export_and_link(demo_copy, tmp_path):
    require_browser()
    from playwright.sync_api import expect

    from spuraudit.audit import Audit

    ranked = _label_top_features_spurious(demo_copy)
    audit = Audit.open(demo_copy)
    split = audit.default_split()
    home = demo_copy.folder.parent.parent
    with streamlit_server(home) as url, chromium_page() as page:
        page.goto(f"{url}/rankings?project=demo", wait_until="domcontentloaded")
        page.get_by_role("heading", name="Gallery").wait_for(timeout=SLOW)
        _idle(page)
        _no_exception(page)

        # The inspector opens from a thumbnail and tells label, prediction and spuriosity.
        first_cell = page.locator("[class*='st-key-gallery_cell_']").first
        first_cell.wait_for(timeout=SLOW)
        index = int(re.search(r"st-key-gallery_cell_(\d+)", first_cell.get_attribute("class")).group(1))
        first_cell.get_by_role("button", name=re.compile("Inspect")).click()
        dialog = page.get_by_role("dialog")
        expect(dialog).to_be_visible(timeout=SLOW)
        expect(dialog).to_contain_text(f"Label: {audit.class_names[int(audit.labels[index])]}", timeout=SLOW)
        expect(dialog).to_contain_text(f"Prediction: {audit.class_names[int(audit.preds[index])]}")
        expect(dialog).to_contain_text(re.compile(r"Spuriosity: [+-]\d+\.\d\d"))
        expect(dialog).to_contain_text(Path(audit.table.path(index)).name)
        screenshot(page, "gallery-inspector")
        page.keyboard.press("Escape")
        expect(dialog).to_have_count(0, timeout=PROMPT)

        # Filter to the wrong predictions if the class has any, else to the correct ones.
        class_index = ranked[0]
        rows = audit.class_rows(class_index, split)
        wrong = rows[~audit.correct[rows]]
        choice = "wrong" if len(wrong) else "correct"
        expected = set(map(int, wrong if len(wrong) else rows[audit.correct[rows]]))
        page.locator(".st-key-gallery_correct").get_by_role("radio", name=choice, exact=True).click()
        expect(page.get_by_text(re.compile(rf"^{len(expected):,} of {len(rows):,} images pass the filters"))
               ).to_be_visible(timeout=SLOW)
        page.wait_for_url(re.compile(rf"correct={choice}"), timeout=SLOW)
        _idle(page)

        # Export everything the filter lets through, as CSV: its rows are exactly the filtered images.
        page.locator(".st-key-gallery_export_scope").get_by_text("all filtered").click()
        _idle(page)
        # Click only once the rerun has drawn the button for the filtered scope: a click on the button of the
        # previous run (still on screen on a busy CPU) asks for a download that never comes.
        button = page.locator(".st-key-gallery_download button")
        expect(button).to_have_text(re.compile(rf"Download {len(expected):,} images' rows"), timeout=SLOW)
        expect(button).to_be_enabled(timeout=SLOW)
        with page.expect_download(timeout=SLOW) as download:
            button.click()
        data = Path(download.value.path()).read_text()
        exported = list(csv.DictReader(io.StringIO(data)))
        assert {int(r["index"]) for r in exported} == expected
        assert all(r["correct"] == ("False" if choice == "wrong" else "True") for r in exported)
        assert all(r["label"] == audit.class_names[class_index] for r in exported)

        # A saved link restores class, filter and page.
        other = ranked[-1]
        other_rows = audit.class_rows(other, split)
        pages = -(-len(other_rows) // 24)
        target = min(2, pages)
        link = f"{url}/rankings?project=demo&class={other}&correct=correct&page={target}"
        fresh = page.context.browser.new_page(viewport={"width": 1400, "height": 1000})
        fresh.goto(link, wait_until="domcontentloaded")
        fresh.get_by_role("heading", name="Gallery").wait_for(timeout=SLOW)
        n_correct = int(audit.correct[other_rows].sum())
        expect(fresh.get_by_text(re.compile(rf"^{n_correct:,} of {len(other_rows):,} images pass the filters"))
               ).to_be_visible(timeout=SLOW)
        expect(fresh.locator(".st-key-gallery_page input")).to_have_value(str(target), timeout=SLOW)
        expect(fresh.get_by_role("combobox", name="Class", exact=True)).to_have_value(f"{other}: {audit.class_names[other]}")
        _no_exception(fresh)
        screenshot(fresh, "gallery-from-link")


CIFAR_RESNET20 = Path(os.environ.get("SPURAUDIT_SHARED_DATA", SHARED_DATA)) / "cifar10-resnet" / "resnet20-12fca82f.th"


@pytest.mark.skipif(not CIFAR_RESNET20.is_file(), reason="shared CIFAR ResNet-20 checkpoint absent")
def test_an_uploaded_cifar_resnet_under_the_wrong_architecture_gets_the_right_one_proposed(tmp_path):
    require_browser()
    from playwright.sync_api import expect

    with streamlit_server(tmp_path) as url, chromium_page() as page:
        page.goto(f"{url}/data", wait_until="domcontentloaded")
        page.get_by_role("heading", name="2. Model").wait_for(timeout=SLOW)
        page.get_by_text("Upload a file").click()
        page.locator("[data-testid='stFileUploaderDropzoneInput']").last.set_input_files(str(CIFAR_RESNET20))
        # The picker still says torchvision:resnet50: the page says it does not fit and proposes the right one first.
        expect(page.get_by_text(re.compile(r"^This file does not fit"))).to_be_visible(timeout=SLOW)
        expect(page.get_by_text("What does not fit")).to_be_visible(timeout=SLOW)
        first = page.locator("[class*='st-key-use-arch-0']")
        expect(page.get_by_text("Architectures that match this file")).to_be_visible(timeout=SLOW)
        proposal = page.get_by_text(re.compile(r"^spuraudit:cifar_resnet\d+$")).first
        expect(proposal).to_have_text("spuraudit:cifar_resnet20", timeout=SLOW)
        expect(page.get_by_text(re.compile(r"exact fit · head found \(10 classes\)"))).to_be_visible()
        expect(page.get_by_text("tick the linear-probe option")).to_have_count(0)
        first.get_by_role("button").click()  # one click picks it
        expect(page.get_by_text(re.compile(r"Read \d+ tensors: 10 classes in the head"))).to_be_visible(timeout=SLOW)
        _no_exception(page)
        screenshot(page, "architecture-suggested")
