"""Contrast normalisation of frames (Ke et al. 2018, §2.2, Eqs. 6–9; Table 8).

All functions take a single frame ``(H, W)`` or a batch ``(N, H, W)`` and
return an array of the same shape; float32 stays float32 (float64 stays
float64, other dtypes become float32).
"""

from __future__ import annotations

import numpy as np

from diffscreen.errors import ConfigError
from diffscreen.preprocess._checks import as_float_batch

__all__ = ["gcn", "lcn", "local_normalise", "linear_contrast"]


def gcn(image, *, eps: float = 1e-6):
    """Global contrast normalisation, Ke et al. (2018) Eq. 6.

    ``P <- (P - mean(P)) / std(P)`` over each whole frame.

    Parameters
    ----------
    image : (H, W) or (N, H, W) ndarray
    eps : float
        A frame whose standard deviation is below ``eps`` is only
        mean-subtracted (a constant frame maps to zeros, not NaN).

    Returns
    -------
    out : ndarray, same shape as ``image``, float32 or float64
    """
    x, single = as_float_batch(image)
    mu = x.mean(axis=(1, 2), keepdims=True, dtype=np.float64)
    sd = x.std(axis=(1, 2), keepdims=True, dtype=np.float64)
    sd = np.where(sd < eps, 1.0, sd)
    out = ((x - mu) / sd).astype(x.dtype, copy=False)
    return out[0] if single else out


def local_normalise(image, *, size: int = 5, std_floor: float = 1.0):
    """The local step of LCN, Ke et al. (2018) Eqs. 7–9.

    ``P_x <- (P_x - mu_x) / max(sigma_x, std_floor)`` where ``mu_x`` and
    ``sigma_x`` are the mean and (population) standard deviation over the
    ``size x size`` box centred on ``x``.  Borders use reflection
    (``... c b a | a b c ...``), so the output keeps the input's shape.

    Parameters
    ----------
    image : (H, W) or (N, H, W) ndarray
    size : int
        Box side in pixels (odd). 5 in the authors' fv5080 code (Ke et al. 2018 §2.2 gives no size).
    std_floor : float
        Lower bound of the local standard deviation (fv5080: 1), so flat
        background is not amplified into noise.

    Returns
    -------
    out : ndarray, same shape as ``image``

    Raises
    ------
    ConfigError
        If ``size`` is not a positive odd integer or ``std_floor`` <= 0.

    Notes
    -----
    Wraps :func:`scipy.ndimage.uniform_filter` (mode ``"reflect"``).  The
    fv5080 code reflect-pads the crop before filtering for the same purpose.
    """
    if size < 1 or size % 2 == 0:
        raise ConfigError(f"LCN box size must be a positive odd integer, got {size}")
    if std_floor <= 0:
        raise ConfigError(f"LCN std_floor must be > 0, got {std_floor}")
    from scipy import ndimage  # here, not at the top: scipy.ndimage adds about 0.3 s to every command's start

    x, single = as_float_batch(image)
    box = (1, size, size)
    mu = ndimage.uniform_filter(x, size=box, mode="reflect")
    msq = ndimage.uniform_filter(x * x, size=box, mode="reflect")
    var = np.maximum(msq - mu * mu, 0.0)
    sd = np.maximum(np.sqrt(var), std_floor)
    out = ((x - mu) / sd).astype(x.dtype, copy=False)
    return out[0] if single else out


def lcn(image, *, size: int = 5, std_floor: float = 1.0):
    """Local contrast normalisation as Ke et al. (2018) apply it, §2.2.

    Global normalisation (:func:`gcn`, Eq. 6) followed by the local step
    (:func:`local_normalise`, Eqs. 7–9) with a ``size x size`` box and the
    local standard deviation floored at ``std_floor``.

    Parameters
    ----------
    image : (H, W) or (N, H, W) ndarray
        Frames, usually after scaling and cropping to 720 × 720.
    size : int
        Box side (5 in the fv5080 code).
    std_floor : float
        Floor of the local standard deviation (1 in the fv5080 code).

    Returns
    -------
    out : ndarray, same shape as ``image``

    Examples
    --------
    >>> import numpy as np
    >>> lcn(np.zeros((4, 4), np.float32)).max()
    0.0
    """
    return local_normalise(gcn(image), size=size, std_floor=std_floor)


def linear_contrast(image, *, m: float = 0.4, percentile: float = 90.0):
    """Linear contrast adjustment of ``dials.image_viewer`` (Ke et al. 2018, Fig. 6, Table 8).

    ``D = clip(m * P / P90, 0, 1)`` where ``P90`` is the 90th-percentile pixel
    of each frame.  This is the alternative to LCN compared in Ke Table 8.

    Parameters
    ----------
    image : (H, W) or (N, H, W) ndarray
    m : float
        Contrast parameter (viewer range 0.004–2, default 0.4).
    percentile : float
        Percentile used as the reference level.

    Returns
    -------
    out : ndarray in [0, 1], same shape as ``image``

    Raises
    ------
    ConfigError
        If ``m`` <= 0.
    """
    if m <= 0:
        raise ConfigError(f"linear contrast parameter m must be > 0, got {m}")
    x, single = as_float_batch(image)
    ref = np.percentile(x.reshape(len(x), -1), percentile, axis=1).reshape(-1, 1, 1)
    ref = np.where(ref > 0, ref, 1.0)
    out = np.clip(m * x / ref, 0.0, 1.0).astype(x.dtype, copy=False)
    return out[0] if single else out
