"""The simulator's speed-ups (issue 3) against reference formulas: each test fails if a shortcut is wrong."""

import numpy as np
import pytest

from diffscreen.simulate import PRESETS, Simulator, _kernels
from diffscreen.simulate.background import (
    WaterRing,
    air_profile,
    diffuse_background,
    kapton_transmission,
    water_profile,
)
from diffscreen.simulate.detector import POISSON_GAUSS_ABOVE, PSF
from diffscreen.simulate.run import kapton_near_edge
from reference.simulate import correlated_normal, digitise_full, poisson_counts, spot_windows


def _reference_profiles(xc, yc, ux, uy, sr, st, psf, h):
    """Spot profiles straight from the formulas of the reference spot_windows' docstring (float64, per pixel)."""
    out = []
    for k in range(len(xc)):
        x0, y0 = np.rint(xc[k]), np.rint(yc[k])
        X, Y = np.meshgrid(x0 + np.arange(-h, h + 1), y0 + np.arange(-h, h + 1))
        dx, dy = X - xc[k], Y - yc[k]
        dr = dx * ux[k] + dy * uy[k]
        dt = dy * ux[k] - dx * uy[k]
        sr2, st2 = sr[k] ** 2 + 1 / 12, st[k] ** 2 + 1 / 12
        core = np.exp(-0.5 * dr**2 / (sr2 + psf.sigma**2) - 0.5 * dt**2 / (st2 + psf.sigma**2))
        core *= psf.w / core.sum()
        ar2, at2 = sr2 + psf.g**2, st2 + psf.g**2
        tail = (1 - psf.w) / (2 * np.pi * np.sqrt(ar2 * at2)) * (1 + dr**2 / ar2 + dt**2 / at2) ** -1.5
        out.append(core + tail)
    return np.array(out)


@pytest.mark.parametrize("psf", [PSF(0.8, 1.4, 0.5), PSF(0.25, 0.5, 1.0), PSF(0.6, 1.0, 0.0)])
def test_vectorised_spot_profiles_match_the_reference_formula(psf):
    rng = np.random.default_rng(0)
    n = 60
    xc, yc = rng.uniform(20, 80, n), rng.uniform(20, 80, n)
    phi = rng.uniform(0, 2 * np.pi, n)
    ux, uy = np.cos(phi), np.sin(phi)
    sr, st = rng.uniform(0.1, 4.0, n), rng.uniform(0.1, 1.0, n)  # radially streaked spots
    for h in (3, 9):
        ix, iy, prof = spot_windows(xc, yc, ux, uy, sr, st, psf, h)
        ref = _reference_profiles(xc, yc, ux, uy, sr, st, psf, h)
        assert np.allclose(prof, ref, rtol=1e-4, atol=1e-6 * ref.max())
        # same photons per spot as the reference to 1 %
        assert np.allclose(prof.sum(axis=(1, 2)), ref.sum(axis=(1, 2)), rtol=0.01)
        assert np.array_equal(ix[:, h], np.rint(xc).astype(int)) and np.array_equal(iy[:, h], np.rint(yc).astype(int))


def test_poisson_gaussian_switch_gives_per_pixel_mean_and_variance():
    """Exact-Poisson table below λ = 60 and the Gaussian approximation above: per-pixel mean and variance."""
    rng = np.random.default_rng(1)
    lam = np.array([0.02, 0.4, 2.5, 9.0, 30.0, 59.0, 61.0, 150.0, 900.0], np.float32)
    assert lam.min() < POISSON_GAUSS_ABOVE < lam.max()
    n_rep = 4000
    draws = poisson_counts(np.tile(lam, (n_rep, 1)), rng)
    mean, var = draws.mean(axis=0), draws.var(axis=0)
    se = np.sqrt(lam / n_rep)
    assert np.all(np.abs(mean - lam) < 4.5 * se + 2e-3), (mean, lam)
    # variance of a sample variance ≈ (2λ² + λ) / n for Poisson
    assert np.all(np.abs(var - lam) < 4.5 * np.sqrt((2 * lam**2 + lam) / n_rep) + 2e-3), (var, lam)
    assert np.all(draws == np.rint(draws)) and draws.min() >= 0


def test_poisson_counts_with_work_buffers_match_without():
    lam = np.random.default_rng(2).uniform(0, 80, (64, 70)).astype(np.float32)
    a = poisson_counts(lam, np.random.default_rng(3))
    work = {}
    b = poisson_counts(lam, np.random.default_rng(3), work)
    c = poisson_counts(lam, np.random.default_rng(3), work)  # reused buffers
    assert np.array_equal(a, b) and np.array_equal(a, c)


