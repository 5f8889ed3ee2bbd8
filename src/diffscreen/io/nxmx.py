"""Eiger / NeXus NXmx master files: all frames of a run's data files, with the detector mask and geometry.

A DECTRIS Eiger run is one *master* file (``run_master.h5``) and data files
(``run_data_000001.h5``, ``run_data_000002.h5``, ...).  The master holds the
NXmx tree (NXentry ``/entry``, NXinstrument, NXdetector, NXbeam) and, in the
NXdata group ``/entry/data``, the members ``data_000001``,
``data_000002``, ... : external links to ``/entry/data/data`` (N, H, W) of
each data file, usually compressed with bitshuffle-LZ4 (decoded through
:mod:`hdf5plugin`).  :class:`NXmxSource` numbers the frames of all data
files consecutively, in the order of the links' numbers.  A master whose
``/entry/data/data`` is itself a dataset (NXmx with a virtual dataset, or an
Eiger "single file") is read the same way.

Read from the master (paths below ``/entry/instrument``):

==================================================  ===========================================
``detector/detectorSpecific/pixel_mask`` (H, W)     bad pixels, nonzero = bad (also
                                                    ``detector/pixel_mask``; (N, H, W) per frame)
``detector/saturation_value``,                      values at or above it are bad
``detectorSpecific/saturation_value``,
``detectorSpecific/countrate_correction_count_cutoff``
``detector/beam_center_x``, ``beam_center_y``       beam centre, px (a length unit is divided
                                                    by the pixel size)
``detector/detector_distance`` (or ``distance``)    m
``detector/x_pixel_size``, ``y_pixel_size``         m
``beam/incident_wavelength``                        Å; else ``monochromator/wavelength``, else
                                                    ``detectorSpecific/photon_energy`` (eV)
``detector/description``                            detector name
``detectorSpecific/nimages``, ``ntrigger``          frames of the run (for missing data files)
==================================================  ===========================================

A ``units`` attribute, where present, is honoured (m, mm, µm, nm, Å; eV,
keV, J); without one the NXmx units above are assumed.  Geometry is kept
as stated (0, inf, NaN too; :func:`~diffscreen.io.frame.check_geometry`
warns about them).  The beam centre is passed through as the file states it
(x = fast scan, y = slow scan), as for Pilatus ``Beam_xy``.

Masked (issue 13, :func:`~diffscreen.io.base.invalid_mask`): the pixel mask
(any nonzero value: DECTRIS sets bit 0 for gap pixels, bit 1 dead, bit 2
under-responding, bit 3 over-responding, bit 4 noisy; DIALS'
``FormatNXmxEigerFilewriter`` likewise takes every nonzero value as bad),
values at or above the saturation value, and the all-ones value 2**n - 1 of
the stored integer dtype (4294967295 in uint32 Eiger data, which the
detector writes into gap and defective pixels).

Missing or unreadable data files: the master opens; the frames of that data
file are per-frame :class:`~diffscreen.errors.FrameReadError` naming the
master, the frame and the data file, and the other frames read.  How many
frames a missing file held is not written in the master, so it is taken as
the most frames any present data file holds (the files before the last are
all full), and for the last data file as what ``nimages`` × ``ntrigger``
leaves.  A data file still being written counts the frames it holds when
the master is opened.

Source: NeXus NXmx application definition (NIAC, https://manual.nexusformat.org/classes/applications/NXmx.html);
DECTRIS, *EIGER HDF5 file format / Filewriter* documentation (master and
data files, ``detectorSpecific`` fields, pixel-mask bits).
"""

from __future__ import annotations

import bisect
import os
import re
import stat
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from diffscreen.errors import FrameReadError
from diffscreen.io.base import invalid_mask, reader_errors
from diffscreen.io.frame import Frame, FrameMeta
from diffscreen.io.hdf5 import (
    _H5Source,
    _candidates_hint,
    _dataset,
    _decode,
    _finite_or_none,
    _float_or_none,
    _frames_shape,
    _h5_reason,
    _read,
    hdf5_layout,
)
from diffscreen.io.hdf5 import understand as _hdf5_signature

__all__ = ["NXmxSource", "understand", "open_path", "is_nxmx_master", "NXMX_DATA_LINK"]

READER_NAME = "nxmx"
_HC_EV_A = 12398.4198  # h c in eV Å
_EV_TO_J = 1.602176634e-19

