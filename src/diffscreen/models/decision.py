"""The keep/discard decision of Ke et al. (2018), §2.1, and the spot gate of ``screen``.

A frame is kept when P(hit) + P(maybe) > P(miss), i.e. when the summed
hit-or-maybe probability exceeds 0.5 (winner takes all over the two groups).

``diffscreen screen`` then drops a frame the network keeps when the spot
finder (:func:`diffscreen.preprocess.spots.find_spots`) finds fewer than
:data:`KEEP_MIN_SPOTS` Bragg spots on it off every powder ring and jet streak
(:func:`diffscreen.preprocess.spots.count_spots_off_rings`, scores.csv's
``n_spots_no_rings``): by Ke et al. (2018) §3.3.1's definition of the classes,
a *maybe* has 4–9 spots and a *hit* 10 or more, so a frame with fewer is a
*miss*; and their hits have Bragg spots from single crystals, not rings
(§3.3), so the grains of a powder or ice ring do not count, nor do the
speckles of a liquid jet's streak (§3.1).  The spot
finder's noise model is estimated from each frame, so the gate holds on detectors the network never saw
(docs/benchmarks/generalisation.md), where the network alone keeps most
misses.
"""

from __future__ import annotations

import numpy as np

__all__ = ["hit_probability", "decide", "spot_gate", "KEEP_MIN_SPOTS"]

#: Fewest spots a kept frame needs (Ke et al. 2018 §3.3.1: a *maybe* has 4–9 spots); fixed by the class definition,
#: not tuned.
KEEP_MIN_SPOTS = 4


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


def spot_gate(keep, n_spots, min_spots: int = KEEP_MIN_SPOTS) -> np.ndarray:
    """The network's keep decision, dropped where the spot finder found fewer than ``min_spots`` spots.

    Parameters
    ----------
    keep : (N,) bool array_like
        The network's decision (:func:`decide`).
    n_spots : (N,) int array_like
        Spots found on each frame off every ring and streak
        (:func:`diffscreen.preprocess.spots.count_spots_off_rings`).
    min_spots : int
        0 leaves ``keep`` as it is.

    Returns
    -------
    (N,) bool ndarray

    Examples
    --------
    >>> spot_gate([True, True, False], [12, 3, 40]).tolist()
    [True, False, False]
    """
    keep = np.asarray(keep, dtype=bool)
    return keep & (np.asarray(n_spots) >= min_spots) if min_spots > 0 else keep.copy()
