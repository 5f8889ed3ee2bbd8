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
The functions here are the numpy statement of the model, and the reference the
tests hold the simulator to.  Inside :class:`~diffscreen.simulate.Simulator`
the same steps run as compiled loops (:mod:`diffscreen.simulate._kernels`,
numba): spot windows are scored and rendered one spot at a time without
window-sized temporaries (the Gaussian core as a separable product built by
geometric recurrences, the r⁻³ tail per pixel), and the digitiser makes one
pass over the rows from the same random bits in the same order.  The Poisson
level index is computed in integers and looked up first in a 12-bit table
(0.5 MB, in cache) whose ambiguous buckets (0.7 %) fall back to the 16-bit
one, which gives exactly the 16-bit inversion's counts.  None of this changes
the noise model: the same table inversions of the same kind of draws
(tests/test_simulate_speed_equivalence.py, tests/test_simulate_kernels.py).
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
    "correlated_normal_raw",
    "white_rows",
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


def spot_windows(xc, yc, ux, uy, sig_r, sig_t, psf: PSF, h: int, work: dict | None = None):
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
    work : dict, optional
        Scratch arrays; ``prof`` then lives in it and is overwritten by the
        next call with the same ``work``.

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
    ux = np.asarray(ux, np.float64)
    uy = np.asarray(uy, np.float64)
    sr2 = np.asarray(sig_r, np.float64) ** 2 + 1.0 / 12
    st2 = np.asarray(sig_t, np.float64) ** 2 + 1.0 / 12

    w = 2 * h + 1

    def quadratic(cr, ct, const, key):
        # cr·dr² + ct·dt² (+ const) with dr = dx·ux + dy·uy, dt = dy·ux - dx·uy, expanded so that
        # only the cross term needs a full (n, w, w) product
        axx = (cr * ux * ux + ct * uy * uy).astype(np.float32)[:, None, None]
        ayy = (cr * uy * uy + ct * ux * ux).astype(np.float32)[:, None, None]
        axy = (2 * (cr - ct) * ux * uy).astype(np.float32)[:, None, None]
        q = _scratch(work, key, n * w * w).reshape(n, w, w)
        np.multiply(axy * dx, dy, out=q)
        q += axx * dx * dx
        q += ayy * dy * dy + np.float32(const)
        return q

    if psf.w > 0:
        c2 = psf.sigma**2
        g = quadratic(-0.5 / (sr2 + c2), -0.5 / (st2 + c2), 0.0, "sw_prof")
        np.exp(g, out=g)
        g *= np.float32(psf.w) / np.maximum(g.sum(axis=(1, 2), keepdims=True), np.float32(1e-30))
        prof = g
    else:
        prof = _scratch(work, "sw_prof", n * w * w).reshape(n, w, w)
        prof.fill(0.0)
    if psf.w < 1:
        g2 = psf.g**2
        ar2 = sr2 + g2
        at2 = st2 + g2
        # tail c·q^(-3/2) with c folded into q: (q · c^(-2/3))^(-3/2)
        cq = ((1.0 - psf.w) / (2 * np.pi) / np.sqrt(ar2 * at2)) ** (-2.0 / 3.0)
        q = quadratic(cq / ar2, cq / at2, 0.0, "sw_q")
        q += cq.astype(np.float32)[:, None, None]
        t = _scratch(work, "sw_t", n * w * w).reshape(n, w, w)
        np.sqrt(q, out=t)
        t *= q
        np.reciprocal(t, out=t)  # c · q^(-3/2)
        prof += t
    return ix, iy, prof


def render_windows(img: np.ndarray, ix, iy, values, work: dict | None = None) -> None:
    """Add window values into an image in place (clipped to the image).

    Parameters
    ----------
    img : (H, W) float32 ndarray
        Modified in place.
    ix, iy : (n, w) int ndarray
        Columns and rows of the windows (from :func:`spot_windows`).
    values : (n, w, w) float ndarray
        Values to add (photons).
    work : dict, optional
        Scratch arrays (the flat pixel indices).
    """
    H, W = img.shape
    n, w = ix.shape
    okx = (ix >= 0) & (ix < W)
    oky = (iy >= 0) & (iy < H)
    if okx.all() and oky.all():
        flat = _scratch(work, "rw_flat", n * w * w, np.intp).reshape(n, w, w)
        np.add((iy * W)[:, :, None], ix[:, None, :], out=flat)
        np.add.at(img.reshape(-1), flat.reshape(-1), values.reshape(-1).astype(img.dtype, copy=False))
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


