"""Stacked-panel detectors for the simulator: AGIPD 1M and JUNGFRAU 4M with their CrystFEL geometry.

XFEL detectors write a frame as their panels stacked into one data block and
describe the panels' places with a CrystFEL geometry file (``man
crystfel_geometry``).  Each :class:`StackedDetector` here is both:

* a CrystFEL geometry text (:attr:`StackedDetector.geom_text`, written by
  :func:`geometry_text`) whose panels tile a data block of
  ``(SS, FS)`` pixels, and
* a simulator :class:`~diffscreen.simulate.presets.Preset` of the assembled
  detector that geometry describes (same frame shape, pixel size, gaps,
  beam centre, distance and photon energy), registered in
  :data:`~diffscreen.simulate.presets.PRESETS` under the same name.

A frame is simulated assembled by the existing
:class:`~diffscreen.simulate.run.Simulator`, then its pixels are gathered into
the data block with the geometry's own pixel maps
(:meth:`~diffscreen.io.geom.DetectorGeometry.gather`, the inverse of the
nearest-pixel assembly ``diffscreen screen --geom`` does), so the label,
``n_spots`` and the peaks (moved to data-block coordinates) carry over.
:func:`simulate_stacked_run` writes such frames as a CXI file
(``/entry_1/data_1/data`` (N, SS, FS)) and the geometry beside it as
``detector.geom``; ``diffscreen simulate --preset agipd1m_stacked`` does the
same.

Layouts (simplified from the real detectors, enough for screening):

``agipd1m_stacked``
    AGIPD 1M: 16 modules of 512 × 128 pixels of 200 µm, each 8 ASIC panels of
    64 (ss) × 128 (fs) pixels separated by 2-pixel gaps, the module's long
    side horizontal (ss along +x, fs along −y); 4 modules a quadrant, 6-pixel
    gaps between modules, 4 quadrants around a 20-pixel central gap the beam
    passes through.  Data block (8192, 128).
``jungfrau4m_stacked``
    JUNGFRAU 4M: 8 modules of 512 × 1024 pixels of 75 µm, each 2 × 4 chips
    of 256 × 256 as separate panels; the chips' 2-pixel gaps (where the real
    sensor has its double-size pixels) are left uncovered, so they are
    masked after assembly; modules 4 × 2, 36- and 12-pixel gaps, beam in the
    middle gap.  Data block (4096, 1024).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from diffscreen.errors import ConfigError
from diffscreen.io.atomic import atomic_write_text
from diffscreen.io.geom import DetectorGeometry
from diffscreen.simulate.presets import PRESETS, Preset

__all__ = ["StackedDetector", "STACKED", "get_stacked", "geometry_text", "simulate_stacked_run"]


@dataclass(frozen=True)
class _Panel:
    """One panel: its data-block rectangle, its lab vectors and where its first pixel lands in the assembled frame."""

    name: str
    min_ss: int
    max_ss: int
    min_fs: int
    max_fs: int
    fs: str  # CrystFEL direction, e.g. "+1.0x"
    ss: str
    row0: int  # assembled row and column of the panel's first pixel (ss = fs = 0)
    col0: int


@dataclass(frozen=True)
class StackedDetector:
    """A detector whose frames are stacked panels: its CrystFEL geometry and the assembled simulator preset.

    Attributes
    ----------
    name : str
        Key in :data:`STACKED` and :data:`~diffscreen.simulate.presets.PRESETS`.
    preset : Preset
        The assembled detector (shape, gaps as ``tiles``, pixel size, fixed
        beam centre, distance and energy, all as the geometry says).
    geom_text : str
        The CrystFEL geometry (``data = /entry_1/data_1/data``, ``dim0 = %``,
        ``dim1 = ss``, ``dim2 = fs``).
    raw_shape : (int, int)
        ``(SS, FS)`` of the data block.
    """

    name: str
    preset: Preset
    geom_text: str
    raw_shape: tuple[int, int]

    def geometry(self) -> DetectorGeometry:
        """The geometry, read by cfelpyutils as a user's file would be (cached)."""
        return _geometry(self.name, self.geom_text)


