"""NeXus NXmx / DECTRIS Eiger master files (issue 15, item 1): frames of all data files, mask and geometry.

The runs are written here, small, in the DECTRIS Filewriter layout (master
``/entry/data/data_00000k`` external links to ``run_data_00000k.h5:/entry/data/data``,
bitshuffle-LZ4 frames, ``detectorSpecific/pixel_mask`` with bit flags), and
what diffscreen reads is compared with what fabio's EigerImage and plain
h5py read from the same files.
"""

from __future__ import annotations

import os

import h5py
import hdf5plugin
import numpy as np
import pytest

from diffscreen.errors import FrameReadError
from diffscreen.io import iter_frames, open_source
from diffscreen.io.nxmx import NXmxSource
from diffscreen.io.sources import find_reader

H, W = 64, 80
PER_FILE = 3
N_FILES = 2
CUTOFF = 1000
GAP_ROWS = (30, 31)
GAP_COL = 40
BAD_PIXEL = (5, 7)  # DECTRIS bit 1: dead
NOISY_PIXEL = (50, 60)  # bit 4: noisy
SPOT = (30, 20)  # a bright spot inside a module-gap row (frame 1)
AT_CUTOFF, BELOW_CUTOFF, ALL_ONES = (10, 10), (10, 11), (12, 12)  # frame 0
UINT32_MAX = np.iinfo(np.uint32).max


def _frames(n: int) -> np.ndarray:
    rng = np.random.default_rng(15)
    frames = rng.poisson(3.0, size=(n, H, W)).astype(np.uint32) + 1
    if n < 2:
        return frames
    frames[0][AT_CUTOFF] = CUTOFF
    frames[0][BELOW_CUTOFF] = CUTOFF - 1
    frames[0][ALL_ONES] = UINT32_MAX
    frames[1][SPOT] = 500  # below the cutoff: only the gap mask keeps this brightest pixel from counting
    return frames


def _pixel_mask() -> np.ndarray:
    mask = np.zeros((H, W), np.uint32)
    mask[list(GAP_ROWS), :] = 1  # bit 0: gap
    mask[:, GAP_COL] = 1
    mask[BAD_PIXEL] = 2
    mask[NOISY_PIXEL] = 16
    return mask


def _nx(group, nx_class: str):
    group.attrs["NX_class"] = nx_class
    return group


def _value(group, name, value, units=None, dtype=None):
    ds = group.create_dataset(name, data=value if isinstance(value, str) else np.asarray(value, dtype=dtype))
    if units is not None:
        ds.attrs["units"] = units
    return ds


def write_eiger_run(folder, *, frames_per_file=(PER_FILE,) * N_FILES, links=None, distance=(0.12, "m"),
                    saturation="countrate_correction_count_cutoff", stem="run"):
    """A DECTRIS-style master file and its data files; returns (master path, all frames written)."""
    folder = str(folder)
    frames = _frames(sum(frames_per_file))
    master = os.path.join(folder, f"{stem}_master.h5")
    with h5py.File(master, "w") as f:
        entry = _nx(f.create_group("entry"), "NXentry")
        _value(entry, "definition", "NXmx")
        data = _nx(entry.create_group("data"), "NXdata")
        inst = _nx(entry.create_group("instrument"), "NXinstrument")
        det = _nx(inst.create_group("detector"), "NXdetector")
        beam = _nx(inst.create_group("beam"), "NXbeam")
        spec = _nx(det.create_group("detectorSpecific"), "NXcollection")
        _value(det, "description", "Dectris EIGER2 X 4M")
        _value(det, "beam_center_x", 41.5, "pixel", np.float32)
        _value(det, "beam_center_y", 33.25, "pixel", np.float32)
        _value(det, "detector_distance", distance[0], distance[1], np.float32)
        _value(det, "x_pixel_size", 75e-6, "m", np.float32)
        _value(det, "y_pixel_size", 75e-6, "m", np.float32)
        _value(beam, "incident_wavelength", 0.9762, "angstrom", np.float32)
        _value(spec, "photon_energy", 12398.4198 / 0.9762, "eV", np.float32)
        _value(spec, "pixel_mask", _pixel_mask())
        if saturation is not None:
            _value(spec if saturation != "saturation_value" else det, saturation, CUTOFF, "counts", np.uint32)
        _value(spec, "nimages", PER_FILE, dtype=np.uint64)
        _value(spec, "ntrigger", N_FILES, dtype=np.uint64)
        names = links if links is not None else [f"data_{k + 1:06d}" for k in range(len(frames_per_file))]
        for name in names:
            data[name] = h5py.ExternalLink(f"{stem}_{name}.h5", "/entry/data/data")
    start = 0
    for name, n in zip(names, frames_per_file):
        with h5py.File(os.path.join(folder, f"{stem}_{name}.h5"), "w") as f:
            g = _nx(_nx(f.create_group("entry"), "NXentry").create_group("data"), "NXdata")
            ds = g.create_dataset("data", data=frames[start:start + n], chunks=(1, H, W), **hdf5plugin.Bitshuffle())
            ds.attrs["image_nr_low"], ds.attrs["image_nr_high"] = start + 1, start + n
        start += n
    return master, frames


