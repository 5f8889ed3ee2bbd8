"""The in-memory frame: pixels, mask and metadata.

Every reader in :mod:`diffscreen.io` yields :class:`Frame` objects, so the rest
of the pipeline never needs to know the file format.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from diffscreen.errors import BadFrameError

__all__ = ["Frame", "FrameMeta", "CLASS_NAMES", "check_frame"]

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
    beam_center_px : tuple of float or None
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
    beam_center_px: tuple[float, float] | None = None
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
    good = ~m
    vals = d[good]
    if vals.size == 0:
        raise BadFrameError("every pixel is masked", path=meta.source, frame=meta.index)
    finite = np.isfinite(vals)
    if not finite.all():
        n = int((~finite).sum())
        raise BadFrameError(f"{n} pixels are NaN or infinite", path=meta.source, frame=meta.index)
    if not vals.any():
        raise BadFrameError("all pixels are zero (empty readout)", path=meta.source, frame=meta.index)
    return frame
