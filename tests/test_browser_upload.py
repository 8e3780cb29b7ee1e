"""A real browser brings its own data and model: on "Add data & model" it uploads a zipped ImageFolder and a
checkpoint, checks the preview and the class names, creates the project, waits for the background feature
extraction, and then sees the project's top features with their images on the Features page.

Everything starts from an empty SPURAUDIT_HOME. The dataset (coloured shapes, with the colour following the
shape most of the time: a small spurious cue) and the checkpoint (the demo's CNN, trained here for a few
seconds) are made by the test. Worker processes the app starts are stopped at the end and checked gone.
"""

from __future__ import annotations

import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from .browser_support import chromium_page, require_browser, screenshot, streamlit_server
from .processes import processes_naming, stop_processes

pytestmark = pytest.mark.browser

CLASSES = ("circle", "square", "triangle")
COLOURS = {"circle": (215, 40, 40), "square": (40, 170, 60), "triangle": (40, 80, 210)}
SPLITS = {"train": 16, "test": 8}  # images per class
CUE_RATE = 0.85  # how often a shape has its own colour; otherwise one of the others
ARCH = "spuraudit:digitnet"
SIZE = 28
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # the architecture's defaults
LONG = 180_000  # ms: the slowest steps (worker start, torch import, extraction) on a loaded 2-core machine


# ---- the user's files ---------------------------------------------------------------------------------
def _shape(kind: str, colour, rng: np.random.Generator, size: int = 40):
    from PIL import Image, ImageDraw

    background = tuple(int(v) for v in rng.integers(200, 250, 3))
    image = Image.new("RGB", (size, size), background)
    draw = ImageDraw.Draw(image)
    r = int(rng.integers(9, 14))
    cx, cy = (int(v) for v in rng.integers(r + 2, size - r - 2, 2))
    box = (cx - r, cy - r, cx + r, cy + r)
    if kind == "circle":
        draw.ellipse(box, fill=colour)
    elif kind == "square":
        draw.rectangle(box, fill=colour)
    else:
        draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=colour)
    noise = rng.integers(-12, 12, (size, size, 3))
    return Image.fromarray(np.clip(np.asarray(image, dtype=np.int64) + noise, 0, 255).astype(np.uint8))


def _dataset(root: Path) -> Path:
    """shapes/{train,test}/<class>/*.png, as a user would have it on disk."""
    rng = np.random.default_rng(0)
    for split, n in SPLITS.items():
        for kind in CLASSES:
            for i in range(n):
                own = rng.random() < CUE_RATE
                colour = COLOURS[kind] if own else COLOURS[CLASSES[(CLASSES.index(kind) + 1 + i % 2) % 3]]
                path = root / split / kind / f"{kind}_{i:02d}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                _shape(kind, colour, rng).save(path)
    return root


def _zip(root: Path, target: Path) -> Path:
    """The folder zipped the way macOS Finder does it: wrapped in its own folder, with junk entries."""
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as zf:
        for f in sorted(root.rglob("*.png")):
            zf.write(f, f"{root.name}/{f.relative_to(root).as_posix()}")
        zf.writestr(f"{root.name}/.DS_Store", b"\0\0\0\1Bud1")
        zf.writestr(f"__MACOSX/{root.name}/._train", b"\0\5\26\7")
    return target


def _checkpoint(root: Path, target: Path) -> Path:
    """A DigitNet for the three classes, trained for a few seconds on the training split (a plain state dict)."""
    import torch
    from torch import nn

    from spuraudit.data.images import load_rgb, to_tensor
    from spuraudit.modelio.adapter import Normalize
    from spuraudit.modelio.digitnet import DigitNet

    files = sorted((root / "train").rglob("*.png"))
    x = torch.stack([to_tensor(load_rgb(f, (SIZE, SIZE))) for f in files])
    y = torch.tensor([CLASSES.index(f.parent.name) for f in files])
    torch.manual_seed(0)
    net = DigitNet(len(CLASSES))
    model = nn.Sequential(Normalize(IMAGENET_MEAN, IMAGENET_STD), net)  # as the audit will feed it
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(0)
    threads = torch.get_num_threads()
    # Tiny batches: one thread is ~20x faster than two on a busy 2-core machine (no spinning threads).
    torch.set_num_threads(1)
    try:
        model.train()
        for _ in range(12):  # epochs of 3 batches
            for idx in torch.randperm(len(x), generator=gen).split(16):
                loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
        model.eval()
        with torch.no_grad():
            accuracy = (model(x).argmax(1) == y).float().mean().item()
    finally:
        torch.set_num_threads(threads)
    assert accuracy > 0.6, f"the test's model did not learn its training split ({accuracy:.0%})"
    torch.save(net.state_dict(), target)
    return target


