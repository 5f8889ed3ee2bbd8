"""Diffuse background of an SFX still: water ring, air scatter, jet streak, shadows.

Radial profiles are functions of ``s = 2 sin θ / λ = 1/d`` (Å⁻¹); the water
ring is centred at ``s₀ = 1/3.2 Å⁻¹`` (d = 3.2 Å, i.e. q = 2π s₀ = 1.96 Å⁻¹, the
main peak of liquid water), with a weaker second shell at s ≈ 0.46 Å⁻¹
(q ≈ 2.9 Å⁻¹) and a flat high-angle floor (incoherent scatter).  Air and
parasitic scatter fall off smoothly with angle, ∝ 1/(1 + (s/s_a)²).

Every diffuse component is multiplied by the pixel's solid angle relative to
the beam centre (cos³ 2θ) and by the polarisation factor of a beam polarised
along x: ``1 - sin²2θ cos²φ = 1 - X²/(X² + Y² + D²)``.

The per-frame map is built from two 1-D tables over the radius (¼-pixel steps)
and the column offset, so a 1920 × 1920 map costs a few array passes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from diffscreen.simulate._kernels import radial_map, render_spots, upsample2

__all__ = [
    "WaterRing",
    "water_profile",
    "air_profile",
    "PowderRing",
    "ring_profile",
    "ring_radius_px",
    "ring_grains",
    "cosmic_tracks",
    "diffuse_background",
    "jet_streak",
    "kapton_transmission",
]

WATER_RING_D_A = 3.2
"""d-spacing of the water ring's maximum, Å (s₀ = 1/3.2 Å⁻¹, q₀ = 2π/3.2 Å⁻¹)."""


@dataclass
class WaterRing:
    """Water-ring shape.

    Attributes
    ----------
    photons : float
        Peak height, photons per pixel at the beam centre's solid angle.
    s0 : float
        Peak position, Å⁻¹ (default 1/3.2).
    sigma : float
        Gaussian σ of the main peak, Å⁻¹.
    second : float
        Relative height of the shell at s = 0.46 Å⁻¹.
    floor : float
        Relative height of the high-angle floor.
    """

    photons: float
    s0: float = 1.0 / WATER_RING_D_A
    sigma: float = 0.038
    second: float = 0.3
    floor: float = 0.15


def water_profile(s: np.ndarray, w: WaterRing) -> np.ndarray:
    """Water scattering vs s (Å⁻¹), photons per pixel before geometric factors."""
    main = np.exp(-0.5 * ((s - w.s0) / w.sigma) ** 2)
    shell = w.second * np.exp(-0.5 * ((s - 0.46) / 0.06) ** 2)
    floor = w.floor * (1.0 - np.exp(-((s / 0.35) ** 2)))
    low = 0.04 * np.exp(-0.5 * (s / 0.05) ** 2)  # small-angle (compressibility) term
    return w.photons * (main + shell + floor + low)


def air_profile(s: np.ndarray, photons: float, s_a: float) -> np.ndarray:
    """Air/parasitic scatter vs s (Å⁻¹), photons per pixel: photons / (1 + (s/s_a)²)."""
    return photons / (1.0 + (s / s_a) ** 2)


@dataclass
class PowderRing:
    """One powder ring (ice, salt, any polycrystalline scatterer): not a Bragg spot of the crystal.

    Attributes
    ----------
    d_A : float
        d-spacing, Å (ring at s = 1/d).
    photons : float
        Peak height of the smooth part, photons per pixel (before the solid
        angle and polarisation factors of :func:`diffuse_background`).
    sigma_s : float
        Radial Gaussian σ in s, Å⁻¹.
    grain_photons : float
        Peak-equivalent height of the grainy part (rendered by
        :func:`ring_grains`), photons per pixel.
    grain_spacing_px : float
        Mean distance between grains along the ring, px.
    sigma_px : float
        Radial σ in pixels (the ring's width on the detector).
    kind : str
        ``"ice"`` or ``"powder"``.
    """

    d_A: float
    photons: float
    sigma_s: float
    grain_photons: float = 0.0
    grain_spacing_px: float = 3.0
    sigma_px: float = 2.0
    kind: str = "powder"


