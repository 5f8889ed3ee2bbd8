"""Frame sources: one protocol, a registry of readers, and the calls the pipeline makes.

A *spec* names frames on disk: a file path (``run.cxi``, ``img_0001.cbf.gz``)
or, for HDF5, ``file.h5:/path/to/dataset``.  :func:`open_source` picks a
reader the way dxtbx's ``Registry`` does: every registered reader is asked in
turn whether it ``understand``s the file, from its first bytes (decompressed
when the file is gzip or bzip2), never from its name alone.  The reader
returns a lazy :class:`FrameSource`, which knows its length and frame shape
before any pixel is read (as EXtra-data's ``KeyData`` does) and reads one
frame per :meth:`FrameSource.read` call.

Readers shipped with diffscreen, in the order they are asked:

========  ===================================================================
nxmx      NeXus NXmx / DECTRIS Eiger master files, with the frames of
          their data files, the pixel mask and the geometry (:mod:`.nxmx`)
hdf5      CXI (as :class:`~diffscreen.io.cxi.CXIWriter` writes it), CXIDB-76
          (Ke et al. 2018), any ``file.h5:/dataset`` (:mod:`.hdf5`)
imgcif    x-CBF_PACKED and multi-panel imgCIF through pycbf (:mod:`.cbf`)
fabio     miniCBF (Pilatus), ADSC/SMV, MarCCD, EDF, TIFF, mar345 (:mod:`.single`)
fabio-any last resort: whatever fabio's own format detection opens (Bruker,
          Oxford/ESPERANTO, KCD, GE, SPE, ...) (:mod:`.fabio_any`)
========  ===================================================================

European XFEL run directories are not files and are not asked here: with
``screen --detector`` each input is opened by :class:`~diffscreen.io.euxfel.EuXFELRuns`
(EXtra-data, EXtra-geom), which the runner uses in place of :func:`open_source`.

The protocol, the base class and the tools every reader shares are in :mod:`diffscreen.io.base`.
"""

from __future__ import annotations

import glob
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from diffscreen.errors import ConfigError, DiffscreenError, FrameReadError, UnknownFormatError
from diffscreen.io.frame import Frame, check_frame
from diffscreen.io.base import FrameSource, check_input_file, read_head, reader_errors

__all__ = [
    "ReaderInfo",
    "register_reader",
    "readers",
    "find_reader",
    "split_spec",
    "open_source",
    "read_frame",
    "iter_frames",
    "expand_inputs",
    "frame_items",
]

_GLOB_CHARS = set("*?[")

# --------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class ReaderInfo:
    """One registered reader.

    Attributes
    ----------
    name : str
        Short name (``"hdf5"``, ``"imgcif"``, ``"fabio"``).
    understand : callable (path: str, head: bytes) -> bool
        True if the reader claims the file; ``head`` holds its first
        :data:`HEAD_BYTES` bytes, decompressed if the file is gzip/bzip2.
    open : callable (path: str) -> FrameSource
    """

    name: str
    understand: Callable[[str, bytes], bool]
    open: Callable[[str], FrameSource]


_REGISTRY: list[ReaderInfo] = []
_BUILTINS_LOADED = False


def register_reader(name: str, understand, open_path, *, first: bool = False) -> None:
    """Add a reader to the registry (a new detector changes nothing else).

    Parameters
    ----------
    name : str
        Reader name; registering a name again replaces the old entry.
    understand : callable (path, head) -> bool
        Decides from the file's first bytes; must not raise for foreign files.
    open_path : callable (path) -> FrameSource
    first : bool
        Ask this reader before the others (default: after them).
    """
    global _REGISTRY
    _load_builtins()  # so that "after the others" includes the built-in readers
    _REGISTRY = [r for r in _REGISTRY if r.name != name]
    info = ReaderInfo(name, understand, open_path)
    _REGISTRY.insert(0, info) if first else _REGISTRY.append(info)


