"""Last-resort reader: whatever fabio's own format detection opens.

Registered after every dedicated reader (:mod:`.hdf5`, :mod:`.cbf`,
:mod:`.single`), so it only sees files none of them claims: Bruker
(``.sfrm``, ``.gfrm``), Oxford Diffraction / ESPERANTO, Nonius KappaCCD
(``.kcd``), GE amorphous-Si (``ADEPT``), Princeton Instruments SPE, R-AXIS,
DM3, numpy ``.npy``, ... (fabio's ``openimage``: magic bytes first, then the
file name).  gzip/bzip2 files are decompressed here, as a stream, into
memory for fabio: at most :func:`~diffscreen.io.limits.max_stream_bytes`
(4 bytes per pixel of :func:`~diffscreen.io.limits.max_frame_pixels`, as
these formats' headers are not parsed here), and the claim is checked on
the first MiB only, so a decompression bomb is never decompressed whole.
Every decoded frame is checked against the pixel limit.

A file is claimed when fabio names a format for it (its magic-number table
on the decompressed first bytes, else its name) that is not one the
dedicated readers cover (CBF, EDF, TIFF, MarCCD, ADSC/d*TREK, mar345, HDF5),
nor a generic container that fabio only guesses from a name or from a
one-character magic (raw ``binary``, XML ``xsd``, JPEG); the claim is then
confirmed by fabio reading the header.  So a foreign or damaged file is
still refused by :func:`~diffscreen.io.sources.find_reader` with its one-line
:class:`~diffscreen.errors.UnknownFormatError`, and the error messages of
the dedicated readers are unchanged.

Multi-frame files (GE, ESPERANTO, ...) are read frame by frame with fabio's
``nframes``/``getframe``.  Mask (True = bad): what the detector flags as
invalid (:func:`~diffscreen.io.base.invalid_mask`): negative values of
signed-integer data, the all-ones value of the stored integer dtype, and
values at or above a saturation value found in the header.  Geometry is
filled only where the header gives it cheaply (Bruker ``DISTANC``,
``WAVELEN``); otherwise it stays None.  ``meta.extra["format"]``
is fabio's class name (``"GeImage"``, ``"KcdImage"``, ...).
"""

from __future__ import annotations

import contextlib
import functools
import io
import os
import re

import numpy as np

from diffscreen.errors import FrameReadError, UnknownFormatError
from diffscreen.io.base import BaseSource, invalid_mask, read_decompressed, read_head, reader_errors
from diffscreen.io.frame import Frame, FrameMeta
from diffscreen.io.limits import check_frame_size, max_stream_bytes

__all__ = ["FabioAnySource", "fabio_format", "understand", "open_path"]

READER_NAME = "fabio-any"

#: fabio format names left to the dedicated readers or never claimed here.
_NOT_HERE = {
    "cbf", "edf", "tif", "tiff", "marccd", "pilatus", "adsc", "dtrek", "mar345",  # :mod:`.single` / :mod:`.cbf`
    "hdf5", "eiger", "lima", "sparse", "lambda", "nexus",  # :mod:`.hdf5`
    "binary", "raw", "xsd", "jpeg", "jpeg2k", "fit2dmask",  # generic containers, photos, masks
}
#: Header keys (case-insensitive) that give a saturation / overload value.
_SATURATION_KEYS = ("saturated_value", "saturation_value", "saturation", "overload", "ccd_image_saturation",
                    "nOverflow_limit", "max_count")
_NUM = r"([-+]?\d*\.?\d+(?:[eE][-+]?\d+)?)"
#: Decompressed bytes of a compressed file that :func:`understand` reads a header from.
_HEADER_PROBE_BYTES = 1 << 20


@contextlib.contextmanager
def _quiet():
    """fabio prints to stdout sometimes; keep diffscreen's stdout (CSV, summaries) clean."""
    with contextlib.redirect_stdout(io.StringIO()):
        yield


def fabio_format(path: str, head: bytes) -> str | None:
    """The fabio format name for a file, from its first bytes or else its name.

    Parameters
    ----------
    path : str
    head : bytes
        The file's first (decompressed) bytes.

    Returns
    -------
    str or None
        fabio's format name (``"GE"``, ``"kcd"``, ``"spe"``, ``"bruker100"``,
        ...), or None when fabio has none or it is one not claimed here.
    """
    try:
        from fabio import openimage
        from fabio.fabioutils import FilenameObject
    except ImportError:  # pragma: no cover - fabio is a dependency
        return None
    magic = getattr(openimage, "_do_magic", None) or getattr(openimage, "do_magic", None)
    fmt = None
    if magic is not None and head:
        try:
            with _quiet():
                fmt = magic(head[:18], path)
        except Exception:  # noqa: BLE001 - fabio raises plain Exception for "no magic"
            fmt = None
    if fmt is None:
        try:
            with _quiet():
                guess = FilenameObject(filename=os.path.basename(path)).format
        except Exception:  # noqa: BLE001
            guess = None
        if isinstance(guess, list):
            guess = guess[0] if len(guess) == 1 else None
        fmt = guess
    if not fmt or str(fmt).lower() in _NOT_HERE:
        return None
    return str(fmt)