@pytest.fixture
def run(tmp_path):
    return write_eiger_run(tmp_path)


def _expected_mask(raw: np.ndarray) -> np.ndarray:
    return (_pixel_mask() != 0) | (raw >= CUTOFF)


def test_master_frames_mask_and_geometry_agree_with_fabio_and_h5py(run):
    import fabio

    master, frames = run
    assert find_reader(master).name == "nxmx"
    with h5py.File(os.path.join(os.path.dirname(master), "run_data_000002.h5")) as f:  # bitshuffle, as DECTRIS
        assert f["/entry/data/data"]._filters["32008"][-1] == 2  # bitshuffle filter, LZ4 compression
    fab = fabio.open(master)
    assert type(fab).__name__ == "EigerImage" and fab.nframes == 6
    with open_source(master) as src, h5py.File(master) as m:
        assert isinstance(src, NXmxSource)
        assert len(src) == 6 and src.shape == (H, W)
        assert [os.path.basename(p) for p in src.data_files] == ["run_data_000001.h5", "run_data_000002.h5"]
        pm = m["/entry/instrument/detector/detectorSpecific/pixel_mask"][()]
        for i in range(6):
            fr = src.read(i)
            ref = fab.getframe(i).data
            assert fr.data.dtype == np.float32 and fr.mask.dtype == bool
            np.testing.assert_array_equal(fr.data, ref.astype(np.float32))
            np.testing.assert_array_equal(fr.data, frames[i].astype(np.float32))
            np.testing.assert_array_equal(fr.mask, (pm != 0) | (ref >= CUTOFF))
            assert fr.meta.extra["data_file"] == f"run_data_00000{i // 3 + 1}.h5"
            assert fr.meta.extra["data_file_frame"] == i % 3
        meta = src.read_meta(4)
        det = m["/entry/instrument/detector"]
        assert meta.pixel_size_mm == pytest.approx(det["x_pixel_size"][()] * 1e3) == pytest.approx(0.075)
        assert meta.distance_mm == pytest.approx(det["detector_distance"][()] * 1e3) == pytest.approx(120.0)
        assert meta.wavelength_A == pytest.approx(m["/entry/instrument/beam/incident_wavelength"][()])
        assert meta.wavelength_A == pytest.approx(0.9762, rel=1e-6)
        assert meta.beam_centre_px == (41.5, 33.25)
        assert meta.detector == "Dectris EIGER2 X 4M"
        assert meta.extra["saturated_value"] == CUTOFF and meta.extra["nimages"] == 6
        assert meta.index == 4 and meta.source == master
        assert src.frame_shape(5) == (H, W)


def test_mask_bits_cutoff_and_all_ones(run):
    master, frames = run
    with open_source(master) as src:
        fr = src.read(0)
    assert fr.mask[AT_CUTOFF] and not fr.mask[BELOW_CUTOFF]  # at the count cutoff: invalid; one below: valid
    assert fr.mask[ALL_ONES] and fr.data[ALL_ONES] == np.float32(UINT32_MAX)
    assert fr.mask[BAD_PIXEL] and fr.mask[NOISY_PIXEL]  # DECTRIS bit flags 2 (dead) and 16 (noisy)
    assert fr.mask[GAP_ROWS[0]].all() and fr.mask[:, GAP_COL].all()
    np.testing.assert_array_equal(fr.mask, _expected_mask(frames[0]))
    assert int(fr.mask.sum()) == 2 * W + H - 2 + 2 + 2  # gap rows and column, dead and noisy, cutoff and 2**32-1


def test_all_ones_is_invalid_without_a_cutoff(tmp_path):
    master, frames = write_eiger_run(tmp_path, saturation=None)
    with open_source(master) as src:
        fr = src.read(0)
    assert "saturated_value" not in fr.meta.extra
    assert fr.mask[ALL_ONES] and not fr.mask[AT_CUTOFF]
    np.testing.assert_array_equal(fr.mask, (_pixel_mask() != 0) | (frames[0] == UINT32_MAX))


def test_spot_in_a_gap_row_cannot_count(run):
    master, frames = run
    with open_source(master) as src:
        fr = src.read(1)
    assert fr.data[SPOT] == 500 and fr.data.max() == 500
    assert fr.mask[SPOT]
    assert fr.data[~fr.mask].max() < 100  # nothing bright is left unmasked


def test_saturation_value_and_units(tmp_path):
    master, _ = write_eiger_run(tmp_path, distance=(120.0, "mm"), saturation="saturation_value")
    with open_source(master) as src:
        fr = src.read(0)
    assert fr.meta.distance_mm == pytest.approx(120.0)
    assert fr.meta.extra["saturated_value"] == CUTOFF
    assert fr.mask[AT_CUTOFF] and not fr.mask[BELOW_CUTOFF]


