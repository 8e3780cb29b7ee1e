"""Add data & model: bring a dataset and a checkpoint, check both, create a project, start the extraction."""

from __future__ import annotations

from pathlib import Path

import plotly.express as px
import streamlit as st

from spuraudit.data.table import DatasetError
from spuraudit.modelio import CheckpointError
from spuraudit.create import (
    PROBE_JOB_KIND,
    ClassMismatchError,
    architecture_choices,
    architecture_defaults,
    create_project,
    discard_upload,
    project_folder_for,
    inspect_model,
    parse_class_names,
    preview_dataset,
    resolve_class_names,
    save_upload,
    unpack_dataset_zip,
)
from spuraudit.ui.auth import pickle_trust_offered, require_role, server_path
from spuraudit.ui.nav import link, page_setup
from spuraudit.ui.widgets import plain

CHECKPOINT_TYPES = ["pt", "pth", "th", "bin", "ckpt", "safetensors", "tar"]
# The job function by its import path (a kind with ':' needs no registration in spuraudit.jobs.kinds).
EXTRACT_JOB_KIND = "spuraudit.tasks:extract_features_job"
THUMBNAILS_PER_CLASS = 6
MAX_CLASSES_WITH_THUMBNAILS = 20

page_setup("Add data & model")
st.title("Add data & model")
require_role("admin", "Adding data and models")
st.caption(
    "Bring an image dataset and a trained classifier. Nothing is written until you press **Create project**; "
    "paths are on the machine that runs spuraudit, uploads are kept under its `uploads/` folder."
)


def _stamp(path: str) -> float:
    try:
        return Path(path).stat().st_mtime
    except OSError:
        return 0.0


@st.cache_data(show_spinner="Reading the dataset and checking every image…", max_entries=4)
def _preview(path: str, groups: tuple[str, ...], image_root: str, stamp: float):
    return preview_dataset(path, groups, image_root=image_root or None)


@st.cache_data(show_spinner="Looking for the architecture whose tensors match the file's…", max_entries=8)
def _suggest(path: str, trust: bool, stamp: float):
    from spuraudit.modelio.inspection import suggest_for_file

    return suggest_for_file(path, trust_pickle=trust)


def _pick_architecture(name: str) -> None:
    st.session_state["architecture"] = name


def _suggestions(path: str, trust: bool, chosen: str) -> None:
    """Ranked architectures that fit the file, each with its head verdict and a button to pick it."""
    matches = _suggest(path, trust, _stamp(path))
    if not matches:
        st.info("No known architecture has this file's tensor names and shapes. If it is a TorchScript file, "
                "pick `torchscript`; otherwise check which network the file was saved from.")
        return
    st.markdown("**Architectures that match this file** (tensor names and shapes), best first:")
    for i, m in enumerate(matches):
        head = f"head found ({m.num_classes} classes)" if m.head_found else "no head"
        fit = "exact fit" if m.exact else f"{m.score:.0%} of tensors match"
        row = st.columns([3, 2, 1], vertical_alignment="center")
        row[0].markdown(f"`{m.architecture}`")
        row[1].caption(f"{fit} · {head}")
        row[2].button("Use this" if m.architecture != chosen else "chosen", key=f"use-arch-{i}",
                      type="primary" if i == 0 else "secondary", disabled=m.architecture == chosen,
                      on_click=_pick_architecture, args=(m.architecture,), width="stretch")


@st.cache_data(show_spinner="Reading the checkpoint…", max_entries=8)
def _inspect(path: str, arch: str, trust: bool, options: tuple, size: int, stamp: float):
    return inspect_model(path, arch, trust, dict(options), size)


@st.cache_data(show_spinner=False, max_entries=1)
def _architectures() -> list[str]:
    return architecture_choices()


