"""The fast screening path: the reference preprocessing, touching only the pixels it uses.

:class:`FastPreprocessor` gives the same network input as
:class:`~diffscreen.preprocess.Preprocessor` (Ke et al. 2018 §2.2: masked and
negative pixels → 0, scale + crop around the beam centre, GCN + LCN or
linear contrast) at a fraction of the cost:

* **Only the crop window is prepared.**  The reference sets masked and
  negative pixels of the *whole* frame to 0 (a float32 copy of every pixel)
  before cutting the window; here only the window's pixels are converted, and
  with :meth:`FastPreprocessor.plan` + :meth:`FastPreprocessor.from_region` a
  reader can fetch just that hyperslab from the file
  (:meth:`diffscreen.io.hdf5.CXISource.read_region`).  For the default model
  (360 px at Ke's reciprocal pixel) on a 1920 × 1920 LN84 Rayonix frame
  that is a window of about 820–880 px square (the side follows the
  detector distance and wavelength of each frame).
* **Resampling is two sparse matrix products.**  The reference resamples the
  window with ``torch.nn.functional.interpolate`` (bilinear, anti-aliased when
  shrinking).  That operator is separable and linear: ``out = A · win · Aᵀ``
  with ``A`` the (out_size, side) matrix of one axis.  ``A`` holds torch's
  own weights (written out from its kernel, tested against ``interpolate``
  for zooms up and down, fractional or not) and is stored
  sparse (≤ 2·side/out_size + 1 non-zeros a row); columns of ``A`` that fall
  outside the frame are dropped instead of padding the window with zeros.
  The masking and both products are one compiled pass over the window's
  rows (:meth:`FastPreprocessor.resample_window`), which also counts what
  :func:`~diffscreen.io.frame.check_frame` tests.  Agreement with
  :func:`~diffscreen.preprocess.crop_scaled`: float32 rounding only
  (relative 1e-6 of the crop's largest value; the summation order differs).
* **A lean contrast step** per crop (:func:`fast_lcn`): GCN (Eq. 6) and the
  5 × 5 local step (Eqs. 7–9) in float32, the box filter summed row by row
  in one compiled loop that keeps its rows in the cache (the reference's
  :func:`scipy.ndimage.uniform_filter` with reflected borders is the same
  filter; about 2 ms a 720 × 720 crop on one core, against about 4 ms for
  whole-array numpy passes, :func:`box_mean`).  Agreement with
  :func:`~diffscreen.preprocess.lcn`: 1e-4 absolute (the reference computes
  GCN in float64, then rounds).

The linear contrast (Ke Table 8) reuses the reference function on the crop.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from numba import njit

from diffscreen.errors import BadFrameError, ConfigError
from diffscreen.io.base import row_run
from diffscreen.io.frame import Frame, FrameMeta
from diffscreen.preprocess.geometry import beam_centre, crop_window, window_to_crop, zoom_factor
from diffscreen.preprocess.pipeline import Preprocessor, significance_batch
from diffscreen.preprocess.pooling import kernel_pixels, max_pool_window

__all__ = ["CropPlan", "crop_plan", "resample_matrix", "box_mean", "fast_lcn", "FastPreprocessor", "partial_outputs",
           "WindowFlags"]


@dataclass(frozen=True)
class CropPlan:
    """Where the crop of one frame comes from.

    Attributes
    ----------
    shape : (int, int)
        ``(H, W)`` of the whole frame.
    side : int
        Side of the (square) window in detector pixels, before resampling.
    x0, y0 : int
        Detector column and row of the window's first pixel (may be negative
        or past the frame edge: those pixels count as 0).
    out_size : int
        Side of the resampled crop.

    Notes
    -----
    ``rows`` / ``cols`` give the part of the window inside the frame: the
    only pixels read.
    """

    shape: tuple
    side: int
    x0: int
    y0: int
    out_size: int

    @property
    def rows(self) -> tuple[int, int]:
        """``(first, end)`` detector rows of the window inside the frame (end exclusive; may be empty)."""
        a, b = max(self.y0, 0), min(self.y0 + self.side, self.shape[0])
        return a, max(a, b)

    @property
    def cols(self) -> tuple[int, int]:
        """``(first, end)`` detector columns of the window inside the frame (end exclusive; may be empty)."""
        a, b = max(self.x0, 0), min(self.x0 + self.side, self.shape[1])
        return a, max(a, b)

    def to_crop(self, x: float, y: float) -> tuple[float, float]:
        """Detector position ``(x, y)`` (pixels) → position in the resampled crop (pixels)."""
        return window_to_crop((x, y), self.side, self.x0, self.y0, self.out_size)

    @property
    def empty(self) -> bool:
        """True when the window lies wholly outside the frame (the crop is all zero)."""
        (r0, r1), (c0, c1) = self.rows, self.cols
        return r1 <= r0 or c1 <= c0


def crop_plan(shape, centre, zoom: float, out_size: int, shift=(0.0, 0.0)) -> CropPlan:
    """The window :func:`~diffscreen.preprocess.crop_scaled` cuts, without cutting it.

    Parameters
    ----------
    shape : (int, int)
        Frame ``(H, W)``.
    centre, zoom, out_size, shift
        As :func:`~diffscreen.preprocess.geometry.crop_window`.

    Returns
    -------
    CropPlan

    Raises
    ------
    ConfigError
        If ``zoom`` <= 0.
    """
    side, x0, y0 = crop_window(centre, zoom, out_size, shift)  # the window geometry.crop_scaled cuts
    return CropPlan((int(shape[0]), int(shape[1])), side, x0, y0, int(out_size))


def _interp_weights(side: int, out_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows, columns and weights of torch's one-axis bilinear resampling ``side`` → ``out_size``.

    The weights PyTorch's CPU kernel for ``interpolate(..., mode="bilinear",
    align_corners=False, antialias=side > out_size)`` uses, written out:
    shrinking, output ``i`` averages the inputs within ``scale`` of its
    centre ``c = scale·(i + ½)`` with the triangle ``1 − |j + ½ − c| / scale``,
    normalised to sum 1 (the anti-aliased "PIL" filter); enlarging, the two
    nearest inputs of ``scale·(i + ½) − ½`` (clamped at 0) with linear
    weights; ``scale = side / out_size``.  Computed in float32 with torch's
    roundings, so the weights are torch's to the bit (tests/test_fastpath.py),
    in O(out_size × non-zeros per row): resampling a ``side × side`` identity
    instead made every new window side (one per detector distance or photon
    energy) cost about 8 ms.

    Returns
    -------
    rows, cols : (nnz,) int64 ndarray
    weights : (nnz,) float32 ndarray
    """
    f32 = np.float32
    scale = f32(side) / f32(out_size)
    i = np.arange(out_size, dtype=f32)
    if side > out_size:  # anti-aliased triangle of half-width `scale`
        centre = scale * (i + f32(0.5))
        lo = np.maximum((centre - scale + f32(0.5)).astype(np.int64), 0)
        hi = np.minimum((centre + scale + f32(0.5)).astype(np.int64), side)
        width = int((hi - lo).max())
        cols = lo[:, None] + np.arange(width)[None, :]
        u = (cols.astype(f32) - centre[:, None] + f32(0.5)) * (f32(1.0) / scale)
        w = np.maximum(f32(1.0) - np.abs(u), f32(0.0))
        w[cols >= hi[:, None]] = 0.0
        total = np.zeros(out_size, f32)
        for j in range(width):  # torch's order of summation
            total += w[:, j]
        w /= total[:, None]
    else:  # plain bilinear between the two nearest inputs
        # one rounding of scale·(i + ½) − ½, as torch's fused multiply-add
        src = np.maximum((np.float64(scale) * (i + 0.5) - 0.5).astype(f32), f32(0.0))
        i0 = np.minimum(src.astype(np.int64), side - 1)
        lam = np.clip(src - i0.astype(f32), f32(0.0), f32(1.0))
        cols = np.stack([i0, np.minimum(i0 + 1, side - 1)], axis=1)
        w = np.stack([f32(1.0) - lam, lam], axis=1)
    rows = np.broadcast_to(np.arange(out_size)[:, None], cols.shape)
    keep = w > 0
    return rows[keep], cols[keep], w[keep]