def ring_profile(s: np.ndarray, rings) -> np.ndarray:
    """Smooth radial profile of powder rings vs s (Å⁻¹), photons per pixel.

    Σ photons·exp(-½((s - 1/d)/σ_s)²) over ``rings`` (Gaussians in s; d = λ/(2 sin θ)).
    """
    out = np.zeros_like(np.asarray(s, float))
    for r in rings:
        if r.photons > 0:
            out += r.photons * np.exp(-0.5 * ((s - 1.0 / r.d_A) / r.sigma_s) ** 2)
    return out


def ring_radius_px(d_A: float, wavelength_A: float, distance_mm: float, pixel_size_mm: float) -> float:
    """Radius (px) of the ring of d-spacing ``d_A`` on a flat detector normal to the beam; inf beyond 2θ = 90°."""
    x = wavelength_A / (2 * d_A)
    if x >= 1:
        return np.inf
    tt = 2 * np.arcsin(x)
    if tt >= np.pi / 2 - 1e-3:
        return np.inf
    return float(distance_mm * np.tan(tt) / pixel_size_mm)


def ring_grains(img, beam_centre_px, rng, ring: PowderRing, radius_px: float, solid_angle: float, max_grains: int):
    """Add the grainy part of a powder ring to ``img`` in place (small Gaussian blobs along the circle).

    Grains sit at uniform random azimuths, radius ``radius_px`` + N(0, σ_px),
    σ 0.5–0.9 px, with exponentially distributed fluxes whose mean keeps the
    ring's integrated flux (``grain_photons`` × √(2π) σ_px per unit length of
    arc) × ``solid_angle``.  Only grains on the frame are rendered.

    Returns
    -------
    int
        Number of grains rendered.
    """
    H, W = img.shape
    cx, cy = beam_centre_px
    n = int(min(max_grains, max(2 * np.pi * radius_px / ring.grain_spacing_px, 1)))
    if n <= 0 or ring.grain_photons <= 0:
        return 0
    total = ring.grain_photons * np.sqrt(2 * np.pi) * ring.sigma_px * 2 * np.pi * radius_px * solid_angle
    phi = rng.uniform(0, 2 * np.pi, n)
    r = radius_px + ring.sigma_px * rng.standard_normal(n)
    xs = cx + r * np.cos(phi)
    ys = cy + r * np.sin(phi)
    amps = rng.exponential(total / n, n)
    ok = (xs > -3) & (xs < W + 2) & (ys > -3) & (ys < H + 2)
    m = int(ok.sum())
    if not m:
        return 0
    xs, ys, amps = xs[ok], ys[ok], amps[ok]
    sig = rng.uniform(0.5, 0.9, m)
    G = np.stack([xs, ys, np.ones(m), np.zeros(m), sig, sig], axis=1)
    render_spots(img, G, np.arange(m), np.full(m, 3), 1.0, 0.0, 1.0, amps.astype(np.float32), np.ones(m, np.float32),
                 np.zeros(m, bool), np.zeros(0))  # fmt: skip
    return m


