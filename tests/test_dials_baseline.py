"""DIALS's spot finder as a screening method (issue 17 item 2): ``screen --method dials``.

Needs Debian's ``python3-dials``; without it these tests are skipped, unless
``DIFFSCREEN_REQUIRE_DIALS=1`` (CI), which makes a missing DIALS a failure.
The tests of the missing-DIALS message run everywhere.
"""

from __future__ import annotations

import bz2
import csv
import json
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from diffscreen.baselines.dials import (INSTALL_HINT, DialsConfig, DialsSpotFinder, find_dials_python,
                                        is_pixel_array_detector)
from diffscreen.cli import main
from diffscreen.errors import ConfigError
from diffscreen.io.frame import Frame, FrameMeta

DATA = Path(__file__).parent / "data"
PILATUS_FRAME = DATA / "run2_1_00148.cbf.bz2"
SIZE = 256


@pytest.fixture(scope="module")
def finder():
    try:
        f = DialsSpotFinder()
    except ConfigError as exc:
        if os.environ.get("DIFFSCREEN_REQUIRE_DIALS") == "1":
            pytest.fail(f"DIALS not usable but DIFFSCREEN_REQUIRE_DIALS=1: {exc}")
        pytest.skip(f"DIALS not installed ({exc})")
    yield f
    f.close()


