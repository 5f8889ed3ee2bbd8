"""The preprocessing recipe, set up once and applied to batches of frames.

Ke et al. (2018) §2.2 with the details of the authors' fv5080 code where the paper is silent:

1. negative and masked pixels -> 0 (fv5080; Ke §3.2 sets inactive pixels to 0);
2. scale (physically, see :mod:`diffscreen.preprocess.geometry`) and crop
   720 × 720 around the beam centre, randomly shifted by up to ±120 output
   pixels when training (bilinear; the bundled models take the maximum of
   each output pixel's footprint instead, :mod:`diffscreen.preprocess.pooling`);
3. contrast: GCN + LCN (5 × 5 box, local std floored at 1), or the linear
   contrast of ``dials.image_viewer`` (Ke Table 8), or — a departure from
   Ke, for detectors nobody trained on — the per-pixel significance over
   resolution shells (``"snr"``, :mod:`diffscreen.preprocess.significance`).

:meth:`PreprocessConfig.significance` is the recipe of the bundled fast model;
``PreprocessConfig()`` is Ke's.

The recipe is stored in every model file (:meth:`PreprocessConfig.to_dict`),
so a model is always fed the way it was trained.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import numpy as np

from diffscreen.errors import ConfigError
from diffscreen.io.frame import Frame
from diffscreen.preprocess.contrast import lcn, linear_contrast
from diffscreen.preprocess.geometry import (DEFAULT_S_PER_PX, beam_centre, beam_in_crop, crop_scaled, crop_window,
                                            zoom_factor)
from diffscreen.preprocess.pooling import max_pool_window
from diffscreen.preprocess.significance import significance

__all__ = ["PreprocessConfig", "Preprocessor", "prepare_pixels", "significance_batch"]

_CONTRASTS = ("lcn", "linear", "snr")
_POOLINGS = ("bilinear", "max")


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
    contrast : {"lcn", "linear", "snr"}
        Ke §2.2 LCN, the linear contrast of Ke Table 8, or the per-pixel
        significance over resolution shells
        (:func:`~diffscreen.preprocess.significance.significance`).
    lcn_size : int
        LCN box side (5).
    std_floor : float
        LCN local std floor (1).
    linear_m : float
        Linear-contrast parameter M (0.4).
    max_shift : int
        Largest random crop shift for training, in output pixels (120).
    pooling : {"bilinear", "max"}
        How the window is brought to ``out_size``: Ke's bilinear resize
        (averaging when shrinking), or the maximum of each output pixel's
        footprint (:mod:`diffscreen.preprocess.pooling`), which keeps a
        one-pixel Bragg spot's peak.
    snr_shell_px, snr_low, snr_scale, snr_high : float
        ``"snr"`` only: shell width (crop pixels), lower clip of the
        significance (σ), its compression scale (σ) and the upper clip of the
        compressed value; see :func:`~diffscreen.preprocess.significance.significance`.
    """

    out_size: int = 720
    s_per_px: float | None = DEFAULT_S_PER_PX
    fallback_size: int = 960
    contrast: str = "lcn"
    lcn_size: int = 5
    std_floor: float = 1.0
    linear_m: float = 0.4
    max_shift: int = 120
    pooling: str = "bilinear"
    snr_shell_px: float = 1.0
    snr_low: float = -2.0
    snr_scale: float = 2.0
    snr_high: float = 8.0

    def __post_init__(self):
        if self.contrast not in _CONTRASTS:
            raise ConfigError(f"contrast must be one of {_CONTRASTS}, got {self.contrast!r}")
        if self.pooling not in _POOLINGS:
            raise ConfigError(f"pooling must be one of {_POOLINGS}, got {self.pooling!r}")
        if self.out_size < 16:
            raise ConfigError(f"out_size must be >= 16, got {self.out_size}")

    @classmethod
    def significance(cls, out_size: int = 360, scale: float = 2.0) -> "PreprocessConfig":
        """The significance recipe (the bundled fast model's at 240, 3.0) over Ke's field of view.

        ``out_size`` × ``out_size`` pixels covering the field of
        ``PreprocessConfig()`` (±1/(2 × 2.5 Å) at the crop edge, i.e. 720 of
        Ke's reciprocal pixels) at ``scale`` × Ke's pixel; contrast
        ``"snr"``; max-pooling; crop shifts up to ``out_size / 6`` for
        training.  A frame without geometry is scaled so that the crop spans
        3/4 of its longer side, as Ke's 720 of 960 pixels do.
        """
        return cls(out_size=out_size, s_per_px=DEFAULT_S_PER_PX * scale, contrast="snr", pooling="max",
                   fallback_size=int(round(out_size * 4 / 3)), max_shift=min(120, out_size // 6))

    @property
    def invalid_value(self) -> float:
        """What masked pixels and the area outside the frame become before scaling.

        0 for Ke's recipes (Ke §3.2: inactive pixels are 0); NaN for the
        significance input, which leaves them out of the shell statistics and
        sets every output pixel they touch to 0, so a detector's gaps and
        edges do not show in the network input.
        """
        return float("nan") if self.contrast == "snr" else 0.0

    @property
    def clamp_negative(self) -> bool:
        """Negative pixels → 0 (Ke); the significance input keeps them (pedestal-subtracted noise)."""
        return self.contrast != "snr"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "PreprocessConfig":
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ConfigError(f"unknown preprocessing parameters {sorted(unknown)}")
        return cls(**d)


def prepare_pixels(frame: Frame, *, invalid: float = 0.0, clamp: bool = True) -> np.ndarray:
    """Frame pixels with masked (and negative) values replaced.

    Parameters
    ----------
    frame : Frame
    invalid : float
        Value of masked pixels (Ke: 0).
    clamp : bool
        Negative values → 0 (Ke); False keeps them.

    Returns
    -------
    (H, W) float32 ndarray
        A new array; ``frame.data`` is not modified.
    """
    x = np.asarray(frame.data, dtype=np.float32)
    if clamp:
        x = np.where(x < 0, np.float32(0), x)
    return np.where(frame.mask, np.float32(invalid), x)


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
        if c.pooling == "max":
            side, x0, y0 = crop_window(centre, z, c.out_size, shift)
            (H, W), r0, c0 = frame.data.shape, max(y0, 0), max(x0, 0)
            r1, c1 = max(r0, min(y0 + side, H)), max(c0, min(x0 + side, W))
            return max_pool_window(frame.data[r0:r1, c0:c1], frame.mask[r0:r1, c0:c1], side, r0 - y0, c0 - x0,
                                   c.out_size)
        pixels = prepare_pixels(frame, invalid=c.invalid_value, clamp=c.clamp_negative)
        return crop_scaled(pixels, centre, z, c.out_size, shift, fill=c.invalid_value)

    def centre_in_crop(self, frame: Frame, shift=(0.0, 0.0)) -> tuple[float, float]:
        """Beam centre ``(x, y)`` in the pixels of :meth:`crop`'s output."""
        c = self.config
        z = zoom_factor(frame.meta, frame.data.shape, s_per_px=c.s_per_px, fallback_size=c.fallback_size)
        return beam_in_crop(beam_centre(frame.meta, frame.data.shape), z, c.out_size, shift)

    def normalise(self, crops: np.ndarray, centres=None) -> np.ndarray:
        """Contrast step on crops ``(N, S, S)``; returns float32 of the same shape.

        ``centres`` : (N, 2) beam centres ``(x, y)`` in crop pixels, used by
        the ``"snr"`` contrast only (default: the crop's middle).
        """
        c = self.config
        if c.contrast == "lcn":
            return lcn(crops, size=c.lcn_size, std_floor=c.std_floor)
        if c.contrast == "snr":
            out = np.array(crops, dtype=np.float32, copy=True)
            return significance_batch(out, centres, c)
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
        centres = [self.centre_in_crop(f, tuple(s)) for f, s in zip(frames, shifts)]
        return self.normalise(crops, centres)[:, None].astype(np.float32, copy=False)


def significance_batch(crops: np.ndarray, centres, config: PreprocessConfig) -> np.ndarray:
    """The ``"snr"`` contrast of a batch, in place.

    Parameters
    ----------
    crops : (N, S, S) float32 ndarray
        Overwritten with the result.
    centres : (N, 2) array_like or None
        Beam centres ``(x, y)`` in crop pixels; None: the middle of each crop.
    config : PreprocessConfig

    Returns
    -------
    (N, S, S) float32 ndarray
        ``crops`` itself.
    """
    mid = ((crops.shape[-1] - 1) / 2.0, (crops.shape[-2] - 1) / 2.0)
    for k in range(len(crops)):
        significance(crops[k], mid if centres is None else centres[k], shell_px=config.snr_shell_px,
                     low=config.snr_low, scale=config.snr_scale, high=config.snr_high, out=crops[k])
    return crops
