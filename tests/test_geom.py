"""CrystFEL geometry (issue 15 item 2): --geom on screen and explain, stacked-panel presets.

The geometry used here is JUNGFRAU-like: two panels of 32 (ss) × 64 (fs)
pixels stacked into a (64, 64) data block, the second one rotated by 180°
below the first, 8 rows apart.  By hand (``man crystfel_geometry``: pixel
(fs, ss) has its corner at corner + fs·fs_vector + ss·ss_vector, its centre
half a pixel on):

* p0: corner (-32, 36), fs = +x, ss = -y: centres x = -31.5 .. 31.5,
  y = 35.5 .. 4.5, i.e. lab cells x -32 .. 31, y 35 .. 4;
* p1: corner (32, -36), fs = -x, ss = +y: centres x = 31.5 .. -31.5,
  y = -35.5 .. -4.5, i.e. cells x 31 .. -32, y -36 .. -5.

So the assembled frame is 72 × 64 (y 35 .. -36 top to bottom, x -32 .. 31),
rows 32–39 (y 3 .. -4) are the gap, and the beam (x = y = 0) is at column
31.5, row 35.5.
"""

from __future__ import annotations

import csv
import shutil
import subprocess

import h5py
import numpy as np
import pytest

from diffscreen.cli import main
from diffscreen.errors import ConfigError, FrameReadError
from diffscreen.io.base import FrameSource
from diffscreen.io.cxi import CXIWriter
from diffscreen.io.frame import Frame, FrameMeta
from diffscreen.io.geom import (CXI_DATA, CXI_MASK, DetectorGeometry, GeomSource, iter_frames_with_geometry, load_geometry,
                                open_with_geometry)

GEOM = """\
; two JUNGFRAU-like panels, the second rotated by 180 degrees
photon_energy = 12 keV
adu_per_eV = 0.001
res = 13333.3333
clen = 0.120
coffset = 0.002
data = {data}
dim0 = %
dim1 = ss
dim2 = fs
{mask}
p0/min_fs = 0
p0/max_fs = 63
p0/min_ss = 0
p0/max_ss = 31
p0/fs = +1.0x +0.0y
p0/ss = +0.0x -1.0y
p0/corner_x = -32
p0/corner_y = 36
p0/no_index = 0

p1/min_fs = 0
p1/max_fs = 63
p1/min_ss = 32
p1/max_ss = 63
p1/fs = -1.0x
p1/ss = +1.0y
p1/corner_x = 32
p1/corner_y = -36
p1/no_index = {no_index}

; a data-block region: p1 fs 40-44, ss 45-49 (25 pixels)
bad_b/min_fs = 40
bad_b/max_fs = 44
bad_b/min_ss = 45
bad_b/max_ss = 49
bad_b/panel = p1

; a lab region: x 10..20, y 20..30 (pixel corners): p0 fs 42-52, ss 6-16 (121 pixels)
bad_lab/min_x = 10
bad_lab/max_x = 20
bad_lab/min_y = 20
bad_lab/max_y = 30
"""
MASKED_PIXEL = (5, 5)  # (ss, fs) with bit 0x2 in the mask file
CONTROL = (15, 20)  # (ss, fs) of the spot on a good pixel (p0)
ON_BAD_REGION = (47, 42)  # in bad_b (p1)
ON_LAB_REGION = (11, 47)  # in bad_lab (p0)


def _geom(tmp_path, *, data=CXI_DATA, no_index=0, mask_file=True, name="detector.geom"):
    mask = ""
    if mask_file:
        m = np.zeros((64, 64), np.uint16)
        m[MASKED_PIXEL] = 0x2
        m[40, 3] = 0x4  # a bit the geometry does not call bad
        with h5py.File(tmp_path / "mask.h5", "w") as f:
            f["/data/mask"] = m
        mask = "mask_file = mask.h5\nmask = /data/mask\nmask_good = 0x0\nmask_bad = 0x2\n"
    path = tmp_path / name
    path.write_text(GEOM.format(data=data, mask=mask, no_index=no_index))
    return path