#: Names of the NXdata members that hold (or link to) frames: ``data_000001``, ``data_000002``, ...
NXMX_DATA_LINK = re.compile(r"data_(\d+)")
#: Data files kept open at once (a run may have hundreds).
_OPEN_DATA_FILES = 4
#: Most values of a geometry dataset read (one per frame at most).
_SMALL_DATASET_LIMIT = 1 << 22

_DET = "instrument/detector/"
_SPEC = _DET + "detectorSpecific/"
#: Where the pixel mask is, relative to the NXentry, in the order looked at.
PIXEL_MASKS = (_SPEC + "pixel_mask", _DET + "pixel_mask")
#: Where the saturation (overload) value is, relative to the NXentry.
SATURATION = (_DET + "saturation_value", _SPEC + "saturation_value", _SPEC + "countrate_correction_count_cutoff")

_LENGTH_M = {"m": 1.0, "meter": 1.0, "meters": 1.0, "metre": 1.0, "metres": 1.0,
             "mm": 1e-3, "millimeter": 1e-3, "millimeters": 1e-3, "millimetre": 1e-3, "millimetres": 1e-3,
             "cm": 1e-2, "um": 1e-6, "µm": 1e-6, "μm": 1e-6, "micron": 1e-6, "microns": 1e-6,
             "micrometer": 1e-6, "micrometre": 1e-6, "nm": 1e-9, "nanometer": 1e-9, "nanometre": 1e-9,
             "a": 1e-10, "å": 1e-10, "angstrom": 1e-10, "angstroms": 1e-10, "ångström": 1e-10}
_ENERGY_EV = {"ev": 1.0, "kev": 1e3, "j": 1 / _EV_TO_J}
_PIXEL_UNITS = {"pixel", "pixels", "px"}


# --------------------------------------------------------------------------- recognising


def _h5py():
    """h5py, with :mod:`hdf5plugin`'s filters (bitshuffle-LZ4 and friends) registered first."""
    import hdf5plugin
    import h5py

    del hdf5plugin  # imported for registering the filters
    return h5py


def _entry(f):
    """The NXentry holding NXmx frames (``/entry``, else the first group with ``NX_class = NXentry``), or None."""
    import h5py

    names = ["entry"] + [k for k in f.keys() if k != "entry"]
    for name in names:
        try:
            g = f.get(name)
        except Exception:  # noqa: BLE001 - a broken link at the top: not ours to judge
            continue
        if isinstance(g, h5py.Group) and (name == "entry" or _nx_class(g) == "NXentry"):
            return g
    return None


def _nx_class(obj) -> str:
    try:
        return str(_decode(obj.attrs.get("NX_class", "")))
    except Exception:  # noqa: BLE001 - an unreadable attribute
        return ""


def _data_group(entry):
    """``entry/data`` (an NXdata group), or None."""
    import h5py

    try:
        g = entry.get("data")
    except Exception:  # noqa: BLE001
        return None
    return g if isinstance(g, h5py.Group) else None


def _data_members(group) -> list[str]:
    """``data_000001``, ``data_000002``, ... in number order; else ``["data"]`` if present; else []."""
    numbered = sorted((int(m.group(1)), k) for k in group.keys() if (m := NXMX_DATA_LINK.fullmatch(k)))
    if numbered:
        return [k for _, k in numbered]
    return ["data"] if "data" in group else []


def is_nxmx_master(f) -> bool:
    """Whether an open HDF5 file is an NXmx / Eiger master file.

    Parameters
    ----------
    f : h5py.File

    Returns
    -------
    bool
        True when the NXentry's ``data`` group holds ``data_000001``-style
        members (links to data files), or it is an NXdata group and the file
        declares ``definition = NXmx`` or has an Eiger ``detectorSpecific``
        group (a master whose data links are missing is still claimed, so
        that its error says so).  False for CXI and CXIDB-76 files.
    """
    if hdf5_layout(f) != "unknown":
        return False
    entry = _entry(f)
    if entry is None:
        return False
    data = _data_group(entry)
    if data is None:
        return False
    if any(NXMX_DATA_LINK.fullmatch(k) for k in data.keys()):
        return True
    try:
        definition = entry.get("definition")
        definition = str(_decode(definition[()])) if definition is not None else ""
    except Exception:  # noqa: BLE001
        definition = ""
    nxdata = _nx_class(data) == "NXdata" or "data" in data
    return nxdata and (definition == "NXmx" or _SPEC.rstrip("/") in entry)


