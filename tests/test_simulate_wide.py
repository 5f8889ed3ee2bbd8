"""Domain-randomised "wide" presets and the issue-13 artefacts (rings, cosmic rays, overload markers).

Labels follow Ke et al. (2018) §3.3.1 (detectable Bragg spots only); ice rings
are the standard hexagonal ice Ih powder lines (3.90, 3.67, 3.44 Å, ...).
"""

import collections

import numpy as np
import pytest

from diffscreen.simulate import FAMILIES, PRESETS, WIDE_PRESETS, Simulator
from diffscreen.simulate.presets import CELLS, ICE_RINGS_D_A

# the issue-13 fields at their defaults
_DEFAULTS = dict(
    log_gain=False,
    log_distance=False,
    pixel_size_range_mm=None,
    p_offcentre_beam=0.0,
    p_energy_line=0.0,
    p_ice_rings=0.0,
    p_powder_rings=0.0,
    p_cosmic=0.0,
    p_overload_markers=0.0,
)

# a clean ring test bench: Eiger-like, fixed geometry, no other artefacts
_BENCH = dict(
    distance_mm=(100.0, 100.0),
    energy_keV=(12.4, 12.4),
    p_energy_line=0.0,
    p_offcentre_beam=0.0,
    beam_centre_jitter_px=0.0,
    p_ice_rings=0.0,
    p_powder_rings=0.0,
    p_cosmic=0.0,
    p_overload_markers=0.0,
    hot_pixels=(0, 0),
    p_beam_stop=0.0,
    p_jet_streak=0.0,
    ring_sigma_px=(1.0, 1.0),
    ring_grain_fraction=(0.0, 0.0),
    air_photons=(0.001, 0.001),
)


def _d_map(sf):
    """Resolution d (Å) of every pixel from the frame's geometry: d = λ / (2 sin θ)."""
    m = sf.meta
    H, W = sf.data.shape
    cx, cy = m.beam_centre_px
    y, x = np.mgrid[0:H, 0:W]
    r = np.hypot(x - cx, y - cy) * m.pixel_size_mm
    theta = np.arctan2(r, m.distance_mm) / 2
    with np.errstate(divide="ignore"):
        return m.wavelength_A / (2 * np.sin(theta))


def _shell_mean(sf, s_map, s0, half):
    sel = (~sf.mask) & (np.abs(s_map - s0) < half)
    assert sel.sum() > 50
    return float(sf.data[sel].mean())


def test_families_name_existing_presets_and_wide_presets_are_registered():
    assert set(FAMILIES) == {"hybrid172", "hybrid75", "ccd", "cspad", "panel"}
    for fam, names in FAMILIES.items():
        for n in names:
            assert n in PRESETS, (fam, n)
    assert {n for n in WIDE_PRESETS} == {names[-1] for names in FAMILIES.values()}
    for n in WIDE_PRESETS:
        p = PRESETS[n]
        assert p.class_fractions == (0.3, 0.2, 0.5)
        assert max(p.shape) <= 2048
        assert p.randomised


def test_small_molecule_cells_have_valid_space_groups():
    gemmi = pytest.importorskip("gemmi")
    for key in ("urea", "glycine", "paracetamol", "sucrose", "cyanocobalamin"):
        cell = CELLS[key]
        assert max(cell.a, cell.b, cell.c) <= 26
        assert cell.b_factor_A2 is not None
        gemmi.SpaceGroup(cell.space_group)


@pytest.mark.parametrize("name", WIDE_PRESETS)
def test_wide_preset_produces_all_three_labels(name):
    sim = Simulator(name, seed=2)
    labels = collections.Counter(sim.frame(i).label for i in range(40))
    assert set(labels) == {"hit", "maybe", "miss"}, labels


def test_powder_ring_only_frame_is_a_miss_with_a_peak_at_the_ring():
    P = PRESETS["wide_hybrid75"].replace(
        name="ring_bench", **{**_BENCH, "p_powder_rings": 1.0, "powder_rings": (1, 1),
                              "powder_ring_d_A": (2.5, 2.5), "powder_ring_photons": (20.0, 20.0)}
    )  # fmt: skip
    sf = Simulator(P, seed=4).frame(0, kind="empty")
    assert sf.label == "miss" and sf.n_spots == 0 and len(sf.peaks) == 0
    (kind, d_ring, _), = sf.truth["rings"]
    assert kind == "powder" and d_ring == pytest.approx(2.5)
    assert sf.meta.extra["n_powder_rings"] == 1
    s = 1 / _d_map(sf)
    s0 = 1 / d_ring
    w = 0.002  # Å⁻¹, ~2 px here
    ring = _shell_mean(sf, s, s0, w)
    for off in (-6 * w, 6 * w):
        assert ring > 5 * _shell_mean(sf, s, s0 + off, w) + 1


