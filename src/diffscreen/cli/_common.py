"""The ``diffscreen`` command line.

Only argument parsing and wiring live here; ``--help`` imports nothing heavy
(torch, h5py and the science modules load inside each command).  A user
mistake or a bad input ends in one ``ERROR: ...`` line and a non-zero exit
status, never a traceback.
"""

from __future__ import annotations

import dataclasses

import functools
import sys
from enum import Enum
from pathlib import Path
from typing import List, Optional, Tuple

import typer

from diffscreen.errors import EXIT_RUN, EXIT_USAGE as EXIT_ERROR  # numbers only: loads nothing heavy

app = typer.Typer(
    name="diffscreen",
    help="Screen X-ray diffraction frames with convolutional neural networks: keep the hits, drop the misses.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

benchmark_app = typer.Typer(
    help="Rerun a paper's experiments on simulated runs and write docs/benchmarks/<paper>.md.",
    no_args_is_help=True,
)
app.add_typer(benchmark_app, name="benchmark")

EXIT_PARTIAL = 1  # finished, but some frames or files failed
EXIT_INTERNAL = 4  # a bug in diffscreen: the traceback goes to a file to report


def _err(msg: str) -> None:
    print(f"ERROR: {msg}", file=sys.stderr)


def friendly(fn):
    """Turn errors into one ``ERROR:`` line and the documented exit status (README, "Exit status").

    A diffscreen error exits with its ``exit_status``: 3 for a run error
    (output folder, model file, disk full), 2 for a usage error; memory
    exhaustion exits 3; file-system errors on user input 2; anything else is
    a bug: one line, the traceback in a file, exit 4.
    """

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        import errno

        from diffscreen.errors import DiffscreenError

        try:
            return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort, SystemExit):
            raise
        except DiffscreenError as exc:
            _err(str(exc))
            raise typer.Exit(exc.exit_status)
        except MemoryError:
            _err("out of memory; screen fewer frames at once (--batch-size) or lower --max-frame-pixels")
            raise typer.Exit(EXIT_RUN)
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS):
                _err(f"{exc.filename or 'output'}: cannot write ({exc.strerror})")
                raise typer.Exit(EXIT_RUN)
            _err(f"{exc.filename}: {exc.strerror}" if exc.filename else str(exc))
        except KeyboardInterrupt:
            _err("interrupted; run the same command again to resume")
        except Exception as exc:  # noqa: BLE001 - a bug: report it without a wall of text
            _err(f"internal error ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); "
                 f"the traceback is in {_save_traceback()}; please report it")
            raise typer.Exit(EXIT_INTERNAL)
        raise typer.Exit(EXIT_ERROR)

    return wrapper


def _save_traceback() -> str:
    """Write the current exception's traceback to a temporary file; its path."""
    import tempfile
    import traceback

    fd, path = tempfile.mkstemp(prefix="diffscreen-crash-", suffix=".txt")
    with open(fd, "w") as fh:
        fh.write(traceback.format_exc())
    return path


def _progress():
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from rich.console import Console

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=False,
    )


class _Bar:
    """Adapter from the library's ``progress(total=, advance=)`` callbacks to a rich bar."""

    def __init__(self, progress, description: str, unit: str = "frames"):
        import time

        self.p, self.unit, self._time = progress, unit, time
        self.task = progress.add_task(description, total=None, rate="")
        self.t0, self.n = time.time(), 0

    def __call__(self, total=None, advance=None):
        if total is not None:
            self.p.update(self.task, total=total)
        if advance:
            self.n += advance
            dt = self._time.time() - self.t0
            self.p.update(self.task, advance=advance, rate=f"{self.n / dt:.1f} {self.unit}/s" if dt > 0 else "")


def _expand(inputs: List[str]) -> List[str]:
    from diffscreen.io import expand_inputs

    specs = expand_inputs(inputs)
    if not specs:
        from diffscreen.errors import ConfigError

        raise ConfigError(f"no readable frame files in {', '.join(inputs)}")
    return specs


class Contrast(str, Enum):
    lcn = "lcn"
    linear = "linear"


class Recipe(str, Enum):
    significance = "significance"
    ke2018 = "ke2018"


class Task(str, Enum):
    crystallography = "crystallography"
    cdi = "cdi"


class Split(str, Enum):
    order = "order"
    random = "random"


class Method(str, Enum):
    cnn = "cnn"
    peakfinder8 = "peakfinder8"


