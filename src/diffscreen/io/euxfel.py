"""European XFEL runs: a multi-module detector's frames read with EXtra-data, assembled with EXtra-geom.

A European XFEL *run directory* (``.../raw/r0042`` or ``.../proc/r0042``)
holds one HDF5 sequence file per detector module and sequence
(``RAW-R0042-AGIPD00-S00000.h5``, ...), each module a data source named
``<detector>/DET/<module>CH0:xtdf`` (``/CORR/`` for data corrected since
2026).  diffscreen reads no file of it itself: the run is opened with
EXtra-data (:func:`extra_data.RunDirectory`) and the detector's data are
selected with its multi-module detector classes
(:class:`extra_data.components.AGIPD1M`, ``LPD1M``, ``DSSC1M``,
``JUNGFRAU``), which line the modules up by train ID (EXtra-data
documentation, "Multi-module detector data").  The modules of each frame are
then placed into one image with an EXtra-geom geometry
(``position_modules``: each pixel snapped to a 2-D grid, EXtra-geom
documentation, "Assembling detector data into images").

``--detector`` names the detector as its source names begin (the *domain*
before ``/DET/`` or ``/CORR/``: ``SPB_DET_AGIPD1M-1``, ``FXE_DET_LPD1M-1``,
``SCS_DET_DSSC1M-1``, ``SPB_IRDA_JF4M``).  The detector type is taken from
``--detector-type`` when given, else from the name (``AGIPD1M``,
``LPD1M``, ``DSSC1M``; ``JNGFR``/``JF4M``/``JF1M``/``JUNGF`` for JUNGFRAU),
else from the classes EXtra-data finds for that name in the run
(:func:`extra_data.components.identify_multimod_detectors`).  Corrected data
are read when the run holds them, else raw data (EXtra-data's default, its
``raw=None``); of raw AGIPD data, whose frames hold data and gain, the data.

Frames
------
The frames of a run are numbered 0, 1, ... in EXtra-data's order: train by
train (trains in which at least one module recorded data), and within a
train in the order the detector stored them (pulses for AGIPD, LPD and
DSSC; memory cells for JUNGFRAU in burst mode).  So a run holds
``sum over trains of frames per train`` frames, trains × pulses when every
train has the same number.  Nothing but the index (train IDs, counts) is
read when a run is opened; each :meth:`EuXFELSource.read` reads one frame of
every module.  A frame's :attr:`~diffscreen.io.frame.FrameMeta.extra` holds
``train_id``, ``pulse_id`` (AGIPD/LPD/DSSC; None for JUNGFRAU),
``frame_in_train`` (0-based position in its train, the memory-cell slot for
JUNGFRAU), ``detector_source`` and ``data`` (``"corrected"``/``"raw"``).

In ``scores.csv`` a frame is ``file`` = the run directory, ``frame`` = this
index; ``hits.lst`` lists the kept frames as ``RUN_DIR //frame``.  CrystFEL
does not read run directories; the same numbering is that of the virtual
CXI file EXtra-data writes for the detector with every train that has data
(``extra-data-make-virtual-cxi RUN -o run.cxi --min-modules 1``, or
:meth:`write_virtual_cxi` of the detector object diffscreen uses): its frame
``K`` at ``/entry_1/instrument_1/detector_1/data`` is frame ``K`` here, so
``sed 's|^RUN_DIR //|run.cxi //|' hits.lst`` gives indexamajig its list, with
the geometry EXtra-geom writes for that layout (``write_crystfel_geom``).
The train and pulse IDs of the kept frames are in the frames' metadata
(``meta.extra``); ``hits.cxi`` keeps the assembled kept frames.

Geometry
--------
With ``--geom FILE`` the geometry is read by EXtra-geom,
``<Type>Geometry.from_crystfel_geom(FILE)``: CrystFEL geometry files for
European XFEL detectors address the modules as a fixed-index dimension
(``dim1 = 3``), which diffscreen's own ``--geom`` for stacked-panel frames
(:mod:`diffscreen.io.geom`, cfelpyutils) does not read; ``clen`` (m) and
``photon_energy`` (eV) of the file, where numbers, give the distance and the
wavelength.  Without ``--geom`` a default geometry is used, the layout
EXtra-geom's documentation and its ``example()`` constructors give
(:data:`DEFAULT_QUAD_POSITIONS`): ``AGIPD_1MGeometry.from_quad_positions``
(pixels), ``LPD_1MGeometry`` and ``DSSC_1MGeometry.from_quad_positions``
(mm), ``JUNGFRAUGeometry.example(n_modules)``.  These are idealised layouts,
not the instrument's calibrated one: the gaps and the module placement are
right, the beam centre only roughly; give the experiment's ``.geom`` for
anything that needs the beam centre.  The beam centre is EXtra-geom's
``centre`` of the assembled image, (y, x) turned into diffscreen's (x, y);
the pixel size is the geometry's.

Mask (True = bad)
-----------------
* pixels the detector's correction flags: the ``mask`` key of corrected data
  (``image.mask`` for AGIPD/LPD/DSSC, ``data.mask`` for JUNGFRAU), any
  nonzero value (EXtra-data's ``masked_data`` default: every bad-pixel bit);
* NaN and ±inf pixels (their value is set to 0);
* the shared invalid-value rules (:func:`~diffscreen.io.base.invalid_mask`
  of the stored dtype: 65535 in raw uint16 data);
* every pixel of a module that has no data for the frame's train (missing
  from the run, or from that train);
* the gaps between modules and tiles: assembled pixels that no module pixel
  lands on.

Errors
------
Without EXtra-data / EXtra-geom: :func:`require_extra` raises one
:class:`~diffscreen.errors.ConfigError`: ``pip install 'diffscreen[euxfel]'``.
A directory that is not a run, or that lacks the detector, is a
:class:`~diffscreen.errors.FrameReadError` of that run (frame -1, one row);
a frame that cannot be read is an error of that frame, naming the run, the
frame, its train and pulse and the problem.

Sources: EXtra-data documentation (``RunDirectory``, "Multi-module detector
data": ``AGIPD1M``/``LPD1M``/``DSSC1M``/``JUNGFRAU``, ``select_trains``,
``select_pulses``, ``ndarray(module_gaps=True)``, ``pulse_id_coordinates``,
``identify_multimod_detectors``, ``masked_data``, "Writing virtual CXI
files"); EXtra-geom documentation (``from_quad_positions``,
``from_crystfel_geom``, ``position_modules``, the detector examples).
"""

