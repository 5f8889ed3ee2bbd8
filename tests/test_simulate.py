"""Tests of the physics-based SFX simulator (diffscreen.simulate)."""

import h5py
import numpy as np
import pytest

from diffscreen.errors import ConfigError
from diffscreen.simulate import CELLS, PRESETS, Simulator, label_from_count, simulate_frame, simulate_run
from diffscreen.simulate.crystal import b_matrix, predict_reflections, random_rotation, systematic_absence
from diffscreen.simulate.detector import PSF
from diffscreen.simulate.presets import detector_layout, load_cxidb76_mask
from reference.simulate import poisson_counts, spot_windows

HC = 12.3984198


def _s_from_pixel(x, y, meta):
    """Scattering vector s = (k_out - k_in) (Å⁻¹) of detector positions, from the frame's metadata only."""
    cx, cy = meta.beam_centre_px
    p, D, lam = meta.pixel_size_mm, meta.distance_mm, meta.wavelength_A
    X = (np.asarray(x) - cx) * p
    Y = (np.asarray(y) - cy) * p
    v = np.stack([X, Y, np.full_like(X, D)], axis=1)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    return (v - np.array([0.0, 0.0, 1.0])) / lam


def _radial_profile(data, mask, meta, offset):
    """Azimuthally averaged ADU vs d-spacing (Å)."""
    H, W = data.shape
    cx, cy = meta.beam_centre_px
    yy, xx = np.mgrid[0:H, 0:W]
    r = np.hypot(xx - cx, yy - cy)
    good = ~mask
    rb = r[good].astype(int)
    prof = np.bincount(rb, weights=data[good] - offset) / np.maximum(np.bincount(rb), 1)
    rr = np.arange(len(prof)) + 0.5
    two_theta = np.arctan2(rr * meta.pixel_size_mm, meta.distance_mm)
    with np.errstate(divide="ignore"):
        d = meta.wavelength_A / (2 * np.sin(two_theta / 2))
    return d, prof, np.bincount(rb)


# ---------------------------------------------------------------- crystal maths


def test_b_matrix_gives_d_spacings_and_matches_gemmi():
    cell = CELLS["thermolysin"]
    B = b_matrix(cell)
    # d(001) = c, d(100) = a sin(gamma) for hexagonal
    assert np.isclose(1 / np.linalg.norm(B @ [0, 0, 1]), 130.0)
    assert np.isclose(1 / np.linalg.norm(B @ [1, 0, 0]), 93.0 * np.sin(np.radians(120)))
    gemmi = pytest.importorskip("gemmi")
    for c in CELLS.values():
        g = gemmi.UnitCell(c.a, c.b, c.c, c.alpha, c.beta, c.gamma)
        assert np.allclose(b_matrix(c), np.array(g.frac.mat.tolist()).T, atol=1e-12)


def test_systematic_absences_match_gemmi():
    gemmi = pytest.importorskip("gemmi")
    rng = np.random.default_rng(0)
    hkl = rng.integers(-12, 13, size=(3000, 3))
    hkl[:300, :2] = 0  # plenty of axial reflections
    hkl[300:600, 1:] = 0
    for sg in ("P 21 21 21", "P 61 2 2"):
        ops = gemmi.SpaceGroup(sg).operations()
        want = np.array([ops.is_systematically_absent(list(map(int, h))) for h in hkl])
        assert np.array_equal(systematic_absence(hkl, sg), want)


