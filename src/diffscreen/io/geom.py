"""CrystFEL geometry (``.geom``): multi-panel detectors whose frames come as stacked panels.

XFEL detectors (JUNGFRAU 4M/16M, AGIPD 1M, ePix10k, CSPAD) store a frame as
its panels stacked into one data block, ``(SS, FS)`` per frame (``(N, SS,
FS)`` per file); a CrystFEL geometry file says where each panel sits in the
lab.  This module reads such a file with cfelpyutils' CrystFEL geometry
reader (:func:`cfelpyutils.geometry.load_crystfel_geometry`, a port of
CrystFEL's own reader; diffscreen does not parse geometry itself), assembles
the panels into one 2-D frame, and wraps any
:class:`~diffscreen.io.base.FrameSource` so that it yields the assembled
frames (:class:`GeomSource`).

Conventions (CrystFEL geometry documentation, ``man crystfel_geometry``)
------------------------------------------------------------------------
* Lab frame: +z along the beam, +y up, +x completing the right-handed
  system; the beam meets the detector at x = y = 0.
* A panel covers data-block pixels ``min_ss..max_ss`` × ``min_fs..max_fs``
  (inclusive).  Its pixel (fs, ss), counted from the panel's first pixel,
  has its corner at ``corner + fs·fs_vector + ss·ss_vector`` (``corner_x``,
  ``corner_y``, ``fs``, ``ss``, in units of the panel's pixel width) and its
  centre half a pixel further along both vectors.  ``res`` is pixels per
  metre, ``clen`` (m) + ``coffset`` (m) the distance, ``photon_energy`` (eV)
  the beam.
* Bad regions: ``bad_*/min_x..max_x, min_y..max_y`` (lab, pixel units,
  inclusive, tested at each pixel's corner as CrystFEL does) or
  ``bad_*/min_fs..max_fs, min_ss..max_ss`` (data-block coordinates,
  inclusive), optionally limited to ``bad_*/panel``; ``no_index = 1`` marks a
  whole panel bad; a mask (``mask``/``mask_file`` with ``mask_good`` /
  ``mask_bad``, or ``maskN_data``/``maskN_file``/``maskN_goodbits``/
  ``maskN_badbits``) marks a pixel bad unless all good bits are set, or when
  any bad bit is.  A mask without a file is read from the frame's own data
  file (HDF5).

Assembly
--------
Nearest-pixel placement with cfelpyutils' pixel maps
(:func:`cfelpyutils.geometry.compute_pix_maps`, the corner of every
data-block pixel in the lab, in pixels): a pixel's centre ``(xc, yc)`` lands
in assembled column ``floor(xc) - X0`` and row ``Y1 - floor(yc)``, with
``X0`` the smallest ``floor(xc)`` and ``Y1`` the largest ``floor(yc)`` of the
detector.  The assembled frame thus shows +x to the right and +y up (row 0
at the top), one assembled pixel per lab cell ``[X, X+1) × [Y, Y+1)``, and is
the bounding box of the panels (cfelpyutils'
:func:`~cfelpyutils.geometry.compute_visualization_pix_maps` is not used: it
centres the image on the beam, which pads one-sided detectors, and casts
negative coordinates to unsigned integers).  The beam (x = y = 0) is then at
``beam_centre_px = (-X0 - 0.5, Y1 + 0.5)`` (diffscreen's convention: pixel
centres at integers).  Assembled pixels that no panel covers (module and
chip gaps, the central hole) are masked, and so is every pixel whose
data-block pixel is bad.  Panels must share one ``res``; a tilted panel (a z
component, or fs/ss vectors off the axes) is placed by its x/y projection,
and pixels of a rotated panel that round to the same cell keep the last.

What cfelpyutils gets
---------------------
Four things it reads differently from CrystFEL are normalised in the text
before it is handed over (:func:`_for_cfelpyutils`): ``no_index = 0`` /
``false`` (cfelpyutils takes any value as true, so the line is dropped: 0 is
the default); an ``fs``/``ss`` direction that leaves an axis out
(``ss = -1.0y``: cfelpyutils keeps that axis's default, so ``+0.0x`` is
added, as CrystFEL reads it); and a ``photon_energy`` with units
(``9.3 keV``) or a ``wavelength`` (``1.33 A``, ``1.33e-10 m``), which become
``photon_energy`` in eV.  ``clen`` or ``photon_energy`` given as a location in the data file are
taken from the frame's own metadata when its reader has them.  Not
supported: data blocks with a fixed-index dimension (``dim1 = 3``), several
``%`` placeholders, ``flag_*`` and ``mask_edge_pixels``.

hits.cxi
--------
:meth:`GeomSource.read_raw` gives a frame in its data-block layout, which is
what ``diffscreen screen --geom`` stores in ``hits.cxi`` at
``/entry_1/data_1/data`` (N, SS, FS), with the per-frame mask at
``/entry_1/data_1/mask`` (1 = bad), so that ``indexamajig -g`` reads it with
the same geometry when that geometry says ``data = /entry_1/data_1/data``,
``dim0 = %``, ``dim1 = ss``, ``dim2 = fs`` and keeps its masks in files;
otherwise :meth:`DetectorGeometry.hits_geometry_text` gives the ``hits.geom``
to use instead.
"""

