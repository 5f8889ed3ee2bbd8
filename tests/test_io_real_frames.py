"""Every real detector frame in shared/data/real-frames loads with the right pixels, mask and geometry.

The frames bundled in tests/data (one of each format) are used when the shared
folder is absent, so a fresh clone runs the per-file tests on them; the tests
that look at the whole folder need the shared folder.

Reference numbers were computed once by routes that do not use diffscreen's
readers, and are hard-coded here:

* CBF (Pilatus byte-offset, Rayonix and CSPAD x-CBF_PACKED): the raw arrays
  decoded by pycbf (``read_buffer`` on the decompressed file,
  ``get_integerarray_as_string``), summed as int64 over the pixels the reader
  should keep (Pilatus: value >= 0; Rayonix: > undefined_value -1; CSPAD:
  > undefined_value -400, which also drops the -5136 sentinel).
* ADSC: the big-endian uint16 block after the 512-byte SMV header, numpy
  ``frombuffer``; bad = value 0.
* MarCCD: the little-endian uint16 block after the 4096-byte TIFF + MarCCD
  header; bad = value 0 outside the inscribed circle.
"""

import bz2
import functools
import gzip
import shutil
import struct

import numpy as np
import pytest

from diffscreen.errors import FrameIndexError, FrameReadError, UnknownFormatError
from diffscreen.io import expand_inputs, iter_frames, open_source, read_frame

CSPAD = [f"idx-20130301060858{k}01.cbf" for k in (4, 6, 7, 8)]
CSPAD_SHAPE = (1723, 1727)  # assembled from the file's metrology (64 ASICs of 185 x 194)
CSPAD_PANEL_PIXELS = 32 * 185 * 388

# file: (shape, sum of unmasked pixels, number of masked pixels)
EXPECTED = {
    "DLS_I03_smargon_0001.cbf.gz": ((2527, 2463), 564727, 527314),
    "run2_1_00148.cbf.bz2": ((2527, 2463), 40389866, 527050),
    "hit-20181213155134902.cbf": ((1920, 1920), 3410756158, 0),
    "adsc.img.bz2": ((2304, 2304), 390954134, 23195),
    "corkcont2_H_0089.mccd.bz2": ((2048, 2048), 30455374, 899895),
    "somedata_0001.mccd.bz2": ((1024, 1024), 134607957, 224854),
    # CSPAD: masked = panel gaps (H*W - 32*185*388) + raw pixels <= -400 (2, 2, 3, 2)
    CSPAD[0]: (CSPAD_SHAPE, 32888157, 1723 * 1727 - CSPAD_PANEL_PIXELS + 2),
    CSPAD[1]: (CSPAD_SHAPE, 48714079, 1723 * 1727 - CSPAD_PANEL_PIXELS + 2),
    CSPAD[2]: (CSPAD_SHAPE, 54039886, 1723 * 1727 - CSPAD_PANEL_PIXELS + 3),
    CSPAD[3]: (CSPAD_SHAPE, 27810066, 1723 * 1727 - CSPAD_PANEL_PIXELS + 2),
}


@pytest.fixture(scope="module")
def real(real_frame):
    """``real(name)`` → (frames in the file, source shape, frame 0); ``real.path(name)`` → the file."""

    def path(name):
        return real_frame("real-frames", name)

    @functools.lru_cache(maxsize=None)
    def read(p):
        with open_source(p) as src:
            return len(src), src.shape, src.read(0)

    def load(name):
        return read(path(name))

    load.path = path
    return load


@pytest.fixture(scope="module")
def shared_frames(shared_data):
    """The shared folder's ``real-frames`` (all ten files and the MANIFEST); skip if absent."""
    folder = shared_data / "real-frames"
    if not folder.is_dir():
        pytest.skip("no real-frames folder")
    return folder


def _raw_cbf(path):
    """Raw (slow, fast) or (32, 185, 388) pixels decoded by pycbf, no diffscreen code."""
    import pycbf

    opener = {".gz": gzip.open, ".bz2": bz2.open}.get(path.suffix, open)
    with opener(path, "rb") as fh:
        buf = fh.read()
    h = pycbf.cbf_handle_struct()
    h.read_buffer(buf, pycbf.MSG_DIGEST)
    h.find_category(b"array_data")
    out = []
    for i in range(h.count_rows()):
        h.rewind_row() if i == 0 else h.next_row()
        h.find_column(b"data")
        p = h.get_integerarrayparameters_wdims_fs()
        out.append(np.frombuffer(h.get_integerarray_as_string(), "<i4").reshape(max(p[11], 1), p[10], p[9]))
    return np.concatenate(out)


