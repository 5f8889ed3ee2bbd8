"""Reading frames and labels: one call opens any supported detector file.

>>> from diffscreen.io import open_source
>>> with open_source("run.cxi") as src:          # doctest: +SKIP
...     frame = src.read(0)                        # Frame(data, mask, meta)

Formats (chosen from the file's content, see :mod:`diffscreen.io.sources`):
CXI and CXIDB-76 HDF5, NXmx / Eiger master files, ``file.h5:/dataset``,
imgCIF/CBF (x-CBF_PACKED, multi-panel CSPAD) via pycbf, and through fabio
the Pilatus miniCBF, ADSC, MarCCD, EDF, TIFF and mar345 formats, also
gzip/bzip2 compressed; European XFEL run directories through EXtra-data
(:mod:`diffscreen.io.euxfel`, ``pip install 'diffscreen[euxfel]'``).
Labels: :mod:`diffscreen.io.labels`.  Writing: :class:`diffscreen.io.cxi.CXIWriter`.

Importing this package loads numpy only; h5py, fabio and pycbf load with
the first file that needs them.
"""

from __future__ import annotations

from diffscreen.io.frame import CLASS_NAMES, Frame, FrameMeta, check_frame, check_geometry
from diffscreen.io.limits import check_frame_size, max_frame_pixels, set_max_frame_pixels
from diffscreen.io.labels import (
    LabelRecord,
    LabelTable,
    read_dials_annotation,
    read_expert_annotation,
    read_label_csv,
    read_labels,
    write_label_csv,
)
from diffscreen.io.base import FrameSource
from diffscreen.io.sources import expand_inputs, iter_frames, open_source, read_frame, register_reader

__all__ = [
    "open_source",
    "read_frame",
    "iter_frames",
    "expand_inputs",
    "register_reader",
    "FrameSource",
    "Frame",
    "FrameMeta",
    "CLASS_NAMES",
    "check_frame",
    "check_geometry",
    "max_frame_pixels",
    "set_max_frame_pixels",
    "check_frame_size",
    "LabelRecord",
    "LabelTable",
    "read_labels",
    "read_expert_annotation",
    "read_dials_annotation",
    "read_label_csv",
    "write_label_csv",
    "CXIWriter",
]


def __getattr__(name: str):
    if name == "CXIWriter":  # h5py loads only when writing is asked for
        from diffscreen.io.cxi import CXIWriter

        return CXIWriter
    raise AttributeError(f"module 'diffscreen.io' has no attribute {name!r}")
