"""Scoring a spot-finder spot by spot against known Bragg spot positions."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from diffscreen.errors import ConfigError

__all__ = ["PeakMatch", "match_peaks"]


@dataclass(frozen=True)
class PeakMatch:
    """Result of :func:`match_peaks`.

    Attributes
    ----------
    pairs : (K, 2) int ndarray
        Matched (found index, true index) pairs.
    n_found, n_true : int
    distances : (K,) float ndarray
        Distance of each matched pair, px.
    """

    pairs: np.ndarray
    n_found: int
    n_true: int
    distances: np.ndarray

    @property
    def n_matched(self) -> int:
        return len(self.pairs)

    @property
    def precision(self) -> float:
        """Matched / found (NaN when nothing was found)."""
        return self.n_matched / self.n_found if self.n_found else float("nan")

    @property
    def recall(self) -> float:
        """Matched / true (NaN when there is no true spot)."""
        return self.n_matched / self.n_true if self.n_true else float("nan")


def match_peaks(found, true, *, max_distance: float = 3.0) -> PeakMatch:
    """Match found peaks to true spot positions, one to one.

    Pairs closer than ``max_distance`` are matched greedily in order of
    increasing distance (each found and each true spot used at most once),
    as peak-detection checks in the field do (e.g. CrystFEL's
    ``check-peak-detection``).

    Parameters
    ----------
    found : (N, >=2) array_like
        Found peaks, columns x (fast scan), y (slow scan) in px; further
        columns are ignored.
    true : (M, >=2) array_like
        True spot positions, same convention (e.g. ``SimFrame.peaks``).
    max_distance : float
        Largest distance of a match, px.

    Returns
    -------
    PeakMatch

    Raises
    ------
    ConfigError
        If an input is not an (N, >=2) table or ``max_distance`` <= 0.
    """
    from scipy.spatial import cKDTree

    f = np.asarray(found, dtype=np.float64).reshape(-1, np.shape(found)[-1] if np.ndim(found) == 2 else 2)
    t = np.asarray(true, dtype=np.float64).reshape(-1, np.shape(true)[-1] if np.ndim(true) == 2 else 2)
    if f.shape[1] < 2 or t.shape[1] < 2:
        raise ConfigError("peak tables need at least two columns (x, y)")
    if max_distance <= 0:
        raise ConfigError("max_distance must be > 0")
    empty = PeakMatch(np.zeros((0, 2), int), len(f), len(t), np.zeros(0))
    if len(f) == 0 or len(t) == 0:
        return empty
    sdm = cKDTree(f[:, :2]).sparse_distance_matrix(cKDTree(t[:, :2]), max_distance, output_type="ndarray")
    if len(sdm) == 0:
        return empty
    sdm = sdm[np.argsort(sdm["v"], kind="stable")]
    used_f, used_t, pairs, dist = set(), set(), [], []
    for i, j, d in zip(sdm["i"], sdm["j"], sdm["v"]):
        if i in used_f or j in used_t:
            continue
        used_f.add(i)
        used_t.add(j)
        pairs.append((i, j))
        dist.append(d)
    return PeakMatch(np.array(pairs, int), len(f), len(t), np.array(dist))
