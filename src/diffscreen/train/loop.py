"""Training the screening CNN (Ke et al. 2018, §2.1.3, §2.3, §3.4; fv5080): recipes over
:func:`~diffscreen.train.engine.fit`.

:func:`train_model`: SGD (momentum 0.9, weight decay 5e-4), learning rate falling exponentially from 0.1 to 1e-4,
class-balanced batches of randomly shifted crops read from the files, the best validation epoch kept, a checkpoint
per epoch.  :func:`train_on_arrays`: any registered architecture on preprocessed inputs in memory (e.g. AlexNet
with Adam, Nawaz et al. 2022 §3.5).
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict
from pathlib import Path

import numpy as np
from torch.utils.data import DataLoader

from diffscreen.errors import ConfigError
from diffscreen.evaluate import evaluate_labels
from diffscreen.models.batch import predict_arrays
from diffscreen.models.decision import decide
from diffscreen.preprocess import PreprocessConfig, Preprocessor
from diffscreen.train.data import FrameDataset, Sample
from diffscreen.train.engine import (Checkpoint, ClassBalancedSampler, TrainConfig, TrainResult,
                                     check_arrays, fit, fit_balanced, learning_rate, make_optimizer,
                                     new_model, save_trained, softmax_hooks, softmax_step, training_device)

__all__ = ["TrainConfig", "TrainResult", "learning_rate", "train_model", "train_on_arrays", "make_optimizer",
           "dihedral_augment"]


def _fingerprint(samples) -> str:
    h = hashlib.sha256()
    for s in samples:
        h.update(f"{s.source}|{s.index}|{s.label}\n".encode())
    return h.hexdigest()[:16]


def _score(model, loader, class_names):
    """Validation score: balanced accuracy of the keep decision (hit-or-maybe vs miss), and the report."""
    probs, ys = [], []
    for x, y in loader:
        probs.append(predict_arrays(model, x, batch_size=len(x)))
        ys.append(y.numpy())
    if not ys:
        return float("nan"), None
    _, pred = decide(np.concatenate(probs), class_names)
    rep = evaluate_labels([class_names[i] for i in np.concatenate(ys)], pred, class_names)
    return rep.metrics["balanced_accuracy"], rep


def train_model(train: list[Sample], val: list[Sample], out_path, *, config: TrainConfig | None = None,
                preprocess: PreprocessConfig | None = None, class_names=("hit", "maybe", "miss"),
                test: list[Sample] | None = None, data_description: dict | None = None, resume: bool = True,
                progress=None, log=print, ddp="auto", device=None) -> TrainResult:
    """Train a screening CNN and write the best-validation model file.

    Parameters
    ----------
    train, val : list of Sample
        Training and validation frames (``val`` may be empty: the last epoch is kept).
    out_path : str or Path
        Model file to write (``.safetensors``); the checkpoint ``<out_path>.ckpt`` is removed at the end.
    config, preprocess, class_names : TrainConfig, PreprocessConfig, sequence of str
    test : list of Sample, optional
        Held-out frames scored with the best model; metrics go in the file.
    data_description : dict, optional
        Stored in the model file.
    resume : bool
        Continue from ``<out_path>.ckpt`` if it exists and matches this run.
    progress, log : callable, optional
        ``progress(epoch, batch, n_batches)`` after every batch; ``log`` gets a line per epoch.
    ddp : "auto", DDPContext or None
        Data-parallel training (:mod:`diffscreen.train.distributed`): "auto" joins the processes torchrun started;
        each rank computes ``batch_size / world_size`` frames of every batch, gradients are averaged, rank 0 alone
        validates, logs and writes files.  None: one process.
    device : torch.device or str, optional
        Where a one-process run trains (default: the CPU), e.g. ``cuda``: one GPU, no torchrun needed.  Under
        torchrun each rank trains on its DDP context's device (``cuda:LOCAL_RANK`` with NCCL; with ``device`` cpu,
        Gloo on the CPU).

    Returns
    -------
    TrainResult

    Raises
    ------
    ConfigError
        Empty training set, a checkpoint from a different run, or (DDP) a batch size that is not a multiple of the
        number of processes.
    """
    from diffscreen.train import distributed

    ctx = distributed.from_env(device=device) if ddp == "auto" else ddp
    try:
        root = ctx is None or ctx.is_root
        if not root:  # only rank 0 talks
            progress, log = None, (lambda *a, **k: None)
        device = ctx.device if ctx is not None else training_device(device)
        cfg = config or TrainConfig()
        pcfg = preprocess or PreprocessConfig()
        if not train:
            raise ConfigError("the training set is empty")
        out_path = Path(out_path)
        ckpt_path = out_path.with_name(out_path.name + ".ckpt")
        model, arch_kwargs = new_model(cfg, len(class_names), pcfg.out_size)
        model.to(device)
        net = model if ctx is None else ctx.wrap(model)  # DDP: gradients averaged over the ranks
        opt = make_optimizer(model, cfg)
        pre = Preprocessor(pcfg)
        run_id = {"config": asdict(cfg), "preprocess": pcfg.to_dict(),
                  "data": _fingerprint(train) + _fingerprint(val)}
        balanced = ClassBalancedSampler([s.label for s in train], cfg.batches_per_epoch * cfg.batch_size,
                                        max_shift=pcfg.max_shift, seed=cfg.seed)
        rank, world = (ctx.rank, ctx.world_size) if ctx is not None else (0, 1)
        sampler = distributed.ShardedBatchSampler(balanced, cfg.batch_size, rank, world)  # rank r's slice of a batch
        loader_kw = {"num_workers": cfg.workers, "persistent_workers": cfg.workers > 0}
        train_loader = DataLoader(FrameDataset(train, pre), batch_size=sampler.per_rank, sampler=sampler, **loader_kw)
        val_loader = (DataLoader(FrameDataset(val, pre), batch_size=cfg.batch_size, **loader_kw)
                      if val and root else None)

        def batches(epoch):
            sampler.set_epoch(epoch)
            return train_loader

        def loss(batch):
            return softmax_step(net, batch[0].to(device), batch[1].to(device))

        def score():
            return _score(model, val_loader, class_names)[0] if val_loader else float("nan")

        history, best = fit(model, opt, batches=batches, loss=loss, ties_win=False,
                            checkpoint=Checkpoint(ckpt_path, run_id, resume), progress=progress,
                            n_batches=cfg.batches_per_epoch, log=log, ctx=ctx,
                            **softmax_hooks(cfg, score, "val_score", "val bal. acc"))
        result = TrainResult(out_path, best.epoch, history, None)
        if root:
            model.cpu()
            metrics = {"best_epoch": best.epoch, "val_balanced_accuracy": best.score}
            report = None
            if test:
                _, report = _score(model, DataLoader(FrameDataset(test, pre), batch_size=cfg.batch_size, **loader_kw),
                                   class_names)
                metrics["test"] = report.to_dict()
            result = save_trained(out_path, model, arch=cfg.arch, arch_kwargs=arch_kwargs, preprocess=pcfg,
                                  class_names=class_names, history=history, seed=cfg.seed, metrics=metrics,
                                  data=data_description, head={"config": asdict(cfg)},
                                  counts={"n_train": len(train), "n_val": len(val), "n_test": len(test or [])},
                                  tail={"distributed": ctx.describe() if ctx is not None
                                        else {"world_size": 1, "device": device.type}},
                                  report=report)
            ckpt_path.unlink(missing_ok=True)
        if ctx is not None:  # the other ranks wait for rank 0 here
            result.best_epoch = ctx.broadcast(best.epoch)
        return result
    finally:
        if ctx is not None and ctx.owned:
            ctx.close()


def dihedral_augment(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Each frame of a batch ``(B, C, S, S)`` in one of its 8 flips/rotations by 90°, drawn at random.

    A diffraction pattern's Bragg spots look alike in all eight, so this multiplies the variety of a small
    training set without storing copies.
    """
    out = np.empty_like(x)
    for b, k in enumerate(rng.integers(0, 8, len(x))):
        f = x[b, :, :, ::-1] if k >= 4 else x[b]
        out[b] = np.rot90(f, k % 4, axes=(1, 2))
    return out


