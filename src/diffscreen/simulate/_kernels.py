"""Compiled per-pixel loops of the simulator (numba): noise + digitisation, diffuse background, spot windows.

Each kernel fuses what :mod:`diffscreen.simulate.detector`,
:mod:`diffscreen.simulate.background`, :mod:`diffscreen.simulate.crystal` and
:class:`diffscreen.simulate.Simulator` describe as a chain of whole-array numpy
steps into one pass:

* the digitiser (:func:`digitise`) does the same float32 operations in the same
  order on the same pre-drawn random bits as the numpy reference
  (``digitise_full`` in tests/reference/simulate.py), so a (seed, index) frame
  is the one the numpy reference draws (one ADU step at
  float rounding ties; tests/test_simulate_speed_equivalence.py);
* the spot windows (:func:`window_scores`, :func:`render_spots`) evaluate the
  profile of the numpy reference ``spot_windows`` (tests/reference/simulate.py)
  in float64 (its Gaussian core as a separable product), equal to it to
  float32 rounding;
* reflection prediction (:func:`excited_reflections`, :func:`still_geometry`)
  gives the reflections of ``ewald_candidates`` + ``predict_reflections``' filters
  in the same order (tests/test_simulate_kernels.py).

Why compiled code (issue 3): at 1920 × 1920 the target of 20 frames/s on one
core leaves 13 ns per pixel for the whole frame; numpy makes a dozen passes over
frame-sized arrays for the noise model alone, and a photosystem II hit has
10⁴–10⁵ spot windows.  numba compiles these loops at first use and caches the
machine code next to this file (``cache=True``), so only the first process of
an install pays the compile time (about 10 s).

All kernels are single-threaded (the "one core" of the target; parallel runs
use several processes).
"""

from __future__ import annotations

import numpy as np
from numba import njit

#: compiler flags of the loops over pixels: no NaN / inf inputs (so sqrt and division vectorise;
#: both are exact in SIMD too) and numpy's error model (no division-by-zero checks)
_EXACT = dict(cache=True, nogil=True, error_model="numpy", fastmath={"nnan", "ninf", "nsz"})
#: the same, and sums may be reassociated (vectorised reductions; float64 sums of float32 values)
_SUMS = dict(cache=True, nogil=True, error_model="numpy", fastmath={"nnan", "ninf", "nsz", "reassoc"})


@njit(cache=True, nogil=True)
def count_above(a, level):
    """Number of elements of a flat float32 array above ``level``."""
    n = 0
    for i in range(a.size):
        if a[i] > level:
            n += 1
    return n


