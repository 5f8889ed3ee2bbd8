"""The simulator's numpy reference: the noise and spot model as whole-array steps.

:class:`diffscreen.simulate.Simulator` runs this model as compiled loops
(:mod:`diffscreen.simulate._kernels`); the functions here state it in numpy,
one whole-array step at a time, and the tests hold the compiled code to them
(tests/test_simulate_kernels.py, tests/test_simulate_speed_equivalence.py).
The model itself (PSF, Poisson table inversion, correlated phosphor noise,
read noise) is described in :mod:`diffscreen.simulate.detector`; the tables
and random draws come from there, so both sides use the same ones.
"""

from __future__ import annotations

import numpy as np

from diffscreen.simulate.detector import (
    POISSON_GAUSS_ABOVE,
    POISSON_LEVELS,
    POISSON_TOP_LEVEL,
    PSF,
    normal_table,
    poisson_table,
    poisson_table12,
    random_u16,
)
from diffscreen.simulate.run import _work  # the scratch-array cache the compiled code uses too

__all__ = [
    "spot_windows",
    "render_windows",
    "poisson_counts",
    "poisson_block",
    "correlated_normal",
    "correlated_normal_raw",
    "white_rows",
    "white_normal",
    "digitise_full",
]


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
        Exact-Poisson draws (table inversion, see :mod:`diffscreen.simulate.detector`) for λ ≤ 60 and
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
    np.multiply(lamf, np.float32((POISSON_LEVELS * 65536.0) ** 2), out=t)
    np.maximum(t, 0, out=t)
    np.sqrt(t, out=t)  # 65536 · Q √λ
    np.minimum(t, np.float32((POISSON_TOP_LEVEL + 1) * 65536.0), out=t)
    lev = _scratch(work, "poisson_lev", m, np.int32)
    np.copyto(lev, t, casting="unsafe")  # truncation = floor (t ≥ 0)
    lev += u_dither
    lev >>= 16
    np.minimum(lev, POISSON_TOP_LEVEL, out=lev)
    # coarse lookup on the top 12 bits of the quantile (a 0.5 MB table that stays in cache);
    # buckets holding a CDF step are marked 255 and resolved in the full 16-bit table, so the
    # counts are exactly those of the 16-bit inversion
    lev <<= 12
    u12 = _scratch(work, "poisson_u12", m, np.uint16)
    np.right_shift(u_col, 4, out=u12)
    lev |= u12
    c8 = _scratch(work, "poisson_c8", m, np.uint8)
    poisson_table12().take(lev, out=c8, mode="clip")
    amb = np.flatnonzero(c8 == 255)
    if amb.size:
        fine = (lev[amb] >> 12) << 16
        fine |= u_col[amb]
        c8[amb] = poisson_table().take(fine)
    np.copyto(out, c8)
    hi = np.flatnonzero(lamf > POISSON_GAUSS_ABOVE)
    if hi.size:
        lh = lamf[hi]
        z = normal_table().take(random_u16(rng, hi.size)) if z_hi is None else z_hi
        out[hi] = np.maximum(np.rint(lh + np.sqrt(lh) * z), 0)



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