def _load_builtins() -> None:
    global _BUILTINS_LOADED
    if _BUILTINS_LOADED:
        return
    _BUILTINS_LOADED = True
    from diffscreen.io import cbf, fabio_any, hdf5, nxmx, single

    # NXmx masters before the other HDF5 layouts; pycbf before fabio for CBF; fabio's own detection last of all
    for mod in (nxmx, hdf5, cbf, single, fabio_any):
        register_reader(mod.READER_NAME, mod.understand, mod.open_path)


def readers() -> list[ReaderInfo]:
    """The registered readers, in the order they are asked.

    Returns
    -------
    list of ReaderInfo
    """
    _load_builtins()
    return list(_REGISTRY)


def find_reader(path) -> ReaderInfo:
    """The first registered reader that understands a file.

    Parameters
    ----------
    path : str or Path
        A file (not a ``file.h5:/dataset`` spec).

    Returns
    -------
    ReaderInfo

    Raises
    ------
    FrameReadError
        If the file is missing, a dangling link, a directory, a FIFO, socket
        or device, or unreadable (:func:`check_input_file`).
    UnknownFormatError
        If no reader understands it; the message shows its first bytes.
    """
    path = str(path)
    check_input_file(path)
    head, compression = read_head(path)
    for info in readers():
        if info.understand(path, head):
            return info
    raise UnknownFormatError(_unknown_message(path, head, compression), path=path)


def _unknown_message(path: str, head: bytes, compression) -> str:
    if not head:
        return "the file is empty"
    shown = head[:16]
    where = f" (after {compression} decompression)" if compression else ""
    msg = f"no reader understands this file: it starts with {shown!r}{where}"
    if path.lower().endswith((".h5", ".hdf5", ".cxi", ".nxs", ".hdf")):
        msg += "; the name says HDF5 but the HDF5 signature is missing (damaged, or not HDF5)"
    elif ".cbf" in path.lower():
        msg += "; the name says CBF but the '###CBF' header is missing (damaged, or not CBF)"
    return msg


def split_spec(spec) -> tuple[str, str | None]:
    """Split ``file.h5:/dataset`` into the file and the HDF5 dataset path.

    Parameters
    ----------
    spec : str or Path

    Returns
    -------
    file : str
    dataset : str or None
        ``None`` when ``spec`` names a file alone.

    Notes
    -----
    The split is at the first ``:/`` whose left part is an existing file, so
    file names holding ``:`` still work.
    """
    spec = os.fspath(spec)
    if os.path.exists(spec):
        return spec, None
    start = 0
    while (i := spec.find(":/", start)) > 0:
        if os.path.isfile(spec[:i]):
            return spec[:i], spec[i + 1 :]
        start = i + 1
    i = spec.find(":/")
    if i > 0 and spec[:i].lower().endswith((".h5", ".hdf5", ".cxi", ".nxs", ".hdf")):
        return spec[:i], spec[i + 1 :]
    return spec, None


def _as_spec(spec) -> str:
    if isinstance(spec, (str, os.PathLike)):
        return os.fspath(spec)
    raise TypeError(f"a frame spec must be a path or str, got {type(spec).__name__}")


# --------------------------------------------------------------------------- public calls


