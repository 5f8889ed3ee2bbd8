"""Representation inversion (Mahendran & Vedaldi 2015; Nawaz et al. 2022 §3.3).

Find the image whose representation at a layer matches a frame's
(Nawaz Eqs. 1–5):

    x* = argmin_x  ‖Φ(σx) − Φ₀‖² / ‖Φ₀‖²  +  λ_α R_α(x)  +  λ_V R_V^β(x)

with R_α(x) = Σ |x − x̄|^α (Eq. 3, α = 6 as Mahendran & Vedaldi), the total
variation R_V^β(x) = Σ ((x_{i,j+1} − x_{i,j})² + (x_{i+1,j} − x_{i,j})²)^{β/2}
(Eq. 4, β = 1) and σ the frame's RMS pixel value (Nawaz: the average norm of
the training images; a preprocessed frame is close to unit RMS, so σ keeps
x at unit scale).  Both regularisers are averaged over the pixels so the λ
do not depend on the image size.  Adam, starting from seeded Gaussian noise.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from diffscreen.errors import ConfigError
from diffscreen.explain.attribution import input_batch, model_device, prepared_model

__all__ = ["representation_layers", "invert", "Inversion", "invert_all"]


def representation_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The layers whose representations are inverted, in forward order.

    Rule: ``model.inversion_layers`` (a list of dotted names) if defined;
    otherwise, for every ``Conv2d``, the first ``ReLU`` module that follows
    it (in module order) before the next ``Conv2d`` — the output of each
    convolutional layer after its activation (Nawaz Fig. 6: "the first five
    convolutional layers of AlexNet") — or the ``Conv2d`` itself when no ReLU
    module follows.  A model without ``Conv2d`` (the row-wise 1-D CNN of
    Xie et al. 2022 §3.4.2) is treated the same way with its ``Conv1d``
    layers; the image is still reconstructed in the input's 2-D frame.

    Returns
    -------
    list of (name, module)

    Raises
    ------
    ConfigError
        The model has neither ``Conv2d`` nor ``Conv1d``, or a named layer does not exist.
    """
    names = getattr(model, "inversion_layers", None)
    if names is not None:
        try:
            return [(n, model.get_submodule(n)) for n in names]
        except AttributeError as exc:
            raise ConfigError(f"bad inversion layer name: {exc}") from None
    conv = nn.Conv2d if any(isinstance(m, nn.Conv2d) for m in model.modules()) else nn.Conv1d
    out, pending = [], None
    for name, m in model.named_modules():
        if isinstance(m, conv):
            if pending is not None:
                out.append(pending)
            pending = (name, m)
        elif isinstance(m, nn.ReLU) and pending is not None and isinstance(pending[1], conv):
            pending = (name, m)
            out.append(pending)
            pending = None
    if pending is not None:
        out.append(pending)
    if not out:
        raise ConfigError(f"{type(model).__name__} has no Conv2d or Conv1d layer to invert")
    return out


class _Stop(Exception):
    pass


def _representation(model, layer, x, *, grad: bool):
    """Output of ``layer`` on input ``x``; the forward pass stops there."""
    store = {}

    def hook(_m, _i, out):
        if "a" not in store:
            store["a"] = out
            raise _Stop

    h = layer.register_forward_hook(hook)
    try:
        with torch.set_grad_enabled(grad):
            model(x)
    except _Stop:
        pass
    finally:
        h.remove()
    if "a" not in store:
        raise ConfigError("the chosen layer is not used in the model's forward pass")
    return store["a"]


def _tv(x: torch.Tensor, beta: float) -> torch.Tensor:
    dx = x[..., :-1, 1:] - x[..., :-1, :-1]
    dy = x[..., 1:, :-1] - x[..., :-1, :-1]
    return ((dx * dx + dy * dy + 1e-8) ** (beta / 2)).mean()


@dataclass
class Inversion:
    """Result of :func:`invert`.

    Attributes
    ----------
    image : (S, S) float32 ndarray
        The reconstruction σx*, in the units of the input.
    layer : str
        Name of the inverted layer.
    loss : list of float
        Objective (Eq. 5) every 10 steps.
    feature_error : float
        Final ‖Φ(σx*) − Φ₀‖² / ‖Φ₀‖².
    seconds : float
    """

    image: np.ndarray
    layer: str
    loss: list = field(default_factory=list)
    feature_error: float = float("nan")
    seconds: float = 0.0


