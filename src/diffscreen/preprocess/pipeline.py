"""The preprocessing recipe, set up once and applied to batches of frames.

Ke et al. (2018) §2.2 with the fv5080 details of ANCHORS.md:

1. negative and masked pixels -> 0 (fv5080; Ke §3.2 sets inactive pixels to 0);
2. scale (physically, see :mod:`diffscreen.preprocess.geometry`) and crop
   720 × 720 around the beam centre, randomly shifted by up to ±120 output
   pixels when training;
3. contrast: GCN + LCN (5 × 5 box, local std floored at 1), or the linear
   contrast of ``dials.image_viewer`` (Ke Table 8).

The recipe is stored in every model file (:meth:`PreprocessConfig.to_dict`),
so a model is always fed the way it was trained.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import numpy as np

from diffscreen.errors import ConfigError
from diffscreen.io.frame import Frame
from diffscreen.preprocess.contrast import lcn, linear_contrast
from diffscreen.preprocess.geometry import DEFAULT_S_PER_PX, beam_centre, crop_scaled, zoom_factor

__all__ = ["PreprocessConfig", "Preprocessor", "prepare_pixels"]

_CONTRASTS = ("lcn", "linear")


@dataclass(frozen=True)
class PreprocessConfig:
    """Parameters of the preprocessing recipe.

    Attributes
    ----------
    out_size : int
        Side of the network input (Ke: 720).
    s_per_px : float or None
        Reciprocal-space step per output pixel in Å⁻¹ (physical scaling);
        None reproduces fv5080's pixel-count resize to ``fallback_size``.
    fallback_size : int
        Whole-frame size used when a frame has no geometry (fv5080: 960).
    contrast : {"lcn", "linear"}
        Ke §2.2 LCN, or the linear contrast of Ke Table 8.
    lcn_size : int
        LCN box side (5).
    std_floor : float
        LCN local std floor (1).
    linear_m : float
        Linear-contrast parameter M (0.4).
    max_shift : int
        Largest random crop shift for training, in output pixels (120).
    """

    out_size: int = 720
    s_per_px: float | None = DEFAULT_S_PER_PX
    fallback_size: int = 960
    contrast: str = "lcn"
    lcn_size: int = 5
    std_floor: float = 1.0
    linear_m: float = 0.4
    max_shift: int = 120

    def __post_init__(self):
        if self.contrast not in _CONTRASTS:
            raise ConfigError(f"contrast must be one of {_CONTRASTS}, got {self.contrast!r}")
        if self.out_size < 16:
            raise ConfigError(f"out_size must be >= 16, got {self.out_size}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "PreprocessConfig":
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ConfigError(f"unknown preprocessing parameters {sorted(unknown)}")
        return cls(**d)


def prepare_pixels(frame: Frame) -> np.ndarray:
    """Frame pixels with masked and negative values set to 0.

    Returns
    -------
    (H, W) float32 ndarray
        A new array; ``frame.data`` is not modified.
    """
    x = np.asarray(frame.data, dtype=np.float32)
    x = np.where(frame.mask | (x < 0), np.float32(0), x)
    return x


class Preprocessor:
    """Turn frames into network input.

    Parameters
    ----------
    config : PreprocessConfig, optional

    Examples
    --------
    >>> pre = Preprocessor(PreprocessConfig(out_size=720))
    >>> x = pre(frames)                       # doctest: +SKIP
    >>> x.shape                               # doctest: +SKIP
    (len(frames), 1, 720, 720)
    """

    def __init__(self, config: PreprocessConfig | None = None):
        self.config = config or PreprocessConfig()

    def crop(self, frame: Frame, shift=(0.0, 0.0)) -> np.ndarray:
        """Scaled, beam-centred crop of one frame before contrast normalisation.

        Returns
        -------
        (out_size, out_size) float32 ndarray
        """
        c = self.config
        z = zoom_factor(frame.meta, frame.data.shape, s_per_px=c.s_per_px, fallback_size=c.fallback_size)
        centre = beam_centre(frame.meta, frame.data.shape)
        return crop_scaled(prepare_pixels(frame), centre, z, c.out_size, shift)

    def normalise(self, crops: np.ndarray) -> np.ndarray:
        """Contrast step on crops ``(N, S, S)``; returns float32 of the same shape."""
        c = self.config
        if c.contrast == "lcn":
            return lcn(crops, size=c.lcn_size, std_floor=c.std_floor)
        return linear_contrast(crops, m=c.linear_m)

    def random_shifts(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``(n, 2)`` integer crop shifts, uniform in ±``max_shift`` (Ke §2.2)."""
        m = self.config.max_shift
        return rng.integers(-m, m + 1, size=(n, 2))

    def __call__(self, frames, shifts=None) -> np.ndarray:
        """Preprocess a batch.

        Parameters
        ----------
        frames : sequence of Frame
        shifts : (N, 2) array_like, optional
            Crop shifts ``(dx, dy)`` in output pixels; default: centred.

        Returns
        -------
        x : (N, 1, out_size, out_size) float32 ndarray
        """
        n = len(frames)
        if n == 0:
            s = self.config.out_size
            return np.zeros((0, 1, s, s), np.float32)
        if shifts is None:
            shifts = np.zeros((n, 2))
        crops = np.stack([self.crop(f, tuple(s)) for f, s in zip(frames, shifts)])
        return self.normalise(crops)[:, None].astype(np.float32, copy=False)
