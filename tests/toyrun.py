"""A tiny labelled run for tests of training and screening (not physics: see
tests/test_simulate.py for the simulator).  Hits hold many bright 2x2 spots,
maybes a few, misses none, on a noisy background."""

import numpy as np

from diffscreen.io.cxi import CXIWriter
from diffscreen.io.frame import FrameMeta

N_SPOTS = {"hit": 40, "maybe": 6, "miss": 0}


def toy_frame(label, rng, size=256):
    img = rng.poisson(10, size=(size, size)).astype(np.int32)
    for _ in range(N_SPOTS[label]):
        y, x = rng.integers(8, size - 8, size=2)
        img[y : y + 2, x : x + 2] += 400
    return img


def write_toy_run(path, labels, *, size=256, seed=0):
    """Write frames with the given labels to a CXI file; returns the path."""
    rng = np.random.default_rng(seed)
    mask = np.zeros((size, size), bool)
    mask[:2] = True
    with CXIWriter(path, mask_mode="static") as w:
        for i, lab in enumerate(labels):
            meta = FrameMeta(str(path), i, "toy", None, None, None, None)
            w.append(toy_frame(lab, rng, size), meta, mask=mask, label=lab, n_spots=N_SPOTS[lab])
    return path


def write_toy_model(path, *, size=256, seed=7):
    """A random-weight Ke CNN for ``size``-px toy frames, saved to ``path`` (its outputs vary between frames)."""
    import torch

    from diffscreen.models import get_model, save_model
    from diffscreen.preprocess import PreprocessConfig

    torch.manual_seed(seed)
    m = get_model("ke2018", input_size=size).eval()
    return save_model(path, m, arch="ke2018", arch_kwargs={"input_size": size},
                      preprocess=PreprocessConfig(out_size=size, fallback_size=size), class_names=("hit", "maybe", "miss"))