from __future__ import annotations

import glob
import hashlib
import os
import re
import warnings

import numpy as np

from diffscreen.errors import ConfigError, DiffscreenError, FrameReadError
from diffscreen.io.base import BaseSource, describe_exception, invalid_mask, reader_errors
from diffscreen.io.frame import Frame, FrameMeta

__all__ = [
    "READER_NAME",
    "DETECTOR_TYPES",
    "DEFAULT_QUAD_POSITIONS",
    "INSTALL_HINT",
    "require_extra",
    "detector_type_of",
    "run_directories",
    "EuXFELRuns",
    "EuXFELSource",
]

READER_NAME = "euxfel"
#: The multi-module detectors read (EXtra-data class names).
DETECTOR_TYPES = ("AGIPD1M", "LPD1M", "DSSC1M", "JUNGFRAU")
#: What to install for ``--detector``.
INSTALL_HINT = "pip install 'diffscreen[euxfel]'"
#: Default quadrant positions (first pixel of modules 0, 4, 8, 12; x, y) of the default geometries, as
#: EXtra-geom's documentation and ``example()`` give them: AGIPD in pixels, LPD and DSSC in mm.
DEFAULT_QUAD_POSITIONS = {
    "AGIPD1M": ((-525, 625), (-550, -10), (520, -160), (542.5, 475)),
    "LPD1M": ((11.4, 299), (-11.5, 8), (254.5, -16), (278.5, 275)),
    "DSSC1M": ((-130, 5), (-130, -125), (5, -125), (5, 5)),
}
_GEOMETRY_CLASS = {"AGIPD1M": "AGIPD_1MGeometry", "LPD1M": "LPD_1MGeometry", "DSSC1M": "DSSC_1MGeometry",
                   "JUNGFRAU": "JUNGFRAUGeometry"}
