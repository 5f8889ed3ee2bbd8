"""Header values as detectors write them: the number pattern, and the Pilatus/Eiger miniCBF text header.

Shared by the fabio reader (:mod:`.single`) and the pycbf reader (:mod:`.cbf`), which both meet Pilatus headers.
"""

from __future__ import annotations

import re

from diffscreen.io.frame import FrameMeta

__all__ = ["NUMBER", "header_number", "parse_pilatus_header", "fill_from_pilatus_header"]

#: A number as headers write it, also ``nan``/``inf`` (kept, so that
#: :func:`~diffscreen.io.frame.check_geometry` can warn about them).
NUMBER = r"([-+]?(?:\d*\.?\d+(?:[eE][-+]?\d+)?|(?<![A-Za-z])(?:[Ii]nf(?:inity)?|[Nn]a[Nn])(?![A-Za-z])))"


def header_number(v) -> float | None:
    """The first number in a header value (``nan``/``inf`` kept), or None."""
    if v is None:
        return None
    m = re.search(NUMBER, str(v))
    return float(m.group(1)) if m else None


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
    m = re.search(rf"#\s*Pixel_size\s+{NUMBER}\s*m\s*x\s*{NUMBER}\s*m", text)
    if m:
        out["pixel_size_mm"] = float(m.group(1)) * 1e3
    m = re.search(rf"#\s*Detector_distance\s+{NUMBER}\s*m", text)
    if m:
        out["distance_mm"] = float(m.group(1)) * 1e3
    m = re.search(rf"#\s*Wavelength\s+{NUMBER}\s*A", text)
    if m:
        out["wavelength_A"] = float(m.group(1))
    m = re.search(rf"#\s*Beam_xy\s*\(\s*{NUMBER}\s*,\s*{NUMBER}\s*\)\s*pixels", text)
    if m:
        out["beam_xy_px"] = (float(m.group(1)), float(m.group(2)))
    m = re.search(rf"#\s*Count_cutoff\s+{NUMBER}", text)
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
    # values kept as stated (0, negative, inf, nan too): check_geometry warns about them
    if meta.pixel_size_mm is None:
        meta.pixel_size_mm = h.get("pixel_size_mm")
    if meta.distance_mm is None:
        meta.distance_mm = h.get("distance_mm")
    if meta.wavelength_A is None:
        meta.wavelength_A = h.get("wavelength_A")
    if meta.beam_centre_px is None and "beam_xy_px" in h:
        meta.beam_centre_px = h["beam_xy_px"]
    if "count_cutoff" in h:
        meta.extra.setdefault("saturated_value", h["count_cutoff"])
    if "detector_line" in h:
        meta.extra.setdefault("detector_line", h["detector_line"])
    return meta


# --------------------------------------------------------------------------- ADSC / SMV
