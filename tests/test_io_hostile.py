"""Issue 18: hostile and malformed input files never crash a reader.

Every case builds its file in ``tmp_path`` and checks the exact error type
and that the one-line message names the file (and frame) and the problem;
the decompression bomb also checks time and memory in a child process.
"""

import bz2
import gzip
import os
import socket
import stat
import struct
import subprocess
import sys
import textwrap
import threading
import time
import tracemalloc

import h5py
import numpy as np
import pytest

from diffscreen.errors import BadFrameError, ConfigError, DiffscreenError, FrameReadError, LabelError
from diffscreen.io import (
    FrameMeta,
    check_geometry,
    expand_inputs,
    iter_frames,
    open_source,
    read_frame,
    read_labels,
)
from diffscreen.io import limits
from diffscreen.io.base import BaseSource, check_input_file, reader_errors


# --------------------------------------------------------------------------- builders


def smv(w, h, *, header_bytes=512, extra="", body=None) -> bytes:
    text = (f"{{\nHEADER_BYTES={header_bytes};\nDIM=2;\nBYTE_ORDER=little_endian;\nTYPE=unsigned_short;\n"
            f"SIZE1={w};\nSIZE2={h};\nPIXEL_SIZE=0.1;\n{extra}}}\n")
    pixels = (np.arange(int(w) * int(h)) % 100 + 1).astype("<u2").tobytes() if body is None else body
    return text.encode().ljust(512, b" ") + pixels


def edf(d1, d2, *, body=None, size=None) -> bytes:
    text = f"{{\nHeaderID = EH:000001:000000:000000 ;\nByteOrder = LowByteFirst ;\nDataType = UnsignedShort ;\n" \
           f"Dim_1 = {d1} ;\nDim_2 = {d2} ;\n" + (f"Size = {size} ;\n" if size is not None else "")
    pixels = (np.arange(48 * 64) % 50 + 1).astype("<u2").tobytes() if body is None else body
    return text.encode().ljust(1022, b" ") + b"}\n" + pixels


def tiff(w, h, *, ifd=None, strip=8, entries=None) -> bytes:
    data = (np.arange(48 * 64) % 50 + 1).astype("<u2").tobytes() if w * h <= 48 * 64 else b""
    tags = [(256, 4, w), (257, 4, h), (258, 3, 16), (259, 3, 1), (262, 3, 1), (273, 4, strip), (277, 3, 1),
            (278, 4, h), (279, 4, min(w * h * 2, 2**32 - 1))]
    body = b"".join(struct.pack("<HHI", t, ty, 1) + (struct.pack("<I", v) if ty == 4 else struct.pack("<HH", v, 0))
                    for t, ty, v in tags)
    d = struct.pack("<H", len(tags) if entries is None else entries) + body + b"\0\0\0\0"
    return b"II*\0" + struct.pack("<I", 8 + len(data) if ifd is None else ifd) + data + d


def mar345(side, pixels=None) -> bytes:
    words = struct.pack("<16i", 1234, side, 0, 1, 0, side * side if pixels is None else pixels, 150, 150,
                        1000000, 100000, 0, 0, 0, 0, 0, 0)
    return (words + b"mar research".ljust(64)).ljust(4096, b" ") + bytes(64)


def minicbf(path, *, distance="0.15"):
    from fabio.cbfimage import CbfImage

    a = (np.arange(48 * 64).reshape(48, 64) % 50 + 1).astype(np.int32)
    text = (f"# Detector: PILATUS 6M\r\n# Pixel_size 172e-6 m x 172e-6 m\r\n# Detector_distance {distance} m\r\n"
            "# Wavelength 1.0 A\r\n# Beam_xy (30.0, 20.0) pixels\r\n")
    CbfImage(data=a, header={"_array_data.header_contents": text}).write(str(path))
    return path


def write(path, data: bytes):
    path.write_bytes(data)
    return path


def one_line(exc) -> str:
    text = str(exc)
    assert "\n" not in text and "Traceback" not in text, text
    return text


def assert_names(exc, path, *words, frame=None):
    text = one_line(exc)
    assert os.path.basename(str(path)) in text, text
    if frame is not None:
        assert f"frame {frame}" in text, text
    for w in words:
        assert w in text, f"{w!r} not in {text!r}"


@pytest.fixture
def limit(monkeypatch):
    """Restore the pixel limit (and its environment variable) after the test."""
    monkeypatch.setattr(limits, "_max_pixels", limits.DEFAULT_MAX_FRAME_PIXELS)
    monkeypatch.setenv(limits.ENV_MAX_FRAME_PIXELS, str(limits.DEFAULT_MAX_FRAME_PIXELS))
    return limits


