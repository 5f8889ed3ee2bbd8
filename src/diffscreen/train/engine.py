"""The one training engine: :func:`fit` runs the epochs of every training recipe.

An epoch sets the learning rate of the schedule, puts the network in training
mode, runs the recipe's mini-batches (``opt.zero_grad``, the recipe's loss,
``backward``, ``opt.step``), validates, keeps the best epoch's weights and
writes a checkpoint, so that an interrupted run resumes where it stopped.
What differs between the recipes is plugged in: the batches (class-balanced,
Ke et al. 2018 §2.1.3; a shuffled permutation, Zimmermann et al. 2019
§3.1.5), the loss and its targets (softmax classes, multi-label sigmoid, the
DANN domain head of Ganin et al. 2016), augmentation, the schedule and the
validation score.  Data-parallel runs (:mod:`diffscreen.train.distributed`)
sum the batch statistics over the ranks; rank 0 alone validates and saves.

:func:`save_trained` builds the model-file metadata of every recipe.
"""

from __future__ import annotations

import json
import math
import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from diffscreen.errors import ConfigError
from diffscreen.io.atomic import temporary_path
from diffscreen.models import save_model
from diffscreen.train.sampler import ClassBalancedSampler

__all__ = ["TrainConfig", "TrainResult", "learning_rate", "make_optimizer", "Checkpoint", "Best", "fit",
           "balanced_batches", "softmax_loss", "batch_counts", "counts_row", "epoch_line", "fit_balanced",
           "check_arrays", "arch_kwargs_for", "save_trained"]

_OPTIMIZERS = ("sgd", "adam")


@dataclass
class TrainConfig:
    """Training hyper-parameters; defaults are Ke et al. (2018) §2.3 and, where the paper is silent, the authors' fv5080 code.

    Attributes
    ----------
    epochs : int
        Number of epochs (Ke: 120).
    batches_per_epoch : int
        Mini-batches per epoch (Ke: 100).
    batch_size : int
        Frames per mini-batch (Ke: 64).
    lr_start, lr_end : float
        Learning rate at the first and last epoch (0.1 → 1e-4, exponential).
    momentum, weight_decay : float
        SGD parameters (0.9, 5e-4).
    seed : int
        Seeds weight initialisation, batch drawing and crop shifts.
    arch : str
        Registry name of the architecture.
    first_kernel : int
        7 (fv5080) or 3 (paper text).
    workers : int
        DataLoader worker processes reading and preprocessing frames.
    threads : int
        Torch threads for the optimisation step.
    optimizer : {"sgd", "adam"}
        SGD with momentum (Ke, default) or Adam (Nawaz et al. 2022 §3.5;
        ``momentum`` is then unused and ``weight_decay`` is Adam's L2 term).
    arch_kwargs : dict
        Further builder arguments of ``arch`` (e.g. AlexNet ``channels``).
    """

    epochs: int = 120
    batches_per_epoch: int = 100
    batch_size: int = 64
    lr_start: float = 0.1
    lr_end: float = 1e-4
    momentum: float = 0.9
    weight_decay: float = 5e-4
    seed: int = 0
    arch: str = "ke2018"
    first_kernel: int = 7
    workers: int = 1
    threads: int = 1
    optimizer: str = "sgd"
    arch_kwargs: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.optimizer not in _OPTIMIZERS:
            raise ConfigError(f"optimizer must be one of {_OPTIMIZERS}, got {self.optimizer!r}")
        for name in ("epochs", "batches_per_epoch", "batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not (self.lr_start > 0 and self.lr_end > 0):
            raise ConfigError("learning rates must be > 0")


@dataclass
class TrainResult:
    """What a training recipe produced.

    Attributes
    ----------
    model_path : Path
    best_epoch : int
    history : list of dict
        One row per epoch (``epoch``, ``lr``, the recipe's training columns,
        its validation columns, ``seconds``).
    test_report : EvaluationReport or None
    """

    model_path: Path
    best_epoch: int
    history: list = field(default_factory=list)
    test_report: object = None


def make_optimizer(model, config: TrainConfig):
    """The optimiser ``config.optimizer`` names, at ``config.lr_start``, over ``model.parameters()``."""
    if config.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=config.lr_start, weight_decay=config.weight_decay)
    return torch.optim.SGD(
        model.parameters(), lr=config.lr_start, momentum=config.momentum, weight_decay=config.weight_decay
    )


