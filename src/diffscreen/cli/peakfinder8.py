"""``diffscreen tune-peakfinder8``: peakfinder8 settings tuned on labelled frames (the peer hit-finder)."""

from __future__ import annotations

from pathlib import Path
from typing import List

import typer

from diffscreen.cli._common import expand, friendly, progress


@friendly
def tune_peakfinder8(
    inputs: List[str] = typer.Argument(..., help="Labelled validation frames: simulated .cxi runs, or files with --labels."),
    out: Path = typer.Option(..., "--out", "-o", help="Settings file to write (.json), for screen --pf8-settings."),
    labels: List[Path] = typer.Option([], "--labels", "-l", help="Label files: expert_annotation.txt or CSV file,frame,label."),
    max_frames: int = typer.Option(200, help="Use at most this many labelled frames (evenly spaced)."),
    min_pixels: int = typer.Option(2, help="Minimum pixels per peak (fixed, not tuned)."),
    max_pixels: int = typer.Option(30, help="Maximum pixels per peak (fixed, not tuned)."),
    fast: bool = typer.Option(False, "--fast/--no-fast", help="Tune peakfinder8's fast mode."),
):
    """Tune peakfinder8's ADC threshold, minimum SNR and hit threshold on labelled frames.

    A grid search maximising the balanced accuracy of "at least min_peaks
    peaks" against "hit or maybe", as Ke et al. (2018) tuned DIALS per run.
    Give it validation frames only, never the frames you test on.
    """
    import json

    import numpy as np

    from diffscreen.baselines import Peakfinder8Config, tune_peakfinder8
    from diffscreen.io.atomic import atomic_write_text
    from diffscreen.io.frame import CLASS_NAMES, check_frame
    from diffscreen.io.sources import read_frame
    from diffscreen.train import collect_samples

    samples, info = collect_samples(expand(inputs), [str(x) for x in labels])
    pick = np.unique(np.linspace(0, len(samples) - 1, min(max_frames, len(samples))).round().astype(int))
    chosen = [samples[k] for k in pick]
    frames = [check_frame(read_frame(s.source, s.index)) for s in chosen]
    base = Peakfinder8Config(min_pixel_count=min_pixels, max_pixel_count=max_pixels, fast_mode=fast)
    with progress() as p:
        task = p.add_task("tuning peakfinder8", total=20 * len(frames), rate="")
        cfg, grid = tune_peakfinder8(frames, [CLASS_NAMES[s.label] for s in chosen], base=base,
                                     progress=lambda n: p.advance(task, n))
    best = max(grid, key=lambda g: g["balanced_accuracy"])
    record = {"peakfinder8": cfg.to_dict(), "balanced_accuracy": best["balanced_accuracy"], "grid": grid,
              "tuned_on": {"inputs": info["inputs"], "n_frames": len(frames), "label_files": [str(x) for x in labels]}}
    atomic_write_text(out, json.dumps(record, indent=2))
    print(f"adc_threshold {cfg.adc_threshold:.1f} ADU, min_snr {cfg.min_snr:g}, min_peaks {cfg.min_peaks}: "
          f"balanced accuracy {best['balanced_accuracy']:.3f} on {len(frames)} frames; written to {out}")
