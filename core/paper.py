"""The paper's published results (Sultana, Joya & Hasan), loaded for the Benchmark page.

The numbers themselves live in ``benchmarks/paper/paper_results.json``, transcribed exactly
as printed (Tables 3-7, Figures 4 (A-F), 5 (A-F) and 6), inconsistencies included. This
module loads them, converts the confusion matrices to our convention and recomputes from
each matrix the metrics the paper states, so the page can show both side by side.

Orientation: the paper's matrices have rows = PREDICTED class and columns = TRUE class
(Figure 4 (A) column Benign sums to 136 = Table 4 VGG19 Benign support). Everything this
module returns uses our convention, the one of ``sklearn.metrics.confusion_matrix``:
rows = true class, columns = predicted class.

Percentages: "stated" values are the paper's integers in percent; values computed from a
matrix are floats in percent (0-100), not rounded.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import Enum
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .labels import CLASS_FOLDERS
from .metrics import matrix_metrics

PAPER_RESULTS_PATH: Path = Path(__file__).resolve().parents[1] / "benchmarks" / "paper" / "paper_results.json"

#: Canonical model keys, in the order the Benchmark page lists them.
MODEL_KEYS: tuple[str, ...] = (
    "vgg19", "inceptionv3", "mobilenetv2", "xception", "densenet201", "seresnet152", "dex",
)
#: Experiment modes: original networks, transfer learning, ensemble.
MODES: tuple[str, ...] = ("baseline", "tl", "ensemble")
#: Orientation of ``matrix_as_published`` in the JSON.
PUBLISHED_ORIENTATION = "rows=predicted, columns=true"

#: Training protocol as the paper describes it (Section 3), with where each item comes from.
PAPER_PROTOCOL: dict[str, Any] = {
    "input_size": (132, 132),
    "pixel_scaling": "divide by 255 -> [0, 1]",
    "train_test_split": "70:30",
    "split_counts": {"total": 3256, "train": 2277, "test": 979},
    "augmentation_copies_per_image": 10,
    "loss": "categorical_crossentropy",
    "hidden_activation": "relu",
    "output_activation": "softmax",
    "optimizer": "adam",
    "learning_rate": 1e-4,
    "beta_1": 0.9,
    "beta_2": 0.999,
    "epsilon": 1e-7,
    "batch_size": 17,
    "max_epochs": 25,
    "early_stopping_patience": 10,
    "seconds_per_epoch_colab": {"mobilenetv2": 20, "densenet201": 14, "inceptionv3": 14},
    "framework": "Keras / TensorFlow on Google Colab (Tesla GPU)",
    "sources": {
        "input_size": "Section 3.2 b (Image Augmentation): resized to 132x132",
        "pixel_scaling": "Section 3.2 b: pixel values scaled to [0, 1] by dividing by 255",
        "train_test_split": "Section 3.1 and Table 2 (2277 training / 979 'validation' images)",
        "split_counts": "Table 2",
        "augmentation_copies_per_image": "Section 3.2 b: ten augmented copies of each original image",
        "loss": "Section 3.2 c (Model Training): categorical cross-entropy",
        "hidden_activation": "Section 3.2 c: 'the ramp function' in all hidden layers",
        "output_activation": "Section 3.2 c: softmax output layer",
        "optimizer": "Section 3.2 c: Adam optimizer",
        "learning_rate": "Section 3.2 c: learning rate (alpha) of 0.0001",
        "beta_1": "Section 3.2 c: beta_1 equal to 0.9",
        "beta_2": "Section 3.2 c: beta_2 = 0.999",
        "epsilon": "Section 3.2 c: epsilon = 10^-7",
        "batch_size": "Section 3.2 c: batch size of 17",
        "max_epochs": "Section 3.2 c: no more than 25 epochs",
        "early_stopping_patience": "Section 3.2 c: early stopping, patience 10 epochs",
        "seconds_per_epoch_colab": (
            "Section 3.2 c: about 20 s/epoch for 'MobileNet', 14 s/epoch for DenseNet-201 and "
            "InceptionV3 (said to be shown in Table 1, which has no timings)"
        ),
        "framework": "Section 3 (Research Methodology)",
    },
}


class Protocol(str, Enum):
    """How a model's weights were trained, relative to :data:`PAPER_PROTOCOL` (recorded in evaluations)."""

    PAPER = "paper"  # nothing deviated (core.train's PAPER preset)
    OWN = "own recipe"  # some setting deviated; run.json lists which
    UNKNOWN = "unknown"  # no training record beside the weights


