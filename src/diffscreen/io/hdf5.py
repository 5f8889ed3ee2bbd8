"""HDF5 frame readers: CXI, CXIDB-76 and any ``file.h5:/dataset``.

Three layouts are read, all lazily (the file stays open, one frame is read
per call) and all through h5py, with :mod:`hdf5plugin` imported first so that
bitshuffle-LZ4 and the other facility filters decode:

CXI (Maia 2012, as :class:`~diffscreen.io.cxi.CXIWriter` writes it)
    Frames ``/entry_k/data_1/data`` (N, H, W), ``entry_1``, ``entry_2``, ...
    read in order of ``k``.  Mask: ``/entry_k/instrument_1/detector_1/mask``
    (H, W) and/or ``/entry_k/data_1/mask`` (N, H, W).  Geometry per frame
    (N,) or per entry (scalar): ``distance`` (m), ``x_pixel_size`` (m),
    ``beam_center_x``/``_y`` (px), ``source_1/energy`` (J).  Labels
    ``/entry_k/result_1/label`` (index into attribute ``class_names``).
CXIDB-76 (Ke et al. 2018; nksauter/fv5080 ``FormatHDF5ImageDictionary``)
    Frames ``/data/<chunk>/images`` (N, H, W), chunks in h5py's (name) order,
    the order the published labels count in.  Per frame ``distance`` (mm) and
    ``wavelength`` (Å) beside the images; ``/metadata/`` holds
    ``BEAM_CENTER_X``/``_Y`` (mm, x = fast scan), ``PIXEL_SIZE`` (mm),
    ``MIN_TRUSTED_VALUE``, ``SATURATED_VALUE`` and ``ACTIVE_AREAS``.
Generic ``file.h5:/path/to/data``
    Any numeric (N, H, W) or (H, W) dataset; no geometry.  Mask: an NXmx
    ``pixel_mask`` of the file (nonzero = bad), if one has the frame shape.

Every layout also masks what the detector itself flags as invalid (issue 13:
a value the detector flags as invalid or overloaded must not decide a frame;
:func:`~diffscreen.io.base.invalid_mask`): the all-ones value of the
stored integer dtype (65535 in uint16, 4294967295 in uint32 Eiger data) and
values at or above ``SATURATED_VALUE`` (CXIDB-76) or the NXmx
``saturation_value``.  The CXI window read (:meth:`CXISource.read_region`)
applies the same rule, so both paths agree.

Hostile files (issue 18): everything is checked when the file is opened,
from the datasets' shapes and types alone: frames must be 2-D or 3-D
integer or float data (not bool, string or compound) within
:func:`~diffscreen.io.limits.max_frame_pixels`; a mask must have the frame's
shape (or the data's, one per frame); a link (soft or external) that cannot
be resolved is named in the error, never taken for a missing dataset.
Pixel data are read one frame (or one window) at a time, per-frame columns
only when they are 1-D or 2-D with few values per frame, and ``/metadata``
only for the keys used.  Whatever h5py raises becomes a
:class:`~diffscreen.errors.FrameReadError` naming the file and frame
(:func:`~diffscreen.io.base.reader_errors`).
"""

from __future__ import annotations

import bisect
import os
import re

import numpy as np

from diffscreen.errors import DatasetNotFoundError, FrameReadError, UnknownFormatError
from diffscreen.io.base import BaseSource, check_input_file, invalid_mask, reader_errors, row_run
from diffscreen.io.frame import CLASS_NAMES, Frame, FrameMeta
from diffscreen.io.limits import check_frame_size

__all__ = [
    "CXISource",
    "CXIDB76Source",
    "HDF5DatasetSource",
    "open_dataset",
    "open_path",
    "understand",
    "hdf5_layout",
    "CXI_BAD_PIXEL_BITS",
    "written_frames",
    "active_area_mask",
]

READER_NAME = "hdf5"
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
_USERBLOCK_OFFSETS = (0, 512, 1024, 2048)
_HC_EV_A = 12398.4198  # h c in eV Å
_EV_TO_J = 1.602176634e-19

#: Cheetah/CXI mask bits that mean "do not use this pixel": invalid (1), hot (4),
#: dead (8), shadowed (16), ignore (64), bad (128), missing (512), noisy (1024),
#: failed artifact correction (4096).  Saturated (2), peak-mask (32),
#: resolution-limit (256) and the correction flags are not bad pixels.
#: diffscreen's own writer stores 1 for bad.
CXI_BAD_PIXEL_BITS = 1 | 4 | 8 | 16 | 64 | 128 | 512 | 1024 | 4096

#: Inactive margin fv5080 trims from each CXIDB-76 active area, in pixels.
ACTIVE_AREA_MARGIN = 1
#: Most values per frame of a per-frame column (``probabilities`` has one per class).
_COLUMN_WIDTH_LIMIT = 1024
#: Most values of a metadata dataset (``ACTIVE_AREAS``: 4 per tile) or a column read whole.
_SMALL_DATASET_LIMIT = 1 << 22
#: The ``/metadata`` keys of a CXIDB-76 file that are read.
CXIDB76_METADATA_KEYS = ("PIXEL_SIZE", "BEAM_CENTER_X", "BEAM_CENTER_Y", "MIN_TRUSTED_VALUE", "SATURATED_VALUE",
                         "ACTIVE_AREAS", "DETECTOR", "DETECTOR_ADDRESS")


# --------------------------------------------------------------------------- opening


def understand(path: str, head: bytes) -> bool:
    """True if ``head`` carries the HDF5 signature (at 0 or after a user block).

    Parameters
    ----------
    path : str
    head : bytes
        The file's first bytes.
    """
    return any(head[o : o + 8] == HDF5_SIGNATURE for o in _USERBLOCK_OFFSETS)


