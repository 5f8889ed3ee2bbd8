"""Detector side of the simulator: spot rendering with a point-spread function, and noise.

Point-spread function
---------------------
Each Bragg spot is the intrinsic spot (a Gaussian elongated radially by the
diffracting wavelength band, see :mod:`diffscreen.simulate.crystal`) convolved
with the detector PSF, modelled as a mixture of

* a Gaussian core of width σ_psf (charge sharing in a pixel detector; the
  phosphor/fibre-optic core of a CCD), and
* a long-tailed component ``K(r) = g / (2π (r² + g²)^{3/2})``, the
  "Lorentzian" form Holton et al. (2012, J. Synchrotron Rad. 19, 1006) found
  for fibre-coupled CCDs (also the ``lorentzian`` PSF of nanoBragg).  Its r⁻³
  tail makes very bright Rayonix spots cover hundreds of pixels (Ke et al. 2018,
  Fig. 5d).

The convolution of the intrinsic Gaussian with each component is approximated
by adding widths in quadrature along the radial and tangential directions, and
1/12 px² is added for the pixel's box integration.  Spots are rendered only
in small windows around each spot (size chosen from the spot's brightness).

Noise
-----
* Pixel-array detectors (CSPAD): exact Poisson photon counts, drawn by table
  inversion: a (129 × 65536) quantile table over λ = (i/16)² with the level
  index dithered, so the mean is exact to 1/(4·16²) photon; Gaussian for
  λ > 60.
* Phosphor detectors (Rayonix): photon noise is generated as white Gaussian
  noise blurred by the PSF core (binomial [1,2,1]⊗[1,2,1]/16 kernel), which is
  what Poisson photons spread by a PSF look like: correlated over ~2 px with
  variance/mean (in ADU) equal to the noise-equivalent gain of Ke Table 2.
* Read (dark) noise is white Gaussian; Gaussian deviates come from a 65536-entry
  inverse-CDF table indexed by raw 16-bit random numbers (tails cut at 4.3σ).
  Photon-counting detectors (read noise 0) draw none.

Speed (issue 3)
---------------
Inside :class:`~diffscreen.simulate.Simulator` these steps run as compiled
loops (:mod:`diffscreen.simulate._kernels`, numba): spot windows are scored
and rendered one spot at a time without window-sized temporaries (the
Gaussian core as a separable product built by geometric recurrences, the r⁻³
tail per pixel), and the digitiser makes one pass over the rows.  The Poisson
level index is computed in integers and looked up first in a 12-bit table
(:func:`poisson_table12`, 0.5 MB, in cache) whose ambiguous buckets (0.7 %)
fall back to the 16-bit one (:func:`poisson_table`), which gives exactly the
16-bit inversion's counts.  This module holds what both the compiled loops
and their numpy statement share: the tables, the random draws and the PSF.
The numpy statement of the model (whole-array steps), which the tests hold
the compiled code to, is ``tests/reference/simulate.py``
(tests/test_simulate_speed_equivalence.py, tests/test_simulate_kernels.py).
"""

from __future__ import annotations

import functools

import numpy as np

__all__ = [
    "PSF",
    "POISSON_LEVELS",
    "POISSON_TOP_LEVEL",
    "POISSON_GAUSS_ABOVE",
    "random_u16",
    "normal_table",
    "poisson_table",
    "poisson_table12",
]

#: Poisson table levels per unit √photon: level i holds λ = (i / POISSON_LEVELS)² photons.
POISSON_LEVELS = 16
#: Highest Poisson table level: λ = (128 / 16)² = 64 photons.
POISSON_TOP_LEVEL = 128
POISSON_GAUSS_ABOVE = 60.0  # photons; above this the Poisson table is replaced by a Gaussian


