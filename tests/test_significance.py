"""The significance input (issue 13): detector-invariant, robust to single pixels, rings vanish."""

import numpy as np
import pytest

from diffscreen.errors import ConfigError
from diffscreen.io.frame import Frame, FrameMeta
from diffscreen.preprocess import PreprocessConfig, Preprocessor, crop_scaled
from diffscreen.preprocess.fast import FastPreprocessor
from diffscreen.preprocess.geometry import beam_in_crop
from diffscreen.preprocess.significance import shell_statistics, significance

C = (63.5, 63.5)


def _radius(shape, centre):
    yy, xx = np.indices(shape)
    return np.hypot(xx - centre[0], yy - centre[1])


def test_gain_and_offset_drop_out():
    rng = np.random.default_rng(1)
    photons = rng.poisson(3.0, (128, 128)).astype(np.float32)
    photons[40:42, 70:72] += 80.0
    z = significance(photons, C)
    assert np.allclose(significance(25.0 * photons, C), z, atol=1e-4)
    # a CCD: read noise dominates, a pedestal offset must not matter
    ccd = (rng.normal(100.0, 5.0, (128, 128)) + 10 * (photons > 50)).astype(np.float32)
    assert np.allclose(significance(ccd + 500.0, C), significance(ccd, C), atol=0.02)  # the variance floor moves a little
    assert z[40, 70] > 3.0 and abs(float(np.median(z))) < 0.3


def test_shell_statistics_match_numpy_and_ignore_spots():
    rng = np.random.default_rng(2)
    bg = 50.0 + 0.3 * _radius((128, 128), C)  # a background falling off with resolution
    img = rng.normal(bg, 4.0).astype(np.float32)
    img[::17, ::13] = 5000.0  # bright pixels everywhere: must be clipped out of the statistics
    mu, var, cnt, bins = shell_statistics(img, C, step=1)
    r = _radius(img.shape, C).astype(int)
    for b in (10, 30, 60):
        sel = (r == b) & (img < 1000)
        assert cnt[b] >= sel.sum() - 3
        assert mu[b] == pytest.approx(img[sel].mean(), abs=1.5)
        assert np.sqrt(var[b]) == pytest.approx(4.0, rel=0.25)
    assert (bins == r).mean() > 0.999


def test_a_smooth_ring_vanishes_but_a_spot_on_it_stays():
    rng = np.random.default_rng(3)
    r = _radius((128, 128), C)
    lam = 2.0 + 200.0 * np.exp(-0.5 * ((r - 40.0) / 1.5) ** 2)  # a powder ring 100x the background
    img = rng.poisson(lam).astype(np.float32)
    img[int(C[1]) - 40, int(C[0])] += 400.0  # a Bragg spot on the ring
    z = significance(img, C)
    on_ring = np.abs(r - 40.0) < 1.0
    assert np.median(np.abs(z[on_ring])) < 0.6
    assert z[int(C[1]) - 40, int(C[0])] > 2.0


def test_one_defective_pixel_is_bounded_and_changes_nothing_else():
    rng = np.random.default_rng(4)
    img = rng.poisson(5.0, (128, 128)).astype(np.float32)
    hot = img.copy()
    hot[20, 30] = 1.0e9
    a, b = significance(img, C), significance(hot, C)
    assert b[20, 30] == pytest.approx(8.0)
    others = np.ones(img.shape, bool)
    others[20, 30] = False
    assert np.abs(a - b)[others].max() < 0.05


def test_near_empty_photon_counting_frame_single_photons_stay_small():
    rng = np.random.default_rng(5)
    img = rng.poisson(0.02, (128, 128)).astype(np.float32)
    img[90, 90] = 60.0
    z = significance(img, C)
    assert z[img == 1].max() < 1.2  # one photon is about one "photon σ", not a spot
    assert z[90, 90] > 3.0


def test_bad_parameters_are_refused():
    with pytest.raises(ConfigError):
        significance(np.zeros((4, 4, 4), np.float32), C)
    with pytest.raises(ConfigError):
        significance(np.zeros((8, 8), np.float32), C, shell_px=0)


def test_beam_in_crop_is_where_the_beam_lands():
    img = np.zeros((300, 260), np.float32)
    centre = (101.0, 143.0)
    img[143, 101] = 1.0
    for zoom, shift in ((0.5, (0, 0)), (1.7, (5, -3)), (1.0, (-7, 2))):
        out = crop_scaled(img, centre, zoom, 96, shift)
        y, x = np.unravel_index(np.argmax(out), out.shape)
        bx, by = beam_in_crop(centre, zoom, 96, shift)
        assert abs(x - bx) <= 1.0 and abs(y - by) <= 1.0


def test_fast_and_reference_paths_agree_on_significance():
    rng = np.random.default_rng(6)
    data = rng.poisson(4.0, (700, 650)).astype(np.float32)
    data[300:303, 200:203] = 500.0
    mask = np.zeros(data.shape, bool)
    mask[:, 320:330] = True  # a panel gap
    meta = FrameMeta("x.h5", 0, pixel_size_mm=0.172, beam_centre_px=(280.5, 390.0), distance_mm=180.0,
                     wavelength_A=1.0)
    fr = Frame(data, mask, meta)
    cfg = PreprocessConfig.significance(96, scale=720 / 96)
    ref = Preprocessor(cfg)([fr], shifts=[(4, -2)])
    fast = FastPreprocessor(cfg)([fr], shifts=[(4, -2)])
    assert ref.shape == (1, 1, 96, 96)
    assert np.abs(ref - fast).max() < 1e-3
    assert ref.max() > 3.0


def test_the_bundled_recipe_is_significance():
    cfg = PreprocessConfig.significance()
    assert cfg.contrast == "snr" and cfg.out_size == 360
    assert cfg.s_per_px == pytest.approx(2 * PreprocessConfig().s_per_px)
    assert PreprocessConfig.from_dict(cfg.to_dict()) == cfg


def test_gaps_and_the_frame_edge_vanish_from_the_input():
    rng = np.random.default_rng(7)
    data = rng.poisson(20.0, (400, 400)).astype(np.float32)
    mask = np.zeros(data.shape, bool)
    mask[:, 120:140] = True
    meta = FrameMeta("x.h5", 0, beam_centre_px=(60.0, 200.0))  # near the left edge: half the crop is off the frame
    cfg = PreprocessConfig.significance(64, scale=720 / 64)
    cfg = PreprocessConfig.from_dict({**cfg.to_dict(), "s_per_px": None, "fallback_size": 100})  # zoom 1/4
    pre = FastPreprocessor(cfg)
    a = pre([Frame(data, mask, meta)])[0, 0]
    junk = data.copy()
    junk[mask] = 1e7  # whatever the masked pixels hold, the input is the same
    b = pre([Frame(junk, mask, meta)])[0, 0]
    assert np.array_equal(a, b)
    plan = pre.plan(meta, data.shape)
    off = plan.to_crop(-0.5, 0)[0]  # the frame's left edge in crop pixels
    assert off > 5
    assert np.all(a[:, : int(off) - 1] == 0)  # outside the frame: exactly 0, not a dark band
    gx0, gx1 = plan.to_crop(120, 0)[0], plan.to_crop(139, 0)[0]
    assert np.all(a[:, int(np.ceil(gx0)) : int(gx1)] == 0)
    assert a[:, int(off) + 2 :].std() > 0.3  # the noise of the frame itself is there
