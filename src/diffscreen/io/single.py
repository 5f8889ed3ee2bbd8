"""Single-frame detector formats through fabio.

================  =============================  ===========================================
kind              recognised by (first bytes)    geometry read from
================  =============================  ===========================================
``cbf``           ``###CBF`` + x-CBF_BYTE_OFFSET  Pilatus text header (``Pixel_size``,
                  (miniCBF: Pilatus, Eiger)       ``Detector_distance``, ``Wavelength``, ``Beam_xy``)
``smv``           ``{ HEADER_BYTES=``            ADSC keys ``PIXEL_SIZE``, ``DISTANCE``,
                  (ADSC, SMV)                     ``WAVELENGTH``, ``BEAM_CENTER_X/Y`` (mm)
``marccd``        TIFF + MarCCD frame header      frame header at byte 1024 (fabio's layout)
``tiff``          TIFF (``II*\\0`` / ``MM\\0*``)   none
``edf``           ``{`` + EDF keys               ``PSize_1``, ``SampleDistance``,
                                                  ``WaveLength`` (m), ``Center_1/2`` (px)
``mar345``        byte-order word 1234            ``PixelLength``, ``Distance``,
                                                  ``Wavelength``, ``CENTER``
================  =============================  ===========================================

Files may be gzip or bzip2 compressed (``.gz``/``.bz2``, which fabio opens).
x-CBF_PACKED and multi-panel CBF go to :mod:`.cbf` instead.

Masks (True = bad): Pilatus/Eiger negative values (−1 module gaps, −2 bad
pixels; any signed-integer CBF or TIFF); ADSC pixels reading exactly 0 (the
CCD pedestal keeps active pixels above 0, so a 0 is the gap between the 2×2
modules or a dead pixel); MarCCD and mar345 zeros outside the inscribed circle
(the round active area of a MarCCD 165 or an image plate); the EDF ``Dummy``
value.  Besides these, every kind masks what the detector itself flags as
invalid (issue 13: a value the detector flags as invalid or overloaded must
not decide a frame; :func:`~diffscreen.io.sources.invalid_mask`): pixels at
or above the header's saturation value (Pilatus ``# Count_cutoff``, ADSC
``CCD_IMAGE_SATURATION``, MarCCD ``saturated_value``), and the all-ones value
2**n - 1 of the stored integer dtype (65535 in a uint16 CCD frame is masked
even where it simply means saturation).

Beam-centre conventions (0-based px, x = fast scan, y = slow scan): Pilatus
``Beam_xy`` and MarCCD ``beam_x/y`` are pixel values and are passed through;
ADSC ``BEAM_CENTER_X/Y`` (mm) are divided by ``PIXEL_SIZE`` with X along the
fast scan.  dxtbx's generic ``FormatSMVADSC`` maps BEAM_CENTER_Y to the fast
axis instead; the powder rings of the reference frame ``adsc.img.bz2`` are
centred at fast ≈ 1217, slow ≈ 1151 px, matching X → fast (1216.9) and not
Y → fast (1160.5).  Header origins differ by up to half a pixel between
conventions (corner or centre of the first pixel); no shift is applied.
"""

from __future__ import annotations

import contextlib
import io

import os
import re
import struct

import numpy as np

from diffscreen.errors import FrameReadError
from diffscreen.io.frame import Frame, FrameMeta
from diffscreen.io.sources import BaseSource, invalid_mask, read_head

__all__ = [
    "FabioSource",
    "fabio_kind",
    "parse_pilatus_header",
    "fill_from_pilatus_header",
    "marccd_header",
    "inscribed_circle",
    "understand",
    "open_path",
]

READER_NAME = "fabio"
#: Kinds whose files hold exactly one frame.
SINGLE_FRAME_KINDS = {"cbf", "smv", "marccd", "mar345"}
_MARCCD_HEADER_OFFSET = 1024
_MARCCD_HEADER_SIZE = 3072
_NUM = r"([-+]?\d*\.?\d+(?:[eE][-+]?\d+)?)"