def understand(path: str, head: bytes) -> bool:
    """True for an HDF5 file laid out as an NXmx / Eiger master (:func:`is_nxmx_master`).

    Parameters
    ----------
    path : str
        The file; opened read-only with h5py (only when ``head`` carries the
        HDF5 signature and it is a regular file).
    head : bytes
        The file's first bytes.

    Returns
    -------
    bool
        Never raises: a file h5py cannot open is left to the generic HDF5
        reader, which names the problem.
    """
    if not _hdf5_signature(path, head):
        return False
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return False
        with _h5py().File(path, "r") as f:
            return is_nxmx_master(f)
    except Exception:  # noqa: BLE001 - must not raise for foreign or damaged files
        return False


def open_path(path: str) -> "NXmxSource":
    """Open an NXmx / Eiger master file (the registry's entry point).

    Parameters
    ----------
    path : str

    Returns
    -------
    NXmxSource

    Raises
    ------
    FrameReadError
        As :class:`NXmxSource`.
    """
    return NXmxSource(path)


# --------------------------------------------------------------------------- the source


@dataclass
class _Part:
    """One member of ``/entry/data``: a data file's frames (internal)."""

    name: str  # "data_000002"
    link: str  # "/entry/data/data_000002"
    file: str | None  # resolved data file, None when the frames are in the master
    dataset: str  # "/entry/data/data"
    stated: str = ""  # "run_data_000002.h5:/entry/data/data" as the link states it
    n: int = 0
    start: int = 0
    error: str | None = None  # why its frames cannot be read
    shape: tuple[int, int] = (0, 0)


