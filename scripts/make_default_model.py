"""Retrain the bundled default model on the richer simulator presets (issue 3).

Usage::

    python scripts/make_default_model.py [--work work/default-rich] [--frames 400] [--input-size 720 --scale 1] [--install]

The model is the Ke et al. (2018) CNN (``ke2018``, 720 × 720 input, Ke's
pixel size in reciprocal space: the full field of ``PreprocessConfig()``,
the bundled model's recipe), trained on simulated frames of every detector
the simulator models:

* the five CXIDB-76 runs L498, LG36 (CSPAD), LN84, LN83, LO19 (Rayonix; unit
  cell, photon energy, delivery, mask and gain of each run, Ke Tables 1-2);
* the generic ``rayonix``, ``rayonix_jet`` and ``cspad`` presets;
* the hybrid pixel detectors ``pilatus`` and ``eiger`` and the XFEL panel
  detector ``jungfrau``.

``--frames`` frames per preset (seeds 4001, 4002, ... in the order of
:data:`PRESETS`; class fractions 0.3 / 0.2 / 0.5 hit / maybe / miss), the
first 80 % of each preset for training and the rest for validation (the epoch
with the best validation accuracy is kept).  Frames are simulated and
preprocessed one at a time in ``--workers`` processes and cached in
``--work`` as float16 inputs, so a rerun only trains.  The model file goes to
``WORK/ke2018_default.safetensors``; ``--install`` also copies it over
``src/diffscreen/data/ke2018_default.safetensors``.  Then
``python scripts/report_default_model.py --compare OLD_MODEL`` scores it.

``--input-size 360 --scale 2`` makes the bundled *fast* model instead
(``ke2018_fast.safetensors``, ``--model fast``): the same field of view at
twice the pixel, about 2.5 × faster to screen (docs/throughput.md).

About 10 min of simulation (11 presets × 400 frames on 2 cores) and 21 min of
training (60 epochs × 25 batches × 32 at 720², 2 threads; 5 min at 360²).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import shutil
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
PRESETS = ("L498", "LG36", "LN84", "LN83", "LO19", "rayonix", "rayonix_jet", "cspad", "pilatus", "eiger", "jungfrau")
FRACTIONS = (0.3, 0.2, 0.5)
SEED0 = 4001
VAL_FRACTION = 0.2


def recipe(size: int, scale: float):
    """The preprocessing: ``size``² LCN input, pixels ``scale`` × Ke's in reciprocal space (default 720, 1)."""
    from diffscreen.preprocess import PreprocessConfig

    return PreprocessConfig(out_size=size, s_per_px=PreprocessConfig.s_per_px * scale,
                            max_shift=min(120, size // 6))


def simulate_inputs(args) -> str:
    """Simulate ``n`` frames of a preset, preprocess them, cache them as an npz → its path."""
    preset, seed, n, work, size, scale = args
    import torch

    from diffscreen.benchmarks.ke2018 import CLASSES
    from diffscreen.io._atomic import temporary_path
    from diffscreen.preprocess import Preprocessor
    from diffscreen.simulate import Simulator

    torch.set_num_threads(1)
    pre = recipe(size, scale)
    path = work / f"{preset}_n{n}_s{size}x{scale:g}_seed{seed}.npz"
    if path.exists():
        return str(path)
    sim = Simulator(preset, seed=seed, class_fractions=FRACTIONS)
    p = Preprocessor(pre)
    x = np.zeros((n, 1, pre.out_size, pre.out_size), np.float16)
    y = np.zeros(n, np.int64)
    for i in range(n):
        sf = sim.frame(i)
        x[i] = p([sf.to_frame()])[0]
        y[i] = CLASSES.index(sf.label)
    with temporary_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, x=x, y=y)
    print(preset, "simulated", np.bincount(y, minlength=3).tolist(), flush=True)
    return str(path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=ROOT / "work" / "default-rich")
    ap.add_argument("--frames", type=int, default=400, help="frames per preset")
    ap.add_argument("--workers", type=int, default=2, help="simulation processes")
    ap.add_argument("--threads", type=int, default=2, help="training threads")
    ap.add_argument("--epochs", type=int, default=60)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--input-size", type=int, default=720, help="network input side in pixels")
    ap.add_argument("--scale", type=float, default=1.0, help="input pixel in units of Ke's reciprocal pixel")
    ap.add_argument("--data-only", action="store_true", help="simulate and cache the data, do not train")
    ap.add_argument("--install", action="store_true", help="copy the model over the bundled one")
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)

    jobs = [(p, SEED0 + k, args.frames, args.work, args.input_size, args.scale) for k, p in enumerate(PRESETS)]
    with ProcessPoolExecutor(args.workers, mp_context=multiprocessing.get_context("spawn")) as ex:
        paths = dict(zip(PRESETS, ex.map(simulate_inputs, jobs)))
    if args.data_only:
        return

    from diffscreen.benchmarks.ke2018 import CLASSES
    from diffscreen.train.loop import TrainConfig, dihedral_augment, train_on_arrays

    n_val = int(round(VAL_FRACTION * args.frames))
    data = {p: np.load(paths[p]) for p in PRESETS}
    x_tr = np.concatenate([data[p]["x"][:-n_val] for p in PRESETS])
    y_tr = np.concatenate([data[p]["y"][:-n_val] for p in PRESETS])
    x_va = np.concatenate([data[p]["x"][-n_val:] for p in PRESETS])
    y_va = np.concatenate([data[p]["y"][-n_val:] for p in PRESETS])
    cfg = TrainConfig(arch="ke2018", epochs=args.epochs, batches_per_epoch=25, batch_size=args.batch_size,
                      lr_start=0.05, lr_end=1e-4, seed=0, threads=args.threads)  # fmt: skip
    description = {
        "simulated_presets": {p: {"seed": SEED0 + k, "n_train": args.frames - n_val, "n_val": n_val,
                                  "class_counts": np.bincount(data[p]["y"], minlength=3).tolist()}
                              for k, p in enumerate(PRESETS)},  # fmt: skip
        "class_fractions": FRACTIONS,
        "counts": {c: int((y_tr == i).sum()) for i, c in enumerate(CLASSES)},
        "augment": "dihedral (random flips and 90-degree rotations per batch)",
        "script": "scripts/make_default_model.py",
    }
    bundled = {(720, 1.0): "default", (360, 2.0): "fast"}.get((args.input_size, args.scale))
    name = f"ke2018_{bundled}" if bundled else f"ke2018_{args.input_size}x{args.scale:g}"
    if args.install and not bundled:
        raise SystemExit("--install: only the recipes of the bundled models (720 × 1, 360 × 2) can be installed")
    description["command"] = (f"python scripts/make_default_model.py --frames {args.frames} --epochs {args.epochs} "
                              f"--batch-size {args.batch_size} --input-size {args.input_size} --scale {args.scale:g}")
    out = args.work / f"{name}.safetensors"
    res = train_on_arrays(x_tr, y_tr, out, class_names=CLASSES, preprocess=recipe(args.input_size, args.scale),
                          config=cfg,
                          x_val=x_va, y_val=y_va, data_description=description, augment=dihedral_augment)
    print(json.dumps({"best_epoch": res.best_epoch, "val_accuracy": res.history[res.best_epoch - 1]["val_accuracy"]}))
    if args.install:
        shutil.copyfile(out, ROOT / "src" / "diffscreen" / "data" / f"{name}.safetensors")


if __name__ == "__main__":
    main()