@lru_cache(maxsize=64)
def _full_matrix(side: int, out_size: int):
    import scipy.sparse as sp

    if side == out_size:
        return sp.identity(side, dtype=np.float32, format="csr")
    r, c, w = _interp_weights(side, out_size)
    a = sp.coo_matrix((w, (r, c)), shape=(out_size, side)).tocsr()
    a.sum_duplicates()  # enlarging at the last input: both neighbours are the same pixel
    return a


@lru_cache(maxsize=256)
def resample_matrix(side: int, out_size: int, first: int = 0, end: int | None = None):
    """Sparse one-axis operator of :func:`~diffscreen.preprocess.crop_scaled`'s resampling.

    Parameters
    ----------
    side : int
        Input length (window side, detector pixels).
    out_size : int
        Output length.
    first, end : int
        Keep only the input columns ``first:end`` (the part of the window
        inside the frame); default all.

    Returns
    -------
    scipy.sparse.csr_matrix, (out_size, end - first) float32
        ``A`` such that torch's ``interpolate(win, (out_size, out_size),
        mode="bilinear", align_corners=False, antialias=side > out_size)``
        equals ``A_full @ win @ A_full.T``.  The identity when
        ``side == out_size``.
    """
    import scipy.sparse as sp

    end = side if end is None else end
    return sp.csr_matrix(_full_matrix(side, out_size)[:, first:end], dtype=np.float32)