@functools.lru_cache(maxsize=4)
def _geometry(name: str, text: str) -> DetectorGeometry:
    return DetectorGeometry(text, path=f"<{name} geometry>")


def geometry_text(title: str, panels, *, beam_centre_px, res: float, clen_m: float, photon_energy_eV: float,
                  adu_per_eV: float, rigid_groups: dict | None = None) -> str:
    """A CrystFEL geometry file placing panels at given assembled positions.

    Parameters
    ----------
    title : str
        First comment line.
    panels : sequence of _Panel
        Each with its data-block rectangle, fs/ss directions and the
        assembled (row, column) of its first pixel.
    beam_centre_px : (float, float)
        ``(x, y)`` of the beam in the assembled frame, half-integers (the
        nearest-pixel assembly puts pixel cells on integer lab coordinates,
        :mod:`diffscreen.io.geom`).
    res : float
        Pixels per metre.
    clen_m : float
        Camera length, m.
    photon_energy_eV : float
    adu_per_eV : float
    rigid_groups : dict of str -> list of str, optional
        Named groups of panels (a module each).

    Returns
    -------
    str
        Top-level values first (``man crystfel_geometry``: they apply to
        the panels below them), then one block per panel with ``min_fs``,
        ``max_fs``, ``min_ss``, ``max_ss``, ``fs``, ``ss``, ``corner_x`` and
        ``corner_y``.  A panel whose first pixel lands at assembled (row r,
        column c) has its corner at ``x = c - bx - 0.5`` and
        ``y = by + 0.5 - r + 1`` for the fs/ss vectors used here, whose sum is
        (+1, −1), so that the pixel's centre falls in that cell.
    """
    bx, by = beam_centre_px
    x0, y1 = -bx - 0.5, by - 0.5
    if x0 != round(x0) or y1 != round(y1):
        raise ConfigError(f"beam centre {beam_centre_px} must be at half-integers for integer panel corners")
    lines = [
        f"; {title}",
        "; written by diffscreen.simulate.panels (CrystFEL geometry syntax, man crystfel_geometry)",
        f"photon_energy = {photon_energy_eV:g}",
        f"adu_per_eV = {adu_per_eV:g}",
        f"res = {res:.6f}",
        f"clen = {clen_m:g}",
        "coffset = 0.0",
        "data = /entry_1/data_1/data",
        "dim0 = %",
        "dim1 = ss",
        "dim2 = fs",
        "",
    ]
    for p in panels:
        lines += [
            f"{p.name}/min_fs = {p.min_fs}",
            f"{p.name}/max_fs = {p.max_fs}",
            f"{p.name}/min_ss = {p.min_ss}",
            f"{p.name}/max_ss = {p.max_ss}",
            f"{p.name}/fs = {p.fs}",
            f"{p.name}/ss = {p.ss}",
            f"{p.name}/corner_x = {int(x0) + p.col0}",
            f"{p.name}/corner_y = {int(y1) - p.row0 + 1}",
            "",
        ]
    for group, members in (rigid_groups or {}).items():
        lines.append(f"rigid_group_{group} = {','.join(members)}")
    if rigid_groups:
        lines.append(f"rigid_group_collection_modules = {','.join(rigid_groups)}")
    return "\n".join(lines) + "\n"


