"""A corpus of bad inputs for diffscreen (issue 18, "Fuzzing"), and small valid seed files.

``build_corpus(folder)`` writes every case into ``folder`` and returns a list of
:class:`Case`: a short name, a category, one line saying what is wrong and what
is expected, the path to give diffscreen, and what the tests must check:

========  ==========================================================================
category  contract (tests/test_corpus.py checks it)
========  ==========================================================================
file      A frame file (or ``file.h5:/dataset`` spec) put among good files:
          its frames become ``label=error`` rows or a file-level error naming
          the file, the run goes on, the good frames are screened, exit 1.
model     A model file given as ``--model``: refused with one ``ERROR:`` line,
          exit 3; no code in it runs.
labels    A label CSV for ``train``/``evaluate``: refused with a clear
          one-line error (exit 2), or read correctly.
scores    A malformed ``--scores`` file for ``evaluate``: refused with one
          ``ERROR:`` line (exit 2), never a traceback.
========  ==========================================================================

``expect`` of a ``file`` case:

``error``     every frame of the file is an error row (or one file-level error);
``classify``  every frame is labelled hit/maybe/miss with finite probabilities
              (an odd but valid input, e.g. one huge finite pixel);
``either``    each frame is an error row or labelled with finite
              probabilities; frames in ``classify_frames`` must be labelled;
``warn``      as ``either``, and errors.csv names the file (a warning, e.g. for
              geometry outside physical ranges).

``hazard`` marks cases that may hang (a FIFO), blow up memory (decompression
bombs, huge stated sizes) or crash the process in C (damaged x-CBF_PACKED data
through pycbf) with today's code: tests run them in a subprocess with RLIMIT_AS
and a timeout, never in the test process.

``write_seeds(folder)`` writes small valid files of every format (64 x 80
frames) for the fuzzers (tests/test_fuzz.py, bench/fuzz.py).

Run ``python tests/corpus.py DIR`` to write the corpus and print its table.
"""

from __future__ import annotations

import bz2
import gzip
import json
import os
import pickle
import shutil
import struct
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = [
    "Case",
    "build_corpus",
    "good_frame",
    "small_good_frame",
    "write_seeds",
    "model_seed",
    "REAL_GOOD",
    "SHARED",
    "CATEGORIES",
]

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
#: The issue's good frame (a Rayonix hit in x-CBF_PACKED imgCIF).
REAL_GOOD = SHARED / "real-frames" / "hit-20181213155134902.cbf"
REAL_MCCD = SHARED / "real-frames" / "somedata_0001.mccd.bz2"
CATEGORIES = ("file", "model", "labels", "scores")
_HC_EV_A = 12398.4198
_EV_TO_J = 1.602176634e-19


@dataclass
class Case:
    """One bad input.

    Attributes
    ----------
    name : str
        Short unique id (used as the pytest id).
    category : {"file", "model", "labels", "scores"}
    description : str
        One line: what is wrong, and what is expected.
    path : str
        What to give diffscreen: a frame spec, a model file, a label or scores file.
    expect : str
        file: "error", "classify", "either" or "warn" (module notes); model:
        "refuse"; labels: "refuse", "read" or "either"; scores: "refuse" or "either".
    hazard : str or None
        None, "memory" (may allocate gigabytes today), "hang" (may block) or
        "crash" (damaged x-CBF_PACKED data reaches CBFlib, whose SWIG wrapper
        ``get_integerarrayparameters_wdims`` reads an uninitialised pointer
        when CBFlib fails: an occasional SIGSEGV, never run in the test process).
    group : str
        Which batch run a file case joins ("hdf5", "fabio", "misc").
    frames : int or None
        Frames the file holds (when known): each must appear in scores.csv.
    classify_frames : tuple of int
        Frames that must get a hit/maybe/miss label with finite probabilities.
    consistent : bool
        The file's frames must get the same decision alone and among others.
    extra : dict
        Category-specific: ``marker`` (a file a model's payload would create),
        ``records`` (what a label file must read as).
    """

    name: str
    category: str
    description: str
    path: str
    expect: str
    hazard: str | None = None
    group: str = "misc"
    frames: int | None = None
    classify_frames: tuple = ()
    consistent: bool = False
    extra: dict = field(default_factory=dict)

    def __str__(self) -> str:
        return f"{self.category}/{self.name}"


# --------------------------------------------------------------------------- synthetic frames


def synthetic_frame(h: int = 256, w: int = 256, seed: int = 0, *, spots: int = 30, dtype=np.uint16) -> np.ndarray:
    """A diffraction-like frame: Poisson background (>= 1, no zeros) and Gaussian spots."""
    rng = np.random.default_rng(seed)
    img = rng.poisson(12.0, (h, w)).astype(np.float64) + 1.0
    for _ in range(spots):
        y, x = rng.uniform(0.1 * h, 0.9 * h), rng.uniform(0.1 * w, 0.9 * w)
        y0, y1, x0, x1 = max(int(y) - 6, 0), min(int(y) + 7, h), max(int(x) - 6, 0), min(int(x) + 7, w)
        yy, xx = np.mgrid[y0:y1, x0:x1]
        img[y0:y1, x0:x1] += rng.uniform(200, 2000) * np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / 2.0)
    return np.clip(img, 1, 60000).astype(dtype)


def _pilatus_header(pixel_m: float = 172e-6, distance_m: float = 0.2, beam=(128.0, 128.0), wavelength=1.0,
                    cutoff: int = 1000000) -> str:
    return ("# Detector: PILATUS 6M, S/N 60-0001\r\n"
            f"# Pixel_size {pixel_m:g} m x {pixel_m:g} m\r\n"
            f"# Count_cutoff {cutoff} counts\r\n"
            f"# Wavelength {wavelength:g} A\r\n"
            f"# Detector_distance {distance_m:g} m\r\n"
            f"# Beam_xy ({beam[0]:g}, {beam[1]:g}) pixels\r\n")


def minicbf_bytes(data: np.ndarray, header: str | None = None) -> bytes:
    """A Pilatus miniCBF (x-CBF_BYTE_OFFSET) as fabio writes it."""
    import tempfile

    from fabio.cbfimage import CbfImage

    h = header if header is not None else _pilatus_header(beam=(data.shape[1] / 2, data.shape[0] / 2))
    with tempfile.TemporaryDirectory() as td:
        p = os.path.join(td, "x.cbf")
        CbfImage(data=np.asarray(data, np.int32), header={"_array_data.header_contents": h}).write(p)
        return Path(p).read_bytes()


def packed_cbf_bytes(data: np.ndarray) -> bytes:
    """An imgCIF file with one x-CBF_PACKED array (read through pycbf), as cctbx.xfel writes."""
    import tempfile

    import pycbf

    d = np.ascontiguousarray(data, np.int32)
    H, W = d.shape
    h = pycbf.cbf_handle_struct()
    h.new_datablock(b"image_1")
    h.new_category(b"array_structure_list")
    for c in (b"array_id", b"index", b"dimension", b"precedence", b"direction"):
        h.new_column(c)
    for idx, dim in ((1, W), (2, H)):
        h.new_row()
        for col, val in ((b"array_id", b"array_1"), (b"direction", b"increasing")):
            h.find_column(col)
            h.set_value(val)
        for col, val in ((b"index", idx), (b"dimension", dim), (b"precedence", idx)):
            h.find_column(col)
            h.set_integervalue(val)
    h.new_category(b"array_data")
    h.new_column(b"array_id")
    h.set_value(b"array_1")
    h.new_column(b"binary_id")
    h.set_integervalue(1)
    h.new_column(b"data")
    h.set_integerarray_wdims_fs(pycbf.CBF_PACKED, 1, d.tobytes(), 4, 1, d.size, b"little_endian", W, H, 1, 0)
    with tempfile.TemporaryDirectory() as td:
        p = os.path.join(td, "x.cbf")
        h.write_widefile(p.encode(), pycbf.CBF, pycbf.MIME_HEADERS | pycbf.MSG_DIGEST, 0)
        del h
        return Path(p).read_bytes()


