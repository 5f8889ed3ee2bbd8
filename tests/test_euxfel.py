"""European XFEL runs (issue 15 item 3): ``screen RUN --detector NAME`` through EXtra-data and EXtra-geom.

The runs are written with EXtra-data's own mock-data writers
(``extra_data.tests.mockdata``, shipped in its wheel: ``write_file`` with
``AGIPDModule``, and ``make_examples.make_jungfrau_run``), small: 3 trains
of 2 pulses of corrected AGIPD data, module 5 absent.  Pixel values are put
into the files with h5py afterwards (the mock writers leave them 0).
"""

from __future__ import annotations

import csv
import sys

import h5py
import numpy as np
import pytest

pytest.importorskip("extra_data")
pytest.importorskip("extra_geom")

from extra_data.tests.mockdata import write_file  # noqa: E402
from extra_data.tests.mockdata.detectors import AGIPDModule  # noqa: E402

from diffscreen.cli import main  # noqa: E402
from diffscreen.errors import ConfigError, FrameReadError  # noqa: E402
from diffscreen.io.base import FrameSource  # noqa: E402
from diffscreen.io.euxfel import DEFAULT_QUAD_POSITIONS, EuXFELRuns, run_directories  # noqa: E402

DET = "SPB_DET_AGIPD1M-1"
TRAINS, PULSES = 3, 2
FIRST_TRAIN = 10000
MISSING_MODULE = 5
HIT = 3  # train 10001, pulse 1
SPOT = (2, 200, 60)  # module, ss, fs of the one spot on a good pixel of frame HIT
FLAGGED = (3, 300, 60)  # a bright pixel the correction's image.mask flags
NAN_PIXEL = (4, 10, 10)
BRIGHT = 2000.0


def _source(m: int) -> str:
    return f"INSTRUMENT/{DET}/DET/{m}CH0:xtdf/image"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A corrected AGIPD-1M run: 15 modules (5 missing), 3 trains x 2 pulses, noise 10 +- 1, one spot."""
    d = tmp_path_factory.mktemp("r0042")
    rng = np.random.default_rng(0)
    for m in range(16):
        if m == MISSING_MODULE:
            continue
        path = d / f"CORR-R0042-AGIPD{m:02}-S00000.h5"
        write_file(str(path), [AGIPDModule(f"{DET}/DET/{m}CH0", raw=False, frames_per_train=PULSES)],
                   ntrains=TRAINS, chunksize=TRAINS, format_version="1.0")
        with h5py.File(path, "r+") as f:
            data = rng.normal(10.0, 1.0, f[f"{_source(m)}/data"].shape).astype(np.float32)
            mask = np.zeros(data.shape, np.uint32)
            if m == SPOT[0]:
                data[HIT, SPOT[1], SPOT[2]] = BRIGHT
            if m == FLAGGED[0]:
                data[HIT, FLAGGED[1], FLAGGED[2]] = BRIGHT
                mask[HIT, FLAGGED[1], FLAGGED[2]] = 1 << 3  # any bad-pixel bit
            if m == NAN_PIXEL[0]:
                data[HIT, NAN_PIXEL[1], NAN_PIXEL[2]] = np.nan
            f[f"{_source(m)}/data"][...] = data
            f[f"{_source(m)}/mask"][...] = mask
    return d


def _stack(run, k: int) -> np.ndarray:
    """Frame k's modules as h5py reads them from the files (NaN for the missing module)."""
    out = np.full((16, 512, 128), np.nan, np.float32)
    for m in range(16):
        if m != MISSING_MODULE:
            with h5py.File(run / f"CORR-R0042-AGIPD{m:02}-S00000.h5", "r") as f:
                out[m] = f[f"{_source(m)}/data"][k]
    return out


def _default_geometry():
    from extra_geom import AGIPD_1MGeometry

    return AGIPD_1MGeometry.from_quad_positions(DEFAULT_QUAD_POSITIONS["AGIPD1M"])


def test_frames_are_trains_times_pulses_with_their_ids(run):
    with EuXFELRuns(DET)(run) as src:
        assert isinstance(src, FrameSource)
        assert len(src) == TRAINS * PULSES == 6
        extras = [src.read(k).meta.extra for k in range(len(src))]
        ids = [(e["train_id"], e["pulse_id"]) for e in extras]
        assert ids == [(10000, 0), (10000, 1), (10001, 0), (10001, 1), (10002, 0), (10002, 1)]
        meta = src.read(HIT).meta
        assert (meta.source, meta.index, meta.extra["frame_in_train"], meta.extra["data"]) == (str(run), 3, 1,
                                                                                              "corrected")
        assert src.where(HIT) == "train 10001, pulse 1"


