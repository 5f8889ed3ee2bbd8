"""The in-memory frame: pixels, mask and metadata.

Every reader in :mod:`diffscreen.io` yields :class:`Frame` objects, so the rest
of the pipeline never needs to know the file format.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from diffscreen.errors import BadFrameError

__all__ = ["Frame", "FrameMeta", "CLASS_NAMES", "check_frame", "check_geometry", "geometry_problem", "GEOMETRY_RANGES"]

#: Ke et al. (2018) §2.1 classes, in the order of the network's outputs.
CLASS_NAMES: tuple[str, ...] = ("hit", "maybe", "miss")


@dataclass
class FrameMeta:
    """Where a frame came from and the geometry its file records.

    Attributes
    ----------
    source : str
        Path of the file (for HDF5 with a dataset: ``file.h5:/path``).
    index : int
        0-based frame index within ``source`` (CrystFEL's ``//N`` event).
    detector : str or None
        Detector name as the file states it (e.g. ``"PILATUS3 6M"``).
    pixel_size_mm : float or None
        Pixel size in mm (square pixels assumed; fast-scan size if not).
    beam_centre_px : tuple of float or None
        Beam centre ``(x, y)`` = ``(fast-scan, slow-scan)`` in pixels of the
        (assembled) frame, 0-based, pixel centres at integers.
    distance_mm : float or None
        Sample-to-detector distance in mm.
    wavelength_A : float or None
        X-ray wavelength in Å (photon energy E[eV] = 12398.42 / λ[Å]).
    extra : dict
        Anything else worth keeping (format name, saturation value, ...).
    """

    source: str
    index: int = 0
    detector: str | None = None
    pixel_size_mm: float | None = None
    beam_centre_px: tuple[float, float] | None = None
    distance_mm: float | None = None
    wavelength_A: float | None = None
    extra: dict = field(default_factory=dict)

    @property
    def photon_energy_eV(self) -> float | None:
        """Photon energy in eV, from :attr:`wavelength_A`."""
        return None if not self.wavelength_A else 12398.4198 / self.wavelength_A


@dataclass
class Frame:
    """One detector frame.

    Attributes
    ----------
    data : (H, W) float32 ndarray
        Pixel values in ADU, panels assembled into one image.
    mask : (H, W) bool ndarray
        True where the pixel is bad, inactive, shadowed or in a panel gap.
    meta : FrameMeta
        Origin and geometry.
    """

    data: np.ndarray
    mask: np.ndarray
    meta: FrameMeta

    @property
    def shape(self) -> tuple[int, int]:
        return self.data.shape


def check_frame(frame: Frame) -> Frame:
    """Refuse a frame the classifier cannot use.

    Parameters
    ----------
    frame : Frame

    Returns
    -------
    frame : Frame
        The same object, unchanged.

    Raises
    ------
    BadFrameError
        If ``data`` is not 2-D, the mask's shape differs, any unmasked pixel is
        NaN or ±inf, or every unmasked pixel is zero (no signal at all: a
        detector readout failure rather than a dark frame).
    """
    d, m, meta = frame.data, frame.mask, frame.meta
    if d.ndim != 2:
        raise BadFrameError(f"expected a 2-D frame, got shape {d.shape}", path=meta.source, frame=meta.index)
    if m.shape != d.shape:
        raise BadFrameError(
            f"mask shape {m.shape} differs from frame shape {d.shape}", path=meta.source, frame=meta.index
        )
    good = np.logical_not(m)  # boolean passes over the frame, no copy of its unmasked pixels
    if not good.any():
        raise BadFrameError("every pixel is masked", path=meta.source, frame=meta.index)
    if d.dtype.kind in "fc":
        bad = np.isfinite(d)
        np.logical_not(bad, out=bad)
        bad &= good
        if bad.any():
            raise BadFrameError(f"{int(np.count_nonzero(bad))} pixels are NaN or infinite", path=meta.source,
                                frame=meta.index)
    signal = np.not_equal(d, 0)
    signal &= good
    if not signal.any():
        raise BadFrameError("all pixels are zero (empty readout)", path=meta.source, frame=meta.index)
    return frame


#: Physical ranges of the geometry fields, ``(low, high)`` inclusive, in the
#: fields' units.  Pixel sizes: 1 µm (none smaller exists) to 10 mm; distances:
#: above 0 up to 100 m (XFEL SAXS tubes are a few m); wavelengths: 0.01 Å
#: (1.2 MeV) to 100 Å (124 eV, soft X-rays).
GEOMETRY_RANGES = {
    "pixel_size_mm": (1e-3, 10.0),
    "distance_mm": (0.0, 100_000.0),
    "wavelength_A": (0.01, 100.0),
}
#: A beam centre farther than this many frame sizes from the frame is absurd.
BEAM_CENTRE_FRAMES = 10


_GEOMETRY_UNITS = {"pixel_size_mm": "mm", "distance_mm": "mm", "wavelength_A": "Å"}


def geometry_problem(name: str, value) -> str | None:
    """What is wrong with one scalar geometry field, or None if it lies in its physical range.

    Parameters
    ----------
    name : {"pixel_size_mm", "distance_mm", "wavelength_A"}
        A key of :data:`GEOMETRY_RANGES`.
    value : float
        In the field's unit (mm or Å).

    Returns
    -------
    str or None
        One line (not a number, not finite, not positive, outside the range).
    """
    unit = _GEOMETRY_UNITS[name]
    try:
        v = float(value)
    except (TypeError, ValueError, OverflowError):
        return f"{name} {value!r} is not a number"
    if not math.isfinite(v):
        return f"{name} is {v} (not finite)"
    low, high = GEOMETRY_RANGES[name]
    if name == "distance_mm" and v <= low:
        return f"distance_mm {v:g} mm is not positive"
    if not low <= v <= high:
        return f"{name} {v:g} {unit} is outside the physical range {low:g}..{high:g} {unit}"
    return None


def _beam_centre_warning(bc, shape) -> str | None:
    try:
        x, y = (float(c) for c in bc)
    except (TypeError, ValueError, OverflowError):
        return f"beam_centre_px {bc!r} is not a pair of numbers"
    if not (math.isfinite(x) and math.isfinite(y)):
        return f"beam_centre_px ({x}, {y}) is not finite"
    if shape is not None and len(shape) == 2:
        H, W = (int(s) for s in shape)
        k = BEAM_CENTRE_FRAMES
        if not (-k * W <= x <= (k + 1) * W and -k * H <= y <= (k + 1) * H):
            return (f"beam_centre_px ({x:g}, {y:g}) is more than {k} frame sizes away from the {W} x {H} px frame"
                    " (x = fast scan, y = slow scan)")
    return None


def check_geometry(meta: FrameMeta, *, path=None, frame: int | None = None, shape=None,
                   locate: bool = True) -> list[str]:
    """Warnings for geometry outside physical ranges; nothing is changed or refused.

    Readers keep what a header states (0, negative, inf, NaN); the
    preprocessing treats such values as unknown.  This says so, one line per
    field, for ``errors.csv``.

    Parameters
    ----------
    meta : FrameMeta
        Fields that are None (unknown) are not warned about.
    path : str or os.PathLike, optional
        File named in the warnings; default ``meta.source``.
    frame : int, optional
        0-based frame index named in the warnings; default ``meta.index``.
    shape : (int, int), optional
        ``(H, W)`` of the frame in pixels; enables the beam-centre distance test.
    locate : bool
        False: the warnings without the leading ``"<path>, frame <i>: "``
        (for a table whose columns name the file and frame, e.g. errors.csv).

    Returns
    -------
    list of str
        Empty when the geometry is sane.  Each warning is one line:
        ``"<path>, frame <i>: <problem>"``, e.g. ``"run.cxi, frame 3:
        pixel_size_mm 1e-09 mm is outside the physical range 0.001..10 mm"``.

    Notes
    -----
    Ranges (:data:`GEOMETRY_RANGES`): pixel size 1e-3..10 mm; distance
    > 0 and <= 100 000 mm (100 m); wavelength 0.01..100 Å; every value
    finite; a beam centre finite and within :data:`BEAM_CENTRE_FRAMES` frame
    sizes of the frame (a centre off the detector, up to that far, is
    legitimate: some setups put the beam past the edge).
    """
    path = meta.source if path is None else path
    frame = meta.index if frame is None else frame
    where = ", ".join([str(path)] * (path is not None) + [f"frame {frame}"] * (frame is not None)) if locate else ""
    problems = []
    for name in _GEOMETRY_UNITS:
        value = getattr(meta, name, None)
        if value is not None:
            problems.append(geometry_problem(name, value))
    if meta.beam_centre_px is not None:
        problems.append(_beam_centre_warning(meta.beam_centre_px, shape))
    return [f"{where}: {p}" if where else p for p in problems if p]
