"""The one training engine: :func:`fit` runs the epochs of every recipe; :func:`save_trained` writes its model file.

An epoch sets the scheduled learning rate, runs the recipe's mini-batches (zero the gradients, the recipe's loss,
backward, step), validates, keeps the best epoch's weights and writes a checkpoint to resume from.  A recipe plugs
in the batches (class-balanced, Ke et al. 2018 §2.1.3; shuffled passes, Zimmermann et al. 2019 §3.1.5), the loss
and targets (softmax classes, multi-label sigmoid, the DANN domain head of Ganin et al. 2016), augmentation, the
schedule and the validation score.
"""

from __future__ import annotations

import json
import math
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Sampler

from diffscreen.errors import ConfigError
from diffscreen.io.atomic import temporary_path
from diffscreen.models import get_model, save_model

__all__ = ["TrainConfig", "TrainResult", "learning_rate", "make_optimizer", "Checkpoint", "Best", "fit",
           "ClassBalancedSampler", "balanced_batches", "softmax_step", "scored", "softmax_hooks",
           "fit_balanced", "check_arrays", "new_model", "save_trained", "model_device", "training_device"]

_OPTIMIZERS = ("sgd", "adam")


@dataclass
class TrainConfig:
    """Hyper-parameters of the softmax recipes; defaults are Ke et al. (2018) §2.3 and, where the paper is silent,
    the authors' fv5080 code.  ``optimizer="adam"`` is Adam (Nawaz et al. 2022 §3.5; ``momentum`` then unused,
    ``weight_decay`` its L2 term)."""

    epochs: int = 120  #: Ke: 120
    batches_per_epoch: int = 100  #: mini-batches per epoch (Ke: 100)
    batch_size: int = 64  #: frames per mini-batch (Ke: 64)
    lr_start: float = 0.1  #: learning rate at the first epoch, falling exponentially to ``lr_end`` at the last
    lr_end: float = 1e-4
    momentum: float = 0.9  #: SGD momentum
    weight_decay: float = 5e-4
    seed: int = 0  #: seeds weight initialisation, batch drawing, crop shifts and augmentation
    arch: str = "ke2018"  #: registry name of the architecture
    first_kernel: int = 7  #: 7 (fv5080) or 3 (paper text)
    workers: int = 1  #: DataLoader processes reading and preprocessing frames
    threads: int = 1  #: torch threads of the optimisation step
    optimizer: str = "sgd"  #: "sgd" (Ke) or "adam"
    arch_kwargs: dict = field(default_factory=dict)  #: further builder arguments (e.g. AlexNet ``channels``)

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
    """What a recipe produced: ``model_path``, ``best_epoch``, ``history`` (one dict per epoch), ``test_report``."""

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
    """Checkpoint hook of :func:`fit`: the file ``path``, the JSON ``run_id`` it must match, whether to
    ``resume``, the ``hint`` ending the refusal, and ``generators`` (name → torch.Generator) saved with it."""

    path: Path
    run_id: dict
    resume: bool = True
    hint: str = "pass --no-resume"
    generators: dict = field(default_factory=dict)


@dataclass
class Best:
    """The best epoch so far: ``score``, ``epoch`` (0: none yet), weights ``state``, validation ``cols``."""

    score: float = -math.inf
    epoch: int = 0
    state: dict | None = None
    cols: dict = field(default_factory=dict)


