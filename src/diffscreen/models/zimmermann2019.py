"""Pre-activation ResNet-18 with the logarithmic activation of Zimmermann et al. (2019).

Architecture (He et al. 2016, "Identity mappings in deep residual networks",
arXiv:1603.05027; the authors' airynet code):

* stem: 7×7 convolution, stride 2, ``width`` channels, no bias, then the
  logarithmic activation of Eq. 11 (``alpha``), then 3×3 max-pooling,
  stride 2;
* four stages of two pre-activation basic blocks (BN → LeakyReLU(0.2) →
  3×3 conv → BN → LeakyReLU → 3×3 conv, plus the identity or a 1×1
  projection), widths ``width × (1, 2, 4, 8)`` (64/128/256/512), stride 2 at
  the start of stages 2-4;
* head: BN → LeakyReLU(0.2) → global average pooling → dense → sigmoid
  (``forward`` returns the logits; the sigmoid lives in the loss / in
  :func:`predict_proba` so that attribution methods see raw scores).

``alpha=None`` is the "unmodified" network of Table 4: nothing after the stem
convolution, as in the TensorFlow ResNet v2 the airynet code modified.
Deviations: ``width`` and ``input_size`` are free so that a reduced CPU
recipe can run (the paper: 64 and 224).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from diffscreen.models._api import register_model

__all__ = ["LogActivation", "log_activation", "PreActBlock", "PreActResNet18", "zimmermann2019_resnet18"]

_C0 = math.exp(-1.0)


def log_activation(x: torch.Tensor, alpha: float = 0.2) -> torch.Tensor:
    """Eq. 11: ``α (ln(x + e⁻¹) + 1)`` for x ≥ 0 and ``-α (ln(-x + e⁻¹) + 1)`` for x < 0.

    Parameters
    ----------
    x : torch.Tensor
    alpha : float
        Scale α > 0 (paper's best: 0.2).

    Returns
    -------
    torch.Tensor
        Same shape and dtype; odd in x, continuous with h(0) = 0; the
        derivative ``α / (|x| + e⁻¹)`` (Eq. 12) is α·e at 0.
    """
    return alpha * torch.sign(x) * (torch.log(x.abs() + _C0) + 1.0)


class LogActivation(nn.Module):
    """Module form of :func:`log_activation` (Zimmermann et al. 2019, Eq. 11)."""

    def __init__(self, alpha: float = 0.2):
        super().__init__()
        if not alpha > 0:
            raise ValueError(f"alpha must be > 0, got {alpha}")
        self.alpha = float(alpha)

    def forward(self, x):
        return log_activation(x, self.alpha)

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}"


class PreActBlock(nn.Module):
    """Pre-activation basic block (He et al. 2016, Fig. 4e) with LeakyReLU."""

    def __init__(self, cin: int, cout: int, stride: int, slope: float):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.act = nn.LeakyReLU(slope)
        self.shortcut = None
        if stride != 1 or cin != cout:
            self.shortcut = nn.Conv2d(cin, cout, 1, stride, bias=False)

    def forward(self, x):
        out = self.act(self.bn1(x))
        sc = self.shortcut(out) if self.shortcut is not None else x
        out = self.conv1(out)
        out = self.conv2(self.act(self.bn2(out)))
        return out + sc


class PreActResNet18(nn.Module):
    """Zimmermann et al. (2019) ResNet18_α (see the module docstring).

    Parameters
    ----------
    num_classes : int
        Sigmoid outputs (11, Table 1).
    in_chans : int
    alpha : float or None
        α of the logarithmic activation after the stem; None = unmodified.
    width : int
        Channels of the first stage (paper: 64).
    slope : float
        LeakyReLU slope (paper: 0.2).

    Attributes
    ----------
    cam_layer : nn.Module
        The last residual stage, for Grad-CAM style attribution.

    Notes
    -----
    Input (N, in_chans, S, S) float32 → logits (N, num_classes).  Any S ≥ 32
    works (global pooling); the paper uses 224.
    """

    def __init__(self, num_classes: int = 11, in_chans: int = 1, alpha: float | None = 0.2, width: int = 64,
                 slope: float = 0.2):
        super().__init__()
        self.alpha = alpha
        self.stem = nn.Conv2d(in_chans, width, 7, 2, 3, bias=False)
        self.stem_act = LogActivation(alpha) if alpha is not None else nn.Identity()
        self.pool = nn.MaxPool2d(3, 2, 1)
        w = [width, 2 * width, 4 * width, 8 * width]
        layers, cin = [], width
        for i, c in enumerate(w):
            stride = 1 if i == 0 else 2
            layers.append(nn.Sequential(PreActBlock(cin, c, stride, slope), PreActBlock(c, c, 1, slope)))
            cin = c
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.bn = nn.BatchNorm2d(cin)
        self.act = nn.LeakyReLU(slope)
        self.fc = nn.Linear(cin, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", a=slope, nonlinearity="leaky_relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    @property
    def cam_layer(self) -> nn.Module:
        return self.layer4

    def forward_features(self, x):
        """(N, C, S, S) → (N, 8·width, S/32, S/32) after the final BN and LeakyReLU."""
        x = self.pool(self.stem_act(self.stem(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.act(self.bn(x))

    def forward_head(self, x):
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))

    def forward(self, x):
        return self.forward_head(self.forward_features(x))


@register_model("zimmermann2019")
def zimmermann2019_resnet18(*, num_classes: int = 11, in_chans: int = 1, alpha: float | None = 0.2, width: int = 64,
                            slope: float = 0.2) -> PreActResNet18:
    """Pre-activation ResNet-18 with the logarithmic activation (Zimmermann et al. 2019, §3.1.5, §5.1, Eq. 11).

    Parameters
    ----------
    num_classes : int
    in_chans : int
    alpha : float or None
        0.2 (paper's best), 0.5, 1.0, or None for the unmodified ResNet18.
    width : int
        64 in the paper; 16 in the documented CPU recipe.
    slope : float
        LeakyReLU slope, 0.2.

    Returns
    -------
    PreActResNet18
    """
    return PreActResNet18(num_classes=num_classes, in_chans=in_chans, alpha=alpha, width=width, slope=slope)