@pytest.mark.parametrize("gone", [1, 2])
def test_missing_data_file_is_a_per_frame_error(tmp_path, gone):
    master, frames = write_eiger_run(tmp_path)
    missing = f"run_data_{gone:06d}.h5"
    os.remove(tmp_path / missing)
    bad = set(range((gone - 1) * 3, gone * 3))
    with open_source(master) as src:
        assert len(src) == 6
        assert list(src.missing) == [str(tmp_path / missing)]
        for i in range(6):
            if i in bad:
                with pytest.raises(FrameReadError) as exc:
                    src.read(i)
                assert exc.value.path == master and exc.value.frame == i
                assert missing in str(exc.value) and "missing" in str(exc.value)
                assert str(exc.value) == (f"{master}, frame {i}: data file {missing} is missing (looked for "
                                          f"{tmp_path / missing}, the target of the external link "
                                          f"/entry/data/data_{gone:06d}): cannot read its frame {i % 3}")
                with pytest.raises(FrameReadError, match=missing):
                    src.read_meta(i)
            else:
                np.testing.assert_array_equal(src.read(i).data, frames[i].astype(np.float32))
    items = list(iter_frames([master]))
    assert [i for _, i, _ in items] == list(range(6))
    assert [i for _, i, it in items if isinstance(it, FrameReadError)] == sorted(bad)


def test_data_file_still_being_written_counts_its_frames(tmp_path):
    master, frames = write_eiger_run(tmp_path, frames_per_file=(3, 1))  # nimages x ntrigger says 6
    with open_source(master) as src:
        assert len(src) == 4
        np.testing.assert_array_equal(src.read(3).data, frames[3].astype(np.float32))


def test_links_follow_their_numbers_and_only_missing_files_refuse_to_open(tmp_path):
    master, frames = write_eiger_run(tmp_path, links=["data_000010", "data_000002"], frames_per_file=(3, 3))
    with open_source(master) as src:  # data_000002 (frames[3:]) comes before data_000010 (frames[:3])
        np.testing.assert_array_equal(src.read(0).data, frames[3].astype(np.float32))
        np.testing.assert_array_equal(src.read(3).data, frames[0].astype(np.float32))
    for name in ("run_data_000010.h5", "run_data_000002.h5"):
        os.remove(tmp_path / name)
    with pytest.raises(FrameReadError, match="no data file of this master file can be read") as exc:
        open_source(master)
    assert exc.value.path == master and "run_data_000010.h5" in str(exc.value)


def test_master_without_data_links_is_a_clear_error(tmp_path):
    master, _ = write_eiger_run(tmp_path, links=[], frames_per_file=())
    assert find_reader(master).name == "nxmx"
    with pytest.raises(FrameReadError, match="no data_000001") as exc:
        open_source(master)
    assert exc.value.path == master and "NXmx master file" in str(exc.value)


def test_screen_a_master_file_end_to_end(tmp_path):
    import csv

    from diffscreen.cli import main

    master, _ = write_eiger_run(tmp_path)
    os.remove(tmp_path / "run_data_000002.h5")
    out = tmp_path / "out"
    assert main(["screen", master, "--out", str(out)]) == 1  # finished, some frames could not be screened
    with open(out / "scores.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["file"], r["frame"]) for r in rows] == [(master, str(i)) for i in range(6)]
    assert [r["label"] == "error" for r in rows] == [False] * 3 + [True] * 3
    with open(out / "errors.csv", newline="") as fh:
        errors = list(csv.DictReader(fh))
    assert [e["frame"] for e in errors] == ["3", "4", "5"]
    assert all("run_data_000002.h5 is missing" in e["error"] for e in errors)


def test_frames_stored_in_the_master_itself(tmp_path):
    master, _ = write_eiger_run(tmp_path, links=[], frames_per_file=())
    stack = _frames(4)
    with h5py.File(master, "a") as f:
        f["/entry/data"].create_dataset("data", data=stack, chunks=(1, H, W), **hdf5plugin.Bitshuffle())
    with open_source(master) as src:
        assert len(src) == 4 and src.data_files == [master]
        fr = src.read(1)
    np.testing.assert_array_equal(fr.data, stack[1].astype(np.float32))
    assert fr.mask[SPOT] and fr.meta.extra["data_file"] == "run_master.h5" and fr.meta.distance_mm == pytest.approx(120)


def test_a_folder_of_an_eiger_run_screens_each_frame_once_through_its_master(tmp_path):
    from diffscreen.io import expand_inputs

    master, _ = write_eiger_run(tmp_path)
    data = sorted(str(p) for p in tmp_path.glob("run_data_*.h5"))
    assert len(data) == 2
    assert expand_inputs([str(tmp_path)]) == [master]
    assert expand_inputs([str(tmp_path / "*.h5")]) == [master]
    # a data file whose master is not in the list is kept (and refused by its reader with a clear error)
    assert expand_inputs(data) == data
