"""Training the screening CNN (Ke et al. 2018, §2.1.3, §3.4; fv5080 recipe).

SGD with momentum 0.9 and weight decay 5e-4; the learning rate falls
exponentially from 0.1 to 1e-4 over the epochs (``10^-(1 + 3(e-1)/(E-1))``);
each epoch is ``batches_per_epoch`` class-balanced mini-batches of randomly
shifted crops; the epoch with the best validation score is kept.  A
checkpoint after every epoch lets an interrupted run resume.

``TrainConfig(optimizer="adam")`` uses Adam instead (Nawaz et al. 2022 §3.5:
Adam with an exponentially decaying learning rate), and
:func:`train_on_arrays` trains any registered architecture on preprocessed
inputs held in memory (the DiffraNet-class AlexNet benchmark).
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
from diffscreen.io.atomic import temporary_path
from diffscreen.models import get_model, save_model
from diffscreen.models.decision import decide
from diffscreen.preprocess import PreprocessConfig, Preprocessor
from diffscreen.train.data import FrameDataset, Sample
from diffscreen.train.sampler import ClassBalancedSampler

__all__ = ["TrainConfig", "TrainResult", "learning_rate", "train_model", "train_on_arrays", "make_optimizer",
           "dihedral_augment"]

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
        SGD with momentum (Ke, default) or Adam (Nawaz §3.5; ``momentum``
        is then unused and ``weight_decay`` is Adam's L2 term).
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


def make_optimizer(model, config: TrainConfig):
    """The optimiser ``config.optimizer`` names, at ``config.lr_start``."""
    if config.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=config.lr_start, weight_decay=config.weight_decay)
    return torch.optim.SGD(
        model.parameters(), lr=config.lr_start, momentum=config.momentum, weight_decay=config.weight_decay
    )


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
    dev = next(model.parameters()).device
    for x, y in loader:
        probs.append(torch.softmax(model(x.to(dev)), 1).cpu().numpy())
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
    ddp="auto",
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
    ddp : "auto", DDPContext or None
        Data-parallel training (:mod:`diffscreen.train.distributed`):
        "auto" joins the processes torchrun started (``WORLD_SIZE`` > 1);
        every rank then computes ``batch_size / world_size`` frames of each
        class-balanced batch, gradients are averaged, and rank 0 alone
        validates, logs and writes the checkpoint and model file
        (``training.distributed`` in its metadata).  None: one process.

    Returns
    -------
    TrainResult

    Raises
    ------
    ConfigError
        Empty training set, a checkpoint from a different run, or (DDP) a
        batch size that is not a multiple of the number of processes.
    """
    from diffscreen.train import distributed

    ctx = distributed.from_env() if ddp == "auto" else ddp
    try:
        return _train_model(train, val, out_path, config=config, preprocess=preprocess, class_names=class_names,
                            test=test, data_description=data_description, resume=resume, progress=progress, log=log,
                            ctx=ctx)
    finally:
        if ctx is not None and ctx.owned:
            ctx.close()


