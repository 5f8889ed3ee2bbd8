"""Preprocessing of single-particle CDI patterns for the Zimmermann et al. (2019) network.

Two input kinds (``CDIPreprocessConfig.mode``):

``"image"``
    Masked and negative pixels set to 0; the largest square centred on the
    beam centre is resampled to ``input_size`` × ``input_size`` (box
    prefilter, then bilinear); intensities scaled to [0, 1] by the frame's
    maximum (``scaling="linear"``, the paper's input: the logarithmic
    activation of Eq. 11 is what handles the dynamic range) or by
    ``log1p(x) / log1p(max)`` (``scaling="log"``, an option).
``"ccf"``
    The CCF map of §5.3 (:func:`diffscreen.preprocess.ccf.ccf_map`) with
    ``input_size`` rings, so the map is ``input_size`` × ``input_size``.

The beam centre comes from ``frame.meta.beam_centre_px``; without one (e.g.
TIFF frames) it is the intensity centroid of the brightest 1 % of the valid
pixels — for a single-particle or Bragg-CDI pattern that is the centre of
the diffraction pattern.  Inputs are never modified.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from diffscreen.errors import BadFrameError, ConfigError

__all__ = ["CDIPreprocessConfig", "pattern_centre", "prepare_cdi", "prepare_cdi_batch"]


@dataclass(frozen=True)
class CDIPreprocessConfig:
    """How a CDI frame becomes a network input.

    Attributes
    ----------
    input_size : int
        Side of the square input (paper: 224).
    mode : {"image", "ccf"}
        Diffraction image or CCF map (§5.3).
    scaling : {"linear", "log"}
        Intensity scaling of ``"image"`` inputs.
    n_phi : int
        Angles of the polar grid of ``"ccf"`` inputs.
    order : int
        Fourier order of the CCF map's upper triangle (paper: 8).
    ccf_normalise : {"max", "ring"}
        CCF map normalisation (:func:`diffscreen.preprocess.ccf.ccf_map`):
        "max" is the paper as written, "ring" the XCCA ring-mean
        normalisation.
    """

    input_size: int = 224
    mode: str = "image"
    scaling: str = "linear"
    n_phi: int = 256
    order: int = 8
    ccf_normalise: str = "max"

    def __post_init__(self):
        if self.mode not in ("image", "ccf"):
            raise ConfigError(f"CDI input mode must be 'image' or 'ccf', got {self.mode!r}")
        if self.scaling not in ("linear", "log"):
            raise ConfigError(f"CDI scaling must be 'linear' or 'log', got {self.scaling!r}")
        if self.ccf_normalise not in ("max", "ring"):
            raise ConfigError(f"ccf_normalise must be 'max' or 'ring', got {self.ccf_normalise!r}")
        if not (8 <= int(self.input_size) <= 2048):
            raise ConfigError(f"input_size must be 8-2048, got {self.input_size}")

    def to_dict(self) -> dict:
        """JSON record stored in model files (``"kind": "cdi"`` marks it)."""
        return {"kind": "cdi", **asdict(self)}

    @classmethod
    def from_dict(cls, d: dict) -> "CDIPreprocessConfig":
        d = {k: v for k, v in d.items() if k != "kind"}
        try:
            return cls(**d)
        except TypeError as exc:
            raise ConfigError(f"invalid CDI preprocessing record: {exc}") from None


def _check(data, mask):
    a = np.asarray(data)
    if a.ndim != 2:
        raise BadFrameError(f"The parameter `data` must be a 2-dimensional array, got shape {a.shape}")
    if not np.isfinite(a).all():
        raise BadFrameError("frame contains NaN or infinite pixels")
    m = np.zeros(a.shape, bool) if mask is None else np.asarray(mask, dtype=bool)
    if m.shape != a.shape:
        raise BadFrameError(f"mask shape {m.shape} does not match frame shape {a.shape}")
    return a, m


def pattern_centre(data, mask=None, meta=None) -> tuple[float, float]:
    """Beam centre ``(x, y)`` in pixels: from ``meta`` if known, else the bright-pixel centroid.

    Parameters
    ----------
    data : (H, W) array_like
    mask : (H, W) bool array_like, optional
    meta : FrameMeta, optional

    Returns
    -------
    (float, float)
        Column (x) and row (y), 0-based.
    """
    a, m = _check(data, mask)
    if meta is not None and getattr(meta, "beam_centre_px", None) is not None:
        bc = meta.beam_centre_px
        if all(np.isfinite(bc)):
            return float(bc[0]), float(bc[1])
    v = np.where(m, 0.0, a.astype(np.float64))
    if v.max() <= 0:
        H, W = a.shape
        return (W - 1) / 2, (H - 1) / 2
    thr = np.quantile(v[~m], 0.99) if (~m).any() else 0
    w = np.where(v >= thr, v, 0.0)
    ys, xs = np.indices(a.shape)
    return float((w * xs).sum() / w.sum()), float((w * ys).sum() / w.sum())


def prepare_cdi(data, config: CDIPreprocessConfig, *, mask=None, meta=None, centre=None) -> np.ndarray:
    """One frame → one network input.

    Parameters
    ----------
    data : (H, W) array_like
        Photons or ADU; not modified.
    config : CDIPreprocessConfig
    mask : (H, W) bool array_like, optional
        True = bad pixel.
    meta : FrameMeta, optional
        For the beam centre.
    centre : (x, y), optional
        Overrides ``meta``.

    Returns
    -------
    (input_size, input_size) float32 ndarray
        ``"image"``: in [0, 1]; ``"ccf"``: in [-1, 1].

    Raises
    ------
    BadFrameError
        Not 2-D, NaN/inf pixels, mask of the wrong shape, or a beam centre
        outside the frame.
    """
    from scipy.ndimage import map_coordinates, uniform_filter

    from diffscreen.preprocess.ccf import ccf_map

    a, m = _check(data, mask)
    cx, cy = centre if centre is not None else pattern_centre(a, m, meta)
    H, W = a.shape
    r = min(cx, cy, W - 1 - cx, H - 1 - cy)
    if r < 2:
        raise BadFrameError(f"beam centre ({cx:.1f}, {cy:.1f}) is at or outside the frame edge")
    S = int(config.input_size)
    if config.mode == "ccf":
        return ccf_map(a, centre=(cx, cy), mask=m, n_q=S, n_phi=config.n_phi, order=config.order, r_max=r,
                       normalise=config.ccf_normalise)
    v = np.where(m, 0.0, np.maximum(a.astype(np.float32), 0.0))
    step = 2 * r / (S - 1)
    if step > 1.5:
        v = uniform_filter(v, size=int(round(step)), mode="constant")
    g = np.linspace(-r, r, S)
    rows, cols = np.meshgrid(cy + g, cx + g, indexing="ij")
    out = map_coordinates(v, [rows.ravel(), cols.ravel()], order=1, mode="constant").reshape(S, S)
    out = np.maximum(out, 0.0)
    mx = float(out.max())
    if mx <= 0:
        return np.zeros((S, S), np.float32)
    if config.scaling == "log":
        return (np.log1p(out) / np.log1p(mx)).astype(np.float32)
    return (out / mx).astype(np.float32)


def prepare_cdi_batch(frames, config: CDIPreprocessConfig, *, mask=None, centre=None) -> np.ndarray:
    """:func:`prepare_cdi` over a stack of frames sharing a mask and centre.

    Parameters
    ----------
    frames : (N, H, W) array_like
    config : CDIPreprocessConfig
    mask : (H, W) bool array_like, optional
    centre : (x, y), optional
        Default: image centre ``(W//2, H//2)`` — the simulator's beam centre.

    Returns
    -------
    (N, 1, input_size, input_size) float32 ndarray
    """
    a = np.asarray(frames)
    if a.ndim != 3:
        raise BadFrameError(f"The parameter `frames` must be a 3-dimensional array, got shape {a.shape}")
    c = centre if centre is not None else (a.shape[2] // 2, a.shape[1] // 2)
    S = int(config.input_size)
    out = np.empty((len(a), 1, S, S), np.float32)
    for i, f in enumerate(a):
        out[i, 0] = prepare_cdi(f, config, mask=mask, centre=c)
    return out