@njit(**_EXACT)
def digitise(
    out,
    mode,
    lam,
    u_p,
    tab12,
    tab16,
    pscale,
    tmax_t,
    tmax,
    gauss_above,
    zu_hi,
    ntab,
    tabk,
    u_z,
    g,
    asic,
    gains,
    cm,
    u_w,
    sig_r,
    add_const,
    offset,
    fast_round,
    clip_lo,
    sat,
    mixed,
    active,
):
    """Expected photons → ADU for a whole frame, in one pass (``Simulator._digitise``).

    Parameters
    ----------
    out : (H, W) int32 ndarray
        Receives the ADU.
    mode : int
        0 no beam (dark), 1 photon counts by Poisson table inversion, 2 blurred
        Gaussian photon noise (phosphor detectors).
    lam : (H, W) float32 ndarray
        Expected photons (unused in mode 0).
    u_p : (2·H·W,) uint16 ndarray
        Mode 1: table column bits, then level dither bits.
    tab12, tab16 : uint8 ndarray
        Poisson quantile tables (:func:`~diffscreen.simulate.detector.poisson_table12` /
        :func:`~diffscreen.simulate.detector.poisson_table`).
    pscale, tmax_t : float32
        (Q·65536)² and (TMAX + 1)·65536, with Q = ``detector.POISSON_LEVELS`` and
        TMAX = ``detector.POISSON_TOP_LEVEL``.
    tmax : int
    gauss_above : float
        Photons above which the count is ``rint(λ + √λ·z)``.
    zu_hi : (m,) uint16 ndarray
        Bits of the unit normals of those pixels, in pixel order.
    ntab : (65536,) float32 ndarray
        Inverse normal CDF table.
    tabk : (65536,) float32 ndarray
        Mode 2: ``ntab`` × k, the scale of the blurred photon noise.
    u_z : ((H + 2)·(W + 2),) uint16 ndarray
        Mode 2: bits of the white normals ``tabk[u_z]`` of a raw (H + 2, W + 2)
        field: the blur's input; the read noise of pixel row i takes raw row
        (i + (H + 2)//2) mod (H + 2).
    g : float32
        ADU per photon (for mode 1 detectors without ASICs, and mode 2).
    asic : (H, W) int16 ndarray or (0, 0)
        ASIC of each pixel (-1: none → the last entry of ``gains`` / ``cm``).
    gains, cm : (n_asic + 1,) float32 ndarray
        ASIC gain × g, and common-mode offsets (ADU).
    u_w : (H·W,) uint16 ndarray
        Read-noise bits (mode 0/1 with σ_read > 0; empty otherwise).
    sig_r : float32
        Read-noise σ (ADU) in modes 0/1; σ / k in mode 2.
    add_const, offset : float32
        Offset added (+ 0.5 for the fast rounding); the dark offset.
    fast_round : bool
        Round by floor(x + 0.5) (no negative values, no mixed-gain zone).
    clip_lo : bool
        Clip at 0 (otherwise only at ``sat``).
    sat : float32
    mixed : (8,) float64 ndarray
        Mixed-gain zone (Ke §3.2): y0, y1, x0, x1, cx, cy, r², ratio; empty for none.
    active : (H, W) bool ndarray
        Inactive pixels read 0.
    """
    H, W = out.shape
    n = H * W
    has_asic = asic.shape[0] == H
    has_cm = cm.size > 0
    has_rn = sig_r > 0
    has_mixed = mixed.size > 0
    h2 = (H + 2) // 2
    j_hi = 0
    lo = np.float32(0.0)
    if has_mixed:
        my0, my1, mx0, mx1 = int(mixed[0]), int(mixed[1]), int(mixed[2]), int(mixed[3])
        mcx, mcy = np.float32(mixed[4]), np.float32(mixed[5])
        mr2, ratio = np.float32(mixed[6]), np.float32(mixed[7])
    else:
        my0 = my1 = mx0 = mx1 = 0
        mcx = mcy = mr2 = ratio = np.float32(0.0)
    # one row at a time, in short loops that each do one step (the compiler vectorises the
    # branch-free ones); the steps and their float32 order are those of the reference digitise_full
    va = np.empty(W + 2, np.float32)
    zring = np.empty((3, W + 2), np.float32)
    o = np.empty(W, np.float32)
    sig = np.empty(W, np.float32)
    gk = np.empty(W, np.float32)
    for r in range(H):
        base = r * W
        lrow = lam[r] if mode != 0 else lam[0]
        # ---- photon ADU
        if mode == 1:
            if has_asic:
                arow = asic[r]
                last = gains.size - 1
                for j in range(W):
                    k = arow[j]
                    gk[j] = gains[k if k >= 0 else last]
            else:
                gk[:] = g
            for j in range(W):
                f = base + j
                lm = lrow[j]
                # reference poisson_block: level index floor(Q√λ + dither) in integers, 12-bit
                # quantile table, 16-bit table where the 12-bit bucket is ambiguous
                tq = lm * pscale
                if tq < 0:
                    tq = np.float32(0.0)
                tq = np.sqrt(tq)
                if tq > tmax_t:
                    tq = tmax_t
                lev = (np.int32(tq) + np.int32(u_p[n + f])) >> 16
                if lev > tmax:
                    lev = tmax
                uc = np.int32(u_p[f])
                c8 = tab12[(lev << 12) | (uc >> 4)]
                if c8 == 255:
                    c8 = tab16[(lev << 16) | uc]
                v = np.float32(c8)
                if lm > gauss_above:  # Gaussian photon noise (normals drawn in pixel order)
                    v = np.rint(lm + np.sqrt(lm) * ntab[zu_hi[j_hi]])
                    j_hi += 1
                    if v < 0:
                        v = np.float32(0.0)
                o[j] = v * gk[j]
        elif mode == 2:
            # [1,2,1] vertical then horizontal pairwise sums, as the reference correlated_normal_raw, over the
            # white normals z = tabk[u] of raw rows r, r + 1, r + 2 (a ring of three rows)
            if r == 0:
                for i in range(2):
                    zr = zring[i]
                    for j in range(W + 2):
                        zr[j] = tabk[u_z[i * (W + 2) + j]]
            zr = zring[(r + 2) % 3]
            zb = (r + 2) * (W + 2)
            for j in range(W + 2):
                zr[j] = tabk[u_z[zb + j]]
            z0, z1, z2 = zring[r % 3], zring[(r + 1) % 3], zring[(r + 2) % 3]
            for j in range(W + 2):
                va[j] = (z0[j] + z1[j]) + (z1[j] + z2[j])
            for j in range(W):
                t = (va[j] + va[j + 1]) + (va[j + 1] + va[j + 2])
                lm = lrow[j]
                o[j] = lm * g + t * np.sqrt(max(lm, np.float32(0.0)))
        else:
            o[:] = 0.0
        in_rows = has_mixed and r >= my0 and r < my1
        if in_rows:
            sig[:] = o
        # ---- common mode, read noise, offset
        if has_cm and has_asic:
            arow = asic[r]
            last = cm.size - 1
            for j in range(W):
                k = arow[j]
                o[j] = o[j] + cm[k if k >= 0 else last]
        if has_rn:
            if mode == 2:
                zb = ((r + h2) % (H + 2)) * (W + 2)
                for j in range(W):
                    o[j] = o[j] + tabk[u_z[zb + j]] * sig_r
            else:
                for j in range(W):
                    o[j] = o[j] + ntab[u_w[base + j]] * sig_r
        # ---- round, clip, mask
        orow = out[r]
        arow_ok = active[r]
        for j in range(W):
            v = o[j] + add_const
            if not fast_round:
                v = np.rint(v)
            if clip_lo and v < lo:
                v = lo
            if v > sat:
                v = sat
            orow[j] = np.int32(v) if arow_ok[j] else 0
        # ---- Ke §3.2 mixed-gain zone: low gain inside the circle
        if in_rows:
            dyy = np.float32(r) - mcy
            yy = dyy * dyy
            for j in range(max(mx0, 0), min(mx1, W)):
                dxx = np.float32(j) - mcx
                if yy + dxx * dxx < mr2 and arow_ok[j]:
                    dark = (o[j] + add_const) - sig[j] - offset
                    low = np.rint((sig[j] + offset) / ratio + dark)
                    if clip_lo and low < lo:
                        low = lo
                    if low > sat:
                        low = sat
                    orow[j] = np.int32(low * ratio)


