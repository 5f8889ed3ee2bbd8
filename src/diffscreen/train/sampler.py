"""Class-balanced mini-batches (Ke et al. 2018, §2.1.3; fv5080)."""

from __future__ import annotations

import numpy as np
from torch.utils.data import Sampler

__all__ = ["ClassBalancedSampler"]


class ClassBalancedSampler(Sampler):
    """Draw a class uniformly, then a frame of that class (with replacement).

    Every mini-batch then holds about equal numbers of each class, so the
    majority class (usually miss) does not dominate training.  Each item is
    ``(k, dx, dy)``: a sample index and a random crop shift in output pixels
    (Ke §2.2 random cropping).

    Parameters
    ----------
    labels : (N,) sequence of int
        Class index of each sample.
    n_items : int
        Items per epoch (batches per epoch × batch size).
    max_shift : int
        Shifts are uniform integers in ``[-max_shift, max_shift]``.
    seed : int
        Base seed; epoch ``e`` uses ``default_rng([seed, e])`` so that a
        resumed run draws the same batches.
    """

    def __init__(self, labels, n_items: int, *, max_shift: int = 0, seed: int = 0):
        self.labels = np.asarray(labels)
        self.classes = np.unique(self.labels)
        self.by_class = [np.flatnonzero(self.labels == c) for c in self.classes]
        self.n_items = int(n_items)
        self.max_shift = int(max_shift)
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n_items

    def draw(self) -> np.ndarray:
        """The epoch's items as an ``(n_items, 3)`` int array."""
        rng = np.random.default_rng([self.seed, self.epoch])
        cls = rng.integers(0, len(self.classes), size=self.n_items)
        pick = np.array([self.by_class[c][rng.integers(len(self.by_class[c]))] for c in cls], dtype=np.int64)
        m = self.max_shift
        shifts = rng.integers(-m, m + 1, size=(self.n_items, 2)) if m else np.zeros((self.n_items, 2), np.int64)
        return np.column_stack([pick, shifts])

    def __iter__(self):
        return iter(tuple(int(v) for v in row) for row in self.draw())