def _resume(ck: Checkpoint, model, opt, log):
    ck_ = torch.load(ck.path, weights_only=True, map_location=next(model.parameters()).device)
    if "best" not in ck_ or json.loads(ck_["run_id"]) != json.loads(json.dumps(ck.run_id)):  # (or an older format)
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
    """Run the epochs of a recipe; ``model`` ends with the best epoch's weights (on rank 0).

    Parameters
    ----------
    model : torch.nn.Module
        Whose weights are selected and checkpointed (a DDP wrapper or domain head lives in ``loss``).
    opt : torch.optim.Optimizer
    epochs : int
    lr, batches, loss, row, validate, line : callable
        Schedule ``lr(epoch) -> float``; sampler ``batches(epoch) -> iterable`` of what ``loss`` takes;
        ``loss(batch) -> (scalar tensor, stats dict)``, stats summed over the epoch (and ranks); ``row(sums) ->
        dict`` of training columns; ``validate(epoch) -> (score, cols)`` (a NaN score, no validation data, always
        improves; None, not validated, never); ``line(row, improved) -> str``.
    train_mode : callable, optional
        Default ``model.train()``.
    tag : dict, optional
        Columns after ``epoch`` in every row (e.g. the stage).
    ties_win : bool
        An epoch scoring equal to the best replaces it.
    checkpoint : Checkpoint, optional
    progress : callable, optional
        ``progress(epoch, batch, n_batches)`` after every batch.
    n_batches : int, optional
    log : callable
    ctx : DDPContext, optional
        Data-parallel run (:mod:`diffscreen.train.distributed`): stats summed over the ranks; rank 0 alone keeps
        the best weights and writes the checkpoint.

    Returns
    -------
    history : list of dict
        Rows ``epoch``, ``tag``, ``lr``, ``row(sums)``, ``cols``, ``seconds``.
    best : Best

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
        ctx.write_checksum(model)
    if root and best.state is not None:
        model.load_state_dict(best.state)
    return history, best


# --------------------------------------------------------------------------- parts recipes plug in


class ClassBalancedSampler(Sampler):
    """Draw a class uniformly, then a frame of that class (with replacement).

    Every mini-batch then holds about equal numbers of each class, so the majority class (usually miss) does not
    dominate training.  Each item is ``(k, dx, dy)``: a sample index and a random crop shift in output pixels (Ke
    §2.2 random cropping).

    Parameters
    ----------
    labels : (N,) sequence of int
        Class index of each sample.
    n_items : int
        Items per epoch (batches per epoch × batch size).
    max_shift : int
        Shifts are uniform integers in ``[-max_shift, max_shift]``.
    seed : int
        Base seed; epoch ``e`` uses ``default_rng([seed, e])`` so that a resumed run draws the same batches.
    """

    def __init__(self, labels, n_items: int, *, max_shift: int = 0, seed: int = 0):
        self.labels = np.asarray(labels)
        self.classes = np.unique(self.labels)
        self.by_class = [np.flatnonzero(self.labels == c) for c in self.classes]
        self.n_items = int(n_items)
        self.max_shift = int(max_shift)
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n_items

    def draw(self) -> np.ndarray:
        """The epoch's items as an ``(n_items, 3)`` int array."""
        rng = np.random.default_rng([self.seed, self.epoch])
        cls = rng.integers(0, len(self.classes), size=self.n_items)
        pick = np.array([self.by_class[c][rng.integers(len(self.by_class[c]))] for c in cls], dtype=np.int64)
        m = self.max_shift
        shifts = rng.integers(-m, m + 1, size=(self.n_items, 2)) if m else np.zeros((self.n_items, 2), np.int64)
        return np.column_stack([pick, shifts])

    def __iter__(self):
        return iter(tuple(int(v) for v in row) for row in self.draw())


def balanced_batches(labels, config: TrainConfig, seed: int):
    """Sampler hook: ``batches(epoch)`` → ``config.batches_per_epoch`` class-balanced ``(batch_size,)`` int64
    index arrays over the classes of ``labels`` (N,), drawn with ``default_rng([seed, epoch])`` (Ke et al. 2018
    §2.1.3; :class:`ClassBalancedSampler`)."""
    sampler = ClassBalancedSampler(labels, config.batches_per_epoch * config.batch_size, max_shift=0, seed=seed)
    bs = config.batch_size

    def batches(epoch):
        sampler.set_epoch(epoch)
        items = sampler.draw()[:, 0]
        return (items[b * bs : (b + 1) * bs] for b in range(config.batches_per_epoch))

    return batches


def softmax_step(net, x, y) -> tuple[torch.Tensor, dict]:
    """Loss hook body of a softmax classifier: cross entropy (log-softmax + NLL, fv5080) of ``net`` on ``x``
    ((B, 1, S, S) or (B, 1, S) float32 tensor) against ``y`` ((B,) int64 tensor), and the batch statistics summed
    loss, correct argmax and number of inputs (:func:`softmax_hooks`)."""
    logits = net(x)
    value = F.cross_entropy(logits, y)
    return value, {"loss": float(value.detach()) * len(y), "ok": int((logits.argmax(1) == y).sum()), "n": len(y)}


def scored(val_key: str, score):
    """Validation hook ``validate(epoch) -> (s, {val_key: s})`` of :func:`fit` from ``score() -> float``."""
    return lambda epoch: ((s := score()), {val_key: s})


def softmax_hooks(config: TrainConfig, score, val_key: str, label: str, *, prefix: str = "",
                  seconds: bool = True) -> dict:
    """The :func:`fit` hooks the softmax recipes share: ``epochs`` and the exponential ``lr`` of ``config``; the
    ``row`` of ``train_loss`` and ``train_accuracy`` from :func:`softmax_step` sums; ``validate`` by ``score() ->
    float`` in column ``val_key``; the log ``line``: ``prefix``, lr, loss, training accuracy, ``label`` and the
    score, a star when kept, the epoch's ``seconds``."""

    def line(rec, improved):
        return (f"{prefix}epoch {rec['epoch']}/{config.epochs}  lr {rec['lr']:.2e}  loss {rec['train_loss']:.4f}  "
                f"train acc {rec['train_accuracy']:.3f}  {label} {rec[val_key]:.3f}{'  *' if improved else ''}"
                + (f"  ({rec['seconds']:.0f} s)" if seconds else ""))

    return {"epochs": config.epochs, "lr": lambda e: learning_rate(e, config),
            "row": lambda s: {"train_loss": s["loss"] / s["n"], "train_accuracy": s["ok"] / s["n"]},
            "validate": scored(val_key, score), "line": line}


