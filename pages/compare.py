"""Compare: the audited model and its mitigated versions side by side, on the parent's spuriosity ranking."""

from __future__ import annotations


import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
import streamlit as st

from spuraudit.mitigate import METHODS, list_mitigated_models
from spuraudit.mitigate.compare import COLUMN_HELP
from spuraudit.mitigate.selective import selective_from_stores
from spuraudit.ui import cache
from spuraudit.ui.nav import link, page_setup
from spuraudit.ui.state import require_project

page_setup("Compare models")

project = require_project()
parent_store = cache.require_audit(project).store

st.title("Compare models")
st.caption(
    "Gaps are measured on the ORIGINAL model's spuriosity ranking: its features and the project's spurious "
    "labels fix each class's High and Low images once, and every model is scored on those same images "
    "(a fine-tuned backbone's feature numbers no longer mean what the labels say). Accuracies and gaps in "
    "percentage points."
)

mitigated = list_mitigated_models(project)
if not mitigated:
    st.info("No mitigated model yet. Launch one on the **Mitigate** page.")
    link("pages/mitigate.py", label="Go to Mitigate", icon=":material/build:")
    st.stop()

candidates = {str(project.model_folder): "original (audited) model"}
for folder, card in mitigated:
    label = METHODS[card.method].label if card.method in METHODS else card.method
    candidates[str(folder)] = f"{card.name} · {label}"
ready = {f: n for f, n in candidates.items() if cache.open_audit(project, f) is not None}
missing = [n for f, n in candidates.items() if f not in ready]
if missing:
    st.warning("Features not extracted yet (its job may still be running): " + ", ".join(missing))
chosen = st.multiselect("Models", list(ready), default=list(ready)[:4], format_func=ready.get, key="compare_models")
splits = [s for s in project.table.splits if s != "train"] or project.table.splits
split = st.sidebar.selectbox("Split", splits, index=splits.index("test") if "test" in splits else 0,
                             key="compare_split", help="Report on a split that no method trained or stopped on: test.")
k = st.sidebar.number_input("Images per end (k)", 5, 1000, int(project.settings.get("gap_k", 100)), step=5,
                            key="compare_k", help="High/Low set size per class, clamped to half the class.")
if not chosen:
    st.stop()


report = cache.compare(project, tuple(chosen), split, int(k))
summary = report.summary

st.subheader(f"Metrics on the {split} split")
original_name = report.ranked_by  # the audited model, whose ranking fixes the High and Low sets


def _method_label(method: str) -> str:
    if method in ("parent", "original"):
        return "original (audited)"
    return METHODS[method].label if method in METHODS else method


def _pct(value) -> str:
    return "–" if pd.isna(value) else f"{value:.1f} %"


def _pts(value) -> str:
    return "–" if pd.isna(value) else f"{value:+.1f} pts"


def _delta(row, base, key: str, size: bool = False) -> str | None:
    """The change from the original model ('in size': of the absolute value, for gaps); None for the original."""
    if base is None or row["model"] == base["model"] or pd.isna(row[key]) or pd.isna(base[key]):
        return None
    change = abs(row[key]) - abs(base[key]) if size else row[key] - base[key]
    return f"{change:+.1f} pts" + (" in size" if size else "") + " vs original"


# The headline figures of each model as cards, with the change from the original model: the table below
# holds the rest (and is too wide to read at a glance).
base = summary[summary["model"] == original_name]
base = base.iloc[0] if len(base) else None
per_row = min(4, max(2, len(summary)))
for start in range(0, len(summary), per_row):
    cards = st.columns(per_row)
    for col, (_, row) in zip(cards, summary.iloc[start:start + per_row].iterrows()):
        with col.container(border=True):
            st.markdown(f"**{row['model']}**")
            st.caption(_method_label(row["method"]))
            st.metric("Accuracy (plain average)", _pct(row["avg_accuracy_plain"]),
                      delta=_delta(row, base, "avg_accuracy_plain"), help=COLUMN_HELP["avg_accuracy_plain"])
            if not pd.isna(row["worst_group_accuracy"]):
                st.metric("Worst-group accuracy", _pct(row["worst_group_accuracy"]),
                          delta=_delta(row, base, "worst_group_accuracy"),
                          help=f"{COLUMN_HELP['worst_group_accuracy']}; here: {row['worst_group']}")
            if row.get("verdict") == "worst group did not improve":
                st.warning(f"Did not help the worst group: {_pct(row['worst_group_accuracy'])} "
                           f"({row['worst_group']}), {row['worst_group_change']:+.1f} pts vs original.",
                           icon=":material/warning:")
            if not pd.isna(row.get("cue_coverage", float("nan"))):
                st.metric("Cue masked (MaskTune)", _pct(row["cue_coverage"]), help=COLUMN_HELP["cue_coverage"])
            if not pd.isna(row["pooled_gap"]):
                st.metric("Spurious gap (pooled)", _pts(row["pooled_gap"]),
                          delta=_delta(row, base, "pooled_gap", size=True), delta_color="inverse",
                          help=COLUMN_HELP["pooled_gap"] + f"; 95 % bootstrap CI [{row['pooled_ci_low']:.1f}, "
                                                           f"{row['pooled_ci_high']:.1f}]")