def test_every_file_in_the_folder_is_covered(shared_frames):
    names = {p.name for p in shared_frames.iterdir()} - {"MANIFEST.tsv", "thermolysin_cspad_README.md"}
    assert names == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_real_frame_pixels_and_mask(real, name):
    shape, total, n_masked = EXPECTED[name]
    n, src_shape, fr = real(name)
    assert n == 1
    assert src_shape == shape and fr.data.shape == shape and fr.mask.shape == shape
    assert fr.data.dtype == np.float32 and fr.mask.dtype == bool
    assert int(fr.mask.sum()) == n_masked
    assert int(fr.data[~fr.mask].astype(np.int64).sum()) == total
    assert fr.meta.index == 0 and fr.meta.source == str(real.path(name))


def test_manifest_shapes_agree(shared_frames):
    rows = [line.split("\t") for line in (shared_frames / "MANIFEST.tsv").read_text().splitlines()[1:]]
    for row in rows:
        if not row[0].startswith("idx-"):
            assert EXPECTED[row[0]][0] == tuple(int(v) for v in row[4].split("x")), row[0]


@pytest.mark.parametrize(
    "name, detector, pixel, distance, wavelength, beam",
    [
        ("DLS_I03_smargon_0001.cbf.gz", "PILATUS3 6M", 0.172, 291.47, 0.97625, (1229.30, 1200.48)),
        ("run2_1_00148.cbf.bz2", "PILATUS 6M", 0.172, 300.0, 1.0332, (1230.10, 1310.50)),
        # header: PIXEL_SIZE 0.0816, DISTANCE 250.0, WAVELENGTH 1.0, BEAM_CENTER_X 99.30, BEAM_CENTER_Y 94.70 (mm)
        ("adsc.img.bz2", "ADSC S/N 423", 0.0816, 250.0, 1.0, (99.30 / 0.0816, 94.70 / 0.0816)),
        # imgCIF: increment 0.177083333333 mm, AXIS_D0_Z -124, wavelength 1.30375729885, origin (-170, 170) mm
        ("hit-20181213155134902.cbf", "Rayonix", 0.177083333333, 124.0, 1.30375729885, (960.0, 960.0)),
    ],
)
def test_header_geometry(real, name, detector, pixel, distance, wavelength, beam):
    m = real(name)[2].meta
    assert m.detector == detector
    assert m.pixel_size_mm == pytest.approx(pixel, rel=1e-9)
    assert m.distance_mm == pytest.approx(distance, rel=1e-9)
    assert m.wavelength_A == pytest.approx(wavelength, rel=1e-9)
    assert m.beam_centre_px == pytest.approx(beam, abs=1e-6)


@pytest.mark.parametrize("name", ["corkcont2_H_0089.mccd.bz2", "somedata_0001.mccd.bz2"])
def test_marccd_header_geometry(real, name):
    raw = bz2.open(real.path(name)).read(4096)
    words = struct.unpack("<768i", raw[1024:4096])  # MarCCD frame_header, 32-bit words
    dist, bx, by, px, wl = words[160], words[161], words[162], words[193], words[227]
    m = real(name)[2].meta
    assert m.detector == "MarCCD"
    assert m.pixel_size_mm == pytest.approx(px * 1e-6)  # nm
    assert m.beam_centre_px == pytest.approx((bx / 1e3, by / 1e3))
    assert m.wavelength_A == pytest.approx(wl * 1e-5)  # fm
    assert dist == 0 and m.distance_mm is None  # the header leaves it unset
    assert m.pixel_size_mm == pytest.approx({"corkcont2_H_0089.mccd.bz2": 0.079092}.get(name, 0.15788))