def _h5open(path: str):
    import hdf5plugin  # noqa: F401  registers bitshuffle/LZ4 and friends before h5py reads
    import h5py

    check_input_file(path)  # never hand a FIFO or a device to HDF5
    try:
        try:
            return h5py.File(path, "r")
        except OSError as exc:
            if "already open for write" not in str(exc):
                raise
            # its writer holds it open: under SWMR a reader sees every frame flushed so far (HDF5 SWMR user
            # guide); a writer without SWMR leaves it unreadable, and this second open fails as the first did
            return h5py.File(path, "r", swmr=True)
    except OSError as exc:
        raise FrameReadError(f"cannot open as HDF5 ({_h5_reason(exc)}): damaged, truncated or still being written",
                             path=path) from exc
    except (ValueError, RuntimeError, KeyError, TypeError) as exc:
        raise FrameReadError(f"cannot open as HDF5 ({_h5_reason(exc)})", path=path) from exc


def _link_text(group, name: str) -> str:
    """``"is an external link to other.h5:/data, which "``-style description of a link, or ``""``."""
    import h5py

    try:
        link = group.get(name, getlink=True)
    except Exception:  # noqa: BLE001 - a broken group on the way: no link to describe
        return ""
    if isinstance(link, h5py.ExternalLink):
        return f"is an external link to {link.filename}:{link.path}, which "
    if isinstance(link, h5py.SoftLink):
        return f"is a soft link to {link.path}, which "
    return ""


def _full_name(group, name: str) -> str:
    return name if name.startswith("/") else f"{group.name.rstrip('/')}/{name}"


def _object(group, name: str, path: str):
    """``group[name]``; a link that cannot be resolved is a FrameReadError naming it."""
    try:
        return group[name]
    except (KeyError, OSError, ValueError, RuntimeError) as exc:
        raise FrameReadError(f"{_full_name(group, name)} {_link_text(group, name)}cannot be opened "
                             f"({_h5_reason(exc)})", path=path) from exc


def _optional(group, name: str, path: str):
    """``group[name]`` if the name exists (even as a broken link, then an error), else None."""
    try:
        present = name in group
    except (KeyError, OSError, ValueError, RuntimeError):
        present = True  # a broken group on the way: let _object name it
    return _object(group, name, path) if present else None


def _dataset(group, name: str, path: str, *, optional: bool = False):
    """Like :func:`_object`, and it must be a dataset (refreshed when read under SWMR)."""
    import h5py

    obj = _optional(group, name, path) if optional else _object(group, name, path)
    if obj is not None and not isinstance(obj, h5py.Dataset):
        raise FrameReadError(f"{_full_name(group, name)} is a {type(obj).__name__.lower()}, not a dataset",
                             path=path)
    return obj if obj is None else _fresh(obj)


def _fresh(ds):
    """``ds``, refreshed when its file is read under SWMR: a file this process already has open is shared, and
    shows its datasets as they were when it was first opened until each is refreshed."""
    if ds.file.swmr_mode:
        ds.refresh()
    return ds


def _h5_reason(exc: Exception) -> str:
    text = str(exc.args[0]) if exc.args and isinstance(exc.args[0], str) else str(exc)  # KeyError quotes str()
    m = re.search(r"\((.*)\)\s*$", text)
    return (m.group(1) if m else text).strip()


def hdf5_layout(f) -> str:
    """Name the frame layout of an open HDF5 file.

    Parameters
    ----------
    f : h5py.File

    Returns
    -------
    {"cxi", "cxidb76", "unknown"}
    """
    if _cxi_entry_names(f):
        return "cxi"
    if _cxidb76_chunks(f):
        return "cxidb76"
    return "unknown"


def open_path(path: str):
    """Open an HDF5 file whose layout is recognised (CXI or CXIDB-76), or that holds one frame dataset.

    Parameters
    ----------
    path : str

    Returns
    -------
    CXISource, CXIDB76Source or HDF5DatasetSource
        The last for a file of neither layout whose only 2-D or 3-D numeric
        dataset has frames of at least :data:`MIN_FRAME_SIDE` pixels a side
        (e.g. one detector frame stored at ``/data``): it is read as if
        named ``file.h5:/data``.

    Raises
    ------
    FrameReadError
        The file cannot be opened (truncated, damaged).
    UnknownFormatError
        Neither layout, and no single frame dataset; the message lists
        datasets that could hold frames, to be named as ``file.h5:/path``.
    """
    f = _h5open(path)
    try:
        with reader_errors(path, None, "read the HDF5 layout"):
            layout = hdf5_layout(f)
            if layout == "cxi":
                return CXISource(path, _file=f)
            if layout == "cxidb76":
                return CXIDB76Source(path, _file=f)
            found = _frame_datasets(f)
            hint = _candidates_hint(f, found)
    except BaseException:
        f.close()
        raise
    f.close()
    if len(found) == 1 and min(found[0][1][-2:]) >= MIN_FRAME_SIDE:  # one frame dataset: no need to name it
        return HDF5DatasetSource(path, found[0][0])
    raise UnknownFormatError(
        "HDF5 file without a CXI (/entry_1/data_1/data) or CXIDB-76 (/data/<chunk>/images) layout; "
        f"name the frame dataset as FILE:/path{hint}",
        path=path,
    )


def open_dataset(path: str, dataset: str) -> "HDF5DatasetSource":
    """Open one dataset of an HDF5 file as a frame source (``file.h5:/dataset``).

    Parameters
    ----------
    path : str
    dataset : str
        Absolute dataset path inside the file.

    Returns
    -------
    HDF5DatasetSource

    Raises
    ------
    FrameReadError, DatasetNotFoundError
    """
    return HDF5DatasetSource(path, dataset)


#: Smallest frame side (px) of the one dataset :func:`open_path` reads from a file of no known layout.
MIN_FRAME_SIDE = 32


def _frame_datasets(f) -> list[tuple[str, tuple]]:
    """``("/path", shape)`` of every 2-D or 3-D numeric dataset of an open HDF5 file (what is readable of a
    damaged one)."""
    import h5py

    found = []

    def visit(name, obj):
        if isinstance(obj, h5py.Dataset) and obj.ndim in (2, 3) and obj.dtype.kind in "iuf":
            found.append((f"/{name}", obj.shape))

    try:
        f.visititems(visit)
    except (KeyError, OSError, ValueError, RuntimeError, TypeError):  # a damaged group: list what was found
        pass
    return found


