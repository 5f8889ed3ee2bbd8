"""What every reader is built from: the :class:`FrameSource` protocol, :class:`BaseSource`, invalid-pixel masks,
one-line errors and bounded decompression.

The readers (:mod:`.hdf5`, :mod:`.cbf`, :mod:`.single`, :mod:`.fabio_any`) build on this module, and
:mod:`.sources` picks among them; this module imports neither, so readers and registry form no cycle.

Invalid pixels (issue 13): a value the detector itself flags as invalid or
overloaded must not decide a frame, so every reader masks (besides its
format's own gap/bad-pixel markers) the values :func:`invalid_mask` names:
at or above the header's saturation/overload/count-cutoff value, and the
all-ones value 2**n - 1 of the stored integer dtype (65535 for uint16,
4294967295 for uint32, 2147483647 for int32).

Errors are one line each and name the file, the frame (0-based) and the
problem; they derive from :class:`~diffscreen.errors.FrameReadError`.

Hostile input (issue 18): only regular files are ever opened (a FIFO, a
socket or a device is refused from its ``stat``, see
:func:`check_input_file`); whatever h5py, fabio, pycbf or numpy raise while
a file is opened or a frame read becomes a one-line
:class:`~diffscreen.errors.FrameReadError` (:func:`reader_errors`, used by
:func:`~diffscreen.io.sources.open_source` and :meth:`BaseSource.read` for every reader); compressed
files are decompressed as a stream with a byte budget
(:func:`read_decompressed`); and every reader checks the frame size its
header states against :mod:`diffscreen.io.limits` before allocating.
"""

from __future__ import annotations

import bz2
import contextlib
import gzip
import os
import stat
import struct
import zlib
from pathlib import Path
from typing import Iterator, Protocol, runtime_checkable

import numpy as np

from diffscreen.errors import DiffscreenError, FrameIndexError, FrameReadError
from diffscreen.io.frame import Frame, FrameMeta

__all__ = [
    "HEAD_BYTES",
    "LIBRARY_ERRORS",
    "FrameSource",
    "BaseSource",
    "invalid_mask",
    "row_run",
    "describe_exception",
    "reader_errors",
    "check_input_file",
    "check_length",
    "read_decompressed",
    "open_decompressed",
    "read_head",
]

#: Bytes of (decompressed) file start handed to every ``understand``.
HEAD_BYTES = 4096
_GZIP_MAGIC = b"\x1f\x8b"
_BZIP2_MAGIC = b"BZh"
#: Decompression step of :func:`read_decompressed`, bytes.
_STREAM_CHUNK = 1 << 20

#: What h5py, fabio, pycbf, numpy and the decompressors raise for a damaged,
#: truncated or hostile file; :func:`reader_errors` turns these (and only
#: these) into :class:`~diffscreen.errors.FrameReadError`.
LIBRARY_ERRORS: tuple[type[BaseException], ...] = (
    OSError, EOFError, KeyError, IndexError, ValueError, TypeError, AttributeError, RuntimeError,
    AssertionError, ArithmeticError, MemoryError, struct.error, zlib.error,
)


@runtime_checkable
class FrameSource(Protocol):
    """What every reader returns: a lazy, indexable run of frames.

    Attributes
    ----------
    path : str
        The spec the source was opened with (``file`` or ``file.h5:/dataset``).
    shape : (int, int)
        ``(H, W)`` of one assembled frame (of frame 0 where a CXI file holds
        frames of several shapes).

    reads_window : bool
        True when :meth:`read_region` reads only the window's pixels from the
        file (:class:`~diffscreen.io.hdf5.CXISource`); False when it reads the
        whole frame and slices it (:class:`BaseSource`'s default).
    being_written : bool
        True while the file's writer still has it open and adds frames (an
        HDF5 file written under SWMR, :mod:`~diffscreen.io.hdf5`); then
        ``complete_frames`` (int) says how many frames, from the first, are
        whole, and reopening the file shows the frames added since.

    Notes
    -----
    ``len(src)`` and ``src.shape`` read headers only, never pixels.
    ``src.read(i)`` returns a :class:`~diffscreen.io.frame.Frame` with
    ``data`` (H, W) float32 in ADU and ``mask`` (H, W) bool, True = bad.
    ``read_meta(i)``, ``frame_shape(i)`` and ``read_region(i, rows, cols)``
    give what the fast screening path needs to plan and read a crop window
    (:mod:`diffscreen.screen.pipeline`).
    Sources are context managers; :meth:`close` releases the file.
    """

    path: str
    reads_window: bool
    being_written: bool

    @property
    def shape(self) -> tuple[int, int]: ...

    @property
    def complete_frames(self) -> int: ...

    def __len__(self) -> int: ...

    def read(self, index: int) -> Frame: ...

    def read_meta(self, index: int) -> FrameMeta: ...

    def frame_shape(self, index: int) -> tuple[int, int]: ...

    def read_region(self, index: int, rows, cols) -> tuple[np.ndarray, np.ndarray]: ...

    def close(self) -> None: ...

    def __iter__(self) -> Iterator[Frame]: ...

    def __enter__(self) -> "FrameSource": ...

    def __exit__(self, *exc) -> None: ...


