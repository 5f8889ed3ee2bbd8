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

import json

import numpy as np

from diffscreen.errors import ConfigError, LabelError

__all__ = ["CDI_CLASSES", "multilabel_metrics", "rule_violations", "all_negative_baseline", "read_cdi_labels",
           "load_cdi_runs", "evaluate_cdi_scores", "cdi_report_markdown"]

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


def read_cdi_labels(path) -> np.ndarray:
    """The multi-hot truth of a simulated CDI run (``diffscreen simulate --task cdi``).

    Parameters
    ----------
    path : str or Path
        A CXI file with ``/entry_1/result_1/labels``.

    Returns
    -------
    (N, 11) uint8 ndarray
        Columns in the order of :data:`CDI_CLASSES`.

    Raises
    ------
    FrameReadError
        Not a readable HDF5 file.
    LabelError
        No label table, or other class names.
    """

    import h5py

    from diffscreen.errors import FrameReadError

    try:
        h = h5py.File(path, "r")
    except OSError as exc:
        raise FrameReadError(f"cannot open as HDF5 ({exc})", path=str(path)) from None
    with h:
        if "entry_1/result_1/labels" not in h:
            raise LabelError("no /entry_1/result_1/labels: not a CDI run from `diffscreen simulate --task cdi`",
                             path=str(path))  # fmt: skip
        ds = h["entry_1/result_1/labels"]
        names = tuple(json.loads(ds.attrs["class_names"]))
        if names != CDI_CLASSES:
            raise LabelError(f"class names {names} differ from {CDI_CLASSES}", path=str(path))
        return ds[()].astype(np.uint8)


def load_cdi_runs(paths) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    """Read simulated CDI runs (:func:`diffscreen.simulate.cdi.simulate_cdi_run` files).

    Parameters
    ----------
    paths : sequence of str or Path

    Returns
    -------
    frames : (N, H, W) float32 ndarray
        Photons per pixel.
    mask : (H, W) bool ndarray
        The hole mask (that of the first file).
    labels : (N, 11) uint8 ndarray
        Multi-hot labels.
    info : dict
        Files, frame counts and the simulation configs.

    Raises
    ------
    LabelError
        A file without ``/entry_1/result_1/labels`` or with other class names.
    FrameReadError
        Unreadable file.
    """
    import h5py

    from diffscreen.errors import FrameReadError

    frames, labels, info, mask = [], [], {"files": [], "configs": []}, None
    for p in paths:
        p = str(p)
        try:
            h = h5py.File(p, "r")
        except OSError as exc:
            raise FrameReadError(f"cannot open as HDF5 ({exc})", path=p) from None
        with h:
            labels.append(read_cdi_labels(p))  # checks the table and its class names
            import hdf5plugin  # noqa: F401  (bitshuffle-compressed runs)

            frames.append(h["entry_1/data_1/data"][()].astype(np.float32))
            if mask is None:
                mk = "entry_1/instrument_1/detector_1/mask"
                mask = h[mk][()].astype(bool) if mk in h else np.zeros(frames[-1].shape[1:], bool)
            info["files"].append(p)
            info["configs"].append(json.loads(h.attrs.get("cdi_config", "{}")))
    if not frames:
        raise ConfigError("no CDI runs given")
    shapes = {f.shape[1:] for f in frames}
    if len(shapes) > 1:
        raise ConfigError(f"CDI runs of different frame sizes {sorted(shapes)}")
    x, y = np.concatenate(frames), np.concatenate(labels)
    info["n_frames"] = int(len(x))
    info["label_counts"] = {n: int(c) for n, c in zip(CDI_CLASSES, y.sum(0))}
    return x, mask, y, info


def evaluate_cdi_scores(scores_csv, runs, *, threshold: float = 0.5) -> dict:
    """Score a ``screen --task cdi`` output against the truth of simulated runs.

    Rows of ``scores.csv`` are matched to frames of ``runs`` by file and
    frame index; rows of other files (e.g. real frames) are left out.

    Parameters
    ----------
    scores_csv : str or Path
        ``file,frame,p_<class>…`` as :func:`diffscreen.screen.screen_cdi` writes it.
    runs : sequence of str or Path
        The simulated CDI runs that were screened.
    threshold : float

    Returns
    -------
    dict
        ``metrics`` (:func:`multilabel_metrics`), ``all_negative``
        (:func:`all_negative_baseline`) and ``n_matched``.

    Raises
    ------
    LabelError
        A missing probability column, or no row matching a labelled frame.
    """
    import os

    from diffscreen.io.scores import read_scores

    truth = {os.path.realpath(str(r)): read_cdi_labels(r) for r in runs}
    y, p = [], []
    cols = [f"p_{c}" for c in CDI_CLASSES]
    for row in read_scores(scores_csv, required=("file", "frame", *cols)):
        t = truth.get(os.path.realpath(row["file"].split(":/", 1)[0]))
        i = row.frame
        if t is None or not 0 <= i < len(t):
            continue
        y.append(t[i])
        p.append([row.number(c) for c in cols])
    if not y:
        raise LabelError("no row of the scores file is a frame of the given runs", path=str(scores_csv))
    y, p = np.array(y), np.array(p)
    return {"metrics": multilabel_metrics(y, p, threshold=threshold), "all_negative": all_negative_baseline(y),
            "n_matched": int(len(y))}  # fmt: skip


def cdi_report_markdown(result: dict) -> str:
    """A short Markdown table of :func:`evaluate_cdi_scores`' result, per class and overall."""
    m, b = result["metrics"], result["all_negative"]
    lines = [f"{result['n_matched']} frames; micro-averaged over all labels (Zimmermann et al. 2019 §3.2)", "",
             "| | accuracy | precision | recall |", "|---|---|---|---|",
             f"| model | {m['accuracy']:.3f} | {m['precision']:.3f} | {m['recall']:.3f} |",
             f"| all-negative predictor | {b['accuracy']:.3f} | 0 | 0 |", "",
             f"Predicted label sets breaking a Fig. 2 rule: {100 * m.get('violation_rate', 0.0):.1f}%", "",
             "| class | precision | recall | true positives |", "|---|---|---|---|"]  # fmt: skip
    for name, c in m["per_class"].items():
        lines.append(f"| {name} | {c['precision']:.3f} | {c['recall']:.3f} | {c['tp']} of {c['tp'] + c['fn']} |")
    return "\n".join(lines)