def test_assembled_frame_is_extra_geoms_and_masks_gaps_flags_nan_and_missing_modules(run):
    geom = _default_geometry()
    with EuXFELRuns(DET)(run) as src:
        fr = src.read(HIT)
    assert src.shape == fr.data.shape == fr.mask.shape == geom.output_array_for_position().shape == (1256, 1092)
    assert fr.meta.pixel_size_mm == pytest.approx(0.2)
    assert fr.meta.beam_centre_px == (550.0, 631.0)  # EXtra-geom's centre (y, x) = (631, 550)
    stack = _stack(run, HIT)
    expected, _ = geom.position_modules(stack)  # EXtra-geom's own assembly of h5py's pixels
    gaps, _ = geom.position_modules(np.ones((16, 512, 128), np.float32))
    gaps = np.isnan(gaps)
    assert fr.mask[gaps].all() and gaps[631, 550] and gaps.sum() == 1256 * 1092 - 15 * 512 * 128 - 512 * 128
    good = ~fr.mask
    np.testing.assert_array_equal(fr.data[good], expected[good])
    # the flagged pixel, the NaN pixel and the absent module are masked; every other module pixel is not
    flagged = np.zeros((16, 512, 128), np.float32)
    flagged[FLAGGED], flagged[NAN_PIXEL], flagged[MISSING_MODULE] = 1, 1, 1
    where_bad, _ = geom.position_modules(flagged)
    assert fr.mask[where_bad == 1].all() and (where_bad == 1).sum() == 2 + 512 * 128
    assert not fr.mask[where_bad == 0].any()
    assert np.isfinite(fr.data).all() and fr.data[where_bad == 1].min() >= 0
    assert good.sum() == 15 * 512 * 128 - 2


def test_a_spot_in_a_gap_or_on_a_flagged_pixel_is_not_counted(run):
    """peakfinder8 finds the one spot on a good pixel: the flagged-pixel and gap spots are masked."""
    from diffscreen.baselines import Peakfinder8, Peakfinder8Config
    from diffscreen.io.frame import Frame

    with EuXFELRuns(DET)(run) as src:
        fr = src.read(HIT)
    (r0, c0), = np.argwhere((fr.data == BRIGHT) & ~fr.mask)  # the spot on a good pixel
    gap_rows = [r for r in range(r0, r0 + 200) if fr.mask[r : r + 3, c0 - 1 : c0 + 2].all()]
    r = gap_rows[0]  # the nearest gap between two modules along the column
    assert 0 < r - r0 < 200 and not fr.mask[r - 1, c0]
    fr.data[r + 1, c0] = BRIGHT  # something bright in the gap, 1 px from the module edge
    spot = np.argwhere(fr.data == BRIGHT)
    pf8 = Peakfinder8(Peakfinder8Config(adc_threshold=200, min_snr=5, min_pixel_count=1, max_pixel_count=20,
                                        local_bg_radius=3, min_peaks=1))
    found = pf8.find_peaks(fr)
    assert found["num_peaks"] == 1
    unmasked = [tuple(p) for p in spot if not fr.mask[tuple(p)]]
    assert len(unmasked) == 1
    assert (round(found["ss"][0]), round(found["fs"][0])) == unmasked[0]
    blind = pf8.find_peaks(Frame(fr.data, np.zeros_like(fr.mask), fr.meta))  # the same frame without the mask
    assert blind["num_peaks"] == 3  # the spot, the flagged pixel, the gap


def test_screen_cli_end_to_end_one_row_per_frame(run, tmp_path):
    out = tmp_path / "out"
    code = main(["screen", str(run), "--detector", DET, "--out", str(out), "--method", "peakfinder8",
                 "--adc-threshold", "200", "--min-snr", "5", "--min-pixels", "1", "--min-peaks", "1"])
    assert code == 0
    rows = list(csv.DictReader(open(out / "scores.csv")))
    assert [(r["file"], r["frame"], r["n_peaks"], r["label"]) for r in rows] == [
        (str(run), str(k), "1" if k == HIT else "0", "hit" if k == HIT else "miss") for k in range(6)]
    assert (out / "hits.lst").read_text() == f"{run} //{HIT}\n"
    with h5py.File(out / "hits.cxi", "r") as f:
        assert f["/entry_1/data_1/data"].shape == (1, 1256, 1092)
    # the CNN: one row per frame, probabilities that sum to 1
    code = main(["screen", str(run), "--detector", DET, "--detector-type", "agipd1m", "--out", str(tmp_path / "cnn"),
                 "--no-cxi"])
    rows = list(csv.DictReader(open(tmp_path / "cnn" / "scores.csv")))
    assert code == 0 and [r["frame"] for r in rows] == [str(k) for k in range(6)]
    assert all(float(r["p_hit"]) + float(r["p_maybe"]) + float(r["p_miss"]) == pytest.approx(1, abs=1e-5)
               for r in rows)