class BaseSource:
    """Shared behaviour of diffscreen's readers: iteration, ``with``, index checks.

    Subclasses set ``self.path`` and implement ``__len__``, ``shape``,
    ``_read(index)`` (index already checked) and optionally ``close``.
    :meth:`read_meta`, :meth:`frame_shape` and :meth:`read_region` read the
    whole frame (once for the three calls on one index) unless a subclass
    reads less (and then sets ``reads_window = True``).
    """

    path: str = ""
    reads_window: bool = False
    #: True while the file's writer still has it open and adds frames as it goes (HDF5 under SWMR): the first
    #: :attr:`complete_frames` frames are whole, and more may follow; reopen the file to see them.
    being_written: bool = False
    _last: tuple[int, Frame] | None = None

    def __len__(self) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def shape(self) -> tuple[int, int]:  # pragma: no cover - abstract
        raise NotImplementedError

    def _read(self, index: int) -> Frame:  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def complete_frames(self) -> int:
        """How many frames, from the first, are whole: ``len(self)``; while the file is :attr:`being_written`,
        those its writer has finished (0 where a reader cannot tell)."""
        return 0 if self.being_written else len(self)

    def read(self, index: int) -> Frame:
        """Read one frame.

        Parameters
        ----------
        index : int
            0-based frame index, ``0 <= index < len(self)``.

        Returns
        -------
        Frame
            ``data`` (H, W) float32 (ADU), ``mask`` (H, W) bool (True = bad),
            ``meta`` with ``source = self.path`` and ``index``.

        Raises
        ------
        FrameIndexError
            If ``index`` is not an integer in ``[0, len(self))``.
        FrameReadError
            If the frame's bytes cannot be read or decoded (whatever the
            underlying library raised, see :func:`reader_errors`).
        """
        i = self._check_index(index)
        with reader_errors(self.path, i, "read the frame"):
            return self._read(i)

    def _whole(self, index: int) -> Frame:
        """:meth:`read`, remembering the last frame so that the window calls read it once."""
        if self._last is None or self._last[0] != index:
            self._last = None  # never keep a stale frame after a failed read
            self._last = (index, self.read(index))
        return self._last[1]

    def read_meta(self, index: int) -> FrameMeta:
        """Metadata of frame ``index`` (here by reading the frame).

        Raises
        ------
        FrameIndexError, FrameReadError
            As :meth:`read`.
        """
        return self._whole(index).meta

    def frame_shape(self, index: int) -> tuple[int, int]:
        """``(H, W)`` of frame ``index`` (here by reading the frame)."""
        return self._whole(index).data.shape

    def read_region(self, index: int, rows, cols) -> tuple[np.ndarray, np.ndarray]:
        """A window of frame ``index``: its pixels and bad-pixel mask (here sliced from the whole frame).

        Parameters
        ----------
        index : int
            0-based frame index.
        rows, cols : (int, int)
            ``(first, end)`` rows and columns, end exclusive, inside the frame.

        Returns
        -------
        data : (rows[1] - rows[0], cols[1] - cols[0]) float32 ndarray
            Pixels (ADU), a view of the frame.
        bad : same shape bool ndarray
            True = bad, as :meth:`read`'s mask.

        Raises
        ------
        FrameIndexError, FrameReadError
            As :meth:`read`, or a window outside the frame.
        """
        fr = self._whole(index)
        (r0, r1), (c0, c1) = (int(rows[0]), int(rows[1])), (int(cols[0]), int(cols[1]))
        H, W = fr.data.shape
        if not (0 <= r0 <= r1 <= H and 0 <= c0 <= c1 <= W):
            raise FrameReadError(f"window rows {r0}:{r1}, columns {c0}:{c1} is not inside the {H}x{W} frame",
                                 path=self.path, frame=index)
        return fr.data[r0:r1, c0:c1], fr.mask[r0:r1, c0:c1]

    def _check_index(self, index) -> int:
        try:
            i = int(index)
        except (TypeError, ValueError):
            raise FrameIndexError(f"frame index must be an integer, got {index!r}", path=self.path) from None
        if i != index:
            raise FrameIndexError(f"frame index must be an integer, got {index!r}", path=self.path)
        n = len(self)
        if not 0 <= i < n:
            raise FrameIndexError(f"frame index out of range: the file holds {n} frame(s), 0 to {n - 1}",
                                  path=self.path, frame=i)
        return i

    def close(self) -> None:
        """Release the file (a no-op for readers that hold nothing open)."""
        self._last = None

    def __iter__(self) -> Iterator[Frame]:
        for i in range(len(self)):
            yield self.read(i)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.path!r}>"