@dataclass(frozen=True)
class PaperMatrix:
    """One published confusion matrix, in our orientation (rows = true, columns = predicted)."""

    model: str
    mode: str
    source: str
    paper_label: str
    caption: str
    matrix: np.ndarray

    @property
    def matrix_as_published(self) -> np.ndarray:
        """The matrix as printed in the paper (rows = predicted, columns = true)."""
        return self.matrix.T.copy()

    @property
    def n_images(self) -> int:
        """Number of images the matrix counts."""
        return int(self.matrix.sum())


def load_paper_results(path: str | Path | None = None) -> dict[str, Any]:
    """Load the transcribed results JSON.

    ``path`` defaults to ``benchmarks/paper/paper_results.json`` next to this package, so the
    loader works from any working directory. The returned dict is a fresh copy.
    """
    if path is None:
        return json.loads(_default_text())
    return json.loads(Path(path).read_text(encoding="utf-8"))


@lru_cache(maxsize=1)
def _default_text() -> str:
    return PAPER_RESULTS_PATH.read_text(encoding="utf-8")


def published_to_true_by_predicted(matrix_as_published: Any) -> np.ndarray:
    """Convert a paper matrix (rows = predicted, columns = true) to rows = true, columns = predicted.

    The result is a 4x4 ``int64`` array laid out like ``sklearn.metrics.confusion_matrix``.
    """
    m = np.asarray(matrix_as_published, dtype=np.int64)
    if m.shape != (len(CLASS_FOLDERS), len(CLASS_FOLDERS)):
        raise ValueError(f"expected a {len(CLASS_FOLDERS)}x{len(CLASS_FOLDERS)} matrix, got {m.shape}")
    return m.T.copy()


def confusion_matrices(results: dict[str, Any] | None = None) -> list[PaperMatrix]:
    """All 13 published matrices (Figures 4 A-F, 5 A-F, 6), rows = true, columns = predicted."""
    data = results if results is not None else load_paper_results()
    out: list[PaperMatrix] = []
    for e in data["confusion_matrices"]:
        if e["orientation"] != PUBLISHED_ORIENTATION:
            raise ValueError(f"{e['source']}: unexpected orientation {e['orientation']!r}")
        if list(e["labels"]) != list(CLASS_FOLDERS):
            raise ValueError(f"{e['source']}: labels {e['labels']} differ from {CLASS_FOLDERS}")
        out.append(
            PaperMatrix(
                model=e["model"],
                mode=e["mode"],
                source=e["source"],
                paper_label=e["paper_label"],
                caption=e["caption"],
                matrix=published_to_true_by_predicted(e["matrix_as_published"]),
            )
        )
    return out


def _matrix_index(matrices: list[PaperMatrix]) -> dict[tuple[str, str], PaperMatrix]:
    return {(m.model, m.mode): m for m in matrices}


def accuracy_table(results: dict[str, Any] | None = None) -> pd.DataFrame:
    """Stated accuracies (Tables 3, 5; DEX from the Abstract) next to the matrix accuracy.

    One row per (model, mode), 13 rows. Columns: model, mode, paper_label, source (where the
    stated accuracy comes from), matrix_source, training_accuracy_stated, accuracy_stated
    (Table 3/5 "Model Accuracy", percent), accuracy_from_matrix (trace / sum of the figure's
    matrix, percent), n_correct_in_matrix, n_images_in_matrix. Missing values are NaN.
    """
    data = results if results is not None else load_paper_results()
    mats = _matrix_index(confusion_matrices(data))
    stated = list(data["accuracy_tables"]) + list(data.get("accuracy_in_text", []))
    rows: list[dict[str, Any]] = []
    seen: set[tuple[str, str]] = set()
    for e in stated:
        key = (e["model"], e["mode"])
        seen.add(key)
        rows.append(
            {
                "model": e["model"],
                "mode": e["mode"],
                "paper_label": e["paper_label"],
                "source": e["source"],
                "training_accuracy_stated": e.get("training_accuracy_pct", np.nan),
                "accuracy_stated": e.get("model_accuracy_pct", np.nan),
            }
        )
    for key, m in mats.items():
        if key not in seen:
            rows.append({"model": m.model, "mode": m.mode, "paper_label": m.paper_label, "source": None,
                         "training_accuracy_stated": np.nan, "accuracy_stated": np.nan})
    for r in rows:
        m = mats.get((r["model"], r["mode"]))
        if m is None:
            r.update(matrix_source=None, accuracy_from_matrix=np.nan,
                     n_correct_in_matrix=pd.NA, n_images_in_matrix=pd.NA)
            continue
        met = matrix_metrics(m.matrix)
        r.update(matrix_source=m.source, accuracy_from_matrix=100.0 * met["accuracy"],
                 n_correct_in_matrix=met["n_correct"], n_images_in_matrix=met["n"])
    df = pd.DataFrame(rows, columns=[
        "model", "mode", "paper_label", "source", "matrix_source", "training_accuracy_stated",
        "accuracy_stated", "accuracy_from_matrix", "n_correct_in_matrix", "n_images_in_matrix",
    ])
    for c in ("training_accuracy_stated", "accuracy_stated", "accuracy_from_matrix"):
        df[c] = df[c].astype(float)
    for c in ("n_correct_in_matrix", "n_images_in_matrix"):
        df[c] = df[c].astype("Int64")
    return _sorted(df)