from __future__ import annotations

import hashlib
import io as _io
import math
import os
import re
import warnings

import numpy as np

from diffscreen.errors import ConfigError, DiffscreenError, FrameReadError
from diffscreen.io.base import BaseSource, describe_exception, reader_errors
from diffscreen.io.frame import Frame, FrameMeta

__all__ = [
    "CXI_DATA",
    "CXI_MASK",
    "DetectorGeometry",
    "GeomSource",
    "load_geometry",
    "as_geometry",
    "open_with_geometry",
    "iter_frames_with_geometry",
]

#: Where CrystFEL's CXI convention (and :class:`~diffscreen.io.cxi.CXIWriter`) keeps the frames.
CXI_DATA = "/entry_1/data_1/data"
#: Where it keeps the per-frame mask (nonzero = bad in diffscreen's files).
CXI_MASK = "/entry_1/data_1/mask"
_HC_EV_A = 12398.4198  # h c in eV Å
#: Panels whose pixel sizes differ by more than this (relative) cannot share one assembled frame.
_RES_TOLERANCE = 1e-6
_MASK_SLOTS = ("",) + tuple(str(k) for k in range(8))  # legacy mask/mask_file, then mask0..mask7


# --------------------------------------------------------------------------- reading


def _for_cfelpyutils(text: str) -> str:
    """The geometry text with the four things cfelpyutils reads unlike CrystFEL normalised (module docstring)."""
    out = []
    for line in text.splitlines():
        body = line.split(";", 1)[0]
        m = re.fullmatch(r"\s*([^\s=]+)\s*=\s*(.*?)\s*", body)
        if m:
            key, value = m.group(1), m.group(2)
            leaf = key.rsplit("/", 1)[-1]
            if leaf == "no_index" and value.lower() in ("0", "false"):
                continue  # cfelpyutils: bool("0") is True
            if leaf in ("fs", "ss"):  # cfelpyutils keeps the default of an axis the value leaves out
                missing = [a for a in "xyz" if a not in value]
                if missing and value:
                    out.append(f"{key} = {value} " + " ".join(f"+0.0{a}" for a in missing))
                    continue
            if key in ("photon_energy", "wavelength"):
                ev = _energy_ev(key, value)
                if ev is not None:
                    out.append(f"photon_energy = {ev!r}")
                    continue
        out.append(line)
    return "\n".join(out) + "\n"


def _energy_ev(key: str, value: str) -> float | None:
    """``photon_energy = 9.3 keV`` or ``wavelength = 1.33 A`` as eV; None for a plain number or a file location."""
    m = re.fullmatch(r"([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*([A-Za-z]*)", value)
    if not m:
        return None
    try:
        v = float(m.group(1))
    except ValueError:
        return None
    unit = m.group(2)
    if key == "photon_energy":
        return {"": None, "eV": v, "keV": v * 1000.0}.get(unit) if unit else None
    if v <= 0:
        return None
    scale = {"A": 1.0, "m": 1e10, "": 1e10}.get(unit)  # CrystFEL: metres unless told
    return None if scale is None else _HC_EV_A / (v * scale)


def load_geometry(path) -> "DetectorGeometry":
    """Read a CrystFEL geometry file.

    Parameters
    ----------
    path : str or os.PathLike
        The ``.geom`` file.

    Returns
    -------
    DetectorGeometry

    Raises
    ------
    ConfigError
        The file cannot be read, cfelpyutils cannot parse it, or it describes
        a detector diffscreen cannot assemble (panels of different pixel
        sizes, a panel without a corner, a fixed-index dimension); one line
        naming the file.
    """
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except UnicodeDecodeError:
        raise ConfigError("not a CrystFEL geometry file (not UTF-8 text)", path=path) from None
    except OSError as exc:
        raise ConfigError(f"cannot read the geometry file ({exc.strerror or exc})", path=path) from None
    return DetectorGeometry(text, path=path)


def as_geometry(geom) -> "DetectorGeometry":
    """``geom`` itself if it is a :class:`DetectorGeometry`, else :func:`load_geometry` of it."""
    return geom if isinstance(geom, DetectorGeometry) else load_geometry(geom)