class ModelType(str, Enum):
    """Hit/maybe/miss architectures: the Ke 2018 2-D CNN, or the Xie 2022 §3.4.2 1-D CNN on row ranges."""

    ke2018 = "ke2018"
    rwd1d = "rwd1d"


_PF8 = "peakfinder8 (with --method peakfinder8)"
#: --model help, shared by every command that takes a model
MODEL_HELP = ("Model file (.safetensors), or a bundled model: default (720², most accurate) or fast (360², 2.5× "
              "faster); default: default.")


@app.command()
@friendly
def screen(
    inputs: List[str] = typer.Argument(..., help="Frame files, folders or globs; HDF5 datasets as file.h5:/path."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder for scores.csv, hits.lst, hits.cxi."),
    model: Optional[Path] = typer.Option(None, "--model", "-m", help=MODEL_HELP),
    batch_size: int = typer.Option(16, min=1, help="Frames per forward pass."),
    no_cxi: bool = typer.Option(False, "--no-cxi", help="Do not write hits.cxi (raw pixels of kept frames)."),
    fresh: bool = typer.Option(False, "--fresh", help="Ignore results of an interrupted earlier run."),
    threads: int = typer.Option(0, min=0, help="Torch and BLAS threads (0: PyTorch default; under mpirun each rank's share of the cores)."),
    method: Method = typer.Option(Method.cnn, help="cnn: the model; peakfinder8: Cheetah's spot-finder as hit-finder."),
    pf8_settings: Optional[Path] = typer.Option(None, help="JSON of peakfinder8 settings (e.g. from tune-peakfinder8); options below override it.", rich_help_panel=_PF8),
    adc_threshold: Optional[float] = typer.Option(None, help="Minimum peak pixel value, ADU [100].", rich_help_panel=_PF8),
    min_snr: Optional[float] = typer.Option(None, help="Minimum signal-to-noise ratio [5].", rich_help_panel=_PF8),
    min_pixels: Optional[int] = typer.Option(None, help="Minimum pixels per peak [2].", rich_help_panel=_PF8),
    max_pixels: Optional[int] = typer.Option(None, help="Maximum pixels per peak [30].", rich_help_panel=_PF8),
    local_bg_radius: Optional[int] = typer.Option(None, help="Local background radius, px [4].", rich_help_panel=_PF8),
    low_res: Optional[float] = typer.Option(None, help="Low-resolution limit (inner), Å.", rich_help_panel=_PF8),
    high_res: Optional[float] = typer.Option(None, help="High-resolution limit (outer), Å.", rich_help_panel=_PF8),
    min_peaks: Optional[int] = typer.Option(None, help="Peaks that make a hit [10].", rich_help_panel=_PF8),
    fast: Optional[bool] = typer.Option(None, "--fast/--no-fast", help="peakfinder8 fast mode (sampled radial statistics).", rich_help_panel=_PF8),
    task: Task = typer.Option(Task.crystallography, help="crystallography (hit/maybe/miss) or cdi (11 multi-label classes, Zimmermann 2019)."),
    threshold: float = typer.Option(0.5, help="CDI: probability at which a class label is set."),
    model_type: Optional[ModelType] = typer.Option(None, "--model-type", help="Refuse a model file of another architecture (ke2018 or rwd1d); the file says which it is."),
    reference_path: bool = typer.Option(False, "--reference-path", help="Preprocess and classify the reference way (slower; same answers to 1e-4, see docs/throughput.md)."),
    max_frame_pixels: int = typer.Option(100_000_000, "--max-frame-pixels", min=1, help="Refuse frames with more pixels than this (a file's header cannot make diffscreen allocate more)."),
):
    """Classify every frame as hit / maybe / miss and keep the hits.

    Writes OUT/scores.csv (file,frame,p_hit,p_maybe,p_miss,label), OUT/hits.lst
    (CrystFEL list of kept frames), OUT/hits.cxi (their raw pixels), OUT/errors.csv
    and OUT/summary.json.  A frame is kept when P(hit) + P(maybe) > P(miss)
    (Ke et al. 2018).  With --method peakfinder8 a frame is a hit when it has at
    least --min-peaks peaks; scores.csv then holds n_peaks and hits.cxi the
    peaks (Cheetah/CrystFEL layout).  An interrupted run resumes when started
    again; a second run into the same OUT is refused while the first runs.
    Exit status: 0 all screened; 1 finished, but some frames or files could not
    be screened (errors.csv); 2 usage error; 3 run error (output folder, model
    file, disk full).

    With --task cdi: single-particle coherent-diffraction frames get the 11
    Zimmermann et al. (2019) class probabilities and multi-hot labels in
    OUT/scores.csv (p_<class>, <class> 0/1, labels, rule_violation), plus
    OUT/summary.json; --model must be a model from `train --task cdi` (its
    file says whether it takes images or CCF maps).

    Scale-out: `mpirun -n N diffscreen screen ...` shares the frames among N
    MPI ranks (needs mpi4py: pip install 'diffscreen[mpi]'); the outputs are
    those of one process.  See docs/scaling.md.
    """
    from diffscreen.screen import screen as run_screen
    from diffscreen.errors import ConfigError, DiffscreenError
    from diffscreen.screen.parallel import launch_rank, limit_threads, mpi_launched, rank_thread_share

    from diffscreen.io.limits import set_max_frame_pixels

    set_max_frame_pixels(max_frame_pixels)
    mpi, root = mpi_launched(), launch_rank() == 0  # under mpirun/srun: ranks share the chunks
    if threads or mpi:
        limit_threads(rank_thread_share(threads))  # an MPI rank: its share of the node's cores unless told
    if model_type is not None:
        from diffscreen.cli_adapt import check_model_type

        check_model_type(model, model_type.value)
    specs = _expand(inputs)
    if task is Task.cdi:
        if mpi:
            raise ConfigError("screen --task cdi runs as one process; start it without mpirun")
        return _screen_cdi(specs, out, model, batch_size, threshold, resume=not fresh)
    finder = None
    if method is Method.peakfinder8:
        finder = _peakfinder8(pf8_settings, adc_threshold=adc_threshold, min_snr=min_snr, min_pixel_count=min_pixels,
                              max_pixel_count=max_pixels, local_bg_radius=local_bg_radius, low_res_A=low_res,
                              high_res_A=high_res, min_peaks=min_peaks, fast_mode=fast)
    if reference_path and finder is None:
        from diffscreen.models.inference import Classifier

        model = Classifier(model, fast=False)
    if not root:  # MPI ranks > 0: no progress bar or summary; rank 0 reports for all
        try:
            summary = run_screen(specs, out, model=model, method=finder, batch_size=batch_size, resume=not fresh,
                                 write_cxi=not no_cxi)
        except DiffscreenError:  # rank 0 prints it ("rank k failed: ..."), once
            raise typer.Exit(EXIT_RUN)
        raise typer.Exit(EXIT_PARTIAL if summary.n_error else 0)
    with _progress() as p:
        summary = run_screen(
            specs, out, model=model, method=finder, batch_size=batch_size, resume=not fresh, write_cxi=not no_cxi,
            progress=_Bar(p, "screening"),
        )
    _report_screen(summary, out)
    if summary.n_error:
        raise typer.Exit(EXIT_PARTIAL)


def _screen_cdi(specs, out, model, batch_size, threshold, *, resume=True):
    """``screen --task cdi``: multi-label screening (diffscreen.screen.cdi)."""
    from diffscreen.screen.cdi import load_cdi_model, screen_cdi

    bundle = load_cdi_model(model)  # refuse a missing or non-CDI model before any output
    with _progress() as p:
        summ = screen_cdi(specs, out, model=bundle, batch_size=batch_size, threshold=threshold, resume=resume,
                          progress=_Bar(p, "screening (cdi)"))
    for f, i, e in summ.errors[:20]:
        print(f"ERROR: {f if i < 0 else f'{f}, frame {i}'}: {e}", file=sys.stderr)
    print(summ.text())
    print(f"outputs in {out}/: scores.csv, summary.json, errors.csv")
    if summ.n_error:
        raise typer.Exit(EXIT_PARTIAL)


def _peakfinder8(settings_file, **overrides):
    """A Peakfinder8 from a settings JSON (optional) and the CLI options given."""
    import json

    from diffscreen.baselines import Peakfinder8, Peakfinder8Config
    from diffscreen.errors import ConfigError

    base = {}
    if settings_file is not None:
        try:
            base = json.loads(Path(settings_file).read_text())
        except ValueError as exc:
            raise ConfigError(f"{settings_file}: not a JSON settings file ({exc})") from None
        base = base.get("peakfinder8", base)  # a tuning record or the bare settings
    base.update({k: v for k, v in overrides.items() if v is not None})
    return Peakfinder8(Peakfinder8Config.from_dict(base))


def _report_screen(summary, out) -> None:
    for f, i, e in summary.errors[:20]:
        where = f if i < 0 else f"{f}, frame {i}"
        kind, _, text = e.partition(": ") if e.startswith("warning: ") else ("ERROR", "", e)
        print(f"{kind.upper()}: {where}: {text}", file=sys.stderr)
    if len(summary.errors) > 20:
        print(f"... {len(summary.errors) - 20} more in {Path(out) / 'errors.csv'}", file=sys.stderr)
    print(summary.text())
    print(f"outputs in {out}/: scores.csv, hits.lst" + (", hits.cxi" if (Path(out) / "hits.cxi").exists() else ""))


@app.command()
@friendly
def simulate(
    out: Optional[Path] = typer.Argument(None, help="Output CXI file (.cxi)."),
    preset: str = typer.Option("rayonix", help="Detector/experiment preset (see --list-presets)."),
    frames: int = typer.Option(100, "--frames", "-n", min=1, help="Number of frames."),
    seed: int = typer.Option(0, help="Random seed; the same seed gives the same frames."),
    list_presets: bool = typer.Option(False, "--list-presets", help="List the presets and exit."),
    task: Task = typer.Option(Task.crystallography, help="crystallography (Bragg frames) or cdi (single-particle patterns, 11 multi-hot labels)."),
    size: int = typer.Option(128, help="CDI: frame side in pixels (uniform in q)."),
    radius_nm: float = typer.Option(260.0, help="CDI: median droplet radius, nm (log-normal)."),
    photons: Tuple[float, float] = typer.Option((3e4, 1e6), help="CDI: range of particle photons per frame (log-uniform)."),
    flat_ewald: bool = typer.Option(False, "--flat-ewald", help="CDI: small-angle (flat Ewald sphere) patterns; no Bent/Newton/Asymmetric."),
):
    """Simulate a serial-crystallography run with per-frame hit/maybe/miss labels.

    Physics-based: Bragg spots from a unit cell in a random orientation on the
    Ewald sphere, Wilson intensities, detector PSF, water ring and air scatter,
    Poisson and read noise, gain, saturation and the detector's masks.  Labels
    follow Ke et al. (2018) §3.3.1 (>= 10 detectable spots: hit, 4-9: maybe).
    """
    if task is Task.cdi:
        from diffscreen.errors import ConfigError
        from diffscreen.simulate.cdi import simulate_cdi_run

        if out is None:
            raise ConfigError("give the output file: diffscreen simulate --task cdi OUT.cxi")
        if frames < 1:
            raise ConfigError("--frames must be >= 1")
        with _progress() as p:
            bar = _Bar(p, f"simulating {frames} CDI frames")
            bar(total=frames)
            done = [0]

            def cb(n):
                bar(advance=n - done[0])
                done[0] = n

            path = simulate_cdi_run(out, frames, seed=seed, progress=cb, size=size, radius_nm=radius_nm,
                                    photons=tuple(photons), ewald=not flat_ewald)
        print(f"wrote {frames} CDI frames to {path}")
        return
    from diffscreen.simulate import PRESETS

    if list_presets:
        for name, p in PRESETS.items():
            print(f"{name}: {p.detector}, {p.shape[1]}x{p.shape[0]} px of {p.pixel_size_mm} mm. {p.notes}")
        return
    if out is None:
        from diffscreen.errors import ConfigError

        raise ConfigError("give the output file: diffscreen simulate OUT.cxi")
    with _progress() as p:
        path = _simulate_with_bar(p, preset, frames, out, seed)
    print(f"wrote {frames} frames to {path}")


def _simulate_with_bar(progress, preset: str, frames: int, out, seed: int):
    """Check the arguments, then simulate a run with a progress bar."""
    from diffscreen.errors import ConfigError
    from diffscreen.simulate import PRESETS, simulate_run

    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; known: {', '.join(PRESETS)}")
    if frames < 1:
        raise ConfigError("--frames must be >= 1")
    bar = _Bar(progress, f"simulating {frames} {preset} frames")
    bar(total=frames)
    done = [0]

    def cb(n):  # simulate_run reports frames done so far; the bar wants increments
        bar(advance=n - done[0])
        done[0] = n

    return simulate_run(preset, frames, out, seed=seed, progress=cb)


@app.command()
@friendly
def train(
    inputs: List[str] = typer.Argument(..., help="Labelled data: simulated .cxi runs, or HDF5/CBF files with --labels."),
    out: Path = typer.Option(..., "--out", "-o", help="Model file to write (.safetensors)."),
    labels: List[Path] = typer.Option([], "--labels", "-l", help="Label files: expert_annotation.txt or CSV file,frame,label."),
    epochs: Optional[int] = typer.Option(None, help="Epochs (Ke: 120; CDI: 200)."),
    batches_per_epoch: Optional[int] = typer.Option(None, help="Class-balanced mini-batches per epoch (Ke: 100; with --init: 20)."),
    batch_size: Optional[int] = typer.Option(None, help="Frames per mini-batch (Ke: 64; CDI: 48)."),
    lr_start: float = typer.Option(0.1, help="Learning rate of the first epoch (Ke: 0.1 at batch 64)."),
    lr_end: float = typer.Option(1e-4, help="Learning rate of the last epoch (Ke: 1e-4); exponential in between."),
    seed: int = typer.Option(0, help="Seed for initialisation, batches and crop shifts."),
    split: Split = typer.Option(Split.order, help="Train/val/test split: in file order per file (fv5080) or random."),
    fractions: Optional[Tuple[float, float, float]] = typer.Option(None, help="Train, validation, test fractions (Ke: 0.5 0.2 0.3; with --init: 0.8 0.2 0)."),
    first_kernel: int = typer.Option(7, help="First convolution kernel: 7 (fv5080 code) or 3 (paper text)."),
    preprocess: Recipe = typer.Option(Recipe.ke2018, "--preprocess", help="ke2018: Ke §2.2 GCN + LCN at 720² (the paper's recipe, the bundled default model's); significance: per-pixel significance over resolution shells, max-pooled (the bundled fast model's recipe; 360² at 2× Ke's reciprocal pixel unless --input-size)."),
    contrast: Contrast = typer.Option(Contrast.lcn, help="--preprocess ke2018: LCN (Ke §2.2) or linear contrast (Ke Table 8)."),
    pixel_scaling: bool = typer.Option(False, help="Scale by pixel count (fv5080: whole frame to 960) instead of physically."),
    input_size: Optional[int] = typer.Option(None, help="Network input side in pixels (Ke: 720; CDI: 224)."),
    workers: int = typer.Option(1, help="Worker processes reading and preprocessing frames."),
    fresh: bool = typer.Option(False, "--fresh", help="Ignore a checkpoint of an interrupted run."),
    task: Task = typer.Option(Task.crystallography, help="crystallography (Ke 2018 CNN) or cdi (Zimmermann 2019 ResNet18, multi-label)."),
    ccf: bool = typer.Option(False, "--ccf", help="CDI: train on CCF maps (§5.3) instead of diffraction images."),
    alpha: str = typer.Option("0.2", help="CDI: α of the logarithmic activation (Eq. 11), or 'none' (unmodified ResNet18)."),
    width: int = typer.Option(64, help="CDI: channels of the first ResNet stage (paper 64; CPU recipe 16)."),
    milestones: str = typer.Option("50,100,150", help="CDI: epochs after which the learning rate is divided by 10."),
    val_fraction: float = typer.Option(0.15, help="CDI: random validation fraction (paper: 15%)."),
    model_type: Optional[ModelType] = typer.Option(None, "--model-type", help="ke2018 (2-D CNN, default) or rwd1d (1-D CNN on row ranges, Xie 2022 §3.4.2)."),
    init: Optional[Path] = typer.Option(None, "--init", help="Transfer learning (Xie 2022 §2.3.1): start from this trained model; labels via --labels.", rich_help_panel="Transfer learning"),
    frozen_epochs: int = typer.Option(10, help="--init stage 1: epochs with the convolutional base frozen (Adam 1e-2 → 1e-3).", rich_help_panel="Transfer learning"),
    unfrozen_epochs: int = typer.Option(10, help="--init stage 2: epochs with the top blocks unfrozen (Adam 1e-4 → 1e-5).", rich_help_panel="Transfer learning"),
    unfreeze: int = typer.Option(2, help="--init stage 2: top convolutional blocks to unfreeze (Xie: 1 or 2; 0 skips stage 2).", rich_help_panel="Transfer learning"),
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

    Multi-GPU / multi-process: `torchrun --nproc_per_node N -m diffscreen.cli
    train ...` trains one model with DistributedDataParallel (Ke recipe only;
    --batch-size a multiple of N).  See docs/scaling.md.
    """
    if task is Task.cdi or init is not None:
        from diffscreen.train.distributed import torchrun_launched

        if torchrun_launched():
            from diffscreen.errors import ConfigError

            raise ConfigError("only the Ke et al. (2018) CNN trains under torchrun; start this one without it")
    if task is Task.cdi:
        return _train_cdi(inputs, out, epochs=epochs or 200, batch_size=batch_size or 48, lr=lr_start, seed=seed,
                          ccf=ccf, alpha=alpha, width=width, milestones=milestones, input_size=input_size or 224,
                          val_fraction=val_fraction, fresh=fresh)
    if init is not None:
        from diffscreen.cli_adapt import train_transfer

        return train_transfer(inputs, out, labels, init=init, model_type=model_type, frozen_epochs=frozen_epochs,
                              unfrozen_epochs=unfrozen_epochs, unfreeze=unfreeze,
                              batches_per_epoch=batches_per_epoch or 20, batch_size=batch_size or 32, seed=seed,
                              split=split.value, fractions=fractions or (0.8, 0.2, 0.0))
    batches_per_epoch = 100 if batches_per_epoch is None else batches_per_epoch
    fractions = (0.5, 0.2, 0.3) if fractions is None else fractions
    epochs = 120 if epochs is None else epochs
    batch_size = 64 if batch_size is None else batch_size
    from diffscreen.preprocess import PreprocessConfig
    from diffscreen.train import TrainConfig, collect_samples, split_samples, train_model
    from diffscreen.train.distributed import launch_rank

    specs = _expand(inputs)
    samples, info = collect_samples(specs, [str(x) for x in labels])
    tr, va, te = split_samples(samples, fractions, mode=split.value, seed=seed)
    root = launch_rank() == 0  # under torchrun: rank 0 logs and writes the model, the others train silently
    if root:
        print(f"{len(samples)} labelled frames {info['counts']}: train {len(tr)}, validation {len(va)}, test {len(te)}")
    cfg = TrainConfig(epochs=epochs, batches_per_epoch=batches_per_epoch, batch_size=batch_size, seed=seed,
                      lr_start=lr_start, lr_end=lr_end,
                      first_kernel=first_kernel, workers=workers,
                      arch=model_type.value if model_type is not None else "ke2018")
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
        train_model(tr, va, out, config=cfg, preprocess=pcfg, test=te, data_description=info, resume=not fresh)
        return
    with _progress() as p:
        task = p.add_task("training", total=epochs * batches_per_epoch, rate="")

        def cb(epoch, batch, n):
            p.update(task, completed=(epoch - 1) * n + batch, rate=f"epoch {epoch}")

        res = train_model(tr, va, out, config=cfg, preprocess=pcfg, test=te, data_description=info,
                          resume=not fresh, progress=cb, log=p.console.print)
    print(f"best epoch {res.best_epoch}; model written to {res.model_path}")
    if res.test_report is not None:
        print("test split:")
        print(res.test_report.to_markdown())


def _train_cdi(inputs, out, *, epochs, batch_size, lr, seed, ccf, alpha, width, milestones, input_size,
               val_fraction, fresh):
    """``train --task cdi``: read simulated CDI runs, preprocess, train, write the model."""
    import numpy as np

    from diffscreen.errors import ConfigError
    from diffscreen.preprocess.cdi import CDIPreprocessConfig, prepare_cdi_batch
    from diffscreen.train.multilabel import MultiLabelConfig, load_cdi_runs, train_multilabel

    a = None
    if alpha.strip().lower() not in ("none", "unmodified", "off"):
        try:
            a = float(alpha)
        except ValueError:
            raise ConfigError(f"--alpha must be a number or 'none', got {alpha!r}") from None
    try:
        ms = tuple(int(x) for x in milestones.split(",") if x.strip())
    except ValueError:
        raise ConfigError(f"--milestones must be comma-separated epochs, got {milestones!r}") from None
    if not (0 < val_fraction < 1):
        raise ConfigError("--val-fraction must be in (0, 1)")
    files = [s for s in inputs]
    x, mask, y, info = load_cdi_runs(files)
    pre = CDIPreprocessConfig(input_size=input_size, mode="ccf" if ccf else "image")
    X = prepare_cdi_batch(x, pre, mask=mask)
    perm = np.random.default_rng(seed).permutation(len(X))
    nv = max(1, int(round(val_fraction * len(X))))
    va, tr = perm[:nv], perm[nv:]
    info["split"] = {"mode": "random", "val_fraction": val_fraction, "seed": seed}
    print(f"{len(X)} CDI frames: train {len(tr)}, validation {len(va)}; input {pre.mode} {input_size}px")
    cfg = MultiLabelConfig(epochs=epochs, milestones=ms, batch_size=batch_size, lr=lr, alpha=a, width=width,
                           seed=seed)
    with _progress() as p:
        res = train_multilabel(X[tr], y[tr], X[va], y[va], out, config=cfg, preprocess=pre, data_description=info,
                               resume=not fresh, log=p.console.print)
    print(f"best epoch {res.best.get('epoch')}: validation accuracy {res.best.get('accuracy', float('nan')):.3f} "
          f"precision {res.best.get('precision', float('nan')):.3f} recall {res.best.get('recall', float('nan')):.3f}")
    print(f"model written to {res.model_path}")


@app.command()
@friendly
def evaluate(
    inputs: List[str] = typer.Argument(None, help="Labelled frame files (simulated .cxi runs carry their labels)."),
    labels: List[Path] = typer.Option([], "--labels", "-l", help="Label files (expert_annotation.txt, CSV)."),
    model: Optional[Path] = typer.Option(None, "--model", "-m", help=MODEL_HELP),
    scores: Optional[Path] = typer.Option(None, help="Score an existing scores.csv instead of running a model."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Write the report here (.json and .md beside it)."),
    batch_size: int = typer.Option(16, min=1, help="Frames per forward pass."),
    task: Task = typer.Option(Task.crystallography, help="cdi: score a `screen --task cdi` scores.csv against simulated CDI runs."),
):
    """Confusion matrices (3-class and Hit-or-Maybe vs Miss, Ke Table 3), precision, recall, accuracy.

    With --task cdi: give the simulated CDI runs and --scores OUT/scores.csv
    of `screen --task cdi`; prints the multi-label accuracy, precision and
    recall (Zimmermann et al. 2019 §3.2) beside the all-negative predictor,
    per class, and the rate of label sets that break a Fig. 2 rule.
    """
    import json

    from diffscreen.evaluate import evaluate_labels
    from diffscreen.io.atomic import atomic_write_text

    if task is Task.cdi:
        from diffscreen.errors import ConfigError
        from diffscreen.evaluate.multilabel import cdi_report_markdown, evaluate_cdi_scores

        if scores is None or not inputs:
            raise ConfigError("--task cdi needs the simulated runs and --scores OUT/scores.csv of `screen --task cdi`")
        res = evaluate_cdi_scores(scores, _expand(inputs))
        text = cdi_report_markdown(res)
        print(text)
        if out is not None:
            atomic_write_text(Path(out).with_suffix(".json"), json.dumps(res, indent=2, default=float))
            atomic_write_text(Path(out).with_suffix(".md"), text + "\n")
        return

    if scores is not None:
        true, pred = _labels_for_scores(scores, inputs or [], labels)
    else:
        if not inputs:
            from diffscreen.errors import ConfigError

            raise ConfigError("give labelled input files, or --scores scores.csv")
        true, pred = _predict_labelled(_expand(inputs), labels, model, batch_size)
    rep = evaluate_labels(true, pred)
    text = rep.to_markdown()
    print(text)
    if out is not None:
        out = Path(out)
        atomic_write_text(out.with_suffix(".json"), json.dumps(rep.to_dict(), indent=2, default=float))
        atomic_write_text(out.with_suffix(".md"), text + "\n")
        print(f"report written to {out.with_suffix('.json')} and {out.with_suffix('.md')}")


def _predict_labelled(specs, labels, model, batch_size):
    import numpy as np

    from diffscreen.models.decision import decide
    from diffscreen.models.inference import Classifier
    from diffscreen.train import FrameDataset, collect_samples

    samples, _ = collect_samples(specs, [str(x) for x in labels])
    clf = Classifier(model)
    data = FrameDataset(samples, clf.preprocessor)  # keeps each file open across its frames
    true, pred = [], []
    with _progress() as p:
        bar = _Bar(p, "evaluating")
        bar(total=len(samples))
        for b in range(0, len(samples), batch_size):
            ks = range(b, min(b + batch_size, len(samples)))
            x = np.stack([data[k][0].numpy() for k in ks])
            _, lab = decide(clf.predict_batch(x), clf.class_names)
            pred.extend(lab)
            true.extend(clf.class_names[samples[k].label] for k in ks)
            bar(advance=len(ks))
    return true, pred


def _labels_for_scores(scores_csv, inputs, labels):
    from diffscreen.errors import LabelError
    from diffscreen.io.labels import LabelTable, read_labels
    from diffscreen.io.scores import read_scores

    records = []
    for lf in labels:
        records.extend(read_labels(str(lf)))
    for spec in inputs:
        records.extend(read_labels(spec))
    table = LabelTable.from_records(records)
    true, pred = [], []
    for row in read_scores(scores_csv):
        if row["label"] == "error":
            continue
        t = table.get(row["file"], row.frame)
        if t is not None:
            true.append(t)
            pred.append(row["label"])
    if not true:
        raise LabelError("no frame in the scores file has a label", path=scores_csv)
    return true, pred


@app.command()
@friendly
def demo(
    out: Path = typer.Option(Path("diffscreen-demo"), "--out", "-o", help="Output folder."),
    frames: int = typer.Option(40, "--frames", "-n", min=1, help="Frames to simulate."),
    preset: str = typer.Option("rayonix", help="Simulator preset."),
    seed: int = typer.Option(2026, help="Simulation seed."),
    model: Optional[Path] = typer.Option(None, "--model", "-m", help=MODEL_HELP),
):
    """Simulate a small run, screen it with the bundled model and score it against the truth.

    Writes the simulated run (OUT/run.cxi) and the same outputs as `screen`.
    """
    from diffscreen.evaluate import evaluate_labels
    from diffscreen.screen import screen as run_screen

    out.mkdir(parents=True, exist_ok=True)
    run = out / "run.cxi"
    with _progress() as p:
        _simulate_with_bar(p, preset, frames, run, seed)
        summary = run_screen([str(run)], out, model=model, resume=False, progress=_Bar(p, "screening"))
    _report_screen(summary, out)
    true, pred = _labels_for_scores(out / "scores.csv", [str(run)], [])
    rep = evaluate_labels(true, pred)
    print("\nAgainst the simulator's truth:")
    print(rep.to_markdown())
    truth_rate = sum(t != "miss" for t in true) / len(true)
    print(f"true hit rate {100 * truth_rate:.1f}%, screened hit rate {100 * summary.hit_rate:.1f}%")


@app.command("model-info")
@friendly
def model_info(model: Optional[Path] = typer.Argument(None, help=MODEL_HELP)):
    """Print a model file's architecture, preprocessing, classes, training data and metrics."""
    import json

    from diffscreen.models import read_model_metadata, resolve_model_path

    path = resolve_model_path(model)
    rec = read_model_metadata(path)
    train = rec.get("training", {})
    short = {k: v for k, v in rec.items() if k != "training"}
    short["training"] = {k: v for k, v in train.items() if k != "history"}
    print(f"{path}")
    print(json.dumps(short, indent=2, default=float))


# Commands that live in their own modules (diffscreen/cli_*.py) register
# themselves on `app` / `benchmark_app` when imported here; like the commands
# above they import nothing heavy at module level.
# (one import line per module, e.g. `from diffscreen import cli_explain  # noqa: E402,F401`)
from diffscreen import cli_explain  # noqa: E402,F401
from diffscreen import cli_cdi  # noqa: E402,F401
from diffscreen import cli_baselines  # noqa: E402,F401
from diffscreen import cli_xie2022  # noqa: E402,F401
from diffscreen import cli_adapt  # noqa: E402,F401
from diffscreen import cli_generalisation  # noqa: E402,F401


def main(argv=None) -> int:
    """Entry point of the ``diffscreen`` command."""
    try:
        app(args=argv, prog_name="diffscreen", standalone_mode=True)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return 0


if __name__ == "__main__":
    sys.exit(main())


def _console_main() -> None:  # console-script wrapper: exit with main()'s status
    code = main()
    if code == EXIT_RUN:
        # A run error may leave an HDF5 file that cannot be flushed (disk full); its temporary file is
        # gone already, but HDF5 would crash (SIGSEGV) trying to flush it when the interpreter exits.
        import os

        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)
