"""The keep/discard decision of Ke et al. (2018), §2.1.

A frame is kept when P(hit) + P(maybe) > P(miss), i.e. when the summed
hit-or-maybe probability exceeds 0.5 (winner takes all over the two groups).
"""

from __future__ import annotations

import numpy as np

__all__ = ["hit_probability", "decide"]


def hit_probability(probs, class_names=("hit", "maybe", "miss")) -> np.ndarray:
    """P(hit) + P(maybe) for each frame.

    Parameters
    ----------
    probs : (N, C) array_like
        Class probabilities, columns ordered as ``class_names``.
    class_names : sequence of str
        Must contain ``"miss"``; every other class counts as a hit class.

    Returns
    -------
    (N,) float ndarray
    """
    p = np.asarray(probs, dtype=np.float64)
    miss = list(class_names).index("miss")
    return 1.0 - p[:, miss]


def decide(probs, class_names=("hit", "maybe", "miss")):
    """Per-frame keep decision and 3-class label.

    Parameters
    ----------
    probs : (N, C) array_like
        Class probabilities.
    class_names : sequence of str

    Returns
    -------
    keep : (N,) bool ndarray
        ``P(hit) + P(maybe) > P(miss)`` (Ke §2.1).
    labels : list of str
        ``"miss"`` when not kept; otherwise the more probable of the hit
        classes (so the label always agrees with ``keep``).
    """
    p = np.asarray(probs, dtype=np.float64)
    names = list(class_names)
    miss = names.index("miss")
    keep = hit_probability(p, names) > p[:, miss]
    masked = p.copy()
    masked[:, miss] = -np.inf
    best = masked.argmax(axis=1)
    labels = [names[b] if k else "miss" for b, k in zip(best, keep)]
    return keep, labels