# ---------------------------------------------------------------------------- Bragg-spot windows


#: cross-term bound of the separable core evaluation (|B|·max|dx|·max|dy|, in e-folds): below it
#: every factor stays inside float64's range; above it (needle-like diagonal spots of very sharp
#: detectors) the core is evaluated pixel by pixel
_SEPARABLE_MAX = 600.0
#: core values below this are set to 0 (relative to the spot's peak ≤ 1): subnormal float32
#: numbers would cost ~100 cycles in every later operation, and such values are ~1e-30 of a photon
_TINY = 1e-30
#: the same for the separable factors X, Y (float64): below e^-690 a factor times Z (≤ e^600, see
#: _SEPARABLE_MAX) is still below e^-90
_TINY64 = 1e-300


@njit(cache=True, nogil=True)
def _padded(w):
    """Row width of a window buffer: w rounded up to 8 float32 (one AVX vector)."""
    return (w + 7) // 8 * 8


@njit(**_EXACT)
def _geometric_from_centre(out, h, v0, k1, k2):
    """out[h] = v0; outwards out[b±1] = out[b]·ratio, the ratio starting at k1 (right) / k2 (left)
    and shrinking by exp(2A) each step: exp(A·d²) on a unit grid from its centre."""
    w = out.size
    out[h] = v0
    e = v0
    r = k1[0]
    for b in range(h + 1, w):
        e = e * r if e > _TINY64 else 0.0  # (no subnormal numbers: they cost ~100 cycles each)
        r *= k1[1]
        out[b] = e
    e = v0
    r = k2[0]
    for b in range(h - 1, -1, -1):
        e = e * r if e > _TINY64 else 0.0
        r *= k2[1]
        out[b] = e