def learning_rate(epoch: int, config: TrainConfig) -> float:
    """Learning rate of 1-based ``epoch``: exponential from ``lr_start`` to ``lr_end``.

    With the defaults this is ``10^-(1 + 3(epoch-1)/(epochs-1))`` (Ke et al. 2018 §2.3; fv5080).
    """
    if config.epochs == 1:
        return config.lr_start
    f = (epoch - 1) / (config.epochs - 1)
    return float(10 ** (math.log10(config.lr_start) + f * (math.log10(config.lr_end) - math.log10(config.lr_start))))


@dataclass
class Checkpoint:
    """Where :func:`fit` writes its checkpoint after every epoch, and whether it resumes from it.

    Attributes
    ----------
    path : Path
        The checkpoint file (a ``torch.save`` dict, read with ``weights_only=True``).
    run_id : dict
        JSON-serialisable identity of the run (configuration, data
        fingerprint); a checkpoint of another run is refused.
    resume : bool
        Continue from ``path`` if it exists.
    hint : str
        How the user discards a stale checkpoint (ends the error message).
    generators : dict of str to torch.Generator
        Random generators whose state is saved and restored with the weights.
    """

    path: Path
    run_id: dict
    resume: bool = True
    hint: str = "pass --no-resume"
    generators: dict = field(default_factory=dict)


@dataclass
class Best:
    """The best epoch so far: its validation ``score``, ``epoch`` (0: none yet), weights and validation columns."""

    score: float = -math.inf
    epoch: int = 0
    state: dict | None = None
    cols: dict = field(default_factory=dict)


def _resume(ck: Checkpoint, model, opt, log):
    ck_ = torch.load(ck.path, weights_only=True, map_location=next(model.parameters()).device)
    if json.loads(ck_["run_id"]) != json.loads(json.dumps(ck.run_id)):
        raise ConfigError(f"a checkpoint from a different training run exists; remove it or {ck.hint}",
                          path=ck.path)
    model.load_state_dict(ck_["model"])
    opt.load_state_dict(ck_["optimizer"])
    for name, gen in ck.generators.items():
        gen.set_state(ck_[name])
    b = json.loads(ck_["best"])
    log(f"resuming from {ck.path} after epoch {ck_['epoch']}")
    best = Best(b["score"], b["epoch"], ck_["best_state"] or None, b["cols"])
    return int(ck_["epoch"]) + 1, json.loads(ck_["history"]), best


def _save(ck: Checkpoint, epoch, model, opt, history, best: Best) -> None:
    with temporary_path(ck.path) as tmp:
        torch.save({"run_id": json.dumps(ck.run_id), "epoch": epoch, "model": model.state_dict(),
                    "optimizer": opt.state_dict(), "history": json.dumps(history),
                    "best": json.dumps({"score": best.score, "epoch": best.epoch, "cols": best.cols}),
                    "best_state": best.state or {}, **{n: g.get_state() for n, g in ck.generators.items()}}, tmp)