def _raw_frame(seed: int, spots=()) -> np.ndarray:
    """A (64, 64) data block: Poisson background of 20 ADU and 3 x 3 spots of 2000 ADU peak at ``spots`` (ss, fs)."""
    rng = np.random.default_rng(seed)
    raw = rng.poisson(20.0, (64, 64)).astype(np.float32)
    for ss, fs in spots:
        raw[ss - 1 : ss + 2, fs - 1 : fs + 2] += 600.0
        raw[ss, fs] += 1400.0
    return raw


def test_cfelpyutils_reads_the_file_as_crystfel_would(tmp_path):
    g = load_geometry(_geom(tmp_path))
    p0, p1 = g.detector["panels"]["p0"], g.detector["panels"]["p1"]
    assert g.panels == ["p0", "p1"]
    assert (p1["orig_min_ss"], p1["orig_max_ss"], p1["orig_max_fs"]) == (32, 63, 63)
    assert (p1["fsx"], p1["fsy"], p1["ssx"], p1["ssy"]) == (-1.0, 0.0, 0.0, 1.0)
    # a direction naming one axis: CrystFEL sets the others to 0, cfelpyutils alone would keep fs's default x = 1
    one_axis = GEOM.format(data=CXI_DATA, mask="", no_index=0).replace("p0/fs = +1.0x +0.0y", "p0/fs = -1.0y").replace(
        "p0/ss = +0.0x -1.0y", "p0/ss = +1.0x")
    q0 = DetectorGeometry(one_axis, path="one_axis.geom").detector["panels"]["p0"]
    assert (q0["fsx"], q0["fsy"], q0["ssx"], q0["ssy"]) == (0.0, -1.0, 1.0, 0.0)
    assert p0["no_index"] is False  # cfelpyutils reads "no_index = 0" as True; the line is dropped
    assert g.beam["photon_energy"] == 12000.0  # "12 keV"
    assert g.detector["bad"]["bad_b"]["is_fsss"] and not g.detector["bad"]["bad_lab"]["is_fsss"]
    assert g.raw_shape == (64, 64) and g.shape == (72, 64)


def test_assembly_places_pixels_where_the_geometry_says(tmp_path):
    g = load_geometry(_geom(tmp_path, mask_file=False))
    raw = np.arange(64 * 64, dtype=np.float32).reshape(64, 64)
    data, bad = g.assemble(raw)
    assert data.shape == (72, 64)
    assert data[0, 0] == raw[0, 0]  # p0 (ss 0, fs 0): cell x -32, y 35
    assert data[31, 63] == raw[31, 63]  # p0 (ss 31, fs 63): x 31, y 4
    assert data[71, 63] == raw[32, 0]  # p1 (ss 32, fs 0): centre (31.5, -35.5), cell x 31, y -36
    assert data[40, 0] == raw[63, 63]  # p1 (ss 63, fs 63): centre (-31.5, -4.5), cell x -32, y -5
    assert data[60, 10] == raw[43, 53]  # p1 cell x -22, y -25: centre (-21.5, -24.5) = (32 - 53.5, -36 + 11.5)
    gap = np.zeros((72, 64), bool)
    gap[32:40] = True
    bad_regions = np.zeros((72, 64), bool)
    bad_regions[6:17, 42:53] = True  # bad_lab: p0 ss 6-16 -> rows 6-16, fs 42-52 -> columns 42-52
    bad_regions[54:59, 19:24] = True  # bad_b: p1 ss 45-49 -> y -23..-19, rows 58-54; fs 40-44 -> x -9..-13, cols 23-19
    np.testing.assert_array_equal(bad, gap | bad_regions)
    assert int(bad.sum()) == 8 * 64 + 121 + 25
    # gather is the inverse
    np.testing.assert_array_equal(g.gather(data), raw)


