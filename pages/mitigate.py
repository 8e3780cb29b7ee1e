"""Mitigate: pick a method, set its options, launch it as a background job, browse MaskTune's masks."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from spuraudit.jobs.kinds import MITIGATE_RUN as JOB_KIND
from spuraudit.mitigate import METHODS, list_mitigated_models, split_metrics
from spuraudit.mitigate.data import spurious_labels
from spuraudit.ui import jobs as ui_jobs
from spuraudit.ui.auth import allowed
from spuraudit.ui.nav import link, page_setup
from spuraudit.ui.options import option_widget
from spuraudit.ui.state import load_model, require_features, require_project

page_setup("Mitigate")

project = require_project()
store = require_features(project)

st.title("Mitigate")
st.caption(
    "Each method writes a NEW model next to the audited one (the original is never changed), with a card "
    "recording its parent, options, seed and accuracy, and extracts its features so it can be audited and "
    "compared like any other model. Methods run in the background; this page can be closed meanwhile."
)

spurious = spurious_labels(project)
table = project.table
names = list(METHODS)
method_name = st.selectbox("Method", names, format_func=lambda n: METHODS[n].label, key="mitigate_method")
method = METHODS[method_name]
st.markdown(method.summary)

# What the chosen method needs, said before the user launches it.
if method_name == "head_tuning" and not spurious:
    st.warning("Head tuning needs features labelled spurious, and none is labelled yet. Label them on the "
               "**Features** page first.")
if method_name == "dfr" and not table.group_columns:
    st.warning("DFR needs group columns (e.g. a background attribute), and this dataset has none.")
if spurious:
    st.caption("Spurious features: " + "; ".join(
        f"{table.class_names[c]}: {', '.join(f'#{d}' for d in ds)}" for c, ds in sorted(spurious.items())))


with st.form(f"options-{method_name}"):
    st.markdown(f"**Options of {method.label}** (defaults shown; hover a field for what it does)")
    values = {}
    for start in range(0, len(method.options), 3):  # row by row, so a checkbox never shifts a column
        row = method.options[start:start + 3]
        for column, option in zip(st.columns(3, vertical_alignment="bottom"), row):
            with column:
                values[option.name] = option_widget(option, key=f"opt-{method_name}-{option.name}")
    launched = st.form_submit_button("Launch", type="primary", icon=":material/rocket_launch:",
                                     disabled=not allowed("admin"))  # launching jobs: admins only

if launched and allowed("admin"):
    try:
        options = method.resolve_options(values)
    except ValueError as exc:
        st.error(str(exc))
    else:
        job_id = ui_jobs.submit(JOB_KIND, {"project": str(project.folder), "method": method_name,
                                           "options": options},
                                f"{method.label}: {project.name}")
        st.session_state.setdefault("mitigate_jobs", []).append(job_id)
        st.rerun()


def _when(timestamp: str | None) -> str:
    """An ISO timestamp as 'YYYY-MM-DD HH:MM:SS UTC' (cards and jobs record UTC)."""
    return "" if not timestamp else timestamp[:19].replace("T", " ") + (" UTC" if "+00:00" in timestamp else "")


def _finished_jobs(ids: list[int]) -> list:
    """This session's mitigation jobs that have ended, newest first (ids no longer in the queue are skipped)."""
    q = ui_jobs.queue()
    out = []
    for job_id in sorted(set(ids), reverse=True):
        try:
            job = q.get(job_id)
        except KeyError:
            continue
        if job.is_finished:
            out.append(job)
    return out


def _show_finished(job) -> None:
    result = job.result if isinstance(job.result, dict) else {}
    if job.status != "done" or "name" not in result:
        ui_jobs.show_job(job)
        return
    figures = [f"{label} {result[key]:.1f} %" for key, label in
               (("test_accuracy", "test accuracy"), ("test_worst_group_accuracy", "test worst group"))
               if isinstance(result.get(key), (int, float))]
    st.success(f"{job.label}: done. New model **{result['name']}**" + (f" ({', '.join(figures)})" if figures else "")
               + ".", icon=":material/check_circle:")