def fit(model, opt, *, epochs: int, lr, batches, loss, row, validate, line, train_mode=None, tag=None,
        ties_win: bool = True, checkpoint: Checkpoint | None = None, progress=None, n_batches=None, log=print,
        ctx=None) -> tuple[list, Best]:
    """Run the epochs of a training recipe and keep the best one's weights in ``model``.

    Parameters
    ----------
    model : torch.nn.Module
        The network whose weights are selected, checkpointed and returned
        (a DDP wrapper or a domain head, if any, live in the recipe's ``loss``).
    opt : torch.optim.Optimizer
    epochs : int
        Last epoch (1-based).
    lr : callable
        ``lr(epoch) -> float``, the learning-rate schedule.
    batches : callable
        ``batches(epoch) -> iterable`` of the epoch's mini-batches, in any form ``loss`` takes.
    loss : callable
        ``loss(batch) -> (loss tensor, sums)``: the scalar to minimise and a
        dict of per-batch statistics (summed over the epoch and the ranks).
    row : callable
        ``row(sums) -> dict``: the epoch's training columns of the history.
    validate : callable
        ``validate(epoch) -> (score, cols)``: the selection score (NaN: no
        validation data, every epoch improves; None: not validated this
        epoch) and the history's validation columns.
    line : callable
        ``line(row, improved) -> str``, the epoch's log line.
    train_mode : callable, optional
        Puts the modules in training mode (default ``model.train()``).
    tag : dict, optional
        Columns put after ``epoch`` in every history row (e.g. the stage).
    ties_win : bool
        An epoch scoring equal to the best replaces it.
    checkpoint : Checkpoint, optional
    progress : callable, optional
        ``progress(epoch, batch, n_batches)`` after every batch.
    n_batches : int, optional
        Passed to ``progress``.
    log : callable
    ctx : DDPContext, optional
        Data-parallel run: batch statistics are summed over the ranks; only
        rank 0 keeps the best weights and writes the checkpoint.

    Returns
    -------
    history : list of dict
    best : Best
        The kept epoch; its weights are loaded into ``model`` (on rank 0).

    Raises
    ------
    ConfigError
        A checkpoint of a different run exists.
    """
    root = ctx is None or ctx.is_root
    start, history, best = 1, [], Best()
    if checkpoint is not None and checkpoint.resume and checkpoint.path.exists():
        start, history, best = _resume(checkpoint, model, opt, log)
    for epoch in range(start, epochs + 1):
        t0 = time.time()
        rate = lr(epoch)
        for g in opt.param_groups:
            g["lr"] = rate
        (train_mode or model.train)()
        sums: dict = {}
        for b, batch in enumerate(batches(epoch)):
            opt.zero_grad(set_to_none=True)
            value, stats = loss(batch)
            value.backward()
            opt.step()
            for k, v in stats.items():
                sums[k] = sums.get(k, 0) + v
            if progress:
                progress(epoch, b + 1, n_batches)
        if ctx is not None:
            sums = dict(zip(sums, ctx.sum(sums.values())))
        score, cols = validate(epoch)
        rec = {"epoch": epoch, **(tag or {}), "lr": rate, **row(sums), **cols, "seconds": time.time() - t0}
        history.append(rec)
        improved = score is not None and (math.isnan(score) or score > best.score
                                          or (ties_win and score == best.score))
        if improved and root:
            best = Best(score, epoch, {k: v.clone() for k, v in model.state_dict().items()}, cols)
        log(line(rec, improved))
        if checkpoint is not None and root:
            _save(checkpoint, epoch, model, opt, history, best)
    if ctx is not None:
        _ddp_check(ctx, model)
    if root and best.state is not None:
        model.load_state_dict(best.state)
    return history, best


def _ddp_check(ctx, model) -> None:
    """Debugging aid: with ``DIFFSCREEN_DDP_CHECKSUM_DIR`` set, each rank writes a checksum of its
    parameters after the last epoch to ``rank<r>.sha256`` there (they must all be equal)."""
    from diffscreen.train.distributed import parameter_checksum

    folder = os.environ.get("DIFFSCREEN_DDP_CHECKSUM_DIR")
    if folder:
        Path(folder, f"rank{ctx.rank}.sha256").write_text(parameter_checksum(model) + "\n")


# --------------------------------------------------------------------------- parts recipes plug in