def test_geometry_gives_beam_centre_pixel_size_distance_and_wavelength(tmp_path):
    g = load_geometry(_geom(tmp_path))
    assert g.beam_centre_px == (31.5, 35.5)
    assert g.pixel_size_mm == pytest.approx(0.075, rel=1e-6)
    assert g.distance_mm == pytest.approx(122.0)  # clen 0.120 m + coffset 0.002 m
    assert g.wavelength_A == pytest.approx(12398.4198 / 12000.0)  # 1.0332 Å
    meta = g.meta(FrameMeta(source="x.cxi", distance_mm=50.0, wavelength_A=2.0), 3)
    assert (meta.beam_centre_px, meta.distance_mm, meta.index) == ((31.5, 35.5), pytest.approx(122.0), 3)


def test_masks_bad_regions_and_no_index(tmp_path):
    g = load_geometry(_geom(tmp_path))
    bad = g.static_raw_bad
    assert bad[MASKED_PIXEL] and not bad[40, 3]  # mask_bad = 0x2 only
    assert bad[ON_BAD_REGION] and bad[ON_LAB_REGION] and not bad[CONTROL]
    assert int(bad.sum()) == 25 + 121 + 1
    off = load_geometry(_geom(tmp_path, no_index=1, name="off.geom"))
    assert off.static_raw_bad[32:].all() and int(off.static_raw_bad.sum()) == 32 * 64 + 121 + 1
    # a lab region with one bound only is unbounded elsewhere, as in CrystFEL: corners x >= 25
    half = DetectorGeometry(GEOM.format(data=CXI_DATA, mask="", no_index=0) + "bad_right/min_x = 25\n", path="h.geom")
    right = half._bad_region("bad_right", half.detector["bad"]["bad_right"])
    assert right[:32, 57:].all() and right[32:, :8].all() and int(right.sum()) == 7 * 32 + 8 * 32


def test_a_spot_on_a_bad_pixel_or_in_a_gap_is_not_counted(tmp_path):
    """peakfinder8 finds the spot on a good pixel only: the bad-region and gap spots are masked."""
    from diffscreen.baselines import Peakfinder8, Peakfinder8Config

    g = load_geometry(_geom(tmp_path))
    raw = _raw_frame(0, [CONTROL, ON_BAD_REGION, ON_LAB_REGION])
    data, bad = g.assemble(raw)
    data[34:37, 10:13] += 2000.0  # something bright in the gap (rows 32-39)
    assert bad[34:37, 10:13].all()
    pf8 = Peakfinder8(Peakfinder8Config(adc_threshold=200, min_snr=5, min_pixel_count=1, max_pixel_count=20,
                                        local_bg_radius=3, min_peaks=1))
    meta = g.meta(FrameMeta(source="t"), 0)
    found = pf8.find_peaks(Frame(data, bad, meta))
    assert found["num_peaks"] == 1
    col, row = g.raw_to_assembled(CONTROL[1], CONTROL[0])
    assert (round(found["fs"][0]), round(found["ss"][0])) == (int(col), int(row))
    unmasked = pf8.find_peaks(Frame(data, np.zeros_like(bad), meta))  # the same frame without the masks
    assert unmasked["num_peaks"] == 4
    # the network's input: the crop is the same whatever the masked pixels hold
    from diffscreen.preprocess import FastPreprocessor, Preprocessor

    quiet = np.where(bad, 0.0, data).astype(np.float32)
    for pre in (Preprocessor(), FastPreprocessor()):
        np.testing.assert_array_equal(pre.crop(Frame(data, bad, meta)), pre.crop(Frame(quiet, bad, meta)))
    assert not np.array_equal(Preprocessor().crop(Frame(data, bad, meta)),
                              Preprocessor().crop(Frame(data, np.zeros_like(bad), meta)))


def test_assembled_to_raw_inverts_the_placement(tmp_path):
    g = load_geometry(_geom(tmp_path, mask_file=False))
    fs, ss = g.assembled_to_raw([0.0, 63.0, 0.0, 10.25, 5.0], [0.0, 71.0, 40.0, 60.0, 35.0])
    np.testing.assert_allclose(fs[:4], [0.0, 0.0, 63.0, 53.0 - 0.25])
    np.testing.assert_allclose(ss[:4], [0.0, 32.0, 63.0, 43.0])
    assert np.isnan(fs[4]) and np.isnan(ss[4])  # row 35 is in the gap