def open_source(spec) -> FrameSource:
    """Open frames for reading, choosing the reader from the file's content.

    Parameters
    ----------
    spec : str or Path
        A file (``run.cxi``, ``r0095_2000.h5``, ``img.cbf``, ``img.mccd.bz2``)
        or an HDF5 dataset as ``file.h5:/path/to/data`` ((N, H, W) or (H, W)).

    Returns
    -------
    FrameSource
        Lazy: nothing but headers is read until :meth:`FrameSource.read`.
        Use it as a context manager, or call ``close()``.

    Raises
    ------
    FrameReadError
        Missing, unreadable, truncated or corrupt file; not a regular file
        (FIFO, socket, device: refused without opening it); a frame larger
        than :func:`~diffscreen.io.limits.max_frame_pixels`; or whatever the
        reader's library raised, as one line (:func:`reader_errors`).
    UnknownFormatError
        No reader understands the file.
    DatasetNotFoundError
        ``file.h5:/path`` names no dataset in the file.

    Examples
    --------
    >>> with open_source("run.cxi") as src:  # doctest: +SKIP
    ...     print(len(src), src.shape)
    ...     frame = src.read(0)
    """
    spec = _as_spec(spec)
    path, dataset = split_spec(spec)
    check_input_file(path)
    with reader_errors(spec, None, "open the file"):
        if dataset is not None:
            from diffscreen.io.hdf5 import open_dataset

            return open_dataset(path, dataset)
        return find_reader(path).open(path)


def read_frame(spec, index: int = 0) -> Frame:
    """Read one frame from a file.

    Parameters
    ----------
    spec : str or Path
        As for :func:`open_source`.
    index : int
        0-based frame index.

    Returns
    -------
    Frame
        ``data`` (H, W) float32 ADU, ``mask`` (H, W) bool (True = bad), ``meta``.

    Raises
    ------
    FrameReadError, UnknownFormatError, DatasetNotFoundError, FrameIndexError
        As :func:`open_source` and :meth:`FrameSource.read`.
    """
    with open_source(spec) as src:
        return src.read(index)


def iter_frames(specs, *, check: bool = True, opener=None) -> Iterator[tuple[str, int, Frame | DiffscreenError]]:
    """Yield every frame of every input, and errors in place of what cannot be read.

    A screening run must not stop at one bad file, so nothing here raises for
    a bad file or frame: a file that cannot be opened yields one error with
    frame ``-1``; a frame that cannot be read (or fails :func:`check_frame`)
    yields an error with its index, and the next frame follows.

    Parameters
    ----------
    specs : iterable of str or Path, or one str or Path
        Frame specs, as for :func:`open_source` (see :func:`expand_inputs`).
    check : bool
        Run :func:`~diffscreen.io.frame.check_frame` on each frame, yielding
        its :class:`~diffscreen.errors.BadFrameError` (NaN/inf pixels, all
        zero, shape mismatch) in place of the frame.
    opener : callable (spec) -> FrameSource, optional
        Opens a spec instead of :func:`open_source` (e.g.
        :func:`diffscreen.io.geom.open_with_geometry`).

    Yields
    ------
    spec : str
    index : int
        0-based frame index, or -1 for an error about the whole file.
    item : Frame or DiffscreenError
    """
    if isinstance(specs, (str, os.PathLike)):
        specs = [specs]
    for spec in specs:
        spec = os.fspath(spec)
        src = None
        try:
            src = (opener or open_source)(spec)
            n = len(src)
        except Exception as exc:  # a reader bug must not end the run either
            if src is not None:
                src.close()
            if not isinstance(exc, DiffscreenError):
                exc = FrameReadError(f"unexpected {type(exc).__name__}: {exc}", path=spec)
            yield spec, -1, exc
            continue
        with src:
            if n == 0:
                yield spec, -1, FrameReadError("the file holds no frames", path=spec)
            for i in range(n):
                yield spec, i, _read_or_error(src, spec, i, check)


def _read_or_error(src: FrameSource, spec: str, i: int, check: bool) -> Frame | DiffscreenError:
    try:
        frame = src.read(i)
        return check_frame(frame) if check else frame
    except DiffscreenError as exc:
        return exc
    except Exception as exc:  # a reader bug must not end the run
        return FrameReadError(f"unexpected {type(exc).__name__}: {exc}", path=spec, frame=i)


