"""Preprocessing: frames in, network input out (Ke et al. 2018, §2.2).

Where a frame is normalised: :class:`Preprocessor` (scale + crop around the
beam centre, then GCN + LCN or linear contrast); :class:`FastPreprocessor`
gives the same input touching only the crop window (the screening default,
:mod:`diffscreen.preprocess.fast`).
"""

from diffscreen.preprocess.contrast import gcn, lcn, linear_contrast, local_normalise
from diffscreen.preprocess.geometry import DEFAULT_S_PER_PX, beam_centre, crop_scaled, reciprocal_pixel, zoom_factor
from diffscreen.preprocess.pipeline import PreprocessConfig, Preprocessor, prepare_pixels
from diffscreen.preprocess.fast import FastPreprocessor
from diffscreen.preprocess.rwd import row_ranges

__all__ = [
    "gcn",
    "lcn",
    "local_normalise",
    "linear_contrast",
    "DEFAULT_S_PER_PX",
    "beam_centre",
    "crop_scaled",
    "reciprocal_pixel",
    "zoom_factor",
    "PreprocessConfig",
    "Preprocessor",
    "FastPreprocessor",
    "prepare_pixels",
    "row_ranges",
]
