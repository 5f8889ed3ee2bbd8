"""The jet-streak test of the spot gate with every pair of spots tested: the version before stop 36.

:func:`diffscreen.preprocess.spots._streak_spot_mask` tests only the spots whose azimuth can lie within the line's
tolerance (radius buckets sorted by azimuth) and must give the same mask (tests/test_per_frame_metrics.py).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from diffscreen.preprocess.spots import _distinct_at_least, _poisson_need, _streak_chances

__all__ = ["streak_mask_pairwise"]


@njit(cache=True)
def streak_mask_pairwise(x, y, cx, cy, tol, alpha, min_n, merge_px):
    """:func:`~diffscreen.preprocess.spots.streak_spots`'s test on spot positions ``x``, ``y`` (P,) about the
    centre ``cx``, ``cy``, px → (P,) bool, every pair of spots tested (O(P²))."""
    n = x.size
    dx, dy, r, use, p_in, total = _streak_chances(x, y, cx, cy, tol)
    on = np.zeros(n, np.bool_)
    members = np.empty(n, np.int64)
    kept = np.empty(n, np.int64)
    for i in range(n):
        if not use[i]:
            continue
        s, c = dy[i] / r[i], dx[i] / r[i]
        k = 0
        for j in range(n):
            if use[j] and abs(dx[j] * s - dy[j] * c) <= tol:
                members[k] = j
                k += 1
        if k < min_n:
            continue
        need = _poisson_need(max(total - p_in[i], 0.5), alpha, min_n)
        if k >= need and _distinct_at_least(x, y, members[:k], need, merge_px, kept):
            for q in range(k):
                on[members[q]] = True
    return on