@njit(**_SUMS)
def _profile(buf, tmp, xc, yc, ux, uy, sr, st, pw, ps, pg, h):
    """One spot's unit-flux profile into ``buf[:, :2h+1]`` ((2h+1, ≥ 2h+1) float32), as the reference spot_windows.

    The Gaussian core exp(q), q = A·dx² + B·dx·dy + C·dy² (dx, dy from the
    centroid), is evaluated as the separable product X[b]·Y[a]·Z_a[b] with
    X = exp(A·dx²), Y = exp(C·dy²) and Z_a[b] = exp(B·dx_b·dy_a), each built by
    geometric recurrences from a few exp() calls per spot (float64; equal to
    the direct formula to ~1e-13 relative), then normalised to the core weight
    over the window as spot_windows does.  The r⁻³ tail is evaluated per pixel
    in float32 as there.  ``tmp`` is (4, 2h+1) float64 scratch.  Returns the
    window's first column and row.
    """
    w = 2 * h + 1
    x0 = np.int64(np.rint(xc))
    y0 = np.int64(np.rint(yc))
    sr2 = sr * sr + 1.0 / 12
    st2 = st * st + 1.0 / 12
    if pw > 0:
        c2 = ps * ps
        cr = -0.5 / (sr2 + c2)
        ct = -0.5 / (st2 + c2)
        A = cr * ux * ux + ct * uy * uy
        C = cr * uy * uy + ct * ux * ux
        B = 2 * (cr - ct) * ux * uy
        dxh = x0 - xc  # dx at the centre column (|dxh| ≤ 1/2)
        dyh = y0 - yc
        d0x = dxh - h
        d0y = dyh - h
        tot = 0.0
        if abs(B) * (h + 0.5) * (h + 0.5) <= _SEPARABLE_MAX:
            X, Y, P, Z = tmp[0], tmp[1], tmp[2], tmp[3]
            e2a = np.exp(2 * A)
            e2c = np.exp(2 * C)
            _geometric_from_centre(X, h, np.exp(A * dxh * dxh),
                                   (np.exp(A * (2 * dxh + 1)), e2a), (np.exp(A * (1 - 2 * dxh)), e2a))
            _geometric_from_centre(Y, h, np.exp(C * dyh * dyh),
                                   (np.exp(C * (2 * dyh + 1)), e2c), (np.exp(C * (1 - 2 * dyh)), e2c))
            eb = np.exp(B)
            eby = np.exp(B * d0y)
            P[0] = np.exp(B * d0x)
            Z[0] = np.exp(B * d0y * d0x)
            for b in range(1, w):
                P[b] = P[b - 1] * eb
                Z[b] = Z[b - 1] * eby
            for a in range(w):
                ya = Y[a]
                for b in range(w):
                    v = (X[b] * Z[b]) * ya
                    v = v if v > _TINY else 0.0  # values that would be subnormal in float32 → 0
                    buf[a, b] = v
                    tot += v
                    Z[b] *= P[b]
        else:
            for a in range(w):
                dy = d0y + a
                for b in range(w):
                    dx = d0x + b
                    v = np.exp((A * dx + B * dy) * dx + C * dy * dy)
                    v = v if v > _TINY else 0.0
                    buf[a, b] = v
                    tot += v
        s = np.float32(tot)
        if s < np.float32(1e-30):
            s = np.float32(1e-30)
        f = np.float32(pw) / s
        for a in range(w):
            for b in range(w):
                buf[a, b] *= f
    else:
        buf[:, :] = 0.0
    if pw < 1:
        g2 = pg * pg
        ar2 = sr2 + g2
        at2 = st2 + g2
        cq = ((1.0 - pw) / (2 * np.pi) / np.sqrt(ar2 * at2)) ** (-2.0 / 3.0)
        cr = cq / ar2
        ct = cq / at2
        axx = np.float32(cr * ux * ux + ct * uy * uy)
        ayy = np.float32(cr * uy * uy + ct * ux * ux)
        axy = np.float32(2 * (cr - ct) * ux * uy)
        cq32 = np.float32(cq)
        for a in range(w):
            dy = np.float32(y0 - h + a - yc)
            qy = (ayy * dy) * dy + np.float32(0.0)
            cy_ = axy * dy
            # branch-free, vectorised (sqrt and division are exact in SIMD too), over the padded
            # row width (so no scalar remainder loop)
            for b in range(_padded(w)):
                dx = np.float32(x0 - h + b - xc)
                q = ((cy_ * dx + (axx * dx) * dx) + qy) + cq32
                buf[a, b] += np.float32(1.0) / (np.sqrt(q) * q)  # c · q^(-3/2), c folded into q
    return x0 - h, y0 - h


@njit(**_EXACT)
def _kapton_T(dx, dy, mp, c_rho, ax, ay, az, lo):
    """background.kapton_transmission at one pixel, float32 steps (dx, dy from the beam centre, px)."""
    Xm = dx * mp
    Ym = dy * mp
    rho = np.sqrt(Xm * Xm + (Ym * Ym + c_rho))  # μt ρ
    neg = (dx * ax) + (dy * ay - az)
    if neg == 0:
        return np.float32(1.0)
    r = rho / neg
    if r > 0:
        r = np.float32(0.0)
    if r < lo:
        r = lo
    return np.exp(r)


def kapton_params(beam_centre, pixel_size_mm, distance_mm, normal, mu_t, max_att) -> np.ndarray:
    """The belt's constants for the window kernels, float64 (8,): empty when μt ≤ 0 (no shadow)."""
    if mu_t <= 0:
        return np.zeros(0)
    nx, ny, nz = (float(v) for v in normal)
    return np.array([
        beam_centre[0], beam_centre[1], np.float32(mu_t * pixel_size_mm), np.float32((mu_t * distance_mm) ** 2),
        np.float32(-nx * pixel_size_mm), np.float32(-ny * pixel_size_mm), np.float32(nz * distance_mm),
        -np.float32(min(max_att, 1e30)),
    ])  # fmt: skip