def _train_model(train, val, out_path, *, config, preprocess, class_names, test, data_description, resume, progress,
                 log, ctx) -> TrainResult:
    from diffscreen.train import distributed

    root = ctx is None or ctx.is_root
    if not root:  # only rank 0 talks
        progress, log = None, (lambda *a, **k: None)
    device = ctx.device if ctx is not None else torch.device("cpu")
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
    arch_kwargs.update(cfg.arch_kwargs)
    model = get_model(cfg.arch, **arch_kwargs).to(device)
    net = model if ctx is None else ctx.wrap(model)  # DDP: gradients averaged over the ranks
    opt = make_optimizer(model, cfg)
    pre = Preprocessor(pcfg)
    fingerprint = _fingerprint(train) + _fingerprint(val)
    run_id = {"config": asdict(cfg), "preprocess": pcfg.to_dict(), "data": fingerprint}

    start_epoch, history, best = 1, [], {"score": -math.inf, "epoch": 0, "state": None}
    if resume and ckpt_path.exists():
        ck = torch.load(ckpt_path, weights_only=True, map_location=device)
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
    local_batch = cfg.batch_size
    if ctx is not None:  # rank r takes the r-th slice of every batch
        sampler = distributed.ShardedBatchSampler(sampler, cfg.batch_size, ctx.rank, ctx.world_size)
        local_batch = sampler.per_rank
    train_loader = DataLoader(FrameDataset(train, pre), batch_size=local_batch, sampler=sampler, **loader_kw)
    val_loader = DataLoader(FrameDataset(val, pre), batch_size=cfg.batch_size, **loader_kw) if val and root else None

    for epoch in range(start_epoch, cfg.epochs + 1):
        t0 = time.time()
        lr = learning_rate(epoch, cfg)
        for g in opt.param_groups:
            g["lr"] = lr
        sampler.set_epoch(epoch)
        model.train()
        tot_loss, tot_ok, tot_n = 0.0, 0, 0
        for b, (x, y) in enumerate(train_loader):
            x, y = x.to(device), y.to(device)
            opt.zero_grad(set_to_none=True)
            logits = net(x)
            loss = F.cross_entropy(logits, y)  # log-softmax + NLL (fv5080)
            loss.backward()
            opt.step()
            tot_loss += float(loss.detach()) * len(y)
            tot_ok += int((logits.argmax(1) == y).sum())
            tot_n += len(y)
            if progress:
                progress(epoch, b + 1, cfg.batches_per_epoch)
        if ctx is not None:  # loss and accuracy over the whole batches of all ranks
            tot_loss, tot_ok, tot_n = ctx.sum([tot_loss, tot_ok, tot_n])
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
        if improved and root:  # (DDP: only rank 0 keeps the best state)
            best = {"score": score, "epoch": epoch, "state": {k: v.clone() for k, v in model.state_dict().items()}}
        log(
            f"epoch {epoch}/{cfg.epochs}  lr {lr:.2e}  loss {rec['train_loss']:.4f}  "
            f"train acc {rec['train_accuracy']:.3f}  val bal. acc {score:.3f}{'  *' if improved else ''}  "
            f"({rec['seconds']:.0f} s)"
        )
        if not root:
            continue
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

    if ctx is not None:
        _ddp_check(ctx, model)
        if not root:
            ctx.barrier()  # rank 0 writes the model file meanwhile
            return TrainResult(out_path, ctx.broadcast(None), history, None)
    model.load_state_dict(best["state"])
    model.eval().cpu()
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
            "distributed": ctx.describe() if ctx is not None else {"world_size": 1},
        },
        seed=cfg.seed,
        metrics=metrics,
    )
    ckpt_path.unlink(missing_ok=True)
    if ctx is not None:
        ctx.barrier()
        ctx.broadcast(best["epoch"])
    return TrainResult(out_path, best["epoch"], history, test_report)


def _ddp_check(ctx, model) -> None:
    """Debugging aid: with ``DIFFSCREEN_DDP_CHECKSUM_DIR`` set, each rank writes a checksum of its
    parameters after the last epoch to ``rank<r>.sha256`` there (they must all be equal)."""
    import os

    from diffscreen.train.distributed import parameter_checksum

    folder = os.environ.get("DIFFSCREEN_DDP_CHECKSUM_DIR")
    if folder:
        Path(folder, f"rank{ctx.rank}.sha256").write_text(parameter_checksum(model) + "\n")