def test_frame_numbers_are_those_of_extra_datas_virtual_cxi(run, tmp_path):
    """hits.lst's RUN //K is frame K of the virtual CXI file EXtra-data writes for the detector (module docstring)."""
    from extra_data import RunDirectory
    from extra_data.components import AGIPD1M

    AGIPD1M(RunDirectory(str(run)), detector_name=DET, min_modules=1).write_virtual_cxi(str(tmp_path / "run.cxi"))
    with h5py.File(tmp_path / "run.cxi", "r") as f:
        vds = f["/entry_1/instrument_1/detector_1/data"]
        assert vds.shape[:2] == (6, 16)
        assert vds[HIT][SPOT] == BRIGHT and list(f["/entry_1/trainId"][:]) == [10000, 10000, 10001, 10001, 10002,
                                                                              10002]


def test_raw_agipd_reads_the_data_plane_and_masks_the_all_ones_value(tmp_path):
    path = tmp_path / "RAW-R0001-AGIPD00-S00000.h5"
    write_file(str(path), [AGIPDModule(f"{DET}/DET/0CH0", raw=True, frames_per_train=1)], ntrains=2, chunksize=2,
               format_version="1.0")
    with h5py.File(path, "r+") as f:
        ds = f[f"{_source(0)}/data"]  # (frames, 2: data/gain, 512, 128) uint16
        block = np.full(ds.shape, 100, np.uint16)
        block[:, 1] = 7  # the gain plane
        block[1, 0, 5, 6] = 65535
        ds[...] = block
    with EuXFELRuns(DET)(tmp_path) as src:
        assert len(src) == 2
        fr = src.read(1)
    geom = _default_geometry()
    module0 = np.zeros((16, 512, 128), np.float32)
    module0[0] = 1
    module0[0, 5, 6] = 2
    placed, _ = geom.position_modules(module0)
    assert fr.meta.extra["data"] == "raw"
    assert (fr.data[placed == 1] == 100).all()  # the data plane, not the gain plane
    assert fr.mask[placed == 2].all() and not fr.mask[placed == 1].any()
    assert fr.mask[placed == 0].all()  # modules 1-15 are absent from this run


def test_jungfrau_frames_are_trains_times_memory_cells(tmp_path):
    from extra_data.tests.make_examples import make_jungfrau_run
    from extra_geom import JUNGFRAUGeometry

    make_jungfrau_run(str(tmp_path))  # SPB_IRDA_JF4M: 8 modules, 100 trains, 16 memory cells per train
    with EuXFELRuns("SPB_IRDA_JF4M")(tmp_path) as src:
        assert len(src) == 100 * 16
        assert src.shape == JUNGFRAUGeometry.example(8).output_array_for_position().shape
        fr = src.read(17)
    assert (fr.meta.extra["train_id"], fr.meta.extra["frame_in_train"], fr.meta.extra["pulse_id"]) == (10001, 1, None)
    assert fr.meta.pixel_size_mm == pytest.approx(0.075)


def test_bad_inputs_are_one_line_errors(run, tmp_path, capsys):
    with pytest.raises(FrameReadError, match="not a directory"):
        run_directories([str(run / "CORR-R0042-AGIPD00-S00000.h5")])
    with pytest.raises(FrameReadError, match=r"no LPD1M detector FXE_DET_LPD1M-1 in this run \(EXtra-data finds: "
                                             r"SPB_DET_AGIPD1M-1 \(AGIPD1M\)\)"):
        EuXFELRuns("FXE_DET_LPD1M-1")(run)
    with pytest.raises(ConfigError, match="--detector-type 'EIGER' is not one of"):
        EuXFELRuns(DET, detector_type="EIGER")
    bad = tmp_path / "bad.geom"
    bad.write_text("; nothing\n")
    assert main(["screen", str(run), "--detector", DET, "--geom", str(bad), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"ERROR: {bad}: EXtra-geom cannot read") and err.count("\n") == 1
    assert not (tmp_path / "o").exists()


def test_missing_extra_data_is_one_line_and_exit_2(run, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "extra_data", None)  # import extra_data raises ImportError
    code = main(["screen", str(run), "--detector", DET, "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "pip install 'diffscreen[euxfel]'" in err
    assert "Traceback" not in err and not (tmp_path / "o").exists()
