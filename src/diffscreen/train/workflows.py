"""File-level training workflows: read the inputs, split them, train, score the held-out frames."""

from __future__ import annotations

import numpy as np

from diffscreen.errors import ConfigError
from diffscreen.train.data import collect_samples, samples_to_arrays, split_samples
from diffscreen.train.transfer import FROZEN_DEFAULT, UNFROZEN_DEFAULT, transfer_on_arrays

__all__ = ["prepare_cdi_runs", "train_transfer"]


def prepare_cdi_runs(paths, preprocess, val_fraction: float = 0.15, seed: int = 0):
    """Read simulated CDI runs, preprocess them and split them at random into training and validation frames.

    Zimmermann et al. (2019) §4 hold out 15 % of the frames for validation.

    Parameters
    ----------
    paths : sequence of str
        Simulated CDI runs (``simulate --task cdi``).
    preprocess : CDIPreprocessConfig
    val_fraction : float
        Fraction in (0, 1) held out; at least one frame.
    seed : int
        Seed of the permutation.

    Returns
    -------
    x : (N, 1, S, S) float32 ndarray
        Preprocessed frames (images or CCF maps).
    y : (N, 11) uint8 ndarray
        Multi-hot labels.
    train, val : int ndarrays
        Frame indices of the two parts.
    info : dict
        What :func:`~diffscreen.train.multilabel.load_cdi_runs` says, plus ``split``.

    Raises
    ------
    ConfigError
        ``val_fraction`` outside (0, 1).
    """
    from diffscreen.preprocess.cdi import prepare_cdi_batch
    from diffscreen.train.multilabel import load_cdi_runs

    if not (0 < val_fraction < 1):
        raise ConfigError("--val-fraction must be in (0, 1)")
    frames, mask, y, info = load_cdi_runs(list(paths))
    x = prepare_cdi_batch(frames, preprocess, mask=mask)
    perm = np.random.default_rng(seed).permutation(len(x))
    nv = max(1, int(round(val_fraction * len(x))))
    info["split"] = {"mode": "random", "val_fraction": val_fraction, "seed": seed}
    return x, y, perm[nv:], perm[:nv], info


def _read_split(specs, label_files, class_names, pre, split, fractions, seed, say, bar, *, rows=False, note=""):
    """Collect the labelled frames of ``specs``, split them (:func:`~diffscreen.train.data.split_samples`), say the
    counts (and ``note``), read the training and validation parts with ``pre`` (``bar(description)`` their progress
    callbacks); returns ``x, y, x_val, y_val`` (None without validation frames), the test samples and the data
    description.  ConfigError when no frame is left for training."""
    samples, info = collect_samples(specs, [str(x) for x in label_files], class_names=class_names)
    tr, va, te = split_samples(samples, tuple(fractions), mode=split, seed=seed)
    if not tr:
        raise ConfigError(f"no frame left for training after the split {tuple(fractions)} of {len(samples)} frames")
    say(f"{len(samples)} labelled frames {info['counts']}: train {len(tr)}, validation {len(va)}, test {len(te)}"
        + note)
    bar = bar or (lambda description: None)
    x, y = samples_to_arrays(tr, pre, rows=rows, progress=bar("reading training frames"))
    xv, yv = samples_to_arrays(va, pre, rows=rows, progress=bar("reading validation frames")) if va else (None, None)
    info.update(label_files=[str(v) for v in label_files], split={"mode": split, "fractions": list(fractions)})
    return x, y, xv, yv, te, info


def train_transfer(specs, out, label_files=(), *, init, arch=None, frozen=FROZEN_DEFAULT, unfrozen=UNFROZEN_DEFAULT,
                   unfreeze: int = 2, split: str = "order", fractions=(0.8, 0.2, 0.0), say=print, log=print,
                   bar=None, device=None):
    """Two-stage transfer learning from a few labelled frames (Xie et al. 2022 §2.3.1, Fig. 3), scored on the test part.

    Parameters
    ----------
    specs : sequence of str
        Expanded input specs.
    out : str or Path
        Model file to write (.safetensors).
    label_files : sequence of str
        Label files; empty: the inputs' own labels.
    init : str or Path
        The trained model to start from; the new one keeps its architecture, preprocessing and classes.
    arch : str, optional
        Refuse an ``init`` model of another architecture.
    frozen, unfrozen : TrainConfig
        Stage 1 (base frozen) and stage 2 settings; ``frozen.seed`` also seeds the split.
    unfreeze : int
        Top convolutional blocks unfrozen in stage 2; 0 skips stage 2.
    split, fractions
        As :func:`~diffscreen.train.data.split_samples`.
    say, log : callable
        Where the frame counts go; where the epochs are logged.
    bar : callable, optional
        ``bar(description)`` gives a ``progress(total=, advance=)`` callback for reading frames.
    device : torch.device or str, optional
        Where the model trains and is scored (default: the CPU).

    Returns
    -------
    result : TrainResult
    test : EvaluationReport or None
        The new model on the test part (None when it is empty).

    Raises
    ------
    ConfigError
        ``init`` has another architecture than ``arch``, or no frame is left for training.
    """
    from diffscreen.evaluate import evaluate_labels
    from diffscreen.models import load_model
    from diffscreen.models.decision import decide
    from diffscreen.models.inference import Classifier
    from diffscreen.preprocess import Preprocessor
    from diffscreen.train.loop import dihedral_augment

    bundle = load_model(init)
    if arch is not None and bundle.arch != arch:
        raise ConfigError(f"the init model is a {bundle.arch!r} model, but --model-type {arch} was given", path=init)
    pre, rows = Preprocessor(bundle.preprocess), bundle.arch == "rwd1d"
    x, y, xv, yv, te, info = _read_split(specs, label_files, bundle.class_names, pre, split, fractions, frozen.seed,
                                         say, bar, rows=rows)
    res = transfer_on_arrays(init, x, y, out, x_val=xv, y_val=yv, frozen=frozen, unfrozen=unfrozen,
                             unfreeze_blocks=unfreeze, augment=None if rows else dihedral_augment,
                             data_description=info, log=log, device=device)
    if not te:
        return res, None
    clf = Classifier(res.model_path, device=device)
    xt, yt = samples_to_arrays(te, pre, rows=rows)
    _, pred = decide(clf.predict_batch(xt.astype("float32")), clf.class_names)
    return res, evaluate_labels([clf.class_names[k] for k in yt], pred, clf.class_names)
