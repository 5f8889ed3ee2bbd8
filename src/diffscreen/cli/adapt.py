"""``diffscreen adapt`` and ``diffscreen suggest-labels`` (Xie et al. 2022).

Learning a new experiment with few or no labels: DANN (§2.3.3) and choosing
which frames to label (transfer learning is ``train --init``).
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from diffscreen.cli._common import MODEL_HELP, Bar, ModelType, device_of, device_option, expand, friendly, given, progress

_DANN = "DANN training"


@friendly
def adapt(
    source: List[str] = typer.Option(..., "--source", "-s", help="Labelled frames of a known experiment (simulated .cxi runs, or files with --labels); repeat for more."),
    target: List[str] = typer.Option(..., "--target", "-t", help="Unlabelled frames of the new experiment (any readable run); repeat for more."),
    out: Path = typer.Option(..., "--out", "-o", help="Model file to write (.safetensors); the Fig. 10 plot goes beside it as OUT_dann.png."),
    labels: List[Path] = typer.Option([], "--labels", "-l", help="Label files for the source frames (CSV file,frame,label or expert_annotation.txt)."),
    init: Optional[Path] = typer.Option(None, "--init", help="Start from this model (e.g. the source-only model); its architecture and preprocessing are kept."),
    model_type: ModelType = typer.Option(ModelType.ke2018, "--model-type", help="Architecture when no --init is given."),
    input_size: int = typer.Option(720, help="Network input side in pixels when no --init is given (Ke/Xie: 720)."),
    epochs: Optional[int] = typer.Option(None, help="Epochs \\[default: 20].", rich_help_panel=_DANN, show_default=False),
    batches_per_epoch: Optional[int] = typer.Option(None, help="Steps per epoch; each sees a source and a target batch \\[default: 25].", rich_help_panel=_DANN, show_default=False),
    batch_size: Optional[int] = typer.Option(None, min=1, help="Source frames (and as many target frames) per step \\[default: 32].", rich_help_panel=_DANN, show_default=False),
    lr_start: Optional[float] = typer.Option(None, help="Adam learning rate of the first epoch \\[default: 1e-3; 1e-4 with --init].", rich_help_panel=_DANN, show_default=False),
    lr_end: Optional[float] = typer.Option(None, help="Learning rate of the last epoch, exponential in between \\[default: 1e-4; 1e-5 with --init].", rich_help_panel=_DANN, show_default=False),
    lambda_max: float = typer.Option(1.0, help="Final weight of the reversed domain gradient (Ganin schedule); 0 turns it off and leaves the BatchNorm adaptation, which scored the same in the xie2022 benchmark.", rich_help_panel=_DANN),
    val_fraction: float = typer.Option(0.0, help="Source fraction held out to pick the best epoch (0: keep the last epoch, Xie §4).", rich_help_panel=_DANN),
    max_source: int = typer.Option(2000, help="At most this many labelled source frames (a seeded random subset)."),
    max_target: int = typer.Option(2000, help="At most this many target frames (a seeded random subset)."),
    seed: int = typer.Option(0, help="Seed for initialisation, subsets and batches."),
    threads: int = typer.Option(0, min=0, help="Torch threads (0: PyTorch default)."),
    device: Optional[str] = device_option(),
):
    """Adapt a classifier to a new experiment without its labels (BatchNorm adaptation; DANN optional).

    Trains on labelled SOURCE frames with as many unlabelled TARGET frames in
    every batch, so that BatchNorm's statistics become those of both
    experiments.  By default it also adds the reversed gradient of a domain
    classifier (DANN, Xie et al. 2022 §2.3.3); --lambda-max 0 turns that off.
    In the xie2022 benchmark (docs/benchmarks/xie2022.md) the reversed
    gradient added nothing measurable: λ = 0 scored the same.
    Logs the label loss and the domain loss per epoch (Xie Fig. 10), stores
    them in the model file and plots them to OUT_dann.png.  The model file is
    a plain classifier for `screen`.
    """
    from dataclasses import replace

    import numpy as np
    import torch

    from diffscreen.errors import ConfigError
    from diffscreen.models import load_model
    from diffscreen.preprocess import PreprocessConfig, Preprocessor
    from diffscreen.train import Sample, collect_samples
    from diffscreen.train.dann import DANN_DEFAULT, DANN_FROM_MODEL, plot_dann_history, train_dann_on_arrays
    from diffscreen.io.sources import frame_items
    from diffscreen.train.data import samples_to_arrays

    dev = device_of(device)  # an unavailable --device is one line (exit 2), before any output
    if not 0 <= val_fraction < 1:
        raise ConfigError("--val-fraction must be in [0, 1)")
    sizes = given(epochs=epochs, batches_per_epoch=batches_per_epoch, batch_size=batch_size)
    if min(max_source, max_target, *sizes.values()) < 1:
        raise ConfigError("--max-source, --max-target, --epochs, --batches-per-epoch and --batch-size must be >= 1")
    base = DANN_DEFAULT if init is None else DANN_FROM_MODEL  # their epochs, batches and learning rates unless given
    cfg = replace(base, seed=seed, **sizes, **given(lr_start=lr_start, lr_end=lr_end))
    if threads:
        torch.set_num_threads(threads)
    if init is not None:
        bundle = load_model(init)
        pcfg, names, arch = bundle.preprocess, tuple(bundle.class_names), bundle.arch
    else:
        pcfg = PreprocessConfig(out_size=input_size, max_shift=min(120, input_size // 6))
        names, arch = ("hit", "maybe", "miss"), model_type.value
    src_specs, tgt_specs = expand(source), expand(target)
    samples, info = collect_samples(src_specs, [str(x) for x in labels], class_names=names)
    rng = np.random.default_rng(seed)
    if len(samples) > max_source:
        samples = [samples[k] for k in np.sort(rng.choice(len(samples), max_source, replace=False))]
    items = frame_items(tgt_specs, max_frames=max_target, seed=seed + 1)
    n_val = int(round(val_fraction * len(samples)))
    order = rng.permutation(len(samples))
    val = [samples[k] for k in np.sort(order[:n_val])]
    trn = [samples[k] for k in np.sort(order[n_val:])]
    if not trn:
        raise ConfigError("no labelled source frame left for training; lower --val-fraction")
    print(f"source: {len(trn)} labelled frames {info['counts']} (+{len(val)} validation); target: {len(items)} "
          f"unlabelled frames; architecture {arch}")
    pre = Preprocessor(pcfg)
    rows = arch == "rwd1d"
    cfg = replace(cfg, arch=arch, threads=threads or torch.get_num_threads())
    with progress() as p:
        xs, ys = samples_to_arrays(trn, pre, rows=rows, progress=Bar(p, "reading source frames"))
        xv, yv = samples_to_arrays(val, pre, rows=rows, progress=Bar(p, "reading validation frames")) if val \
            else (None, None)
        xt, _ = samples_to_arrays([Sample(s, i, -1) for s, i in items], pre, rows=rows,
                                  progress=Bar(p, "reading target frames"))
        desc = {"source": info, "target": {"inputs": tgt_specs, "n_frames": len(items)},
                "label_files": [str(x) for x in labels], "val_fraction": val_fraction}
        res = train_dann_on_arrays(xs, ys, xt, out, class_names=names, preprocess=pcfg, config=cfg, x_val=xv,
                                   y_val=yv, init_path=init, lambda_max=lambda_max, data_description=desc,
                                   log=p.console.print, device=dev)
    png = plot_dann_history(res.history, Path(out).with_name(Path(out).stem + "_dann.png"))
    last = res.history[-1]
    print(f"last epoch: label loss {last['label_loss']:.4f}, domain loss {last['domain_loss']:.4f}, "
          f"domain accuracy {last['domain_accuracy']:.3f}")
    print(f"model written to {res.model_path} (epoch {res.best_epoch}); loss plot {png}")


@friendly
def suggest_labels(
    inputs: List[str] = typer.Argument(..., help="The run: frame files, folders or globs; HDF5 datasets as file.h5:/path."),
    n: int = typer.Option(200, "--n", "-n", help="Frames to suggest."),
    out: Path = typer.Option(Path("labels_todo.csv"), "--out", "-o", help="CSV to write (file,frame,label,p_*,reason)."),
    model: Optional[Path] = typer.Option(None, "--model", "-m", help=MODEL_HELP),
    uncertainty_weight: float = typer.Option(0.5, help="1: most uncertain frames only; 0: most diverse only."),
    seed: int = typer.Option(0, help="Seed for breaking ties."),
    batch_size: int = typer.Option(16, min=1, help="Frames per forward pass."),
    threads: int = typer.Option(0, min=0, help="Torch threads (0: PyTorch default)."),
    device: Optional[str] = device_option(),
):
    """Pick the frames of a run most worth labelling, and write them as a CSV to fill in.

    Runs the model over every frame and picks N frames it is unsure about
    (entropy of its probabilities), spread over its feature space (k-centre
    greedy), so that a few hundred labels teach it the most.  Write hit, maybe
    or miss into the empty label column of every row (or delete the row), then
    `diffscreen train RUN --init MODEL --labels OUT`.
    """
    import torch

    from diffscreen.errors import ConfigError
    from diffscreen.models.inference import Classifier
    from diffscreen.screen.suggest import run_suggestions, write_suggestions

    if n < 1:
        raise ConfigError("--n must be >= 1")
    dev = device_of(device)
    if threads:
        torch.set_num_threads(threads)
    clf = Classifier(model, device=dev)
    specs = expand(inputs)
    with progress() as p:
        res = run_suggestions(specs, clf, n, batch_size=batch_size, seed=seed,
                              uncertainty_weight=uncertainty_weight, progress=Bar(p, "scoring frames"))
    write_suggestions(res, out)
    for f, i, e in res["errors"][:20]:
        print(f"WARNING: skipped {f}" + ("" if i < 0 else f", frame {i}") + f": {e}")
    print(f"{len(res['picks'])} of {res['n_frames']} frames suggested; fill in the label column of {out} "
          f"(hit, maybe or miss), then: diffscreen train {' '.join(inputs)} --init MODEL --labels {out}")