def test_partiality_in_unit_interval_and_wilson_statistics():
    rng = np.random.default_rng(3)
    cell = CELLS["hydrogenase"]
    A = random_rotation(rng) @ b_matrix(cell)
    refl = predict_reflections(
        A,
        rng,
        wavelength_A=1.3,
        bandwidth_fwhm=0.003,
        mosaicity_fwhm_deg=0.1,
        domain_size_um=0.5,
        b_factor_A2=30.0,
        d_min_A=1.6,
        space_group=cell.space_group,
        solvent_k=0.0,
    )
    assert len(refl) > 500
    assert np.all((refl.partiality > 0) & (refl.partiality <= 1))
    # every predicted reflection is close to the Ewald sphere (|s + k_in| ≈ 1/λ)
    eps = np.linalg.norm(refl.s + [0, 0, 1 / 1.3], axis=1) - 1 / 1.3
    assert np.abs(eps).max() < 0.01
    # acentric Wilson statistics: I / <I> follows Exp(1)
    falloff = np.exp(-0.5 * 30.0 / refl.d**2)
    pol = 1 - refl.direction[:, 0] ** 2
    z = refl.intensity / (falloff * refl.partiality * pol)
    assert abs(z.mean() - 1) < 0.1
    assert abs((z > 2).mean() - np.exp(-2)) < 0.03


def test_spots_are_elongated_radially():
    ux, uy = np.array([0.6]), np.array([0.8])
    ix, iy, prof = spot_windows(np.array([50.3]), np.array([40.7]), ux, uy, np.array([3.0]), np.array([0.3]), PSF(0.3, 1.0, 1.0), 12)
    w = prof[0]
    X, Y = np.meshgrid(ix[0], iy[0])
    m = w.sum()
    mx, my = (w * X).sum() / m, (w * Y).sum() / m
    cov = np.cov(np.stack([X.ravel() - mx, Y.ravel() - my]), aweights=w.ravel())
    evals, evecs = np.linalg.eigh(cov)
    major = evecs[:, -1]
    assert abs(abs(major @ [0.6, 0.8]) - 1) < 1e-3
    assert evals[-1] > 5 * evals[0]
    assert abs(m - 1) < 1e-5  # pure Gaussian core: unit flux


def test_poisson_counts_statistics():
    rng = np.random.default_rng(0)
    for lam in (0.05, 0.7, 3.0, 20.0, 100.0):
        c = poisson_counts(np.full((400, 500), lam, np.float32), rng)
        assert abs(c.mean() - lam) < 4 * np.sqrt(lam / c.size) + 1e-3
        assert abs(c.var() / lam - 1) < 0.03
        assert np.all(c == np.round(c)) and c.min() >= 0


# ---------------------------------------------------------------- frames


def test_same_seed_same_frame_different_seed_different():
    a = simulate_frame("cspad", seed=5, index=3)
    b = Simulator("cspad", seed=5).frame(3)
    c = simulate_frame("cspad", seed=6, index=3)
    d = simulate_frame("cspad", seed=5, index=4)
    assert a.data.dtype == np.int32 and a.data.shape == (1765, 1765)
    assert np.array_equal(a.data, b.data)
    assert np.array_equal(a.peaks, b.peaks)
    assert (a.label, a.n_spots, a.meta.beam_centre_px) == (b.label, b.n_spots, b.meta.beam_centre_px)
    assert not np.array_equal(a.data, c.data)
    assert not np.array_equal(a.data, d.data)


@pytest.mark.parametrize("preset", ["cspad", "rayonix"])
def test_bragg_condition_of_recorded_peaks(preset):
    """Each peak's detector position maps to a q-vector on a reciprocal-lattice point of the rotated cell."""
    narrow = PRESETS[preset].replace(
        cells=(CELLS["cyclophilin_a"],), bandwidth_fwhm=(1e-4, 1e-4), mosaicity_deg=(0.005, 0.005), p_multi_lattice=0.0
    )
    sf = Simulator(narrow, seed=11).frame(0, kind="hit")
    assert sf.label == "hit" and len(sf.peaks) >= 10
    A = sf.truth["crystals"][0]["A"]
    s_obs = _s_from_pixel(sf.peaks[:, 0], sf.peaks[:, 1], sf.meta)
    frac = s_obs @ np.linalg.inv(A).T
    assert np.abs(frac - np.rint(frac)).max() < 0.1
    assert np.array_equal(np.rint(frac).astype(int), sf.truth["hkl"])
    # default preset (real bandwidth/mosaicity, several lattices): |s| = 1/d to 1 %, and close to a lattice point
    sf = Simulator(preset, seed=2).frame(1, kind="hit")
    s_obs = _s_from_pixel(sf.peaks[:, 0], sf.peaks[:, 1], sf.meta)
    assert np.allclose(np.linalg.norm(s_obs, axis=1) * sf.truth["d_A"], 1, atol=0.01)
    for k, xt in enumerate(sf.truth["crystals"]):
        sel = sf.truth["crystal"] == k
        resid = np.linalg.norm(s_obs[sel] - sf.truth["hkl"][sel] @ xt["A"].T, axis=1)
        assert np.all(resid < 0.01 / sf.truth["d_A"][sel] + 3e-3)  # mosaic/domain-size excitation