def smv_bytes(data: np.ndarray | None, *, header_bytes: int = 512, size=None, **keys) -> bytes:
    """An ADSC/SMV image: ``{ KEY=value; ... }`` header padded to ``header_bytes``, then uint16 pixels."""
    if data is not None:
        H, W = data.shape
    else:
        W, H = size
    h = {"HEADER_BYTES": f"{header_bytes:5d}", "DIM": "2", "BYTE_ORDER": "little_endian", "TYPE": "unsigned_short",
         "SIZE1": str(W if size is None else size[0]), "SIZE2": str(H if size is None else size[1]),
         "PIXEL_SIZE": "0.1", "DISTANCE": "150.0", "WAVELENGTH": "1.0",
         "BEAM_CENTER_X": f"{0.1 * W / 2:.3f}", "BEAM_CENTER_Y": f"{0.1 * H / 2:.3f}",
         "CCD_IMAGE_SATURATION": "65535"}
    h.update({k: str(v) for k, v in keys.items()})
    text = ("{\n" + "".join(f"{k}={v};\n" for k, v in h.items()) + "}\n").encode()
    head = text.ljust(max(header_bytes, len(text)), b" ")[: max(header_bytes, 0) or len(text)]
    return head + (b"" if data is None else np.asarray(data, "<u2").tobytes())


def edf_bytes(data: np.ndarray, header: dict | None = None) -> bytes:
    """An ESRF data format image as fabio writes it."""
    import tempfile

    from fabio.edfimage import EdfImage

    hdr = {"PSize_1": "1e-4", "PSize_2": "1e-4", "SampleDistance": "0.15", "WaveLength": "1e-10",
           "Center_1": str(data.shape[1] / 2), "Center_2": str(data.shape[0] / 2)}
    hdr.update(header or {})
    with tempfile.TemporaryDirectory() as td:
        p = os.path.join(td, "x.edf")
        EdfImage(data=data, header=hdr).write(p)
        return Path(p).read_bytes()


def tiff_bytes(data: np.ndarray) -> bytes:
    """A plain TIFF as fabio writes it."""
    import tempfile

    from fabio.tifimage import TifImage

    with tempfile.TemporaryDirectory() as td:
        p = os.path.join(td, "x.tif")
        TifImage(data=data).write(p)
        return Path(p).read_bytes()


