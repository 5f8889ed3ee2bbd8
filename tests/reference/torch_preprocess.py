"""The fast path's preprocessing as batched tensor operations, for a GPU benchmark.

Only ``bench/throughput.py --device cuda`` (issue 4's GPU target) runs it; the
screening code uses :class:`diffscreen.preprocess.FastPreprocessor`, which
tests/test_fastpath.py holds this batched form to (on the CPU device).
"""

from __future__ import annotations

import numpy as np

from diffscreen.errors import ConfigError
from diffscreen.preprocess.fast import resample_matrix
from diffscreen.preprocess.pipeline import PreprocessConfig

__all__ = ["TorchPreprocessor"]


class TorchPreprocessor:
    """The fast path's preprocessing as batched tensor operations, for a GPU.

    Same steps and the same answers as
    :class:`~diffscreen.preprocess.FastPreprocessor` (tests run it on the CPU
    device): window pixels → masked/negative to 0 → resampled by the dense
    form of :func:`~diffscreen.preprocess.fast.resample_matrix`
    (``A_y · win · A_xᵀ``, batched) → GCN + LCN (Ke et al. 2018 Eqs. 6–9;
    5 × 5 box mean by ``avg_pool2d`` on a reflected border) or linear
    contrast (Ke Table 8).  Frames sharing a crop plan (one detector
    geometry) are processed as one batch.

    Parameters
    ----------
    config : PreprocessConfig, optional
    device : str or torch.device
        e.g. ``"cuda"``; ``"cpu"`` works too (for checks).

    Notes
    -----
    Used by ``bench/throughput.py --device cuda`` (issue 4's GPU target,
    frames in host memory); the per-frame CPU path is
    :class:`~diffscreen.preprocess.FastPreprocessor`.
    """

    def __init__(self, config: PreprocessConfig | None = None, device="cuda"):
        import torch

        self.config = config or PreprocessConfig()
        self.device = torch.device(device)
        self._mats: dict = {}

    def _matrix(self, side: int, first: int, end: int):
        key = (side, first, end)
        if key not in self._mats:
            import torch

            a = resample_matrix(side, self.config.out_size, first, end).toarray()
            self._mats[key] = torch.from_numpy(a).to(self.device)
        return self._mats[key]

    def __call__(self, frames, masks, plans):
        """Network input for a batch.

        Parameters
        ----------
        frames : sequence of (H, W) ndarray
            Raw pixels (any numeric dtype); only each plan's window is sent to the device.
        masks : sequence of (H, W) bool ndarray or None
        plans : sequence of CropPlan
            From :meth:`FastPreprocessor.plan`.

        Returns
        -------
        (N, 1, out_size, out_size) float32 tensor on ``device``
        """
        import torch

        S, n = self.config.out_size, len(frames)
        out = torch.zeros((n, 1, S, S), dtype=torch.float32, device=self.device)
        groups: dict = {}
        for k, p in enumerate(plans):
            if not p.empty:
                groups.setdefault((p.side, p.y0, p.x0, p.shape), []).append(k)
        for ks in groups.values():
            p = plans[ks[0]]
            (r0, r1), (c0, c1) = p.rows, p.cols
            win = torch.from_numpy(np.stack([np.asarray(frames[k])[r0:r1, c0:c1] for k in ks]))
            x = win.to(self.device, non_blocking=True).to(torch.float32)
            if any(masks[k] is not None for k in ks):
                bad = np.stack([np.zeros((r1 - r0, c1 - c0), bool) if masks[k] is None else masks[k][r0:r1, c0:c1]
                                for k in ks])
                x = x.masked_fill(torch.from_numpy(bad).to(self.device), 0.0)
            x = x.clamp_min(0.0)
            ay = self._matrix(p.side, r0 - p.y0, r1 - p.y0)
            ax = self._matrix(p.side, c0 - p.x0, c1 - p.x0)
            out[ks, 0] = ay @ x @ ax.T
        return self._contrast(out)

    def _contrast(self, x):
        import torch
        import torch.nn.functional as F

        c = self.config
        if c.contrast == "snr" or c.pooling != "bilinear":
            raise ConfigError("TorchPreprocessor has no 'snr' contrast or max-pooling yet: use FastPreprocessor")
        flat = x.flatten(1)
        if c.contrast == "linear":
            ref = torch.quantile(flat, 0.9, dim=1)
            ref = torch.where(ref > 0, ref, torch.ones_like(ref)).view(-1, 1, 1, 1)
            return (c.linear_m * x / ref).clamp(0.0, 1.0)
        mu = flat.mean(1, dtype=torch.float64).view(-1, 1, 1, 1)
        sd = flat.to(torch.float64).std(1, unbiased=False).view(-1, 1, 1, 1)
        sd = torch.where(sd < 1e-6, torch.ones_like(sd), sd)
        y = ((x - mu) / sd).to(torch.float32)  # Eq. 6
        r, S = c.lcn_size // 2, x.shape[-1]
        idx = np.concatenate([np.arange(r - 1, -1, -1), np.arange(S), np.arange(S - 1, S - 1 - r, -1)])
        idx = torch.from_numpy(np.abs(idx) % max(S, 1)).to(self.device)  # symmetric border (S > r)
        both = torch.cat([y, y * y], 1)
        both = both.index_select(2, idx).index_select(3, idx)
        m, msq = F.avg_pool2d(both, c.lcn_size, stride=1).split(1, dim=1)  # Eq. 7
        sdl = (msq - m * m).clamp_min(0.0).sqrt().clamp_min(c.std_floor)  # Eqs. 8-9
        return (y - m) / sdl