def test_unusable_geometries_are_one_line_config_errors(tmp_path):
    junk = tmp_path / "junk.geom"
    junk.write_text("this is not a geometry\n")
    with pytest.raises(ConfigError, match="junk.geom: not a usable CrystFEL geometry file"):
        load_geometry(junk)
    with pytest.raises(ConfigError, match="cannot read the geometry file"):
        load_geometry(tmp_path / "missing.geom")
    mixed = GEOM.format(data=CXI_DATA, mask="", no_index=0).replace("p1/corner_y = -36", "p1/corner_y = -36\np1/res = 5000")
    with pytest.raises(ConfigError, match="different pixel sizes"):
        DetectorGeometry(mixed, path="mixed.geom")


def _write_stack(path, frames):
    with CXIWriter(path, compression=None) as w:
        for k, raw in enumerate(frames):
            w.append(raw, FrameMeta(source="sim", index=k))


def test_geom_source_and_a_frame_of_the_wrong_shape(tmp_path):
    geom = _geom(tmp_path)
    _write_stack(tmp_path / "run.cxi", [_raw_frame(1, [CONTROL]), _raw_frame(2)])
    with h5py.File(tmp_path / "small.h5", "w") as f:
        f["/data/data"] = np.ones((2, 60, 64), np.float32)
    with GeomSource(str(tmp_path / "run.cxi"), geom) as src:
        assert isinstance(src, FrameSource) and not src.reads_window
        assert (len(src), src.shape, src.frame_shape(1)) == (2, (72, 64), (72, 64))
        fr = src.read(0)
        assert fr.data.shape == (72, 64) and fr.meta.beam_centre_px == (31.5, 35.5)
        assert fr.mask[32:40].all() and fr.mask[5, 5]  # gap and mask-file pixel
        raw = src.read_raw(0)
        assert raw.data.shape == (64, 64) and raw.mask[MASKED_PIXEL] and raw.meta.beam_centre_px is None
    with GeomSource(f"{tmp_path / 'small.h5'}:/data/data", geom) as src:
        with pytest.raises(FrameReadError, match=r"small.h5:/data/data, frame 1: frame shape 60 x 64 does not match"):
            src.read(1)
    items = list(iter_frames_with_geometry([str(tmp_path / "run.cxi"), f"{tmp_path / 'small.h5'}:/data/data"], geom))
    assert [(i, type(x).__name__) for _, i, x in items] == [(0, "Frame"), (1, "Frame"), (0, "FrameReadError"),
                                                             (1, "FrameReadError")]