#: The data and mask keys of each type (EXtra-data documentation).
_KEYS = {"AGIPD1M": ("image.data", "image.mask"), "LPD1M": ("image.data", "image.mask"),
         "DSSC1M": ("image.data", "image.mask"), "JUNGFRAU": ("data.adc", "data.mask")}
_NAME_PATTERNS = (("AGIPD1M", r"AGIPD1M"), ("LPD1M", r"LPD1M"), ("DSSC1M", r"DSSC1M"),
                  ("JUNGFRAU", r"JNGFR|JF\d|JF500K|JUNGF"))
_HC_EV_A = 12398.4198  # h c in eV Å


# --------------------------------------------------------------------------- the optional extra


def require_extra():
    """Import EXtra-data and EXtra-geom, or say in one line how to install them.

    Returns
    -------
    (module, module)
        ``extra_data``, ``extra_geom``.

    Raises
    ------
    ConfigError
        Either is not installed: ``... pip install 'diffscreen[euxfel]'``.
    """
    try:
        import extra_data
        import extra_geom
    except ImportError as exc:
        raise ConfigError(f"--detector reads European XFEL runs with EXtra-data and EXtra-geom, which are not "
                          f"installed ({exc.name or exc}): {INSTALL_HINT}") from None
    return extra_data, extra_geom


def detector_type_of(name: str, given: str | None = None) -> str | None:
    """The detector type of a detector name, or None when the name does not say.

    Parameters
    ----------
    name : str
        The detector's source-name prefix (``SPB_DET_AGIPD1M-1``).
    given : str, optional
        The type as the user gave it (case-insensitive; ``AGIPD1M``, ``LPD1M``,
        ``DSSC1M``, ``JUNGFRAU``); wins over the name.

    Returns
    -------
    str or None
        One of :data:`DETECTOR_TYPES`.

    Raises
    ------
    ConfigError
        ``given`` is not one of :data:`DETECTOR_TYPES`.
    """
    if given:
        t = given.strip().upper()
        if t not in DETECTOR_TYPES:
            raise ConfigError(f"--detector-type {given!r} is not one of {', '.join(DETECTOR_TYPES)}")
        return t
    for t, pat in _NAME_PATTERNS:
        if re.search(pat, name, re.IGNORECASE):
            return t
    return None


def run_directories(inputs) -> list[str]:
    """The run directories named by ``inputs`` (paths or globs), in order, duplicates removed.

    Parameters
    ----------
    inputs : iterable of str or os.PathLike

    Returns
    -------
    list of str

    Raises
    ------
    FrameReadError
        An input is not a directory, or a glob matches no directory; one line
        naming it.
    """
    out = []
    for item in [inputs] if isinstance(inputs, (str, os.PathLike)) else inputs:
        item = os.fspath(item)
        found = [item] if os.path.exists(item) or not set("*?[") & set(item) else sorted(glob.glob(item))
        if not found:
            raise FrameReadError("no run directory matches this pattern", path=item)
        for d in found:
            if not os.path.isdir(d):
                why = "no such directory" if not os.path.exists(d) else "not a directory"
                raise FrameReadError(f"{why}: with --detector the inputs are European XFEL run directories "
                                     "(e.g. .../raw/r0042)", path=d)
            out.append(d)
    return list(dict.fromkeys(out))


# --------------------------------------------------------------------------- geometry


