"""The screening CNN of Ke et al. (2018), §2.1, Fig. 2.

Four blocks of convolution (stride 2) → BatchNorm → ReLU → max-pooling turn a
1 × 720 × 720 preprocessed frame into 32 × 3 × 3 = 288 features; one fully
connected layer maps them to the three classes hit / maybe / miss (Eq. 3).
Layer sizes follow the authors' Torch7 code (nksauter/fv5080).
"""

from __future__ import annotations

import torch
from torch import nn

from diffscreen.errors import ConfigError
from diffscreen.models._api import register_model

__all__ = ["KeCNN", "ke2018_cnn"]


def _block(cin: int, cout: int, kernel: int, pool: nn.Module) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, stride=2, padding=kernel // 2),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
        pool,
    )


class KeCNN(nn.Module):
    """Ke et al. (2018) CNN for Hit/Maybe/Miss screening.

    Parameters
    ----------
    num_classes : int
        Output classes (3: hit, maybe, miss).
    in_chans : int
        Input channels (1: a grey-scale frame).
    first_kernel : int
        Kernel of the first convolution: 7 as in the fv5080 code (default),
        or 3 as the paper's text says (§2.1.1, "m = 3").
    input_size : int
        Side of the square input (720 in the paper).  Other sizes are allowed
        (the flattened feature length is computed), e.g. for fast tests.

    Notes
    -----
    ``forward`` returns logits ``(N, num_classes)``; ``log_softmax`` of them
    plus NLL loss is the paper's objective (the fv5080 code puts a
    LogSoftMax layer in the model; here it lives in the loss so that
    attribution methods see raw scores).

    Shapes for the default 720 input: conv7/2 → 4×360×360, maxpool 3/2
    (ceil) → 4×181×181, conv3/2 → 8×91×91, pool 2 → 8×45×45, conv → 16×23×23,
    pool → 16×11×11, conv → 32×6×6, pool → 32×3×3 = 288 features.
    """

    #: Layer explained by Grad-CAM / Grad-CAM++ (:func:`diffscreen.explain.find_cam_layer`):
    #: the ReLU of the last convolutional block, before its pooling (6 × 6 at
    #: S = 720 rather than 3 × 3 after the pool).
    cam_layer = "features.3.2"

    def __init__(self, num_classes: int = 3, in_chans: int = 1, first_kernel: int = 7, input_size: int = 720):
        super().__init__()
        self.features = nn.Sequential(
            _block(in_chans, 4, first_kernel, nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=True)),
            _block(4, 8, 3, nn.MaxPool2d(2, 2)),
            _block(8, 16, 3, nn.MaxPool2d(2, 2)),
            _block(16, 32, 3, nn.MaxPool2d(2, 2)),
        )
        self.features.eval()  # shape probe: BatchNorm must not need batch statistics
        with torch.no_grad():
            try:
                n_feat = self.features(torch.zeros(1, in_chans, input_size, input_size)).numel()
            except RuntimeError:  # "Output size is too small"
                raise ConfigError(f"input_size {input_size} is too small for the Ke CNN with a {first_kernel}-px "
                                  "first kernel: its four stride-2 convolutions and pools leave nothing (at "
                                  "least 168 px with the default kernel)") from None
        self.features.train()
        self.num_features = n_feat
        self.classifier = nn.Linear(n_feat, num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        # He/MSR initialisation with zero biases (fv5080).
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.kaiming_normal_(m.weight, nonlinearity="linear")
                nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, C, S, S)`` → flattened features ``(N, num_features)`` (288 at S = 720)."""
        return torch.flatten(self.features(x), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, 1, S, S)`` float32 → logits ``(N, num_classes)``."""
        return self.classifier(self.forward_features(x))


@register_model("ke2018")
def ke2018_cnn(*, num_classes: int = 3, first_kernel: int = 7, input_size: int = 720, in_chans: int = 1) -> KeCNN:
    """Build the Ke et al. (2018) screening CNN (fv5080 layer sizes).

    Parameters
    ----------
    num_classes, first_kernel, input_size, in_chans
        See :class:`KeCNN`.  ``first_kernel=3`` gives the paper's all-3×3
        variant; 7 is the published code's.
    """
    return KeCNN(num_classes=num_classes, in_chans=in_chans, first_kernel=first_kernel, input_size=input_size)