def row_run(a: np.ndarray) -> tuple[np.ndarray, int]:
    """A 2-D array as one contiguous 1-D run from its first to its last element, and its row stride (elements).

    The window a reader returns is usually a column slice of whole rows it read (rows contiguous, the row
    stride the frame's width): the run is a read-only view of that memory, not a copy, so compiled loops over a
    row see contiguous memory, and a reduction over the run covers the window (and the pixels between its rows'
    ends and the next rows' starts).  Anything else is copied to C order first.

    Parameters
    ----------
    a : (h, w) ndarray

    Returns
    -------
    run : ((h - 1) · stride + w,) ndarray
        Row ``k`` of ``a`` is ``run[k · stride : k · stride + w]`` (a length-1 run when ``a`` is empty).
    stride : int
    """
    h, w = a.shape
    if h == 0 or w == 0:
        return np.zeros(1, a.dtype), w
    if a.strides[1] != a.itemsize or a.strides[0] < w * a.itemsize or a.strides[0] % a.itemsize:
        a = np.ascontiguousarray(a)
    rs = a.strides[0] // a.itemsize
    run = np.lib.stride_tricks.as_strided(a, shape=((h - 1) * rs + w,), strides=(a.itemsize,), writeable=False)
    return run, rs


def invalid_mask(raw: np.ndarray, saturated=None, *, negative: bool = False) -> np.ndarray:
    """Pixels whose stored value the detector flags as invalid, in one vectorised pass.

    Parameters
    ----------
    raw : ndarray
        Pixels in the dtype they are stored in (before any conversion).
    saturated : float, optional
        The header's saturation / overload / count-cutoff value; values at or
        above it are masked.  Ignored when None, not finite or <= 0.
    negative : bool
        Also mask negative values (gap/bad markers of signed-integer formats).

    Returns
    -------
    ndarray of bool, ``raw.shape``
        True at or above ``saturated``, at the all-ones value 2**n - 1 of an
        integer dtype of 16 bits or more (``np.iinfo(dtype).max``: 65535 for
        uint16, 2147483647 for int32; 8-bit images are left alone), and below
        0 if ``negative`` and the dtype is signed.

    Notes
    -----
    For integer data the threshold is cast to the stored dtype, so no float
    copy is made; with ``negative`` a signed array is compared as its
    unsigned view, where every negative value lies above the threshold, so
    it is still one comparison.
    """
    raw = np.asarray(raw)
    sat = None
    if saturated is not None:
        try:
            sat = float(saturated)
        except (TypeError, ValueError):
            sat = None
        if sat is not None and not (np.isfinite(sat) and sat > 0):
            sat = None
    kind = raw.dtype.kind
    if kind in "iu":
        info = np.iinfo(raw.dtype)
        thr = info.max if raw.dtype.itemsize >= 2 else None
        if sat is not None:
            s = int(np.ceil(sat))
            thr = s if thr is None or s < thr else thr
        signed_neg = negative and kind == "i"
        if thr is None:
            return raw < 0 if signed_neg else np.zeros(raw.shape, bool)
        if signed_neg:  # as unsigned, every negative value is >= 2**(n-1) > thr
            unsigned = np.dtype(raw.dtype.str.replace("i", "u"))  # same byte order
            return raw.view(unsigned) >= unsigned.type(thr)
        return raw >= raw.dtype.type(thr)
    if kind == "f" and sat is not None:
        return raw >= sat if not negative else (raw >= sat) | (raw < 0)
    if negative and kind == "f":
        return raw < 0
    return np.zeros(raw.shape, bool)