def cosmic_tracks(img, rng, n: int, length_px, photons) -> np.ndarray:
    """Add ``n`` cosmic-ray tracks (short bright straight streaks) to ``img`` in place.

    Each track starts at a uniform random pixel with a random direction, is
    ``length_px`` long (log-uniform in the range; its projection on the
    sensor) and deposits ``photons`` photon equivalents per pixel of length
    (log-uniform), fluctuating along the track (Γ(2) per ½-px step, a
    Landau-like straggling), with a Gaussian width of 0.35–0.7 px.

    Parameters
    ----------
    img : (H, W) float32 ndarray
        Expected photons, modified in place.
    rng : numpy.random.Generator
    n : int
    length_px, photons : (float, float)

    Returns
    -------
    (n, 4) float ndarray
        x0, y0, x1, y1 of each track, px.
    """
    H, W = img.shape
    ends = np.zeros((n, 4))
    for k in range(n):
        L = float(np.exp(rng.uniform(np.log(length_px[0]), np.log(length_px[1]))))
        ph = float(np.exp(rng.uniform(np.log(photons[0]), np.log(photons[1]))))
        x0, y0 = rng.uniform(0, W - 1), rng.uniform(0, H - 1)
        a = rng.uniform(0, 2 * np.pi)
        m = max(int(L / 0.5) + 1, 2)
        t = np.linspace(0, L, m)
        xs, ys = x0 + t * np.cos(a), y0 + t * np.sin(a)
        amps = ph * 0.5 * rng.gamma(2.0, 0.5, m)
        ok = (xs > -2) & (xs < W + 1) & (ys > -2) & (ys < H + 1)
        xs, ys, amps = xs[ok], ys[ok], amps[ok]
        ends[k] = (x0, y0, x0 + L * np.cos(a), y0 + L * np.sin(a))
        mm = len(xs)
        if not mm:
            continue
        sig = np.full(mm, rng.uniform(0.35, 0.7))
        G = np.stack([xs, ys, np.ones(mm), np.zeros(mm), sig, sig], axis=1)
        render_spots(img, G, np.arange(mm), np.full(mm, 2), 1.0, 0.0, 1.0, amps.astype(np.float32),
                     np.ones(mm, np.float32), np.zeros(mm, bool), np.zeros(0))  # fmt: skip
    return ends


