"""diffscreen: screen X-ray diffraction frames with convolutional neural networks.

The pipeline, one sub-package per step::

    io          read frames (HDF5/CXI, CXIDB-76, CBF, MarCCD, ADSC, ...) and labels
    preprocess  scale, crop around the beam centre, GCN + LCN (Ke et al. 2018, §2.2)
    models      network architectures (Ke et al. 2018 CNN, ...)
    train       class-balanced training with checkpoints
    evaluate    confusion matrices and metrics
    screen      batch inference writing scores.csv, hits.lst and hits.cxi
    simulate    physics-based SFX frame simulator (stands beside the pipeline)

Importing ``diffscreen`` is cheap: sub-packages load on first use.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_SUBMODULES = {"io", "preprocess", "models", "train", "evaluate", "screen", "simulate", "errors"}


def __getattr__(name: str):
    if name in _SUBMODULES:
        return importlib.import_module(f"diffscreen.{name}")
    raise AttributeError(f"module 'diffscreen' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_SUBMODULES))