class NXmxSource(_H5Source):
    """Frames of an NXmx / DECTRIS Eiger master file and its data files, as one source.

    Parameters
    ----------
    path : str
        The master file (``run_master.h5``).

    Attributes
    ----------
    data_files : list of str
        The data files, in frame order (resolved paths; the master's own path
        where frames are stored in it).
    missing : dict of str to str
        Data files whose frames cannot be read, and why.

    Notes
    -----
    ``read(i)`` gives ``data`` (H, W) float32 in counts and ``mask`` (H, W)
    bool, True = bad (pixel mask, saturation, 2**n - 1; see the module
    notes).  ``meta``: ``detector``, ``pixel_size_mm`` (``x_pixel_size``;
    ``extra["y_pixel_size_mm"]`` when it differs), ``beam_centre_px``
    ``(x, y)``, ``distance_mm``, ``wavelength_A``; ``extra`` holds
    ``format = "nxmx"``, ``data_file``, ``data_file_frame`` (0-based),
    ``saturated_value`` and ``nimages`` where stated.

    Data files are found as the external links name them, relative to the
    master's folder (an absolute name that does not exist is also looked for
    there), opened read-only (without HDF5 file locking when the writer holds
    the lock: a file still being written can be read), at most
    :data:`_OPEN_DATA_FILES` at a time.

    Raises
    ------
    FrameReadError
        The master cannot be opened; it has no ``/entry/data`` members
        (``data_000001``, ... or ``data``), named with the file; none of its
        data files can be read (each named); frames that are not 2-D
        numeric data, or a pixel mask whose shape is not the frames'.
        A data file missing or unreadable among readable ones is no error
        here: its frames raise :class:`~diffscreen.errors.FrameReadError` in
        :meth:`read`, naming the master, the frame and the data file.

    References
    ----------
    NeXus NXmx application definition; DECTRIS EIGER HDF5 file format
    documentation (Filewriter master and data files).
    """

    def __init__(self, path):
        self._open: OrderedDict = OrderedDict()
        super().__init__(path)
        try:
            with reader_errors(self.path, None, "read the NXmx layout"):
                self._layout()
        except BaseException:
            self.close()
            raise
        self._static_bad = None

    # ------------------------------------------------------------------ layout

    def _layout(self) -> None:
        f = self._f
        entry = _entry(f)
        data = None if entry is None else _data_group(entry)
        members = [] if data is None else _data_members(data)
        if not members:
            where = "/entry/data" if data is None else data.name
            raise FrameReadError(
                f"NXmx master file without frame data: {where} holds no data_000001, data_000002, ... links to "
                f"data files (nor a data dataset); name the frame dataset as FILE:/path{_candidates_hint(f)}",
                path=self.path)
        self._entry = entry
        self._parts = [self._part(data, name) for name in members]
        good = [p for p in self._parts if p.error is None]
        if not good:
            why = "; ".join(p.error for p in self._parts)
            raise FrameReadError(f"no data file of this master file can be read: {why}", path=self.path)
        self._shape = good[0].shape
        for p in good[1:]:
            if p.shape != self._shape:
                p.error = (f"data file {p.stated} holds {p.shape[0]}x{p.shape[1]} frames, "
                           f"{good[0].stated} {self._shape[0]}x{self._shape[1]}")
        self._values = {}
        self._nimages = self._total_frames()
        self._count_missing()
        starts = np.cumsum([0] + [p.n for p in self._parts])
        for p, s in zip(self._parts, starts):
            p.start = int(s)
        self._n = int(starts[-1])
        self._starts = [p.start for p in self._parts]
        self._pixel_mask = self._find_mask()
        self._saturation = self._find_saturation()

    def _part(self, group, name: str) -> _Part:
        """Resolve one ``data_NNNNNN`` member: its data file and frame count, or why it cannot be read."""
        import h5py

        link = group.get(name, getlink=True)
        full = f"{group.name.rstrip('/')}/{name}"
        if isinstance(link, h5py.ExternalLink):
            part = _Part(name, full, None, link.path, stated=f"{link.filename}:{link.path}")
            target = self._resolve(link.filename)
            if target is None:
                part.file = os.path.join(os.path.dirname(self.path), link.filename)
                part.error = (f"data file {link.filename} is missing (looked for {part.file}, the target of the "
                              f"external link {full})")
                return part
            part.file = target
            try:
                ds = self._data_file(part, None)
                part.n, part.shape = _frames_shape(ds, target)
            except FrameReadError as exc:
                part.error = f"data file {link.filename} cannot be opened ({exc.problem})"
            except Exception as exc:  # noqa: BLE001 - h5py on a damaged or half-written file
                part.error = f"data file {link.filename} cannot be opened ({_h5_reason(exc)})"
            return part
        # a dataset in the master (hard or soft link, or a virtual dataset)
        part = _Part(name, full, None, full, stated=f"{os.path.basename(self.path)}:{full}")
        try:
            ds = _dataset(group, name, self.path)
            part.n, part.shape = _frames_shape(ds, self.path)
        except FrameReadError as exc:
            part.error = f"{full} cannot be read ({exc.problem})"
        return part

    def _resolve(self, filename: str) -> str | None:
        """The data file an external link names: as given if absolute, else beside the master; None if absent."""
        here = os.path.dirname(self.path)
        tries = [filename] if os.path.isabs(filename) else []
        tries += [os.path.join(here, filename), os.path.join(here, os.path.basename(filename)),
                  os.path.join(os.path.dirname(os.path.realpath(self.path)), os.path.basename(filename))]
        for t in tries:
            if os.path.isfile(t):
                return t
        return None

    def _data_file(self, part: _Part, index: int | None):
        """The frames dataset of ``part``, its data file opened (and kept among the last few) as needed."""
        if part.file is None:
            return _dataset(self._file(), part.dataset, self.path)
        f = self._open.get(part.file)
        if f is None:
            h5py = _h5py()
            try:
                f = h5py.File(part.file, "r")
            except OSError as first:  # locked by the writer: read what it has written so far
                try:
                    f = h5py.File(part.file, "r", locking=False)
                except (OSError, TypeError):  # TypeError: h5py without the locking argument
                    raise first from None
            self._open[part.file] = f
            while len(self._open) > _OPEN_DATA_FILES:
                self._open.popitem(last=False)[1].close()
        else:
            self._open.move_to_end(part.file)
        return _dataset(f, part.dataset, part.file)

    def _total_frames(self) -> int | None:
        nimages = self._scalar(_SPEC + "nimages")
        ntrigger = self._scalar(_SPEC + "ntrigger")
        if nimages is None or not float(nimages).is_integer() or nimages < 1:
            return None
        if ntrigger is None or not float(ntrigger).is_integer() or ntrigger < 1:
            ntrigger = 1
        return int(nimages) * int(ntrigger)

    def _count_missing(self) -> None:
        """Frame counts of the data files that cannot be read (see the module notes)."""
        full = max(p.n for p in self._parts if p.error is None)
        last = len(self._parts) - 1
        for k, p in enumerate(self._parts):
            if p.error is None:
                continue
            p.n = full
            if k == last and self._nimages is not None:
                p.n = self._nimages - sum(q.n for q in self._parts[:-1])
            p.n = max(int(p.n), 1)  # at least one frame, so that the missing file is reported

    def _find_mask(self):
        import h5py

        for name in PIXEL_MASKS:
            try:
                ds = self._entry.get(name)
            except Exception:  # noqa: BLE001 - a broken link: no mask there
                ds = None
            if not isinstance(ds, h5py.Dataset):
                continue
            if ds.dtype.kind not in "biuf":
                raise FrameReadError(f"pixel mask {ds.name} holds {ds.dtype} values, not numbers", path=self.path)
            if tuple(ds.shape) == self._shape or (ds.ndim == 3 and tuple(ds.shape) == (self._n, *self._shape)):
                return ds
            raise FrameReadError(f"pixel mask {ds.name} has shape {tuple(ds.shape)}, but the frames are "
                                 f"{self._shape}: expected {self._shape} or {(self._n, *self._shape)}",
                                 path=self.path)
        return None

    def _find_saturation(self) -> float | None:
        for name in SATURATION:
            v = _finite_or_none(self._scalar(name))
            if v is not None and v > 0:
                return v
        return None

    # ------------------------------------------------------------------ values

    def _values_of(self, name: str):
        """``(values, units)`` of a small dataset below the NXentry (1-D float64), or ``(None, "")``."""
        if name not in self._values:
            import h5py

            try:
                ds = self._entry.get(name)
            except Exception:  # noqa: BLE001 - a broken link: not stated
                ds = None
            v, units = None, ""
            if isinstance(ds, h5py.Dataset) and ds.size <= _SMALL_DATASET_LIMIT and ds.ndim <= 1:
                raw = _read(ds, (), self.path, None)
                if np.asarray(raw).dtype.kind in "biuf":
                    v = np.atleast_1d(np.asarray(raw, dtype=np.float64))
                else:
                    v = _float_or_none(_decode(raw))
                    v = None if v is None else np.array([v])
                units = str(_decode(ds.attrs.get("units", ""))).strip()
            self._values[name] = (v, units)
        return self._values[name]

    def _value(self, name: str, index: int | None = None):
        """One value: a scalar, or frame ``index``'s of a per-frame array; None if absent or unclear."""
        v, _ = self._values_of(name)
        if v is None or v.size == 0:
            return None
        if v.size == 1:
            return float(v[0])
        if index is not None and v.size == self._n:
            return float(v[index])
        return None

    def _scalar(self, name: str):
        return self._value(name, None)

    def _length_m(self, name: str, index: int, default: float = 1.0) -> float | None:
        """A length in m, from the dataset's ``units`` (``default`` m per stored unit without one)."""
        v = self._value(name, index)
        if v is None:
            return None
        units = self._values_of(name)[1].lower()
        return v * _LENGTH_M.get(units, default)

    def _text(self, name: str) -> str | None:
        import h5py

        try:
            ds = self._entry.get(name)
            if not isinstance(ds, h5py.Dataset) or ds.size != 1:
                return None
            v = _decode(ds[()])
            v = _decode(np.ravel(v)[0]) if isinstance(v, np.ndarray) else v
        except Exception:  # noqa: BLE001 - an unreadable description is no reason to refuse a frame
            return None
        return (str(v).strip() or None) if isinstance(v, str) else None

    def _wavelength_A(self, index: int) -> float | None:
        for name in ("instrument/beam/incident_wavelength", "instrument/monochromator/wavelength"):
            m = self._length_m(name, index, default=1e-10)
            if m is not None:
                return m / 1e-10
        e = self._value(_SPEC + "photon_energy", index)
        if e is None:
            return None
        e *= _ENERGY_EV.get(self._values_of(_SPEC + "photon_energy")[1].lower(), 1.0)
        return np.inf if e == 0 else _HC_EV_A / e

    def _beam_centre(self, index: int, px_m: float | None):
        bx, by = self._value(_DET + "beam_center_x", index), self._value(_DET + "beam_center_y", index)
        if bx is None or by is None:
            return None
        units = self._values_of(_DET + "beam_center_x")[1].lower()
        if units and units not in _PIXEL_UNITS and units in _LENGTH_M:
            if px_m is None or not np.isfinite(px_m) or px_m == 0:
                return None
            scale = _LENGTH_M[units] / px_m
            return (bx * scale, by * scale)
        return (bx, by)

    # ------------------------------------------------------------------ reading

    @property
    def data_files(self) -> list[str]:
        """The data files, in frame order (the master's path where the frames are in it)."""
        return [p.file or self.path for p in self._parts]

    @property
    def missing(self) -> dict[str, str]:
        """Data files whose frames cannot be read, and why."""
        return {p.file or p.link: p.error for p in self._parts if p.error is not None}

    def __len__(self) -> int:
        return self._n

    @property
    def shape(self) -> tuple[int, int]:
        return self._shape

    def close(self) -> None:
        """Close the master and every data file still open."""
        while self._open:
            self._open.popitem()[1].close()
        super().close()

    def _locate(self, index: int) -> tuple[_Part, int]:
        k = bisect.bisect_right(self._starts, index) - 1
        p = self._parts[k]
        return p, index - p.start

    def _unreadable(self, p: _Part, j: int, index: int) -> FrameReadError:
        return FrameReadError(f"{p.error}: cannot read its frame {j}", path=self.path, frame=index)

    def _read(self, index: int) -> Frame:
        self._file()
        p, j = self._locate(index)
        if p.error is not None:
            raise self._unreadable(p, j, index)
        where = p.file or self.path
        with reader_errors(self.path, index, f"read frame {j} of data file {where}"):
            ds = self._data_file(p, index)
            key = j if ds.ndim == 3 else ()
            raw = np.asarray(ds[key])
        if raw.shape != self._shape:
            raise FrameReadError(f"frame {j} of {where} has shape {raw.shape}, not {self._shape}",
                                 path=self.path, frame=index)
        bad = invalid_mask(raw, self._saturation)
        bad |= self._mask_bad(index)
        with np.errstate(over="ignore"):  # float64 beyond float32's range becomes inf: check_frame refuses it
            data = raw.astype(np.float32, copy=False)
        return Frame(data=data, mask=bad, meta=self._meta(p, j, index))

    def _mask_bad(self, index: int) -> np.ndarray:
        pm = self._pixel_mask
        if pm is None:
            return np.zeros(self._shape, bool)
        if pm.ndim == 3:
            return np.asarray(_read(pm, index, self.path, index)) != 0
        if self._static_bad is None:
            self._static_bad = np.asarray(_read(pm, (), self.path, index)) != 0
        return self._static_bad

    def read_meta(self, index: int) -> FrameMeta:
        """Metadata of frame ``index`` without reading its pixels.

        Raises
        ------
        FrameIndexError
            ``index`` out of range.
        FrameReadError
            The source is closed, or the frame's data file is missing.
        """
        self._file()
        i = self._check_index(index)
        p, j = self._locate(i)
        if p.error is not None:
            raise self._unreadable(p, j, i)
        with reader_errors(self.path, i, "read the frame's metadata"):
            return self._meta(p, j, i)

    def frame_shape(self, index: int) -> tuple[int, int]:
        """``(H, W)`` of frame ``index`` (every data file holds frames of one shape)."""
        self._check_index(index)
        return self._shape

    def _meta(self, p: _Part, j: int, index: int) -> FrameMeta:
        px = self._length_m(_DET + "x_pixel_size", index)
        py = self._length_m(_DET + "y_pixel_size", index)
        dist = self._length_m(_DET + "detector_distance", index)
        if dist is None:
            dist = self._length_m(_DET + "distance", index)
        extra = {"format": "nxmx", "data_file": os.path.basename(p.file or self.path), "data_file_frame": j}
        if py is not None and px is not None and py != px:
            extra["y_pixel_size_mm"] = py * 1e3
        if self._saturation is not None:
            extra["saturated_value"] = self._saturation
        if self._nimages is not None:
            extra["nimages"] = self._nimages
        return FrameMeta(
            source=self.path,
            index=index,
            detector=self._text(_DET + "description"),
            pixel_size_mm=None if px is None else px * 1e3,
            beam_centre_px=self._beam_centre(index, px),
            distance_mm=None if dist is None else dist * 1e3,
            wavelength_A=self._wavelength_A(index),
            extra=extra,
        )

