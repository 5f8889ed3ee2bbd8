"""Issue 13: every real frame file is readable, and what the detector flags as invalid is masked."""

import csv
import io
import os

import h5py
import numpy as np
import pytest

from diffscreen.errors import DiffscreenError
from diffscreen.io import open_source, read_frame
from diffscreen.io.base import invalid_mask

from conftest import TEST_DATA, shared_data_path

FOLDERS = ("real-frames", "real-frames-2")
# The KCD MANIFEST entry gives X x Y (header: "X dimension 625", "Y dimension 576"); frames are (H, W).
SHAPE_FIX = {"i01f0001.kcd.bz2": (576, 625)}


def _manifest(folder):
    with open(folder / "MANIFEST.tsv", newline="") as fh:
        return {row["file"]: row for row in csv.DictReader(fh, delimiter="\t")}


def _frame_files(folder):
    """(path, MANIFEST row) of every frame file in ``folder`` (the MANIFEST, READMEs and licences left out)."""
    man = _manifest(folder)
    return [(p, man.get(p.name)) for p in sorted(folder.iterdir())
            if p.name != "MANIFEST.tsv" and not p.name.startswith(("README", "LICENSE")) and not p.name.endswith("README.md")]


def _all_files(shared):
    return [f for name in FOLDERS if (shared / name).is_dir() for f in _frame_files(shared / name)]


@pytest.fixture(scope="module")
def real_files():
    """Every frame of the shared folder (18 files), else those tests/data/MANIFEST.tsv lists (all must be there)."""
    files = _all_files(shared_data_path())
    return (files, 18) if files else (_frame_files(TEST_DATA), len(_manifest(TEST_DATA)))


def test_every_real_file_opens_with_sane_pixels(real_files):
    real_files, expected = real_files
    seen = 0
    for path, row in real_files:
        with open_source(path) as src:  # as a user names it: the JUNGFRAU module's one dataset is found
            fr = src.read(0)
            assert tuple(src.shape) == fr.data.shape, path.name
        assert fr.data.ndim == 2 and fr.data.size > 0 and fr.mask.shape == fr.data.shape, path.name
        assert fr.mask.dtype == bool and fr.data.dtype == np.float32
        assert np.count_nonzero(fr.data[~fr.mask]) > 0, path.name
        assert fr.mask.mean() < 0.5, path.name  # a sane mask, not everything
        assert row is not None, f"{path.name} missing from MANIFEST.tsv"
        dims = tuple(int(x) for x in row["shape"].split("x"))
        if len(dims) == 2:
            assert fr.data.shape == SHAPE_FIX.get(path.name, dims), path.name
        seen += 1
    assert seen >= expected  # shared: 10 in real-frames, 8 in real-frames-2; tests/data: 6


@pytest.mark.parametrize("name, cls", [("CeO2_PI_CCD_Mo.SPE.bz2", "SpeImage"),
                                       ("GE_aSI_detector_image_1529.bz2", "GeImage"), ("i01f0001.kcd.bz2", "KcdImage")])
def test_fabio_only_files_go_through_the_fallback(real_frame, name, cls):
    import fabio

    path = real_frame("real-frames-2", name)
    fr = read_frame(path)
    ref = fabio.open(str(path)).data
    np.testing.assert_array_equal(fr.data, ref.astype(np.float32))
    assert fr.meta.extra["format"] == cls


def _pilatus_cutoff(fr):
    return fr.meta.extra.get("saturated_value")


@pytest.mark.parametrize("name", ["DLS_I03_smargon_0001.cbf.gz", "run2_1_00148.cbf.bz2"])
def test_real_pilatus_pixels_above_the_count_cutoff_are_masked(real_frame, name):
    fr = read_frame(real_frame("real-frames", name))
    cutoff = _pilatus_cutoff(fr)
    assert cutoff is not None and cutoff > 1000, name
    over = fr.data >= cutoff
    assert not (over & ~fr.mask).any(), name  # (neither frame has one today; any such pixel must be masked)


def _write_pilatus_cbf(path, data, cutoff=1000):
    from fabio.cbfimage import CbfImage

    header = {"_array_data.header_contents": (
        "# Detector: PILATUS 6M, S/N 60-0001\r\n# Pixel_size 172e-6 m x 172e-6 m\r\n"
        f"# Count_cutoff {cutoff} counts\r\n# Wavelength 1.0 A\r\n# Detector_distance 0.2 m\r\n")}
    CbfImage(data=data, header=header).write(str(path))


