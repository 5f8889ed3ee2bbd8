"""Multi-label training of the Zimmermann et al. (2019) ResNet18_α (§3.1.5): a recipe over
:func:`~diffscreen.train.engine.fit`.

Paper defaults in :class:`MultiLabelConfig`.  Loss: sigmoid binary cross-entropy (Eq. 6, mean over batch and
classes) plus ``l1 · Σ|w| + l2 · Σ w²`` over the convolution and dense weights (Eq. 10; "L2" as TensorFlow's sum
of squares). SGD, learning rate 0.1 ÷ 10 at ``milestones``, Nesterov momentum 0.9 (airynet code), batch 48,
shuffled passes.  Augmentation: random flips (images only: a flip leaves the CCF map unchanged,
:mod:`diffscreen.preprocess.ccf`), brightness (+U(-b, b)) and contrast (×U(1-c, 1+c) about the mean).  The §3.2
metrics on the validation split every ``eval_every`` epochs; the paper reports each one's maximum over training
(``max``); the epoch of the best validation Accuracy is kept.  A checkpoint ``<out>.ckpt`` after every epoch.
"""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from diffscreen.errors import ConfigError, LabelError
from diffscreen.evaluate.multilabel import CDI_CLASSES, load_cdi_runs, multilabel_metrics
from diffscreen.models import get_model
from diffscreen.models.batch import predict_arrays
from diffscreen.train.engine import Checkpoint, fit, save_trained, training_device

__all__ = ["MultiLabelConfig", "MultiLabelResult", "load_cdi_runs", "train_multilabel", "augment", "regularisation"]


@dataclass
class MultiLabelConfig:
    """Hyper-parameters; defaults are the paper's (Zimmermann et al. 2019, §3.1.5; airynet code where it is silent)."""

    epochs: int = 200  #: 200 in the paper
    milestones: tuple = (50, 100, 150)  #: epochs (1-based) after which the learning rate is divided by 10
    batch_size: int = 48
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = True
    l1: float = 1e-5  #: elastic-net coefficients (Eq. 10)
    l2: float = 1e-5
    alpha: float | None = 0.2  #: logarithmic-activation α; None: the unmodified ResNet18
    width: int = 64  #: first-stage channels
    augment: bool = True  #: flips (images only), brightness and contrast
    brightness: float = 0.1  #: augmentation ranges
    contrast: float = 0.2
    eval_every: int = 1  #: validate every this many epochs (and after the last)
    seed: int = 0  #: seeds initialisation, batch order and augmentation
    threads: int = 1  #: torch CPU threads (0: leave as is)

    def __post_init__(self):
        if self.epochs < 1 or self.batch_size < 1 or self.eval_every < 1:
            raise ConfigError("epochs, batch_size and eval_every must be >= 1")
        if not self.lr > 0:
            raise ConfigError("lr must be > 0")
        if self.alpha is not None and not self.alpha > 0:
            raise ConfigError(f"alpha must be > 0 or None (unmodified), got {self.alpha}")
        self.milestones = tuple(int(m) for m in self.milestones)


@dataclass
class MultiLabelResult:
    """What :func:`train_multilabel` returns."""

    model: object  #: the best-validation-Accuracy torch.nn.Module, in eval mode
    history: list  #: per epoch: ``epoch``, ``lr``, ``train_bce``, validation metrics, ``seconds``
    best: dict  #: validation metrics of the kept epoch (``epoch`` included)
    max: dict  #: maxima over the epochs of accuracy, precision, recall (the paper's tables); ``violation_rate_min``
    model_path: Path | None = None
    seconds: float = 0.0


