"""Crystal side of the simulator: lattice, orientation, Ewald sphere, partiality, intensities.

Conventions (used throughout :mod:`diffscreen.simulate`)
--------------------------------------------------------
* Lab frame: the X-ray beam travels along +z; x is the detector's fast-scan
  direction, y its slow-scan direction; the beam is linearly polarised along x.
* Reciprocal-space vectors are in the crystallographer's convention
  ``s = k_out - k_in`` with ``|k| = 1/λ`` (Å⁻¹), so ``|s| = 2 sin θ / λ = 1/d``.
  Multiply by 2π to get the physicist's ``q``.
* ``B`` is the (3, 3) matrix whose columns are the reciprocal basis vectors
  a*, b*, c* in the standard (PDB) orthogonal frame: a along x, b in the xy
  plane.  A rotated crystal has ``A = U @ B`` and ``s_hkl = A @ (h, k, l)``.

Physics
-------
A reflection h with reciprocal vector ``s`` satisfies Bragg's law for the
wavelength ``λ_h = -2 s_z / |s|²`` (Ewald construction).  For an XFEL still
the spectrum has a relative width σ_bw (Gaussian in ln λ) and a mosaic crystal
accepts wavelengths over a width σ_mos = σ_R / (λ|s|²/2), with
``σ_R² = (|s| σ_η)² + σ_dom²`` the reflection's reciprocal-space width from the
mosaic spread σ_η (rad) and the domain size (σ_dom ≈ 1/(2.355·size)).  The
partiality is the peak-normalised overlap of the two Gaussians,

    p = exp(-(ln λ_h - ln λ₀)² / (2 (σ_bw² + σ_mos²)))  ∈ [0, 1],

which equals the usual excitation-error form p = exp(-ε²/2σ_ε²) with
``ε ≈ λ₀|s|²/2 + s_z`` (Sauter et al. 2014; White 2014).  The diffracting
wavelengths (product of the two Gaussians) set the spot's centroid and its
radial elongation: the spot moves radially as λ varies
(dR/d ln λ = D sec²2θ · 2 tan θ), so high-angle spots of a mosaic crystal
streak radially, as Ke et al. (2018, §3.3.1) and Hattne et al. (2014) describe.

Intensities follow Wilson statistics for acentric reflections (exponential
distribution of I/⟨I⟩) with ⟨I⟩(s) ∝ exp(-B s²/2) (i.e. exp(-2B (sinθ/λ)²))
times a mild bulk-solvent dip at low resolution.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from diffscreen.simulate import _kernels

__all__ = [
    "CellSpec",
    "b_matrix",
    "random_rotation",
    "systematic_absence",
    "ewald_candidates",
    "Reflections",
    "predict_reflections",
    "HC_KEV_A",
]

#: h·c in keV·Å: λ[Å] = HC_KEV_A / E[keV].
HC_KEV_A = 12.3984198


@dataclass(frozen=True)
class CellSpec:
    """A unit cell and space group to draw crystals from.

    Attributes
    ----------
    name : str
        Protein or label (e.g. ``"thermolysin"``).
    a, b, c : float
        Cell edges in Å.
    alpha, beta, gamma : float
        Cell angles in degrees.
    space_group : str
        Hermann–Mauguin symbol, e.g. ``"P 21 21 21"``; used for systematic
        absences only.
    source : str
        Where the cell comes from (e.g. ``"Ke et al. 2018 Table 1, LN84"``).
    b_factor_A2 : (float, float) or None
        Wilson B factor range (Å²) of crystals of this cell, overriding the
        preset's ``b_factor_A2`` (small-molecule crystals: a few Å², so they
        diffract to high resolution).  The preset's uniform draw is mapped
        linearly onto this range (no extra random draw).  None = the preset's.
    """

    name: str
    a: float
    b: float
    c: float
    alpha: float = 90.0
    beta: float = 90.0
    gamma: float = 90.0
    space_group: str = "P 1"
    source: str = ""
    b_factor_A2: tuple[float, float] | None = None

    @property
    def params(self) -> tuple[float, float, float, float, float, float]:
        return (self.a, self.b, self.c, self.alpha, self.beta, self.gamma)

    @property
    def volume_A3(self) -> float:
        """Cell volume in Å³."""
        ca, cb, cg = np.cos(np.radians([self.alpha, self.beta, self.gamma]))
        return float(self.a * self.b * self.c * np.sqrt(1 - ca**2 - cb**2 - cg**2 + 2 * ca * cb * cg))


def b_matrix(cell: CellSpec) -> np.ndarray:
    """Reciprocal basis matrix B of a unit cell.

    Parameters
    ----------
    cell : CellSpec

    Returns
    -------
    B : (3, 3) float64 ndarray
        Columns a*, b*, c* in Å⁻¹ in the PDB orthogonal frame (the transpose
        of the fractionalisation matrix, as ``gemmi.UnitCell.frac``), so
        ``|B @ hkl| = 1/d_hkl``.
    """
    a, b, c, al, be, ga = cell.params
    ca, cb, cg = np.cos(np.radians([al, be, ga]))
    sg = np.sin(np.radians(ga))
    vol = cell.volume_A3
    orth = np.array(
        [
            [a, b * cg, c * cb],
            [0.0, b * sg, c * (ca - cb * cg) / sg],
            [0.0, 0.0, vol / (a * b * sg)],
        ]
    )
    return np.linalg.inv(orth).T


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    """A rotation matrix drawn uniformly from SO(3) (normalised Gaussian quaternion).

    Parameters
    ----------
    rng : numpy.random.Generator

    Returns
    -------
    U : (3, 3) float64 ndarray
        Proper rotation (det = +1).
    """
    q = rng.standard_normal(4)
    w, x, y, z = q / np.linalg.norm(q)
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


_ABSENCE_CACHE: dict[str, list] = {}


def _symmetry_ops(space_group: str) -> list:
    """(R, t) pairs (integer rotation, fractional translation) of a space group.

    Uses gemmi when it is installed; otherwise knows P 1, P 21 21 21 and P 61 2 2
    (the space groups of Ke et al. 2018 Table 1).
    """
    if space_group in _ABSENCE_CACHE:
        return _ABSENCE_CACHE[space_group]
    ops = []
    try:
        import gemmi

        go = gemmi.SpaceGroup(space_group).operations()
        den = gemmi.Op.DEN
        for op in go:  # all ops including centring
            ops.append((np.array(op.rot, dtype=np.int64) // den, np.array(op.tran, dtype=float) / den))
    except ImportError:
        key = space_group.replace(" ", "").upper()
        if key == "P212121":
            ops = [
                (np.diag([1, 1, 1]), np.zeros(3)),
                (np.diag([-1, -1, 1]), np.array([0.5, 0, 0.5])),
                (np.diag([-1, 1, -1]), np.array([0, 0.5, 0.5])),
                (np.diag([1, -1, -1]), np.array([0.5, 0.5, 0])),
            ]
        elif key == "P6122":
            # only the 6_1 screw axis matters for absences: 00l present iff l = 6n
            ops = [(np.array([[1, -1, 0], [1, 0, 0], [0, 0, 1]]), np.array([0, 0, 1 / 6]))]
        else:
            ops = [(np.eye(3, dtype=np.int64), np.zeros(3))]
    _ABSENCE_CACHE[space_group] = ops
    return ops


@functools.lru_cache(maxsize=None)
def _translation_ops(space_group: str) -> tuple[np.ndarray, np.ndarray]:
    """The symmetry operations with a translation, the only ones that cause absences.

    Returns
    -------
    rots : (n, 3, 3) float64 ndarray
    trans : (n, 3) float64 ndarray
    """
    ops = [(R, t) for R, t in _symmetry_ops(space_group) if np.any(t)]
    rots = np.array([R for R, _ in ops], np.float64).reshape(-1, 3, 3)
    trans = np.array([t for _, t in ops], np.float64).reshape(-1, 3)
    return rots, trans


def systematic_absence(hkl: np.ndarray, space_group: str) -> np.ndarray:
    """Flag systematically absent reflections.

    A reflection h is absent if some symmetry operation (R, t) has h·R = h
    and h·t not an integer.

    Parameters
    ----------
    hkl : (N, 3) int ndarray
    space_group : str
        Hermann–Mauguin symbol.

    Returns
    -------
    absent : (N,) bool ndarray
    """
    hf = np.asarray(hkl, dtype=np.float64).reshape(-1, 3)  # float matmul uses BLAS
    absent = np.zeros(len(hf), dtype=bool)
    for R, t in zip(*_translation_ops(space_group)):
        fixed = np.all(np.abs(hf @ R - hf) < 0.5, axis=1)
        if not fixed.any():
            continue
        ph = hf[fixed] @ t
        absent[fixed] |= np.abs(ph - np.rint(ph)) > 1e-6
    return absent


def ewald_candidates(A: np.ndarray, wavelength_A: float, d_min_A: float, shell_A: float) -> np.ndarray:
    """Miller indices of lattice points within a shell around the Ewald sphere.

    Instead of enumerating the whole resolution sphere (millions of points for
    photosystem II), the lattice is cut into rows along the longest real axis;
    each row meets the sphere's shell in at most two short segments, found by
    solving two quadratics.

    Parameters
    ----------
    A : (3, 3) ndarray
        Rotated reciprocal basis (columns), Å⁻¹.
    wavelength_A : float
        Nominal wavelength λ₀ in Å; the sphere has radius 1/λ₀ and centre
        (0, 0, -1/λ₀).
    d_min_A : float
        Resolution limit in Å (points with |s| > 1/d_min are dropped).
    shell_A : float
        Half-thickness of the shell in Å⁻¹ (keep points with
        ``| |s - C| - 1/λ₀ | <= shell_A``).

    Returns
    -------
    hkl : (N, 3) int64 ndarray
        Candidate Miller indices, (0, 0, 0) excluded.
    """
    real = np.linalg.inv(A).T  # columns: real-space axes (Å) in the rotated frame
    lens = np.linalg.norm(real, axis=0)
    line = int(np.argmax(lens))
    i, j = [k for k in range(3) if k != line]
    hi = int(np.floor(lens[i] / d_min_A))
    hj = int(np.floor(lens[j] / d_min_A))
    H, K = np.meshgrid(np.arange(-hi, hi + 1), np.arange(-hj, hj + 1), indexing="ij")
    H = H.ravel()
    K = K.ravel()
    r0 = 1.0 / wavelength_A
    C = np.array([0.0, 0.0, -r0])
    u = H[:, None] * A[:, i] + K[:, None] * A[:, j] - C
    c = A[:, line]
    cc = float(c @ c)
    uc = u @ c
    uu = np.einsum("ij,ij->i", u, u)
    ro, ri = r0 + shell_A, r0 - shell_A
    disc_o = uc * uc - cc * (uu - ro * ro)
    ok = disc_o >= 0
    H, K, uc, uu, disc_o = H[ok], K[ok], uc[ok], uu[ok], disc_o[ok]
    sq_o = np.sqrt(disc_o)
    lo_o = (-uc - sq_o) / cc
    hi_o = (-uc + sq_o) / cc
    disc_i = uc * uc - cc * (uu - ri * ri)
    sq_i = np.sqrt(np.maximum(disc_i, 0.0))
    lo_i = np.where(disc_i > 0, (-uc - sq_i) / cc, hi_o)
    hi_i = np.where(disc_i > 0, (-uc + sq_i) / cc, hi_o + 1.0)
    # two segments: [lo_o, lo_i] and [hi_i, hi_o] (the second empty when no inner roots)
    starts = np.concatenate([np.ceil(lo_o), np.ceil(hi_i)]).astype(np.int64)
    stops = np.concatenate([np.floor(lo_i), np.floor(hi_o)]).astype(np.int64)
    counts = np.maximum(stops - starts + 1, 0)
    HH = np.concatenate([H, H])
    KK = np.concatenate([K, K])
    total = int(counts.sum())
    if total == 0:
        return np.zeros((0, 3), dtype=np.int64)
    rep = np.repeat(np.arange(len(counts)), counts)
    offs = np.arange(total) - np.repeat(np.cumsum(counts) - counts, counts)
    L = starts[rep] + offs
    hkl = np.empty((total, 3), dtype=np.int64)
    hkl[:, i] = HH[rep]
    hkl[:, j] = KK[rep]
    hkl[:, line] = L
    keep = np.any(hkl != 0, axis=1)
    return hkl[keep]


@dataclass
class Reflections:
    """Predicted reflections of one crystal on one still.

    All arrays have length N (one entry per reflection).

    Attributes
    ----------
    hkl : (N, 3) int64
        Miller indices.
    s : (N, 3) float64
        Reciprocal-lattice vector of the rotated crystal, Å⁻¹.
    d : (N,) float64
        Resolution, Å.
    partiality : (N,) float64
        In [0, 1].
    direction : (N, 3) float64
        Unit vector of the diffracted ray (centroid wavelength).
    two_theta : (N,) float64
        Scattering angle, rad.
    sigma_lnlam : (N,) float64
        Width (σ, in ln λ) of the band of wavelengths that the reflection
        actually diffracts (sets the radial streak length).
    intensity : (N,) float64
        Relative intensity: Wilson draw × resolution fall-off × partiality ×
        polarisation (photons per unit crystal scale).
    """

    hkl: np.ndarray
    s: np.ndarray
    d: np.ndarray
    partiality: np.ndarray
    direction: np.ndarray
    two_theta: np.ndarray
    sigma_lnlam: np.ndarray
    intensity: np.ndarray

    def __len__(self) -> int:
        return len(self.d)

    def take(self, idx) -> "Reflections":
        """The reflections at ``idx`` (indices, or a boolean mask of length N)."""
        idx = np.asarray(idx)
        if idx.dtype == bool:
            idx = np.flatnonzero(idx)  # (take with indices: 3× faster than a mask on (N, 3) arrays)
        return Reflections(**{k: v.take(idx, axis=0) for k, v in self.__dict__.items()})


def predict_reflections(
    A: np.ndarray,
    rng: np.random.Generator,
    *,
    wavelength_A: float,
    bandwidth_fwhm: float,
    mosaicity_fwhm_deg: float,
    domain_size_um: float,
    b_factor_A2: float,
    d_min_A: float,
    space_group: str = "P 1",
    solvent_k: float = 0.5,
    solvent_b_A2: float = 250.0,
    p_min: float = 2e-3,
) -> Reflections:
    """Reflections of a rotated crystal excited on one XFEL still.

    Parameters
    ----------
    A : (3, 3) ndarray
        Rotated reciprocal basis ``U @ B`` (columns), Å⁻¹.
    rng : numpy.random.Generator
        For the Wilson (acentric, exponential) intensity draws.
    wavelength_A : float
        Central wavelength λ₀, Å.
    bandwidth_fwhm : float
        Spectral width FWHM Δλ/λ (SASE ≈ 0.002–0.005).
    mosaicity_fwhm_deg : float
        Mosaic spread FWHM, degrees.
    domain_size_um : float
        Mosaic domain size, µm.
    b_factor_A2 : float
        Overall (Wilson) B factor, Å².
    d_min_A : float
        Resolution limit, Å.
    space_group : str
        For systematic absences.
    solvent_k, solvent_b_A2 : float
        Bulk-solvent dip: ⟨I⟩ is multiplied by 1 - k exp(-B_sol s²/2).
    p_min : float
        Reflections with lower partiality are dropped.

    Returns
    -------
    Reflections
        Only reflections diffracting forwards (2θ < 90°).

    Notes
    -----
    See the module docstring for the partiality and streak model.
    """
    sig_bw = bandwidth_fwhm / 2.3548
    sig_eta = np.radians(mosaicity_fwhm_deg) / 2.3548
    sig_dom = 1.0 / (2.3548 * domain_size_um * 1e4)
    smax = 1.0 / d_min_A
    sig_eps_max = np.hypot(wavelength_A * smax**2 / 2 * sig_bw, np.hypot(smax * sig_eta, sig_dom))
    shell = np.sqrt(-2 * np.log(p_min)) * sig_eps_max * 1.05 + 1e-6
    # candidates of ewald_candidates() with s_z < 0, |s| <= 1/d_min, partiality p >= p_min and not
    # systematically absent, p = exp(-dl² / 2(σ_bw² + σ_mos²)), dl = ln(λ_Bragg / λ₀),
    # λ_Bragg = -2 s_z / |s|², σ_mos = hypot(|s| σ_η, σ_dom) / (λ₀ |s|² / 2); then the diffracting
    # band's centroid λ_c (product of the spectrum and the acceptance Gaussians in ln λ), the ray
    # of the mosaic block rotated onto the sphere of radius 1/λ_c keeping |s| (so d is exact), and
    # fall-off × partiality × polarisation: two compiled passes (_kernels)
    rots, trans = _translation_ops(space_group)
    hkl, s, p, dl, sig_mos = _kernels.excited_reflections(
        np.ascontiguousarray(A, np.float64), wavelength_A, d_min_A, shell, sig_bw, sig_eta, sig_dom, p_min, rots, trans
    )
    fwd, direction, two_theta, sig_eff, factor = _kernels.still_geometry(
        s, p, dl, sig_mos, wavelength_A, sig_bw, b_factor_A2, solvent_k, solvent_b_A2
    )
    if not fwd.all():
        keep = np.flatnonzero(fwd)
        hkl, s, p, direction, two_theta, sig_eff, factor = (
            x.take(keep, axis=0) for x in (hkl, s, p, direction, two_theta, sig_eff, factor)
        )
    smag = np.sqrt(np.einsum("ij,ij->i", s, s))
    inten = rng.standard_exponential(len(p)) * factor  # Wilson (acentric) draws
    return Reflections(
        hkl=hkl,
        s=s,
        d=1.0 / smag,
        partiality=p,
        direction=direction,
        two_theta=two_theta,
        sigma_lnlam=sig_eff,
        intensity=inten,
    )
