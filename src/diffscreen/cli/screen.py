"""``diffscreen screen``: classify every frame and keep the hits (CNN, peakfinder8, or CDI multi-label)."""

from __future__ import annotations

import sys
from enum import Enum
from pathlib import Path
from typing import List, Optional

import typer

from diffscreen.cli._common import (DASHBOARD_OPTION, EXIT_PARTIAL, EXIT_RUN, MODEL_HELP, Bar, ModelType, Task, expand,
                                    friendly, live_dashboard, progress, report_screen)
from diffscreen.cli._common import device_of, device_option

_PF8 = "peakfinder8 (with --method peakfinder8)"
_DIALS = "DIALS (with --method dials)"


class Method(str, Enum):
    cnn = "cnn"
    peakfinder8 = "peakfinder8"
    dials = "dials"


@friendly
def screen(
    inputs: List[str] = typer.Argument(..., help="Frame files, folders or globs; HDF5 datasets as file.h5:/path."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder for scores.csv, hits.lst, hits.cxi."),
    model: Optional[Path] = typer.Option(None, "--model", "-m", help=MODEL_HELP),
    batch_size: int = typer.Option(16, min=1, help="Frames per forward pass."),
    no_cxi: bool = typer.Option(False, "--no-cxi", help="Do not write hits.cxi (raw pixels of kept frames)."),
    fresh: bool = typer.Option(False, "--fresh", help="Ignore results of an interrupted earlier run."),
    threads: int = typer.Option(0, min=0, help="Torch and BLAS threads (0: PyTorch default; under mpirun each rank's share of the cores)."),
    method: Method = typer.Option(Method.cnn, help="cnn: the model; peakfinder8: Cheetah's spot-finder as hit-finder; dials: DIALS's spot-finder (python3-dials), hit at >= 10 spots, maybe at 4-9 (Ke 2018)."),
    min_spots: Optional[int] = typer.Option(None, "--min-spots", min=0, help="cnn: drop a frame the model keeps when diffscreen's spot finder finds fewer Bragg spots on it off every powder or ice ring and jet streak (Ke 2018: a maybe has 4-9) \\[4]; 0: the model alone."),
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
    dials_settings: Optional[Path] = typer.Option(None, help="JSON of DIALS spot-finding settings (diffscreen.baselines.dials.DialsConfig fields).", rich_help_panel=_DIALS),
    dials_gain: Optional[float] = typer.Option(None, help="Detector gain, ADU per photon \\[the file's, else 1].", rich_help_panel=_DIALS),
    task: Task = typer.Option(Task.crystallography, help="crystallography (hit/maybe/miss), cdi (11 multi-label classes, Zimmermann 2019) or diffranet (5 DiffraNet classes, Nawaz 2022; --model from train --task diffranet)."),
    threshold: float = typer.Option(0.5, help="CDI: probability at which a class label is set."),
    model_type: Optional[ModelType] = typer.Option(None, "--model-type", help="Refuse a model file of another architecture (ke2018, rwd1d or alexnet); the file says which it is."),
    device: Optional[str] = device_option(),
    dashboard: Optional[str] = DASHBOARD_OPTION,
    reference_path: bool = typer.Option(False, "--reference-path", help="Preprocess and classify the reference way (slower; same answers to 1e-4, see docs/throughput.md)."),
    max_frame_pixels: int = typer.Option(100_000_000, "--max-frame-pixels", min=1, help="Refuse frames with more pixels than this (a file's header cannot make diffscreen allocate more)."),
    geom: Optional[Path] = typer.Option(None, "--geom", help="CrystFEL geometry (.geom) of stacked-panel frames (JUNGFRAU, AGIPD, ePix, CSPAD): assemble the panels, mask gaps and bad regions; hits.cxi keeps the stacked panels."),
    detector: Optional[str] = typer.Option(None, "--detector", help="European XFEL: the inputs are run directories; screen this multi-module detector (source-name prefix, e.g. SPB_DET_AGIPD1M-1), read with EXtra-data, assembled with EXtra-geom (--geom: its CrystFEL geometry for EXtra-geom). Needs pip install 'diffscreen\\[euxfel]'."),
    detector_type: Optional[str] = typer.Option(None, "--detector-type", help="With --detector: AGIPD1M, LPD1M, DSSC1M or JUNGFRAU \\[from the name, else from the run]."),
):
    """Classify every frame as hit / maybe / miss and keep the hits.

    Writes OUT/scores.csv (file,frame,p_hit,p_maybe,p_miss, the per-frame numbers
    n_spots,n_spots_no_rings,d_min_A,ice_rings,powder_rings,jet_streak, label),
    OUT/hits.lst (CrystFEL list of kept frames), OUT/hits.cxi (their raw pixels),
    OUT/errors.csv and OUT/summary.json.  A frame is kept when P(hit) + P(maybe)
    > P(miss) (Ke et al. 2018) and diffscreen's spot finder finds at least
    --min-spots Bragg spots on it (4: Ke's "maybe") off every powder or ice ring
    and jet streak; a frame the model keeps with fewer is labelled miss, and its
    n_spots_no_rings column says why.  With --method peakfinder8 a frame is a hit when it has at
    least --min-peaks peaks; scores.csv then holds n_peaks and hits.cxi the
    peaks (Cheetah/CrystFEL layout).  An interrupted run resumes when started
    again; a second run into the same OUT is refused while the first runs.
    Exit status: 0 all screened; 1 finished, but some frames or files could not
    be screened (errors.csv); 2 usage error; 3 run error (output folder, model
    file, disk full).

    --device cpu, cuda, cuda:N or mps runs the network there (default: cuda
    when PyTorch sees a GPU); under mpirun with --device cuda, rank r uses
    cuda:(r % number of GPUs).

    With --task diffranet: a model from `train --task diffranet` (AlexNet,
    Nawaz et al. 2022) gives each frame the 5 DiffraNet class probabilities
    (OUT/scores.csv: p_blank, p_no-crystal, p_weak, p_good, p_strong, label =
    the most probable class); weak, good and strong frames are kept.

    With --task cdi: single-particle coherent-diffraction frames get the 11
    Zimmermann et al. (2019) class probabilities and multi-hot labels in
    OUT/scores.csv (p_<class>, <class> 0/1, labels, rule_violation), plus
    OUT/summary.json; --model is a model from `train --task cdi` (its file
    says whether it takes images or CCF maps), by default the bundled CDI
    model (docs/cdi_model.md).

    With --geom detector.geom the inputs hold stacked panels (N, SS, FS), which
    are assembled with the CrystFEL geometry; its bad regions, no_index panels
    and mask, and the gaps between panels, are masked.  OUT/hits.cxi keeps the
    kept frames' stacked panels, for `indexamajig -g detector.geom` (or
    OUT/hits.geom, written when the data location or mask must differ).

    With --detector NAME the inputs are European XFEL run directories: the
    detector's modules are read with EXtra-data and assembled with EXtra-geom
    (--geom, else a default geometry); frames are numbered train by train, and
    scores.csv names the run directory and that number (diffscreen.io.euxfel).

    Scale-out: `mpirun -n N diffscreen screen ...` shares the frames among N
    MPI ranks (needs mpi4py: pip install 'diffscreen\\[mpi]'); the outputs are
    those of one process.  See docs/scaling.md.
    """
    from diffscreen.screen import screen as run_screen
    from diffscreen.errors import ConfigError, DiffscreenError
    from diffscreen.screen.parallel import launch_rank, limit_threads, mpi_launched, rank_thread_share

    from diffscreen.io.limits import set_max_frame_pixels

    set_max_frame_pixels(max_frame_pixels)
    mpi, root = mpi_launched(), launch_rank() == 0  # under mpirun/srun: ranks share the chunks
    dev = device_of(device)  # an unavailable --device is one line (exit 2), before any output
    if mpi:  # --device cuda: rank r on cuda:(r % GPUs)
        from diffscreen.models.device import rank_device

        dev = rank_device(dev, launch_rank())
    if threads or mpi:
        limit_threads(rank_thread_share(threads))  # an MPI rank: its share of the node's cores unless told
    if model_type is not None:
        from diffscreen.models.types import check_model_type

        check_model_type(model, model_type.value)
    geometry = None
    if detector_type is not None and detector is None:
        raise ConfigError("--detector-type goes with --detector")
    if detector is not None:  # European XFEL runs: io.euxfel reads them and assembles (with --geom, through EXtra-geom)
        from diffscreen.io.euxfel import EuXFELRuns, run_directories

        geometry, geom = EuXFELRuns(detector, detector_type=detector_type, geom=geom), None
    if geom is not None:  # an unusable .geom is one line, before any output
        from diffscreen.io.geom import load_geometry

        geometry = load_geometry(geom)
    specs = expand(inputs) if detector is None else run_directories(inputs)
    if dashboard and (mpi or task is Task.cdi):
        raise ConfigError("--dashboard follows a hit/maybe/miss screen in one process: not with mpirun or --task cdi")
    if task is Task.cdi:
        if mpi:
            raise ConfigError("screen --task cdi runs as one process; start it without mpirun")
        return _screen_cdi(specs, out, model, batch_size, threshold, resume=not fresh, geom=geometry, device=dev)
    if task is Task.diffranet and (method is not Method.cnn or model is None):
        raise ConfigError("screen --task diffranet classifies with a DiffraNet model: give --model (a model from "
                          "`diffscreen train --task diffranet`) and no --method")
    finder = None
    if method is Method.peakfinder8:
        finder = _peakfinder8(pf8_settings, adc_threshold=adc_threshold, min_snr=min_snr, min_pixel_count=min_pixels,
                              max_pixel_count=max_pixels, local_bg_radius=local_bg_radius, low_res_A=low_res,
                              high_res_A=high_res, min_peaks=min_peaks, fast_mode=fast)
    elif method is Method.dials:
        from diffscreen.baselines.dials import dials_finder

        finder = dials_finder(dials_settings, gain=dials_gain)
    model_file = model  # what the dashboard's Grad-CAM overlays explain
    if finder is None and (reference_path or dev.type != "cpu" or task is Task.diffranet
                           or min_spots is not None):
        from diffscreen.models.inference import Classifier

        model = Classifier(model, fast=not reference_path, device=dev)
        if task is Task.diffranet:  # refuses a model of other classes in one line
            from diffscreen.screen.diffranet import DiffraNetMethod

            finder = DiffraNetMethod(model)
        elif min_spots is not None:
            from diffscreen.screen.method import CNNMethod

            finder = CNNMethod(model, min_spots=min_spots)
    if not root:  # MPI ranks > 0: no progress bar or summary; rank 0 reports for all
        try:
            summary = run_screen(specs, out, model=model, method=finder, batch_size=batch_size, resume=not fresh,
                                 write_cxi=not no_cxi, geom=geometry)
        except DiffscreenError:  # rank 0 prints it ("rank k failed: ..."), once
            raise typer.Exit(EXIT_RUN)
        raise typer.Exit(EXIT_PARTIAL if summary.n_error else 0)
    with progress() as p:
        with live_dashboard(dashboard, p.console, Path(out).name, model_file, overlays=finder is None) as observer:
            summary = run_screen(
                specs, out, model=model, method=finder, batch_size=batch_size, resume=not fresh, write_cxi=not no_cxi,
                progress=Bar(p, "screening"), geom=geometry, observer=observer,
            )
    report_screen(summary, out)
    if summary.n_error:
        raise typer.Exit(EXIT_PARTIAL)


def _screen_cdi(specs, out, model, batch_size, threshold, *, resume=True, geom=None, device=None):
    """``screen --task cdi``: multi-label screening (Zimmermann et al. 2019)."""
    from diffscreen.screen import load_cdi_model, screen_cdi

    bundle = load_cdi_model(model)  # refuse a missing or non-CDI model before any output
    if device is not None:
        bundle.model.to(device)  # predict_arrays moves each batch to the network's device
    with progress() as p:
        summ = screen_cdi(specs, out, model=bundle, batch_size=batch_size, threshold=threshold, resume=resume,
                          progress=Bar(p, "screening (cdi)"), geom=geom)
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
