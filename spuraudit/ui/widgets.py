"""Shared page controls: the split / image-set pickers, the cached evidence, and user text made safe to show."""

from __future__ import annotations

import re

import streamlit as st

from ..audit import IMAGE_SET_HELP, Audit
from ..project import Project
from .state import load_model


# Marks that make Markdown (or Streamlit's extensions: `:red[...]`, `$math$`, emoji shortcodes) format, link
# or embed anywhere in a line; a backslash before each makes it show as itself. Hyphens and dots are left
# alone (class names like "digit 5-9"), except where a line starts as a list or a heading.
_MARKDOWN_MARKS = re.compile(r"([\\`*_{}\[\]()<>!|~:$&#])")
_LINE_START = re.compile(r"^(\d+)([.)])|^([-+=])")


def plain(text) -> str:
    """User text (a project, class or annotator name) for Markdown, captions and titles: shown exactly as
    typed, never as formatting, a link or an image the browser would fetch (`![](http://...)`)."""
    escaped = _MARKDOWN_MARKS.sub(r"\\\1", " ".join(str(text).split()))
    return _LINE_START.sub(lambda m: f"{m.group(1)}\\{m.group(2)}" if m.group(1) else f"\\{m.group(3)}", escaped)


def split_picker(audit: Audit, key: str = "split") -> str | None:
    splits = audit.table.splits
    default = audit.default_split()
    options = splits + (["all"] if len(splits) > 1 else [])
    choice = st.sidebar.selectbox("Split", options, index=options.index(default), key=key,
                                  help="Which images the analysis runs on. Spuriosity mean/std are fitted on "
                                       "train when it exists.")
    return None if choice == "all" else choice


def class_picker(audit: Audit, key: str = "class", classes: list[int] | None = None) -> int:
    classes = list(range(len(audit.class_names))) if classes is None else classes
    return st.sidebar.selectbox("Class", classes, format_func=lambda c: f"{c}: {audit.class_names[c]}", key=key)


def image_set_picker(project: Project, key: str = "image_set") -> str:
    modes = list(IMAGE_SET_HELP)
    current = project.settings.get("image_set", "correct")
    mode = st.sidebar.radio("Images averaged over (S_c)", modes, index=modes.index(current), key=key,
                            format_func=lambda m: m.capitalize(),
                            help="\n".join(f"- **{m}**: {h}" for m, h in IMAGE_SET_HELP.items()))
    if mode != current:
        project.update_settings(image_set=mode)
    return mode


@st.cache_data(show_spinner="Rendering top images and heatmaps…", max_entries=64)
def cached_pair_evidence(_audit: Audit, store_key: str, class_index: int, feature: int, k: int,
                         split: str | None, mode: str):
    from ..evidence import pair_evidence

    model, card = load_model(_audit.project.model_folder)
    return pair_evidence(_audit, model, card.input_size, class_index, feature, k, split, mode)


@st.cache_data(show_spinner="Computing class activation maps…", max_entries=64)
def cached_cams(_audit: Audit, store_key: str, indices: tuple[int, ...], class_index: int, method: str):
    import numpy as np

    from ..evidence import cam_overlays

    model, card = load_model(_audit.project.model_folder)
    return cam_overlays(_audit, model, card.input_size, np.array(indices), class_index, method)


@st.cache_data(show_spinner="Running the feature attack (100 gradient steps)…", max_entries=64)
def cached_attack(_audit: Audit, store_key: str, indices: tuple[int, ...], feature: int):
    import numpy as np

    from ..evidence import attack_images

    model, card = load_model(_audit.project.model_folder)
    return attack_images(_audit, model, card.input_size, np.array(indices), feature,
                         cache_dir=_audit.project.cache_dir)


def image_row(images, captions=None, width: int = 112) -> None:
    if images:
        st.image(images, caption=captions, width=width)
    else:
        st.caption("no images")