def _candidates_hint(f, found=None, limit: int = 6) -> str:
    found = _frame_datasets(f) if found is None else found
    if not found:
        return " (the file holds no 2-D or 3-D numeric dataset)"
    more = f", and {len(found) - limit} more" if len(found) > limit else ""
    return " (candidates: " + ", ".join(f"{name} {shape}" for name, shape in found[:limit]) + more + ")"


def _read(ds, key, path: str, frame: int | None):
    """``ds[key]``: one frame, window or small dataset; h5py's errors become a FrameReadError."""
    with reader_errors(path, frame, f"read {ds.name}"):  # damaged chunks: OSError, RuntimeError, ValueError
        return ds[key]


def _decode(v):
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    if isinstance(v, np.ndarray) and v.shape == ():
        return _decode(v[()])
    if isinstance(v, np.generic):
        return v.item()
    return v


def _finite_or_none(v) -> float | None:
    try:
        v = float(v)
    except (TypeError, ValueError, OverflowError):
        return None
    return v if np.isfinite(v) else None


def _float_or_none(v) -> float | None:
    """A float as stored (inf and nan kept, for check_geometry to warn about); None if not a number."""
    try:
        return float(v)
    except (TypeError, ValueError, OverflowError):
        return None


def _stated_or_none(v, nan_is_unknown: bool) -> float | None:
    """CXI geometry as stored (inf and nan too); with ``nan_is_unknown`` NaN is None.

    NaN means "unknown" in files diffscreen's CXIWriter wrote (root attribute
    ``creator = "diffscreen"``); elsewhere it is kept, for check_geometry.
    """
    v = _float_or_none(v)
    return None if v is None or (nan_is_unknown and np.isnan(v)) else v


class _H5Source(BaseSource):
    """An open h5py file shared by the HDF5 readers (internal)."""

    def __init__(self, path: str, _file=None):
        self.path = str(path)
        self._f = _file if _file is not None else _h5open(self.path)
        self.being_written = bool(self._f.swmr_mode)  # opened as an SWMR reader: its writer is still adding frames

    def close(self) -> None:
        """Close the HDF5 file."""
        if self._f is not None:
            self._f.close()
            self._f = None

    def _file(self):
        if self._f is None:
            raise FrameReadError("the source is closed", path=self.path)
        return self._f


def _dtype_text(dtype) -> str:
    text = str(dtype)
    return text if len(text) <= 60 else text[:57] + "..."


def _frames_shape(ds, path: str) -> tuple[int, tuple[int, int]]:
    """``(N, (H, W))`` of a frames dataset, checked from its metadata alone.

    Raises
    ------
    FrameReadError
        Not integer or float data (bool, string, compound, complex, ...);
        not 2-D or 3-D; or frames over the pixel limit.
    """
    if ds.dtype.kind not in "iuf":
        kind = {"b": "bool", "S": "string", "U": "string", "O": "string", "V": "compound", "c": "complex"}.get(
            ds.dtype.kind)
        desc = f"{kind} values ({_dtype_text(ds.dtype)})" if kind else f"{_dtype_text(ds.dtype)} values"
        raise FrameReadError(f"{ds.name} holds {desc}, not pixel numbers (integer or float)", path=path)
    if ds.ndim == 3:
        n, shape = int(ds.shape[0]), (int(ds.shape[1]), int(ds.shape[2]))
    elif ds.ndim == 2:
        n, shape = 1, (int(ds.shape[0]), int(ds.shape[1]))
    else:
        raise FrameReadError(f"{ds.name} has shape {ds.shape}; expected frames (N, H, W) or one frame (H, W)",
                             path=path)
    check_frame_size(shape, path)
    return n, shape


def _check_mask(mask, data, n: int, shape, path: str, *, per_frame: bool) -> None:
    """Refuse a mask dataset that does not fit the frames (wrong shape or type)."""
    if mask is None:
        return
    if mask.dtype.kind not in "biuf":
        raise FrameReadError(f"mask {mask.name} holds {_dtype_text(mask.dtype)} values, not numbers", path=path)
    ok = tuple(mask.shape) == tuple(shape) or (per_frame and mask.ndim == 3 and tuple(mask.shape) == (n, *shape))
    if not ok:
        expected = f"{(n, *shape)} (one per frame) or {tuple(shape)}" if per_frame else f"{tuple(shape)}"
        raise FrameReadError(f"mask {mask.name} has shape {tuple(mask.shape)}, but the frames in {data.name} are "
                             f"{tuple(shape)}: expected {expected}", path=path)


# --------------------------------------------------------------------------- CXI


def _cxi_entry_names(f) -> list[str]:
    names = []
    for key in f.keys():
        m = re.fullmatch(r"entry_(\d+)", key)
        if m and "data_1/data" in _object(f, key, f.filename):
            names.append((int(m.group(1)), key))
    return [k for _, k in sorted(names)]


def written_frames(ds) -> int:
    """Frames of an (N, H, W) dataset that its writer has finished while it still adds frames (HDF5 under SWMR).

    A writer fills the dataset from its first frame on and makes each frame
    visible when it flushes; a reader may see a frame's chunk before all of
    it is flushed, or a dataset extended ahead of its data (whose frames read
    as the fill value).  The frames before the last row of chunks along the
    frame axis that holds data are therefore whole, and the frames of that
    row are not yet known to be: with one frame per chunk, every frame but
    the last one written.

    Parameters
    ----------
    ds : h5py.Dataset
        (N, H, W) frames.

    Returns
    -------
    int
        0 for a dataset that is not chunked (nothing tells which frames are
        written) or that holds no chunk yet.
    """
    if ds.chunks is None or ds.ndim != 3 or ds.shape[0] == 0:
        return 0
    c0 = int(ds.chunks[0])

    def written(j: int) -> bool:
        return ds.id.get_chunk_info_by_coord((j * c0, 0, 0)).byte_offset is not None

    lo, hi = -1, (int(ds.shape[0]) - 1) // c0  # the chunks written form a prefix: find its last one
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if written(mid):
            lo = mid
        else:
            hi = mid - 1
    return max(lo, 0) * c0