# ---- 1. dataset ----------------------------------------------------------------------------------
st.header("1. Dataset")
data_source = st.radio("Dataset from", ["Path on the server", "Upload a zip"], horizontal=True, key="data_source")
data_path = ""
data_label = ""  # what the dataset is called, for the default project name
if data_source == "Upload a zip":
    upload = st.file_uploader("Dataset as a .zip (ImageFolder, CSV manifest with its images, or Waterbirds)",
                              type=["zip"], key="data_zip")
    if upload is not None:
        unpacked = st.session_state.setdefault("unpacked_zips", {})
        if upload.file_id not in unpacked:
            try:
                with st.spinner("Checking and unpacking the archive…"):
                    unpacked[upload.file_id] = str(unpack_dataset_zip(upload, upload.name).root)
            except DatasetError as exc:
                st.error(str(exc))
        data_path = unpacked.get(upload.file_id, "")
        data_label = Path(upload.name).stem
        if data_path:
            st.caption(f"Unpacked to `{data_path}`")
else:
    data_path = st.text_input("Dataset path: an ImageFolder root, a CSV manifest, Waterbirds' metadata.csv, "
                              "or a folder holding one", key="data_path",
                              placeholder="/data/waterbirds/metadata.csv").strip()
    try:
        data_path = server_path(data_path, "dataset path")
    except ValueError as exc:  # outside the data roots: refused before anything is read
        st.error(str(exc))
        data_path = ""
image_root = ""
if data_path.lower().endswith(".csv"):
    image_root = st.text_input("Folder the CSV's image paths start from (default: the CSV's own folder)",
                               key="image_root").strip()
    try:
        image_root = server_path(image_root, "image folder") if data_source != "Upload a zip" else image_root
    except ValueError as exc:
        st.error(str(exc))
        data_path = image_root = ""

preview = None
if data_path:
    groups = tuple(st.session_state.get("group_columns", []))
    try:
        preview = _preview(data_path, groups, image_root, _stamp(data_path))
    except (DatasetError, OSError) as exc:
        st.error(str(exc))

if preview is not None:
    table = preview.table
    if preview.layout.is_csv:
        default_groups = ["place"] if preview.layout.kind == "waterbirds" else []
        st.multiselect("Group columns (attributes that, with the class, define groups)",
                       preview.csv_columns, default=[g for g in default_groups if g in preview.csv_columns],
                       key="group_columns",
                       help="Group and worst-group accuracy are reported for every (class, attributes) cell.")
    c1, c2, c3, c4 = st.columns(4)
    c1.metric("Images", f"{len(table):,}")
    c2.metric("Classes", table.num_classes)
    c3.metric("Splits", ", ".join(table.splits))
    c4.metric("Skipped files", len(table.skipped))
    st.caption(f"Layout: **{preview.layout.kind}** at `{preview.layout.root}`"
               + (f"; group columns: {', '.join(table.group_columns)}" if table.group_columns else ""))
    left, right = st.columns([2, 3])
    left.dataframe(preview.counts)
    fig = px.bar(preview.counts_long, x="class", y="images", color="split", barmode="group")
    fig.update_layout(height=300, margin=dict(t=10, b=10))
    right.plotly_chart(fig, width="stretch")
    with st.expander("Sample images per class", expanded=table.num_classes <= MAX_CLASSES_WITH_THUMBNAILS):
        samples = preview.samples(THUMBNAILS_PER_CLASS)
        for name, files in list(samples.items())[:MAX_CLASSES_WITH_THUMBNAILS]:
            st.markdown(f"**{plain(name)}**")
            st.image(files, width=72)
        if len(samples) > MAX_CLASSES_WITH_THUMBNAILS:
            st.caption(f"… and {len(samples) - MAX_CLASSES_WITH_THUMBNAILS} more classes")
    if table.skipped:
        with st.expander(f"{len(table.skipped)} skipped files and why"):
            st.dataframe(preview.skipped_frame)

# ---- 2. model --------------------------------------------------------------------------------------
st.header("2. Model")
model_source = st.radio("Checkpoint from", ["Path on the server", "Upload a file"], horizontal=True, key="model_source")
checkpoint = ""
if model_source == "Upload a file":
    upload = st.file_uploader("Checkpoint (state dict, safetensors, or TorchScript)", type=CHECKPOINT_TYPES,
                              key="checkpoint_upload")
    if upload is not None:
        saved = st.session_state.setdefault("saved_uploads", {})
        if upload.file_id not in saved or not Path(saved[upload.file_id]).is_file():
            saved[upload.file_id] = str(save_upload(upload.name, upload))
        checkpoint = saved[upload.file_id]
