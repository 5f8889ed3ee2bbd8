"""Training a DiffraNet 5-class classifier (Nawaz et al. 2022 §3.5): AlexNet with Adam, a recipe over
:func:`~diffscreen.train.loop.train_on_arrays`.

:func:`train_diffranet_on_arrays` trains on preprocessed frames in memory (what ``benchmark nawaz2022`` does on
simulated frames); :func:`train_diffranet` reads labelled files first (``diffscreen train --task diffranet``:
simulated runs of ``simulate --task diffranet``, or any frames with a CSV ``file,frame,label`` of the five
class names).  Defaults are the paper's recipe (:data:`PAPER_DEFAULTS`: Adam, learning rate 1e-5 falling
exponentially, batch 128, 50 epochs, full-width AlexNet at 227 × 227).
"""

from __future__ import annotations

import math

import numpy as np

from diffscreen.errors import ConfigError
from diffscreen.models.diffranet import DIFFRANET_CLASSES, DIFFRANET_INPUT_SIZE, diffranet_preprocess_config
from diffscreen.train.engine import TrainConfig

__all__ = ["PAPER_DEFAULTS", "DIFFRANET_ARCHS", "alexnet_channels", "input_standardisation",
           "train_diffranet_on_arrays", "train_diffranet"]

#: Nawaz et al. (2022) §3.5 (the decay rate is not given: one decade over the run).
PAPER_DEFAULTS = {"epochs": 50, "batch_size": 128, "lr_start": 1e-5, "lr_end": 1e-6, "width": 64,
                  "input_size": DIFFRANET_INPUT_SIZE}
#: Architectures ``train --task diffranet`` builds with five outputs (rwd1d takes row ranges, not frames).
DIFFRANET_ARCHS = ("alexnet", "ke2018")


def alexnet_channels(width: int) -> tuple[tuple[int, ...], int]:
    """AlexNet conv1–conv5 channels and fc width for a first-layer ``width``: torchvision's proportions
    (64, 192, 384, 256, 256; fc 4096 at width 64), i.e. ``(w, 3w, 6w, 4w, 4w)`` and ``64 w``."""
    w = int(width)
    if w < 1:
        raise ConfigError(f"--width must be >= 1, got {width}")
    return (w, 3 * w, 6 * w, 4 * w, 4 * w), 64 * w


