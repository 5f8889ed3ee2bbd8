"""Per-frame numbers with the preprocessing's noise model: spots, resolution, ice and powder rings.

What ``diffscreen screen`` writes after the probabilities in scores.csv
(:data:`METRIC_COLUMNS`: ``n_spots``, ``n_spots_no_rings``, ``d_min_A``,
``ice_rings``, ``powder_rings``, ``jet_streak``) and what it stores as the
kept frames' peak lists in hits.cxi.  ``n_spots_no_rings``, the spot gate's
count, leaves out the spots on powder or ice rings (:func:`ring_spots`) and
on a jet streak (:func:`streak_spots`).  Everything is computed on
the frame at native detector resolution, from one set of per-shell background
statistics: those of the significance input of the network
(:mod:`diffscreen.preprocess.significance`), here over 1-pixel rings of the
detector about the beam centre instead of the crop's rings.

**The noise model** (:func:`~diffscreen.preprocess.significance.shell_statistics`
and step 3 of :mod:`~diffscreen.preprocess.significance`): per ring, the
background mean ``μ`` and variance ``v`` after iterative 3σ clipping
(peakfinder8's radial statistics, Barty et al. 2014, *J. Appl. Cryst.* 47,
1118, §2.3); the photon-transfer gain ``g``, the ADU of one photon, is the
slope of ``v`` on ``μ`` over the rings where the rings agree on it, else the
median ratio ``v / μ`` (:func:`photon_gain`: a read noise, the same in every
ring, makes the ratio overestimate ``g`` on a background of a tenth of a
photon per pixel or less; ``bench/gain_fit.py``); each ring's variance is
floored at ``g · max(μ, g)``.

**Spots** (:func:`find_spots`).  A pixel is *strong* when its significance
``z = (x − μ) / √v`` against its ring reaches ``pixel_sigma``; strong pixels
are joined into 8-connected components; a component is a spot when it has
``min_pixels`` to ``max_pixels`` pixels and its integrated signal-to-noise
ratio ``S / √(g S + Σ v)`` (``S`` the summed background-subtracted ADU,
``Σ v`` the background variance of its pixels, ``g S`` the signal's own
Poisson variance) reaches ``spot_snr``.  This is the scheme of both peers:
peakfinder8 thresholds each pixel against its ring's mean and σ, joins
connected pixels and asks for a minimum integrated SNR (Barty et al. 2014);
DIALS's dispersion threshold asks whether a pixel is significant given the
background's variance-to-mean ratio (the index of dispersion, i.e. the gain)
and keeps connected strong pixels (Parkhurst et al. 2016, *J. Appl. Cryst.*
49, 1912, §2; DIALS estimates the background in a local 7 × 7 window, we in
the ring, as peakfinder8 does).  Masked pixels are never strong and never
enter the statistics.

**Pixel rows and columns of their own** (:func:`line_response`).  A ring's
background is one number, but some whole pixel columns or rows of a detector
see more (or less) of it than their neighbours: the double-size pixels
between the chips of a JUNGFRAU, EIGER or CSPAD module, a CCD's hot column,
a readout channel with its own gain.  Against the ring's background every
such line is a ridge, and its noise breaks it into rows of false spots.
Before the spots are found, each column's background response is measured
from the frame itself, as the sum of its pixels that are not strong over the
sum of their rings' means, and compared with the running median of the
``line_window`` columns about it; a column that exceeds its neighbours
by more than ``line_sigma`` standard errors (each pixel's ring variance,
summed) gets its own factor ``f``, and the rows likewise.  A pixel's
background is then ``f_column · f_row · μ`` and its variance ``f_column ·
f_row · v`` (the photons of a larger pixel).  Only lines brighter than their
neighbours are corrected: a dim line (a detector's edge row, a shadowed
column) makes no false spots, and on a CCD, whose read noise does not shrink
with the signal, a lowered background would make some.  A smooth change
across the frame (polarisation, a shadow's edge) moves the neighbours too, so
it is left to the rings as before; a column whose excess is within its noise
keeps ``f = 1``.  A flat-field or a detector's own calibration does the
same where it exists; this needs none.  The settings were chosen on
simulated frames only (``bench/line_response.py``, ``docs/line_response.md``).

The thresholds (:data:`DEFAULT_SPOT_CONFIG`) were chosen on simulated frames
only, never on real ones: ``bench/spot_thresholds.py`` compares the count with
the simulator's detectable spots (``SimFrame.n_spots``: integrated SNR ≥ 5 from
the noise-free expectation, :mod:`diffscreen.simulate.run`) over frames of
several presets and picks the setting with the best rank correlation whose
median count ratio is nearest 1 (``bench/results/spot_thresholds.json``;
``docs/per_frame_metrics.md``).

**Resolution** (:func:`frame_metrics`).  Each spot's Bragg spacing follows from
the geometry (flat detector normal to the beam: ``2θ = atan(r p / D)``,
``d = λ / (2 sin θ)``); ``d_min_A`` is the spacing of the outermost spot
(``d_quantile`` 1: the largest ``1/d``) among the spots off every ring and
streak, the spots the gate counts: the resolution to which the crystal's own
Bragg spots reach, as DIALS's per-image ``estimated_d_min`` takes its
outermost spot, with the ice rings left out (Parkhurst et al. 2016 §2; a
ring grain or a streak is not the crystal's).  Chosen on simulated frames
against the outermost spot of SNR ≥ 5 (``bench/d_min.py``,
``docs/d_min.md``; on the check seeds its median error is 0.06 Å, that of the
95th percentile over every spot, the rule before, 0.36 Å).  Empty without
geometry or without such a spot.

**Rings** (:func:`ring_flags`).  A smooth ice or powder ring fills its own
resolution shell, so it raises that shell's background above its neighbours'.

*Ice* is tested as a pattern, not line by line.  The profile is the mean of
the pixels of each 1-px ring that are not strong (every pixel, spots left
out; :func:`find_spots` sums them in the same pass).  Around each
hexagonal-ice Ih line (:data:`ICE_RINGS_D_A`) on the detector, at radius
``r``, the rings within ±(``ice_fit_px`` + ``ice_fit_frac`` · r) are fitted
by weighted least squares with a quadratic in the radius (the water ring, the
air scatter) plus a Gaussian of σ ``ice_width_px`` at every ice line in that
range.  The line's excess ``E_k`` is its Gaussian's area; its standard error
``e_k`` comes from the rings' variances and is scaled by √(χ²/dof) where the
fit leaves more scatter than those predict (an unmodelled ring, a structured
background).  The lines are combined by the matched filter of the Ih powder
pattern, the relative intensities ``a_k`` (:data:`ICE_RINGS_REL`) as the
template: ``Z = Σ a_k E_k / e_k² / √(Σ a_k² / e_k²)``.  ``ice_rings`` is 1
when ``Z ≥ ring_sigma`` and ``Z`` without the line with the largest term
``a_k E_k / e_k²`` is still ``≥ ice_rest_sigma``, so that one powder ring on
one ice line is not ice; where only one line can be measured it needs
``Z ≥ ice_single_sigma``.

*Powder*: the profile of the rings' clipped means ``μ(r)`` minus its running
median over ``ring_window`` rings, divided by the quadrature sum of the
residuals' robust running spread (1.4826 × the median absolute deviation)
and each ring mean's statistical error; ``powder_rings`` is 1 when a ring
farther than ±(1.5 px + 0.5 %) from every ice line reaches ``powder_sigma``.

The ice test's settings were chosen on simulated frames only
(``bench/ice_flag.py --choose``, design seeds) and measured on other seeds
(``docs/per_frame_metrics.md``).  Both flags are empty without geometry.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from functools import lru_cache

import numpy as np
from numba import njit

from diffscreen.errors import ConfigError
from diffscreen.io.frame import Frame
from diffscreen.preprocess.geometry import beam_centre, reciprocal_pixel, recorded_beam_centre
from diffscreen.preprocess.significance import _stats, photon_transfer_gain

__all__ = ["SpotConfig", "DEFAULT_SPOT_CONFIG", "Spots", "FrameMetrics", "METRIC_COLUMNS", "ICE_RINGS_D_A",
           "ICE_RINGS_REL", "SPOT_FINDER_VERSION", "find_spots", "line_response", "ring_spots", "streak_spots",
           "ring_and_streak_spots", "feature_centre", "fit_ring_centre", "count_spots_off_rings", "spot_resolution",
           "ring_flags", "frame_metrics", "d_min_of", "photon_gain"]

#: Raised whenever a change to the code of the spot finder or of its ring, streak and line tests changes a count
#: with the same settings (2: the pixel lines' own background; 3: the gain from the photon-transfer slope).  Part of
#: :meth:`SpotConfig.to_dict`, which keys a resumed screen's method identity and a benchmark's cached counts, so
#: counts of two versions are never mixed.
SPOT_FINDER_VERSION = 3

#: scores.csv columns of :class:`FrameMetrics`, in order
METRIC_COLUMNS = ("n_spots", "n_spots_no_rings", "d_min_A", "ice_rings", "powder_rings", "jet_streak")

#: Hexagonal ice Ih powder lines, d in Å (the strong (100), (002), (101) and the weaker (102), (110), (103),
#: (112)); the lines :data:`diffscreen.simulate.presets.ICE_RINGS_D_A` draws (copied: preprocess does not
#: import simulate).
ICE_RINGS_D_A = (3.897, 3.669, 3.441, 2.671, 2.249, 2.072, 1.918)
#: Relative peak intensities of those lines (the standard Ih powder pattern, approximate; the same numbers as
#: :data:`diffscreen.simulate.presets.ICE_RINGS_D_A`): the weights of the ice test's matched filter.
ICE_RINGS_REL = (1.0, 0.6, 0.55, 0.2, 0.25, 0.2, 0.15)


@dataclass(frozen=True)
class SpotConfig:
    """Settings of the spot finder and the ring tests.

    Attributes
    ----------
    pixel_sigma : float
        Significance ``z`` at which a pixel is strong (σ of its ring's background).
    spot_snr : float
        Integrated signal-to-noise ratio a spot needs.
    min_pixels, max_pixels : int
        Allowed spot size, connected strong pixels.
    clip_sigma : float
        Clipping half-width of the ring statistics (σ).
    iters : int
        Clipping iterations.
    step : int
        The ring statistics use every ``step``-th row and column.
    sector_px : int
        Pixels per azimuthal sector of a ring (each ring is split into
        sectors of about this many pixels, so that a background that changes
        around the ring, polarisation, a kapton or strip shadow, is followed).
    max_sectors : int
        Most sectors of one ring; 1 (the default): whole rings, the
        statistics of the significance input (sectors of fewer sampled
        pixels gave noisier estimates and more false spots on the simulated
        frames, ``bench/spot_thresholds.py``).
    min_count : int
        Rings with fewer sampled pixels have no estimate (their pixels are never strong).
    d_quantile : float
        Quantile of ``1/d`` over the spots off every ring and streak that
        gives ``d_min_A`` (1: the outermost spot).
    ring_window : int
        Running-median window of the powder test, shells (odd).
    ring_sigma : float
        Combined significance of the ice lines' excess (σ) that makes ``ice_rings``.
    ice_rest_sigma : float
        Combined significance the ice lines still need without the line with
        the largest term of the sum (one powder ring on one ice line is not ice).
    ice_single_sigma : float
        Significance needed when only one ice line can be measured.
    ice_fit_px, ice_fit_frac : float
        Each ice line's background is fitted over ±(``ice_fit_px`` +
        ``ice_fit_frac`` · r) rings around its radius r (px).
    ice_width_px : float
        σ of the Gaussian ring profile fitted at each ice line, px.
    powder_sigma : float
        Excess that makes a ring away from the ice lines.
    ring_min_count : int
        Shells with fewer sampled pixels are left out of the ring tests (the
        ice test's profile, which uses every pixel, needs ``step``² times as many).
    max_spots : int
        At most this many components are examined (the brightest are not
        chosen: the first in row order); a frame with more is counted up to it.
    ring_spot_alpha : float
        A spot is on a ring (:func:`ring_spots`) when its band of radii holds
        so many distinct spots that the local radial density of the frame's
        spots gives at most this Poisson probability of as many.
    ring_spot_min : int
        Fewest distinct spots that make a band a ring.
    ring_spot_window : float
        The local density is counted over ±``ring_spot_window`` band half-widths.
    ring_spot_merge_px : float
        Spots of a band closer than this (px) count once (one split spot is not a ring).
    ring_spot_widen : float
        Spots within ±(1 + ``ring_spot_widen``) half-widths of a ring spot's
        radius are on the ring too (the grains of a ring wider than the band).
    ring_centre_alpha : float or None
        On a frame whose file records no beam centre, a centre found from the
        spots' rings (:func:`fit_ring_centre`) stands in for it when a band
        about it passes the ring test at this stricter probability; None: the
        frame centre stands in, as for every other use of the beam centre.
    ring_centre_grid : int
        Candidate centres of that search along each side of the frame.
    ring_centre_max_spots : int
        The search uses at most this many spots, the brightest (its time grows with their number).
    ring_centre_min_rings : int
        A fitted centre stands in only with at least this many concentric
        rings about it (with the centre free, the search finds one band of
        chance alignments among scattered spots far more often than two).
        The two acceptance settings were chosen on simulated frames with their
        beam centre taken out (``bench/ring_centre.py``): one ring scored
        higher there only by taking chance alignments off, so two rings ship.
    streak_px : float or None
        Spots within this distance (px) of one line through the beam centre
        make a jet streak (:func:`streak_spots`); None: no streak test.
    line_sigma : float or None
        A pixel column or row whose background response exceeds its
        neighbours' by more than this many standard errors gets its own
        factor (:func:`line_response`); None: every line has factor 1.
    line_window : int
        Columns (rows) of the running median that a line is compared with (odd).
    gain_fit_spread : float or None
        The gain is the photon-transfer slope where the shells' pairwise
        slopes agree to this (their interquartile range over their median),
        else the median ratio (:func:`photon_gain`); None: the median ratio.
    """

    pixel_sigma: float = 4.0
    spot_snr: float = 5.0
    min_pixels: int = 3
    max_pixels: int = 1000
    clip_sigma: float = 3.0
    iters: int = 2
    step: int = 2
    sector_px: int = 96
    max_sectors: int = 1
    min_count: int = 8
    d_quantile: float = 1.0
    ring_window: int = 41
    ring_sigma: float = 6.0
    ice_rest_sigma: float = 3.0
    ice_single_sigma: float = 8.0
    ice_fit_px: float = 8.0
    ice_fit_frac: float = 0.06
    ice_width_px: float = 2.0
    powder_sigma: float = 8.0
    ring_min_count: int = 40
    max_spots: int = 20000
    ring_spot_alpha: float = 1e-3
    ring_spot_min: int = 3
    ring_spot_window: float = 10.0
    ring_spot_merge_px: float = 8.0
    ring_spot_widen: float = 1.0
    ring_centre_alpha: float | None = 1e-6
    ring_centre_grid: int = 40
    ring_centre_max_spots: int = 300
    ring_centre_min_rings: int = 2
    streak_px: float | None = 3.0
    line_sigma: float | None = 5.0
    line_window: int = 9
    gain_fit_spread: float | None = 2.0

    def __post_init__(self):
        if not (self.pixel_sigma > 0 and self.spot_snr > 0 and self.clip_sigma > 0 and self.ring_sigma > 0):
            raise ConfigError("spots: pixel_sigma, spot_snr, clip_sigma and ring_sigma must be > 0")
        if not 1 <= self.min_pixels <= self.max_pixels:
            raise ConfigError("spots: need 1 <= min_pixels <= max_pixels")
        if not 0 < self.d_quantile <= 1:
            raise ConfigError("spots: d_quantile must be in (0, 1]")
        if self.ring_window < 5 or self.ring_window % 2 == 0:
            raise ConfigError("spots: ring_window must be odd and >= 5")
        if not (self.ice_single_sigma > 0 and self.ice_width_px > 0 and self.ice_fit_px > 0 and self.ice_fit_frac >= 0):
            raise ConfigError("spots: ice_single_sigma, ice_width_px and ice_fit_px must be > 0, ice_fit_frac >= 0")
        if not (0 < self.ring_spot_alpha < 1 and self.ring_spot_min >= 2 and self.ring_spot_window > 1
                and self.ring_spot_merge_px >= 0 and self.ring_spot_widen >= 0):
            raise ConfigError("spots: need 0 < ring_spot_alpha < 1, ring_spot_min >= 2, ring_spot_window > 1, "
                              "ring_spot_merge_px >= 0 and ring_spot_widen >= 0")
        if not ((self.ring_centre_alpha is None or 0 < self.ring_centre_alpha < 1) and self.ring_centre_grid >= 1
                and self.ring_centre_max_spots >= 1 and self.ring_centre_min_rings >= 1
                and (self.streak_px is None or self.streak_px > 0)):
            raise ConfigError("spots: need 0 < ring_centre_alpha < 1 (or None), ring_centre_grid >= 1, "
                              "ring_centre_max_spots >= 1, ring_centre_min_rings >= 1 and streak_px > 0 (or None)")
        if not ((self.line_sigma is None or self.line_sigma > 0) and self.line_window >= 3 and self.line_window % 2):
            raise ConfigError("spots: need line_sigma > 0 (or None) and an odd line_window >= 3")
        if self.gain_fit_spread is not None and not self.gain_fit_spread > 0:
            raise ConfigError("spots: gain_fit_spread must be > 0 (or None)")

    def to_dict(self) -> dict:
        """The settings and :data:`SPOT_FINDER_VERSION` (``version``): what makes two counts comparable."""
        return {**asdict(self), "version": SPOT_FINDER_VERSION}


#: The settings diffscreen screens with (chosen on simulated frames: bench/spot_thresholds.py).
DEFAULT_SPOT_CONFIG = SpotConfig()


@dataclass
class Spots:
    """Spots found on one frame.

    Attributes
    ----------
    x, y : (P,) float32 ndarray
        Centroids (background-subtracted intensity weighted), px, pixel centres at integers.
    intensity : (P,) float32 ndarray
        Summed background-subtracted intensity, ADU.
    snr : (P,) float32 ndarray
        Integrated signal-to-noise ratio.
    n_pixels : (P,) int32 ndarray
    gain : float
        The photon-transfer slope ``g`` of the frame (ADU per photon, estimated).
    shells : tuple
        ``(mu, var, count, shell_px, bg_mean, bg_count)``: the ring statistics
        (for :func:`ring_flags`): per 1-px ring the clipped background mean
        (ADU) and variance (ADU²) and the sampled pixels behind them, the ring
        width (px), and the mean (ADU) and number of all the ring's pixels
        that are not strong (float64, float64, int64; float; float64, int64).
    """

    x: np.ndarray
    y: np.ndarray
    intensity: np.ndarray
    snr: np.ndarray
    n_pixels: np.ndarray
    gain: float
    shells: tuple

    def __len__(self) -> int:
        return len(self.x)

    def table(self) -> np.ndarray:
        """(P, 4) float32 x, y, intensity, SNR: the peak layout of :class:`~diffscreen.io.cxi.CXIWriter`."""
        return np.stack([self.x, self.y, self.intensity, self.snr], axis=1).astype(np.float32).reshape(-1, 4)


def photon_gain(mu, var, cnt, config: "SpotConfig" = None) -> float:
    """ADU of one photon for the spot finder's noise model, from the shells' clipped means and variances.

    Each shell's background variance is ``g · μ + r²``: the photons' and a read noise ``r`` that every shell shares.
    The median ratio ``var / μ`` over the shells
    (:func:`~diffscreen.preprocess.significance.photon_transfer_gain`) is ``g + r² / μ``, which is ``g`` only where
    the photons outweigh the read noise; on a background of a tenth of a photon per pixel it measures the read
    noise, overestimates ``g`` several times, and the floor ``g · max(μ, g)`` then lifts the pixel threshold
    (``docs/spot_efficiency.md``).  The slope of the variance on the mean over the shells is ``g`` whatever ``r``
    (the photon-transfer curve): the median of the pairwise slopes (Theil–Sen) over the half of the pairs of shells
    whose means differ most.  It is used where those slopes agree, their interquartile range at most
    ``gain_fit_spread`` times their median, and never above the median ratio (which ``r² ≥ 0`` makes an upper
    bound); elsewhere, as on an empty frame whose shells all hold about no photons, the median ratio stands.

    Parameters
    ----------
    mu, var : (nb,) float64 ndarray
        Clipped mean and variance of each shell, ADU and ADU².
    cnt : (nb,) int64 ndarray
        Pixels behind each; shells with fewer than ``config.min_count`` are left out.
    config : SpotConfig, optional
        ``gain_fit_spread`` None: the median ratio alone.

    Returns
    -------
    float
        ADU per photon (noise-equivalent: ADU variance over ADU mean of the photon noise).
    """
    c = DEFAULT_SPOT_CONFIG if config is None else config
    g_ratio = float(photon_transfer_gain(mu, var, cnt, c.min_count))
    if c.gain_fit_spread is None:
        return g_ratio
    ok = (cnt >= c.min_count) & (mu > 0)
    m, v = mu[ok], var[ok]
    if m.size > _GAIN_FIT_SHELLS:  # evenly over the shells: at most 300 · 299 / 2 pairs
        pick = np.linspace(0, m.size - 1, _GAIN_FIT_SHELLS).astype(np.int64)
        m, v = m[pick], v[pick]
    if m.size < 10:
        return g_ratio
    upper = np.triu_indices(m.size, 1)
    dm, dv = (m[:, None] - m[None, :])[upper], (v[:, None] - v[None, :])[upper]
    lever = np.abs(dm)
    use = (lever >= np.median(lever)) & (lever > 0)
    if use.sum() < 20:
        return g_ratio
    q1, slope, q3 = np.percentile(dv[use] / dm[use], [25, 50, 75])
    if not slope > 0 or q3 - q1 > c.gain_fit_spread * slope:
        return g_ratio
    return min(float(slope), g_ratio)


#: Most shells the photon-transfer slope is fitted over (:func:`photon_gain`).
_GAIN_FIT_SHELLS = 300


@njit(cache=True, nogil=True)
def _noise(mu, var, cnt, min_count, g):
    """Per-shell σ with the floor of :mod:`~diffscreen.preprocess.significance` (step 3) for the gain ``g``."""
    nb = mu.shape[0]
    sig = np.zeros(nb)
    for b in range(nb):
        if cnt[b] >= min_count:
            v = max(var[b], g * max(mu[b], g))
            if v > 0.0:
                sig[b] = math.sqrt(v)
    return sig


@njit(cache=True, nogil=True)
def _line_sums(x, bins, mu, sig, fcol, frow, zpix, col, row):
    """Per column and per row of ``x`` (H, W): the sum of the pixels that are not strong against the background of
    the current factors ``fcol`` (W,), ``frow`` (H,), the sum of what the other direction's factor and the rings'
    means expect there, and of the matching variances, into ``col`` (3, W) and ``row`` (3, H) (zeroed by the
    caller)."""
    h, w = x.shape
    for i in range(h):
        fr = frow[i]
        r0, r1, r2 = 0.0, 0.0, 0.0
        for j in range(w):
            v = x[i, j]
            if v != v:
                continue
            b = bins[i, j]
            s = sig[b]
            if s <= 0.0:
                continue
            m = mu[b]
            fc = fcol[j]
            f = fc * fr
            if v - m * f >= (zpix * s if f == 1.0 else zpix * s * math.sqrt(f)):
                continue
            ss = s * s
            col[0, j] += v
            col[1, j] += m * fr
            col[2, j] += ss * fr
            r0 += v
            r1 += m * fc
            r2 += ss * fc
        row[0, i] += r0
        row[1, i] += r1
        row[2, i] += r2


def _line_factors(sums: np.ndarray, window: int, sigma: float) -> np.ndarray:
    """Each line's background factor from its sums (3, N) (:func:`_line_sums`): its response over the running
    median of ``window`` lines about it, where it exceeds that by more than ``sigma`` standard errors; else 1."""
    total, expected, var = sums
    good = (expected > 0) & (total > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        resp = np.where(good, total / expected, np.nan)
        err = np.sqrt(var) / expected
        base = _running_median(resp, window)
        use = good & (base > 0) & (resp - base > sigma * err)
        return np.where(use, resp / base, 1.0)


@njit(cache=True, nogil=True)
def _line_medians(x, bins, mu, step):
    """The median of ``x / μ`` over every ``step``-th pixel of each column (W,) and each row (H,) of ``x`` (H, W),
    over the pixels whose ring has a positive mean and that are not NaN (masked); NaN where fewer than 8.

    One pass over the sampled rows for the columns and one over every row for the rows; the ratios are float64, as
    numpy's ``float32 / float64``."""
    h, w = x.shape
    nr, nc = (h + step - 1) // step, (w + step - 1) // step
    cvals = np.empty((w, nr))
    ccount = np.zeros(w, np.int64)
    for k in range(nr):
        i = k * step
        for j in range(w):
            m = mu[bins[i, j]]
            if m > 0.0:
                v = x[i, j] / m
                if v == v:
                    cvals[j, ccount[j]] = v
                    ccount[j] += 1
    col = np.full(w, np.nan)
    for j in range(w):
        if ccount[j] >= 8:
            col[j] = np.median(cvals[j, : ccount[j]])
    row = np.full(h, np.nan)
    buf = np.empty(nc)
    for i in range(h):
        n = 0
        for j in range(0, w, step):
            m = mu[bins[i, j]]
            if m > 0.0:
                v = x[i, j] / m
                if v == v:
                    buf[n] = v
                    n += 1
        if n >= 8:
            row[i] = np.median(buf[:n])
    return col, row


def _bright_lines(med: np.ndarray, window: int) -> np.ndarray:
    """A first guess of each line's factor from its median ratio (:func:`_line_medians`): over the running median
    of ``window`` lines about it where above it, else 1."""
    base = _running_median(med, window)
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = med / base
    return np.where(np.isfinite(rel) & (rel > 1.0), rel, 1.0)


def _line_maps(x, bins, mu, sig, config: "SpotConfig"):
    """(f_column (W,), f_row (H,)) float64 of :func:`line_response`, from the ring statistics ``mu``, ``sig``.

    The pixels of a bright line are strong against their ring alone, and a sum without them would miss the line,
    so the sums leave out the pixels that are strong against a first guess: each line's median ratio to its rings'
    means, over every ``8 · step``-th pixel along it (robust to the spots, not to the quantised counts of a faint
    background, hence only a guess, and only where it is brighter than its neighbours)."""
    h, w = x.shape
    if config.line_sigma is None:
        return np.ones(w), np.ones(h)
    window = int(config.line_window)
    med_col, med_row = _line_medians(x, bins, mu, 8 * int(config.step))
    col, row = np.zeros((3, w)), np.zeros((3, h))
    _line_sums(x, bins, mu, sig, _bright_lines(med_col, window), _bright_lines(med_row, window),
               float(config.pixel_sigma), col, row)
    return (_line_factors(col, window, float(config.line_sigma)),
            _line_factors(row, window, float(config.line_sigma)))


@njit(cache=True, nogil=True)
def _components(x, bins, mu, sig, fcol, frow, zpix, max_comp, bg_sum, bg_n):
    """8-connected components of the strong pixels: (n, S, V, Sx, Sy) per component, and how many.

    Pixel (i, j) has the background ``fcol[j] · frow[i] · mu[b]`` and variance ``fcol[j] · frow[i] · sig[b]²``
    (:func:`line_response`).  In the same pass, ``bg_sum[b]`` and ``bg_n[b]`` (zeroed by the caller) receive the
    sum (over each pixel's factor) and the number of bin b's pixels that are not strong (every pixel, not every
    ``step``-th): the ring profile of the ice test.
    """
    h, w = x.shape
    scol, srow = np.sqrt(fcol), np.sqrt(frow)
    strong = np.zeros((h, w), np.uint8)
    nstrong = 0
    for i in range(h):
        for j in range(w):
            v = x[i, j]
            if v != v:
                continue
            b = bins[i, j]
            s = sig[b]
            if s > 0.0:
                f = fcol[j] * frow[i]
                if v - mu[b] * f >= zpix * s * scol[j] * srow[i]:
                    strong[i, j] = 1
                    nstrong += 1
                else:
                    bg_sum[b] += v / f
                    bg_n[b] += 1
    out = np.zeros((max_comp, 5))
    nc = 0
    if nstrong == 0:
        return out, 0
    stack = np.empty(nstrong, np.int64)
    for i in range(h):
        for j in range(w):
            if strong[i, j] != 1:
                continue
            if nc >= max_comp:
                return out, nc
            strong[i, j] = 2
            top = 0
            stack[0] = i * w + j
            top = 1
            n = 0
            S = 0.0
            V = 0.0
            Sx = 0.0
            Sy = 0.0
            while top > 0:
                top -= 1
                p = stack[top]
                pi = p // w
                pj = p - pi * w
                b = bins[pi, pj]
                f = fcol[pj] * frow[pi]
                e = x[pi, pj] - mu[b] * f
                n += 1
                S += e
                V += sig[b] * sig[b] * f
                Sx += e * pj
                Sy += e * pi
                for di in range(-1, 2):
                    qi = pi + di
                    if qi < 0 or qi >= h:
                        continue
                    for dj in range(-1, 2):
                        qj = pj + dj
                        if qj < 0 or qj >= w:
                            continue
                        if strong[qi, qj] == 1:
                            strong[qi, qj] = 2
                            stack[top] = qi * w + qj
                            top += 1
            out[nc, 0] = n
            out[nc, 1] = S
            out[nc, 2] = V
            out[nc, 3] = Sx
            out[nc, 4] = Sy
            nc += 1
    return out, nc


@njit(cache=True, nogil=True)
def _sector_bins(h, w, cx, cy, px_per_bin, max_sectors, bins, ring_of):
    """Bin of every pixel: its 1-px ring about the beam split into azimuthal sectors of about
    ``px_per_bin`` pixels (1 sector near the beam, at most ``max_sectors``); ``ring_of[b]`` is bin b's ring."""
    rmax = 0
    for i in (0, h - 1):
        for j in (0, w - 1):
            r = int(math.sqrt((j - cx) ** 2 + (i - cy) ** 2))
            if r > rmax:
                rmax = r
    nr = rmax + 1
    nsec = np.empty(nr, np.int64)
    first = np.empty(nr + 1, np.int64)
    first[0] = 0
    for r in range(nr):
        k = int(2.0 * math.pi * (r + 0.5) / px_per_bin)
        nsec[r] = min(max(k, 1), max_sectors)
        first[r + 1] = first[r] + nsec[r]
    for i in range(h):
        dy = i - cy
        for j in range(w):
            dx = j - cx
            r = int(math.sqrt(dx * dx + dy * dy))
            s = 0
            if nsec[r] > 1:  # the angle only where a ring is split (atan2 is most of the cost)
                a = (math.atan2(dy, dx) + math.pi) / (2.0 * math.pi)
                s = min(int(a * nsec[r]), nsec[r] - 1)
            bins[i, j] = first[r] + s
    for r in range(nr):
        for b in range(first[r], first[r + 1]):
            ring_of[b] = r
    return first[nr]


@njit(cache=True, nogil=True)
def _ring_bins(h, w, cx, cy, bins):
    """Bin of every pixel when rings are not split: its 1-px ring about the beam; the number of rings."""
    nr = 0
    for i in range(h):
        dy2 = (i - cy) * (i - cy)
        for j in range(w):
            dx = j - cx
            r = int(math.sqrt(dx * dx + dy2))
            bins[i, j] = r
            if r >= nr:
                nr = r + 1
    return nr


@lru_cache(maxsize=4)
def _bin_map(h: int, w: int, cx: float, cy: float, px_per_bin: int, max_sectors: int):
    """(bins, ring_of, n_bins), read-only and cached: the frames of a run share one beam centre."""
    bins = np.empty((h, w), np.int32)
    if max_sectors == 1:  # the default: one bin per ring (about 15x faster than the sector map)
        nb = _ring_bins(h, w, cx, cy, bins)
        ring_of = np.arange(nb, dtype=np.int64)
    else:
        ring_of = np.empty(h * w + 1, np.int64)
        nb = _sector_bins(h, w, cx, cy, float(px_per_bin), max_sectors, bins, ring_of)
        ring_of = ring_of[:nb].copy()
    bins.flags.writeable = False
    ring_of.flags.writeable = False
    return bins, ring_of, int(nb)


def _pixels(frame: Frame) -> np.ndarray:
    """The frame's pixels as float32 with masked pixels NaN (left out of the statistics, never strong)."""
    x = np.array(frame.data, dtype=np.float32, copy=True)
    x[np.asarray(frame.mask, dtype=bool)] = np.nan
    return x


def _ring_background(x: np.ndarray, frame: Frame, c: SpotConfig):
    """The ring statistics of the pixels ``x`` (H, W) about the frame's beam centre: (bins, ring_of, n_bins, mu,
    var, count, sig, g) (:func:`_bin_map`, :func:`_stats`, :func:`_noise`)."""
    centre = beam_centre(frame.meta, x.shape)
    bins, ring_of, nb = _bin_map(x.shape[0], x.shape[1], round(float(centre[0]), 4), round(float(centre[1]), 4),
                                 int(c.sector_px), int(c.max_sectors))
    mu, var, cnt = np.zeros(nb), np.zeros(nb), np.zeros(nb, np.int64)
    _stats(x, bins, nb, float(c.clip_sigma), int(c.iters), int(c.min_count), int(c.step), mu, var, cnt)
    g = photon_gain(mu, var, cnt, c)
    sig = _noise(mu, var, cnt, c.min_count, g)
    return bins, ring_of, nb, mu, var, cnt, sig, g


def line_response(frame: Frame, config: SpotConfig = DEFAULT_SPOT_CONFIG) -> tuple[np.ndarray, np.ndarray]:
    """The background factor of every pixel column and row of a frame (see the module notes).

    Each column's response is the sum of its pixels that are not strong over
    the sum of their rings' background means; a column whose response exceeds
    the running median of the ``line_window`` columns about it by more than
    ``line_sigma`` standard errors (from the summed ring variances) gets the
    factor response / median, every other column 1; rows likewise.
    :func:`find_spots` gives pixel (i, j) the background ``f_col[j] ·
    f_row[i] · μ`` and variance ``f_col[j] · f_row[i] · v``.

    Parameters
    ----------
    frame : Frame
        ``data`` (H, W) in ADU, ``mask`` True = bad.
    config : SpotConfig
        ``line_sigma`` None: all factors 1.

    Returns
    -------
    f_col : (W,) float64 ndarray
    f_row : (H,) float64 ndarray

    Examples
    --------
    >>> from diffscreen.io.frame import FrameMeta
    >>> rng = np.random.default_rng(0)
    >>> a = rng.poisson(50.0, (256, 256)).astype(np.float32)
    >>> a[:, 100] = rng.poisson(100.0, 256)               # a double-size pixel column
    >>> f_col, f_row = line_response(Frame(a, np.zeros(a.shape, bool), FrameMeta(source="toy")))
    >>> round(float(f_col[100]), 1), int((f_col != 1).sum()), int((f_row != 1).sum())
    (2.0, 1, 0)
    """
    x = _pixels(frame)
    bins, _, _, mu, _, _, sig, _ = _ring_background(x, frame, config)
    return _line_maps(x, bins, mu, sig, config)


def find_spots(frame: Frame, config: SpotConfig = DEFAULT_SPOT_CONFIG) -> Spots:
    """Spots on one frame against its rings' background and noise (see the module notes).

    Parameters
    ----------
    frame : Frame
        ``data`` (H, W) in ADU, ``mask`` True = bad; the beam centre from
        ``meta`` (the frame centre when unknown).
    config : SpotConfig

    Returns
    -------
    Spots
        Sorted by SNR, brightest first.

    Examples
    --------
    >>> from diffscreen.io.frame import FrameMeta
    >>> rng = np.random.default_rng(0)
    >>> a = rng.poisson(3.0, (128, 128)).astype(np.float32)
    >>> a[40:42, 50:52] += 40                            # a 2 × 2 spot
    >>> s = find_spots(Frame(a, np.zeros(a.shape, bool), FrameMeta(source="toy")))
    >>> len(s), round(float(s.x[0]), 1), round(float(s.y[0]), 1)
    (1, 50.5, 40.5)
    """
    c = config
    x = _pixels(frame)
    bins, ring_of, nb, mu, var, cnt, sig, g = _ring_background(x, frame, c)
    fcol, frow = _line_maps(x, bins, mu, sig, c)
    bg_sum, bg_n = np.zeros(nb), np.zeros(nb, np.int64)
    comp, nc = _components(x, bins, mu, sig, fcol, frow, float(c.pixel_sigma), int(c.max_spots), bg_sum, bg_n)
    comp = comp[:nc]
    n, S, V = comp[:, 0], comp[:, 1], comp[:, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        snr = S / np.sqrt(V + max(g, 0.0) * np.maximum(S, 0.0))
    ok = (n >= c.min_pixels) & (n <= c.max_pixels) & (S > 0) & (snr >= c.spot_snr)
    comp, snr = comp[ok], snr[ok]
    order = np.argsort(-snr, kind="stable")
    comp, snr = comp[order], snr[order]
    return Spots(x=(comp[:, 3] / comp[:, 1]).astype(np.float32), y=(comp[:, 4] / comp[:, 1]).astype(np.float32),
                 intensity=comp[:, 1].astype(np.float32), snr=snr.astype(np.float32),
                 n_pixels=comp[:, 0].astype(np.int32), gain=float(g),
                 shells=_rings(mu, var, cnt, ring_of, bg_sum, bg_n))


def _rings(mu, var, cnt, ring_of, bg_sum, bg_n):
    """Per-ring (1 px) mean, variance and count from the sectors' (count-weighted; variance of the pooled pixels),
    and each ring's mean and number of pixels that are not strong (pooled sums)."""
    nr = int(ring_of[-1]) + 1 if len(ring_of) else 0
    n = np.bincount(ring_of, weights=cnt, minlength=nr)
    s1 = np.bincount(ring_of, weights=cnt * mu, minlength=nr)
    s2 = np.bincount(ring_of, weights=cnt * (var + mu * mu), minlength=nr)
    bs = np.bincount(ring_of, weights=bg_sum, minlength=nr)
    bn = np.bincount(ring_of, weights=bg_n, minlength=nr)
    with np.errstate(divide="ignore", invalid="ignore"):
        m = np.where(n > 0, s1 / n, 0.0)
        v = np.where(n > 0, np.maximum(s2 / n - m * m, 0.0), 0.0)
        bm = np.where(bn > 0, bs / bn, 0.0)
    return m, v, n.astype(np.int64), 1.0, bm, bn.astype(np.int64)


def _geometry(meta, shape):
    """(centre, pixel_mm, distance_mm, wavelength_A) or None when the geometry is unknown or unphysical."""
    if reciprocal_pixel(meta) is None:  # a missing or out-of-range value: unknown (as the crop treats it)
        return None
    return beam_centre(meta, shape), meta.pixel_size_mm, meta.distance_mm, meta.wavelength_A


def _d_of_radius(r_px, pixel_mm, distance_mm, wavelength_A):
    """Bragg spacing (Å) at detector radius ``r_px`` (flat detector normal to the beam); inf at r = 0."""
    two_theta = np.arctan(np.asarray(r_px, np.float64) * pixel_mm / distance_mm)
    with np.errstate(divide="ignore"):
        return wavelength_A / (2.0 * np.sin(two_theta / 2.0))


def _radius_of_d(d_A, pixel_mm, distance_mm, wavelength_A) -> float:
    x = wavelength_A / (2.0 * d_A)
    if x >= 1.0:
        return math.inf
    two_theta = 2.0 * math.asin(x)
    return math.inf if two_theta >= math.pi / 2 else distance_mm * math.tan(two_theta) / pixel_mm


def spot_resolution(spots: Spots, frame: Frame) -> np.ndarray | None:
    """Bragg spacing (Å) of every spot, or None when the frame has no (usable) geometry."""
    geo = _geometry(frame.meta, frame.data.shape)
    if geo is None:
        return None
    (cx, cy), p, D, lam = geo
    return _d_of_radius(np.hypot(spots.x - cx, spots.y - cy), p, D, lam)


def d_min_of(d_A, quantile: float = DEFAULT_SPOT_CONFIG.d_quantile) -> float | None:
    """``d_min_A`` of spots with spacings ``d_A``: the spacing at the ``quantile`` of ``1/d``; None for no spot."""
    d = np.asarray(d_A, np.float64)
    d = d[np.isfinite(d) & (d > 0)]
    if not d.size:
        return None
    return float(1.0 / np.quantile(1.0 / d, quantile))


@njit(cache=True, nogil=True)
def _poisson_need(lam, alpha, min_n):
    """The fewest spots a band or line needs: the least ``m`` ≥ ``min_n`` with P(X ≥ m) < ``alpha`` for
    X ~ Poisson(``lam``)."""
    need, cdf, log_lam = 0, 0.0, math.log(lam)
    while 1.0 - cdf >= alpha:
        cdf += math.exp(-lam + need * log_lam - math.lgamma(need + 1.0))
        need += 1
    return max(need, min_n)


@njit(cache=True, nogil=True)
def _distinct_at_least(x, y, idx, need, merge_px, kept):
    """Whether the spots ``idx`` hold ``need`` spots farther than ``merge_px`` apart (greedy, in order; ``kept`` is
    scratch of at least ``need`` elements)."""
    m = 0
    for j in idx:
        far = True
        for q in range(m):
            k = kept[q]
            if (x[j] - x[k]) ** 2 + (y[j] - y[k]) ** 2 <= merge_px * merge_px:
                far = False
                break
        if far:
            kept[m] = j
            m += 1
            if m >= need:
                return True
    return False


@njit(cache=True, nogil=True)
def _ring_spot_mask(r, x, y, alpha, min_n, window, merge_px, widen):
    """:func:`ring_spots` on spot radii ``r`` (P,) and positions ``x``, ``y`` (P,), px → (P,) bool."""
    n = r.size
    order = np.argsort(r)
    rs, xs, ys = r[order], x[order], y[order]
    h = 1.5 + 0.005 * rs
    flag = np.zeros(n, np.bool_)
    kept = np.empty(n, np.int64)
    need_of = np.full(n + 1, -1, np.int64)  # the need for m spots nearby, computed once per m
    for i in range(n):
        lo = np.searchsorted(rs, rs[i] - h[i], side="left")
        hi = np.searchsorted(rs, rs[i] + h[i], side="right")
        if hi - lo < min_n:
            continue
        wlo = np.searchsorted(rs, rs[i] - window * h[i], side="left")
        whi = np.searchsorted(rs, rs[i] + window * h[i], side="right")
        m = whi - wlo - (hi - lo)
        if need_of[m] < 0:
            need_of[m] = _poisson_need(max(m / (window - 1.0), 0.5), alpha, min_n)
        need = need_of[m]
        if hi - lo >= need and _distinct_at_least(xs, ys, np.arange(lo, hi), need, merge_px, kept):
            flag[lo:hi] = True
    edge = np.zeros(n + 1, np.int64)
    for i in range(n):
        if flag[i]:
            edge[np.searchsorted(rs, rs[i] - (1.0 + widen) * h[i], side="left")] += 1
            edge[np.searchsorted(rs, rs[i] + (1.0 + widen) * h[i], side="right")] -= 1
    on = np.zeros(n, np.bool_)
    run = 0
    for i in range(n):
        run += edge[i]
        on[order[i]] = run > 0
    return on


@njit(cache=True, nogil=True)
def _ring_excess(x, y, cxs, cys, window):
    """How concentric spots at ``x``, ``y`` (P,) are about each candidate centre ``cxs``, ``cys`` (C,) → (C,).

    For each spot, the spots in its band of radii (±1.5 px + 0.5 % of the radius, as :func:`_ring_spot_mask`) less
    itself, less the number the spots within ±``window`` half-widths outside the band make likely there; summed
    over the spots.  About 0 for spots spread over the radii, wherever the centre is; large about a ring's centre.
    """
    n = x.size
    out = np.zeros(cxs.size)
    r = np.empty(n)
    for c in range(cxs.size):
        for i in range(n):
            r[i] = math.sqrt((x[i] - cxs[c]) ** 2 + (y[i] - cys[c]) ** 2)
        rs = np.sort(r)
        s = 0.0
        for i in range(n):
            h = 1.5 + 0.005 * rs[i]
            b = np.searchsorted(rs, rs[i] + h, side="right") - np.searchsorted(rs, rs[i] - h, side="left")
            w = (np.searchsorted(rs, rs[i] + window * h, side="right")
                 - np.searchsorted(rs, rs[i] - window * h, side="left"))
            s += b - 1.0 - (w - b) / (window - 1.0)
        out[c] = s
    return out


def fit_ring_centre(spots: Spots, shape, config: SpotConfig = DEFAULT_SPOT_CONFIG):
    """The centre of the powder rings among ``spots``, for a frame whose file records no beam centre.

    Every ring of a powder pattern is centred on the direct beam, so the
    spots of its grains share one radius about the beam centre and no other
    point.  The centre is searched over the frame: a grid of
    ``ring_centre_grid`` × ``ring_centre_grid`` candidates, then around the
    three best, a 5 × 5 grid at half the spacing, again and again down to
    0.25 px; the score is how many more spots share each spot's band of
    radii than the frame's spots nearby make likely (:func:`_ring_excess`).
    A search over so many centres finds some alignment among any spots (any
    three lie on a circle), so the best centre counts only if
    :func:`ring_spots`'s test, at the stricter ``ring_centre_alpha``, finds at
    least ``ring_centre_min_rings`` concentric rings about it.  The settings were chosen
    on simulated frames with their beam centre taken away
    (``bench/ring_centre.py``).

    Parameters
    ----------
    spots : Spots
        Of the frame (:func:`find_spots`, brightest first); positions in px.
    shape : (int, int)
        The frame's (H, W).
    config : SpotConfig

    Returns
    -------
    (float, float) or None
        The centre ``(x, y)`` in px, or None when no ring stands out.
    """
    c = config
    if len(spots) < c.ring_spot_min:
        return None
    x, y = spots.x[: c.ring_centre_max_spots].astype(np.float64), spots.y[: c.ring_centre_max_spots].astype(np.float64)
    H, W = shape
    n = int(c.ring_centre_grid)
    gx, gy = np.meshgrid((np.arange(n) + 0.5) * W / n - 0.5, (np.arange(n) + 0.5) * H / n - 0.5)
    score = _ring_excess(x, y, gx.ravel(), gy.ravel(), float(c.ring_spot_window))
    best = []
    for k in np.argsort(-score, kind="stable")[:3]:
        cx, cy, sc, step = float(gx.flat[k]), float(gy.flat[k]), float(score[k]), max(W, H) / n / 2.0
        while step >= 0.25:
            ox, oy = np.meshgrid(np.arange(-2, 3) * step, np.arange(-2, 3) * step)
            cand_x, cand_y = cx + ox.ravel(), cy + oy.ravel()
            s = _ring_excess(x, y, cand_x, cand_y, float(c.ring_spot_window))
            j = int(np.argmax(s))
            if s[j] > sc:
                cx, cy, sc = float(cand_x[j]), float(cand_y[j]), float(s[j])
            step /= 2.0
        best.append((sc, cx, cy))
    sc, cx, cy = max(best)
    r = np.hypot(x - cx, y - cy)
    on = _ring_spot_mask(r, x, y, float(c.ring_centre_alpha), int(c.ring_spot_min), float(c.ring_spot_window),
                         float(c.ring_spot_merge_px), 0.0)
    return (cx, cy) if _n_rings(r[on]) >= c.ring_centre_min_rings else None


def _n_rings(r) -> int:
    """How many rings the radii ``r`` (px) of ring spots form: runs of radii closer than two band half-widths."""
    r = np.sort(np.asarray(r, np.float64))
    return 0 if r.size == 0 else 1 + int((np.diff(r) > 2 * (1.5 + 0.005 * r[1:])).sum())


def ring_spots(spots: Spots, frame: Frame, config: SpotConfig = DEFAULT_SPOT_CONFIG, centre=None) -> np.ndarray:
    """Which spots lie on a powder ring: a band of radii about the beam centre with more spots than chance.

    A powder or ice ring with grains (a salt, a frozen drop, the sample's own
    microcrystals) gives the spot finder many spots at one radius; the Bragg
    spots of one crystal lattice spread over the radii.  For each spot, its
    band is the spots within ±``h`` = 1.5 px + 0.5 % of its radius ``r`` (the
    tolerance of the ice lines in :func:`ring_flags`).  The band is a ring when
    it holds ``m`` ≥ ``ring_spot_min`` distinct spots (closer than
    ``ring_spot_merge_px`` count once, so that one split spot is not a ring)
    and ``P(X ≥ m) < ring_spot_alpha`` for ``X`` Poisson with the mean the
    frame's spots give such a band nearby: the spots within
    ±``ring_spot_window`` · ``h`` outside the band over ``ring_spot_window`` − 1
    (at least 0.5, so that a band alone needs 5 distinct spots at the
    defaults).  Spots within ±(1 + ``ring_spot_widen``) · ``h`` of a ring
    band's spots are on the ring too.  DIALS's per-image analysis
    (``dials.spot_counts_per_image``) likewise reports ``n_spots_no_ice``, the
    spots outside the ice rings' resolution ranges; here the rings are found
    among the spots, wherever they are, with no geometry.  Ke et al. (2018)
    §3.3 call a frame a hit for Bragg spots from single crystals, and not for
    water rings or diffuse scatter.  The radii are about the beam centre the
    file records; without one, about the centre :func:`fit_ring_centre` finds
    (unless ``ring_centre_alpha`` is None), else the frame centre.  The
    settings were chosen on simulated frames only (``docs/default_model.md``,
    "Rings leave the gate's count").

    Parameters
    ----------
    spots : Spots
        Of ``frame`` (:func:`find_spots`).
    frame : Frame
        For its shape and recorded beam centre.
    config : SpotConfig
    centre : (float, float), optional
        The centre to use, px (default: :func:`feature_centre`).

    Returns
    -------
    (P,) bool ndarray
        True for the spots on a ring.
    """
    if len(spots) == 0:
        return np.zeros(0, bool)
    c = config
    cx, cy = feature_centre(spots, frame, c) if centre is None else centre
    x, y = spots.x.astype(np.float64), spots.y.astype(np.float64)
    return _ring_spot_mask(np.hypot(x - cx, y - cy), x, y, float(c.ring_spot_alpha), int(c.ring_spot_min),
                           float(c.ring_spot_window), float(c.ring_spot_merge_px), float(c.ring_spot_widen))


def feature_centre(spots: Spots, frame: Frame, config: SpotConfig = DEFAULT_SPOT_CONFIG) -> tuple[float, float]:
    """The centre of the ring and streak tests: the beam centre the file records; without one, the rings' centre
    (:func:`fit_ring_centre`, unless ``config.ring_centre_alpha`` is None); else the frame centre. ``(x, y)``, px."""
    centre = recorded_beam_centre(frame.meta, frame.data.shape)
    if centre is None and config.ring_centre_alpha is not None:
        centre = fit_ring_centre(spots, frame.data.shape, config)
    return centre if centre is not None else beam_centre(frame.meta, frame.data.shape)


@njit(cache=True, nogil=True)
def _streak_chances(x, y, cx, cy, tol):
    """The streak test's spot geometry about the centre ``cx``, ``cy``: offsets ``dx``, ``dy`` and radius ``r``
    (P,), which spots it uses (``r > 2 tol``), and each used spot's chance ``p_in`` (P,) of lying within ``tol``
    of a given line through the centre if its azimuth were random, ``2 tol / (π r)``, with their sum."""
    n = x.size
    dx, dy = x - cx, y - cy
    r = np.sqrt(dx * dx + dy * dy)
    use = r > 2.0 * tol
    p_in = np.zeros(n)
    total = 0.0
    for j in range(n):
        if use[j]:
            p_in[j] = min(1.0, 2.0 * tol / (math.pi * r[j]))
            total += p_in[j]
    return dx, dy, r, use, p_in, total


#: Radius buckets of :func:`_streak_spot_mask`: bucket k holds the spots at radii [2^k, 2^(k+1)) · 2 ``tol``.
_STREAK_BUCKETS = 24


@njit(cache=True, nogil=True)
def _streak_spot_mask(x, y, cx, cy, tol, alpha, min_n, merge_px):
    """:func:`streak_spots` on spot positions ``x``, ``y`` (P,) about the centre ``cx``, ``cy``, px → (P,) bool.

    Spot j lies within ``tol`` of the line through the centre and spot i when ``r_j |sin(φ_j − φ_i)| ≤ tol``, so
    its azimuth modulo π is within ``asin(tol / r_j)`` of spot i's.  The spots are grouped by radius into buckets
    of radii [2^k, 2^(k+1)) · 2 ``tol``, each sorted by azimuth modulo π, and only those within the bucket's
    widest such window (plus 1e-6 rad) are tested, with the test itself unchanged: the members of every line,
    in spot order, as testing every pair gives them (``tests/reference/streak_mask.py``), in O(P log P) for the
    spread azimuths of a crystal's spots instead of O(P²).
    """
    n = x.size
    dx, dy, r, use, p_in, total = _streak_chances(x, y, cx, cy, tol)
    on = np.zeros(n, np.bool_)
    if n == 0:
        return on
    # buckets by radius, each sorted by azimuth modulo pi
    phi = np.zeros(n)
    bucket = np.full(n, -1, np.int64)
    count = np.zeros(_STREAK_BUCKETS + 1, np.int64)
    for j in range(n):
        if use[j]:
            a = math.atan2(dy[j], dx[j])
            if a < 0.0:
                a += math.pi
            if a >= math.pi:
                a -= math.pi
            phi[j] = a
            k = min(int(math.log2(r[j] / (2.0 * tol))), _STREAK_BUCKETS - 1)
            bucket[j] = k
            count[k + 1] += 1
    first = np.cumsum(count)
    fill = first[:-1].copy()
    index = np.empty(first[-1], np.int64)
    for j in range(n):
        if bucket[j] >= 0:
            index[fill[bucket[j]]] = j
            fill[bucket[j]] += 1
    sphi = np.empty(first[-1])
    window = np.zeros(_STREAK_BUCKETS)
    for k in range(_STREAK_BUCKETS):
        lo, hi = first[k], first[k + 1]
        if hi > lo:
            seg = index[lo:hi]
            order = np.argsort(phi[seg], kind="mergesort")
            index[lo:hi] = seg[order]
            sphi[lo:hi] = phi[index[lo:hi]]
            window[k] = math.asin(min(1.0, 0.5 / 2.0**k)) + 1e-6
    members = np.empty(n, np.int64)
    kept = np.empty(n, np.int64)
    # the fewest members any line needs: the need grows with the mean, which is at least total - 1
    need_lo = _poisson_need(max(total - 1.0, 0.5), alpha, min_n)
    for i in range(n):
        if not use[i]:
            continue
        s, c = dy[i] / r[i], dx[i] / r[i]
        k = 0
        for b in range(_STREAK_BUCKETS):
            lo, hi = first[b], first[b + 1]
            if hi == lo:
                continue
            w = window[b]
            # the azimuth range [phi_i - w, phi_i + w] modulo pi: up to two ranges of the sorted bucket
            for shift in (0.0, math.pi, -math.pi):
                a0, a1 = max(phi[i] - w + shift, 0.0), min(phi[i] + w + shift, math.pi)
                if a1 < a0:
                    continue
                q0 = lo + np.searchsorted(sphi[lo:hi], a0, side="left")
                q1 = lo + np.searchsorted(sphi[lo:hi], a1, side="right")
                for q in range(q0, q1):
                    j = index[q]
                    if abs(dx[j] * s - dy[j] * c) <= tol:
                        members[k] = j
                        k += 1
        if k < need_lo:
            continue
        mem = np.sort(members[:k])  # spot order, as the pairwise test lists them
        need = _poisson_need(max(total - p_in[i], 0.5), alpha, min_n)
        if k >= need and _distinct_at_least(x, y, mem, need, merge_px, kept):
            for q in range(k):
                on[mem[q]] = True
    return on


def streak_spots(spots: Spots, frame: Frame, config: SpotConfig = DEFAULT_SPOT_CONFIG, centre=None) -> np.ndarray:
    """Which spots lie on a streak through the beam centre: a liquid jet's streak (Ke et al. 2018 §3.1).

    The jet, or any thin sheet of liquid in the beam, scatters into a line
    through the beam centre, perpendicular to it, and a speckled line gives the
    spot finder a row of spots along one line through the centre.  The Bragg
    spots of a crystal spread over the azimuths.  For each spot, its line is
    the line through the centre (:func:`feature_centre`) and the spot; the
    spots within ``streak_px`` of it (on both sides of the centre, and
    farther than 2 ``streak_px`` from the centre) are its members.  The line is
    a streak when its members hold ``m`` distinct spots (closer than
    ``ring_spot_merge_px`` count once) and ``P(X ≥ m) < ring_spot_alpha`` for
    ``X`` Poisson with the mean the frame's other spots give the line: each
    spot at radius ``r`` lies within ``streak_px`` of a given line through the
    centre with probability ``2 streak_px / (π r)`` if its azimuth is random
    (at least 0.5 in all, so that a line needs 5 distinct spots).  The counterpart of
    :func:`ring_spots`, with azimuth and radius swapped; the settings were
    chosen on simulated frames only (``docs/default_model.md``, "A jet streak
    leaves the gate's count too").

    Parameters
    ----------
    spots : Spots
        Of ``frame`` (:func:`find_spots`).
    frame : Frame
        For its shape and recorded beam centre.
    config : SpotConfig
        ``streak_px`` None: no streak test (no spot is on one).
    centre : (float, float), optional
        The centre to use, px (default: :func:`feature_centre`).

    Returns
    -------
    (P,) bool ndarray
        True for the spots on a streak.
    """
    c = config
    if len(spots) == 0 or c.streak_px is None:
        return np.zeros(len(spots), bool)
    cx, cy = feature_centre(spots, frame, c) if centre is None else centre
    return _streak_spot_mask(spots.x.astype(np.float64), spots.y.astype(np.float64), float(cx), float(cy),
                             float(c.streak_px), float(c.ring_spot_alpha), int(c.ring_spot_min),
                             float(c.ring_spot_merge_px))


def ring_and_streak_spots(spots: Spots, frame: Frame, config: SpotConfig = DEFAULT_SPOT_CONFIG):
    """:func:`ring_spots` and :func:`streak_spots` about one :func:`feature_centre` → two (P,) bool ndarrays."""
    centre = feature_centre(spots, frame, config) if len(spots) else None
    return ring_spots(spots, frame, config, centre), streak_spots(spots, frame, config, centre)


def count_spots_off_rings(frame: Frame, config: SpotConfig = DEFAULT_SPOT_CONFIG, spots: Spots | None = None) -> int:
    """``n_spots_no_rings`` of one frame: the spots :func:`find_spots` finds off every ring (:func:`ring_spots`)
    and off a jet streak (:func:`streak_spots`), the spot gate's count
    (:func:`diffscreen.models.decision.spot_gate`); ``spots``: the frame's spots when already found."""
    spots = find_spots(frame, config) if spots is None else spots
    on_ring, on_streak = ring_and_streak_spots(spots, frame, config)
    return int(len(spots) - (on_ring | on_streak).sum())


def _running_median(a: np.ndarray, window: int) -> np.ndarray:
    """The median of the finite values in a centred window of ``window`` (odd) elements about every element of ``a``
    (N,); NaN where the window holds fewer than ``max(3, window // 4)`` finite values.

    Each window is sorted, which puts its NaNs last, and the median of its ``k`` finite values is the mean of the
    sorted values at ``(k - 1) // 2`` and ``k // 2``: ``np.nanmedian`` row by row, without the masked-array path
    that makes ``np.nanmedian`` of a 2-D array slow.
    """
    half = window // 2
    pad = np.concatenate([np.full(half, np.nan), a, np.full(half, np.nan)])
    win = np.lib.stride_tricks.sliding_window_view(pad, window)
    out = np.full(a.shape, np.nan)
    k = np.isfinite(win).sum(1)
    ok = k >= max(3, window // 4)
    if ok.any():
        srt, k, rows = np.sort(win[ok], axis=1), k[ok], np.arange(int(ok.sum()))
        out[ok] = (srt[rows, (k - 1) // 2] + srt[rows, k // 2]) / 2
    return out


def _ice_line_excess(prof, var, mu, n, radii, gain, config: SpotConfig):
    """Excess of every ice line over a smooth local background: a list of ``(z, E, e)`` or None per line.

    ``prof`` (nb,): mean of the not-strong pixels of each 1-px ring (NaN where too few); ``var``, ``mu``:
    the rings' clipped variance and mean; ``n`` (nb,): the pixels behind ``prof``; ``radii``: the lines'
    radii in rings.  For each line, the rings within ±(``ice_fit_px`` + ``ice_fit_frac`` · r) are fitted by
    weighted least squares with a quadratic in r plus a Gaussian of σ = ``ice_width_px`` at every ice line
    in that range; the line's excess ``E`` is its Gaussian's area and ``e`` its standard error, scaled up by
    √(χ²/dof) where the fit leaves more scatter than the rings' variance predicts (an unmodelled ring, a
    structured background).  None where the line is off the profile or lacks rings on either side.
    """
    c = config
    nb = len(prof)
    fin = np.isfinite(prof)
    width = float(c.ice_width_px)
    area = width * math.sqrt(2.0 * math.pi)
    out = []
    for l, rr in enumerate(radii):
        if not math.isfinite(rr) or rr < 2 or rr > nb - 2:
            out.append(None)
            continue
        half = c.ice_fit_px + c.ice_fit_frac * rr
        lo, hi = max(int(math.floor(rr - half)), 0), min(int(math.ceil(rr + half)), nb - 1)
        ok = fin[lo : hi + 1]
        ii = np.arange(lo, hi + 1)[ok].astype(np.float64)
        y = prof[lo : hi + 1][ok]
        tol = 1.5 + 0.005 * rr
        x = ii + 0.5 - rr  # ring i spans radii i .. i + 1
        if (x < -tol).sum() < 3 or (x > tol).sum() < 3 or not (np.abs(x) <= tol).any():
            out.append(None)
            continue
        # per-ring variance of the mean: the region's typical pixel variance over each ring's pixel count
        v = float(np.median(var[lo : hi + 1][ok]))
        if not v > 0:
            v = gain * max(float(np.median(mu[lo : hi + 1][ok])), gain)
        if not v > 0:
            out.append(None)
            continue
        w = n[lo : hi + 1][ok] / v
        near = [k for k, q in enumerate(radii) if math.isfinite(q) and lo - 3 <= q <= hi + 3]
        design = np.concatenate([np.vander(x / half, 3),
                                 np.stack([np.exp(-0.5 * ((ii + 0.5 - radii[k]) / width) ** 2) for k in near], 1)], 1)
        aw = design * w[:, None]
        try:
            cov = np.linalg.inv(design.T @ aw)
        except np.linalg.LinAlgError:
            out.append(None)
            continue
        coef = cov @ (aw.T @ y)
        res = y - design @ coef
        dof = max(len(y) - design.shape[1], 1)
        inflate = max(1.0, float(np.sum(res * res * w)) / dof)
        j = 3 + near.index(l)
        E, e = float(coef[j]) * area, math.sqrt(max(float(cov[j, j]), 0.0) * inflate) * area
        out.append((E / e, E, e) if e > 0 and math.isfinite(E) and math.isfinite(e) else None)
    return out


def _ice_z(lines) -> tuple[float, float, int]:
    """Combined significance of the measured ice lines, the same without the line that contributes most, and
    how many lines were measured.  Weights: the lines' relative intensities (:data:`ICE_RINGS_REL`) over their
    variances, the matched filter of the Ih pattern."""
    on = [(ICE_RINGS_REL[k], E, e) for k, x in enumerate(lines) if x is not None for _, E, e in [x]]

    def z(sub):
        if not sub:
            return 0.0
        return sum(a * E / e**2 for a, E, e in sub) / math.sqrt(sum(a * a / e**2 for a, E, e in sub))

    if not on:
        return 0.0, 0.0, 0
    top = max(range(len(on)), key=lambda k: on[k][0] * on[k][1] / on[k][2] ** 2)
    return z(on), z(on[:top] + on[top + 1 :]), len(on)


def ring_flags(shells, frame: Frame, config: SpotConfig = DEFAULT_SPOT_CONFIG) -> dict:
    """Whether ice (hexagonal Ih) and other powder rings raise their shells' background (module notes).

    Parameters
    ----------
    shells : tuple
        ``(mu, var, count, shell_px, bg_mean, bg_count)`` of :attr:`Spots.shells`.
    frame : Frame
        For its geometry.
    config : SpotConfig

    Returns
    -------
    dict
        ``ice_rings``, ``powder_rings``: bool, or None without geometry;
        ``ice_sigma``: the significance of each ice line's excess (d in Å →
        σ; NaN where the line is not measured: off the detector, or without
        rings on both sides); ``ice_z``, ``ice_z_rest``: the combined
        significance of the lines and that without the strongest
        contribution; ``powder_d_A``: the spacings of the other rings found.
    """
    none = {"ice_rings": None, "powder_rings": None, "ice_sigma": {}, "ice_z": float("nan"),
            "ice_z_rest": float("nan"), "powder_d_A": []}
    geo = _geometry(frame.meta, frame.data.shape)
    if geo is None:
        return none
    _, p, D, lam = geo
    mu, var, cnt, shell_px, bg_mean, bg_n = shells
    c = config
    prof = np.where(cnt >= c.ring_min_count, mu, np.nan).astype(np.float64)
    nb = len(prof)
    if np.isfinite(prof).sum() < c.ring_window:
        return none
    # --- ice: the Ih lines' excess over a smooth local background, combined over the lines
    radii = [_radius_of_d(d, p, D, lam) / shell_px for d in ICE_RINGS_D_A]
    min_bg = c.ring_min_count * c.step * c.step  # every pixel, where ring_min_count counts every step-th
    bg = np.where(bg_n >= min_bg, bg_mean, np.nan).astype(np.float64)
    gain = float(photon_transfer_gain(mu, var, cnt, c.min_count))
    lines = _ice_line_excess(bg, var, mu, np.asarray(bg_n, np.float64), radii, gain, c)
    ice_sigma = {d: (float("nan") if x is None else float(x[0])) for d, x in zip(ICE_RINGS_D_A, lines)}
    z_all, z_rest, n_lines = _ice_z(lines)
    ice = (z_all >= c.ring_sigma and z_rest >= c.ice_rest_sigma) if n_lines >= 2 else (
        n_lines == 1 and z_all >= c.ice_single_sigma)
    # --- powder: shells above the running median of the ring means, away from every ice line
    base = _running_median(prof, c.ring_window)
    resid = prof - base
    # noise of a shell's mean: its statistical error and the spread of the residuals, added in quadrature
    spread = 1.4826 * _running_median(np.abs(resid), 4 * c.ring_window + 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        scale = np.sqrt(spread**2 + var / np.maximum(cnt, 1))
        t = np.where(scale > 0, resid / scale, np.nan)
    radius = (np.arange(nb) + 0.5) * shell_px
    d_shell = _d_of_radius(radius, p, D, lam)
    near_ice = np.zeros(nb, bool)
    for rr in radii:
        r = rr * shell_px
        if not math.isfinite(r):
            continue
        tol = 1.5 + 0.005 * r
        lo, hi = int(math.floor((r - tol) / shell_px)), int(math.ceil((r + tol) / shell_px))
        if hi < 1 or lo >= nb - 1:
            continue
        near_ice[max(lo, 1) : min(hi, nb - 2) + 1] = True
    other = (t >= c.powder_sigma) & ~near_ice
    # a ring is a run of adjacent shells: report each run's peak spacing
    powder = []
    k = 0
    while k < nb:
        if other[k]:
            j = k
            while j + 1 < nb and other[j + 1]:
                j += 1
            peak = k + int(np.nanargmax(t[k : j + 1]))
            powder.append(float(d_shell[peak]))
            k = j + 1
        else:
            k += 1
    return {"ice_rings": bool(ice), "powder_rings": bool(powder), "ice_sigma": ice_sigma, "ice_z": float(z_all),
            "ice_z_rest": float(z_rest), "powder_d_A": powder}


@dataclass
class FrameMetrics:
    """The per-frame numbers of scores.csv (:data:`METRIC_COLUMNS`) and the frame's peak list.

    Attributes
    ----------
    n_spots : int
    n_spots_no_rings : int
        The spots not on a ring (:func:`ring_spots`) nor on a jet streak
        (:func:`streak_spots`): what the spot gate counts.
    d_min_A : float or None
        Å; None without geometry or without a spot off every ring and streak.
    ice_rings, powder_rings : bool or None
        None without geometry.
    jet_streak : bool
        Some spots lie on a streak through the beam centre.
    peaks : (P, 4) float32 ndarray
        x, y, intensity, SNR of the spots (hits.cxi's Cheetah peak list).
    """

    n_spots: int
    n_spots_no_rings: int
    d_min_A: float | None
    ice_rings: bool | None
    powder_rings: bool | None
    jet_streak: bool
    peaks: np.ndarray

    def cells(self) -> list[str]:
        """scores.csv cells: ``n_spots``, ``n_spots_no_rings``, ``d_min_A`` (Å, 2 decimals), ``ice_rings``,
        ``powder_rings``, ``jet_streak`` (1/0); empty = unknown."""
        def flag(v):
            return "" if v is None else str(int(bool(v)))

        return [str(int(self.n_spots)), str(int(self.n_spots_no_rings)),
                "" if self.d_min_A is None else f"{self.d_min_A:.2f}", flag(self.ice_rings),
                flag(self.powder_rings), flag(self.jet_streak)]


def frame_metrics(frame: Frame, config: SpotConfig = DEFAULT_SPOT_CONFIG) -> FrameMetrics:
    """``n_spots``, ``n_spots_no_rings``, ``d_min_A``, ``ice_rings``, ``powder_rings``, ``jet_streak`` and the peak
    list of one frame.

    Parameters
    ----------
    frame : Frame
    config : SpotConfig

    Returns
    -------
    FrameMetrics
    """
    spots = find_spots(frame, config)
    d = spot_resolution(spots, frame)
    rings = ring_flags(spots.shells, frame, config)
    on_ring, on_streak = ring_and_streak_spots(spots, frame, config)
    off = ~(on_ring | on_streak)
    return FrameMetrics(n_spots=len(spots), n_spots_no_rings=int(off.sum()),
                        d_min_A=None if d is None else d_min_of(d[off], config.d_quantile),
                        ice_rings=rings["ice_rings"],
                        powder_rings=rings["powder_rings"], jet_streak=bool(on_streak.any()), peaks=spots.table())
