"""Domain-adversarial training (DANN; Xie et al. 2022, §2.3.3, Fig. 4, Table 5, Fig. 10).

After Ganin & Lempitsky (2015) / Ganin et al. (2016, JMLR 17): one base, two heads.  The label head sees the
labelled *source* frames; the domain head sees source and unlabelled *target* features through a gradient reversal
layer (GRL: identity forward, gradient × ``−λ`` back), so the base learns features common to both experiments (Xie
Fig. 9).  Loss per step ``CE(label head, source labels) + BCE(domain head, both)``, ``λ_p = λ_max (2 / (1 +
exp(−10 p)) − 1)`` at training fraction ``p`` (Ganin et al. 2016 §5.2.2); both losses are logged per epoch (Xie
Fig. 10).  A recipe over :func:`~diffscreen.train.engine.fit`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from diffscreen.errors import ConfigError
from diffscreen.train.engine import (TrainConfig, TrainResult, balanced_batches, check_arrays, fit,
                                     learning_rate, make_optimizer, new_model,
                                     save_trained, scored, softmax_step, training_device)
from diffscreen.train.transfer import balance_groups, validation_score

__all__ = ["GradientReversal", "DomainClassifier", "ganin_lambda", "train_dann_on_arrays", "plot_dann_history",
           "DANN_DEFAULT", "DANN_FROM_MODEL"]

#: Default DANN settings: Adam 1e-3 → 1e-4, 20 epochs of 25 batches of 32 source + 32 target inputs.
DANN_DEFAULT = TrainConfig(optimizer="adam", epochs=20, batches_per_epoch=25, batch_size=32,
                           lr_start=1e-3, lr_end=1e-4, weight_decay=0.0)

#: Default DANN settings when starting from a trained model (``init_path``, e.g. the source-only CNN):
#: ten times lower rates (1e-4 → 1e-5), so that adaptation does not erase what the source training
#: learnt.  In the quick xie2022 benchmark (LO19 → L498, three seeds) these kept more target
#: hit-or-maybe frames than the source-only CNN at every seed; random initialisation, or the
#: initialised model at 1e-3, collapsed or lost recall (docs/benchmarks/xie2022_notes.md).
DANN_FROM_MODEL = replace(DANN_DEFAULT, lr_start=1e-4, lr_end=1e-5)


class _ReverseGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, lam):
        ctx.lam = float(lam)
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return -ctx.lam * grad, None


class GradientReversal(nn.Module):
    """Gradient reversal layer (Ganin & Lempitsky 2015; Xie §2.3.3 "GRL"): forward the identity, backward the
    gradient times ``−lambda_`` (a float set per step by the training loop)."""

    def __init__(self, lambda_: float = 1.0):
        super().__init__()
        self.lambda_ = float(lambda_)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` unchanged (any shape); its gradient comes back reversed and scaled."""
        return _ReverseGrad.apply(x, self.lambda_)

    def extra_repr(self) -> str:
        return f"lambda_={self.lambda_}"


class DomainClassifier(nn.Module):
    """Domain head: GRL → Linear(F, hidden) → ReLU → Dropout(0.5) → Linear(hidden, 1) (logit of "target");
    ``in_features`` F is the base's feature length (288 for KeCNN at 720, 128 for RWD1DCNN)."""

    def __init__(self, in_features: int, hidden: int = 64):
        super().__init__()
        self.grl = GradientReversal(0.0)
        self.net = nn.Sequential(nn.Linear(in_features, hidden), nn.ReLU(inplace=True), nn.Dropout(0.5),
                                 nn.Linear(hidden, 1))

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        """``(N, F)`` → ``(N,)`` domain logits."""
        return self.net(self.grl(feats)).squeeze(1)


def ganin_lambda(p: float, lambda_max: float = 1.0) -> float:
    """Ganin et al. (2016) schedule ``λ_max (2 / (1 + exp(−10 p)) − 1)`` for progress ``p`` in [0, 1]."""
    return float(lambda_max * (2.0 / (1.0 + math.exp(-10.0 * p)) - 1.0))


