"""Inference-only copies of a network: BatchNorm folded into the convolutions.

In eval mode a BatchNorm layer is an affine map per channel,
``y = γ (x - μ) / sqrt(σ² + ε) + β``; following a convolution it can be
folded into that convolution's weights and bias (Ioffe & Szegedy 2015, §3.2,
inference; Jacob et al. 2018, §3.2 "batch normalization folding"), which
saves one pass over every feature map.  The folded model gives the same
logits up to float32 rounding (tests/test_fastpath.py: |Δp| < 1e-5).

Max-pooling layers are replaced by :class:`StridedMaxPool2d`, the same
operation written as a few strided maxima (exact: a maximum has no
rounding), because PyTorch's CPU kernel for a 3 × 3 / 2 pool with
``ceil_mode`` on a 4-channel map took 1.2 ms of the Ke CNN's 2.9 ms at
360 × 360 on one core (the strided form: 0.3 ms).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

__all__ = ["fold_batchnorm", "inference_model", "StridedMaxPool2d"]


def _pair(v) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


class StridedMaxPool2d(nn.Module):
    """``nn.MaxPool2d`` (dilation 1) computed as separable strided maxima; same output.

    Parameters
    ----------
    pool : torch.nn.MaxPool2d
        The layer to copy (kernel, stride, padding, ceil_mode).

    Raises
    ------
    ValueError
        A dilated pool or ``return_indices=True``.
    """

    def __init__(self, pool: nn.MaxPool2d):
        super().__init__()
        if _pair(pool.dilation) != (1, 1) or pool.return_indices:
            raise ValueError("StridedMaxPool2d copies only undilated pools without indices")
        self.kernel = _pair(pool.kernel_size)
        self.stride = _pair(pool.stride if pool.stride is not None else pool.kernel_size)
        self.padding = _pair(pool.padding)
        self.ceil_mode = bool(pool.ceil_mode)

    def _out(self, n: int, k: int, s: int, p: int) -> int:
        # PyTorch's pooling output size, ceil_mode rule included
        span = n + 2 * p - k
        o = (-(-span // s) if self.ceil_mode else span // s) + 1
        if self.ceil_mode and (o - 1) * s >= n + p:
            o -= 1
        return o

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, C, H, W)`` → ``(N, C, H', W')``, as the copied ``nn.MaxPool2d``."""
        H, W = x.shape[-2:]
        (kh, kw), (sh, sw), (ph, pw) = self.kernel, self.stride, self.padding
        oh, ow = self._out(H, kh, sh, ph), self._out(W, kw, sw, pw)
        rh = max(0, (oh - 1) * sh + kh - (H + ph))
        rw = max(0, (ow - 1) * sw + kw - (W + pw))
        if ph or pw or rh or rw:
            x = torch.nn.functional.pad(x, (pw, rw, ph, rh), value=float("-inf"))
        a = x[..., 0 : (ow - 1) * sw + 1 : sw]
        for j in range(1, kw):
            a = torch.maximum(a, x[..., j : j + (ow - 1) * sw + 1 : sw])
        b = a[..., 0 : (oh - 1) * sh + 1 : sh, :]
        for j in range(1, kh):
            b = torch.maximum(b, a[..., j : j + (oh - 1) * sh + 1 : sh, :])
        return b


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with every ``Conv2d`` → ``BatchNorm2d`` pair folded.

    Parameters
    ----------
    model : torch.nn.Module
        Not modified.  Pairs are found inside ``nn.Sequential`` containers
        (a BatchNorm2d directly after a Conv2d); other BatchNorm layers stay.

    Returns
    -------
    torch.nn.Module
        In eval mode; each folded BatchNorm is replaced by ``nn.Identity``.
    """
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    m = copy.deepcopy(model).eval()
    for seq in m.modules():
        if not isinstance(seq, nn.Sequential):
            continue
        names = list(seq._modules)
        for a, b in zip(names, names[1:]):
            conv, bn = seq._modules[a], seq._modules[b]
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d) and bn.track_running_stats:
                seq._modules[a] = fuse_conv_bn_eval(conv, bn)
                seq._modules[b] = nn.Identity()
    return m


def _replace_pools(m: nn.Module) -> None:
    for name, child in list(m.named_children()):
        if isinstance(child, nn.MaxPool2d) and _pair(child.dilation) == (1, 1) and not child.return_indices:
            setattr(m, name, StridedMaxPool2d(child))
        else:
            _replace_pools(child)


def inference_model(model: nn.Module, *, channels_last: bool = False, strided_pools: bool = True) -> nn.Module:
    """The model prepared for screening: BatchNorm folded, gradients off, optionally channels-last.

    Parameters
    ----------
    model : torch.nn.Module
        Not modified.
    channels_last : bool
        Store weights channels-last (NHWC); feed it NHWC input then.
    strided_pools : bool
        Replace ``nn.MaxPool2d`` layers by :class:`StridedMaxPool2d`.

    Returns
    -------
    torch.nn.Module
        In eval mode, ``requires_grad`` False everywhere.
    """
    m = fold_batchnorm(model)
    if strided_pools:
        _replace_pools(m)
    for p in m.parameters():
        p.requires_grad_(False)
    if channels_last:
        m = m.to(memory_format=torch.channels_last)
    return m
