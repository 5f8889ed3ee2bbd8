"""Frame and run generation: :class:`Simulator`, :func:`simulate_frame`, :func:`simulate_run`.

One frame
---------
1. Draw the frame's kind from the class fractions (hit, maybe, or one of the
   miss kinds: weak crystal, solvent only, empty jet, no X-ray pulse), then the
   geometry (energy, distance, beam centre), detector (gain, noise, PSF),
   background (water ring, air, jet streak, kapton belt, shadowed strip) and
   crystals (1–3 lattices; cell, random orientation, mosaicity, domain size,
   B factor).  Everything comes from ``numpy.random.default_rng([seed, index])``,
   so a frame depends only on (preset, seed, index, class fractions).
2. Predict reflections on the Ewald sphere with partialities and radial
   streaks (:mod:`~diffscreen.simulate.crystal`), project them on the
   detector, and render them with the PSF (:mod:`~diffscreen.simulate.detector`)
   on top of the diffuse background (:mod:`~diffscreen.simulate.background`).
3. Apply shadows, photon noise, gain, dark offset and read noise, saturation
   and the detector mask.

Detectable spots and labels (Ke et al. 2018, §3.3.1)
----------------------------------------------------
A Bragg spot is *detectable* when its integrated signal-to-noise ratio,
computed from expected (noise-free) values over the spot's footprint, reaches
``preset.snr_threshold`` (default 5):

    SNR = S / sqrt(S + B + n·σ_read²)

with S the spot's photons and B the background photons in the footprint, n its
pixel count and σ_read the read noise in photons.  The footprint is the set of
pixels where the spot's profile is ≥ 15 % of its maximum; only trusted pixels
count (not masked, not a CSPAD ASIC perimeter, not in the shadowed strip), and
a spot with less than half its footprint flux on trusted pixels is not
detectable (SNR := 0).  The label is derived from the number of detectable
spots: ≥ ``hit_min_spots`` (10) → ``"hit"``, ≥ ``maybe_min_spots`` (4) →
``"maybe"``, otherwise ``"miss"``.

Class fractions
---------------
The crystal's exposure scale A (photons per unit Wilson intensity at s → 0
with full partiality; ∝ pulse fluence × crystal volume / cell volume) is what
decides how many spots are detectable.  Because each spot's SNR grows
monotonically with A, every spot j has a threshold A*_j at which it becomes
detectable (the positive root of SNR(A) = T).  With a_N the N-th smallest
threshold of the frame's crystals: a *hit* frame draws A log-uniformly in
[a_10, 300·a_10] (crystal volume × fluence spread over 2.5 decades above the
10-spot level); a *maybe* frame draws a target N uniformly in 4–9 and a
*weak-crystal miss* N uniformly in 0–3, then A log-uniformly between a_N and
a_(N+1).  The exposure distribution is thus a mixture whose weights are the
requested class fractions; the stored label is still computed afterwards from
the final detectable count, never copied from the kind.

Domain randomisation (issue 13)
-------------------------------
Presets with any of the issue-13 features on (:attr:`Preset.randomised`, the
``wide_*`` presets) draw them from a second stream,
``default_rng([seed, index, 13013])``, after the frame's usual draws: per-frame
pixel size, off-centre beam, Cu/Mo Kα energies, ice rings (hexagonal ice Ih
lines, :data:`~diffscreen.simulate.presets.ICE_RINGS_D_A`) and salt/powder
rings (added to the diffuse background as Gaussians in s = 1/d, plus grains on
the ring), cosmic-ray tracks and overload markers.  None of them is a Bragg
spot, so none counts towards the label; spots on a ring are scored against the
ring's background.  Presets that leave these fields at their defaults consume
exactly the random numbers of earlier versions (bit-identical frames).  When a
wide-preset hit cannot reach 10 detectable spots (small-molecule cells), its
few spots are made strong (exposure up to ``_HIT_RANGE`` × the last
threshold) instead of just detectable.

Kapton shadow on spots: a spot takes the belt's transmission at its centroid
unless the shadow's edge is within reach of its window or the transmission
changes by more than 2 % across it; then it is evaluated per pixel
(:func:`kapton_near_edge`; each spot's transmitted flux is right to 1 %).
Render windows are the smallest of :data:`_WINDOWS` (1-px steps up to 12 px)
that hold the spot's core (3σ) and its tail down to 0.3·√background.  When
those windows would cover more than :data:`_FFT_RENDER_PIXELS` pixels (dense
photosystem II hits), the spots are rendered instead by one FFT convolution of
the intrinsic spots with the PSF's exact transfer function
(:meth:`Simulator._render_fft`): same Gaussian core, the exact (not
quadrature-approximated) tail, and no tail cut-off, i.e. a few % more photons
per bright spot land in its faint halo.  Detection SNRs are computed from the
analytic windows in both cases, so the labels and peak lists do not depend on
the renderer.

Noise is digitised in one compiled pass over the rows (:meth:`Simulator._digitise`,
:mod:`diffscreen.simulate._kernels`) from the same random draws, in the same
order, as the whole-frame numpy reference (``digitise_full`` in ``tests/reference/simulate.py``);
spot windows are scored and rendered, and the diffuse background evaluated, by
compiled loops too (issue 3: 20 frames/s on one core at 1920 × 1920).
Frame-sized scratch arrays are kept in the :class:`Simulator` and reused, so
one Simulator must not be used from several threads at once.

Exact footprint sums are computed only for spots that can matter: a cheap
bound (all flux in the footprint, background ≥ ¼ of the centre pixel's) ranks
the spots, exact thresholds are computed in that order until the needed
smallest ones are certain, and exact SNRs are then computed for every spot
whose bound allows SNR ≥ 1; all others are recorded as SNR 0.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from diffscreen.errors import ConfigError
from diffscreen.io.frame import CLASS_NAMES, Frame, FrameMeta
from diffscreen.simulate import _kernels
from diffscreen.simulate.background import (
    PowderRing,
    WaterRing,
    air_profile,
    beam_stop_shadow,
    cosmic_tracks,
    diffuse_background,
    jet_streak,
    kapton_transmission,
    ring_grains,
    ring_profile,
    ring_radius_px,
    water_profile,
)
from diffscreen.simulate.crystal import (
    HC_KEV_A,
    b_matrix,
    predict_reflections,
    random_rotation,
)
from diffscreen.simulate.detector import (
    POISSON_GAUSS_ABOVE,
    POISSON_LEVELS,
    POISSON_TOP_LEVEL,
    PSF,
    normal_table,
    poisson_table,
    poisson_table12,
    random_u16,
)
from diffscreen.simulate.presets import ICE_RINGS_D_A, Preset, detector_layout, get_preset, pixel_maps

__all__ = [
    "SimFrame",
    "Simulator",
    "simulate_frame",
    "simulate_run",
    "KINDS",
    "DEFAULT_CLASS_FRACTIONS",
    "DEFAULT_MISS_BREAKDOWN",
    "label_from_count",
]

#: Frame kinds: what the simulator aimed for (the label is derived separately).
KINDS = ("hit", "maybe", "weak", "solvent", "empty", "no_beam")
#: Default class fractions (hit / maybe / miss).
DEFAULT_CLASS_FRACTIONS = {"hit": 0.30, "maybe": 0.15, "miss": 0.55}
#: How misses split: a crystal with < 4 detectable spots, solvent only (no
#: crystal), empty (jet missed the beam: no water ring), no X-ray pulse.
DEFAULT_MISS_BREAKDOWN = {"weak": 0.30, "solvent": 0.40, "empty": 0.15, "no_beam": 0.15}

_BLUR_SUM_K2 = 36.0 / 256.0  # Σ K² of the [1,2,1]⊗[1,2,1]/16 noise kernel
_FOOTPRINT_LEVEL = 0.15
_RECORD_SNR = 1.0
_HIT_RANGE = 3000.0
#: render window half-sizes (px): the smallest one ≥ the needed size is used
_WINDOWS = np.array([2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 14, 16, 18, 20, 24, 28, 32, 40, 48])
_RENDER_MIN_PHOTONS = 0.5
#: above this many render-window pixels a frame's spots are rendered by FFT convolution (with the
#: compiled window renderer at ~5 ns a pixel, about where the two cost the same on one core)
_FFT_RENDER_PIXELS = 40_000_000
#: zero padding (px) of the FFT renderer against wrap-around of the PSF tail
_FFT_PAD = 96
#: key of the separate random stream of the issue-13 features: ``default_rng([seed, index, _AUX_KEY])``
_AUX_KEY = 13013
#: at most this many grains per ring (speed)
_MAX_GRAINS = 6000
#: values of the 2ⁿ−1 overload markers
_MARKER_BITS = (12, 14, 16, 20)


def label_from_count(n_spots: int, preset: Preset | None = None) -> str:
    """Ke et al. (2018) §3.3.1 label from a detectable-spot count.

    Parameters
    ----------
    n_spots : int
    preset : Preset, optional
        Supplies the thresholds (default 10 and 4).

    Returns
    -------
    {"hit", "maybe", "miss"}
    """
    hit_min = preset.hit_min_spots if preset else 10
    maybe_min = preset.maybe_min_spots if preset else 4
    if n_spots >= hit_min:
        return "hit"
    if n_spots >= maybe_min:
        return "maybe"
    return "miss"


@dataclass
class SimFrame:
    """One simulated frame with its ground truth.

    Attributes
    ----------
    data : (H, W) int32 ndarray
        Pixel values, ADU.  Pixels without sensor (beam hole, gaps) are 0;
        saturated pixels equal ``meta.extra["saturation_adu"]`` (inside the
        low-gain zone of a mixed-gain CSPAD frame,
        ``meta.extra["saturation_adu_inner"]`` = ratio × that).
    mask : (H, W) bool ndarray
        True = bad: no sensor behind the pixel (beam hole, detector border,
        CSPAD gaps).  ``data[mask] == 0``.
    meta : FrameMeta
        Geometry (pixel size, distance, wavelength, beam centre) and, in
        ``extra``, the drawn parameters (gain, offsets, water level, ...).
    label : {"hit", "maybe", "miss"}
        From ``n_spots`` (Ke §3.3.1 thresholds).
    n_spots : int
        Number of detectable Bragg spots (SNR ≥ ``preset.snr_threshold``).
    peaks : (P, 4) float32 ndarray
        Recorded Bragg spots: expected SNR ≥ 1 over the footprint's trusted
        pixels, or over its active pixels (spots on untrusted ASIC edges or in
        a shadow are listed with SNR 0).  Columns x (fast scan, px), y (slow
        scan, px), total intensity (ADU, expected, before shadows), detection
        SNR (trusted pixels only); sorted by SNR, then intensity, descending.
        ``n_spots == (peaks[:, 3] >= snr_threshold).sum()``.
    kind : str
        What the simulator aimed for (one of :data:`KINDS`); not the label.
    truth : dict
        ``crystals`` (list of dicts: ``cell`` CellSpec, ``U`` (3,3) rotation,
        ``A`` = U @ B (3,3) Å⁻¹, ``scale`` photons, mosaicity, ...), and per
        recorded peak ``hkl`` (P,3) int, ``crystal`` (P,) int, ``partiality``
        (P,), ``d_A`` (P,), ``photons`` (P,).  Also ``trusted`` (H,W) bool:
        the pixels used for spot counting.
    """

    data: np.ndarray
    mask: np.ndarray
    meta: FrameMeta
    label: str
    n_spots: int
    peaks: np.ndarray
    kind: str
    truth: dict = field(default_factory=dict, repr=False)

    def to_frame(self) -> Frame:
        """The frame as a :class:`diffscreen.io.frame.Frame` (float32 data)."""
        return Frame(self.data.astype(np.float32), self.mask, self.meta)


def _parse_fractions(class_fractions, miss_breakdown) -> tuple[np.ndarray, tuple[str, ...]]:
    cf = DEFAULT_CLASS_FRACTIONS if class_fractions is None else class_fractions
    if not isinstance(cf, dict):
        vals = list(cf)
        if len(vals) != 3:
            raise ConfigError(f"class_fractions needs 3 values (hit, maybe, miss), got {len(vals)}")
        cf = dict(zip(CLASS_NAMES, vals))
    unknown = set(cf) - set(CLASS_NAMES)
    if unknown:
        raise ConfigError(f"class_fractions has unknown classes {sorted(unknown)}; use {CLASS_NAMES}")
    mb = DEFAULT_MISS_BREAKDOWN if miss_breakdown is None else miss_breakdown
    unknown = set(mb) - {"weak", "solvent", "empty", "no_beam"}
    if unknown:
        raise ConfigError(f"miss_breakdown has unknown kinds {sorted(unknown)}; use weak, solvent, empty, no_beam")
    f = {k: float(cf.get(k, 0.0)) for k in CLASS_NAMES}
    m = {k: float(mb.get(k, 0.0)) for k in ("weak", "solvent", "empty", "no_beam")}
    if min(f.values()) < 0 or min(m.values()) < 0 or sum(f.values()) <= 0 or sum(m.values()) <= 0:
        raise ConfigError("class fractions and miss breakdown must be non-negative with a positive sum")
    tf = sum(f.values())
    tm = sum(m.values())
    kinds = KINDS
    probs = np.array([f["hit"] / tf, f["maybe"] / tf] + [f["miss"] / tf * m[k] / tm for k in kinds[2:]])
    return probs, kinds


def kapton_near_edge(xs, ys, h, T_c, edge_d, beam_centre, kap_args) -> np.ndarray:
    """Spots whose kapton transmission must be evaluated at every window pixel.

    Those within ``h + 2`` px of the shadow's edge (where T jumps), or whose
    transmission at the window's ends along the edge normal differs from the
    centroid value by more than 2 %.

    Parameters
    ----------
    xs, ys : (m,) float ndarray
        Spot centroids, px.
    h : int or (m,) int ndarray
        Window half-sizes.
    T_c, edge_d : (m,) float ndarray
        Transmission at the centroids; distance from the edge line, px.
    beam_centre : (float, float)
    kap_args : tuple
        ``(pixel_size_mm, distance_mm, normal, mu_t, max_att)``.

    Returns
    -------
    near : (m,) bool ndarray
    """
    cx, cy = beam_centre
    nx, ny = float(kap_args[2][0]), float(kap_args[2][1])
    near = np.asarray(edge_d) <= h + 2
    nrm = np.hypot(nx, ny)
    ex, ey = (nx / nrm, ny / nrm) if nrm > 1e-12 else (1.0, 0.0)
    for sgn in (-1.0, 1.0):  # T at the window's ends across the edge direction
        Te = kapton_transmission(
            (xs - cx + sgn * h * ex).astype(np.float32), (ys - cy + sgn * h * ey).astype(np.float32), *kap_args
        )
        near |= np.abs(Te - T_c) > 0.02 * T_c
    return near


def _asic_boxes(layout) -> list | None:
    """Bounding boxes (row slice, column slice) of the ASICs when each box holds only its ASIC.

    Then per-ASIC gain and common mode are applied box by box (one pass over the
    frame, no gather); None when the layout has no ASICs or the boxes overlap.
    """
    if layout.asic_id is None or layout.n_asics == 0:
        return None
    from scipy import ndimage as ndi

    boxes = ndi.find_objects(layout.asic_id.astype(np.int32) + 1, max_label=layout.n_asics)
    if len(boxes) != layout.n_asics or any(b is None for b in boxes):
        return None
    for k, b in enumerate(boxes):
        if not np.all(layout.asic_id[b] == k):
            return None
    return boxes


def _work(work: dict | None, key: str, shape, dtype=np.float32) -> np.ndarray:
    """A scratch array from ``work`` (reused between frames: no page faults), or a new one."""
    if work is None:
        return np.empty(shape, dtype)
    a = work.get(key)
    if a is None or a.shape != tuple(shape) or a.dtype != dtype:
        a = work[key] = np.empty(shape, dtype)
    return a


def _u(rng, lohi):
    lo, hi = lohi
    return float(lo + (hi - lo) * rng.random())


def _logu(rng, lohi):
    lo, hi = lohi
    return float(np.exp(np.log(lo) + (np.log(hi) - np.log(lo)) * rng.random()))


class Simulator:
    """Physics-based SFX frame simulator.

    Parameters
    ----------
    preset : str or Preset
        A key of :data:`~diffscreen.simulate.PRESETS` (``"rayonix"``,
        ``"rayonix_jet"``, ``"cspad"``) or a :class:`Preset`.
    seed : int
        Run seed; frame ``i`` uses ``numpy.random.default_rng([seed, i])``.
    class_fractions : dict or sequence of 3 floats, optional
        Requested fractions of hit / maybe / miss (normalised); default: the
        preset's ``class_fractions`` (the real annotation counts for the
        CXIDB-76 run presets), else :data:`DEFAULT_CLASS_FRACTIONS`
        (0.30 / 0.15 / 0.55).
    miss_breakdown : dict, optional
        How misses split into ``weak``, ``solvent``, ``empty`` and ``no_beam``
        (normalised); default :data:`DEFAULT_MISS_BREAKDOWN`.

    Raises
    ------
    ConfigError
        Unknown preset, or invalid fractions.

    Notes
    -----
    Physics after Ke et al. (2018) §3.1–3.3 (what CSPAD and Rayonix frames
    look like), Holton et al. (2012) for the fibre-optic CCD point-spread
    function, Sauter et al. (2014) and White (2014) for still-shot
    partiality; the Ewald-sphere/structure of the still calculation follows the
    ideas of nanoBragg (Holton) and Kirian et al. (2010) without their code.
    See the module docstrings of :mod:`diffscreen.simulate` for the models.

    A Simulator keeps a few frame-sized scratch arrays (at most about
    8 × H × W × 4 bytes, ~120 MB at 1920 × 1920) and reuses them for every frame, so its
    memory does not grow with the number of frames; it must not be shared
    between threads (use one per process, as :func:`simulate_run` does).

    Examples
    --------
    >>> sim = Simulator("cspad", seed=1)
    >>> sf = sim.frame(0)
    >>> sf.data.shape, sf.label in ("hit", "maybe", "miss")
    ((1765, 1765), True)
    """

    def __init__(self, preset="rayonix", seed: int = 0, class_fractions=None, *, miss_breakdown=None):
        self.preset = get_preset(preset)
        self.seed = int(seed)
        if class_fractions is None:
            class_fractions = self.preset.class_fractions
        self.kind_probs, self.kinds = _parse_fractions(class_fractions, miss_breakdown)
        self.layout = detector_layout(self.preset)
        self._pixel_gain, self._dead = pixel_maps(self.preset)
        H, W = self.preset.shape
        self._inactive = np.flatnonzero(~self.layout.active.reshape(-1))
        self._work: dict = {}  # scratch frame-sized arrays reused between frames (not thread-safe)
        self._asic_boxes = _asic_boxes(self.layout)
        self._fft_geom = None  # (shape, padded H, padded W, k², |k|) of the FFT spot renderer
        self._active_flat = None  # flat indices of the active pixels (overload markers), computed lazily
        self.source = f"simulated:{self.preset.name}:seed={self.seed}"

    # ------------------------------------------------------------------ draws
    def _draw(self, rng: np.random.Generator, kind: str | None) -> dict:
        P = self.preset
        c = {}
        ukind = rng.random()
        c["kind"] = kind or self.kinds[min(int(np.searchsorted(np.cumsum(self.kind_probs), ukind, "right")), 5)]
        if c["kind"] not in KINDS:
            raise ConfigError(f"unknown frame kind {kind!r}; use one of {KINDS}")
        c["energy_keV"] = _u(rng, P.energy_keV)
        c["wavelength_A"] = HC_KEV_A / c["energy_keV"]
        c["distance_mm"] = (_logu if P.log_distance else _u)(rng, P.distance_mm)
        j = P.beam_centre_jitter_px
        c["beam_centre"] = (
            P.beam_centre_px[0] + j * (2 * rng.random() - 1),
            P.beam_centre_px[1] + j * (2 * rng.random() - 1),
        )
        c["bandwidth"] = _logu(rng, P.bandwidth_fwhm)
        c["gain"] = (_logu if P.log_gain else _u)(rng, P.gain_adu_per_photon)
        c["adu_per_photon"] = c["gain"] / (_BLUR_SUM_K2 if P.noise_blur else 1.0)
        c["read_noise"] = _u(rng, P.read_noise_adu)
        c["dark_offset"] = _u(rng, P.dark_offset_adu)
        c["psf"] = PSF(_u(rng, P.psf_sigma_px), _u(rng, P.psf_tail_g_px), _u(rng, P.psf_core_weight))
        c["spot_sigma"] = _u(rng, P.spot_sigma_px)
        na = self.layout.n_asics
        c["common_mode"] = np.append(rng.normal(0, P.common_mode_adu, na), 0.0).astype(np.float32)
        c["asic_gain"] = np.append(1 + rng.normal(0, P.asic_gain_spread, na), 1.0).astype(np.float32)
        c["double_row"] = _u(rng, P.double_row_factor)
        c["water"] = WaterRing(
            photons=_logu(rng, P.water_photons),
            s0=(1.0 / 3.2) * (1 + 0.02 * (2 * rng.random() - 1)),
            sigma=_u(rng, (0.03, 0.045)),
            second=_u(rng, (0.15, 0.4)),
            floor=_u(rng, (0.05, 0.25)),
        )
        c["air"] = _logu(rng, P.air_photons)
        c["air_s"] = _u(rng, (0.03, 0.12))
        c["jet"] = rng.random() < P.p_jet_streak
        c["jet_params"] = dict(
            photons=_logu(rng, (2.0, 200.0)),
            angle_rad=np.radians(rng.normal(0, 6.0)),
            r_min=_u(rng, (5.0, 40.0)),
            r_max=_u(rng, (150.0, 700.0)),
            decay_px=_logu(rng, (50.0, 400.0)),
            width_px=_u(rng, (0.5, 2.0)),
            asym=_logu(rng, (0.3, 1.0)),
        )
        c["kapton"] = rng.random() < P.p_kapton
        near = rng.random() < 0.7
        phi = np.radians(P.kapton_angle_deg + rng.uniform(-15, 15) if near else rng.uniform(0, 360))
        tau = np.radians(rng.uniform(-1.5, 1.5))
        c["kapton_normal"] = np.array([np.cos(phi) * np.cos(tau), np.sin(phi) * np.cos(tau), np.sin(tau)])
        c["kapton_mu_t"] = _u(rng, P.kapton_mu_t)
        c["kapton_max_att"] = _u(rng, P.kapton_max_att)
        c["strip"] = rng.random() < P.p_strip_shadow
        c["strip_row"] = int(_u(rng, P.strip_shadow_row)) if P.p_strip_shadow > 0 else P.shape[0]
        c["strip_T"] = _u(rng, (0.0, 0.03))
        c["n_hot"] = int(rng.integers(P.hot_pixels[0], P.hot_pixels[1] + 1))
        c["beam_stop"] = None
        if P.p_beam_stop > 0 and rng.random() < P.p_beam_stop:  # (no draw for presets without a stop)
            r_bs = _u(rng, P.beam_stop_radius_px)
            c["beam_stop"] = (r_bs, rng.uniform(0, 2 * np.pi), r_bs * _u(rng, (0.5, 0.8)),
                              _u(rng, P.beam_stop_transmission))  # fmt: skip
        c["mixed_gain"] = rng.random() < P.p_mixed_gain
        two_theta0 = 2 * np.arcsin(min(c["wavelength_A"] / (2 * P.mixed_gain_d_A), 1.0))
        c["pixel_size_mm"] = P.pixel_size_mm
        c["mixed_gain_r_px"] = c["distance_mm"] * np.tan(two_theta0) / P.pixel_size_mm
        # crystals
        n_x = 1
        if rng.random() < P.p_multi_lattice:
            n_x = 2 if rng.random() < 0.7 else 3
        w = np.asarray(P.cell_weights if P.cell_weights else np.ones(len(P.cells)), float)
        xtals = []
        for k in range(n_x):
            xtals.append(
                dict(
                    cell=P.cells[int(rng.choice(len(P.cells), p=w / w.sum()))] if k == 0 else None,
                    U=random_rotation(rng),
                    mosaicity_deg=_logu(rng, P.mosaicity_deg),
                    domain_size_um=_logu(rng, P.domain_size_um),
                    b_factor=_u(rng, P.b_factor_A2),
                    solvent_k=_u(rng, (0.3, 0.7)),
                    rel_scale=1.0 if k == 0 else _logu(rng, (0.1, 1.0)),
                )
            )
        for x in xtals[1:]:  # further lattices: same protein (same sample)
            x["cell"] = xtals[0]["cell"]
        for x in xtals:  # per-cell B range (small molecules): the same draw mapped onto it
            bc = x["cell"].b_factor_A2
            if bc is not None:
                lo, hi = P.b_factor_A2
                f = (x["b_factor"] - lo) / (hi - lo) if hi > lo else 0.5
                x["b_factor"] = bc[0] + f * (bc[1] - bc[0])
        c["crystals"] = xtals
        c["target_u"] = rng.random()
        c["scale_u"] = rng.random()
        return c

    def _draw_aux(self, rng: np.random.Generator, c: dict) -> None:
        """Issue-13 domain randomisation, from its own stream ``rng`` (updates ``c`` in place).

        Pixel size, off-centre beam, home-source energy lines, ice and powder
        rings, cosmic rays and overload markers.  Each feature draws only when
        its probability is > 0.
        """
        P = self.preset
        H, W = P.shape
        if P.pixel_size_range_mm is not None:
            c["pixel_size_mm"] = _u(rng, P.pixel_size_range_mm)
        if P.p_offcentre_beam > 0 and rng.random() < P.p_offcentre_beam:
            c["beam_centre"] = (W * _u(rng, P.offcentre_beam_frac), H * _u(rng, P.offcentre_beam_frac))
        if P.p_energy_line > 0 and P.energy_lines_keV and rng.random() < P.p_energy_line:
            c["energy_keV"] = float(P.energy_lines_keV[int(rng.integers(len(P.energy_lines_keV)))])
        c["wavelength_A"] = HC_KEV_A / c["energy_keV"]
        two_theta0 = 2 * np.arcsin(min(c["wavelength_A"] / (2 * P.mixed_gain_d_A), 1.0))
        c["mixed_gain_r_px"] = c["distance_mm"] * np.tan(two_theta0) / c["pixel_size_mm"]
        lam_A, D, p = c["wavelength_A"], c["distance_mm"], c["pixel_size_mm"]

        def ring(d, photons, kind):
            sig_px = _u(rng, P.ring_sigma_px)
            gf = _u(rng, P.ring_grain_fraction)
            x = lam_A / (2 * d)
            if x >= 1:
                return None
            th = np.arcsin(x)
            R = D * np.tan(2 * th)
            ds_dr = np.cos(th) / lam_A * p * D / (D * D + R * R)  # Å⁻¹ per px at the ring
            return PowderRing(d_A=d, photons=photons * (1 - gf), sigma_s=max(sig_px * ds_dr, 1e-6),
                              grain_photons=photons * gf, grain_spacing_px=_logu(rng, (1.5, 8.0)), sigma_px=sig_px,
                              kind=kind)  # fmt: skip

        rings = []
        if P.p_ice_rings > 0 and rng.random() < P.p_ice_rings:
            top = _logu(rng, P.ice_ring_photons)
            for d, rel in ICE_RINGS_D_A:
                r = ring(d, top * rel * float(np.exp(0.4 * rng.standard_normal())), "ice")
                if r is not None:
                    rings.append(r)
        if P.p_powder_rings > 0 and rng.random() < P.p_powder_rings:
            n = int(rng.integers(P.powder_rings[0], P.powder_rings[1] + 1))
            s_lo, s_hi = 1 / P.powder_ring_d_A[1], 1 / P.powder_ring_d_A[0]
            for _ in range(n):
                r = ring(1 / _u(rng, (s_lo, s_hi)), _logu(rng, P.powder_ring_photons), "powder")
                if r is not None:
                    rings.append(r)
        c["rings"] = rings
        c["n_cosmic"] = 0
        if P.p_cosmic > 0 and rng.random() < P.p_cosmic:
            c["n_cosmic"] = int(rng.integers(P.cosmic_rays[0], P.cosmic_rays[1] + 1))
        c["n_markers"] = 0
        if P.p_overload_markers > 0 and rng.random() < P.p_overload_markers:
            c["n_markers"] = int(rng.integers(P.overload_markers[0], P.overload_markers[1] + 1))

    # ------------------------------------------------------------------ frame
    def frame(self, index: int, *, kind: str | None = None) -> SimFrame:
        """Simulate frame ``index``.

        Parameters
        ----------
        index : int
            Frame index; with the run seed it fixes every random draw.
        kind : str, optional
            Force the kind (one of :data:`KINDS`) instead of drawing it; the
            label is still derived from the detectable-spot count.

        Returns
        -------
        SimFrame
        """
        P = self.preset
        H, W = P.shape
        rng = np.random.default_rng([self.seed, int(index)])
        c = self._draw(rng, kind)
        aux = None
        c["rings"], c["n_cosmic"], c["n_markers"] = [], 0, 0
        if P.randomised or P.pixel_size_range_mm is not None:
            aux = np.random.default_rng([self.seed, int(index), _AUX_KEY])
            self._draw_aux(aux, c)
        kind = c["kind"]
        cx, cy = c["beam_centre"]
        lam_A, D, p = c["wavelength_A"], c["distance_mm"], c["pixel_size_mm"]
        trusted = self.layout.trusted
        if c["strip"]:
            trusted = trusted.copy()
            trusted[c["strip_row"] :] = False
        stop = None
        if c["beam_stop"] is not None:
            r_bs, phi_bs, w_bs, t_bs = c["beam_stop"]
            win, shadow = beam_stop_shadow((H, W), (cx, cy), r_bs, phi_bs, w_bs)
            stop = (win, shadow, t_bs)
            trusted = trusted.copy()
            trusted[win] &= ~shadow  # spots behind the stop are not detectable
        beam = kind != "no_beam"
        spots = None
        if beam:
            water = c["water"]
            if kind == "empty":
                water = WaterRing(photons=0.0)
            air, air_s = c["air"], c["air_s"]
            rings = c["rings"]

            def profile(s):
                if rings:  # powder/ice rings: diffuse background, never Bragg spots (not in the label)
                    return water_profile(s, water) + air_profile(s, air, air_s) + ring_profile(s, rings)
                return water_profile(s, water) + air_profile(s, air, air_s)

            kap = (c["kapton_normal"], c["kapton_mu_t"], c["kapton_max_att"]) if c["kapton"] else None
            lam = diffuse_background((H, W), (cx, cy), p, D, lam_A, profile, kapton=kap, out=_work(self._work, "lam", (H, W)))
            n_grains = 0
            for rg in rings:
                if rg.grain_photons > 0:
                    rr = ring_radius_px(rg.d_A, lam_A, D, p)
                    if np.isfinite(rr):
                        cos2t = D / np.hypot(D, rr * p)
                        n_grains += ring_grains(lam, (cx, cy), aux, rg, rr, cos2t**3, _MAX_GRAINS)
            if kind in ("hit", "maybe", "weak"):
                spots = self._spots(c, rng, lam, trusted)
            if c["jet"]:
                def kapton(xs, ys):
                    return kapton_transmission(xs - cx, ys - cy, p, D, *kap)

                wf = None if kap is None else kapton
                jet_streak(lam, (cx, cy), rng, weight_fn=wf, **c["jet_params"])
            if c["strip"]:
                lam[c["strip_row"] :] *= np.float32(c["strip_T"])
            if stop is not None:
                win, shadow, t_bs = stop
                lam[win][shadow] *= np.float32(t_bs)
            if len(self.layout.double_rows):
                lam.reshape(-1)[self.layout.double_rows] *= np.float32(c["double_row"])
        else:
            lam = None
        if c["n_hot"]:
            # hot pixels are detector defects: they glow without beam too (dark current), so a
            # photon-counting detector's dark frame is not all zeros
            if lam is None:
                lam = np.zeros((H, W), np.float32)
            hot = rng.integers(0, H * W, c["n_hot"])
            lam.reshape(-1)[hot] += np.exp(rng.uniform(np.log(5), np.log(200), c["n_hot"])).astype(np.float32)
        if c["n_cosmic"]:
            # cosmic rays hit the sensor with or without beam; they are not Bragg spots
            if lam is None:
                lam = np.zeros((H, W), np.float32)
            cosmic_tracks(lam, aux, c["n_cosmic"], P.cosmic_length_px, P.cosmic_photons)
        if beam and self._pixel_gain is not None:
            lam *= self._pixel_gain  # fixed flat-field response of each pixel
        data = self._digitise(c, rng, lam)
        data.reshape(-1)[self._dead] = 0
        markers = None
        if c["n_markers"]:
            markers = self._overload_markers(data, aux, c["n_markers"])

        # ---- labels and peaks
        T = P.snr_threshold
        if spots is not None and len(spots["snr"]):
            snr = spots["snr"]
            n_spots = int((snr >= T).sum())
            rec = np.flatnonzero(spots["recorded"])
            rec = rec[np.lexsort((-spots["photons"][rec], -snr[rec]))]
            peaks = np.stack(
                [spots["x"][rec], spots["y"][rec], spots["photons"][rec] * c["adu_per_photon"], snr[rec]], axis=1
            ).astype(np.float32)
            truth_peaks = {k: spots[k][rec] for k in ("hkl", "crystal", "partiality", "d_A", "photons")}
        else:
            n_spots = 0
            peaks = np.zeros((0, 4), np.float32)
            truth_peaks = {
                "hkl": np.zeros((0, 3), np.int64),
                "crystal": np.zeros(0, np.int64),
                "partiality": np.zeros(0),
                "d_A": np.zeros(0),
                "photons": np.zeros(0),
            }
        label = label_from_count(n_spots, P)
        xt = c["crystals"] if kind in ("hit", "maybe", "weak") else []
        crystals = [
            dict(
                cell=x["cell"],
                U=x["U"],
                A=x["U"] @ b_matrix(x["cell"]),
                scale=x.get("scale", 0.0),
                mosaicity_deg=x["mosaicity_deg"],
                domain_size_um=x["domain_size_um"],
                b_factor_A2=x["b_factor"],
            )
            for x in xt
        ]
        extra = {
            "preset": P.name,
            "kind": kind,
            "kind_code": KINDS.index(kind),
            "energy_keV": c["energy_keV"],
            "bandwidth_fwhm": c["bandwidth"],
            "gain_adu_per_photon": c["gain"],
            "adu_per_photon": c["adu_per_photon"],
            "read_noise_adu": c["read_noise"],
            "dark_offset_adu": c["dark_offset"],
            "saturation_adu": float(P.saturation_adu),
            "saturation_adu_inner": float(P.saturation_adu * (P.mixed_gain_ratio if c["mixed_gain"] else 1)),
            "mixed_gain": float(bool(c["mixed_gain"])),
            "snr_threshold": T,
            "psf_sigma_px": c["psf"].sigma,
            "psf_tail_g_px": c["psf"].g,
            "psf_core_weight": c["psf"].w,
            "water_photons": c["water"].photons if (beam and kind != "empty") else 0.0,
            "air_photons": c["air"] if beam else 0.0,
            "jet_streak": float(bool(c["jet"]) and beam),
            "kapton_shadow": float(bool(c["kapton"]) and beam),
            "strip_shadow": float(bool(c["strip"])),
            "beam_stop_radius_px": float(c["beam_stop"][0]) if c["beam_stop"] else 0.0,
            "beam_stop_arm_deg": float(np.degrees(c["beam_stop"][1])) if c["beam_stop"] else float("nan"),
            "n_crystals": float(len(crystals)),
            "crystal_scale": float(crystals[0]["scale"]) if crystals else 0.0,
            "cell": crystals[0]["cell"].name if crystals else "",
        }
        if aux is not None:  # (only for presets with issue-13 features: older presets keep their keys)
            rings_on = c["rings"] if beam else []
            extra.update(
                pixel_size_mm=float(p),
                ice_rings=float(any(r.kind == "ice" for r in rings_on)),
                n_powder_rings=float(sum(r.kind == "powder" for r in rings_on)),
                ring_photons_max=float(max((r.photons + r.grain_photons for r in rings_on), default=0.0)),
                n_cosmic=float(c["n_cosmic"]),
                n_overload_markers=float(0 if markers is None else len(markers)),
            )
        meta = FrameMeta(
            source=self.source,
            index=int(index),
            detector=P.detector,
            pixel_size_mm=p,
            beam_centre_px=(float(cx), float(cy)),
            distance_mm=float(D),
            wavelength_A=float(lam_A),
            extra=extra,
        )
        truth = dict(crystals=crystals, trusted=trusted, **truth_peaks)
        if aux is not None:
            truth["rings"] = [(r.kind, r.d_A, r.photons + r.grain_photons) for r in (c["rings"] if beam else [])]
            truth["overload_pixels"] = markers if markers is not None else np.zeros(0, np.int64)
        return SimFrame(
            data=data,
            mask=~self.layout.active,
            meta=meta,
            label=label,
            n_spots=n_spots,
            peaks=peaks,
            kind=kind,
            truth=truth,
        )

    # ------------------------------------------------------------------ spots
    def _spots(self, c: dict, rng: np.random.Generator, bg: np.ndarray, trusted: np.ndarray) -> dict:
        """Predict, score and render the Bragg spots of all crystals; renders into ``bg`` in place."""
        P = self.preset
        H, W = P.shape
        cx, cy = c["beam_centre"]
        lam_A, D, p = c["wavelength_A"], c["distance_mm"], c["pixel_size_mm"]
        # resolution: detector corner, or where the Wilson fall-off makes spots hopeless
        rcorner = max(np.hypot(x - cx, y - cy) for x in (0, W) for y in (0, H)) * p
        d_corner = lam_A / (2 * np.sin(np.arctan2(rcorner, D) / 2))
        cols = {k: [] for k in ("x", "y", "ux", "uy", "sr", "st", "inten", "crystal", "hkl", "partiality", "d_A")}
        for k, x in enumerate(c["crystals"]):
            d_b = np.sqrt(x["b_factor"] / (2 * np.log(1e4)))
            d_min = max(d_corner, d_b, 1.0)
            A = x["U"] @ b_matrix(x["cell"])
            refl = predict_reflections(
                A,
                rng,
                wavelength_A=lam_A,
                bandwidth_fwhm=c["bandwidth"],
                mosaicity_fwhm_deg=x["mosaicity_deg"],
                domain_size_um=x["domain_size_um"],
                b_factor_A2=x["b_factor"],
                d_min_A=d_min,
                space_group=x["cell"].space_group,
                solvent_k=x["solvent_k"],
            )
            v = refl.direction
            X = D * v[:, 0] / v[:, 2]
            Y = D * v[:, 1] / v[:, 2]
            xs = cx + X / p
            ys = cy + Y / p
            on = (xs > -0.5) & (xs < W - 0.5) & (ys > -0.5) & (ys < H - 0.5)
            if not on.any():
                continue
            refl = refl.take(on)
            xs, ys, X, Y = xs[on], ys[on], X[on], Y[on]
            r = np.hypot(xs - cx, ys - cy)
            ux = np.where(r > 1e-6, (xs - cx) / np.maximum(r, 1e-6), 1.0)
            uy = np.where(r > 1e-6, (ys - cy) / np.maximum(r, 1e-6), 0.0)
            tt = refl.two_theta
            streak = (D / p) * 2 * np.tan(tt / 2) / np.cos(tt) ** 2 * refl.sigma_lnlam
            sig_eta = np.radians(x["mosaicity_deg"]) / 2.3548
            s0 = c["spot_sigma"]
            cols["x"].append(xs)
            cols["y"].append(ys)
            cols["ux"].append(ux)
            cols["uy"].append(uy)
            cols["sr"].append(np.sqrt(s0**2 + streak**2))
            cols["st"].append(np.sqrt(s0**2 + (r * sig_eta) ** 2))
            cols["inten"].append(refl.intensity * x["rel_scale"])
            cols["crystal"].append(np.full(len(xs), k))
            cols["hkl"].append(refl.hkl)
            cols["partiality"].append(refl.partiality)
            cols["d_A"].append(refl.d)
        if not cols["x"]:
            for x in c["crystals"]:
                x["scale"] = 0.0
            return None
        S = {k: np.concatenate(v) for k, v in cols.items()}
        n = len(S["x"])
        psf = c["psf"]
        kap = c["kapton"]
        T = P.snr_threshold
        sig_read_ph2 = (c["read_noise"] ** 2 + 1 / 12) / c["adu_per_photon"] ** 2

        # ---- cheap bounds for every spot: u <= inten, C >= bg(centre)/4 + σ²
        ixc = np.clip(np.rint(S["x"]).astype(np.int64), 0, W - 1)
        iyc = np.clip(np.rint(S["y"]).astype(np.int64), 0, H - 1)
        bg_c = bg.reshape(-1)[iyc * W + ixc].astype(np.float64)  # bg includes the kapton shadow
        u_ub = S["inten"]
        C_lb = 0.25 * bg_c + sig_read_ph2

        # ---- exact footprint values, computed lazily for the spots that matter
        u = np.zeros(n)
        C = np.full(n, np.inf)
        u_act = np.zeros(n)  # same over all active pixels (trusted or not): for the peak list
        C_act = np.full(n, np.inf)
        active = self.layout.active
        bgmean = bg_c.copy()
        done = np.zeros(n, bool)
        sgr = np.sqrt(S["sr"] ** 2 + psf.sigma**2 + 1 / 12)
        sgt = np.sqrt(S["st"] ** 2 + psf.sigma**2 + 1 / 12)
        ext = np.maximum(2.5 * np.maximum(sgr, sgt), 1.4 * np.sqrt(S["sr"] ** 2 + psf.g**2) * (psf.w < 1))
        hf = np.clip(np.ceil(ext) + 1, 2, 12).astype(int)

        # kapton shadow of each spot: the transmission at its centroid, evaluated per pixel only
        # for spots within reach of the shadow's edge (where T jumps) or where T changes by more
        # than 2 % across the window; elsewhere it is smooth over the window and the centroid
        # value gives the spot's transmitted flux to second order in the window size
        G = np.ascontiguousarray(np.stack([S["x"], S["y"], S["ux"], S["uy"], S["sr"], S["st"]], axis=1))
        if kap:
            kap_args = (p, D, c["kapton_normal"], c["kapton_mu_t"], c["kapton_max_att"])
            kap_k = _kernels.kapton_params((cx, cy), *kap_args)
            T_c = kapton_transmission(
                (S["x"] - cx).astype(np.float32), (S["y"] - cy).astype(np.float32), *kap_args
            ).astype(np.float64)
            nx, ny, nz = c["kapton_normal"]
            # distance (px) of each spot from the edge line nx·X + ny·Y + nz·D = 0 on the detector
            edge_d = np.abs(nx * (S["x"] - cx) * p + ny * (S["y"] - cy) * p + nz * D) / (
                p * max(np.hypot(nx, ny), 1e-12)
            )
        else:
            kap_k = np.zeros(0)
            T_c = np.ones(n)
            edge_d = np.full(n, np.inf)
        T_c32 = T_c.astype(np.float32)

        def near(sel, h):
            """Spots ``sel`` (windows of half-size ``h``) whose transmission is evaluated per pixel."""
            if not kap:
                return np.zeros(len(sel), bool)
            return kapton_near_edge(S["x"][sel], S["y"][sel], h, T_c[sel], edge_d[sel], (cx, cy), kap_args)

        def exact(idx):
            idx = idx[~done[idx]]
            if not len(idx):
                return
            h = hf[idx]
            sums = np.empty((len(idx), 10))
            _kernels.window_scores(
                sums, G, idx, h, psf.w, psf.sigma, psf.g, T_c32[idx], near(idx, h), kap_k, trusted, active, bg,
                _FOOTPRINT_LEVEL,
            )  # fmt: skip
            p_tr, _, p_fp, pt_tr, pt_act, n_tr, n_act, b_tr, b_act, b_all = sums.T
            frac = p_tr / np.maximum(p_fp, 1e-30)
            u[idx] = np.where(frac >= 0.5, pt_tr, 0.0) * S["inten"][idx]
            C[idx] = b_tr + n_tr * sig_read_ph2
            bgmean[idx] = b_all
            u_act[idx] = pt_act * S["inten"][idx]
            C_act[idx] = b_act + n_act * sig_read_ph2
            done[idx] = True

        def thresholds(uu, CC, t):
            sstar = (t * t + np.sqrt(t**4 + 4 * t * t * CC)) / 2
            with np.errstate(divide="ignore", invalid="ignore"):
                return np.where(uu > 0, sstar / np.where(uu > 0, uu, 1.0), np.inf)

        # ---- exposure scale from the smallest exact detection thresholds
        need = self._needed_count(c)
        lb = thresholds(u_ub, C_lb, T)
        K = min(n, 256)
        while True:
            # the K smallest bounds (any order: only the set, and the next bound X, matter)
            if K < n:
                part = np.argpartition(lb, K)
                first, X = part[:K], lb[part[K]]  # X: the (K+1)-th smallest bound
            else:
                first, X = np.arange(n), np.inf
            exact(first)
            ex = thresholds(u[first], C[first], T)
            valid = np.sort(ex[ex <= X])
            if len(valid) >= need or K == n:
                break
            K = min(n, 4 * K)
        A = self._choose_scale(c, valid)
        for x in c["crystals"]:
            x["scale"] = A * x["rel_scale"]
        photons = A * S["inten"]

        # ---- exact SNR wherever the bound allows SNR >= 1 (recorded spots)
        sig_ub = A * u_ub
        snr_ub = sig_ub / np.sqrt(sig_ub + C_lb)
        exact(np.flatnonzero(snr_ub >= _RECORD_SNR))
        sig = A * u
        sig_act = A * u_act
        with np.errstate(divide="ignore", invalid="ignore"):
            snr = np.where(done & (u > 0), sig / np.sqrt(sig + C), 0.0)
            snr_act = np.where(done & (u_act > 0), sig_act / np.sqrt(sig_act + C_act), 0.0)

        # ---- render with windows sized to the brightness
        idx = np.flatnonzero(photons >= _RENDER_MIN_PHOTONS)
        if len(idx):
            pk = photons[idx]
            h_core = 3.0 * np.maximum(sgr[idx], sgt[idx])
            tau = 0.3 * np.maximum(1.0, np.sqrt(np.maximum(bgmean[idx], 0)))
            h_tail = ((1 - psf.w) * pk * psf.g / (2 * np.pi * tau)) ** (1 / 3) if psf.w < 1 else 0 * pk
            hneed = np.maximum(h_core, h_tail)
            hq = _WINDOWS[np.minimum(np.searchsorted(_WINDOWS, hneed), len(_WINDOWS) - 1)]
            if psf.w < 1 and float(((2 * hq + 1.0) ** 2).sum()) > _FFT_RENDER_PIXELS:
                self._render_fft(bg, G, S, idx, photons, psf, lambda sel, h: (T_c32[sel], near(sel, h), kap_k))
            else:
                _kernels.render_spots(
                    bg, G, idx, hq, psf.w, psf.sigma, psf.g, photons[idx].astype(np.float32), T_c32[idx],
                    near(idx, hq), kap_k,
                )  # fmt: skip
        return dict(
            x=S["x"],
            y=S["y"],
            snr=snr,
            recorded=(snr >= _RECORD_SNR) | (snr_act >= _RECORD_SNR),
            photons=photons,
            hkl=S["hkl"],
            crystal=S["crystal"],
            partiality=S["partiality"],
            d_A=S["d_A"],
        )

    def _render_fft(self, bg: np.ndarray, G, S: dict, idx: np.ndarray, photons: np.ndarray, psf: PSF, transmission):
        """Render many spots at once: intrinsic spots, then one FFT convolution with the PSF.

        Used when the per-spot windows would cover more pixels than
        :data:`_FFT_RENDER_PIXELS` (photosystem II hits with 10⁴–10⁵ spots).  Each
        spot's intrinsic profile (radial / tangential Gaussian, σ² = σ_r,t² + 1/12)
        is deposited in a small window, and the sum is convolved with the PSF
        through its exact transfer function ``w·exp(-2π²σ²k²) + (1-w)·exp(-2πg|k|)``
        (the Fourier transform of the Gaussian core plus the
        ``g / (2π (r² + g²)^{3/2})`` tail).  The core is then the same Gaussian as
        in the window renderer (widths add in quadrature); the tail is the exact
        convolution instead of the quadrature approximation, and it is not cut
        off: every photon of the spot lands on the frame (or off its edge), where
        the windows drop the part of the tail below 0.3·√background.  The frame
        is zero-padded by :data:`_FFT_PAD` px so the periodic convolution does not
        wrap bright tails across the frame.

        ``G`` is the (n, 6) spot table of :func:`~diffscreen.simulate._kernels.window_scores`;
        ``transmission(idx, h)`` gives the kapton arguments (centroid transmission,
        per-pixel flags, belt constants) of the spots ``idx`` with windows ``h``.
        """
        from scipy import fft as sfft

        H, W = bg.shape
        key = (H, W)
        if self._fft_geom is None or self._fft_geom[0] != key:
            Hp = sfft.next_fast_len(H + _FFT_PAD, real=True)
            Wp = sfft.next_fast_len(W + _FFT_PAD, real=True)
            ky = sfft.fftfreq(Hp).astype(np.float32)
            kx = sfft.rfftfreq(Wp).astype(np.float32)
            k2 = ky[:, None] ** 2 + (kx**2)[None, :]
            self._fft_geom = (key, Hp, Wp, k2, np.sqrt(k2))
        _, Hp, Wp, k2, kabs = self._fft_geom
        img = _work(self._work, "fft_img", (Hp, Wp))
        img.fill(0.0)
        sgr_i = np.sqrt(S["sr"][idx] ** 2 + 1 / 12)
        sgt_i = np.sqrt(S["st"][idx] ** 2 + 1 / 12)
        hi = np.clip(np.ceil(3.5 * np.maximum(sgr_i, sgt_i)), 2, 48).astype(int)
        # pure Gaussian (PSF weight 1, σ 0): the intrinsic spot with the pixel's 1/12 px²
        # (spill into the padding is off the detector)
        _kernels.render_spots(img, G, idx, hi, 1.0, 0.0, 1.0, photons[idx].astype(np.float32), *transmission(idx, hi))
        spec = sfft.rfft2(img, workers=1)
        tf = _work(self._work, "fft_tf", k2.shape)
        np.multiply(k2, np.float32(-2 * np.pi**2 * psf.sigma**2), out=tf)
        np.exp(tf, out=tf)
        tf *= np.float32(psf.w)
        tail = np.multiply(kabs, np.float32(-2 * np.pi * psf.g))
        np.exp(tail, out=tail)
        tail *= np.float32(1 - psf.w)
        tf += tail
        spec *= tf
        out = sfft.irfft2(spec, s=(Hp, Wp), workers=1)
        bg += out[:H, :W]

    def _needed_count(self, c: dict) -> int:
        """How many of the smallest detection thresholds the frame's kind needs (and its target count)."""
        P = self.preset
        kind, ut = c["kind"], c["target_u"]
        if kind == "hit":
            c["target_n"] = P.hit_min_spots
        elif kind == "maybe":
            c["target_n"] = P.maybe_min_spots + int(ut * (P.hit_min_spots - P.maybe_min_spots))
        else:  # weak crystal
            c["target_n"] = int(ut * P.maybe_min_spots)
        return c["target_n"] + 1

    def _choose_scale(self, c: dict, a: np.ndarray) -> float:
        """Exposure scale A from the sorted smallest exact detection thresholds ``a``.

        hit: A log-uniform in [a_10, 300·a_10] (crystal volume × fluence spread
        over 2.5 decades above the 10-spot level); maybe / weak: A log-uniform
        between the N-th and (N+1)-th thresholds for the target count N.
        """
        N = c["target_n"]
        us = c["scale_u"]
        if len(a) and not np.isfinite(a[-1]):  # spots that can never be detected (no trusted flux)
            a = a[np.isfinite(a)]
        nf = len(a)
        if nf == 0:
            return 1.0
        if c["kind"] == "hit":
            if nf < N:  # fewer than 10 detectable spots possible (small cells): make them all detectable
                if self.preset.randomised:  # wide presets: few *strong* spots, up to the whole hit range
                    return float(a[-1] * np.exp(us * np.log(_HIT_RANGE)) * (1 + 1e-9))
                return float(a[-1] * (1 + us))
            return float(a[N - 1] * np.exp(us * np.log(_HIT_RANGE)) * (1 + 1e-9))
        N = min(N, nf)
        if N == 0:
            return float(a[0] * np.exp(np.log(0.02) * (1 - us)))  # in [0.02, 1) × the first threshold
        lo_a = a[N - 1]
        hi_a = a[N] if N < nf else a[N - 1] * 2.0
        if hi_a <= lo_a * (1 + 1e-9):
            return float(lo_a * (1 + 1e-9))
        return float(np.exp(np.log(lo_a) + us * (np.log(hi_a) - np.log(lo_a))) * (1 + 1e-9))

    # ------------------------------------------------------------------ noise
    def _overload_markers(self, data: np.ndarray, rng: np.random.Generator, n: int) -> np.ndarray:
        """Peg ``n`` clusters (1–4 px) of active pixels at an overload value, in place; their flat indices.

        The value is ``saturation_adu`` or 2ⁿ−1 (n ∈ :data:`_MARKER_BITS`), as
        detectors and their software mark overloaded or defective pixels.
        These are artefacts, not Bragg spots: they never change the label.
        """
        P = self.preset
        H, W = P.shape
        if self._active_flat is None:
            self._active_flat = np.flatnonzero(self.layout.active.reshape(-1))
        act = self._active_flat
        if not len(act):
            return np.zeros(0, np.int64)
        vals = [P.saturation_adu] + [2**b - 1 for b in _MARKER_BITS]
        out = []
        for _ in range(n):
            i = int(act[rng.integers(len(act))])
            y, x = divmod(i, W)
            k = int(rng.integers(1, 5))
            cl = [(y, x), (y, x + 1), (y + 1, x), (y + 1, x + 1)][:k]
            v = vals[int(rng.integers(len(vals)))]
            for yy, xx in cl:
                if yy < H and xx < W and self.layout.active[yy, xx]:
                    data[yy, xx] = v
                    out.append(yy * W + xx)
        return np.unique(np.asarray(out, np.int64))

    def _mixed_gain_zone(self, c: dict):
        """(y0, y1, x0, x1) bounding the frame's mixed-gain circle, or None (none, or off the frame).

        Ke §3.2 (LG36) mixed gain: pixels inside the 3.2 Å cone read in low gain
        (1/ratio), then scaled back by ratio: same photon scale, ratio × the dark
        noise and ADU step.
        """
        if not c["mixed_gain"]:
            return None
        H, W = self.preset.shape
        cx, cy = c["beam_centre"]
        rm = c["mixed_gain_r_px"]
        y0, y1 = max(int(cy - rm), 0), min(int(cy + rm) + 2, H)
        x0, x1 = max(int(cx - rm), 0), min(int(cx + rm) + 2, W)
        return (y0, y1, x0, x1) if y1 > y0 and x1 > x0 else None

    def _digitise(self, c: dict, rng: np.random.Generator, lam: np.ndarray | None) -> np.ndarray:
        """Expected photons → int32 ADU with photon noise, gain, offset, read noise, saturation, mask.

        Draws the uniform random bits for the whole frame in the order of the
        whole-frame numpy reference (``digitise_full`` in
        ``tests/reference/simulate.py``: same model, same draws) and runs the
        per-pixel chain in one compiled pass
        (:func:`diffscreen.simulate._kernels.digitise`), so the noise of a
        (seed, index) frame is the one earlier versions drew (to one ADU step at
        float rounding ties).
        """
        P = self.preset
        H, W = P.shape
        n = H * W
        work = self._work
        g = np.float32(c["adu_per_photon"])
        offset = float(c["dark_offset"])
        sig_r = float(c["read_noise"])
        asic = self.layout.asic_id
        empty_u16 = np.zeros(0, np.uint16)
        empty_f32 = np.zeros(0, np.float32)
        u_p = zu_hi = u_w = u_z = empty_u16
        tabk = empty_f32
        lam_k = np.zeros((1, 1), np.float32) if lam is None else lam
        mode = 0
        k_blur = 1.0
        if lam is not None and P.noise_blur:
            # the [1,2,1]⊗[1,2,1]-blurred unit normals have std 6; scale the table so that the
            # blurred field times √λ has variance gain · g · λ (ADU²)
            k_blur = np.sqrt(c["gain"] * c["adu_per_photon"]) / 6
            tabk = _work(work, "ntab", (65536,))
            np.multiply(normal_table(), np.float32(k_blur), out=tabk)
            u_z = random_u16(rng, (H + 2) * (W + 2))  # raw normals (× k_blur), as the reference correlated_normal
            mode = 2
        elif lam is not None:
            mode = 1
            u_p = random_u16(rng, 2 * n)
            # Gaussian draws of the λ > 60 pixels before the read noise (the whole-frame order)
            m = _kernels.count_above(lam.reshape(-1), POISSON_GAUSS_ABOVE)
            if m:
                zu_hi = random_u16(rng, m)
        if sig_r > 0 and mode != 2:
            u_w = random_u16(rng, n)
        clip_lo = not P.allow_negative
        mixed = np.zeros(0)
        zone = self._mixed_gain_zone(c)
        if zone is not None:
            (y0, y1, x0, x1), (cx, cy), rm = zone, c["beam_centre"], c["mixed_gain_r_px"]
            mixed = np.array([y0, y1, x0, x1, cx, cy, rm * rm, P.mixed_gain_ratio], np.float64)
        fast_round = clip_lo and not mixed.size
        has_asic = asic is not None
        cm = P.common_mode_adu > 0 and has_asic
        data = np.empty((H, W), np.int32)
        _kernels.digitise(
            data,
            mode,
            lam_k,
            u_p,
            poisson_table12(),
            poisson_table(),
            np.float32((POISSON_LEVELS * 65536.0) ** 2),
            np.float32((POISSON_TOP_LEVEL + 1) * 65536.0),
            POISSON_TOP_LEVEL,
            POISSON_GAUSS_ABOVE,
            zu_hi,
            normal_table(),
            tabk,
            u_z,
            g,
            asic if has_asic else np.zeros((0, 0), np.int16),
            (c["asic_gain"] * g).astype(np.float32) if has_asic else empty_f32,
            c["common_mode"].astype(np.float32) if cm else empty_f32,
            u_w,
            np.float32(sig_r / k_blur if mode == 2 else sig_r),
            np.float32(offset + (0.5 if fast_round else 0.0)),
            np.float32(offset),
            fast_round,
            clip_lo,
            np.float32(P.saturation_adu),
            mixed,
            self.layout.active,
        )
        return data


