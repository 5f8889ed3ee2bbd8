"""Resource limits every reader enforces before it allocates pixel memory.

A file's header (or an HDF5 dataset's shape) states how large a frame is.
A damaged or hostile file can state anything: a 3 KB ``.img.bz2`` whose SMV
header claims 100000 × 100000 pixels would make a naive reader allocate
20 GB.  So every reader in :mod:`diffscreen.io` calls
:func:`check_frame_size` with the shape it learns from the header, before
any pixel is decoded, and refuses a frame of more than
:func:`max_frame_pixels` pixels with a one-line
:class:`~diffscreen.errors.FrameReadError`.

The limit is one number for the whole process.  The ``--max-frame-pixels``
option of the command line sets it with :func:`set_max_frame_pixels`; the
environment variable ``DIFFSCREEN_MAX_FRAME_PIXELS`` sets its starting value
(and :func:`set_max_frame_pixels` exports it there, so that worker processes
started with ``spawn`` inherit it).
"""

from __future__ import annotations

import math
import os

from diffscreen.errors import ConfigError, FrameReadError

__all__ = [
    "DEFAULT_MAX_FRAME_PIXELS",
    "ENV_MAX_FRAME_PIXELS",
    "max_frame_pixels",
    "set_max_frame_pixels",
    "check_frame_size",
    "max_stream_bytes",
]

#: Default limit on the pixels of one frame.  The largest detectors in use
#: have about 20-60 Mpx (Eiger2 XE 16M: 18 Mpx; Jungfrau 16M/ePix assembled:
#: up to ~50 Mpx), so 100 Mpx leaves room without letting a header claim
#: billions.
DEFAULT_MAX_FRAME_PIXELS = 100_000_000
#: Environment variable holding the limit (read at import, written by
#: :func:`set_max_frame_pixels`).
ENV_MAX_FRAME_PIXELS = "DIFFSCREEN_MAX_FRAME_PIXELS"
#: Largest bytes per pixel a reader may need to hold one decoded pixel
#: (float64 / int64 data); bounds decompressed streams (:func:`max_stream_bytes`).
MAX_BYTES_PER_PIXEL = 8


def _from_env() -> int:
    text = os.environ.get(ENV_MAX_FRAME_PIXELS, "").strip()
    try:
        n = int(text)
    except ValueError:
        return DEFAULT_MAX_FRAME_PIXELS
    return n if n >= 1 else DEFAULT_MAX_FRAME_PIXELS


_max_pixels = _from_env()


def max_frame_pixels() -> int:
    """The largest frame, in pixels, that readers accept.

    Returns
    -------
    int
        Pixels (H × W of one assembled frame); :data:`DEFAULT_MAX_FRAME_PIXELS`
        unless :func:`set_max_frame_pixels` or ``DIFFSCREEN_MAX_FRAME_PIXELS``
        said otherwise.
    """
    return _max_pixels


def set_max_frame_pixels(n: int) -> None:
    """Set the largest frame, in pixels, that readers accept (``--max-frame-pixels``).

    Parameters
    ----------
    n : int
        Pixels, >= 1.  Also written to the environment variable
        ``DIFFSCREEN_MAX_FRAME_PIXELS`` so that worker processes inherit it.

    Raises
    ------
    ConfigError
        If ``n`` is not an integer >= 1.
    """
    global _max_pixels
    if isinstance(n, bool) or not isinstance(n, int):
        try:
            as_int = int(n)
        except (TypeError, ValueError, OverflowError):
            raise ConfigError(f"--max-frame-pixels must be an integer >= 1, got {n!r}") from None
        if as_int != n:
            raise ConfigError(f"--max-frame-pixels must be an integer >= 1, got {n!r}")
        n = as_int
    if n < 1:
        raise ConfigError(f"--max-frame-pixels must be an integer >= 1, got {n}")
    _max_pixels = n
    os.environ[ENV_MAX_FRAME_PIXELS] = str(n)


def _describe(shape) -> str:
    return " x ".join(str(int(s)) for s in shape)


def check_frame_size(shape, path, frame: int | None = None) -> None:
    """Refuse a frame shape that is invalid or larger than :func:`max_frame_pixels`.

    Call it with the shape a header or dataset states, before allocating.

    Parameters
    ----------
    shape : sequence of int
        The frame's dimensions as stated, e.g. ``(H, W)`` pixels, or
        ``(D3, D2, D1)`` for all panels of an imgCIF array; their product is
        the pixel count.
    path : str or os.PathLike
        The file, for the message.
    frame : int, optional
        The 0-based frame index, for the message.

    Raises
    ------
    FrameReadError
        If a dimension is not a whole number >= 1 (e.g. a negative EDF
        ``Dim_1``), or the product exceeds the limit:
        ``"frame of 100000 x 100000 pixels exceeds the limit of 100,000,000
        pixels (--max-frame-pixels)"``.
    """
    dims = []
    for s in shape:
        try:
            d = int(s)
        except (TypeError, ValueError, OverflowError):
            raise FrameReadError(f"frame dimension {s!r} is not a whole number", path=path, frame=frame) from None
        if d != s or d < 1:
            raise FrameReadError(f"frame shape {tuple(shape)} is not valid: every dimension must be >= 1",
                                 path=path, frame=frame)
        dims.append(d)
    if not dims:
        raise FrameReadError("the frame has no dimensions (a scalar, not an image)", path=path, frame=frame)
    limit = max_frame_pixels()
    if math.prod(dims) > limit:
        raise FrameReadError(f"frame of {_describe(dims)} pixels exceeds the limit of {limit:,} pixels "
                             "(--max-frame-pixels)", path=path, frame=frame)


def max_stream_bytes(pixels: int | None = None, *, bytes_per_pixel: int = MAX_BYTES_PER_PIXEL,
                     slack: int = 1 << 20) -> int:
    """The most bytes a decompressed stream may hold.

    Parameters
    ----------
    pixels : int, optional
        Pixels the header states (all frames a reader must hold at once);
        None means the limit itself (:func:`max_frame_pixels`).
    bytes_per_pixel : int
        Bytes per stored pixel (``MAX_BYTES_PER_PIXEL`` when unknown).
    slack : int
        Bytes allowed on top for headers and trailers.

    Returns
    -------
    int
        ``min(pixels, max_frame_pixels()) * bytes_per_pixel + slack`` bytes.
    """
    n = max_frame_pixels() if pixels is None else min(int(pixels), max_frame_pixels())
    return max(n, 0) * int(bytes_per_pixel) + int(slack)