def fabio_kind(path: str, head: bytes) -> str | None:
    """Which fabio-read format a file is, from its first bytes.

    Parameters
    ----------
    path : str
    head : bytes
        First (decompressed) bytes, at least 4096 for MarCCD.

    Returns
    -------
    {"cbf", "smv", "marccd", "tiff", "edf", "mar345"} or None
    """
    from diffscreen.io import cbf

    if cbf.is_cbf(head):
        try:
            return None if cbf.needs_pycbf(cbf.cbf_header(path)) else "cbf"
        except (OSError, FrameReadError):
            return None
    if re.match(rb"\s*\{\s*HEADER_BYTES\s*=", head):
        return "smv"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "marccd" if _marccd_byte_order(head) else "tiff"
    if head[:4] in (b"\xd2\x04\x00\x00", b"\x00\x00\x04\xd2") and b"mar research" in head[:512].lower():
        return "mar345"
    if re.match(rb"\s*\{", head) and re.search(rb"EDF_|ByteOrder|Dim_1", head[:4096]):
        return "edf"
    return None


def _marccd_byte_order(head: bytes) -> str | None:
    """``"<"`` or ``">"`` if a MarCCD frame header follows the TIFF header, else None."""
    word = head[_MARCCD_HEADER_OFFSET + 28 : _MARCCD_HEADER_OFFSET + 32]  # header_byte_order
    if len(word) < 4:
        return None
    for order in "<>":
        if struct.unpack(order + "I", word)[0] == 1234:
            return order
    return None


def understand(path: str, head: bytes) -> bool:
    """True if fabio reads this file for diffscreen (see :func:`fabio_kind`).

    Parameters
    ----------
    path : str
    head : bytes
    """
    return fabio_kind(path, head) is not None


def open_path(path: str) -> "FabioSource":
    """Open a single-frame format file.

    Parameters
    ----------
    path : str

    Returns
    -------
    FabioSource

    Raises
    ------
    UnknownFormatError
        If the file is not one of the kinds in :func:`fabio_kind`.
    """
    return FabioSource(path)


def _fabio_class(kind: str, head: bytes):
    if kind == "cbf":
        from fabio.cbfimage import CbfImage as cls
    elif kind == "smv" and b"DTREK" in head:
        from fabio.dtrekimage import DtrekImage as cls
    elif kind == "smv":
        from fabio.adscimage import AdscImage as cls
    elif kind == "marccd":
        from fabio.marccdimage import MarccdImage as cls
    elif kind == "tiff":
        from fabio.tifimage import TifImage as cls
    elif kind == "edf":
        from fabio.edfimage import EdfImage as cls
    else:
        from fabio.mar345image import Mar345Image as cls
    return cls