def simulate_frame(preset, seed: int = 0, index: int = 0, *, class_fractions=None, kind: str | None = None) -> SimFrame:
    """Simulate one frame (convenience wrapper of :meth:`Simulator.frame`).

    Parameters
    ----------
    preset : str or Preset
    seed : int
    index : int
    class_fractions : optional
        As for :class:`Simulator`.
    kind : str, optional
        Force the frame kind (one of :data:`KINDS`).

    Returns
    -------
    SimFrame
    """
    return Simulator(preset, seed=seed, class_fractions=class_fractions).frame(index, kind=kind)


def simulate_run(
    preset,
    n_frames: int,
    out_path,
    *,
    seed: int = 0,
    class_fractions=None,
    start: int = 0,
    progress=None,
    compression: str | None = "bitshuffle-lz4",
    max_peaks: int = 2048,
) -> Path:
    """Simulate frames ``start .. start+n_frames-1`` and stream them into a CXI file.

    Frames are written one at a time with :class:`~diffscreen.io.cxi.CXIWriter`
    (``mask_mode="static"``), so memory stays bounded; the file appears
    atomically at ``out_path`` when the run is complete.

    Parameters
    ----------
    preset : str or Preset
    n_frames : int
        Number of frames (≥ 0).
    out_path : str or Path
        Output ``.cxi``/``.h5`` file.
    seed : int
    class_fractions : optional
        As for :class:`Simulator`.
    start : int
        Index of the first frame (lets a run be split across processes:
        frames depend only on (seed, index)).
    progress : callable, optional
        Called as ``progress(n_done)`` after each frame.
    compression : str or None
        Frame compression for :class:`~diffscreen.io.cxi.CXIWriter`.
    max_peaks : int
        Width of the peak list: at most this many peaks per frame are written
        (the highest-SNR ones; 2048 is Cheetah's default peak-list width).  A
        photosystem II hit can record 10⁴ spots.  ``n_spots`` is always the
        full detectable count.

    Returns
    -------
    Path
        ``out_path``.  The file holds ``/entry_1/data_1/data`` (N, H, W) int32,
        the static mask, per-frame geometry, ``result_1/label`` (index into
        ``("hit", "maybe", "miss")``), ``result_1/n_spots`` and the peak list;
        the drawn numeric parameters (``gain_adu_per_photon``, ``kind_code``,
        ...) are in ``result_1`` too.

    Raises
    ------
    ConfigError
        Negative ``n_frames`` or an invalid preset / fractions.
    """
    from diffscreen.io.cxi import CXIWriter

    if n_frames < 0:
        raise ConfigError(f"n_frames must be >= 0, got {n_frames}")
    sim = Simulator(preset, seed=seed, class_fractions=class_fractions)
    out_path = Path(out_path)
    with CXIWriter(out_path, compression=compression, mask_mode="static", dtype=np.int32, max_peaks=max_peaks) as w:
        for k, i in enumerate(range(start, start + n_frames)):
            sf = sim.frame(i)
            extra = {key: float(v) for key, v in sf.meta.extra.items() if isinstance(v, (int, float, np.floating))}
            w.append(
                sf.data,
                sf.meta,
                mask=sf.mask,
                label=sf.label,
                n_spots=sf.n_spots,
                peaks=sf.peaks,
                extra=extra,
            )
            if progress is not None:
                progress(k + 1)
    return out_path