@njit(cache=True, nogil=True)
def _prepare_row(src, bad, use_bad, invalid, clamp, check_finite, dst, flags):
    """One window row ``src`` prepared into ``dst`` as :func:`~diffscreen.preprocess.prepare_pixels` prepares a
    frame (negative values → 0 when ``clamp``, NaN kept; masked pixels → ``invalid``, float32); adds to ``flags``
    [prepared pixels ≠ 0, unmasked pixels ≠ 0, unmasked non-finite pixels]."""
    nz = 0
    raw = 0
    nf = 0
    for j in range(src.shape[0]):
        d = src[j]
        v = np.float32(d)
        if clamp and v < 0:  # NaN stays NaN, as torch's clamp
            v = np.float32(0.0)
        ok = True
        if use_bad and bad[j]:
            v = invalid
            ok = False
        dst[j] = v
        nz += v != 0  # NaN counts, as ndarray.any()
        raw += ok and d != 0
        if check_finite:
            nf += ok and (d != d or d - d != 0)
    flags[0] += nz
    flags[1] += raw
    flags[2] += nf


@njit(cache=True, nogil=True)
def _prepare_resample(data, drs, bad, brs, use_bad, h, w, invalid, clamp, check_finite, ypt, yix, yw, xix, xw, out,
                      ring, row, block, sums, flags):
    """The window's pixels prepared (:func:`_prepare_row`) and resampled by :func:`resample_matrix` on both axes,
    in one pass.

    ``data`` and ``bad`` are the window's ``h × w`` pixels as flat runs (:func:`~diffscreen.io.base.row_run`):
    row ``k`` is ``data[k · drs : k · drs + w]``.  Each window row is prepared once (:func:`_prepare_row`) into
    the ``ring`` of the last ``len(ring)`` rows, which must hold every output row's span of input rows.  Output
    row ``o`` is ``Σ yw · prepared[yix]`` over the CSR row ``o`` of the row operator, accumulated into ``row`` in
    float32, in the operator's order, from 0, and goes to column ``o mod 8`` of ``block`` (``(w + 1, 8)``; its
    last row is the padding taps' 0).  For every 8 output rows, output pixel ``p`` is then
    ``Σ_t xw[t, p] · block[xix[t, p]]`` over its taps ``t`` in the column operator's order (:func:`_taps`), for
    the 8 rows at once (the 8 running ``sums``, one load of the 8 values a tap).  These are the additions and roundings
    scipy's ``csr @ dense`` makes in ``A · (A · win)ᵀ``.
    """
    nring = ring.shape[0]
    S0, S = out.shape
    for b in range(8):
        block[w, b] = 0.0
    nxt = 0
    for o0 in range(0, S0, 8):
        nb = min(8, S0 - o0)
        for b in range(8):
            if b >= nb:
                for j in range(w):
                    block[j, b] = 0.0
                continue
            for j in range(w):
                row[j] = 0.0
            for jj in range(ypt[o0 + b], ypt[o0 + b + 1]):
                k = yix[jj]
                while nxt <= k:
                    _prepare_row(data[nxt * drs:nxt * drs + w], bad[nxt * brs:nxt * brs + w] if use_bad else bad,
                                 use_bad, invalid, clamp, check_finite, ring[nxt % nring], flags)
                    nxt += 1
                a = yw[jj]
                src = ring[k % nring]
                for j in range(w):
                    row[j] += a * src[j]
            for j in range(w):
                block[j, b] = row[j]
        for p in range(S):
            for b in range(8):
                sums[b] = 0.0
            for t in range(xix.shape[0]):
                c = xix[t, p]
                v = xw[t, p]
                for b in range(8):
                    sums[b] += v * block[c, b]
            for b in range(nb):
                out[o0 + b, p] = sums[b]
    while nxt < h:
        _prepare_row(data[nxt * drs:nxt * drs + w], bad[nxt * brs:nxt * brs + w] if use_bad else bad,
                     use_bad, invalid, clamp, check_finite, ring[0], flags)
        nxt += 1