@pytest.mark.parametrize("preset", ["rayonix", "cspad"])
def test_no_beam_frame_is_dark(preset):
    sf = Simulator(preset, seed=1).frame(0, kind="no_beam")
    good = sf.data[~sf.mask].astype(float)
    good = good[good <= np.percentile(good, 99.99)]  # without the few hot pixels (they glow in the dark)
    e = sf.meta.extra
    assert abs(good.mean() - e["dark_offset_adu"]) < 0.05 * e["read_noise_adu"] + 0.6
    assert good.std() < 3 * e["read_noise_adu"] + 5
    assert sf.n_spots == 0 and len(sf.peaks) == 0 and sf.label == "miss"


@pytest.mark.parametrize("preset", ["rayonix", "cspad"])
def test_water_ring_peaks_at_3p2_angstrom(preset):
    p = PRESETS[preset].replace(air_photons=(0.01, 0.01), water_photons=(30.0, 30.0), p_kapton=0.0, p_jet_streak=0.0)
    sf = Simulator(p, seed=4).frame(0, kind="solvent")
    d, prof, n = _radial_profile(sf.data, sf.mask, sf.meta, sf.meta.extra["dark_offset_adu"])
    ok = (n > 50) & (d < 10)
    d_peak = d[ok][np.argmax(prof[ok])]
    assert abs(d_peak - 3.2) <= 0.3


@pytest.mark.parametrize("preset", ["rayonix", "cspad"])
def test_masked_pixels_are_zero_and_masks_are_the_real_ones(preset):
    sf = Simulator(preset, seed=0).frame(2, kind="hit")
    assert np.all(sf.data[sf.mask] == 0)
    if preset == "rayonix":
        assert np.array_equal(sf.mask, ~load_cxidb76_mask("LN84"))
        cx, cy = sf.meta.beam_centre_px
        assert sf.mask[int(cy), int(cx)]  # beam hole
    else:
        lay = detector_layout(PRESETS["cspad"])
        assert lay.n_asics == 64
        assert 0.25 < sf.mask.mean() < 0.28  # gaps between the 64 ASICs
        assert np.all(sf.mask[~lay.active])
        # brighter double rows between paired ASICs (Ke §3.2)
        flat = sf.data.reshape(-1)
        assert flat[lay.double_rows].mean() > 1.4 * np.median(sf.data[lay.trusted])


def test_saturation_pegged_at_detector_maximum():
    sim = Simulator("cspad", seed=0)
    n_sat = 0
    for i in range(4):
        sf = sim.frame(i, kind="hit")
        sat, sat_in = sf.meta.extra["saturation_adu"], sf.meta.extra["saturation_adu_inner"]
        assert sf.data.max() <= max(sat, sat_in)
        ys, xs = np.nonzero((sf.data == sat) | (sf.data == sat_in))
        n_sat += len(ys)
        if len(ys):  # pegged pixels belong to bright Bragg spots
            strong = sf.peaks[sf.peaks[:, 2] > sat]  # expected ADU (high-gain scale) above the ceiling
            dist = np.hypot(xs[:, None] - strong[None, :, 0], ys[:, None] - strong[None, :, 1]).min(axis=1)
            assert np.all(dist < 6)
    assert n_sat > 0
    # Rayonix: a lower ceiling shows the same pegging
    p = PRESETS["rayonix"].replace(saturation_adu=3000)
    sf = Simulator(p, seed=0).frame(1, kind="hit")
    assert sf.data.max() == 3000