class _Assembly:
    """An EXtra-geom geometry as a fixed pixel map: data-block pixel -> assembled pixel (nearest pixel)."""

    def __init__(self, geometry, n_modules: int, module_shape, where: str):
        self.geometry = geometry
        want = (int(n_modules), *map(int, module_shape))
        have = tuple(int(s) for s in getattr(geometry, "expected_data_shape", want))
        if have != want:
            raise ConfigError(f"the geometry is for data of {' x '.join(map(str, have))} (modules x slow scan x fast "
                              f"scan), the detector's are {' x '.join(map(str, want))}", path=where)
        idx = np.arange(np.prod(want), dtype=np.float64).reshape(want)
        try:
            placed, centre = geometry.position_modules(idx)
        except Exception as exc:  # noqa: BLE001 - whatever EXtra-geom raises for a geometry it cannot place
            raise ConfigError(f"EXtra-geom cannot assemble with this geometry ({describe_exception(exc)})",
                              path=where) from None
        from diffscreen.io.limits import check_frame_size

        check_frame_size(placed.shape, where)
        self.shape = (int(placed.shape[0]), int(placed.shape[1]))
        flat = placed.reshape(-1)
        self.dst = np.flatnonzero(np.isfinite(flat))
        self.src = flat[self.dst].astype(np.int64)
        gaps = np.ones(flat.size, bool)
        gaps[self.dst] = False
        #: (H, W) bool: assembled pixels no module pixel lands on.
        self.gaps = gaps.reshape(self.shape)
        self.gaps.setflags(write=False)
        #: (x, y) of the beam (EXtra-geom's centre, (y, x), turned round).
        self.beam_centre_px = (float(centre[1]), float(centre[0]))
        self.pixel_size_mm = float(geometry.pixel_size) * 1000.0
        md = (getattr(geometry, "metadata", None) or {}).get("crystfel", {})
        self.distance_mm = _positive(md.get("clen"), 1000.0)
        ev = _positive(md.get("photon_energy"), 1.0)
        self.wavelength_A = None if ev is None else _HC_EV_A / ev

    def assemble(self, data: np.ndarray, bad: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(modules, SS, FS) float32 data and bool mask -> (H, W) float32 (0 in gaps) and (H, W) bool (gaps bad)."""
        H, W = self.shape
        out = np.zeros(H * W, np.float32)
        out[self.dst] = data.reshape(-1)[self.src]
        mask = np.ones(H * W, bool)
        mask[self.dst] = bad.reshape(-1)[self.src]
        return out.reshape(H, W), mask.reshape(H, W)


def _positive(value, scale: float) -> float | None:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None  # missing, or a location in the data files
    return v * scale if np.isfinite(v) and v > 0 else None


def _load_geometry(extra_geom, dtype: str, n_modules: int, geom_path: str | None):
    cls = getattr(extra_geom, _GEOMETRY_CLASS[dtype])
    if geom_path is not None:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return cls.from_crystfel_geom(geom_path)
        except Exception as exc:  # noqa: BLE001 - EXtra-geom raises KeyError, ValueError, OSError, ...
            raise ConfigError(f"EXtra-geom cannot read this as a CrystFEL geometry of the {dtype} "
                              f"({describe_exception(exc)})", path=geom_path) from None
    if dtype == "JUNGFRAU":
        return cls.example(n_modules)
    unit = {} if dtype == "AGIPD1M" else {"unit": 1e-3}
    return cls.from_quad_positions(DEFAULT_QUAD_POSITIONS[dtype], **unit)


# --------------------------------------------------------------------------- runs


class EuXFELRuns:
    """Opens European XFEL run directories for one detector: what ``screen --detector`` hands the runner.

    Parameters
    ----------
    detector : str
        The detector's source-name prefix (``SPB_DET_AGIPD1M-1``); a whole
        source name (``SPB_DET_AGIPD1M-1/DET/0CH0:xtdf``) is cut at its first ``/``.
    detector_type : str, optional
        ``AGIPD1M``, ``LPD1M``, ``DSSC1M`` or ``JUNGFRAU``; by default from
        the name, else from what EXtra-data finds in each run.
    geom : str or os.PathLike, optional
        A CrystFEL ``.geom`` for EXtra-geom's ``from_crystfel_geom``; by
        default the type's default geometry (module docstring).

    Attributes
    ----------
    identity : str
        Detector, type and the geometry file's SHA-256 (a resumed screen must
        read the same way).

    Raises
    ------
    ConfigError
        EXtra-data or EXtra-geom is missing (:func:`require_extra`), the type
        is unknown, an empty detector name, or a ``--geom`` that EXtra-geom
        cannot read (checked here when the type is known).

    Notes
    -----
    Calling the object (or :meth:`open`) opens a run.  The last run opened
    is kept (its index, train IDs and per-module counts), so that the
    runner's chunks, which open their run anew, do not scan it again.
    """

    def __init__(self, detector: str, *, detector_type: str | None = None, geom=None):
        self._ed, self._eg = require_extra()
        name = str(detector).strip().split("/", 1)[0]
        if not name:
            raise ConfigError("--detector needs the detector's name, e.g. SPB_DET_AGIPD1M-1")
        self.detector = name
        self.detector_type = detector_type_of(name, detector_type)
        self.geom_path = None if geom is None else os.fspath(geom)
        digest = "default"
        if self.geom_path is not None:
            try:
                with open(self.geom_path, "rb") as fh:
                    digest = hashlib.sha256(fh.read()).hexdigest()
            except OSError as exc:
                raise ConfigError(f"cannot read the geometry file ({exc.strerror or exc})",
                                  path=self.geom_path) from None
        self.identity = f"euxfel:{name}:{self.detector_type or 'auto'}:{digest}"
        self._assemblies: dict = {}
        self._last = None  # (path, _Run)
        if self.detector_type is not None and self.detector_type != "JUNGFRAU":
            self._assembly(self.detector_type, 16, self._module_shape(self.detector_type))  # a bad --geom: now

    @staticmethod
    def _module_shape(dtype: str):
        return {"AGIPD1M": (512, 128), "LPD1M": (256, 256), "DSSC1M": (128, 512), "JUNGFRAU": (512, 1024)}[dtype]

    def _assembly(self, dtype: str, n_modules: int, module_shape) -> _Assembly:
        key = (dtype, n_modules, tuple(module_shape))
        if key not in self._assemblies:
            where = self.geom_path or f"the default {dtype} geometry"
            geometry = _load_geometry(self._eg, dtype, n_modules, self.geom_path)
            self._assemblies[key] = _Assembly(geometry, n_modules, module_shape, where)
        return self._assemblies[key]

    def open(self, run) -> "EuXFELSource":
        """Open one run directory.

        Parameters
        ----------
        run : str or os.PathLike
            The run directory.

        Returns
        -------
        EuXFELSource

        Raises
        ------
        FrameReadError
            Not a directory, not a run EXtra-data can open, no such detector
            in it; one line naming the run.
        ConfigError
            The geometry does not fit the detector's data.
        """
        path = os.fspath(run)
        if self._last is not None and self._last[0] == path:
            return EuXFELSource(self._last[1])
        state = _Run(self, path)
        self._last = (path, state)
        return EuXFELSource(state)

    __call__ = open

    def __repr__(self) -> str:
        kind = self.detector_type or "type from the run"
        return f"<EuXFELRuns {self.detector} ({kind}), geometry {self.geom_path or 'default'}>"


class _Run:
    """One opened run: EXtra-data's detector object, its frame index, and the assembly."""

    def __init__(self, runs: EuXFELRuns, path: str):
        self.path = path
        if not os.path.isdir(path):
            raise FrameReadError("not a directory: with --detector the inputs are European XFEL run directories",
                                 path=path)
        ed = runs._ed
        from extra_data import components

        try:
            data = ed.RunDirectory(path)
        except Exception as exc:  # noqa: BLE001 - no files, damaged files: EXtra-data raises several types
            raise FrameReadError(f"EXtra-data cannot open this as a European XFEL run ({describe_exception(exc)})",
                                 path=path) from None
        name = runs.detector
        dtype = runs.detector_type
        classes = [getattr(components, t) for t in DETECTOR_TYPES]
        if dtype is None:
            ids = components.identify_multimod_detectors(data, clses=classes)
            found = {cls.__name__ for n, cls in ids if n == name}
            if len(found) != 1:
                what = f"detector {name} of a known type ({', '.join(DETECTOR_TYPES)})"
                raise FrameReadError(self._not_found(components, data, classes, what), path=path)
            dtype = found.pop()
        cls = getattr(components, dtype)
        try:
            with warnings.catch_warnings():  # "Falling back to raw data": raw is what the run holds
                warnings.simplefilter("ignore", UserWarning)
                det = cls(data, detector_name=name)
        except Exception as exc:  # noqa: BLE001 - SourceNameError, ValueError (inconsistent counts), ...
            if type(exc).__name__ == "SourceNameError":
                what = f"{dtype} detector {name}"
                raise FrameReadError(self._not_found(components, data, classes, what), path=path) from None
            raise FrameReadError(f"EXtra-data cannot read detector {name} as {dtype} ({describe_exception(exc)})",
                                 path=path) from None
        self.det, self.type, self.name = det, dtype, name
        data_key, mask_key = _KEYS[dtype]
        with reader_errors(path, None, f"read the index of {name}"):
            self.kd = det[data_key]
            self.mask_kd = det[mask_key] if mask_key in det else None
            shape = tuple(self.kd.shape)  # (modules present, entries, [cells | data/gain,] SS, FS)
            self.has_cells = dtype == "JUNGFRAU" and len(shape) == 5  # JUNGFRAU: memory cells per train entry
            self.cells = shape[2] if self.has_cells else 1
            self.raw = bool(np.issubdtype(self.kd.dtype, np.integer))
            self.n_modules = int(det.n_modules)
            self.first_modno = 1 if dtype == "JUNGFRAU" else 0
            module_shape = shape[-2:]
            counts = np.asarray(det.frame_counts.values, np.int64) * self.cells
            self.train_ids = np.asarray(det.frame_counts.index.values, np.int64)
            self.starts = np.concatenate([[0], np.cumsum(counts)])
            # which modules have data in which train (modules absent from the run: none)
            self.present = np.zeros((self.n_modules, len(self.train_ids)), bool)
            for src, modno in det.source_to_modno.items():
                n = np.asarray(det.data[src, data_key].data_counts(labelled=False))
                m = modno - self.first_modno
                if 0 <= m < self.n_modules and len(n) == len(self.train_ids):
                    self.present[m] = n > 0
        self.assembly = runs._assembly(dtype, self.n_modules, module_shape)
        self._pulse_ids = None
        self._train = None  # (train index, selected key data, selected mask key data)

    @staticmethod
    def _not_found(components, data, classes, what) -> str:
        try:
            ids = components.identify_multimod_detectors(data, clses=classes)
            found = sorted(f"{n} ({c.__name__})" for n, c in ids)
        except Exception:  # noqa: BLE001 - only for the message
            found = []
        return (f"no {what} in this run (EXtra-data finds: {', '.join(found) or 'none'}); "
                "--detector takes the part of the source names before /DET/ or /CORR/")

    def __len__(self) -> int:
        return int(self.starts[-1])

    def locate(self, k: int) -> tuple[int, int]:
        """(train index, position in the train) of frame ``k``."""
        t = int(np.searchsorted(self.starts, k, side="right")) - 1
        return t, int(k - self.starts[t])

    def pulse_id(self, k: int):
        if self.type == "JUNGFRAU":
            return None
        if self._pulse_ids is None:
            try:
                self._pulse_ids = np.asarray(self.kd.pulse_id_coordinates())
            except Exception:  # noqa: BLE001 - inconsistent or missing pulse IDs: frames still read
                self._pulse_ids = np.array([], np.int64)
        return int(self._pulse_ids[k]) if k < len(self._pulse_ids) else None

    def modules(self, t: int, j: int) -> tuple[np.ndarray, np.ndarray | None]:
        """Frame ``j`` of train index ``t``: (modules, SS, FS) as stored, and the flagged mask or None."""
        from extra_data import by_id, by_index

        if self._train is None or self._train[0] != t:
            trains = by_id[[int(self.train_ids[t])]]
            kd = self.kd.select_trains(trains)
            mk = None if self.mask_kd is None else self.mask_kd.select_trains(trains)
            self._train = (t, kd, mk)
        _, kd, mk = self._train
        if self.type == "JUNGFRAU":
            roi = (slice(j, j + 1),) if self.has_cells else ()

            def one(x):
                a = x.ndarray(module_gaps=True, roi=roi)
                return a[:, 0, 0] if roi else a[:, 0]
        else:
            def one(x):
                a = x.select_pulses(by_index[j : j + 1]).ndarray(module_gaps=True)[:, 0]
                return a[:, 0] if a.ndim == 4 else a  # raw AGIPD: (data, gain) -> data

        data = one(kd)
        flagged = None if mk is None else one(mk) != 0
        return data, flagged


