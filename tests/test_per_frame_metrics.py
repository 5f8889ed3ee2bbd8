"""Per-frame numbers (issue 15 item 4): spots, d_min, ice and powder rings; their scores.csv columns and hits.cxi peaks."""

import csv
import dataclasses
import math

import h5py
import numpy as np
import pytest

from diffscreen.io.cxi import CXIWriter
from diffscreen.io.frame import Frame, FrameMeta
from diffscreen.preprocess.spots import (DEFAULT_SPOT_CONFIG, ICE_RINGS_D_A, METRIC_COLUMNS, Spots, _radius_of_d,
                                         count_spots_off_rings, find_spots, fit_ring_centre, frame_metrics,
                                         line_response, ring_flags, ring_spots, streak_spots)

# a flat detector 100 mm from the sample, 0.1 mm pixels, 1 Å: ice's 3.90, 3.67, 3.44 Å lines at 263-299 px
GEO = dict(pixel_size_mm=0.1, distance_mm=100.0, wavelength_A=1.0)
SIZE = 512
CENTRE = ((SIZE - 1) / 2, (SIZE - 1) / 2)


def _meta(**kw):
    return FrameMeta("planted", 0, "toy", beam_centre_px=CENTRE, **{**GEO, **kw})


def _background(rng, lam=5.0, rings=()):
    """Poisson background of ``lam`` photons plus smooth rings ``(d_A, photons, sigma_px)``."""
    y, x = np.mgrid[:SIZE, :SIZE]
    r = np.hypot(x - CENTRE[0], y - CENTRE[1])
    mean = np.full((SIZE, SIZE), lam)
    for d, photons, sig in rings:
        r0 = _radius_of_d(d, GEO["pixel_size_mm"], GEO["distance_mm"], GEO["wavelength_A"])
        mean = mean + photons * np.exp(-0.5 * ((r - r0) / sig) ** 2)
    return rng.poisson(mean).astype(np.float32)


def _plant(img, x, y, photons=400.0, sigma=0.8):
    """A Gaussian spot centred at (x, y) (pixel centres at integers)."""
    yy, xx = np.mgrid[:SIZE, :SIZE]
    img += photons / (2 * np.pi * sigma**2) * np.exp(-0.5 * (((xx - x) / sigma) ** 2 + ((yy - y) / sigma) ** 2))


def _frame(img, mask=None, **meta):
    return Frame(img, np.zeros(img.shape, bool) if mask is None else mask, _meta(**meta))


def _ring_and_lattice(rng, n_grains, lattice):
    """A frame with ``n_grains`` grains on one ring of radius 180 px and spots at ``lattice`` (x, y) positions."""
    img = _background(rng)
    for k in range(n_grains):
        a = 2 * math.pi * (k + 0.3 * rng.random()) / n_grains
        _plant(img, CENTRE[0] + 180.0 * math.cos(a), CENTRE[1] + 180.0 * math.sin(a))
    for x, y in lattice:
        _plant(img, x, y)
    return _frame(img)


# spots at radii 64-240 px, none within 6 px of another's radius or of the ring's
LATTICE = [(CENTRE[0] + r * math.cos(a), CENTRE[1] + r * math.sin(a))
           for r, a in [(64, 0.3), (97, 2.0), (123, 4.1), (151, 1.1), (211, 5.3), (240, 3.3)]]


def test_grains_on_one_ring_are_ring_spots_and_a_lattice_is_not():
    rng = np.random.default_rng(7)
    fr = _ring_and_lattice(rng, 12, LATTICE)
    s = find_spots(fr)
    on = ring_spots(s, fr)
    r = np.hypot(s.x - CENTRE[0], s.y - CENTRE[1])
    assert len(s) == 12 + len(LATTICE)
    assert on.tolist() == (np.abs(r - 180.0) < 2).tolist()  # exactly the grains
    assert count_spots_off_rings(fr) == len(LATTICE) == frame_metrics(fr).n_spots_no_rings
    assert frame_metrics(fr).n_spots == 12 + len(LATTICE)
    lattice_only = _ring_and_lattice(np.random.default_rng(8), 0, LATTICE)
    assert not ring_spots(find_spots(lattice_only), lattice_only).any()


