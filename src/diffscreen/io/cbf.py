"""imgCIF/CBF frames through pycbf: x-CBF_PACKED data and multi-panel detectors.

fabio decodes the byte-offset miniCBF that Pilatus and Eiger detectors write
(:mod:`.single`), but not the x-CBF_PACKED compression that cctbx.xfel writes
for LCLS detectors (Rayonix MX340-XFEL, CSPAD), nor files holding several
arrays or array sections (panels).  Those are read here with CBFlib's
``pycbf``, which also evaluates the file's axis hierarchy (imgCIF
``_axis``, ``_diffrn_scan_frame_axis``) into each panel's origin and
fast/slow directions.

Assembly
--------
A multi-panel frame (the 2.3-Mpixel CSPAD: 4 quadrants × 8 sensors × 2
ASICs, 64 panels of 185 × 194 pixels, stored as 32 arrays of 185 × 388) is
assembled onto the detector plane at the panel pixel size: image columns run
along lab +x and rows along lab −y (the imgCIF frame, in which a Pilatus or
Rayonix readout comes out unchanged).  A panel whose fast and slow axes lie
within :data:`SNAP_TOLERANCE_DEG` of the image axes is placed whole, rotated
by a multiple of 90° and centred on its true centre to the nearest pixel, so
every pixel keeps its value exactly once (CSPAD metrology tilts ASICs by
< 1°: at most ~1.7 px at an ASIC corner).  Other panels are projected pixel by
pixel to the nearest image pixel.  Pixels no panel covers are masked.  A file
with several arrays but no geometry has its panels tiled in a grid, with
:data:`TILE_GAP_PX` masked pixels between them.

Limits (issue 18): the file must hold a binary section within its first
16 MiB; every array's stated dimensions, the pixels of all arrays together
and the assembled frame are checked against
:func:`~diffscreen.io.limits.max_frame_pixels` before any pixel is decoded
(a hostile geometry cannot make the assembled frame huge), and a compressed
file is decompressed as a stream, at most 8 bytes per pixel of the limit
plus 16 MiB of text.

Conventions: pycbf's pixel (0, 0) coordinate is taken as the centre of the
first pixel (imgCIF ``_array_structure_list_axis.displacement``), so beam
centres here are 0-based with pixel centres at integers.  Bad pixels: values
at or below the array's ``_array_intensities.undefined_value`` (dxtbx's
trusted range, as in ``FormatCBFMultiTileHierarchy``), the CSPAD sentinel
:data:`CSPAD_SENTINEL`, and what the detector flags as invalid (issue 13: a
value the detector flags as invalid or overloaded must not decide a frame):
values at or above ``_array_intensities.overload`` (or the Pilatus
``# Count_cutoff`` of a text header) and the all-ones value of the stored
integer dtype (:func:`~diffscreen.io.base.invalid_mask`).
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import sys
from dataclasses import dataclass, field

import numpy as np

from diffscreen.errors import FrameReadError
from diffscreen.io.base import BaseSource, invalid_mask, open_decompressed, read_decompressed
from diffscreen.io.frame import Frame, FrameMeta
from diffscreen.io.limits import check_frame_size, max_frame_pixels, max_stream_bytes

__all__ = [
    "ImgCIFSource",
    "PanelGeometry",
    "AssemblyPlan",
    "plan_assembly",
    "plan_tiling",
    "assemble",
    "read_panels",
    "array_dims",
    "cbf_header",
    "is_cbf",
    "needs_pycbf",
    "mime_fields",
    "understand",
    "open_path",
    "CSPAD_SENTINEL",
]

READER_NAME = "imgcif"
#: Value cctbx.xfel writes for masked CSPAD pixels (MANIFEST.tsv).
CSPAD_SENTINEL = -5136
#: Largest panel rotation (degrees) from the image axes that is placed whole.
SNAP_TOLERANCE_DEG = 2.0
#: Masked gap between panels tiled without geometry, in pixels.
TILE_GAP_PX = 4
_BINARY_MARK = b"--CIF-BINARY-FORMAT-SECTION--"
_HEADER_LIMIT = 16 * 2**20


# --------------------------------------------------------------------------- detection


def is_cbf(head: bytes) -> bool:
    """True if ``head`` starts like a CBF file (``###CBF: VERSION``).

    Parameters
    ----------
    head : bytes
        The file's first (decompressed) bytes.
    """
    return head.lstrip()[:6] == b"###CBF"


def cbf_header(path) -> bytes:
    """The text of a CBF file up to the end of its first binary section's MIME header.

    Parameters
    ----------
    path : str or Path
        A CBF file, possibly gzip/bzip2 compressed.

    Returns
    -------
    bytes

    Raises
    ------
    FrameReadError
        If the file cannot be read.
    """
    st = os.stat(path)
    return _cbf_header_cached(os.fspath(path), st.st_mtime_ns, st.st_size)


@functools.lru_cache(maxsize=16)
def _cbf_header_cached(path: str, _mtime: int, _size: int) -> bytes:
    fh, kind = open_decompressed(path)
    buf = bytearray()
    i = -1
    try:
        with fh:
            while len(buf) < _HEADER_LIMIT:
                chunk = fh.read(1 << 16)
                if not chunk:
                    break
                old = len(buf)
                buf += chunk
                if i < 0:  # search only what is new (a quadratic scan would cost seconds on 16 MiB)
                    i = buf.find(_BINARY_MARK, max(old - len(_BINARY_MARK), 0))
                j = buf.find(b"\r\n\r\n", max(i, old - 3)) if i >= 0 else -1
                if j >= 0:
                    return bytes(buf[:j])
    except (OSError, EOFError, ValueError) as exc:
        if not buf:
            raise FrameReadError(f"cannot read the CBF header ({exc})", path=path) from exc
    return bytes(buf)


def mime_fields(mime: bytes, path=None) -> dict[str, int]:
    """The integer fields of a CBF binary section's MIME header.

    Parameters
    ----------
    mime : bytes
        The header, from ``--CIF-BINARY-FORMAT-SECTION--`` to the blank line.
    path : str, optional
        The file, for the message.

    Returns
    -------
    dict of str -> int
        ``X-Binary-Size`` (bytes of binary data), ``X-Binary-Number-of-Elements``,
        ``X-Binary-Size-Fastest-Dimension``, ``-Second-``, ``-Third-`` where present.

    Raises
    ------
    FrameReadError
        A field that is not a whole number >= 0.
    """
    out = {}
    for key, val in re.findall(rb"(X-Binary-(?:Size|Number-of-Elements|Size-\w+-Dimension))\s*:\s*(\S*)", mime):
        try:
            n = int(val)
        except ValueError:
            n = -1
        if n < 0:
            raise FrameReadError(f"the CBF header's {key.decode()} = {val.decode('latin-1')!r} is not a whole "
                                 "number >= 0", path=path, frame=0)
        out[key.decode()] = n
    return out


def needs_pycbf(header: bytes) -> bool:
    """True if a CBF file needs CBFlib rather than fabio.

    Parameters
    ----------
    header : bytes
        From :func:`cbf_header`.

    Returns
    -------
    bool
        True for a first binary section not in x-CBF_BYTE_OFFSET (or
        uncompressed), or for several arrays (``loop_`` over ``_array_data``)
        or array sections (panels).
    """
    m = re.search(rb'conversions\s*=\s*"?([A-Za-z0-9_\-]+)', header)
    conversion = m.group(1).lower() if m else b""
    if conversion not in (b"x-cbf_byte_offset", b"x-cbf_none"):
        return True
    if b"_array_structure_list_section." in header:
        return True
    return re.search(rb"loop_\s+_array_data\.", header) is not None


def understand(path: str, head: bytes) -> bool:
    """True for CBF files that :func:`needs_pycbf` (see :mod:`.single` for the rest).

    Parameters
    ----------
    path : str
    head : bytes
    """
    if not is_cbf(head):
        return False
    try:
        return needs_pycbf(cbf_header(path))
    except (OSError, FrameReadError):
        return False


def open_path(path: str) -> "ImgCIFSource":
    """Open a CBF file through pycbf.

    Parameters
    ----------
    path : str

    Returns
    -------
    ImgCIFSource
    """
    return ImgCIFSource(path)


# --------------------------------------------------------------------------- pycbf access


def _cbf_error(exc: Exception, what: str, path: str) -> FrameReadError:
    reason = " ".join(str(exc).split()).replace("CBFlib Error(s): ", "")
    return FrameReadError(f"CBFlib cannot {what} ({reason}): damaged or truncated CBF", path=path, frame=0)


@contextlib.contextmanager
def _c_stderr_silenced():
    """Send C-level stderr (file descriptor 2) to /dev/null for the block.

    CBFlib prints its parse messages there; the :class:`FrameReadError` we
    raise says the same in one line.
    """
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except OSError:  # no usable descriptor 2: nothing to silence
        yield
        return
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _check_first_section(path: str) -> None:
    """Refuse a CBF without a binary section in its first 16 MiB, or whose first array is over the limit."""
    header = cbf_header(path)
    i = header.find(_BINARY_MARK)
    if i < 0:
        raise FrameReadError(f"no binary section (--CIF-BINARY-FORMAT-SECTION--) in the first "
                             f"{min(len(header), _HEADER_LIMIT):,} bytes: damaged, truncated or not an image",
                             path=path, frame=0)
    m = mime_fields(header[i:], path)
    dims = [m[f"X-Binary-Size-{k}-Dimension"] for k in ("Third", "Second", "Fastest")
            if f"X-Binary-Size-{k}-Dimension" in m]
    for shape in (dims, [m.get("X-Binary-Number-of-Elements")]):
        if shape and None not in shape:
            check_frame_size([max(d, 1) for d in shape], path, 0)


def _open_handle(path: str):
    """A pycbf handle on the file, and the buffer it reads from (kept alive with it)."""
    import pycbf

    _check_first_section(path)
    h = pycbf.cbf_handle_struct()
    fh, kind = open_decompressed(path)
    fh.close()
    try:
        if kind is None:
            with _c_stderr_silenced():
                h.read_widefile(path.encode(), pycbf.MSG_DIGEST)
            return h, None
        buf, _ = read_decompressed(path, max_stream_bytes(None, slack=_HEADER_LIMIT), frame=0,
                                   what="a frame within the --max-frame-pixels limit")
        with _c_stderr_silenced():
            h.read_buffer(buf, pycbf.MSG_DIGEST)
        return h, buf
    except FrameReadError:
        raise
    except Exception as exc:  # pycbf raises plain Exception("CBFlib Error(s): ...")
        raise _cbf_error(exc, "parse the file", path) from exc


def _table(h, category: str, skip=("data",)) -> list[dict]:
    """Rows of one CIF category as dicts of str (None for null values)."""
    try:
        h.find_category(category.encode())
    except Exception:
        return []
    names = []
    h.rewind_column()
    for c in range(h.count_columns()):
        if c:
            h.next_column()
        names.append(h.column_name().decode())
    rows = []
    for r in range(h.count_rows()):
        h.rewind_row() if r == 0 else h.next_row()
        row = {}
        for name in names:
            if name in skip:
                continue
            h.find_column(name.encode())
            null = h.get_typeofvalue() == b"null"
            row[name] = None if null else h.get_value().decode(errors="replace")
        rows.append(row)
    return rows


def _read_arrays(h, path: str) -> dict[str, np.ndarray]:
    """Every binary array of the file, as (D3, D2, D1) arrays keyed by array id."""
    encodings = {r.get("id"): (r.get("encoding_type") or "") for r in _table(h, "array_structure")}
    arrays = {}
    try:
        h.find_category(b"array_data")
        n = h.count_rows()
        for r in range(n):
            h.rewind_row() if r == 0 else h.next_row()
            h.find_column(b"array_id")
            aid = h.get_value().decode()
            h.find_column(b"data")
            if b"bnry" not in h.get_typeofvalue():
                continue
            arrays[aid] = _read_binary(h, encodings.get(aid, ""), path)
    except FrameReadError:
        raise
    except Exception as exc:
        raise _cbf_error(exc, "decode the pixel data", path) from exc
    if not arrays:
        raise FrameReadError("the CBF file holds no binary pixel array", path=path, frame=0)
    return arrays


def _read_binary(h, encoding: str, path: str = "") -> np.ndarray:
    """One binary array as (D3, D2, D1); its stated size is checked before CBFlib decodes it."""
    real = "real" in encoding.lower()
    # The plain parameter call first: on damaged data CBFlib fails and it raises cleanly, where the _wdims_fs
    # and _as_string calls would read an uninitialised pointer (pycbf's wrapper; SIGSEGV seen on a damaged
    # x-CBF_PACKED array).
    h.get_realarrayparameters() if real else h.get_integerarrayparameters()
    if real:
        p = h.get_realarrayparameters_wdims_fs()
        dtype, elements, dims = np.dtype(f"f{p[2]}"), int(p[3]), (p[7], p[6], p[5])
    else:
        p = h.get_integerarrayparameters_wdims_fs()
        dtype, elements, dims = np.dtype(f"{'i' if p[3] else 'u'}{p[2]}"), int(p[5]), (p[11], p[10], p[9])
    dims = tuple(max(int(d), 1) for d in dims)
    check_frame_size(dims, path, 0)
    if elements != int(np.prod(dims)):
        raise FrameReadError(f"a binary array states {elements:,} elements but dimensions "
                             f"{' x '.join(map(str, dims[::-1]))}", path=path, frame=0)
    raw = h.get_realarray_as_string() if real else h.get_integerarray_as_string()
    return np.frombuffer(raw, dtype=dtype).reshape(dims)


# --------------------------------------------------------------------------- geometry


@dataclass
class PanelGeometry:
    """One panel: where its pixels are in the file and on the detector.

    Attributes
    ----------
    name : str
        Array section id (or array id when the file has no sections).
    array_id : str
    region : tuple of 3 slices
        The panel's part of its (D3, D2, D1) array; it must select one
        (slow, fast) plane.
    origin : (3,) float ndarray or None
        Lab position (mm) of the centre of pixel (slow 0, fast 0).
    fast, slow : (3,) float ndarray or None
        Unit vectors of the fast-scan and slow-scan directions (lab frame).
    pixel_mm : (float, float)
        Pixel size along fast and slow, in mm (None without geometry).
    """

    name: str
    array_id: str
    region: tuple
    origin: np.ndarray | None = None
    fast: np.ndarray | None = None
    slow: np.ndarray | None = None
    pixel_mm: tuple[float, float] | None = None


def _sections(h) -> dict[str, tuple]:
    regions: dict[str, list] = {}
    for row in _table(h, "array_structure_list_section"):
        sid, idx = row.get("id"), int(row.get("index") or 0)
        reg = regions.setdefault(sid, [slice(None)] * 3)
        if 1 <= idx <= 3:
            reg[3 - idx] = slice(int(row["start"]) - 1, int(row["end"]))  # index 1 = fastest = last axis
    return {k: tuple(v) for k, v in regions.items()}


def _panel_from_detector(h, k: int, axis_sets: dict, regions: dict) -> PanelGeometry:
    d = h.construct_detector(k)
    try:
        fast_axis = d.get_detector_surface_axes(0).decode()
        origin = np.array(d.get_pixel_coordinates_fs(0, 0), float)
        fast = np.array(d.get_detector_axis_fast(), float)
        slow = np.array(d.get_detector_axis_slow(), float)
        pixel = (float(d.get_inferred_pixel_size_fs(1)), float(d.get_inferred_pixel_size_fs(2)))
    finally:
        del d
    array_id, section = axis_sets[fast_axis]
    name = section if section in regions else array_id
    region = regions.get(section, (slice(None),) * 3)
    return PanelGeometry(name, array_id, region, origin, fast / np.linalg.norm(fast),
                         slow / np.linalg.norm(slow), pixel)


def read_panels(h, arrays: dict[str, np.ndarray] | None = None) -> tuple[list[PanelGeometry], bool]:
    """The panels of an open pycbf handle, with their geometry where the file has it.

    Parameters
    ----------
    h : pycbf.cbf_handle_struct
    arrays : dict of str -> ndarray, optional
        The file's arrays; needed only to split them without geometry.

    Returns
    -------
    panels : list of PanelGeometry
    has_geometry : bool
        False when pycbf cannot build a detector for every panel; the panels
        then have no origin/axes and are one per (slow, fast) plane of each
        array.
    """
    axis_sets = {}
    for row in _table(h, "array_structure_list"):
        if row.get("axis_set_id"):
            axis_sets[row["axis_set_id"]] = (row.get("array_id"), row.get("array_section_id"))
    regions = _sections(h)
    expected = len(regions) or len({a for a, _ in axis_sets.values()})
    panels = []
    for k in range(expected):  # never ask past the last panel: CBFlib may not fail cleanly there
        try:
            panels.append(_panel_from_detector(h, k, axis_sets, regions))
        except Exception:  # no geometry for this panel (no _axis category, broken hierarchy)
            break
    if panels and len(panels) == expected and len({p.name for p in panels}) == expected:
        return panels, True
    return _planes_without_geometry(h, arrays), False


def array_dims(h) -> dict[str, tuple[int, int, int]]:
    """``(D3, D2, D1)`` (slowest to fastest) of every array, from ``_array_structure_list``.

    Parameters
    ----------
    h : pycbf.cbf_handle_struct

    Returns
    -------
    dict of str -> (int, int, int)
    """
    dims: dict[str, list[int]] = {}
    for row in _table(h, "array_structure_list"):
        idx = int(row.get("index") or 0)
        if row.get("array_id") and not row.get("array_section_id") and 1 <= idx <= 3:
            dims.setdefault(row["array_id"], [1, 1, 1])[3 - idx] = int(row["dimension"])
    return {k: tuple(v) for k, v in dims.items()}


def _planes_without_geometry(h, arrays) -> list[PanelGeometry]:
    if arrays:
        depths = {aid: a.shape[0] for aid, a in arrays.items()}
    else:
        depths = {aid: d[0] for aid, d in array_dims(h).items()}
    if not depths:
        depths = {r["array_id"]: 1 for r in _table(h, "array_data") if r.get("array_id")}
    panels = []
    for aid, depth in depths.items():
        for k in range(depth):
            region = (slice(k, k + 1), slice(None), slice(None))
            panels.append(PanelGeometry(f"{aid}[{k}]" if depth > 1 else aid, aid, region))
    return panels


def _panel_pixels(arr: np.ndarray, region: tuple) -> np.ndarray:
    block = arr[region]
    if block.ndim == 3 and block.shape[0] == 1:
        return block[0]
    if block.ndim == 3:
        raise ValueError(f"panel region {region} of an array {arr.shape} is not one plane")
    return block


@dataclass
class AssemblyPlan:
    """Where each panel's pixels go in the assembled frame.

    Attributes
    ----------
    shape : (int, int)
        ``(H, W)`` of the assembled frame.
    placements : list of dict
        Per panel: ``{"kind": "block", "row", "col", "transpose", "flip_rows",
        "flip_cols"}`` or ``{"kind": "pixels", "rows", "cols"}`` ((ns, nf) int
        arrays).
    pixel_mm : float or None
        Pixel size of the assembled frame, mm.
    beam_centre_px : (float, float) or None
        ``(x, y)`` = (column, row) where the direct beam meets the detector plane.
    distance_mm : float or None
        Perpendicular sample-to-detector-plane distance, mm.
    max_rotation_deg : float
        Largest angle between a block-placed panel's axes and the image axes.
    tiled : bool
        True when the file had no geometry and panels were tiled.
    """

    shape: tuple[int, int]
    placements: list[dict]
    pixel_mm: float | None = None
    beam_centre_px: tuple[float, float] | None = None
    distance_mm: float | None = None
    max_rotation_deg: float = 0.0
    tiled: bool = False
    extra: dict = field(default_factory=dict)


def _image_axes(panels: list[PanelGeometry]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    ref = np.cross(panels[0].fast, panels[0].slow)
    normals = [np.cross(p.fast, p.slow) for p in panels]
    n = sum(v if v @ ref >= 0 else -v for v in normals)
    n = n / np.linalg.norm(n)
    u = np.array([1.0, 0.0, 0.0]) - n[0] * n
    if np.linalg.norm(u) < 1e-6:
        u = panels[0].fast - (panels[0].fast @ n) * n
    u = u / np.linalg.norm(u)
    return u, np.cross(n, u), n


def _snap(vec_uv: np.ndarray) -> tuple[tuple[int, int], float]:
    """Nearest image direction (du, dv) of an in-plane vector, and the angle to it (deg)."""
    k = int(np.argmax(np.abs(vec_uv)))
    d = [0, 0]
    d[k] = 1 if vec_uv[k] > 0 else -1
    cos = abs(vec_uv[k]) / max(np.linalg.norm(vec_uv), 1e-12)
    return (d[0], d[1]), float(np.degrees(np.arccos(min(cos, 1.0))))


def plan_assembly(panels: list[PanelGeometry], sizes: list[tuple[int, int]], *, beam=(0.0, 0.0, -1.0),
                  snap_deg: float = SNAP_TOLERANCE_DEG) -> AssemblyPlan:
    """Plan the assembly of panels onto the detector plane.

    Parameters
    ----------
    panels : list of PanelGeometry
        With ``origin``, ``fast``, ``slow`` and ``pixel_mm`` set.
    sizes : list of (int, int)
        ``(ns, nf)`` pixel counts of each panel.
    beam : (3,) array_like
        Direction of the direct beam in the lab frame (imgCIF: −z).
    snap_deg : float
        Panels within this angle of the image axes are placed whole.

    Returns
    -------
    AssemblyPlan
        Image columns run along the in-plane projection of lab +x, rows
        along ``normal × columns`` (lab −y for a detector facing the beam).
    """
    u, v, n = _image_axes(panels)
    p = float(panels[0].pixel_mm[0])
    pieces = []
    max_rot = 0.0
    for pan, (ns, nf) in zip(panels, sizes):
        pf, ps = pan.pixel_mm
        fuv, suv = np.array([pan.fast @ u, pan.fast @ v]), np.array([pan.slow @ u, pan.slow @ v])
        (df, af), (ds, as_) = _snap(fuv), _snap(suv)
        same_scale = abs(pf - p) <= 1e-3 * p and abs(ps - p) <= 1e-3 * p
        if max(af, as_) <= snap_deg and same_scale and (df[0] == 0) != (ds[0] == 0):
            max_rot = max(max_rot, af, as_)
            pieces.append(_block_piece(pan, ns, nf, df, ds, u, v, p))
        else:
            pieces.append(_pixel_piece(pan, ns, nf, u, v, p))
    x_min = min(pc["x_min"] for pc in pieces)
    y_min = min(pc["y_min"] for pc in pieces)
    placements = [_place(pc, x_min, y_min) for pc in pieces]
    H = max(pl["row_end"] for pl in placements)
    W = max(pl["col_end"] for pl in placements)
    beam = np.asarray(beam, float)
    dist = float(np.mean([abs(pan.origin @ n) for pan in panels]))
    bc = None
    if abs(beam @ n) > 1e-9:
        hit = beam * (float(np.mean([pan.origin @ n for pan in panels])) / (beam @ n))
        bc = (float(hit @ u / p - x_min), float(hit @ v / p - y_min))
    return AssemblyPlan((int(H), int(W)), placements, p, bc, dist, max_rot)


def _block_piece(pan, ns, nf, df, ds, u, v, p) -> dict:
    transpose = df[0] == 0  # fast runs along image rows
    h, w = (nf, ns) if transpose else (ns, nf)
    centre = pan.origin + pan.fast * pan.pixel_mm[0] * (nf - 1) / 2 + pan.slow * pan.pixel_mm[1] * (ns - 1) / 2
    x0, y0 = centre @ u / p - (w - 1) / 2, centre @ v / p - (h - 1) / 2
    if transpose:
        flip_rows, flip_cols = df[1] < 0, ds[0] < 0
    else:
        flip_rows, flip_cols = ds[1] < 0, df[0] < 0
    return {"kind": "block", "x0": x0, "y0": y0, "h": h, "w": w, "x_min": x0, "y_min": y0,
            "transpose": transpose, "flip_rows": flip_rows, "flip_cols": flip_cols}


def _pixel_piece(pan, ns, nf, u, v, p) -> dict:
    s, f = np.mgrid[0:ns, 0:nf]
    pos = (pan.origin[None, None, :] + f[..., None] * pan.pixel_mm[0] * pan.fast
           + s[..., None] * pan.pixel_mm[1] * pan.slow)
    x, y = pos @ u / p, pos @ v / p
    return {"kind": "pixels", "x": x, "y": y, "x_min": float(x.min()), "y_min": float(y.min())}


def _place(pc: dict, x_min: float, y_min: float) -> dict:
    if pc["kind"] == "block":
        row, col = int(np.rint(pc["y0"] - y_min)), int(np.rint(pc["x0"] - x_min))
        return {"kind": "block", "row": row, "col": col, "row_end": row + pc["h"], "col_end": col + pc["w"],
                "transpose": pc["transpose"], "flip_rows": pc["flip_rows"], "flip_cols": pc["flip_cols"]}
    rows, cols = np.rint(pc["y"] - y_min).astype(np.int64), np.rint(pc["x"] - x_min).astype(np.int64)
    return {"kind": "pixels", "rows": rows, "cols": cols, "row_end": int(rows.max()) + 1,
            "col_end": int(cols.max()) + 1}


def plan_tiling(sizes: list[tuple[int, int]], *, gap: int = TILE_GAP_PX) -> AssemblyPlan:
    """Tile panels without geometry in a grid, row by row.

    Parameters
    ----------
    sizes : list of (int, int)
        ``(ns, nf)`` of each panel.
    gap : int
        Masked pixels between grid cells.

    Returns
    -------
    AssemblyPlan
        With no pixel size, beam centre or distance; ``tiled=True``.
    """
    if len(sizes) == 1:
        (h, w), = sizes
        return AssemblyPlan((h, w), [_tile(0, 0, h, w)], tiled=True)
    ncol = int(np.ceil(np.sqrt(len(sizes))))
    ch, cw = max(s[0] for s in sizes), max(s[1] for s in sizes)
    placements = [_tile((k // ncol) * (ch + gap), (k % ncol) * (cw + gap), h, w) for k, (h, w) in enumerate(sizes)]
    H = max(p["row_end"] for p in placements)
    W = max(p["col_end"] for p in placements)
    return AssemblyPlan((H, W), placements, tiled=True)


def _tile(row, col, h, w) -> dict:
    return {"kind": "block", "row": row, "col": col, "row_end": row + h, "col_end": col + w,
            "transpose": False, "flip_rows": False, "flip_cols": False}


def assemble(plan: AssemblyPlan, blocks: list[np.ndarray], bad: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, int]:
    """Put panel pixels into one frame.

    Parameters
    ----------
    plan : AssemblyPlan
    blocks : list of (ns, nf) ndarray
        Panel pixels, in plan order.
    bad : list of (ns, nf) bool ndarray
        True where a panel pixel is bad.

    Returns
    -------
    data : (H, W) float32 ndarray
        Panel values; 0 where no panel lies.
    mask : (H, W) bool ndarray
        True for bad pixels and for every pixel no panel covers.
    overlap : int
        Image pixels written more than once (0 for a sound geometry).
    """
    data = np.zeros(plan.shape, np.float32)
    mask = np.ones(plan.shape, bool)
    written = np.zeros(plan.shape, bool)
    overlap = 0
    for pl, blk, b in zip(plan.placements, blocks, bad):
        if pl["kind"] == "block":
            blk, b = _orient(blk, pl), _orient(b, pl)
            sl = (slice(pl["row"], pl["row_end"]), slice(pl["col"], pl["col_end"]))
            overlap += int(written[sl].sum())
            data[sl], mask[sl], written[sl] = blk, b, True
        else:
            r, c = pl["rows"], pl["cols"]
            overlap += int(written[r, c].sum()) + (r.size - len(np.unique(r * plan.shape[1] + c)))
            data[r, c], mask[r, c], written[r, c] = blk, b, True
    return data, mask, overlap


def _orient(a: np.ndarray, pl: dict) -> np.ndarray:
    if pl["transpose"]:
        a = a.T
    if pl["flip_rows"]:
        a = a[::-1, :]
    if pl["flip_cols"]:
        a = a[:, ::-1]
    return a


# --------------------------------------------------------------------------- the source


class ImgCIFSource(BaseSource):
    """One imgCIF/CBF frame read with pycbf, panels assembled.

    Parameters
    ----------
    path : str
        A ``.cbf`` file (gzip/bzip2 compressed files are decompressed in memory).

    Notes
    -----
    ``len(src)`` is 1.  ``src.shape`` evaluates the geometry from the header
    (no pixel is decoded).  ``meta`` comes from the imgCIF header:
    ``detector`` from ``_diffrn_detector.type``, ``wavelength_A`` from
    ``_diffrn_radiation_wavelength``, ``pixel_size_mm``, ``distance_mm`` and
    ``beam_centre_px`` from the assembled geometry; a Pilatus text header
    (``_array_data.header_contents``) fills what the geometry lacks.
    ``meta.extra`` holds ``n_panels``, ``assembly`` ("geometry" or "tiled"),
    ``max_panel_rotation_deg``, ``overlap_px``, ``saturated_value`` and
    ``undefined_value``.

    Raises
    ------
    FrameReadError
        If CBFlib cannot parse or decode the file.
    """

    def __init__(self, path):
        self.path = os.fspath(path)
        self._h = None
        self._buf = None
        self._plan = None
        self._panels = None
        self._header = None
        try:
            self._handle()
            self._geometry()
        except BaseException:
            self.close()
            raise

    def _handle(self):
        if self._h is None:
            self._h, self._buf = _open_handle(self.path)
        return self._h

    def close(self) -> None:
        """Release the pycbf handle."""
        self._h, self._buf = None, None

    def __len__(self) -> int:
        return 1

    @property
    def shape(self) -> tuple[int, int]:
        return self._plan.shape

    def _geometry(self) -> None:
        h = self._handle()
        try:
            panels, has_geometry = read_panels(h)
            self._header = self._header_info(h)
            sizes = self._sizes(h, panels)
        except FrameReadError:
            raise
        except Exception as exc:
            raise _cbf_error(exc, "read the detector description", self.path) from exc
        self._panels = panels
        if has_geometry:
            bad = next((p.name for p in panels if not _sound_panel(p)), None)
            if bad is not None:
                raise FrameReadError(f"panel {bad} has a non-finite or degenerate origin, axis or pixel size in the "
                                     "file's geometry (_axis)", path=self.path, frame=0)
            self._plan = plan_assembly(panels, sizes, beam=self._header["beam"])
        else:
            self._plan = plan_tiling(sizes)
        check_frame_size(self._plan.shape, self.path, 0)  # a hostile geometry must not make it huge

    def _sizes(self, h, panels) -> list[tuple[int, int]]:
        dims = array_dims(h)
        for d in dims.values():
            check_frame_size(d, self.path, 0)
        total = sum(int(np.prod(d)) for d in dims.values())
        if total > max_frame_pixels():
            raise FrameReadError(f"the file's {len(dims)} arrays hold {total:,} pixels, more than the limit of "
                                 f"{max_frame_pixels():,} pixels (--max-frame-pixels)", path=self.path, frame=0)
        sizes = []
        for pan in panels:
            if pan.array_id not in dims:
                raise FrameReadError(f"no dimensions for array {pan.array_id} in _array_structure_list",
                                     path=self.path)
            shape = tuple(len(range(*sl.indices(n))) for sl, n in zip(pan.region, dims[pan.array_id]))
            sizes.append(tuple(shape[-2:]))
        return sizes

    def _header_info(self, h) -> dict:
        info = {"beam": (0.0, 0.0, -1.0)}
        for row in _table(h, "axis"):
            if (row.get("equipment") or "").lower() == "source":
                vec = np.array([float(row.get(f"vector[{i}]") or 0) for i in (1, 2, 3)])
                if np.linalg.norm(vec) > 0:
                    info["beam"] = tuple(-vec / np.linalg.norm(vec))
        det = _table(h, "diffrn_detector")
        info["detector"] = (det[0].get("type") or det[0].get("id")) if det else None
        try:
            info["wavelength"] = float(h.get_wavelength())
        except Exception:
            info["wavelength"] = None
        inten = _table(h, "array_intensities")
        info["undefined"] = {r.get("array_id"): _float(r.get("undefined_value")) for r in inten}
        info["overload"] = next((_float(r.get("overload")) for r in inten if r.get("overload")), None)
        text = next((r.get("header_contents") for r in _table(h, "array_data") if r.get("header_contents")), None)
        info["text_header"] = text
        info["saturated"] = info["overload"]
        if info["saturated"] is None and text:
            from diffscreen.io.pilatus import parse_pilatus_header

            info["saturated"] = parse_pilatus_header(text).get("count_cutoff")
        return info

    def _read(self, index: int) -> Frame:
        h = self._handle()
        try:
            arrays = _read_arrays(h, self.path)
            blocks = [_panel_pixels(arrays[p.array_id], p.region) for p in self._panels]
        except KeyError as exc:
            raise FrameReadError(f"panel array {exc} is missing from the file", path=self.path, frame=0) from exc
        except ValueError as exc:
            raise FrameReadError(str(exc), path=self.path, frame=0) from exc
        finally:
            self.close()  # one frame per file: free CBFlib's memory now
        bad = [self._bad(b, p.array_id) for b, p in zip(blocks, self._panels)]
        data, mask, overlap = assemble(self._plan, blocks, bad)
        return Frame(data=data, mask=mask, meta=self._meta(len(blocks), overlap))

    def _bad(self, block: np.ndarray, array_id: str) -> np.ndarray:
        bad = invalid_mask(block, self._header["saturated"])
        bad |= block == CSPAD_SENTINEL
        low = self._header["undefined"].get(array_id)
        if low is not None:
            bad |= block <= low
        return bad

    def _meta(self, n_panels: int, overlap: int) -> FrameMeta:
        hd, plan = self._header, self._plan
        meta = FrameMeta(source=self.path, index=0, detector=hd["detector"], pixel_size_mm=plan.pixel_mm,
                         beam_centre_px=plan.beam_centre_px, distance_mm=plan.distance_mm,
                         wavelength_A=hd["wavelength"])
        undefined = sorted({v for v in hd["undefined"].values() if v is not None})
        meta.extra = {"format": "imgcif", "n_panels": n_panels, "assembly": "tiled" if plan.tiled else "geometry",
                      "max_panel_rotation_deg": plan.max_rotation_deg, "overlap_px": overlap}
        if hd["overload"] is not None:
            meta.extra["saturated_value"] = hd["overload"]
        if undefined:
            meta.extra["undefined_value"] = undefined[0] if len(undefined) == 1 else undefined
        if hd["text_header"]:
            from diffscreen.io.pilatus import fill_from_pilatus_header

            fill_from_pilatus_header(meta, hd["text_header"])
        return meta


def _sound_panel(p: PanelGeometry) -> bool:
    """Finite origin and unit axes, positive finite pixel sizes."""
    vectors = np.concatenate([p.origin, p.fast, p.slow])
    return bool(np.isfinite(vectors).all() and p.pixel_mm is not None and all(np.isfinite(p.pixel_mm))
                and min(p.pixel_mm) > 0)


def _float(v) -> float | None:
    try:
        return float(v)
    except (TypeError, ValueError):
        return None
