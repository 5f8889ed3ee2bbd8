"""Multi-label training of the Zimmermann et al. (2019) ResNet18_α (§3.1.5).

Recipe (paper defaults in :class:`MultiLabelConfig`):

* loss: sigmoid binary cross-entropy (Eq. 6, averaged over the batch and the
  classes) plus ``l1 · Σ|w| + l2 · Σ w²`` over all convolution and dense
  weights, both 1e-5 (Eq. 10; "L2" as the sum of squares, the TensorFlow
  ``l2_regularizer`` convention);
* SGD, learning rate 0.1 divided by 10 at ``milestones`` (paper: every 50 of
  200 epochs), Nesterov momentum 0.9 (airynet code), batch 48;
* augmentation: random horizontal and vertical flips (images only: a flip
  leaves the CCF map unchanged, see :mod:`diffscreen.preprocess.ccf`), random
  brightness (+U(-b, b)) and contrast (×U(1-c, 1+c) about the mean);
* the metrics of §3.2 on the validation split after every ``eval_every``
  epochs; the paper reports the maximum of each over training (``max``), the
  model kept is the epoch of the best validation Accuracy;
* a checkpoint ``<out>.ckpt`` after every epoch so an interrupted run resumes.

The paper's full recipe (224 px, width 64, 200 epochs) is for GPU machines;
the reduced CPU recipe of ``docs/benchmarks/zimmermann2019.md`` is
:data:`CPU_RECIPE`.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from diffscreen.errors import ConfigError, LabelError
from diffscreen.evaluate.multilabel import CDI_CLASSES, multilabel_metrics, read_cdi_labels
from diffscreen.models import get_model
from diffscreen.models.batch import predict_arrays
from diffscreen.train.engine import Checkpoint, fit, save_trained

__all__ = ["MultiLabelConfig", "MultiLabelResult", "CPU_RECIPE", "load_cdi_runs", "train_multilabel",
           "augment", "regularisation"]


@dataclass
class MultiLabelConfig:
    """Hyper-parameters; defaults are the paper's (Zimmermann et al. 2019, §3.1.5; the airynet code where it is silent).

    Attributes
    ----------
    epochs : int
        200 in the paper.
    milestones : tuple of int
        Epochs (1-based) after which the learning rate is divided by 10.
    batch_size : int
        48.
    lr, momentum, nesterov : float, float, bool
        0.1, 0.9, True.
    l1, l2 : float
        Elastic-net coefficients, 1e-5 each (Eq. 10).
    alpha : float or None
        Logarithmic-activation α; None = unmodified ResNet18.
    width : int
        First-stage channels (64).
    augment : bool
        Flips (images only), brightness and contrast.
    brightness, contrast : float
        Augmentation ranges.
    eval_every : int
        Validate every this many epochs (and after the last).
    seed : int
        Seeds initialisation, batch order and augmentation.
    threads : int
        Torch CPU threads (0: leave as is).
    """

    epochs: int = 200
    milestones: tuple = (50, 100, 150)
    batch_size: int = 48
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = True
    l1: float = 1e-5
    l2: float = 1e-5
    alpha: float | None = 0.2
    width: int = 64
    augment: bool = True
    brightness: float = 0.1
    contrast: float = 0.2
    eval_every: int = 1
    seed: int = 0
    threads: int = 1

    def __post_init__(self):
        if self.epochs < 1 or self.batch_size < 1 or self.eval_every < 1:
            raise ConfigError("epochs, batch_size and eval_every must be >= 1")
        if not self.lr > 0:
            raise ConfigError("lr must be > 0")
        if self.alpha is not None and not self.alpha > 0:
            raise ConfigError(f"alpha must be > 0 or None (unmodified), got {self.alpha}")
        self.milestones = tuple(int(m) for m in self.milestones)


#: The reduced CPU recipe of the benchmark: 64 px inputs, width 16, 16 epochs (÷10 after 10 and 14).
CPU_RECIPE = {"input_size": 64, "width": 16, "epochs": 16, "milestones": (10, 14), "batch_size": 48}


@dataclass
class MultiLabelResult:
    """What :func:`train_multilabel` returns.

    Attributes
    ----------
    model : torch.nn.Module
        The best-validation-Accuracy model, in eval mode.
    history : list of dict
        Per-epoch loss, learning rate, validation metrics, seconds.
    best : dict
        Validation metrics of the kept epoch (``epoch`` included).
    max : dict
        Maximum over the epochs of accuracy, precision and recall (how the
        paper reports its tables), plus the minimum violation rate.
    model_path : Path or None
    seconds : float
    """

    model: object
    history: list
    best: dict
    max: dict
    model_path: Path | None = None
    seconds: float = 0.0


def load_cdi_runs(paths) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    """Read simulated CDI runs (:func:`diffscreen.simulate.cdi.simulate_cdi_run` files).

    Parameters
    ----------
    paths : sequence of str or Path

    Returns
    -------
    frames : (N, H, W) float32 ndarray
        Photons per pixel.
    mask : (H, W) bool ndarray
        The hole mask (that of the first file).
    labels : (N, 11) uint8 ndarray
        Multi-hot labels.
    info : dict
        Files, frame counts and the simulation configs.

    Raises
    ------
    LabelError
        A file without ``/entry_1/result_1/labels`` or with other class names.
    FrameReadError
        Unreadable file.
    """
    import h5py

    from diffscreen.errors import FrameReadError

    frames, labels, info, mask = [], [], {"files": [], "configs": []}, None
    for p in paths:
        p = str(p)
        try:
            h = h5py.File(p, "r")
        except OSError as exc:
            raise FrameReadError(f"cannot open as HDF5 ({exc})", path=p) from None
        with h:
            labels.append(read_cdi_labels(p))  # checks the table and its class names
            import hdf5plugin  # noqa: F401  (bitshuffle-compressed runs)

            frames.append(h["entry_1/data_1/data"][()].astype(np.float32))
            if mask is None:
                mk = "entry_1/instrument_1/detector_1/mask"
                mask = h[mk][()].astype(bool) if mk in h else np.zeros(frames[-1].shape[1:], bool)
            info["files"].append(p)
            info["configs"].append(json.loads(h.attrs.get("cdi_config", "{}")))
    if not frames:
        raise ConfigError("no CDI runs given")
    shapes = {f.shape[1:] for f in frames}
    if len(shapes) > 1:
        raise ConfigError(f"CDI runs of different frame sizes {sorted(shapes)}")
    x, y = np.concatenate(frames), np.concatenate(labels)
    info["n_frames"] = int(len(x))
    info["label_counts"] = {n: int(c) for n, c in zip(CDI_CLASSES, y.sum(0))}
    return x, mask, y, info


def augment(x: torch.Tensor, gen: torch.Generator, *, flips: bool, brightness: float, contrast: float) -> torch.Tensor:
    """Random flips, brightness and contrast, per sample.

    Parameters
    ----------
    x : (N, C, S, S) float32 tensor
        Not modified.
    gen : torch.Generator
    flips : bool
    brightness, contrast : float

    Returns
    -------
    (N, C, S, S) float32 tensor
    """
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
    r = torch.zeros(())
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
                     resume: bool = True, log=print, progress=None) -> MultiLabelResult:
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
        Stored in the model file.
    class_names : sequence of str
    data_description : dict, optional
        Stored in the model file.
    resume : bool
        Continue from a matching checkpoint.
    log : callable
    progress : callable, optional
        ``progress(epoch, batch, n_batches)``.

    Returns
    -------
    MultiLabelResult

    Raises
    ------
    ConfigError
        Empty training set, inputs of the wrong shape, or a checkpoint of a
        different run.
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
        bce = F.binary_cross_entropy_with_logits(model(xb), Y[idx])
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
                            counts={"n_train": int(len(xt)), "n_val": int(len(xv))})
        ckpt.unlink(missing_ok=True)
    return MultiLabelResult(model, history, best, mx, path, seconds)
