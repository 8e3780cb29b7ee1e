"""Creating projects from a user's files: preview, class checks, zips, linear probe, and the upload page."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image
from streamlit.testing.v1 import AppTest

from spuraudit.data.table import DatasetError
from spuraudit.modelio import CheckpointError, ModelCard, UntrustedPickleError, load_model
from spuraudit.modelio.digitnet import DigitNet
from spuraudit.modelio.linear_probe import fit_linear_head, split_for_probe
from spuraudit.probe import fit_linear_probe
from spuraudit.project import Project
from spuraudit.create import (
    ClassMismatchError,
    architecture_choices,
    architecture_defaults,
    candidate_group_columns,
    create_project,
    preview_dataset,
    relabel,
    resolve_class_names,
    save_upload,
)

ROOT = Path(__file__).resolve().parents[1]
COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40)}


def _image(path: Path, colour, seed: int, size: int = 28) -> None:
    rng = np.random.default_rng(seed)
    noise = rng.integers(-25, 25, (size, size, 3))
    pixels = np.clip(np.array(colour)[None, None, :] + noise, 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


@pytest.fixture
def colour_folder(tmp_path) -> Path:
    """train/ and test/ ImageFolder of red and green noisy squares, plus one corrupt file."""
    root = tmp_path / "colours"
    for s, n in (("train", 12), ("test", 6)):
        for name, colour in COLOURS.items():
            for i in range(n):
                _image(root / s / name / f"{i}.png", colour, seed=hash((s, name, i)) % 2**32)
    (root / "train" / "red" / "broken.png").write_bytes(b"not a png")
    return root


@pytest.fixture
def colour_csv(tmp_path) -> Path:
    root = tmp_path / "csvset"
    lines = ["file,label,split,background"]
    for i in range(8):
        name = "red" if i % 2 else "green"
        _image(root / "img" / f"{i}.png", COLOURS[name], seed=i)
        lines.append(f"img/{i}.png,{name},{'train' if i < 6 else 'test'},{'sky' if i % 3 else 'sea'}")
    (root / "labels.csv").write_text("\n".join(lines) + "\n")
    return root / "labels.csv"


def _resnet_file(tmp_path: Path, classes: int, name: str = "resnet18.pt") -> Path:
    torch.manual_seed(0)
    path = tmp_path / name
    torch.save(torchvision.models.resnet18(num_classes=classes).state_dict(), path)
    return path


# ---- preview ------------------------------------------------------------------------------------------
def test_preview_shows_counts_samples_and_skipped_files(colour_folder):
    preview = preview_dataset(colour_folder)
    assert preview.layout.kind == "imagefolder"
    counts = preview.counts
    assert list(counts.columns) == ["train", "test", "total"]
    assert counts.loc["red", "train"] == 12 and counts.loc["green", "test"] == 6 and counts["total"].sum() == 36
    assert set(preview.counts_long.columns) == {"class", "split", "images"}
    samples = preview.samples(3)
    assert set(samples) == {"red", "green"} and all(len(v) == 3 for v in samples.values())
    skipped = preview.skipped_frame
    assert len(skipped) == 1 and skipped.loc[0, "file"].endswith("broken.png")
    assert "cannot decode" in skipped.loc[0, "reason"]


def test_csv_preview_offers_group_columns(colour_csv):
    assert candidate_group_columns(colour_csv) == ["background"]
    preview = preview_dataset(colour_csv.parent, ["background"])  # a folder holding the CSV
    assert preview.layout.kind == "manifest" and preview.csv_columns == ["background"]
    assert preview.table.group_columns == ["background"]
    _, names = preview.table.group_ids()
    assert "red | background=sky" in names


def test_preview_of_nothing_says_what_was_expected(tmp_path):
    with pytest.raises(DatasetError, match="found no dataset here"):
        preview_dataset(tmp_path)
    with pytest.raises(DatasetError, match="no such file"):
        preview_dataset(tmp_path / "missing")


# ---- classes --------------------------------------------------------------------------------------------
def test_head_size_mismatch_shows_both_lists_side_by_side():
    with pytest.raises(ClassMismatchError) as err:
        resolve_class_names(3, None, ["green", "red"])
    text = str(err.value)
    assert "head has 3 outputs" in text and "dataset has 2 classes" in text
    assert "output 2" in text and "green" in text and "red" in text
    frame = err.value.side_by_side()
    assert list(frame.columns) == ["model (head order)", "dataset"] and len(frame) == 3
    assert frame.iloc[2].tolist() == ["output 2", ""]


def test_dataset_classes_must_be_among_the_model_names():
    assert resolve_class_names(3, ["blue", "green", "red"], ["green", "red"]) == ["blue", "green", "red"]
    with pytest.raises(ClassMismatchError) as err:
        resolve_class_names(2, ["cat", "dog"], ["green", "red"])
    assert "['green', 'red'] are not among" in str(err.value)
    assert err.value.side_by_side().iloc[0].tolist() == ["cat", "green"]


def test_relabel_into_the_model_order(colour_folder):
    table = preview_dataset(colour_folder).table  # classes sorted: green, red
    moved = relabel(table, ["red", "blue", "green"])
    assert moved.class_names == ["red", "blue", "green"]
    red = np.array(["/red/" in p for p in moved.paths])
    assert (moved.labels[red] == 0).all() and (moved.labels[~red] == 2).all()


# ---- create_project -------------------------------------------------------------------------------------
def test_create_project_checks_and_stores_everything(colour_folder, tmp_path):
    ckpt = _resnet_file(tmp_path, 2)
    project = create_project("colours", str(colour_folder), "", "torchvision:resnet18", str(ckpt), 32,
                             base=tmp_path / "home")
    assert project.table.num_classes == 2 and len(project.table) == 36
    model, card = load_model(project.model_folder)
    assert card.input_size == [32, 32] and card.class_names == ["green", "red"]
    # Replacing a project of the same name never overwrites the first one's model.
    with pytest.raises(ValueError, match="already exists"):
        create_project("colours", str(colour_folder), "", "torchvision:resnet18", str(ckpt), 32, base=tmp_path / "home")
    again = create_project("colours", str(colour_folder), "", "torchvision:resnet18", str(ckpt), 32,
                           base=tmp_path / "home", replace=True)
    assert again.model_folder != project.model_folder and project.model_folder.is_dir()


def test_create_project_refuses_mismatch_wrong_architecture_and_untrusted_pickle(colour_folder, tmp_path):
    home = tmp_path / "home"
    with pytest.raises(ClassMismatchError, match="head has 5 outputs"):
        create_project("p", str(colour_folder), "", "torchvision:resnet18", str(_resnet_file(tmp_path, 5)), 32, base=home)
    with pytest.raises(CheckpointError, match="does not fit"):
        create_project("p", str(colour_folder), "", "torchvision:resnet34", str(_resnet_file(tmp_path, 2)), 32, base=home)
    pickled = tmp_path / "pickled.pt"
    torch.save({"model": torchvision.models.resnet18(num_classes=2)}, pickled)  # a whole pickled model
    with pytest.raises(UntrustedPickleError, match="trust"):
        create_project("p", str(colour_folder), "", "torchvision:resnet18", str(pickled), 32, base=home)
    assert not (home / "projects").exists()
    project = create_project("p", str(colour_folder), "", "torchvision:resnet18", str(pickled), 32, trust_pickle=True, base=home)
    assert project.table.num_classes == 2


def test_create_project_from_an_uploaded_zip(colour_folder, tmp_path):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for f in colour_folder.rglob("*.png"):
            zf.write(f, "wrapped/" + str(f.relative_to(colour_folder)))
    saved = save_upload("colours.zip", buf.getvalue(), base=tmp_path / "home")
    assert saved.parent == tmp_path / "home" / "uploads"
    project = create_project("zipped", str(saved), "", "torchvision:resnet18", str(_resnet_file(tmp_path, 2)), 32,
                             base=tmp_path / "home")
    assert set(project.table.splits) == {"train", "test"}
    assert all("/uploads/" in p for p in project.table.paths)


def test_architecture_choices_and_defaults():
    names = architecture_choices()
    assert names[0].startswith(("robustness:", "spuraudit:", "torchscript"))
    for expected in ("spuraudit:cifar_resnet56", "torchscript", "torchvision:vit_b_16", "torchvision:alexnet"):
        assert expected in names
    cifar = architecture_defaults("spuraudit:cifar_resnet20")
    assert cifar["input_size"] == 32 and cifar["mean"] == pytest.approx([0.485, 0.456, 0.406])
    assert architecture_defaults("torchvision:inception_v3")["input_size"] == 299
    assert architecture_defaults("torchvision:googlenet")["mean"] == [0.5, 0.5, 0.5]


# ---- linear probe ---------------------------------------------------------------------------------------
def test_fit_linear_head_separable_and_balanced():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(0, 1, (90, 5)) + 3, rng.normal(0, 1, (10, 5)) - 3]).astype(np.float32) * 50 + 7
    y = np.array([0] * 90 + [1] * 10)
    for balanced in (False, True):
        w, b = fit_linear_head(x, y, 2, class_balanced=balanced)
        assert ((x @ w.T + b).argmax(1) == y).mean() == 1.0


def _backbone_file(tmp_path: Path) -> Path:
    """A DigitNet trunk without its head: a 'backbone-only' checkpoint."""
    torch.manual_seed(0)
    state = {k: v for k, v in DigitNet(7, width=8).state_dict().items() if not k.startswith("fc.")}
    path = tmp_path / "backbone.pt"
    torch.save(state, path)
    return path


def test_linear_probe_reaches_high_train_accuracy_and_is_an_ordinary_model(colour_folder, tmp_path, monkeypatch):
    import spuraudit.modelio.registry as registry

    # The demo CNN at width 8 keeps this fast; registered under a test-only name for this test only.
    monkeypatch.setitem(registry._REGISTRY, "test:digitnet8", registry.Architecture(
        name="test:digitnet8", build=lambda n: DigitNet(n, width=8),
        split=lambda net: registry.Split(trunk=net.features, head=net.fc), default_input_size=(28, 28)))
    table = preview_dataset(colour_folder).table
    card = ModelCard(name="backbone", architecture="test:digitnet8", class_names=["x"], input_size=[28, 28])
    messages = []
    folder = fit_linear_probe(table, card, _backbone_file(tmp_path), tmp_path / "models" / "probe",
                              progress=lambda f, m: messages.append((f, m)), num_workers=0)
    model, probe_card = load_model(folder)
    assert probe_card.source == "linear probe" and probe_card.class_names == ["green", "red"]
    assert probe_card.metrics["probe_train_accuracy"] >= 95 and probe_card.metrics["probe_train_images"] == 24
    assert messages[-1][0] == 1.0
    project = Project.create("probe", table, folder, base=tmp_path / "home")
    store = project.extract(num_workers=0)
    assert (np.asarray(store.preds)[table.split_mask("test")] == table.labels[table.split_mask("test")]).mean() >= 0.9
    features = np.asarray(store.features)
    # The store keeps features in float16 (relative error 2^-11), so the head reproduces the logits to within
    # that rounding times the weights' size, and the predictions exactly.
    recomputed = features.astype(np.float32) @ store.head_weight.T + store.head_bias
    assert np.allclose(recomputed, np.asarray(store.logits), atol=0.1)
    assert (recomputed.argmax(1) == np.asarray(store.preds)).all()


def test_linear_probe_needs_a_training_split(tmp_path):
    root = tmp_path / "flat"
    for name, colour in COLOURS.items():
        for i in range(4):
            _image(root / name / f"{i}.png", colour, seed=i)
    table = preview_dataset(root).table
    card = ModelCard(name="b", architecture="spuraudit:digitnet", class_names=["x"], input_size=[28, 28])
    with pytest.raises(DatasetError, match="has none"):
        fit_linear_probe(table, card, tmp_path / "unused.pt", tmp_path / "out")
    split = split_for_probe(table, 0.5)
    assert set(split.splits) == {"train", "test"}
    assert (split.frame.groupby(["label", "split"]).size() == 2).all()


# ---- the page -------------------------------------------------------------------------------------------
def _frame_with(at: AppTest, column: str):
    frames = [d.value for d in at.dataframe if column in d.value.columns]
    assert frames, f"no table with a '{column}' column"
    return frames[0]


def _page(home: Path, monkeypatch) -> AppTest:
    monkeypatch.setenv("SPURAUDIT_HOME", str(home))
    # Through the app, as a user reaches it (the sidebar navigation needs the multipage app around it).
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    at.run()
    at.switch_page("pages/data.py")
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_page_previews_a_server_path_dataset_and_checks_the_model(colour_folder, tmp_path, monkeypatch):
    at = _page(tmp_path / "home", monkeypatch)
    assert at.title[0].value == "Add data & model"
    at.text_input(key="data_path").set_value(str(colour_folder)).run()
    assert not at.exception, [e.value for e in at.exception]
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Images"] == "36" and metrics["Classes"] == "2" and metrics["Skipped files"] == "1"
    counts = _frame_with(at, "total")
    assert counts.loc["red", "train"] == 12
    assert len(at.get("image")) >= 2 and len(at.get("plotly_chart")) == 1  # thumbnails per class, bar chart

    # A checkpoint whose head has 5 classes: refused, with both class lists side by side.
    at.selectbox(key="architecture").set_value("torchvision:resnet18").run()
    at.text_input(key="checkpoint_path").set_value(str(_resnet_file(tmp_path, 5, "five.pt"))).run()
    assert any("head has 5 outputs" in e.value for e in at.error)
    side = _frame_with(at, "model (head order)")
    assert side["dataset"].tolist()[:2] == ["green", "red"]
    assert at.button(key="create").disabled

    # The right checkpoint at 32 px: create the project.
    at.text_input(key="checkpoint_path").set_value(str(_resnet_file(tmp_path, 2, "two.pt"))).run()
    at.number_input(key="size-torchvision:resnet18").set_value(32).run()
    assert not at.error, [e.value for e in at.error]
    at.text_input(key="project_name").set_value("from-page").run()
    at.button(key="create").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    project = Project.open(tmp_path / "home" / "projects" / "from-page")
    assert len(project.table) == 36 and load_model(project.model_folder)[1].input_size == [32, 32]


def test_page_shows_why_a_pickle_is_refused(colour_folder, tmp_path, monkeypatch):
    at = _page(tmp_path / "home", monkeypatch)
    at.text_input(key="data_path").set_value(str(colour_folder)).run()
    pickled = tmp_path / "pickled.pt"
    torch.save({"model": torchvision.models.resnet18(num_classes=2)}, pickled)
    at.selectbox(key="architecture").set_value("torchvision:resnet18").run()
    at.text_input(key="checkpoint_path").set_value(str(pickled)).run()
    assert any(e.value.startswith("Refused:") and "trust" in e.value for e in at.error)
    at.checkbox(key="trust").check().run()
    assert not at.error, [e.value for e in at.error]
    assert any("2 classes in the head" in s.value for s in at.success)


def test_input_size_and_normalisation_default_to_the_architecture(colour_folder, tmp_path):
    from spuraudit.modelio.cifar_resnet import CifarResNet

    path = tmp_path / "cifar2.th"
    torch.save({"best_prec1": 0.0, "state_dict": {f"module.{k}": v for k, v in CifarResNet(20, 2).state_dict().items()}},
               path)
    project = create_project("defaults", str(colour_folder), "", "spuraudit:cifar_resnet20", str(path),
                             model_name="my-cifar", base=tmp_path / "home")
    _, card = load_model(project.model_folder)
    assert project.model_folder.name == "my-cifar"
    assert card.input_size == [32, 32] and card.std == pytest.approx([0.229, 0.224, 0.225])


def test_linear_probe_project_as_a_background_job(colour_folder, tmp_path, monkeypatch):
    """The page queues linear probes as a job; run the same job function here in-process."""
    import spuraudit.modelio.registry as registry
    from spuraudit.jobs import LocalContext
    from spuraudit.create import create_project_job

    monkeypatch.setitem(registry._REGISTRY, "test:digitnet8", registry.Architecture(
        name="test:digitnet8", build=lambda n: DigitNet(n, width=8),
        split=lambda net: registry.Split(trunk=net.features, head=net.fc), default_input_size=(28, 28)))
    ctx = LocalContext(tmp_path / "job")
    result = create_project_job(ctx, name="probed", data=str(colour_folder), arch="test:digitnet8",
                                checkpoint=str(_backbone_file(tmp_path)), size=28, linear_probe=True,
                                class_balanced=True, base=str(tmp_path / "home"))
    project = Project.open(result["project"])
    _, card = load_model(project.model_folder)
    assert card.source == "linear probe" and card.options["class_balanced"] is True
    assert project.feature_store() is not None  # the job also extracted the features
    fractions = [f for f, _ in ctx.reports if f is not None]
    assert all(b >= a - 1e-9 for a, b in zip(fractions, fractions[1:])) and fractions[-1] == 1.0