def per_class_table(results: dict[str, Any] | None = None) -> pd.DataFrame:
    """Stated per-class metrics (Tables 4, 6, 7) next to the same metrics recomputed from the matrix.

    One row per (model, mode, class), classes in order Benign, Early, Pre, Pro (52 rows).
    Columns: model, mode, source, matrix_source, class, paper_class_label, precision_stated,
    recall_stated, f1_stated (percent), support_stated, precision_from_matrix,
    recall_from_matrix, f1_from_matrix, specificity_from_matrix (percent; the paper states no
    specificity), support_from_matrix (true-class count in the matrix).
    """
    data = results if results is not None else load_paper_results()
    mats = _matrix_index(confusion_matrices(data))
    paper_names = data.get("paper_class_labels", {})
    rows: list[dict[str, Any]] = []
    for t in data["per_class_tables"]:
        if list(t["columns"]) != list(CLASS_FOLDERS):
            raise ValueError(f"{t['source']} {t['model']}: columns {t['columns']} differ from {CLASS_FOLDERS}")
        m = mats.get((t["model"], t["mode"]))
        met = matrix_metrics(m.matrix) if m is not None else None
        for i, cls in enumerate(CLASS_FOLDERS):
            row: dict[str, Any] = {
                "model": t["model"],
                "mode": t["mode"],
                "source": t["source"],
                "matrix_source": m.source if m is not None else None,
                "class": cls,
                "paper_class_label": paper_names.get(cls, cls),
                "precision_stated": float(t["precision_pct"][i]),
                "recall_stated": float(t["recall_pct"][i]),
                "f1_stated": float(t["f1_pct"][i]),
                "support_stated": int(t["support"][i]),
            }
            if met is not None:
                row.update(
                    precision_from_matrix=100.0 * float(met["precision"][i]),
                    recall_from_matrix=100.0 * float(met["recall"][i]),
                    f1_from_matrix=100.0 * float(met["f1"][i]),
                    specificity_from_matrix=100.0 * float(met["specificity"][i]),
                    support_from_matrix=int(met["support"][i]),
                )
            rows.append(row)
    df = pd.DataFrame(rows, columns=[
        "model", "mode", "source", "matrix_source", "class", "paper_class_label",
        "precision_stated", "recall_stated", "f1_stated", "support_stated",
        "precision_from_matrix", "recall_from_matrix", "f1_from_matrix",
        "specificity_from_matrix", "support_from_matrix",
    ])
    df["support_from_matrix"] = df["support_from_matrix"].astype("Int64")
    df["_c"] = df["class"].map({c: i for i, c in enumerate(CLASS_FOLDERS)})
    df = _sorted(df, extra=["_c"]).drop(columns="_c")
    return df.reset_index(drop=True)


def notes(results: dict[str, Any] | None = None) -> list[str]:
    """The inconsistencies noted while transcribing the paper, one line each."""
    data = results if results is not None else load_paper_results()
    return list(data.get("notes", []))


def _sorted(df: pd.DataFrame, extra: list[str] | None = None) -> pd.DataFrame:
    order = {k: i for i, k in enumerate(MODES)}
    morder = {k: i for i, k in enumerate(MODEL_KEYS)}
    df = df.assign(_mo=df["mode"].map(order), _md=df["model"].map(morder))
    df = df.sort_values(["_mo", "_md", *(extra or [])], kind="stable")
    return df.drop(columns=["_mo", "_md"]).reset_index(drop=True)
