"""HDF5 readers: CXI (as CXIWriter writes it), CXIDB-76, file.h5:/dataset, and their errors."""

import hashlib

import h5py
import hdf5plugin
import numpy as np
import pytest

from diffscreen.errors import (
    BadFrameError,
    DatasetNotFoundError,
    FrameIndexError,
    FrameReadError,
    UnknownFormatError,
)
from diffscreen.io import FrameMeta, FrameSource, iter_frames, open_source, read_frame
from diffscreen.io.cxi import CXIWriter
from diffscreen.io.hdf5 import CXIDB76Source, CXISource, HDF5DatasetSource


def _frames(n, shape, seed, dtype=np.int32):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 5000, size=shape).astype(dtype) for _ in range(n)]


@pytest.fixture()
def cxi_run(tmp_path):
    """3 frames of 40x50 then 2 of 30x20 (a second entry), static mask, labels on some frames."""
    path = tmp_path / "run.cxi"
    big, small = _frames(3, (40, 50), 1), _frames(2, (30, 20), 2)
    mask = np.zeros((40, 50), bool)
    mask[0, :] = True
    mask[5, 7] = True
    labels = ["hit", "miss", None]  # None last: CXIWriter fills a skipped middle row with 0, not -1
    with CXIWriter(path, mask_mode="static") as w:
        for i, d in enumerate(big):
            meta = FrameMeta(f"orig_{i}.cbf", i, "PILATUS 6M", 0.172, (24.5 + i, 19.25), 150.0 + i, 1.3)
            w.append(d, meta, mask=mask, label=labels[i], n_spots=[12, 0, None][i])
        for i, d in enumerate(small):
            meta = FrameMeta("orig_small.h5", i, "Rayonix", 0.0886, None, None, None)
            w.append(d, meta, mask=np.zeros((30, 20), bool))
    return path, big + small, mask


def test_cxi_reads_back_exactly(cxi_run):
    path, frames, mask = cxi_run
    with open_source(path) as src:
        assert isinstance(src, CXISource) and isinstance(src, FrameSource)
        assert len(src) == 5 and src.shape == (40, 50) and src.path == str(path)
        assert src.entries == ["entry_1", "entry_2"] and src.locate(3) == ("entry_2", 0)
        got = [src.read(i) for i in range(len(src))]
    for i, (fr, ref) in enumerate(zip(got, frames)):
        assert fr.data.dtype == np.float32 and fr.mask.dtype == bool
        np.testing.assert_array_equal(fr.data, ref.astype(np.float32))
        assert fr.meta.index == i and fr.meta.source == str(path)
    for fr in got[:3]:
        np.testing.assert_array_equal(fr.mask, mask)
    assert not got[3].mask.any() and got[3].shape == (30, 20)
    m = got[1].meta
    assert m.detector == "PILATUS 6M"
    assert m.pixel_size_mm == pytest.approx(0.172) and m.distance_mm == pytest.approx(151.0)
    assert m.wavelength_A == pytest.approx(1.3) and m.beam_centre_px == pytest.approx((25.5, 19.25))
    assert m.extra["source_file"] == "orig_1.cbf" and m.extra["source_frame"] == 1
    assert got[0].meta.extra["label"] == "hit" and got[0].meta.extra["n_spots"] == 12
    assert got[1].meta.extra["label"] == "miss" and got[1].meta.extra["n_spots"] == 0
    assert "label" not in got[2].meta.extra and "n_spots" not in got[2].meta.extra
    s = got[4].meta
    assert s.detector == "Rayonix" and s.distance_mm is None and s.wavelength_A is None and s.beam_centre_px is None
    assert s.extra["entry"] == "entry_2" and s.extra["entry_frame"] == 1


def test_cxi_per_frame_mask_and_gzip(tmp_path):
    path = tmp_path / "hits.cxi"
    frames = _frames(3, (16, 24), 3, np.uint16)
    masks = [np.zeros((16, 24), bool) for _ in frames]
    masks[1][3, 4] = masks[2][:, 0] = True
    with CXIWriter(path, compression="gzip", mask_mode="per_frame") as w:
        for d, mk in zip(frames, masks):
            w.append(d, None, mask=mk)
    with h5py.File(path, "r") as f:
        assert f["entry_1/data_1/data"].compression == "gzip"
    with open_source(path) as src:
        for i in range(3):
            fr = src.read(i)
            np.testing.assert_array_equal(fr.data, frames[i].astype(np.float32))
            np.testing.assert_array_equal(fr.mask, masks[i])