@lru_cache(maxsize=256)
def _taps(side: int, out_size: int, first: int, end: int):
    """:func:`resample_matrix` as the tables of :func:`_prepare_resample`.

    Returns
    -------
    ptr, idx : (out_size + 1,), (nnz,) int64 ndarray
        Its CSR rows: input ``idx[ptr[o]:ptr[o + 1]]`` of output ``o``.
    weights : (nnz,) float32 ndarray
    tap_idx : (T, out_size) int64 ndarray
        The same taps by position: ``tap_idx[t, p]`` is output ``p``'s ``t``-th input (``T`` the most taps of any
        output); an output with fewer taps has input ``end - first`` (one past the last, a 0 the kernel appends)
        with weight 0 for the rest, which adds ``+0`` to its sum.
    tap_w : (T, out_size) float32 ndarray
    span : int
        Most inputs between any output's first and last tap, + 1 (at least 1).
    """
    a = resample_matrix(side, out_size, first, end)
    ptr, idx = a.indptr.astype(np.int64), a.indices.astype(np.int64)
    n = np.diff(ptr)
    out, t = np.repeat(np.arange(out_size), n), np.arange(len(idx)) - np.repeat(ptr[:-1], n)
    tap_idx = np.full((max(int(n.max(initial=0)), 1), out_size), end - first, np.int64)
    tap_w = np.zeros(tap_idx.shape, np.float32)
    tap_idx[t, out], tap_w[t, out] = idx, a.data
    has = n > 0
    span = int((idx[ptr[1:][has] - 1] - idx[ptr[:-1][has]]).max(initial=0)) + 1
    return ptr, idx, a.data, tap_idx, tap_w, span


@dataclass(frozen=True)
class WindowFlags:
    """What :func:`~diffscreen.io.frame.check_frame` tests, counted on a crop window's pixels.

    Attributes
    ----------
    nonzero : bool
        Some prepared pixel (masked and negative pixels replaced) is not 0.
    raw_nonzero : bool
        Some unmasked raw pixel is not 0.
    nonfinite : int
        Unmasked pixels that are NaN or ±inf.
    """

    nonzero: bool
    raw_nonzero: bool
    nonfinite: int

    @property
    def empty(self) -> bool:
        """Every pixel of the window is zero or masked."""
        return not (self.nonzero or self.raw_nonzero)


@lru_cache(maxsize=256)
def partial_outputs(side: int, out_size: int, first: int, end: int) -> np.ndarray:
    """Output rows of :func:`resample_matrix` that draw on input outside ``first:end``.

    Returns
    -------
    (out_size,) bool ndarray
        True where part of the row's weight falls outside the kept columns
        (the frame's edge): those output pixels mix in padding.
    """
    full = np.asarray(resample_matrix(side, out_size).sum(axis=1)).ravel()
    kept = np.asarray(resample_matrix(side, out_size, first, end).sum(axis=1)).ravel()
    return kept < full - 1e-6


_WORK = threading.local()