def balanced_batches(labels, config: TrainConfig, seed: int):
    """Sampler hook: each epoch's class-balanced mini-batches of sample indices (Ke et al. 2018 §2.1.3).

    Parameters
    ----------
    labels : (N,) int array
        What the batches are balanced over.
    config : TrainConfig
        ``batches_per_epoch`` batches of ``batch_size``.
    seed : int
        Epoch ``e`` draws with ``default_rng([seed, e])``
        (:class:`~diffscreen.train.sampler.ClassBalancedSampler`).

    Returns
    -------
    callable
        ``batches(epoch)`` → iterator of ``(batch_size,)`` int64 index arrays.
    """
    sampler = ClassBalancedSampler(labels, config.batches_per_epoch * config.batch_size, max_shift=0, seed=seed)
    bs = config.batch_size

    def batches(epoch):
        sampler.set_epoch(epoch)
        items = sampler.draw()[:, 0]
        return (items[b * bs : (b + 1) * bs] for b in range(config.batches_per_epoch))

    return batches


def batch_counts(value, logits, y) -> dict:
    """Batch statistics of a softmax classifier: summed loss, correct argmax, number of inputs."""
    return {"loss": float(value.detach()) * len(y), "ok": int((logits.argmax(1) == y).sum()), "n": len(y)}


def counts_row(sums) -> dict:
    """History columns ``train_loss`` and ``train_accuracy`` from :func:`batch_counts` sums."""
    return {"train_loss": sums["loss"] / sums["n"], "train_accuracy": sums["ok"] / sums["n"]}


def softmax_loss(model, x, y, *, augment=None, rng=None):
    """Loss hook: cross entropy (log-softmax + NLL, fv5080) of the inputs ``x[idx]`` held in memory.

    Parameters
    ----------
    model : torch.nn.Module
    x : (N, 1, S, S) or (N, 1, S) float16/float32 ndarray
    y : (N,) int64 ndarray
    augment : callable, optional
        ``augment(xb, rng) -> xb`` on every float32 mini-batch.
    rng : numpy.random.Generator, optional

    Returns
    -------
    callable
        ``loss(idx) -> (loss, batch_counts)``.
    """

    def loss(idx):
        xa = np.asarray(x[idx], dtype=np.float32)
        if augment is not None:
            xa = augment(xa, rng)
        yb = torch.from_numpy(y[idx])
        logits = model(torch.from_numpy(np.ascontiguousarray(xa)))
        value = F.cross_entropy(logits, yb)
        return value, batch_counts(value, logits, yb)

    return loss


def epoch_line(epochs: int, val_key: str, label: str, *, prefix: str = "", seconds: bool = True):
    """Log-line hook of the softmax recipes: lr, loss, training accuracy, validation score, a star when kept."""

    def line(rec, improved):
        return (f"{prefix}epoch {rec['epoch']}/{epochs}  lr {rec['lr']:.2e}  loss {rec['train_loss']:.4f}  "
                f"train acc {rec['train_accuracy']:.3f}  {label} {rec[val_key]:.3f}{'  *' if improved else ''}"
                + (f"  ({rec['seconds']:.0f} s)" if seconds else ""))

    return line


