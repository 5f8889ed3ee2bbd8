"""CDI simulator (diffscreen.simulate.cdi): physics, label rules, Table 1 frequencies, detector."""

import math

import numpy as np
import pytest

from diffscreen.errors import ConfigError
from diffscreen.evaluate.multilabel import CDI_CLASSES, rule_violations
from diffscreen.simulate.cdi import (
    CDI_CLASS_NAMES, TABLE1_COUNTS, TABLE1_FRACTIONS, CDISimulator, sphere_intensity, simulate_cdi_run,
)


@pytest.fixture(scope="module")
def frames():
    sim = CDISimulator(seed=5, size=64)
    return [sim.frame(i) for i in range(160)]


def test_class_order_matches_metrics_and_table1():
    assert CDI_CLASS_NAMES == CDI_CLASSES
    assert TABLE1_COUNTS["spherical_oblate"] == 6589 and TABLE1_COUNTS["empty"] == 222
    assert TABLE1_FRACTIONS["round"] == pytest.approx(0.797, abs=5e-4)


def _radial(I, sim):
    r = np.round(sim.qperp / sim.config.dq).astype(int)
    n = np.bincount(r.ravel())
    return np.bincount(r.ravel(), I.ravel()) / np.maximum(n, 1), np.arange(len(n)) * sim.config.dq


def test_sphere_matches_analytic_form_factor():
    sim = CDISimulator(seed=0, size=128, ewald=False)
    R = 300.0
    I = sim._amplitude([{"type": "sphere", "r": R, "centre": [0.0, 0.0, 0.0]}])
    prof, q = _radial(I, sim)
    prof = prof / prof[0]
    # first minimum of the radial profile at qR = 4.493 (within one pixel in q)
    k0 = int(np.argmax(q * R > 3.0))
    kmin = k0 + int(np.argmin(prof[k0: k0 + int(3.0 / (R * sim.config.dq))]))
    assert abs(q[kmin] * R - 4.4934) < sim.config.dq * R * 1.0
    # and the profile follows |3(sin x - x cos x)/x^3|^2 over the first lobes (log-space)
    sel = (q * R > 0.5) & (q * R < 9.0)
    ref = sphere_intensity(q[sel], R)
    good = ref > 1e-4
    assert np.median(np.abs(np.log(prof[sel][good] / ref[good]))) < 0.15


def test_flat_ewald_patterns_are_centrosymmetric_curved_ones_not():
    prims = [{"type": "sphere", "r": 250.0, "centre": [0.0, 0.0, 0.0]},
             {"type": "sphere", "r": 220.0, "centre": [300.0, 150.0, 700.0]},
             {"type": "sphere", "r": 200.0, "centre": [-250.0, 200.0, -500.0]}]
    flat = CDISimulator(seed=0, size=64, ewald=False)
    curved = CDISimulator(seed=0, size=64, ewald=True)
    assert flat._asymmetry(flat._amplitude(prims)) < 1e-3
    assert curved._asymmetry(curved._amplitude(prims)) > 0.1


def test_pair_along_beam_gives_newton_modulation():
    """Two identical spheres separated by d along the beam: I = 2 I1 (1 + cos(q_z d)) (Ewald sphere)."""
    sim = CDISimulator(seed=0, size=64)
    dx, R = sim.config.dx, 200.0
    d = 60 * dx
    one = sim._amplitude([{"type": "sphere", "r": R, "centre": [0.0, 0.0, 0.0]}])
    two = sim._amplitude([{"type": "sphere", "r": R, "centre": [0.0, 0.0, -d / 2]},
                          {"type": "sphere", "r": R, "centre": [0.0, 0.0, d / 2]}])
    expect = 2 * one * (1 + np.cos(sim.qz_map * d))
    sel = (one > one.max() * 1e-3) & (expect > one * 0.5)
    assert np.median(np.abs(two[sel] / expect[sel] - 1)) < 0.05
    # the modulation has >= 2 fringes inside q_edge: Newton rings
    assert sim.config.qz(sim.config.q_edge) * d / (2 * math.pi) > 2


