"""Classification metrics from scikit-learn, in the shape our evaluation JSON stores them."""
from __future__ import annotations

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    confusion_matrix,
    log_loss,
    multilabel_confusion_matrix,
    precision_recall_fscore_support,
    roc_auc_score,
)

from core.labels import CLASS_FOLDERS, N_CLASSES


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, n_bins: int = 15) -> float:
    """ECE: |accuracy - confidence| averaged over equal-width confidence bins, weighted by bin size.

    probs (N, K) in [0, 1], labels (N,) ints. scikit-learn has no ECE, only the curve.
    """
    conf = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == labels).astype(np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    bins = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, n_bins - 1)
    ece = 0.0
    for b in range(n_bins):
        sel = bins == b
        if sel.any():
            ece += sel.mean() * abs(correct[sel].mean() - conf[sel].mean())
    return float(ece)


def reliability_curve(probs: np.ndarray, labels: np.ndarray, n_bins: int = 10) -> list[dict]:
    """Per confidence bin: mean confidence, accuracy and count (for a reliability diagram)."""
    conf = probs.max(axis=1)
    correct = probs.argmax(axis=1) == labels
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    bins = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, n_bins - 1)
    return [
        {"bin_low": float(edges[b]), "bin_high": float(edges[b + 1]), "count": int((bins == b).sum()),
         "confidence": float(conf[bins == b].mean()), "accuracy": float(correct[bins == b].mean())}
        for b in range(n_bins) if (bins == b).any()
    ]


def balanced_accuracy(labels: np.ndarray, pred: np.ndarray) -> float:
    """Mean per-class recall of integer predictions (scikit-learn's balanced accuracy)."""
    return float(balanced_accuracy_score(labels, pred))


def per_class_metrics(labels: np.ndarray, pred: np.ndarray) -> dict[str, np.ndarray]:
    """Per class, in class order: precision, recall, F1 (scikit-learn, zero_division=0), one-vs-rest
    specificity TN / (TN + FP) and support (true count). labels, pred (N,) ints in [0, 4)."""
    classes = list(range(N_CLASSES))
    p, r, f, s = precision_recall_fscore_support(labels, pred, labels=classes, zero_division=0)
    mcm = multilabel_confusion_matrix(labels, pred, labels=classes)
    tn, fp = mcm[:, 0, 0], mcm[:, 0, 1]
    spec = np.divide(tn, tn + fp, out=np.zeros(N_CLASSES), where=(tn + fp) > 0)
    return {"precision": p, "recall": r, "f1": f, "specificity": spec, "support": s.astype(np.int64)}


def labels_from_matrix(cm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(labels, pred) integer arrays whose confusion matrix is `cm` (rows = true, columns = predicted)."""
    cm = np.asarray(cm, dtype=np.int64)
    if cm.shape != (N_CLASSES, N_CLASSES) or (cm < 0).any():
        raise ValueError(f"expected a {N_CLASSES}x{N_CLASSES} matrix of counts, got shape {cm.shape}")
    k = np.arange(N_CLASSES)
    return np.repeat(np.repeat(k, N_CLASSES), cm.ravel()), np.repeat(np.tile(k, N_CLASSES), cm.ravel())


def matrix_metrics(cm: np.ndarray) -> dict:
    """Accuracy, n, n_correct and :func:`per_class_metrics` of a published confusion matrix
    (rows = true, columns = predicted), through the same scikit-learn path as our own evaluations."""
    labels, pred = labels_from_matrix(cm)
    n = int(len(labels))
    return {"accuracy": float(accuracy_score(labels, pred)) if n else 0.0, "n": n,
            "n_correct": int((labels == pred).sum()), **per_class_metrics(labels, pred)}


def row_normalise(cm: np.ndarray) -> np.ndarray:
    """Each row of a confusion matrix divided by its sum (recall on the diagonal); empty rows stay 0."""
    cm = np.asarray(cm, dtype=float)
    rows = cm.sum(axis=1, keepdims=True)
    return np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)


def classification_metrics(labels: np.ndarray, probs: np.ndarray) -> dict:
    """Accuracy, per-class precision/recall/F1/specificity/support, macro and weighted averages,
    confusion matrix (rows = true class, columns = predicted), one-vs-rest ROC-AUC, log loss and ECE.

    labels (N,) ints in [0, 4); probs (N, 4) rows summing to 1.
    """
    pred = probs.argmax(axis=1)
    classes = list(range(N_CLASSES))
    pc = per_class_metrics(labels, pred)
    per_class = {c: {k: (int(v[i]) if k == "support" else float(v[i])) for k, v in pc.items()}
                 for i, c in enumerate(CLASS_FOLDERS)}
    averages = {}
    for avg in ("macro", "weighted"):
        ap, ar, af, _ = precision_recall_fscore_support(labels, pred, labels=classes, average=avg, zero_division=0)
        averages[avg] = {"precision": float(ap), "recall": float(ar), "f1": float(af)}
    try:
        auc = roc_auc_score(labels, probs, multi_class="ovr", labels=classes)
        auc_per_class = {c: float(roc_auc_score(labels == i, probs[:, i])) for i, c in enumerate(CLASS_FOLDERS)
                         if 0 < (labels == i).sum() < len(labels)}
    except ValueError:  # a class absent from this set
        auc, auc_per_class = None, {}
    return {
        "n_images": int(len(labels)),
        "accuracy": float(accuracy_score(labels, pred)),
        "per_class": per_class,
        "averages": averages,
        "confusion_matrix": confusion_matrix(labels, pred, labels=classes).tolist(),
        "confusion_matrix_orientation": "rows=true, columns=predicted; order " + ", ".join(CLASS_FOLDERS),
        "roc_auc_ovr": None if auc is None else float(auc),
        "roc_auc_per_class": auc_per_class,
        # Renormalised: float32 softmax rows sum to 1 only within ~1e-7, which scikit-learn warns about.
        "log_loss": float(log_loss(labels, _rows_sum_to_one(probs), labels=classes)) if len(labels) else None,
        "ece": expected_calibration_error(probs, labels),
    }


def _rows_sum_to_one(probs: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(probs, dtype=np.float64), 1e-15, 1.0)
    return p / p.sum(axis=1, keepdims=True)