def _agipd1m() -> StackedDetector:
    asic_ss, asic_fs, n_asic, asic_gap = 64, 128, 8, 2
    module_gap, quad_gap = 6, 20
    mod_w = n_asic * asic_ss + (n_asic - 1) * asic_gap  # 526 columns (ss along +x)
    mod_h = asic_fs  # 128 rows (fs along -y)
    quad_h, quad_w = 4 * mod_h + 3 * module_gap, mod_w  # 530 x 526
    H, W = 2 * quad_h + quad_gap, 2 * quad_w + quad_gap  # 1080 x 1072
    beam = (quad_w + (quad_gap - 1) / 2, quad_h + (quad_gap - 1) / 2)  # (535.5, 539.5): the middle of the cross
    panels, groups = [], {}
    for q in range(4):
        qy, qx = divmod(q, 2)
        for k in range(4):
            m = 4 * q + k
            row0 = qy * (quad_h + quad_gap) + k * (mod_h + module_gap)
            col0 = qx * (quad_w + quad_gap)
            names = []
            for a in range(n_asic):
                ss0 = 512 * m + asic_ss * a
                p = _Panel(f"q{q}m{k}a{a}", ss0, ss0 + asic_ss - 1, 0, asic_fs - 1, "+0.0x -1.0y", "+1.0x +0.0y",
                           row0, col0 + a * (asic_ss + asic_gap))
                panels.append(p)
                names.append(p.name)
            groups[f"q{q}m{k}"] = names
    energy, clen = 9300.0, 0.13
    text = geometry_text("AGIPD 1M-like, 16 modules of 512 x 128 px stacked (simulated)", panels,
                         beam_centre_px=beam, res=5000.0, clen_m=clen, photon_energy_eV=energy,
                         adu_per_eV=0.001, rigid_groups=groups)
    preset = PRESETS["jungfrau"].replace(
        name="agipd1m_stacked",
        detector="AGIPD 1M-like, 16 modules of 512 x 128 px, 200 um, stacked panels (simulated)",
        shape=(H, W),
        pixel_size_mm=0.2,
        # ASICs of 128 x 64 px (1-px perimeter untrusted), 1 x 8 a module (2-px gaps), 4 x 1 modules a quadrant
        # (6-px gaps), 2 x 2 quadrants around a 20-px cross
        tiles=((mod_h, asic_ss, 1), (1, n_asic, 0, asic_gap), (4, 1, module_gap, 0), (2, 2, quad_gap, quad_gap)),
        beam_centre_px=beam,
        beam_centre_jitter_px=0.0,  # the geometry fixes the beam
        distance_mm=(clen * 1000, clen * 1000),
        energy_keV=(energy / 1000, energy / 1000),
        double_row_factor=(1.0, 1.0),  # no double-size pixels between AGIPD ASICs
        p_beam_stop=0.0,
        notes="Stacked panels: `diffscreen simulate --preset agipd1m_stacked` writes the (N, 8192, 128) data "
              "blocks and detector.geom (simulate/panels.py); Simulator(...) gives the assembled frames.",
    )
    return StackedDetector("agipd1m_stacked", preset, text, (16 * 512, 128))


def _jungfrau4m() -> StackedDetector:
    chip, chip_gap = 256, 2
    mod_h, mod_w = 2 * chip + chip_gap, 4 * chip + 3 * chip_gap  # 514 x 1030
    gap_y, gap_x = 36, 12
    H, W = 4 * mod_h + 3 * gap_y, 2 * mod_w + gap_x  # 2164 x 2072
    beam = (mod_w + (gap_x - 1) / 2, 2 * mod_h + gap_y + (gap_y - 1) / 2)  # (1035.5, 1081.5)
    panels, groups = [], {}
    for m in range(8):
        my, mx = divmod(m, 2)
        row0, col0 = my * (mod_h + gap_y), mx * (mod_w + gap_x)
        names = []
        for cy in range(2):
            for cx in range(4):
                ss0, fs0 = 512 * m + chip * cy, chip * cx
                p = _Panel(f"m{m}c{cy * 4 + cx}", ss0, ss0 + chip - 1, fs0, fs0 + chip - 1, "+1.0x +0.0y", "+0.0x -1.0y",
                           row0 + cy * (chip + chip_gap), col0 + cx * (chip + chip_gap))
                panels.append(p)
                names.append(p.name)
        groups[f"m{m}"] = names
    energy, clen = 11000.0, 0.1
    text = geometry_text("JUNGFRAU 4M-like, 8 modules of 512 x 1024 px stacked, one panel per chip (simulated)",
                         panels, beam_centre_px=beam, res=1e3 / 0.075, clen_m=clen, photon_energy_eV=energy,
                         adu_per_eV=0.001, rigid_groups=groups)
    preset = PRESETS["jungfrau"].replace(
        name="jungfrau4m_stacked",
        detector="JUNGFRAU 4M-like, 8 modules of 512 x 1024 px, 75 um, stacked panels (simulated)",
        shape=(H, W),
        # chips of 256 x 256 px (1-px perimeter untrusted), 2 x 4 a module with the 2-px inter-chip gaps
        # masked, 4 x 2 modules, gaps 36 / 12 px
        tiles=((chip, chip, 1), (2, 4, chip_gap, chip_gap), (4, 2, gap_y, gap_x)),
        beam_centre_px=beam,
        beam_centre_jitter_px=0.0,
        distance_mm=(clen * 1000, clen * 1000),
        energy_keV=(energy / 1000, energy / 1000),
        notes="Stacked panels: `diffscreen simulate --preset jungfrau4m_stacked` writes the (N, 4096, 1024) data "
              "blocks and detector.geom (simulate/panels.py); Simulator(...) gives the assembled frames.",
    )
    return StackedDetector("jungfrau4m_stacked", preset, text, (8 * 512, 1024))


