"""Preprocessing (Ke et al. 2018, §2.2): hand-worked cases and an independent reference."""

import numpy as np
import pytest

from diffscreen.errors import ConfigError
from diffscreen.io.frame import Frame, FrameMeta
from diffscreen.preprocess import (
    DEFAULT_S_PER_PX,
    PreprocessConfig,
    Preprocessor,
    crop_scaled,
    gcn,
    lcn,
    linear_contrast,
    local_normalise,
    zoom_factor,
)


def naive_local_normalise(img, size, floor):
    """Loop reference of Eqs. 7-9 with symmetric (scipy 'reflect') borders."""
    r = size // 2
    p = np.pad(img.astype(np.float64), r, mode="symmetric")
    out = np.empty(img.shape)
    for y in range(img.shape[0]):
        for x in range(img.shape[1]):
            w = p[y : y + size, x : x + size]
            mu = w.mean()
            sd = max(np.sqrt(max((w**2).mean() - mu**2, 0)), floor)
            out[y, x] = (img[y, x] - mu) / sd
    return out


def test_gcn_hand_case():
    x = np.array([[1, 3], [1, 3]], np.float32)
    np.testing.assert_allclose(gcn(x), [[-1, 1], [-1, 1]], atol=1e-6)


def test_local_normalise_hand_case():
    # One bright pixel: every 3x3 (reflected) neighbourhood holds it exactly once,
    # so mu = 1 and sigma = sqrt(81/9 - 1) = sqrt(8) everywhere.
    x = np.zeros((3, 3), np.float32)
    x[1, 1] = 9
    out = local_normalise(x, size=3, std_floor=1.0)
    expect = np.full((3, 3), -1 / np.sqrt(8))
    expect[1, 1] = 8 / np.sqrt(8)
    np.testing.assert_allclose(out, expect, rtol=1e-6)
    # the floor takes over when sigma < floor
    out3 = local_normalise(x, size=3, std_floor=3.0)
    np.testing.assert_allclose(out3[1, 1], 8 / 3, rtol=1e-6)
    np.testing.assert_allclose(out3[0, 0], -1 / 3, rtol=1e-6)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int32, np.uint16])
def test_lcn_matches_loop_reference(dtype):
    rng = np.random.default_rng(3)
    img = rng.poisson(20, size=(23, 31)).astype(dtype)
    img[5, 7] = 900  # a Bragg-like spike
    ref = naive_local_normalise(gcn(img.astype(np.float64)), 5, 1.0)
    out = lcn(img)
    assert out.dtype == (np.float64 if dtype == np.float64 else np.float32)
    assert out.shape == img.shape
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-4)


def test_lcn_batch_equals_per_frame():
    rng = np.random.default_rng(0)
    batch = rng.normal(size=(3, 16, 16)).astype(np.float32) * [[[1]], [[5]], [[50]]]
    out = lcn(batch)
    for i in range(3):
        np.testing.assert_allclose(out[i], lcn(batch[i]), rtol=1e-5, atol=1e-6)


def test_lcn_rejects_bad_arguments():
    with pytest.raises(ConfigError, match="odd"):
        lcn(np.zeros((4, 4)), size=4)
    with pytest.raises(ConfigError, match="2-D"):
        lcn(np.zeros(4))


def test_linear_contrast_hand_case():
    x = np.arange(1, 11, dtype=np.float32)[None]  # P90 = 9.1
    out = linear_contrast(x, m=0.4)
    np.testing.assert_allclose(out, np.clip(0.4 * x / 9.1, 0, 1), rtol=1e-6)
    out2 = linear_contrast(x, m=2.0)
    assert out2.max() == 1.0 and out2[0, 0] == pytest.approx(2 / 9.1)