def train_dann_on_arrays(x_source, y_source, x_target, out_path, *, class_names, preprocess, config=None,
                         x_val=None, y_val=None, init_path=None, lambda_max: float = 1.0, augment=None,
                         data_description=None, domain_hidden: int = 64, log=print, device=None) -> TrainResult:
    """Train a classifier on a labelled source and an unlabelled target experiment (DANN, Xie §2.3.3).

    Each step takes a batch of ``config.batch_size`` source inputs balanced over hit-or-maybe against miss
    (:func:`~diffscreen.train.transfer.balance_groups`) and as many random target inputs through the base
    (``model.forward_features``); the source half goes to the label head (cross entropy), all of it to the
    :class:`DomainClassifier` (binary cross entropy, source 0 / target 1); λ follows :func:`ganin_lambda`.

    Parameters
    ----------
    x_source : (Ns, 1, S, S) float16/float32 ndarray
        Preprocessed labelled frames (rwd1d also takes ``(N, 1, S)`` row vectors).
    y_source : (Ns,) int ndarray
        Class indices into ``class_names``.
    x_target : (Nt, 1, S, S) ndarray
        Preprocessed unlabelled frames of the new experiment, same recipe.
    out_path : str or Path
        Model file to write: the plain classifier (base + label head), usable by ``screen``.
    class_names : sequence of str
    preprocess : PreprocessConfig
        Recipe that produced the inputs (stored in the model file).
    config : TrainConfig, optional
        Default :data:`DANN_DEFAULT`, or :data:`DANN_FROM_MODEL` with ``init_path``; ``workers`` unused.
    x_val, y_val : arrays, optional
        The epoch with the best :func:`~diffscreen.train.transfer.validation_score` is kept; without them the last
        (Xie §4: the plateaus of Fig. 10 show convergence, no target labels needed).
    init_path : str or Path, optional
        Start from this model file (e.g. the source-only model); its architecture wins over ``config.arch`` and
        its class names must equal ``class_names``.
    lambda_max, domain_hidden : float, int
        Final GRL weight; hidden units of the domain head.
    augment, data_description, log
        As :func:`~diffscreen.train.loop.train_on_arrays` (``augment`` sees source and target together).
    device : torch.device or str, optional
        Where the model and the domain head train (default: the CPU).

    Returns
    -------
    TrainResult
        ``history`` per epoch: ``epoch``, ``lr``, ``lambda``, ``label_loss``, ``domain_loss``,
        ``domain_accuracy``, ``train_accuracy``, ``val_balanced_accuracy``, ``seconds``.

    Raises
    ------
    ConfigError
        Malformed arrays or labels, source and target of different shapes, an architecture without
        ``forward_features``, ``classifier`` or ``num_features``, or an init model with other classes.
    ModelFileError
        ``init_path`` unreadable.
    """
    from diffscreen.models import load_model

    cfg = config or (DANN_DEFAULT if init_path is None else DANN_FROM_MODEL)
    names = tuple(class_names)
    xs, ys = check_arrays(x_source, y_source, len(names), "x_source")
    xt, _ = check_arrays(x_target, None, None, "x_target", labelled=False)
    if xs.shape[1:] != xt.shape[1:]:
        raise ConfigError(f"source inputs {xs.shape[1:]} and target inputs {xt.shape[1:]} differ in shape; "
                          "preprocess both with the same recipe")
    if x_val is not None:
        x_val, y_val = check_arrays(x_val, y_val, len(names), "x_val")
    torch.set_num_threads(max(1, cfg.threads))
    torch.manual_seed(cfg.seed)
    if init_path is not None:
        init = load_model(init_path)
        if tuple(init.class_names) != names:
            raise ConfigError(f"the init model's classes {list(init.class_names)} differ from {list(names)}",
                              path=init_path)
        model, arch, arch_kwargs = init.model, init.arch, dict(init.arch_kwargs)
    else:
        arch = cfg.arch
        model, arch_kwargs = new_model(cfg, len(names), xs.shape[-1])
    if not all(hasattr(model, a) for a in ("forward_features", "classifier", "num_features")):
        raise ConfigError(f"architecture {arch!r} lacks forward_features, classifier or num_features; DANN needs all")
    domain = DomainClassifier(int(model.num_features), domain_hidden)
    dev = training_device(device)
    model.to(dev)
    domain.to(dev)
    rng, aug_rng = np.random.default_rng([cfg.seed, 11]), np.random.default_rng([cfg.seed, 7])
    total = cfg.epochs * cfg.batches_per_epoch
    step = [0]

    def loss(idx):  # source batch idx and as many random target inputs, through the base together
        tdx = rng.integers(0, len(xt), len(idx))
        xa = np.concatenate([np.asarray(xs[idx], np.float32), np.asarray(xt[tdx], np.float32)])
        if augment is not None:
            xa = augment(xa, aug_rng)
        domain.grl.lambda_ = ganin_lambda(step[0] / max(1, total - 1), lambda_max)
        step[0] += 1
        feats = model.forward_features(torch.from_numpy(np.ascontiguousarray(xa)).to(dev))
        n = len(idx)
        l_label, stats = softmax_step(model.classifier, feats[:n], torch.from_numpy(ys[idx]).to(dev))
        dlog, dt = domain(feats), torch.cat([torch.zeros(n), torch.ones(n)]).to(dev)
        l_domain = F.binary_cross_entropy_with_logits(dlog, dt)
        return l_label + l_domain, {**stats, "domain_loss": float(l_domain.detach()) * 2 * n,
                                    "domain_ok": int(((dlog > 0).float() == dt).sum())}

    def row(s):
        n = s["n"]
        return {"lambda": domain.grl.lambda_, "label_loss": s["loss"] / n,
                "domain_loss": s["domain_loss"] / (2 * n), "domain_accuracy": s["domain_ok"] / (2 * n),
                "train_accuracy": s["ok"] / n}

    def line(r, improved):
        return (f"epoch {r['epoch']}/{cfg.epochs}  lr {r['lr']:.2e}  lambda {r['lambda']:.2f}  "
                f"label loss {r['label_loss']:.4f}  domain loss {r['domain_loss']:.4f}  "
                f"domain acc {r['domain_accuracy']:.3f}  val bal. acc {r['val_balanced_accuracy']:.3f}"
                f"{'  *' if improved else ''}")

    batches = balanced_batches(balance_groups(ys, names), cfg, cfg.seed)
    history, best = fit(model, make_optimizer(nn.ModuleList([model, domain]), cfg), epochs=cfg.epochs,
                        lr=lambda e: learning_rate(e, cfg), batches=batches, loss=loss, row=row,
                        validate=scored("val_balanced_accuracy", lambda: validation_score(model, x_val, y_val, names)),
                        line=line, train_mode=lambda: (model.train(), domain.train()), log=log)
    last = history[-1]
    return save_trained(
        out_path, model, arch=arch, arch_kwargs=arch_kwargs, preprocess=preprocess, class_names=names,
        history=history, seed=cfg.seed, data=data_description,
        metrics={"best_epoch": best.epoch, "val_balanced_accuracy": best.score,
                 "final_label_loss": last["label_loss"], "final_domain_loss": last["domain_loss"],
                 "final_domain_accuracy": last["domain_accuracy"]},
        head={"method": "dann", "source": "Xie et al. 2022 sec. 2.3.3, Fig. 4; Ganin et al. 2016",
              "config": asdict(replace(cfg, arch=arch)), "lambda_max": lambda_max, "domain_hidden": domain_hidden,
              "init_model": None if init_path is None else str(init_path)},
        counts={"n_source": int(len(xs)), "n_target": int(len(xt)), "n_val": int(0 if x_val is None else len(x_val))})