else:
    checkpoint = st.text_input("Checkpoint path", key="checkpoint_path",
                               placeholder="/models/resnet50_waterbirds.pt").strip()
    try:
        checkpoint = server_path(checkpoint, "checkpoint path")
    except ValueError as exc:
        st.error(str(exc))
        checkpoint = ""

choices = _architectures()
arch = st.selectbox("Architecture (type to search)", choices,
                    index=choices.index("torchvision:resnet50") if "torchvision:resnet50" in choices else 0,
                    key="architecture")
defaults = architecture_defaults(arch)
if defaults["description"]:
    st.caption(defaults["description"] + (" · fixed input size" if defaults["fixed_input_size"] else ""))
c1, c2, c3 = st.columns(3)
# Keys include the architecture, so choosing another one prefills its own defaults.
size = int(c1.number_input("Input size (px, square)", min_value=defaults["min_input_size"], max_value=1024,
                           value=max(defaults["input_size"], defaults["min_input_size"]), key=f"size-{arch}"))
mean = c2.text_input("Normalisation mean", ",".join(f"{v:g}" for v in defaults["mean"]), key=f"mean-{arch}")
std = c3.text_input("Normalisation std", ",".join(f"{v:g}" for v in defaults["std"]), key=f"std-{arch}")
options: dict = {}
if arch == "torchscript":
    st.caption("A TorchScript file holds the whole network. spuraudit looks for a known layout; for other "
               "models name the submodule whose output is the last feature map, and the final linear layer.")
    t1, t2 = st.columns(2)
    feature_layer = t1.text_input("Feature-map submodule (optional)", key="ts_feature_layer", placeholder="layer4")
    head_name = t2.text_input("Head submodule (optional)", key="ts_head", placeholder="fc")
    options = {k: v.strip() for k, v in (("feature_layer", feature_layer), ("head", head_name)) if v.strip()}
if pickle_trust_offered():
    trust = st.checkbox("I trust this file (allow full pickle loading, which can run code hidden in it)", key="trust")
else:  # a shared server never unpickles on a browser's behalf: checkpoints load as tensors only
    trust = False
linear_probe = st.checkbox("The checkpoint is a backbone: fit a new linear head on the training split (linear probe)",
                           key="linear_probe")
class_balanced, probe_fraction = False, None
if linear_probe:
    class_balanced = st.checkbox("Class-balanced probe (weight each class equally)", key="class_balanced")
    if preview is not None and "train" not in preview.table.splits:
        probe_fraction = st.slider("The dataset has no training split: share of each class to train the probe on "
                                   "(the rest becomes the test split)", 0.1, 0.9, 0.5, 0.05, key="probe_fraction")

summary = None
if checkpoint:
    summary = _inspect(checkpoint, arch, trust, tuple(sorted(options.items())), size, _stamp(checkpoint))
    if summary.needs_trust:
        st.error("Refused: " + summary.refusal)
        st.info("Tick **I trust this file** only if you know where it came from; otherwise re-save it as a "
                "plain state dict." if pickle_trust_offered() else
                "This server loads checkpoints as tensors only: re-save it as a plain state dict "
                "(torch.save(model.state_dict(), 'weights.pt')) or as .safetensors.")
    elif summary.refusal:
        st.error(summary.refusal)
        if model_source == "Upload a file":
            discard_upload(checkpoint)  # refused for good: keep no copy of it
    else:
        if summary.layout_mismatch or summary.fit_error:
            st.error(f"This file does not fit **{arch}**: its tensors have other names or shapes.")
            if arch != "torchscript":
                _suggestions(checkpoint, trust, arch)
            with st.expander("What does not fit"):
                st.code(summary.fit_error or "", language="text")
        else:
            head = f"{summary.num_classes} classes in the head" if summary.num_classes else "no classification head"
            st.success(f"Read {summary.num_tensors} tensors: {head}.")
        for note in summary.notes:
            st.caption(f"· {note}")
        if summary.backbone_only and not linear_probe:
            st.warning("This file holds a backbone without a head for your classes: tick the linear-probe option.")