class FabioSource(BaseSource):
    """Frames of a single-frame detector file (and multi-frame EDF/TIFF), read by fabio.

    Parameters
    ----------
    path : str
        The file, possibly ``.gz`` or ``.bz2`` compressed.

    Attributes
    ----------
    kind : str
        One of :func:`fabio_kind`'s names.

    Notes
    -----
    The file is decoded on the first ``read`` or ``shape`` (fabio reads
    header and pixels together); ``len`` of a single-frame kind needs no
    decoding.  ``meta.extra`` holds ``format`` (the kind), the raw header
    values used for the geometry, and ``saturated_value`` where the header
    gives it.

    Raises
    ------
    FrameReadError
        If fabio cannot decode the file (truncated, damaged).
    """

    def __init__(self, path):
        from diffscreen.errors import UnknownFormatError

        self.path = os.fspath(path)
        self._head, _ = read_head(self.path)
        self.kind = fabio_kind(self.path, self._head)
        if self.kind is None:
            raise UnknownFormatError("not a miniCBF, SMV/ADSC, MarCCD, TIFF, EDF or mar345 file", path=self.path)
        self._img = None

    def _image(self):
        if self._img is None:
            cls = _fabio_class(self.kind, self._head)
            try:
                # fabio 2026.6 prints a debug line to stdout when it opens a
                # compressed MarCCD/TIFF; keep our stdout (CSV, summaries) clean.
                with contextlib.redirect_stdout(io.StringIO()):
                    self._img = cls().read(self.path)
            except Exception as exc:  # fabio raises many types (OSError, EOFError, AssertionError, ValueError)
                reason = " ".join(str(exc).split())[:300]
                raise FrameReadError(f"cannot decode as {self.kind} ({type(exc).__name__}: {reason})",
                                     path=self.path, frame=0) from exc
            if self._img.data is None or self._img.data.ndim != 2:
                raise FrameReadError(f"decoded {self.kind} holds no 2-D image", path=self.path, frame=0)
        return self._img

    def close(self) -> None:
        """Drop the decoded image."""
        self._img = None

    def __len__(self) -> int:
        if self.kind in SINGLE_FRAME_KINDS:
            return 1
        return int(getattr(self._image(), "nframes", 1) or 1)

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(int(s) for s in self._image().data.shape)

    def _read(self, index: int) -> Frame:
        img = self._image()
        if index:
            try:
                img = img.getframe(index)
            except Exception as exc:
                raise FrameReadError(f"cannot decode frame ({type(exc).__name__}: {exc})",
                                     path=self.path, frame=index) from exc
        raw = np.asarray(img.data)
        meta = self._meta(img.header, index)
        mask = self._mask(raw, img.header, meta.extra.get("saturated_value"))
        return Frame(data=raw.astype(np.float32), mask=mask, meta=meta)

    # -- masks ---------------------------------------------------------------------

    def _mask(self, raw: np.ndarray, header: dict, saturated=None) -> np.ndarray:
        # negatives (Pilatus -1 gaps, -2 bad) of signed CBF/TIFF/EDF, >= saturated, dtype all-ones
        signed_markers = self.kind in ("cbf", "tiff", "edf") and raw.dtype.kind == "i"
        bad = invalid_mask(raw, saturated, negative=signed_markers)
        if self.kind == "smv":
            bad |= raw == 0
        elif self.kind in ("marccd", "mar345"):
            bad |= (raw == 0) & ~inscribed_circle(raw.shape)
        elif self.kind == "edf":
            dummy = _number(header.get("Dummy"))
            if dummy not in (None, 0.0):
                bad |= raw == dummy
        return bad

    # -- metadata ------------------------------------------------------------------

    def _meta(self, header: dict, index: int) -> FrameMeta:
        meta = FrameMeta(source=self.path, index=index, extra={"format": self.kind})
        if self.kind == "cbf":
            fill_from_pilatus_header(meta, header.get("_array_data.header_contents", ""))
        elif self.kind == "smv":
            _fill_from_smv(meta, header)
        elif self.kind == "marccd":
            _fill_from_marccd(meta, self._head)
        elif self.kind == "edf":
            _fill_from_edf(meta, header)
        elif self.kind == "mar345":
            _fill_from_mar345(meta, header)
        return meta


def inscribed_circle(shape: tuple[int, int]) -> np.ndarray:
    """Pixels inside the circle inscribed in a frame (a round detector's active area).

    Parameters
    ----------
    shape : (int, int)
        ``(H, W)``.

    Returns
    -------
    (H, W) bool ndarray
        True inside (distance from the frame centre <= min(H, W) / 2).
    """
    H, W = shape
    y, x = np.ogrid[:H, :W]
    return (y - (H - 1) / 2) ** 2 + (x - (W - 1) / 2) ** 2 <= (min(H, W) / 2) ** 2


def _number(v) -> float | None:
    if v is None:
        return None
    m = re.search(_NUM, str(v))
    return float(m.group(1)) if m else None


def _positive(v) -> float | None:
    return v if v is not None and np.isfinite(v) and v > 0 else None


# --------------------------------------------------------------------------- Pilatus