def frame_items(specs, *, max_frames: int | None = None, seed: int = 0) -> list[tuple[str, int]]:
    """All ``(spec, frame)`` of some inputs, or a seeded random subset of ``max_frames`` in input order.

    Raises
    ------
    ConfigError
        The inputs hold no frames.
    FrameReadError
        An input cannot be opened.
    """
    items = []
    for spec in specs:
        with open_source(spec) as src:
            items.extend((spec, i) for i in range(len(src)))
    if not items:
        raise ConfigError(f"the inputs {', '.join(map(str, specs))} hold no frames")
    if max_frames is not None and len(items) > max_frames:
        keep = np.sort(np.random.default_rng(seed).choice(len(items), max_frames, replace=False))
        items = [items[k] for k in keep]
    return items


def expand_inputs(inputs, *, recursive: bool = False) -> list[str]:
    """Turn paths, directories and globs into a list of frame specs.

    Parameters
    ----------
    inputs : iterable of str or Path, or one str or Path
        Files (kept as given, whatever their format, so that a bad file is
        reported when it is read), ``file.h5:/dataset`` specs, directories
        (expanded, sorted, to the files a reader understands; hidden files
        skipped) and glob patterns (sorted matches).
    recursive : bool
        Descend into sub-directories of directory inputs.

    Returns
    -------
    list of str
        In input order, duplicates removed; the data files of an Eiger run
        whose master file is in the list are left out (the master reads them).

    Raises
    ------
    FrameReadError
        If an input does not exist (a dangling symbolic link is kept: opening
        it names its missing target, one error row) or a glob
        matches nothing; the message names it.

    Notes
    -----
    Nothing is opened here except to recognise files in directories, and
    only regular files are looked at there.  A FIFO, socket or device named
    explicitly is kept, like any other bad file, and refused by
    :func:`open_source` (a one-line error for that input) without being
    opened.
    """
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    out: list[str] = []
    for item in inputs:
        out.extend(_expand_one(_as_spec(item), recursive))
    return _without_eiger_data_files(list(dict.fromkeys(out)))


_EIGER_DATA = re.compile(r"(.+)_data_\d{6}\.h5")


def _without_eiger_data_files(specs: list[str]) -> list[str]:
    """Drop DECTRIS data files ``X_data_NNNNNN.h5`` whose master ``X_master.h5`` is in the list too.

    The master reads them (:mod:`diffscreen.io.nxmx`), so a folder or glob of
    an Eiger run screens each frame once, through the master, with its mask.
    """
    masters = {os.path.abspath(s)[: -len("_master.h5")] for s in specs if s.endswith("_master.h5")}
    if not masters:
        return specs
    return [s for s in specs if not ((m := _EIGER_DATA.fullmatch(os.path.abspath(s))) and m.group(1) in masters)]


def _expand_one(item: str, recursive: bool) -> list[str]:
    if os.path.isdir(item):
        return _frame_files(item, recursive)
    if os.path.exists(item):
        return [item]
    path, dataset = split_spec(item)
    if dataset is not None and os.path.isfile(path):
        return [item]
    if _GLOB_CHARS & set(item):
        matches = sorted(glob.glob(item, recursive=recursive))
        if not matches:
            raise FrameReadError("no file matches this pattern", path=item)
        return [f for m in matches for f in (_frame_files(m, recursive) if os.path.isdir(m) else [m])]
    if os.path.islink(item):  # a named link whose target is gone (as a shell glob lists it): its own error row
        return [item]
    raise FrameReadError("no such file or directory", path=item)


def _frame_files(directory: str, recursive: bool) -> list[str]:
    pattern = "**/*" if recursive else "*"
    # is_file(): regular files only (FIFOs, sockets and devices in a folder are no frame files)
    files = sorted(str(p) for p in Path(directory).glob(pattern) if p.is_file() and not p.name.startswith("."))
    return [f for f in files if _understood(f)]


def _understood(path: str) -> bool:
    try:
        head, _ = read_head(path)
    except FrameReadError:
        return False
    return any(info.understand(path, head) for info in readers())