def test_correlated_noise_is_unit_binomial_blur_and_white_field_independent():
    z, w = correlated_normal(np.random.default_rng(4), (600, 700), with_white=True)
    assert abs(z.mean()) < 0.02 and abs(z.std() - 1) < 0.01
    # [1,2,1] blur: neighbour correlation (1·2 + 2·1 + ...) / 6 → 2/3 along each axis, 4/9 diagonally
    assert abs(np.corrcoef(z[:, :-1].ravel(), z[:, 1:].ravel())[0, 1] - 2 / 3) < 0.01
    assert abs(np.corrcoef(z[:-1].ravel(), z[1:].ravel())[0, 1] - 2 / 3) < 0.01
    assert abs(np.corrcoef(z[:-1, :-1].ravel(), z[1:, 1:].ravel())[0, 1] - 4 / 9) < 0.01
    assert abs(w.std() - 1) < 0.01 and abs(np.corrcoef(w[:, :-1].ravel(), w[:, 1:].ravel())[0, 1]) < 0.01
    assert abs(np.corrcoef(z.ravel(), w.ravel())[0, 1]) < 0.01


@pytest.mark.parametrize("preset", ["rayonix", "cspad"])
def test_digitised_noise_has_the_model_mean_and_variance(preset):
    """Flat λ through the fast digitiser: ADU mean g·λ + offset, variance gain·g·λ + σ_read² (+ 1/12 rounding)."""
    sim = Simulator(PRESETS[preset].replace(p_mixed_gain=0.0), seed=0)
    rng = np.random.default_rng(5)
    c = sim._draw(rng, "solvent")
    c["common_mode"][:] = 0.0
    c["asic_gain"][:] = 1.0
    lam0 = 20.0
    H, W = sim.preset.shape
    data = sim._digitise(c, rng, np.full((H, W), lam0, np.float32))
    good = data[sim.layout.active].astype(float)
    g = c["adu_per_photon"]
    want_mean = g * lam0 + c["dark_offset"]
    if sim.preset.noise_blur:
        want_var = c["gain"] * g * lam0 + c["read_noise"] ** 2 + 1 / 12
    else:  # Poisson photons × g
        want_var = g * g * lam0 + c["read_noise"] ** 2 + 1 / 12
    assert abs(good.mean() - want_mean) < 0.01 * want_mean
    assert abs(good.var() / want_var - 1) < 0.03
    assert np.all(data[~sim.layout.active] == 0)


def test_asic_boxes_cover_exactly_their_asics():
    for name in ("cspad", "jungfrau"):
        sim = Simulator(name, seed=0)
        lay = sim.layout
        assert sim._asic_boxes is not None and len(sim._asic_boxes) == lay.n_asics
        lab = np.full(lay.asic_id.shape, -1, np.int32)
        for k, box in enumerate(sim._asic_boxes):
            assert np.all(lab[box] == -1)  # disjoint
            lab[box] = k
        assert np.array_equal(lab, lay.asic_id)


@pytest.mark.parametrize("shape,centre", [((1920, 1920), (963.3, 955.1)), ((1679, 1475), (737.0, 839.5))])
def test_buffered_background_equals_fresh_and_full_resolution(shape, centre):
    w = WaterRing(30.0)

    def profile(s):
        return water_profile(s, w) + air_profile(s, 5.0, 0.05)

    kap = (np.array([0.1, 0.99, 0.05]) / np.linalg.norm([0.1, 0.99, 0.05]), 0.1, 1.0)
    args = (shape, centre, 0.0886, 120.0, 1.3, profile)
    a = diffuse_background(*args, kapton=kap)
    buf = np.full(shape, np.nan, np.float32)
    b = diffuse_background(*args, kapton=kap, out=buf)
    assert b is buf and np.array_equal(a, b)
    full = diffuse_background(*args, kapton=kap, stride=1)
    assert np.array_equal(a[0::2, 0::2], full[0::2, 0::2])  # exact at the evaluated pixels
    # bilinear in between: rows/columns halfway are the means of their neighbours
    assert np.allclose(a[1:-1:2, 0::2], 0.5 * (a[0:-2:2, 0::2] + a[2::2, 0::2]), rtol=1e-6, atol=1e-7)
    assert np.allclose(a[0::2, 1:-1:2], 0.5 * (a[0::2, 0:-2:2] + a[0::2, 2::2]), rtol=1e-6, atol=1e-7)
    far = np.hypot(*np.meshgrid(np.arange(shape[1]) - centre[0], np.arange(shape[0]) - centre[1])) > 50
    rel = np.abs(a - full)[far] / full[far]
    # away from the kapton edge and the beam the bilinear map matches full resolution to 1 %
    assert np.median(rel) < 1e-3


