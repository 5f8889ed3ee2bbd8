"""Cheetah's peakfinder8 as a hit-finder: the peer diffscreen is compared with.

peakfinder8 (Barty et al. 2014, *J. Appl. Cryst.* 47, 1118, "Cheetah") finds
Bragg peaks as connected groups of pixels above a local threshold: the
background mean and standard deviation are estimated in radial rings about
the beam centre (iteratively, rejecting bright pixels), a pixel is a peak
candidate when it exceeds ``max(adc_threshold, mean + min_snr·σ)``, and a peak
is kept when it has ``min_pixel_count`` to ``max_pixel_count`` connected
pixels and an integrated SNR of at least ``min_snr`` against the local
background within ``local_bg_radius``.  We call the compiled implementation
shipped with OnDA Monitor (PyPI ``ondamonitor``, ``om.algorithms._crystallography``)
directly, because its high-level class fails
with NumPy 2.

A frame is a *hit* when it has at least ``min_peaks`` peaks (Cheetah's
``minPeaks``; OnDA's ``min_num_peaks``).  Like Ke et al. (2018, §3.2) with
DIALS, the settings are tuned per run (here per simulator preset) on
validation frames only: :func:`tune_peakfinder8`.

Like OnDA's ``Peakfinder8PeakDetection``, :class:`Peakfinder8` is set up once
and then called per frame (:meth:`Peakfinder8.find_peaks`); the radius map and
the resolution mask are cached per detector geometry (a run with a fixed
beam centre pays the set-up once; simulated frames with a jittered beam
centre pay it per frame, tens of ms, more in fast mode).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Sequence, TypedDict

import numpy as np

from diffscreen.errors import ConfigError
from diffscreen.io.frame import Frame
from diffscreen.preprocess.geometry import beam_centre

__all__ = ["PeakList", "Peakfinder8Config", "Peakfinder8", "resolution_radius_px", "tune_peakfinder8"]


class PeakList(TypedDict):
    """Peaks found in one frame (OnDA's ``TypePeakList``), as arrays.

    ``fs``, ``ss`` : (P,) float32 peak centroids, fast-scan (x) and slow-scan (y), px.
    ``intensity`` : (P,) float32 background-subtracted integrated intensity, ADU.
    ``num_pixels`` : (P,) int32 pixels in the peak.
    ``max_pixel_intensity`` : (P,) float32 brightest pixel, ADU.
    ``snr`` : (P,) float32 integrated signal-to-noise ratio.
    ``num_peaks`` : int
    """

    num_peaks: int
    fs: np.ndarray
    ss: np.ndarray
    intensity: np.ndarray
    num_pixels: np.ndarray
    max_pixel_intensity: np.ndarray
    snr: np.ndarray


@dataclass(frozen=True)
class Peakfinder8Config:
    """peakfinder8 settings and the hit rule.

    Attributes
    ----------
    adc_threshold : float
        Minimum pixel value of a peak pixel, ADU (OnDA: 0–250 typical).
    min_snr : float
        Minimum signal-to-noise ratio of a peak pixel and of the peak (5–6 typical).
    min_pixel_count, max_pixel_count : int
        Allowed peak size, pixels (1–30 typical; 1–2 px spots on a hybrid
        pixel detector, more on a CCD with a wide PSF).
    local_bg_radius : int
        Radius of the local background annulus, px (4 typical).
    low_res_A, high_res_A : float or None
        Resolution limits in Å: peaks are searched only between d = low_res_A
        (inner radius) and d = high_res_A (outer radius).  Needs the frame's
        geometry; frames without it use ``min_radius_px`` / ``max_radius_px``.
    min_radius_px, max_radius_px : float
        Radius limits in px about the beam centre (used alone when no
        resolution limit is set or the frame lacks geometry).
    min_peaks : int
        A frame with at least this many peaks is a hit (OnDA: 8–10 typical).
    max_num_peaks : int
        The search stops after this many peaks.
    fast_mode : bool
        peakfinder8's fast mode: radial background statistics from a random
        sample of ``pixels_per_bin`` pixels per 1-px ring (4–5× faster).
    pixels_per_bin : int
        Sample size per ring in fast mode (OnDA's default 100).
    """

    adc_threshold: float = 100.0
    min_snr: float = 5.0
    min_pixel_count: int = 2
    max_pixel_count: int = 30
    local_bg_radius: int = 4
    low_res_A: float | None = None
    high_res_A: float | None = None
    min_radius_px: float = 0.0
    max_radius_px: float = 1e9
    min_peaks: int = 10
    max_num_peaks: int = 2048
    fast_mode: bool = False
    pixels_per_bin: int = 100

    def __post_init__(self):
        if self.min_snr <= 0 or self.adc_threshold < 0:
            raise ConfigError("peakfinder8: min_snr must be > 0 and adc_threshold >= 0")
        if not 1 <= self.min_pixel_count <= self.max_pixel_count:
            raise ConfigError("peakfinder8: need 1 <= min_pixel_count <= max_pixel_count")
        if self.local_bg_radius < 1 or self.min_peaks < 1 or self.max_num_peaks < 1 or self.pixels_per_bin < 1:
            raise ConfigError("peakfinder8: local_bg_radius, min_peaks, max_num_peaks and pixels_per_bin must be >= 1")
        if self.low_res_A is not None and self.high_res_A is not None and self.high_res_A >= self.low_res_A:
            raise ConfigError("peakfinder8: high_res_A must be smaller (finer) than low_res_A")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Peakfinder8Config":
        """Build from a dict (e.g. a tuning record); unknown keys raise ConfigError."""
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ConfigError(f"peakfinder8: unknown settings {sorted(unknown)}")
        return cls(**d)


def resolution_radius_px(d_A: float, *, wavelength_A: float, distance_mm: float, pixel_size_mm: float) -> float:
    """Detector radius (px) at which Bragg spacing ``d_A`` lands, flat detector normal to the beam.

    2θ = 2·asin(λ / 2d), r = D·tan 2θ / p.  A spacing finer than λ/2 cannot
    diffract and gives ``inf``.
    """
    x = wavelength_A / (2.0 * d_A)
    if x >= 1.0:
        return math.inf
    two_theta = 2.0 * math.asin(x)
    if two_theta >= math.pi / 2:
        return math.inf
    return distance_mm * math.tan(two_theta) / pixel_size_mm


def _peakfinder_8():
    try:
        from om.algorithms._crystallography import peakfinder_8
    except ImportError as exc:  # pragma: no cover - ondamonitor is a dependency
        raise ConfigError(f"peakfinder8 needs the 'ondamonitor' package ({exc})") from None
    return peakfinder_8


class Peakfinder8:
    """Cheetah's peakfinder8 (via OnDA Monitor) as a hit-finder.

    Parameters
    ----------
    config : Peakfinder8Config, optional
    seed : int
        Seeds the pixel sample of fast mode, so results are reproducible.

    Examples
    --------
    >>> pf = Peakfinder8(Peakfinder8Config(adc_threshold=50, min_peaks=10))   # doctest: +SKIP
    >>> peaks = pf.find_peaks(frame)                                       # doctest: +SKIP
    >>> peaks["num_peaks"], pf.is_hit(peaks)                               # doctest: +SKIP
    """

    #: labels a peak count can give
    class_names = ("hit", "miss")

    def __init__(self, config: Peakfinder8Config | None = None, *, seed: int = 0):
        self.config = config or Peakfinder8Config()
        self.seed = seed
        self._pf8 = _peakfinder_8()
        self._geom_key = self._geom = self._range_key = self._in_range = None

    # --- geometry, cached per detector layout -------------------------------------
    def _geometry(self, frame: Frame):
        m, (H, W) = frame.meta, frame.shape
        cx, cy = beam_centre(m, (H, W))
        c = self.config
        use_res = c.low_res_A is not None or c.high_res_A is not None
        key = (H, W, cx, cy)
        if key != self._geom_key:  # radius map and fast-mode ring sample: per beam centre
            x = np.arange(W, dtype=np.float32) - np.float32(cx)
            y = np.arange(H, dtype=np.float32)[:, None] - np.float32(cy)
            radius = np.sqrt(x * x + y * y)  # (H, W) float32, C-contiguous
            stats = self._ring_sample(radius) if c.fast_mode else (0, None, None)
            self._geom_key, self._geom, self._range_key = key, (radius, stats), None
        radius, stats = self._geom
        range_key = (key, m.pixel_size_mm, m.distance_mm, m.wavelength_A) if use_res else key
        if range_key != self._range_key:  # resolution limits: per detector distance and wavelength too
            r_min, r_max = float(c.min_radius_px), float(c.max_radius_px)
            geom_ok = all(v and v > 0 for v in (m.pixel_size_mm, m.distance_mm, m.wavelength_A))
            if use_res and geom_ok:
                kw = dict(wavelength_A=m.wavelength_A, distance_mm=m.distance_mm, pixel_size_mm=m.pixel_size_mm)
                if c.low_res_A is not None:
                    r_min = max(r_min, resolution_radius_px(c.low_res_A, **kw))
                if c.high_res_A is not None:
                    r_max = min(r_max, resolution_radius_px(c.high_res_A, **kw))
            self._range_key, self._in_range = range_key, (radius >= r_min) & (radius <= r_max)
        return radius, self._in_range, stats

    def _ring_sample(self, radius: np.ndarray):
        """Fast mode's pixel sample: up to ``pixels_per_bin`` random pixels of every 1-px ring.

        Same statistics as OnDA's ``_compute_radial_stats_pixels``, but from a
        permutation fixed per frame shape (seeded) and a radix sort, so a new
        beam centre costs tens of ms, not hundreds.
        """
        n_pix = radius.size
        if getattr(self, "_perm", None) is None or len(self._perm) != n_pix:
            self._perm = np.random.default_rng(self.seed).permutation(n_pix).astype(np.int32)
        perm = self._perm
        ring = np.rint(radius.ravel()[perm]).astype(np.int16 if radius.max() < 32000 else np.int32)
        order = np.argsort(ring, kind="stable")  # radix sort for int16
        ring_sorted = ring[order]
        starts = np.concatenate([[0], np.cumsum(np.bincount(ring_sorted))])
        rank = np.arange(n_pix) - starts[ring_sorted]
        take = rank < self.config.pixels_per_bin
        idx = np.ascontiguousarray(perm[order[take]], dtype=np.int32)
        return len(idx), idx, np.ascontiguousarray(ring_sorted[take], dtype=np.int32)

    # --- per frame ------------------------------------------------------------------
    def find_peaks(self, frame: Frame) -> PeakList:
        """Find the Bragg peaks of one frame.

        Parameters
        ----------
        frame : Frame
            ``data`` (H, W) float32 in ADU; masked pixels are never peak pixels.

        Returns
        -------
        PeakList
        """
        c = self.config
        radius, in_range, (n_stats, stats_idx, stats_r) = self._geometry(frame)
        mask = np.ascontiguousarray(in_range & ~frame.mask, dtype=np.int8)
        data = np.ascontiguousarray(frame.data, dtype=np.float32)
        H, W = data.shape
        out = self._pf8(
            c.max_num_peaks, data, mask, radius, n_stats, stats_idx, stats_r, int(c.fast_mode),
            W, H, 1, 1, float(c.adc_threshold), float(c.min_snr), int(c.min_pixel_count),
            int(c.max_pixel_count), int(c.local_bg_radius),
        )  # fmt: skip
        return PeakList(
            num_peaks=len(out[0]),
            fs=np.asarray(out[0], np.float32),
            ss=np.asarray(out[1], np.float32),
            intensity=np.asarray(out[2], np.float32),
            num_pixels=np.asarray(out[4], np.int32),
            max_pixel_intensity=np.asarray(out[5], np.float32),
            snr=np.asarray(out[6], np.float32),
        )

    def is_hit(self, peaks: PeakList) -> bool:
        """``num_peaks >= config.min_peaks``."""
        return peaks["num_peaks"] >= self.config.min_peaks

    @staticmethod
    def peak_table(peaks: PeakList) -> np.ndarray:
        """(P, 4) float32 table x, y, intensity, SNR — the layout of :class:`~diffscreen.io.cxi.CXIWriter` peaks."""
        return np.stack([peaks["fs"], peaks["ss"], peaks["intensity"], peaks["snr"]], axis=1).reshape(-1, 4)

    # --- the screening-method protocol of diffscreen.screen -----------------------------
    score_columns = ("n_peaks",)

    @property
    def identity(self) -> str:
        """Identifies the settings (a resumed screen must use the same)."""
        return "peakfinder8:" + ",".join(f"{k}={v}" for k, v in sorted(self.config.to_dict().items()))

    def classify(self, frames: Sequence[Frame]) -> list:
        """Screening decisions for a batch of frames (see :func:`diffscreen.screen.screen`).

        Returns
        -------
        list of FrameDecision
            ``scores = (num_peaks,)``, label ``"hit"`` or ``"miss"``, the peak table.
        """
        from diffscreen.screen.method import FrameDecision

        out = []
        for fr in frames:
            p = self.find_peaks(fr)
            hit = self.is_hit(p)
            out.append(FrameDecision((float(p["num_peaks"]),), "hit" if hit else "miss", hit, None, self.peak_table(p)))
        return out


def _robust_sigma(frames: Sequence[Frame]) -> float:
    """Median over frames of the robust pixel noise 1.4826·MAD of the unmasked pixels, ADU."""
    sig = []
    for fr in frames:
        v = fr.data[~fr.mask][::7]
        if v.size:
            sig.append(1.4826 * np.median(np.abs(v - np.median(v))))
    return float(np.median(sig)) if sig else 1.0


def tune_peakfinder8(
    frames: Sequence[Frame],
    labels: Sequence[str],
    *,
    base: Peakfinder8Config | None = None,
    adc_sigmas: Sequence[float] = (0.0, 1.0, 2.0, 4.0, 8.0),
    min_snrs: Sequence[float] = (4.0, 5.0, 6.0, 8.0),
    adc_thresholds: Sequence[float] | None = None,
    max_min_peaks: int = 60,
    seed: int = 0,
    progress=None,
) -> tuple[Peakfinder8Config, list[dict]]:
    """Choose peakfinder8 settings and the hit threshold on labelled validation frames.

    A grid search, as Ke et al. (2018, §3.2) tuned DIALS per run: for every
    ADC threshold (in units of the run's robust pixel noise σ, the median of
    1.4826·MAD over the frames) and minimum SNR, the peaks of every frame are
    counted once; then every hit threshold ``min_peaks`` from 1 to
    ``max_min_peaks`` is scored.  The objective is the balanced accuracy of
    the keep decision (count ≥ min_peaks) against "hit or maybe" — the same
    keep decision the CNN makes (Ke Eq. 4: hit + maybe against miss).  Of
    equally good hit thresholds the middle one is taken; of equally good
    settings, the first in grid order.

    Parameters
    ----------
    frames : sequence of Frame
        Validation frames (never the test frames).
    labels : sequence of {"hit", "maybe", "miss"}
    base : Peakfinder8Config, optional
        The other settings (pixel counts, radius, resolution limits, mode).
    adc_sigmas, min_snrs : sequence of float
        The grid.
    adc_thresholds : sequence of float, optional
        ADC thresholds in ADU, used instead of ``adc_sigmas`` (e.g. a single
        value fixed by hand, leaving only the hit threshold to tune).
    max_min_peaks : int
    seed : int
    progress : callable, optional
        Called with the number of frames processed after each frame.

    Returns
    -------
    config : Peakfinder8Config
        The best settings.
    grid : list of dict
        Every setting tried: ``adc_threshold``, ``min_snr``, best ``min_peaks``
        and its ``balanced_accuracy``.

    Raises
    ------
    ConfigError
        No frames, lengths differ, unknown labels, or only one class present.
    """
    if len(frames) == 0 or len(frames) != len(labels):
        raise ConfigError(f"tuning needs frames and labels of equal, non-zero length (got {len(frames)}, {len(labels)})")
    bad = set(labels) - {"hit", "maybe", "miss"}
    if bad:
        raise ConfigError(f"tuning labels must be hit, maybe or miss; got {sorted(bad)}")
    keep = np.array([lab != "miss" for lab in labels])
    if keep.all() or not keep.any():
        raise ConfigError("tuning needs both kept (hit/maybe) and miss frames among the validation frames")
    base = base or Peakfinder8Config()
    adcs = list(adc_thresholds) if adc_thresholds is not None else [a * _robust_sigma(frames) for a in adc_sigmas]
    thresholds = np.arange(1, max_min_peaks + 1)
    grid, best = [], (-1.0, None)
    for adc in adcs:
        for snr in min_snrs:
            cfg = replace(base, adc_threshold=float(adc), min_snr=float(snr))
            pf = Peakfinder8(cfg, seed=seed)
            counts = np.array([pf.find_peaks(fr)["num_peaks"] for fr in frames])
            if progress:
                progress(len(frames))
            pred = counts[None, :] >= thresholds[:, None]  # (T, N)
            tpr = (pred & keep).sum(1) / keep.sum()
            tnr = (~pred & ~keep).sum(1) / (~keep).sum()
            bal = (tpr + tnr) / 2
            plateau = np.flatnonzero(bal == bal.max())
            k = int(plateau[len(plateau) // 2])  # the middle of the best thresholds: least sensitive
            rec = {"adc_threshold": cfg.adc_threshold, "min_snr": snr, "min_peaks": int(thresholds[k]),
                   "balanced_accuracy": float(bal[k])}  # fmt: skip
            grid.append(rec)
            if bal[k] > best[0]:
                best = (float(bal[k]), replace(cfg, min_peaks=int(thresholds[k])))
    return best[1], grid