class_text = None
problem = None
if preview is not None and not linear_probe:
    class_text = st.text_area("The model's class names, one per line, in the order of its outputs",
                              "\n".join(preview.table.class_names), key=f"class-names-{data_path}",
                              help="Prefilled with the dataset's classes. The dataset's classes must be among them.")
    if summary is not None and summary.readable:
        try:
            resolve_class_names(summary.num_classes, parse_class_names(class_text), preview.table.class_names)
        except ClassMismatchError as exc:
            problem = str(exc).splitlines()[0]
            st.error(problem)
            st.dataframe(exc.side_by_side())
        except ValueError as exc:
            problem = str(exc)
            st.error(problem)

# ---- 3. create -------------------------------------------------------------------------------------
def _default_name(path: str, label: str) -> str:
    """The upload's file name, else the dataset folder's name (a CSV's folder: 'metadata' says nothing)."""
    if label:
        return label
    if not path:
        return "my-audit"
    p = Path(path)
    return (p.parent.name if p.suffix.lower() == ".csv" else p.name) or "my-audit"


st.header("3. Create the project")
# Choosing another dataset proposes its name again (what the user typed for the previous one goes).
if st.session_state.get("project_name_for") != data_path or "project_name" not in st.session_state:
    st.session_state["project_name_for"] = data_path
    st.session_state["project_name"] = _default_name(data_path, data_label)
name = st.text_input("Project name", key="project_name").strip()
taken = None
try:
    if name:
        project_folder_for(name)  # the same checks as creating: usable, free, not another name's folder
except ValueError as exc:
    st.error(plain(exc))
    taken = name
blocked = preview is None or not checkpoint or summary is None or not summary.readable or problem is not None \
    or (summary.fit_error is not None and not linear_probe) or not name or taken is not None


create_params = dict(
    name=name, data=data_path, groups=list(st.session_state.get("group_columns", [])), arch=arch,
    checkpoint=checkpoint, size=size, mean=mean, std=std, trust_pickle=trust, class_names=class_text,
    linear_probe=linear_probe, class_balanced=class_balanced, probe_train_fraction=probe_fraction,
    model_options=options, image_root=image_root or None,
    source="uploaded" if model_source == "Upload a file" else "path",
)
if linear_probe:
    st.caption("A linear probe runs the backbone over the training split, so the project is created by a "
               "background job (then the features are extracted); follow it on the Jobs page.")
if st.button("Create project", type="primary", disabled=blocked, key="create"):
    from spuraudit.ui import jobs as ui_jobs

    if linear_probe:
        try:
            job_id = ui_jobs.submit(PROBE_JOB_KIND, create_params, f"Linear probe and project: {name}")
        except Exception as exc:  # no job queue: say so rather than run a long job while the page waits
            st.error(f"The background job could not be queued ({exc}); a linear probe runs only as a "
                     "background job. See the Jobs page.")
        else:
            st.success(f"Job #{job_id} queued: it fits the linear probe, creates the project **{plain(name)}** and "
                       "extracts its features.")
            link("pages/jobs.py", "Go to Jobs", ":material/schedule:")
    else:
        bar = st.progress(0.0, text="Creating the project…")
        try:
            project = create_project(**create_params,
                                     progress=lambda f, m: bar.progress(min(max(f, 0.0), 1.0), text=m))
        except (DatasetError, CheckpointError, ClassMismatchError, ValueError, OSError) as exc:
            bar.empty()
            st.error(str(exc))
        else:
            bar.progress(1.0, text="Project written")
            st.session_state["project"] = project.folder.name
            st.query_params["project"] = project.folder.name
            try:
                ui_jobs.submit(EXTRACT_JOB_KIND, {"project": str(project.folder)},
                               f"Extract features: {project.name}")
                st.success(f"Project **{plain(project.name)}** created; feature extraction is running in the background.")
            except Exception as exc:  # the project itself is complete; extraction can be started later
                st.warning(f"Project **{plain(project.name)}** created, but the extraction job could not be queued "
                           f"({exc}). Start it from Home or run `spuraudit extract --project {project.folder.name}`.")
            link("app.py", "Go to Home to follow the extraction", ":material/home:")
