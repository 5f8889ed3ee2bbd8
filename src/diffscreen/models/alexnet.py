"""Single-channel AlexNet (Krizhevsky et al. 2012; Nawaz et al. 2022 §3.2, Fig. 4).

Five convolutional layers (some followed by max-pooling) and three fully
connected layers, ReLU activations and dropout, laid out as torchvision's
``alexnet`` (``features``, ``avgpool``, ``classifier``) so that layer names
such as ``features.11`` mean the same thing.  Input 1 × 227 × 227.
"""

from __future__ import annotations

import torch
from torch import nn

from diffscreen.models._api import register_model

__all__ = ["AlexNet", "alexnet"]


class AlexNet(nn.Module):
    """AlexNet with one input channel.

    Parameters
    ----------
    num_classes : int
        Outputs (5 for DiffraNet: blank, no-crystal, weak, good, strong).
    in_chans : int
        Input channels (1: a grey-scale frame).
    channels : tuple of 5 int
        Output channels of conv1–conv5 (torchvision: 64, 192, 384, 256, 256;
        Krizhevsky 2012: 96, 256, 384, 384, 256 split over two GPUs).
    fc_dim : int
        Width of fc6 and fc7 (4096).
    dropout : float
        Dropout before fc6 and fc7 (0.5).
    input_size : int
        Nominal input side (227); stored in the model file.  Any side ≥ 63
        works: the adaptive average pool maps pool5 to 6 × 6.
    input_mean, input_std : float
        Input standardisation ``(x − mean) / std`` applied first, like
        torchvision's ``Normalize`` for ImageNet AlexNets; set from the
        training inputs (an LCN frame at 227 × 227 has a pixel std of only
        ~0.2, too small for an AlexNet without normalisation layers to
        train quickly).  Stored in the model file with the other arguments.

    Notes
    -----
    ``forward`` returns logits ``(N, num_classes)``; ``forward_features``
    the ``fc_dim`` outputs of fc7 (the penultimate features used for t-SNE).
    Shapes at 227: conv1 11/4 → 64×56×56, pool → 27, conv2 5 → 192×27×27,
    pool → 13, conv3–5 3 → 256×13×13, pool → 6×6 → 9216 → 4096 → 4096 → C.
    """

    #: Grad-CAM layer: the ReLU after conv5 (13 × 13 at 227), not pool5 (6 × 6).
    cam_layer = "features.11"

    def __init__(
        self,
        num_classes: int = 5,
        in_chans: int = 1,
        channels=(64, 192, 384, 256, 256),
        fc_dim: int = 4096,
        dropout: float = 0.5,
        input_size: int = 227,
        input_mean: float = 0.0,
        input_std: float = 1.0,
    ):
        super().__init__()
        if not input_std > 0:
            raise ValueError(f"input_std must be > 0, got {input_std}")
        self.input_mean = float(input_mean)
        self.input_std = float(input_std)
        c1, c2, c3, c4, c5 = (int(c) for c in channels)
        self.features = nn.Sequential(
            nn.Conv2d(in_chans, c1, kernel_size=11, stride=4, padding=2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(c1, c2, kernel_size=5, padding=2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(c2, c3, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(c3, c4, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(c4, c5, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
        )
        self.avgpool = nn.AdaptiveAvgPool2d((6, 6))
        self.classifier = nn.Sequential(
            nn.Dropout(p=dropout),
            nn.Linear(c5 * 6 * 6, fc_dim),
            nn.ReLU(inplace=True),
            nn.Dropout(p=dropout),
            nn.Linear(fc_dim, fc_dim),
            nn.ReLU(inplace=True),
            nn.Linear(fc_dim, num_classes),
        )
        self.num_features = fc_dim
        self.input_size = input_size

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, C, S, S)`` → fc7 activations ``(N, fc_dim)``."""
        x = (x - self.input_mean) / self.input_std
        x = torch.flatten(self.avgpool(self.features(x)), 1)
        return self.classifier[:-1](x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, 1, S, S)`` float32 → logits ``(N, num_classes)``."""
        return self.classifier[-1](self.forward_features(x))


@register_model("alexnet")
def alexnet(
    *,
    num_classes: int = 5,
    in_chans: int = 1,
    channels=(64, 192, 384, 256, 256),
    fc_dim: int = 4096,
    dropout: float = 0.5,
    input_size: int = 227,
    input_mean: float = 0.0,
    input_std: float = 1.0,
) -> AlexNet:
    """Build a single-channel AlexNet (Nawaz et al. 2022 §3.2; Krizhevsky et al. 2012).

    Parameters
    ----------
    num_classes, in_chans, channels, fc_dim, dropout, input_size, input_mean, input_std
        See :class:`AlexNet`.

    Notes
    -----
    Departures from Krizhevsky et al. (2012): one input channel instead of
    RGB; torchvision's single-tower channel counts (64, 192, 384, 256, 256)
    instead of the two-GPU 96/256/384/384/256; no local response
    normalisation (torchvision drops it too; it does not change accuracy
    noticeably); an adaptive average pool before fc6 so other input sizes
    work; PyTorch's default initialisation.  ``channels`` and ``fc_dim`` can
    be reduced for CPU experiments (docs/benchmarks/nawaz2022.md says which
    setting produced which numbers).  Nawaz et al. do not state their
    AlexNet variant beyond "five convolutional and three fully connected
    layers" (Fig. 4).
    """
    return AlexNet(
        num_classes=num_classes, in_chans=in_chans, channels=tuple(channels), fc_dim=fc_dim,
        dropout=dropout, input_size=input_size, input_mean=input_mean, input_std=input_std,
    )