def test_cspad_mixed_gain_zone_is_noisier():
    p = PRESETS["cspad"].replace(p_mixed_gain=1.0, p_strip_shadow=0.0)
    sf = Simulator(p, seed=0).frame(0, kind="no_beam")
    e = sf.meta.extra
    assert e["mixed_gain"] == 1.0 and e["saturation_adu_inner"] == 7 * e["saturation_adu"]
    H, W = sf.data.shape
    cx, cy = sf.meta.beam_centre_px
    yy, xx = np.mgrid[0:H, 0:W]
    r = np.hypot(xx - cx, yy - cy)
    two_theta = 2 * np.arcsin(sf.meta.wavelength_A / (2 * 3.2))
    r0 = sf.meta.distance_mm * np.tan(two_theta) / sf.meta.pixel_size_mm
    good = ~sf.mask
    inner = sf.data[good & (r < r0 - 2)]
    outer = sf.data[good & (r > r0 + 2)]
    assert np.all(inner % 7 == 0)  # low-gain ADU steps scaled by 7
    assert inner.std() > 4 * outer.std()


def test_labels_follow_spot_counts_in_a_small_run():
    sim = Simulator("cspad", seed=3)
    T = PRESETS["cspad"].snr_threshold
    kinds = set()
    for i in range(14):
        sf = sim.frame(i)
        kinds.add(sf.kind)
        assert sf.label == label_from_count(sf.n_spots)
        assert sf.n_spots == int((sf.peaks[:, 3] >= T).sum())
        assert sf.peaks.dtype == np.float32 and sf.peaks.shape[1] == 4
        if sf.kind in ("solvent", "empty", "no_beam"):
            assert sf.n_spots == 0
    assert label_from_count(10) == "hit" and label_from_count(9) == "maybe"
    assert label_from_count(4) == "maybe" and label_from_count(3) == "miss"


def test_simulate_run_writes_readable_cxi_with_requested_fractions(tmp_path):
    fr = {"hit": 0.4, "maybe": 0.2, "miss": 0.4}
    done = []
    out = simulate_run("cspad", 60, tmp_path / "run.cxi", seed=7, class_fractions=fr, progress=done.append)
    assert done[-1] == 60
    with h5py.File(out, "r") as f:
        data = f["/entry_1/data_1/data"]
        assert data.shape == (60, 1765, 1765) and data.dtype == np.int32
        names = [n.decode() if isinstance(n, bytes) else n for n in f["/entry_1/result_1"].attrs["class_names"]]
        labels = np.array([names[k] for k in f["/entry_1/result_1/label"][:]])
        n_spots = f["/entry_1/result_1/n_spots"][:]
        mask = f["/entry_1/instrument_1/detector_1/mask"][:]
        assert mask.shape == (1765, 1765)
        dist = f["/entry_1/instrument_1/detector_1/distance"][:]
        assert np.all((dist > 0.09) & (dist < 0.16))  # metres
        sim = Simulator("cspad", seed=7, class_fractions=fr)
        for i in (0, 1, 2):
            sf = sim.frame(i)
            assert np.array_equal(data[i], sf.data)
            assert labels[i] == sf.label and n_spots[i] == sf.n_spots
            npk = f["/entry_1/result_1/nPeaks"][i]
            assert npk == min(len(sf.peaks), 2048)
            assert np.allclose(f["/entry_1/result_1/peakXPosRaw"][i, :npk], sf.peaks[:npk, 0])
            assert np.allclose(f["/entry_1/result_1/peakSNR"][i, :npk], sf.peaks[:npk, 3])
            assert np.array_equal(mask.astype(bool), sf.mask)
            assert np.isclose(f["/entry_1/instrument_1/source_1/energy"][i], HC / sf.meta.wavelength_A * 1.602176634e-19)
    assert all(label_from_count(n) == lab for n, lab in zip(n_spots, labels))
    for k, want in fr.items():
        assert abs((labels == k).mean() - want) < 0.17, (k, (labels == k).mean())