def augment(x: torch.Tensor, gen: torch.Generator, *, flips: bool, brightness: float, contrast: float) -> torch.Tensor:
    """Random flips, brightness and contrast per sample of ``x`` ((N, C, S, S) float32 tensor, not
    modified), drawn from ``gen``; returns a new (N, C, S, S) float32 tensor."""
    n = x.shape[0]
    y = x.clone()
    if flips:
        fh = torch.rand(n, generator=gen) < 0.5
        fv = torch.rand(n, generator=gen) < 0.5
        y[fh] = y[fh].flip(-1)
        y[fv] = y[fv].flip(-2)
    if contrast > 0:
        c = 1 + (torch.rand(n, 1, 1, 1, generator=gen) * 2 - 1) * contrast
        m = y.mean(dim=(1, 2, 3), keepdim=True)
        y = (y - m) * c + m
    if brightness > 0:
        y = y + (torch.rand(n, 1, 1, 1, generator=gen) * 2 - 1) * brightness
    return y


def regularisation(model, l1: float, l2: float) -> torch.Tensor:
    """``l1 Σ|w| + l2 Σ w²`` over convolution and dense weights (Eq. 10)."""
    ws = [p for n, p in model.named_parameters() if n.endswith("weight") and p.ndim > 1]
    r = torch.zeros((), device=ws[0].device if ws else None)
    if l1:
        r = r + l1 * sum(w.abs().sum() for w in ws)
    if l2:
        r = r + l2 * sum((w * w).sum() for w in ws)
    return r


