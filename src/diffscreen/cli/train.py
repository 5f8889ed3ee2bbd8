"""``diffscreen train``: the Ke et al. (2018) CNN, the RWD 1-D CNN, transfer learning (--init) or the CDI ResNet."""

from __future__ import annotations

import dataclasses
from enum import Enum
from pathlib import Path
from typing import List, Optional, Tuple

import typer

from diffscreen.cli._common import Bar, ModelType, Task, device_of, device_option, expand, friendly, given, progress

_TL = "Transfer learning"


class Recipe(str, Enum):
    significance = "significance"
    ke2018 = "ke2018"


class Contrast(str, Enum):
    lcn = "lcn"
    linear = "linear"


class Split(str, Enum):
    order = "order"
    random = "random"


@friendly
def train(
    inputs: List[str] = typer.Argument(..., help="Labelled data: simulated .cxi runs, or HDF5/CBF files with --labels."),
    out: Path = typer.Option(..., "--out", "-o", help="Model file to write (.safetensors)."),
    labels: List[Path] = typer.Option([], "--labels", "-l", help="Label files: expert_annotation.txt or CSV file,frame,label."),
    epochs: Optional[int] = typer.Option(None, help="Epochs (Ke: 120; CDI: 200; DiffraNet: 50)."),
    batches_per_epoch: Optional[int] = typer.Option(None, help="Class-balanced mini-batches per epoch (Ke: 100; with --init: 20)."),
    batch_size: Optional[int] = typer.Option(None, help="Frames per mini-batch (Ke: 64; CDI: 48; with --init: 32; DiffraNet: 128)."),
    lr_start: Optional[float] = typer.Option(None, help="Learning rate of the first epoch (Ke: 0.1 at batch 64; CDI: 0.1; DiffraNet: Adam 1e-5)."),
    lr_end: Optional[float] = typer.Option(None, help="Learning rate of the last epoch (Ke: 1e-4; DiffraNet: 1e-6); exponential in between."),
    seed: int = typer.Option(0, help="Seed for initialisation, batches and crop shifts."),
    split: Split = typer.Option(Split.order, help="Train/val/test split: in file order per file (fv5080) or random."),
    fractions: Optional[Tuple[float, float, float]] = typer.Option(None, help="Train, validation, test fractions (Ke: 0.5 0.2 0.3; with --init: 0.8 0.2 0; DiffraNet: 0.8 0.1 0.1)."),
    first_kernel: Optional[int] = typer.Option(None, help="First convolution kernel: 7 (fv5080 code, default) or 3 (paper text)."),
    preprocess: Recipe = typer.Option(Recipe.ke2018, "--preprocess", help="ke2018: Ke §2.2 GCN + LCN at 720² (the paper's recipe, the bundled default model's); significance: per-pixel significance over resolution shells, max-pooled (the bundled fast model's recipe; 360² at 2× Ke's reciprocal pixel unless --input-size)."),
    contrast: Contrast = typer.Option(Contrast.lcn, help="--preprocess ke2018: LCN (Ke §2.2) or linear contrast (Ke Table 8)."),
    pixel_scaling: bool = typer.Option(False, help="Scale by pixel count (fv5080: whole frame to 960) instead of physically."),
    input_size: Optional[int] = typer.Option(None, help="Network input side in pixels (Ke: 720; CDI: 224; DiffraNet: 227)."),
    workers: Optional[int] = typer.Option(None, help="Worker processes reading and preprocessing frames (default 1)."),
    fresh: bool = typer.Option(False, "--fresh", help="Ignore a checkpoint of an interrupted run."),
    task: Task = typer.Option(Task.crystallography, help="crystallography (Ke 2018 CNN), cdi (Zimmermann 2019 ResNet18, multi-label) or diffranet (5 DiffraNet classes, Nawaz 2022 AlexNet)."),
    ccf: bool = typer.Option(False, "--ccf", help="CDI: train on CCF maps (§5.3) instead of diffraction images."),
    alpha: Optional[str] = typer.Option(None, help="CDI: α of the logarithmic activation (Eq. 11; default 0.2), or 'none' (unmodified ResNet18)."),
    width: Optional[int] = typer.Option(None, help="CDI: channels of the first ResNet stage (paper and default 64; CPU recipe 16). DiffraNet AlexNet: conv1 channels (default 64; the others and fc6/fc7 scale with it)."),
    milestones: Optional[str] = typer.Option(None, help="CDI: epochs after which the learning rate is divided by 10 (default 50,100,150)."),
    val_fraction: float = typer.Option(0.15, help="CDI: random validation fraction (paper: 15%)."),
    model_type: Optional[ModelType] = typer.Option(None, "--model-type", help="ke2018 (2-D CNN, default) or rwd1d (1-D CNN on row ranges, Xie 2022 §3.4.2); alexnet (Nawaz 2022, the default of --task diffranet)."),
    device: Optional[str] = device_option(),
    init: Optional[Path] = typer.Option(None, "--init", help="Transfer learning (Xie 2022 §2.3.1): start from this trained model; labels via --labels.", rich_help_panel=_TL),
    frozen_epochs: Optional[int] = typer.Option(None, help="--init stage 1: epochs with the convolutional base frozen (Adam 1e-2 → 1e-3; default 10).", rich_help_panel=_TL),
    unfrozen_epochs: Optional[int] = typer.Option(None, help="--init stage 2: epochs with the top blocks unfrozen (Adam 1e-4 → 1e-5; default 10).", rich_help_panel=_TL),
    unfreeze: int = typer.Option(2, help="--init stage 2: top convolutional blocks to unfreeze (Xie: 1 or 2; 0 skips stage 2).", rich_help_panel=_TL),
):
    """Train the Ke et al. (2018) CNN on labelled frames and write a model file.

    With --model-type rwd1d: the Xie et al. (2022) 1-D CNN on the row ranges of
    the preprocessed frames instead (fast; docs/adapt.md).

    With --init MODEL: transfer learning for a new experiment (Xie et al. 2022
    Fig. 3) from a few hundred labelled frames (--labels CSV file,frame,label,
    e.g. from `suggest-labels`): stage 1 trains a new classifier on MODEL's
    frozen convolutional base, stage 2 also the top --unfreeze blocks.  The new
    model keeps MODEL's architecture, preprocessing and classes.

    Class-balanced batches of randomly shifted crops, SGD (momentum 0.9, weight
    decay 5e-4) with the learning rate falling from 0.1 to 1e-4; the epoch with
    the best validation score is kept and scored on the test split.  An
    interrupted run resumes from OUT.ckpt.

    With --task cdi: train the Zimmermann et al. (2019) pre-activation
    ResNet-18 with the logarithmic activation on simulated CDI runs
    (`simulate --task cdi`), sigmoid outputs, BCE + L1/L2 1e-5, SGD 0.1 ÷10 at
    --milestones.  Paper recipe (GPU): defaults.  CPU recipe: --input-size 64
    --width 16 --epochs 16 --milestones 10,14.

    With --task diffranet: train AlexNet (Nawaz et al. 2022 §3.5; or
    --model-type ke2018) on the 5 DiffraNet classes blank, no-crystal, weak,
    good, strong: runs of `simulate --task diffranet`, or frames with --labels
    CSV of those names.  Adam, learning rate 1e-5 to 1e-6, batch 128, 50
    epochs at 227 px (the paper's recipe; a GPU's).  The model file records
    arch alexnet and the 5 classes, for `screen --task diffranet`.

    --device cpu, cuda, cuda:N or mps: where it trains (default cuda when
    PyTorch sees a GPU); one GPU needs no torchrun.

    Multi-GPU / multi-process: `torchrun --nproc_per_node N -m diffscreen.cli
    train ...` trains one model with DistributedDataParallel (Ke recipe only;
    --batch-size a multiple of N).  See docs/scaling.md.
    """
    from diffscreen.errors import ConfigError

    dev = device_of(device)  # an unavailable --device is one line (exit 2), before any output
    if task is not Task.crystallography or init is not None:
        from diffscreen.train.distributed import torchrun_launched

        if torchrun_launched():
            raise ConfigError("only the Ke et al. (2018) CNN trains under torchrun; start this one without it")
    if task is Task.cdi:
        return _train_cdi(inputs, out, epochs=epochs, batch_size=batch_size, lr=lr_start, seed=seed, ccf=ccf,
                          alpha=alpha, width=width, milestones=milestones, input_size=input_size,
                          val_fraction=val_fraction, fresh=fresh, device=dev)
    if task is Task.diffranet:
        if init is not None:
            raise ConfigError("--task diffranet trains from scratch; --init is for hit/maybe/miss transfer learning")
        return _train_diffranet(inputs, out, labels, model_type=model_type, input_size=input_size, width=width,
                                epochs=epochs, batch_size=batch_size, batches_per_epoch=batches_per_epoch,
                                lr_start=lr_start, lr_end=lr_end, seed=seed, split=split.value,
                                fractions=fractions or (0.8, 0.1, 0.1), device=dev)
    if init is not None:
        return _train_transfer(inputs, out, labels, init=init, model_type=model_type, frozen_epochs=frozen_epochs,
                               unfrozen_epochs=unfrozen_epochs, unfreeze=unfreeze,
                               batches_per_epoch=batches_per_epoch, batch_size=batch_size, seed=seed,
                               split=split.value, fractions=fractions or (0.8, 0.2, 0.0), device=dev)
    if model_type is ModelType.alexnet:
        raise ConfigError("--model-type alexnet trains the DiffraNet 5-class task (Nawaz 2022): add --task diffranet; "
                          "the hit/maybe/miss task trains ke2018 or rwd1d")
    from diffscreen.preprocess import PreprocessConfig
    from diffscreen.train import TrainConfig, collect_samples, split_samples, train_model
    from diffscreen.train.distributed import launch_rank

    fractions = fractions or (0.5, 0.2, 0.3)
    specs = expand(inputs)
    samples, info = collect_samples(specs, [str(x) for x in labels])
    tr, va, te = split_samples(samples, fractions, mode=split.value, seed=seed)
    root = launch_rank() == 0  # under torchrun: rank 0 logs and writes the model, the others train silently
    if root:
        print(f"{len(samples)} labelled frames {info['counts']}: train {len(tr)}, validation {len(va)}, test {len(te)}")
    cfg = TrainConfig(seed=seed, **given(epochs=epochs, batches_per_epoch=batches_per_epoch, batch_size=batch_size,
                                          lr_start=lr_start, lr_end=lr_end, first_kernel=first_kernel,
                                          workers=workers, arch=model_type and model_type.value))
    if preprocess is Recipe.significance:
        input_size = 360 if input_size is None else input_size
        pcfg = PreprocessConfig.significance(input_size, scale=720 / input_size)
    else:
        input_size = 720 if input_size is None else input_size
        pcfg = PreprocessConfig(out_size=input_size, contrast=contrast.value, max_shift=min(120, input_size // 6))
    if pixel_scaling:
        pcfg = dataclasses.replace(pcfg, s_per_px=None)
    info["label_files"] = [str(x) for x in labels]
    info["split"] = {"mode": split.value, "fractions": list(fractions)}
    if not root:
        train_model(tr, va, out, config=cfg, preprocess=pcfg, test=te, data_description=info, resume=not fresh,
                    device=dev)
        return
    with progress() as p:
        bar = p.add_task("training", total=cfg.epochs * cfg.batches_per_epoch, rate="")

        def cb(epoch, batch, n):
            p.update(bar, completed=(epoch - 1) * n + batch, rate=f"epoch {epoch}")

        res = train_model(tr, va, out, config=cfg, preprocess=pcfg, test=te, data_description=info,
                          resume=not fresh, progress=cb, log=p.console.print, device=dev)
    print(f"best epoch {res.best_epoch}; model written to {res.model_path}")
    if res.test_report is not None:
        print("test split:")
        print(res.test_report.to_markdown())


def _train_cdi(inputs, out, *, epochs, batch_size, lr, seed, ccf, alpha, width, milestones, input_size,
               val_fraction, fresh, device=None):
    """``train --task cdi``: read simulated CDI runs, preprocess, train, write the model."""
    from diffscreen.errors import ConfigError
    from diffscreen.preprocess.cdi import CDIPreprocessConfig
    from diffscreen.train.multilabel import MultiLabelConfig, train_multilabel
    from diffscreen.train.workflows import prepare_cdi_runs

    options = given(epochs=epochs, batch_size=batch_size, lr=lr, width=width)
    if alpha is not None and alpha.strip().lower() in ("none", "unmodified", "off"):
        options["alpha"] = None
    elif alpha is not None:
        try:
            options["alpha"] = float(alpha)
        except ValueError:
            raise ConfigError(f"--alpha must be a number or 'none', got {alpha!r}") from None
    if milestones is not None:
        try:
            options["milestones"] = tuple(int(x) for x in milestones.split(",") if x.strip())
        except ValueError:
            raise ConfigError(f"--milestones must be comma-separated epochs, got {milestones!r}") from None
    pre = CDIPreprocessConfig(mode="ccf" if ccf else "image", **given(input_size=input_size))
    x, y, tr, va, info = prepare_cdi_runs(inputs, pre, val_fraction, seed)
    print(f"{len(x)} CDI frames: train {len(tr)}, validation {len(va)}; input {pre.mode} {pre.input_size}px")
    cfg = MultiLabelConfig(seed=seed, **options)
    with progress() as p:
        res = train_multilabel(x[tr], y[tr], x[va], y[va], out, config=cfg, preprocess=pre, data_description=info,
                               resume=not fresh, log=p.console.print, device=device)
    print(f"best epoch {res.best.get('epoch')}: validation accuracy {res.best.get('accuracy', float('nan')):.3f} "
          f"precision {res.best.get('precision', float('nan')):.3f} recall {res.best.get('recall', float('nan')):.3f}")
    print(f"model written to {res.model_path}")


def _train_transfer(inputs, out, labels, *, init, model_type, frozen_epochs, unfrozen_epochs, unfreeze,
                    batches_per_epoch, batch_size, seed, split, fractions, device=None):
    """``train --init MODEL``: two-stage transfer learning from a few labelled frames (Xie §2.3.1, Fig. 3)."""
    from dataclasses import replace

    from diffscreen.errors import ConfigError
    from diffscreen.models import read_model_metadata
    from diffscreen.train.transfer import FROZEN_DEFAULT, UNFROZEN_DEFAULT
    from diffscreen.train.workflows import train_transfer

    frozen_epochs = FROZEN_DEFAULT.epochs if frozen_epochs is None else frozen_epochs
    unfrozen_epochs = UNFROZEN_DEFAULT.epochs if unfrozen_epochs is None else unfrozen_epochs
    if frozen_epochs < 1 or unfrozen_epochs < 0 or unfreeze < 0:
        raise ConfigError("--frozen-epochs must be >= 1, --unfrozen-epochs and --unfreeze >= 0")
    sizes = given(batches_per_epoch=batches_per_epoch, batch_size=batch_size)
    frozen = replace(FROZEN_DEFAULT, epochs=frozen_epochs, seed=seed, **sizes)
    unfrozen = replace(UNFROZEN_DEFAULT, epochs=max(1, unfrozen_epochs), seed=seed, **sizes)
    display = progress()  # shown from the first bar on, so that errors in the inputs come alone

    def bar(description):
        display.start()
        return Bar(display, description)

    try:
        res, test = train_transfer(expand(inputs), out, labels, init=init, arch=model_type and model_type.value,
                                   frozen=frozen, unfrozen=unfrozen, unfreeze=unfreeze if unfrozen_epochs > 0 else 0,
                                   split=split, fractions=fractions, log=display.console.print, bar=bar,
                                   device=device)
    finally:
        if display.live.is_started:
            display.stop()
    stage = read_model_metadata(res.model_path)["metrics"]["best_stage"]
    print(f"kept epoch {res.best_epoch} of the {stage} stage; model written to {res.model_path}")
    if test is not None:
        print("test split:")
        print(test.to_markdown())


def _train_diffranet(inputs, out, labels, *, model_type, input_size, width, epochs, batch_size, batches_per_epoch,
                     lr_start, lr_end, seed, split, fractions, device):
    """``train --task diffranet``: AlexNet (or the Ke CNN) on the 5 DiffraNet classes (Nawaz et al. 2022 §3.5)."""
    from diffscreen.train.diffranet import PAPER_DEFAULTS, train_diffranet

    d = {**PAPER_DEFAULTS, **given(epochs=epochs, batch_size=batch_size, lr_start=lr_start, lr_end=lr_end,
                                   width=width, input_size=input_size)}
    display = progress()  # shown from the first bar on, so that errors in the inputs come alone

    def bar(description):
        display.start()
        return Bar(display, description)

    try:
        res, test = train_diffranet(expand(inputs), out, labels, arch=model_type.value if model_type else "alexnet",
                                    input_size=d["input_size"], width=d["width"], epochs=d["epochs"],
                                    batch_size=d["batch_size"], batches_per_epoch=batches_per_epoch,
                                    lr_start=d["lr_start"], lr_end=d["lr_end"], seed=seed, split=split,
                                    fractions=fractions, log=display.console.print, bar=bar, device=device)
    finally:
        if display.live.is_started:
            display.stop()
    print(f"best epoch {res.best_epoch}; model written to {res.model_path}")
    if test is not None:
        print(f"test split ({test['n']} frames): 5-class accuracy {test['accuracy']:.3f}, "
              f"hit/miss accuracy {test['hit_miss_accuracy']:.3f}")