def test_bad_configuration_raises():
    with pytest.raises(ConfigError):
        Simulator("pilatus9m")
    with pytest.raises(ConfigError):
        Simulator("cspad", class_fractions={"hit": 1.0, "bogus": 1.0})
    with pytest.raises(ConfigError):
        Simulator("cspad", class_fractions=(-1, 1, 1))
    with pytest.raises(ValueError):  # ConfigError is a ValueError
        Simulator("cspad").frame(0, kind="nonsense")


# ---- the five CXIDB-76 run presets (Ke et al. 2018, Tables 1-2) ------------------
RUNS = {  # energy eV, protein, space group, detector family, gain, (hit, maybe, miss)
    "L498": (9773, "thermolysin", "P 61 2 2", "cspad", 4.55, (148, 498, 1354)),
    "LG36": (7088, "photosystem II", "P 21 21 21", "cspad", 15.64, (235, 57, 1708)),
    "LN84": (9516, "photosystem II", "P 21 21 21", "rayonix", 0.31, (806, 132, 1062)),
    "LN83": (9498, "hydrogenase", "P 21 21 21", "rayonix", 0.27, (346, 63, 1591)),
    "LO19": (9442, "cyclophilin A", "P 21 21 21", "rayonix", 0.19, (730, 151, 1119)),
}


@pytest.mark.parametrize("run", sorted(RUNS))
def test_run_presets_follow_ke_tables_1_and_2(run):
    ev, protein, sg, family, gain, counts = RUNS[run]
    p = PRESETS[run]
    assert [c.name for c in p.cells] == [protein] and p.cells[0].space_group == sg
    assert p.energy_keV[0] * 1000 <= ev <= p.energy_keV[1] * 1000 and np.ptp(p.energy_keV) <= 0.02
    assert p.gain_adu_per_photon[0] <= gain <= p.gain_adu_per_photon[1]
    assert p.shape == PRESETS[family].shape and p.mask_key in (run, "LG36_mask2")
    assert np.allclose(p.class_fractions, np.array(counts) / 2000)
    # default class mixture = the real annotation counts: the drawn frame kinds follow them
    sim = Simulator(run, seed=4)
    kinds = [sim._draw(np.random.default_rng([4, i]), None)["kind"] for i in range(600)]
    for k, frac in zip(("hit", "maybe"), p.class_fractions):
        assert abs(kinds.count(k) / 600 - frac) < 4 * np.sqrt(frac * (1 - frac) / 600) + 1e-9, k
    # a frame carries the run's photon energy
    sf = sim.frame(1, kind="solvent")
    assert abs(12398.42 / sf.meta.wavelength_A - ev) <= 10.0


# ---- hybrid pixel and XFEL panel detectors ------------------------------------------
def test_tiled_masks_have_the_module_gaps():
    from diffscreen.simulate.presets import tiled_mask

    m = tiled_mask(PRESETS["pilatus"].tiles)
    assert m.shape == (1679, 1475) == PRESETS["pilatus"].shape
    assert not m[195:212].any()  # the 17-row gap between module rows
    assert m[:195, :487].all() and not m[:, 487:494].any() and m[212:407, 494:981].all()
    assert m.sum() == 24 * 195 * 487
    lay = detector_layout(PRESETS["jungfrau"])
    assert lay.n_asics == 64 and lay.active.shape == (2156, 2060)
    # wide pixels only where two chips meet inside a module, none across module gaps
    rows, cols = np.unravel_index(lay.double_rows, lay.active.shape)
    at_chip_col = np.isin(cols % 1036, [255, 256, 511, 512, 767, 768])
    at_chip_row = np.isin(rows % 548, [255, 256])
    assert np.all(at_chip_col | at_chip_row) and at_chip_col.any() and at_chip_row.any()
    assert not lay.active[512:548].any()