# --------------------------------------------------------------------------- hostile input


def describe_exception(exc: BaseException, limit: int = 300) -> str:
    """One line naming an exception's type and message.

    Parameters
    ----------
    exc : BaseException
    limit : int
        Most characters of the message kept.

    Returns
    -------
    str
        ``"KeyError: Unable to open object (can't open file)"``, whitespace
        collapsed (h5py and CBFlib messages span lines).
    """
    text = " ".join(str(exc).split())
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    name = type(exc).__name__
    return f"{name}: {text}" if text else name


@contextlib.contextmanager
def reader_errors(path, frame: int | None = None, what: str = "read the file"):
    """Turn what a library raises for a bad file into one :class:`FrameReadError`.

    The one place where exceptions of h5py, fabio, pycbf, numpy and the
    decompressors (:data:`LIBRARY_ERRORS`) become diffscreen errors;
    :func:`open_source` and :meth:`BaseSource.read` wrap every reader in it.
    Besides :data:`LIBRARY_ERRORS` it catches exceptions of exactly the type
    ``Exception`` (fabio and CBFlib raise those) and any exception raised
    inside a library rather than in diffscreen (a library's own bug met on a
    damaged file).  Diffscreen's own errors pass unchanged, and so does
    anything else (``KeyboardInterrupt``, a ``NameError`` in diffscreen).

    Parameters
    ----------
    path : str or os.PathLike
        The file (or spec), named in the message.
    frame : int, optional
        0-based frame index, named in the message.
    what : str
        What was being done, as in ``"cannot {what} (...)"``.

    Raises
    ------
    FrameReadError
        ``"<path>, frame <i>: cannot <what> (<Type>: <message>)"``, chained
        to the original exception (``from``).

    Examples
    --------
    >>> with reader_errors("a.h5", 3, "read the mask"):  # doctest: +SKIP
    ...     ds[3]
    """
    try:
        yield
    except DiffscreenError:
        raise
    except MemoryError as exc:
        raise FrameReadError(f"cannot {what}: out of memory ({describe_exception(exc)})",
                             path=path, frame=frame) from exc
    except LIBRARY_ERRORS as exc:
        raise FrameReadError(f"cannot {what} ({describe_exception(exc)})", path=path, frame=frame) from exc
    except Exception as exc:
        if type(exc) is not Exception and not _raised_in_library(exc):
            raise  # a bug of ours (a NameError in diffscreen) is not the file's fault
        reason = describe_exception(exc).replace("CBFlib Error(s): ", "")
        raise FrameReadError(f"cannot {what} ({reason})", path=path, frame=frame) from exc


_PACKAGE_DIR = str(Path(__file__).resolve().parents[1])


def _raised_in_library(exc: BaseException) -> bool:
    """Whether ``exc`` was raised inside an installed library (fabio, h5py, ...), not in diffscreen or its caller.

    A library's own bug met on a damaged file (fabio's ``UnboundLocalError``
    on an EDF with a repeated ``Dim_1``, found by bench/fuzz.py) is that
    file's error.  "Installed": the innermost frame's file lies in a
    ``site-packages`` or ``dist-packages`` folder (Debian's python3-dials)
    and not in diffscreen itself.
    """
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    if tb is None:
        return False
    where = str(Path(tb.tb_frame.f_code.co_filename).resolve())
    return not where.startswith(_PACKAGE_DIR) and any(d in Path(where).parts
                                                      for d in ("site-packages", "dist-packages"))