def diffuse_background(
    shape,
    beam_centre_px,
    pixel_size_mm: float,
    distance_mm: float,
    wavelength_A: float,
    profile,
    *,
    kapton=None,
    stride: int = 2,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Expected diffuse photons per pixel.

    The map is evaluated on every ``stride``-th pixel and interpolated
    bilinearly (the diffuse background varies over tens of pixels; this
    halves the cost of a 1920 × 1920 frame).

    Parameters
    ----------
    shape : (int, int)
        (H, W).
    beam_centre_px : (float, float)
        (x, y), pixels.
    pixel_size_mm, distance_mm, wavelength_A : float
        Geometry.
    profile : callable
        ``profile(s)`` → photons per pixel at s (Å⁻¹), vectorised.
    kapton : (normal, mu_t, max_att) or None
        Multiply by :func:`kapton_transmission` with these parameters.
    stride : {1, 2}
        Evaluation stride.
    out : (H, W) float32 ndarray, optional
        Write the map here (a reused buffer) instead of a new array.

    Returns
    -------
    bg : (H, W) float32 ndarray
        profile(s) × cos³2θ × polarisation (× kapton transmission).
    """
    H, W = shape
    cx, cy = beam_centre_px
    f = int(stride)
    if f not in (1, 2):
        raise ValueError("stride must be 1 or 2")
    hc = H if f == 1 else H // 2 + 1
    wc = W if f == 1 else W // 2 + 1
    dx = np.arange(wc, dtype=np.float32) * f - np.float32(cx)
    dy = np.arange(hc, dtype=np.float32) * f - np.float32(cy)
    rmax = float(np.hypot(max(abs(dx[0]), abs(dx[-1])), max(abs(dy[0]), abs(dy[-1])))) + 2
    rk = np.arange(int(rmax * 4) + 2) / 4.0
    R = rk * pixel_size_mm
    rho2 = R**2 + distance_mm**2
    cos2t = distance_mm / np.sqrt(rho2)
    two_theta = np.arctan2(R, distance_mm)
    s = 2 * np.sin(two_theta / 2) / wavelength_A
    t1 = (profile(s) * cos2t**3).astype(np.float32)
    t2 = (t1 * (pixel_size_mm**2 / rho2)).astype(np.float32)
    # t1 - t2·dx² at table index round(4 r) = floor(sqrt((4dy)² + (4dx)²) + 0.5), one compiled pass
    bg = np.empty((hc, wc), np.float32)
    radial_map(bg, dx, dy, t1, t2)
    if kapton is not None:
        bg *= kapton_transmission(dx[None, :], dy[:, None], pixel_size_mm, distance_mm, *kapton)
    if f == 1:
        if out is None:
            return bg
        out[...] = bg
        return out
    return _upsample2(bg, H, W, out)


def _upsample2(a: np.ndarray, H: int, W: int, out: np.ndarray | None = None) -> np.ndarray:
    """Bilinear 2× upsampling of values at even pixels to an (H, W) array (float32).

    ``a`` holds the values at pixels (2i, 2j) and must cover rows/columns up to
    H - 1 / W - 1 (``a.shape >= (H // 2 + 1, W // 2 + 1)`` when H, W are even).
    Midpoints are the means of their two (rows) or four (centres) neighbours.
    """
    if out is None:
        out = np.empty((H, W), np.float32)
    upsample2(out, np.ascontiguousarray(a, np.float32))
    return out


def jet_streak(
    img, beam_centre_px, rng, *, photons, angle_rad, r_min, r_max, decay_px, width_px, asym=1.0, weight_fn=None
):
    """Add a liquid-jet streak (Ke §3.1) through the beam centre in place.

    The streak is a line of Gaussian width ``width_px`` perpendicular to the
    jet, through the beam centre, with intensity ``photons·exp(-(r-r_min)/decay)``
    per pixel along it, from r_min to r_max on both sides (one side scaled by
    ``asym``).

    Parameters
    ----------
    img : (H, W) float32 ndarray
        Expected photons, modified in place.
    beam_centre_px : (float, float)
    rng : numpy.random.Generator
        For the streak's graininess.
    photons, angle_rad, r_min, r_max, decay_px, width_px, asym : float
    weight_fn : callable, optional
        ``weight_fn(x, y)`` → multiplicative factor at streak points (e.g. a
        shadow's transmission).
    """
    cx, cy = beam_centre_px
    step = 0.5
    r = np.arange(r_min, r_max, step)
    amp = photons * np.exp(-(r - r_min) / decay_px) * step
    amp = amp * rng.gamma(4.0, 0.25, size=len(r))  # speckly streak
    ca, sa = np.cos(angle_rad), np.sin(angle_rad)
    xs = np.concatenate([cx + r * ca, cx - r * ca])
    ys = np.concatenate([cy + r * sa, cy - r * sa])
    amps = np.concatenate([amp, amp * asym])
    H, W = img.shape
    ok = (xs > -4) & (xs < W + 4) & (ys > -4) & (ys < H + 4) & (amps > 1e-3)
    xs, ys, amps = xs[ok], ys[ok], amps[ok]
    if not len(xs):
        return
    if weight_fn is not None:
        amps = amps * weight_fn(xs, ys)
    m = len(xs)
    sig = np.full(m, float(width_px))
    G = np.stack([xs, ys, np.full(m, -sa), np.full(m, ca), sig, sig], axis=1)  # isotropic
    # Gaussian points (PSF weight 1, σ 0) in 7 × 7 windows
    ones = np.ones(m, np.float32)
    render_spots(img, G, np.arange(m), np.full(m, 3), 1.0, 0.0, 1.0, amps.astype(np.float32), ones,
                 np.zeros(m, bool), np.zeros(0))  # fmt: skip


def kapton_transmission(dx, dy, pixel_size_mm, distance_mm, normal, mu_t, max_att=np.inf):
    """Transmission through a kapton conveyor belt (Ke §3.1, Fig. 6a).

    The belt is a plane through the sample with unit normal ``normal`` (lab
    frame).  Rays with ``d·n > 0`` cross it along a path ``t / (d·n)`` and are
    attenuated by ``exp(-min(μt / (d·n), max_att))``; the others pass
    untouched.  The shadow is thus a half-plane, darkest at grazing exit near
    its edge; ``max_att`` = μ × (distance to the belt's edge) caps the path of
    grazing rays, which leave the belt through its side.

    Parameters
    ----------
    dx, dy : ndarray
        Pixel offsets from the beam centre (broadcastable), pixels.
    pixel_size_mm, distance_mm : float
    normal : (3,) array_like
        Unit normal of the belt plane.
    mu_t : float
        μ × thickness at normal incidence.
    max_att : float
        Largest attenuation exponent (grazing rays).

    Returns
    -------
    T : ndarray
        Transmission in [0, 1], broadcast shape of dx, dy, float32.
    """
    nx, ny, nz = (float(v) for v in normal)
    dx = np.asarray(dx, np.float32)
    dy = np.asarray(dy, np.float32)
    if mu_t <= 0:
        return np.ones(np.broadcast_shapes(dx.shape, dy.shape), np.float32)
    # with ρ = |(X, Y, D)| and d·n = (nx X + ny Y + nz D) / ρ the attenuation is μt / (d·n)
    # = μt ρ / (nx X + ny Y + nz D).  Computed as r = μt ρ / -(nx X + ny Y + nz D), which is
    # -attenuation where the ray crosses the belt and positive where it does not, then
    # clipped to [-max_att, 0]: T = exp(r) (1 outside the shadow), in six array passes.
    mp = np.float32(mu_t * pixel_size_mm)
    Xm = dx * mp
    Ym = dy * mp
    rho = Xm * Xm
    rho = rho + (Ym * Ym + np.float32((mu_t * distance_mm) ** 2))
    np.sqrt(rho, out=rho)  # μt ρ
    neg = (dx * np.float32(-nx * pixel_size_mm)) + (dy * np.float32(-ny * pixel_size_mm) - np.float32(nz * distance_mm))
    with np.errstate(divide="ignore", invalid="ignore"):
        np.divide(rho, neg, out=rho)
    np.clip(rho, -np.float32(min(max_att, 1e30)), np.float32(0.0), out=rho)
    np.exp(rho, out=rho)
    return rho


def beam_stop_shadow(shape, centre, radius_px: float, arm_angle_rad: float, arm_width_px: float) -> tuple:
    """Region shadowed by a round beam stop on a holder arm (no detector hole behind it).

    The stop is a disc of ``radius_px`` about the beam centre; its holder is a
    straight arm ``arm_width_px`` wide from the centre to the frame edge at
    azimuth ``arm_angle_rad`` (image coordinates, from +x towards +y).  Real
    stops (lead or tungsten) transmit almost nothing; their edges are sharp at
    the detector (the stop sits close to it).

    Parameters
    ----------
    shape : (int, int)
        Frame shape (H, W).
    centre : (float, float)
        Beam centre (x, y), px.
    radius_px, arm_width_px : float
    arm_angle_rad : float

    Returns
    -------
    window : tuple of slice
        The (rows, columns) bounding box of the shadow, to update in place.
    shadow : (h, w) bool ndarray
        True where the stop or its arm shadows the detector, inside ``window``.
    """
    H, W = shape
    cx, cy = centre
    ux, uy = np.cos(arm_angle_rad), np.sin(arm_angle_rad)
    # bounding box of disc + arm (arm runs from the centre to beyond the frame edge)
    L = float(np.hypot(H, W))
    xs = [cx - radius_px, cx + radius_px, cx + ux * L]
    ys = [cy - radius_px, cy + radius_px, cy + uy * L]
    pad = arm_width_px / 2 + 1
    x0, x1 = max(int(min(xs) - pad), 0), min(int(max(xs) + pad) + 1, W)
    y0, y1 = max(int(min(ys) - pad), 0), min(int(max(ys) + pad) + 1, H)
    dx = np.arange(x0, x1, dtype=np.float32)[None, :] - np.float32(cx)
    dy = np.arange(y0, y1, dtype=np.float32)[:, None] - np.float32(cy)
    along = dx * np.float32(ux) + dy * np.float32(uy)
    across = np.abs(dy * np.float32(ux) - dx * np.float32(uy))
    shadow = (dx * dx + dy * dy <= np.float32(radius_px**2)) | ((along >= 0) & (across <= np.float32(arm_width_px / 2)))
    return (slice(y0, y1), slice(x0, x1)), shadow