def _buffer(name: str, shape) -> np.ndarray:
    """A float32 scratch array reused between calls (per thread).

    Fresh temporaries of this size come from ``mmap`` and cost a page fault
    per 4 KiB on every call; reusing them made the LCN step ~5× faster.
    """
    bufs = _WORK.__dict__.setdefault("bufs", {})
    key = (name, tuple(shape))
    b = bufs.get(key)
    if b is None:
        if len(bufs) > 32:
            bufs.clear()
        b = bufs[key] = np.empty(shape, np.float32)
    return b


def box_mean(a: np.ndarray, size: int, out: np.ndarray | None = None) -> np.ndarray:
    """Mean over the ``size × size`` box around every pixel, borders reflected (``c b a | a b c``).

    The filter of :func:`scipy.ndimage.uniform_filter` (``mode="reflect"``) on
    the last two axes, as running sums of shifted slices (in float32; the
    two agree to float32 rounding).

    Parameters
    ----------
    a : (..., H, W) float32 ndarray
    size : int
        Odd box side.
    out : (..., H, W) float32 ndarray, optional
        Where to write (not ``a``).

    Returns
    -------
    (..., H, W) float32 ndarray
    """
    r = size // 2
    out = np.empty(a.shape, np.float32) if out is None else out
    if r == 0:
        np.copyto(out, a)
        return out
    H, W = a.shape[-2:]
    lead = a.shape[:-2]
    if H > r and W > r:
        p = _buffer("pad", lead + (H + 2 * r, W + 2 * r))
        p[..., r : H + r, r : W + r] = a
        for k in range(r):  # symmetric: p[r-1-k] = a[k], p[H+r+k] = a[H-1-k]
            p[..., r - 1 - k, r : W + r] = a[..., k, :]
            p[..., H + r + k, r : W + r] = a[..., H - 1 - k, :]
        for k in range(r):
            p[..., :, r - 1 - k] = p[..., :, r + k]
            p[..., :, W + r + k] = p[..., :, W + r - 1 - k]
    else:  # a window smaller than the box: repeated reflection
        p = np.pad(a, [(0, 0)] * len(lead) + [(r, r), (r, r)], mode="symmetric").astype(np.float32, copy=False)
    rows = _buffer("rows", lead + (H + 2 * r, W))
    np.add(p[..., :, 0:W], p[..., :, 1 : W + 1], out=rows)
    for k in range(2, size):
        rows += p[..., :, k : W + k]
    np.add(rows[..., 0:H, :], rows[..., 1 : H + 1, :], out=out)
    for k in range(2, size):
        out += rows[..., k : H + k, :]
    out *= np.float32(1.0 / (size * size))
    return out


@njit(cache=True, nogil=True)
def _reflect(i: int, n: int) -> int:
    """Index ``i`` of a length-``n`` axis reflected at its ends (``c b a | a b c``), for ``-n <= i < 2n``."""
    if i < 0:
        return -i - 1
    if i >= n:
        return 2 * n - 1 - i
    return i


@njit(cache=True, nogil=True, error_model="numpy")
def _local_contrast(x, sq, r, floor2, out, vx, vq, px, pq):
    """Ke Eqs. 7–9 row by row: ``out = (x − box(x)) / sqrt(max(box(sq) − box(x)², floor2))``.

    ``box`` is the ``(2r+1)²`` mean with reflected borders (:func:`box_mean`'s
    filter).  For each output row the ``2r+1`` rows around it are summed over
    the whole width, then the column sums along the row, so every loop runs
    over a contiguous row held in the cache.  ``vx``, ``vq``: ``(W,)``
    scratch; ``px``, ``pq``: ``(W + 2r,)``; ``out`` must not be ``x``.
    """
    H, W = x.shape
    size = 2 * r + 1
    inv = np.float32(1.0 / (size * size))
    for i in range(H):
        k0 = _reflect(i - r, H)
        for j in range(W):
            vx[j] = x[k0, j]
            vq[j] = sq[k0, j]
        for k in range(1, size):
            kk = _reflect(i - r + k, H)
            for j in range(W):
                vx[j] += x[kk, j]
                vq[j] += sq[kk, j]
        for j in range(W):
            px[r + j] = vx[j]
            pq[r + j] = vq[j]
        for k in range(r):
            px[r - 1 - k] = vx[k]
            pq[r - 1 - k] = vq[k]
            px[W + r + k] = vx[W - 1 - k]
            pq[W + r + k] = vq[W - 1 - k]
        for j in range(W):
            vx[j] = px[j]
            vq[j] = pq[j]
        for k in range(1, size):
            for j in range(W):
                vx[j] += px[j + k]
                vq[j] += pq[j + k]
        for j in range(W):
            m = vx[j] * inv
            var = vq[j] * inv - m * m
            if var < floor2:  # NaN stays NaN
                var = floor2
            out[i, j] = (x[i, j] - m) / np.sqrt(var)