def fit_balanced(model, opt, x, y, config: TrainConfig, *, score, val_key: str, label: str, groups=None,
                 seed=None, augment=None, train_mode=None, tag=None, prefix="", seconds=True, log=print):
    """:func:`fit` on inputs held in memory: class-balanced batches, cross entropy, exponential schedule.

    ``model`` and its optimiser ``opt``; the loss is the cross entropy of ``model`` on ``x[idx]`` ((N, 1, S, S)
    or (N, 1, S) float16/float32, cast to float32, then ``augment(xb, rng)`` if given, ``rng`` seeded from
    ``seed``) against ``y[idx]`` ((N,) int64); ``score() -> float`` the validation score (NaN without validation
    data), column ``val_key``, logged as ``label`` after ``prefix`` (with the epoch's ``seconds``); batches
    balanced over ``groups`` (default ``y``) drawn with ``seed`` (default ``config.seed``); ``train_mode``,
    ``tag``, ``log`` and the returned ``(history, best)`` as :func:`fit`.  Batches are moved to ``model``'s
    device (:func:`model_device`).
    """
    seed = config.seed if seed is None else seed
    rng = np.random.default_rng([seed, 7])
    dev = model_device(model)  # batches go where the model is (``--device``)

    def loss(idx):
        xa = np.asarray(x[idx], dtype=np.float32)
        if augment is not None:
            xa = augment(xa, rng)
        return softmax_step(model, torch.from_numpy(np.ascontiguousarray(xa)).to(dev), torch.from_numpy(y[idx]).to(dev))

    return fit(model, opt, batches=balanced_batches(y if groups is None else groups, config, seed), loss=loss,
               train_mode=train_mode, tag=tag, log=log,
               **softmax_hooks(config, score, val_key, label, prefix=prefix, seconds=seconds))


def model_device(model) -> torch.device:
    """The device of ``model``'s first parameter (the CPU for a model without parameters)."""
    return next((p.device for p in model.parameters()), torch.device("cpu"))


def training_device(device=None) -> torch.device:
    """``device`` as a :class:`torch.device`; None is the CPU (the CLI resolves ``--device`` before it gets here)."""
    return torch.device("cpu") if device is None else torch.device(device)


def check_arrays(x, y=None, n_classes=None, what: str = "x_train", *, labelled: bool = True
                 ) -> tuple[np.ndarray, np.ndarray | None]:
    """``x`` ((N, 1, S, S) frames or (N, 1, S) row vectors) as an array and ``y`` as (N,) int64 (or None).

    Raises
    ------
    ConfigError
        Empty input, wrong rank, a length mismatch, labels outside ``0..n_classes-1``, or ``y`` missing while
        ``labelled``.
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


def new_model(config: TrainConfig, n_classes: int, input_size: int) -> tuple[torch.nn.Module, dict]:
    """Set ``config.threads`` torch threads, seed torch with ``config.seed`` and build ``config.arch``.

    Returns the model and its builder arguments: classes, input side (px), Ke's first kernel, ``config.arch_kwargs``.
    """
    torch.set_num_threads(max(1, config.threads))
    torch.manual_seed(config.seed)
    kw = {"num_classes": n_classes, "input_size": int(input_size)}
    if config.arch == "ke2018":
        kw["first_kernel"] = config.first_kernel
    kw.update(config.arch_kwargs)
    return get_model(config.arch, **kw), kw


def save_trained(path, model, *, arch, arch_kwargs, preprocess, class_names, history, seed, metrics, data=None,
                 head=None, counts=None, tail=None, report=None, **meta) -> TrainResult:
    """Put ``model`` in eval mode and write its model file (:func:`~diffscreen.models.save_model`); the one place
    its record is built.

    ``training`` holds ``head``, ``data`` (the training data's description), the set sizes ``counts``, the
    ``history``, the torch and Python versions, the creation time, then ``tail`` (default: the ``device`` type
    ``model`` is on); ``**meta`` (e.g. ``task``, ``multilabel``) go before it, ``seed`` and ``metrics`` after.
    Returns ``TrainResult(Path(path), metrics.get("best_epoch"), history, report)``.
    """
    model.eval()
    training = {**(head or {}), "data": data or {}, **(counts or {}), "history": history,
                "torch": torch.__version__, "python": platform.python_version(),
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                **(tail or {"device": model_device(model).type})}
    save_model(path, model, arch=arch, arch_kwargs=arch_kwargs, preprocess=preprocess, class_names=class_names,
               **meta, training=training, seed=seed, metrics=metrics)
    return TrainResult(Path(path), metrics.get("best_epoch"), history, report)
