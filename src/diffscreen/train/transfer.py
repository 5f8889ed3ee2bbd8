"""Transfer learning from a trained model to a new experiment (Xie et al. 2022, §2.3.1, Fig. 3, Table 3).

Fig. 3: the convolutional base of a well-trained CNN, joined to a randomly initialised classifier, is trained on a
few labelled frames of the new experiment (Xie: 200, validated on 200) in two stages, each a recipe over
:func:`~diffscreen.train.engine.fit_balanced`: (1) the base frozen, only the classifier learns; (2) the top one or
two blocks unfrozen, at a lower learning rate.  "Frozen" is what Keras (the paper's framework) does: no gradient,
and BatchNorm layers of frozen blocks keep their running statistics.
"""

from __future__ import annotations

from dataclasses import asdict, replace

import numpy as np
import torch
from torch import nn

from diffscreen.errors import ConfigError
from diffscreen.evaluate.metrics import selection_accuracy
from diffscreen.models.batch import predict_arrays
from diffscreen.train.engine import (Best, TrainConfig, TrainResult, check_arrays, fit_balanced, make_optimizer,
                                     save_trained, training_device)

__all__ = ["freeze_base", "set_train_mode", "fit_arrays", "transfer_on_arrays", "FROZEN_DEFAULT", "UNFROZEN_DEFAULT",
           "validation_score", "balance_groups"]

#: Stage 1 (base frozen, only the new classifier learns): Adam, learning rate 1e-2 → 1e-3.
FROZEN_DEFAULT = TrainConfig(optimizer="adam", epochs=10, batches_per_epoch=20, batch_size=32,
                             lr_start=1e-2, lr_end=1e-3, weight_decay=0.0)
#: Stage 2 (top blocks unfrozen): Adam, 1e-4 → 1e-5 (the pretrained blocks move little).
UNFROZEN_DEFAULT = replace(FROZEN_DEFAULT, lr_start=1e-4, lr_end=1e-5)

_BN = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def freeze_base(model: nn.Module, unfreeze_blocks: int = 0) -> list[str]:
    """Freeze a model except its classifier head and the top ``unfreeze_blocks`` blocks (Xie Fig. 3).

    Parameters
    ----------
    model : torch.nn.Module
        With ``.features`` (convolutional blocks, bottom first) and ``.classifier`` (the head), as
        :class:`~diffscreen.models.KeCNN` and :class:`~diffscreen.models.rwd1d.RWD1DCNN`; every other parameter
        (e.g. an input normalisation) counts as base.  Train it in :func:`set_train_mode`.
    unfreeze_blocks : int
        0: stage 1 (only the head trains); 1 or 2: stage 2 (Xie: "unfreeze one or two top convolutional blocks").

    Returns
    -------
    list of str
        Names of the parameters left trainable (``requires_grad``).

    Raises
    ------
    ConfigError
        No ``features`` or ``classifier``, or ``unfreeze_blocks`` outside 0..number of blocks.
    """
    if not hasattr(model, "features") or not hasattr(model, "classifier"):
        raise ConfigError(f"{type(model).__name__} has no .features / .classifier; cannot freeze its base")
    n = len(model.features)
    if not 0 <= unfreeze_blocks <= n:
        raise ConfigError(f"unfreeze_blocks must be in 0..{n} (the model has {n} blocks), got {unfreeze_blocks}")
    train_mods = [model.classifier] + [model.features[i] for i in range(n - unfreeze_blocks, n)]
    trainable = {id(p) for m in train_mods for p in m.parameters()}
    for p in model.parameters():
        p.requires_grad_(id(p) in trainable)
    return [name for name, p in model.named_parameters() if p.requires_grad]


def set_train_mode(model: nn.Module) -> nn.Module:
    """``model.train()``, but BatchNorm layers whose parameters are all frozen stay in eval mode; returns ``model``."""
    model.train()
    for m in model.modules():
        if isinstance(m, _BN):
            ps = list(m.parameters())
            if ps and not any(p.requires_grad for p in ps):
                m.eval()
    return model


