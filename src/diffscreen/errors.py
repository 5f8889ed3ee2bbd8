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
    "OutputError",
    "EXIT_USAGE",
    "EXIT_RUN",
]

#: Exit status of the CLI for a usage error: bad arguments, an unreadable input, label or scores file.
EXIT_USAGE = 2
#: Exit status of the CLI for a run error: the output folder, the model file, the machine's resources.
EXIT_RUN = 3


def one_line(text: str, limit: int = 500) -> str:
    """``text`` as one printable line: control characters (a header's newline, NUL) escaped, cut at ``limit``.

    Every error message goes to one ``ERROR:`` line and one errors.csv field,
    whatever bytes a damaged file put into it.
    """
    text = str(text)
    if text.isprintable() and len(text) <= limit:
        return text
    out = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    return out if len(out) <= limit else out[: limit - 1] + "…"


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

    #: Exit status of the CLI when this error ends a command (README, "Exit status").
    exit_status = EXIT_USAGE

    def __init__(self, message: str, *, path=None, frame=None):
        self.path = None if path is None else str(path)
        self.frame = frame
        self.problem = message = one_line(message)
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

    exit_status = EXIT_RUN


class ConfigError(DiffscreenError, ValueError):
    """A user-supplied option or parameter is invalid."""


class OutputError(DiffscreenError, OSError):
    """The outputs cannot be written: the output folder is a file, another run
    holds its lock, or the disk is full or read-only."""

    exit_status = EXIT_RUN