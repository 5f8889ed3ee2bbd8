"""Peer hit-finders that diffscreen is compared with.

``peakfinder8``
    Cheetah's peakfinder8 (Barty et al. 2014), as compiled in OnDA Monitor
    (PyPI ``ondamonitor``), wrapped as a hit-finder with per-preset tuning
    (:class:`Peakfinder8`, :class:`Peakfinder8Config`, :func:`tune_peakfinder8`).

Baselines stand beside the pipeline: they import ``io``, ``preprocess`` and
``evaluate`` and are used by the CLI, the benchmarks and the tests.
"""

from diffscreen.baselines.peakfinder8 import (
    PeakList,
    Peakfinder8,
    Peakfinder8Config,
    resolution_radius_px,
    tune_peakfinder8,
)

__all__ = ["PeakList", "Peakfinder8", "Peakfinder8Config", "resolution_radius_px", "tune_peakfinder8"]