def _fingerprint(*arrays) -> str:
    h = hashlib.sha1()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(str(a.shape).encode())
        h.update(a[:: max(1, len(a) // 64)].tobytes())
    return h.hexdigest()[:16]


def train_multilabel(x_train, y_train, x_val, y_val, out_path=None, *, config: MultiLabelConfig | None = None,
                     preprocess=None, class_names=CDI_CLASSES, data_description: dict | None = None,
                     resume: bool = True, log=print, progress=None, device=None) -> MultiLabelResult:
    """Train the ResNet18_α multi-label classifier on preprocessed inputs.

    Parameters
    ----------
    x_train, x_val : (N, 1, S, S) float32 ndarray
        Network inputs (:func:`diffscreen.preprocess.cdi.prepare_cdi_batch`).
    y_train, y_val : (N, C) {0, 1} ndarray
    out_path : str or Path, optional
        Model file to write (with a checkpoint ``<out>.ckpt`` during training).
    config : MultiLabelConfig
    preprocess : CDIPreprocessConfig, optional
        Stored in the model file (needed with ``out_path``).
    class_names : sequence of str
    data_description : dict, optional
        Stored in the model file.
    resume : bool
        Continue from a matching checkpoint.
    log : callable
    progress : callable, optional
        ``progress(epoch, batch, n_batches)``.
    device : torch.device or str, optional
        Where the network trains (default: the CPU); the inputs stay in host memory, batches are augmented there
        (same random draws on every device) and moved.

    Returns
    -------
    MultiLabelResult

    Raises
    ------
    ConfigError
        Empty training set, inputs of the wrong shape or not finite, ``out_path`` without ``preprocess``, or a
        checkpoint of a different run.
    LabelError
        Labels of the wrong shape.
    """
    cfg = config or MultiLabelConfig()
    if out_path is not None and preprocess is None:
        raise ConfigError("writing a model file needs its preprocessing recipe (preprocess=CDIPreprocessConfig(...))")
    xt, xv = np.asarray(x_train, np.float32), np.asarray(x_val, np.float32)
    yt, yv = np.asarray(y_train, np.float32), np.asarray(y_val, np.float32)
    if xt.ndim != 4 or xt.shape[1] != 1 or len(xt) == 0:
        raise ConfigError(f"x_train must be a non-empty (N, 1, S, S) array, got {xt.shape}")
    if yt.shape != (len(xt), len(class_names)) or yv.shape != (len(xv), len(class_names)):
        raise LabelError(f"labels must be (N, {len(class_names)}), got {yt.shape} and {yv.shape}")
    if not (np.isfinite(xt).all() and np.isfinite(xv).all()):
        raise ConfigError("inputs contain NaN or infinite values")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    arch_kwargs = {"num_classes": len(class_names), "alpha": cfg.alpha, "width": cfg.width}
    model = get_model("zimmermann2019", **arch_kwargs)
    dev = training_device(device)
    model.to(dev)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov)
    flips = preprocess is None or getattr(preprocess, "mode", "image") == "image"
    run_id = {"config": asdict(cfg), "preprocess": preprocess.to_dict() if preprocess else None,
              "data": _fingerprint(xt, yt, xv, yv)}
    ckpt = Path(str(out_path) + ".ckpt") if out_path else None
    X, Y = torch.from_numpy(xt), torch.from_numpy(yt)
    nb = math.ceil(len(X) / cfg.batch_size)

    def batches(epoch):  # a shuffled pass over the training set; a last batch of one is skipped (BatchNorm)
        perm = torch.randperm(len(X), generator=gen)
        return (idx for b in range(nb) if len(idx := perm[b * cfg.batch_size: (b + 1) * cfg.batch_size]) >= 2)

    def loss(idx):
        xb = X[idx]
        if cfg.augment:
            xb = augment(xb, gen, flips=flips, brightness=cfg.brightness, contrast=cfg.contrast)
        bce = F.binary_cross_entropy_with_logits(model(xb.to(dev)), Y[idx].to(dev))
        return bce + regularisation(model, cfg.l1, cfg.l2), {"bce": float(bce.detach()) * len(idx)}

    def validate(epoch):  # every eval_every epochs and after the last
        if not (len(xv) and (epoch % cfg.eval_every == 0 or epoch == cfg.epochs)):
            return None, {}
        m = multilabel_metrics(yv, predict_arrays(model, xv, multilabel=True), class_names=class_names)
        cols = {k: m[k] for k in ("accuracy", "precision", "recall", "violation_rate") if k in m}
        return cols["accuracy"], cols

    def lr(epoch):  # ÷10 after each milestone
        return cfg.lr * 0.1 ** sum(epoch > m for m in cfg.milestones)

    def line(r, improved):
        return (f"epoch {r['epoch']}/{cfg.epochs} lr {r['lr']:.1e} bce {r['train_bce']:.4f}"
                + (f" val acc {r['accuracy']:.3f} P {r['precision']:.3f} R {r['recall']:.3f}" if "accuracy" in r
                   else "") + f" ({r['seconds']:.1f} s)")

    t_all = time.time()
    history, best = fit(model, opt, epochs=cfg.epochs, lr=lr, batches=batches, loss=loss,
                        row=lambda s: {"train_bce": s.get("bce", 0.0) / len(X)}, validate=validate, line=line,
                        ties_win=False, progress=progress, n_batches=nb, log=log,
                        checkpoint=None if ckpt is None else Checkpoint(ckpt, run_id, resume, "use --fresh",
                                                                        {"gen": gen}))
    model.eval()
    best = {"epoch": best.epoch, **best.cols} if best.epoch else {"accuracy": -1.0, "epoch": 0}
    evals = [h for h in history if "accuracy" in h]
    mx = {k: max(h[k] for h in evals) for k in ("accuracy", "precision", "recall")} if evals else {}
    if evals and "violation_rate" in evals[0]:
        mx["violation_rate_min"] = min(h["violation_rate"] for h in evals)
    seconds = time.time() - t_all
    path = None
    if out_path is not None:
        path = save_trained(out_path, model, arch="zimmermann2019", arch_kwargs=arch_kwargs, preprocess=preprocess,
                            class_names=class_names, task="cdi", multilabel=True, history=history, seed=cfg.seed,
                            metrics={"best": best, "max": mx}, data=data_description, head={"config": asdict(cfg)},
                            counts={"n_train": int(len(xt)), "n_val": int(len(xv))}).model_path
        ckpt.unlink(missing_ok=True)
    return MultiLabelResult(model, history, best, mx, path, seconds)