def train_on_arrays(x_train, y_train, out_path, *, class_names, preprocess: PreprocessConfig,
                    config: TrainConfig | None = None, x_val=None, y_val=None, data_description: dict | None = None,
                    augment=None, log=print, device=None) -> TrainResult:
    """Train a registered architecture on preprocessed inputs held in memory.

    Class-balanced mini-batches without crop shifts, the exponential schedule
    (:func:`~diffscreen.train.engine.fit_balanced`); the epoch with the best validation accuracy (over all
    classes) is kept.

    Parameters
    ----------
    x_train, y_train : (N, 1, S, S) float16/float32 ndarray, (N,) int ndarray
        Preprocessed inputs (not modified) and class indices into ``class_names``.
    out_path : str or Path
        Model file to write, with ``preprocess`` (the inputs' recipe) and ``data_description``.
    class_names : sequence of str
    preprocess : PreprocessConfig
    config : TrainConfig
        Default ``TrainConfig(optimizer="adam")``; ``workers`` is unused.
    x_val, y_val : arrays, optional
        Validation set for model selection (default: keep the last epoch).
    data_description : dict, optional
    augment : callable, optional
        ``augment(xb, rng) -> xb`` on every ``(B, 1, S, S)`` float32 mini-batch, ``rng`` seeded from
        ``config.seed`` (e.g. :func:`dihedral_augment`).
    log : callable
    device : torch.device or str, optional
        Where the model trains (default: the CPU); the inputs stay in host memory and go there batch by batch.

    Returns
    -------
    TrainResult

    Raises
    ------
    ConfigError
        Empty or mismatched arrays, or labels outside the classes.
    """
    cfg = config or TrainConfig(optimizer="adam")
    xt, yt = check_arrays(x_train, y_train, len(class_names))
    if xt.ndim != 4:
        raise ConfigError(f"x_train must be (N, C, S, S), got {xt.shape}")
    model, arch_kwargs = new_model(cfg, len(class_names), xt.shape[-1])
    dev = training_device(device)
    model.to(dev)
    ya = None if y_val is None else np.asarray(y_val)

    def accuracy():
        if x_val is None or not len(x_val):
            return float("nan")
        return float((predict_arrays(model, x_val).argmax(1) == ya).mean())

    history, best = fit_balanced(model, make_optimizer(model, cfg), xt, yt, cfg, score=accuracy,
                                 val_key="val_accuracy", label="val acc", augment=augment, log=log)
    return save_trained(out_path, model, arch=cfg.arch, arch_kwargs=arch_kwargs, preprocess=preprocess,
                        class_names=class_names, history=history, seed=cfg.seed,
                        metrics={"best_epoch": best.epoch, "val_accuracy": best.score}, data=data_description,
                        head={"config": asdict(cfg)},
                        counts={"n_train": int(len(xt)), "n_val": int(0 if x_val is None else len(x_val))})
