"""Training the screening CNN (Ke et al. 2018, §2.1.3, §3.4; fv5080 recipe).

SGD with momentum 0.9 and weight decay 5e-4; the learning rate falls
exponentially from 0.1 to 1e-4 over the epochs (``10^-(1 + 3(e-1)/(E-1))``);
each epoch is ``batches_per_epoch`` class-balanced mini-batches of randomly
shifted crops; the epoch with the best validation score is kept.  A
checkpoint after every epoch lets an interrupted run resume.
"""

from __future__ import annotations

import hashlib
import json
import math
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from diffscreen.errors import ConfigError
from diffscreen.evaluate import evaluate_labels
from diffscreen.io._atomic import temporary_path
from diffscreen.models import get_model, save_model
from diffscreen.models.decision import decide
from diffscreen.preprocess import PreprocessConfig, Preprocessor
from diffscreen.train.data import FrameDataset, Sample
from diffscreen.train.sampler import ClassBalancedSampler

__all__ = ["TrainConfig", "TrainResult", "learning_rate", "train_model"]


@dataclass
class TrainConfig:
    """Training hyper-parameters; defaults are the paper's (ANCHORS.md).

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

    def __post_init__(self):
        for name in ("epochs", "batches_per_epoch", "batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not (self.lr_start > 0 and self.lr_end > 0):
            raise ConfigError("learning rates must be > 0")


def learning_rate(epoch: int, config: TrainConfig) -> float:
    """Learning rate of 1-based ``epoch``: exponential from ``lr_start`` to ``lr_end``.

    With the defaults this is ``10^-(1 + 3(epoch-1)/(epochs-1))`` (fv5080).
    """
    if config.epochs == 1:
        return config.lr_start
    f = (epoch - 1) / (config.epochs - 1)
    return float(10 ** (math.log10(config.lr_start) + f * (math.log10(config.lr_end) - math.log10(config.lr_start))))


@dataclass
class TrainResult:
    """What :func:`train_model` produced.

    Attributes
    ----------
    model_path : Path
    best_epoch : int
    history : list of dict
        Per epoch: ``epoch``, ``lr``, ``train_loss``, ``train_accuracy``,
        ``val_score`` and ``seconds``.
    test_report : EvaluationReport or None
    """

    model_path: Path
    best_epoch: int
    history: list = field(default_factory=list)
    test_report: object = None


def _fingerprint(samples) -> str:
    h = hashlib.sha256()
    for s in samples:
        h.update(f"{s.source}|{s.index}|{s.label}\n".encode())
    return h.hexdigest()[:16]


@torch.inference_mode()
def _predict(model, loader) -> tuple[np.ndarray, np.ndarray]:
    model.eval()
    probs, ys = [], []
    for x, y in loader:
        probs.append(torch.softmax(model(x), 1).numpy())
        ys.append(y.numpy())
    if not probs:
        return np.zeros((0, 3)), np.zeros(0, int)
    return np.concatenate(probs), np.concatenate(ys)


def _score(model, loader, class_names):
    """Validation score: balanced accuracy of the keep decision (hit-or-maybe vs miss)."""
    probs, ys = _predict(model, loader)
    if len(ys) == 0:
        return float("nan"), None
    _, pred = decide(probs, class_names)
    true = [class_names[i] for i in ys]
    rep = evaluate_labels(true, pred, class_names)
    return rep.metrics["balanced_accuracy"], rep


def train_model(
    train: list[Sample],
    val: list[Sample],
    out_path,
    *,
    config: TrainConfig | None = None,
    preprocess: PreprocessConfig | None = None,
    class_names=("hit", "maybe", "miss"),
    test: list[Sample] | None = None,
    data_description: dict | None = None,
    resume: bool = True,
    progress=None,
    log=print,
) -> TrainResult:
    """Train a screening CNN and write the best-validation model file.

    Parameters
    ----------
    train, val : list of Sample
        Training and validation frames (``val`` may be empty: the last epoch
        is kept).
    out_path : str or Path
        Model file to write (``.safetensors``).  The checkpoint goes beside
        it as ``<out_path>.ckpt`` and is removed at the end.
    config : TrainConfig
    preprocess : PreprocessConfig
    class_names : sequence of str
    test : list of Sample, optional
        Held-out frames scored with the best model; metrics go in the file.
    data_description : dict, optional
        Stored in the model file as the description of the training data.
    resume : bool
        Continue from ``<out_path>.ckpt`` if it exists and matches this run.
    progress : callable, optional
        ``progress(epoch, batch, n_batches)`` after every batch.
    log : callable
        Receives one line of text per epoch.

    Returns
    -------
    TrainResult

    Raises
    ------
    ConfigError
        Empty training set, or a checkpoint from a different run.
    """
    cfg = config or TrainConfig()
    pcfg = preprocess or PreprocessConfig()
    if not train:
        raise ConfigError("the training set is empty")
    out_path = Path(out_path)
    ckpt_path = out_path.with_name(out_path.name + ".ckpt")
    torch.set_num_threads(max(1, cfg.threads))
    torch.manual_seed(cfg.seed)
    arch_kwargs = {"num_classes": len(class_names), "input_size": pcfg.out_size}
    if cfg.arch == "ke2018":
        arch_kwargs["first_kernel"] = cfg.first_kernel
    model = get_model(cfg.arch, **arch_kwargs)
    opt = torch.optim.SGD(
        model.parameters(), lr=cfg.lr_start, momentum=cfg.momentum, weight_decay=cfg.weight_decay
    )
    pre = Preprocessor(pcfg)
    fingerprint = _fingerprint(train) + _fingerprint(val)
    run_id = {"config": asdict(cfg), "preprocess": pcfg.to_dict(), "data": fingerprint}

    start_epoch, history, best = 1, [], {"score": -math.inf, "epoch": 0, "state": None}
    if resume and ckpt_path.exists():
        ck = torch.load(ckpt_path, weights_only=True)
        if json.loads(ck["run_id"]) != run_id:
            raise ConfigError(
                "a checkpoint from a different training run exists; remove it or pass --no-resume",
                path=ckpt_path,
            )
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        start_epoch = int(ck["epoch"]) + 1
        history = json.loads(ck["history"])
        best = {"score": float(ck["best_score"]), "epoch": int(ck["best_epoch"]), "state": ck["best_state"]}
        log(f"resuming from {ckpt_path} after epoch {start_epoch - 1}")

    labels = [s.label for s in train]
    sampler = ClassBalancedSampler(
        labels, cfg.batches_per_epoch * cfg.batch_size, max_shift=pcfg.max_shift, seed=cfg.seed
    )
    loader_kw = {"num_workers": cfg.workers, "persistent_workers": cfg.workers > 0}
    train_loader = DataLoader(FrameDataset(train, pre), batch_size=cfg.batch_size, sampler=sampler, **loader_kw)
    val_loader = DataLoader(FrameDataset(val, pre), batch_size=cfg.batch_size, **loader_kw) if val else None

    for epoch in range(start_epoch, cfg.epochs + 1):
        t0 = time.time()
        lr = learning_rate(epoch, cfg)
        for g in opt.param_groups:
            g["lr"] = lr
        sampler.set_epoch(epoch)
        model.train()
        tot_loss, tot_ok, tot_n = 0.0, 0, 0
        for b, (x, y) in enumerate(train_loader):
            opt.zero_grad(set_to_none=True)
            logits = model(x)
            loss = F.cross_entropy(logits, y)  # log-softmax + NLL (fv5080)
            loss.backward()
            opt.step()
            tot_loss += float(loss.detach()) * len(y)
            tot_ok += int((logits.argmax(1) == y).sum())
            tot_n += len(y)
            if progress:
                progress(epoch, b + 1, cfg.batches_per_epoch)
        score = _score(model, val_loader, class_names)[0] if val_loader else float("nan")
        rec = {
            "epoch": epoch,
            "lr": lr,
            "train_loss": tot_loss / tot_n,
            "train_accuracy": tot_ok / tot_n,
            "val_score": score,
            "seconds": time.time() - t0,
        }
        history.append(rec)
        improved = not val_loader or score > best["score"]
        if improved:
            best = {"score": score, "epoch": epoch, "state": {k: v.clone() for k, v in model.state_dict().items()}}
        log(
            f"epoch {epoch}/{cfg.epochs}  lr {lr:.2e}  loss {rec['train_loss']:.4f}  "
            f"train acc {rec['train_accuracy']:.3f}  val bal. acc {score:.3f}{'  *' if improved else ''}  "
            f"({rec['seconds']:.0f} s)"
        )
        with temporary_path(ckpt_path) as tmp:
            torch.save(
                {
                    "run_id": json.dumps(run_id),
                    "epoch": epoch,
                    "model": model.state_dict(),
                    "optimizer": opt.state_dict(),
                    "history": json.dumps(history),
                    "best_score": best["score"],
                    "best_epoch": best["epoch"],
                    "best_state": best["state"],
                },
                tmp,
            )

    model.load_state_dict(best["state"])
    model.eval()
    metrics = {"best_epoch": best["epoch"], "val_balanced_accuracy": best["score"]}
    test_report = None
    if test:
        test_loader = DataLoader(FrameDataset(test, pre), batch_size=cfg.batch_size, **loader_kw)
        _, test_report = _score(model, test_loader, class_names)
        metrics["test"] = test_report.to_dict()
    save_model(
        out_path,
        model,
        arch=cfg.arch,
        arch_kwargs=arch_kwargs,
        preprocess=pcfg,
        class_names=class_names,
        training={
            "config": asdict(cfg),
            "data": data_description or {},
            "n_train": len(train),
            "n_val": len(val),
            "n_test": len(test or []),
            "history": history,
            "torch": torch.__version__,
            "python": platform.python_version(),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        },
        seed=cfg.seed,
        metrics=metrics,
    )
    ckpt_path.unlink(missing_ok=True)
    return TrainResult(out_path, best["epoch"], history, test_report)