@pytest.mark.parametrize("compression", ["bitshuffle-lz4", "gzip"])
def test_merge_cxi_concatenates_the_parts_frame_for_frame(tmp_path, compression):
    """merge_cxi: the parts' frames and masks in order.  With the parts' own filters (bitshuffle-LZ4) each
    stored chunk is copied as it is (the merged file holds the parts' compressed bytes); with another filter
    the frames are recompressed."""
    from diffscreen.io.cxi import merge_cxi

    frames = _frames(5, (16, 24), 4)
    masks = [np.zeros((16, 24), bool) for _ in frames]
    for k, m in enumerate(masks):
        m[k, : k + 1] = True
    parts = [tmp_path / "a.cxi", tmp_path / "b.cxi"]
    for path, ks in zip(parts, ([0, 1, 2], [3, 4])):
        with CXIWriter(path, mask_mode="per_frame") as w:
            for k in ks:
                w.append(frames[k], None, mask=masks[k])
    out = merge_cxi(parts, tmp_path / "hits.cxi", compression=compression)
    with open_source(out) as src:
        assert len(src) == 5
        for k in range(5):
            fr = src.read(k)
            np.testing.assert_array_equal(fr.data, frames[k].astype(np.float32))
            np.testing.assert_array_equal(fr.mask, masks[k])
    with h5py.File(out, "r") as f, h5py.File(parts[1], "r") as b:
        merged, part = f["entry_1/data_1/data"], b["entry_1/data_1/data"]
        same_bytes = merged.id.read_direct_chunk((3, 0, 0))[1] == part.id.read_direct_chunk((0, 0, 0))[1]
        assert same_bytes == (compression == "bitshuffle-lz4")


def test_cxi_mask_bits_follow_the_cxi_convention(tmp_path):
    """Cheetah bit 2 (saturated) is not a bad pixel; bits 1 (invalid) and 128 (bad) are."""
    path = tmp_path / "cheetah.cxi"
    with h5py.File(path, "w") as f:
        f["entry_1/data_1/data"] = np.ones((1, 4, 4), np.float32)
        m = np.zeros((4, 4), np.uint16)
        m[0, 0], m[0, 1], m[0, 2], m[0, 3] = 1, 2, 128, 2 | 32
        f["entry_1/instrument_1/detector_1/mask"] = m
    fr = read_frame(path)
    assert fr.mask[0].tolist() == [True, False, True, False] and fr.mask.sum() == 2


def test_cxi_bitshuffle_is_what_the_writer_uses(cxi_run):
    path, frames, _ = cxi_run
    with h5py.File(path, "r") as f:
        assert str(hdf5plugin.BSHUF_ID) in f["entry_1/data_1/data"]._filters  # bitshuffle-LZ4 on disk
    np.testing.assert_array_equal(read_frame(path, 2).data, frames[2].astype(np.float32))


def _write_cxidb76(path, chunks, *, active_areas, min_trusted=-10, chunk_names=None):
    """A small file in the CXIDB-76 layout (ANCHORS.md): /data/<chunk>/images, /metadata/."""
    with h5py.File(path, "w") as f:
        md = f.create_group("metadata")
        md["BEAM_CENTER_X"], md["BEAM_CENTER_Y"] = 5.5, 2.2  # mm
        md["PIXEL_SIZE"] = 0.11  # mm
        md["SIZE1"], md["SIZE2"] = chunks[0].shape[2], chunks[0].shape[1]
        md["SATURATED_VALUE"], md["MIN_TRUSTED_VALUE"] = 16000, min_trusted
        md["ACTIVE_AREAS"] = np.asarray(active_areas, np.int32)
        md["idh5_version"] = "idh5_v1.0"
        for k, imgs in enumerate(chunks):
            g = f.create_group(f"data/{(chunk_names or [])[k] if chunk_names else f'{k:04d}'}")
            g["images"] = imgs
            g["distance"] = 100.0 + 10 * k + np.arange(len(imgs))  # mm
            g["wavelength"] = np.full(len(imgs), 1.3 + k)  # Å
            g["timestamp"] = np.array([f"t{k}_{i}" for i in range(len(imgs))], dtype="S8")