def planted_frame(positions, *, photons=3000.0, sigma=0.9, background=5.0, seed=0, detector="PILATUS 6M"):
    """Poisson background plus Gaussian spots at ``positions`` (x, y)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    lam = np.full((SIZE, SIZE), background)
    for x, y in positions:
        lam += photons / (2 * np.pi * sigma**2) * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * sigma**2))
    meta = FrameMeta("planted", 0, detector)
    return Frame(rng.poisson(lam).astype(np.float32), np.zeros((SIZE, SIZE), bool), meta)


def grid_positions(n, *, seed=1):
    rng = np.random.default_rng(seed)
    pts = []
    while len(pts) < n:
        p = rng.uniform(20, SIZE - 20, 2)
        if all(math.dist(p, q) > 12 for q in pts):
            pts.append(p)
    return np.array(pts).reshape(-1, 2)


def read_scores(out):
    with open(out / "scores.csv", newline="") as f:
        return list(csv.DictReader(f))


# --- the rule, the settings, the detector type: no DIALS needed ---------------------------------------


def test_config_defaults_are_ke_thresholds_and_bad_settings_are_refused():
    c = DialsConfig()
    assert (c.hit_spots, c.maybe_spots) == (10, 4)
    with pytest.raises(ConfigError, match="gain"):
        DialsConfig(gain=0)
    with pytest.raises(ConfigError, match="unknown settings"):
        DialsConfig.from_dict({"sigma_strng": 3})
    with pytest.raises(ConfigError, match="maybe_spots"):
        DialsConfig(hit_spots=3, maybe_spots=4)


def test_pixel_array_detectors_are_recognised_by_name():
    for name in ("PILATUS 6M", "PILATUS3 6M", "Eiger2 X 16M", "CS PAD", "CSPAD", "JUNGFRAU 4M"):
        assert is_pixel_array_detector(name), name
    for name in ("MarCCD", "ADSC S/N 423", "Rayonix", "Kcd", None, ""):
        assert not is_pixel_array_detector(name), name


def test_missing_dials_is_one_line_and_exit_2(tmp_path, monkeypatch, capsys):
    # no interpreter at all
    monkeypatch.delenv("DIFFSCREEN_DIALS_PYTHON", raising=False)
    monkeypatch.setattr(shutil, "which", lambda *a, **k: None)
    with pytest.raises(ConfigError, match="apt-get install python3-dials"):
        find_dials_python()
    monkeypatch.undo()
    # an interpreter that cannot import dials (ours): the CLI's one line, exit status 2, no outputs
    monkeypatch.setenv("DIFFSCREEN_DIALS_PYTHON", sys.executable)
    out = tmp_path / "out"
    assert main(["screen", str(PILATUS_FRAME), "--method", "dials", "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("ERROR: ") and INSTALL_HINT in err[0], err
    assert "Traceback" not in err[0] and not out.exists()


# --- DIALS on planted spots ----------------------------------------------------------------------------


def test_blank_frame_is_a_miss_and_every_planted_spot_is_found(finder):
    blank = finder.classify([planted_frame([])])[0]
    assert blank.scores[0] == 0 and blank.label == "miss" and not blank.keep
    pts = grid_positions(25)
    s = finder.find_spots(planted_frame(pts))
    assert s["n_spots"] == 25
    found = np.stack([s["x"], s["y"]], 1)
    d = np.sqrt(((found[:, None] - pts[None]) ** 2).sum(-1)).min(1)  # nearest planted spot, px
    assert np.all(d < 0.5)  # centroids in diffscreen's convention (pixel centres at integers)
    d = finder.classify([planted_frame(pts)])[0]
    assert d.label == "hit" and d.keep and d.peaks.shape == (25, 4) and np.all(d.peaks[:, 3] > 10)


@pytest.mark.parametrize("n, label", [(3, "miss"), (4, "maybe"), (9, "maybe"), (10, "hit")])
def test_ke_thresholds_at_their_boundaries(finder, n, label):
    d = finder.classify([planted_frame(grid_positions(n, seed=n))])[0]
    assert d.scores[0] == n and d.label == label and d.keep == (label != "miss")


def test_a_masked_bright_blob_is_not_a_spot(finder):
    fr = planted_frame([(100.3, 120.6)], photons=50000)
    assert finder.find_spots(fr)["n_spots"] == 1
    fr.mask[117:125, 97:104] = True
    assert finder.find_spots(fr)["n_spots"] == 0
    # a masked half hides its spots; the spots of the other half stay
    pts = grid_positions(20, seed=3)
    fr = planted_frame(pts)
    fr.mask[:, : SIZE // 2] = True
    s = finder.find_spots(fr)
    assert s["n_spots"] == int((pts[:, 0] > SIZE // 2 + 3).sum()) and np.all(s["x"] > SIZE // 2)


def test_gain_and_min_spot_size_follow_the_frame_and_the_settings(finder):
    fr = planted_frame(grid_positions(10))
    assert finder.settings_for(fr)["min_spot_size"] == 3 and finder.settings_for(fr)["gain"] == 1.0
    fr.meta.detector, fr.meta.extra["gain"] = "MarCCD", 2.5
    assert finder.settings_for(fr)["min_spot_size"] == 6 and finder.settings_for(fr)["gain"] == 2.5
    # a huge gain makes every pixel count a fraction of a photon: no spot stands out
    assert finder.find_spots(fr)["n_spots"] == 10
    fr.meta.extra["gain"] = 1e4
    assert finder.find_spots(fr)["n_spots"] == 0


def test_our_settings_are_dials_defaults(finder):
    dd, c = finder.dials_defaults, DialsConfig()
    for k in ("algorithm", "sigma_background", "sigma_strong", "min_local", "global_threshold", "max_spot_size",
              "max_separation", "max_strong_pixel_fraction"):
        assert dd[k] == getattr(c, k), k
    assert dd["kernel_size"] == list(c.kernel_size) and dd["min_spot_size"] == "Auto" and dd["gain"] is None


# --- end to end: screen --method dials ----------------------------------------------------------------


def test_screen_method_dials_on_simulated_frames(finder, tmp_path):
    from diffscreen.io.cxi import CXIWriter
    from diffscreen.simulate import simulate_frame

    run = tmp_path / "sim.cxi"
    frames = [simulate_frame("pilatus", seed=0, index=1, kind=k).to_frame() for k in ("hit", "empty")]
    with CXIWriter(run, mask_mode="per_frame") as w:
        for fr in frames:
            w.append(fr.data, fr.meta, mask=fr.mask)
    out = tmp_path / "out"
    assert main(["screen", str(run), "--method", "dials", "-o", str(out)]) == 0
    rows = read_scores(out)
    assert list(rows[0]) == ["file", "frame", "n_spots", "n_strong_pixels", "label"]
    hit, blank = rows
    assert hit["label"] == "hit" and int(hit["n_spots"]) >= 30
    assert blank["label"] == "miss" and int(blank["n_spots"]) == 0
    assert (out / "hits.lst").read_text().split() == [str(run), "//0"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_hit"] == 1 and summary["n_miss"] == 1 and summary["model"].startswith("dials:DIALS")


def test_screen_method_dials_on_real_frames(finder, tmp_path):
    files = sorted(str(p) for p in DATA.iterdir() if p.name.endswith(".bz2"))
    out = tmp_path / "out"
    assert main(["screen", *files, "--method", "dials", "-o", str(out), "--no-cxi"]) == 0
    rows = {Path(r["file"]).name: r for r in read_scores(out)}
    assert set(rows) == {Path(f).name for f in files}
    assert all(r["label"] in ("hit", "maybe", "miss") and int(r["n_strong_pixels"]) >= int(r["n_spots"])
               for r in rows.values())
    assert int(rows[PILATUS_FRAME.name]["n_spots"]) == 248 and rows[PILATUS_FRAME.name]["label"] == "hit"


def _dials_find_spots(path: Path, work: Path) -> tuple[int, int, np.ndarray]:
    """``dials.import`` + ``dials.find_spots`` (defaults) on a file: spots, strong pixels, centroids (DIALS px)."""
    frame = work / path.name[: -len(".bz2")]
    frame.write_bytes(bz2.decompress(path.read_bytes()))
    subprocess.run(["dials.import", frame.name], cwd=work, check=True, capture_output=True)
    fs = subprocess.run(["dials.find_spots", "imported.expt", "nproc=1"], cwd=work, check=True, capture_output=True,
                        text=True)
    n_spots = int(re.search(r"Saved (\d+) reflections", fs.stdout).group(1))
    n_strong = int(re.search(r"Found (\d+) strong pixels", (work / "dials.find_spots.log").read_text()).group(1))
    code = ("import json; from dials.array_family import flex; r = flex.reflection_table.from_file('strong.refl'); "
            "x, y, _ = r['xyzobs.px.value'].parts(); print(json.dumps([list(x), list(y)]))")
    xy = subprocess.run([find_dials_python(), "-I", "-c", code], cwd=work, check=True, capture_output=True, text=True)
    return n_spots, n_strong, np.array(json.loads(xy.stdout)).T.reshape(-1, 2)


def test_same_spots_as_dials_find_spots_on_a_pilatus_frame(finder, tmp_path):
    """Our readers + DIALS's algorithms against dials.import + dials.find_spots on the file itself.

    Tolerance: none.  The Pilatus frame's gain is 1 in both paths, its
    trusted-range mask (gaps at -1/-2, overloads) is our reader's mask, and
    the same threshold, labelling and filter run: 248 spots from 2385 strong
    pixels either way, centroids equal to 1e-6 px.
    """
    if shutil.which("dials.find_spots") is None or shutil.which("dials.import") is None:
        pytest.skip("dials.import / dials.find_spots not on the PATH")
    n_ref, strong_ref, xy_ref = _dials_find_spots(PILATUS_FRAME, tmp_path)
    from diffscreen.io.sources import read_frame

    s = finder.find_spots(read_frame(str(PILATUS_FRAME)))
    assert n_ref == 248 and s["n_spots"] == n_ref and s["n_strong_pixels"] == strong_ref
    ours = np.stack([s["x"], s["y"]], 1) + 0.5  # back to DIALS's pixel coordinates
    a, b = ours[np.lexsort(ours.T)], xy_ref[np.lexsort(xy_ref.T)]
    np.testing.assert_allclose(a, b, atol=1e-6)


# --- DIALS's own gain estimate (dials.estimate_gain) in the worker ------------------------------------


@pytest.mark.parametrize("gain", [1.0, 2.5, 7.0])
def test_dials_estimate_gain_recovers_the_gain_of_a_poisson_frame(finder, gain):
    """A Poisson background of 4 photons recorded at ``gain`` ADU per photon: DIALS's estimate is the gain (±5 %)."""
    rng = np.random.default_rng(3)
    fr = Frame((rng.poisson(4.0, (SIZE, SIZE)) * gain).astype(np.float32), np.zeros((SIZE, SIZE), bool),
               FrameMeta("poisson", 0, "CCD"))
    assert finder.estimate_gain(fr) == pytest.approx(gain, rel=0.05)


