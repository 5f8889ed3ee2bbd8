"""Detector/experiment presets of the simulator and the real CXIDB-76 masks they use.

Each :class:`Preset` describes one kind of experiment: the detector (size, pixel,
gain, noise, point-spread function, layout mask), the beam (energy, bandwidth,
distance range), the sample delivery (water ring, air, jet streak, kapton belt)
and the crystals (unit cells, mosaicity, B factor).  Every parameter given as a
``(lo, hi)`` pair is drawn per frame, uniformly, or log-uniformly where the
field's doc says so; this breadth is deliberate (a CNN trained on one look
fails on detectors it never saw).

Sources: Ke et al. (2018) Tables 1–2 and §3.1–3.3 for the runs, gains and
artefacts; Holton et al. (2012) for the fibre-coupled CCD point-spread function.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass, field
from importlib import resources

import numpy as np

from diffscreen.errors import ConfigError
from diffscreen.simulate.crystal import CellSpec

__all__ = [
    "Preset",
    "PRESETS",
    "RUN_PRESETS",
    "WIDE_PRESETS",
    "FAMILIES",
    "CELLS",
    "ICE_RINGS_D_A",
    "get_preset",
    "load_cxidb76_mask",
    "DetectorLayout",
    "detector_layout",
    "tiled_mask",
    "pixel_maps",
]

#: Unit cells of Ke et al. (2018) Table 1.
CELLS: dict[str, CellSpec] = {
    "thermolysin": CellSpec("thermolysin", 93.0, 93.0, 130.0, 90, 90, 120, "P 61 2 2", "Ke 2018 Table 1, L498"),
    "psII_lg36": CellSpec("photosystem II", 118.0, 224.0, 331.0, 90, 90, 90, "P 21 21 21", "Ke 2018 Table 1, LG36"),
    "psII_ln84": CellSpec("photosystem II", 118.0, 223.0, 311.0, 90, 90, 90, "P 21 21 21", "Ke 2018 Table 1, LN84"),
    "hydrogenase": CellSpec("hydrogenase", 73.0, 96.0, 119.0, 90, 90, 90, "P 21 21 21", "Ke 2018 Table 1, LN83"),
    "cyclophilin_a": CellSpec("cyclophilin A", 42.0, 52.0, 88.0, 90, 90, 90, "P 21 21 21", "Ke 2018 Table 1, LO19"),
    "lysozyme": CellSpec("hen egg-white lysozyme", 79.1, 79.1, 37.9, 90, 90, 90, "P 43 21 2", "PDB 193L"),
    # large cell (issue 13): many weak, crowded spots
    "proteasome": CellSpec("yeast 20S proteasome", 135.8, 300.1, 144.4, 90, 113.1, 90, "P 1 21 1",
                           "approx. PDB 1RYP"),  # fmt: skip
    # small-molecule crystals (issue 13): cells of 5-25 Å, few strong spots to high resolution
    "urea": CellSpec("urea", 5.565, 5.565, 4.684, 90, 90, 90, "P -4 21 m", "urea, standard cell (approx.)", (2.0, 5.0)),
    "glycine": CellSpec("alpha-glycine", 5.105, 11.972, 5.463, 90, 111.74, 90, "P 1 21/n 1",
                        "alpha-glycine, standard cell (approx.)", (2.0, 5.0)),  # fmt: skip
    "paracetamol": CellSpec("paracetamol form I", 7.10, 9.37, 11.72, 90, 97.4, 90, "P 1 21/n 1",
                            "paracetamol form I (approx.)", (2.0, 6.0)),  # fmt: skip
    "sucrose": CellSpec("sucrose", 10.86, 8.70, 7.76, 90, 102.9, 90, "P 1 21 1", "sucrose (approx.)", (2.0, 6.0)),
    "cyanocobalamin": CellSpec("cyanocobalamin (vitamin B12)", 16.0, 21.7, 25.3, 90, 90, 90, "P 21 21 21",
                               "wet vitamin B12 crystals (approx.)", (3.0, 10.0)),  # fmt: skip
}

#: Hexagonal ice Ih powder lines (d in Å, relative peak intensity): the standard Ih
#: powder pattern, strong (100) 3.90, (002) 3.67, (101) 3.44 Å and weaker (102)
#: 2.67, (110) 2.25, (103) 2.07, (112) 1.92 Å (relative intensities approximate;
#: each frame scatters them by preferred orientation, see :class:`Preset`).
ICE_RINGS_D_A: tuple[tuple[float, float], ...] = (
    (3.897, 1.00),
    (3.669, 0.60),
    (3.441, 0.55),
    (2.671, 0.20),
    (2.249, 0.25),
    (2.072, 0.20),
    (1.918, 0.15),
)


@dataclass(frozen=True)
class Preset:
    """Physical parameters of one simulated experiment.

    ``(lo, hi)`` pairs are drawn per frame (uniform unless marked log-uniform).

    Attributes
    ----------
    name : str
        Key in :data:`PRESETS`.
    detector : str
        Detector description written to the CXI file.
    shape : (int, int)
        Frame shape (H, W) in pixels (slow scan, fast scan).
    pixel_size_mm : float
        Square pixel size, mm.
    mask_key : str or None
        Key of the trusted-pixel mask in ``diffscreen/data/cxidb76_masks.npz``
        (True = trusted); None = every pixel active.
    layout : {"monolithic", "asic"}
        ``"asic"``: the mask's connected components are ASIC interiors (CSPAD
        ``LG36_mask2``); each is grown by its 1-px perimeter to form the active
        sensor, and the perimeter rows facing the partner ASIC of a 2×1 are the
        wide "big pixels" that read brighter (Ke §3.2).
    beam_centre_px : (float, float)
        Nominal beam centre (x, y), pixels, 0-based.
    beam_centre_jitter_px : float
        Per-frame offset, uniform in ±jitter on each axis.
    distance_mm : (float, float)
        Sample–detector distance, mm.
    energy_keV : (float, float)
        Photon energy, keV.
    bandwidth_fwhm : (float, float)
        Spectral FWHM Δλ/λ (log-uniform).
    cells : tuple of CellSpec
        Unit cells; one is drawn per crystal.
    cell_weights : tuple of float or None
        Drawing weights of ``cells`` (None = equal).
    gain_adu_per_photon : (float, float)
        Noise-equivalent gain = ADU variance / ADU mean of the photon noise, the
        quantity ``dials.find_spots`` calls gain (Ke Table 2: Rayonix
        0.19–0.31, CSPAD 4.55–15.64).  For a pixel-array detector it is the mean
        ADU per photon.  For a phosphor detector (``noise_blur``) one photon's
        light is spread over several pixels, so the mean ADU per photon is
        ``gain / Σ K²`` with K the noise-blur kernel (3-tap binomial: Σ K² =
        0.1406), i.e. 1.4–2.2 ADU per photon for the Rayonix values.
    noise_blur : bool
        Phosphor/fibre-optic detector: photon noise is spatially correlated
        (blurred by the PSF core, approximated by a [1,2,1]⊗[1,2,1]/16 kernel);
        photon noise is Gaussian-approximated.  False: pixel-array detector,
        exact Poisson photon counts (the "grainy" CSPAD water ring).
    read_noise_adu : (float, float)
        Dark (read) noise, ADU rms.
    dark_offset_adu : (float, float)
        Constant offset added to every active pixel, ADU.
    common_mode_adu : float
        Per-ASIC offset, ADU rms (``"asic"`` layout only).
    asic_gain_spread : float
        Relative rms spread of per-ASIC gain (``"asic"`` layout only).
    double_row_factor : (float, float)
        Signal multiplier of the big-pixel rows between paired ASICs.
    saturation_adu : int
        Detector maximum; saturated pixels are pegged at this value.
    allow_negative : bool
        Whether pixel values may go below 0 (dark-subtracted detectors).
    psf_sigma_px : (float, float)
        σ of the Gaussian core of the point-spread function, pixels.
    psf_tail_g_px : (float, float)
        Width g of the long-tailed (Holton 2012 "Lorentzian") PSF component
        K(r) = g / (2π (r² + g²)^{3/2}), pixels.
    psf_core_weight : (float, float)
        Weight of the Gaussian core (the tail has 1 - weight).
    spot_sigma_px : (float, float)
        Intrinsic spot width (beam divergence, crystal size) σ, pixels.
    water_photons : (float, float)
        Water-ring peak, photons per pixel (log-uniform).
    air_photons : (float, float)
        Air/parasitic scatter near the beam, photons per pixel (log-uniform).
    p_jet_streak : float
        Probability of a liquid-jet streak (Ke §3.1, Fig. 5b).
    p_kapton : float
        Probability of the conveyor-belt kapton shadow (Ke §3.1, Fig. 6a).
    kapton_mu_t : (float, float)
        Kapton belt attenuation μ·t at normal incidence.
    kapton_max_att : (float, float)
        Largest attenuation exponent, for rays grazing the belt (μ × distance
        to the belt's edge).
    kapton_angle_deg : float
        Nominal azimuth of the shadowed half-plane's normal (image coordinates,
        degrees from +x towards +y; 90 = lower half of the image).
    p_strip_shadow : float
        Probability that the lower strip is shadowed (CSPAD LG36, Ke §3.2).
    strip_shadow_row : (float, float)
        First shadowed row (slow scan), pixels.
    mosaicity_deg : (float, float)
        Mosaic spread FWHM, degrees (log-uniform).
    domain_size_um : (float, float)
        Mosaic domain size, µm (log-uniform).
    b_factor_A2 : (float, float)
        Wilson B factor, Å².
    p_mixed_gain : float
        Probability of the CSPAD mixed-gain mode of LG36 (Ke §3.2): pixels
        inside the ``mixed_gain_d_A`` cone are read in low gain and multiplied
        by ``mixed_gain_ratio`` (≈ 7), so their dark noise and ADU step are 7×
        larger and they saturate 7× higher.
    mixed_gain_ratio : float
    mixed_gain_d_A : float
        Resolution (Å) of the low-gain cone's edge.
    p_multi_lattice : float
        Probability of a second (and third) crystal in the beam.
    hot_pixels : (int, int)
        Number of hot pixels per frame.
    snr_threshold : float
        A Bragg spot is detectable when its integrated SNR reaches this
        (see :mod:`diffscreen.simulate.run`).
    hit_min_spots, maybe_min_spots : int
        Ke §3.3.1 thresholds: ≥ 10 detectable spots = hit, 4–9 = maybe.
    class_fractions : (float, float, float) or None
        Default hit / maybe / miss fractions of a run of this preset (the
        run presets use the real expert annotation counts of CXIDB-76);
        None = the simulator's generic default.
    tiles : tuple or None
        A generated panel layout when there is no mask file: ``((h, w, edge),
        (ny, nx, gap_y, gap_x), ...)`` — a sensor tile of h × w pixels whose
        ``edge``-pixel perimeter is untrusted, repeated ny × nx times with
        gaps of gap_y / gap_x pixels, then that block repeated by the next
        level, and so on (see :func:`tiled_mask`).
    pixel_gain_rms : float
        Relative rms of a fixed per-pixel gain (flat-field) map, drawn once
        per preset.
    dead_pixels : int
        Number of fixed dead pixels (always 0 ADU, not in the mask: the
        detector's unknown defects), drawn once per preset.
    p_beam_stop : float
        Probability of a beam-stop shadow (disc on a holder arm at a random
        azimuth) for detectors without a central hole.
    beam_stop_radius_px : (float, float)
        Radius of the stop's shadow, px; the arm is 0.5–0.8 × as wide as
        the disc.
    beam_stop_transmission : (float, float)
        Fraction of the X-rays the stop lets through.
    log_gain : bool
        Draw ``gain_adu_per_photon`` log-uniformly (same single draw as the
        uniform one).
    log_distance : bool
        Draw ``distance_mm`` log-uniformly (same single draw).
    pixel_size_range_mm : (float, float) or None
        Per-frame pixel size, mm (only the geometry scales: the pixel grid,
        mask and ``shape`` stay fixed); None = ``pixel_size_mm``.

    The fields below (issue 13, domain randomisation) draw from a separate
    random stream, ``default_rng([seed, index, 13013])``, and only when their
    probability is > 0, so frames of presets that leave them at their defaults
    are bit-identical to those of earlier versions.

    p_offcentre_beam : float
        Probability that the beam centre is drawn anywhere in the frame:
        x ∈ W·``offcentre_beam_frac``, y ∈ H·``offcentre_beam_frac`` (uniform),
        from the middle to near a corner or edge.
    offcentre_beam_frac : (float, float)
    p_energy_line : float
        Probability that the photon energy is one of ``energy_lines_keV``
        (home sources: Cu Kα 8.048 keV, Mo Kα 17.479 keV) instead of the
        ``energy_keV`` draw.
    energy_lines_keV : tuple of float
    p_ice_rings : float
        Probability of hexagonal-ice Ih powder rings (:data:`ICE_RINGS_D_A`).
    ice_ring_photons : (float, float)
        Peak of the strongest (3.90 Å) ice ring, photons per pixel
        (log-uniform); the other lines follow their relative intensity × a
        log-normal factor (σ = 0.4, preferred orientation).
    p_powder_rings : float
        Probability of salt/powder rings at random d-spacings.
    powder_rings : (int, int)
        Number of powder rings when present.
    powder_ring_d_A : (float, float)
        Range of their d-spacings, Å (uniform in 1/d).
    powder_ring_photons : (float, float)
        Peak of each powder ring, photons per pixel (log-uniform).
    ring_sigma_px : (float, float)
        Radial Gaussian σ of a ring, pixels (converted to s at the ring).
    ring_grain_fraction : (float, float)
        Fraction of a ring's flux in grains (small Gaussian blobs on the ring,
        a grainy/textured ring); the rest is the smooth radial profile.  Rings
        are never Bragg spots: they do not count towards the label.
    p_cosmic : float
        Probability of cosmic-ray tracks on a frame.
    cosmic_rays : (int, int)
        Number of tracks when present.
    cosmic_length_px : (float, float)
        Track length, px (log-uniform).
    cosmic_photons : (float, float)
        Deposit per pixel along the track, photon equivalents (log-uniform).
    p_overload_markers : float
        Probability of overload markers: pixels pegged at ``saturation_adu``
        or at 2ⁿ−1 (n ∈ 12, 14, 16, 20), singly or in clusters of 2–4.
    overload_markers : (int, int)
        Number of marker clusters when present.
    notes : str
        Free text: which experiment the preset imitates.

    Notes
    -----
    The trusted-pixel masks come from CXIDB-76 (Ke et al. 2018, via
    nksauter/fv5080).  ``LG36_mask2`` holds the 64 ASIC interiors only; the
    shadowed lower strip of LG36 is simulated separately
    (``p_strip_shadow``, ``strip_shadow_row``).
    """

    name: str
    detector: str
    shape: tuple[int, int]
    pixel_size_mm: float
    mask_key: str | None
    layout: str
    beam_centre_px: tuple[float, float]
    beam_centre_jitter_px: float
    distance_mm: tuple[float, float]
    energy_keV: tuple[float, float]
    bandwidth_fwhm: tuple[float, float]
    cells: tuple[CellSpec, ...]
    gain_adu_per_photon: tuple[float, float]
    noise_blur: bool
    read_noise_adu: tuple[float, float]
    dark_offset_adu: tuple[float, float]
    saturation_adu: int
    allow_negative: bool
    psf_sigma_px: tuple[float, float]
    psf_tail_g_px: tuple[float, float]
    psf_core_weight: tuple[float, float]
    water_photons: tuple[float, float]
    air_photons: tuple[float, float]
    cell_weights: tuple[float, ...] | None = None
    common_mode_adu: float = 0.0
    asic_gain_spread: float = 0.0
    double_row_factor: tuple[float, float] = (1.0, 1.0)
    spot_sigma_px: tuple[float, float] = (0.1, 0.4)
    p_jet_streak: float = 0.0
    p_kapton: float = 0.0
    kapton_mu_t: tuple[float, float] = (0.03, 0.15)
    kapton_max_att: tuple[float, float] = (0.3, 2.0)
    kapton_angle_deg: float = 90.0
    p_strip_shadow: float = 0.0
    strip_shadow_row: tuple[float, float] = (0.0, 0.0)
    mosaicity_deg: tuple[float, float] = (0.02, 0.3)
    domain_size_um: tuple[float, float] = (0.1, 2.0)
    b_factor_A2: tuple[float, float] = (20.0, 90.0)
    p_mixed_gain: float = 0.0
    mixed_gain_ratio: float = 7.0
    mixed_gain_d_A: float = 3.2
    p_multi_lattice: float = 0.2
    hot_pixels: tuple[int, int] = (0, 10)
    snr_threshold: float = 5.0
    hit_min_spots: int = 10
    maybe_min_spots: int = 4
    class_fractions: tuple[float, float, float] | None = None
    tiles: tuple | None = None
    pixel_gain_rms: float = 0.0
    dead_pixels: int = 0
    p_beam_stop: float = 0.0
    beam_stop_radius_px: tuple[float, float] = (10.0, 20.0)
    beam_stop_transmission: tuple[float, float] = (0.0, 0.01)
    log_gain: bool = False
    log_distance: bool = False
    pixel_size_range_mm: tuple[float, float] | None = None
    # ---- issue 13 (domain randomisation): separate random stream, off by default
    p_offcentre_beam: float = 0.0
    offcentre_beam_frac: tuple[float, float] = (0.05, 0.95)
    p_energy_line: float = 0.0
    energy_lines_keV: tuple[float, ...] = (8.048, 17.479)
    p_ice_rings: float = 0.0
    ice_ring_photons: tuple[float, float] = (0.3, 30.0)
    p_powder_rings: float = 0.0
    powder_rings: tuple[int, int] = (1, 6)
    powder_ring_d_A: tuple[float, float] = (1.3, 8.0)
    powder_ring_photons: tuple[float, float] = (0.2, 30.0)
    ring_sigma_px: tuple[float, float] = (1.0, 4.0)
    ring_grain_fraction: tuple[float, float] = (0.0, 0.5)
    p_cosmic: float = 0.0
    cosmic_rays: tuple[int, int] = (1, 4)
    cosmic_length_px: tuple[float, float] = (2.0, 30.0)
    cosmic_photons: tuple[float, float] = (5.0, 2000.0)
    p_overload_markers: float = 0.0
    overload_markers: tuple[int, int] = (1, 20)
    notes: str = field(default="", compare=False)

    @property
    def randomised(self) -> bool:
        """Whether any issue-13 feature (separate random stream) is on."""
        return (
            max(self.p_offcentre_beam, self.p_energy_line, self.p_ice_rings, self.p_powder_rings, self.p_cosmic,
                self.p_overload_markers) > 0
        )  # fmt: skip

    def replace(self, **changes) -> "Preset":
        """A copy with some fields changed (``dataclasses.replace``)."""
        return dataclasses.replace(self, **changes)


PRESETS: dict[str, Preset] = {}

PRESETS["rayonix"] = Preset(
    name="rayonix",
    detector="Rayonix MX170-HS, 2x2 binned (simulated)",
    shape=(1920, 1920),
    pixel_size_mm=0.0886,
    mask_key="LN84",
    layout="monolithic",
    beam_centre_px=(960.0, 960.0),
    beam_centre_jitter_px=6.0,
    distance_mm=(100.0, 150.0),
    energy_keV=(9.35, 9.65),  # LN84 9.516, LN83 9.498, LO19 9.442 keV
    bandwidth_fwhm=(0.0015, 0.005),
    cells=(CELLS["psII_ln84"], CELLS["hydrogenase"], CELLS["cyclophilin_a"]),
    gain_adu_per_photon=(0.19, 0.31),  # Ke Table 2 (LO19, LN83, LN84)
    noise_blur=True,
    read_noise_adu=(0.8, 3.0),
    dark_offset_adu=(5.0, 40.0),
    saturation_adu=65535,
    allow_negative=False,
    psf_sigma_px=(0.55, 1.1),
    psf_tail_g_px=(0.8, 1.8),
    psf_core_weight=(0.35, 0.7),
    water_photons=(4.0, 80.0),
    air_photons=(2.0, 40.0),  # MFX is at 1 atm
    p_jet_streak=0.0,
    p_kapton=0.85,  # LN83/LN84 conveyor belt
    kapton_mu_t=(0.03, 0.15),
    kapton_angle_deg=90.0,
    p_multi_lattice=0.35,  # overlapping lattices are common in LN83/LN84/LO19 (Ke §3.3.1)
    hot_pixels=(0, 5),
    notes="MFX conveyor-belt runs LN83/LN84 of Ke et al. (2018): kapton shadow, beam hole of LN84.",
)

PRESETS["rayonix_jet"] = PRESETS["rayonix"].replace(
    name="rayonix_jet",
    mask_key="LO19",
    p_kapton=0.0,
    p_jet_streak=0.25,
    notes="MFX liquid-jet run LO19 of Ke et al. (2018): no belt, occasional jet streak.",
)

PRESETS["cspad"] = Preset(
    name="cspad",
    detector="CSPAD 2.3M, assembled (simulated)",
    shape=(1765, 1765),
    pixel_size_mm=0.110,
    mask_key="LG36_mask2",
    layout="asic",
    beam_centre_px=(890.0, 890.0),
    beam_centre_jitter_px=5.0,
    distance_mm=(95.0, 150.0),
    energy_keV=(9.6, 9.9),  # L498 9.773 keV (LG36 was 7.088 keV: widen energy_keV to cover it)
    bandwidth_fwhm=(0.0015, 0.005),
    cells=(CELLS["thermolysin"], CELLS["psII_lg36"]),
    gain_adu_per_photon=(4.5, 16.0),  # Ke Table 2: L498 4.55, LG36 15.64
    noise_blur=False,
    read_noise_adu=(1.0, 3.5),
    dark_offset_adu=(-2.0, 2.0),  # dark-subtracted (Ke §3.2)
    common_mode_adu=1.5,
    asic_gain_spread=0.03,
    double_row_factor=(1.8, 2.5),
    saturation_adu=16383,
    allow_negative=True,
    psf_sigma_px=(0.12, 0.4),
    psf_tail_g_px=(0.3, 0.7),
    psf_core_weight=(0.98, 1.0),
    water_photons=(0.3, 15.0),
    air_photons=(0.02, 1.0),  # CXI is in vacuum
    p_jet_streak=0.3,  # MESH / coMESH jets (Ke §3.1, Fig. 5b)
    p_strip_shadow=0.6,  # LG36 lower strip (Ke §3.2)
    p_mixed_gain=0.3,  # LG36 inner low-gain zone (Ke §3.2)
    strip_shadow_row=(1545.0, 1600.0),
    p_multi_lattice=0.15,
    hot_pixels=(0, 25),
    notes="CXI liquid-jet runs L498/LG36 of Ke et al. (2018): 64-ASIC layout of LG36_mask2.",
)


# ---- The five CXIDB-76 runs of Ke et al. (2018) Tables 1-2 -----------------------
# Each takes its detector family from the generic preset above and fixes what
# Table 1 gives for the run (photon energy, protein/cell, sample delivery), its
# Table 2 gain (± 5 %), its own trusted-pixel mask, and, as default class
# fractions, the expert annotation counts of the run (hit / maybe / miss of 2000).


def _energy(ev: float) -> tuple[float, float]:
    return (ev / 1000 - 0.01, ev / 1000 + 0.01)


def _gain(g: float) -> tuple[float, float]:
    return (0.95 * g, 1.05 * g)


def _counts(hit: int, maybe: int, miss: int) -> tuple[float, float, float]:
    n = hit + maybe + miss
    return (hit / n, maybe / n, miss / n)


PRESETS["L498"] = PRESETS["cspad"].replace(
    name="L498",
    energy_keV=_energy(9773),
    cells=(CELLS["thermolysin"],),
    gain_adu_per_photon=_gain(4.55),
    p_jet_streak=0.35,  # MESH jet: diffraction spikes (Ke Fig. 5b)
    p_strip_shadow=0.0,
    p_mixed_gain=0.0,
    p_multi_lattice=0.1,
    class_fractions=_counts(148, 498, 1354),
    notes="L498 run 27 (Ke Table 1): thermolysin P6122, 9.773 keV, CXI CSPAD in vacuum, MESH jet; "
    "small cell, spots of 2-3 px oriented radially (Ke Fig. 5c).",
)
PRESETS["LG36"] = PRESETS["cspad"].replace(
    name="LG36",
    energy_keV=_energy(7088),
    cells=(CELLS["psII_lg36"],),
    gain_adu_per_photon=_gain(15.64),
    p_jet_streak=0.3,  # coMESH jet
    p_strip_shadow=0.9,  # the lower strip shadowed by chamber equipment (Ke §3.2)
    p_mixed_gain=0.9,  # per-pixel high/low gain, low gain inside the 3.2 Å cone (Ke §3.2)
    class_fractions=_counts(235, 57, 1708),
    notes="LG36 run 87 (Ke Table 1): photosystem II, 7.088 keV, CXI CSPAD in vacuum, coMESH jet; "
    "mixed-gain mode and shadowed strip (Ke §3.2).",
)
PRESETS["LN84"] = PRESETS["rayonix"].replace(
    name="LN84",
    mask_key="LN84",
    energy_keV=_energy(9516),
    cells=(CELLS["psII_ln84"],),
    gain_adu_per_photon=_gain(0.31),
    p_kapton=0.9,
    p_multi_lattice=0.45,  # many overlapping lattices (Ke §3.3.1)
    mosaicity_deg=(0.05, 0.5),  # layer lines sometimes smeared out
    class_fractions=_counts(806, 132, 1062),
    notes="LN84 run 95 (Ke Table 1): photosystem II, 9.516 keV, MFX Rayonix at 1 atm, conveyor belt.",
)
PRESETS["LN83"] = PRESETS["rayonix"].replace(
    name="LN83",
    mask_key="LN83",
    energy_keV=_energy(9498),
    cells=(CELLS["hydrogenase"],),
    gain_adu_per_photon=_gain(0.27),
    p_kapton=0.9,
    p_multi_lattice=0.3,
    class_fractions=_counts(346, 63, 1591),
    notes="LN83 run 18 (Ke Table 1): hydrogenase, 9.498 keV, MFX Rayonix at 1 atm, conveyor belt.",
)
PRESETS["LO19"] = PRESETS["rayonix_jet"].replace(
    name="LO19",
    mask_key="LO19",
    energy_keV=_energy(9442),
    cells=(CELLS["cyclophilin_a"],),
    gain_adu_per_photon=_gain(0.19),
    p_multi_lattice=0.3,
    class_fractions=_counts(730, 151, 1119),
    notes="LO19 run 20 (Ke Table 1): cyclophilin A, 9.442 keV, MFX Rayonix at 1 atm, liquid jet.",
)

#: The presets modelled on the five CXIDB-76 runs (Ke et al. 2018, Table 1).
RUN_PRESETS = ("L498", "LG36", "LN84", "LN83", "LO19")

# ---- Hybrid pixel detectors at synchrotrons (SSX) -------------------------------
# Photon counting: 1 count per photon, no read noise or dark offset, exact
# Poisson statistics, no phosphor PSF (only charge sharing: spots of 1-2 px),
# module gaps without sensor, a monochromator's narrow bandwidth.
PRESETS["pilatus"] = Preset(
    name="pilatus",
    detector="PILATUS3 2M-like hybrid pixel detector, 172 um (simulated)",
    shape=(1679, 1475),
    pixel_size_mm=0.172,
    mask_key=None,
    tiles=((195, 487, 0), (8, 3, 17, 7)),  # 8 x 3 modules of 195 x 487 px, gaps 17 / 7 px
    layout="monolithic",
    beam_centre_px=(737.0, 839.0),
    beam_centre_jitter_px=3.0,
    distance_mm=(120.0, 250.0),
    energy_keV=(12.0, 13.0),
    bandwidth_fwhm=(0.0001, 0.0003),  # Si(111) double-crystal monochromator
    cells=(CELLS["lysozyme"], CELLS["thermolysin"], CELLS["cyclophilin_a"]),
    gain_adu_per_photon=(1.0, 1.0),
    noise_blur=False,
    read_noise_adu=(0.0, 0.0),
    dark_offset_adu=(0.0, 0.0),
    saturation_adu=1048575,  # 20-bit counter
    allow_negative=False,
    psf_sigma_px=(0.12, 0.3),
    psf_tail_g_px=(0.1, 0.2),
    psf_core_weight=(1.0, 1.0),
    water_photons=(0.5, 20.0),
    air_photons=(0.05, 2.0),
    p_jet_streak=0.1,
    p_multi_lattice=0.2,
    domain_size_um=(0.5, 5.0),
    mosaicity_deg=(0.01, 0.2),
    hot_pixels=(1, 4),  # never an all-zero dark frame
    pixel_gain_rms=0.01,
    dead_pixels=60,
    p_beam_stop=1.0,
    beam_stop_radius_px=(8.0, 16.0),  # 1.4-2.8 mm
    notes="Synchrotron SSX on a Pilatus-like photon-counting detector: 1-2 px spots, module gaps, no read noise.",
)
PRESETS["eiger"] = PRESETS["pilatus"].replace(
    name="eiger",
    detector="EIGER 4M-like hybrid pixel detector, 75 um (simulated)",
    shape=(2167, 2070),
    pixel_size_mm=0.075,
    tiles=((514, 1030, 0), (4, 2, 37, 10)),  # 4 x 2 modules of 514 x 1030 px, gaps 37 / 10 px
    beam_centre_px=(1035.0, 1083.0),
    distance_mm=(100.0, 200.0),
    saturation_adu=65535,  # 16-bit image mode
    psf_sigma_px=(0.15, 0.35),
    beam_stop_radius_px=(18.0, 36.0),  # 1.4-2.7 mm
    notes="Synchrotron SSX on an Eiger-like photon-counting detector with 75 um pixels.",
)

# ---- Charge-integrating XFEL detector with panels ------------------------------
PRESETS["jungfrau"] = Preset(
    name="jungfrau",
    detector="JUNGFRAU 4M-like charge-integrating detector, 75 um (simulated)",
    shape=(2156, 2060),
    pixel_size_mm=0.075,
    mask_key=None,
    # chips of 256 x 256 px (1-px perimeter untrusted), 2 x 4 chips per module, 4 x 2 modules, gaps 36 / 12 px
    tiles=((256, 256, 1), (2, 4, 0, 0), (4, 2, 36, 12)),
    layout="asic",  # per-chip gain and common mode; the wide pixels at chip borders read ~2x
    beam_centre_px=(1030.0, 1078.0),
    beam_centre_jitter_px=4.0,
    distance_mm=(80.0, 130.0),
    energy_keV=(9.0, 12.5),
    bandwidth_fwhm=(0.001, 0.004),  # SASE
    cells=(CELLS["lysozyme"], CELLS["thermolysin"], CELLS["psII_ln84"], CELLS["hydrogenase"]),
    gain_adu_per_photon=(9.0, 12.5),  # data calibrated to keV: ADU per photon = photon energy
    noise_blur=False,
    read_noise_adu=(0.8, 1.5),  # ~0.1 photon rms
    dark_offset_adu=(-0.5, 0.5),  # pedestal subtracted
    common_mode_adu=0.5,
    asic_gain_spread=0.02,
    double_row_factor=(1.9, 2.1),
    saturation_adu=120000,  # ~10^4 photons of 12 keV
    allow_negative=True,
    psf_sigma_px=(0.12, 0.3),
    psf_tail_g_px=(0.1, 0.2),
    psf_core_weight=(1.0, 1.0),
    water_photons=(0.3, 20.0),
    air_photons=(0.02, 1.0),
    p_jet_streak=0.3,
    p_multi_lattice=0.2,
    hot_pixels=(0, 10),
    pixel_gain_rms=0.02,
    dead_pixels=100,
    p_beam_stop=1.0,
    beam_stop_radius_px=(15.0, 35.0),
    notes="XFEL SFX on a JUNGFRAU-like 4M: 32 chips in 8 modules, gain-calibrated, pedestal-subtracted.",
)


# ---- Domain-randomised "wide" presets, one per detector family (issue 13) -------
# Each takes a detector family's preset above and widens everything a CNN must
# not key on: geometry (distance 80-600 mm, 6-20 keV and the Cu/Mo Kα home-source
# lines, beam centre from the middle to near a corner), gain and noise, background
# level (near-blank photon-counting frames to bright CCD water rings), cells
# (small molecules of 5-25 Å, proteins, a large 20S-proteasome cell), and the
# artefacts that are not Bragg spots and so never make a miss a hit: ice rings
# (standard hexagonal ice Ih powder lines), salt/powder rings, cosmic-ray tracks,
# hot pixels and overload markers.  Default class fractions 0.3 / 0.2 / 0.5.

_WIDE_CELLS = (
    CELLS["lysozyme"], CELLS["thermolysin"], CELLS["cyclophilin_a"], CELLS["hydrogenase"], CELLS["psII_ln84"],
    CELLS["proteasome"], CELLS["urea"], CELLS["glycine"], CELLS["paracetamol"], CELLS["sucrose"],
    CELLS["cyanocobalamin"],
)  # fmt: skip
# proteins 0.62, the large proteasome cell 0.08, small molecules 0.30 (the 5-Å cells of urea and
# glycine put only 0-8 spots on a still, so they are rarer than the 7-25 Å cells)
_WIDE_WEIGHTS = (0.16, 0.14, 0.14, 0.12, 0.06, 0.08, 0.03, 0.04, 0.07, 0.07, 0.09)

_WIDE_COMMON = dict(
    distance_mm=(80.0, 600.0),
    energy_keV=(6.0, 20.0),
    p_energy_line=0.1,  # Cu Kα 8.048 keV / Mo Kα 17.479 keV home sources
    energy_lines_keV=(8.048, 17.479),
    bandwidth_fwhm=(0.0001, 0.005),
    cells=_WIDE_CELLS,
    cell_weights=_WIDE_WEIGHTS,
    b_factor_A2=(10.0, 90.0),
    mosaicity_deg=(0.005, 0.5),
    domain_size_um=(0.1, 10.0),
    p_multi_lattice=0.2,
    class_fractions=(0.3, 0.2, 0.5),
    log_gain=True,
    log_distance=True,
    p_offcentre_beam=0.35,
    offcentre_beam_frac=(0.05, 0.95),
    p_ice_rings=0.25,
    ice_ring_photons=(0.3, 100.0),
    p_powder_rings=0.35,  # rings are the commonest false hit of spot-finders: many, and strong, as misses
    powder_rings=(1, 10),
    powder_ring_d_A=(1.3, 8.0),
    powder_ring_photons=(0.5, 1000.0),  # log-uniform: faint to calibrant-strong
    ring_sigma_px=(1.0, 4.0),
    ring_grain_fraction=(0.2, 0.95),  # smooth to coarse, spotty powder (rings of bright grains)
    spot_sigma_px=(0.1, 2.5),  # up to the broad spots of home sources and binned CCDs
    p_cosmic=0.12,
    cosmic_rays=(1, 5),
    cosmic_length_px=(2.0, 30.0),
    p_overload_markers=0.1,
    overload_markers=(1, 20),
    hot_pixels=(0, 30),
)

PRESETS["wide_hybrid172"] = PRESETS["pilatus"].replace(
    name="wide_hybrid172",
    detector="PILATUS-like hybrid pixel detector, 172 um, domain-randomised (simulated)",
    **_WIDE_COMMON,
    beam_centre_jitter_px=10.0,
    water_photons=(0.005, 30.0),  # near-blank (mostly 0-2 counts) to bright
    air_photons=(0.001, 3.0),
    cosmic_photons=(1.0, 50.0),  # counting: a track adds a few counts per pixel
    p_jet_streak=0.1,
    p_beam_stop=0.9,
    beam_stop_radius_px=(5.0, 20.0),
    notes="Issue 13: Pilatus-family (172 um, photon counting, gain 1, module gaps) with wide geometry, "
    "low backgrounds incl. near-blank frames, rings, cosmics, hot pixels and overload markers.",
)
PRESETS["wide_hybrid75"] = PRESETS["eiger"].replace(
    name="wide_hybrid75",
    detector="EIGER 1M-like hybrid pixel detector, 75 um, domain-randomised (simulated)",
    shape=(1065, 1030),
    tiles=((514, 1030, 0), (2, 1, 37, 0)),  # 2 x 1 modules of 514 x 1030 px, gap 37 px
    beam_centre_px=(515.0, 532.0),
    **_WIDE_COMMON,
    beam_centre_jitter_px=10.0,
    water_photons=(0.005, 20.0),
    air_photons=(0.001, 2.0),
    cosmic_photons=(1.0, 50.0),
    p_jet_streak=0.1,
    p_beam_stop=0.9,
    beam_stop_radius_px=(12.0, 45.0),
    dead_pixels=30,
    notes="Issue 13: Eiger-family (75 um, photon counting, 16-bit) with wide geometry and artefacts.",
)
PRESETS["wide_ccd"] = PRESETS["rayonix"].replace(
    name="wide_ccd",
    detector="phosphor/fibre-optic CCD (Rayonix, MarCCD, ADSC-like), domain-randomised (simulated)",
    mask_key=None,  # no beam hole: a beam-stop shadow instead (most CCDs)
    pixel_size_range_mm=(0.05, 0.10),  # ADSC 51/102, MarCCD 79, Rayonix binned 88.6 um
    **{**_WIDE_COMMON, "p_energy_line": 0.2},
    beam_centre_jitter_px=15.0,
    # noise-equivalent gain; mean ADU per photon = gain / 0.1406 = 0.5-3 ADU/photon
    gain_adu_per_photon=(0.07, 0.42),
    read_noise_adu=(0.5, 8.0),
    dark_offset_adu=(0.0, 100.0),
    water_photons=(0.5, 150.0),  # up to high-background misses
    air_photons=(0.1, 60.0),
    cosmic_photons=(20.0, 3000.0),  # direct hits on the CCD chip are very bright
    p_kapton=0.2,
    p_jet_streak=0.1,
    p_beam_stop=0.7,
    beam_stop_radius_px=(10.0, 35.0),
    notes="Issue 13: phosphor-CCD family (correlated noise, 50-100 um pixels, 0.5-3 ADU/photon, offsets) "
    "with wide geometry, high backgrounds, rings and artefacts.",
)
PRESETS["wide_cspad"] = PRESETS["cspad"].replace(
    name="wide_cspad",
    detector="CSPAD-like ASIC detector, domain-randomised (simulated)",
    **{**_WIDE_COMMON, "energy_keV": (6.0, 14.0), "p_energy_line": 0.0},
    beam_centre_jitter_px=10.0,
    gain_adu_per_photon=(4.0, 50.0),  # log-uniform
    read_noise_adu=(1.0, 8.0),
    dark_offset_adu=(-3.0, 3.0),
    common_mode_adu=2.0,
    water_photons=(0.05, 40.0),
    air_photons=(0.01, 3.0),
    cosmic_photons=(5.0, 1000.0),
    p_jet_streak=0.3,
    p_strip_shadow=0.2,
    p_mixed_gain=0.15,
    notes="Issue 13: CSPAD family (64-ASIC layout of LG36_mask2, gain 4-50 ADU/photon, common mode) "
    "with wide geometry, XFEL energies, rings and artefacts.",
)
PRESETS["wide_panel"] = PRESETS["jungfrau"].replace(
    name="wide_panel",
    detector="JUNGFRAU/AGIPD-like gain-calibrated panel detector, domain-randomised (simulated)",
    shape=(1608, 1024),
    # chips of 256 x 256 px (1-px untrusted perimeter), 2 x 4 chips a module, 3 x 1 modules, gaps 36 px
    tiles=((256, 256, 1), (2, 4, 0, 0), (3, 1, 36, 0)),
    beam_centre_px=(512.0, 804.0),
    pixel_size_range_mm=(0.075, 0.2),  # JUNGFRAU 75, ePix 100, AGIPD 200 um
    **_WIDE_COMMON,
    beam_centre_jitter_px=10.0,
    gain_adu_per_photon=(0.5, 12.0),  # log-uniform: photon units (~1) to keV units (= photon energy)
    read_noise_adu=(0.05, 1.5),
    dark_offset_adu=(-0.5, 0.5),
    water_photons=(0.05, 40.0),
    air_photons=(0.01, 3.0),
    cosmic_photons=(3.0, 1000.0),
    p_jet_streak=0.3,
    p_beam_stop=0.8,
    beam_stop_radius_px=(6.0, 35.0),
    dead_pixels=60,
    notes="Issue 13: gain-calibrated panel family (JUNGFRAU/AGIPD-like, photon or keV units, read noise) "
    "with wide geometry, rings and artefacts.",
)

#: The domain-randomised presets of issue 13, one per detector family.
WIDE_PRESETS = ("wide_hybrid172", "wide_hybrid75", "wide_ccd", "wide_cspad", "wide_panel")

#: The five detector families and the presets that simulate each.
FAMILIES: dict[str, tuple[str, ...]] = {
    "hybrid172": ("pilatus", "wide_hybrid172"),
    "hybrid75": ("eiger", "wide_hybrid75"),
    "ccd": ("rayonix", "rayonix_jet", "LN84", "LN83", "LO19", "wide_ccd"),
    "cspad": ("cspad", "L498", "LG36", "wide_cspad"),
    "panel": ("jungfrau", "wide_panel"),
}


def get_preset(preset) -> Preset:
    """Return a :class:`Preset` given one or its name.

    Raises
    ------
    ConfigError
        If the name is not in :data:`PRESETS`.
    """
    if isinstance(preset, Preset):
        return preset
    try:
        return PRESETS[preset]
    except KeyError:
        raise ConfigError(
            f"unknown simulator preset {preset!r}; choose one of {sorted(PRESETS)} or pass a Preset"
        ) from None


@functools.lru_cache(maxsize=None)
def load_cxidb76_mask(key: str) -> np.ndarray:
    """A trusted-pixel mask shipped with diffscreen (CXIDB-76, Ke et al. 2018).

    Parameters
    ----------
    key : {"LN83", "LN84", "LO19", "LG36", "LG36_mask2"}

    Returns
    -------
    trusted : (H, W) bool ndarray
        True = trusted pixel (read-only array).

    Raises
    ------
    ConfigError
        If the key is not in the file.
    """
    with resources.files("diffscreen").joinpath("data", "cxidb76_masks.npz").open("rb") as fh:
        with np.load(fh) as npz:
            if key not in npz.files:
                raise ConfigError(f"no mask {key!r} in cxidb76_masks.npz; available: {npz.files}")
            m = np.array(npz[key], dtype=bool)
    m.setflags(write=False)
    return m


@dataclass
class DetectorLayout:
    """Static per-preset pixel maps (computed once and cached).

    Attributes
    ----------
    active : (H, W) bool
        Pixels with a sensor behind them (data are 0 elsewhere).
    trusted : (H, W) bool
        Pixels counted for spot detection (mask file; excludes ASIC perimeters).
    asic_id : (H, W) int16 or None
        ASIC index of each active pixel, -1 elsewhere.
    n_asics : int
    double_rows : (M,) int64
        Flat indices of the big-pixel rows between paired ASICs.
    """

    active: np.ndarray
    trusted: np.ndarray
    asic_id: np.ndarray | None
    n_asics: int
    double_rows: np.ndarray


def tiled_mask(tiles) -> np.ndarray:
    """Trusted-pixel mask of a detector built from identical sensor tiles.

    Parameters
    ----------
    tiles : sequence
        ``((h, w, edge), (ny, nx, gap_y, gap_x), ...)``: the base tile is
        h × w pixels with an untrusted perimeter ``edge`` pixels wide; each
        further level repeats the block so far ny × nx times, separated by
        gaps of gap_y rows and gap_x columns (no sensor).

    Returns
    -------
    (H, W) bool ndarray
        True = trusted pixel.

    Examples
    --------
    Pilatus 2M: 8 × 3 modules of 195 × 487 pixels, gaps of 17 and 7 pixels

    >>> tiled_mask(((195, 487, 0), (8, 3, 17, 7))).shape
    (1679, 1475)
    """
    (h, w, edge), *levels = tiles
    block = np.zeros((h, w), bool)
    block[edge : h - edge, edge : w - edge] = True
    for ny, nx, gy, gx in levels:
        bh, bw = block.shape
        out = np.zeros((ny * bh + (ny - 1) * gy, nx * bw + (nx - 1) * gx), bool)
        for iy in range(ny):
            for ix in range(nx):
                out[iy * (bh + gy) : iy * (bh + gy) + bh, ix * (bw + gx) : ix * (bw + gx) + bw] = block
        block = out
    return block


@functools.lru_cache(maxsize=None)
def _layout_cached(mask_key, layout, shape, tiles=None) -> DetectorLayout:
    H, W = shape
    if mask_key is None and tiles is not None:
        trusted = tiled_mask(tiles)
        if trusted.shape != tuple(shape):
            raise ConfigError(f"tiles give a {trusted.shape} detector, preset shape is {shape}")
    elif mask_key is None:
        trusted = np.ones(shape, bool)
    else:
        trusted = load_cxidb76_mask(mask_key)
        if trusted.shape != tuple(shape):
            raise ConfigError(f"mask {mask_key!r} has shape {trusted.shape}, preset shape is {shape}")
    if layout == "monolithic":
        return DetectorLayout(trusted.copy(), trusted, None, 0, np.zeros(0, np.int64))
    if layout != "asic":
        raise ConfigError(f"unknown detector layout {layout!r}; use 'monolithic' or 'asic'")
    from scipy import ndimage as ndi

    lab, n = ndi.label(trusted)
    boxes = ndi.find_objects(lab)
    active = np.zeros(shape, bool)
    asic_id = np.full(shape, -1, np.int16)
    rects = []
    for k, (sy, sx) in enumerate(boxes):
        y0, y1 = max(sy.start - 1, 0), min(sy.stop + 1, H)
        x0, x1 = max(sx.start - 1, 0), min(sx.stop + 1, W)
        active[y0:y1, x0:x1] = True
        asic_id[y0:y1, x0:x1] = k
        rects.append((y0, y1, x0, x1))
    # partner ASICs of a 2x1: same extent along the long side, facing edges ~3 px apart
    rows = []
    for a, (ay0, ay1, ax0, ax1) in enumerate(rects):
        for b, (by0, by1, bx0, bx1) in enumerate(rects):
            if b == a:
                continue
            if abs(ay0 - by0) <= 2 and abs(ay1 - by1) <= 2 and 0 <= bx0 - ax1 <= 6:
                rows.append(np.ravel_multi_index(np.mgrid[ay0:ay1, ax1 - 1 : ax1].reshape(2, -1), shape))
                rows.append(np.ravel_multi_index(np.mgrid[by0:by1, bx0 : bx0 + 1].reshape(2, -1), shape))
            if abs(ax0 - bx0) <= 2 and abs(ax1 - bx1) <= 2 and 0 <= by0 - ay1 <= 6:
                rows.append(np.ravel_multi_index(np.mgrid[ay1 - 1 : ay1, ax0:ax1].reshape(2, -1), shape))
                rows.append(np.ravel_multi_index(np.mgrid[by0 : by0 + 1, bx0:bx1].reshape(2, -1), shape))
    dr = np.unique(np.concatenate(rows)) if rows else np.zeros(0, np.int64)
    for arr in (active, asic_id):
        arr.setflags(write=False)
    return DetectorLayout(active, trusted, asic_id, n, dr)


def detector_layout(preset: Preset) -> DetectorLayout:
    """The cached :class:`DetectorLayout` of a preset."""
    return _layout_cached(preset.mask_key, preset.layout, tuple(preset.shape), preset.tiles)


def pixel_maps(preset: Preset) -> tuple[np.ndarray | None, np.ndarray]:
    """The preset's fixed per-pixel gain map and dead pixels (drawn once, seeded by its name).

    Returns
    -------
    gain : (H, W) float32 ndarray or None
        Relative gain, mean 1, rms ``pixel_gain_rms`` (None if 0).
    dead : (D,) int64 ndarray
        Flat indices of the dead pixels among the active ones.
    """
    p = preset
    return _pixel_maps_cached(p.name, tuple(p.shape), p.pixel_gain_rms, p.dead_pixels, p.mask_key, p.layout, p.tiles)


@functools.lru_cache(maxsize=16)
def _pixel_maps_cached(name, shape, gain_rms, n_dead, mask_key, layout, tiles):
    import zlib

    rng = np.random.default_rng([zlib.crc32(name.encode()), 77])
    gain = None
    if gain_rms > 0:
        gain = (1.0 + gain_rms * rng.standard_normal(shape)).astype(np.float32)
        np.clip(gain, 0.5, 1.5, out=gain)
        gain.setflags(write=False)
    active = np.flatnonzero(_layout_cached(mask_key, layout, shape, tiles).active.reshape(-1))
    dead = np.sort(rng.choice(active, min(n_dead, len(active)), replace=False)) if n_dead else active[:0]
    dead.setflags(write=False)
    return gain, dead