class _CXIEntry:
    """One ``/entry_k`` group: its frames, masks and per-frame columns (internal)."""

    def __init__(self, group, path: str):
        self.g = group
        self.name = group.name.strip("/")
        self.path = path
        self.data = _dataset(group, "data_1/data", path)
        self.n, self.shape = _frames_shape(self.data, path)
        self.frame_mask = _dataset(group, "data_1/mask", path, optional=True)
        _check_mask(self.frame_mask, self.data, self.n, self.shape, path, per_frame=True)
        self.static_mask = _dataset(group, "instrument_1/detector_1/mask", path, optional=True)
        _check_mask(self.static_mask, self.data, self.n, self.shape, path, per_frame=False)
        self._static_bad = None
        self._cols: dict[str, np.ndarray | None] = {}
        self._class_names: tuple[str, ...] | None = None

    def pixels(self, j: int, index: int) -> tuple[np.ndarray, np.ndarray | None]:
        """Frame ``j`` as float32, and the invalid-value mask of integer data (else None)."""
        key = j if self.data.ndim == 3 else ()
        raw = np.asarray(_read(self.data, key, self.path, index))
        invalid = invalid_mask(raw) if raw.dtype.kind in "iu" else None
        return raw.astype(np.float32, copy=False), invalid

    def pixels_region(self, j: int, index: int, rows, cols, raw_file=None) -> np.ndarray:
        """Raw pixels (file dtype) of rows ``rows[0]:rows[1]`` × columns ``cols[0]:cols[1]``.

        With ``raw_file`` (a :class:`_RawRows`) an uncompressed frame is read
        as one block of whole rows straight from the file (one ``preadv``,
        no HDF5 hyperslab machinery) and a view of the rows read is returned.
        """
        if raw_file is not None:
            off = self._raw_offset(j)
            if off is not None:
                return raw_file.rows(off, self.shape, self.data.dtype, rows, index)[:, cols[0]:cols[1]]
        key = (j, slice(*rows), slice(*cols)) if self.data.ndim == 3 else (slice(*rows), slice(*cols))
        return np.asarray(_read(self.data, key, self.path, index))

    def _raw_offset(self, j: int):
        """File offset of frame ``j``'s pixels when they are stored plainly (row-major, no filter), else None."""
        if not hasattr(self, "_plain"):
            self._plain = _plain_layout(self.data)
        if self._plain is None:
            return None
        kind, base = self._plain
        if kind == "contiguous":
            return base + j * self.shape[0] * self.shape[1] * self.data.dtype.itemsize
        try:
            info = self.data.id.get_chunk_info_by_coord((j, 0, 0) if self.data.ndim == 3 else (0, 0))
        except Exception:  # noqa: BLE001 - no such chunk: let h5py read (fill value)
            return None
        return None if info.byte_offset is None or info.filter_mask else int(info.byte_offset)

    def bad_region(self, j: int, index: int, rows, cols) -> np.ndarray:
        """:meth:`bad` of a window only (read-only when the mask is static)."""
        bad = self.static_bad(index)[rows[0]:rows[1], cols[0]:cols[1]]
        if self.frame_mask is None:
            bad = bad.view()
            bad.flags.writeable = False
            return bad
        key = (j, slice(*rows), slice(*cols)) if self.frame_mask.ndim == 3 else (slice(*rows), slice(*cols))
        return bad | _bad_bits(_read(self.frame_mask, key, self.path, index))  # shape checked at open

    def bad(self, j: int, index: int) -> np.ndarray:
        bad = self.static_bad(index).copy()
        if self.frame_mask is not None:
            key = j if self.frame_mask.ndim == 3 else ()
            bad |= _bad_bits(_read(self.frame_mask, key, self.path, index))
        return bad

    def static_bad(self, index: int) -> np.ndarray:
        if self._static_bad is None:
            ds = self.static_mask  # (H, W), checked at open
            self._static_bad = (np.zeros(self.shape, bool) if ds is None
                                else _bad_bits(_read(ds, (), self.path, index)))
        return self._static_bad

    def column(self, name: str, index: int | None = None):
        """Whole per-frame column (N,) or (N, k), or a scalar as 0-d array; None if absent.

        Raises
        ------
        FrameReadError
            The column is not a scalar, (N,) or (N, k <= 1024) dataset, is
            too large to hold, or cannot be read (a broken link).
        """
        if name not in self._cols:
            import h5py

            ds = _optional(self.g, name, self.path)  # a broken link is an error, a group not our column
            ds = ds if isinstance(ds, h5py.Dataset) else None
            if ds is not None:
                width = int(np.prod(ds.shape[1:])) if ds.ndim else 1
                if ds.ndim > 2 or width > _COLUMN_WIDTH_LIMIT or ds.size > _SMALL_DATASET_LIMIT:
                    raise FrameReadError(f"per-frame column {ds.name} has shape {ds.shape}; expected (N,), "
                                         f"(N, k <= {_COLUMN_WIDTH_LIMIT}) or a scalar", path=self.path, frame=index)
            self._cols[name] = None if ds is None else _read(ds, (), self.path, index)
        return self._cols[name]

    def value(self, name: str, j: int, index: int | None = None):
        col = self.column(name, index)
        if col is None:
            return None
        if np.ndim(col) == 0:
            return _decode(col)
        return _decode(col[j]) if j < len(col) else None

    def class_names(self) -> tuple[str, ...]:
        """The ``class_names`` attribute of ``result_1`` (Hit/Maybe/Miss when absent), read once."""
        if self._class_names is None:
            res = _optional(self.g, "result_1", self.path)
            names = None if res is None else res.attrs.get("class_names")
            self._class_names = CLASS_NAMES if names is None else tuple(str(_decode(n)) for n in np.atleast_1d(names))
        return self._class_names


