"""Plotly figures used by the pages (no Streamlit calls here)."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from core.labels import CLASS_NAMES
from core.metrics import row_normalise

_MARGIN = dict(l=8, r=8, t=36, b=8)


def _(text: str) -> str:
    """The text in the user's language. Imported lazily: app.common needs Streamlit, and this
    module stays usable without it (English then)."""
    try:
        from app.common import _ as translate

        return translate(text)
    except Exception:  # noqa: BLE001 - a figure must never fail over a translation
        return text


def probability_bars(probabilities: dict[str, float], threshold: float | None = None,
                     title: str | None = None, height: int = 230) -> go.Figure:
    if title is None:
        title = _("Class probabilities")
    names = list(CLASS_NAMES)
    values = [float(probabilities.get(n, 0.0)) for n in names]
    best = int(np.argmax(values)) if values else -1
    colours = ["#2e7d32" if i == best else "#90a4ae" for i in range(len(names))]
    fig = go.Figure(go.Bar(x=values, y=names, orientation="h", marker_color=colours,
                           text=[f"{v:.1%}" for v in values], textposition="auto",
                           hovertemplate="%{y}: %{x:.1%}<extra></extra>"))
    if threshold is not None:
        fig.add_vline(x=threshold, line_dash="dash", line_color="#c62828",
                      annotation_text=_("threshold {pct}").format(pct=f"{threshold:.0%}"), annotation_position="top")
    fig.update_layout(title=title, height=height, margin=_MARGIN, xaxis=dict(range=[0, 1], tickformat=".0%"),
                      yaxis=dict(autorange="reversed"), showlegend=False)
    return fig


def confusion_heatmap(cm: np.ndarray, labels: Sequence[str], title: str, normalise: bool = False,
                      height: int = 300) -> go.Figure:
    """Rows = true class, columns = predicted class; counts or row-normalised fractions."""
    cm = np.asarray(cm, dtype=float)
    if normalise:
        z = row_normalise(cm)
        text = [[f"{v:.0%}" for v in row] for row in z]
    else:
        z = cm
        text = [[f"{int(v)}" for v in row] for row in cm]
    fig = go.Figure(go.Heatmap(z=z, x=list(labels), y=list(labels), text=text, texttemplate="%{text}",
                               colorscale="Blues", showscale=False,
                               hovertemplate=_("true %{y}, predicted %{x}: %{text}") + "<extra></extra>"))
    fig.update_layout(title=dict(text=title, font=dict(size=13)), height=height, margin=_MARGIN,
                      xaxis=dict(title=_("predicted"), side="bottom"),
                      yaxis=dict(title=_("true"), autorange="reversed"))
    return fig


def reliability_diagram(df: pd.DataFrame, title: str, height: int = 320) -> go.Figure:
    """`df` columns stage, confidence, accuracy, count (see app.benchmark_data.reliability_frame)."""
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", name=_("perfect calibration"),
                             line=dict(dash="dot", color="#9e9e9e")))
    names = {"before": _("before temperature scaling"), "after": _("after temperature scaling")}
    for stage, colour in (("before", "#ef6c00"), ("after", "#1565c0")):
        part = df[df["stage"] == stage]
        if part.empty:
            continue
        fig.add_trace(go.Scatter(
            x=part["confidence"], y=part["accuracy"], mode="lines+markers", name=names[stage],
            line=dict(color=colour), customdata=part["count"],
            hovertemplate=_("confidence %{x:.2f}, accuracy %{y:.2f} (%{customdata} images)")
            + "<extra></extra>"))
    fig.update_layout(title=dict(text=title, font=dict(size=13)), height=height, margin=_MARGIN,
                      xaxis=dict(title=_("mean confidence"), range=[0, 1]),
                      yaxis=dict(title=_("accuracy"), range=[0, 1]), legend=dict(orientation="h", y=-0.25))
    return fig


def training_curves(history: pd.DataFrame, metric: str, title: str, height: int = 280) -> go.Figure:
    fig = go.Figure()
    x = history["epoch"] + 1 if "epoch" in history else np.arange(1, len(history) + 1)
    for col, dash in ((metric, "solid"), (f"val_{metric}", "dash")):
        if col in history:
            fig.add_trace(go.Scatter(x=x, y=history[col], mode="lines+markers", name=col, line=dict(dash=dash)))
    fig.update_layout(title=dict(text=title, font=dict(size=13)), height=height, margin=_MARGIN,
                      xaxis=dict(title=_("epoch")), legend=dict(orientation="h", y=-0.3))
    return fig