running = ui_jobs.active_jobs(kind=JOB_KIND)
finished = _finished_jobs([i for i in st.session_state.get("mitigate_jobs", []) if i not in {j.id for j in running}])
if running or finished:
    st.subheader("Mitigation jobs")
    if running:
        # The fragment polls the running jobs and reruns the page once they have all ended; ended jobs are
        # shown statically below (watching them would rerun the page again on every poll).
        ui_jobs.watch(sorted(j.id for j in running)[-5:])
    for job in finished[:5]:
        _show_finished(job)
    if finished:
        link("pages/jobs.py", label="All jobs, with logs and cancel", icon=":material/schedule:")

st.header("Mitigated models of this project")
models = list_mitigated_models(project)
if not models:
    st.info("None yet. Launch a method above; its model appears here when the job is done.")
else:
    # The original model first, as the reference: its figures from its stored predictions.
    _, parent_card = load_model(project.model_folder)
    test = split_metrics(table, np.asarray(store.preds), "test") if "test" in table.splits else {}
    rows = [{"model": parent_card.name, "method": "original (audited)", "created": _when(parent_card.created),
             "test accuracy (%)": test.get("accuracy"), "test worst group (%)": test.get("worst_group_accuracy"),
             "seed": None, "options": ""}]
    for folder, card in models:
        m = card.metrics
        rows.append({
            "model": card.name,
            "method": METHODS[card.method].label if card.method in METHODS else card.method,
            "created": _when(card.created),
            "test accuracy (%)": m.get("test_accuracy"),
            "test worst group (%)": m.get("test_worst_group_accuracy"),
            "seed": card.options.get("seed"),
            "options": ", ".join(f"{k}={v}" for k, v in card.options.items() if k != "seed"),
        })
    st.dataframe(pd.DataFrame(rows), hide_index=True,
                 column_config={**{c: st.column_config.NumberColumn(format="%.1f")
                                   for c in ("test accuracy (%)", "test worst group (%)")},
                                "seed": st.column_config.NumberColumn(format="%d")})
    st.caption("The first row is the original model, for reference; every other row is a model made from it.")
    link("pages/compare.py", label="Compare them with the original model", icon=":material/compare:")

if method_name != "masktune":
    st.stop()

# ---- MaskTune: what the masks look like before (or after) a run ----------------------------------
st.header("MaskTune's masks on training images")
st.caption(
    "XGradCAM of the class the model predicts, at its last convolutional stage, in the model's input "
    "coordinates. Pixels above the threshold are masked for the one fine-tuning epoch and filled as 'Fill' "
    "says: with 'others' (the default) by the same pixels of another image (here another of the images "
    "shown), with 'zero' black. Computed here for the images shown only."
)
from spuraudit.mitigate.masking import RULES  # noqa: E402  (imports pytorch-grad-cam: only on this view)
from spuraudit.mitigate.masktune import masked_examples, share_histogram  # noqa: E402

c1, c2, c3, c4 = st.columns(4)
declared = {o.name: o for o in method.options}  # the epoch's own choices and defaults
rule = c1.selectbox("Threshold rule", list(RULES),
                    index=list(RULES).index(values.get("rule", declared["rule"].default)), key="preview_rule")
fraction = c2.number_input("Fraction (top_fraction rule)", 0.01, 0.9,
                           float(values.get("fraction", declared["fraction"].default)), step=0.05,
                           key="preview_fraction")
fill_option = declared["fill"]
fill = c3.selectbox("Fill", list(fill_option.choices),
                    index=list(fill_option.choices).index(values.get("fill", fill_option.default)), key="preview_fill")