def test_a_ring_needs_distinct_spots_more_than_chance_gives():
    rng = np.random.default_rng(9)
    # two spots on the ring's radius are not a ring (fewer than ring_spot_min)...
    two = _ring_and_lattice(rng, 0, LATTICE + [(CENTRE[0] + 180.0, CENTRE[1]), (CENTRE[0] - 180.0, CENTRE[1])])
    assert count_spots_off_rings(two) == len(LATTICE) + 2
    # ... nor are three pieces of one split spot, 6.3 px apart (closer than ring_spot_merge_px count once)
    split = [(CENTRE[0] + 180.0 * math.cos(a), CENTRE[1] + 180.0 * math.sin(a)) for a in (0.0, 0.035, 0.07)]
    fr = _ring_and_lattice(rng, 0, LATTICE + split)
    assert len(find_spots(fr)) == len(LATTICE) + 3 and count_spots_off_rings(fr) == len(LATTICE) + 3
    # spread around the ring, 4 distinct spots are still chance (P(X >= 4) = 0.0018 for the floor mean 0.5); 5 are
    # a ring (P(X >= 5) = 0.00017 < ring_spot_alpha)
    def spread(n):
        angles = np.arange(n) * 2 * np.pi / n
        return [(CENTRE[0] + 180.0 * math.cos(a), CENTRE[1] + 180.0 * math.sin(a)) for a in angles]

    assert count_spots_off_rings(_ring_and_lattice(rng, 0, LATTICE + spread(4))) == len(LATTICE) + 4
    assert count_spots_off_rings(_ring_and_lattice(rng, 0, LATTICE + spread(5))) == len(LATTICE)


def test_planted_spots_are_counted_at_their_centroids():
    rng = np.random.default_rng(1)
    img = _background(rng)
    where = [(100.3, 120.6), (300.0, 80.2), (400.7, 400.4), (60.5, 350.5), (250.2, 430.9)]
    for x, y in where:
        _plant(img, x, y)
    s = find_spots(_frame(img))
    assert len(s) == len(where)
    for x, y in where:
        k = int(np.argmin(np.hypot(s.x - x, s.y - y)))
        assert math.hypot(s.x[k] - x, s.y[k] - y) < 0.3
    assert np.all(s.snr >= 5) and np.all(s.n_pixels >= 3)
    assert s.table().shape == (len(where), 4)


def test_blank_frame_has_no_spot_and_no_d_min():
    m = frame_metrics(_frame(_background(np.random.default_rng(2))))
    assert m.n_spots == 0 and m.d_min_A is None and m.peaks.shape == (0, 4)
    assert m.cells()[:3] == ["0", "0", ""]


def test_a_masked_bright_spot_is_not_counted():
    rng = np.random.default_rng(3)
    img = _background(rng)
    _plant(img, 200.0, 150.0, photons=5000)
    _plant(img, 330.0, 260.0)
    mask = np.zeros(img.shape, bool)
    mask[147:154, 197:204] = True  # the whole of the bright spot
    img[150, 200] = 1e6  # and a hot pixel under the mask
    s = find_spots(_frame(img, mask))
    assert len(s) == 1 and abs(s.x[0] - 330) < 0.3 and abs(s.y[0] - 260) < 0.3


def test_d_min_of_spots_at_known_resolution():
    rng = np.random.default_rng(4)
    img = _background(rng)
    kw = (GEO["pixel_size_mm"], GEO["distance_mm"], GEO["wavelength_A"])
    for d, angles in ((3.5, (0.79, 2.36, 3.93, 5.50)), (6.0, (0.8, 2.6, 4.4))):  # 3.5 Å: 295 px, the diagonals
        r = _radius_of_d(d, *kw)
        for a in angles:
            _plant(img, CENTRE[0] + r * math.cos(a), CENTRE[1] + r * math.sin(a))
    m = frame_metrics(_frame(img))
    assert m.n_spots == 7
    assert m.d_min_A == pytest.approx(3.5, abs=0.02)
    assert m.cells()[2] == f"{m.d_min_A:.2f}"
    no_geometry = frame_metrics(Frame(img, np.zeros(img.shape, bool), FrameMeta("planted")))
    assert no_geometry.n_spots == 7 and no_geometry.d_min_A is None and no_geometry.ice_rings is None
    assert no_geometry.cells() == ["7", "7", "", "", "", "0"]  # 4 spots on one radius are not a ring