@njit(cache=True, nogil=True)
def _window_buffers(hs):
    """Profile buffer and recurrence scratch for windows of half-sizes ``hs`` (at least 2)."""
    hmax = 2
    for k in range(hs.size):
        hmax = max(hmax, hs[k])
    return np.empty((2 * hmax + 1, _padded(2 * hmax + 1)), np.float32), np.empty((4, 2 * hmax + 1))


@njit(cache=True, nogil=True)
def _kapton_consts(kap):
    """(belt present, beam centre x, y, then the float32 constants of :func:`_kapton_T`) from :func:`kapton_params`."""
    if kap.size == 0:
        z = np.float32(0.0)
        return False, 0.0, 0.0, z, z, z, z, z, z
    f = np.float32
    return True, kap[0], kap[1], f(kap[2]), f(kap[3]), f(kap[4]), f(kap[5]), f(kap[6]), f(kap[7])


@njit(**_SUMS)
def window_scores(out, G, idx, hs, pw, ps, pg, T_c, near, kap, trusted, active, bg, fp_level):
    """Footprint sums of spot windows for the detection SNR (``Simulator._spots``).

    Parameters
    ----------
    out : (m, 10) float64 ndarray
        Receives, for spot ``idx[k]`` in row k: Σprof over trusted footprint
        pixels, over active footprint pixels, over the whole footprint; the
        same two first sums weighted by the kapton transmission; the trusted
        and active footprint pixel counts; Σbackground over those two sets;
        the mean background of the window (edge pixels clamped to the frame).
    G : (n, 6) float64 ndarray
        Spot table: centroid x, y (px), unit radial direction ux, uy,
        intrinsic radial and tangential σ (px), as
        the reference ``spot_windows`` (tests/reference/simulate.py) takes them.
    idx : (m,) int64 ndarray
        Spots to score.
    hs : (m,) int64 ndarray
        Window half-size of each.
    pw, ps, pg : float
        PSF core weight, core σ and tail width (px).
    T_c : (m,) float32 ndarray
        Kapton transmission at each centroid.
    near : (m,) bool ndarray
        Evaluate the transmission at every window pixel instead (spots near
        the shadow's edge; see ``run.kapton_near_edge``).
    kap : (8,) float64 ndarray
        :func:`kapton_params`; empty for no belt.
    trusted, active : (H, W) bool ndarray
    bg : (H, W) float32 ndarray
        Expected background photons.
    fp_level : float
        Footprint: pixels with profile ≥ fp_level × the window's maximum.
    """
    H, W = bg.shape
    buf, tmp = _window_buffers(hs)
    has_kap, kcx, kcy, mp, c_rho, ax, ay, az, klo = _kapton_consts(kap)
    for kk in np.argsort(G[idx, 1]):  # by row: neighbouring windows share cache lines of bg and the masks
        i = idx[kk]
        h = hs[kk]
        w = 2 * h + 1
        xs, ys = _profile(buf, tmp, G[i, 0], G[i, 1], G[i, 2], G[i, 3], G[i, 4], G[i, 5], pw, ps, pg, h)
        mx = np.float32(0.0)
        for a in range(w):
            for b in range(w):
                mx = max(mx, buf[a, b])
        lev = np.float32(fp_level) * mx
        p_tr = p_act = p_fp = pt_tr = pt_act = 0.0
        n_tr = n_act = 0
        b_tr = b_act = b_all = 0.0
        per_pixel = has_kap and near[kk]
        inside_x = xs >= 0 and xs + w <= W
        for a in range(w):
            y = ys + a
            yin = y >= 0 and y < H
            yc_ = min(max(y, 0), H - 1)
            if inside_x:
                for b in range(w):
                    b_all += bg[yc_, xs + b]
            else:
                for b in range(w):
                    b_all += bg[yc_, min(max(xs + b, 0), W - 1)]
            for b in range(w):
                v = buf[a, b]
                if v < lev:
                    continue
                p_fp += v
                x = xs + b
                if not (yin and x >= 0 and x < W):
                    continue
                bv = bg[y, x]
                vt = v
                if per_pixel:
                    vt = v * _kapton_T(np.float32(x - kcx), np.float32(y - kcy), mp, c_rho, ax, ay, az, klo)
                if trusted[y, x]:
                    p_tr += v
                    pt_tr += vt
                    n_tr += 1
                    b_tr += bv
                if active[y, x]:
                    p_act += v
                    pt_act += vt
                    n_act += 1
                    b_act += bv
        if not per_pixel:
            pt_tr = p_tr * T_c[kk]
            pt_act = p_act * T_c[kk]
        out[kk, 0] = p_tr
        out[kk, 1] = p_act
        out[kk, 2] = p_fp
        out[kk, 3] = pt_tr
        out[kk, 4] = pt_act
        out[kk, 5] = n_tr
        out[kk, 6] = n_act
        out[kk, 7] = b_tr
        out[kk, 8] = b_act
        out[kk, 9] = b_all / (w * w)