@functools.lru_cache(maxsize=1)
def _poisson_table12() -> np.ndarray:
    """Counts for the 4096 top-12-bit quantile buckets of each level; 255 where the bucket is ambiguous."""
    tab = _poisson_table().reshape(_TMAX + 1, 4096, 16)
    first = tab[:, :, 0]
    same = np.all(tab == first[:, :, None], axis=2)
    return np.where(same & (first < 255), first, 255).astype(np.uint8).reshape(-1)


def poisson_counts(lam: np.ndarray, rng: np.random.Generator, work: dict | None = None) -> np.ndarray:
    """Poisson photon counts for an expected-photon map, fast.

    Parameters
    ----------
    lam : (H, W) float32 ndarray
        Expected photons per pixel (≥ 0).
    rng : numpy.random.Generator
    work : dict, optional
        Scratch arrays reused between calls; the result then lives in it
        (overwritten by the next call with the same ``work``).

    Returns
    -------
    counts : (H, W) float32 ndarray
        Exact-Poisson draws (table inversion, see module notes) for λ ≤ 60 and
        ``round(λ + √λ·z)`` above.

    Notes
    -----
    The level index is ``floor(Q√λ + u/65536)`` (u a uniform 16-bit integer,
    the dither between the two nearest levels), computed in integers as
    ``(floor(65536·Q√λ) + u) >> 16``.
    """
    shape = lam.shape
    lamf = lam.reshape(-1)
    n = lamf.size
    u = random_u16(rng, 2 * n)
    counts = _work(work, "poisson_counts", (n,)) if work is not None else np.empty(n, np.float32)
    poisson_block(lamf, u[:n], u[n:], rng, counts, work)
    return counts.reshape(shape)


def poisson_block(
    lamf, u_col, u_dither, rng: np.random.Generator, out: np.ndarray, work: dict | None = None, z_hi=None
) -> None:
    """Poisson counts of a flat block of pixels from pre-drawn 16-bit uniforms (see :func:`poisson_counts`).

    Parameters
    ----------
    lamf : (m,) float32 ndarray
        Expected photons.
    u_col, u_dither : (m,) uint16 ndarray
        Uniform bits: the quantile (table column) and the level dither.
    rng : numpy.random.Generator
        For the Gaussian draws of pixels with λ > ``POISSON_GAUSS_ABOVE``.
    out : (m,) float32 ndarray
        Receives the counts.
    work : dict, optional
        Scratch arrays.
    z_hi : ndarray, optional
        Unit normals already drawn for the block's pixels with λ > ``POISSON_GAUSS_ABOVE``
        (in pixel order); default: drawn here from ``rng``.
    """
    m = lamf.size
    t = _scratch(work, "poisson_t", m)
    np.multiply(lamf, np.float32((_Q * 65536.0) ** 2), out=t)
    np.maximum(t, 0, out=t)
    np.sqrt(t, out=t)  # 65536 · Q √λ
    np.minimum(t, np.float32((_TMAX + 1) * 65536.0), out=t)
    lev = _scratch(work, "poisson_lev", m, np.int32)
    np.copyto(lev, t, casting="unsafe")  # truncation = floor (t ≥ 0)
    lev += u_dither
    lev >>= 16
    np.minimum(lev, _TMAX, out=lev)
    # coarse lookup on the top 12 bits of the quantile (a 0.5 MB table that stays in cache);
    # buckets holding a CDF step are marked 255 and resolved in the full 16-bit table, so the
    # counts are exactly those of the 16-bit inversion
    lev <<= 12
    u12 = _scratch(work, "poisson_u12", m, np.uint16)
    np.right_shift(u_col, 4, out=u12)
    lev |= u12
    c8 = _scratch(work, "poisson_c8", m, np.uint8)
    _poisson_table12().take(lev, out=c8, mode="clip")
    amb = np.flatnonzero(c8 == 255)
    if amb.size:
        fine = (lev[amb] >> 12) << 16
        fine |= u_col[amb]
        c8[amb] = _poisson_table().take(fine)
    np.copyto(out, c8)
    hi = np.flatnonzero(lamf > POISSON_GAUSS_ABOVE)
    if hi.size:
        lh = lamf[hi]
        z = normal_table().take(random_u16(rng, hi.size)) if z_hi is None else z_hi
        out[hi] = np.maximum(np.rint(lh + np.sqrt(lh) * z), 0)