def test_d_min_is_the_outermost_spot_off_the_rings():
    """``d_min_A`` is the spacing of the outermost spot off every ring and streak: one spot at 5 Å beyond seven at
    6 and 8 Å sets it (the 95th percentile over the spots, the rule before, lay between 5 and 6 Å), and twelve
    grains of a powder ring at 4.2 Å farther out do not (over every spot they would set it near 4.2 Å)."""
    rng = np.random.default_rng(14)
    img = _background(rng)
    kw = (GEO["pixel_size_mm"], GEO["distance_mm"], GEO["wavelength_A"])
    for d, angles in ((6.0, (0.79, 2.36, 3.93, 5.50)), (8.0, (0.8, 2.6, 4.4)), (5.0, (1.2,))):
        r = _radius_of_d(d, *kw)
        for a in angles:
            _plant(img, CENTRE[0] + r * math.cos(a), CENTRE[1] + r * math.sin(a))
    r_ring = _radius_of_d(4.2, *kw)
    assert r_ring < SIZE / 2 - 5  # the whole ring lies on the frame
    for k in range(12):
        a = 2 * math.pi * (k + 0.3 * rng.random()) / 12
        _plant(img, CENTRE[0] + r_ring * math.cos(a), CENTRE[1] + r_ring * math.sin(a))
    m = frame_metrics(_frame(img))
    assert m.n_spots == 20 and m.n_spots_no_rings == 8
    assert m.d_min_A == pytest.approx(5.0, abs=0.02)


def test_ice_and_powder_flags_on_planted_rings():
    rng = np.random.default_rng(5)
    ice = [(d, 10.0 * w, 1.5) for d, w in zip(ICE_RINGS_D_A, (1.0, 0.6, 0.55, 0.2, 0.25, 0.2, 0.15))]
    for rings, want_ice, want_powder in (((), False, False), (ice, True, False), (((5.0, 3.0, 1.5),), False, True),
                                         ((*ice, (5.0, 3.0, 1.5)), True, True)):
        fr = _frame(_background(rng, rings=rings))
        got = ring_flags(find_spots(fr).shells, fr)
        assert (got["ice_rings"], got["powder_rings"]) == (want_ice, want_powder), (rings, got)


@pytest.mark.parametrize("line", [0, 1, 2])
def test_one_bright_ring_on_one_ice_line_is_not_ice(line):
    """A single powder ring that happens to sit on one Ih line is not ice: the other lines carry nothing, however
    bright that ring (the test asks for excess without the line that contributes most)."""
    rng = np.random.default_rng(6)
    fr = _frame(_background(rng, rings=((ICE_RINGS_D_A[line], 10.0, 2.0),)))
    got = ring_flags(find_spots(fr).shells, fr)
    assert got["ice_sigma"][ICE_RINGS_D_A[line]] > 20, got  # the ring itself is measured, and strong
    assert got["ice_rings"] is False, got


@pytest.mark.parametrize("index, has_ice", [(3, False), (5, True), (8, False)])
def test_ice_flag_on_simulated_frames(index, has_ice):
    """wide_hybrid172 (seed 7): frame 5 has ice rings only (faint: 2.7 photons at the 3.90 Å line), 3 and 8 no ring."""
    from diffscreen.simulate.run import Simulator

    f = Simulator("wide_hybrid172", seed=7).frame(index)
    assert bool(f.meta.extra["ice_rings"]) == has_ice and f.meta.extra["n_powder_rings"] == 0
    m = frame_metrics(f.to_frame())
    assert m.ice_rings is has_ice and m.powder_rings is False


