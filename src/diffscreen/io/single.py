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

Files may be gzip or bzip2 compressed (``.gz``/``.bz2``, recognised from
their magic bytes).  x-CBF_PACKED and multi-panel CBF go to :mod:`.cbf` instead.

Before fabio decodes anything, the frame size the header states (SMV
``SIZE1``/``SIZE2``, miniCBF ``X-Binary-Size-*-Dimension``, EDF ``Dim_n``,
the TIFF directory's ``ImageWidth``/``ImageLength``, the mar345 size word)
is checked against :func:`~diffscreen.io.limits.max_frame_pixels`, and the
bytes it implies against the file: a file shorter than its header says is
refused as truncated, never decoded into garbage.  A compressed file is
decompressed here, as a stream, into memory for fabio, and never past the
bytes its header implies (plus 1 MiB; multi-frame EDF/TIFF: at most
:func:`~diffscreen.io.limits.max_frame_pixels` pixels in all), so a
decompression bomb stops at its header.

Masks (True = bad): Pilatus/Eiger negative values (−1 module gaps, −2 bad
pixels; any signed-integer CBF or TIFF); ADSC pixels reading exactly 0 (the
CCD pedestal keeps active pixels above 0, so a 0 is the gap between the 2×2
modules or a dead pixel); MarCCD and mar345 zeros outside the inscribed circle
(the round active area of a MarCCD 165 or an image plate); the EDF ``Dummy``
value.  Besides these, every kind masks what the detector itself flags as
invalid (issue 13: a value the detector flags as invalid or overloaded must
not decide a frame; :func:`~diffscreen.io.base.invalid_mask`): pixels at
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
import math
import os
import re
import struct
from dataclasses import dataclass

import numpy as np

from diffscreen.errors import FrameReadError
from diffscreen.io.base import (
    HEAD_BYTES,
    BaseSource,
    check_length,
    invalid_mask,
    open_decompressed,
    read_decompressed,
    read_head,
    reader_errors,
)
from diffscreen.io.frame import Frame, FrameMeta
from diffscreen.io.limits import check_frame_size, max_stream_bytes
from diffscreen.io.pilatus import NUMBER, fill_from_pilatus_header, header_number

__all__ = [
    "FabioSource",
    "fabio_kind",
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
#: Longest text header (SMV, EDF) or text before a CBF binary section read, bytes.
_TEXT_HEADER_LIMIT = 1 << 20
_CBF_TEXT_LIMIT = 16 << 20
#: The 4 bytes that open a CBF binary section's data (after the MIME header's blank line).
_CBF_STARTER = b"\x0c\x1a\x04\xd5"
#: Bytes a single-frame stream may hold beyond what its header implies.
_STREAM_SLACK = 1 << 20


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


# --------------------------------------------------------------------------- stated sizes


@dataclass(frozen=True)
class _Stated:
    """What a header says about the file (internal).

    Attributes
    ----------
    shape : tuple of int
        Pixel dimensions of the first frame (already checked against the limit).
    need : int or None
        Bytes the file must hold: header and first frame's pixel data.
    cap : int
        Most bytes a decompressed stream of this file may hold.
    what : str
        For messages (``"its SMV header's 2304 x 2304 frame"``).
    """

    shape: tuple
    need: int | None
    cap: int
    what: str


class _View:
    """Random access to a file's first (decompressed) bytes, for header parsing (internal).

    ``get`` and ``find`` return None when the bytes asked for are not there
    yet (a stream still decompressing); once ``complete``, asking past the
    end is a truncated file.
    """

    def __init__(self, read_at, size: int, complete: bool, path: str):
        self.read_at, self.size, self.complete, self.path = read_at, int(size), complete, path

    @classmethod
    def of_bytes(cls, data: bytes, complete: bool, path: str) -> "_View":
        return cls(lambda o, n: data[o : o + n], len(data), complete, path)

    def get(self, offset: int, n: int, what: str) -> bytes | None:
        if offset + n <= self.size:
            return self.read_at(offset, n)
        if self.complete:
            raise FrameReadError(f"truncated: {what} at byte {offset:,} lies past the end of the file "
                                 f"({self.size:,} bytes)", path=self.path, frame=0)
        return None

    def find(self, token: bytes, start: int, limit: int, what: str) -> int | None:
        end = min(self.size, start + limit)
        pos, step = start, 1 << 16
        while pos < end:  # block by block: a header is found without reading the whole file
            block = self.read_at(pos, min(step, end - pos) + len(token) - 1)
            i = block.find(token)
            if 0 <= i and pos + i + len(token) <= end:
                return pos + i
            pos += step
        if self.complete or self.size >= start + limit:
            where = "the file" if self.complete and self.size < start + limit else f"the first {limit:,} bytes"
            raise FrameReadError(f"{what} not found in {where}", path=self.path, frame=0)
        return None


def _stated(kind: str, v: _View) -> _Stated | None:
    """The header's frame size for a file of ``kind``, checked against the limit; None = read more.

    Raises
    ------
    FrameReadError
        A malformed header, a frame over :func:`~diffscreen.io.limits.max_frame_pixels`,
        or a header that lies past the end of the file.
    """
    if kind == "smv":
        return _smv_stated(v)
    if kind == "cbf":
        return _minicbf_stated(v)
    if kind == "edf":
        return _edf_stated(v)
    if kind in ("tiff", "marccd"):
        return _tiff_stated(v, multi=kind == "tiff")
    if kind == "mar345":
        return _mar345_stated(v)
    return None  # pragma: no cover - every kind is listed


def _keyvals(text: bytes) -> dict[str, str]:
    """``KEY=value;`` pairs of an SMV header (the ``;`` may be missing at the end of a line)."""
    return {k.decode("latin-1"): val.decode("latin-1").strip()
            for k, val in re.findall(rb"([A-Za-z_][\w.]*)[ \t]*=[ \t]*([^;\n]*)[;\n]", text)}


def _whole(h: dict, key: str, v: _View, fmt: str, default=None) -> int | None:
    if key not in h:
        return default
    try:
        return int(h[key])
    except ValueError:
        raise FrameReadError(f"the {fmt} header's {key} = {h[key]!r} is not a whole number",
                             path=v.path, frame=0) from None


def _single(v: _View, shape, need: int | None, what: str, bytes_per_pixel: int) -> _Stated:
    check_frame_size(shape, v.path, 0)
    cap = need + _STREAM_SLACK if need is not None else max_stream_bytes(math.prod(shape),
                                                                           bytes_per_pixel=bytes_per_pixel)
    return _Stated(tuple(int(s) for s in shape), need, cap, what)


def _multi(v: _View, shape, need: int | None, what: str, bytes_per_pixel: int) -> _Stated:
    """Multi-frame kinds: the stream may hold up to the pixel limit in all."""
    check_frame_size(shape, v.path, 0)
    cap = max(max_stream_bytes(None, bytes_per_pixel=bytes_per_pixel), (need or 0) + _STREAM_SLACK)
    return _Stated(tuple(int(s) for s in shape), need, cap, what)


_SMV_TYPES = {"unsigned_char": 1, "signed_char": 1, "unsigned_short": 2, "signed_short": 2, "unsigned_int": 4,
              "signed_int": 4, "unsigned_long": 4, "signed_long": 4, "float": 4, "ieee_float": 4}


def _smv_stated(v: _View) -> _Stated | None:
    end = v.find(b"}", 0, _TEXT_HEADER_LIMIT, "the end '}' of the SMV header")
    if end is None:
        return None
    h = _keyvals(v.get(0, end, "the SMV header"))
    size1, size2 = _whole(h, "SIZE1", v, "SMV"), _whole(h, "SIZE2", v, "SMV")
    if size1 is None or size2 is None:
        raise FrameReadError("the SMV header lacks SIZE1 or SIZE2 (the frame size)", path=v.path, frame=0)
    header_bytes = _whole(h, "HEADER_BYTES", v, "SMV", 512)
    if not end < header_bytes <= _TEXT_HEADER_LIMIT:
        raise FrameReadError(f"the SMV header's HEADER_BYTES = {header_bytes} does not fit its {end + 1}-byte "
                             f"header (at most {_TEXT_HEADER_LIMIT:,})", path=v.path, frame=0)
    dtype = h.get("Data_type", h.get("TYPE", "unsigned_short")).strip().lower().replace(" ", "_")  # fabio's order
    itemsize = _SMV_TYPES.get(dtype) or (4 if "long" in dtype or ("int" in dtype and "short" not in dtype) else 2)
    need = header_bytes + size1 * size2 * itemsize
    return _single(v, (size2, size1), need, f"its SMV header's {size1} x {size2} {dtype} frame", itemsize)


_EDF_BYTES = (("byte", 1), ("char", 1), ("short", 2), ("double", 8), ("64", 8))


def _edf_header(text: bytes) -> list[tuple[str, str]]:
    """EDF ``key = value`` pairs as fabio reads them (``;``-separated), in file order."""
    pairs = []
    for piece in text.split(b";"):
        if b"=" in piece:
            key, val = piece.split(b"=", 1)
            pairs.append((key.strip(b" \t\r\n\x0b\x0c\x00").decode("latin-1"),
                          val.strip(b" \t\r\n\x0b\x0c\x00").decode("latin-1")))
    return pairs


def _edf_int(h: dict, key: str, v: _View) -> int | None:
    """An EDF header integer as fabio reads it (``int``, else ``int(float)``)."""
    if key not in h:
        return None
    try:
        return int(h[key])
    except ValueError:
        try:
            return int(float(h[key]))
        except (ValueError, OverflowError):
            raise FrameReadError(f"the EDF header's {key} = {h[key][:40]!r} is not a whole number",
                                 path=v.path, frame=0) from None


def _edf_end(v: _View) -> tuple[int, int] | None:
    """``(end of the header text, start of the data)``: the first ``}\\n`` or ``}\\r\\n`` (fabio's rule)."""
    pos = 0
    while True:
        end = v.find(b"}", pos, _TEXT_HEADER_LIMIT - pos, "the end '}' of the EDF header")
        if end is None:
            return None
        after = v.get(end + 1, 1, "the EDF header's end of line")
        if after is None:
            return None
        if after == b"\n":
            return end, end + 2
        if after == b"\r":
            after = v.get(end + 2, 1, "the EDF header's end of line")
            if after is None:
                return None
            if after == b"\n":
                return end, end + 3
        pos = end + 1


def _edf_stated(v: _View) -> _Stated | None:
    ends = _edf_end(v)
    if ends is None:
        return None
    pairs = _edf_header(v.get(0, ends[0], "the EDF header"))
    h = {}
    for key, val in pairs:
        h.setdefault(key.upper(), val)  # fabio keeps the first of a repeated key, any case
    extra = [k for k, _ in pairs if re.fullmatch(r"DIM_\d+", k.upper()) and k.upper() not in ("DIM_1", "DIM_2",
                                                                                              "DIM_3")]
    if extra:  # fabio would loop over every rank up to the number (Dim_99999999999999999999)
        raise FrameReadError(f"the EDF header names dimension {extra[0][:40]}; frames have at most Dim_1..Dim_3",
                             path=v.path, frame=0)
    dims = [_edf_int(h, f"DIM_{k}", v) for k in (3, 2, 1)]
    if dims[2] is None:
        raise FrameReadError("the EDF header lacks Dim_1 (the frame width)", path=v.path, frame=0)
    shape = tuple(d for d in dims if d is not None)
    check_frame_size(shape, v.path, 0)
    dtype = h.get("DATATYPE", "").lower()
    itemsize = next((n for word, n in _EDF_BYTES if word in dtype), 4)
    size = _edf_int(h, "SIZE", v)  # bytes of (possibly compressed) data
    if size is not None and size < 0:
        raise FrameReadError(f"the EDF header's Size = {size} is negative", path=v.path, frame=0)
    need = ends[1] + (size if size is not None else math.prod(shape) * itemsize)
    what = f"its EDF header's {' x '.join(map(str, shape[::-1]))} {h.get('DATATYPE', '')} frame".replace("  ", " ")
    return _multi(v, shape, need, what, itemsize)


def _minicbf_stated(v: _View) -> _Stated | None:
    from diffscreen.io.cbf import _BINARY_MARK, mime_fields

    i = v.find(_BINARY_MARK, 0, _CBF_TEXT_LIMIT, "a CBF binary section (--CIF-BINARY-FORMAT-SECTION--)")
    if i is None:
        return None
    j = v.find(b"\r\n\r\n", i, 1 << 16, "the end of the CBF binary section's MIME header")
    if j is None:
        return None
    starter = v.get(j + 4, 4, "the CBF binary data's start marker")
    if starter is None:
        return None
    if starter != _CBF_STARTER:  # fabio would search for it forever
        raise FrameReadError("the CBF binary section lacks its start marker (0C 1A 04 D5) after the MIME header: "
                             "damaged", path=v.path, frame=0)
    m = mime_fields(v.get(i, j - i, "the CBF MIME header"), v.path)
    fast, slow = m.get("X-Binary-Size-Fastest-Dimension"), m.get("X-Binary-Size-Second-Dimension")
    n = m.get("X-Binary-Number-of-Elements")
    shape = (slow, fast) if fast is not None and slow is not None else (n if n is not None else 1,)
    if n is not None:
        check_frame_size((n,), v.path, 0)
    check_frame_size(shape, v.path, 0)
    size = m.get("X-Binary-Size")
    pixels = max(math.prod(shape), n or 0)
    if size is not None and size < pixels:  # byte offset: every pixel takes at least one byte
        raise FrameReadError(f"the CBF header states {pixels:,} pixels in {size:,} bytes of byte-offset data "
                             "(at least one byte per pixel): damaged", path=v.path, frame=0)
    need = None if size is None else j + 8 + size  # blank line, 4-byte binary marker, then the data
    what = f"its CBF header's {' x '.join(map(str, shape[::-1]))} frame ({size or 0:,} bytes of binary data)"
    return _single(v, shape, need, what, 4)


_TIFF_TYPES = {3: ("H", 2), 4: ("I", 4), 16: ("Q", 8)}  # SHORT, LONG, LONG8


def _tiff_stated(v: _View, multi: bool) -> _Stated | None:
    head = v.get(0, 8, "the TIFF header")
    if head is None:
        return None
    order = "<" if head[:2] == b"II" else ">"
    if struct.unpack(order + "H", head[2:4])[0] != 42:
        raise FrameReadError("not a classic TIFF (version word is not 42; BigTIFF is not read)",
                             path=v.path, frame=0)
    ifd = struct.unpack(order + "I", head[4:8])[0]
    if ifd < 8 or ifd > max_stream_bytes(None):
        raise FrameReadError(f"the TIFF directory offset {ifd:,} is impossible for a frame within the "
                             "--max-frame-pixels limit", path=v.path, frame=0)
    count = v.get(ifd, 2, "the TIFF directory")
    if count is None:
        return None
    n = struct.unpack(order + "H", count)[0]
    entries = v.get(ifd + 2, 12 * n, "the TIFF directory")
    if entries is None:
        return None
    tags = {}
    for k in range(n):
        tag, typ, cnt = struct.unpack(order + "HHI", entries[12 * k : 12 * k + 8])
        tags[tag] = (typ, cnt, entries[12 * k + 8 : 12 * k + 12])
    values = {tag: _tiff_values(v, order, tags, tag) for tag in (256, 257, 258, 259, 277, 273, 279, 324, 325)}
    if any(val is None for val in values.values()):
        return None
    for tag, name in ((256, "ImageWidth"), (257, "ImageLength"), (259, "Compression"), (277, "SamplesPerPixel")):
        if len(values[tag]) > 1 or (tag in (256, 257) and not values[tag]):
            raise FrameReadError(f"the TIFF directory's {name} has {len(values[tag])} values, not one",
                                 path=v.path, frame=0)
    width, length = values[256][0], values[257][0]
    spp = (values[277] or [1])[0]
    shape = (length, width) + ((spp,) if spp != 1 else ())
    check_frame_size(shape, v.path, 0)
    itemsize = max(1, (max(values[258] or [8]) + 7) // 8)
    need = ifd + 2 + 12 * n + 4
    compression = (values[259] or [1])[0]
    offsets, counts = (values[273], values[279]) if values[273] else (values[324], values[325])
    if compression == 1:  # uncompressed: the strips (or tiles) must hold every pixel, and be in the file
        frame_bytes = math.prod(shape) * itemsize
        if len(offsets) != len(counts) or sum(counts) < frame_bytes:
            raise FrameReadError(f"the TIFF directory's strips hold {sum(counts):,} bytes in {len(counts)} "
                                 f"piece(s), less than its uncompressed {width} x {length} frame needs "
                                 f"({frame_bytes:,})", path=v.path, frame=0)
        need = max(need, max(o + c for o, c in zip(offsets, counts)))
    chain_end = _tiff_chain_end(v, order, ifd, n)
    if chain_end is None:
        return None
    need = max(need, chain_end)
    what = f"its TIFF directory's {width} x {length} frame"
    return (_multi if multi else _single)(v, shape, need, what, itemsize)


def _tiff_chain_end(v: _View, order: str, ifd: int, n: int) -> int | None:
    """End of the farthest directory in the chain of TIFF pages (None: not yet decompressed).

    Raises
    ------
    FrameReadError
        The chain loops back on itself (fabio would follow it forever) or
        points past the end of the file.
    """
    seen, pos, count, end = {ifd}, ifd, n, 0
    while True:
        link_at = pos + 2 + 12 * count
        link = v.get(link_at, 4, "the TIFF directory's next-page link")
        if link is None:
            return None
        end = max(end, link_at + 4)
        nxt = struct.unpack(order + "I", link)[0]
        if nxt == 0:
            return end
        if nxt in seen or nxt < 8:
            raise FrameReadError(f"the TIFF page chain loops back to byte {nxt:,}", path=v.path, frame=0)
        seen.add(nxt)
        head = v.get(nxt, 2, "a TIFF page directory")
        if head is None:
            return None
        pos, count = nxt, struct.unpack(order + "H", head)[0]


def _tiff_values(v: _View, order: str, tags: dict, tag: int) -> list[int] | None:
    """Integer values of a TIFF tag ([] if absent, None if not yet decompressed)."""
    if tag not in tags:
        return []
    typ, cnt, raw = tags[tag]
    if typ not in _TIFF_TYPES or cnt > (1 << 20):
        raise FrameReadError(f"the TIFF directory's tag {tag} has type {typ} and {cnt:,} values", path=v.path,
                             frame=0)
    code, size = _TIFF_TYPES[typ]
    if cnt * size <= 4:
        data = raw[: cnt * size]
    else:
        data = v.get(struct.unpack(order + "I", raw)[0], cnt * size, f"the values of TIFF tag {tag}")
        if data is None:
            return None
    return list(struct.unpack(f"{order}{cnt}{code}", data))


def _mar345_stated(v: _View) -> _Stated | None:
    head = v.get(0, 24, "the mar345 header")
    if head is None:
        return None
    order = "<" if struct.unpack("<i", head[:4])[0] == 1234 else ">"
    _, size, nhigh, _, _, npix = struct.unpack(order + "6i", head)
    if size < 1 or npix < size or nhigh < 0:
        raise FrameReadError(f"the mar345 header states a {size}-pixel side, {npix} pixels and {nhigh} "
                             "high-intensity pixels", path=v.path, frame=0)
    shape = (npix // size, size)
    check_frame_size(shape, v.path, 0)
    if nhigh > npix:
        raise FrameReadError(f"the mar345 header states {nhigh} high-intensity pixels in a {npix}-pixel frame",
                             path=v.path, frame=0)
    # packed data: no exact size, but never more than 4 bytes a pixel, and never less than one byte per 256
    # pixels (each block of at most 128 pixels has a 6-bit header); 8 bytes per overflow record
    cap = 4096 + 8 * nhigh + 4 * npix + _STREAM_SLACK
    need = 4096 + 8 * nhigh + npix // 256
    return _Stated(shape, need, cap, f"its mar345 header's {size} x {npix // size} frame")


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
        When opened: the header states a frame over
        :func:`~diffscreen.io.limits.max_frame_pixels`, a malformed size
        (negative, not a number), or more bytes than the file holds
        (truncated).  When read: a compressed stream that is damaged or
        decompresses past its budget, or anything fabio raises decoding it.
    """

    def __init__(self, path):
        from diffscreen.errors import UnknownFormatError

        self.path = os.fspath(path)
        self._head, self._compression = read_head(self.path)
        self.kind = fabio_kind(self.path, self._head)
        if self.kind is None:
            raise UnknownFormatError("not a miniCBF, SMV/ADSC, MarCCD, TIFF, EDF or mar345 file", path=self.path)
        self._img = None
        self._stated = self._check_header()

    def _check_header(self) -> _Stated | None:
        """The header's frame size, checked against the limit and the file size, before any decoding.

        A compressed file is checked here as far as its first decompressed
        bytes tell (the TIFF directory may come later: then in :meth:`_source`).
        """
        if self._compression is not None:
            head = _View.of_bytes(self._head, len(self._head) < HEAD_BYTES, self.path)
            return _stated(self.kind, head)
        fh, _ = open_decompressed(self.path)
        with fh:
            size = os.fstat(fh.fileno()).st_size

            def read_at(offset, n):
                fh.seek(offset)
                return fh.read(n)

            stated = _stated(self.kind, _View(read_at, size, True, self.path))
        if stated is not None:
            check_length(self.path, size, stated.need, stated.what, frame=0)
        return stated

    def _source(self):
        """What fabio reads: the path, or the decompressed bytes (never past the header's budget)."""
        if self._compression is None:
            return self.path
        from fabio.fabioutils import BytesIO

        def layout(data, at_eof):
            stated = _stated(self.kind, _View.of_bytes(data, at_eof, self.path))
            return None if stated is None else (stated.cap, stated.need, stated)

        data, stated = read_decompressed(self.path, max_stream_bytes(None), layout=layout,
                                         what=self._stated.what if self._stated else "", frame=0)
        self._stated = stated or self._stated
        return BytesIO(data, self.path)

    def _image(self):
        if self._img is None:
            cls = _fabio_class(self.kind, self._head)
            source = self._source()
            # fabio 2026.6 prints a debug line to stdout when it opens a
            # compressed MarCCD/TIFF; keep our stdout (CSV, summaries) clean.
            with reader_errors(self.path, 0, f"decode as {self.kind}"), contextlib.redirect_stdout(io.StringIO()):
                img = cls().read(source)
                data = img.data
            if data is None or np.ndim(data) != 2:
                raise FrameReadError(f"decoded {self.kind} holds no 2-D image", path=self.path, frame=0)
            check_frame_size(data.shape, self.path, 0)
            self._img = img
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
            with reader_errors(self.path, index, "decode the frame"), contextlib.redirect_stdout(io.StringIO()):
                img = img.getframe(index)
                raw = np.asarray(img.data)
            if raw.ndim != 2:
                raise FrameReadError(f"frame is {raw.ndim}-D, not 2-D", path=self.path, frame=index)
            check_frame_size(raw.shape, self.path, index)
        else:
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
            dummy = header_number(header.get("Dummy"))
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


def _set(v) -> float | None:
    """A header field where 0 means "not set" (MarCCD): None for 0, else the value as stated."""
    return None if v is None or v == 0 else float(v)


def _fill_from_smv(meta: FrameMeta, header: dict) -> None:
    px = header_number(header.get("PIXEL_SIZE"))
    bx, by = header_number(header.get("BEAM_CENTER_X")), header_number(header.get("BEAM_CENTER_Y"))
    sn = header.get("DETECTOR_SN")
    meta.detector = header.get("DETECTOR_TYPE") or ("ADSC" + (f" S/N {sn}" if sn else ""))
    meta.pixel_size_mm = px  # as stated: check_geometry warns about absurd values
    meta.distance_mm = header_number(header.get("DISTANCE"))
    meta.wavelength_A = header_number(header.get("WAVELENGTH"))
    if bx is not None and by is not None:
        meta.extra["beam_centre_mm"] = (bx, by)
        if px is not None and np.isfinite(px) and px != 0:
            meta.beam_centre_px = (bx / px, by / px)  # X along the fast scan: see the module notes
    sat = header_number(header.get("CCD_IMAGE_SATURATION") or header.get("SATURATED_VALUE"))
    if sat is not None:
        meta.extra["saturated_value"] = sat
    if header.get("IMAGE_PEDESTAL") is not None:
        meta.extra["pedestal"] = header_number(header["IMAGE_PEDESTAL"])


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

    # 0 = not set in a MarCCD header; other values as stated (check_geometry warns)
    px = _set((first("pixelsize_x") or 0) / 1e6)  # nm -> mm
    meta.pixel_size_mm = px
    meta.distance_mm = _set((first("xtal_to_detector") or 0) / 1e3)  # 1000 * mm -> mm
    meta.wavelength_A = _set((first("source_wavelength") or 0) / 1e5)  # fm -> Å
    bx, by = (first("beam_x") or 0) / 1e3, (first("beam_y") or 0) / 1e3  # 1000 * px -> px
    if bx != 0 or by != 0:
        meta.beam_centre_px = (bx, by)
    if first("saturated_value"):
        meta.extra["saturated_value"] = float(first("saturated_value"))
    meta.extra["marccd_detector_type"] = first("detector_type")


# --------------------------------------------------------------------------- EDF, mar345


def _fill_from_edf(meta: FrameMeta, header: dict) -> None:
    px = header_number(header.get("PSize_1"))  # values as stated: check_geometry warns about absurd ones
    meta.pixel_size_mm = None if px is None else px * 1e3  # m -> mm
    d = header_number(header.get("SampleDistance"))
    meta.distance_mm = None if d is None else d * 1e3
    w = header_number(header.get("WaveLength"))
    meta.wavelength_A = None if w is None else w * 1e10  # m -> Å
    cx, cy = header_number(header.get("Center_1")), header_number(header.get("Center_2"))
    if cx is not None and cy is not None:
        meta.beam_centre_px = (cx, cy)
    meta.detector = header.get("DetectorName") or header.get("Detector") or None


def _fill_from_mar345(meta: FrameMeta, header: dict) -> None:
    meta.detector = "mar345"
    # 0 = not set in the binary header; other values as stated (check_geometry warns)
    meta.pixel_size_mm = _set(header_number(header.get("PixelLength")))
    meta.distance_mm = _set(header_number(header.get("Distance") or header.get("DISTANCE")))
    meta.wavelength_A = _set(header_number(header.get("Wavelength") or header.get("WAVELENGTH")))
    m = re.search(rf"X\s*{NUMBER}\s*Y\s*{NUMBER}", str(header.get("CENTER", "")))
    if m:
        meta.beam_centre_px = (float(m.group(1)), float(m.group(2)))