#: The stacked-panel detectors, by preset name.
STACKED: dict[str, StackedDetector] = {d.name: d for d in (_agipd1m(), _jungfrau4m())}
for _d in STACKED.values():  # the assembled detectors are presets like the others
    PRESETS[_d.name] = _d.preset


def get_stacked(name) -> StackedDetector:
    """The :class:`StackedDetector` of a name in :data:`STACKED` (or the object itself).

    Raises
    ------
    ConfigError
        Not a stacked-panel preset.
    """
    if isinstance(name, StackedDetector):
        return name
    try:
        return STACKED[name]
    except KeyError:
        raise ConfigError(f"{name!r} is not a stacked-panel preset; choose one of {sorted(STACKED)}") from None


def simulate_stacked_run(name, n_frames: int, out_path, *, seed: int = 0, class_fractions=None, start: int = 0,
                         progress=None, compression: str | None = "bitshuffle-lz4", geom_path=None,
                         max_peaks: int = 2048) -> tuple[Path, Path]:
    """Simulate a run of a stacked-panel detector: a CXI file of data blocks and its ``.geom``.

    Parameters
    ----------
    name : str or StackedDetector
        ``"agipd1m_stacked"`` or ``"jungfrau4m_stacked"``.
    n_frames : int
        Number of frames (>= 0).
    out_path : str or Path
        The CXI file.
    seed, class_fractions, start, progress, compression, max_peaks
        As for :func:`~diffscreen.simulate.run.simulate_run`.
    geom_path : str or Path, optional
        Where the geometry goes; default ``detector.geom`` beside ``out_path``.

    Returns
    -------
    cxi : Path
        ``/entry_1/data_1/data`` (N, SS, FS) int32 data blocks, their mask
        (none bad: every data-block pixel is on a panel), per-frame
        distance and energy (no beam centre: a data block has none),
        ``result_1/label``, ``n_spots`` and the peak list in data-block
        coordinates (``peakXPosRaw`` = fs, ``peakYPosRaw`` = ss; peaks whose
        centre lies in a gap are left out).
    geom : Path
        The CrystFEL geometry, written through a temporary name.

    Raises
    ------
    ConfigError
        Unknown name, negative ``n_frames``, invalid fractions.
    """
    from diffscreen.io.cxi import CXIWriter
    from diffscreen.simulate.run import Simulator

    det = get_stacked(name)
    if n_frames < 0:
        raise ConfigError(f"n_frames must be >= 0, got {n_frames}")
    g = det.geometry()
    sim = Simulator(det.preset, seed=seed, class_fractions=class_fractions)
    out_path = Path(out_path)
    geom_path = out_path.with_name("detector.geom") if geom_path is None else Path(geom_path)
    with CXIWriter(out_path, compression=compression, mask_mode="static", dtype=np.int32, max_peaks=max_peaks) as w:
        for k, i in enumerate(range(start, start + n_frames)):
            sf = sim.frame(i)
            extra = {key: float(v) for key, v in sf.meta.extra.items() if isinstance(v, (int, float, np.floating))}
            w.append(g.gather(sf.data), g.meta(sf.meta, i, assembled=False), mask=g.gather(sf.mask, fill=True),
                     label=sf.label, n_spots=sf.n_spots, peaks=g.raw_peaks(sf.peaks), extra=extra)
            if progress is not None:
                progress(k + 1)
    atomic_write_text(geom_path, det.geom_text)
    return out_path, geom_path