def test_kapton_transmission_at_spot_centres_keeps_each_spots_flux():
    """Centroid transmission where T is smooth, per pixel near the edge: transmitted flux per spot to 1 %."""
    rng = np.random.default_rng(6)
    psf = PSF(0.8, 1.4, 0.5)
    p, D = 0.0886, 110.0
    cx, cy = 960.0, 960.0
    worst = 0.0
    n_near = 0
    everywhere = np.ones((1920, 1920), bool)
    bg = np.ones((1920, 1920), np.float32)
    for trial in range(6):
        phi = np.radians(90 + rng.uniform(-15, 15))
        tau = np.radians(rng.uniform(-1.5, 1.5))
        normal = np.array([np.cos(phi) * np.cos(tau), np.sin(phi) * np.cos(tau), np.sin(tau)])
        kap_args = (p, D, normal, rng.uniform(0.03, 0.15), rng.uniform(0.3, 2.0))
        n = 400
        xs, ys = rng.uniform(30, 1890, n), rng.uniform(30, 1890, n)
        # half of them close to the shadow's edge line
        t = rng.uniform(-900, 900, n // 2)
        nrm = np.hypot(normal[0], normal[1])
        e = np.array([normal[0], normal[1]]) / nrm
        d0 = -normal[2] * D / (p * nrm)  # edge line: e·(x - c) = d0
        xs[: n // 2] = cx + e[0] * (d0 + rng.uniform(-20, 20, n // 2)) - e[1] * t
        ys[: n // 2] = cy + e[1] * (d0 + rng.uniform(-20, 20, n // 2)) + e[0] * t
        ok = (xs > 20) & (xs < 1900) & (ys > 20) & (ys < 1900)
        xs, ys = xs[ok], ys[ok]
        m = len(xs)
        ux, uy = (xs - cx) / np.hypot(xs - cx, ys - cy), (ys - cy) / np.hypot(xs - cx, ys - cy)
        h = 8
        ix, iy, prof = spot_windows(xs, ys, ux, uy, np.full(m, 1.5), np.full(m, 0.3), psf, h)
        T_c = kapton_transmission((xs - cx).astype(np.float32), (ys - cy).astype(np.float32), *kap_args)
        edge_d = np.abs(normal[0] * (xs - cx) * p + normal[1] * (ys - cy) * p + normal[2] * D) / (p * nrm)
        near = kapton_near_edge(xs, ys, h, T_c.astype(np.float64), edge_d, (cx, cy), kap_args)
        # the simulator's path: per-pixel transmission for the `near` spots, the centroid value for
        # the others, summed over each whole window (footprint level 0, every pixel trusted)
        sums = np.empty((m, 10))
        G = np.stack([xs, ys, ux, uy, np.full(m, 1.5), np.full(m, 0.3)], axis=1)
        _kernels.window_scores(sums, G, np.arange(m), np.full(m, h), psf.w, psf.sigma, psf.g, T_c, near,
                               _kernels.kapton_params((cx, cy), *kap_args), everywhere, everywhere, bg, 0.0)  # fmt: skip
        exact = kapton_transmission(
            (ix - cx)[:, None, :].astype(np.float32), (iy - cy)[:, :, None].astype(np.float32), *kap_args
        )
        got = sums[:, 4]
        want = (prof * exact).sum(axis=(1, 2))
        worst = max(worst, float(np.max(np.abs(got / want - 1))))
        n_near += int(near.any())
    assert worst < 0.01, worst
    assert n_near > 0  # the per-pixel branch was exercised


def test_fast_simulator_frames_are_consistent_with_their_peaks():
    """A kapton-belt hit: spots recorded where the frame is bright, labels from the SNR counts."""
    sim = Simulator(PRESETS["LN83"].replace(p_kapton=1.0), seed=3)
    sf = sim.frame(0, kind="hit")
    assert sf.label == "hit" and sf.n_spots >= 10
    assert sf.n_spots == int((sf.peaks[:, 3] >= sim.preset.snr_threshold).sum())
    d = sf.data.astype(float)
    top = sf.peaks[:10]
    bright = [d[int(round(y)), int(round(x))] for x, y, *_ in top]
    assert np.median(bright) > np.median(d[~sf.mask]) + 3 * sf.meta.extra["read_noise_adu"]


def test_fast_kapton_transmission_matches_the_belt_formula():
    """T = exp(-min(μt / (d·n), max_att)) where the ray crosses the belt (d·n > 0), else 1 (float64 reference)."""
    rng = np.random.default_rng(7)
    p, D = 0.11, 130.0
    dx = np.arange(-900, 900, 7.0)[None, :]
    dy = np.arange(-900, 900, 5.0)[:, None]
    for _ in range(20):
        phi, tau = rng.uniform(0, 2 * np.pi), np.radians(rng.uniform(-1.5, 1.5))
        n = np.array([np.cos(phi) * np.cos(tau), np.sin(phi) * np.cos(tau), np.sin(tau)])
        mu_t, max_att = rng.uniform(0.03, 0.15), rng.uniform(0.3, 2.0)
        X, Y = dx * p, dy * p
        dn = (n[0] * X + n[1] * Y + n[2] * D) / np.sqrt(X**2 + Y**2 + D**2)
        with np.errstate(divide="ignore"):
            want = np.where(dn > 0, np.exp(-np.minimum(mu_t / np.where(dn > 0, dn, 1.0), max_att)), 1.0)
        got = kapton_transmission(dx.astype(np.float32), dy.astype(np.float32), p, D, n, mu_t, max_att)
        assert got.dtype == np.float32 and got.shape == want.shape
        assert np.abs(got - want).max() < 2e-6
        assert (want < 1).any() and (want == 1).any()  # both sides of the shadow's edge are checked


def _expected_photons(monkeypatch, fft_pixels, preset, index):
    import diffscreen.simulate.run as run

    monkeypatch.setattr(run, "_FFT_RENDER_PIXELS", fft_pixels)
    sim = Simulator(preset, seed=2)
    got = {}
    digitise = sim._digitise

    def grab(c, rng, lam):
        got["lam"] = lam.copy()
        return digitise(c, rng, lam)

    sim._digitise = grab
    sf = sim.frame(index, kind="hit")
    return got["lam"], sf


def test_fft_spot_renderer_agrees_with_the_window_renderer(monkeypatch):
    """Dense frames are rendered by one FFT convolution with the PSF: same spots, same photons per spot."""
    preset = PRESETS["LN83"].replace(p_kapton=1.0)
    lam_w, sf_w = _expected_photons(monkeypatch, 10**15, preset, 1)  # always windows
    lam_f, sf_f = _expected_photons(monkeypatch, 0, preset, 1)  # always FFT
    assert sf_w.n_spots == sf_f.n_spots > 10 and np.array_equal(sf_w.peaks, sf_f.peaks)  # scoring is unchanged
    extra_w, extra_f = lam_w.sum(), lam_f.sum()
    assert extra_f >= extra_w * 0.999 and extra_f < extra_w * 1.05  # + the tail beyond the windows, no more
    for x, y, *_ in sf_w.peaks[:20]:
        x, y = int(round(x)), int(round(y))
        box = (slice(y - 3, y + 4), slice(x - 3, x + 4))
        bw, bf = lam_w[box].sum(), lam_f[box].sum()
        assert abs(bf / bw - 1) < 0.03, (x, y, bw, bf)


@pytest.mark.parametrize("preset,mixed", [("LG36", True), ("L498", False), ("jungfrau", False), ("LO19", False)])
def test_blocked_digitiser_equals_the_whole_frame_reference(preset, mixed):
    """Row-block digitisation (photon noise, gain, ASIC gain/common mode, read noise, mixed-gain zone, rounding,
    clipping) gives the whole-frame result from the same draws in the same order: one ADU step at float ties."""
    sim = Simulator(PRESETS[preset].replace(p_mixed_gain=1.0 if mixed else 0.0), seed=0)
    c = sim._draw(np.random.default_rng(3), "solvent")
    assert bool(c["mixed_gain"]) == mixed
    H, W = sim.preset.shape
    lam = np.random.default_rng(1).uniform(0, 50, (H, W)).astype(np.float32)
    lam[100:140, 200:260] = 5000.0  # Gaussian-approximated photon noise and saturation
    step = int(sim.preset.mixed_gain_ratio) if mixed else 1
    for L in (lam, None):
        a = sim._digitise(c, np.random.default_rng(9), L)
        b = digitise_full(sim, c, np.random.default_rng(9), L)
        d = np.abs(a.astype(np.int64) - b)
        assert d.max() <= step and (d > 0).mean() < 1e-5
    if mixed:  # the low-gain zone is there: ADU steps of the ratio
        inner = a[sim.layout.active & (np.hypot(*np.meshgrid(np.arange(W) - c["beam_centre"][0],
                                                               np.arange(H) - c["beam_centre"][1])) < 0.8 * c["mixed_gain_r_px"])]
        assert np.all(inner % int(sim.preset.mixed_gain_ratio) == 0)