def test_cxidb76_layout(tmp_path):
    rng = np.random.default_rng(4)
    c0 = rng.integers(-20, 300, size=(2, 30, 40)).astype(np.int32)
    c1 = rng.integers(-20, 300, size=(3, 30, 40)).astype(np.int32)
    tiles = [0, 0, 14, 40, 16, 0, 30, 40]  # (slow0, fast0, slow1, fast1): two 14-row bands, rows 14-15 a gap
    path = tmp_path / "r0095_2000.h5"
    _write_cxidb76(path, [c0, c1], active_areas=tiles)
    with open_source(path) as src:
        assert isinstance(src, CXIDB76Source) and len(src) == 5 and src.shape == (30, 40)
        frames = [src.read(i) for i in range(5)]
    inactive = np.ones((30, 40), bool)
    inactive[1:13, 1:39] = inactive[17:29, 1:39] = False  # fv5080 trims 1 px off each tile
    for i, (fr, ref) in enumerate(zip(frames, list(c0) + list(c1))):
        np.testing.assert_array_equal(fr.data, ref.astype(np.float32))
        np.testing.assert_array_equal(fr.mask, inactive | (ref < -10))
    m = frames[3].meta
    assert m.beam_centre_px == pytest.approx((50.0, 20.0)) and m.pixel_size_mm == pytest.approx(0.11)
    assert m.distance_mm == pytest.approx(111.0) and m.wavelength_A == pytest.approx(2.3)
    assert m.extra["chunk"] == "0001" and m.extra["chunk_frame"] == 1 and m.extra["timestamp"] == "t1_1"
    assert m.extra["saturated_value"] == 16000


def test_cxidb76_float_pixels_are_read_as_int32_and_one_tile_masks_nothing(tmp_path):
    imgs = np.array([[[1.7, -2.5], [3.2, 9.9]]], np.float32)
    path = tmp_path / "ray.h5"
    _write_cxidb76(path, [imgs], active_areas=[0, 0, 2, 2], min_trusted=-100)
    fr = read_frame(path)
    np.testing.assert_array_equal(fr.data, [[1, -2], [3, 9]])
    assert not fr.mask.any()


def test_generic_dataset_paths(tmp_path):
    path = tmp_path / "stack.h5"
    stack, single = _frames(4, (12, 9), 5, np.uint16), _frames(1, (7, 6), 6, np.float64)[0] + 0.25
    with h5py.File(path, "w") as f:
        f.create_dataset("some/deep/data", data=np.stack(stack), **hdf5plugin.Bitshuffle(cname="lz4"))
        f["one"] = single
    with open_source(f"{path}:/some/deep/data") as src:
        assert isinstance(src, HDF5DatasetSource) and len(src) == 4 and src.shape == (12, 9)
        assert src.path == f"{path}:/some/deep/data"
        for i, fr in enumerate(src):
            np.testing.assert_array_equal(fr.data, stack[i].astype(np.float32))
            assert not fr.mask.any() and fr.meta.source == src.path and fr.meta.index == i
    fr = read_frame(f"{path}:/one")
    np.testing.assert_array_equal(fr.data, single.astype(np.float32))


# --------------------------------------------------------------------------- errors


def test_truncated_file(cxi_run, tmp_path):
    path, _, _ = cxi_run
    cut = tmp_path / "cut.cxi"
    data = path.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(FrameReadError) as ei:
        open_source(cut)
    assert not isinstance(ei.value, UnknownFormatError)
    assert str(cut) in str(ei.value) and "truncated" in str(ei.value)
    assert "\n" not in str(ei.value)


def test_garbage_with_h5_suffix(tmp_path):
    junk = tmp_path / "junk.h5"
    junk.write_bytes(np.random.default_rng(0).bytes(3000))
    with pytest.raises(UnknownFormatError) as ei:
        open_source(junk)
    assert str(junk) in str(ei.value) and "HDF5 signature" in str(ei.value)