class PSF:
    """Per-frame point-spread function parameters.

    Parameters
    ----------
    sigma_px : float
        σ of the Gaussian core, pixels.
    tail_g_px : float
        Width g of the r⁻³ tail component, pixels.
    core_weight : float
        Fraction of the light in the core, in [0, 1].
    """

    def __init__(self, sigma_px: float, tail_g_px: float, core_weight: float):
        self.sigma = float(sigma_px)
        self.g = float(tail_g_px)
        self.w = float(np.clip(core_weight, 0.0, 1.0))

    def __repr__(self):
        return f"PSF(sigma_px={self.sigma:.3g}, tail_g_px={self.g:.3g}, core_weight={self.w:.3g})"

def random_u16(rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` uniform 16-bit integers, fast (raw 64-bit draws split in four).

    Parameters
    ----------
    rng : numpy.random.Generator
    n : int

    Returns
    -------
    u : (n,) uint16 ndarray
    """
    raw = rng.bit_generator.random_raw((n + 3) // 4)
    return raw.view(np.uint16)[:n]


@functools.lru_cache(maxsize=1)
def normal_table() -> np.ndarray:
    """Inverse normal CDF at (u + 0.5)/65536, u = 0..65535: (65536,) float32."""
    from scipy.special import ndtri

    return ndtri((np.arange(65536) + 0.5) / 65536).astype(np.float32)


@functools.lru_cache(maxsize=1)
def poisson_table() -> np.ndarray:
    """Poisson quantile table: photon counts by level and 16-bit quantile.

    Entry ``[i, u]`` is the smallest k with P(K ≤ k) > (u + 0.5)/65536 for
    K ~ Poisson(λᵢ), λᵢ = (i / :data:`POISSON_LEVELS`)², i = 0 ..
    :data:`POISSON_TOP_LEVEL`; a count is drawn by looking up a random level
    (dithered between the two nearest to λ) and a uniform 16-bit quantile.
    Counts above 255 are stored as 255 (never reached: λ ≤ 64).

    Returns
    -------
    ((POISSON_TOP_LEVEL + 1) · 65536,) uint8 ndarray
        The table flattened row by row (index ``i << 16 | u``); cached, not to
        be modified.
    """
    lam = (np.arange(POISSON_TOP_LEVEL + 1) / POISSON_LEVELS) ** 2
    k = np.arange(256)
    # pmf by the recurrence p(k) = p(k-1) λ / k (λ ≤ 64, so exp(-λ) stays representable)
    ratio = lam[:, None] / np.maximum(k[None, 1:], 1)
    pmf = np.exp(-lam)[:, None] * np.concatenate([np.ones((len(lam), 1)), np.cumprod(ratio, axis=1)], axis=1)
    cdf = np.cumsum(pmf, axis=1)
    uq = (np.arange(65536) + 0.5) / 65536
    tab = np.empty((POISSON_TOP_LEVEL + 1, 65536), np.uint8)
    for i in range(POISSON_TOP_LEVEL + 1):
        tab[i] = np.minimum(np.searchsorted(cdf[i], uq, side="right"), 255)
    return tab.reshape(-1)


@functools.lru_cache(maxsize=1)
def poisson_table12() -> np.ndarray:
    """Coarse Poisson quantile table on the top 12 bits of the quantile.

    Entry ``[i, u >> 4]`` is the count of :func:`poisson_table` shared by all
    16 quantiles ``u`` of that bucket, or 255 where they differ (a CDF step
    falls inside the bucket, 0.7 % of them) and the 16-bit table must be
    consulted.  At 0.5 MB it stays in cache, so the lookup of most pixels is
    fast and every count equals the 16-bit inversion's.

    Returns
    -------
    ((POISSON_TOP_LEVEL + 1) · 4096,) uint8 ndarray
        Flattened row by row (index ``i << 12 | u >> 4``); cached, not to be
        modified.
    """
    tab = poisson_table().reshape(POISSON_TOP_LEVEL + 1, 4096, 16)
    first = tab[:, :, 0]
    same = np.all(tab == first[:, :, None], axis=2)
    return np.where(same & (first < 255), first, 255).astype(np.uint8).reshape(-1)