def test_labels_follow_fig2_rules_and_kinds(frames):
    Y = np.array([f.labels for f in frames])
    assert not rule_violations(Y)["any"].any()
    agree = np.mean([sorted(f.params["kind"]) == sorted(f.label_names) for f in frames])
    assert agree >= 0.97
    # every non-empty frame is exactly one superordinate class, Round/Elliptical partition Spherical/Oblate
    so = Y[:, 0] == 1
    assert np.all(Y[so, 1] + Y[so, 2] == 1)


def test_kind_frequencies_follow_table1():
    sim = CDISimulator(seed=1, size=32)
    rng = np.random.default_rng(0)
    n = 20000
    K = np.array([[k[c] for c in CDI_CLASS_NAMES] for k in (sim._kind(rng) for _ in range(n))])
    for j, c in enumerate(CDI_CLASS_NAMES):
        p = TABLE1_FRACTIONS[c]
        tol = 4 * math.sqrt(p * (1 - p) / n) + 0.003
        assert abs(K[:, j].mean() - p) < tol, (c, K[:, j].mean(), p)


def test_sampled_label_frequencies_near_table1(frames):
    Y = np.array([f.labels for f in frames])
    assert abs(Y[:, 0].mean() - TABLE1_FRACTIONS["spherical_oblate"]) < 0.08
    assert abs(Y[:, 1].mean() - TABLE1_FRACTIONS["round"]) < 0.1
    assert Y[:, 4].sum() >= 3  # prolate frames occur


def test_bent_needs_a_curved_ewald_sphere():
    kind = dict.fromkeys(CDI_CLASS_NAMES, 0)
    kind.update(prolate=1, bent=1)
    f_curved = CDISimulator(seed=2, size=64).frame(0, kind=kind)
    assert f_curved.labels[CDI_CLASS_NAMES.index("bent")] == 1
    assert f_curved.params["sagitta_q_edge"] >= 0.06
    f_flat = CDISimulator(seed=2, size=64, ewald=False, max_tries=3).frame(0, kind=kind)
    assert f_flat.labels[CDI_CLASS_NAMES.index("bent")] == 0  # not faked


def test_detector_effects_and_determinism(frames):
    sim = CDISimulator(seed=5, size=64)
    a, b = sim.frame(3), sim.frame(3)
    np.testing.assert_array_equal(a.data, b.data)
    assert not np.array_equal(a.data, sim.frame(4).data)
    for f in frames[:40]:
        assert f.data.dtype == np.float32 and f.data.shape == (64, 64)
        assert np.all(f.data[f.mask] == 0) and f.mask.sum() > 0
        assert f.data.max() <= sim.config.saturation
        assert np.all(f.data == np.round(f.data))  # photon counts
    hot = CDISimulator(seed=5, size=64, photons=(1e8, 1e8)).frame(1)
    assert hot.data.max() == sim.config.saturation


def test_bad_config_refused():
    with pytest.raises(ConfigError):
        CDISimulator(size=4)
    with pytest.raises(ConfigError):
        CDISimulator(class_fractions={"cubic": 0.1})
    with pytest.raises(ConfigError):
        CDISimulator(photons=(0, 10))


def test_run_file_layout(tmp_path):
    import h5py
    import json

    p = simulate_cdi_run(tmp_path / "r.cxi", 4, seed=1, size=32, radius_nm=120, radius_range_nm=(80.0, 150.0))
    with h5py.File(p) as h:
        assert h["entry_1/data_1/data"].shape == (4, 32, 32)
        lab = h["entry_1/result_1/labels"]
        assert lab.shape == (4, 11) and json.loads(lab.attrs["class_names"]) == list(CDI_CLASS_NAMES)
    from diffscreen.io import read_frame

    f = read_frame(p, 2)
    assert f.data.shape == (32, 32) and f.mask.any()