def _work(work: dict | None, key: str, shape, dtype=np.float32) -> np.ndarray:
    """A scratch array from ``work`` (reused between frames: no page faults), or a new one."""
    if work is None:
        return np.empty(shape, dtype)
    a = work.get(key)
    if a is None or a.shape != tuple(shape) or a.dtype != dtype:
        a = work[key] = np.empty(shape, dtype)
    return a


def _scratch(work: dict | None, key: str, m: int, dtype=np.float32) -> np.ndarray:
    """A flat scratch array of length m from ``work`` (its capacity only grows), or a new one."""
    if work is None:
        return np.empty(m, dtype)
    a = work.get(key)
    if a is None or a.ndim != 1 or a.size < m or a.dtype != dtype:
        a = work[key] = np.empty(m, dtype)
    return a[:m]


def correlated_normal_raw(rng: np.random.Generator, shape, work: dict | None = None):
    """Correlated Gaussian noise, unnormalised, and the white field it was made from.

    Same random stream and values as :func:`correlated_normal` (times 6), built
    with the binomial filter as two pairwise sums per axis into reusable
    buffers.

    Parameters
    ----------
    rng : numpy.random.Generator
    shape : (int, int)
        (H, W).
    work : dict, optional
        Scratch arrays kept between calls (see :class:`~diffscreen.simulate.Simulator`);
        the returned arrays live in it and are overwritten by the next call.

    Returns
    -------
    b6 : (H, W) float32 ndarray
        [1,2,1]⊗[1,2,1]-filtered unit normals: zero mean, standard deviation 6.
    z : (H + 2, W + 2) float32 ndarray
        The unit-normal field before filtering (white).
    """
    H, W = shape
    z = _work(work, "z", (H + 2, W + 2))
    normal_table().take(random_u16(rng, (H + 2) * (W + 2)), out=z.reshape(-1), mode="clip")
    a = _work(work, "blur_a", (H + 1, W + 2))
    np.add(z[:-1], z[1:], out=a)
    a2 = _work(work, "blur_a2", (H, W + 2))
    np.add(a[:-1], a[1:], out=a2)
    b = _work(work, "blur_b", (H, W + 1))
    np.add(a2[:, :-1], a2[:, 1:], out=b)
    b6 = _work(work, "blur_b6", (H, W))
    np.add(b[:, :-1], b[:, 1:], out=b6)
    return b6, z


def white_rows(z: np.ndarray, H: int, W: int):
    """Row blocks of the white field that :func:`correlated_normal` returns with ``with_white``.

    Pixel row i takes raw row (i + h2) mod (H + 2) of ``z`` with h2 = (H + 2) // 2,
    so that at every pixel the white value is independent of the correlated one.

    Returns
    -------
    list of (slice, ndarray)
        (rows of the frame, the (n, W) view of ``z`` that fills them).
    """
    h2 = (H + 2) // 2
    m = H + 2 - h2
    return [(slice(0, m), z[h2:, :W]), (slice(m, H), z[: h2 - 2, :W])]


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
    b6, z = correlated_normal_raw(rng, shape)
    b6 *= np.float32(1 / 6)  # Σk² of [1,2,1]⊗[1,2,1] is 36 → std 6
    if not with_white:
        return b6
    w = np.concatenate([v for _, v in white_rows(z, H, W)])
    return b6, w


def white_normal(rng: np.random.Generator, shape) -> np.ndarray:
    """Unit-variance white Gaussian noise, (H, W) float32 (table method)."""
    n = int(np.prod(shape))
    return normal_table().take(random_u16(rng, n)).reshape(shape)