def test_crop_scaled_identity_and_padding():
    img = np.arange(100, dtype=np.float32).reshape(10, 10)
    # zoom 1: an exact slice centred on (x, y) = (4.5, 4.5)
    np.testing.assert_array_equal(crop_scaled(img, (4.5, 4.5), 1.0, 4), img[3:7, 3:7])
    # centred on the corner: outside the frame is zero
    c = crop_scaled(img, (0.0, 0.0), 1.0, 4)
    assert c[:2].sum() == 0 and c[:, :2].sum() == 0
    np.testing.assert_array_equal(c[2:, 2:], img[:2, :2])
    # a shift in output pixels moves the window
    np.testing.assert_array_equal(crop_scaled(img, (4.5, 4.5), 1.0, 4, shift=(1, 2)), img[5:9, 4:8])


def test_crop_scaled_downscale_conserves_spot_flux():
    img = np.zeros((400, 400), np.float32)
    img[200:203, 180:183] = 1000.0  # a 3x3 spot, flux 9000
    for zoom in (0.5, 0.25):
        out = crop_scaled(img, (199.5, 199.5), zoom, int(400 * zoom))
        assert out.sum() / zoom**2 == pytest.approx(9000, rel=0.02)


def test_physical_scaling_makes_detectors_comparable():
    """A ring at resolution d lands at the same output radius for different detectors."""
    d = 3.2  # Å
    pre = Preprocessor(PreprocessConfig(out_size=720))
    radii = []
    for px, dist, lam, n in ((0.1, 100.0, 1.0, 1400), (0.08, 80.0, 1.6, 1200), (0.172, 250.0, 0.9, 1800)):
        r_px = dist * lam / (d * px)  # small-angle radius in detector pixels
        yy, xx = np.mgrid[:n, :n]
        c = n / 2 - 0.5 + 7  # off-centre beam
        ring = np.exp(-0.5 * ((np.hypot(xx - c, yy - c) - r_px) / 3.0) ** 2).astype(np.float32) * 100
        meta = FrameMeta("x", 0, None, px, (c, c), dist, lam)
        crop = pre.crop(Frame(ring, np.zeros_like(ring, bool), meta))
        yy, xx = np.mgrid[:720, :720]
        rr = np.hypot(xx - 359.5, yy - 359.5).astype(int)
        prof = np.bincount(rr.ravel(), crop.ravel()) / np.bincount(rr.ravel())
        radii.append(np.argmax(prof[:360]))
    expected = (1 / d) / DEFAULT_S_PER_PX
    assert all(abs(r - expected) <= 3 for r in radii), (radii, expected)


def test_zoom_fallback_without_geometry_is_ke_resize():
    meta = FrameMeta("x", 0)
    assert zoom_factor(meta, (1920, 1920)) == pytest.approx(0.5)
    assert zoom_factor(meta, (1765, 1765)) == pytest.approx(960 / 1765)
    # pixel-count scaling when asked for, even with geometry
    meta2 = FrameMeta("x", 0, None, 0.1, None, 100.0, 1.0)
    assert zoom_factor(meta2, (1000, 1000), s_per_px=None) == pytest.approx(0.96)


def test_preprocessor_masks_and_negatives_are_zeroed_and_input_untouched():
    rng = np.random.default_rng(1)
    data = rng.normal(50, 5, size=(200, 200)).astype(np.float32)
    data[0:10] = -5000  # dark-subtracted negatives
    mask = np.zeros(data.shape, bool)
    mask[:, 190:] = True
    data[:, 190:] = 1e6  # masked hot panel must not leak into the crop
    original = data.copy()
    fr = Frame(data, mask, FrameMeta("x", 0))
    pre = Preprocessor(PreprocessConfig(out_size=200, fallback_size=200, contrast="linear"))
    crop = pre.crop(fr)
    assert crop.min() == 0 and crop.max() < 200
    np.testing.assert_array_equal(data, original)
    x = pre([fr, fr], shifts=[(0, 0), (10, -10)])
    assert x.shape == (2, 1, 200, 200) and x.dtype == np.float32
    assert 0 <= x.min() and x.max() <= 1


def test_config_round_trip_and_validation():
    c = PreprocessConfig(contrast="linear", s_per_px=None)
    assert PreprocessConfig.from_dict(c.to_dict()) == c
    with pytest.raises(ConfigError):
        PreprocessConfig(contrast="histeq")
    with pytest.raises(ConfigError, match="unknown"):
        PreprocessConfig.from_dict({"kernel": 3})