def test_dials_estimate_gain_fails_in_one_line_on_a_constant_frame(finder):
    from diffscreen.baselines.dials import DialsError

    fr = Frame(np.zeros((64, 64), np.float32), np.zeros((64, 64), bool), FrameMeta("flat", 0, None))
    with pytest.raises(DialsError, match="Unable to robustly estimate"):
        finder.estimate_gain(fr)
    assert finder.find_spots(planted_frame(grid_positions(3)))["n_spots"] == 3  # the worker goes on


def test_worker_gain_estimate_is_dials_estimate_gain_on_the_file(finder, tmp_path):
    """Our reader's frame and mask through the worker against dials.import + dials.estimate_gain on the file."""
    if shutil.which("dials.estimate_gain") is None or shutil.which("dials.import") is None:
        pytest.skip("dials.import / dials.estimate_gain not on the PATH")
    from diffscreen.io.sources import read_frame

    work = tmp_path / "dials"
    work.mkdir()
    subprocess.run(["dials.import", str(PILATUS_FRAME)], cwd=work, check=True, capture_output=True, text=True)
    out = subprocess.run(["dials.estimate_gain", "imported.expt"], cwd=work, check=True, capture_output=True,
                         text=True).stdout
    ref = float(re.search(r"Estimated gain: ([0-9.]+)", out).group(1))  # printed to 2 decimals
    assert finder.estimate_gain(read_frame(str(PILATUS_FRAME))) == pytest.approx(ref, abs=0.005)