class DetectorGeometry:
    """A CrystFEL detector geometry, ready to assemble stacked-panel frames.

    Parameters
    ----------
    text : str
        The geometry file's text (CrystFEL syntax, ``man crystfel_geometry``).
    path : str, optional
        Where it came from (named in errors; relative mask files are also
        looked for beside it).

    Attributes
    ----------
    path : str
    text : str
        The text as given.
    detector, beam : dict
        What :func:`cfelpyutils.geometry.load_crystfel_geometry` returned.
    panels : list of str
        Panel names, in file order.
    raw_shape : (int, int)
        ``(SS, FS)`` of one frame's data block: largest ``max_ss`` + 1,
        largest ``max_fs`` + 1.
    shape : (int, int)
        ``(H, W)`` of the assembled frame.
    res : float
        Pixels per metre (all panels).
    pixel_size_mm : float
        ``1000 / res``.
    distance_mm : float or None
        Mean over panels of ``clen + coffset``, in mm; None when ``clen`` is a
        location in the data file.
    wavelength_A : float or None
        From ``photon_energy`` (eV); None when it is a location in the data
        file or missing.
    beam_centre_px : (float, float)
        ``(x, y)`` of the beam in the assembled frame (x = column, y = row,
        pixel centres at integers).
    static_raw_bad : (SS, FS) bool ndarray
        Data-block pixels that are bad in every frame: outside every panel,
        in a bad region, on a ``no_index`` panel, or bad in a mask file.
    identity : str
        SHA-256 of the text (a resumed screen must use the same geometry).

    Raises
    ------
    ConfigError
        As :func:`load_geometry`.
    """

    def __init__(self, text: str, *, path: str | None = None):
        with warnings.catch_warnings():  # cfelpyutils 2.2 defines its dicts with mypy_extensions' deprecated TypedDict
            warnings.simplefilter("ignore", DeprecationWarning)
            from cfelpyutils.geometry import compute_pix_maps, load_crystfel_geometry

        self.path = "<geometry>" if path is None else str(path)
        self.text = text
        try:
            geo = load_crystfel_geometry(_io.StringIO(_for_cfelpyutils(text)))
        except Exception as exc:  # noqa: BLE001 - cfelpyutils raises RuntimeError, ValueError, KeyError, ...
            raise ConfigError(f"not a usable CrystFEL geometry file (cfelpyutils: {describe_exception(exc)})",
                              path=self.path) from None
        self.detector, self.beam = geo.detector, geo.beam
        self.panels = list(self.detector["panels"])
        self._check_panels()
        pans = [self.detector["panels"][p] for p in self.panels]
        self.res = float(pans[0]["res"])
        self.pixel_size_mm = 1000.0 / self.res
        SS = max(p["orig_max_ss"] for p in pans) + 1
        FS = max(p["orig_max_fs"] for p in pans) + 1
        self.raw_shape = (int(SS), int(FS))
        maps = compute_pix_maps(self.detector)  # pixel corners in the lab, in pixels, (SS, FS)
        if maps.x.shape != self.raw_shape:
            raise ConfigError(f"cfelpyutils' pixel maps have shape {maps.x.shape}, the panels need "
                              f"{self.raw_shape}", path=self.path)
        self._corner_x = np.asarray(maps.x, np.float64)
        self._corner_y = np.asarray(maps.y, np.float64)
        self._place(pans)
        self.distance_mm = self._distance(pans)
        self.wavelength_A = self._wavelength()
        self.static_raw_bad = self._static_bad(pans)
        self.identity = hashlib.sha256(text.encode()).hexdigest()

    # ------------------------------------------------------------------ setup

    def _check_panels(self) -> None:
        for name in self.panels:
            p = self.detector["panels"][name]
            for key, what in (("cnx", "corner_x"), ("cny", "corner_y")):
                if not math.isfinite(p[key]):
                    raise ConfigError(f"panel {name} has no {what}", path=self.path)
            if not (p["orig_max_fs"] >= p["orig_min_fs"] >= 0 and p["orig_max_ss"] >= p["orig_min_ss"] >= 0):
                raise ConfigError(f"panel {name}: min_fs..max_fs {p['orig_min_fs']}..{p['orig_max_fs']} or min_ss.."
                                  f"max_ss {p['orig_min_ss']}..{p['orig_max_ss']} is empty", path=self.path)
            dims = [d for d in p["dim_structure"]]
            if dims not in (["ss", "fs"], ["%", "ss", "fs"]):
                raise ConfigError(f"panel {name} has dims {dims}; diffscreen reads data blocks of "
                                  "(frame, ss, fs) or (ss, fs) only (no fixed-index dimension)", path=self.path)
            if not (p["res"] > 0 and math.isfinite(p["res"])):
                raise ConfigError(f"panel {name} has no res (pixels per metre)", path=self.path)
        res = [self.detector["panels"][n]["res"] for n in self.panels]
        if max(res) - min(res) > _RES_TOLERANCE * max(res):
            raise ConfigError(f"panels of different pixel sizes (res {min(res):g} to {max(res):g} pixels/m) cannot "
                              "be assembled into one frame", path=self.path)

    def _place(self, pans) -> None:
        """The assembled frame: where each data-block pixel goes (nearest pixel), and the beam."""
        SS, FS = self.raw_shape
        covered = np.zeros(self.raw_shape, bool)
        panel_id = np.full(self.raw_shape, -1, np.int32)
        cx = np.empty(self.raw_shape)
        cy = np.empty(self.raw_shape)
        for k, p in enumerate(pans):
            sl = (slice(p["orig_min_ss"], p["orig_max_ss"] + 1), slice(p["orig_min_fs"], p["orig_max_fs"] + 1))
            covered[sl] = True
            panel_id[sl] = k
            # the pixel's centre: half a pixel along fs and ss from its corner
            cx[sl] = self._corner_x[sl] + 0.5 * (p["fsx"] + p["ssx"])
            cy[sl] = self._corner_y[sl] + 0.5 * (p["fsy"] + p["ssy"])
        src = np.flatnonzero(covered)
        ix = np.floor(cx.reshape(-1)[src]).astype(np.int64)
        iy = np.floor(cy.reshape(-1)[src]).astype(np.int64)
        x0, y1 = int(ix.min()), int(iy.max())
        H, W = y1 - int(iy.min()) + 1, int(ix.max()) - x0 + 1
        from diffscreen.io.limits import check_frame_size

        check_frame_size((H, W), self.path)
        self.shape = (int(H), int(W))
        self._x0, self._y1 = x0, y1
        self.beam_centre_px = (-x0 - 0.5, y1 + 0.5)
        self._src = src
        self._dst = (y1 - iy) * W + (ix - x0)
        self._covered = covered
        self._panel_id = panel_id
        raw_of = np.full(H * W, -1, np.int64)
        raw_of[self._dst] = src
        self._raw_of = raw_of
        gaps = np.ones(H * W, bool)
        gaps[self._dst] = False
        self.gaps = gaps.reshape(H, W)
        self.gaps.setflags(write=False)

    def _distance(self, pans) -> float | None:
        clens = [p["clen"] + p["coffset"] for p in pans]
        if any(p["clen_from"] for p in pans) or not all(math.isfinite(c) and c > 0 for c in clens):
            return None
        return 1000.0 * float(np.mean(clens))

    def _wavelength(self) -> float | None:
        e = self.beam.get("photon_energy", 0.0)
        if self.beam.get("photon_energy_from") or not (isinstance(e, (int, float)) and math.isfinite(e) and e > 0):
            return None
        return _HC_EV_A / float(e)

    def _static_bad(self, pans) -> np.ndarray:
        bad = ~self._covered
        for k, p in enumerate(pans):
            if p["no_index"]:
                bad[self._panel_slice(p)] = True
        for name, b in self.detector["bad"].items():
            bad |= self._bad_region(name, b)
        for group in self._mask_groups(pans):
            if group["file"]:
                bad |= self._mask_bits(self._read_mask_file(group), group)
        bad.setflags(write=False)
        return bad

    @staticmethod
    def _panel_slice(p):
        return slice(p["orig_min_ss"], p["orig_max_ss"] + 1), slice(p["orig_min_fs"], p["orig_max_fs"] + 1)

    def _bad_region(self, name: str, b: dict) -> np.ndarray:
        """Data-block pixels of one ``bad_*`` region (man crystfel_geometry, BAD REGIONS)."""
        if b["panel"] and b["panel"] not in self.panels:
            raise ConfigError(f"bad region {name} names panel {b['panel']}, which the file does not define",
                              path=self.path)
        allowed = self._covered if not b["panel"] else self._panel_id == self.panels.index(b["panel"])
        out = np.zeros(self.raw_shape, bool)
        if b["is_fsss"]:  # data-block coordinates, inclusive
            out[max(b["min_ss"], 0) : b["max_ss"] + 1, max(b["min_fs"], 0) : b["max_fs"] + 1] = True
        else:  # lab coordinates in pixels, inclusive, at the pixel's corner; a bound not given (NaN) bounds nothing
            x, y = self._corner_x, self._corner_y
            with np.errstate(invalid="ignore"):
                out = ~((x < b["min_x"]) | (x > b["max_x"]) | (y < b["min_y"]) | (y > b["max_y"]))
        return out & allowed

    def _mask_groups(self, pans) -> list[dict]:
        """The masks the geometry names, each with the panels that use it."""
        groups: dict[tuple, dict] = {}
        for k, p in enumerate(pans):
            for slot in _MASK_SLOTS:
                if slot == "":
                    data, file = p["mask"], p["mask_file"]
                    good, badbits = self.detector["mask_good"], self.detector["mask_bad"]
                else:
                    data, file = p[f"mask{slot}_data"], p[f"mask{slot}_file"]
                    good, badbits = p[f"mask{slot}_goodbits"], p[f"mask{slot}_badbits"]
                if not data:
                    continue
                if "%" in data:
                    raise ConfigError(f"panel {self.panels[k]}: a mask location with a placeholder ({data}) is not "
                                      "supported", path=self.path)
                key = (data, file, int(good), int(badbits))
                g = groups.setdefault(key, {"data": data, "file": file, "good": int(good), "bad": int(badbits),
                                            "panels": []})
                g["panels"].append(k)
        return list(groups.values())

    def _resolve(self, file: str) -> str:
        """A mask file as given (relative to the working directory, as CrystFEL reads it), else beside the .geom."""
        if os.path.isabs(file) or os.path.exists(file) or self.path.startswith("<"):
            return file
        beside = os.path.join(os.path.dirname(os.path.abspath(self.path)), file)
        return beside if os.path.exists(beside) else file

    def _read_mask_file(self, group) -> np.ndarray:
        import hdf5plugin  # noqa: F401  filters first
        import h5py

        file = self._resolve(group["file"])
        try:
            with h5py.File(file, "r") as f:
                ds = f[group["data"]]
                if ds.ndim != 2:
                    raise ConfigError(f"mask {group['data']} in {file} has shape {ds.shape}; a mask file must hold "
                                      f"one {self.raw_shape[0]} x {self.raw_shape[1]} mask", path=self.path)
                m = ds[()]
        except DiffscreenError:
            raise
        except Exception as exc:  # noqa: BLE001 - missing file, missing dataset, damaged file
            raise ConfigError(f"cannot read mask {group['data']} from {file} ({describe_exception(exc)})",
                              path=self.path) from None
        return self._fit_mask(m, f"{file}:{group['data']}")

    def _fit_mask(self, m, where: str, frame: int | None = None, path=None) -> np.ndarray:
        """A mask's data-block part; a mask file's misfit is a ConfigError, a frame's (``frame`` given) its error."""
        m = np.asarray(m)
        if m.ndim != 2 or m.dtype.kind not in "biu" or m.shape[0] < self.raw_shape[0] or m.shape[1] < self.raw_shape[1]:
            err = ConfigError if frame is None else FrameReadError
            raise err(f"mask {where} has shape {m.shape} and type {m.dtype}; expected integers covering the "
                      f"{self.raw_shape[0]} x {self.raw_shape[1]} data block", path=self.path if path is None else path,
                      frame=frame)
        return m[: self.raw_shape[0], : self.raw_shape[1]]

    def _mask_bits(self, m: np.ndarray, group) -> np.ndarray:
        """Bad pixels of a mask within its panels: not all good bits set, or any bad bit set."""
        m = m.astype(np.int64, copy=False)
        good, badbits = group["good"], group["bad"]
        bad = np.zeros(self.raw_shape, bool)
        for k in group["panels"]:
            sl = self._panel_slice(self.detector["panels"][self.panels[k]])
            v = m[sl]
            bad[sl] = ((v & good) != good) | ((v & badbits) != 0)
        return bad

    @property
    def data_path(self) -> str | None:
        """The panels' data location in the file (CrystFEL's default ``/data/data`` when unset); None if they differ."""
        paths = {self.detector["panels"][p]["data"] or "/data/data" for p in self.panels}
        return paths.pop() if len(paths) == 1 else None

    @property
    def in_file_masks(self) -> list[dict]:
        """The masks the geometry reads from each frame's own data file (no ``mask_file``)."""
        pans = [self.detector["panels"][p] for p in self.panels]
        return [g for g in self._mask_groups(pans) if not g["file"]]

    # ------------------------------------------------------------------ use

    def problem_with(self, raw_shape) -> str | None:
        """Why a data block of ``raw_shape`` does not fit the geometry, or None."""
        if tuple(int(s) for s in raw_shape) != self.raw_shape:
            got = " x ".join(str(int(s)) for s in raw_shape)
            return (f"frame shape {got} does not match the geometry {self.path}, whose panels need "
                    f"{self.raw_shape[0]} x {self.raw_shape[1]} (max_ss + 1 x max_fs + 1)")
        return None

    def assemble(self, raw: np.ndarray, raw_bad: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Place a data block's panels into the assembled frame (nearest pixel).

        Parameters
        ----------
        raw : (SS, FS) ndarray
            One frame's data block (:attr:`raw_shape`), any numeric dtype.
        raw_bad : (SS, FS) bool ndarray, optional
            Bad data-block pixels (True = bad), besides :attr:`static_raw_bad`.

        Returns
        -------
        data : (H, W) float32 ndarray
            Assembled pixels (ADU); 0 where no panel is.
        bad : (H, W) bool ndarray
            True where no panel is, or the data-block pixel is bad.

        Raises
        ------
        ValueError
            ``raw`` does not have :attr:`raw_shape`.
        """
        raw = np.asarray(raw)
        if raw.shape != self.raw_shape:
            raise ValueError(self.problem_with(raw.shape))
        H, W = self.shape
        data = np.zeros(H * W, np.float32)
        data[self._dst] = raw.reshape(-1)[self._src]
        rb = self.static_raw_bad if raw_bad is None else (self.static_raw_bad | raw_bad)
        bad = np.ones(H * W, bool)
        bad[self._dst] = rb.reshape(-1)[self._src]
        return data.reshape(H, W), bad.reshape(H, W)

    def gather(self, assembled: np.ndarray, fill=0) -> np.ndarray:
        """The data block an assembled frame came from: the inverse of :meth:`assemble`.

        Parameters
        ----------
        assembled : (H, W) ndarray
        fill : scalar
            Value of data-block pixels outside every panel.

        Returns
        -------
        (SS, FS) ndarray
            Same dtype as ``assembled``.
        """
        assembled = np.asarray(assembled)
        if assembled.shape != self.shape:
            raise ValueError(f"assembled frame shape {assembled.shape} is not the geometry's {self.shape}")
        raw = np.full(self.raw_shape[0] * self.raw_shape[1], fill, dtype=assembled.dtype)
        raw[self._src] = assembled.reshape(-1)[self._dst]
        return raw.reshape(self.raw_shape)

    def raw_to_assembled(self, fs, ss) -> tuple[np.ndarray, np.ndarray]:
        """Assembled ``(x, y)`` (column, row) of data-block pixels ``(fs, ss)`` (integer indices)."""
        flat = np.asarray(ss, np.int64) * self.raw_shape[1] + np.asarray(fs, np.int64)
        lookup = np.full(self.raw_shape[0] * self.raw_shape[1], -1, np.int64)
        lookup[self._src] = self._dst
        dst = lookup[flat]
        W = self.shape[1]
        return np.where(dst >= 0, dst % W, -1), np.where(dst >= 0, dst // W, -1)

    def assembled_to_raw(self, x, y) -> tuple[np.ndarray, np.ndarray]:
        """Data-block ``(fs, ss)`` of assembled positions ``(x, y)`` (column, row; pixel centres at integers).

        The panel is that of the nearest assembled pixel; within it the
        position goes through the inverse of the panel's fs/ss vectors, so a
        sub-pixel offset is kept.  Returns pixel-index coordinates (centre of
        data-block pixel ``k`` at ``k``, Cheetah's ``peakXPosRaw`` convention);
        NaN where no panel is.
        """
        x = np.atleast_1d(np.asarray(x, np.float64))
        y = np.atleast_1d(np.asarray(y, np.float64))
        H, W = self.shape
        col, row = np.rint(x).astype(np.int64), np.rint(y).astype(np.int64)
        inside = (col >= 0) & (col < W) & (row >= 0) & (row < H)
        raw = np.full(x.shape, -1, np.int64)
        raw[inside] = self._raw_of[row[inside] * W + col[inside]]
        fs = np.full(x.shape, np.nan)
        ss = np.full(x.shape, np.nan)
        ok = raw >= 0
        if ok.any():
            lab_x = x[ok] + self._x0 + 0.5  # the lab position (pixels) of the assembled point
            lab_y = self._y1 + 0.5 - y[ok]
            pid = self._panel_id.reshape(-1)[raw[ok]]
            for k in np.unique(pid):
                p = self.detector["panels"][self.panels[k]]
                sel = pid == k
                M = np.array([[p["fsx"], p["ssx"]], [p["fsy"], p["ssy"]]])
                f, s = np.linalg.solve(M, np.vstack([lab_x[sel] - p["cnx"], lab_y[sel] - p["cny"]]))
                idx = np.flatnonzero(ok)[sel]
                fs[idx] = p["orig_min_fs"] + f - 0.5
                ss[idx] = p["orig_min_ss"] + s - 0.5
        return fs, ss

    def raw_peaks(self, peaks):
        """A peak list (P, 4: x, y, intensity, SNR) from assembled to data-block coordinates; peaks in gaps dropped."""
        if peaks is None:
            return None
        peaks = np.asarray(peaks, np.float32).reshape(-1, 4)
        fs, ss = self.assembled_to_raw(peaks[:, 0], peaks[:, 1])
        keep = np.isfinite(fs) & np.isfinite(ss)
        out = peaks[keep].copy()
        out[:, 0], out[:, 1] = fs[keep], ss[keep]
        return out

    def meta(self, base: FrameMeta, index: int, *, assembled: bool = True) -> FrameMeta:
        """Metadata of a frame under this geometry (the reader's values where the geometry has none)."""
        extra = dict(base.extra)
        extra.update(geometry=self.path, raw_shape=list(self.raw_shape), layout="assembled" if assembled else "raw")
        return FrameMeta(
            source=base.source,
            index=index,
            detector=base.detector,
            pixel_size_mm=self.pixel_size_mm,
            beam_centre_px=self.beam_centre_px if assembled else None,
            distance_mm=self.distance_mm if self.distance_mm is not None else base.distance_mm,
            wavelength_A=self.wavelength_A if self.wavelength_A is not None else base.wavelength_A,
            extra=extra,
        )

    # ------------------------------------------------------------------ hits.geom

    def hits_geometry_text(self) -> str | None:
        """The geometry for ``hits.cxi`` when this one would not read it, else None.

        ``hits.cxi`` holds the kept frames at ``/entry_1/data_1/data``
        (N, SS, FS) and their masks at ``/entry_1/data_1/mask`` (1 = bad, the
        geometry's masks, bad regions and the reader's invalid pixels
        included).  This geometry reads it as it stands when every panel has
        ``data = /entry_1/data_1/data`` and dims ``%, ss, fs`` and no mask is
        read from the data file; otherwise the text returned is this one with
        its ``data``, ``dimN`` and mask lines replaced (at the top of the
        file, so that they apply to every panel) by those of ``hits.cxi``.
        """
        pans = [self.detector["panels"][p] for p in self.panels]
        fits = all(p["data"] == CXI_DATA and p["dim_structure"] == ["%", "ss", "fs"] for p in pans)
        if fits and not self.in_file_masks:
            return None
        drop = re.compile(r"^(data|dim\d+|mask|mask_file|mask_good|mask_bad|mask\d_(data|file|goodbits|badbits)|"
                          r"peak_list|peak_list_type)$")
        kept = []
        for line in self.text.splitlines():
            m = re.fullmatch(r"\s*([^\s=;]+)\s*=.*", line.split(";", 1)[0])
            if m and drop.match(m.group(1).rsplit("/", 1)[-1]):
                kept.append(f"; (diffscreen) {line.strip()}")
                continue
            kept.append(line)
        head = [
            f"; hits.geom: {os.path.basename(self.path)} for diffscreen's hits.cxi (written by diffscreen screen --geom).",
            "; Only the data location, its dimensions and the mask differ; the panels are unchanged.",
            f"data = {CXI_DATA}",
            "dim0 = %",
            "dim1 = ss",
            "dim2 = fs",
            f"mask = {CXI_MASK}",
            "mask_good = 0x0",
            "mask_bad = 0x1",
            "peak_list = /entry_1/result_1",
            "peak_list_type = cxi",
            "",
        ]
        return "\n".join(head + kept) + "\n"

    def __repr__(self) -> str:
        return (f"<DetectorGeometry {self.path!r}: {len(self.panels)} panels, data block {self.raw_shape}, "
                f"assembled {self.shape}>")


# --------------------------------------------------------------------------- the source


class GeomSource(BaseSource):
    """Frames of another source, assembled with a CrystFEL geometry.

    Parameters
    ----------
    source : FrameSource or str or os.PathLike
        The stacked-panel frames, or a spec to open
        (:func:`~diffscreen.io.sources.open_source`); closed with this source.
    geometry : DetectorGeometry or str or os.PathLike
        The geometry, or its ``.geom`` file.

    Notes
    -----
    ``len``, ``path`` and ``close`` are those of ``source``; :attr:`shape` is
    the assembled ``(H, W)``.  :meth:`read` returns the assembled frame:
    ``data`` (H, W) float32 (ADU), ``mask`` (H, W) bool (True = bad: gaps,
    the geometry's bad pixels, and the reader's own mask), ``meta`` with the
    geometry's pixel size, beam centre, distance and wavelength (the
    reader's where the geometry has none).  A frame whose data block does not
    have the geometry's shape is a :class:`~diffscreen.errors.FrameReadError`
    of that frame alone.  :meth:`read_region` reads the whole frame
    (``reads_window`` is False).
    """

    #: hits.cxi stores this source's frames as :meth:`read_raw` gives them.
    raw_layout = True

    def __init__(self, source, geometry):
        self.geometry = as_geometry(geometry)
        if isinstance(source, (str, os.PathLike)):
            from diffscreen.io.sources import open_source

            source = open_source(source)
        self.inner = source
        self.path = source.path
        self._h5 = None

    def __len__(self) -> int:
        return len(self.inner)

    @property
    def shape(self) -> tuple[int, int]:
        return self.geometry.shape

    def frame_shape(self, index: int) -> tuple[int, int]:
        """``(H, W)`` of the assembled frame (the same for every frame)."""
        self._check_index(index)
        return self.geometry.shape

    def read_raw(self, index: int) -> Frame:
        """Frame ``index`` in its data-block layout (:attr:`DetectorGeometry.raw_shape`).

        Returns
        -------
        Frame
            ``data`` (SS, FS) float32 as the reader gave it, ``mask`` (SS, FS)
            bool: the reader's mask, the geometry's static bad pixels and its
            in-file masks; ``meta`` with the geometry's pixel size, distance
            and wavelength and no beam centre (a data block has none).

        Raises
        ------
        FrameIndexError, FrameReadError
            As :meth:`read`.
        """
        i = self._check_index(index)
        fr = self.inner.read(i)
        with reader_errors(self.path, i, "apply the geometry"):
            problem = self.geometry.problem_with(fr.data.shape)
            if problem:
                raise FrameReadError(problem, path=self.path, frame=i)
            bad = fr.mask | self.geometry.static_raw_bad | self._in_file_bad(fr, i)
            return Frame(fr.data, bad, self.geometry.meta(fr.meta, i, assembled=False))

    def _read(self, index: int) -> Frame:
        raw = self.read_raw(index)
        data, bad = self.geometry.assemble(raw.data, raw.mask)
        meta = self.geometry.meta(raw.meta, index)
        return Frame(data, bad, meta)

    def _in_file_bad(self, fr: Frame, index: int) -> np.ndarray:
        groups = self.geometry.in_file_masks
        bad = np.zeros(self.geometry.raw_shape, bool)
        if not groups:
            return bad
        for g in groups:
            ds = self._mask_dataset(g["data"], index)
            if ds.ndim == 3:
                j = int(fr.meta.extra.get("entry_frame", index))
                if not 0 <= j < ds.shape[0]:
                    raise FrameReadError(f"mask {g['data']} holds {ds.shape[0]} frames, not frame {j}",
                                         path=self.path, frame=index)
                m = ds[j]
            elif ds.ndim == 2:
                m = ds[()]
            else:
                raise FrameReadError(f"mask {g['data']} has shape {ds.shape}; expected (SS, FS) or (N, SS, FS)",
                                     path=self.path, frame=index)
            bad |= self.geometry._mask_bits(self.geometry._fit_mask(m, g["data"], index, self.path), g)
        return bad

    def _mask_dataset(self, name: str, index: int):
        import hdf5plugin  # noqa: F401
        import h5py

        from diffscreen.io.sources import split_spec

        if self._h5 is None:
            file = split_spec(self.path)[0]
            try:
                self._h5 = h5py.File(file, "r")
            except OSError as exc:
                raise FrameReadError(f"the geometry reads mask {name} from the data file, which is not HDF5 "
                                     f"({describe_exception(exc)})", path=self.path, frame=index) from None
        ds = self._h5.get(name)
        if not isinstance(ds, h5py.Dataset):
            raise FrameReadError(f"the geometry's mask {name} is not in this file", path=self.path, frame=index)
        return ds

    def close(self) -> None:
        """Close the wrapped source (and the data file opened for in-file masks)."""
        super().close()
        if self._h5 is not None:
            self._h5.close()
            self._h5 = None
        self.inner.close()


def open_with_geometry(spec, geometry) -> GeomSource:
    """:func:`~diffscreen.io.sources.open_source` of ``spec``, assembled with ``geometry``.

    Parameters
    ----------
    spec : str or os.PathLike
        As for :func:`~diffscreen.io.sources.open_source`.  An HDF5 file
        named alone that holds the geometry's data location
        (:attr:`DetectorGeometry.data_path`, e.g. ``/data/data``) is read
        from there, as CrystFEL reads it (``run.h5`` stands for
        ``run.h5:/data/data``); other files are opened as usual.
    geometry : DetectorGeometry or path

    Returns
    -------
    GeomSource

    Raises
    ------
    FrameReadError, UnknownFormatError, DatasetNotFoundError
        As :func:`~diffscreen.io.sources.open_source`.
    ConfigError
        The geometry file cannot be used (when a path is given).
    """
    from diffscreen.io.sources import open_source

    geometry = as_geometry(geometry)
    return GeomSource(open_source(_spec_for(spec, geometry)), geometry)


def _spec_for(spec, geometry: "DetectorGeometry") -> str:
    """``file.h5:<data_path>`` when ``spec`` names an HDF5 file alone that holds the geometry's data location."""
    from diffscreen.io.sources import split_spec

    spec = os.fspath(spec)
    data = geometry.data_path
    path, dataset = split_spec(spec)
    if dataset is not None or data is None or data == CXI_DATA or not os.path.isfile(path):
        return spec
    try:
        import hdf5plugin  # noqa: F401
        import h5py

        if not h5py.is_hdf5(path):
            return spec
        with h5py.File(path, "r") as f:
            found = isinstance(f.get(data), h5py.Dataset)
    except Exception:  # noqa: BLE001 - not readable here: open_source names the problem
        return spec
    return f"{path}:{data}" if found else spec


def iter_frames_with_geometry(specs, geometry, *, check: bool = True):
    """:func:`~diffscreen.io.sources.iter_frames`, every source assembled with ``geometry``.

    Yields
    ------
    spec : str
    index : int
        0-based frame index, or -1 for an error about the whole file.
    item : Frame or DiffscreenError
        The assembled frame, or the error in its place (a frame of the wrong
        shape is an error of that frame only).
    """
    from diffscreen.io.sources import iter_frames

    geometry = as_geometry(geometry)
    return iter_frames(specs, check=check, opener=lambda spec: open_with_geometry(spec, geometry))