def test_pixel_detector_spots_are_one_or_two_pixels_ccd_spots_are_not():
    def peak_fraction(preset):
        sf = Simulator(preset, seed=2).frame(3, kind="hit")
        d = sf.data.astype(float)
        fr = []
        for x, y, _, snr in sf.peaks[:15]:
            x, y = int(round(x)), int(round(y))
            box = d[y - 3 : y + 4, x - 3 : x + 4]
            if box.shape != (7, 7) or sf.mask[y - 3 : y + 4, x - 3 : x + 4].any():
                continue
            sig = box - np.median(np.r_[box[0], box[-1], box[:, 0], box[:, -1]])
            top2 = np.sort(sig.ravel())[-2:].sum()
            fr.append(top2 / max(sig.sum(), 1e-9))
        return np.median(fr)

    assert peak_fraction("pilatus") > 0.6  # ≥ 60 % of a spot in its two brightest pixels
    assert peak_fraction("eiger") > 0.5
    assert peak_fraction("rayonix") < 0.35  # phosphor PSF spreads spots over tens of pixels


def test_photon_counting_frames_and_fixed_defects():
    from diffscreen.io.frame import check_frame
    from diffscreen.simulate.presets import pixel_maps

    sim = Simulator("pilatus", seed=6)
    a, b = sim.frame(0, kind="solvent"), sim.frame(1, kind="solvent")
    assert a.meta.extra["read_noise_adu"] == 0 and a.data.min() >= 0
    gain, dead = pixel_maps(PRESETS["pilatus"])
    assert len(dead) == 60 and (a.data.reshape(-1)[dead] == 0).all() and (b.data.reshape(-1)[dead] == 0).all()
    assert abs(gain.std() - 0.01) < 0.001 and abs(gain.mean() - 1) < 1e-3
    dark = sim.frame(2, kind="no_beam")
    assert 0 < (dark.data > 0).sum() <= 4  # only the hot pixels count in the dark
    check_frame(dark.to_frame())  # a dark photon-counting frame is still a valid frame
    j = Simulator("jungfrau", seed=1).frame(0, kind="solvent")
    assert j.data.min() < 0 and j.meta.extra["adu_per_photon"] > 8  # pedestal-subtracted, keV-calibrated


def test_beam_stop_shadows_the_centre_and_its_arm():
    sf = Simulator("pilatus", seed=9).frame(0, kind="solvent")
    r_bs = sf.meta.extra["beam_stop_radius_px"]
    assert 8 <= r_bs <= 16
    cx, cy = sf.meta.beam_centre_px
    H, W = sf.data.shape
    yy, xx = np.mgrid[0:H, 0:W]
    r = np.hypot(xx - cx, yy - cy)
    good = ~sf.mask
    disc = good & (r < r_bs - 1)
    ring = good & (r > r_bs + 2) & (r < r_bs + 30)
    assert sf.data[disc].mean() < 0.05 * sf.data[ring].mean()  # air scatter is strongest right there
    # the holder arm: dark along its azimuth at every radius, unlike the rest of the ring
    phi = np.radians(sf.meta.extra["beam_stop_arm_deg"])
    checked = 0
    for rr in (60, 200, 400):
        x, y = int(round(cx + rr * np.cos(phi))), int(round(cy + rr * np.sin(phi)))
        if 0 <= x < W and 0 <= y < H and good[y, x]:
            band = good & (np.abs(r - rr) < 1.5)
            assert sf.data[y - 1 : y + 2, x - 1 : x + 2].mean() < 0.1 * sf.data[band].mean()
            checked += 1
    assert checked >= 2
    # no peak is recorded as detectable behind the stop
    hit = Simulator("pilatus", seed=9).frame(1, kind="hit")
    strong = hit.peaks[hit.peaks[:, 3] >= 5]
    rr = np.hypot(strong[:, 0] - hit.meta.beam_centre_px[0], strong[:, 1] - hit.meta.beam_centre_px[1])
    assert np.all(rr > hit.meta.extra["beam_stop_radius_px"])
