"""Pixel and class-activation attributions for any diffscreen model.

Methods (``attribute(..., method=...)``):

``"saliency"``
    |∇ₓL| of the cross-entropy loss L for the predicted (or given) class
    (Simonyan et al. 2014; Ke et al. 2018 §3.4, Fig. 10).  Ke display only
    the pixels whose gradient lies beyond 3σ of its mean: see
    :func:`saliency_mask`.
``"gradcam"``
    Grad-CAM (Selvaraju et al. 2017; Nawaz et al. 2022 §3.4, Eqs. 6–7),
    computed with captum's ``LayerGradCam``.
``"gradcam++"``
    Grad-CAM++ (Chattopadhyay et al. 2018, Eqs. 10, 19; used by Zimmermann
    et al. 2019 §6).  Our own implementation (:func:`gradcam_pp_weights`);
    ``tests/test_explain.py`` checks it against a 2 × 2 × 2 example worked
    by hand, against Eq. 18 evaluated with autograd's higher derivatives of
    exp(S), and against torchcam's ``GradCAMpp``.
``"guided-backprop"``
    Guided Backpropagation (Springenberg et al. 2015) with captum.
``"guided-gradcam"``
    Guided Grad-CAM = guided backpropagation × upsampled Grad-CAM
    (Selvaraju et al. 2017 §3; Nawaz et al. 2022 §3.4, Figs. 7–9), captum's
    ``GuidedGradCam`` with bilinear upsampling.

Which layer the CAM methods use (:func:`find_cam_layer`):

1. ``model.cam_layer`` if the model defines it (a dotted sub-module name
   such as ``"features.11"``, or a module);
2. otherwise the *last convolutional block*: the smallest sub-module that
   contains the model's last ``Conv2d`` and is not itself a ``Conv2d``
   (ResNet: the last residual block; KeCNN: ``features.3``, conv → BN → ReLU
   → pool; a plain ``Sequential`` of layers: the whole ``Sequential``);
3. a model with no ``Conv2d`` but a ``Conv1d`` (the row-wise-decomposition
   CNN of Xie et al. 2022 §3.4.2, which convolves along the frame's rows):
   the same rule with its last ``Conv1d``.  Its CAM has one value per
   position along the rows; it is interpolated (linearly) to the input's
   rows and repeated across every row, so the map says which *rows* the
   decision rests on.
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from diffscreen.errors import BadFrameError, ConfigError

__all__ = ["METHODS", "CAM_METHODS", "attribute", "find_cam_layer", "saliency_mask", "gradcam_pp_weights",
           "prepared_model", "input_batch", "model_device"]

METHODS = ("saliency", "gradcam", "gradcam++", "guided-backprop", "guided-gradcam")
CAM_METHODS = ("gradcam", "gradcam++")


# --------------------------------------------------------------------- helpers
def find_cam_layer(model: nn.Module, layer=None) -> nn.Module:
    """The layer whose activations the CAM methods weight.

    Parameters
    ----------
    model : torch.nn.Module
    layer : str or torch.nn.Module, optional
        Explicit choice: a dotted sub-module name (``"features.3"``) or a
        sub-module.  Default: ``model.cam_layer`` if defined, else the last
        convolutional block (see the module docstring for the rule).

    Returns
    -------
    torch.nn.Module

    Raises
    ------
    ConfigError
        The named layer does not exist, or the model has neither a ``Conv2d``
        nor a ``Conv1d``.
    """
    if layer is None:
        layer = getattr(model, "cam_layer", None)
    if isinstance(layer, nn.Module):
        return layer
    if isinstance(layer, str):
        try:
            return model.get_submodule(layer)
        except AttributeError:
            raise ConfigError(f"model has no layer named {layer!r}") from None
    if layer is not None:
        raise ConfigError(f"layer must be a module name or a module, got {type(layer).__name__}")
    convs = ([m for m in model.modules() if isinstance(m, nn.Conv2d)]
             or [m for m in model.modules() if isinstance(m, nn.Conv1d)])
    if not convs:
        raise ConfigError(f"{type(model).__name__} has no Conv2d or Conv1d layer: CAM methods need one")
    last = convs[-1]
    best, best_size = None, None
    for name, m in model.named_modules():
        if name == "" or isinstance(m, (nn.Conv2d, nn.Conv1d)):
            continue
        if any(sub is last for sub in m.modules()):
            size = sum(1 for _ in m.modules())
            if best is None or size < best_size:
                best, best_size = m, size
    return best if best is not None else last


@contextlib.contextmanager
def prepared_model(model: nn.Module):
    """Put a model in the state the explanation methods need, restoring it on exit.

    Inside the ``with`` block the model is in eval mode (dropout off, batch
    norm on its running statistics) and its in-place ReLUs are made
    out-of-place, because backward hooks (captum's attributions, Grad-CAM)
    cannot see through in-place operations.  On exit the ReLUs are in-place
    again and the model is back in its former training mode.

    Parameters
    ----------
    model : torch.nn.Module
        Modified in place while the block runs.

    Yields
    ------
    torch.nn.Module
        ``model`` itself.
    """
    was_training = model.training
    relus = [m for m in model.modules() if isinstance(m, nn.ReLU) and m.inplace]
    for m in relus:
        m.inplace = False
    model.eval()
    try:
        yield model
    finally:
        for m in relus:
            m.inplace = True
        model.train(was_training)


def model_device(model: nn.Module) -> torch.device:
    """The device of ``model``'s first parameter (the CPU for a model without parameters)."""
    return next((p.device for p in model.parameters()), torch.device("cpu"))


@contextlib.contextmanager
def _quiet():
    """Silence captum's notes on setting requires_grad and ReLU hooks (expected here)."""
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*(require gradients|backward hooks on ReLU).*")
        yield


def input_batch(x) -> torch.Tensor:
    """A checked float32 copy of a batch of network inputs.

    Parameters
    ----------
    x : (N, C, H, W) numpy.ndarray or torch.Tensor
        Network inputs (any real dtype); not modified.

    Returns
    -------
    (N, C, H, W) float32 torch.Tensor
        A new tensor, detached from any graph, on ``x``'s device (the CPU for an array).

    Raises
    ------
    BadFrameError
        If ``x`` is neither an array nor a tensor, is not 4-D, holds no
        frames, or contains NaN or infinite values.
    """
    if isinstance(x, np.ndarray):
        t = torch.from_numpy(np.array(x, dtype=np.float32, copy=True))
    elif isinstance(x, torch.Tensor):
        t = x.detach().to(torch.float32).clone()
    else:
        raise BadFrameError(f"input must be a numpy array or torch tensor, got {type(x).__name__}")
    if t.ndim != 4:
        raise BadFrameError(f"input must have shape (N, C, H, W), got {tuple(t.shape)}")
    if t.shape[0] == 0:
        raise BadFrameError("input holds no frames (N = 0)")
    if not torch.isfinite(t).all():
        raise BadFrameError("input contains NaN or infinite values")
    return t


def _targets(model: nn.Module, x: torch.Tensor, target) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.no_grad():
        logits = model(x)
    n, c = logits.shape[0], logits.shape[1]
    if target is None:
        tgt = logits.argmax(1)
    else:
        tgt = torch.as_tensor(np.asarray(target), dtype=torch.int64).reshape(-1).to(logits.device)
        if tgt.numel() == 1:
            tgt = tgt.expand(n).clone()
        if tgt.numel() != n:
            raise ConfigError(f"target must be one class index or one per frame ({n}), got {tgt.numel()}")
        if (tgt < 0).any() or (tgt >= c).any():
            raise ConfigError(f"target class index out of range 0..{c - 1}: {tgt.tolist()}")
    return tgt, logits


def _upsample(m: torch.Tensor, size) -> torch.Tensor:
    """A CAM at the layer's resolution → the input's (H, W).

    (N, h, w) → (N, H, W), bilinear.  (N, L) (a ``Conv1d`` layer along the
    rows) → linear interpolation to (N, H), repeated across the W columns.
    """
    H, W = (int(v) for v in size)
    if m.ndim == 2:
        rows = F.interpolate(m[:, None], size=H, mode="linear", align_corners=False)[:, 0]
        return rows[:, :, None].expand(-1, H, W).contiguous()
    return F.interpolate(m[:, None], size=(H, W), mode="bilinear", align_corners=False)[:, 0]


def _layer_act_grad(model, layer, x, tgt):
    """Activations A (N,K,h,w) of ``layer`` and ∂S_c/∂A for the target scores."""
    store = {}

    def hook(_m, _i, out):
        out = out[0] if isinstance(out, (tuple, list)) else out
        store["a"] = out

    h = layer.register_forward_hook(hook)
    try:
        with torch.enable_grad():
            xi = x.clone().requires_grad_(True)
            logits = model(xi)
            score = logits.gather(1, tgt[:, None]).sum()
            a = store["a"]
            if a.ndim not in (3, 4):
                raise ConfigError(f"CAM layer output must be (N, K, h, w) or (N, K, L), got {tuple(a.shape)}")
            (g,) = torch.autograd.grad(score, a)
    finally:
        h.remove()
    return a.detach(), g.detach(), logits.detach()


def gradcam_pp_weights(A: torch.Tensor, grad: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Grad-CAM++ channel weights (Chattopadhyay et al. 2018, Eqs. 10 and 19).

    Eq. 10 weights channel k by ``w_k = Σ_ij α_ij^kc ReLU(∂Y^c/∂A_ij^k)``.
    With Y^c = exp(S^c) and a piecewise-linear network (ReLU, max-pooling,
    linear layers), ∂ⁿY/∂(A_ij)ⁿ = exp(S)·gⁿ, and Eq. 19 is

        α_ij^kc = g_ij² / (2 g_ij² + g_ij³ · Σ_ab A_ab^k),   g = ∂S^c/∂A^k,

    the third derivative being taken at (i, j) and the activations summed
    over the whole map of channel k (the paper's Eq. 18 → 19).  α is 0
    where g = 0; a denominator of magnitude ≤ ``eps`` is replaced by
    ``eps``.  Eq. 10 then reads ``exp(S^c) Σ_ij α ReLU(g)``; the positive
    per-frame factor exp(S^c) is left out here (it would overflow for large
    scores and changes neither the map's shape nor its zeros).

    Parameters
    ----------
    A, grad : (N, K, h, w) or (N, K, L) float tensors
        Activations of the CAM layer and ∂S^c/∂A (same shape).
    eps : float
        Smallest denominator magnitude used.

    Returns
    -------
    (N, K) tensor
        w_k / exp(S^c).
    """
    dims = tuple(range(2, A.ndim))
    g2 = grad.pow(2)
    g3 = g2 * grad
    denom = 2 * g2 + g3 * A.sum(dim=dims, keepdim=True)
    safe = torch.where(denom.abs() > eps, denom, torch.full_like(denom, eps))
    alpha = torch.where(g2 > 0, g2 / safe, torch.zeros_like(g2))
    return (alpha * F.relu(grad)).sum(dim=dims)


# --------------------------------------------------------------------- methods
def _saliency_signed(model, x, tgt) -> torch.Tensor:
    with torch.enable_grad():
        xi = x.clone().requires_grad_(True)
        loss = F.cross_entropy(model(xi), tgt, reduction="sum")
        (g,) = torch.autograd.grad(loss, xi)
    return g.sum(1)  # (N, H, W); one channel for diffscreen models


def _gradcam(model, layer, x, tgt):
    from captum.attr import LayerGradCam

    cam = LayerGradCam(model, layer).attribute(x, target=tgt, relu_attributions=True)
    return _upsample(cam.detach().sum(1), x.shape[-2:])


def _gradcam_pp(model, layer, x, tgt):
    A, g, _ = _layer_act_grad(model, layer, x, tgt)
    w = gradcam_pp_weights(A, g)
    cam = F.relu((w.reshape(w.shape + (1,) * (A.ndim - 2)) * A).sum(1))
    return _upsample(cam, x.shape[-2:])


def _guided_backprop(model, x, tgt):
    from captum.attr import GuidedBackprop

    with _quiet():
        return GuidedBackprop(model).attribute(x, target=tgt).detach().sum(1)


def _layer_is_1d(model, layer, x) -> bool:
    """Whether ``layer`` puts out (N, K, L) on this input (a ``Conv1d`` block)."""
    store = {}

    def hook(_m, _i, out):
        store["nd"] = (out[0] if isinstance(out, (tuple, list)) else out).ndim

    h = layer.register_forward_hook(hook)
    try:
        with torch.no_grad():
            model(x[:1])
    finally:
        h.remove()
    if "nd" not in store:
        raise ConfigError("the CAM layer is not used in the model's forward pass")
    return store["nd"] == 3


def _guided_gradcam(model, layer, x, tgt):
    from captum.attr import GuidedGradCam

    if _layer_is_1d(model, layer, x):  # captum upsamples 2-D maps only: the same product by hand
        return _guided_backprop(model, x, tgt) * _gradcam(model, layer, x, tgt)
    with _quiet():
        out = GuidedGradCam(model, layer).attribute(x, target=tgt, interpolate_mode="bilinear")
    return out.detach().sum(1)


def attribute(model: nn.Module, x, method: str = "gradcam++", target=None, layer=None) -> np.ndarray:
    """Attribution maps of a diffscreen model's decision.

    Parameters
    ----------
    model : torch.nn.Module
        Any model of :mod:`diffscreen.models` (or any CNN returning logits
        ``(N, C)``).  It is put in eval mode and in-place ReLUs are made
        out-of-place for the call; both are restored afterwards.  Weights
        are not changed.
    x : (N, C, S, S) float32 ndarray or tensor
        Preprocessed input (as from :class:`~diffscreen.preprocess.Preprocessor`);
        not modified.
    method : {"saliency", "gradcam", "gradcam++", "guided-backprop", "guided-gradcam"}
    target : None, int, or (N,) ints
        Class whose score is explained: None = the predicted class (argmax
        of the logits).  For multi-label (sigmoid) models give the class
        index; its logit is the score.
    layer : str or torch.nn.Module, optional
        CAM layer; default by :func:`find_cam_layer`.

    Returns
    -------
    (N, S, S) float32 ndarray
        ``"saliency"``: |∇ₓL| (L = cross-entropy against the target class,
        Ke et al. 2018 §3.4), per input pixel.  ``"gradcam"``/``"gradcam++"``:
        ReLU of the weighted activation sum (Nawaz Eq. 7; Chattopadhyay
        Eq. 10 without the exp(S) factor), bilinearly upsampled to the input
        size (a ``Conv1d`` layer: one value per row, see the module
        docstring), non-negative, not normalised.  ``"guided-backprop"`` and
        ``"guided-gradcam"``: signed pixel-space maps (summed over input
        channels).

    Raises
    ------
    ConfigError
        Unknown method, bad target, or no usable CAM layer.
    BadFrameError
        ``x`` is not 4-D, empty, or holds NaN/inf.
    """
    if method not in METHODS:
        raise ConfigError(f"unknown attribution method {method!r}; use one of {', '.join(METHODS)}")
    x = input_batch(x).to(model_device(model))  # the model's device (``--device``); maps come back to the CPU
    # A CAM method needs a 2-D convolutional layer: refuse a model without one before running it.
    lay = find_cam_layer(model, layer) if method in ("gradcam", "gradcam++", "guided-gradcam") else None
    with prepared_model(model):
        tgt, _ = _targets(model, x, target)
        if method == "saliency":
            out = _saliency_signed(model, x, tgt).abs()
        elif method == "guided-backprop":
            out = _guided_backprop(model, x, tgt)
        else:
            if method == "gradcam":
                out = _gradcam(model, lay, x, tgt)
            elif method == "gradcam++":
                out = _gradcam_pp(model, lay, x, tgt)
            else:
                out = _guided_gradcam(model, lay, x, tgt)
    return out.cpu().numpy().astype(np.float32, copy=False)


def saliency_mask(model: nn.Module, x, target=None, nsigma: float = 3.0) -> tuple[np.ndarray, np.ndarray]:
    """Ke et al. (2018) Fig. 10 saliency: the pixels beyond ``nsigma`` σ.

    Ke plot |∇ₓL − μ| where it is more than 3σ from μ, μ and σ being the
    mean and standard deviation of the (signed) gradient ∇ₓL over the frame.

    Parameters
    ----------
    model : torch.nn.Module
    x : (N, C, S, S) float32 ndarray or tensor
    target : None, int or (N,) ints
        As in :func:`attribute` (None: predicted class).
    nsigma : float
        Threshold in standard deviations (Ke: 3).

    Returns
    -------
    shown : (N, S, S) float32 ndarray
        |∇ₓL − μ| on the selected pixels, 0 elsewhere.
    mask : (N, S, S) bool ndarray
        The selected pixels.

    Raises
    ------
    ConfigError, BadFrameError
        As :func:`attribute`.
    """
    if not nsigma > 0:
        raise ConfigError(f"nsigma must be > 0, got {nsigma}")
    x = input_batch(x).to(model_device(model))
    with prepared_model(model):
        tgt, _ = _targets(model, x, target)
        g = _saliency_signed(model, x, tgt).cpu().numpy().astype(np.float64)
    mu = g.mean(axis=(1, 2), keepdims=True)
    sd = g.std(axis=(1, 2), keepdims=True)
    dev = np.abs(g - mu)
    mask = dev > nsigma * sd
    return np.where(mask, dev, 0).astype(np.float32), mask