def understand(path: str, head: bytes) -> bool:
    """True if fabio names a format (see :func:`fabio_format`) and reads the file's header.

    Parameters
    ----------
    path : str
    head : bytes
    """
    fmt = fabio_format(path, head)
    if fmt is None:
        return False
    try:
        st = os.stat(path)
    except OSError:
        return False
    return _header_reads(os.fspath(path), fmt, st.st_mtime_ns, st.st_size)


def _fabio_image(fmt: str):
    """A fresh fabio image object of the format ``fmt`` names (as ``fabio.open`` picks it)."""
    from fabio import fabioformats

    return fabioformats.factory(fmt + "image")


def _is_compressed(path: str) -> bool:
    return read_head(path, 3)[1] is not None


@functools.lru_cache(maxsize=64)
def _header_reads(path: str, fmt: str, _mtime: int, _size: int) -> bool:
    """True if fabio reads the header; for a compressed file from its first MiB only."""
    from fabio.fabioutils import BytesIO

    try:
        with _quiet():
            img = _fabio_image(fmt)
            if _is_compressed(path):
                img.readheader(BytesIO(read_head(path, _HEADER_PROBE_BYTES)[0], path))
            else:
                img.readheader(path)
        return True
    except Exception:  # noqa: BLE001 - fabio raises anything, even plain Exception; any failure means "not claimed"
        return False


def open_path(path: str) -> "FabioAnySource":
    """Open a file through fabio's own format detection.

    Parameters
    ----------
    path : str

    Returns
    -------
    FabioAnySource
    """
    return FabioAnySource(path)


class FabioAnySource(BaseSource):
    """Frames of any file fabio opens (see the module notes).

    Parameters
    ----------
    path : str

    Raises
    ------
    UnknownFormatError
        fabio names no format for the file.
    FrameReadError
        fabio cannot decode it (truncated, damaged), or it holds no 2-D image.
    """

    def __init__(self, path):
        self.path = os.fspath(path)
        self._img = None
        self._image()

    def _source(self):
        """The path, or for a compressed file its bytes decompressed within the budget."""
        if not _is_compressed(self.path):
            return self.path
        from fabio.fabioutils import BytesIO

        budget = max_stream_bytes(None, bytes_per_pixel=4)
        data, _ = read_decompressed(self.path, budget, what="a file within the --max-frame-pixels limit", frame=0)
        return BytesIO(data, self.path)

    def _image(self):
        if self._img is None:
            head, _ = read_head(self.path)
            fmt = fabio_format(self.path, head)
            if fmt is None:
                raise UnknownFormatError("fabio cannot identify the format", path=self.path)
            source = self._source()
            with reader_errors(self.path, 0, f"decode it as fabio's {fmt}"), _quiet():
                img = _fabio_image(fmt).read(source)
            if img.data is None or np.ndim(img.data) != 2:
                raise FrameReadError(f"decoded {type(img).__name__} holds no 2-D image", path=self.path, frame=0)
            check_frame_size(np.shape(img.data), self.path, 0)
            self._img = img
        return self._img

    def close(self) -> None:
        """Drop the decoded image."""
        self._img = None

    def __len__(self) -> int:
        return max(int(getattr(self._image(), "nframes", 1) or 1), 1)

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(int(s) for s in self._image().data.shape)

    def _read(self, index: int) -> Frame:
        img = self._image()
        if index:
            with reader_errors(self.path, index, "decode the frame"), _quiet():
                img = img.getframe(index)
        raw = np.asarray(img.data)
        if raw.ndim != 2:
            raise FrameReadError(f"frame is {raw.ndim}-D, not 2-D", path=self.path, frame=index)
        check_frame_size(raw.shape, self.path, index)
        meta = _meta(self.path, index, type(img).__name__, dict(img.header or {}))
        mask = invalid_mask(raw, meta.extra.get("saturated_value"), negative=True)
        return Frame(data=raw.astype(np.float32), mask=mask, meta=meta)


def _number(v) -> float | None:
    if v is None:
        return None
    m = re.search(_NUM, str(v))
    return float(m.group(1)) if m else None


def _numbers(v) -> list[float]:
    return [float(x) for x in re.findall(_NUM, str(v or ""))]


def _positive(v) -> float | None:
    return v if v is not None and np.isfinite(v) and v > 0 else None


def _meta(path: str, index: int, classname: str, header: dict) -> FrameMeta:
    meta = FrameMeta(source=path, index=index, extra={"format": classname})
    lower = {str(k).lower(): v for k, v in header.items()}
    for key in _SATURATION_KEYS:
        sat = _positive(_number(lower.get(key.lower())))
        if sat is not None:
            meta.extra["saturated_value"] = sat
            break
    if classname.startswith("Bruker"):
        _fill_from_bruker(meta, lower)
    det = lower.get("dettype") or lower.get("detector")
    meta.detector = str(det).split()[0] if det and str(det).strip() else classname.replace("Image", "")
    return meta


def _fill_from_bruker(meta: FrameMeta, h: dict) -> None:
    """Bruker SFRM keys ``DISTANC`` (cm) and ``WAVELEN`` (Å, first of 3).

    ``CENTER`` is left out: it counts from another corner than fabio's array.
    """
    d = _numbers(h.get("distanc"))
    if d:  # as stated: check_geometry warns about absurd values
        meta.distance_mm = d[0] * 10.0
    w = _numbers(h.get("wavelen"))
    if w:
        meta.wavelength_A = w[0]