def digitise_full(sim, c: dict, rng: np.random.Generator, lam: np.ndarray | None) -> np.ndarray:
    """Expected photons → int32 ADU, whole-frame numpy statement of ``Simulator._digitise``.

    Photon noise (Poisson table inversion, or PSF-blurred Gaussian noise on
    phosphor detectors), gain, per-ASIC gain and common mode, offset, read
    noise, the CSPAD mixed-gain zone (Ke et al. 2018 §3.2), rounding,
    clipping and the inactive-pixel mask, as whole-array numpy steps drawing
    the same random bits in the same order as the compiled digitiser.

    Parameters
    ----------
    sim : diffscreen.simulate.Simulator
        Gives the preset, the detector layout and the scratch arrays.
    c : dict
        The frame's drawn conditions (``Simulator._draw``).
    rng : numpy.random.Generator
    lam : (H, W) float32 ndarray or None
        Expected photons per pixel; None for a dark frame.

    Returns
    -------
    (H, W) int32 ndarray
        ADU.
    """
    P = sim.preset
    H, W = P.shape
    g = np.float32(c["adu_per_photon"])
    asic = sim.layout.asic_id
    rn = None
    work = sim._work
    adu = _work(work, "adu", (H, W))
    offset = np.float32(c["dark_offset"])
    if lam is None:
        adu.fill(offset)
    elif P.noise_blur:
        b6, z = correlated_normal_raw(rng, (H, W), work)
        # variance (ADU²) = gain × mean ADU = gain · g · λ  (gain = noise-equivalent gain)
        sd = _work(work, "sd", (H, W))
        np.maximum(lam, 0, out=sd)
        np.sqrt(sd, out=sd)
        b6 *= sd
        b6 *= np.float32(np.sqrt(c["gain"] * c["adu_per_photon"]) / 6)  # std of b6 is 6
        np.multiply(lam, g, out=adu)
        adu += b6
        adu += offset
        rn = white_rows(z, H, W)  # white read noise from the same draws (independent per pixel)
    else:
        cnt = poisson_counts(lam, rng, work)
        if sim._asic_boxes is not None:
            # per-ASIC gain on each ASIC's rectangle (pixels outside every ASIC are inactive → 0)
            for k, box in enumerate(sim._asic_boxes):
                cnt[box] *= np.float32(c["asic_gain"][k] * g)
        elif asic is not None:
            cnt *= (c["asic_gain"] * g).take(asic)
        else:
            cnt *= g
        np.add(cnt, offset, out=adu)
    lo = None if P.allow_negative else 0
    mixed = None
    zone = sim._mixed_gain_zone(c)
    if zone is not None:
        y0, y1, x0, x1 = zone
        cx, cy = c["beam_centre"]
        r0 = c["mixed_gain_r_px"]
        sub = (slice(y0, y1), slice(x0, x1))
        yy = (np.arange(y0, y1, dtype=np.float32) - np.float32(cy)) ** 2
        xx = (np.arange(x0, x1, dtype=np.float32) - np.float32(cx)) ** 2
        inner = (yy[:, None] + xx[None, :]) < np.float32(r0 * r0)
        mixed = (sub, inner, adu[sub] - np.float32(c["dark_offset"]))  # photon ADU (high-gain scale)
    if asic is not None and P.common_mode_adu > 0:
        if sim._asic_boxes is not None:
            for k, box in enumerate(sim._asic_boxes):
                adu[box] += c["common_mode"][k]
        else:
            adu += c["common_mode"].take(asic)
    if rn is None and c["read_noise"] > 0:  # (photon-counting detectors have none)
        rn = [(slice(0, H), white_normal(rng, (H, W)))]
    tmp = _work(work, "sd", (H, W))
    for rows, w in rn or []:
        t = tmp[rows]
        np.multiply(w, np.float32(c["read_noise"]), out=t)
        adu[rows] += t
    if mixed is not None:
        sub, inner, sig = mixed
        ratio = np.float32(P.mixed_gain_ratio)
        dark = adu[sub] - sig - np.float32(c["dark_offset"])  # common mode + read noise
        low = np.rint((sig + np.float32(c["dark_offset"])) / ratio + dark)
        np.clip(low, lo, P.saturation_adu, out=low)
        low *= ratio
        a = adu[sub]
        a[inner] = low[inner]
    if mixed is None and lo == 0:
        # round half up and clip in one: floor(x + 0.5) == rint(x) except at exact .5 ties,
        # and float → int32 truncation is floor for the non-negative clipped values
        adu += np.float32(0.5)
        np.clip(adu, 0, P.saturation_adu, out=adu)
    else:
        np.rint(adu, out=adu)
        if mixed is None:
            np.clip(adu, lo, P.saturation_adu, out=adu)
        else:
            keep = adu[mixed[0]][mixed[1]]
            np.clip(adu, lo, P.saturation_adu, out=adu)
            a = adu[mixed[0]]
            a[mixed[1]] = keep
    data = adu.astype(np.int32)
    data.reshape(-1)[sim._inactive] = 0
    return data