@njit(**_EXACT)
def render_spots(img, G, idx, hs, pw, ps, pg, photons, T_c, near, kap):
    """Add spots' photons into an image in place (clipped to it), as the reference spot_windows + render_windows.

    Parameters
    ----------
    img : (H, W) float32 ndarray
    G, idx, hs, pw, ps, pg, T_c, near, kap
        As :func:`window_scores`.
    photons : (m,) float32 ndarray
        Photons of each spot (before the kapton transmission).
    """
    H, W = img.shape
    buf, tmp = _window_buffers(hs)
    has_kap, kcx, kcy, mp, c_rho, ax, ay, az, klo = _kapton_consts(kap)
    for kk in np.argsort(G[idx, 1]):  # by row, for the cache
        i = idx[kk]
        h = hs[kk]
        w = 2 * h + 1
        xs, ys = _profile(buf, tmp, G[i, 0], G[i, 1], G[i, 2], G[i, 3], G[i, 4], G[i, 5], pw, ps, pg, h)
        ph = photons[kk]
        s0 = ph * T_c[kk]
        per_pixel = has_kap and near[kk]
        b0 = max(0, -xs)
        b1 = min(w, W - xs)
        for a in range(w):
            y = ys + a
            if y < 0 or y >= H:
                continue
            if per_pixel:
                dy = np.float32(y - kcy)
                for b in range(b0, b1):
                    t = _kapton_T(np.float32(xs + b - kcx), dy, mp, c_rho, ax, ay, az, klo)
                    img[y, xs + b] += buf[a, b] * (ph * t)
            else:
                for b in range(b0, b1):
                    img[y, xs + b] += buf[a, b] * s0


# ---------------------------------------------------------------------------- reflection prediction


