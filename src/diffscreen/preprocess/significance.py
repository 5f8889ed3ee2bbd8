"""Per-pixel significance over resolution shells: a detector-invariant network input.

A frame reaches the network as the significance of every pixel against the
background of its own resolution shell, not as ADU.  The idea is the one the
spot-finders of the field share: peakfinder8 (Barty et al. 2014, Cheetah §2.3)
compares each pixel with the mean and standard deviation of its ring of equal
radius, and the DIALS dispersion threshold (Parkhurst et al. 2016, §2) asks
whether a pixel is significant given the background's variance-to-mean ratio
and the detector's gain.  Ke et al. (2018) §2.2 feed ADU through GCN + LCN
instead, whose output follows the detector's gain and noise; that recipe
stays available (``contrast="lcn"``).

For each crop (already scaled so that every output pixel covers the same step
of reciprocal space, :mod:`diffscreen.preprocess.geometry`, so that a ring of
equal radius around the beam is a resolution shell):

1. every pixel is assigned to the shell ``floor(r / shell_px)`` of its
   distance ``r`` from the beam centre in the crop;
2. per shell, the background mean ``μ`` and variance ``v`` are estimated with
   iterative ``k``-σ clipping (peakfinder8's radial statistics), so Bragg
   spots, hot pixels and panel gaps do not enter them;
3. the photon-transfer slope ``g = median(v / μ)`` over shells with a
   positive background estimates the ADU of one photon on this crop (for a
   Poisson background in ADU with gain ``g``, ``v = g μ``); each shell's
   variance is floored at ``g · max(μ, g)``, the Poisson variance or at least
   one photon's, so a nearly empty photon-counting frame does not turn single
   photons into large significances;
4. ``z = (x − μ) / √v``, clipped below at ``low`` (panel gaps and shadows are
   negative, not informative), compressed logarithmically above ``scale`` σ
   and clipped above at ``high`` (one defective pixel cannot dominate a
   frame's input).

The output does not change when the frame is multiplied by a gain or shifted
by an offset (up to the variance floor), so a Pilatus frame of 0–5 counts per
pixel and a CSPAD frame at 30 ADU per photon look alike when they hold the
same spots.  A smooth powder or ice ring fills its own shell and so vanishes
into that shell's background.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
from numba import njit

from diffscreen.errors import ConfigError

__all__ = ["significance", "shell_statistics", "photon_transfer_gain"]


@njit(cache=True, nogil=True)
def _shells(h, w, cx, cy, shell_px, bins):
    nb = 0
    inv = 1.0 / shell_px
    for i in range(h):
        dy = i - cy
        for j in range(w):
            dx = j - cx
            b = int(math.sqrt(dx * dx + dy * dy) * inv)
            bins[i, j] = b
            if b + 1 > nb:
                nb = b + 1
    return nb


@njit(cache=True, nogil=True)
def _stats(x, bins, nb, k, iters, min_count, step, mu, var, cnt):
    h, w = x.shape
    lo = np.full(nb, -np.inf)
    hi = np.full(nb, np.inf)
    s1 = np.zeros(nb)
    s2 = np.zeros(nb)
    for it in range(iters + 1):
        s1[:] = 0.0
        s2[:] = 0.0
        cnt[:] = 0
        for i in range(0, h, step):
            for j in range(0, w, step):
                b = bins[i, j]
                v = x[i, j]
                if v >= lo[b] and v <= hi[b]:
                    s1[b] += v
                    s2[b] += v * v
                    cnt[b] += 1
        for b in range(nb):
            if cnt[b] >= min_count:
                m = s1[b] / cnt[b]
                vv = s2[b] / cnt[b] - m * m
                if vv < 0.0:
                    vv = 0.0
                mu[b] = m
                var[b] = vv
                sd = math.sqrt(vv)
                lo[b] = m - k * sd
                hi[b] = m + k * sd
            else:
                mu[b] = 0.0
                var[b] = 0.0


@njit(cache=True, nogil=True)
def photon_transfer_gain(mu, var, cnt, min_count):
    """ADU of one photon: the median variance-to-mean ratio over shells with a background (step 3).

    For a Poisson background in ADU with gain ``g``, ``var = g · mu``; the
    median over shells is robust to shells holding rings or spots.

    Parameters
    ----------
    mu, var : (n_shells,) float64 ndarray
        Background mean (ADU) and variance (ADU²) per shell (:func:`shell_statistics`).
    cnt : (n_shells,) int64 ndarray
        Pixels behind each shell's estimate.
    min_count : int
        Shells with fewer pixels are left out.

    Returns
    -------
    float
        The gain, ADU per photon; 0 when no shell has a positive background.
    """
    nb = mu.shape[0]
    ratios = np.empty(nb)
    n = 0
    for b in range(nb):
        if cnt[b] >= min_count and mu[b] > 0.0 and var[b] > 0.0:
            ratios[n] = var[b] / mu[b]
            n += 1
    return np.median(ratios[:n]) if n > 0 else 0.0


@njit(cache=True, nogil=True)
def _transform(x, bins, mu, var, cnt, min_count, low, scale, high, out):
    h, w = x.shape
    nb = mu.shape[0]
    g = photon_transfer_gain(mu, var, cnt, min_count)
    rscale = 1.0 / scale
    lowc = low * rscale
    inv = np.zeros(nb)
    for b in range(nb):
        if cnt[b] >= min_count:
            floor = g * max(mu[b], g)
            v = max(var[b], floor)
            if v > 0.0:
                inv[b] = rscale / math.sqrt(v)
    for i in range(h):
        for j in range(w):
            b = bins[i, j]
            z = (x[i, j] - mu[b]) * inv[b]
            if z != z:  # NaN: masked, or outside the frame
                z = 0.0
            elif z < lowc:
                z = lowc
            elif z > 1.0:  # logarithmic above z = scale (value and slope continuous there)
                z = 1.0 + math.log(z)
                if z > high:
                    z = high
            out[i, j] = z
    return g


def _check(crop, shell_px, iters, min_count, step):
    if crop.ndim != 2:
        raise ConfigError(f"the parameter `crop` must be a 2-dimensional array, got shape {crop.shape}")
    if shell_px <= 0:
        raise ConfigError(f"shell_px must be > 0, got {shell_px}")
    if iters < 0 or min_count < 2 or step < 1:
        raise ConfigError(f"need iters >= 0, min_count >= 2 and step >= 1, got {iters}, {min_count}, {step}")


@lru_cache(maxsize=8)
def _shell_map(h: int, w: int, cx: float, cy: float, shell_px: float):
    """Shell index of every pixel (read-only, cached: the frames of a run share one beam centre)."""
    bins = np.empty((h, w), np.int32)
    nb = _shells(h, w, cx, cy, shell_px, bins)
    bins.flags.writeable = False
    return bins, nb


def _shell_stats(x, centre, shell_px, k, iters, min_count, step):
    _check(x, shell_px, iters, min_count, step)
    bins, nb = _shell_map(x.shape[0], x.shape[1], round(float(centre[0]), 4), round(float(centre[1]), 4),
                          float(shell_px))
    mu, var, cnt = np.zeros(nb), np.zeros(nb), np.zeros(nb, np.int64)
    _stats(x, bins, nb, float(k), int(iters), int(min_count), int(step), mu, var, cnt)
    return mu, var, cnt, bins


def shell_statistics(crop, centre, *, shell_px: float = 1.0, k: float = 3.0, iters: int = 4, min_count: int = 8,
                     step: int = 2):
    """Clipped background mean and variance of every resolution shell of a crop.

    Parameters
    ----------
    crop : (S, S) float32 ndarray
        Scaled crop (:meth:`diffscreen.preprocess.Preprocessor.crop`), ADU.
    centre : (float, float)
        Beam centre ``(x, y)`` in crop pixels.
    shell_px : float
        Shell width in crop pixels.
    k : float
        Clipping half-width in standard deviations.
    iters : int
        Clipping iterations after the first, unclipped estimate.
    min_count : int
        Shells with fewer sampled pixels inside the clip have no estimate (0, 0).
    step : int
        The statistics use every ``step``-th row and column (2: a quarter of
        the pixels, ample for shells of 2πr pixels and 4× cheaper).

    Returns
    -------
    mu, var : (n_shells,) float64 ndarray
        Background mean (ADU) and variance (ADU²) of each shell.
    count : (n_shells,) int64 ndarray
        Pixels used for each shell's estimate.
    bins : (S, S) int32 ndarray
        Shell index of every pixel.

    Raises
    ------
    ConfigError
        A crop that is not 2-D, ``shell_px`` <= 0, ``iters`` < 0,
        ``min_count`` < 2 or ``step`` < 1.

    Notes
    -----
    The radial statistics of peakfinder8 (Barty et al. 2014, §2.3) with
    shells in reciprocal space instead of detector pixels.
    """
    x = np.ascontiguousarray(crop, dtype=np.float32)
    return _shell_stats(x, centre, shell_px, k, iters, min_count, step)


def significance(crop, centre, *, shell_px: float = 1.0, k: float = 3.0, iters: int = 4, min_count: int = 8,
                 step: int = 2, low: float = -2.0, scale: float = 2.0, high: float = 8.0, out=None):
    """Per-pixel significance of a scaled crop against its resolution shell's background.

    Parameters
    ----------
    crop : (S, S) float32 ndarray
        Scaled, beam-centred crop (:meth:`diffscreen.preprocess.Preprocessor.crop`),
        any ADU scale; NaN marks pixels touched by masked pixels or the
        area outside the frame: they are left out of the statistics and
        become 0.
    centre : (float, float)
        Beam centre ``(x, y)`` in crop pixels
        (:func:`diffscreen.preprocess.geometry.beam_in_crop`).
    shell_px, k, iters, min_count, step
        As :func:`shell_statistics`.
    low : float
        Lower clip of the significance ``z`` (σ).
    scale : float
        ``u = z / scale`` is passed on linearly up to 1 and as ``1 + ln u``
        above (value and slope continuous): bright spots stay ordered
        without dominating.
    high : float
        Upper clip of the compressed value (8: z ≈ 2,200 at scale 2), so one
        defective pixel cannot dominate a frame's input.
    out : (S, S) float32 ndarray, optional
        Where to write; may be ``crop`` itself.

    Returns
    -------
    (S, S) float32 ndarray
        The compressed significance, in ``[low / scale, high]``; 0 at NaN
        pixels and in shells with fewer than ``min_count`` valid sampled pixels.

    Raises
    ------
    ConfigError
        As :func:`shell_statistics`.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> a = rng.poisson(2.0, (64, 64)).astype(np.float32)
    >>> a[10, 10] = 60.0                                   # a one-pixel spot
    >>> z = significance(a, (31.5, 31.5))
    >>> bool(z[10, 10] > 2.0), abs(float(np.median(z))) < 0.5
    (True, True)
    >>> np.allclose(significance(30 * a, (31.5, 31.5)), z, atol=1e-5)   # the gain drops out
    True
    """
    x = np.ascontiguousarray(crop, dtype=np.float32)
    mu, var, cnt, bins = _shell_stats(x, centre, shell_px, k, iters, min_count, step)
    out = np.empty(x.shape, np.float32) if out is None else out
    _transform(x, bins, mu, var, cnt, int(min_count), float(low), float(scale), float(high), out)
    return out