def fit_balanced(model, opt, x, y, config: TrainConfig, *, score, val_key: str, label: str, groups=None,
                 seed=None, augment=None, train_mode=None, tag=None, prefix="", seconds=True, log=print):
    """:func:`fit` with class-balanced batches of in-memory inputs, cross entropy and the exponential schedule.

    Parameters
    ----------
    model, opt
        The network and its optimiser.
    x : (N, 1, S, S) or (N, 1, S) float16/float32 ndarray
    y : (N,) int64 ndarray
    config : TrainConfig
    score : callable
        ``score() -> float``, the validation score (NaN without validation data).
    val_key, label : str
        Its history column and its name in the log.
    groups : (N,) int array, optional
        What the batches are balanced over (default ``y``).
    seed : int, optional
        Batch drawing and augmentation (default ``config.seed``).
    augment, train_mode, tag, log
        As :func:`softmax_loss` and :func:`fit`.
    prefix : str
        Starts every log line.
    seconds : bool
        Log the epoch's duration.

    Returns
    -------
    history : list of dict
    best : Best
    """
    seed = config.seed if seed is None else seed
    rng = np.random.default_rng([seed, 7])

    def validate(epoch):
        s = score()
        return s, {val_key: s}

    return fit(model, opt, epochs=config.epochs, lr=lambda e: learning_rate(e, config),
               batches=balanced_batches(y if groups is None else groups, config, seed),
               loss=softmax_loss(model, x, y, augment=augment, rng=rng), row=counts_row, validate=validate,
               line=epoch_line(config.epochs, val_key, label, prefix=prefix, seconds=seconds),
               train_mode=train_mode, tag=tag, log=log)


def check_arrays(x, y=None, n_classes=None, what: str = "x_train", *, labelled: bool = True
                 ) -> tuple[np.ndarray, np.ndarray | None]:
    """Validate preprocessed inputs (``(N, 1, S, S)`` frames or ``(N, 1, S)`` row vectors) and labels.

    Returns
    -------
    x : ndarray
        ``x`` as an array (not copied).
    y : (N,) int64 ndarray or None

    Raises
    ------
    ConfigError
        Empty input, wrong rank, a length mismatch, labels outside ``0..n_classes-1``, or ``y``
        missing while ``labelled``.
    """
    xa = np.asarray(x)
    if y is None and labelled:
        raise ConfigError(f"{what} is given without its labels")
    if xa.ndim not in (3, 4) or len(xa) == 0:
        raise ConfigError(f"{what} must be non-empty (N, 1, S, S) frames or (N, 1, S) row vectors, got {xa.shape}")
    if y is None:
        return xa, None
    ya = np.asarray(y, dtype=np.int64)
    if ya.shape != (len(xa),):
        raise ConfigError(f"{what} has {len(xa)} inputs but {ya.shape} labels")
    if n_classes is not None and (ya.min() < 0 or ya.max() >= n_classes):
        raise ConfigError(f"labels must be class indices 0..{n_classes - 1}, got {ya.min()}..{ya.max()}")
    return xa, ya


def arch_kwargs_for(config: TrainConfig, n_classes: int, input_size: int) -> dict:
    """Builder arguments of ``config.arch``: classes, input side (px), the Ke first kernel, then ``config.arch_kwargs``."""
    kw = {"num_classes": n_classes, "input_size": int(input_size)}
    if config.arch == "ke2018":
        kw["first_kernel"] = config.first_kernel
    kw.update(config.arch_kwargs)
    return kw


def save_trained(path, model, *, arch, arch_kwargs, preprocess, class_names, history, seed, metrics, data=None,
                 head=None, counts=None, tail=None, **meta) -> Path:
    """Write a trained model file with its training record (:func:`~diffscreen.models.save_model`).

    The record ``training`` is ``head``, then ``data`` (the description of
    the training data), the set sizes ``counts``, the ``history``, the torch
    and Python versions, the creation time, then ``tail``.

    Parameters
    ----------
    path : str or Path
    model : torch.nn.Module
    arch, arch_kwargs, preprocess, class_names
        As :func:`~diffscreen.models.save_model`.
    history : list of dict
    seed : int
    metrics : dict
    data : dict, optional
    head, counts, tail : dict, optional
    **meta
        Further top-level records (e.g. ``task``, ``multilabel``).

    Returns
    -------
    Path
    """
    training = {**(head or {}), "data": data or {}, **(counts or {}), "history": history,
                "torch": torch.__version__, "python": platform.python_version(),
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **(tail or {})}
    return save_model(path, model, arch=arch, arch_kwargs=arch_kwargs, preprocess=preprocess,
                      class_names=class_names, **meta, training=training, seed=seed, metrics=metrics)