@njit(cache=True, nogil=True)
def excited_reflections(A, wavelength_A, d_min_A, shell_A, sig_bw, sig_eta, sig_dom, p_min, rots, trans):
    """Lattice points near the Ewald sphere whose partiality reaches ``p_min``, in one pass.

    :func:`~diffscreen.simulate.crystal.ewald_candidates` (same rows, same
    segments, same order) followed by the first filters of
    :func:`~diffscreen.simulate.crystal.predict_reflections` (s_z < 0,
    |s| ≤ 1/d_min, partiality ≥ p_min, not systematically absent), without
    the candidate arrays.

    Parameters
    ----------
    A : (3, 3) float64 ndarray
        Rotated reciprocal basis (columns), Å⁻¹.
    wavelength_A, d_min_A, shell_A : float
    sig_bw, sig_eta, sig_dom : float
        σ of the bandwidth (Δλ/λ), of the mosaic angle (rad) and the domain-size term (Å⁻¹).
    p_min : float
    rots, trans : (n_ops, 3, 3) and (n_ops, 3) float64 ndarray
        The symmetry operations with a translation (absences: h·R = h and h·t
        not an integer; :func:`~diffscreen.simulate.crystal.systematic_absence`).

    Returns
    -------
    hkl : (N, 3) int64 ndarray
    s : (N, 3) float64 ndarray
    p, dl, sig_mos : (N,) float64 ndarray
        Partiality, ln(λ_Bragg/λ₀), and the mosaic acceptance σ in ln λ.
    """
    real = np.linalg.inv(A).T
    lens = np.sqrt((real * real).sum(axis=0))
    line = int(np.argmax(lens))
    i = 1 if line == 0 else 0
    j = 1 if line == 2 else 2
    hi = int(np.floor(lens[i] / d_min_A))
    hj = int(np.floor(lens[j] / d_min_A))
    r0 = 1.0 / wavelength_A
    c0, c1, c2 = A[0, line], A[1, line], A[2, line]
    cc = c0 * c0 + c1 * c1 + c2 * c2
    ro, ri = r0 + shell_A, r0 - shell_A
    nrow = (2 * hi + 1) * (2 * hj + 1)
    seg = np.empty((2, nrow, 4), np.int64)  # (H, K, start, stop) of both segments of each row
    nr = 0
    for H in range(-hi, hi + 1):
        for K in range(-hj, hj + 1):
            u0 = H * A[0, i] + K * A[0, j]
            u1 = H * A[1, i] + K * A[1, j]
            u2 = H * A[2, i] + K * A[2, j] + r0
            uc = u0 * c0 + u1 * c1 + u2 * c2
            uu = u0 * u0 + u1 * u1 + u2 * u2
            disc_o = uc * uc - cc * (uu - ro * ro)
            if disc_o < 0:
                continue
            sq_o = np.sqrt(disc_o)
            lo_o = (-uc - sq_o) / cc
            hi_o = (-uc + sq_o) / cc
            disc_i = uc * uc - cc * (uu - ri * ri)
            if disc_i > 0:
                sq_i = np.sqrt(disc_i)
                lo_i = (-uc - sq_i) / cc
                hi_i = (-uc + sq_i) / cc
            else:
                lo_i = hi_o
                hi_i = hi_o + 1.0
            seg[0, nr, 0] = H
            seg[0, nr, 1] = K
            seg[0, nr, 2] = np.int64(np.ceil(lo_o))
            seg[0, nr, 3] = np.int64(np.floor(lo_i))
            seg[1, nr, 0] = H
            seg[1, nr, 1] = K
            seg[1, nr, 2] = np.int64(np.ceil(hi_i))
            seg[1, nr, 3] = np.int64(np.floor(hi_o))
            nr += 1
    total = 0
    for g in range(2):
        for r in range(nr):
            total += max(seg[g, r, 3] - seg[g, r, 2] + 1, 0)
    hkl = np.empty((total, 3), np.int64)
    s = np.empty((total, 3))
    p = np.empty(total)
    dl = np.empty(total)
    sig_mos = np.empty(total)
    smax2 = 1.0 / (d_min_A * d_min_A)
    ln_pmin = np.log(p_min) - 1e-12
    m = 0
    idx = np.empty(3, np.int64)
    for g in range(2):
        for r in range(nr):
            for L in range(seg[g, r, 2], seg[g, r, 3] + 1):
                idx[i] = seg[g, r, 0]
                idx[j] = seg[g, r, 1]
                idx[line] = L
                h0, h1, h2 = idx[0], idx[1], idx[2]
                if h0 == 0 and h1 == 0 and h2 == 0:
                    continue
                s0 = h0 * A[0, 0] + h1 * A[0, 1] + h2 * A[0, 2]
                s1 = h0 * A[1, 0] + h1 * A[1, 1] + h2 * A[1, 2]
                sz = h0 * A[2, 0] + h1 * A[2, 1] + h2 * A[2, 2]
                s2 = s0 * s0 + s1 * s1 + sz * sz
                if not (sz < 0 and s2 <= smax2):
                    continue
                lam_h = -2.0 * sz / s2  # wavelength that satisfies Bragg exactly
                d = np.log(lam_h / wavelength_A)
                sm = np.sqrt(s2) * sig_eta
                sgm = np.sqrt(sm * sm + sig_dom * sig_dom) / (wavelength_A * s2 / 2)
                ex = -0.5 * d * d / (sig_bw * sig_bw + sgm * sgm)
                if ex < ln_pmin:  # p = exp(ex) < p_min (tested before the exp: most are rejected)
                    continue
                pp = np.exp(ex)
                if pp < p_min:
                    continue
                absent = False
                for o in range(rots.shape[0]):
                    R = rots[o]
                    if (abs(h0 * R[0, 0] + h1 * R[1, 0] + h2 * R[2, 0] - h0) < 0.5
                            and abs(h0 * R[0, 1] + h1 * R[1, 1] + h2 * R[2, 1] - h1) < 0.5
                            and abs(h0 * R[0, 2] + h1 * R[1, 2] + h2 * R[2, 2] - h2) < 0.5):
                        ph = h0 * trans[o, 0] + h1 * trans[o, 1] + h2 * trans[o, 2]
                        if abs(ph - np.rint(ph)) > 1e-6:
                            absent = True
                            break
                if absent:
                    continue
                hkl[m, 0] = h0
                hkl[m, 1] = h1
                hkl[m, 2] = h2
                s[m, 0] = s0
                s[m, 1] = s1
                s[m, 2] = sz
                p[m] = pp
                dl[m] = d
                sig_mos[m] = sgm
                m += 1
    return hkl[:m], s[:m], p[:m], dl[:m], sig_mos[:m]


# ---------------------------------------------------------------------------- diffuse background


@njit(**_EXACT)
def radial_map(out, dx, dy, t1, t2):
    """``t1[i] - t2[i]·dx²`` with i = round(4 r), r = √(dx² + dy²): the diffuse background's grid values.

    Parameters
    ----------
    out : (len(dy), len(dx)) float32 ndarray
    dx, dy : float32 ndarray
        Column and row offsets from the beam centre, px.
    t1, t2 : float32 ndarray
        Tables over r in quarter pixels (``background.diffuse_background``).
    """
    for a in range(dy.size):
        y4 = dy[a] * np.float32(4)
        yy = y4 * y4
        for b in range(dx.size):
            x4 = dx[b] * np.float32(4)
            k = np.intp(np.sqrt(yy + x4 * x4) + np.float32(0.5))
            out[a, b] = t1[k] - t2[k] * (dx[b] * dx[b])