def test_ice_rings_sit_at_the_hexagonal_ice_lines():
    P = PRESETS["wide_hybrid75"].replace(
        name="ice_bench", **{**_BENCH, "p_ice_rings": 1.0, "ice_ring_photons": (30.0, 30.0)}
    )
    sf = Simulator(P, seed=5).frame(1, kind="empty")
    assert sf.label == "miss" and sf.meta.extra["ice_rings"] == 1
    ds = sorted(d for kind, d, _ in sf.truth["rings"] if kind == "ice")
    assert ds == sorted(d for d, _ in ICE_RINGS_D_A)
    s = 1 / _d_map(sf)
    w = 0.0015
    strong = [1 / 3.897, 1 / 3.669, 1 / 3.441]
    for a, b in zip(strong[:-1], strong[1:]):
        mid = _shell_mean(sf, s, (a + b) / 2, w)
        assert _shell_mean(sf, s, a, w) > 3 * mid + 1
        assert _shell_mean(sf, s, b, w) > 3 * mid + 1
    # the rings are at the right place: the brightest shell is the 3.90 Å line
    grid = np.arange(0.2, 0.33, 0.001)
    prof = [_shell_mean(sf, s, g, 0.0005) for g in grid]
    assert abs(1 / grid[int(np.argmax(prof))] - 3.897) < 0.03


def test_spots_on_rings_keep_their_label():
    base = PRESETS["wide_hybrid172"].replace(name="no_rings", p_ice_rings=0.0, p_powder_rings=0.0)
    ringy = base.replace(name="rings", p_ice_rings=1.0, p_powder_rings=1.0)
    a, b = Simulator(base, seed=9), Simulator(ringy, seed=9)
    n_ring = 0
    for i in range(4):
        fa, fb = a.frame(i, kind="hit"), b.frame(i, kind="hit")
        n_ring += bool(fb.truth["rings"])
        if fa.label == "hit":
            assert fb.label == "hit", (i, fb.n_spots)
    assert n_ring >= 3


def test_cosmic_rays_and_overload_markers_only_where_enabled_and_label_unchanged():
    off = PRESETS["wide_panel"].replace(name="clean", p_cosmic=0.0, p_overload_markers=0.0)
    on = off.replace(name="dirty", p_cosmic=1.0, cosmic_rays=(3, 3), p_overload_markers=1.0, overload_markers=(5, 5))
    s_off, s_on = Simulator(off, seed=11), Simulator(on, seed=11)
    for i, kind in enumerate(("hit", "maybe", "solvent", "no_beam", "empty")):
        f0, f1 = s_off.frame(i, kind=kind), s_on.frame(i, kind=kind)
        assert f0.meta.extra["n_cosmic"] == 0 and f0.meta.extra["n_overload_markers"] == 0
        assert len(f0.truth["overload_pixels"]) == 0
        assert f1.meta.extra["n_cosmic"] == 3 and f1.meta.extra["n_overload_markers"] >= 5
        assert (f0.label, f0.n_spots) == (f1.label, f1.n_spots)
        ov = f1.truth["overload_pixels"]
        vals = {on.saturation_adu, 4095, 16383, 65535, 2**20 - 1}
        assert set(np.unique(f1.data.reshape(-1)[ov]).tolist()) <= vals
        assert not f1.mask.reshape(-1)[ov].any()
        assert (f1.data[f1.mask] == 0).all()
        if kind == "no_beam":  # dark frame: the cosmic tracks are there, still a miss
            assert f1.label == "miss"
            assert (f1.data > 20 * max(1.0, f1.meta.extra["read_noise_adu"])).sum() > (
                f0.data > 20 * max(1.0, f0.meta.extra["read_noise_adu"])
            ).sum()
    # the existing presets have none of it
    sf = Simulator("pilatus", seed=0).frame(0)
    assert "n_cosmic" not in sf.meta.extra and "overload_pixels" not in sf.truth


@pytest.mark.parametrize("name", ["rayonix", "pilatus"])
def test_existing_presets_unchanged_by_default_fields(name):
    P = PRESETS[name]
    explicit = P.replace(**_DEFAULTS)
    assert explicit == P and not P.randomised
    a = Simulator(P, seed=3).frame(2)
    b = Simulator(explicit.replace(name=name), seed=3).frame(2)
    assert np.array_equal(a.data, b.data)
    assert (a.label, a.n_spots) == (b.label, b.n_spots)
    assert np.array_equal(a.peaks, b.peaks)


def test_wide_presets_draw_wide_geometry():
    sim = Simulator("wide_ccd", seed=1)
    frames = [sim.frame(i, kind="solvent") for i in range(30)]
    px = [f.meta.pixel_size_mm for f in frames]
    D = [f.meta.distance_mm for f in frames]
    H, W = sim.preset.shape
    off = [np.hypot(f.meta.beam_centre_px[0] - W / 2, f.meta.beam_centre_px[1] - H / 2) > 200 for f in frames]
    assert 0.05 <= min(px) and max(px) <= 0.10 and max(px) - min(px) > 0.02
    assert min(D) >= 80 and max(D) <= 600 and max(D) / min(D) > 2
    assert any(off)
