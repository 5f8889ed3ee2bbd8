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
"""

from __future__ import annotations

import functools

import numpy as np

__all__ = [
    "PSF",
    "spot_windows",
    "render_windows",
    "random_u16",
    "normal_table",
    "poisson_counts",
    "correlated_normal",
    "white_normal",
]

_Q = 16  # sqrt-scale levels per unit sqrt(photon) in the Poisson table
_TMAX = 128  # highest level: λ = (128/16)² = 64 photons
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


def spot_windows(xc, yc, ux, uy, sig_r, sig_t, psf: PSF, h: int):
    """Unit-flux spot profiles in (2h+1)² windows.

    Parameters
    ----------
    xc, yc : (n,) float ndarray
        Spot centroids, pixels (x fast scan, y slow scan; pixel centres at
        integers).
    ux, uy : (n,) float ndarray
        Unit radial direction (from the beam centre) at each spot.
    sig_r, sig_t : (n,) float ndarray
        Intrinsic radial and tangential σ, pixels (before the PSF).
    psf : PSF
    h : int
        Window half-size; the window is (2h+1) × (2h+1) pixels centred on the
        pixel nearest to the centroid.

    Returns
    -------
    ix : (n, 2h+1) int64 ndarray
        Column of each window column.
    iy : (n, 2h+1) int64 ndarray
        Row of each window row.
    prof : (n, 2h+1, 2h+1) float32 ndarray
        Fraction of the spot's photons in each pixel, ``prof[k, row, col]``.
        The core sums to its weight; the tail's flux outside the window is
        lost (window sizes are chosen so that it is below the noise).
    """
    n = len(xc)
    off = np.arange(-h, h + 1)
    x0 = np.rint(xc).astype(np.int64)
    y0 = np.rint(yc).astype(np.int64)
    ix = x0[:, None] + off
    iy = y0[:, None] + off
    dx = (ix - xc[:, None]).astype(np.float32)[:, None, :]  # (n,1,w)
    dy = (iy - yc[:, None]).astype(np.float32)[:, :, None]  # (n,w,1)
    ux = ux.astype(np.float32)[:, None, None]
    uy = uy.astype(np.float32)[:, None, None]
    dr = dx * ux + dy * uy
    dt = dy * ux - dx * uy
    dr2 = dr * dr
    dt2 = dt * dt
    sr2 = (sig_r**2 + 1.0 / 12).astype(np.float32)[:, None, None]
    st2 = (sig_t**2 + 1.0 / 12).astype(np.float32)[:, None, None]
    if psf.w > 0:
        c2 = np.float32(psf.sigma**2)
        g = dr2 * (np.float32(-0.5) / (sr2 + c2))
        g += dt2 * (np.float32(-0.5) / (st2 + c2))
        np.exp(g, out=g)
        g *= np.float32(psf.w) / np.maximum(g.sum(axis=(1, 2), keepdims=True), np.float32(1e-30))
        prof = g
    else:
        prof = np.zeros((n, 2 * h + 1, 2 * h + 1), np.float32)
    if psf.w < 1:
        g2 = np.float32(psf.g**2)
        ar2 = sr2 + g2
        at2 = st2 + g2
        q = dr2 * (np.float32(1) / ar2)
        q += dt2 * (np.float32(1) / at2)
        q += np.float32(1)
        t = np.sqrt(q)
        t *= q
        np.reciprocal(t, out=t)  # q^(-3/2)
        t *= np.float32((1.0 - psf.w) / (2 * np.pi)) / np.sqrt(ar2 * at2)
        prof += t
    return ix, iy, prof


def render_windows(img: np.ndarray, ix, iy, values) -> None:
    """Add window values into an image in place (clipped to the image).

    Parameters
    ----------
    img : (H, W) float32 ndarray
        Modified in place.
    ix, iy : (n, w) int ndarray
        Columns and rows of the windows (from :func:`spot_windows`).
    values : (n, w, w) float ndarray
        Values to add (photons).
    """
    H, W = img.shape
    n, w = ix.shape
    okx = (ix >= 0) & (ix < W)
    oky = (iy >= 0) & (iy < H)
    if okx.all() and oky.all():
        flat = (iy[:, :, None] * W + ix[:, None, :]).ravel()
        np.add.at(img.reshape(-1), flat, values.reshape(-1).astype(img.dtype, copy=False))
        return
    ok = oky[:, :, None] & okx[:, None, :]
    flat = iy[:, :, None] * W + ix[:, None, :]
    np.add.at(img.reshape(-1), flat[ok], values[ok].astype(img.dtype, copy=False))


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
def _poisson_table() -> np.ndarray:
    lam = (np.arange(_TMAX + 1) / _Q) ** 2
    k = np.arange(256)
    # pmf by the recurrence p(k) = p(k-1) λ / k (λ ≤ 64, so exp(-λ) stays representable)
    ratio = lam[:, None] / np.maximum(k[None, 1:], 1)
    pmf = np.exp(-lam)[:, None] * np.concatenate([np.ones((len(lam), 1)), np.cumprod(ratio, axis=1)], axis=1)
    cdf = np.cumsum(pmf, axis=1)
    uq = (np.arange(65536) + 0.5) / 65536
    tab = np.empty((_TMAX + 1, 65536), np.uint8)
    for i in range(_TMAX + 1):
        tab[i] = np.minimum(np.searchsorted(cdf[i], uq, side="right"), 255)
    return tab.reshape(-1)


def poisson_counts(lam: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Poisson photon counts for an expected-photon map, fast.

    Parameters
    ----------
    lam : (H, W) float32 ndarray
        Expected photons per pixel (≥ 0).
    rng : numpy.random.Generator

    Returns
    -------
    counts : (H, W) float32 ndarray
        Exact-Poisson draws (table inversion, see module notes) for λ ≤ 60 and
        ``round(λ + √λ·z)`` above.
    """
    shape = lam.shape
    lamf = lam.reshape(-1)
    n = lamf.size
    u = random_u16(rng, 2 * n)
    t = np.sqrt(np.maximum(lamf, 0), dtype=np.float32)
    t *= np.float32(_Q)
    t += u[n:] * np.float32(1 / 65536)  # dither between the two nearest levels
    lev = t.astype(np.int32)
    np.minimum(lev, _TMAX, out=lev)
    lev <<= 16
    lev |= u[:n]
    counts = _poisson_table().take(lev).astype(np.float32)
    hi = np.flatnonzero(lamf > POISSON_GAUSS_ABOVE)
    if hi.size:
        lh = lamf[hi]
        z = normal_table().take(random_u16(rng, hi.size))
        counts[hi] = np.maximum(np.rint(lh + np.sqrt(lh) * z), 0)
    return counts.reshape(shape)


