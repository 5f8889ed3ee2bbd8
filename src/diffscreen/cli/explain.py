"""``diffscreen explain`` (a heat map of why each frame was kept) and ``diffscreen report`` (one HTML page)."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import List, Optional

import typer

from diffscreen.cli._common import EXIT_PARTIAL, MODEL_HELP, Bar, device_of, device_option, expand, friendly, progress


class Method(str, Enum):
    gradcam = "gradcam"
    gradcampp = "gradcam++"
    guided_gradcam = "guided-gradcam"
    guided_backprop = "guided-backprop"
    saliency = "saliency"
    inversion = "inversion"


@friendly
def explain(
    inputs: List[str] = typer.Argument(..., help="Frame files, folders or globs; HDF5 datasets as file.h5:/path."),
    method: Method = typer.Option(Method.gradcam, "--method", help="Explanation method."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder for the PNGs and explain_<method>.h5."),
    model: Optional[Path] = typer.Option(None, "--model", "-m", help=MODEL_HELP),
    target: Optional[str] = typer.Option(
        None, help="Class to explain (name or index); default: the predicted one (CDI: the most probable label)."),
    layer: Optional[str] = typer.Option(None, help="CAM layer (dotted module name); default: last conv block."),
    max_frames: Optional[int] = typer.Option(None, help="Explain at most this many frames."),
    batch_size: int = typer.Option(4, min=1, help="Frames per forward/backward pass."),
    steps: int = typer.Option(200, help="Inversion: Adam steps per block."),
    threads: int = typer.Option(0, min=0, help="Torch threads (0: PyTorch default)."),
    geom: Optional[Path] = typer.Option(None, "--geom", help="CrystFEL geometry (.geom) of stacked-panel frames: assemble the panels first (gaps and bad regions masked)."),
    device: Optional[str] = device_option(),
):
    """Show why each frame was kept or rejected: a heat map over every frame.

    Writes OUT/NNNNN_<file>_f<frame>_<method>.png (the map drawn as its paper
    draws it: Grad-CAM blended in jet colours, Grad-CAM++ as contours, saliency
    as the pixels beyond 3 sigma, guided maps in red/blue, inversion as one
    reconstruction per convolutional block) and OUT/explain_<method>.h5 with
    the raw maps, inputs, probabilities and targets.  Works with every model
    type: ke2018, alexnet, rwd1d (its maps mark rows: the network sees row
    ranges) and the multi-label CDI ResNet of `train --task cdi`.  With --geom
    detector.geom, stacked-panel frames are assembled with the CrystFEL geometry
    first, as `screen --geom` does.
    """
    import torch

    from diffscreen.explain.run import ExplainModel, explain_frames, resolve_target

    dev = device_of(device)  # an unavailable --device is one line (exit 2), before any output
    if threads:
        torch.set_num_threads(threads)
    geometry = None
    if geom is not None:  # an unusable .geom is one line, before any output
        from diffscreen.io.geom import load_geometry

        geometry = load_geometry(geom)
    specs = expand(inputs)
    clf = ExplainModel(model, device=dev)
    resolve_target(clf.class_names, target)  # refuse a bad class before any output
    with progress() as p:
        res = explain_frames(
            specs, out, method=method.value, model=clf, target=target, layer=layer, max_frames=max_frames,
            batch_size=batch_size, steps=steps, progress=Bar(p, f"explaining ({method.value})"), geom=geometry,
        )
    for f, i, e in res["errors"][:20]:
        print(f"ERROR: {f}" + ("" if i < 0 else f", frame {i}") + f": {e}")
    print(f"{res['n_frames']} frames explained with {method.value}; maps in {res['h5']}, overlays in {out}/")
    if res["n_errors"]:
        raise typer.Exit(EXIT_PARTIAL)


@friendly
def report(
    run_out_dir: Path = typer.Argument(..., help="Output folder of `diffscreen screen` (scores.csv, summary.json)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="HTML file; default RUN_OUT_DIR/report.html."),
    model: Optional[Path] = typer.Option(None, "--model", "-m", help="Model for the overlays; default: the run's."),
    labels: List[Path] = typer.Option([], "--labels", "-l", help="Label file(s) for the confusion matrix."),
    gallery: int = typer.Option(6, help="Kept and rejected frames shown (each)."),
    tsne_frames: int = typer.Option(200, help="Frames in the t-SNE map (0: none)."),
    device: Optional[str] = device_option(),
):
    """Turn a screening output into one self-contained HTML page.

    The page holds the hit rate along the run, confidence histograms, the
    confusion matrix when labels exist, kept and rejected frames with their
    Grad-CAM overlays and a t-SNE map of the penultimate features; all images
    are embedded, so the file can be mailed or archived alone.
    """
    from diffscreen.explain.report import build_report

    dev = device_of(device)
    path = build_report(
        run_out_dir, model=model, labels=[str(p) for p in labels], out=out, gallery=gallery,
        tsne_frames=tsne_frames, progress=lambda m: print(f"report: {m}"), device=dev,
    )
    print(f"report written to {path}")
