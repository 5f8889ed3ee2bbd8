"""Confusion matrices and screening metrics from labels and predictions.

Functions take plain arrays of class names (or indices), so the CNN, a
spot-finder baseline and an expert are scored alike (Ke et al. 2018, §3.4,
Table 3).
"""

from __future__ import annotations

import math
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
    "keep_decision",
    "keep_balanced_accuracy",
    "kept_balanced_accuracy",
    "keep_rates",
    "keep_scores",
    "kept_scores",
    "percent_of",
    "t_interval",
    "interval_record",
    "domain_separability",
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


def keep_decision(probs) -> np.ndarray:
    """The keep decision of Ke et al. (2018) §2.1, P(hit) + P(maybe) > P(miss).

    Parameters
    ----------
    probs : (N, 3) float ndarray
        P(hit), P(maybe), P(miss).

    Returns
    -------
    (N,) bool ndarray
    """
    p = np.asarray(probs)
    return p[:, 0] + p[:, 1] > p[:, 2]


def keep_rates(kept, labels) -> tuple[float, float]:
    """The two halves of a keep decision's balanced accuracy.

    Parameters
    ----------
    kept : (N,) bool or float ndarray
        Whether each frame is kept, or the probability that it is (the
        rates are then their expectations).
    labels : (N,) int ndarray
        True class indices into hit, maybe, miss.

    Returns
    -------
    kept_of_hit_or_maybe, rejected_of_miss : float
        The fraction (0-1) of the hit-or-maybe frames (labels 0, 1) kept and
        of the misses (label 2) dropped; NaN where the group is empty.
    """
    kept, keep_true = np.asarray(kept, dtype=np.float64), np.asarray(labels) != 2
    tpr = float(kept[keep_true].mean()) if keep_true.any() else float("nan")
    tnr = float((1.0 - kept[~keep_true]).mean()) if (~keep_true).any() else float("nan")
    return tpr, tnr


def keep_balanced_accuracy(y, probs) -> float:
    """Balanced accuracy of the keep decision (:func:`keep_decision`).

    Parameters
    ----------
    y : (N,) int ndarray
        True class indices into hit, maybe, miss.
    probs : (N, 3) float ndarray
        Class probabilities.

    Returns
    -------
    float
        Mean of the fraction of hits and maybes kept and of misses dropped;
        NaN if either group is empty.
    """
    return kept_balanced_accuracy(keep_decision(probs), y)


def kept_balanced_accuracy(kept, y) -> float:
    """Balanced accuracy of a keep decision already made (a spot-finder's, or :func:`keep_decision`'s).

    Parameters
    ----------
    kept : (N,) bool or float ndarray
        Whether each frame is kept, or the probability that it is (:func:`keep_rates`).
    y : (N,) int ndarray
        True class indices into hit, maybe, miss.

    Returns
    -------
    float
        Mean of the fraction of hits and maybes kept and of misses dropped;
        NaN if either group is empty.
    """
    tpr, tnr = keep_rates(kept, y)
    return (tpr + tnr) / 2


def percent_of(pred, among) -> float:
    """Percentage of ``pred`` true among the frames where ``among`` is true (NaN if none)."""
    return 100 * float(np.asarray(pred)[among].mean()) if np.any(among) else float("nan")


def keep_scores(probs: np.ndarray, labels: np.ndarray) -> dict:
    """Scores of the keep decision (Ke et al. 2018 Eq. 4) against the truth hit or maybe (labels 0, 1) versus miss (2).

    Parameters
    ----------
    probs : (N, 3) float ndarray
        P(hit), P(maybe), P(miss).
    labels : (N,) int ndarray

    Returns
    -------
    dict
        ``success_rate`` (Ke Eq. 10: % of frames whose keep decision is
        right), ``balanced_success`` (mean of the kept % of hit-or-maybe
        frames and the dropped % of misses), ``accuracy_3class`` (% argmax
        right), ``kept_of_hit_or_maybe``, ``kept_of_miss`` (%, NaN where the
        class is absent), ``n``.
    """
    keep_pred = keep_decision(probs)
    tpr, tnr = keep_rates(keep_pred, labels)
    return {
        **kept_scores(keep_pred, labels),
        "balanced_success": 100 * float(np.nanmean([tpr, tnr])),
        "accuracy_3class": 100 * float((probs.argmax(1) == labels).mean()),
        "n": int(len(labels)),
    }


def kept_scores(kept: np.ndarray, labels: np.ndarray) -> dict:
    """Scores of a keep decision already made (a spot-finder's, or :func:`keep_decision`'s) against the truth hit
    or maybe (labels 0, 1) versus miss (2).

    Parameters
    ----------
    kept : (N,) bool ndarray
        Whether each frame is kept.
    labels : (N,) int ndarray

    Returns
    -------
    dict
        ``success_rate`` (Ke et al. 2018 Eq. 10: % of frames whose keep
        decision is right), ``kept_of_hit_or_maybe``, ``kept_of_miss`` (%, NaN
        where the class is absent).
    """
    kept, keep_true = np.asarray(kept, bool), np.asarray(labels) != 2
    return {"success_rate": 100 * float((kept == keep_true).mean()),
            "kept_of_hit_or_maybe": percent_of(kept, keep_true), "kept_of_miss": percent_of(kept, ~keep_true)}


def t_interval(values) -> tuple[float, float, float]:
    """Mean and 95 % Student-t interval ``(mean, lo, hi)`` of a few values (NaNs dropped; NaN half-width for one)."""
    from scipy import stats

    v = np.asarray([x for x in values if not math.isnan(x)], float)
    if len(v) == 0:
        return float("nan"), float("nan"), float("nan")
    m = float(v.mean())
    if len(v) < 2:
        return m, float("nan"), float("nan")
    h = float(stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v)))
    return m, m - h, m + h


def interval_record(values) -> dict:
    """``{"mean", "ci95": [lo, hi], "values"}`` of a few values (:func:`t_interval`), as reports store them in JSON."""
    v = [float(x) for x in values]
    m, lo, hi = t_interval(v)
    return {"mean": m, "ci95": [lo, hi], "values": v}


def domain_separability(features: np.ndarray, domain: np.ndarray) -> float:
    """Accuracy (%) of a logistic regression telling two domains apart from features, 5-fold cross-validated.

    The domain-overlap measure of Xie et al. (2022) Fig. 9: 50 % means the
    domains overlap fully (what domain adaptation aims at).

    Parameters
    ----------
    features : (N, F) float ndarray
    domain : (N,) int ndarray
        0 or 1.

    Returns
    -------
    float
        NaN if a domain has fewer than 5 frames.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if len(np.unique(domain)) < 2 or min(np.bincount(domain)) < 5:
        return float("nan")
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=0.1))
    return 100 * float(cross_val_score(clf, features, domain, cv=5).mean())


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
