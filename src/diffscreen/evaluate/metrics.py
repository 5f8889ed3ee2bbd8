"""Confusion matrices and screening metrics from labels and predictions.

Functions take plain arrays of class names (or indices), so the CNN, a
spot-finder baseline and an expert are scored alike (Ke et al. 2018, §3.4,
Table 3).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from diffscreen.errors import LabelError

__all__ = [
    "confusion_matrix",
    "to_binary",
    "binary_metrics",
    "EvaluationReport",
    "evaluate_labels",
    "HIT_GROUP",
    "balanced_accuracy",
    "selection_accuracy",
]

#: Ke Table 3 groups Hit and Maybe against Miss.
HIT_GROUP = ("hit", "maybe")


def confusion_matrix(true, pred, classes) -> np.ndarray:
    """Count matrix: rows are true classes, columns predicted classes.

    Parameters
    ----------
    true, pred : (N,) sequence of str
        Class names.
    classes : sequence of str
        Row/column order.

    Returns
    -------
    (C, C) int64 ndarray

    Raises
    ------
    LabelError
        If a label is not one of ``classes`` or the lengths differ.
    """
    classes = list(classes)
    if len(true) != len(pred):
        raise LabelError(f"{len(true)} true labels but {len(pred)} predictions")
    index = {c: i for i, c in enumerate(classes)}
    m = np.zeros((len(classes), len(classes)), dtype=np.int64)
    for t, p in zip(true, pred):
        if t not in index or p not in index:
            bad = t if t not in index else p
            raise LabelError(f"label {bad!r} is not one of {classes}")
        m[index[t], index[p]] += 1
    return m


def to_binary(labels) -> list[str]:
    """Map hit/maybe to ``"hit-or-maybe"`` and miss to ``"miss"``."""
    return ["hit-or-maybe" if lab in HIT_GROUP else "miss" for lab in labels]


def binary_metrics(true, pred) -> dict:
    """Precision, recall, accuracy and balanced accuracy of the keep decision.

    The positive class is hit-or-maybe (a frame worth keeping).

    Parameters
    ----------
    true, pred : (N,) sequence of str
        hit / maybe / miss names (or already binary names).

    Returns
    -------
    dict
        ``precision``, ``recall`` (hit-or-maybe kept), ``miss_rejection``
        (misses discarded), ``accuracy``, ``balanced_accuracy``, ``f1``,
        ``n``.  A ratio with an empty denominator is NaN.
    """
    t = np.array([x in HIT_GROUP or x == "hit-or-maybe" for x in true])
    p = np.array([x in HIT_GROUP or x == "hit-or-maybe" for x in pred])
    tp = int((t & p).sum())
    fp = int((~t & p).sum())
    fn = int((t & ~p).sum())
    tn = int((~t & ~p).sum())

    def ratio(a, b):
        return a / b if b else float("nan")

    prec, rec, rej = ratio(tp, tp + fp), ratio(tp, tp + fn), ratio(tn, tn + fp)
    return {
        "n": len(t),
        "precision": prec,
        "recall": rec,
        "miss_rejection": rej,
        "accuracy": ratio(tp + tn, len(t)),
        "balanced_accuracy": float(np.nanmean([rec, rej])) if len(t) else float("nan"),
        "f1": ratio(2 * prec * rec, prec + rec) if tp else 0.0,
    }


def balanced_accuracy(pred, true) -> float:
    """Mean recall over the classes present in ``true`` (robust at low hit rates; Xie et al. 2022 §3.1).

    Parameters
    ----------
    pred, true : (N,) int arrays
        Predicted and true class indices.

    Returns
    -------
    float
        NaN for empty input.
    """
    pred, true = np.asarray(pred), np.asarray(true)
    if len(true) == 0:
        return float("nan")
    return float(np.mean([(pred[true == c] == c).mean() for c in np.unique(true)]))


def selection_accuracy(probs, true, class_names=None) -> float:
    """Balanced accuracy that picks the best training epoch (Xie et al. 2022 §3.1).

    With a ``"miss"`` class, that of the keep decision (``P(hit) + P(maybe) > P(miss)``, Ke et al. 2018
    §2.1), the binary task Xie et al. score ("we merge Hit and Maybe"); else :func:`balanced_accuracy`
    over the classes.

    Parameters
    ----------
    probs : (N, C) float ndarray
        Class probabilities.
    true : (N,) int array
        True class indices into ``class_names``.
    class_names : sequence of str, optional

    Returns
    -------
    float
        NaN for empty input.
    """
    true = np.asarray(true)
    if class_names is not None and "miss" in class_names:
        from diffscreen.models.decision import decide

        keep, _ = decide(probs, class_names)
        return balanced_accuracy(keep.astype(int), (true != list(class_names).index("miss")).astype(int))
    return balanced_accuracy(np.asarray(probs).argmax(1), true)


@dataclass
class EvaluationReport:
    """Both confusion matrices of Ke Table 3 and the binary metrics.

    Attributes
    ----------
    classes : tuple of str
    confusion : (C, C) int64 ndarray
        3-class counts, rows true.
    binary_classes : tuple of str
    binary_confusion : (2, 2) int64 ndarray
        Hit-or-Maybe vs Miss counts, rows true.
    metrics : dict
        From :func:`binary_metrics`, plus ``accuracy_3class``.
    """

    classes: tuple
    confusion: np.ndarray
    binary_classes: tuple
    binary_confusion: np.ndarray
    metrics: dict = field(default_factory=dict)

    @staticmethod
    def _percent(m: np.ndarray) -> np.ndarray:
        rows = m.sum(axis=1, keepdims=True)
        return np.divide(100.0 * m, rows, out=np.full(m.shape, np.nan), where=rows > 0)

    def to_dict(self) -> dict:
        return {
            "classes": list(self.classes),
            "confusion": self.confusion.tolist(),
            "binary_classes": list(self.binary_classes),
            "binary_confusion": self.binary_confusion.tolist(),
            "metrics": self.metrics,
        }

    def to_markdown(self) -> str:
        """Both matrices as markdown tables (counts and row percentages), then the metrics."""
        out = []
        for title, names, m in (
            ("3-class confusion (rows: truth, columns: prediction)", self.classes, self.confusion),
            ("Hit or Maybe vs Miss (Ke Table 3)", self.binary_classes, self.binary_confusion),
        ):
            pct = self._percent(m)
            out.append(f"**{title}**\n")
            out.append("| truth \\ predicted | " + " | ".join(names) + " |")
            out.append("|---" * (len(names) + 1) + "|")
            for i, n in enumerate(names):
                cells = [f"{m[i, j]} ({pct[i, j]:.1f}%)" if m[i].sum() else "0" for j in range(len(names))]
                out.append(f"| {n} | " + " | ".join(cells) + " |")
            out.append("")
        mt = self.metrics
        out.append(
            "precision {precision:.3f}, recall {recall:.3f}, accuracy {accuracy:.3f} "
            "(3-class accuracy {accuracy_3class:.3f}), miss rejection {miss_rejection:.3f}, n = {n}".format(**mt)
        )
        return "\n".join(out)


def evaluate_labels(true, pred, classes=("hit", "maybe", "miss")) -> EvaluationReport:
    """Score predicted labels against true labels.

    Parameters
    ----------
    true, pred : (N,) sequence of str
        Class names from ``classes``.
    classes : sequence of str

    Returns
    -------
    EvaluationReport

    Raises
    ------
    LabelError
        Unknown labels, different lengths, or no frames.
    """
    if len(true) == 0:
        raise LabelError("no labelled frames to evaluate")
    cm = confusion_matrix(true, pred, classes)
    bnames = ("hit-or-maybe", "miss")
    bcm = confusion_matrix(to_binary(true), to_binary(pred), bnames)
    metrics = binary_metrics(true, pred)
    metrics["accuracy_3class"] = float(np.trace(cm) / cm.sum())
    return EvaluationReport(tuple(classes), cm, bnames, bcm, metrics)
