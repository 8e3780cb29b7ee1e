"""The image inspector: one dataset image at full size with everything the audit knows about it."""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from ..audit import Audit
from .widgets import plain

TOP_FEATURES = 5


def image_facts(audit: Audit, index: int, scores: dict[int, float] | None = None) -> dict:
    """Label, prediction, confidence, spuriosity and the features that pushed the prediction most.

    Reads one row of the store: its features [D], its logits [C], and the predicted class's head weights."""
    i = int(index)
    names = audit.class_names
    label = int(audit.labels[i])
    logits = np.asarray(audit.store.logits[i], dtype=np.float64)
    probs = np.exp(logits - logits.max())
    probs /= probs.sum()
    pred = int(np.argmax(logits))
    r = np.asarray(audit.features[i], dtype=np.float64)
    weight = np.asarray(audit.store.head_weight[pred], dtype=np.float64)
    contribution = r * weight  # r_d(x) · W[pred, d]: what each feature adds to the predicted logit
    top = np.argsort(-contribution)[:TOP_FEATURES]
    spurious = {int(d) for d in audit.spurious.get(pred, [])} | {int(d) for d in audit.spurious.get(label, [])}
    score = (scores or {}).get(i)
    if score is None and audit.spurious.get(label):
        rows, values = audit.spuriosity_of_class(label, None)
        at = np.searchsorted(rows, i)
        score = float(values[at]) if at < len(rows) and rows[at] == i else None
    return {
        "index": i, "path": audit.table.path(i), "label": names[label], "prediction": names[pred],
        "confidence": float(probs[pred]), "label_probability": float(probs[label]), "correct": pred == label,
        "spuriosity": score, "split": str(audit.table.frame["split"].iat[i]),
        "groups": {c: audit.table.frame[c].iat[i] for c in audit.table.group_columns},
        "features": pd.DataFrame({
            "feature": top.astype(int), "activation r_d": r[top], "weight W[pred, d]": weight[top],
            "contribution": contribution[top],
            "labelled spurious": [int(d) in spurious for d in top],
        }),
    }


def _feature_nams(audit: Audit, index: int, features: list[int]) -> list[np.ndarray]:
    from ..evidence import load_batch
    from ..explain import nam_for_feature, overlay_heatmap, to_uint8_image, upscale_for_display
    from .state import load_model

    model, card = load_model(audit.project.model_folder)
    x = load_batch([audit.table.path(int(index))], card.input_size)
    base = to_uint8_image(x[0])
    out = []
    for d in features:
        heat = nam_for_feature(model, x, int(d))[0]
        out.append(upscale_for_display(overlay_heatmap(base, heat, alpha=0.45), 112))
    return out


def show_inspector(audit: Audit, index: int, scores: dict[int, float] | None = None, tags=None) -> None:
    """The inspector's content (call inside a dialog or a container)."""
    from ..data.images import load_rgb
    from ..explain import upscale_for_display

    facts = image_facts(audit, index, scores)
    left, right = st.columns([3, 2])
    with left:
        image = np.asarray(load_rgb(facts["path"]))
        st.image(upscale_for_display(image, 320), caption=f"#{facts['index']} at full size "
                 f"({image.shape[1]}×{image.shape[0]} px, small images enlarged without smoothing)")
    with right:
        mark = ":green[correct]" if facts["correct"] else ":red[wrong]"
        st.markdown(f"**Label:** {plain(facts['label'])}  \n"
                    f"**Prediction:** {plain(facts['prediction'])} ({facts['confidence']:.1%}) · {mark}  \n"
                    f"**Spuriosity:** " + ("not ranked (no spurious feature labelled for its class)"
                                           if facts["spuriosity"] is None else f"{facts['spuriosity']:+.2f}") + "  \n"
                    f"**Split:** {plain(facts['split'])}")
        for column, value in facts["groups"].items():
            st.markdown(f"**{plain(column)}:** {plain(value)}")
        st.caption("File")
        st.code(facts["path"], language=None)
        if tags is not None:
            current = tags.get(facts["path"], [])
            st.caption("Tags: " + (", ".join(plain(t) for t in current) if current else "none"))
    st.markdown("**The features that pushed the prediction most** (r_d · W[pred, d]) and where they fire")
    table = facts["features"]
    st.dataframe(table, hide_index=True, column_config={
        c: st.column_config.NumberColumn(format="%.3f") for c in ("activation r_d", "weight W[pred, d]", "contribution")})
    nams = _feature_nams(audit, index, [int(d) for d in table["feature"]])
    st.image(nams, caption=[f"feature {int(d)}" for d in table["feature"]], width=112)


def open_inspector(audit: Audit, index: int, scores: dict[int, float] | None = None, tags=None) -> None:
    """Show the inspector in a dialog over the page."""

    @st.dialog(f"Image #{int(index)}", width="large")
    def _dialog():
        show_inspector(audit, index, scores, tags)

    _dialog()
