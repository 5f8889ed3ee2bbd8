"""Multi-label metrics of Zimmermann et al. (2019) §3.2 and the Fig. 2 label rules.

All counts run over every (image, class) label, i.e. micro-averaged:

* Accuracy  = (TP + TN) / (condition positives + condition negatives),
* Precision = TP / (TP + FP)  (0 when nothing is predicted positive),
* Recall    = TP / (TP + FN)  (0 when there is no positive label).

The rule-violation rate is the fraction of images whose *predicted* label set
breaks a rule of the Fig. 2 caption; the paper uses it as a check on
generalisation.  Rules (class names of
:data:`diffscreen.simulate.cdi.CDI_CLASS_NAMES`):

* ``superordinate``: exactly one of Spherical/Oblate, Prolate, Empty
  ("mutually exclusive ... all diffraction patterns are part of one of these
  two classes"; Empty images are in neither, Table 1 counts);
* ``round_elliptical``: not both Round and Elliptical;
* ``empty_alone``: Empty with no other class;
* ``hierarchy``: Round, Elliptical, Double rings only with Spherical/Oblate;
  Bent, Streak only with Prolate.

Note: the paper's worked example gives Accuracy 0.767 for "everything
Spherical/Oblate"; its own definition gives 0.879 on the Table 1 counts,
while its Precision 0.907 and Recall 0.423 are reproduced exactly.
"""

from __future__ import annotations

import numpy as np

from diffscreen.errors import ConfigError, LabelError

__all__ = ["CDI_CLASSES", "multilabel_metrics", "rule_violations", "all_negative_baseline"]

CDI_CLASSES: tuple[str, ...] = (
    "spherical_oblate", "round", "elliptical", "newton_rings", "prolate", "bent",
    "asymmetric", "streak", "double_rings", "layered", "empty",
)
_I = {n: i for i, n in enumerate(CDI_CLASSES)}


def _as01(a, name) -> np.ndarray:
    x = np.asarray(a)
    if x.ndim != 2:
        raise LabelError(f"`{name}` must be a 2-D (images, classes) array, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise LabelError(f"`{name}` contains NaN or infinite values")
    return x


def multilabel_metrics(y_true, y_score, *, threshold: float = 0.5, class_names=CDI_CLASSES) -> dict:
    """Accuracy, Precision, Recall (§3.2), per-class values and the rule-violation rate.

    Parameters
    ----------
    y_true : (N, C) array_like of {0, 1}
    y_score : (N, C) array_like
        Probabilities (thresholded at ``threshold``) or 0/1 predictions.
    threshold : float
        A label is predicted when its probability is ≥ ``threshold``.
    class_names : sequence of str, length C

    Returns
    -------
    dict
        ``accuracy``, ``precision``, ``recall`` (floats), ``tp``, ``fp``,
        ``fn``, ``tn`` (ints), ``per_class`` (name → dict of the same),
        ``violation_rate`` (float; only when the classes are the 11 CDI
        classes) and ``n_images``.

    Raises
    ------
    LabelError
        Shape mismatch, non-binary truth or NaN values.
    """
    t = _as01(y_true, "y_true")
    s = _as01(y_score, "y_score")
    if t.shape != s.shape:
        raise LabelError(f"y_true {t.shape} and y_score {s.shape} differ in shape")
    if t.shape[1] != len(class_names):
        raise LabelError(f"{t.shape[1]} label columns but {len(class_names)} class names")
    if not np.isin(t, (0, 1)).all():
        raise LabelError("y_true must hold only 0 and 1")
    t = t.astype(bool)
    p = s >= threshold

    def counts(tt, pp):
        tp = int((tt & pp).sum())
        fp = int((~tt & pp).sum())
        fn = int((tt & ~pp).sum())
        tn = int((~tt & ~pp).sum())
        n = tp + fp + fn + tn
        return {
            "accuracy": (tp + tn) / n if n else 0.0,
            "precision": tp / (tp + fp) if tp + fp else 0.0,
            "recall": tp / (tp + fn) if tp + fn else 0.0,
            "tp": tp, "fp": fp, "fn": fn, "tn": tn,
        }

    out = counts(t, p)
    out["per_class"] = {n: counts(t[:, i], p[:, i]) for i, n in enumerate(class_names)}
    out["n_images"] = int(len(t))
    if tuple(class_names) == CDI_CLASSES:
        v = rule_violations(p)
        out["violation_rate"] = float(v["any"].mean()) if len(p) else 0.0
        out["violations"] = {k: float(x.mean()) if len(p) else 0.0 for k, x in v.items()}
    return out


def rule_violations(pred) -> dict:
    """Which predicted label sets break the Fig. 2 rules.

    Parameters
    ----------
    pred : (N, 11) array_like of {0, 1} or bool
        In :data:`CDI_CLASSES` order.

    Returns
    -------
    dict of str → (N,) bool ndarray
        ``superordinate``, ``round_elliptical``, ``empty_alone``,
        ``hierarchy`` and ``any``.

    Raises
    ------
    LabelError
        Not (N, 11).
    """
    p = np.asarray(pred).astype(bool)
    if p.ndim != 2 or p.shape[1] != len(CDI_CLASSES):
        raise LabelError(f"expected (N, {len(CDI_CLASSES)}) labels, got shape {p.shape}")
    c = {n: p[:, i] for n, i in _I.items()}
    sup = c["spherical_oblate"].astype(int) + c["prolate"].astype(int) + c["empty"].astype(int)
    others = np.delete(p, _I["empty"], axis=1).any(axis=1)
    r = {
        "superordinate": sup != 1,
        "round_elliptical": c["round"] & c["elliptical"],
        "empty_alone": c["empty"] & others,
        "hierarchy": ((c["round"] | c["elliptical"] | c["double_rings"]) & ~c["spherical_oblate"])
        | ((c["bent"] | c["streak"]) & ~c["prolate"]),
    }
    r["any"] = r["superordinate"] | r["round_elliptical"] | r["empty_alone"] | r["hierarchy"]
    return r


def all_negative_baseline(y_true) -> dict:
    """Metrics of the trivial predictor that sets every label negative (§3.2 example).

    Parameters
    ----------
    y_true : (N, C) array_like of {0, 1}

    Returns
    -------
    dict
        As :func:`multilabel_metrics` (precision and recall are 0).
    """
    t = _as01(y_true, "y_true")
    names = CDI_CLASSES if t.shape[1] == len(CDI_CLASSES) else tuple(f"c{i}" for i in range(t.shape[1]))
    if t.shape[1] == 0:
        raise ConfigError("no classes")
    return multilabel_metrics(t, np.zeros_like(t, dtype=float), class_names=names)
