"""Exceptions raised by diffscreen.

Every error diffscreen raises on purpose derives from :class:`DiffscreenError`
and also from the closest built-in exception, so ``except ValueError`` or
``except OSError`` in user code keeps working.  Messages name the file, the
frame (0-based) and the problem, and where possible the next step.
"""

from __future__ import annotations

__all__ = [
    "DiffscreenError",
    "FrameReadError",
    "UnknownFormatError",
    "DatasetNotFoundError",
    "FrameIndexError",
    "BadFrameError",
    "LabelError",
    "ModelFileError",
    "ConfigError",
]


def _where(path=None, frame=None) -> str:
    parts = []
    if path is not None:
        parts.append(str(path))
    if frame is not None:
        parts.append(f"frame {frame}")
    return ", ".join(parts)


class DiffscreenError(Exception):
    """Base class of all diffscreen errors.

    Parameters
    ----------
    message : str
        What went wrong.
    path : str or os.PathLike, optional
        The file concerned.
    frame : int, optional
        The 0-based frame index concerned.
    """

    def __init__(self, message: str, *, path=None, frame=None):
        self.path = None if path is None else str(path)
        self.frame = frame
        self.problem = message
        where = _where(path, frame)
        super().__init__(f"{where}: {message}" if where else message)


class FrameReadError(DiffscreenError, OSError):
    """A file or frame could not be read (corrupt, truncated, unreadable)."""


class UnknownFormatError(FrameReadError, ValueError):
    """No reader understands the file."""


class DatasetNotFoundError(FrameReadError, KeyError):
    """An HDF5 dataset path does not exist in the file."""

    def __str__(self) -> str:  # KeyError would quote the message
        return Exception.__str__(self)


class FrameIndexError(FrameReadError, IndexError):
    """A frame index is outside the frames a file holds."""


class BadFrameError(DiffscreenError, ValueError):
    """A frame was read but cannot be used: wrong shape, NaN/inf pixels, all zero."""


class LabelError(DiffscreenError, ValueError):
    """A label file is malformed, or names a frame or class that does not exist."""


class ModelFileError(DiffscreenError, OSError):
    """A model file is missing, corrupt, or lacks the metadata diffscreen needs."""


class ConfigError(DiffscreenError, ValueError):
    """A user-supplied option or parameter is invalid."""