def test_adsc_beam_centre_matches_the_powder_rings(real):
    """BEAM_CENTER_X runs along the fast scan here: check against the rings' centre."""
    fr = real("adsc.img.bz2")[2]
    from scipy import ndimage

    sm = ndimage.uniform_filter(fr.data[::2, ::2], 9)
    rows, cols = np.r_[550:574, 579:600], np.r_[590:624]  # half-res bands clear of the module gap
    hp = ndimage.uniform_filter1d(sm[rows].mean(0), 15)
    vp = ndimage.uniform_filter1d(sm[:, cols].mean(1), 15)
    x = np.argmax(hp[100:500]) + 100 + np.argmax(hp[700:1125]) + 700  # (left + right) / 2 at full res
    y = np.argmax(vp[75:500]) + 75 + np.argmax(vp[650:1125]) + 650
    bx, by = fr.meta.beam_centre_px
    assert abs(x - bx) < 12 and abs(y - by) < 12
    assert abs(x - by) > 40  # the other convention (Y along fast) is far off


@pytest.mark.parametrize("name", CSPAD)
def test_cspad_assembly_keeps_every_panel_pixel(real, name):
    fr = real(name)[2]
    raw = _raw_cbf(real.path(name)).astype(np.int64)
    assert raw.shape == (32, 185, 388)
    good = raw[(raw != -5136) & (raw > -400)]
    assert good.size == CSPAD_PANEL_PIXELS - (EXPECTED[name][2] - (fr.data.size - CSPAD_PANEL_PIXELS))
    assembled = fr.data[~fr.mask].astype(np.int64)
    assert assembled.size == good.size
    assert abs(assembled.sum() - good.sum()) <= 0.01 * abs(good.sum())
    np.testing.assert_array_equal(np.sort(assembled), np.sort(good))  # the same values, each once
    assert fr.meta.extra["overlap_px"] == 0 and fr.meta.extra["n_panels"] == 64


def test_single_panel_imgcif_comes_out_as_read_out(real):
    """Rayonix: fast along +x, slow along -y, so the assembled frame is the raw array itself."""
    fr = real("hit-20181213155134902.cbf")[2]
    raw = _raw_cbf(real.path("hit-20181213155134902.cbf"))
    np.testing.assert_array_equal(fr.data, raw[0].astype(np.float32))
    assert fr.meta.extra["assembly"] == "geometry" and fr.meta.extra["max_panel_rotation_deg"] == 0


@pytest.mark.parametrize("name", CSPAD)
def test_cspad_geometry(real, name):
    fr = real(name)[2]
    m = fr.meta
    H, W = fr.shape
    bx, by = m.beam_centre_px
    assert 0 < bx < W and 0 < by < H
    assert abs(bx - W / 2) < 0.05 * W and abs(by - H / 2) < 0.05 * H
    assert fr.mask[int(round(by)), int(round(bx))]  # the beam goes through the hole between quadrants
    assert m.pixel_size_mm == pytest.approx(0.10992)
    assert m.distance_mm == pytest.approx(130.106632672914)
    assert m.detector == "CS PAD"
    assert m.extra["max_panel_rotation_deg"] < 1.0


def test_cspad_panels_land_where_pycbf_puts_them(real):
    """Encode (panel, slow, fast) in each pixel; pycbf's own pixel coordinates must find them."""
    import pycbf

    from diffscreen.io.cbf import assemble, plan_assembly, read_panels

    h = pycbf.cbf_handle_struct()
    h.read_widefile(str(real.path(CSPAD[0])).encode(), pycbf.MSG_DIGEST)
    panels, has_geometry = read_panels(h)
    assert has_geometry and len(panels) == 64
    sizes = [(185, 194)] * 64
    plan = plan_assembly(panels, sizes)
    s, f = np.mgrid[0:185, 0:194]
    blocks = [(k * 100000 + s * 1000 + f).astype(np.float32) for k in range(64)]
    data, mask, overlap = assemble(plan, blocks, [np.zeros((185, 194), bool)] * 64)
    assert overlap == 0 and plan.shape == CSPAD_SHAPE
    bx, by = plan.beam_centre_px
    p = plan.pixel_mm
    for k in range(64):
        d = h.construct_detector(k)  # read_panels lists panels in this order
        assert panels[k].name.replace("ARRAY_", "AXIS_") + "_F" == d.get_detector_surface_axes(0).decode()
        for ss, ff in ((0, 0), (0, 193), (184, 0), (184, 193)):
            x, y, _ = d.get_pixel_coordinates_fs(ff, ss)
            col, row = bx + x / p, by - y / p  # image columns along lab +x, rows along lab -y
            r0, c0 = int(round(row)), int(round(col))
            win = data[max(r0 - 2, 0) : r0 + 3, max(c0 - 2, 0) : c0 + 3]
            assert (k * 100000 + ss * 1000 + ff) in win, (k, ss, ff)
        del d


