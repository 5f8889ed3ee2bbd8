"""Max-pooling a detector window to the network's pixel grid.

Averaging a 1920 × 1920 frame down to a few hundred pixels (the bilinear
resize of Ke et al. 2018 §2.2) divides a one-pixel Bragg spot's contrast by the
number of detector pixels per network pixel: a spot at 5σ of the pixel noise
falls to about 1σ at 5 × 5 pixels per network pixel, below what the network
can see, though it counts towards the frame's label (Ke §3.3.1).  The maximum
over each network pixel's footprint keeps the spot's peak instead; the
background of maxima is then normalised per resolution shell like any other
background (:mod:`diffscreen.preprocess.significance`).  This is the
"maximum projection" binning that hit-finding displays use.

Masked pixels and the area outside the frame take no part: a network pixel
with no valid detector pixel in its footprint is NaN.  When the network pixel
is smaller than the detector pixel (zoom > 1) each takes its nearest
detector pixel.
"""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["max_pool_window", "kernel_pixels"]


@njit(cache=True, nogil=True)
def _pool_down(data, bad, use_bad, oy, edges, low, out):
    """Shrinking: region row ``r`` feeds output row ``oy[r]``, region columns ``edges[c]:edges[c+1]`` column ``c``.

    The rows of one output row (a contiguous run: ``oy`` does not decrease)
    are first reduced column by column over the whole row width, in the
    data's own type, with masked pixels as ``low`` (below every valid value)
    and ``found`` recording whether any pixel of a column was valid; then each
    output pixel takes the maximum of its columns, converted to float32 (a
    monotonic conversion: the same value as converting first).
    """
    h, w = data.shape
    n_out = edges.shape[0] - 1
    acc = np.empty(w, data.dtype)
    found = np.empty(w, np.bool_)
    r = 0
    while r < h:
        o = oy[r]
        first = True
        while r < h and oy[r] == o:
            if use_bad:
                for j in range(w):
                    ok = not bad[r, j]
                    v = data[r, j] if ok else low
                    if first:
                        acc[j] = v
                        found[j] = ok
                    else:
                        acc[j] = max(acc[j], v)
                        found[j] |= ok
            else:
                for j in range(w):
                    acc[j] = data[r, j] if first else max(acc[j], data[r, j])
                    found[j] = True
            first = False
            r += 1
        row = out[o]
        for c in range(n_out):
            m = low
            seen = False
            for j in range(edges[c], edges[c + 1]):
                m = max(m, acc[j])
                seen |= found[j]
            if seen:
                f = np.float32(m)
                if f > row[c] or row[c] != row[c]:  # NaN (nothing valid so far) loses to any value
                    row[c] = f


@njit(cache=True, nogil=True)
def _gather(data, bad, use_bad, iy, ix, out):
    S0, S1 = out.shape
    for o in range(S0):
        r = iy[o]
        if r < 0:
            continue
        for p in range(S1):
            c = ix[p]
            if c < 0 or (use_bad and bad[r, c]):
                continue
            out[o, p] = np.float32(data[r, c])


def _map_down(side: int, out_size: int, first: int, end: int) -> np.ndarray:
    """Output index of window indices ``first .. end-1`` (side >= out_size)."""
    return (np.arange(first, end, dtype=np.int64) * out_size // side).astype(np.int64)


def _map_up(side: int, out_size: int, first: int, end: int) -> np.ndarray:
    """Region index (or -1) of the window pixel nearest each output pixel (side < out_size)."""
    k = ((np.arange(out_size) + 0.5) * side / out_size).astype(np.int64)
    return np.where((k >= first) & (k < end), k - first, -1).astype(np.int64)


def kernel_pixels(data) -> np.ndarray:
    """A window's pixels in a dtype the compiled kernels take: as stored when an integer or a float32/float64 of
    the machine's byte order (not copied), else converted (bool, half precision → float32; a big-endian file read
    as stored → native order).

    Parameters
    ----------
    data : (h, w) array_like
        Any numeric dtype; not modified.

    Returns
    -------
    (h, w) ndarray
    """
    data = np.asarray(data)
    if data.dtype.kind not in "iuf" or data.dtype == np.float16:
        return data.astype(np.float32)
    if not data.dtype.isnative:
        return data.astype(data.dtype.newbyteorder("="))
    return data


def max_pool_window(data, bad, side: int, first_row: int, first_col: int, out_size: int,
                    out: np.ndarray | None = None) -> np.ndarray:
    """Maximum of every output pixel's footprint in a square window of the detector.

    Parameters
    ----------
    data : (h, w) array_like
        The in-frame part of the window (any numeric dtype), not modified;
        row 0 is window row ``first_row``, column 0 window column ``first_col``.
    bad : (h, w) bool array_like or None
        True = masked (left out).
    side : int
        Window side in detector pixels; window index ``i`` falls in output
        pixel ``floor(i · out_size / side)``.
    first_row, first_col : int
        Window indices of ``data[0, 0]`` (≥ 0).
    out_size : int
        Output side.
    out : (out_size, out_size) float32 ndarray, optional
        Where to write.

    Returns
    -------
    (out_size, out_size) float32 ndarray
        Per output pixel the largest valid value in its footprint; NaN where
        the footprint holds no valid pixel (masked, or outside the frame).
        For ``side < out_size``: the nearest window pixel's value.

    Examples
    --------
    >>> a = np.zeros((6, 6), np.int32); a[4, 1] = 7
    >>> float(max_pool_window(a, None, 6, 0, 0, 3)[2, 0])
    7.0
    """
    data = kernel_pixels(data)
    h, w = data.shape
    out = np.empty((out_size, out_size), np.float32) if out is None else out
    out.fill(np.nan)
    use_bad = bad is not None
    b = np.asarray(bad, dtype=bool) if use_bad else np.zeros((1, 1), bool)
    if h == 0 or w == 0:
        return out
    if side >= out_size:
        cols = _map_down(side, out_size, first_col, first_col + w)
        edges = np.searchsorted(cols, np.arange(out_size + 1)).astype(np.int64)  # column c: edges[c]:edges[c+1]
        low = np.iinfo(data.dtype).min if data.dtype.kind in "iu" else -np.inf
        _pool_down(data, b, use_bad, _map_down(side, out_size, first_row, first_row + h), edges,
                   data.dtype.type(low), out)
    else:
        _gather(data, b, use_bad, _map_up(side, out_size, first_row, first_row + h),
                _map_up(side, out_size, first_col, first_col + w), out)
    return out