# --------------------------------------------------------------------------- the limit


def test_check_frame_size_names_shape_limit_and_option(limit):
    limit.check_frame_size((10000, 10000), "a.h5")  # exactly at the limit: fine
    with pytest.raises(FrameReadError) as ei:
        limit.check_frame_size((100000, 100000), "a.h5", 7)
    assert str(ei.value) == ("a.h5, frame 7: frame of 100000 x 100000 pixels exceeds the limit of 100,000,000 "
                             "pixels (--max-frame-pixels)")
    for bad in [(0, 10), (-5, 48), (2.5, 4)]:
        with pytest.raises(FrameReadError, match="not valid|not a whole"):
            limit.check_frame_size(bad, "a.h5")


def test_set_max_frame_pixels_is_used_by_readers_and_refuses_nonsense(limit, tmp_path):
    f = write(tmp_path / "ok.img", smv(64, 48))
    assert read_frame(f).data.shape == (48, 64)
    limit.set_max_frame_pixels(3000)
    assert limit.max_frame_pixels() == 3000 and os.environ[limit.ENV_MAX_FRAME_PIXELS] == "3000"
    with pytest.raises(FrameReadError) as ei:
        read_frame(f)
    assert_names(ei.value, f, "48 x 64 pixels exceeds the limit of 3,000 pixels", frame=0)
    for bad in (0, -3, 1.5, "many"):
        with pytest.raises(ConfigError, match="max-frame-pixels"):
            limit.set_max_frame_pixels(bad)
    assert limit.max_frame_pixels() == 3000


# --------------------------------------------------------------------------- compressed inputs

_CHILD = textwrap.dedent("""
    import resource, sys, time
    from diffscreen.errors import FrameReadError
    from diffscreen.io import read_frame
    t = time.perf_counter()
    try:
        read_frame(sys.argv[1])
        print("READ")
    except FrameReadError as exc:
        print("ERR", exc)
    print("T", time.perf_counter() - t)
    # VmHWM: this process's own peak (ru_maxrss would include the parent's, kept across fork and exec)
    with open("/proc/self/status") as fh:
        hwm = next((line.split()[1] for line in fh if line.startswith("VmHWM:")), None)
    print("RSS_MB", int(hwm) / 1024 if hwm else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
""")


def _run_capped(path, cap_bytes=1536 << 20):
    """Read a file in a child process whose address space is capped; its error line, seconds and peak RSS."""
    import resource

    def cap():
        resource.setrlimit(resource.RLIMIT_AS, (cap_bytes, cap_bytes))

    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-c", _CHILD, str(path)], capture_output=True, text=True, timeout=120,
                         preexec_fn=cap, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = dict(line.split(" ", 1) for line in out.stdout.strip().splitlines())
    return lines.get("ERR"), float(lines["T"]), float(lines["RSS_MB"])


def _bz2_bomb(path, head: bytes, gib: int = 4):
    """``head`` then ``gib`` GiB of zeros, as concatenated bzip2 streams (a few KB on disk)."""
    zeros = bz2.compress(bytes(64 << 20))
    path.write_bytes(bz2.compress(head) + zeros * (16 * gib))
    return path


def test_issue_bomb_smv_header_100000_squared_is_refused_fast_and_small(tmp_path):
    head = (b"{\nHEADER_BYTES=  512;\nDIM=2;\nBYTE_ORDER=little_endian;\nTYPE=unsigned_short;\nSIZE1=100000;\n"
            b"SIZE2=100000;\n}\n").ljust(512, b" ")
    bomb = _bz2_bomb(tmp_path / "bomb.img.bz2", head)
    assert bomb.stat().st_size < 10_000
    err, seconds, rss = _run_capped(bomb)
    assert err is not None and "bomb.img.bz2, frame 0: frame of 100000 x 100000 pixels exceeds the limit" in err
    assert seconds < 5.0 and rss < 400, (seconds, rss)  # before: 19 s and > 6 GB


def test_legit_header_followed_by_a_bomb_stops_at_the_headers_budget(tmp_path):
    bomb = _bz2_bomb(tmp_path / "padded.img.bz2", smv(64, 48), gib=2)
    err, seconds, rss = _run_capped(bomb)
    assert err is not None and "padded.img.bz2, frame 0: decompresses to more than" in err
    assert "64 x 48" in err and seconds < 5.0 and rss < 400, (err, seconds, rss)


