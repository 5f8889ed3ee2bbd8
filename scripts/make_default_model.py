"""Reproduce the bundled default model, src/diffscreen/data/ke2018_default.safetensors.

Usage::

    python scripts/make_default_model.py [--work work/default] [--threads 2]

The model is the Ke et al. (2018) CNN at a 360 × 360 input with Ke's pixel
size in reciprocal space (``PreprocessConfig(out_size=360)``: the central
±0.2 Å⁻¹ of the pattern, where Bragg spots are densest), trained on simulated
runs of the richer presets:

* the five CXIDB-76 runs L498, LG36 (CSPAD), LN84, LN83, LO19 (Rayonix): the
  cached 1000-frame runs of ``diffscreen benchmark ke2018`` (its training and
  validation frames only; its test frames stay unseen);
* the hybrid pixel detectors ``pilatus`` and ``eiger`` and the XFEL panel
  detector ``jungfrau``: 400 frames each, simulated here.

About 60 min of simulation and spot-finding for the ke2018 cache when it is
not already on disk, 6 min for the other presets, and 15 min of training on
a 2-core CPU.  Then ``python scripts/report_default_model.py`` rewrites
docs/default_model.md.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
KE_PRESETS = ("L498", "LG36", "LN84", "LN83", "LO19")
EXTRA = (("pilatus", 3001), ("eiger", 3002), ("jungfrau", 3003))
EXTRA_FRACTIONS = (0.3, 0.2, 0.5)
N_EXTRA = 400


def extra_preset(preset: str, seed: int, work: Path, pre) -> dict:
    """Simulate ``N_EXTRA`` frames of a preset and preprocess them (cached in ``work``)."""
    from diffscreen.benchmarks.ke2018 import CLASSES, _split_of
    from diffscreen.io._atomic import temporary_path
    from diffscreen.preprocess import Preprocessor
    from diffscreen.simulate import Simulator

    path = work / f"{preset}_n{N_EXTRA}_s{pre.out_size}_seed{seed}.npz"
    if not path.exists():
        sim = Simulator(preset, seed=seed, class_fractions=EXTRA_FRACTIONS)
        p = Preprocessor(pre)
        x = np.zeros((N_EXTRA, 1, pre.out_size, pre.out_size), np.float16)
        y = np.zeros(N_EXTRA, np.int64)
        for i in range(N_EXTRA):
            sf = sim.frame(i)
            x[i] = p([sf.to_frame()])[0]
            y[i] = CLASSES.index(sf.label)
        work.mkdir(parents=True, exist_ok=True)
        with temporary_path(path) as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, x=x, y=y)
        print(preset, "simulated", np.bincount(y, minlength=3))
    d = np.load(path)
    split = _split_of(N_EXTRA)
    return {"x": d["x"], "y": d["y"], "split": split}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=ROOT / "work" / "default")
    ap.add_argument("--ke-cache", type=Path, default=ROOT / "work" / "ke2018-cache")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--data-only", action="store_true", help="Simulate and cache the data, do not train.")
    args = ap.parse_args()

    from diffscreen.benchmarks.ke2018 import CLASSES, FULL, simulate_preset
    from diffscreen.preprocess import PreprocessConfig

    pre = PreprocessConfig(out_size=FULL.input_size, max_shift=0)
    parts = {}
    for preset in KE_PRESETS:
        d = simulate_preset(preset, FULL, args.ke_cache)
        parts[preset] = {"x": d["x_lcn"], "y": np.asarray(d["labels"]), "split": np.asarray(d["split"])}
    for preset, seed in EXTRA:
        parts[preset] = extra_preset(preset, seed, args.work, pre)
    if args.data_only:
        return

    from diffscreen.train.loop import TrainConfig, dihedral_augment, train_on_arrays

    def take(split):
        xs = [np.asarray(p["x"][p["split"] == split]) for p in parts.values()]
        ys = [p["y"][p["split"] == split] for p in parts.values()]
        return np.concatenate(xs), np.concatenate(ys)

    x_tr, y_tr = take(0)
    x_va, y_va = take(1)
    cfg = TrainConfig(arch="ke2018", epochs=args.epochs, batches_per_epoch=25, batch_size=32,
                      lr_start=0.05, lr_end=1e-4, seed=0, threads=args.threads)  # fmt: skip
    description = {
        "simulated_presets": {k: {"n_train": int((p["split"] == 0).sum()), "n_val": int((p["split"] == 1).sum()),
                                  "class_counts": np.bincount(p["y"], minlength=3).tolist()}
                              for k, p in parts.items()},  # fmt: skip
        "ke2018_cache_settings": {"n_frames": FULL.n_frames, "seed": FULL.seed},
        "extra_presets": {"seeds": dict(EXTRA), "class_fractions": EXTRA_FRACTIONS, "n_frames": N_EXTRA},
        "augment": "dihedral (random flips and 90-degree rotations per batch)",
        "script": "scripts/make_default_model.py",
    }
    out = args.work / "ke2018_default.safetensors"
    res = train_on_arrays(x_tr, y_tr, out, class_names=CLASSES, preprocess=pre, config=cfg, x_val=x_va, y_val=y_va,
                          data_description=description, augment=dihedral_augment)  # fmt: skip
    print(json.dumps({"best_epoch": res.best_epoch, "val_accuracy": res.history[res.best_epoch - 1]["val_accuracy"]}))
    shutil.copyfile(out, ROOT / "src" / "diffscreen" / "data" / "ke2018_default.safetensors")


if __name__ == "__main__":
    main()
