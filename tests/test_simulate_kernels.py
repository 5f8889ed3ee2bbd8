"""The simulator's compiled loops (diffscreen.simulate._kernels) against plain numpy references (issue 3 speed).

Each reference is written from the formulas the kernels' docstrings name, so a kernel that drops a
term, mixes up rows and columns, mis-clips an edge window or skips a kapton pixel fails here.
"""

import numpy as np
import pytest

from diffscreen.simulate import _kernels
from diffscreen.simulate.background import _upsample2, kapton_transmission
from diffscreen.simulate.crystal import (
    _translation_ops,
    b_matrix,
    ewald_candidates,
    random_rotation,
    systematic_absence,
)
from diffscreen.simulate.detector import PSF
from diffscreen.simulate.presets import CELLS
from reference.simulate import render_windows, spot_windows


def _spots(rng, n, H, W, *, sharp=False):
    xc, yc = rng.uniform(-3, W + 3, n), rng.uniform(-3, H + 3, n)  # some windows cross the frame edge
    phi = rng.uniform(0, 2 * np.pi, n)
    sr = rng.uniform(0.05, 4.0, n)  # radially streaked spots ...
    st = rng.uniform(0.05, 1.0, n)
    if sharp:  # ... and needle-like diagonal ones (the core's pixel-by-pixel branch)
        phi[: n // 2] = np.pi / 4 + rng.uniform(-0.05, 0.05, n // 2)
        sr[: n // 2], st[: n // 2] = 6.0, 0.05
    return np.stack([xc, yc, np.cos(phi), np.sin(phi), sr, st], axis=1)


def _kapton(H, W):
    """A belt whose shadow edge crosses the middle of an (H, W) frame."""
    cx, cy = W / 2 + 0.3, H / 2 - 0.2
    p, D = 0.1, 40.0
    normal = np.array([0.05, 0.9, 0.0])
    normal[2] = -(normal[0] * 3 * p + normal[1] * 2 * p) / D  # edge line through (cx + 3, cy + 2)
    normal /= np.linalg.norm(normal)
    return (cx, cy), (p, D, normal, 0.08, 1.5)


@pytest.mark.parametrize("psf", [PSF(0.8, 1.4, 0.5), PSF(0.15, 0.3, 1.0), PSF(0.6, 1.0, 0.0)])
@pytest.mark.parametrize("sharp", [False, True])
def test_window_scores_equal_the_numpy_sums(psf, sharp):
    """Footprint sums from spot_windows' profiles, masks and background, per pixel in numpy."""
    rng = np.random.default_rng(11)
    H, W, n = 90, 120, 80
    G = _spots(rng, n, H, W, sharp=sharp)
    trusted = rng.uniform(size=(H, W)) > 0.2
    active = trusted | (rng.uniform(size=(H, W)) > 0.5)
    bg = rng.uniform(0.1, 5.0, (H, W)).astype(np.float32)
    (cx, cy), kap_args = _kapton(H, W)
    T_c = kapton_transmission((G[:, 0] - cx).astype(np.float32), (G[:, 1] - cy).astype(np.float32), *kap_args)
    near = rng.uniform(size=n) > 0.5
    kap = _kernels.kapton_params((cx, cy), *kap_args)
    for h in (2, 6):
        idx = np.arange(n)
        out = np.empty((n, 10))
        _kernels.window_scores(out, G, idx, np.full(n, h), psf.w, psf.sigma, psf.g, T_c, near, kap,
                               trusted, active, bg, 0.15)  # fmt: skip
        ix, iy, prof = spot_windows(*G.T, psf, h)
        prof = prof.astype(np.float64)
        inx = (ix >= 0) & (ix < W)
        iny = (iy >= 0) & (iy < H)
        inb = iny[:, :, None] & inx[:, None, :]
        cl = np.clip(iy, 0, H - 1)[:, :, None], np.clip(ix, 0, W - 1)[:, None, :]
        fp = prof >= 0.15 * prof.max(axis=(1, 2), keepdims=True)
        tr, ac = trusted[cl] & fp & inb, active[cl] & fp & inb
        Tpix = kapton_transmission((ix - cx)[:, None, :].astype(np.float32), (iy - cy)[:, :, None].astype(np.float32),
                                   *kap_args)  # fmt: skip
        Tk = np.where(near[:, None, None], Tpix, T_c[:, None, None])
        want = np.stack([
            (prof * tr).sum((1, 2)), (prof * ac).sum((1, 2)), (prof * fp).sum((1, 2)),
            (prof * Tk * tr).sum((1, 2)), (prof * Tk * ac).sum((1, 2)),
            tr.sum((1, 2)), ac.sum((1, 2)), (bg[cl] * tr).sum((1, 2)), (bg[cl] * ac).sum((1, 2)),
            bg[cl].mean((1, 2)),
        ], axis=1)  # fmt: skip
        # pixel counts exact (a footprint pixel off by float rounding would show here), sums to 1e-5
        assert np.array_equal(out[:, 5:7], want[:, 5:7])
        assert np.allclose(out, want, rtol=1e-5, atol=1e-7)
        assert (want[:, 3] < want[:, 0] * 0.999).any()  # the belt's shadow was applied


@pytest.mark.parametrize("psf", [PSF(0.8, 1.4, 0.5), PSF(0.15, 0.3, 1.0)])
def test_rendered_spots_equal_spot_windows_added_to_the_frame(psf):
    rng = np.random.default_rng(12)
    H, W, n = 70, 90, 60
    G = _spots(rng, n, H, W, sharp=True)
    photons = rng.uniform(1, 1e4, n).astype(np.float32)
    (cx, cy), kap_args = _kapton(H, W)
    T_c = kapton_transmission((G[:, 0] - cx).astype(np.float32), (G[:, 1] - cy).astype(np.float32), *kap_args)
    near = np.arange(n) % 3 == 0
    hs = rng.integers(2, 9, n)
    img = rng.uniform(0, 1, (H, W)).astype(np.float32)
    want = img.astype(np.float64)
    _kernels.render_spots(img, G, np.arange(n), hs, psf.w, psf.sigma, psf.g, photons, T_c, near,
                          _kernels.kapton_params((cx, cy), *kap_args))  # fmt: skip
    for k in range(n):
        ix, iy, prof = spot_windows(*G[k : k + 1].T, psf, int(hs[k]))
        T = (kapton_transmission((ix - cx)[:, None, :].astype(np.float32), (iy - cy)[:, :, None].astype(np.float32),
                                 *kap_args) if near[k] else T_c[k])  # fmt: skip
        acc = np.zeros((H, W), np.float32)
        render_windows(acc, ix, iy, (prof * photons[k] * T).astype(np.float32))
        want += acc
    # (the numpy reference evaluates the quadratic form in float32: ~1e-5 relative on needle-like spots)
    assert np.allclose(img, want, rtol=1e-4, atol=1e-4)
    assert np.abs(img - want).max() < 1e-5 * photons.max()
    assert np.abs(img - want).sum() < 1e-5 * (want.sum() - img.size * 0.5)  # no spot lost or doubled


def test_excited_reflections_are_the_candidates_that_pass_the_filters():
    """ewald_candidates + s_z < 0, |s| ≤ 1/d_min, partiality ≥ p_min, absences: same list, same order."""
    rng = np.random.default_rng(13)
    cell = CELLS["psII_ln84"]  # P 21 21 21, 10⁴-10⁵ reflections
    for sg in (cell.space_group, "P 61 2 2"):
        A = random_rotation(rng) @ b_matrix(cell)
        lam, d_min, p_min = 1.3, 2.5, 2e-3
        sig_bw, sig_eta, sig_dom = 0.003 / 2.3548, np.radians(0.1) / 2.3548, 1 / (2.3548 * 0.5e4)
        shell = 0.004
        hkl = ewald_candidates(A, lam, d_min, shell)
        s = hkl @ A.T
        s2 = (s * s).sum(1)
        ok = (s[:, 2] < 0) & (s2 <= 1 / d_min**2)
        hkl, s, s2 = hkl[ok], s[ok], s2[ok]
        dl = np.log(-2 * s[:, 2] / s2 / lam)
        sig_mos = np.hypot(np.sqrt(s2) * sig_eta, sig_dom) / (lam * s2 / 2)
        p = np.exp(-0.5 * dl**2 / (sig_bw**2 + sig_mos**2))
        keep = p >= p_min
        keep[keep] &= ~systematic_absence(hkl[keep], sg)
        got = _kernels.excited_reflections(A, lam, d_min, shell, sig_bw, sig_eta, sig_dom, p_min, *_translation_ops(sg))
        assert len(got[0]) > 100 and (~keep).sum() > 100
        assert np.array_equal(got[0], hkl[keep])
        for a, b in zip(got[1:], (s[keep], p[keep], dl[keep], sig_mos[keep])):
            assert np.allclose(a, b, rtol=1e-12, atol=1e-15)


def test_still_geometry_rays_are_on_the_sphere_of_the_band_centre():
    rng = np.random.default_rng(14)
    s = rng.normal(0, 0.2, (500, 3))
    s[:, 2] = -np.abs(s[:, 2])
    lam, sig_bw = 1.3, 0.0015
    dl = rng.normal(0, 0.002, 500)
    sig_mos = rng.uniform(0.0005, 0.01, 500)
    p = rng.uniform(0.01, 1, 500)
    fwd, direction, tt, sig_eff, factor = _kernels.still_geometry(s, p, dl, sig_mos, lam, sig_bw, 20.0, 0.4, 250.0)
    w_bw, w_mos = 1 / sig_bw**2, 1 / sig_mos**2
    lam_c = np.exp(np.log(lam) + dl * w_mos / (w_bw + w_mos))
    k = direction / lam_c[:, None]  # k_out of length 1/λ_c
    # the diffracted ray is k_in + s' with |s'| = |s| and s' in the plane of s and the beam
    sp = k - np.array([0, 0, 1.0])[None, :] / lam_c[:, None]
    assert np.allclose(np.linalg.norm(sp, axis=1), np.linalg.norm(s, axis=1), rtol=1e-10)
    assert np.allclose(sp[:, 0] * s[:, 1], sp[:, 1] * s[:, 0], atol=1e-12)
    assert np.allclose(sig_eff, 1 / np.sqrt(w_bw + w_mos))
    assert np.allclose(np.cos(tt), direction[:, 2]) and np.array_equal(fwd, direction[:, 2] > 1e-3)
    ss = (s * s).sum(1)
    want = np.exp(-10 * ss) * (1 - 0.4 * np.exp(-125 * ss)) * p * (1 - direction[:, 0] ** 2)
    assert np.allclose(factor, want, rtol=1e-12)


def test_radial_map_is_the_table_at_the_rounded_quarter_pixel_radius():
    rng = np.random.default_rng(15)
    dx = (np.arange(300, dtype=np.float32) - np.float32(151.3))
    dy = (np.arange(200, dtype=np.float32) - np.float32(88.6))
    r = np.hypot(dx[None, :].astype(np.float64), dy[:, None])
    t1 = rng.uniform(0, 10, int(r.max() * 4) + 3).astype(np.float32)
    t2 = rng.uniform(0, 1e-3, t1.size).astype(np.float32)
    out = np.empty((200, 300), np.float32)
    _kernels.radial_map(out, dx, dy, t1, t2)
    k = np.floor(4 * r + 0.5).astype(int)
    want = t1[k] - t2[k] * dx[None, :].astype(np.float64) ** 2
    assert np.allclose(out, want, rtol=1e-6, atol=1e-6)
    # a quarter-pixel bin wrong anywhere would be far off
    assert np.abs(out - want).max() < 1e-4


@pytest.mark.parametrize("shape", [(6, 8), (7, 9), (1920, 1920)])
def test_upsample2_is_bilinear(shape):
    H, W = shape
    a = np.random.default_rng(16).uniform(0, 1, (H // 2 + 1, W // 2 + 1)).astype(np.float32)
    out = _upsample2(a, H, W)
    full = np.zeros((2 * a.shape[0] - 1, 2 * a.shape[1] - 1))
    full[0::2, 0::2] = a
    full[0::2, 1::2] = 0.5 * (a[:, :-1] + a[:, 1:])
    full[1::2] = 0.5 * (full[0:-1:2] + full[2::2])
    assert np.allclose(out, full[:H, :W], rtol=1e-6, atol=1e-7)