def plot_dann_history(history, path, *, title: str = "DANN training (Xie et al. 2022 Fig. 10)") -> Path:
    """Plot the label / domain loss and accuracy per epoch of a :func:`train_dann_on_arrays` ``history``
    (Xie Fig. 10) to the PNG ``path``, atomically; returns ``Path(path)``."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from diffscreen.io.atomic import temporary_path

    ep = [h["epoch"] for h in history]
    fig = Figure(figsize=(9, 3.4), dpi=100)
    FigureCanvasAgg(fig)
    accuracy = [("train_accuracy", "o-", "label accuracy (source)"), ("domain_accuracy", "s-", "domain accuracy")]
    if any(np.isfinite(h.get("val_balanced_accuracy", np.nan)) for h in history):
        accuracy.append(("val_balanced_accuracy", "^-", "validation bal. accuracy"))
    panels = ((("label_loss", "o-", "label loss (source)"), ("domain_loss", "s-", "domain loss")), accuracy)
    for k, curves in enumerate(panels):
        ax = fig.add_subplot(1, 2, k + 1)
        for key, style, label in curves:
            ax.plot(ep, [h[key] for h in history], style, label=label)
        ax.legend(fontsize=8)
    ax.axhline(0.5, color="grey", lw=0.8, ls=":")
    fig.axes[0].set(xlabel="epoch", ylabel="loss")
    ax.set(xlabel="epoch", ylabel="accuracy", ylim=(0, 1.02))
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    with temporary_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return Path(path)