def parse_pilatus_header(text: str) -> dict:
    """Geometry from a Pilatus/Eiger miniCBF text header (``_array_data.header_contents``).

    Parameters
    ----------
    text : str
        Lines such as ``# Pixel_size 172e-6 m x 172e-6 m``.

    Returns
    -------
    dict
        Keys present only where the header has them: ``detector`` (model,
        e.g. ``"PILATUS3 6M"``), ``detector_line`` (the whole line),
        ``pixel_size_mm``, ``distance_mm``, ``wavelength_A``, ``beam_xy_px``
        ``(x, y)`` and ``count_cutoff``.

    Notes
    -----
    Source: DECTRIS, "PILATUS CBF header specification" (SLS/PILATUS_1.2
    convention); distances and pixel sizes are given in m, ``Beam_xy`` in px.
    """
    text = text or ""
    out = {}
    m = re.search(r"#\s*Detector:\s*([^\r\n]+)", text)
    if m:
        out["detector_line"] = m.group(1).strip()
        out["detector"] = out["detector_line"].split(",")[0].strip()
    m = re.search(rf"#\s*Pixel_size\s+{_NUM}\s*m\s*x\s*{_NUM}\s*m", text)
    if m:
        out["pixel_size_mm"] = float(m.group(1)) * 1e3
    m = re.search(rf"#\s*Detector_distance\s+{_NUM}\s*m", text)
    if m:
        out["distance_mm"] = float(m.group(1)) * 1e3
    m = re.search(rf"#\s*Wavelength\s+{_NUM}\s*A", text)
    if m:
        out["wavelength_A"] = float(m.group(1))
    m = re.search(rf"#\s*Beam_xy\s*\(\s*{_NUM}\s*,\s*{_NUM}\s*\)\s*pixels", text)
    if m:
        out["beam_xy_px"] = (float(m.group(1)), float(m.group(2)))
    m = re.search(rf"#\s*Count_cutoff\s+{_NUM}", text)
    if m:
        out["count_cutoff"] = float(m.group(1))
    return out


def fill_from_pilatus_header(meta: FrameMeta, text: str) -> FrameMeta:
    """Set the ``meta`` fields still None from a Pilatus text header.

    Parameters
    ----------
    meta : FrameMeta
        Modified in place.
    text : str
        ``_array_data.header_contents``.

    Returns
    -------
    FrameMeta
        ``meta``.
    """
    h = parse_pilatus_header(text)
    if meta.detector is None:
        meta.detector = h.get("detector")
    if meta.pixel_size_mm is None:
        meta.pixel_size_mm = _positive(h.get("pixel_size_mm"))
    if meta.distance_mm is None:
        meta.distance_mm = _positive(h.get("distance_mm"))
    if meta.wavelength_A is None:
        meta.wavelength_A = _positive(h.get("wavelength_A"))
    if meta.beam_center_px is None and "beam_xy_px" in h:
        meta.beam_center_px = h["beam_xy_px"]
    if "count_cutoff" in h:
        meta.extra.setdefault("saturated_value", h["count_cutoff"])
    if "detector_line" in h:
        meta.extra.setdefault("detector_line", h["detector_line"])
    return meta


# --------------------------------------------------------------------------- ADSC / SMV


def _fill_from_smv(meta: FrameMeta, header: dict) -> None:
    px = _positive(_number(header.get("PIXEL_SIZE")))
    bx, by = _number(header.get("BEAM_CENTER_X")), _number(header.get("BEAM_CENTER_Y"))
    sn = header.get("DETECTOR_SN")
    meta.detector = header.get("DETECTOR_TYPE") or ("ADSC" + (f" S/N {sn}" if sn else ""))
    meta.pixel_size_mm = px
    meta.distance_mm = _positive(_number(header.get("DISTANCE")))
    meta.wavelength_A = _positive(_number(header.get("WAVELENGTH")))
    if px is not None and bx is not None and by is not None:
        meta.beam_center_px = (bx / px, by / px)  # X along the fast scan: see the module notes
        meta.extra["beam_center_mm"] = (bx, by)
    sat = _number(header.get("CCD_IMAGE_SATURATION") or header.get("SATURATED_VALUE"))
    if sat is not None:
        meta.extra["saturated_value"] = sat
    if header.get("IMAGE_PEDESTAL") is not None:
        meta.extra["pedestal"] = _number(header["IMAGE_PEDESTAL"])


