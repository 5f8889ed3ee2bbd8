"""Physics-based serial-crystallography (SFX) frame simulator.

Our CNNs learn almost only from these frames and must then work on real
detector frames, so the simulator aims for physical realism and breadth rather
than one polished look.  Modules:

``crystal``
    Reciprocal lattice (B matrix), random orientation, Ewald sphere,
    still-shot partiality from mosaicity and bandwidth, Wilson intensities.
``detector``
    The detector model: a core + r⁻³-tail point-spread function (Holton et
    al. 2012), Poisson / correlated photon noise, read noise; the Poisson and
    normal tables and random draws the compiled kernels use (the model's
    numpy statement, which the tests hold the kernels to, is
    ``tests/reference/simulate.py``).
``background``
    Water ring (peak at d = 3.2 Å, i.e. s = 1/3.2 Å⁻¹), air scatter, jet
    streak, kapton-belt shadow.
``presets``
    :class:`Preset` and :data:`PRESETS`: the detector families ``"rayonix"``,
    ``"rayonix_jet"`` and ``"cspad"`` with the real CXIDB-76 masks; the five
    CXIDB-76 runs ``"L498"``, ``"LG36"``, ``"LN84"``, ``"LN83"``, ``"LO19"``
    (Ke et al. 2018 Tables 1–2, real annotation counts as class fractions);
    the hybrid pixel detectors ``"pilatus"`` (172 µm) and ``"eiger"`` (75 µm)
    and the XFEL panel detector ``"jungfrau"``; the domain-randomised
    ``"wide_*"`` presets (issue 13: rings, cosmic rays, overload markers,
    off-centre beams, small-molecule cells), one per detector family of
    :data:`FAMILIES`.
``panels``
    Stacked-panel detectors (AGIPD 1M, JUNGFRAU 4M): a CrystFEL geometry and
    the matching assembled preset (``"agipd1m_stacked"``,
    ``"jungfrau4m_stacked"``, registered in :data:`PRESETS`);
    :func:`simulate_stacked_run` writes their data blocks and ``.geom``.
``run``
    :class:`Simulator`, :func:`simulate_frame`, :func:`simulate_run`, labels
    from detectable-spot counts (Ke et al. 2018, §3.3.1).

Examples
--------
>>> from diffscreen.simulate import Simulator
>>> sf = Simulator("rayonix", seed=0).frame(3)
>>> sf.data.dtype, sf.data.shape
(dtype('int32'), (1920, 1920))
"""

from diffscreen.simulate.crystal import CellSpec
from diffscreen.simulate.presets import CELLS, FAMILIES, PRESETS, WIDE_PRESETS, Preset, get_preset, load_cxidb76_mask
from diffscreen.simulate.run import (
    DEFAULT_CLASS_FRACTIONS,
    DEFAULT_MISS_BREAKDOWN,
    KINDS,
    SimFrame,
    Simulator,
    label_from_count,
    simulate_frame,
    simulate_run,
)
from diffscreen.simulate.panels import STACKED, StackedDetector, simulate_stacked_run  # registers their presets

__all__ = [
    "PRESETS",
    "FAMILIES",
    "WIDE_PRESETS",
    "Preset",
    "CellSpec",
    "CELLS",
    "Simulator",
    "SimFrame",
    "simulate_frame",
    "simulate_run",
    "label_from_count",
    "get_preset",
    "load_cxidb76_mask",
    "KINDS",
    "DEFAULT_CLASS_FRACTIONS",
    "DEFAULT_MISS_BREAKDOWN",
    "STACKED",
    "StackedDetector",
    "simulate_stacked_run",
]
