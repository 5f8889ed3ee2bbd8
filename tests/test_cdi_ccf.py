"""CCF maps (Zimmermann et al. 2019 §5.3, Eqs. 13-15) against direct evaluation and known cases."""

import glob
import os
import time

import numpy as np
import pytest

from diffscreen.errors import BadFrameError, ConfigError
from diffscreen.preprocess.ccf import angular_fourier, ccf_full, ccf_map, ccf_maps, ccf_order, polar_resample

REAL = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "real-cdi-frames")


def test_full_ccf_equals_direct_loop():
    rng = np.random.default_rng(0)
    P = rng.random((6, 40))
    n_phi = P.shape[1]
    for k in (0, 1, 7, 23):
        delta = 2 * np.pi * k / n_phi
        direct = np.array([[sum(P[i, f] * P[j, (f + k) % n_phi] for f in range(n_phi)) / n_phi
                            for j in range(6)] for i in range(6)])
        np.testing.assert_allclose(ccf_full(P, delta), direct, rtol=1e-10, atol=1e-12)


def test_order_n_equals_direct_eq15():
    rng = np.random.default_rng(1)
    P = rng.random((5, 32))
    phi = np.arange(32) * 2 * np.pi / 32
    for n in (0, 2, 8):
        In = np.array([np.mean(P[i] * np.exp(-1j * n * phi)) for i in range(5)])
        np.testing.assert_allclose(angular_fourier(P)[:, n], In, atol=1e-12)
        np.testing.assert_allclose(ccf_order(P, n), np.conj(In)[:, None] * In[None, :], atol=1e-12)


def _ring_image(m, size=129, amp=0.5):
    y, x = np.indices((size, size)) - size // 2
    r, phi = np.hypot(x, y), np.arctan2(y, x)
    return np.where((r > 15) & (r < 50), 1 + amp * np.cos(m * phi), 0.0)


def test_eightfold_pattern_has_order8_component():
    img = _ring_image(8)
    P, _ = polar_resample(img, centre=(64, 64), n_q=32, n_phi=256)
    I8 = np.abs(angular_fourier(P)[:, 8])
    ring = (np.arange(32) + 0.5) * 64 / 32
    inside = (ring > 20) & (ring < 45)
    np.testing.assert_allclose(I8[inside], 0.25, rtol=0.05)  # 0.5 cos(8φ) → |I_8| = 0.25
    m8 = ccf_map(img, centre=(64, 64), n_q=32)
    m2 = ccf_map(_ring_image(2), centre=(64, 64), n_q=32)
    up = np.triu(np.ones((32, 32), bool), 1)
    assert np.abs(m8[up]).max() == pytest.approx(1.0)
    # a 2-fold modulation has no order-8 component: the raw upper triangle is ~0 compared to the 8-fold one
    raw2 = np.abs(ccf_order(polar_resample(_ring_image(2), centre=(64, 64), n_q=32)[0], 8).real).max()
    raw8 = np.abs(ccf_order(P, 8).real).max()
    assert raw2 < 0.02 * raw8
    # lower triangle: the full CCF at Δ = 0 of a non-negative pattern is >= 0
    assert (m2[~up] >= -1e-6).all() and (m8[~up] >= -1e-6).all()


def test_map_is_flip_invariant_and_bounded():
    rng = np.random.default_rng(3)
    img = rng.poisson(5 * (1 + _ring_image(3, 65))).astype(np.float32)
    m = ccf_map(img, centre=(32, 32), n_q=16)
    mf = ccf_map(img[:, ::-1], centre=(32, 32), n_q=16)
    np.testing.assert_allclose(m, mf, atol=1e-4)
    assert m.dtype == np.float32 and m.shape == (16, 16) and np.abs(m).max() <= 1 + 1e-6
    stack = ccf_maps(np.stack([img, img[::-1]]), centre=(32, 32), n_q=16)
    np.testing.assert_allclose(stack[0], m, atol=1e-6)


