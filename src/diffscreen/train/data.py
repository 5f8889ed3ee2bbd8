"""Labelled frames for training: splitting and loading.

A training set is a list of :class:`~diffscreen.io.labels.Sample` (a frame in a file plus its class), as
:func:`~diffscreen.io.labels.collect_samples` pairs them from label files (CXIDB-76 ``expert_annotation.txt``, CSV
``file,frame,label``) or, for diffscreen's simulated CXI runs, from the runs themselves.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from diffscreen.errors import ConfigError
from diffscreen.io import check_frame, open_source
from diffscreen.io.labels import Sample, collect_samples
from diffscreen.preprocess import Preprocessor

__all__ = ["Sample", "collect_samples", "split_samples", "FrameDataset", "samples_to_arrays"]


def split_samples(samples, fractions=(0.5, 0.2, 0.3), *, mode: str = "order", seed: int = 0):
    """Split into train / validation / test.

    Parameters
    ----------
    samples : list of Sample
    fractions : (float, float, float)
        Train, validation, test fractions (Ke §3.4: 50/20/30).
    mode : {"order", "random"}
        ``"order"``: each input file is split in frame order, as the fv5080 code does (fv5080), so neighbouring
        frames do not straddle the split and every run contributes to every part; ``"random"``: a seeded shuffle
        of all frames, as the paper's text says.
    seed : int

    Returns
    -------
    train, val, test : lists of Sample

    Raises
    ------
    ConfigError
        Fractions that are not three non-negative numbers summing to 1, or an unknown ``mode``.
    """
    if len(fractions) != 3 or abs(sum(fractions) - 1) > 1e-6 or min(fractions) < 0:
        raise ConfigError(f"split fractions must be three non-negative numbers summing to 1, got {fractions}")
    if mode == "random":
        idx = np.arange(len(samples))
        np.random.default_rng(seed).shuffle(idx)
        groups = [idx]
    elif mode == "order":
        by_source: dict = {}
        for k, s in enumerate(samples):
            by_source.setdefault(s.source, []).append(k)
        groups = [np.asarray(g) for g in by_source.values()]
    else:
        raise ConfigError(f"split mode must be 'order' or 'random', got {mode!r}")
    parts = ([], [], [])
    for g in groups:
        n_train = int(round(fractions[0] * len(g)))
        n_val = int(round(fractions[1] * len(g)))
        for part, chunk in zip(parts, np.split(g, [n_train, n_train + n_val])):
            part.extend(samples[i] for i in chunk)
    return parts


class FrameDataset(Dataset):
    """Read and preprocess labelled frames on demand.

    Items are addressed as ``(k, dx, dy)``: sample ``k`` cropped with shift ``(dx, dy)`` output pixels (the
    sampler draws the shifts, so an epoch is reproducible from the seed alone); a plain integer ``k`` means a
    centred crop.

    Returns
    -------
    x : (1, S, S) float32 tensor
    y : int64 tensor (class index)

    Raises
    ------
    FrameReadError, BadFrameError
        A labelled frame cannot be read, or has NaN/inf pixels or is empty.
    """

    def __init__(self, samples, preprocessor: Preprocessor):
        self.samples = list(samples)
        self.pre = preprocessor
        self._open = {}

    def __len__(self) -> int:
        return len(self.samples)

    def frame(self, s: Sample) -> np.ndarray:
        """The checked frame of ``s`` (its file stays open for the next one)."""
        if s.source not in self._open:
            self._open[s.source] = open_source(s.source)
        return check_frame(self._open[s.source].read(s.index))

    def __getstate__(self):  # open file handles do not cross process boundaries
        d = dict(self.__dict__)
        d["_open"] = {}
        return d

    def __getitem__(self, item):
        k, dx, dy = (item, 0, 0) if np.isscalar(item) else item
        s = self.samples[int(k)]
        x = self.pre([self.frame(s)], shifts=[(dx, dy)])[0]
        return torch.from_numpy(x), torch.tensor(s.label, dtype=torch.int64)


def samples_to_arrays(samples, preprocessor, *, rows: bool = False, batch_size: int = 16, progress=None
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Read and preprocess labelled frames into memory for :func:`~diffscreen.train.transfer.transfer_on_arrays` / DANN.

    Parameters
    ----------
    samples : list of :class:`~diffscreen.train.data.Sample`
    preprocessor : Preprocessor
        The recipe of the model to be trained (centred crops, no shifts).
    rows : bool
        Keep only the row ranges ``(N, 1, S)`` (:func:`~diffscreen.preprocess.rwd.row_ranges`, for rwd1d).
    batch_size : int
    progress : callable, optional
        ``progress(total=N)`` once, then ``progress(advance=k)``.

    Returns
    -------
    x : (N, 1, S, S) float16 or (N, 1, S) float32 ndarray
    y : (N,) int64 ndarray

    Raises
    ------
    FrameReadError, BadFrameError
        A labelled frame cannot be read or is unusable (named by file and frame).
    """
    from diffscreen.preprocess.rwd import row_ranges

    if progress:
        progress(total=len(samples))
    xs, ds = [], FrameDataset(samples, preprocessor)
    try:
        for b in range(0, len(samples), batch_size):
            chunk = samples[b : b + batch_size]
            x = preprocessor([ds.frame(s) for s in chunk])
            xs.append(row_ranges(x) if rows else x.astype(np.float16))
            if progress:
                progress(advance=len(chunk))
    finally:
        for src in ds._open.values():
            src.close()
    return np.concatenate(xs), np.array([s.label for s in samples], np.int64)