def test_missing_dataset_path(tmp_path):
    path = tmp_path / "a.h5"
    with h5py.File(path, "w") as f:
        f["frames"] = np.zeros((2, 8, 8), np.float32)
        f.create_group("grp")
    with pytest.raises(DatasetNotFoundError) as ei:
        open_source(f"{path}:/nope/data")
    msg = str(ei.value)
    assert str(path) in msg and "/nope/data" in msg and "/frames (2, 8, 8)" in msg
    assert isinstance(ei.value, KeyError) and isinstance(ei.value, FrameReadError)
    with pytest.raises(DatasetNotFoundError, match="a group"):
        open_source(f"{path}:/grp")


def test_frame_index_out_of_range(cxi_run):
    path, _, _ = cxi_run
    with open_source(path) as src:
        with pytest.raises(FrameIndexError) as ei:
            src.read(5)
        assert str(path) in str(ei.value) and "frame 5" in str(ei.value) and "5 frame(s)" in str(ei.value)
        assert isinstance(ei.value, IndexError)
        with pytest.raises(FrameIndexError):
            src.read(-1)


def test_unknown_hdf5_layout_lists_candidates(tmp_path):
    path = tmp_path / "other.h5"
    with h5py.File(path, "w") as f:
        f["instrument/detector/frames"] = np.zeros((3, 10, 10), np.int16)
        f["scalar"] = 3
    with pytest.raises(UnknownFormatError) as ei:
        open_source(path)
    assert str(path) in str(ei.value) and "/instrument/detector/frames (3, 10, 10)" in str(ei.value)


def test_file_with_one_frame_dataset_opens_without_naming_it(tmp_path):
    path = tmp_path / "module.h5"
    frame = np.arange(40 * 64, dtype=np.float32).reshape(40, 64)
    with h5py.File(path, "w") as f:
        f["data"] = frame
        f["exposure_s"] = 0.01
    with open_source(path) as src:
        assert src.path == f"{path}:/data" and len(src) == 1
        np.testing.assert_array_equal(src.read(0).data, frame)
    # two frame datasets, or one beside a small 2-D table: which one is meant is not guessed
    with h5py.File(path, "a") as f:
        f["dark"] = frame
    with pytest.raises(UnknownFormatError) as ei:
        open_source(path)
    assert "/data (40, 64)" in str(ei.value) and "/dark (40, 64)" in str(ei.value)
    other = tmp_path / "peaks.h5"
    with h5py.File(other, "w") as f:
        f["data"] = frame
        f["peaks"] = np.zeros((100, 4), np.float32)
    with pytest.raises(UnknownFormatError, match="/peaks"):
        open_source(other)


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(FrameReadError, match="no such file"):
        open_source(tmp_path / "absent.cxi")
    with pytest.raises(FrameReadError, match="is a directory"):
        open_source(tmp_path)
    with pytest.raises(FrameReadError, match="no such file"):
        open_source(f"{tmp_path / 'absent.h5'}:/data")


def test_iter_frames_continues_past_errors(cxi_run, tmp_path):
    path, frames, _ = cxi_run
    cut = tmp_path / "cut.cxi"
    cut.write_bytes(path.read_bytes()[:1000])
    nan = tmp_path / "nan.h5"
    with h5py.File(nan, "w") as f:
        d = np.ones((3, 8, 8), np.float32)
        d[1, 2, 2] = np.nan
        f["data"] = d
    out = list(iter_frames([cut, path, f"{nan}:/data", f"{nan}:/missing"]))
    keys = [(s, i) for s, i, _ in out]
    assert keys == [(str(cut), -1)] + [(str(path), i) for i in range(5)] + \
        [(f"{nan}:/data", i) for i in range(3)] + [(f"{nan}:/missing", -1)]
    items = [x for _, _, x in out]
    assert isinstance(items[0], FrameReadError) and "cut.cxi" in str(items[0])
    assert all(not isinstance(x, Exception) for x in items[1:6])
    assert isinstance(items[7], BadFrameError) and "frame 1" in str(items[7]) and "NaN" in str(items[7])
    assert not isinstance(items[6], Exception) and not isinstance(items[8], Exception)
    assert isinstance(items[9], DatasetNotFoundError)


def test_reading_never_modifies_the_file(cxi_run):
    path, _, _ = cxi_run
    before = hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns
    with open_source(path) as src:
        list(src)
    assert (hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns) == before
