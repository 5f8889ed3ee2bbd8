"""1-D CNN on row-wise decomposed frames (Xie et al. 2022, §3.4.2, Fig. 8, Table 4).

Xie et al. turn each preprocessed 720 × 720 frame into its row ranges
``d_i = max − min`` of row ``i`` (:func:`diffscreen.preprocess.rwd.row_ranges`)
and classify these vectors with a 1-D CNN whose architecture the paper does
not give.  The choice made here (docs/adapt.md):

* **input normalisation** – ``BatchNorm1d(1)``: the scale of ``d`` depends on
  the contrast recipe, so it is learned rather than fixed;
* **four convolutional blocks** (the structure of Xie Fig. 2 in 1-D):
  Conv1d → BatchNorm → ReLU → MaxPool(2), with 16, 32, 64, 64 channels and
  kernels 7 (stride 2), 5, 3, 3 — a Bragg spot spans a few rows, so the
  first kernel covers a spot at the 720-pixel scale; 720 rows → 22 positions;
* **global pooling** – the maximum (is there a strong spot row?) and the mean
  (how many rows hold spots?) over positions, concatenated: 128 features.
  A hit is defined by the *number* of spots (Ke §3.3.1: ≥ 10), not their
  place, so position is pooled away and any input length works;
* **classifier** – dropout 0.3 and one ``Linear(128, num_classes)``.

About 25 k parameters; ``forward`` takes frames ``(N, 1, S, S)`` (it computes
the row ranges itself: ``amax − amin`` over the last axis, differentiable
almost everywhere) or row vectors ``(N, 1, S)``, so training, screening and
loading work as for the 2-D CNN.
"""

from __future__ import annotations

import torch
from torch import nn

from diffscreen.models._api import register_model

__all__ = ["RWD1DCNN", "rwd1d_cnn"]

_CHANNELS = (16, 32, 64, 64)
_KERNELS = (7, 5, 3, 3)


def _block(cin: int, cout: int, kernel: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv1d(cin, cout, kernel, stride=stride, padding=kernel // 2),
        nn.BatchNorm1d(cout),
        nn.ReLU(inplace=True),
        nn.MaxPool1d(2, 2, ceil_mode=True),
    )


class RWD1DCNN(nn.Module):
    """1-D CNN classifying row-range vectors (Xie et al. 2022 §3.4.2; architecture: module docstring).

    Parameters
    ----------
    num_classes : int
        Output classes (3: hit, maybe, miss).
    input_size : int
        Rows per frame ``S`` (720 in the paper); recorded in the model file.
        Global pooling makes the network accept any length ≥ 16.
    dropout : float
        Dropout before the classifier.

    Attributes
    ----------
    features : nn.Sequential
        The four convolutional blocks (the "convolutional base" that
        :func:`diffscreen.train.transfer.freeze_base` freezes block-wise).
    classifier : nn.Linear
        ``128 → num_classes``.
    num_features : int
        128.
    """

    def __init__(self, num_classes: int = 3, input_size: int = 720, dropout: float = 0.3):
        super().__init__()
        self.input_size = int(input_size)
        self.norm = nn.BatchNorm1d(1)
        chans = (1, *_CHANNELS)
        self.features = nn.Sequential(
            *[_block(chans[k], chans[k + 1], _KERNELS[k], 2 if k == 0 else 1) for k in range(len(_CHANNELS))]
        )
        self.num_features = 2 * _CHANNELS[-1]
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(self.num_features, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv1d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)

    @staticmethod
    def rows(x: torch.Tensor) -> torch.Tensor:
        """Frames ``(N, 1, S, S)`` → row ranges ``(N, 1, S)``; row vectors ``(N, 1, S)`` pass through.

        Raises
        ------
        ValueError
            Any other shape.
        """
        if x.dim() == 4:
            return x.amax(dim=-1) - x.amin(dim=-1)
        if x.dim() == 3:
            return x
        raise ValueError(f"RWD1DCNN expects (N, 1, S, S) frames or (N, 1, S) row vectors, got {tuple(x.shape)}")

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Frames or row vectors → pooled features ``(N, 128)`` float32 (max ‖ mean).

        Dropout (training mode only) is applied here, so that
        ``classifier(forward_features(x)) == forward(x)`` always holds (DANN
        feeds these features to both heads).
        """
        h = self.features(self.norm(self.rows(x)))
        return self.dropout(torch.cat([h.amax(dim=-1), h.mean(dim=-1)], dim=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, 1, S, S)`` or ``(N, 1, S)`` float32 → logits ``(N, num_classes)``."""
        return self.classifier(self.forward_features(x))


@register_model("rwd1d")
def rwd1d_cnn(*, num_classes: int = 3, input_size: int = 720, dropout: float = 0.3) -> RWD1DCNN:
    """Build the RWD 1-D CNN (Xie et al. 2022 §3.4.2; architecture in :mod:`diffscreen.models.rwd1d`).

    Parameters
    ----------
    num_classes, input_size, dropout
        See :class:`RWD1DCNN`.
    """
    return RWD1DCNN(num_classes=num_classes, input_size=input_size, dropout=dropout)