def _plain_layout(ds):
    """``("contiguous", offset)`` or ``("chunked", None)`` for frames stored plainly, else None.

    Plainly: no filter, native byte order, no userblock, not virtual or
    external, and for a chunked dataset one whole frame per chunk.
    """
    import h5py

    try:
        if ds.file.userblock_size or not ds.dtype.isnative or ds.dtype.kind not in "biuf" or ds.is_virtual:
            return None
        dcpl = ds.id.get_create_plist()
        if dcpl.get_nfilters() or dcpl.get_external_count():
            return None
        layout = dcpl.get_layout()
        if layout == h5py.h5d.CONTIGUOUS:
            off = ds.id.get_offset()
            return None if off is None else ("contiguous", int(off))
        if layout == h5py.h5d.CHUNKED and ds.chunks is not None and tuple(ds.chunks[-2:]) == tuple(ds.shape[-2:]):
            if ds.ndim == 2 or ds.chunks[0] == 1:
                return ("chunked", None)
    except Exception:  # noqa: BLE001 - anything unusual: use h5py
        return None
    return None


class _RawRows:
    """Whole rows of plainly stored frames, read with ``os.preadv`` into a reused buffer (internal)."""

    def __init__(self, path: str, index: int):
        self.path = path
        try:
            self.fd = os.open(path, os.O_RDONLY)
        except OSError as exc:
            raise FrameReadError(f"cannot open for reading ({exc.strerror})", path=path, frame=index) from exc
        self.buf = np.empty(0, np.uint8)

    def rows(self, offset: int, shape, dtype, rows, index) -> np.ndarray:
        H, W = shape
        r0, r1 = rows
        nbytes = (r1 - r0) * W * dtype.itemsize
        if self.buf.size < nbytes:
            self.buf = np.empty(nbytes, np.uint8)
        view = memoryview(self.buf)[:nbytes]
        try:
            got = os.preadv(self.fd, [view], offset + r0 * W * dtype.itemsize)
        except OSError as exc:
            raise FrameReadError(f"cannot read pixels ({exc.strerror})", path=self.path, frame=index) from exc
        if got != nbytes:
            raise FrameReadError("the file ends inside the frame's pixels (truncated?)", path=self.path, frame=index)
        return self.buf[:nbytes].view(dtype).reshape(r1 - r0, W)

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def _bad_bits(mask: np.ndarray) -> np.ndarray:
    mask = np.asarray(mask)
    if mask.dtype == bool:
        return mask.copy()
    if mask.dtype.kind in "iu":
        return (mask.astype(np.int64) & CXI_BAD_PIXEL_BITS) != 0
    return mask != 0


