"""Single-particle coherent-diffraction (CDI) pattern simulator with multi-hot labels.

Zimmermann et al. (2019) classify wide-angle XUV diffraction patterns of
helium nanodroplets into the 11 non-exclusive classes of their Table 1.  This
module makes labelled stand-ins for those patterns from particle geometry.

Physics
-------
* First Born approximation, no absorption or refraction: the scattered
  amplitude is the 3-D Fourier transform of the electron density ρ(r),
  evaluated on the Ewald sphere, ``A(q) = ∫ ρ(r) exp(-i q·r) d³r``.
* Ewald sphere (``ewald=True``, default): for a detector pixel at transverse
  momentum transfer q⊥, ``q_z = k - sqrt(k² - |q⊥|²)`` (k = 2π/λ).  The
  density is cut into slices of thickness dz along the beam and
  ``A(q⊥) = Σ_z exp(-i q_z z) FFT2[ρ(·,·,z)](q⊥) dz`` — the multi-slice
  Fourier transform (MSFT) of Barke et al. 2015 without absorption.  This is
  what makes tilted rods give *bent* streaks, droplets stacked along the beam
  give *Newton rings*, and 3-D clusters give non-centrosymmetric patterns.
* ``ewald=False``: small-angle limit with a flat Ewald sphere, q_z = 0, i.e.
  the pattern is |FFT2 of the projected density|²; every such pattern is
  centrosymmetric.  A sphere then gives exactly the 3-D sphere form factor
  ``|3 (sin qR - qR cos qR) / (qR)³|²`` on the detector (first zero at
  qR = 4.4934); ``tests/test_cdi_simulate.py`` checks it.
* Pixels are uniform in q⊥ (a detector image already resampled to
  momentum-transfer space, as the paper's images were corrected for the flat
  detector).  q in nm⁻¹.  ``q_edge = k sin(2θ_edge)`` is reached at the middle
  of each side (2θ_edge = 30° at FERMI LDM, §2).  Pixel size in q:
  ``dq = 2 q_edge / size``.  The beam centre is pixel (size//2, size//2).
* Real-space voxels: ``dx = π / (oversample · q_edge)`` (22.5 nm for the
  defaults), soft (partial-volume) edges to limit aliasing; the FFT grid is
  ``oversample × size`` wide and its central ``size × size`` part is kept.
* Detector: the expected photon map is scaled to the frame's photon count
  (drawn log-uniformly per frame from ``photons``), plus stray light (a radial
  glow around the beam stop and a faint diagonal streak), times a flat-field
  response (smooth ±``flat_field`` gain map fixed per run), Poisson noise,
  saturation at ``saturation`` photons, and a central hole of radius
  ``hole_q`` (fraction of q_edge) where pixels read 0 and are masked.

Shapes
------
spheres; oblate and prolate spheroids in random orientation; capsules
("tic-tac", a cylinder with hemispherical caps); droplet pairs and clusters
(coherent); pairs too far apart to interfere (incoherent sum, the *Double
rings* rule below); core-shell (layered) spheres and oblate spheroids.
Radii are drawn from a log-normal size distribution (``radius_nm`` median and
``radius_sigma``), clipped to ``radius_range_nm``.

Labels (Table 1 classes, Fig. 2 caption rules)
----------------------------------------------
Labels are computed from the drawn geometry (and, for *Asymmetric*, from the
noise-free pattern); they are never copied from the requested kind.  The
kind only steers the geometry draw, which is repeated (rejection, at most
``max_tries``) until the computed labels equal the kind, so the class
frequencies follow ``class_fractions`` (default: Table 1).  Rules:

* ``projected aspect`` a⊥ = sqrt(λmax/λmin) of the second moments of the main
  particle's projected density (the outline's aspect ratio for an ellipsoid).
* **Empty**: no particle signal (fewer than ``empty_photons`` particle photons).
  Excludes every other class.
* **Prolate** (superordinate): the main particle is elongated in 3-D (prolate
  spheroid or capsule with length/width ≥ 1.3) *and* a⊥ ≥ 1.3.
* **Spherical/Oblate** (superordinate): every other non-empty frame (spheres,
  oblate spheroids, prolate particles seen end-on).  Exactly one of
  Spherical/Oblate, Prolate, Empty holds.
* **Round** / **Elliptical** (exclusive subclasses of Spherical/Oblate):
  a⊥ < 1.1 → Round, else Elliptical.
* **Double rings** (subclass of Spherical/Oblate): a second droplet whose
  radius differs by a factor 1.2-1.7 scatters incoherently (too far away to
  give resolvable fringes), so two ring systems of different period
  superpose.  *Deviation*: the paper does not state the physical origin of
  this class; this is our rule.
* **Streak** (subclass of Prolate): a⊥ ≥ 2.0 — a long thin particle gives a
  pronounced streak perpendicular to its axis.
* **Bent** (subclass of Prolate, may co-occur with Streak): the streak is the
  intersection of the plane q·u = 0 (u = particle axis) with the Ewald
  sphere; its sagitta at |s| = q_edge along the streak is
  ``|u_z| / |u⊥| · q_z(q_edge)``; Bent when the sagitta ≥ ``bent_sagitta``
  × q_edge.  Needs ``ewald=True`` (a flat Ewald sphere never bends a streak).
* **Newton rings**: two coherent particles separated by d_z along the beam
  give the cross term cos(q_z d_z) ≈ cos(q² d_z / 2k), rings whose spacing
  shrinks outwards.  Label when at least 2 such fringes fall inside q_edge
  (q_z(q_edge)·|d_z| ≥ 4π) and the partner's radius is within a factor 1.5.
  Needs ``ewald=True``.
* **Asymmetric**: centro-asymmetry of the noise-free pattern,
  ``Σ|I(q) - I(-q)| / Σ(I(q) + I(-q))`` over the detector outside the hole,
  ≥ ``asym_threshold``.  Only the Ewald-sphere curvature breaks the symmetry
  I(q) = I(-q) of the Born approximation; clusters of 3-4 droplets in 3-D
  show it most.  *Deviation*: the paper's researcher judged asymmetry by eye;
  this index is our stand-in.
* **Layered**: a core-shell particle whose core radius is ≥ 0.3 of the outer
  radius and whose density contrast |ρ_core - ρ_shell| ≥ 0.3 ρ_shell.  Drawn
  on Spherical/Oblate particles only.

Not derivable from our geometry and therefore not faked: the researcher's
learn-to-label drift and inconsistent labels (§2); bent streaks from
absorption or refraction (wide-angle MSFT with a complex refractive index);
vortex-induced droplet shapes beyond spheroids and capsules.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from diffscreen.errors import ConfigError
from diffscreen.io.frame import Frame, FrameMeta

__all__ = [
    "CDI_CLASS_NAMES",
    "TABLE1_COUNTS",
    "TABLE1_FRACTIONS",
    "CDIConfig",
    "CDIFrame",
    "CDISimulator",
    "sphere_intensity",
    "simulate_cdi_frame",
    "simulate_cdi_run",
]

#: Table 1 classes in the order of the network's outputs.
CDI_CLASS_NAMES: tuple[str, ...] = (
    "spherical_oblate", "round", "elliptical", "newton_rings", "prolate", "bent",
    "asymmetric", "streak", "double_rings", "layered", "empty",
)
#: Table 1: number of labels per class among 7264 helium-droplet images.
TABLE1_COUNTS: dict[str, int] = {
    "spherical_oblate": 6589, "round": 5792, "elliptical": 796, "newton_rings": 460, "prolate": 453,
    "bent": 390, "asymmetric": 367, "streak": 242, "double_rings": 218, "layered": 47, "empty": 222,
}
TABLE1_TOTAL = 7264
#: Table 1 class frequencies (fraction of images carrying the label).
TABLE1_FRACTIONS: dict[str, float] = {k: v / TABLE1_TOTAL for k, v in TABLE1_COUNTS.items()}

_IDX = {n: i for i, n in enumerate(CDI_CLASS_NAMES)}


@dataclass(frozen=True)
class CDIConfig:
    """Run parameters of :class:`CDISimulator` (units in the names).

    Attributes
    ----------
    size : int
        Output frame side in pixels (uniform in q⊥).
    wavelength_nm : float
        Photon wavelength (45 nm = 27.6 eV; FERMI LDM used 19-35 eV).
    edge_angle_deg : float
        Scattering angle 2θ at the middle of a side of the frame (30°, §2).
    radius_nm, radius_sigma, radius_range_nm : float, float, (float, float)
        Log-normal size distribution of droplet radii: median, sigma of ln R,
        clip range.
    photons : (float, float)
        Range of the log-uniform number of particle photons per frame on the
        detector (before the hole).
    stray_light : (float, float)
        Range of the stray-light photons as a fraction of the particle photons.
    flat_field : float
        Peak relative amplitude of the smooth flat-field gain map.
    saturation : float
        Photons per pixel at which the detector saturates.
    hole_q : float
        Radius of the central hole in units of q_edge.
    ewald : bool
        Curved Ewald sphere (MSFT); False: flat (projection) approximation.
    oversample : int
        FFT grid = oversample × size.
    class_fractions : dict or None
        Target label frequencies (default Table 1).
    asym_threshold, bent_sagitta, empty_photons : float
        Label thresholds (see the module docstring).
    max_tries : int
        Rejection-sampling attempts per frame.
    """

    size: int = 128
    wavelength_nm: float = 45.0
    edge_angle_deg: float = 30.0
    radius_nm: float = 260.0
    radius_sigma: float = 0.25
    radius_range_nm: tuple = (120.0, 450.0)
    photons: tuple = (3e4, 1e6)
    stray_light: tuple = (0.0, 0.05)
    flat_field: float = 0.1
    saturation: float = 2e4
    hole_q: float = 0.08
    ewald: bool = True
    oversample: int = 2
    class_fractions: dict | None = None
    asym_threshold: float = 0.2
    bent_sagitta: float = 0.06
    empty_photons: float = 100.0
    max_tries: int = 25

    def __post_init__(self):
        if not (16 <= int(self.size) <= 1024):
            raise ConfigError(f"size must be 16-1024 px, got {self.size}")
        if self.wavelength_nm <= 0 or not (0 < self.edge_angle_deg < 90):
            raise ConfigError("wavelength_nm must be > 0 and edge_angle_deg in (0, 90)")
        lo, hi = self.photons
        if not (0 < lo <= hi):
            raise ConfigError(f"photons range must satisfy 0 < lo <= hi, got {self.photons}")
        if self.oversample < 1:
            raise ConfigError("oversample must be >= 1")
        if self.class_fractions is not None:
            unknown = set(self.class_fractions) - set(CDI_CLASS_NAMES)
            if unknown:
                raise ConfigError(f"unknown CDI class(es) {sorted(unknown)}; known: {', '.join(CDI_CLASS_NAMES)}")

    # derived geometry -------------------------------------------------
    @property
    def k(self) -> float:
        """Wavenumber 2π/λ in nm⁻¹."""
        return 2 * math.pi / self.wavelength_nm

    @property
    def q_edge(self) -> float:
        """|q⊥| at the middle of a side, nm⁻¹."""
        return self.k * math.sin(math.radians(self.edge_angle_deg))

    @property
    def dq(self) -> float:
        """Pixel size in q, nm⁻¹."""
        return 2 * self.q_edge / self.size

    @property
    def dx(self) -> float:
        """Real-space voxel size, nm."""
        return math.pi / (self.oversample * self.q_edge)

    def qz(self, qperp):
        """Ewald-sphere q_z (nm⁻¹) at transverse momentum transfer ``qperp`` (nm⁻¹)."""
        q = np.asarray(qperp, dtype=float)
        return self.k - np.sqrt(np.maximum(self.k**2 - q**2, 0.0))

    def fractions(self) -> dict:
        f = dict(TABLE1_FRACTIONS)
        if self.class_fractions:
            f.update(self.class_fractions)
        return f


@dataclass
class CDIFrame:
    """One simulated pattern.

    Attributes
    ----------
    data : (size, size) float32 ndarray
        Detected photons per pixel (Poisson, saturated, 0 in the hole).
    mask : (size, size) bool ndarray
        True in the central hole.
    labels : (11,) uint8 ndarray
        Multi-hot labels in :data:`CDI_CLASS_NAMES` order.
    intensity : (size, size) float32 ndarray
        Noise-free expected particle photons per pixel (no stray light, gain
        or hole).
    params : dict
        The drawn geometry and the quantities the label rules used.
    meta : FrameMeta
    """

    data: np.ndarray
    mask: np.ndarray
    labels: np.ndarray
    intensity: np.ndarray
    params: dict
    meta: FrameMeta

    @property
    def label_names(self) -> list[str]:
        return [n for n, v in zip(CDI_CLASS_NAMES, self.labels) if v]

    def to_frame(self) -> Frame:
        return Frame(self.data, self.mask, self.meta)


def sphere_intensity(q, radius_nm):
    """Sphere form factor |3(sin qR - qR cos qR)/(qR)³|², normalised to 1 at q = 0.

    Parameters
    ----------
    q : array_like
        Momentum transfer, nm⁻¹.
    radius_nm : float

    Returns
    -------
    ndarray of float64, shape of ``q``
    """
    x = np.asarray(q, dtype=float) * radius_nm
    out = np.ones_like(x)
    nz = np.abs(x) > 1e-6
    xx = x[nz]
    out[nz] = (3 * (np.sin(xx) - xx * np.cos(xx)) / xx**3) ** 2
    return out


# --------------------------------------------------------------------------
# geometry primitives: (kind, params) with a soft indicator on voxel grids

def _random_unit(rng) -> np.ndarray:
    v = rng.normal(size=3)
    return v / np.linalg.norm(v)


def _axis_with_elevation(rng, beta_rad: float) -> np.ndarray:
    """Unit vector at elevation beta out of the detector plane (z = beam), random azimuth."""
    phi = rng.uniform(0, 2 * np.pi)
    return np.array([math.cos(beta_rad) * math.cos(phi), math.cos(beta_rad) * math.sin(phi), math.sin(beta_rad)])


def _extent(p: dict) -> float:
    if p["type"] == "sphere":
        return p["r"]
    if p["type"] == "spheroid":
        return max(p["a"], p["c"])
    if p["type"] == "capsule":
        return p["half_len"] + p["r"]
    raise ValueError(p["type"])


def _density(p: dict, X, Y, Z, dx: float) -> np.ndarray:
    """Soft indicator × density of primitive ``p`` on voxel coordinates (nm)."""
    cx, cy, cz = p["centre"]
    x, y, z = X - cx, Y - cy, Z - cz
    t = p["type"]
    if t == "sphere":
        sd = np.sqrt(x * x + y * y + z * z) - p["r"]
    elif t == "spheroid":
        u = np.asarray(p["axis"])
        along = x * u[0] + y * u[1] + z * u[2]
        perp2 = np.maximum(x * x + y * y + z * z - along**2, 0.0)
        s = np.sqrt(perp2 / p["a"] ** 2 + along**2 / p["c"] ** 2)
        sd = (s - 1.0) * min(p["a"], p["c"])
    elif t == "capsule":
        u = np.asarray(p["axis"])
        along = np.clip(x * u[0] + y * u[1] + z * u[2], -p["half_len"], p["half_len"])
        dxv, dyv, dzv = x - along * u[0], y - along * u[1], z - along * u[2]
        sd = np.sqrt(dxv * dxv + dyv * dyv + dzv * dzv) - p["r"]
    else:
        raise ValueError(t)
    return np.clip(0.5 - sd / dx, 0.0, 1.0) * p.get("rho", 1.0)


def _projected_aspect(prims: list, dx: float) -> float:
    """sqrt(λmax/λmin) of the second moments of the projected density of ``prims``."""
    ext = max(_extent(p) + np.linalg.norm(p["centre"]) for p in prims) + 2 * dx
    ax = np.arange(-ext, ext + dx, dx)
    X, Y, Z = np.meshgrid(ax, ax, ax, indexing="ij", sparse=True)
    rho = sum(_density(p, X, Y, Z, dx) for p in prims)
    proj = rho.sum(axis=2)
    w = proj.sum()
    if w <= 0:
        return 1.0
    xs, ys = ax[:, None], ax[None, :]
    mx, my = (proj * xs).sum() / w, (proj * ys).sum() / w
    cxx = (proj * (xs - mx) ** 2).sum() / w
    cyy = (proj * (ys - my) ** 2).sum() / w
    cxy = (proj * (xs - mx) * (ys - my)).sum() / w
    ev = np.linalg.eigvalsh(np.array([[cxx, cxy], [cxy, cyy]]))
    return float(math.sqrt(max(ev[1], 1e-12) / max(ev[0], 1e-12)))


# --------------------------------------------------------------------------


class CDISimulator:
    """Simulate labelled single-particle CDI patterns.

    Parameters
    ----------
    config : CDIConfig, optional
    seed : int
        Run seed.  Frame ``i`` uses ``numpy.random.default_rng([seed, i])``,
        so it depends only on (config, seed, i).
    **overrides
        Fields of :class:`CDIConfig` to change.

    Examples
    --------
    >>> sim = CDISimulator(seed=0, size=64)
    >>> f = sim.frame(0)
    >>> f.data.shape, f.labels.shape
    ((64, 64), (11,))
    """

    def __init__(self, config: CDIConfig | None = None, *, seed: int = 0, **overrides):
        self.config = replace(config or CDIConfig(), **overrides)
        self.seed = int(seed)
        c = self.config
        n = c.size
        self._ax = (np.arange(n) - n // 2) * c.dq  # q of each pixel column (nm⁻¹)
        QX, QY = np.meshgrid(self._ax, self._ax, indexing="xy")  # QX varies along columns (fast scan)
        self.qx, self.qy = QX, QY
        self.qperp = np.hypot(QX, QY)
        self.qz_map = c.qz(self.qperp) if c.ewald else np.zeros_like(self.qperp)
        self.hole = self.qperp < c.hole_q * c.q_edge
        rr = np.random.default_rng([self.seed, 2**31 - 1])  # run-level: flat field
        g = np.zeros((n, n))
        for _ in range(6):  # a few smooth cosine modes: a gently varying gain
            kx, ky = rr.uniform(0.5, 3.0, size=2) * 2 * np.pi / n
            g += np.cos(kx * QX / c.dq + ky * QY / c.dq + rr.uniform(0, 2 * np.pi))
        g /= np.abs(g).max() + 1e-12
        self.gain = (1.0 + c.flat_field * g).astype(np.float32)
        fr = c.fractions()
        self._p = fr
        self._q_edge_px = c.q_edge / c.dq

    # ------------------------------------------------------------------
    def _kind(self, rng) -> dict:
        """Draw the intended label set from the class fractions (conditional probabilities)."""
        f = self._p
        kind = dict.fromkeys(CDI_CLASS_NAMES, 0)
        if rng.random() < f["empty"]:
            kind["empty"] = 1
            return kind
        ne = 1.0 - f["empty"]
        p_pro = f["prolate"] / ne
        if rng.random() < p_pro:
            kind["prolate"] = 1
            # Bent/Streak: Table 1 counts force an overlap (390 + 242 > 453); split proportionally.
            pb, ps = min(f["bent"] / f["prolate"], 1.0), min(f["streak"] / f["prolate"], 1.0)
            both = max(pb + ps - 1.0, 0.0)
            r = rng.random()
            if r < both:
                kind["bent"] = kind["streak"] = 1
            elif r < pb:
                kind["bent"] = 1
            elif r < pb + ps - both:
                kind["streak"] = 1
        else:
            kind["spherical_oblate"] = 1
            so = f["spherical_oblate"]
            pe = f["elliptical"] / (f["round"] + f["elliptical"])
            kind["elliptical" if rng.random() < pe else "round"] = 1
            if rng.random() < f["double_rings"] / so:
                kind["double_rings"] = 1
            if rng.random() < f["layered"] / so:
                kind["layered"] = 1
        if rng.random() < f["newton_rings"] / ne:
            kind["newton_rings"] = 1
        if rng.random() < f["asymmetric"] / ne:
            kind["asymmetric"] = 1
        return kind

    def _radius(self, rng) -> float:
        c = self.config
        r = c.radius_nm * math.exp(c.radius_sigma * rng.normal())
        return float(np.clip(r, *c.radius_range_nm))

    def _geometry(self, rng, kind: dict) -> dict:
        """Draw particles steered by ``kind``.  Returns dict(coherent=[prims], incoherent=[prims], main=[prims])."""
        c = self.config
        if kind["empty"]:
            return {"coherent": [], "incoherent": [], "main": [], "shape": "none", "axis": None, "elongated": False}
        R = self._radius(rng)
        elongated = False
        axis = None
        if kind["prolate"]:
            elongated = True
            if kind["bent"] and kind["streak"]:
                aspect3, beta = rng.uniform(3.0, 4.5), math.radians(rng.uniform(18, 35))
            elif kind["bent"]:
                aspect3, beta = rng.uniform(1.7, 2.4), math.radians(rng.uniform(18, 40))
            elif kind["streak"]:
                aspect3, beta = rng.uniform(2.4, 4.0), math.radians(rng.uniform(0, 8))
            else:
                aspect3, beta = rng.uniform(1.5, 1.9), math.radians(rng.uniform(0, 8))
            axis = _axis_with_elevation(rng, beta)
            r = R * rng.uniform(0.5, 0.8)  # rods are thinner than droplets of the same family
            if rng.random() < 0.7:  # capsule ("tic-tac")
                half = r * (aspect3 - 1.0)
                main = {"type": "capsule", "r": r, "half_len": half, "axis": axis.tolist(), "centre": [0.0, 0.0, 0.0]}
                shape = "capsule"
            else:
                main = {"type": "spheroid", "a": r, "c": r * aspect3, "axis": axis.tolist(), "centre": [0.0, 0.0, 0.0]}
                shape = "prolate_spheroid"
        else:
            if kind["elliptical"]:
                # oblate spheroid seen off the symmetry axis: projected aspect up to a/c
                ratio = rng.uniform(1.3, 1.9)
                beta = math.radians(rng.uniform(45, 90))  # angle between symmetry axis and beam
                axis = np.array([math.sin(beta), 0.0, math.cos(beta)])
                phi = rng.uniform(0, 2 * np.pi)
                axis = np.array([axis[0] * math.cos(phi), axis[0] * math.sin(phi), axis[2]])
                main = {"type": "spheroid", "a": R, "c": R / ratio, "axis": axis.tolist(), "centre": [0.0, 0.0, 0.0]}
                shape = "oblate_spheroid"
            else:
                if rng.random() < 0.6:
                    main = {"type": "sphere", "r": R, "centre": [0.0, 0.0, 0.0]}
                    shape = "sphere"
                else:  # slightly oblate or prolate, nearly round in projection
                    axis = _random_unit(rng)
                    ratio = rng.uniform(1.0, 1.08)
                    if rng.random() < 0.5:
                        main = {"type": "spheroid", "a": R, "c": R / ratio, "axis": axis.tolist(), "centre": [0.0, 0.0, 0.0]}
                        shape = "oblate_spheroid"
                    else:
                        main = {"type": "spheroid", "a": R, "c": R * ratio, "axis": axis.tolist(), "centre": [0.0, 0.0, 0.0]}
                        shape = "prolate_spheroid"
            if kind["layered"]:
                main["rho"] = 1.0
                core = dict(main)
                frac = rng.uniform(0.45, 0.75)
                if core["type"] == "sphere":
                    core["r"] = main["r"] * frac
                else:
                    core["a"], core["c"] = main["a"] * frac, main["c"] * frac
                core["rho"] = float(rng.choice([-1, 1]) * rng.uniform(0.5, 1.5))  # core minus shell density
                main = [main, core]
        mains = main if isinstance(main, list) else [main]
        coherent = list(mains)
        incoherent = []
        Rm = _extent(mains[0])
        if kind["newton_rings"]:
            # a similar droplet far behind/in front of the particle along the beam
            dz_min = 4 * math.pi / float(c.qz(c.q_edge)) * 1.3
            dz = rng.uniform(dz_min, 2.2 * dz_min) * rng.choice([-1, 1])
            rp = R * rng.uniform(0.8, 1.2)
            off = rng.normal(size=2) * 0.1 * R
            coherent.append({"type": "sphere", "r": rp, "centre": [float(off[0]), float(off[1]), float(dz)]})
        if kind["asymmetric"]:
            # a 3-D cluster: 2-3 droplets around the main one, displaced mostly along the beam
            for _ in range(int(rng.integers(2, 4))):
                rs = R * rng.uniform(0.7, 1.1)
                d = Rm + rs
                v = _random_unit(rng) * np.array([0.5, 0.5, 1.0])
                v /= np.linalg.norm(v)
                coherent.append({"type": "sphere", "r": rs, "centre": (v * d * rng.uniform(1.0, 1.8)).tolist()})
        if kind["double_rings"]:
            ratio = rng.uniform(1.25, 1.6) * rng.choice([1 / 1.0, 1.0])
            rp = R / ratio if rng.random() < 0.5 else min(R * ratio, c.radius_range_nm[1] * 1.3)
            incoherent.append({"type": "sphere", "r": rp, "centre": [0.0, 0.0, 0.0]})
        return {"coherent": coherent, "incoherent": incoherent, "main": mains, "shape": shape,
                "axis": None if axis is None else np.asarray(axis).tolist(), "elongated": elongated, "R": R}

    def _amplitude(self, prims: list) -> np.ndarray:
        """|A(q)|² on the output pixels for coherent primitives (arbitrary units)."""
        import scipy.fft

        c = self.config
        n = c.size * c.oversample
        dx = c.dx
        if not prims:
            return np.zeros((c.size, c.size))
        # bounding box
        lo = np.min([np.asarray(p["centre"]) - _extent(p) for p in prims], axis=0) - 2 * dx
        hi = np.max([np.asarray(p["centre"]) + _extent(p) for p in prims], axis=0) + 2 * dx
        cen = 0.5 * (lo + hi)
        nb = np.ceil((hi - lo) / dx).astype(int) + 1
        if nb[0] > n or nb[1] > n:
            raise ConfigError(
                f"particle extent {(hi - lo)[:2].max():.0f} nm exceeds the field of view {n * dx:.0f} nm; "
                "raise oversample or lower the sizes")
        ax = [cen[i] + (np.arange(nb[i]) - nb[i] // 2) * dx for i in range(3)]
        X, Y = np.meshgrid(ax[0], ax[1], indexing="xy", sparse=True)  # rows: y, columns: x
        s0, s1 = n // 2 - nb[1] // 2, n // 2 - nb[0] // 2
        mid = slice((n - c.size) // 2 + 0, (n - c.size) // 2 + c.size)
        acc = np.zeros((c.size, c.size), dtype=np.complex128)
        chunk = 32
        zs = ax[2]
        for j0 in range(0, len(zs), chunk):
            zc = zs[j0: j0 + chunk]
            slab = np.zeros((len(zc), n, n), dtype=np.float32)
            for m, z in enumerate(zc):
                rho = sum(_density(p, X, Y, np.float64(z), dx) for p in prims)
                if np.ndim(rho) == 2:
                    slab[m, s0: s0 + nb[1], s1: s1 + nb[0]] = rho
            keep = slab.reshape(len(zc), -1).any(axis=1)
            if not keep.any():
                continue
            F = scipy.fft.fftshift(scipy.fft.fft2(slab[keep], workers=1), axes=(-2, -1))[:, mid, mid]
            if c.ewald:
                ph = np.exp(-1j * self.qz_map[None] * (zc[keep] - cen[2])[:, None, None])
                acc += (F * ph).sum(axis=0)
            else:
                acc += F.sum(axis=0)
        # undo the half-pixel phase ramp of the box placement (|.|² is insensitive to it)
        return np.abs(acc) ** 2

    def _asymmetry(self, I: np.ndarray) -> float:
        """Σ|I(q) - I(-q)| / Σ(I(q) + I(-q)) outside the hole (point inversion about the beam centre)."""
        m = ~self.hole
        Ii = I.copy()
        # pixel index i ↔ q = (i - n//2) dq; its inverse is index n - i (valid for i >= 1)
        a = Ii[1:, 1:]
        b = Ii[1:, 1:][::-1, ::-1]
        mm = m[1:, 1:]
        num = np.abs(a - b)[mm].sum()
        den = (a + b)[mm].sum()
        return float(num / den) if den > 0 else 0.0

    def _labels(self, geo: dict, I_part: np.ndarray, photons: float) -> tuple[np.ndarray, dict]:
        c = self.config
        lab = dict.fromkeys(CDI_CLASS_NAMES, 0)
        info = {}
        detected = float(I_part[~self.hole].sum())
        info["particle_photons"] = detected
        if not geo["main"] or detected < c.empty_photons:
            lab["empty"] = 1
            return np.array([lab[n] for n in CDI_CLASS_NAMES], dtype=np.uint8), info
        a_perp = _projected_aspect(geo["main"][:1], c.dx * 0.5 if _extent(geo["main"][0]) < 40 * c.dx else c.dx)
        info["projected_aspect"] = a_perp
        m0 = geo["main"][0]
        aspect3 = 1.0
        if m0["type"] == "spheroid":
            aspect3 = m0["c"] / m0["a"]
        elif m0["type"] == "capsule":
            aspect3 = (m0["half_len"] + m0["r"]) / m0["r"]
        info["aspect_3d"] = aspect3
        if aspect3 >= 1.3 and a_perp >= 1.3:
            lab["prolate"] = 1
            u = np.asarray(m0["axis"])
            uperp = math.hypot(u[0], u[1])
            sag = abs(u[2]) / max(uperp, 1e-9) * float(c.qz(c.q_edge)) if c.ewald else 0.0
            info["sagitta_q_edge"] = sag / c.q_edge
            if sag >= c.bent_sagitta * c.q_edge:
                lab["bent"] = 1
            if a_perp >= 2.0:
                lab["streak"] = 1
        else:
            lab["spherical_oblate"] = 1
            lab["round" if a_perp < 1.1 else "elliptical"] = 1
            if geo["incoherent"]:
                r2 = geo["incoherent"][0]["r"]
                ratio = max(r2, geo["R"]) / min(r2, geo["R"])
                info["double_ratio"] = ratio
                if 1.2 <= ratio <= 1.75:
                    lab["double_rings"] = 1
            if len(geo["main"]) > 1:
                core = geo["main"][1]
                cr = (core.get("r") or core.get("a")) / (m0.get("r") or m0.get("a"))
                if cr >= 0.3 and abs(core["rho"]) >= 0.3:
                    lab["layered"] = 1
        # Newton rings: a coherent partner along the beam
        for p in geo["coherent"][len(geo["main"]):]:
            dz = abs(p["centre"][2])
            n_fr = float(c.qz(c.q_edge)) * dz / (2 * math.pi) if c.ewald else 0.0
            ratio = max(p["r"], geo["R"]) / min(p["r"], geo["R"])
            if n_fr >= 2.0 and ratio <= 1.5 and math.hypot(*p["centre"][:2]) < 0.5 * geo["R"]:
                lab["newton_rings"] = 1
                info["newton_fringes"] = n_fr
        A = self._asymmetry(I_part)
        info["asymmetry"] = A
        if A >= c.asym_threshold:
            lab["asymmetric"] = 1
        return np.array([lab[n] for n in CDI_CLASS_NAMES], dtype=np.uint8), info

    def _pattern(self, geo: dict, photons: float) -> np.ndarray:
        I = self._amplitude(geo["coherent"])
        for p in geo["incoherent"]:
            I = I + self._amplitude([p])
        tot = I.sum()
        if tot > 0:
            I = I * (photons / tot)
        return I

    def frame(self, index: int, *, kind: dict | None = None) -> CDIFrame:
        """Simulate frame ``index``.

        Parameters
        ----------
        index : int
            0-based frame index; selects the RNG stream.
        kind : dict, optional
            Intended labels ``{class: 0/1}``; default: drawn from the class
            fractions.

        Returns
        -------
        CDIFrame
        """
        c = self.config
        rng = np.random.default_rng([self.seed, int(index)])
        kind = dict(kind) if kind is not None else self._kind(rng)
        want = np.array([int(kind.get(n, 0)) for n in CDI_CLASS_NAMES], dtype=np.uint8)
        photons = float(math.exp(rng.uniform(math.log(c.photons[0]), math.log(c.photons[1]))))
        best = None
        for attempt in range(c.max_tries):
            geo = self._geometry(rng, kind)
            try:
                I = self._pattern(geo, photons) if geo["main"] else np.zeros((c.size, c.size))
            except ConfigError:  # drawn cluster larger than the field of view: draw again
                if attempt == c.max_tries - 1:
                    raise
                continue
            labels, info = self._labels(geo, I, photons)
            best = (geo, I, labels, info, attempt)
            if np.array_equal(labels, want):
                break
        geo, I, labels, info, attempt = best
        data = self._detect(rng, I, photons)
        params = {
            "shape": geo["shape"], "particles": geo["coherent"], "incoherent": geo["incoherent"],
            "photons": photons, "tries": attempt + 1, "kind": [n for n, v in zip(CDI_CLASS_NAMES, want) if v], **info,
        }
        meta = FrameMeta(
            source="", index=int(index), detector="simulated CDI (q-space)", pixel_size_mm=None,
            beam_centre_px=(float(c.size // 2), float(c.size // 2)), distance_mm=65.0,
            wavelength_A=c.wavelength_nm * 10.0,
            extra={"q_per_px_inv_nm": c.dq, "q_edge_inv_nm": c.q_edge, "task": "cdi"},
        )
        return CDIFrame(data, self.hole.copy(), labels, I.astype(np.float32), params, meta)

    def _detect(self, rng, I: np.ndarray, photons: float) -> np.ndarray:
        c = self.config
        r = self.qperp / c.q_edge
        f_stray = rng.uniform(*c.stray_light)
        glow = np.exp(-np.maximum(r - c.hole_q, 0) / 0.15)
        ang = rng.uniform(0, np.pi)
        dist = np.abs(-np.sin(ang) * self.qx + np.cos(ang) * self.qy) / c.q_edge
        streak = 0.3 * np.exp(-dist / 0.03) * np.exp(-r / 0.6)
        B = glow + streak
        B *= f_stray * photons / B[~self.hole].sum()
        lam = (I + B) * self.gain
        counts = rng.poisson(lam).astype(np.float32)
        np.minimum(counts, np.float32(c.saturation), out=counts)
        counts[self.hole] = 0.0
        return counts


def simulate_cdi_frame(seed: int = 0, index: int = 0, **config) -> CDIFrame:
    """One frame: ``CDISimulator(seed=seed, **config).frame(index)``."""
    return CDISimulator(seed=seed, **config).frame(index)


def simulate_cdi_run(out, n_frames: int, *, seed: int = 0, config: CDIConfig | None = None, progress=None,
                     compression: str | None = "gzip", **overrides) -> Path:
    """Simulate ``n_frames`` CDI patterns into a CXI file, atomically.

    Layout: the :class:`~diffscreen.io.cxi.CXIWriter` CXI layout (frames in
    ``/entry_1/data_1/data``, float32 photons; hole mask; wavelength;
    beam centre) plus ``/entry_1/result_1/labels`` (N, 11) uint8 multi-hot
    labels with attribute ``class_names``, ``/entry_1/result_1/params``
    (N,) JSON strings of the drawn geometry, and the run configuration as
    JSON in the root attribute ``cdi_config``.

    Parameters
    ----------
    out : str or Path
        Output ``.cxi`` (or ``.h5``) path.
    n_frames : int
    seed : int
    config : CDIConfig, optional
    progress : callable, optional
        Called with the number of frames done.
    compression : str or None
    **overrides
        CDIConfig fields.

    Returns
    -------
    Path

    Raises
    ------
    ConfigError
        ``n_frames < 1`` or a bad configuration.
    """
    import h5py

    from diffscreen.io.cxi import CXIWriter

    if n_frames < 1:
        raise ConfigError("n_frames must be >= 1")
    sim = CDISimulator(config, seed=seed, **overrides)
    out = Path(out)
    labels = np.zeros((n_frames, len(CDI_CLASS_NAMES)), dtype=np.uint8)
    params = []
    w = CXIWriter(out, compression=compression, class_names=("none",), dtype=np.float32)
    try:
        for i in range(n_frames):
            f = sim.frame(i)
            f.meta.source = str(out)
            w.append(f.data, f.meta, mask=f.mask)
            labels[i] = f.labels
            params.append(json.dumps(f.params, default=float))
            if progress is not None:
                progress(i + 1)
        h5 = w.file  # add the multi-label columns before the atomic rename
        res = h5["entry_1"].require_group("result_1")
        d = res.create_dataset("labels", data=labels)
        d.attrs["class_names"] = json.dumps(list(CDI_CLASS_NAMES))
        res.create_dataset("params", data=np.array(params, dtype=object), dtype=h5py.string_dtype())
        cfg = asdict(sim.config)
        h5.attrs["cdi_config"] = json.dumps({**cfg, "seed": seed}, default=float)
        h5.attrs["task"] = "cdi"
    except BaseException:
        w.abort()
        raise
    return w.close()
