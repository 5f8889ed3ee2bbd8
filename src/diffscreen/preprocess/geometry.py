"""Scaling and cropping a frame around the beam centre (Ke et al. 2018, §2.2).

Ke et al. bin every frame 2×2 and crop 720 × 720 pixels centred on the
direct beam (the fv5080 code resizes the whole frame to 960 × 960 instead of
binning).  A fixed pixel count makes the network see detectors with different
pixel sizes and distances at different scales, so diffscreen scales
*physically* when the file records the geometry: every output pixel covers
the same step ``s_per_px`` of reciprocal space (``s = 2 sin θ / λ = 1/d``,
small-angle approximation ``Δs ≈ pixel / (distance · λ)``).  The default puts
resolution 2.5 Å at the edge of the 720-pixel crop, which is what Ke's
960-pixel resize gives for the LN84 Rayonix geometry.  Frames without
geometry fall back to Ke's pixel-count rule.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from diffscreen.errors import ConfigError
from diffscreen.io.frame import FrameMeta, check_geometry, geometry_problem

__all__ = ["DEFAULT_S_PER_PX", "reciprocal_pixel", "geometry_warnings", "zoom_factor", "beam_centre", "crop_window", "window_to_crop", "beam_in_crop",
           "crop_scaled"]

#: Å⁻¹ per output pixel: 1/2.5 Å at 360 px from the beam.
DEFAULT_S_PER_PX = 1.0 / (2.5 * 360)
#: Zoom factors outside this range are clipped (a mis-read header must not
#: blow a frame up 100× or shrink it to a dot).
ZOOM_RANGE = (0.125, 4.0)


def reciprocal_pixel(meta: FrameMeta) -> float | None:
    """Reciprocal-space size of one detector pixel near the beam, in Å⁻¹.

    Parameters
    ----------
    meta : FrameMeta
        Needs ``pixel_size_mm``, ``distance_mm`` and ``wavelength_A``.

    Returns
    -------
    float or None
        ``pixel_size_mm / (distance_mm * wavelength_A)``, or None if any of
        the three is missing, not positive, or outside its physical range
        (:data:`diffscreen.io.frame.GEOMETRY_RANGES`).
    """
    fields = {"pixel_size_mm": meta.pixel_size_mm, "distance_mm": meta.distance_mm, "wavelength_A": meta.wavelength_A}
    # a value outside its physical range is unknown, not a zoom (the runner warns: geometry_warnings)
    if any(v is None or geometry_problem(k, v) for k, v in fields.items()):
        return None
    return fields["pixel_size_mm"] / (fields["distance_mm"] * fields["wavelength_A"])


def geometry_warnings(meta: FrameMeta, shape) -> list[str]:
    """What is wrong with a frame's recorded geometry, for ``errors.csv``; empty when it is sane.

    A value outside its physical range (:func:`diffscreen.io.frame.check_geometry`)
    is treated as unknown by :func:`reciprocal_pixel` and :func:`beam_centre`
    (the frame is scaled and centred as if it were missing), and the warning
    says so, so that a wrong header never changes a decision silently.

    Parameters
    ----------
    meta : FrameMeta
    shape : (int, int)
        Frame shape ``(H, W)``, pixels.

    Returns
    -------
    list of str
        One line per field, without the file and frame (``errors.csv`` has
        columns for them).
    """
    return [f"{w}; treated as unknown" for w in check_geometry(meta, shape=shape, locate=False)]


def zoom_factor(meta: FrameMeta, shape, *, s_per_px: float | None = DEFAULT_S_PER_PX, fallback_size: int = 960) -> float:
    """Output pixels per detector pixel.

    Parameters
    ----------
    meta : FrameMeta
    shape : (int, int)
        Frame shape ``(H, W)``.
    s_per_px : float or None
        Target reciprocal-space step per output pixel (Å⁻¹).  None scales by
        pixel count only (Ke/fv5080: the whole frame to ``fallback_size``).
    fallback_size : int
        Size the longer frame side is scaled to when the geometry is unknown.

    Returns
    -------
    float
        Zoom factor, clipped to ``ZOOM_RANGE``.
    """
    ds = reciprocal_pixel(meta) if s_per_px else None
    z = ds / s_per_px if ds else fallback_size / max(shape)
    return float(min(max(z, ZOOM_RANGE[0]), ZOOM_RANGE[1]))


def recorded_beam_centre(meta: FrameMeta, shape) -> tuple[float, float] | None:
    """The beam centre ``(x, y)`` in pixels the file records, or None when it records none, or one that is not
    finite or lies outside the frame of ``shape`` (H, W)."""
    H, W = shape
    bc = meta.beam_centre_px
    if bc is not None and all(map(math.isfinite, bc)) and 0 <= bc[0] < W and 0 <= bc[1] < H:
        return float(bc[0]), float(bc[1])
    return None


def beam_centre(meta: FrameMeta, shape) -> tuple[float, float]:
    """Beam centre ``(x, y)`` in pixels: from the file, else the frame centre.

    A recorded centre outside the frame is ignored (the frame centre is used).
    """
    H, W = shape
    bc = recorded_beam_centre(meta, shape)
    return bc if bc is not None else ((W - 1) / 2.0, (H - 1) / 2.0)


def crop_window(centre, zoom: float, out_size: int, shift=(0.0, 0.0)) -> tuple[int, int, int]:
    """The square detector window an ``out_size`` crop is cut from.

    Parameters
    ----------
    centre : (float, float)
        Beam centre ``(x, y)`` in detector pixels.
    zoom : float
        Output pixels per detector pixel (> 0).
    out_size : int
        Output side in pixels.
    shift : (float, float)
        Crop offset ``(dx, dy)`` in output pixels.

    Returns
    -------
    side, x0, y0 : int
        Window side in detector pixels and the column and row of its first
        pixel (may be negative or past the frame edge).

    Raises
    ------
    ConfigError
        If ``zoom`` <= 0.
    """
    if zoom <= 0:
        raise ConfigError(f"zoom must be > 0, got {zoom}")
    side = max(1, int(round(out_size / zoom)))
    x0 = int(round(centre[0] + shift[0] / zoom - side / 2.0 + 0.5))
    y0 = int(round(centre[1] + shift[1] / zoom - side / 2.0 + 0.5))
    return side, x0, y0


def beam_in_crop(centre, zoom: float, out_size: int, shift=(0.0, 0.0)) -> tuple[float, float]:
    """Where the beam centre lands in the crop :func:`crop_scaled` cuts.

    Parameters
    ----------
    centre, zoom, out_size, shift
        As :func:`crop_window`.

    Returns
    -------
    (float, float)
        ``(x, y)`` of the beam in crop pixels (pixel centres at integers):
        about ``(out_size - 1) / 2 - shift``, exact to the window's rounding.

    Raises
    ------
    ConfigError
        If ``zoom`` <= 0.
    """
    side, x0, y0 = crop_window(centre, zoom, out_size, shift)
    return window_to_crop(centre, side, x0, y0, out_size)


def window_to_crop(point, side: int, x0: int, y0: int, out_size: int) -> tuple[float, float]:
    """Detector position ``(x, y)`` → position in the crop resampled from the window.

    The window (:func:`crop_window`: ``side`` pixels from column ``x0``, row
    ``y0``) maps onto ``out_size`` output pixels, pixel centres at integers.
    """
    f = out_size / side
    return (point[0] - x0 + 0.5) * f - 0.5, (point[1] - y0 + 0.5) * f - 0.5


def crop_scaled(image: np.ndarray, centre, zoom: float, out_size: int = 720, shift=(0.0, 0.0), *,
                fill: float = 0.0) -> np.ndarray:
    """Cut the window an ``out_size`` crop needs, then resample it.

    Equivalent to scaling the whole frame by ``zoom`` and cropping
    ``out_size × out_size`` centred on ``centre + shift``, but touches only
    the pixels used.  Outside the frame counts as 0 (Ke: inactive pixels are
    0).  Downscaling averages over the footprint (bilinear with
    anti-aliasing), which is what 2×2 binning does at zoom 0.5.

    Parameters
    ----------
    image : (H, W) float32 ndarray
        Frame with masked and negative pixels already set to 0.
    centre : (float, float)
        Beam centre ``(x, y)`` in detector pixels.
    zoom : float
        Output pixels per detector pixel.
    out_size : int
        Output side in pixels (Ke: 720).
    shift : (float, float)
        Offset ``(dx, dy)`` of the crop in *output* pixels (random cropping
        for training: Ke uses up to ±120).
    fill : float
        Value of the window outside the frame (Ke: 0; NaN marks it, so that
        every output pixel it touches is NaN).

    Returns
    -------
    out : (out_size, out_size) float32 ndarray
    """
    H, W = image.shape
    side, x0, y0 = crop_window(centre, zoom, out_size, shift)
    win = np.full((side, side), fill, dtype=np.float32)
    sx0, sy0 = max(x0, 0), max(y0, 0)
    sx1, sy1 = min(x0 + side, W), min(y0 + side, H)
    if sx1 > sx0 and sy1 > sy0:
        win[sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = image[sy0:sy1, sx0:sx1]
    if side == out_size:
        return win
    t = torch.from_numpy(win)[None, None]
    out = F.interpolate(t, size=(out_size, out_size), mode="bilinear", align_corners=False, antialias=side > out_size)
    return out[0, 0].numpy()