def test_truncated_and_garbage_frames_fail_with_the_file_named(real, tmp_path):
    cut = tmp_path / "cut.cbf.gz"
    data = real.path("DLS_I03_smargon_0001.cbf.gz").read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(FrameReadError) as ei:
        read_frame(cut)
    assert "cut.cbf.gz" in str(ei.value) and "frame 0" in str(ei.value)

    cspad = tmp_path / "cut_cspad.cbf"
    data = real.path(CSPAD[0]).read_bytes()
    cspad.write_bytes(data[: len(data) // 2])
    with pytest.raises(FrameReadError) as ei:
        read_frame(cspad)
    assert "cut_cspad.cbf" in str(ei.value)

    junk = tmp_path / "junk.cbf"
    junk.write_bytes(b"not a frame at all" * 100)
    with pytest.raises(UnknownFormatError) as ei:
        open_source(junk)
    assert "junk.cbf" in str(ei.value) and "###CBF" in str(ei.value)

    with pytest.raises(FrameIndexError) as ei:
        read_frame(real.path("somedata_0001.mccd.bz2"), 1)
    assert "somedata_0001.mccd.bz2" in str(ei.value) and "frame 1" in str(ei.value)
    assert isinstance(ei.value, IndexError)


def test_iter_frames_reports_bad_files_in_place(real, tmp_path):
    cut = tmp_path / "cut.mccd.bz2"
    cut.write_bytes(real.path("somedata_0001.mccd.bz2").read_bytes()[:20000])
    good = real.path("hit-20181213155134902.cbf")
    out = list(iter_frames([cut, str(tmp_path / "missing.cbf"), good]))
    assert [s for s, _, _ in out] == [str(cut), str(tmp_path / "missing.cbf"), str(good)]
    assert out[0][1] in (-1, 0) and out[1][1] == -1 and out[2][1] == 0
    assert isinstance(out[0][2], FrameReadError) and "cut.mccd.bz2" in str(out[0][2])
    assert isinstance(out[1][2], FrameReadError) and "no such file" in str(out[1][2])
    assert out[2][2].data.shape == (1920, 1920)


def test_inputs_are_never_modified(real, tmp_path):
    src = tmp_path / "copy.cbf"
    shutil.copy(real.path(CSPAD[0]), src)
    before = src.read_bytes(), src.stat().st_mtime_ns
    read_frame(src)
    assert (src.read_bytes(), src.stat().st_mtime_ns) == before


def test_expand_inputs(shared_frames, tmp_path):
    listed = expand_inputs([shared_frames])
    assert listed == sorted(str(shared_frames / n) for n in EXPECTED)  # MANIFEST.tsv and README skipped
    assert expand_inputs([str(shared_frames / "idx-*.cbf")]) == [str(shared_frames / n) for n in CSPAD]
    with pytest.raises(FrameReadError, match="nowhere.cbf"):
        expand_inputs([shared_frames / "adsc.img.bz2", tmp_path / "nowhere.cbf"])
    with pytest.raises(FrameReadError, match="no file matches"):
        expand_inputs([str(tmp_path / "*.h5")])


# --------------------------------------------------------------------------- other fabio formats


def test_edf_tiff_and_mar345_round_trip(tmp_path):
    import fabio
    from fabio.edfimage import EdfImage
    from fabio.mar345image import Mar345Image
    from fabio.tifimage import TifImage

    d = (np.arange(100 * 120).reshape(100, 120) % 500).astype(np.int32)
    d[3, 4] = -2
    EdfImage(data=d.astype(np.float32), header={"PSize_1": "7.5e-05", "SampleDistance": "0.1", "WaveLength": "1e-10",
                                                "Center_1": "50.5", "Center_2": "40.25", "Dummy": "-2"}).write(
        str(tmp_path / "a.edf"))
    TifImage(data=d).write(str(tmp_path / "a.tif"))
    mar = Mar345Image(data=np.abs(d), header={"DISTANCE": "250.0", "WAVELENGTH": "1.0"})
    mar.byteorder = "<"  # fabio 2026.6 fails to write without it
    mar.write(str(tmp_path / "a.mar2300"))
    assert fabio.open(str(tmp_path / "a.mar2300")).data.shape == (100, 120)

    edf = read_frame(tmp_path / "a.edf")
    np.testing.assert_array_equal(edf.data, d.astype(np.float32))
    assert edf.mask.sum() == 1 and edf.mask[3, 4]
    m = edf.meta
    assert (m.pixel_size_mm, m.distance_mm, m.wavelength_A, *m.beam_centre_px) == pytest.approx(
        (0.075, 100.0, 1.0, 50.5, 40.25))
    tif = read_frame(tmp_path / "a.tif")
    np.testing.assert_array_equal(tif.data, d.astype(np.float32))
    assert tif.mask.sum() == 1 and tif.meta.extra["format"] == "tiff"
    m345 = read_frame(tmp_path / "a.mar2300")
    np.testing.assert_array_equal(m345.data, np.abs(d).astype(np.float32))
    assert m345.meta.distance_mm == 250.0 and m345.meta.wavelength_A == 1.0 and m345.meta.detector == "mar345"


# --------------------------------------------------------------------------- imgCIF without geometry


def _write_two_array_cbf(path, a, b):
    """A CBF with two x-CBF_PACKED arrays and no axis geometry, written with pycbf."""
    import pycbf

    h = pycbf.cbf_handle_struct()
    h.new_datablock(b"two_panels")
    h.new_category(b"array_structure_list")
    for c in (b"array_id", b"index", b"dimension", b"precedence", b"direction"):
        h.new_column(c)
    for aid, arr in ((b"A1", a), (b"A2", b)):
        for idx, dim in ((1, arr.shape[1]), (2, arr.shape[0])):
            h.new_row()
            for c, v in ((b"array_id", aid), (b"index", b"%d" % idx), (b"dimension", b"%d" % dim),
                         (b"precedence", b"%d" % idx), (b"direction", b"increasing")):
                h.find_column(c)
                h.set_value(v)
    h.new_category(b"array_data")
    for c in (b"array_id", b"binary_id", b"data"):
        h.new_column(c)
    for k, (aid, arr) in enumerate(((b"A1", a), (b"A2", b)), 1):
        arr = np.ascontiguousarray(arr, dtype="<i4")
        h.new_row()
        h.find_column(b"array_id")
        h.set_value(aid)
        h.find_column(b"binary_id")
        h.set_integervalue(k)
        h.find_column(b"data")
        h.set_integerarray_wdims_fs(pycbf.CBF_PACKED, k, arr.tobytes(), 4, 1, arr.size, b"little_endian",
                                    arr.shape[1], arr.shape[0], 1, 0)
    h.write_widefile(str(path).encode(), pycbf.CBF, pycbf.MIME_HEADERS | pycbf.MSG_DIGEST, 0)


def test_panels_without_geometry_are_tiled_with_masked_gaps(tmp_path):
    a = np.arange(120).reshape(10, 12)
    b = np.full((8, 12), 7)
    path = tmp_path / "two.cbf"
    _write_two_array_cbf(path, a, b)
    packed = tmp_path / "two.cbf.bz2"
    packed.write_bytes(bz2.compress(path.read_bytes()))
    for p in (path, packed):
        fr = read_frame(p)
        assert fr.shape == (10, 12 + 4 + 12) and fr.meta.extra["assembly"] == "tiled"
        np.testing.assert_array_equal(fr.data[:, :12], a)
        np.testing.assert_array_equal(fr.data[:8, 16:], b)
        gaps = np.zeros(fr.shape, bool)
        gaps[:, 12:16] = gaps[8:, 16:] = True
        np.testing.assert_array_equal(fr.mask, gaps)
        assert fr.meta.beam_centre_px is None and fr.meta.pixel_size_mm is None
