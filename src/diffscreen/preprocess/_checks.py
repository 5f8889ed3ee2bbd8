"""Argument checks shared by the preprocessing functions."""

from __future__ import annotations

import numpy as np

from diffscreen.errors import ConfigError


def as_float_batch(image, name: str = "image") -> tuple[np.ndarray, bool]:
    """Return ``image`` as a float ``(N, H, W)`` array and whether it was 2-D.

    float32 and float64 inputs keep their dtype; integers become float32.

    Raises
    ------
    ConfigError
        If ``image`` is not 2-D or 3-D.
    """
    a = np.asarray(image)
    if a.ndim not in (2, 3):
        raise ConfigError(f"The parameter `{name}` must be a 2-D (H, W) or 3-D (N, H, W) array, got shape {a.shape}")
    if a.dtype not in (np.float32, np.float64):
        a = a.astype(np.float32)
    single = a.ndim == 2
    return (a[None] if single else a), single