class CXISource(_H5Source):
    """Frames of a CXI file, as :class:`~diffscreen.io.cxi.CXIWriter` writes them.

    Parameters
    ----------
    path : str
        The ``.cxi`` / ``.h5`` file.

    Attributes
    ----------
    entries : list of str
        The ``entry_k`` groups holding frames, in frame order.

    Notes
    -----
    Frames of all ``entry_k`` groups are numbered consecutively, ``entry_1``
    first.  The mask is the OR of the static detector mask and the per-frame
    mask, keeping only the bits in :data:`CXI_BAD_PIXEL_BITS` (a pixel
    flagged only as saturated by the mask bits stays usable), and the
    all-ones value of integer pixel data (:func:`~diffscreen.io.base.invalid_mask`),
    in :meth:`read` and :meth:`read_region` alike.
    ``meta.extra`` carries ``entry``, ``entry_frame`` and, where the file has
    them, ``source_file``, ``source_frame``, ``label`` (class name),
    ``n_spots`` and ``probabilities``.  Source: CXI file format 1.6 (Maia
    2012) and diffscreen's :mod:`~diffscreen.io.cxi`.
    """

    reads_window = True

    def __init__(self, path, *, _file=None):
        self._raw = None
        super().__init__(path, _file)
        try:
            with reader_errors(self.path, None, "read the CXI layout"):
                self._entries = [_CXIEntry(self._f[k], self.path) for k in _cxi_entry_names(self._f)]
                self._nan_is_unknown = str(_decode(self._f.attrs.get("creator", ""))) == "diffscreen"
        except BaseException:
            self.close()
            raise
        if not self._entries:
            self.close()
            raise UnknownFormatError("no /entry_k/data_1/data in this HDF5 file (not CXI)", path=self.path)
        self._starts = list(np.cumsum([0] + [e.n for e in self._entries[:-1]]))
        self._n = int(sum(e.n for e in self._entries))

    @property
    def entries(self) -> list[str]:
        """Names of the ``entry_k`` groups holding frames, in frame order."""
        return [e.name for e in self._entries]

    def __len__(self) -> int:
        return self._n

    @property
    def complete_frames(self) -> int:
        if not self.being_written:
            return self._n
        last = self._entries[-1]
        return self._n - last.n + (written_frames(last.data) if last.data.ndim == 3 else 0)

    @property
    def shape(self) -> tuple[int, int]:
        return self._entries[0].shape

    def locate(self, index: int) -> tuple[str, int]:
        """The ``entry_k`` group and the frame within it of a global frame index.

        Parameters
        ----------
        index : int
            0-based frame index over the whole file.

        Returns
        -------
        entry : str
        frame : int
        """
        e, j = self._entry(self._check_index(index))
        return e.name, j

    def _entry(self, index: int) -> tuple[_CXIEntry, int]:
        k = bisect.bisect_right(self._starts, index) - 1
        return self._entries[k], index - int(self._starts[k])

    def _read(self, index: int) -> Frame:
        self._file()
        e, j = self._entry(index)
        data, invalid = e.pixels(j, index)
        bad = e.bad(j, index)
        if invalid is not None:
            bad |= invalid
        return Frame(data=data, mask=bad, meta=self._meta(e, j, index))

    def read_meta(self, index: int) -> FrameMeta:
        """Metadata of frame ``index`` without reading its pixels.

        Raises
        ------
        FrameIndexError
            ``index`` out of range.
        FrameReadError
            The source is closed.
        """
        self._file()
        e, j = self._entry(self._check_index(index))
        with reader_errors(self.path, index, "read the frame's metadata"):
            return self._meta(e, j, index)

    def frame_shape(self, index: int) -> tuple[int, int]:
        """``(H, W)`` of frame ``index`` (entries may hold frames of different shapes)."""
        return self._entry(self._check_index(index))[0].shape

    def read_region(self, index: int, rows, cols) -> tuple[np.ndarray, np.ndarray]:
        """Only a window of frame ``index``: its raw pixels and bad-pixel mask.

        For the fast screening path (:class:`~diffscreen.preprocess.fast.FastPreprocessor`):
        an uncompressed or row-chunked dataset is read only where the crop
        needs it.  (A compressed frame stored as one chunk is still
        decompressed whole by HDF5.)

        Parameters
        ----------
        index : int
            0-based frame index.
        rows, cols : (int, int)
            ``(first, end)`` rows and columns, end exclusive, inside the frame.

        Returns
        -------
        data : (rows[1] - rows[0], cols[1] - cols[0]) ndarray
            Pixels in the file's dtype (ADU), not converted.  For frames
            stored without compression this is a view of a buffer the source
            reuses: valid until the next ``read_region`` call (copy it to
            keep it).
        bad : same shape bool ndarray
            As :meth:`read`'s mask; read-only when the file has a static mask only.

        Raises
        ------
        FrameIndexError, FrameReadError
            Index out of range, closed source, a window outside the frame, or
            an unreadable chunk.
        """
        self._file()
        e, j = self._entry(self._check_index(index))
        (r0, r1), (c0, c1) = (int(rows[0]), int(rows[1])), (int(cols[0]), int(cols[1]))
        H, W = e.shape
        if not (0 <= r0 <= r1 <= H and 0 <= c0 <= c1 <= W):
            raise FrameReadError(f"window rows {r0}:{r1}, columns {c0}:{c1} is not inside the {H}x{W} frame",
                                 path=self.path, frame=index)
        with reader_errors(self.path, index, "read the frame's window"):
            if self._raw is None and hasattr(os, "preadv") and e._raw_offset(j) is not None:
                self._raw = _RawRows(self.path, index)
            data = e.pixels_region(j, index, (r0, r1), (c0, c1), self._raw)
            bad = e.bad_region(j, index, (r0, r1), (c0, c1))
        # the same invalid-value rule as read(); the max spares the mask pass on most frames (over the window's
        # rows as one contiguous run: a pixel between them only costs the pass)
        if data.dtype.kind in "iu" and data.size and row_run(data)[0].max() >= np.iinfo(data.dtype).max:
            bad = bad | invalid_mask(data)
        return data, bad

    def close(self) -> None:
        """Close the HDF5 file (and the raw reader of :meth:`read_region`)."""
        if self._raw is not None:
            self._raw.close()
            self._raw = None
        super().close()

    def _meta(self, e: _CXIEntry, j: int, index: int) -> FrameMeta:
        det = "instrument_1/detector_1/"
        ours = self._nan_is_unknown
        dist = _stated_or_none(e.value(det + "distance", j, index), ours)
        px = _stated_or_none(e.value(det + "x_pixel_size", j, index), ours)
        bx = _stated_or_none(e.value(det + "beam_center_x", j, index), ours)
        by = _stated_or_none(e.value(det + "beam_center_y", j, index), ours)
        energy = _stated_or_none(e.value("instrument_1/source_1/energy", j, index), ours)
        description = e.value(det + "description", j, index)
        return FrameMeta(
            source=self.path,
            index=index,
            detector=None if description in (None, "", "unknown") else str(description),
            pixel_size_mm=None if px is None else px * 1e3,
            beam_centre_px=None if bx is None or by is None else (bx, by),
            distance_mm=None if dist is None else dist * 1e3,
            wavelength_A=None if energy is None else (np.inf if energy == 0 else _HC_EV_A / (energy / _EV_TO_J)),
            extra=self._extra(e, j, index),
        )

    def _extra(self, e: _CXIEntry, j: int, index: int) -> dict:
        extra = {"format": "cxi", "entry": e.name, "entry_frame": j}
        for key in ("source_file", "source_frame", "n_spots"):
            v = e.value("result_1/" + key, j, index)
            if v is not None and v != "" and not (isinstance(v, int) and v < 0):
                extra[key] = v
        lab = _float_or_none(e.value("result_1/label", j, index))
        names = e.class_names()
        if lab is not None and lab.is_integer() and 0 <= lab < len(names):
            extra["label"] = names[int(lab)]
        probs = e.column("result_1/probabilities", index)
        if probs is not None and np.ndim(probs) == 2 and j < len(probs) and probs.dtype.kind in "iuf":
            extra["probabilities"] = [float(p) for p in probs[j]]
        return extra


# --------------------------------------------------------------------------- CXIDB-76


def _cxidb76_chunks(f) -> list[str]:
    import h5py

    data = f.get("data")
    if not isinstance(data, h5py.Group) or "metadata" not in f:
        return []
    # "images" present (even as a broken link, reported when opened)
    return [k for k in data.keys() if isinstance(data.get(k), h5py.Group) and "images" in data[k]]