def test_minicbf_count_cutoff_is_masked(tmp_path):
    d = np.full((20, 30), 7, np.int32)
    d[2, 3] = 5000
    d[4, 5] = 999
    d[6, 7] = 1000
    d[8, 9] = -1
    d[10, 11] = -2
    path = tmp_path / "p_0001.cbf"
    _write_pilatus_cbf(path, d)
    fr = read_frame(path)
    np.testing.assert_array_equal(fr.data, d.astype(np.float32))
    assert fr.meta.extra["saturated_value"] == 1000
    assert fr.mask[2, 3] and fr.mask[6, 7] and fr.mask[8, 9] and fr.mask[10, 11]
    assert not fr.mask[4, 5]
    assert int(fr.mask.sum()) == 4


def test_defective_pixel_above_cutoff_in_a_blank_pilatus3_frame(tmp_path):
    """A blank frame with one defective pixel of 1,046,527 above its cutoff 115,897 (the issue's case)."""
    d = np.zeros((40, 50), np.int32)
    d[::7, ::3] = 1
    d[17, 23] = 1046527
    path = tmp_path / "blank_0001.cbf"
    _write_pilatus_cbf(path, d, cutoff=115897)
    fr = read_frame(path)
    assert fr.mask[17, 23] and int(fr.mask.sum()) == 1
    assert float(fr.data[~fr.mask].max()) == 1.0


def test_uint16_all_ones_and_int32_markers(tmp_path):
    from fabio.edfimage import EdfImage
    from fabio.tifimage import TifImage

    u = (np.arange(12 * 16).reshape(12, 16) % 300).astype(np.uint16)
    u[1, 2] = 65535
    u[3, 4] = 65534
    TifImage(data=u).write(str(tmp_path / "u16.tif"))
    fr = read_frame(tmp_path / "u16.tif")
    assert fr.mask[1, 2] and not fr.mask[3, 4] and int(fr.mask.sum()) == 1

    i = (np.arange(12 * 16).reshape(12, 16) % 300).astype(np.int32)
    i[0, 0], i[0, 1], i[0, 2], i[0, 3] = -1, -2, -5136, 2147483647
    i[5, 5] = 65535  # not all-ones for int32: a real count
    EdfImage(data=i).write(str(tmp_path / "i32.edf"))
    fr = read_frame(tmp_path / "i32.edf")
    np.testing.assert_array_equal(fr.data, i.astype(np.float32))
    expected = np.zeros(i.shape, bool)
    expected[0, :4] = True
    np.testing.assert_array_equal(fr.mask, expected)


def test_invalid_mask_rule():
    a = np.array([-5136, -1, 0, 5, 999, 1000, 5000, 2**31 - 1], np.int32)
    np.testing.assert_array_equal(invalid_mask(a, 1000, negative=True), [1, 1, 0, 0, 0, 1, 1, 1])
    np.testing.assert_array_equal(invalid_mask(a.astype(">i4"), 1000, negative=True), [1, 1, 0, 0, 0, 1, 1, 1])
    np.testing.assert_array_equal(invalid_mask(a), [0, 0, 0, 0, 0, 0, 0, 1])
    np.testing.assert_array_equal(invalid_mask(np.array([0, 65534, 65535], np.uint16)), [0, 0, 1])
    np.testing.assert_array_equal(invalid_mask(np.array([0, 4294967295], np.uint32)), [0, 1])
    np.testing.assert_array_equal(invalid_mask(np.array([1.0, 2e9], np.float32), 1e9), [0, 1])


def test_hdf5_pixel_mask_and_saturation(tmp_path):
    frames = np.full((2, 8, 10), 3, np.uint32)
    frames[0, 1, 1] = 4294967295
    frames[1, 2, 2] = 500  # >= saturation_value
    frames[1, 3, 3] = 499
    pm = np.zeros((8, 10), np.uint32)
    pm[0, :] = 1  # gap
    pm[7, 9] = 8  # noisy
    path = tmp_path / "nx.h5"
    with h5py.File(path, "w") as f:
        f["entry/data/data"] = frames
        f["entry/instrument/detector/pixel_mask"] = pm
        f["entry/instrument/detector/saturation_value"] = 500
    with open_source(f"{path}:/entry/data/data") as src:
        f0, f1 = src.read(0), src.read(1)
    np.testing.assert_array_equal(f0.mask, (pm != 0) | (frames[0] == 4294967295))
    np.testing.assert_array_equal(f1.mask, (pm != 0) | (frames[1] >= 500))
    assert not f1.mask[3, 3] and f1.meta.extra["saturated_value"] == 500