def correlated_normal(rng: np.random.Generator, shape, *, with_white: bool = False):
    """Unit-variance Gaussian noise correlated by a [1,2,1]⊗[1,2,1] kernel.

    Parameters
    ----------
    rng : numpy.random.Generator
    shape : (int, int)
    with_white : bool
        Also return a white unit-normal field, made from the same raw draws
        shifted by half the frame height (so that at any pixel it is
        independent of the correlated field; the only dependence is between
        pixels half a frame apart).

    Returns
    -------
    z : (H, W) float32 ndarray
        Zero mean, unit variance, neighbour correlation 2/3 along each axis.
    w : (H, W) float32 ndarray
        Only with ``with_white``.
    """
    H, W = shape
    z = normal_table().take(random_u16(rng, (H + 2) * (W + 2))).reshape(H + 2, W + 2)
    a = z[1:-1] * np.float32(2)
    a += z[:-2]
    a += z[2:]
    b = a[:, 1:-1] * np.float32(2)
    b += a[:, :-2]
    b += a[:, 2:]
    b *= np.float32(1 / 6)  # Σk² of [1,2,1]⊗[1,2,1] is 36 → std 6
    if not with_white:
        return b
    h2 = (H + 2) // 2
    w = np.concatenate([z[h2:, :W], z[: h2 - 2, :W]])  # raw row (i + h2) mod (H + 2) for pixel row i
    return b, w


def white_normal(rng: np.random.Generator, shape) -> np.ndarray:
    """Unit-variance white Gaussian noise, (H, W) float32 (table method)."""
    n = int(np.prod(shape))
    return normal_table().take(random_u16(rng, n)).reshape(shape)