class CXIDB76Source(_H5Source):
    """Frames of a CXIDB entry 76 run file (Ke et al. 2018), e.g. ``r0095_2000.h5``.

    Parameters
    ----------
    path : str

    Notes
    -----
    Layout (fv5080 ``FormatHDF5ImageDictionary``): chunks
    ``/data/<chunk>/images`` (N, H, W), taken in h5py's name order, which is
    the order of the 1-based indices in ``expert_annotation.txt``; per-frame
    ``distance`` (mm) and ``wavelength`` (Å) beside them.  Pixels are read
    as int32, as the authors' reader does, then returned as float32.

    Geometry from ``/metadata``: beam centre ``BEAM_CENTER_X`` (fast scan) and
    ``BEAM_CENTER_Y`` (slow scan) in mm divided by ``PIXEL_SIZE`` (mm).

    Mask: pixels outside every ``ACTIVE_AREAS`` tile (quadruples
    ``(slow0, fast0, slow1, fast1)``, ends exclusive, each trimmed by
    :data:`ACTIVE_AREA_MARGIN` px as fv5080 does; applied when the file has
    more than one tile, i.e. the assembled CSPAD), and pixels below
    ``MIN_TRUSTED_VALUE``, and (issue 13) pixels at or above ``SATURATED_VALUE``
    or at the all-ones value of the stored integer dtype; the saturation value
    is also in ``meta.extra["saturated_value"]``.
    """

    def __init__(self, path, *, _file=None):
        super().__init__(path, _file)
        try:
            with reader_errors(self.path, None, "read the CXIDB-76 layout"):
                self._chunks = [(k, _dataset(self._f["data"][k], "images", self.path))
                                for k in _cxidb76_chunks(self._f)]
                if not self._chunks:
                    raise UnknownFormatError("no /data/<chunk>/images in this HDF5 file (not CXIDB-76)",
                                             path=self.path)
                sizes = [_frames_shape(ds, self.path) for _, ds in self._chunks]
                self._md = self._metadata()
        except BaseException:
            self.close()
            raise
        self._counts = [n for n, _ in sizes]
        self._shape = sizes[0][1]
        self._starts = list(np.cumsum([0] + self._counts[:-1]))
        self._static_bad = None

    def _metadata(self) -> dict:
        """The used keys of ``/metadata`` (:data:`CXIDB76_METADATA_KEYS`), each a small dataset."""
        md = {}
        group = _object(self._f, "metadata", self.path)
        for key in CXIDB76_METADATA_KEYS:
            ds = _dataset(group, key, self.path, optional=True)
            if ds is None:
                continue
            if ds.size > _SMALL_DATASET_LIMIT or ds.dtype.kind not in "biufSUO":
                raise FrameReadError(f"{ds.name} has shape {ds.shape} and type {_dtype_text(ds.dtype)}; expected "
                                     "a number, a string or a short list", path=self.path)
            v = _read(ds, (), self.path, None)
            md[key] = _decode(v) if np.ndim(v) == 0 else np.asarray(v)
        return md

    def __len__(self) -> int:
        return int(sum(self._counts))

    @property
    def shape(self) -> tuple[int, int]:
        return self._shape

    def _locate(self, index: int) -> tuple[int, int]:
        k = bisect.bisect_right(self._starts, index) - 1
        return k, index - int(self._starts[k])

    def _read(self, index: int) -> Frame:
        self._file()
        k, j = self._locate(index)
        name, ds = self._chunks[k]
        key = j if ds.ndim == 3 else ()
        stored = np.asarray(_read(ds, key, self.path, index))
        if stored.shape != self._shape:
            raise FrameReadError(f"chunk {name} holds {stored.shape} frames, chunk 0 {self._shape}",
                                 path=self.path, frame=index)
        bad = invalid_mask(stored, _finite_or_none(self._md.get("SATURATED_VALUE")))
        raw = stored.astype(np.int32)
        bad |= self._active_area_bad()
        low = _finite_or_none(self._md.get("MIN_TRUSTED_VALUE"))
        if low is not None:
            bad |= raw < low
        return Frame(data=raw.astype(np.float32), mask=bad, meta=self._meta(k, j, index))

    def _active_area_bad(self) -> np.ndarray:
        if self._static_bad is None:
            self._static_bad = active_area_mask(self._md.get("ACTIVE_AREAS"), self._shape)
        return self._static_bad

    def _chunk_value(self, k: int, name: str, j: int, index: int | None = None):
        import h5py

        ds = _optional(self._chunks[k][1].parent, name, self.path)  # a broken link is an error
        if not isinstance(ds, h5py.Dataset) or ds.ndim > 1:
            return None
        v = _read(ds, (), self.path, index) if ds.ndim == 0 else (_read(ds, j, self.path, index)
                                                                  if j < ds.shape[0] else None)
        return _decode(v)

    def _meta(self, k: int, j: int, index: int) -> FrameMeta:
        md = self._md
        # geometry as stored (inf/nan kept: check_geometry warns about them)
        px = _float_or_none(md.get("PIXEL_SIZE"))
        bx, by = _float_or_none(md.get("BEAM_CENTER_X")), _float_or_none(md.get("BEAM_CENTER_Y"))
        beam = (None if px is None or bx is None or by is None or not np.isfinite(px) or px == 0
                else (bx / px, by / px))
        extra = {"format": "cxidb76", "chunk": self._chunks[k][0], "chunk_frame": j}
        for key, name in (("saturated_value", "SATURATED_VALUE"), ("min_trusted_value", "MIN_TRUSTED_VALUE")):
            if _finite_or_none(md.get(name)) is not None:
                extra[key] = _finite_or_none(md.get(name))
        ts = self._chunk_value(k, "timestamp", j, index)
        if ts is not None:
            extra["timestamp"] = ts
        det = md.get("DETECTOR") or md.get("DETECTOR_ADDRESS")
        return FrameMeta(
            source=self.path,
            index=index,
            detector=None if det is None else str(det),
            pixel_size_mm=px,
            beam_centre_px=beam,
            distance_mm=_float_or_none(self._chunk_value(k, "distance", j, index)),
            wavelength_A=_float_or_none(self._chunk_value(k, "wavelength", j, index)),
            extra=extra,
        )