@njit(cache=True, nogil=True)
def upsample2(out, a):
    """Bilinear 2× upsampling (``background._upsample2``): out[2i, 2j] = a[i, j], midpoints averaged.

    Midpoints along a row are (left + right) / 2; rows between are the mean of
    the two interpolated rows, in float32 as the numpy version.  ``a`` must
    cover rows / columns up to H - 1 / W - 1 (shape ≥ (H // 2 + 1, W // 2 + 1)).
    """
    H, W = out.shape
    half = np.float32(0.5)
    for r in range(0, H, 2):
        i = r // 2
        two = r + 1 < H
        for c in range(W // 2):
            e0 = a[i, c]
            e1 = (a[i, c] + a[i, c + 1]) * half
            out[r, 2 * c] = e0
            out[r, 2 * c + 1] = e1
            if two:
                f0 = a[i + 1, c]
                f1 = (a[i + 1, c] + a[i + 1, c + 1]) * half
                out[r + 1, 2 * c] = (e0 + f0) * half
                out[r + 1, 2 * c + 1] = (e1 + f1) * half
        if W % 2:
            c = W // 2
            out[r, W - 1] = a[i, c]
            if two:
                out[r + 1, W - 1] = (a[i, c] + a[i + 1, c]) * half


@njit(cache=True, nogil=True)
def still_geometry(s, p, dl, sig_mos, wavelength_A, sig_bw, b_factor_A2, solvent_k, solvent_b_A2):
    """Diffracted rays of excited reflections (the rest of ``crystal.predict_reflections``).

    Parameters
    ----------
    s : (N, 3) float64 ndarray
        Reciprocal-lattice vectors, Å⁻¹.
    p, dl, sig_mos : (N,) float64 ndarray
        From :func:`excited_reflections`.
    wavelength_A, sig_bw, b_factor_A2, solvent_k, solvent_b_A2 : float

    Returns
    -------
    fwd : (N,) bool ndarray
        Rays with direction_z > 1e-3 (forwards).
    direction : (N, 3) float64 ndarray
        Unit ray at the centroid wavelength of the diffracting band.
    two_theta, sig_eff : (N,) float64 ndarray
        Scattering angle (rad) and σ of the diffracting band in ln λ.
    factor : (N,) float64 ndarray
        Resolution fall-off (B factor, bulk-solvent dip) × partiality × polarisation (beam along x).
    """
    n = p.size
    fwd = np.empty(n, np.bool_)
    direction = np.empty((n, 3))
    two_theta = np.empty(n)
    sig_eff = np.empty(n)
    factor = np.empty(n)
    w_bw = 1.0 / (sig_bw * sig_bw)
    ln0 = np.log(wavelength_A)
    for m in range(n):
        s0, s1, s2_ = s[m, 0], s[m, 1], s[m, 2]
        ss = s0 * s0 + s1 * s1 + s2_ * s2_
        # diffracting band: the spectrum times the acceptance Gaussian (in ln λ)
        w_mos = 1.0 / (sig_mos[m] * sig_mos[m])
        lam_c = np.exp(ln0 + dl[m] * w_mos / (w_bw + w_mos))
        sig_eff[m] = 1.0 / np.sqrt(w_bw + w_mos)
        # the mosaic block rotated onto the sphere of radius 1/λ_c, keeping |s|
        sz_new = -lam_c * ss / 2
        sperp = np.hypot(s0, s1)
        kappa = np.sqrt(max(ss - sz_new * sz_new, 0.0)) / max(sperp, 1e-12)
        k0, k1, k2 = s0 * kappa, s1 * kappa, sz_new + 1.0 / lam_c
        kn = np.sqrt(k0 * k0 + k1 * k1 + k2 * k2)
        d0, d1, d2 = k0 / kn, k1 / kn, k2 / kn
        direction[m, 0] = d0
        direction[m, 1] = d1
        direction[m, 2] = d2
        fwd[m] = d2 > 1e-3
        two_theta[m] = np.arccos(min(max(d2, -1.0), 1.0))
        fall = np.exp(-0.5 * b_factor_A2 * ss) * (1.0 - solvent_k * np.exp(-0.5 * solvent_b_A2 * ss))
        factor[m] = fall * p[m] * (1.0 - d0 * d0)
    return fwd, direction, two_theta, sig_eff, factor