def fast_lcn(crop, *, size: int = 5, std_floor: float = 1.0) -> np.ndarray:
    """GCN + LCN of one crop (Ke et al. 2018 Eqs. 6–9), float32, in few passes.

    The same steps as :func:`diffscreen.preprocess.lcn` on one frame: GCN
    (Eq. 6, mean and population std of the crop; a crop with std < 1e-6 is
    only mean-subtracted), then ``(x - μ_box) / max(σ_box, std_floor)`` over
    the ``size × size`` box with reflected borders (Eqs. 7–9).  Differences
    from the reference: float32 instead of float64 for the GCN step and
    float32 sums for the box filter, computed row by row in a compiled loop
    (:func:`_local_contrast`; :func:`box_mean` for crops narrower than the
    box), i.e. float32 rounding (tests: < 1e-4 absolute).

    Parameters
    ----------
    crop : (S, S) float32 ndarray
        Overwritten with the result.
    size : int
        Box side (odd).
    std_floor : float
        Local std floor (> 0).

    Returns
    -------
    (S, S) float32 ndarray
        ``crop`` itself.

    Raises
    ------
    ConfigError
        Even or non-positive ``size``, ``std_floor`` <= 0, or a crop that is
        not float32.
    """
    import torch

    if size < 1 or size % 2 == 0:
        raise ConfigError(f"LCN box size must be a positive odd integer, got {size}")
    if std_floor <= 0:
        raise ConfigError(f"LCN std_floor must be > 0, got {std_floor}")
    x = crop
    if x.dtype != np.float32:
        raise ConfigError(f"fast_lcn needs a float32 crop, got {x.dtype}")
    n = x.size
    mu = float(x.mean(dtype=np.float64))
    x -= np.float32(mu)
    both = _buffer("both", (2,) + x.shape)
    sq = both[1]
    with np.errstate(over="ignore"):  # overflow is caught just below
        np.square(x, out=sq)
    ss = sq.sum(dtype=np.float64)
    if not np.isfinite(ss):  # a pixel beyond ~1e19 ADU: its square overflows float32; GCN is scale-free
        x *= np.float32(1.0 / np.abs(x).max())
        np.square(x, out=sq)
        ss = sq.sum(dtype=np.float64)
    sd = float(np.sqrt(ss / n))  # population std (float64 sum, no temporary)
    if sd < 1e-6:
        sd = 1.0
    x *= np.float32(1.0 / sd)  # Eq. 6
    sq *= np.float32(1.0 / (sd * sd))
    # Eqs. 7-9: local mean and mean of squares; the local std floored,
    # max(sqrt(max(var, 0)), floor) = sqrt(max(var, floor²))
    r = size // 2
    H, W = x.shape
    if H > r and W > r:
        out = _buffer("lcn", x.shape)
        _local_contrast(x, sq, r, np.float32(float(std_floor) ** 2), out, _buffer("vx", (W,)), _buffer("vq", (W,)),
                        _buffer("px", (W + 2 * r,)), _buffer("pq", (W + 2 * r,)))
        np.copyto(x, out)
        return x
    both[0] = x  # a crop narrower than the box: repeated reflection, with box_mean
    m, v = box_mean(both, size, out=_buffer("box", both.shape))
    v -= np.square(m)
    torch.from_numpy(v).clamp_min_(float(std_floor) ** 2).sqrt_()
    x -= m
    x /= v
    return x