def tiff_header_bytes(width: int, height: int, *, bits: int = 16, strip_bytes: int = 1000) -> bytes:
    """A hand-made little-endian TIFF whose IFD states ``width`` x ``height``, followed by ``strip_bytes`` bytes."""
    entries = [(256, 4, 1, width), (257, 4, 1, height), (258, 3, 1, bits), (259, 3, 1, 1), (262, 3, 1, 1),
               (273, 4, 1, 0), (277, 3, 1, 1), (278, 4, 1, height), (279, 4, 1, strip_bytes)]
    n = len(entries)
    data_off = 8 + 2 + 12 * n + 4
    ifd = struct.pack("<H", n)
    for tag, typ, count, value in entries:
        if tag == 273:
            value = data_off
        if typ == 3:
            ifd += struct.pack("<HHIHH", tag, typ, count, value, 0)
        else:
            ifd += struct.pack("<HHII", tag, typ, count, value)
    return b"II*\x00" + struct.pack("<I", 8) + ifd + struct.pack("<I", 0) + bytes(range(256)) * (strip_bytes // 256) \
        + bytes(strip_bytes % 256)


def write_cxi(path, frames: np.ndarray, *, mask=None, frame_mask=None, distance=0.15, pixel=1e-4, beam=None,
              energy_eV=9500.0, compression=None, chunks=None) -> str:
    """A CXI file as diffscreen's CXIWriter lays it out: /entry_1/data_1/data (N, H, W) with geometry."""
    import h5py

    frames = np.asarray(frames)
    N, H, W = frames.shape
    bx, by = beam if beam is not None else (W / 2, H / 2)
    with h5py.File(path, "w") as f:
        f["cxi_version"] = 150
        f.create_dataset("entry_1/data_1/data", data=frames, compression=compression, chunks=chunks)
        det = f.create_group("entry_1/instrument_1/detector_1")
        det["distance"] = np.full(N, distance, float)
        det["x_pixel_size"] = np.full(N, pixel, float)
        det["y_pixel_size"] = np.full(N, pixel, float)
        det["beam_center_x"] = np.full(N, bx, float)
        det["beam_center_y"] = np.full(N, by, float)
        f["entry_1/instrument_1/source_1/energy"] = np.full(N, energy_eV * _EV_TO_J)
        if mask is not None:
            det["mask"] = mask
        if frame_mask is not None:
            f["entry_1/data_1/mask"] = frame_mask
    return str(path)


def write_h5(path, arrays: dict, **create) -> str:
    """An HDF5 file with datasets ``{name: array}`` (read as ``path:/name``)."""
    import h5py

    with h5py.File(path, "w") as f:
        for name, arr in arrays.items():
            f.create_dataset(name, data=arr, **create)
    return str(path)


def _flip(data: bytes, positions, value=None) -> bytes:
    b = bytearray(data)
    for p in positions:
        p %= len(b)
        b[p] = (b[p] ^ 0xFF) if value is None else value
    return bytes(b)


def _concat_streams(stream: bytes, n: int) -> bytes:
    return stream * n


# --------------------------------------------------------------------------- good frame, seeds


def good_frame(folder) -> str:
    """The good frame the runs put bad files between: the issue's real frame, or a synthetic miniCBF without it."""
    if REAL_GOOD.is_file():
        return str(REAL_GOOD)
    p = Path(folder) / "good_synthetic.cbf"
    if not p.exists():
        p.write_bytes(minicbf_bytes(synthetic_frame(512, 512, seed=7).astype(np.int32)))
    return str(p)


def small_good_frame(folder) -> str:
    """A small, quick-to-read good frame (512 x 512 Pilatus-like miniCBF with geometry) for long runs."""
    p = Path(folder) / "good_small.cbf"
    if not p.exists():
        data = synthetic_frame(512, 512, seed=7, spots=60).astype(np.int32)
        p.write_bytes(minicbf_bytes(data, _pilatus_header(pixel_m=172e-6, distance_m=0.15, beam=(256.0, 256.0))))
    return str(p)


def write_seeds(folder) -> dict[str, str]:
    """Small valid files of every supported format (the fuzzers' seeds): name -> spec.

    Every seed opens with :func:`diffscreen.io.open_source` and its frames read
    (tests/test_fuzz.py checks this), so a mutation that fails is the mutation's doing.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    d16 = synthetic_frame(64, 80, seed=1)
    d32 = d16.astype(np.int32)
    out = {}

    def put(name, data: bytes):
        p = folder / name
        p.write_bytes(data)
        out[name] = str(p)

    put("seed.cbf", minicbf_bytes(d32, _pilatus_header(beam=(40, 32))))
    put("seed_packed.cbf", packed_cbf_bytes(d32))
    put("seed.img", smv_bytes(d16))
    put("seed.edf", edf_bytes(d16.astype(np.float32)))
    put("seed.tif", tiff_bytes(d16))
    put("seed.img.gz", gzip.compress(smv_bytes(d16), mtime=0))
    put("seed.cbf.bz2", bz2.compress(minicbf_bytes(d32, _pilatus_header(beam=(40, 32)))))
    put("seed.edf.gz", gzip.compress(edf_bytes(d16.astype(np.float32)), mtime=0))
    write_cxi(folder / "seed.cxi", np.stack([d16, synthetic_frame(64, 80, seed=2)]),
              mask=np.zeros((64, 80), np.uint16), frame_mask=np.zeros((2, 64, 80), np.uint16))
    out["seed.cxi"] = str(folder / "seed.cxi")
    write_h5(folder / "seed.h5", {"data": np.stack([d16, d16 + 1]).astype(np.float32)})
    out["seed.h5:/data"] = str(folder / "seed.h5") + ":/data"
    return out


def model_seed(folder) -> str:
    """A copy of the bundled fast model (the valid model file the model cases corrupt)."""
    from importlib import resources

    p = Path(folder) / "valid.safetensors"
    if not p.exists():  # (the bundled file found without importing diffscreen.models, which loads torch)
        Path(folder).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(str(resources.files("diffscreen") / "data" / "ke2018_fast.safetensors"), p)
    return str(p)


def read_model(path) -> tuple[dict, dict]:
    """Tensors and the diffscreen metadata record of a model file."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(str(path), framework="pt") as f:
        rec = json.loads(f.metadata()["diffscreen"])
    return load_file(str(path)), rec


def write_model(path, tensors: dict, record, *, raw_metadata: str | None = None) -> str:
    """A safetensors model file with ``record`` (any JSON value) as its diffscreen metadata."""
    from safetensors.torch import save_file

    md = raw_metadata if raw_metadata is not None else json.dumps(record)
    save_file(tensors, str(path), metadata={"diffscreen": md})
    return str(path)


# --------------------------------------------------------------------------- the corpus


def build_corpus(folder, good: str | None = None) -> list[Case]:
    """Write every bad input into ``folder`` (created) and describe it.

    Parameters
    ----------
    folder : str or Path
        An empty folder, or one this function filled before (files are rewritten).
    good : str, optional
        The good frame label and scores files refer to (default :func:`good_frame`).

    Returns
    -------
    list of Case
        At least 80, in every category.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    good = good or good_frame(folder)
    cases: list[Case] = []
    cases += _file_cases(folder / "file")
    cases += _model_cases(folder / "model")
    cases += _label_cases(folder / "labels", good)
    cases += _scores_cases(folder / "scores", good)
    names = [str(c) for c in cases]
    dup = {n for n in names if names.count(n) > 1}
    assert not dup, f"duplicate case names {dup}"
    (folder / "corpus.json").write_text(json.dumps([c.__dict__ for c in cases], indent=1, default=str))
    return cases


def _file_cases(d: Path) -> list[Case]:
    d.mkdir(parents=True, exist_ok=True)
    cases: list[Case] = []

    def add(name, desc, path, expect="error", **kw):
        cases.append(Case(name, "file", desc, str(path), expect, **kw))

    def put(fname, data: bytes) -> Path:
        p = d / fname
        if p.is_symlink() or p.exists():
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            else:
                p.unlink()
        p.write_bytes(data)
        return p

    d16 = synthetic_frame(256, 256, seed=3)
    d32 = d16.astype(np.int32)
    cbf = minicbf_bytes(d32)
    packed = packed_cbf_bytes(d32)
    smv = smv_bytes(d16)
    edf = edf_bytes(d16.astype(np.float32))
    tif = tiff_bytes(d16)
    cxi_good = d / "_valid.cxi"
    write_cxi(cxi_good, np.stack([d16, synthetic_frame(256, 256, seed=4)]), mask=np.zeros((256, 256), np.uint16))
    cxi = cxi_good.read_bytes()
    cxi_good.unlink()

    # ---- the cases ------------------------------------------------------------------
    H, W = 512, 512
    two = np.stack([synthetic_frame(H, W, seed=5), synthetic_frame(H, W, seed=6)]).astype(np.int32)
    write_cxi(d / "cxi_mask_wrong_shape.cxi", two, frame_mask=np.zeros((2, H, 10), np.uint16))
    add("cxi_mask_wrong_shape", "CXI whose per-frame /entry_1/data_1/mask is (2,512,10) for (2,512,512) frames: "
        "error rows naming the file, not a run abort (issue 18 #1)", d / "cxi_mask_wrong_shape.cxi",
        group="hdf5", frames=2)

    import h5py

    with h5py.File(d / "cxi_external_missing.h5", "w") as f:
        f["entry_1/data_1/data"] = h5py.ExternalLink("missing.h5", "/data")
    add("cxi_external_missing", "CXI /entry_1/data_1/data is an external link to a missing file: a file error, "
        "not a run abort (issue 18 #1)", d / "cxi_external_missing.h5", group="hdf5")

    rng = np.random.default_rng(1)
    big = rng.poisson(20, (2, 512, 512)).astype("f4")
    big[1, 256, 256] = 1e21
    write_h5(d / "pixel_1e21.h5", {"data": big})
    add("pixel_1e21", "float32 frame with one finite pixel of 1e21: finite probabilities and a real label, "
        "never NaN labelled miss (issue 18 #2)", str(d / "pixel_1e21.h5") + ":/data", "classify", group="hdf5",
        frames=2, classify_frames=(0, 1), consistent=True)

    edf_big = synthetic_frame(256, 256, seed=8).astype(np.float32)
    edf_big[128, 128] = np.finfo(np.float32).max
    put("pixel_f32max.edf", edf_bytes(edf_big))
    add("pixel_f32max", "EDF float32 frame with one pixel at float32 max (3.4e38): finite probabilities, "
        "a real label", d / "pixel_f32max.edf", "classify", group="fabio", frames=1, classify_frames=(0,))

    with h5py.File(d / "h5_chunked_100000sq.h5", "w") as f:
        f.create_dataset("data", shape=(1, 100000, 100000), dtype="u2", chunks=(1, 1000, 1000))
    add("h5_chunked_100000sq", "chunked 100000x100000 uint16 HDF5 dataset (37 GiB as float32, file of a few KB): "
        "refused (frame too large), no giant allocation (issue 18 #4)", str(d / "h5_chunked_100000sq.h5") + ":/data",
        hazard="memory", group="hdf5")
    with h5py.File(d / "cxi_chunked_100000sq.cxi", "w") as f:
        f.create_dataset("entry_1/data_1/data", shape=(1, 100000, 100000), dtype="u2", chunks=(1, 1000, 1000))
    add("cxi_chunked_100000sq", "CXI layout with a chunked 100000x100000 frame: refused, no giant allocation "
        "(issue 18 #4)", d / "cxi_chunked_100000sq.cxi", hazard="memory", group="hdf5")

    fifo = d / "fifo.cbf"
    if fifo.exists() or fifo.is_symlink():
        fifo.unlink()
    if hasattr(os, "mkfifo"):
        os.mkfifo(fifo)
        add("fifo", "a FIFO named fifo.cbf (no writer): refused at once as not a regular file, never a hang "
            "(issue 18 #6)", fifo, hazard="hang")

    header = b"{\nHEADER_BYTES=  512;\nDIM=2;\nBYTE_ORDER=little_endian;\nTYPE=unsigned_short;\nSIZE1=100000;\n" \
             b"SIZE2=100000;\n}\n".ljust(512, b" ")
    put("bomb.img.bz2", bz2.compress(header) + _concat_streams(bz2.compress(bytes(16 << 20), 9), 256))
    add("smv_bz2_bomb", "12 KB .img.bz2: SMV header claiming 100000x100000, then 4 GiB of zeros; refused from "
        "the header before decompressing (issue 18 #4)", d / "bomb.img.bz2", hazard="memory", group="fabio")
    put("bomb.img.gz", gzip.compress(header, mtime=0) + _concat_streams(gzip.compress(bytes(16 << 20), 9, mtime=0), 64))
    add("smv_gz_bomb", "1 MB .img.gz: SMV header claiming 100000x100000, then 1 GiB of zeros (gzip members): "
        "refused from the header", d / "bomb.img.gz", hazard="memory", group="fabio")

    for name, kw, why in (
            ("geom_pixel_1e-12", {"pixel": 1e-12}, "pixel size 1e-12 m"),
            ("geom_distance_0", {"distance": 0.0}, "detector distance 0"),
            ("geom_beam_nan", {"beam": (float("nan"), float("nan"))}, "NaN beam centre")):
        write_cxi(d / f"{name}.cxi", two[:1], **kw)
        add(name, f"CXI with {why}: screened or an error, but errors.csv names the file (a warning), never a "
            "silent fallback (issue 18 #6)", d / f"{name}.cxi", "warn", group="hdf5", frames=1)
    put("geom_absurd.cbf", minicbf_bytes(d32, _pilatus_header(pixel_m=1e-12, distance_m=0.0, beam=(float("nan"),) * 2)))
    add("geom_absurd_cbf", "miniCBF whose Pilatus header says pixel 1e-12 m, distance 0 m, beam (nan, nan): a "
        "warning in errors.csv naming the file", d / "geom_absurd.cbf", "warn", group="fabio", frames=1)

    nanc = rng.poisson(20, (2, 1024, 1024)).astype("f4") + 1
    nanc[1, :4, :4] = np.nan
    write_h5(d / "nan_corner.h5", {"data": nanc})
    add("nan_outside_crop", "NaN pixels only in the corner of frame 1, outside the crop window: the same decision "
        "alone and among other files (issue 18 #6, one path one answer)", str(d / "nan_corner.h5") + ":/data",
        "either", group="hdf5", frames=2, classify_frames=(0,), consistent=True)

    # ---- zero-length files of every extension -----------------------------------------------
    for ext in (".cbf", ".img", ".h5", ".cxi", ".edf", ".tif", ".mccd", ".mar3450", ".gz", ".bz2"):
        p = put("empty" + ext, b"")
        add("empty" + ext.replace(".", "_"), f"zero-length {ext} file: a file error naming it", p,
            group="hdf5" if ext in (".h5", ".cxi") else "fabio")

    # ---- truncated files ---------------------------------------------------------------------
    def cuts(label, data, ext, points, group, hazard=None):
        for frac in points:
            n = int(len(data) * frac) if isinstance(frac, float) else int(frac)
            p = put(f"trunc_{label}_{n}{ext}", data[:n])
            add(f"trunc_{label}_{n}", f"{label} cut to {n} of {len(data)} bytes: error rows, not a crash", p,
                group=group, hazard=hazard)

    cuts("minicbf", cbf, ".cbf", (10, 600, 0.5, len(cbf) - 40), "fabio")
    cuts("packed_cbf", packed, ".cbf", (300, 0.6, len(packed) - 20), "fabio", "crash")
    cuts("smv", smv, ".img", (100, 600, 0.5), "fabio")
    cuts("edf", edf, ".edf", (200, 0.5), "fabio")
    cuts("tiff", tif, ".tif", (6, 0.5), "fabio")
    cuts("cxi", cxi, ".cxi", (1000, 0.5, len(cxi) - 100), "hdf5")
    cuts("smv_gz", gzip.compress(smv, mtime=0), ".img.gz", (0.5,), "fabio")
    cuts("minicbf_bz2", bz2.compress(cbf), ".cbf.bz2", (0.5,), "fabio")
    if REAL_GOOD.is_file():
        real = REAL_GOOD.read_bytes()
        cuts("real_packed_cbf", real, ".cbf", (2000, 0.5), "fabio", "crash")
    mccd = None
    if REAL_MCCD.is_file():
        mccd = bz2.decompress(REAL_MCCD.read_bytes())
        cuts("real_mccd", mccd, ".mccd", (1500, 5000, 0.5), "fabio")

    # ---- random bytes behind valid magic numbers --------------------------------------------
    noise = np.random.default_rng(2).integers(0, 256, 20000, dtype=np.uint8).tobytes()
    marccd_head = mccd[:4096] if mccd is not None else (b"II*\x00" + bytes(1020) + bytes(28) + struct.pack("<I", 1234)
                                                         ).ljust(4096, b"\x00")
    for name, magic, ext, group in (
            ("cbf", b"###CBF: VERSION 1.5\r\n", ".cbf", "fabio"),
            ("smv", b"{\nHEADER_BYTES=  512;\n", ".img", "fabio"),
            ("edf", b"{\nEDF_DataBlockID = 0.Image.Psd ;\nDim_1 = 100 ;\n", ".edf", "fabio"),
            ("tiff", b"II*\x00", ".tif", "fabio"),
            ("marccd", marccd_head, ".mccd", "fabio"),
            ("mar345", struct.pack("<i", 1234) + bytes(60) + b"mar research".ljust(64, b" "), ".mar3450", "fabio"),
            ("hdf5", b"\x89HDF\r\n\x1a\n", ".h5", "hdf5"),
            ("gzip", b"\x1f\x8b\x08\x00", ".img.gz", "fabio"),
            ("bzip2", b"BZh91AY&SY", ".cbf.bz2", "fabio")):
        p = put(f"noise_{name}{ext}", magic + noise)
        add(f"noise_{name}", f"valid {name} magic number followed by random bytes: a one-line file error", p,
            group=group)

    # ---- CBF-specific damage -----------------------------------------------------------------
    def cbf_edit(data: bytes, key: bytes, value: bytes) -> bytes:
        import re

        return re.sub(key + rb":\s*\d+", key + b": " + value, data, count=1)

    put("cbf_size_too_big.cbf", cbf_edit(cbf, b"X-Binary-Size", b"99999999"))
    add("cbf_size_too_big", "miniCBF whose X-Binary-Size is far beyond the file's end: error row",
        d / "cbf_size_too_big.cbf", group="fabio")
    put("cbf_size_too_small.cbf", cbf_edit(cbf, b"X-Binary-Size", b"100"))
    add("cbf_size_too_small", "miniCBF whose X-Binary-Size (100) is less than the pixels need: error row",
        d / "cbf_size_too_small.cbf", group="fabio")
    start = cbf.find(b"\x0c\x1a\x04\xd5") + 4
    put("cbf_corrupt_byte_offset.cbf", _flip(cbf, range(start + 100, start + 400, 7), 0x80))
    add("cbf_corrupt_byte_offset", "miniCBF with 0x80 (16-bit escape) bytes sprayed into its byte-offset stream: "
        "an error row or a finite decision, never a crash", d / "cbf_corrupt_byte_offset.cbf", "either",
        group="fabio", frames=1)
    pstart = packed.find(b"\x0c\x1a\x04\xd5") + 4
    put("packed_cbf_corrupt.cbf", _flip(packed, range(pstart + 40, pstart + 2000, 13)))
    add("packed_cbf_corrupt", "x-CBF_PACKED imgCIF with flipped bytes in its compressed stream (CBFlib): an error "
        "row or a finite decision, never a crash", d / "packed_cbf_corrupt.cbf", "either", group="fabio", frames=1,
        hazard="crash")
    huge = cbf_edit(cbf_edit(cbf_edit(cbf, b"X-Binary-Size-Fastest-Dimension", b"100000"),
                             b"X-Binary-Size-Second-Dimension", b"100000"), b"X-Binary-Number-of-Elements",
                    b"10000000000")
    put("cbf_huge_dims.cbf", huge)
    add("cbf_huge_dims", "miniCBF whose MIME header states 100000x100000 pixels (1e10 elements): refused "
        "before allocating", d / "cbf_huge_dims.cbf", hazard="memory", group="fabio")
    put("cbf_no_binary.cbf", b"###CBF: VERSION 1.5\r\ndata_x\r\n_array_data.header_contents\r\n;\r\n# nothing\r\n;\r\n")
    add("cbf_no_binary", "CBF text header with no binary section: a file error", d / "cbf_no_binary.cbf",
        group="fabio")
    put("cbf_packed_label_byte_offset_body.cbf", cbf.replace(b'"x-CBF_BYTE_OFFSET"', b'"x-CBF_PACKED"'))
    add("cbf_wrong_conversion", "miniCBF that says x-CBF_PACKED but holds byte-offset data (goes to CBFlib): "
        "an error row or a finite decision", d / "cbf_packed_label_byte_offset_body.cbf", "either", group="fabio",
        frames=1, hazard="crash")
    put("cbf_negative_dims.cbf", cbf_edit(cbf, b"X-Binary-Size-Fastest-Dimension", b"-5"))
    add("cbf_negative_dims", "miniCBF whose fastest dimension is -5: a file error (or a finite decision)",
        d / "cbf_negative_dims.cbf", "either", group="fabio")

    # ---- SMV / EDF / TIFF header damage, huge stated sizes -----------------------------------
    put("smv_huge.img", smv_bytes(d16[:4], size=(100000, 100000)))
    add("smv_huge_size", "uncompressed SMV whose header says 100000x100000 (file of 2 KB): refused before "
        "allocating", d / "smv_huge.img", hazard="memory", group="fabio")
    put("smv_header_bytes_huge.img", smv_bytes(d16, header_bytes=512).replace(b"HEADER_BYTES=  512",
                                                                             b"HEADER_BYTES=999999999", 1))
    add("smv_header_bytes_huge", "SMV whose HEADER_BYTES (999999999) is beyond the file's end: a file error",
        d / "smv_header_bytes_huge.img", group="fabio")
    put("smv_unclosed.img", b"{\nHEADER_BYTES=  512;\nDIM=2;\nSIZE1=256;\nSIZE2=256;\n" + b"A" * 700)
    add("smv_unclosed_header", "SMV header never closed by '}': a file error", d / "smv_unclosed.img",
        group="fabio")
    put("smv_type_float.img", smv_bytes(d16).replace(b"TYPE=unsigned_short", b"TYPE=mystery_type  ", 1))
    add("smv_unknown_type", "SMV with TYPE=mystery_type: an error row or a finite decision",
        d / "smv_type_float.img", "either", group="fabio")
    put("smv_size_negative.img", smv_bytes(d16, SIZE1=-256))
    add("smv_negative_size", "SMV with SIZE1=-256: a file error", d / "smv_size_negative.img", group="fabio")
    edf_h = edf_bytes(d16[:2].astype(np.float32))
    put("edf_huge.edf", edf_h.replace(b"Dim_1 = 256 ;", b"Dim_1 = 100000 ;").replace(b"Dim_2 = 2 ;", b"Dim_2 = 100000 ;")
        .replace(b"EDF_BinarySize = 2048 ;", b"EDF_BinarySize = 40000000000 ;").replace(b"Size = 2048 ;",
                                                                                       b"Size = 40000000000 ;"))
    add("edf_huge_size", "EDF whose header says 100000x100000 float32 (file of 2.5 KB): refused before "
        "allocating", d / "edf_huge.edf", hazard="memory", group="fabio")
    put("edf_bad_type.edf", edf.replace(b"DataType = FloatValue ;", b"DataType = Quaternion ;"))
    add("edf_unknown_datatype", "EDF with DataType = Quaternion: a file error or a finite decision",
        d / "edf_bad_type.edf", "either", group="fabio")
    put("edf_negative_dim.edf", edf.replace(b"Dim_1 = 256 ;", b"Dim_1 = -256 ;"))
    add("edf_negative_dim", "EDF with Dim_1 = -256: a file error (or a finite decision)", d / "edf_negative_dim.edf",
        "either",
        group="fabio")
    two_edf = edf_bytes(d16.astype(np.float32)) + edf_bytes(d16.astype(np.float32))[:2000]
    put("edf_second_frame_truncated.edf", two_edf)
    add("edf_second_frame_truncated", "two-block EDF whose second block is cut short: frame 0 screened, the rest "
        "an error row, never a crash", d / "edf_second_frame_truncated.edf", "either", group="fabio",
        classify_frames=(0,))
    put("edf_datatype_control_bytes.edf", edf.replace(
        b"DataType = FloatValue ;", b"DataType = FloatValue!\xed\xee\xd8\x1a\x89\n/\xaf\xc2\xa1//\xa5Fh ;")[:-400])
    add("edf_datatype_control_bytes", "truncated EDF whose DataType value holds control bytes and a newline: a "
        "one-line error (the header's bytes escaped), not a message broken over lines (found by bench/fuzz.py)",
        d / "edf_datatype_control_bytes.edf", group="fabio")
    put("edf_dim_key_huge.edf", edf.replace(b"Dim_2 = 256 ;", b"Dim_99999999999999999999 = 256 ;"))
    add("edf_dim_key_huge", "EDF header key Dim_99999999999999999999 (fabio loops over 1e20 ranks): a file error "
        "at once, no hang (found by bench/fuzz.py)", d / "edf_dim_key_huge.edf", hazard="hang", group="fabio")
    put("tiff_huge.tif", tiff_header_bytes(100000, 100000))
    add("tiff_huge_size", "TIFF whose IFD says 100000x100000 16-bit with a 1000-byte strip: refused before "
        "allocating", d / "tiff_huge.tif", hazard="memory", group="fabio")
    put("tiff_zero_size.tif", tiff_header_bytes(0, 0))
    add("tiff_zero_size", "TIFF whose IFD says 0x0 pixels: a file error", d / "tiff_zero_size.tif", group="fabio")
    put("tiff_ifd_loop.tif", b"II*\x00" + struct.pack("<I", 8) + struct.pack("<H", 0) + struct.pack("<I", 8))
    add("tiff_ifd_loop", "TIFF whose first IFD links to itself (empty, endless chain): a file error, no hang",
        d / "tiff_ifd_loop.tif", group="fabio")

    # ---- HDF5 datasets of the wrong kind -----------------------------------------------------
    for name, arr in (
            ("string", np.array([[b"abc"] * 8] * 8, dtype="S3")),
            ("compound", np.zeros((2, 32, 32), dtype=[("a", "<i4"), ("b", "<f4")])),
            ("bool", np.random.default_rng(3).random((2, 64, 64)) > 0.5),
            ("1d", np.arange(4096, dtype=np.float32)),
            ("4d", np.ones((2, 2, 64, 64), np.float32)),
            ("empty", np.zeros((0, 64, 64), np.uint16)),
            ("complex", (np.ones((2, 64, 64)) * (1 + 2j)).astype(np.complex64)),
            ("tiny_1x1", np.ones((1, 1, 1), np.uint16)),
            ("all_nan", np.full((1, 128, 128), np.nan, np.float32)),
            ("inf_pixel", np.where(np.arange(128 * 128).reshape(1, 128, 128) == 8256, np.inf,
                                   np.random.default_rng(4).poisson(20, (1, 128, 128))).astype(np.float32)),
            ("negative", -np.random.default_rng(5).poisson(20, (1, 128, 128)).astype(np.float32) - 1),
            ("f8_1e300", np.where(np.arange(128 * 128).reshape(1, 128, 128) == 100, 1e300,
                                  np.random.default_rng(6).poisson(20, (1, 128, 128))).astype(np.float64))):
        write_h5(d / f"h5_{name}.h5", {"data": arr})
        expect = {"bool": "either", "inf_pixel": "either", "negative": "either", "f8_1e300": "either",
                  "tiny_1x1": "either"}.get(name, "error")
        what = {"string": "fixed-length strings", "compound": "a compound dtype", "bool": "booleans",
                "1d": "a 1-D array", "4d": "a 4-D array", "empty": "0 frames (shape (0, 64, 64))",
                "complex": "complex64 pixels", "tiny_1x1": "one 1x1 frame", "all_nan": "an all-NaN frame",
                "inf_pixel": "one +inf pixel", "negative": "only negative pixels",
                "f8_1e300": "a float64 pixel of 1e300 (overflows float32)"}[name]
        add(f"h5_{name}", f"file.h5:/data holding {what}: "
            + ("a one-line error" if expect == "error" else "an error row or a finite decision, never NaN"),
            str(d / f"h5_{name}.h5") + ":/data", expect, group="hdf5")
    write_h5(d / "h5_group.h5", {"entry/data": np.ones((1, 64, 64), np.uint16)})
    add("h5_spec_is_group", "file.h5:/entry names a group, not a dataset: a file error",
        str(d / "h5_group.h5") + ":/entry", group="hdf5")
    add("h5_spec_missing_dataset", "file.h5:/nothing names no dataset: a file error",
        str(d / "h5_group.h5") + ":/nothing", group="hdf5")
    write_cxi(d / "cxi_zero_frames.cxi", np.zeros((0, 64, 64), np.uint16))
    add("cxi_zero_frames", "CXI whose frame dataset holds 0 frames: a file error ('holds no frames')",
        d / "cxi_zero_frames.cxi", group="hdf5")
    with h5py.File(d / "cxi_soft_missing.cxi", "w") as f:
        f["entry_1/data_1/data"] = h5py.SoftLink("/nowhere/data")
    add("cxi_soft_link_missing", "CXI /entry_1/data_1/data is a dangling soft link: a file error",
        d / "cxi_soft_missing.cxi", group="hdf5")
    write_cxi(d / "cxi_mask_group.cxi", two[:, :64, :64])
    with h5py.File(d / "cxi_mask_group.cxi", "a") as f:
        f.create_group("entry_1/data_1/mask")
    add("cxi_mask_is_group", "CXI whose per-frame mask path is a group: error rows, not a crash",
        d / "cxi_mask_group.cxi", group="hdf5", frames=2)
    write_cxi(d / "cxi_static_mask_wrong.cxi", two[:, :64, :64], mask=np.zeros((10, 10), np.uint16))
    add("cxi_static_mask_wrong_shape", "CXI whose detector mask is 10x10 for 64x64 frames: error rows",
        d / "cxi_static_mask_wrong.cxi", group="hdf5", frames=2)
    write_cxi(d / "cxi_all_masked.cxi", two[:1, :128, :128], mask=np.ones((128, 128), np.uint16))
    add("cxi_all_masked", "CXI whose detector mask marks every pixel bad: an error row ('every pixel is masked')",
        d / "cxi_all_masked.cxi", group="hdf5", frames=1)
    write_cxi(d / "cxi_all_zero.cxi", np.zeros((1, 128, 128), np.int32))
    add("cxi_all_zero", "CXI frame of all zeros: an error row (empty readout)", d / "cxi_all_zero.cxi",
        group="hdf5", frames=1)
    comp = np.stack([synthetic_frame(128, 128, seed=9)] * 2)
    write_cxi(d / "cxi_corrupt_chunk.cxi", comp, compression="gzip", chunks=(1, 128, 128))
    with h5py.File(d / "cxi_corrupt_chunk.cxi", "r") as f:
        info = f["entry_1/data_1/data"].id.get_chunk_info(1)
        off, size = int(info.byte_offset), int(info.size)
    raw = bytearray((d / "cxi_corrupt_chunk.cxi").read_bytes())
    raw[off + 10 : off + size - 10] = bytes(size - 20)
    (d / "cxi_corrupt_chunk.cxi").write_bytes(bytes(raw))
    add("cxi_corrupt_chunk", "CXI whose second gzip chunk is zeroed: frame 0 screened, frame 1 an error row",
        d / "cxi_corrupt_chunk.cxi", "either", group="hdf5", frames=2, classify_frames=(0,))
    layout = h5py.VirtualLayout(shape=(1, 128, 128), dtype="u2")
    layout[0] = h5py.VirtualSource(str(d / "vds_missing_source.h5"), "data", shape=(128, 128))
    with h5py.File(d / "vds.h5", "w") as f:
        f.create_virtual_dataset("data", layout, fillvalue=0)
    add("h5_vds_missing_source", "virtual dataset whose source file is missing (reads as fill value 0): an error "
        "row, not an all-zero 'miss'", str(d / "vds.h5") + ":/data", group="hdf5")
    write_cxi(d / "cxi_short_geometry.cxi", two)
    with h5py.File(d / "cxi_short_geometry.cxi", "a") as f:
        del f["entry_1/instrument_1/detector_1/distance"]
        f["entry_1/instrument_1/detector_1/distance"] = np.array([0.15])
    add("cxi_short_geometry", "CXI whose per-frame distance column has 1 value for 2 frames: screened (or error "
        "rows), never a crash", d / "cxi_short_geometry.cxi", "either", group="hdf5", frames=2,
        classify_frames=(0,))

    # ---- frames the classifier cannot use ----------------------------------------------------
    put("all_zero.cbf", minicbf_bytes(np.zeros((128, 128), np.int32)))
    add("minicbf_all_zero", "miniCBF of all zeros: an error row (empty readout)", d / "all_zero.cbf",
        group="fabio", frames=1)
    nan_edf = synthetic_frame(128, 128, seed=10).astype(np.float32)
    nan_edf[:] = np.nan
    put("all_nan.edf", edf_bytes(nan_edf))
    add("edf_all_nan", "EDF float32 frame of NaN: an error row", d / "all_nan.edf", group="fabio", frames=1)
    inf_edf = synthetic_frame(128, 128, seed=11).astype(np.float32)
    inf_edf[60:68, 60:68] = np.inf
    put("inf_block.edf", edf_bytes(inf_edf))
    add("edf_inf_block", "EDF with an 8x8 block of +inf in the centre: an error row or a finite decision",
        d / "inf_block.edf", "either", group="fabio", frames=1)
    put("smv_all_masked.img", smv_bytes(np.zeros((128, 128), np.uint16)))
    add("smv_all_masked", "SMV of all zeros (every pixel masked as ADSC gap): an error row",
        d / "smv_all_masked.img", group="fabio", frames=1)

    # ---- compressed streams ------------------------------------------------------------------
    bz = bz2.compress(smv)
    put("smv_bz2_corrupt.img.bz2", _flip(bz, range(len(bz) // 2, len(bz) // 2 + 64, 3)))
    add("bz2_corrupt", "SMV .img.bz2 with bytes flipped in the middle of the stream: a file error (bad CRC)",
        d / "smv_bz2_corrupt.img.bz2", group="fabio")
    gz = gzip.compress(smv, mtime=0)
    put("smv_gz_corrupt.img.gz", _flip(gz, range(len(gz) // 2, len(gz) // 2 + 64, 3)))
    add("gzip_corrupt", "SMV .img.gz with bytes flipped in the middle of the deflate stream: a file error",
        d / "smv_gz_corrupt.img.gz", group="fabio")
    put("gzip_crc.cbf.gz", gzip.compress(cbf, mtime=0)[:-8] + b"\x00" * 8)
    add("gzip_bad_crc", "miniCBF .gz whose CRC32/size trailer is zeroed: a file error or a finite decision",
        d / "gzip_crc.cbf.gz", "either", group="fabio")
    put("gzip_empty.img.gz", gzip.compress(b"", mtime=0))
    add("gzip_of_nothing", "valid gzip stream of zero bytes: a file error", d / "gzip_empty.img.gz", group="fabio")
    put("bz2_trailing_garbage.img.bz2", bz2.compress(smv) + b"GARBAGE" * 20)
    add("bz2_trailing_garbage", "valid SMV .bz2 followed by garbage bytes: a file error or a finite decision",
        d / "bz2_trailing_garbage.img.bz2", "either", group="fabio")
    put("gz_in_gz.img.gz", gzip.compress(gzip.compress(smv, mtime=0), mtime=0))
    add("gzip_twice", "SMV gzipped twice: a file error naming it", d / "gz_in_gz.img.gz", group="fabio")

    # ---- file-system oddities ------------------------------------------------------------------
    for link, target in (("loop_a.cbf", "loop_b.cbf"), ("loop_b.cbf", "loop_a.cbf"), ("self_loop.cbf", "self_loop.cbf"),
                         ("dangling.cbf", "does_not_exist.cbf")):
        p = d / link
        if p.is_symlink() or p.exists():
            p.unlink()
        os.symlink(target, p)
    add("symlink_loop", "symlink loop (loop_a.cbf -> loop_b.cbf -> loop_a.cbf): a file error naming it",
        d / "loop_a.cbf")
    add("symlink_self", "symlink to itself: a file error naming it", d / "self_loop.cbf")
    add("symlink_dangling", "dangling symlink: a file error naming it", d / "dangling.cbf")
    dirp = d / "directory.cbf"
    if dirp.is_symlink() or dirp.is_file():
        dirp.unlink()
    dirp.mkdir(exist_ok=True)
    add("directory_named_cbf", "a directory named directory.cbf given as a file: a file error naming it", dirp)
    p = put("text_named.cbf", b"this is a text file, not a detector frame\n" * 20)
    add("text_named_cbf", "a text file named .cbf: a file error naming it", p)
    p = put("pdf_named.h5", b"%PDF-1.4\n" + noise[:3000])
    add("pdf_named_h5", "a PDF named .h5: a file error naming it", p, group="hdf5")
    devz = d / "dev_zero.img"
    if devz.is_symlink() or devz.exists():
        devz.unlink()
    if os.path.exists("/dev/zero"):
        os.symlink("/dev/zero", devz)
        add("device_dev_zero", "symlink to /dev/zero named .img (a device, endless): refused as not a regular "
            "file, no hang", devz, hazard="hang")
    if hasattr(os, "geteuid") and os.geteuid() != 0:  # root reads a mode-000 file anyway
        p = put("unreadable.cbf", cbf)
        os.chmod(p, 0)
        add("unreadable", "a miniCBF with mode 000: a file error naming it (permission denied)", p)
    return cases


def _model_cases(d: Path) -> list[Case]:
    d.mkdir(parents=True, exist_ok=True)
    cases: list[Case] = []
    valid = model_seed(d)
    tensors, rec = read_model(valid)
    raw = Path(valid).read_bytes()

    def add(name, desc, path, hazard=None, **extra):
        cases.append(Case(name, "model", desc, str(path), "refuse", hazard=hazard, extra=extra))

    def variant(name, desc, edit=None, *, tensors_edit=None, raw_metadata=None, hazard=None):
        r = json.loads(json.dumps(rec))
        t = dict(tensors)
        if edit is not None:
            r = edit(r)
        if tensors_edit is not None:
            t = tensors_edit(t)
        p = write_model(d / f"{name}.safetensors", t, r, raw_metadata=raw_metadata)
        add(name, desc, p, hazard)

    import torch

    (d / "truncated_half.safetensors").write_bytes(raw[: len(raw) // 2])
    add("truncated_half", "safetensors file cut in half: refused ('not a readable safetensors model file')",
        d / "truncated_half.safetensors")
    (d / "truncated_header.safetensors").write_bytes(raw[:100])
    add("truncated_header", "safetensors file cut inside its JSON header: refused", d / "truncated_header.safetensors")
    (d / "empty.safetensors").write_bytes(b"")
    add("empty", "zero-length model file: refused", d / "empty.safetensors")
    (d / "header_len_huge.safetensors").write_bytes(struct.pack("<Q", 1 << 60) + raw[8:])
    add("header_len_huge", "safetensors whose 8-byte header length says 2**60: refused, no allocation",
        d / "header_len_huge.safetensors")
    variant("metadata_list", "diffscreen metadata record is a JSON list: refused, no traceback (issue 18 #6)",
            lambda r: [r])
    variant("metadata_not_json", "diffscreen metadata record is not JSON: refused", raw_metadata="{broken")
    p = d / "no_record.safetensors"
    from safetensors.torch import save_file

    save_file(tensors, str(p), metadata={"other": "x"})
    add("no_record", "safetensors without a diffscreen record: refused", p)
    variant("input_size_40000", "45 KB model whose record says input_size 40000 (a 6 GB forward pass): refused "
            "as out of bounds before building the network (issue 18 #4)",
            lambda r: {**r, "arch_kwargs": {**r["arch_kwargs"], "input_size": 40000},
                       "preprocess": {**r["preprocess"], "out_size": 40000}}, hazard="memory")
    variant("num_classes_negative", "arch_kwargs num_classes -1: refused, no traceback (issue 18 #6)",
            lambda r: {**r, "arch_kwargs": {**r["arch_kwargs"], "num_classes": -1}})
    variant("class_names_without_miss", "class_names ['hit', 'maybe', 'other']: refused for screening, the "
            "decision needs 'miss' (issue 18 #6)", lambda r: {**r, "class_names": ["hit", "maybe", "other"]})
    cases[-1].extra["screen_only"] = True  # load_model serves CDI models too; the screening method refuses it
    variant("class_names_too_few", "2 class names for 3 outputs: refused",
            lambda r: {**r, "class_names": ["hit", "miss"]})
    variant("class_names_two_default_outputs", "two class_names and no num_classes (the builder's default 3 "
            "outputs): refused, the names would not match the outputs (found by bench/fuzz.py)",
            lambda r: {**r, "class_names": ["maybe", "miss"],
                       "arch_kwargs": {k: v for k, v in r["arch_kwargs"].items() if k != "num_classes"}})
    variant("class_names_not_list", "class_names is the string 'hit,maybe,miss': refused",
            lambda r: {**r, "class_names": "hit,maybe,miss"})
    variant("format_version_99", "format_version 99: refused as unknown (issue 18 #6)",
            lambda r: {**r, "format_version": 99})
    variant("format_version_missing", "no format_version: refused", lambda r: {k: v for k, v in r.items()
                                                                               if k != "format_version"})
    variant("arch_unknown", "arch 'evilnet': refused", lambda r: {**r, "arch": "evilnet"})
    variant("arch_kwargs_list", "arch_kwargs is a list: refused", lambda r: {**r, "arch_kwargs": [1, 2, 3]})
    variant("preprocess_string", "preprocess record is a string: refused", lambda r: {**r, "preprocess": "lcn"})
    variant("preprocess_out_size_negative", "preprocess out_size -240: refused",
            lambda r: {**r, "preprocess": {**r["preprocess"], "out_size": -240}})
    variant("nan_weights", "every weight NaN: refused on load, never every frame 'miss' with exit 0 (issue 18 #2)",
            tensors_edit=lambda t: {k: (torch.full_like(v, float("nan")) if v.is_floating_point() else v)
                                    for k, v in t.items()})
    variant("inf_bias", "one +inf classifier bias: refused on load",
            tensors_edit=lambda t: {**t, "classifier.bias": torch.tensor([float("inf"), 0.0, 0.0])})
    variant("missing_tensor", "classifier.weight missing: refused ('weights do not match')",
            tensors_edit=lambda t: {k: v for k, v in t.items() if k != "classifier.weight"})
    variant("wrong_shape_tensor", "classifier.weight of the wrong shape: refused",
            tensors_edit=lambda t: {**t, "classifier.weight": torch.zeros(3, 7)})

    marker = d / "PWNED_pickle"
    if marker.exists():
        marker.unlink()

    class Payload:
        def __init__(self, path):
            self.path = str(path)

        def __reduce__(self):
            return (open, (self.path, "w"))

    (d / "pickle_renamed.safetensors").write_bytes(pickle.dumps({"state": Payload(marker)}))
    add("pickle_renamed", "a pickle (whose loading would create a marker file) renamed .safetensors: refused, "
        "marker absent", d / "pickle_renamed.safetensors", marker=str(marker))
    marker_pt = d / "PWNED_torch"
    if marker_pt.exists():
        marker_pt.unlink()
    torch.save({"model": Payload(marker_pt)}, str(d / "payload.pt"))
    add("torch_pt_payload", "a torch.save .pt whose pickle would create a marker file when loaded: refused "
        "(safetensors only), marker absent", d / "payload.pt", marker=str(marker_pt))
    (d / "model_dir.safetensors").mkdir(exist_ok=True)
    add("model_is_directory", "a directory named .safetensors: refused", d / "model_dir.safetensors")
    return cases


def _label_cases(d: Path, good: str) -> list[Case]:
    d.mkdir(parents=True, exist_ok=True)
    cases: list[Case] = []
    ok = [[good, 0, "hit"]]

    def add(name, desc, content: bytes, expect="refuse", records=None, **extra):
        p = d / f"{name}.csv"
        p.write_bytes(content)
        cases.append(Case(name, "labels", desc, str(p), expect, extra={"records": records, **extra}))

    add("bom_crlf", "CSV as a spreadsheet writes it: UTF-8 BOM and CRLF line ends: read correctly (issue 18 #6)",
        f"\ufefffile,frame,label\r\n{good},0,hit\r\n".encode("utf-8"), "read", ok)
    add("frame_1e30", "a frame number of 10**30 (written out): refused naming the line, never dropped silently "
        "(issue 18 #6)", f"file,frame,label\n{good},0,hit\n{good},{10 ** 30},miss\n".encode(), "refuse")
    add("frame_1e30_float", "frame '1e30': refused naming the line",
        f"file,frame,label\n{good},0,hit\n{good},1e30,miss\n".encode())
    add("frame_beyond_file", "frame 5 of a one-frame file: refused naming the line for training (evaluate "
        "--scores, which does not open the data, may ignore it)",
        f"file,frame,label\n{good},0,hit\n{good},5,miss\n".encode(), evaluate="either")
    add("frame_negative", "frame -1: refused", f"file,frame,label\n{good},-1,hit\n".encode())
    add("frame_nan", "frame 'nan': refused", f"file,frame,label\n{good},nan,hit\n".encode())
    add("unknown_class", "label 'hot': refused", f"file,frame,label\n{good},0,hot\n".encode())
    add("missing_column", "header file,frame (no label): refused", f"file,frame\n{good},0\n".encode())
    add("conflicting_duplicate", "frame 0 labelled hit then miss: refused",
        f"file,frame,label\n{good},0,hit\n{good},0,miss\n".encode())
    add("semicolon_separated", "European spreadsheet CSV with ';' separators: refused clearly (or read correctly)",
        f"file;frame;label\n{good};0;hit\n".encode(), "either", ok)
    add("latin1", "Latin-1 bytes (not UTF-8) in a file name: refused clearly",
        "file,frame,label\nr\u00e9sum\u00e9.cbf,0,hit\n".encode("latin-1"))
    add("binary_garbage", "random bytes: refused clearly",
        np.random.default_rng(7).integers(0, 256, 2000, dtype=np.uint8).tobytes())
    add("empty", "zero-length label file: refused ('no label')", b"")
    add("utf16_bom", "UTF-16 text with BOM (spreadsheet 'Unicode text'): refused clearly or read correctly",
        f"file,frame,label\r\n{good},0,hit\r\n".encode("utf-16"), "either", ok)
    add("spaces_and_case", "' HIT ' with spaces and capitals, quoted fields: read correctly",
        f'file,frame,label\n"{good}", 0 , HIT \n'.encode(), "read", ok)
    add("extra_row_fields", "a row with more fields than the header: refused naming the line",
        f"file,frame,label\n{good},0,hit,unexpected,more\n".encode())
    return cases


def _scores_cases(d: Path, good: str) -> list[Case]:
    d.mkdir(parents=True, exist_ok=True)
    cases: list[Case] = []
    head = "file,frame,p_hit,p_maybe,p_miss,label\n"

    def add(name, desc, content: bytes | None, expect="refuse"):
        p = d / f"{name}.csv"
        if content is not None:
            p.write_bytes(content)
        cases.append(Case(name, "scores", desc, str(p), expect))

    add("no_label_column", "scores.csv without a label column: refused with one line",
        f"file,frame,p_hit,p_maybe,p_miss\n{good},0,0.7,0.2,0.1\n".encode())
    add("no_frame_column", "scores.csv without a frame column: refused with one line",
        f"file,p_hit,p_maybe,p_miss,label\n{good},0.7,0.2,0.1,hit\n".encode())
    add("frame_not_integer", "frame 'abc': refused naming the line", f"{head}{good},abc,0.7,0.2,0.1,hit\n".encode())
    add("frame_float_text", "frame '0.5': refused naming the line", f"{head}{good},0.5,0.7,0.2,0.1,hit\n".encode())
    add("short_row", "a row cut short (file,frame only): refused naming the line", f"{head}{good},0\n".encode())
    add("empty", "zero-length scores file: refused", b"")
    add("binary_garbage", "random bytes: refused",
        np.random.default_rng(8).integers(0, 256, 3000, dtype=np.uint8).tobytes())
    add("unknown_label", "label 'banana': refused naming the line", f"{head}{good},0,0.7,0.2,0.1,banana\n".encode())
    add("bom_crlf", "scores.csv with a UTF-8 BOM and CRLF line ends: read correctly or refused clearly",
        ("\ufeff" + head.replace("\n", "\r\n") + f"{good},0,0.7,0.2,0.1,hit\r\n").encode(), "either")
    add("missing_file", "--scores names a file that does not exist: refused with one line", None)
    (d / "directory").mkdir(exist_ok=True)
    cases.append(Case("directory", "scores", "--scores names a directory: refused with one line", str(d / "directory"),
                      "refuse"))
    return cases


def _main(argv=None) -> int:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", help="where to write the corpus")
    args = ap.parse_args(argv)
    cases = build_corpus(args.folder)
    for c in cases:
        print(f"{c.category:7s} {c.name:32s} {c.expect:8s} {c.hazard or '':7s} {c.description}")
    counts = {k: sum(c.category == k for c in cases) for k in CATEGORIES}
    print(f"{len(cases)} cases: {counts}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(_main())