train_idx = np.flatnonzero(table.split_mask("train")) if "train" in table.splits else np.arange(len(table))
per_page = 8
pages = max(1, -(-len(train_idx) // per_page))
page = c4.number_input(f"Page (of {pages})", 1, pages, 1, key="preview_page")


@st.cache_data(max_entries=32, show_spinner="Computing XGradCAM masks…")
def _examples(project_folder: str, model_folder: str, indices: tuple[int, ...], rule: str, fraction: float,
              fill: str):
    model, card = load_model(model_folder)
    return masked_examples(project, model, np.array(indices), rule=rule, fraction=fraction, size=card.input_size,
                           fill=fill)


def _display(img):
    from spuraudit.explain import upscale_for_display

    return upscale_for_display(img, 96)


chosen = tuple(int(i) for i in train_idx[(page - 1) * per_page: page * per_page])
ex = _examples(str(project.folder), str(project.model_folder), chosen, rule, float(fraction), fill)
from spuraudit.explain import overlay_heatmap  # noqa: E402

cols = st.columns(len(chosen) or 1)
for col, i in zip(cols, range(len(chosen))):
    with col:
        row = int(ex["indices"][i])
        st.image(_display(ex["originals"][i]), caption=f"#{row} · {table.class_names[table.labels[row]]}")
        st.image(_display(overlay_heatmap(ex["originals"][i], ex["heatmaps"][i])),
                 caption=f"heatmap of '{table.class_names[ex['preds'][i]]}'")
        st.image(_display(ex["masked"][i]), caption=f"masked {100 * ex['share'][i]:.1f} %")

# The histogram preview runs the model on a random sample: 256 small images, fewer large ones, so the
# page stays responsive on a CPU.
_, parent_card = load_model(project.model_folder)
preview_n = 256 if parent_card.input_size[0] * parent_card.input_size[1] <= 64 * 64 else 32
sample = tuple(int(i) for i in np.sort(np.random.default_rng(0).choice(train_idx, size=min(preview_n, len(train_idx)),
                                                                         replace=False)))
preview = _examples(str(project.folder), str(project.model_folder), sample, rule, float(fraction), fill)
share = 100 * preview["share"]
nothing = float(np.mean(share == 0)) * 100
m1, m2, m3 = st.columns(3)
m1.metric("Mean share masked", f"{share.mean():.1f} %")
m2.metric("Smallest share masked", f"{share.min():.1f} %")
m3.metric("Images with nothing masked", f"{nothing:.1f} %",
          help="The 'official' rule masks nothing when the heatmap is concentrated on a few pixels: its "
               "threshold (mean + 2·std of the positive values) then lies above the map's maximum.")
hist = share_histogram(share)  # from 0 %, so a rule masking 25 % everywhere is one bar at 25
edges = np.asarray(hist["edges_pct"])
fig = go.Figure(go.Bar(x=(edges[:-1] + edges[1:]) / 2, y=hist["counts"], width=np.diff(edges), marker_color="#1f77b4"))
fig.update_layout(height=260, margin=dict(t=30, b=10), title=f"Masked share per image, {len(sample)} random "
                  "training images", xaxis_title="pixels masked (%)", yaxis_title="images")
st.plotly_chart(fig, width="stretch")

done = [(f, c) for f, c in models if c.method == "masktune"]
if done:
    st.subheader("Masked shares recorded by finished MaskTune runs")
    for folder, card in done[:3]:
        hist = card.metrics.get("diagnostics", {}).get("masked_share_histogram")
        summary = card.metrics.get("diagnostics", {}).get("masked_share", {})
        if not hist:
            continue
        edges = np.asarray(hist["edges_pct"])
        bar = go.Figure(go.Bar(x=(edges[:-1] + edges[1:]) / 2, y=hist["counts"], width=np.diff(edges)))
        bar.update_layout(height=220, margin=dict(t=30, b=10), xaxis_title="pixels masked (%)", yaxis_title="images",
                          title=f"{card.name}: rule {card.options.get('rule')}, mean "
                                f"{summary.get('mean_masked_pct')} %, nothing masked on "
                                f"{summary.get('nothing_masked_pct')} % of images")
        st.plotly_chart(bar, width="stretch")