class FastPreprocessor(Preprocessor):
    """:class:`~diffscreen.preprocess.Preprocessor`, fast: same input for the network.

    A drop-in subclass (same ``config``, ``crop``, ``normalise``,
    ``random_shifts`` and call).

    Parameters
    ----------
    config : PreprocessConfig, optional

    Notes
    -----
    Three ways in: :meth:`__call__` on whole :class:`Frame` objects (what
    :class:`~diffscreen.preprocess.Preprocessor` takes); :meth:`plan` then
    :meth:`from_region` when the reader fetches only the window's pixels.
    Agreement with the reference (tests/test_fastpath.py): crops to 1e-5 of
    their largest value, LCN output to 1e-4 absolute.  Scratch arrays are
    reused between calls (per thread), which avoids a page fault per 4 KiB
    of every temporary.  Frames whose beam
    centre, pixel size, distance or wavelength change from frame to frame
    are fine: the plan is computed per frame, the sparse operators are cached
    per (window side, in-frame part).

    Examples
    --------
    >>> fast = FastPreprocessor(PreprocessConfig(out_size=360))    # doctest: +SKIP
    >>> x = fast(frames)                                         # doctest: +SKIP
    """

    def plan(self, meta: FrameMeta, shape, shift=(0.0, 0.0)) -> CropPlan:
        """Crop window of a frame from its metadata and shape alone (no pixels).

        Parameters
        ----------
        meta : FrameMeta
        shape : (int, int)
            ``(H, W)``.
        shift : (float, float)
            Crop offset in output pixels.
        """
        c = self.config
        z = zoom_factor(meta, shape, s_per_px=c.s_per_px, fallback_size=c.fallback_size)
        return crop_plan(shape, beam_centre(meta, shape), z, c.out_size, shift)

    def from_region(self, data, bad, plan: CropPlan) -> np.ndarray:
        """Crop (before contrast) from the raw pixels of the window only.

        Parameters
        ----------
        data : (r1 - r0, c1 - c0) array_like
            Raw pixels of ``plan.rows`` × ``plan.cols`` (any numeric dtype).
        bad : same shape bool array_like or None
            True = masked.
        plan : CropPlan

        Returns
        -------
        (out_size, out_size) float32 ndarray
        """
        if plan.empty:
            return np.full((plan.out_size, plan.out_size), self.config.invalid_value, np.float32)
        if self.config.pooling == "max":
            (r0, _), (c0, _) = plan.rows, plan.cols
            return max_pool_window(data, bad, plan.side, r0 - plan.y0, c0 - plan.x0, plan.out_size)
        return self.resample_window(data, bad, plan)[0]

    def resample_window(self, data, bad, plan: CropPlan,
                        out: np.ndarray | None = None) -> tuple[np.ndarray, WindowFlags]:
        """The crop (before contrast) of a window's raw pixels, in one compiled pass, and the window's
        :class:`WindowFlags`.

        Masked pixels become ``config.invalid_value`` and negative ones 0 (when ``config.clamp_negative``), as
        :func:`~diffscreen.preprocess.prepare_pixels` does to a frame; the window is then resampled by
        :func:`resample_matrix` on both axes (``A · win · Aᵀ``), and output pixels that mix in the padding outside
        the frame take the invalid value when it is not 0.  The crop is the same to the bit as converting,
        masking, then multiplying by the two sparse operators with scipy (the same float32 additions in the same
        order; tests/test_fastpath.py against tests/reference/window_resample.py), at under half that cost on a
        1479 px window (2.4–3.3 against about 6.5 ms with the window check): the window is read once, row by row,
        and no prepared copy, intermediate product or transposed copy of it is made.

        Parameters
        ----------
        data : (r1 - r0, c1 - c0) array_like
            Raw pixels of ``plan.rows`` × ``plan.cols`` (any numeric dtype), not modified.
        bad : same shape bool array_like or None
            True = masked.
        plan : CropPlan
            Not empty.
        out : (out_size, out_size) float32 ndarray, optional
            Where to write the crop.

        Returns
        -------
        crop : (out_size, out_size) float32 ndarray
        flags : WindowFlags

        Raises
        ------
        BadFrameError
            ``data`` or ``bad`` does not have the plan's window shape.
        """
        S, c = plan.out_size, self.config
        (r0, r1), (c0, c1) = plan.rows, plan.cols
        data = kernel_pixels(data)
        use_bad = bad is not None
        bad = np.asarray(bad, dtype=bool) if use_bad else np.zeros((1, 1), bool)
        for name, a in (("pixels", data), ("mask", bad if use_bad else data)):
            if a.shape != (r1 - r0, c1 - c0):
                raise BadFrameError(f"window {name}: shape {a.shape}, the plan needs {(r1 - r0, c1 - c0)}")
        out = np.empty((S, S), np.float32) if out is None else out
        fy, ey, fx, ex = r0 - plan.y0, r1 - plan.y0, c0 - plan.x0, c1 - plan.x0
        ypt, yix, yw, _, _, span = _taps(plan.side, S, fy, ey)
        _, _, _, xix, xw, _ = _taps(plan.side, S, fx, ex)
        (d, drs), (b, brs) = row_run(data), row_run(bad)
        flags = np.zeros(3, np.int64)
        w = data.shape[1]
        _prepare_resample(d, drs, b, brs, use_bad, data.shape[0], w, np.float32(c.invalid_value),
                          bool(c.clamp_negative and data.dtype.kind != "u"), data.dtype.kind == "f", ypt, yix, yw, xix,
                          xw, out, _buffer("ring", (span, w)), _buffer("row", (w,)), _buffer("block", (w + 1, 8)),
                          _buffer("sums", (8,)), flags)
        pad = c.invalid_value
        if pad != 0:  # output pixels that mix in the padding outside the frame take its value
            out[partial_outputs(plan.side, S, fy, ey)] = pad
            out[:, partial_outputs(plan.side, S, fx, ex)] = pad
        return out, WindowFlags(bool(flags[0]), bool(flags[1]), int(flags[2]))

    def crop(self, frame: Frame, shift=(0.0, 0.0)) -> np.ndarray:
        """As :meth:`Preprocessor.crop <diffscreen.preprocess.Preprocessor.crop>`, reading only the window."""
        return self.crop_with_centre(frame, shift)[0]

    def crop_with_centre(self, frame: Frame, shift=(0.0, 0.0)) -> tuple[np.ndarray, tuple[float, float]]:
        """:meth:`crop` and the beam centre ``(x, y)`` in its pixels, from one crop plan."""
        p = self.plan(frame.meta, frame.data.shape, shift)
        (r0, r1), (c0, c1) = p.rows, p.cols
        crop = self.from_region(frame.data[r0:r1, c0:c1], frame.mask[r0:r1, c0:c1], p)
        return crop, p.to_crop(*beam_centre(frame.meta, frame.data.shape))

    def normalise(self, crops: np.ndarray, centres=None) -> np.ndarray:
        """Contrast step on crops ``(N, S, S)``; returns a new float32 array of the same shape.

        ``centres`` as :meth:`Preprocessor.normalise <diffscreen.preprocess.Preprocessor.normalise>`.
        """
        return self.normalise_inplace(np.array(crops, dtype=np.float32, copy=True), centres)

    def normalise_inplace(self, crops: np.ndarray, centres=None) -> np.ndarray:
        """:meth:`normalise` overwriting ``crops`` ``(N, S, S)`` float32 (no copy); returns it."""
        c = self.config
        if c.contrast == "lcn":
            for k in range(len(crops)):
                fast_lcn(crops[k], size=c.lcn_size, std_floor=c.std_floor)
            return crops
        if c.contrast == "snr":
            return significance_batch(crops, centres, c)
        from diffscreen.preprocess.contrast import linear_contrast

        return linear_contrast(crops, m=c.linear_m)

    def __call__(self, frames, shifts=None) -> np.ndarray:
        """Preprocess a batch of frames; as :class:`~diffscreen.preprocess.Preprocessor`.

        Parameters
        ----------
        frames : sequence of Frame
        shifts : (N, 2) array_like, optional

        Returns
        -------
        (N, 1, out_size, out_size) float32 ndarray
        """
        n, S = len(frames), self.config.out_size
        out = np.empty((n, S, S), np.float32)
        centres = []
        for k, f in enumerate(frames):
            out[k], centre = self.crop_with_centre(f, (0.0, 0.0) if shifts is None else tuple(shifts[k]))
            centres.append(centre)
        return self.normalise_inplace(out, centres)[:, None]