NAMES = {
    "avg_accuracy_plain": "accuracy, plain average (%)",
    "avg_accuracy_train_weighted": "accuracy, weighted by training groups (%)",
    "worst_group_accuracy": "worst-group accuracy (%)",
    "worst_group": "worst group",
    "pooled_gap": "pooled gap (pts)",
    "pooled_ci_low": "gap CI low",
    "pooled_ci_high": "gap CI high",
    "macro_gap": "macro gap (pts)",
}
NAMES.update({"worst_group_change": "worst group vs original (pts)", "verdict": "verdict",
              "cue_coverage": "cue masked (% images)"})
helps = {NAMES[k]: v for k, v in COLUMN_HELP.items() if k in NAMES}
helps.update({"gap CI low": "95 % bootstrap confidence interval of the pooled gap", "gap CI high":
              "95 % bootstrap confidence interval of the pooled gap", "n": f"images in the {split} split"})


def _table(columns: list[str]) -> None:
    """A table of the summary's `columns` (those present), few enough to fit the page without scrolling."""
    shown = summary[[c for c in columns if c in summary.columns and summary[c].notna().any()]]
    shown = shown.assign(method=shown["method"].map(_method_label)).rename(columns=NAMES)
    st.dataframe(shown, hide_index=True,
                 column_config={c: st.column_config.NumberColumn(format="%.1f", help=helps.get(c))
                                for c in shown.columns if shown[c].dtype.kind == "f"}
                 | {c: st.column_config.Column(help=helps[c]) for c in shown.columns
                    if shown[c].dtype.kind != "f" and c in helps})


# The headline figures in one narrow table; the bookkeeping in a second one, on demand.
_table(["model", "method", "avg_accuracy_plain", "worst_group_accuracy", "worst_group_change", "verdict",
        "pooled_gap"])
with st.expander("More columns: weighted average, worst group's name, gap CI, macro gap, cue coverage, n"):
    _table(["model", "method", "avg_accuracy_train_weighted", "worst_group", "pooled_ci_low", "pooled_ci_high",
            "macro_gap", "cue_coverage", "n", "parent"])
st.caption(
    "Two averages: **plain** is over all the split's images (MaskTune's 'average'); **weighted by training "
    "groups** averages the group accuracies with each group's share of the training split (DFR-style). "
    "Gaps: accuracy on the High set minus the Low set of the original model's ranking; 0 means no reliance "
    "on the labelled features. Hover a column header for its definition."
)

if not report.groups.empty:
    fig = px.bar(report.groups, x="group", y="accuracy", color="model", barmode="group", range_y=[0, 105],
                 hover_data=["n"], labels={"accuracy": "accuracy (%)"}, title="Accuracy per group")
    fig.update_layout(height=340, margin=dict(t=40, b=10))
    st.plotly_chart(fig, width="stretch")

if report.gaps.empty:
    st.info("No feature is labelled spurious, so there are no gaps to compare. Label features on the "
            "**Features** page.")
else:
    fig = go.Figure()
    for model, rows in report.gaps.groupby("model", sort=False):
        fig.add_bar(name=model, x=rows["class"], y=rows["gap"],
                    error_y=dict(type="data", symmetric=False, array=rows["ci_high"] - rows["gap"],
                                 arrayminus=rows["gap"] - rows["ci_low"]))
    fig.update_layout(barmode="group", height=340, margin=dict(t=40, b=10),
                      title=f"Per-class spurious gap with 95 % bootstrap CI (ranking of {report.ranked_by}, k={k})",
                      yaxis_title="accuracy High − Low (points)")
    st.plotly_chart(fig, width="stretch")
    gap_names = {"k": "images per end (k)", "acc_high": "accuracy on High (%)", "acc_low": "accuracy on Low (%)",
                 "gap": "gap (pts)", "ci_low": "CI low", "ci_high": "CI high"}
    st.dataframe(report.gaps.drop(columns=["class_index"]).rename(columns=gap_names), hide_index=True,
                 column_config={gap_names[c]: st.column_config.NumberColumn(format="%.1f")
                                for c in ("acc_high", "acc_low", "gap", "ci_low", "ci_high")})

with st.expander("Per-class accuracy"):
    st.dataframe(report.per_class_accuracy.pivot(index="class", columns="model", values="accuracy"))

# ---- MaskTune: selective classification with the original model --------------------------------
masktune = [(f, c) for f, c in mitigated if c.method == "masktune" and str(f) in chosen]
if masktune and {"val", "test"} <= set(project.table.splits):
    st.subheader("Selective classification (original × MaskTune)")
    st.caption(
        "Confidence = the largest entry of the two models' class probabilities multiplied and renormalised. "
        "For each target coverage the threshold is chosen on validation and applied to test; the curve shows "
        "accuracy on the accepted test images."
    )
    curves = []
    for folder, card in masktune:
        table = selective_from_stores(project, parent_store, cache.open_audit(project, folder).store)
        curves.append(table.assign(model=card.name))
    curves = pd.concat(curves)
    fig = px.line(curves, x="test_coverage", y="test_accuracy", color="model", markers=True,
                  labels={"test_coverage": "test images accepted (%)", "test_accuracy": "accuracy on accepted (%)"},
                  title="Accuracy-coverage curve")
    fig.update_layout(height=320, margin=dict(t=40, b=10))
    st.plotly_chart(fig, width="stretch")
    st.dataframe(curves[["model", "coverage_target", "val_coverage", "test_coverage", "accepted", "test_accuracy",
                         "test_error"]], hide_index=True,
                 column_config={c: st.column_config.NumberColumn(format="%.1f")
                                for c in ("coverage_target", "val_coverage", "test_coverage", "test_accuracy",
                                          "test_error")})