_SPECIAL_FILES = (
    (stat.S_ISFIFO, "is a FIFO (named pipe), not a frame file; refused without opening it (reading could block "
                    "forever)"),
    (stat.S_ISSOCK, "is a socket, not a frame file"),
    (stat.S_ISCHR, "is a character device (like /dev/zero), not a frame file; refused without reading it"),
    (stat.S_ISBLK, "is a block device, not a frame file; refused without reading it"),
)


def _file_type_problem(mode: int) -> str | None:
    if stat.S_ISDIR(mode):
        return "is a directory, not a frame file (expand it with expand_inputs)"
    for test, problem in _SPECIAL_FILES:
        if test(mode):
            return problem
    if not stat.S_ISREG(mode):
        return "is not a regular file"
    return None


def check_input_file(path) -> os.stat_result:
    """Refuse anything but an existing, readable regular file, without opening it.

    Parameters
    ----------
    path : str or os.PathLike

    Returns
    -------
    os.stat_result
        The file's ``stat`` (symbolic links followed).

    Raises
    ------
    FrameReadError
        One line naming the file: no such file; a dangling symbolic link
        (naming its target); a directory; a FIFO, socket, character or block
        device (decided from ``stat``, never opened, so a FIFO cannot hang the
        run); or a file this user may not read.
    """
    path = os.fspath(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        if os.path.islink(path):
            try:
                target = os.readlink(path)
            except OSError:
                target = "?"
            raise FrameReadError(f"dangling symbolic link to {target!r}, which does not exist", path=path) from None
        raise FrameReadError("no such file", path=path) from None
    except OSError as exc:
        raise FrameReadError(f"cannot stat the file ({exc.strerror or exc})", path=path) from exc
    problem = _file_type_problem(st.st_mode)
    if problem:
        raise FrameReadError(problem, path=path)
    if not os.access(path, os.R_OK):
        raise FrameReadError("permission denied: this user may not read the file", path=path)
    return st


def _open_regular(path):
    """Open a regular file for binary reading; anything else is refused before a read can block."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        raise FrameReadError(f"cannot open: {exc.strerror or exc}", path=path) from exc
    try:
        problem = _file_type_problem(os.fstat(fd).st_mode)
        if problem:
            raise FrameReadError(problem, path=path)
        if flags & getattr(os, "O_NONBLOCK", 0):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def check_length(path, have: int, need: int | None, what: str, frame: int | None = None) -> None:
    """Refuse a file (or decompressed stream) shorter than its header says.

    Parameters
    ----------
    path : str or os.PathLike
    have : int
        Bytes present (file size, or bytes the stream decompressed to).
    need : int or None
        Bytes the header implies (header + pixel data); None skips the check.
    what : str
        What needs them, e.g. ``"its SMV header's 2304 x 2304 uint16 frame"``.
    frame : int, optional

    Raises
    ------
    FrameReadError
        ``"truncated: ... needs 10,617,344 bytes, the file holds 1,000"``.
    """
    if need is not None and have < need:
        raise FrameReadError(f"truncated: {what} needs {need:,} bytes, the file holds {have:,}",
                             path=path, frame=frame)


def read_decompressed(path, max_bytes: int, *, layout=None, what: str = "",
                      frame: int | None = None) -> tuple[bytes, object]:
    """Decompress a gzip/bzip2 file as a stream, never past a byte budget.

    Parameters
    ----------
    path : str or os.PathLike
        A regular file (gzip, bzip2, or plain: then it is read as is).
    max_bytes : int
        Most bytes the decompressed data may hold (e.g.
        :func:`~diffscreen.io.limits.max_stream_bytes`).
    layout : callable (data: bytearray, at_eof: bool) -> (cap, need[, info]) or None, optional
        Called with the data decompressed so far (at doubling sizes) until it
        returns a tuple: the header's own budget ``cap`` in bytes (replacing
        ``max_bytes`` when smaller), the ``need`` bytes the header implies
        (int or None; checked at the end) and optionally anything to hand
        back as ``info``.  Return None while the header is incomplete; raise
        :class:`FrameReadError` for a header that states too much.  With
        ``at_eof`` True it must decide (the stream has ended).
    what : str
        Describes what ``need`` is for, for :func:`check_length`.
    frame : int, optional
        Frame index named in the errors (0 for a single-frame file).

    Returns
    -------
    data : bytes
        The decompressed file, at most the budget.
    info : object
        What ``layout`` returned as its third element, or None.

    Raises
    ------
    FrameReadError
        The stream is damaged or ends early (bzip2/gzip end-of-stream marker
        missing); it decompresses to more than the budget (the reading stops
        there, so a decompression bomb costs at most the budget); or it holds
        fewer bytes than ``need``.
    """
    fh, kind = open_decompressed(path)
    buf = bytearray()  # grows in place: no second copy while streaming
    cap, need, info = int(max_bytes), None, None
    decided, next_look = layout is None, 0
    try:
        with fh:
            while True:
                chunk = fh.read(min(_STREAM_CHUNK, cap + 1 - len(buf)))
                buf += chunk
                if not decided and (not chunk or len(buf) > cap or len(buf) >= next_look):
                    next_look = 2 * len(buf)  # doubling sizes: the header is parsed O(log n) times
                    got = layout(buf, not chunk)
                    if got is not None:
                        decided = True
                        cap, need = min(cap, int(got[0])), got[1]
                        info = got[2] if len(got) > 2 else None
                if len(buf) > cap:
                    why = f", more than {what} needs" if what else ""
                    raise FrameReadError(f"decompresses to more than {cap:,} bytes{why} (a damaged file or a "
                                         "decompression bomb)", path=path, frame=frame)
                if not chunk:
                    break
    except DiffscreenError:
        raise
    except (OSError, EOFError, ValueError, zlib.error) as exc:
        raise FrameReadError(f"damaged or truncated {kind or 'compressed'} stream ({describe_exception(exc)})",
                             path=path, frame=frame) from exc
    data = bytes(buf)
    del buf
    check_length(path, len(data), need, what or "its header", frame)
    return data, info


class _ClosesItsFile:
    """Mixin of a decompressing stream that also closes the file it reads from (``self._owned``)."""

    _owned = None

    def close(self) -> None:
        try:
            super().close()
        finally:
            if self._owned is not None:
                self._owned.close()


class _OwningGzip(_ClosesItsFile, gzip.GzipFile):
    """A gzip stream that closes the file it reads from."""

    def __init__(self, fh):
        super().__init__(fileobj=fh, mode="rb")
        self._owned = fh


class _OwningBZ2(_ClosesItsFile, bz2.BZ2File):
    """A bzip2 stream that closes the file it reads from."""

    def __init__(self, fh):
        super().__init__(fh, "rb")
        self._owned = fh


def open_decompressed(path):
    """Open a file for binary reading, through gzip or bzip2 if its magic bytes say so.

    Parameters
    ----------
    path : str or Path
        A regular file; anything else (FIFO, socket, device, directory) is
        refused before it could be read.

    Returns
    -------
    file : binary file object
        Yields the decompressed bytes; close it after use.
    compression : {"gzip", "bzip2", None}

    Raises
    ------
    FrameReadError
        If the file cannot be opened, or is not a regular file.
    """
    fh = _open_regular(path)
    try:
        magic = fh.read(3)
        fh.seek(0)
        if magic.startswith(_GZIP_MAGIC):
            return _OwningGzip(fh), "gzip"
        if magic.startswith(_BZIP2_MAGIC):
            return _OwningBZ2(fh), "bzip2"
        return fh, None
    except OSError as exc:
        fh.close()
        raise FrameReadError(f"cannot read: {exc.strerror or exc}", path=path) from exc


def read_head(path, n: int = HEAD_BYTES) -> tuple[bytes, str | None]:
    """The first ``n`` bytes of a file, decompressed if it is gzip or bzip2.

    Parameters
    ----------
    path : str or Path
    n : int

    Returns
    -------
    head : bytes
        Up to ``n`` bytes (fewer if the file is shorter).
    compression : {"gzip", "bzip2", None}
        Detected from the magic bytes, not the name.

    Raises
    ------
    FrameReadError
        If the file cannot be opened, or its compressed stream is damaged.
    """
    fh, kind = open_decompressed(path)
    try:
        with fh:
            return fh.read(n), kind
    except (OSError, EOFError, ValueError, zlib.error) as exc:
        raise FrameReadError(f"damaged or truncated {kind} stream ({describe_exception(exc)})", path=path) from exc
