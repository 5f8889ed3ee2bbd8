"""The peakfinder8 hit-finder: planted spots, resolution limits, tuning, spot-by-spot scoring, screening."""

import csv
import json
import math

import h5py
import numpy as np
import pytest

from diffscreen.baselines import Peakfinder8, Peakfinder8Config, resolution_radius_px, tune_peakfinder8
from diffscreen.cli import main
from diffscreen.errors import ConfigError
from diffscreen.evaluate import match_peaks
from diffscreen.io.frame import Frame, FrameMeta
from toyrun import write_toy_run

SIZE = 384
GEOM = dict(pixel_size_mm=0.1, distance_mm=100.0, wavelength_A=1.0)


def planted_frame(positions, *, photons=3000.0, sigma=0.9, background=20.0, seed=0, geometry=True):
    """Poisson background plus Gaussian spots at ``positions`` (x, y); beam centre in the middle."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    lam = np.full((SIZE, SIZE), background)
    for x, y in positions:
        lam += photons / (2 * np.pi * sigma**2) * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * sigma**2))
    meta = FrameMeta("planted", 0, "test", beam_centre_px=((SIZE - 1) / 2, (SIZE - 1) / 2),
                     **(GEOM if geometry else {}))  # fmt: skip
    return Frame(rng.poisson(lam).astype(np.float32), np.zeros((SIZE, SIZE), bool), meta)


def grid_positions(n, *, lo=40, hi=SIZE - 40, seed=1):
    rng = np.random.default_rng(seed)
    pts = []
    while len(pts) < n:
        p = rng.uniform(lo, hi, 2)
        if all(math.dist(p, q) > 12 for q in pts):
            pts.append(p)
    return np.array(pts)


CFG = Peakfinder8Config(adc_threshold=60, min_snr=6, min_pixel_count=2, max_pixel_count=30, min_peaks=10)


@pytest.mark.parametrize("fast", [False, True])
def test_finds_every_planted_spot_where_it_is(fast):
    pts = grid_positions(25)
    pf = Peakfinder8(Peakfinder8Config(**{**CFG.to_dict(), "fast_mode": fast}))
    peaks = pf.find_peaks(planted_frame(pts))
    m = match_peaks(pf.peak_table(peaks), pts, max_distance=1.0)
    assert peaks["num_peaks"] == 25 and m.n_matched == 25
    assert np.all(m.distances < 0.5)  # centroids within half a pixel
    assert pf.is_hit(peaks)
    # integrated intensity ~ the planted photons (minus the local background)
    assert np.median(peaks["intensity"]) == pytest.approx(3000, rel=0.15)


def test_blank_frame_has_no_peaks_and_masked_spots_are_ignored():
    pf = Peakfinder8(CFG)
    assert pf.find_peaks(planted_frame([]))["num_peaks"] == 0
    pts = grid_positions(12)
    fr = planted_frame(pts)
    fr.mask[:, : SIZE // 2] = True  # hide the left half
    n_right = int((pts[:, 0] >= SIZE // 2 + 3).sum())
    n_left = int((pts[:, 0] < SIZE // 2 - 3).sum())
    peaks = pf.find_peaks(fr)
    assert n_right - 1 <= peaks["num_peaks"] <= 12 - n_left
    assert np.all(peaks["fs"] >= SIZE // 2)


def test_resolution_radius_round_trip():
    r = resolution_radius_px(2.0, **GEOM)
    two_theta = math.atan(r * GEOM["pixel_size_mm"] / GEOM["distance_mm"])
    assert GEOM["wavelength_A"] / (2 * math.sin(two_theta / 2)) == pytest.approx(2.0)
    assert resolution_radius_px(0.4, **GEOM) == math.inf  # finer than λ/2


def test_resolution_limits_keep_only_spots_in_the_shell():
    c = (SIZE - 1) / 2
    # spots at different radii (many spots on one ring would inflate peakfinder8's ring statistics)
    ang = np.linspace(0.3, 2 * np.pi, 8, endpoint=False)
    inner = [(c + r * math.cos(a), c + r * math.sin(a)) for r, a in zip(np.linspace(45, 90, 8), ang)]
    outer = [(c + r * math.cos(a), c + r * math.sin(a)) for r, a in zip(np.linspace(115, 175, 8), ang + 0.4)]
    fr = planted_frame(inner + outer)
    d_100 = GEOM["wavelength_A"] / (2 * math.sin(math.atan(100 * 0.1 / 100) / 2))  # ≈ 10.0 Å at 100 px
    assert resolution_radius_px(d_100, **GEOM) == pytest.approx(100.0)
    only_outer = Peakfinder8(Peakfinder8Config(**{**CFG.to_dict(), "low_res_A": d_100}))
    only_inner = Peakfinder8(Peakfinder8Config(**{**CFG.to_dict(), "high_res_A": d_100}))
    po, pi = only_outer.find_peaks(fr), only_inner.find_peaks(fr)
    assert po["num_peaks"] == 8 and pi["num_peaks"] == 8
    assert np.all(np.hypot(po["fs"] - c, po["ss"] - c) > 100)
    assert np.all(np.hypot(pi["fs"] - c, pi["ss"] - c) < 100)
    # without geometry the Å limits cannot apply; the pixel limits still do
    nogeo = planted_frame(inner + outer, geometry=False)
    assert only_inner.find_peaks(nogeo)["num_peaks"] == 16
    px = Peakfinder8(Peakfinder8Config(**{**CFG.to_dict(), "max_radius_px": 100}))
    assert px.find_peaks(nogeo)["num_peaks"] == 8


def test_tuning_recovers_the_count_threshold():
    counts = {"miss": [0, 1, 2, 0, 3], "maybe": [5, 7], "hit": [14, 20, 30]}
    frames, labels = [], []
    for lab, ns in counts.items():
        for k, n in enumerate(ns):
            frames.append(planted_frame(grid_positions(n, seed=10 + n + k), seed=k))
            labels.append(lab)
    cfg, grid = tune_peakfinder8(frames, labels, base=CFG, adc_sigmas=(2.0, 8.0), min_snrs=(5.0, 6.0))
    # kept = hit or maybe; the only perfect thresholds lie in 4..5
    assert 4 <= cfg.min_peaks <= 5
    assert max(g["balanced_accuracy"] for g in grid) == 1.0 and len(grid) == 4
    with pytest.raises(ConfigError, match="both kept"):
        tune_peakfinder8(frames[:5], labels[:5], base=CFG)


def test_bad_settings_are_refused():
    with pytest.raises(ConfigError, match="min_pixel_count"):
        Peakfinder8Config(min_pixel_count=5, max_pixel_count=2)
    with pytest.raises(ConfigError, match="high_res_A"):
        Peakfinder8Config(low_res_A=3.0, high_res_A=10.0)
    with pytest.raises(ConfigError, match="unknown settings"):
        Peakfinder8Config.from_dict({"min_snrr": 4})


def test_spot_by_spot_matching():
    true = np.array([[10.0, 10.0], [20.0, 20.0], [30.0, 30.0]])
    found = np.array([[10.5, 10.0, 1, 1], [21.0, 21.0, 1, 1], [20.2, 20.0, 1, 1], [90.0, 90.0, 1, 1]])
    m = match_peaks(found, true, max_distance=2.0)
    # one-to-one: (0,0) and the closer (2,1); (1,1) loses; (3,·) and true 2 unmatched
    assert sorted(map(tuple, m.pairs)) == [(0, 0), (2, 1)]
    assert m.precision == pytest.approx(0.5) and m.recall == pytest.approx(2 / 3)
    assert match_peaks(np.zeros((0, 4)), true).recall == 0.0


def test_screen_with_peakfinder8(tmp_path, capsys):
    labels = ["hit", "miss", "maybe", "hit", "miss", "miss"]
    run = write_toy_run(tmp_path / "toy.cxi", labels, seed=3)
    out = tmp_path / "out"
    args = ["screen", str(run), "--out", str(out), "--method", "peakfinder8",
            "--adc-threshold", "100", "--min-snr", "5", "--min-peaks", "10"]  # fmt: skip
    assert main(args) == 0
    rows = list(csv.DictReader(open(out / "scores.csv")))
    assert list(rows[0]) == ["file", "frame", "n_peaks", "label"]
    got = [r["label"] for r in rows]
    assert got == ["hit" if lab == "hit" else "miss" for lab in labels]
    n = [int(float(r["n_peaks"])) for r in rows]
    assert all(30 <= k <= 40 for k, lab in zip(n, labels) if lab == "hit")  # 40 planted, a few overlap
    assert all(4 <= k <= 6 for k, lab in zip(n, labels) if lab == "maybe")
    assert all(k == 0 for k, lab in zip(n, labels) if lab == "miss")
    assert (out / "hits.lst").read_text().splitlines() == [f"{run} //0", f"{run} //3"]
    with h5py.File(out / "hits.cxi") as f:
        npk = f["entry_1/result_1/nPeaks"][:]
        assert list(npk) == [n[0], n[3]]
    assert "peakfinder8" in json.loads((out / "summary.json").read_text())["model"]


def test_tune_cli_writes_settings_screen_reads_them(tmp_path):
    labels = ["hit", "miss", "maybe", "hit", "miss", "miss", "hit", "miss"]
    run = write_toy_run(tmp_path / "val.cxi", labels, seed=5)
    settings = tmp_path / "pf8.json"
    assert main(["tune-peakfinder8", str(run), "--out", str(settings)]) == 0
    rec = json.loads(settings.read_text())
    assert rec["balanced_accuracy"] == 1.0 and 2 <= rec["peakfinder8"]["min_peaks"] <= 5  # maybes have 6
    out = tmp_path / "o"
    assert main(["screen", str(run), "-o", str(out), "--method", "peakfinder8", "--pf8-settings", str(settings)]) == 0
    got = [r["label"] for r in csv.DictReader(open(out / "scores.csv"))]
    assert got == ["hit" if lab != "miss" else "miss" for lab in labels]
