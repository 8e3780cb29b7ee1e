"""Showing a pair's evidence without making the page wait: heatmaps the viewer can see through, and feature
attacks / class activation maps computed in the background (`spuraudit.explain.background`)."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import streamlit as st

from ..explain import background

POLL_SECONDS = 1.5


# ---- heatmaps ----------------------------------------------------------------------------------------
def heatmap_controls(key: str = "heat") -> tuple[float, bool]:
    """Sidebar: the heatmaps' opacity and whether to show each image beside its heatmap."""
    alpha = st.sidebar.slider("Heatmap opacity", 0.0, 1.0, 0.45, 0.05, key=f"{key}_alpha",
                              help="0 shows the image alone, 1 the heatmap alone.")
    side = st.sidebar.toggle("Image beside its heatmap", key=f"{key}_side",
                             help="Each top image next to its heatmap rather than under it.")
    return float(alpha), bool(side)


def heatmap_overlays(images: list[np.ndarray], maps: np.ndarray, alpha: float, side_by_side: bool) -> list[np.ndarray]:
    """Display tiles of heatmaps over (or beside) their images, at the images' display size."""
    from ..explain import overlay_heatmap

    tiles = []
    for image, heat in zip(images, np.asarray(maps)):
        over = overlay_heatmap(image, heat, alpha=alpha)
        if side_by_side:
            gap = np.full((image.shape[0], 4, 3), 255, dtype=np.uint8)
            over = np.concatenate([np.asarray(image, dtype=np.uint8), gap, over], axis=1)
        tiles.append(over)
    return tiles


# ---- slow explanations in the background --------------------------------------------------------------
@functools.lru_cache(maxsize=1)
def _background_model(folder: str, stamp: float):
    """The background thread's own copy of the model: explanation code adds hooks and flips gradient
    flags, which must not race with the page's copy."""
    from ..modelio import load_model

    return load_model(folder)


def _model_for_background(folder: Path):
    try:
        stamp = (folder / "model.yaml").stat().st_mtime
    except OSError:
        stamp = 0.0
    return _background_model(str(folder), stamp)


def attack_key(store_key: str, class_index: int, feature: int, k: int, split: str | None, mode: str) -> str:
    return f"attack|{store_key}|{class_index}|{feature}|{k}|{split}|{mode}"


def _attack_job(audit, class_index: int, feature: int, k: int, split: str | None, mode: str):
    """The work for one pair's attacks; finds the pair's top images itself, so a prefetch needs only the pair."""
    def compute():
        from ..evidence import attack_images

        model, card = _model_for_background(Path(audit.project.model_folder))
        top = audit.feature_images(class_index, feature, k, split, mode, largest=True)
        return attack_images(audit, model, card.input_size, np.asarray(top), feature,
                             cache_dir=audit.project.cache_dir)
    return compute


def request_attacks(audit, store_key: str, pairs, k: int, split: str | None, mode: str) -> None:
    """Queue the attacks of pairs the viewer is likely to open next (after anything shown now)."""
    for c, d in pairs:
        background.request(attack_key(store_key, c, d, k, split, mode), _attack_job(audit, c, d, k, split, mode),
                           urgent=False)


def attack_row(audit, store_key: str, class_index: int, feature: int, k: int, split: str | None, mode: str,
               width: int = 112) -> None:
    """The pair's feature attacks when ready; otherwise a note, and the row fills in by itself."""
    key = attack_key(store_key, class_index, feature, k, split, mode)
    background.request(key, _attack_job(audit, class_index, feature, k, split, mode))
    _deferred_row(key, width, "Computing the feature attacks in the background (100 gradient steps per image); "
                              "they appear here when ready and are kept on disk.")


def cam_key(store_key: str, indices: tuple[int, ...], class_index: int, method: str) -> str:
    return f"cam|{store_key}|{class_index}|{method}|{','.join(map(str, indices))}"


def cam_row(audit, store_key: str, indices: tuple[int, ...], class_index: int, method: str,
            width: int = 112) -> None:
    """The class activation maps of the given images, computed in the background."""
    def compute():
        from ..evidence import cam_overlays

        model, card = _model_for_background(Path(audit.project.model_folder))
        return cam_overlays(audit, model, card.input_size, np.asarray(indices), class_index, method)

    key = cam_key(store_key, indices, class_index, method)
    background.request(key, compute)
    _deferred_row(key, width, "Computing the class activation maps in the background; they appear here when ready.")


def _deferred_row(key: str, width: int, waiting_text: str) -> None:
    images = background.result(key)
    if images is not None:
        _row(images, width)
        return

    @st.fragment(run_every=POLL_SECONDS)
    def _poll() -> None:  # reruns only this box until the result is there
        if background.result(key) is not None:
            st.rerun()  # the whole page once: it shows the row without this polling box
        elif background.state(key) == "failed":
            st.error("Could not compute these: " + (background.error(key) or "").strip().splitlines()[-1])
        else:
            st.caption(f":material/hourglass_top: {waiting_text}")

    _poll()


def _row(images, width: int) -> None:
    if images:
        st.image(images, width=width)
    else:
        st.caption("no images")