def _write_run(path, n_spots_per_frame, seed=0, ring_grains=None):
    """A CXI run of planted spots at random positions, frame ``i`` also with ``ring_grains[i]`` grains on a ring."""
    rng = np.random.default_rng(seed)
    mask = np.zeros((SIZE, SIZE), bool)
    with CXIWriter(path, mask_mode="static") as w:
        for i, n in enumerate(n_spots_per_frame):
            img = _background(rng, lam=10.0)
            for k in range((ring_grains or {}).get(i, 0)):
                a = 2 * math.pi * k / ring_grains[i]
                _plant(img, CENTRE[0] + 180.0 * math.cos(a), CENTRE[1] + 180.0 * math.sin(a), photons=800)
            for _ in range(n):
                x, y = rng.uniform(20, SIZE - 20, 2)
                _plant(img, x, y, photons=800)
            w.append(img.astype(np.int32), FrameMeta(str(path), i, "toy", beam_centre_px=CENTRE, **GEO), mask=mask)
    return path


def test_screen_writes_the_columns_and_the_cheetah_peaks(tmp_path):
    from diffscreen.models.inference import Classifier
    from diffscreen.screen import SCORE_COLUMNS, screen
    from diffscreen.screen.method import CNNMethod

    run = str(_write_run(tmp_path / "run.cxi", [40, 0, 25, 6, 0, 60]))
    clf = Classifier("fast")
    out = tmp_path / "out"
    screen([run], out, method=CNNMethod(clf, metrics="all"), batch_size=3, comm=None)
    with open(out / "scores.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert tuple(rows[0]) == SCORE_COLUMNS
    assert list(rows[0])[-1 - len(METRIC_COLUMNS):-1] == list(METRIC_COLUMNS)
    n = [int(r["n_spots"]) for r in rows]
    assert n[1] == n[4] == 0 and abs(n[0] - 40) <= 3 and abs(n[2] - 25) <= 2 and n[3] == 6 and abs(n[5] - 60) <= 5
    for r in rows:
        assert r["ice_rings"] == "0" and r["powder_rings"] == "0" and r["jet_streak"] == "0"
        assert (r["d_min_A"] == "") == (r["n_spots"] == "0")
        if r["d_min_A"]:  # the frame's corners reach 1/(2 sin(atan(36.1 / 100) / 2)) = 2.9 Å
            assert 2.9 <= float(r["d_min_A"]) < 10
    kept = [r for r in rows if r["label"] in ("hit", "maybe")]
    assert kept, "the bundled model keeps the frames with spots"
    with h5py.File(out / "hits.cxi", "r") as f:
        res = f["entry_1/result_1"]
        assert res["nPeaks"][:].tolist() == [int(r["n_spots"]) for r in kept]
        for name in ("peakXPosRaw", "peakYPosRaw", "peakTotalIntensity"):
            assert res[name].shape[0] == len(kept)
        k = int(np.argmax(res["nPeaks"][:]))
        xs = res["peakXPosRaw"][k, : res["nPeaks"][k]]
        assert np.all((xs > 0) & (xs < SIZE))

    # the default: the numbers on kept frames only, empty cells on the others
    out2 = tmp_path / "out2"
    screen([run], out2, model=clf, batch_size=3, comm=None)
    with open(out2 / "scores.csv", newline="") as fh:
        rows2 = list(csv.DictReader(fh))
    for r, r2 in zip(rows, rows2):
        assert r2["label"] == r["label"]
        assert r2["n_spots"] == (r["n_spots"] if r["label"] in ("hit", "maybe") else "")


def test_running_median_is_nanmedian_of_each_window():
    """The sorted-window running median equals np.nanmedian window by window (odd and even finite counts, NaN
    runs, windows with too few finite values), to the last bit."""
    from diffscreen.preprocess.spots import _running_median

    rng = np.random.default_rng(3)
    a = rng.normal(5.0, 2.0, 400)
    a[rng.random(400) < 0.3] = np.nan
    a[100:160] = np.nan  # a run of empty rings: some windows hold too few values
    for window in (41, 165, 5):
        half, got = window // 2, _running_median(a, window)
        pad = np.concatenate([np.full(half, np.nan), a, np.full(half, np.nan)])
        want = np.full(a.shape, np.nan)
        for i in range(len(a)):
            w = pad[i : i + window]
            if np.isfinite(w).sum() >= max(3, window // 4):
                want[i] = np.nanmedian(w)
        np.testing.assert_array_equal(got, want)
    assert np.isnan(_running_median(a, 41)[120:140]).all()  # inside the empty run: too few values
    assert np.isfinite(_running_median(a, 41)[:90]).all()


def test_gain_is_the_photon_transfer_slope_where_the_shells_agree():
    """Shells of a read-noise-limited background (0.02-0.3 photon per pixel, 10 ADU per photon, 3 ADU read noise):
    the median ratio var / μ is the read noise's, several times the gain; the slope is the gain.  Where every shell
    holds about no photons the slopes disagree and the ratio stands; with gain_fit_spread None it always does."""
    from diffscreen.preprocess.significance import photon_transfer_gain
    from diffscreen.preprocess.spots import photon_gain

    rng = np.random.default_rng(2)
    g, r2, n = 10.0, 9.0, 600
    cnt = np.full(n, 4000, np.int64)
    mu = g * np.linspace(0.02, 0.3, n)
    var = (g * mu + r2) * (1 + rng.normal(0, 0.03, n))
    fit = dataclasses.replace(DEFAULT_SPOT_CONFIG, gain_fit_spread=1.0)
    off = dataclasses.replace(DEFAULT_SPOT_CONFIG, gain_fit_spread=None)
    ratio = photon_transfer_gain(mu, var, cnt, 8)
    assert ratio > 1.4 * g
    assert abs(photon_gain(mu, var, cnt, fit) - g) < 0.1 * g
    assert photon_gain(mu, var, cnt, off) == ratio
    empty_mu = np.abs(rng.normal(0.05, 0.02, n))  # no photons: the means scatter about zero
    empty_var = r2 * (1 + rng.normal(0, 0.03, n))
    assert photon_gain(empty_mu, empty_var, cnt, fit) == photon_transfer_gain(empty_mu, empty_var, cnt, 8)
    bright_mu = g * np.linspace(5.0, 50.0, n)  # photons outweigh the read noise: the two agree
    bright_var = g * bright_mu + r2
    bright_ratio = photon_transfer_gain(bright_mu, bright_var, cnt, 8)
    assert abs(photon_gain(bright_mu, bright_var, cnt, fit) - bright_ratio) < 0.02 * g


def test_line_medians_are_the_median_ratio_of_every_step_th_pixel():
    """The one-pass line medians equal np.median of x / μ over every step-th pixel of each column and row, leaving
    out masked (NaN) pixels and rings without a positive mean, NaN with fewer than 8 values, to the last bit."""
    from diffscreen.preprocess.spots import _line_medians

    rng = np.random.default_rng(5)
    h, w = 203, 157
    x = rng.poisson(20.0, (h, w)).astype(np.float32)
    x[rng.random((h, w)) < 0.2] = np.nan
    x[:, 40] = np.nan  # a masked column: no values
    bins = (np.hypot(*np.mgrid[:h, :w] - np.array([[[100.0]], [[80.0]]])) // 1).astype(np.int32)
    mu = rng.uniform(5.0, 30.0, int(bins.max()) + 1)
    mu[::7] = 0.0  # rings without a background: left out
    for step in (16, 4, 1):
        got_col, got_row = _line_medians(x, bins, mu, step)
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(mu[bins] > 0, x / mu[bins], np.nan)

        def medians(lines):
            return np.array([np.median(v[~np.isnan(v)]) if (~np.isnan(v)).sum() >= 8 else np.nan for v in lines])

        np.testing.assert_array_equal(got_col, medians(ratio[::step].T))
        np.testing.assert_array_equal(got_row, medians(ratio[:, ::step]))
    assert np.isnan(_line_medians(x, bins, mu, 16)[0][40]) and np.isnan(_line_medians(x, bins, mu, 64)[1]).all()


@pytest.mark.parametrize("metrics", ["kept", "none"])
def test_the_spot_gate_drops_kept_frames_with_too_few_spots(tmp_path, monkeypatch, metrics):
    """A network that keeps every frame: the gate turns those with fewer than 4 spots off every ring into misses
    (and off the hit list), however many grains a ring holds, says why in n_spots_no_rings, and min_spots=0 gives
    the network alone."""
    from diffscreen.models.decision import KEEP_MIN_SPOTS
    from diffscreen.models.inference import Classifier
    from diffscreen.screen import method as method_mod
    from diffscreen.screen import screen
    from diffscreen.screen.method import CNNMethod

    def always_hit(clf, src, indices, **kw):
        return np.tile(np.float32([0.7, 0.2, 0.1]), (len(indices), 1)), {}

    monkeypatch.setattr(method_mod, "predict_source", always_hit)
    run = str(_write_run(tmp_path / "run.cxi", [40, 0, 2, 6, KEEP_MIN_SPOTS - 1, 60, 2, 6], ring_grains={6: 16, 7: 16}))
    clf = Classifier("fast")
    gated, plain = CNNMethod(clf, metrics=metrics), CNNMethod(clf, metrics=metrics, min_spots=0)
    assert gated.identity != plain.identity  # a resumed run never mixes the two
    for m, out in ((gated, tmp_path / "gated"), (plain, tmp_path / "plain")):
        screen([run], out, method=m, batch_size=3, comm=None)
    with open(tmp_path / "gated" / "scores.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["label"] for r in rows] == ["hit", "miss", "miss", "hit", "miss", "hit", "miss", "hit"]
    assert [float(r["p_hit"]) for r in rows] == pytest.approx([0.7] * 8)  # the network's probabilities stand
    if metrics == "kept":
        assert [r["n_spots_no_rings"] for r in rows][1:8] == ["0", "2", "6", "3", rows[5]["n_spots"], "2", "6"]
        assert [r["n_spots"] for r in rows][6:] == ["18", "22"] and int(rows[0]["n_spots"]) >= 37
    else:
        assert "n_spots" not in rows[0]
    assert len((tmp_path / "gated" / "hits.lst").read_text().splitlines()) == 4
    with open(tmp_path / "plain" / "scores.csv", newline="") as fh:
        assert [r["label"] for r in csv.DictReader(fh)] == ["hit"] * 8
    with pytest.raises(Exception, match="min_spots"):
        CNNMethod(clf, min_spots=-1)


def _spots_at(x, y) -> Spots:
    x, y = np.asarray(x, np.float32), np.asarray(y, np.float32)
    z = np.ones(x.size, np.float32)
    return Spots(x=x, y=y, intensity=z, snr=z, n_pixels=z.astype(np.int32), gain=1.0, shells=None)


def _rings_about(rng, centre, radii_grains, extra):
    """Grains on rings ``(radius, n)`` about ``centre``, in random directions, then ``extra`` (x, y) spots."""
    xs, ys = [], []
    for radius, n in radii_grains:
        a = rng.uniform(0, 2 * np.pi, n)
        xs += list(centre[0] + radius * np.cos(a))
        ys += list(centre[1] + radius * np.sin(a))
    xs += [p[0] for p in extra]
    ys += [p[1] for p in extra]
    return _spots_at(xs, ys)


def test_without_a_recorded_beam_centre_the_rings_give_it():
    # three rings about (300, 220), 44 px from the frame centre the ring test would otherwise stand in with
    true, shape = (300.0, 220.0), (SIZE, SIZE)
    extra = [(60.0, 60.0), (450.0, 90.0), (80.0, 400.0), (420.0, 460.0), (200.0, 480.0), (30.0, 250.0)]
    spots = _rings_about(np.random.default_rng(11), true, [(80.0, 8), (130.0, 10), (175.0, 12)], extra)
    cx, cy = fit_ring_centre(spots, shape)
    assert math.hypot(cx - true[0], cy - true[1]) < 1.0
    bare = Frame(np.zeros(shape, np.float32), np.zeros(shape, bool), FrameMeta("planted", 0, "toy"))
    on = ring_spots(spots, bare)
    assert on.tolist() == [True] * 30 + [False] * len(extra)  # exactly the grains
    # the frame centre as the stand-in (no fit) leaves most grains as spots, and a recorded centre is used as is
    assert ring_spots(spots, bare, dataclasses.replace(DEFAULT_SPOT_CONFIG, ring_centre_alpha=None)).sum() < 15
    recorded = Frame(bare.data, bare.mask, FrameMeta("planted", 0, "toy", beam_centre_px=CENTRE))
    assert ring_spots(spots, recorded).sum() < 15


def test_scattered_spots_give_no_ring_centre():
    # spots of a lattice spread over the frame: the search over 1,600 centres must not make a ring of chance
    for seed in range(5):
        rng = np.random.default_rng(100 + seed)
        spots = _spots_at(rng.uniform(0, SIZE, 60), rng.uniform(0, SIZE, 60))
        assert fit_ring_centre(spots, (SIZE, SIZE)) is None
    # one band about the best of 1,600 centres is often chance: the guard of two concentric rings is what holds
    loose = dataclasses.replace(DEFAULT_SPOT_CONFIG, ring_centre_alpha=1e-3, ring_centre_min_rings=1)
    found = [fit_ring_centre(_spots_at(*np.random.default_rng(100 + seed).uniform(0, SIZE, (2, 60))), (SIZE, SIZE),
                             loose) for seed in range(5)]
    assert sum(c is not None for c in found) >= 3


def test_spots_along_a_line_through_the_beam_centre_are_a_jet_streak():
    # a speckled jet streak: 9 spots along one line through the centre (both sides), plus the lattice
    rng = np.random.default_rng(12)
    angle = math.radians(4.0)
    streak = [(CENTRE[0] + r * math.cos(angle), CENTRE[1] + r * math.sin(angle)) for r in (30, 55, 80, 110, 150, 200)]
    streak += [(CENTRE[0] - r * math.cos(angle), CENTRE[1] - r * math.sin(angle)) for r in (40, 90, 170)]
    fr = _ring_and_lattice(rng, 0, LATTICE + streak)
    s = find_spots(fr)
    assert len(s) == len(LATTICE) + len(streak)
    on = streak_spots(s, fr)
    d = np.abs((s.x - CENTRE[0]) * math.sin(angle) - (s.y - CENTRE[1]) * math.cos(angle))
    assert on.tolist() == (d < 1).tolist()  # exactly the streak's spots
    m = frame_metrics(fr)
    assert m.jet_streak is True and m.n_spots_no_rings == len(LATTICE) == count_spots_off_rings(fr)
    assert m.cells()[1] == str(len(LATTICE)) and m.cells()[-1] == "1"
    # four spots on the line are still chance (the floor mean 0.5 needs 5); without the test nothing is taken off
    few = _ring_and_lattice(rng, 0, LATTICE + streak[:4])
    assert count_spots_off_rings(few) == len(LATTICE) + 4 and frame_metrics(few).jet_streak is False
    assert count_spots_off_rings(fr, dataclasses.replace(DEFAULT_SPOT_CONFIG, streak_px=None)) == len(s)


@pytest.mark.parametrize("seed", range(6))
def test_streak_test_by_azimuth_buckets_is_the_pairwise_test(seed):
    """The streak test looks only at the spots whose azimuth can lie on a line (radius buckets sorted by azimuth,
    O(P log P)); its mask must be the one testing every pair gives, spot for spot, on scattered spots, on lines
    through the centre (some across the azimuth 0/π seam, some at the bucket edges of radius 2^k · 2 tol) and on
    spots near the centre."""
    from reference.streak_mask import streak_mask_pairwise

    from diffscreen.preprocess.spots import _streak_spot_mask

    rng = np.random.default_rng(seed)
    cx, cy, tol = 500.0, 480.0, 3.0
    n = [50, 300, 3000, 20, 600, 400][seed]
    r = np.concatenate([rng.uniform(1.0, 12.0, 5), 1000.0 * np.sqrt(rng.uniform(0.0001, 1.0, n))])  # a pattern's spread
    n += 5
    a = rng.uniform(-np.pi, np.pi, n)
    for k in range(seed + 1):  # lines: k of them, one along the seam (azimuth ~0 / pi)
        ang = 0.0 if k == 0 else rng.uniform(-np.pi, np.pi)
        m = int(rng.integers(8, 30))
        rr = np.concatenate([rng.uniform(7, 900, m - 2), [12.0 * 2**k, 6.0 * 2 ** (k + 2)]])
        sign = rng.choice([-1.0, 1.0], m)
        off = rng.uniform(-tol, tol, m)
        r = np.concatenate([r, np.hypot(rr, off)])
        a = np.concatenate([a, ang + np.arctan2(off, rr) + np.where(sign < 0, np.pi, 0.0)])
    x, y = cx + r * np.cos(a), cy + r * np.sin(a)
    args = (x, y, cx, cy, tol, DEFAULT_SPOT_CONFIG.ring_spot_alpha, DEFAULT_SPOT_CONFIG.ring_spot_min,
            DEFAULT_SPOT_CONFIG.ring_spot_merge_px)
    want = streak_mask_pairwise(*args)
    got = _streak_spot_mask(*args)
    assert got.tolist() == want.tolist()
    if seed:
        assert want.any()  # lines were found: the comparison is not between two empty masks


def _double_pixel_frame(rng, lam=30.0):
    """A JUNGFRAU-like module: double-size pixel columns 255-256 and rows 127-128 (twice the photons; four at their
    crossing), a Poisson background of ``lam`` photons, and the six lattice spots plus one on a double column."""
    f = np.ones((SIZE, SIZE))
    f[:, 255:257] *= 2.0
    f[127:129, :] *= 2.0
    img = rng.poisson(lam * f).astype(np.float32)
    for x, y in LATTICE + [(256.0, 400.0)]:
        _plant(img, x, y, photons=1500.0)
    return _frame(img)


def test_double_pixel_lines_get_their_own_background_and_leave_no_false_spots():
    fr = _double_pixel_frame(np.random.default_rng(21))
    f_col, f_row = line_response(fr)
    # exactly the double lines are corrected, by about their factor 2 (1 elsewhere)
    assert np.flatnonzero(f_col != 1).tolist() == [255, 256] and np.flatnonzero(f_row != 1).tolist() == [127, 128]
    assert np.allclose(f_col[255:257], 2.0, atol=0.1) and np.allclose(f_row[127:129], 2.0, atol=0.1)
    s = find_spots(fr)
    # the seven planted spots, the one on the double column among them, and nothing else
    assert len(s) == len(LATTICE) + 1
    assert np.min(np.hypot(s.x - 256.0, s.y - 400.0)) < 0.5
    # without the line factors the double lines' noise breaks into false spots
    plain = find_spots(fr, dataclasses.replace(DEFAULT_SPOT_CONFIG, line_sigma=None))
    assert len(plain) > len(s) + 5
    off_lines = (np.abs(plain.x - 255.5) > 2) & (np.abs(plain.y - 127.5) > 2)
    assert off_lines.sum() == len(LATTICE)


def test_a_smooth_background_a_dim_line_and_a_frame_of_spots_get_no_line_factors():
    rng = np.random.default_rng(22)
    yy, xx = np.mgrid[:SIZE, :SIZE]
    lam = 20.0 + 20.0 * xx / SIZE + 10.0 * yy / SIZE  # a gradient, not a line
    lam[:, 300] *= 0.4  # a dim column (an edge, a shadow): it makes no false spots and is left alone
    img = rng.poisson(lam).astype(np.float32)
    for k in range(60):  # a dense hit: 60 bright spots, several on some columns and rows
        _plant(img, 40 + 7.0 * k, 60 + 6.5 * (k % 9), photons=3000.0)
    f_col, f_row = line_response(_frame(img))
    assert np.all(f_col == 1) and np.all(f_row == 1)
    assert len(find_spots(_frame(img))) == 60
