"""Max-pooling a window (:func:`diffscreen.preprocess.pooling.max_pool_window`) as whole-array numpy.

Every valid pixel is scattered into its output pixel with ``np.fmax.at``;
output pixels that receive nothing stay NaN.  Enlarging, each output pixel
takes its nearest window pixel.
"""

from __future__ import annotations

import numpy as np

__all__ = ["max_pool_reference"]


def max_pool_reference(data, bad, side: int, first_row: int, first_col: int, out_size: int) -> np.ndarray:
    """What :func:`~diffscreen.preprocess.pooling.max_pool_window` computes, pixel by pixel.

    Parameters and result as that function: ``(h, w)`` pixels (any numeric
    dtype) and mask (True = bad, or None) of the in-frame part of a window
    of ``side`` pixels, starting at window row ``first_row`` and column
    ``first_col``; returns ``(out_size, out_size)`` float32, NaN where no
    valid pixel falls.
    """
    data = np.asarray(data)
    h, w = data.shape
    valid = np.ones((h, w), bool) if bad is None else ~np.asarray(bad, bool)
    out = np.full((out_size, out_size), np.nan, np.float32)
    if side >= out_size:
        oy = np.arange(first_row, first_row + h) * out_size // side
        ox = np.arange(first_col, first_col + w) * out_size // side
        flat = (oy[:, None] * out_size + ox[None, :])[valid]
        np.fmax.at(out.reshape(-1), flat, data[valid].astype(np.float32))  # fmax: NaN (empty) loses
        return out
    k = ((np.arange(out_size) + 0.5) * side / out_size).astype(np.int64)  # nearest window pixel
    rows, cols = k - first_row, k - first_col
    for o, r in enumerate(rows):
        for p, c in enumerate(cols):
            if 0 <= r < h and 0 <= c < w and valid[r, c]:
                out[o, p] = np.float32(data[r, c])
    return out