class EuXFELSource(BaseSource):
    """The frames of one detector in one European XFEL run, assembled.

    Made by :meth:`EuXFELRuns.open`.  ``path`` is the run directory,
    ``len`` its number of frames (module docstring), :attr:`shape` the
    assembled ``(H, W)``.  :meth:`read` returns ``data`` (H, W) float32 (the
    stored values: ADU for raw data, the correction's unit, keV or photons,
    for corrected data; 0 in gaps and at non-finite pixels), ``mask`` (H, W)
    bool (True = bad, module docstring) and ``meta`` with the geometry and,
    in ``extra``, ``train_id``, ``pulse_id``, ``frame_in_train``,
    ``detector_source``, ``data`` and ``format = "euxfel"``.
    """

    def __init__(self, run: _Run):
        self._run = run
        self.path = run.path

    def __len__(self) -> int:
        return len(self._run)

    @property
    def shape(self) -> tuple[int, int]:
        return self._run.assembly.shape

    def frame_shape(self, index: int) -> tuple[int, int]:
        """``(H, W)`` of the assembled frame (the same for every frame)."""
        self._check_index(index)
        return self._run.assembly.shape

    def where(self, index: int) -> str:
        """``"train 10001, pulse 1"``: where frame ``index`` is in the run (for messages)."""
        r = self._run
        t, j = r.locate(index)
        pid = r.pulse_id(index)
        inner = f"pulse {pid}" if pid is not None else f"{'cell slot' if r.type == 'JUNGFRAU' else 'frame'} {j}"
        return f"train {int(r.train_ids[t])}, {inner}"

    def _read(self, index: int) -> Frame:
        r = self._run
        t, j = r.locate(index)
        try:
            raw, flagged = r.modules(t, j)
        except DiffscreenError:
            raise
        except Exception as exc:  # noqa: BLE001 - EXtra-data / h5py on a damaged or missing sequence file
            raise FrameReadError(f"{self.where(index)}: cannot read {r.name} ({describe_exception(exc)})",
                                 path=self.path, frame=index) from None
        if raw.shape[0] != r.n_modules:
            raise FrameReadError(f"{self.where(index)}: {r.name} gave {raw.shape[0]} modules, not {r.n_modules}",
                                 path=self.path, frame=index)
        data = raw.astype(np.float32)
        finite = np.isfinite(data)
        bad = ~finite | invalid_mask(raw) | ~r.present[:, t][:, None, None]
        if flagged is not None:
            bad |= flagged
        data[~finite] = 0.0
        img, mask = r.assembly.assemble(data, bad)
        a = r.assembly
        meta = FrameMeta(
            source=self.path,
            index=index,
            detector=f"{r.type} {r.name}",
            pixel_size_mm=a.pixel_size_mm,
            beam_centre_px=a.beam_centre_px,
            distance_mm=a.distance_mm,
            wavelength_A=a.wavelength_A,
            extra={"format": READER_NAME, "train_id": int(r.train_ids[t]), "pulse_id": r.pulse_id(index),
                   "frame_in_train": j, "detector_source": r.name, "data": "raw" if r.raw else "corrected"},
        )
        return Frame(img, mask, meta)

    def __repr__(self) -> str:
        return f"<EuXFELSource {self.path!r}: {self._run.type} {self._run.name}, {len(self)} frames>"