def test_masked_pixels_do_not_add_angular_structure():
    img = np.ones((65, 65))
    mask = np.zeros_like(img, bool)
    mask[:, 40:44] = True  # a gap crossing the rings
    img_gap = img.copy()
    img_gap[mask] = 0
    P, valid = polar_resample(img_gap, centre=(32, 32), mask=mask, n_q=8)
    assert not valid.all()
    assert np.abs(angular_fourier(P)[:, 1:]).max() < 1e-9  # filled with the ring mean: flat again


def test_bad_input_refused():
    with pytest.raises(BadFrameError):
        ccf_map(np.full((8, 8), np.nan))
    with pytest.raises(BadFrameError):
        ccf_map(np.ones((2, 8, 8)))
    with pytest.raises(ConfigError):
        polar_resample(np.ones((32, 32)), n_phi=16)
    with pytest.raises(BadFrameError):
        polar_resample(np.ones((32, 32)), mask=np.zeros((8, 8), bool))
    img = np.ones((32, 32))
    ccf_map(img)
    assert (img == 1).all()  # input untouched


def test_speed_milliseconds_per_pattern():
    from threadpoolctl import threadpool_limits

    img = np.random.default_rng(0).random((64, 64))
    with threadpool_limits(1):
        ccf_map(img, n_q=64)
        t = time.perf_counter()
        for _ in range(20):
            ccf_map(img, n_q=64)
    assert (time.perf_counter() - t) / 20 < 0.05  # ~2 ms; generous for a loaded CI machine


@pytest.mark.skipif(not os.path.isdir(REAL), reason="real CDI frames not available")
def test_real_frames_ccf():
    from diffscreen.io import read_frame
    from diffscreen.preprocess.cdi import CDIPreprocessConfig, pattern_centre, prepare_cdi

    power = {}
    for name in ("00050", "00099", "00150"):
        (path,) = glob.glob(os.path.join(REAL, f"*_{name}.tif"))
        f = read_frame(path)
        c = pattern_centre(f.data, f.mask, f.meta)
        P, _ = polar_resample(f.data, centre=c, mask=f.mask, n_q=64)
        power[name] = np.trace(ccf_full(P))
        m = prepare_cdi(f.data, CDIPreprocessConfig(input_size=64, mode="ccf"), mask=f.mask, meta=f.meta)
        assert m.shape == (64, 64) and np.isfinite(m).all()
        low = np.tril(np.ones((64, 64), bool))
        assert (m[low] >= -1e-6).all()
    # the rocking-curve peak carries orders of magnitude more correlated signal than the tails
    assert power["00099"] > 1e5 * max(power["00050"], power["00150"])


def test_ring_normalisation_is_scale_free_and_weights_rings_alike():
    y, x = np.indices((65, 65)) - 32
    r, phi = np.hypot(x, y), np.arctan2(y, x)
    radial = 1e3 * np.exp(-r / 6)
    img = radial * (1 + 0.5 * np.cos(8 * phi))
    m1 = ccf_map(img, centre=(32, 32), n_q=32, normalise="ring")
    np.testing.assert_allclose(ccf_map(img * 1e-3, centre=(32, 32), n_q=32, normalise="ring"), m1, atol=1e-5)
    # relative modulation 0.5 cos(8φ) on every ring: ring-normalised order-8 terms equal on all ring pairs
    up = np.triu(np.ones((32, 32), bool), 1)
    outer = np.minimum.outer(np.arange(32), np.arange(32)) >= 8  # rings >= 8 px: the pixel grid resolves cos(8φ)
    assert np.abs(m1[up & outer] - 1).max() < 0.15
    as_written = ccf_map(img, centre=(32, 32), n_q=32, normalise="max")
    assert np.median(as_written[up & outer]) < 0.05  # as written, the q-falloff hides the outer rings
    with pytest.raises(ConfigError):
        ccf_map(img, normalise="l2")