# ---- processes the app starts ---------------------------------------------------------------------------
# ---- browser helpers ------------------------------------------------------------------------------------
def _widget(page, testid: str, label: str):
    return page.locator(f"[data-testid='{testid}']").filter(has_text=label).first


def _metric(page, label: str) -> str:
    box = page.locator("[data-testid='stMetric']").filter(has_text=label).first
    return box.locator("[data-testid='stMetricValue']").inner_text().strip()


def _settle(page, ms: int = 600) -> None:
    """Let a rerun finish: Streamlit shows its status widget while the script runs."""
    page.wait_for_timeout(ms)
    page.locator("[data-testid='stStatusWidget']").wait_for(state="hidden", timeout=LONG)


_T0 = [time.monotonic()]


def _step(what: str) -> None:
    """Print how long each step took (pytest shows it when the test fails, e.g. on a timeout)."""
    print(f"[{time.monotonic() - _T0[0]:6.1f} s] {what}", flush=True)


def _no_exception(page) -> None:
    shown = page.locator("[data-testid='stException']")
    assert shown.count() == 0, shown.first.inner_text()


# ---- the test -------------------------------------------------------------------------------------------
def test_upload_dataset_and_checkpoint_then_see_features_in_chromium(tmp_path):
    require_browser()
    _T0[0] = time.monotonic()
    home = (tmp_path / "home").resolve()
    home.mkdir()
    files = tmp_path / "user-files"
    dataset = _dataset(files / "shapes")
    archive = _zip(dataset, files / "shapes.zip")
    ckpt = _checkpoint(dataset, files / "shapes-digitnet.pt")
    n_images = len(CLASSES) * sum(SPLITS.values())
    _step("dataset, zip and checkpoint made")

    try:
        with streamlit_server(home) as url, chromium_page(height=1100) as page:
            page.goto(f"{url}/data", wait_until="networkidle")
            page.get_by_role("heading", name="Add data & model").wait_for(timeout=LONG)
            _step("page open")
            _no_exception(page)

            # 1. The dataset, uploaded as a zip.
            _widget(page, "stRadio", "Dataset from").get_by_text("Upload a zip").click()
            uploader = _widget(page, "stFileUploader", "Dataset as a .zip")
            uploader.wait_for(timeout=LONG)
            uploader.locator("input[type=file]").set_input_files(str(archive))
            page.get_by_text("Layout:").wait_for(timeout=LONG)
            _step("zip uploaded, preview shown")
            _settle(page)
            _no_exception(page)
            assert _metric(page, "Images") == str(n_images)
            assert _metric(page, "Classes") == str(len(CLASSES))
            assert _metric(page, "Splits") == "train, test"
            assert _metric(page, "Skipped files") == "0"  # the Finder junk never became a "file"
            assert page.get_by_text("imagefolder", exact=True).count() >= 1
            counts = page.locator("[data-testid='stDataFrame']").first
            counts.wait_for(timeout=LONG)
            # Thumbnails per class: real images the server rendered.
            thumbs = page.locator("[data-testid='stExpander']").filter(has_text="Sample images per class")
            thumbs.locator("[data-testid='stImage'] img").first.wait_for(timeout=LONG)
            assert thumbs.locator("[data-testid='stImage'] img").count() >= len(CLASSES) * 6
            for name in CLASSES:
                assert thumbs.get_by_text(name, exact=True).count() == 1

            # 2. The checkpoint, uploaded, and its architecture.
            _widget(page, "stRadio", "Checkpoint from").get_by_text("Upload a file").click()
            ckpt_uploader = _widget(page, "stFileUploader", "Checkpoint")
            ckpt_uploader.wait_for(timeout=LONG)
            ckpt_uploader.locator("input[type=file]").set_input_files(str(ckpt))
            _settle(page)
            select = _widget(page, "stSelectbox", "Architecture")
            select.click()
            page.keyboard.type(ARCH)
            page.get_by_role("option", name=ARCH, exact=True).click()
            page.get_by_text(f"{len(CLASSES)} classes in the head").wait_for(timeout=LONG)
            _step("checkpoint uploaded and read")
            _settle(page)
            _no_exception(page)
            assert _widget(page, "stNumberInput", "Input size").locator("input").input_value() == str(SIZE)

            # 3. The class names: prefilled from the dataset; a wrong list is refused, the right one accepted.
            names = _widget(page, "stTextArea", "class names").locator("textarea")
            assert names.input_value().split("\n") == list(CLASSES)
            create = page.get_by_role("button", name="Create project")
            assert create.is_enabled()
            names.fill("circle\nsquare")
            names.press("Control+Enter")
            page.get_by_text("head has 3 outputs but 2 class names were given").wait_for(timeout=LONG)
            _settle(page)
            assert create.is_disabled()
            names.fill("\n".join(CLASSES))
            names.press("Control+Enter")
            page.get_by_text("head has 3 outputs").wait_for(state="detached", timeout=LONG)
            _settle(page)
            assert create.is_enabled()
            assert page.locator("[data-testid='stAlertContentError']").count() == 0

            project_name = _widget(page, "stTextInput", "Project name").locator("input")
            assert project_name.input_value() == "shapes"  # named after the uploaded file
            screenshot(page, "upload-preview")

            # 4. Create the project; the extraction runs as a background job.
            _step("class names checked")
            create.click()
            page.get_by_text("feature extraction is running in the background").wait_for(timeout=LONG)
            _no_exception(page)
            assert (home / "projects" / "shapes" / "project.json").is_file()

            # 5. Home follows the job; once it is done, go on to the Features page.
            _step("project created")
            page.get_by_text("Go to Home to follow the extraction").click()
            page.get_by_text("Project: shapes").wait_for(timeout=LONG)
            page.get_by_text("Accuracy on the test split").wait_for(timeout=LONG)
            _step("extraction done")
            _no_exception(page)
            page.get_by_text("Next: the features each class relies on").click()
            page.get_by_role("heading", name="Features the model relies on").wait_for(timeout=LONG)
            images = page.locator("[data-testid='stImage'] img")
            images.first.wait_for(timeout=LONG)
            _settle(page, 1500)
            _step("features page shown")
            _no_exception(page)
            assert "project=shapes" in page.url
            assert page.locator("[data-testid='stMarkdownContainer']").filter(has_text="Class circle:").count() == 1
            # The first feature's bordered block: the innermost block holding "#1" and not "#2".
            first = (page.locator("[data-testid='stVerticalBlock']").filter(has_text="#1 · feature")
                     .filter(has_not_text="#2 · feature").first)
            assert "importance" in first.inner_text()
            shown = first.locator("[data-testid='stImage'] img:visible")  # the open tab: "Top images"
            assert 4 <= shown.count() <= 8  # the class's top test images for its most important feature
            assert all(shown.nth(i).evaluate("img => img.complete && img.naturalWidth > 0")
                       for i in range(shown.count()))
            assert page.locator("[data-testid='stImage'] img:visible").count() >= 4 * 5  # five features' rows
            shot = screenshot(page, "upload-features")
            assert shot.stat().st_size > 20_000
        from spuraudit.jobs import JobQueue

        jobs = JobQueue(home / "jobs.db").list()
        assert [(j.status, j.title) for j in jobs] == [("done", "Extract features: shapes")]
    finally:
        # The app's worker is detached (its own session) and waits minutes for more work: stop it.
        stop_processes(processes_naming(str(home)))
    assert processes_naming(str(home)) == [], "processes started by the app outlived the test"