def active_area_mask(active_areas, shape, *, margin: int = ACTIVE_AREA_MARGIN) -> np.ndarray:
    """Bad-pixel mask from CXIDB-76 / cctbx ``ACTIVE_AREAS`` tiles.

    Parameters
    ----------
    active_areas : (4 T,) int array_like or None
        Tiles as ``(slow0, fast0, slow1, fast1)``, ends exclusive (cctbx
        ``matrix_paste_block_in_place`` order, as fv5080 reads them).
    shape : (int, int)
        ``(H, W)`` of the frame.
    margin : int
        Pixels trimmed from each tile edge (fv5080 uses 1).

    Returns
    -------
    (H, W) bool ndarray
        True outside every tile.  All False when there is at most one tile
        (a monolithic detector such as the Rayonix), as in fv5080.
    """
    tiles = np.asarray([] if active_areas is None else active_areas, dtype=np.int64).reshape(-1)
    if tiles.size < 8 or tiles.size % 4:
        return np.zeros(shape, bool)
    bad = np.ones(shape, bool)
    for s0, f0, s1, f1 in tiles.reshape(-1, 4):
        bad[max(s0 + margin, 0) : max(s1 - margin, 0), max(f0 + margin, 0) : max(f1 - margin, 0)] = False
    return bad


# --------------------------------------------------------------------------- generic dataset


class HDF5DatasetSource(_H5Source):
    """Frames of one HDF5 dataset, named as ``file.h5:/path/to/data``.

    Parameters
    ----------
    path : str
        The HDF5 file.
    dataset : str
        Dataset path inside it: (N, H, W) frames or one (H, W) frame, any
        numeric dtype (read as float32).

    Notes
    -----
    No geometry.  Mask: the first NXmx ``pixel_mask`` of :data:`NXMX_PIXEL_MASKS`
    (or a ``pixel_mask`` beside the dataset) whose shape is the frame's, or
    (N, H, W) per frame, nonzero = bad; plus the all-ones value of an integer
    dtype and values at or above an NXmx ``saturation_value``.
    ``self.path`` is the spec ``file.h5:/dataset``.

    Raises
    ------
    FrameReadError
        The file cannot be opened, or the dataset's shape or dtype is not
        that of frames.
    DatasetNotFoundError
        No dataset at ``dataset``; the message lists candidates.
    """

    def __init__(self, path, dataset: str):
        import h5py

        super().__init__(path)
        self.file = self.path
        self.dataset = "/" + dataset.lstrip("/")
        self.path = f"{self.file}:{self.dataset}"
        try:
            with reader_errors(self.file, None, f"open {self.dataset}"):
                obj = _optional(self._f, self.dataset, self.file)  # a broken link is named, not "missing"
                if not isinstance(obj, h5py.Dataset):
                    what = "no dataset at" if obj is None else "a group, not a dataset, at"
                    raise DatasetNotFoundError(f"{what} {self.dataset} in this file{_candidates_hint(self._f)}",
                                               path=self.file)
                self._ds = _fresh(obj)
                self._n, self._shape = _frames_shape(obj, self.file)
                self._pixel_mask, self._saturation = _nxmx_mask_info(self._f, obj, self._shape)
        except BaseException:
            self.close()
            raise
        self._static_bad = None

    def __len__(self) -> int:
        return self._n

    @property
    def complete_frames(self) -> int:
        if not self.being_written:
            return self._n
        return written_frames(self._ds) if self._ds.ndim == 3 else 0

    @property
    def shape(self) -> tuple[int, int]:
        return self._shape

    def _read(self, index: int) -> Frame:
        self._file()
        key = index if self._ds.ndim == 3 else ()
        raw = np.asarray(_read(self._ds, key, self.path, index))
        bad = invalid_mask(raw, self._saturation)
        pm = self._pixel_mask
        if pm is not None:
            if pm.ndim == 2:
                if self._static_bad is None:
                    self._static_bad = np.asarray(_read(pm, (), self.path, index)) != 0
                bad |= self._static_bad
            else:
                bad |= np.asarray(_read(pm, index, self.path, index)) != 0
        meta = FrameMeta(source=self.path, index=index, extra={"format": "hdf5", "dataset": self.dataset})
        if self._saturation is not None:
            meta.extra["saturated_value"] = self._saturation
        with np.errstate(over="ignore"):  # float64 beyond float32's range becomes inf: check_frame refuses it
            data = raw.astype(np.float32, copy=False)
        return Frame(data=data, mask=bad, meta=meta)


#: Where NXmx (and DECTRIS Eiger) files keep the detector's pixel mask.
NXMX_PIXEL_MASKS = (
    "/entry/instrument/detector/pixel_mask",
    "/entry/instrument/detector/detectorSpecific/pixel_mask",
)
#: Where they keep the saturation (overload) value.
NXMX_SATURATION = (
    "/entry/instrument/detector/saturation_value",
    "/entry/instrument/detector/detectorSpecific/saturation_value",
    "/entry/instrument/detector/detectorSpecific/countrate_correction_count_cutoff",
)


def _nxmx_mask_info(f, ds, shape):
    """The NXmx ``pixel_mask`` dataset fitting frames of ``shape`` (or None), and the saturation value."""
    import h5py

    parent = ds.parent.name.rstrip("/")
    mask = None
    for p in NXMX_PIXEL_MASKS + (f"{parent}/pixel_mask",):
        try:
            obj = f.get(p)
        except Exception:  # noqa: BLE001 - broken link
            obj = None
        if isinstance(obj, h5py.Dataset) and obj.name != ds.name and obj.dtype.kind in "biuf" and (
                tuple(obj.shape) == tuple(shape) or (obj.ndim == 3 and tuple(obj.shape) == tuple(ds.shape))):
            mask = obj
            break
    saturation = None
    for p in NXMX_SATURATION + (f"{parent}/saturation_value",):
        try:
            obj = f.get(p)
            v = obj[()] if isinstance(obj, h5py.Dataset) and obj.size == 1 else None
            v = None if v is None else _finite_or_none(np.ravel(v)[0])
        except Exception:  # noqa: BLE001
            v = None
        if v is not None and v > 0:
            saturation = v
            break
    return mask, saturation