def test_cxi_read_and_read_region_agree_on_invalid_values(tmp_path):
    frames = (np.arange(3 * 16 * 20).reshape(3, 16, 20) % 200).astype(np.uint16)
    frames[1, 5, 6] = 65535
    path = tmp_path / "run.cxi"
    with h5py.File(path, "w") as f:
        f["entry_1/data_1/data"] = frames
    with open_source(path) as src:
        full = src.read(1)
        data, bad = src.read_region(1, (2, 10), (3, 12))
        data, bad = data.copy(), bad.copy()  # views of a buffer the next call reuses
        _, bad0 = src.read_region(0, (2, 10), (3, 12))
    assert full.mask[5, 6] and int(full.mask.sum()) == 1
    np.testing.assert_array_equal(bad, full.mask[2:10, 3:12])
    np.testing.assert_array_equal(data, frames[1, 2:10, 3:12])
    assert not bad0.any()


def test_fallback_reads_a_bruker_frame_fabio_writes(tmp_path):
    import fabio
    from fabio.bruker100image import Bruker100Image

    d = (np.arange(64 * 64).reshape(64, 64) % 250).astype(np.uint16)
    d[10, 20] = 65535 - 1
    path = tmp_path / "frame_0001.sfrm"
    Bruker100Image(data=d).write(str(path))
    ref = fabio.open(str(path))
    src = open_source(path)
    with src:
        assert type(src).__name__ == "FabioAnySource" and len(src) == 1
        fr = src.read(0)
    np.testing.assert_array_equal(fr.data, np.asarray(ref.data).astype(np.float32))
    assert fr.meta.extra["format"] == type(ref).__name__
    assert fr.data.shape == (64, 64) and np.count_nonzero(fr.data) > 0


def test_fallback_keeps_stdout_clean(tmp_path, capsys, real_frame):
    read_frame(real_frame("real-frames-2", "GE_aSI_detector_image_1529.bz2"))
    assert capsys.readouterr().out == ""


def test_random_bytes_still_fail_with_the_file_named(tmp_path):
    rng = np.random.default_rng(0)
    for name in ("noise.bin", "noise.dat", "noise.cbf", "noise"):
        p = tmp_path / name
        p.write_bytes(b"\x13\x37" + rng.integers(0, 256, 5000, dtype=np.uint8).tobytes())
        with pytest.raises(DiffscreenError) as ei:
            read_frame(p)
        msg = str(ei.value)
        assert name in msg and "\n" not in msg


def test_check_frame_refuses_only_what_unmasked_pixels_show():
    """NaN/inf and signal count only where the mask lets a pixel through; the message names the count."""
    from diffscreen.errors import BadFrameError
    from diffscreen.io.frame import Frame, FrameMeta, check_frame

    meta = FrameMeta("run.cxi", 4)
    d = np.ones((6, 7), np.float32)
    m = np.zeros(d.shape, bool)
    d[0, :3] = [np.nan, np.inf, -np.inf]
    m[0, :3] = True
    assert check_frame(Frame(d, m, meta)).data is d  # masked NaN and inf: fine
    m[0, 1] = False
    d[5, 6] = np.nan
    with pytest.raises(BadFrameError, match=r"2 pixels are NaN or infinite") as ei:
        check_frame(Frame(d, m, meta))
    assert "run.cxi" in str(ei.value) and "frame 4" in str(ei.value)
    zero = np.zeros((6, 7), np.int32)
    zero[2, 2] = 9  # the only signal is under the mask
    mz = np.zeros(zero.shape, bool)
    mz[2, 2] = True
    with pytest.raises(BadFrameError, match="all pixels are zero"):
        check_frame(Frame(zero, mz, meta))
    mz[2, 2] = False
    assert check_frame(Frame(zero, mz, meta)).data is zero
    with pytest.raises(BadFrameError, match="every pixel is masked"):
        check_frame(Frame(zero, np.ones(zero.shape, bool), meta))
