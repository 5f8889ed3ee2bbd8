"""Which frames to label first: uncertainty plus diversity (active learning for a new beamtime).

A beamtime starts without labels (Xie et al. 2022 §1; Ke et al. 2018 §3.6:
"the number of images required to be examined and annotated by a human
expert is of the order of a few hundred").  The frames most worth a human
look are those the current model is unsure about (high entropy of its
hit/maybe/miss probabilities), but the most uncertain frames are often
near-copies of each other (a run of empty shots at the decision boundary),
so picking by uncertainty alone wastes labels.  :func:`suggest_labels`
therefore picks greedily by a weighted sum of

* uncertainty ``u_i = H(p_i) / log C`` (normalised entropy, 0..1), and
* diversity ``d_i / max d``: ``d_i`` the distance in (standardised,
  PCA-reduced) penultimate-feature space to the nearest frame already picked
  (k-centre greedy; Sener & Savarese 2018, "core-set" active learning).

The first pick is the most uncertain frame; each later pick maximises
``w u_i + (1 − w) d_i / max_j d_j``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from diffscreen.errors import ConfigError

__all__ = ["uncertainty", "suggest_labels", "feature_space", "pick_reasons", "run_suggestions", "write_suggestions"]

_MAX_DIMS = 32


def uncertainty(probabilities) -> np.ndarray:
    """Normalised entropy of each row of class probabilities.

    Parameters
    ----------
    probabilities : (N, C) float array
        Rows sum to 1 (softmax output).

    Returns
    -------
    (N,) float64 ndarray
        ``−Σ p log p / log C`` in [0, 1]: 0 for a certain, 1 for a uniform prediction.
    """
    p = np.clip(np.asarray(probabilities, dtype=np.float64), 1e-12, 1.0)
    c = p.shape[1]
    return -(p * np.log(p)).sum(axis=1) / np.log(c) if c > 1 else np.zeros(len(p))


def feature_space(features, max_dims: int = _MAX_DIMS) -> np.ndarray:
    """Standardise features per column and project onto at most ``max_dims`` principal axes.

    Parameters
    ----------
    features : (N, F) float array

    Returns
    -------
    (N, min(F, max_dims, N)) float64 ndarray
        Constant columns contribute nothing.
    """
    f = np.asarray(features, dtype=np.float64)
    f = f - f.mean(axis=0)
    sd = f.std(axis=0)
    f = np.divide(f, sd, out=np.zeros_like(f), where=sd > 1e-12)
    if f.shape[1] > max_dims and len(f) > 1:
        _, _, vt = np.linalg.svd(f, full_matrices=False)
        f = f @ vt[:max_dims].T
    return f


def suggest_labels(probabilities, features, n: int, *, seed: int = 0, uncertainty_weight: float = 0.5
                   ) -> np.ndarray:
    """Frames most worth labelling: uncertain ones, spread over the feature space.

    Parameters
    ----------
    probabilities : (N, C) float array
        The model's class probabilities for every frame of the run.
    features : (N, F) float array
        Penultimate features of the same frames (``model.forward_features``,
        flattened).
    n : int
        Frames to pick; all ``N`` (in pick order) if ``n >= N``.
    seed : int
        Breaks ties (e.g. between identical frames) reproducibly.
    uncertainty_weight : float
        ``w`` in [0, 1]: 1 = uncertainty only, 0 = diversity only (k-centre greedy).

    Returns
    -------
    (min(n, N),) int64 ndarray
        Row indices, in the order picked (most valuable first).

    Raises
    ------
    ConfigError
        ``n < 1``, ``w`` outside [0, 1], mismatched or non-2-D arrays, no
        rows, or NaN/inf values.
    """
    p = np.asarray(probabilities, dtype=np.float64)
    f = np.asarray(features, dtype=np.float64)
    if p.ndim != 2 or f.ndim != 2 or len(p) != len(f) or len(p) == 0:
        raise ConfigError(f"need probabilities (N, C) and features (N, F) with the same N > 0, got {p.shape} "
                          f"and {f.shape}")
    if not (np.isfinite(p).all() and np.isfinite(f).all()):
        raise ConfigError("probabilities or features contain NaN or infinite values")
    if n < 1:
        raise ConfigError(f"the number of frames to suggest must be >= 1, got {n}")
    w = float(uncertainty_weight)
    if not 0.0 <= w <= 1.0:
        raise ConfigError(f"uncertainty_weight must be in [0, 1], got {w}")
    N = len(p)
    k = min(int(n), N)
    u = uncertainty(p)
    z = feature_space(f)
    jitter = np.random.default_rng(seed).random(N) * 1e-9  # reproducible tie-breaking
    picked = np.empty(k, np.int64)
    free = np.ones(N, bool)
    first = int(np.argmax(u + jitter))
    picked[0] = first
    free[first] = False
    dist = np.linalg.norm(z - z[first], axis=1)
    for j in range(1, k):
        dmax = dist[free].max()
        div = dist / dmax if dmax > 0 else np.zeros(N)
        score = np.where(free, w * u + (1 - w) * div + jitter, -np.inf)
        nxt = int(np.argmax(score))
        picked[j] = nxt
        free[nxt] = False
        dist = np.minimum(dist, np.linalg.norm(z - z[nxt], axis=1))
    return picked


def pick_reasons(probabilities, features, picks, class_names) -> list[str]:
    """One line per pick saying why it was chosen (for the suggest-labels CSV).

    Parameters
    ----------
    probabilities : (N, C) float array
    features : (N, F) float array
    picks : (K,) int array
        From :func:`suggest_labels`, in pick order.
    class_names : sequence of str

    Returns
    -------
    list of str
        E.g. ``"uncertainty 0.93, predicted maybe; most uncertain frame"`` or
        ``"uncertainty 0.41, predicted miss; feature distance 3.2 to the nearest earlier pick"``.
    """
    u = uncertainty(probabilities)
    z = feature_space(features)
    p = np.asarray(probabilities)
    out = []
    for j, k in enumerate(picks):
        head = f"uncertainty {u[k]:.2f}, predicted {class_names[int(np.argmax(p[k]))]}"
        if j == 0:
            out.append(f"{head}; most uncertain frame")
        else:
            d = float(np.linalg.norm(z[picks[:j]] - z[k], axis=1).min())
            out.append(f"{head}; feature distance {d:.2f} to the nearest earlier pick")
    return out


def run_suggestions(specs, clf, n: int, *, batch_size: int = 16, seed: int = 0, uncertainty_weight: float = 0.5,
                    progress=None) -> dict:
    """Score every frame of a run with a classifier and pick the frames to label.

    Parameters
    ----------
    specs : sequence of str
        Inputs (expanded, see :func:`diffscreen.io.expand_inputs`).
    clf : :class:`~diffscreen.models.inference.Classifier`
    n : int
    batch_size, seed, uncertainty_weight
        See :func:`suggest_labels`.
    progress : callable, optional
        ``progress(total=N)`` once, then ``progress(advance=k)``.

    Returns
    -------
    dict
        ``items`` (list of (spec, frame) scored), ``probabilities`` (N, C),
        ``features`` (N, F), ``picks`` (K,) indices into ``items``,
        ``reasons`` (K,), ``class_names``, ``n_frames``, ``errors`` (list of
        (spec, frame, problem); frame −1 for a whole file).

    Raises
    ------
    ConfigError
        No frame could be read.
    """
    import torch

    from diffscreen.errors import DiffscreenError
    from diffscreen.io import check_frame, open_source

    model = clf.model.eval()
    linear_head = isinstance(getattr(model, "classifier", None), torch.nn.Linear)
    sources, errors, total = [], [], 0
    for spec in specs:
        try:
            with open_source(spec) as src:
                sources.append((spec, len(src)))
                total += len(src)
        except DiffscreenError as exc:
            errors.append((spec, -1, exc.problem))
    if progress:
        progress(total=total)
    items, probs, feats = [], [], []

    def flush(frames, where):
        if not frames:
            return
        x = clf.preprocess(frames)
        with torch.inference_mode():
            f = model.forward_features(torch.from_numpy(x).to(getattr(clf, "device", "cpu")))
            # one pass when the head is a single Linear layer; otherwise the classifier's own network
            pr = torch.softmax(model.classifier(f), dim=1).cpu().numpy() if linear_head else clf.predict_batch(x)
            f = f.cpu().numpy()
        probs.append(pr)
        feats.append(np.asarray(f, np.float32).reshape(len(frames), -1))
        items.extend(where)

    for spec, count in sources:
        with open_source(spec) as src:
            frames, where = [], []
            for i in range(count):
                try:
                    frames.append(check_frame(src.read(i)))
                    where.append((spec, i))
                except DiffscreenError as exc:
                    errors.append((spec, i, exc.problem))
                if len(frames) == batch_size:
                    flush(frames, where)
                    frames, where = [], []
                if progress:
                    progress(advance=1)
            flush(frames, where)
    if not items:
        raise ConfigError(f"none of the {total} frames in {len(specs)} input(s) could be read")
    P, Fm = np.concatenate(probs), np.concatenate(feats)
    picks = suggest_labels(P, Fm, n, seed=seed, uncertainty_weight=uncertainty_weight)
    return {"items": items, "probabilities": P, "features": Fm, "picks": picks,
            "reasons": pick_reasons(P, Fm, picks, clf.class_names), "class_names": tuple(clf.class_names),
            "n_frames": total, "errors": errors}


def write_suggestions(result: dict, path) -> Path:
    """Write picks as a label CSV to fill in, atomically.

    Columns ``file,frame,label,p_<class>...,reason`` with ``label`` empty; rows
    in pick order.  Once every label is filled in (hit, maybe or miss),
    :func:`diffscreen.io.labels.read_label_csv` (``diffscreen train --labels``)
    reads it; the extra columns are ignored.

    Parameters
    ----------
    result : dict
        From :func:`run_suggestions`.
    path : str or Path

    Returns
    -------
    Path
    """
    import csv
    import io

    from diffscreen.io.atomic import atomic_write_text

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["file", "frame", "label", *[f"p_{c}" for c in result["class_names"]], "reason"])
    for k, reason in zip(result["picks"], result["reasons"]):
        spec, i = result["items"][k]
        w.writerow([spec, i, "", *[f"{v:.4f}" for v in result["probabilities"][k]], reason])
    atomic_write_text(path, buf.getvalue())
    return Path(path)
