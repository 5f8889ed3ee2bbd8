"""The fast path's crop as separate whole-array steps: masking, then two scipy sparse products.

What :meth:`diffscreen.preprocess.fast.FastPreprocessor.resample_window` computes in one compiled pass (the same
bits: the same float32 additions in the same order, tests/test_fastpath.py), and what the screening path ran
before stop 35.
"""

from __future__ import annotations

import numpy as np

from diffscreen.preprocess.fast import CropPlan, partial_outputs, resample_matrix
from diffscreen.preprocess.pipeline import PreprocessConfig

__all__ = ["prepare_region", "resample_two_step"]


def prepare_region(data, bad=None, *, invalid: float = 0.0, clamp: bool = True) -> np.ndarray:
    """``(h, w)`` float32 copy of a window's pixels (any dtype) with negative values → 0 (``clamp``; NaN kept)
    and masked pixels (``bad`` True) → ``invalid``: :func:`~diffscreen.preprocess.prepare_pixels` on part of a
    frame."""
    import torch

    data = np.asarray(data)
    out = np.empty(data.shape, np.float32)
    np.copyto(out, data, casting="unsafe")
    if clamp and data.dtype.kind != "u":
        torch.from_numpy(out).clamp_min_(0.0)  # NaN stays NaN; as the screening path did before stop 35
    if bad is not None:
        bad = np.asarray(bad, dtype=bool)
        if bad.any():
            np.copyto(out, np.float32(invalid), where=bad)
    return out


def resample_two_step(config: PreprocessConfig, data, bad, plan: CropPlan) -> tuple[np.ndarray, np.ndarray]:
    """The window's prepared pixels ``(h, w)`` and its ``(out_size, out_size)`` float32 crop:
    ``A_y · prepared · A_xᵀ`` with scipy (``(A_x · (A_y · prepared)ᵀ)ᵀ``), padding pixels set to the invalid value
    when it is not 0."""
    prep = prepare_region(data, bad, invalid=config.invalid_value,
                          clamp=config.clamp_negative)
    S = plan.out_size
    (r0, r1), (c0, c1) = plan.rows, plan.cols
    fy, ey, fx, ex = r0 - plan.y0, r1 - plan.y0, c0 - plan.x0, c1 - plan.x0
    t = resample_matrix(plan.side, S, fy, ey) @ prep
    out = np.ascontiguousarray((resample_matrix(plan.side, S, fx, ex) @ t.T).T, dtype=np.float32)
    if config.invalid_value != 0:
        out[partial_outputs(plan.side, S, fy, ey)] = config.invalid_value
        out[:, partial_outputs(plan.side, S, fx, ex)] = config.invalid_value
    return prep, out