# --------------------------------------------------------------------------- MarCCD


def marccd_header(head: bytes) -> dict:
    """The MarCCD frame header (bytes 1024-4095) decoded with fabio's layout.

    Parameters
    ----------
    head : bytes
        At least the first 4096 (decompressed) bytes of the file.

    Returns
    -------
    dict
        fabio's field names (``pixelsize_x`` in nm, ``xtal_to_detector`` in
        µm, ``beam_x``/``beam_y`` in px × 1000, ``source_wavelength`` in fm,
        ...); empty if the header is missing.
    """
    from fabio.marccdimage import HEADER_FORMAT, HEADER_NAMES, interpret_header

    order = _marccd_byte_order(head)
    block = head[_MARCCD_HEADER_OFFSET : _MARCCD_HEADER_OFFSET + _MARCCD_HEADER_SIZE]
    fmt = HEADER_FORMAT if order == "<" else ">" + HEADER_FORMAT
    if order is None or len(block) != struct.calcsize(fmt):
        return {}
    return interpret_header(block, fmt, HEADER_NAMES)


def _fill_from_marccd(meta: FrameMeta, head: bytes) -> None:
    h = marccd_header(head)
    meta.detector = "MarCCD"
    if not h:
        return
    def first(key):  # fabio lists repeated fields
        v = h.get(key)
        return v[0] if isinstance(v, list) else v

    px = _positive((first("pixelsize_x") or 0) / 1e6)  # nm -> mm
    meta.pixel_size_mm = px
    meta.distance_mm = _positive((first("xtal_to_detector") or 0) / 1e3)  # 1000 * mm -> mm
    meta.wavelength_A = _positive((first("source_wavelength") or 0) / 1e5)  # fm -> Å
    bx, by = (first("beam_x") or 0) / 1e3, (first("beam_y") or 0) / 1e3  # 1000 * px -> px
    if bx > 0 and by > 0:
        meta.beam_center_px = (bx, by)
    if first("saturated_value"):
        meta.extra["saturated_value"] = float(first("saturated_value"))
    meta.extra["marccd_detector_type"] = first("detector_type")


# --------------------------------------------------------------------------- EDF, mar345


def _fill_from_edf(meta: FrameMeta, header: dict) -> None:
    px = _positive(_number(header.get("PSize_1")))
    meta.pixel_size_mm = None if px is None else px * 1e3  # m -> mm
    d = _positive(_number(header.get("SampleDistance")))
    meta.distance_mm = None if d is None else d * 1e3
    w = _positive(_number(header.get("WaveLength")))
    meta.wavelength_A = None if w is None else w * 1e10  # m -> Å
    cx, cy = _number(header.get("Center_1")), _number(header.get("Center_2"))
    if cx is not None and cy is not None:
        meta.beam_center_px = (cx, cy)
    meta.detector = header.get("DetectorName") or header.get("Detector") or None


def _fill_from_mar345(meta: FrameMeta, header: dict) -> None:
    meta.detector = "mar345"
    meta.pixel_size_mm = _positive(_number(header.get("PixelLength")))
    meta.distance_mm = _positive(_number(header.get("Distance") or header.get("DISTANCE")))
    meta.wavelength_A = _positive(_number(header.get("Wavelength") or header.get("WAVELENGTH")))
    m = re.search(rf"X\s*{_NUM}\s*Y\s*{_NUM}", str(header.get("CENTER", "")))
    if m:
        meta.beam_center_px = (float(m.group(1)), float(m.group(2)))