def validation_score(model, x_val, y_val, class_names=None) -> float:
    """:func:`~diffscreen.evaluate.metrics.selection_accuracy` of ``model`` on ``x_val`` ((N, 1, S, S) or
    (N, 1, S) float) against ``y_val`` ((N,) int); NaN without validation data."""
    if x_val is None or len(x_val) == 0:
        return float("nan")
    return selection_accuracy(predict_arrays(model, x_val), y_val, class_names)


def balance_groups(y, class_names=None) -> np.ndarray:
    """What the mini-batches are balanced over: the keep decision when there is a ``"miss"`` class.

    Xie et al. merge hit and maybe (§3.1).  With a few hundred labels the maybe class is small, and balancing over
    three classes would draw it as often as all misses, teaching a 2:1 prior for keeping a frame; balancing
    hit-or-maybe (in their natural ratio) against miss keeps the decision unbiased.

    Returns ``y != miss`` as (N,) int64 0/1 with a ``"miss"`` class in ``class_names``, else ``y`` ((N,) int).
    """
    y = np.asarray(y)
    if class_names is not None and "miss" in class_names:
        return (y != list(class_names).index("miss")).astype(np.int64)
    return y


def fit_arrays(model, x, y, config: TrainConfig, *, x_val=None, y_val=None, class_names=None, augment=None,
               stage=None, log=print, seed_offset: int = 0) -> tuple[list, Best]:
    """Train the trainable parameters of ``model`` on in-memory inputs with balanced batches (a stage of Fig. 3).

    Parameters
    ----------
    model : torch.nn.Module
        Trained in place (frozen parameters untouched, :func:`freeze_base`); left with the best epoch's weights.
    x, y : (N, 1, S, S) or (N, 1, S) float16/float32 ndarray, (N,) int ndarray
    config : TrainConfig
        ``workers``, ``threads``, ``arch`` are unused.
    x_val, y_val : arrays, optional
        Model selection by :func:`validation_score`; without them the last epoch is kept.
    class_names : sequence of str, optional
        With a ``"miss"`` class, batches are balanced over, and epochs scored on, the keep decision
        (:func:`balance_groups`, :func:`validation_score`); otherwise over the classes.
    augment, log
        As :func:`~diffscreen.train.loop.train_on_arrays`.
    stage : str, optional
        Recorded in every history row.
    seed_offset : int
        Added to ``config.seed`` for batch drawing (distinct stages draw distinct batches).

    Returns
    -------
    history : list of dict
        Per epoch ``epoch``, ``stage``, ``lr``, ``train_loss``, ``train_accuracy``, ``val_balanced_accuracy``,
        ``seconds``.
    best : Best
        Score, epoch, weights and validation columns of the kept epoch.

    Raises
    ------
    ConfigError
        No trainable parameters.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ConfigError("no trainable parameters")
    return fit_balanced(
        model, make_optimizer(nn.ParameterList(params), config), x, y, config,
        score=lambda: validation_score(model, x_val, y_val, class_names), val_key="val_balanced_accuracy",
        label="val bal. acc", groups=balance_groups(y, class_names), seed=config.seed + seed_offset,
        augment=augment, train_mode=lambda: set_train_mode(model), tag={"stage": stage},
        prefix=f"{stage} " if stage else "", seconds=False, log=log)


def transfer_on_arrays(init_path, x_train, y_train, out_path, *, x_val=None, y_val=None, frozen=None,
                       unfrozen=None, unfreeze_blocks: int = 2, augment=None, data_description=None,
                       reset_head: bool = True, log=print, device=None) -> TrainResult:
    """Fine-tune a trained model on a few labelled inputs of a new experiment (Xie §2.3.1, Fig. 3).

    Stage 1 trains a (by default new) classifier on the frozen base; stage 2 unfreezes the top ``unfreeze_blocks``
    blocks and goes on from stage 1's best epoch.  Stage 2's best epoch by :func:`validation_score` is kept (the
    last without validation data).

    Parameters
    ----------
    init_path : str or Path
        The trained source model (an architecture with ``.features`` and ``.classifier``: ke2018, rwd1d); its
        class names, architecture and preprocessing recipe are kept.
    x_train : (N, 1, S, S) float16/float32 ndarray
        Inputs preprocessed with the init model's recipe (rwd1d: also ``(N, 1, S)`` rows); not modified.
    y_train : (N,) int ndarray
        Class indices into the init model's class names.
    out_path : str or Path
        Model file to write.
    x_val, y_val : arrays, optional
        Validation inputs and labels (Xie: 200 frames).
    frozen, unfrozen : TrainConfig, optional
        Stage 1 and 2 settings (default :data:`FROZEN_DEFAULT`, :data:`UNFROZEN_DEFAULT`).
    unfreeze_blocks : int
        Top blocks trained in stage 2 (Xie: one or two); 0 skips stage 2.
    augment, data_description, log
        As :func:`~diffscreen.train.loop.train_on_arrays`.
    reset_head : bool
        Re-initialise the classifier (Fig. 3: "a randomly initialized classifier").
    device : torch.device or str, optional
        Where the model trains (default: the CPU).

    Returns
    -------
    TrainResult
        ``history`` rows carry ``stage`` ("frozen" or "unfrozen"); the metadata records ``training.method =
        "transfer"``, the init model and both stage configs.

    Raises
    ------
    ModelFileError
        ``init_path`` missing or unreadable.
    ConfigError
        Bad arrays or labels, or an architecture without ``features`` / ``classifier``.
    """
    from diffscreen.models import get_model, load_model

    init = load_model(init_path)
    names = tuple(init.class_names)
    xt, yt = check_arrays(x_train, y_train, len(names))
    if x_val is not None:
        x_val, y_val = check_arrays(x_val, y_val, len(names), "x_val")
    s1 = frozen or FROZEN_DEFAULT
    s2 = unfrozen or UNFROZEN_DEFAULT
    torch.set_num_threads(max(1, s1.threads))
    model = init.model
    if reset_head:
        torch.manual_seed(s1.seed)
        fresh = get_model(init.arch, **init.arch_kwargs)
        model.classifier.load_state_dict(fresh.classifier.state_dict())
    dev = training_device(device)
    model.to(dev)  # before the optimisers of the stages collect its parameters
    fit_kw = {"x_val": x_val, "y_val": y_val, "class_names": names, "augment": augment, "log": log}
    freeze_base(model, 0)
    log(f"stage 1: base frozen, training the classifier on {len(xt)} inputs")
    history, best = fit_arrays(model, xt, yt, s1, stage="frozen", **fit_kw)
    best_stage = "frozen"
    if unfreeze_blocks > 0:
        trainable = freeze_base(model, unfreeze_blocks)
        log(f"stage 2: top {unfreeze_blocks} block(s) unfrozen ({len(trainable)} parameter tensors trainable)")
        h2, best = fit_arrays(model, xt, yt, s2, stage="unfrozen", seed_offset=1000, **fit_kw)
        history, best_stage = history + h2, "unfrozen"
    init_train = init.meta.get("training", {})
    return save_trained(
        out_path, model, arch=init.arch, arch_kwargs=init.arch_kwargs, preprocess=init.preprocess,
        class_names=names, history=history, seed=s1.seed, data=data_description,
        metrics={"best_stage": best_stage, "best_epoch": best.epoch, "val_balanced_accuracy": best.score},
        head={"method": "transfer", "source": "Xie et al. 2022 sec. 2.3.1, Fig. 3",
              "init_model": {"path": str(init_path), "arch": init.arch, "data": init_train.get("data", {}),
                             "seed": init.meta.get("seed")},
              "stages": {"frozen": asdict(s1), "unfrozen": asdict(s2) if unfreeze_blocks else None,
                         "unfreeze_blocks": unfreeze_blocks, "reset_head": reset_head}},
        counts={"n_train": int(len(xt)), "n_val": int(0 if x_val is None else len(x_val))})