def test_screen_geom_end_to_end_writes_raw_hits(tmp_path, capsys):
    geom = _geom(tmp_path)
    frames = [_raw_frame(1, [CONTROL, ON_BAD_REGION]), _raw_frame(2), _raw_frame(3, [CONTROL, (50, 10)])]
    run = tmp_path / "run.cxi"
    _write_stack(run, frames)
    with h5py.File(tmp_path / "small.h5", "w") as f:
        f["/data/data"] = np.ones((1, 60, 64), np.float32)
    small = f"{tmp_path / 'small.h5'}:/data/data"
    out = tmp_path / "pf8"
    code = main(["screen", str(run), small, "--geom", str(geom), "--out", str(out), "--method", "peakfinder8",
                 "--adc-threshold", "200", "--min-snr", "5", "--min-pixels", "1", "--min-peaks", "1"])
    assert code == 1  # the small file's frame is an error row; the rest screened
    rows = list(csv.DictReader(open(out / "scores.csv")))
    assert [(r["frame"], r["label"], r["n_peaks"]) for r in rows[:3]] == [("0", "hit", "1"), ("1", "miss", "0"),
                                                                         ("2", "hit", "2")]
    assert rows[3]["file"] == small and rows[3]["label"] == "error"
    err = list(csv.DictReader(open(out / "errors.csv")))
    assert err[0]["frame"] == "0" and "frame shape 60 x 64 does not match" in err[0]["error"]
    assert not (out / "hits.geom").exists()  # the geometry reads hits.cxi as it stands
    with h5py.File(out / "hits.cxi", "r") as f:
        data = f[CXI_DATA]
        assert data.shape == (2, 64, 64) and data.dtype == np.float32
        np.testing.assert_array_equal(data[0], frames[0])
        np.testing.assert_array_equal(data[1], frames[2])
        mask = f[CXI_MASK][...]
        assert mask[0][ON_BAD_REGION] == 1 and mask[0][MASKED_PIXEL] == 1 and mask[0][CONTROL] == 0
        n = f["/entry_1/result_1/nPeaks"][...]
        x, y = f["/entry_1/result_1/peakXPosRaw"][...], f["/entry_1/result_1/peakYPosRaw"][...]
        assert list(n) == [1, 2]
        assert (round(float(x[0, 0])), round(float(y[0, 0]))) == (CONTROL[1], CONTROL[0])  # data-block fs, ss
        assert sorted((round(float(a)), round(float(b))) for a, b in zip(x[1, :2], y[1, :2])) == [(10, 50), (20, 15)]
    if shutil.which("indexamajig"):  # CrystFEL reads hits.cxi with the same geometry
        (tmp_path / "hits.lst").write_text(f"{out / 'hits.cxi'}\n")
        r = subprocess.run(["indexamajig", "-i", str(tmp_path / "hits.lst"), "-g", str(geom), "-o",
                            str(tmp_path / "hits.stream"), "--peaks=cxi", "--indexing=none", "-j", "1"],
                           capture_output=True, text=True, cwd=tmp_path, timeout=120)
        assert r.returncode == 0, r.stderr[-2000:]
        assert (tmp_path / "hits.stream").read_text().count("----- Begin chunk -----") == 2
    # the CNN path over the same inputs: scores for the three frames, an error row for the small file
    code = main(["screen", str(run), small, "--geom", str(geom), "--out", str(tmp_path / "cnn"), "--no-cxi"])
    rows = list(csv.DictReader(open(tmp_path / "cnn" / "scores.csv")))
    assert code == 1 and [r["label"] for r in rows][3] == "error"
    assert all(float(r["p_hit"]) + float(r["p_maybe"]) + float(r["p_miss"]) == pytest.approx(1, abs=1e-5)
               for r in rows[:3])


def test_hits_geom_is_written_when_the_data_location_differs(tmp_path):
    g = load_geometry(_geom(tmp_path, data="/data/data", mask_file=False))
    text = g.hits_geometry_text()
    assert text is not None and "\ndata = /entry_1/data_1/data\n" in text
    hits = DetectorGeometry(text, path="hits.geom")
    for p in hits.detector["panels"].values():
        assert (p["data"], p["dim_structure"], p["mask"]) == (CXI_DATA, ["%", "ss", "fs"], CXI_MASK)
    assert hits.detector["mask_bad"] == 1 and hits.shape == g.shape and hits.beam_centre_px == g.beam_centre_px
    assert load_geometry(_geom(tmp_path, mask_file=True, name="b.geom")).hits_geometry_text() is None
    # a file named alone is read at the geometry's data location, as CrystFEL reads it
    with h5py.File(tmp_path / "raw.h5", "w") as f:
        f["/data/data"] = np.stack([_raw_frame(5, [CONTROL]), _raw_frame(6)])
    with open_with_geometry(tmp_path / "raw.h5", g) as src:
        assert (len(src), src.path) == (2, f"{tmp_path / 'raw.h5'}:/data/data")
        assert src.read(0).data[CONTROL] > 1000  # p0: row ss, column fs
    out = tmp_path / "out"
    assert main(["screen", str(tmp_path / "raw.h5"), "--geom", str(g.path), "--out", str(out), "--method",
                 "peakfinder8", "--adc-threshold", "200", "--min-pixels", "1", "--min-peaks", "1"]) == 0
    assert (out / "hits.geom").read_text() == text
    with h5py.File(out / "hits.cxi", "r") as f:
        assert f[CXI_DATA].shape == (1, 64, 64)