def input_standardisation(x) -> dict:
    """``input_mean`` and ``input_std`` of at most about 200 evenly spread frames of ``x`` (N, 1, S, S), rounded
    to 6 decimals: the input standardisation of :class:`~diffscreen.models.alexnet.AlexNet`."""
    sample = np.asarray(x[:: max(1, len(x) // 200)], np.float32)
    std = float(sample.std())
    return {"input_mean": round(float(sample.mean()), 6), "input_std": round(std, 6) if std > 0 else 1.0}


def train_diffranet_on_arrays(x_train, y_train, out_path, *, x_val=None, y_val=None, arch: str = "alexnet",
                              epochs: int = 50, batch_size: int = 128, batches_per_epoch: int | None = None,
                              lr_start: float = 1e-5, lr_end: float = 1e-6, seed: int = 0, channels=None,
                              fc_dim: int | None = None, threads: int = 1, data_description: dict | None = None,
                              augment=None, log=print, device=None):
    """Train a DiffraNet classifier on preprocessed frames; the best validation accuracy's epoch is kept.

    Parameters
    ----------
    x_train : (N, 1, S, S) float16/float32 ndarray
        Frames preprocessed with :func:`~diffscreen.models.diffranet.diffranet_preprocess_config` ``(S)``.
    y_train : (N,) int ndarray
        Indices into :data:`~diffscreen.models.diffranet.DIFFRANET_CLASSES`.
    out_path : str or Path
        Model file to write; it records the architecture, the five class names and the recipe.
    x_val, y_val : arrays, optional
        Validation frames for model selection (none: the last epoch is kept).
    arch : {"alexnet", "ke2018"}
    epochs, batch_size, lr_start, lr_end, seed, threads
        Adam from ``lr_start`` falling exponentially to ``lr_end``; class-balanced batches.
    batches_per_epoch : int, optional
        Default: one pass, ``ceil(N / batch_size)``.
    channels, fc_dim : optional
        AlexNet width (default torchvision's, :func:`alexnet_channels` ``(64)``).
    data_description, augment, log
        As :func:`~diffscreen.train.loop.train_on_arrays`.
    device : torch.device or str, optional
        Where it trains (default: the CPU).

    Returns
    -------
    TrainResult

    Raises
    ------
    ConfigError
        An architecture other than alexnet or ke2018, or bad arrays.
    """
    from diffscreen.train.loop import train_on_arrays

    if arch not in DIFFRANET_ARCHS:
        raise ConfigError(f"the DiffraNet task trains {' or '.join(DIFFRANET_ARCHS)}, not {arch!r}")
    xt = np.asarray(x_train)
    if xt.ndim != 4 or len(xt) == 0:
        raise ConfigError(f"x_train must be non-empty (N, 1, S, S) frames, got {xt.shape}")
    arch_kwargs = {}
    if arch == "alexnet":
        if channels is None or fc_dim is None:
            c, f = alexnet_channels(64)
            channels, fc_dim = channels or c, fc_dim or f
        arch_kwargs = {"channels": list(channels), "fc_dim": int(fc_dim), **input_standardisation(xt)}
    cfg = TrainConfig(
        arch=arch, optimizer="adam", epochs=epochs, batch_size=batch_size,
        batches_per_epoch=batches_per_epoch or max(1, int(math.ceil(len(xt) / batch_size))), lr_start=lr_start,
        lr_end=lr_end, weight_decay=0.0, seed=seed, threads=threads, arch_kwargs=arch_kwargs,
    )  # fmt: skip
    return train_on_arrays(xt, y_train, out_path, class_names=DIFFRANET_CLASSES,
                           preprocess=diffranet_preprocess_config(int(xt.shape[-1])), config=cfg, x_val=x_val,
                           y_val=y_val, data_description=data_description, augment=augment, log=log, device=device)


def train_diffranet(specs, out, label_files=(), *, arch: str = "alexnet", input_size: int = DIFFRANET_INPUT_SIZE,
                    width: int = 64, epochs: int = 50, batch_size: int = 128, batches_per_epoch: int | None = None,
                    lr_start: float = 1e-5, lr_end: float = 1e-6, seed: int = 0, split: str = "order",
                    fractions=(0.8, 0.1, 0.1), threads: int = 1, say=print, log=print, bar=None, device=None):
    """Read labelled frames, preprocess them for the DiffraNet task, train, and score the test part.

    Parameters
    ----------
    specs : sequence of str
        Expanded input specs: runs of ``simulate --task diffranet`` (their labels are the five classes), or
        frames labelled by ``label_files``.
    out : str or Path
        Model file to write.
    label_files : sequence of str
        CSV ``file,frame,label`` files of DiffraNet class names; empty: the inputs' own labels.
    arch, input_size, width, epochs, batch_size, batches_per_epoch, lr_start, lr_end, seed, threads
        As :func:`train_diffranet_on_arrays`; ``width`` is AlexNet's first-layer channels
        (:func:`alexnet_channels`); ``input_size`` the network input side (AlexNet: 227; at least 63).
    split, fractions
        As :func:`~diffscreen.train.data.split_samples` (train, validation, test).
    say, log : callable
        Frame counts; the epochs.
    bar : callable, optional
        ``bar(description)`` gives a ``progress(total=, advance=)`` callback for reading frames.
    device : torch.device or str, optional

    Returns
    -------
    result : TrainResult
    test : dict or None
        On the test part: ``accuracy`` (5 classes), ``confusion`` (5 × 5, rows true), ``hit_miss_accuracy``
        (Nawaz §4 merge), ``n``; None when the test part is empty.

    Raises
    ------
    ConfigError
        Bad architecture or sizes, or no frame left for training.
    LabelError
        A label that is not a DiffraNet class, or no labels.
    """
    from diffscreen.evaluate.metrics import confusion_matrix
    from diffscreen.models.diffranet import hit_miss
    from diffscreen.models.inference import Classifier
    from diffscreen.preprocess import Preprocessor
    from diffscreen.train.data import samples_to_arrays
    from diffscreen.train.workflows import _read_split

    if arch not in DIFFRANET_ARCHS:
        raise ConfigError(f"--task diffranet trains --model-type {' or '.join(DIFFRANET_ARCHS)}, not {arch}")
    if arch == "alexnet" and input_size < 63:
        raise ConfigError(f"AlexNet needs an input of at least 63 px, got --input-size {input_size}")
    channels, fc_dim = alexnet_channels(width)
    pre, bar = Preprocessor(diffranet_preprocess_config(input_size)), bar or (lambda description: None)
    x, y, xv, yv, te, info = _read_split(specs, label_files, DIFFRANET_CLASSES, pre, split, fractions, seed, say, bar,
                                         note=f"; {arch} at {input_size} px")
    info.update(task="diffranet", labels="DiffraNet classes (Nawaz et al. 2022 sec. 3.1)")
    res = train_diffranet_on_arrays(x, y, out, x_val=xv, y_val=yv, arch=arch, epochs=epochs, batch_size=batch_size,
                                    batches_per_epoch=batches_per_epoch, lr_start=lr_start, lr_end=lr_end, seed=seed,
                                    channels=channels, fc_dim=fc_dim, threads=threads, data_description=info,
                                    log=log, device=device)
    if not te:
        return res, None
    clf = Classifier(res.model_path, device=device)
    xt, yt = samples_to_arrays(te, pre, progress=bar("reading test frames"))
    probs = np.concatenate([clf.predict_batch(xt[i : i + 64].astype(np.float32)) for i in range(0, len(xt), 64)])
    true = [DIFFRANET_CLASSES[k] for k in yt]
    pred = [DIFFRANET_CLASSES[k] for k in probs.argmax(1)]
    cm = confusion_matrix(true, pred, DIFFRANET_CLASSES)
    hm = np.mean([a == b for a, b in zip(hit_miss(true), hit_miss(pred))])
    return res, {"n": len(true), "accuracy": float(np.trace(cm) / cm.sum()), "confusion": cm.tolist(),
                 "hit_miss_accuracy": float(hm)}