def dihedral_augment(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Each frame of a batch ``(B, C, S, S)`` in one of its 8 flips/rotations by 90°, drawn at random.

    A diffraction pattern's Bragg spots look alike in all eight, so this
    multiplies the variety of a small training set without storing copies.
    """
    out = np.empty_like(x)
    for b, k in enumerate(rng.integers(0, 8, len(x))):
        f = x[b, :, :, ::-1] if k >= 4 else x[b]
        out[b] = np.rot90(f, k % 4, axes=(1, 2))
    return out


def train_on_arrays(
    x_train,
    y_train,
    out_path,
    *,
    class_names,
    preprocess: PreprocessConfig,
    config: TrainConfig | None = None,
    x_val=None,
    y_val=None,
    data_description: dict | None = None,
    augment=None,
    log=print,
) -> TrainResult:
    """Train a registered architecture on preprocessed inputs held in memory.

    Each epoch is ``batches_per_epoch`` class-balanced mini-batches
    (:class:`~diffscreen.train.sampler.ClassBalancedSampler`, no crop
    shifts: the inputs are already cropped); the learning rate decays
    exponentially from ``lr_start`` to ``lr_end`` (:func:`learning_rate`);
    the epoch with the best validation accuracy (over all classes) is kept.

    Parameters
    ----------
    x_train : (N, 1, S, S) float16/float32 ndarray
        Preprocessed inputs (not modified).
    y_train : (N,) int ndarray
        Class indices into ``class_names``.
    out_path : str or Path
        Model file to write (``.safetensors``, with metadata).
    class_names : sequence of str
    preprocess : PreprocessConfig
        The recipe that produced the inputs (stored in the model file).
    config : TrainConfig
        ``arch``, ``arch_kwargs``, ``optimizer``, ``epochs``,
        ``batches_per_epoch``, ``batch_size``, learning rates, ``seed``,
        ``threads`` are used.
    x_val, y_val : arrays, optional
        Validation set for model selection (default: keep the last epoch).
    data_description : dict, optional
    augment : callable, optional
        ``augment(xb, rng) -> xb``: applied to every training mini-batch
        ``(B, 1, S, S)`` float32 with a generator seeded from ``config.seed``
        (e.g. :func:`dihedral_augment`), so augmented copies never need to
        be held in memory.
    log : callable

    Returns
    -------
    TrainResult

    Raises
    ------
    ConfigError
        Empty or mismatched arrays, or labels outside the classes.
    """
    cfg = config or TrainConfig(optimizer="adam")
    aug_rng = np.random.default_rng([cfg.seed, 7])
    xt = np.asarray(x_train)
    yt = np.asarray(y_train, dtype=np.int64)
    if xt.ndim != 4 or len(xt) == 0 or len(xt) != len(yt):
        raise ConfigError(f"x_train must be (N, C, S, S) with N = len(y_train) > 0, got {xt.shape} and {yt.shape}")
    if yt.min() < 0 or yt.max() >= len(class_names):
        raise ConfigError(f"labels must be in 0..{len(class_names) - 1}")
    torch.set_num_threads(max(1, cfg.threads))
    torch.manual_seed(cfg.seed)
    arch_kwargs = {"num_classes": len(class_names), "input_size": int(xt.shape[-1]), **cfg.arch_kwargs}
    if cfg.arch == "ke2018":
        arch_kwargs.setdefault("first_kernel", cfg.first_kernel)
    model = get_model(cfg.arch, **arch_kwargs)
    opt = make_optimizer(model, cfg)
    sampler = ClassBalancedSampler(yt, cfg.batches_per_epoch * cfg.batch_size, max_shift=0, seed=cfg.seed)
    history, best = [], {"score": -math.inf, "epoch": 0, "state": None}

    @torch.inference_mode()
    def accuracy(xa, ya):
        model.eval()
        pred = []
        for i in range(0, len(xa), 64):
            pred.append(model(torch.from_numpy(np.asarray(xa[i : i + 64], dtype=np.float32))).argmax(1).numpy())
        return float((np.concatenate(pred) == ya).mean())

    for epoch in range(1, cfg.epochs + 1):
        t0 = time.time()
        lr = learning_rate(epoch, cfg)
        for g in opt.param_groups:
            g["lr"] = lr
        sampler.set_epoch(epoch)
        items = sampler.draw()[:, 0]
        model.train()
        tot_loss, tot_ok, tot_n = 0.0, 0, 0
        for b in range(cfg.batches_per_epoch):
            idx = items[b * cfg.batch_size : (b + 1) * cfg.batch_size]
            xa = np.asarray(xt[idx], dtype=np.float32)
            if augment is not None:
                xa = augment(xa, aug_rng)
            xb = torch.from_numpy(np.ascontiguousarray(xa))
            yb = torch.from_numpy(yt[idx])
            opt.zero_grad(set_to_none=True)
            logits = model(xb)
            loss = F.cross_entropy(logits, yb)
            loss.backward()
            opt.step()
            tot_loss += float(loss.detach()) * len(yb)
            tot_ok += int((logits.argmax(1) == yb).sum())
            tot_n += len(yb)
        score = accuracy(x_val, np.asarray(y_val)) if x_val is not None and len(x_val) else float("nan")
        rec = {
            "epoch": epoch,
            "lr": lr,
            "train_loss": tot_loss / tot_n,
            "train_accuracy": tot_ok / tot_n,
            "val_accuracy": score,
            "seconds": time.time() - t0,
        }
        history.append(rec)
        improved = math.isnan(score) or score >= best["score"]
        if improved:
            best = {"score": score, "epoch": epoch, "state": {k: v.clone() for k, v in model.state_dict().items()}}
        log(
            f"epoch {epoch}/{cfg.epochs}  lr {lr:.2e}  loss {rec['train_loss']:.4f}  "
            f"train acc {rec['train_accuracy']:.3f}  val acc {score:.3f}{'  *' if improved else ''}  "
            f"({rec['seconds']:.0f} s)"
        )
    model.load_state_dict(best["state"])
    model.eval()
    save_model(
        out_path,
        model,
        arch=cfg.arch,
        arch_kwargs={k: (list(v) if isinstance(v, tuple) else v) for k, v in arch_kwargs.items()},
        preprocess=preprocess,
        class_names=class_names,
        training={
            "config": asdict(cfg),
            "data": data_description or {},
            "n_train": int(len(xt)),
            "n_val": int(0 if x_val is None else len(x_val)),
            "history": history,
            "torch": torch.__version__,
            "python": platform.python_version(),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        },
        seed=cfg.seed,
        metrics={"best_epoch": best["epoch"], "val_accuracy": best["score"]},
    )
    return TrainResult(Path(out_path), best["epoch"], history, None)