def test_unparsable_geom_is_one_line_and_nonzero_exit(tmp_path, capsys):
    bad = tmp_path / "bad.geom"
    bad.write_bytes(b"\x00\xff garbage")
    _write_stack(tmp_path / "run.cxi", [_raw_frame(1)])
    for cmd in (["screen", str(tmp_path / "run.cxi"), "--geom", str(bad), "--out", str(tmp_path / "o")],
                ["explain", str(tmp_path / "run.cxi"), "--geom", str(bad), "--out", str(tmp_path / "e")]):
        assert main(cmd) == 2
        err = capsys.readouterr().err
        assert err.startswith("ERROR: ") and str(bad) in err and err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "o").exists() and not (tmp_path / "e").exists()


def test_stacked_presets_match_their_geometry(tmp_path):
    from diffscreen.simulate import PRESETS, STACKED, simulate_stacked_run
    from diffscreen.simulate.presets import detector_layout

    agipd, jf = STACKED["agipd1m_stacked"], STACKED["jungfrau4m_stacked"]
    ga, gj = agipd.geometry(), jf.geometry()
    assert (len(ga.panels), ga.raw_shape, ga.shape, ga.pixel_size_mm) == (128, (8192, 128), (1080, 1072),
                                                                          pytest.approx(0.2))
    assert (len(gj.panels), gj.raw_shape, gj.shape, gj.pixel_size_mm) == (64, (4096, 1024), (2164, 2072),
                                                                          pytest.approx(0.075))
    for det, g in ((agipd, ga), (jf, gj)):
        assert PRESETS[det.name] is det.preset and det.preset.shape == g.shape
        assert det.preset.beam_centre_px == g.beam_centre_px
        np.testing.assert_array_equal(detector_layout(det.preset).active, ~g.gaps)
    assert gj.gaps[:514, 256:258].all() and not gj.gaps[:256, 258].any()  # the 2-px inter-chip gaps, masked
    cxi, geom = simulate_stacked_run("agipd1m_stacked", 1, tmp_path / "agipd.cxi", seed=4,
                                     class_fractions=(1.0, 0.0, 0.0), compression=None)
    assert geom == tmp_path / "detector.geom" and geom.read_text() == agipd.geom_text
    from diffscreen.simulate import Simulator

    sf = Simulator(agipd.preset, seed=4, class_fractions=(1.0, 0.0, 0.0)).frame(0)
    with GeomSource(str(cxi), geom) as src:
        assert src.inner.shape == (8192, 128)
        fr = src.read(0)
    good = ~ga.gaps
    np.testing.assert_array_equal(fr.data[good], sf.data[good].astype(np.float32))
    assert fr.meta.beam_centre_px == (535.5, 539.5) and fr.meta.distance_mm == pytest.approx(130.0)
    with h5py.File(cxi, "r") as f:
        assert f["/entry_1/result_1/n_spots"][0] == sf.n_spots and sf.label == "hit"


def test_a_mask_in_the_data_file_is_read_per_frame(tmp_path):
    text = GEOM.format(data="/data/data", mask="mask = /data/mask\nmask_good = 0x0\nmask_bad = 0x4\n", no_index=0)
    g = DetectorGeometry(text, path=str(tmp_path / "inline.geom"))
    masks = np.zeros((2, 64, 64), np.uint8)
    masks[1, 20, 30] = 0x4
    masks[0, 21, 30] = 0x1  # not a bad bit here
    with h5py.File(tmp_path / "raw.h5", "w") as f:
        f["/data/data"] = np.stack([_raw_frame(7), _raw_frame(8)])
        f["/data/mask"] = masks
    with open_with_geometry(tmp_path / "raw.h5", g) as src:
        assert not src.read_raw(0).mask[20, 30] and src.read_raw(1).mask[20, 30]
        assert not src.read_raw(0).mask[21, 30]
        assert src.read(1).mask[20, 30] and not src.read(0).mask[20, 30]  # p0: row ss, column fs
    assert g.hits_geometry_text() is not None  # hits.cxi has no /data/mask: hits.geom names its own