def invert(
    model: nn.Module,
    x,
    layer=0,
    *,
    steps: int = 300,
    lr: float = 0.05,
    alpha: float = 6.0,
    lambda_alpha: float = 1e-4,
    beta: float = 1.0,
    lambda_tv: float = 0.02,
    seed: int = 0,
) -> Inversion:
    """Reconstruct a frame from its representation at one layer.

    Parameters
    ----------
    model : torch.nn.Module
        Any diffscreen model (eval mode is used; restored afterwards).
    x : (1, C, S, S) float32 ndarray or tensor
        One preprocessed frame (not modified).
    layer : int or str
        Index into :func:`representation_layers` (0 = first convolutional
        block, -1 = last) or a dotted module name.
    steps : int
        Adam iterations (300 take ~1–2 min for AlexNet's last layer at
        227 × 227 on one CPU thread; less for earlier layers, where the
        forward pass is cut short).
    lr : float
        Adam learning rate.
    alpha, lambda_alpha : float
        α-norm prior (Eq. 3), α = 6, weight λ_α.
    beta, lambda_tv : float
        Total-variation prior (Eq. 4), β = 1, weight λ_V.
    seed : int
        Seed of the starting noise.

    Returns
    -------
    Inversion

    Raises
    ------
    ConfigError
        Bad layer, steps < 1, or more than one frame.
    BadFrameError
        ``x`` not 4-D or not finite.
    """
    x0 = input_batch(x).to(model_device(model))
    if x0.shape[0] != 1:
        raise ConfigError(f"invert takes one frame, got {x0.shape[0]}")
    if steps < 1:
        raise ConfigError(f"steps must be >= 1, got {steps}")
    layers = representation_layers(model)
    if isinstance(layer, str):
        match = [lm for lm in layers if lm[0] == layer]
        if match:
            name, mod = match[0]
        else:
            try:
                name, mod = layer, model.get_submodule(layer)
            except AttributeError:
                raise ConfigError(f"model has no layer named {layer!r}") from None
    else:
        try:
            name, mod = layers[int(layer)]
        except IndexError:
            raise ConfigError(f"layer index {layer} out of range: the model has {len(layers)} blocks") from None
    t0 = time.time()
    params = [p for p in model.parameters()]
    req = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(False)
    try:
        with prepared_model(model):
            phi0 = _representation(model, mod, x0, grad=False).detach()
            norm0 = phi0.pow(2).sum().clamp_min(1e-12)
            sigma = float(x0.pow(2).mean().sqrt().clamp_min(1e-6))
            g = torch.Generator().manual_seed(int(seed))
            z = torch.randn(x0.shape, generator=g).to(x0.device).requires_grad_(True)
            opt = torch.optim.Adam([z], lr=lr)
            hist, ferr = [], float("nan")
            for it in range(steps):
                opt.zero_grad(set_to_none=True)
                phi = _representation(model, mod, sigma * z, grad=True)
                data = (phi - phi0).pow(2).sum() / norm0
                r_a = (z - z.mean()).abs().pow(alpha).mean()
                r_v = _tv(z, beta)
                loss = data + lambda_alpha * r_a + lambda_tv * r_v
                loss.backward()
                opt.step()
                ferr = float(data.detach())
                if it % 10 == 0 or it == steps - 1:
                    hist.append(float(loss.detach()))
    finally:
        for p, r in zip(params, req):
            p.requires_grad_(r)
    img = (sigma * z.detach())[0].sum(0).cpu().numpy().astype(np.float32)
    return Inversion(img, name, hist, ferr, time.time() - t0)


def invert_all(model: nn.Module, x, **kwargs) -> list[Inversion]:
    """:func:`invert` for every layer of :func:`representation_layers` (Nawaz Fig. 6)."""
    return [invert(model, x, layer=i, **kwargs) for i in range(len(representation_layers(model)))]
