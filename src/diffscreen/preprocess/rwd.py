"""Row-wise decomposition (RWD) of a preprocessed frame (Xie et al. 2022, §3.4.2, Eq. 2).

Each row ``i`` of the ``S × S`` preprocessed frame (GCN + LCN, Ke et al. 2018
§2.2) becomes one number, ``d_i = p_i^max − p_i^min``: the range of the
pixel values in that row.  A frame becomes a 1-D vector of ``S`` values
(720 in the paper); a Bragg spot raises ``d_i`` of the rows it lies on, so
hits show as spikes above a flat background (Xie Fig. 8).  A 1-D CNN
(:mod:`diffscreen.models.rwd1d`) classifies these vectors.
"""

from __future__ import annotations

import numpy as np

from diffscreen.errors import BadFrameError

__all__ = ["row_ranges"]


def row_ranges(x) -> np.ndarray:
    """Xie et al. (2022) §3.4.2 row-wise decomposition: ``d_i = max − min`` of row ``i``.

    Parameters
    ----------
    x : (N, S, S) or (N, 1, S, S) float16/float32 ndarray
        Preprocessed frames (the network input of :class:`~diffscreen.preprocess.Preprocessor`);
        not modified.  Rows are the second-to-last axis, so ``d_i`` is taken
        along the last (fast-scan) axis.

    Returns
    -------
    (N, 1, S) float32 ndarray
        ``out[n, 0, i] = x[n, i, :].max() − x[n, i, :].min()`` (≥ 0), in the
        units of the preprocessed input.

    Raises
    ------
    BadFrameError
        Wrong number of dimensions, more than one channel, or NaN/inf values
        (named by frame index).

    Examples
    --------
    >>> row_ranges(np.array([[[0, 2, 1], [5, 5, 5], [-1, 3, 0]]], np.float32))[0, 0].tolist()
    [2.0, 0.0, 4.0]
    """
    a = np.asarray(x)
    if a.ndim == 4:
        if a.shape[1] != 1:
            raise BadFrameError(f"RWD expects one channel, got input of shape {a.shape}")
        a = a[:, 0]
    if a.ndim != 3:
        raise BadFrameError(f"RWD expects (N, S, S) or (N, 1, S, S) frames, got shape {a.shape}")
    d = (a.max(axis=-1).astype(np.float32) - a.min(axis=-1).astype(np.float32))[:, None, :]
    bad = ~np.isfinite(d).all(axis=(1, 2))
    if bad.any():
        raise BadFrameError("preprocessed frame holds NaN or infinite values", frame=int(np.flatnonzero(bad)[0]))
    return d