@pytest.mark.parametrize("compress", [bz2.compress, gzip.compress])
def test_truncated_data_inside_a_complete_compressed_stream_is_refused(tmp_path, compress):
    f = write(tmp_path / "short.img.gz", compress(smv(64, 48)[:3000]))
    with pytest.raises(FrameReadError) as ei:
        read_frame(f)
    assert_names(ei.value, f, "truncated", "needs 6,656 bytes", "holds 3,000", frame=0)


def test_cut_compressed_stream_is_a_damaged_stream(tmp_path):
    data = bz2.compress(smv(256, 256, body=os.urandom(256 * 256 * 2)))
    f = write(tmp_path / "cut.img.bz2", data[: len(data) // 2])
    with pytest.raises(FrameReadError) as ei:  # nothing decompresses: refused when opened
        read_frame(f)
    assert_names(ei.value, f, "damaged or truncated bzip2 stream", "EOFError")
    side = 1000  # 2 MB of noise: the first bzip2 block decompresses, a later one is cut
    data = bz2.compress(smv(side, side, body=os.urandom(side * side * 2)))
    g = write(tmp_path / "cut2.img.bz2", data[: len(data) * 3 // 4])
    with pytest.raises(FrameReadError) as ei:
        read_frame(g)
    assert_names(ei.value, g, "damaged or truncated bzip2 stream", "EOFError", frame=0)


def test_compressed_good_files_still_read(tmp_path):
    for name, data in (("a.img.bz2", bz2.compress(smv(64, 48))), ("a.tif.gz", gzip.compress(tiff(64, 48))),
                       ("a.edf.bz2", bz2.compress(edf(64, 48)))):
        fr = read_frame(write(tmp_path / name, data))
        assert fr.data.shape == (48, 64) and fr.data[0, 1] > 0, name


# --------------------------------------------------------------------------- fabio / pycbf readers

HEADER_CASES = [
    ("size1.img", lambda: smv("abc", 48, body=b""), "SIZE1 = 'abc' is not a whole number"),
    ("neg.img", lambda: smv(-5, 48, body=b""), "frame shape (48, -5) is not valid"),
    ("nosize.img", lambda: b"{\nHEADER_BYTES=512;\nTYPE=unsigned_short;\n}\n".ljust(512, b" "), "lacks SIZE1"),
    ("hb.img", lambda: smv(64, 48, header_bytes=10**12), "HEADER_BYTES = 1000000000000"),
    ("huge.img", lambda: smv(100000, 100000, body=b""), "frame of 100000 x 100000 pixels exceeds"),
    ("short.img", lambda: smv(64, 48)[:3000], "truncated: its SMV header's 64 x 48"),
    ("neg.edf", lambda: edf(-5, 48, body=b""), "frame shape (48, -5) is not valid"),
    ("huge.edf", lambda: edf(10**6, 10**6, body=b""), "frame of 1000000 x 1000000 pixels exceeds"),
    ("short.edf", lambda: edf(64, 48)[:2000], "truncated: its EDF header's 64 x 48"),
    ("size.edf", lambda: edf(64, 48, size=-1), "Size = -1 is negative"),
    ("dimkey.edf", lambda: edf(64, 48).replace(b"Dim_2 = 48 ;", b"Dim_99999999999999999999 = 48 ;"),
     "names dimension Dim_99999999999999999999"),  # fabio would loop over 1e20 ranks
    ("huge.tif", lambda: tiff(100000, 100000), "frame of 100000 x 100000 pixels exceeds"),
    ("ifd.tif", lambda: tiff(64, 48, ifd=10**7), "TIFF directory at byte 10,000,000 lies past the end"),
    ("strip.tif", lambda: tiff(64, 48, strip=10**6), "truncated: its TIFF directory's 64 x 48 frame needs"),
    ("entries.tif", lambda: tiff(64, 48, entries=5000), "TIFF directory at byte"),
    ("short.tif", lambda: tiff(64, 48)[:3000], "lies past the end of the file"),
    ("loop.tif", lambda: tiff(64, 48)[:-4] + struct.pack("<I", 8 + 48 * 64 * 2), "page chain loops back"),
    ("huge.mar3450", lambda: mar345(46000), "frame of 46000 x 46000 pixels exceeds"),
    ("zero.mar3450", lambda: mar345(0, 0), "0-pixel side"),
    ("empty.mar3450", lambda: mar345(9000), "truncated: its mar345 header's 9000 x 9000 frame"),
]


@pytest.mark.parametrize("name,build,problem", HEADER_CASES, ids=[c[0] for c in HEADER_CASES])
def test_malformed_headers_are_one_line_frame_read_errors(tmp_path, name, build, problem):
    f = write(tmp_path / name, build())
    tracemalloc.start()
    try:
        with pytest.raises(FrameReadError) as ei:
            read_frame(f)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert_names(ei.value, f, problem, frame=0)
    assert peak < 50 << 20  # nothing the header claims was allocated


def test_minicbf_truncated_or_lying_about_its_size(tmp_path):
    good = minicbf(tmp_path / "good.cbf")
    data = good.read_bytes()
    assert read_frame(good).data.shape == (48, 64)
    cut = write(tmp_path / "cut.cbf", data[: len(data) - 1500])
    with pytest.raises(FrameReadError) as ei:
        read_frame(cut)
    assert_names(ei.value, cut, "truncated: its CBF header's 64 x 48 frame", frame=0)
    lying = write(tmp_path / "lying.cbf", data.replace(b"X-Binary-Size: 3072", b"X-Binary-Size: 99999999"))
    with pytest.raises(FrameReadError) as ei:
        read_frame(lying)
    assert_names(ei.value, lying, "needs 100,", frame=0)
    huge = write(tmp_path / "huge.cbf", data.replace(b"Fastest-Dimension: 64", b"Fastest-Dimension: 99999999"))
    with pytest.raises(FrameReadError) as ei:
        read_frame(huge)
    assert_names(ei.value, huge, "48 x 99999999 pixels exceeds the limit", frame=0)
    big = write(tmp_path / "big.cbf", data.replace(b"Fastest-Dimension: 64", b"Fastest-Dimension: 640000"))
    with pytest.raises(FrameReadError) as ei:  # within the limit, but 3 KB cannot hold 30 Mpx
        read_frame(big)
    assert_names(ei.value, big, "30,720,000 pixels in 3,072 bytes", frame=0)
    marker = data.index(b"\x0c\x1a\x04\xd5")
    nomark = write(tmp_path / "nomark.cbf", data[:marker] + b"XXXX" + data[marker + 4:])
    box = _in_thread(lambda: read_frame(nomark))  # fabio searches for the marker forever
    assert isinstance(box.get("error"), FrameReadError)
    assert_names(box["error"], nomark, "lacks its start marker", frame=0)
    gz = write(tmp_path / "cut.cbf.gz", gzip.compress(data[: len(data) - 1500]))
    with pytest.raises(FrameReadError) as ei:
        read_frame(gz)
    assert_names(ei.value, gz, "truncated", frame=0)


def test_cbf_without_binary_section_and_a_cbf_bomb(tmp_path):
    garbage = write(tmp_path / "garbage.cbf", b"###CBF: VERSION 1.5\n" + os.urandom(5000))
    with pytest.raises(FrameReadError) as ei:
        read_frame(garbage)
    assert_names(ei.value, garbage, "no binary section", frame=0)
    bomb = tmp_path / "zeros.cbf.bz2"
    bomb.write_bytes(bz2.compress(b"###CBF: VERSION 1.5\n") + bz2.compress(bytes(64 << 20)) * 64)
    t = time.perf_counter()
    with pytest.raises(FrameReadError) as ei:
        read_frame(bomb)
    assert time.perf_counter() - t < 3.0
    assert_names(ei.value, bomb, "no binary section", "16,777,216 bytes", frame=0)


@pytest.mark.parametrize("data", [b"", b"\0" * 100, b"II*\0" + b"\xff" * 4, b"{\nHEADER_BYTES=", b"BZh9" + b"x" * 99])
def test_empty_and_garbage_files_are_diffscreen_errors(tmp_path, data):
    f = write(tmp_path / "junk.img", data)
    with pytest.raises(DiffscreenError) as ei:
        read_frame(f)
    assert isinstance(ei.value, FrameReadError)
    assert_names(ei.value, f)


def test_imgcif_huge_array_dimension_and_broken_geometry(real_frame, tmp_path):
    data = real_frame("real-frames", "idx-20130301060858401.cbf").read_bytes()
    big = write(tmp_path / "bigdim.cbf", data.replace(b" ARRAY_D0Q0 . 3 8 3 increasing .",
                                                      b" ARRAY_D0Q0 . 3 99999999 3 increasing .", 1))
    with pytest.raises(FrameReadError) as ei:
        read_frame(big)
    assert_names(ei.value, big, "99999999 x 185 x 388 pixels exceeds the limit", frame=0)
    axis = b"AXIS_D0Q0S0A0_S translation detector FS_D0Q0S0A0 0 -1 0 -10.662240 10.167600 0.0"
    assert axis in data
    far = write(tmp_path / "far.cbf", data.replace(axis, axis.replace(b"-10.662240", b"-10000000.66224")))
    with pytest.raises(FrameReadError) as ei:
        read_frame(far)
    assert_names(ei.value, far, "pixels exceeds the limit", frame=0)  # the assembled frame, before allocating
    nan = write(tmp_path / "nan.cbf", data.replace(axis, axis.replace(b"-10.662240", b"nan")))
    with pytest.raises(FrameReadError) as ei:
        read_frame(nan)
    assert_names(ei.value, nan, "panel ARRAY_D0Q0S0A0 has a non-finite", frame=0)


def test_fabio_fallback_bomb_is_bounded(real_frame, tmp_path, limit):
    src = real_frame("real-frames-2", "i01f0001.kcd.bz2")
    raw = bz2.open(src).read()
    limit.set_max_frame_pixels(2_000_000)  # budget 8 MB: a KCD frame of 0.36 Mpx fits, the bomb does not
    assert read_frame(src).data.shape == (576, 625)
    bomb = write(tmp_path / "padded.kcd.bz2", bz2.compress(raw) + bz2.compress(bytes(64 << 20)) * 16)
    with pytest.raises(FrameReadError) as ei:
        read_frame(bomb)
    assert_names(ei.value, bomb, "decompresses to more than 9,048,576 bytes", frame=0)


# --------------------------------------------------------------------------- HDF5


def _cxi(path, *, n=2, shape=(32, 40), mask=None, static_mask=None, distance=None):
    rng = np.random.default_rng(0)
    with h5py.File(path, "w") as f:
        f["entry_1/data_1/data"] = rng.poisson(20, (n, *shape)).astype("u2")
        if mask is not None:
            f["entry_1/data_1/mask"] = mask
        if static_mask is not None:
            f["entry_1/instrument_1/detector_1/mask"] = static_mask
        if distance is not None:
            f["entry_1/instrument_1/detector_1/distance"] = distance
    return path


def test_issue_cxi_mask_of_the_wrong_shape_refuses_the_file_at_open(tmp_path):
    f = _cxi(tmp_path / "a.cxi", mask=np.zeros((2, 32, 10), "u2"))
    with pytest.raises(FrameReadError) as ei:
        open_source(f)
    assert_names(ei.value, f, "mask /entry_1/data_1/mask has shape (2, 32, 10)", "(32, 40)")
    g = _cxi(tmp_path / "b.cxi", static_mask=np.zeros((31, 40), "u1"))
    with pytest.raises(FrameReadError) as ei:
        open_source(g)
    assert_names(ei.value, g, "mask /entry_1/instrument_1/detector_1/mask has shape (31, 40)")
    ok = _cxi(tmp_path / "c.cxi", mask=np.zeros((2, 32, 40), "u2"), static_mask=np.zeros((32, 40), bool))
    assert read_frame(ok, 1).data.shape == (32, 40)


def test_issue_external_link_to_a_missing_file_is_named(tmp_path):
    f = tmp_path / "e.h5"
    with h5py.File(f, "w") as h:
        h["entry_1/data_1/data"] = h5py.ExternalLink("missing.h5", "/data")
    for spec in (f, f"{f}:/entry_1/data_1/data"):
        with pytest.raises(FrameReadError) as ei:
            open_source(spec)
        assert_names(ei.value, f, "/entry_1/data_1/data is an external link to missing.h5:/data",
                     "cannot be opened")


def test_huge_chunked_dataset_is_refused_at_open_without_allocating(tmp_path):
    f = tmp_path / "big.h5"
    with h5py.File(f, "w") as h:
        h.create_dataset("data", shape=(2, 100000, 100000), chunks=(1, 256, 256), dtype="u2")
    tracemalloc.start()
    try:
        with pytest.raises(FrameReadError) as ei:
            open_source(f"{f}:/data")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert_names(ei.value, f, "frame of 100000 x 100000 pixels exceeds the limit")
    assert peak < 20 << 20


@pytest.mark.parametrize("name,value,problem", [
    ("s", np.array([b"abc"] * 4).reshape(2, 2), "holds string values"),
    ("b", np.zeros((2, 4, 4), bool), "holds bool values"),
    ("c", np.zeros((2, 4, 4), dtype=[("a", "i4"), ("b", "f8")]), "holds compound values"),
    ("one", np.zeros(5), "has shape (5,); expected frames"),
    ("four", np.zeros((1, 2, 3, 4)), "has shape (1, 2, 3, 4); expected frames"),
])
def test_datasets_of_the_wrong_kind_are_refused(tmp_path, name, value, problem):
    f = tmp_path / "kinds.h5"
    with h5py.File(f, "w") as h:
        h[name] = value
    with pytest.raises(FrameReadError) as ei:
        open_source(f"{f}:/{name}")
    assert_names(ei.value, f, f"/{name} {problem}")


def test_damaged_chunk_is_a_frame_read_error_naming_the_frame(tmp_path):
    f = tmp_path / "dmg.h5"
    with h5py.File(f, "w") as h:
        h.create_dataset("data", data=np.random.default_rng(0).poisson(5, (3, 64, 64)).astype("u2"),
                         chunks=(1, 64, 64), compression="gzip")
        info = h["data"].id.get_chunk_info(1)
    with open(f, "r+b") as fh:
        fh.seek(info.byte_offset)
        fh.write(os.urandom(info.size))
    with open_source(f"{f}:/data") as src:
        assert src.read(0).data.shape == (64, 64)
        with pytest.raises(FrameReadError) as ei:
            src.read(1)
        assert src.read(2).data.shape == (64, 64)
    assert_names(ei.value, f, "cannot read /data", frame=1)


def test_frames_are_read_one_at_a_time(tmp_path):
    f = tmp_path / "many.h5"
    with h5py.File(f, "w") as h:
        h.create_dataset("data", data=np.ones((40, 256, 256), "f4"), chunks=(1, 256, 256))
    with open_source(f"{f}:/data") as src:
        tracemalloc.start()
        try:
            src.read(17)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert peak < 4 * 256 * 256 * 4  # a few frames at most, never the 10 MB dataset


def test_hostile_per_frame_column_is_a_frame_error(tmp_path):
    f = _cxi(tmp_path / "col.cxi", distance=np.zeros((2, 5000)))
    with pytest.raises(FrameReadError) as ei:
        read_frame(f, 1)
    assert_names(ei.value, f, "per-frame column /entry_1/instrument_1/detector_1/distance has shape (2, 5000)",
                 frame=1)


# --------------------------------------------------------------------------- not regular files


def _in_thread(fn, timeout=5.0):
    box = {}

    def run():
        try:
            box["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed back to the test
            box["error"] = exc

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(timeout)
    assert not t.is_alive(), "the call blocked"
    return box


def test_fifo_socket_and_devices_are_refused_without_opening(tmp_path):
    fifo = tmp_path / "pipe.img"
    os.mkfifo(fifo)
    sock_path = tmp_path / "s.img"
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(sock_path))
    try:
        cases = [(fifo, "is a FIFO"), (sock_path, "is a socket"), ("/dev/zero", "is a character device"),
                 ("/dev/urandom", "is a character device")]
        for path, problem in cases:
            box = _in_thread(lambda: open_source(path))
            assert isinstance(box.get("error"), FrameReadError), box
            assert_names(box["error"], path, problem)
    finally:
        sock.close()


def test_fifo_in_a_run_is_one_error_between_good_frames(tmp_path):
    a, b = write(tmp_path / "a.img", smv(64, 48)), write(tmp_path / "b.img", smv(64, 48))
    fifo = tmp_path / "pipe.img"
    os.mkfifo(fifo)
    assert expand_inputs([a, fifo, b]) == [str(a), str(fifo), str(b)]
    assert expand_inputs([tmp_path]) == [str(a), str(b)]  # a folder's FIFO is no frame file
    box = _in_thread(lambda: list(iter_frames([a, fifo, b])))
    items = box["value"]
    assert [(os.path.basename(s), i) for s, i, _ in items] == [("a.img", 0), ("pipe.img", -1), ("b.img", 0)]
    assert isinstance(items[1][2], FrameReadError) and "is a FIFO" in str(items[1][2])


def test_directory_dangling_link_and_unreadable_file(tmp_path):
    with pytest.raises(FrameReadError) as ei:
        open_source(tmp_path)
    assert_names(ei.value, tmp_path, "is a directory")
    link = tmp_path / "dangling.img"
    link.symlink_to(tmp_path / "gone.img")
    with pytest.raises(FrameReadError) as ei:
        open_source(link)
    assert_names(ei.value, link, "dangling symbolic link to", "gone.img")
    # a shell glob lists a dangling link: it stays in the run, to become its own error row (issue 18)
    assert expand_inputs([str(link)]) == [str(link)]


def test_unreadable_file_is_refused(tmp_path, monkeypatch):
    f = write(tmp_path / "secret.img", smv(64, 48))
    os.chmod(f, 0)
    try:
        if os.geteuid() == 0:  # root may read anything: pretend to be a user who may not
            real_access = os.access
            monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if str(p) == str(f) else
                                real_access(p, mode, **kw))
        with pytest.raises(FrameReadError) as ei:
            open_source(f)
        assert_names(ei.value, f, "permission denied")
    finally:
        os.chmod(f, stat.S_IRUSR | stat.S_IWUSR)


def test_check_input_file_accepts_a_regular_file(tmp_path):
    f = write(tmp_path / "ok.img", smv(64, 48))
    assert check_input_file(f).st_size == len(smv(64, 48))


# --------------------------------------------------------------------------- the wrapper


def test_reader_errors_wraps_library_exceptions_only():
    for exc in (KeyError("Unable to open object"), ValueError("operands could not be broadcast"), OSError("x"),
                TypeError("t"), RuntimeError("r"), EOFError("e"), Exception("CBFlib Error(s): CBF_FORMAT")):
        with pytest.raises(FrameReadError) as ei:
            with reader_errors("run.cxi", 4, "read the mask"):
                raise exc
        text = one_line(ei.value)
        assert text.startswith("run.cxi, frame 4: cannot read the mask (") and type(exc).__name__ in text
        assert ei.value.__cause__ is exc
    own = BadFrameError("kept", path="a")
    with pytest.raises(BadFrameError) as ei:
        with reader_errors("x"):
            raise own
    assert ei.value is own
    with pytest.raises(NameError):  # a bug is not a bad file
        with reader_errors("x"):
            raise NameError("oops")


def test_every_reader_read_is_wrapped():
    class Broken(BaseSource):
        path = "broken.h5"

        def __len__(self):
            return 3

        @property
        def shape(self):
            return (2, 2)

        def _read(self, index):
            raise ValueError("operands could not be broadcast together")

    with pytest.raises(FrameReadError) as ei:
        Broken().read(2)
    assert_names(ei.value, "broken.h5", "ValueError: operands could not be broadcast", frame=2)


# --------------------------------------------------------------------------- geometry


def test_check_geometry_warns_about_each_absurd_value():
    assert check_geometry(FrameMeta("a.cbf", 0, pixel_size_mm=0.172, distance_mm=150.0, wavelength_A=1.0,
                                    beam_centre_px=(1200.0, 1300.0)), shape=(2527, 2463)) == []
    assert check_geometry(FrameMeta("a.cbf")) == []  # unknown is not absurd
    m = FrameMeta("run.cxi", 3, pixel_size_mm=1e-9, distance_mm=0.0, wavelength_A=float("nan"),
                  beam_centre_px=(float("nan"), 10.0))
    warnings = check_geometry(m, shape=(100, 100))
    assert warnings == [
        "run.cxi, frame 3: pixel_size_mm 1e-09 mm is outside the physical range 0.001..10 mm",
        "run.cxi, frame 3: distance_mm 0 mm is not positive",
        "run.cxi, frame 3: wavelength_A is nan (not finite)",
        "run.cxi, frame 3: beam_centre_px (nan, 10.0) is not finite",
    ]
    far = check_geometry(FrameMeta("x", 0, distance_mm=2e5, wavelength_A=500.0, pixel_size_mm=float("inf"),
                                   beam_centre_px=(5000.0, 10.0)), path="y.h5", frame=9, shape=(100, 100))
    assert len(far) == 4 and all(w.startswith("y.h5, frame 9: ") for w in far)
    assert "more than 10 frame sizes" in far[3] and "100000 mm" in far[1] and "is inf" in far[0]
    assert check_geometry(FrameMeta("x", 0, beam_centre_px=(-150.0, 50.0)), shape=(100, 100)) == []


def test_readers_keep_absurd_geometry_for_the_warning(tmp_path):
    m = read_frame(write(tmp_path / "a.img", smv(64, 48, extra="DISTANCE=nan;\nWAVELENGTH=0;\n"))).meta
    assert np.isnan(m.distance_mm) and m.wavelength_A == 0.0
    assert any("distance_mm is nan" in w for w in check_geometry(m))
    m = read_frame(minicbf(tmp_path / "a.cbf", distance="-0.2")).meta
    assert m.distance_mm == pytest.approx(-200.0) and "distance_mm -200 mm is not positive" in check_geometry(m)[0]
    for creator in ("someone", "diffscreen"):  # NaN means "unknown" only where CXIWriter wrote it
        with h5py.File(tmp_path / "g.cxi", "w") as h:
            h.attrs["creator"] = creator
            h["entry_1/data_1/data"] = np.ones((2, 8, 8), "u2")
            h["entry_1/instrument_1/detector_1/distance"] = [np.inf, np.nan]
            h["entry_1/instrument_1/detector_1/beam_center_x"] = [4.0, np.nan]
            h["entry_1/instrument_1/detector_1/beam_center_y"] = [4.0, np.nan]
        m0, m1 = read_frame(tmp_path / "g.cxi", 0).meta, read_frame(tmp_path / "g.cxi", 1).meta
        assert m0.distance_mm == np.inf
        assert check_geometry(m0) == [f"{tmp_path / 'g.cxi'}, frame 0: distance_mm is inf (not finite)"]
        if creator == "diffscreen":
            assert m1.distance_mm is None and m1.beam_centre_px is None and check_geometry(m1) == []
        else:
            assert np.isnan(m1.distance_mm) and len(check_geometry(m1, shape=(8, 8))) == 2


# --------------------------------------------------------------------------- labels


def test_spreadsheet_csv_with_bom_and_crlf_reads(tmp_path):
    f = write(tmp_path / "labels.csv", b"\xef\xbb\xbffile,frame,label\r\na.cbf,0,hit\r\na.cbf,1,Miss\r\n")
    recs = read_labels(f)
    assert [(r.file, r.frame, r.label, r.line) for r in recs] == [("a.cbf", 0, "hit", 2), ("a.cbf", 1, "miss", 3)]


@pytest.mark.parametrize("frame,problem", [
    ("1000000000000000000000000000000", "is larger than any file holds"),
    ("-1", "is negative"),
    ("1.5", "'1.5' is not an integer"),
    ("abc", "'abc' is not an integer"),
    ("1e3", "'1e3' is not an integer"),
    ("9" * 5000, "is larger than any file holds"),
])
def test_bad_frame_numbers_are_label_errors_naming_file_and_line(tmp_path, frame, problem):
    f = write(tmp_path / "labels.csv", f"file,frame,label\na.cbf,0,hit\na.cbf,{frame},hit\n".encode())
    with pytest.raises(LabelError) as ei:
        read_labels(f)
    assert_names(ei.value, f, "line 3:", problem)
    g = write(tmp_path / "expert_annotation.txt", f"r.h5 [1] HIT\nr.h5 [{frame}] MISS\n".encode())
    with pytest.raises(LabelError) as ei:
        read_labels(g)
    assert_names(ei.value, g, "line 2:")


@pytest.mark.parametrize("data,problem", [
    (b"", "empty"),
    (b"\x89PNG\r\n\x1a\n\xff\xfe\x00\x00garbage", "not a text label file"),
    (b"file,frame,label\na\x00b,0,hit\n", "NUL"),
    (b"file,frame\na.cbf,0\n", "lacks column(s) label"),
    (b"file,frame,label\na.cbf,0,hit\na.cbf,0,hit\n", "line 3: frame 0 of a.cbf is labelled again"),
    (b"file,frame,label,frame\na.cbf,0,hit,1\n", "names column(s) frame twice"),
    (b'file,frame,label\n"a.cbf,0,hit\n', "line"),
])
def test_malformed_label_files_are_label_errors(tmp_path, data, problem):
    f = write(tmp_path / "labels.csv", data)
    with pytest.raises(LabelError) as ei:
        read_labels(f)
    assert_names(ei.value, f, problem)


def test_fifo_label_file_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "labels.csv"
    os.mkfifo(fifo)
    box = _in_thread(lambda: read_labels(fifo))
    assert isinstance(box.get("error"), LabelError)
    assert_names(box["error"], fifo, "not a regular file")


def test_a_library_bug_on_a_damaged_file_is_that_files_error(tmp_path):
    """fabio raises UnboundLocalError on an EDF whose Dim_2 is missing and Dim_1 repeated (found by bench/fuzz.py)."""
    head = ("{\nEDF_DataBlockID = 0.Image.Psd ;\nEDF_BinarySize = 20480 ;\nEDF_HeaderSize =   512 ;\n"
            "ByteOrder = LowByteFirst ;\nDataType = FloatValue ;\nDim_1 = 80 ;\nDim_1 = 64= 64 ;\nImage = 0 ;\n"
            "Size = 20480 ;\n").encode()
    f = write(tmp_path / "dim.edf", head.ljust(510, b" ") + b"}\n" + bytes(20480))
    with pytest.raises(FrameReadError) as ei:
        with open_source(f) as src:
            src.read(0)
    assert_names(ei.value, f, "UnboundLocalError")
