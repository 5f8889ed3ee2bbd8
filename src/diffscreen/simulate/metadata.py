"""The metadata faults of real headers, and the cached training inputs drawn with them (issue 13).

Real files get their geometry wrong or leave it out: no pixel size, distance
or wavelength, no beam centre, a beam centre off by a few pixels, a wrong
distance.  :func:`randomise_meta` draws these faults so that a network learns
not to lean on a perfect header; :func:`make_inputs` simulates and
preprocesses frames of several presets with them (the bundled models'
training frames, ``scripts/make_default_model.py``, and those of
``diffscreen benchmark generalisation``), cached as float16 ``.npz`` files.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from diffscreen.io.frame import CLASS_NAMES

__all__ = ["META_FAULTS", "BUNDLED_SEED0", "randomise_meta", "training_jobs", "make_inputs", "load_inputs",
           "JOB_CLASS_FRACTIONS", "job_simulator", "job_frames"]

#: Probabilities of the metadata faults drawn per training frame (see :func:`randomise_meta`).
META_FAULTS = {"no_geometry": 0.2, "no_beam_centre": 0.2, "centre_error": 0.3, "centre_error_px": 5.0,
               "distance_error": 0.15}


def randomise_meta(meta, shape, rng: np.random.Generator):
    """A copy of a frame's metadata with the faults real headers have.

    With the probabilities of :data:`META_FAULTS`: no geometry at all (pixel
    size, distance, wavelength unknown: the fallback scaling is used), no
    beam centre, a beam centre off by N(0, 3 px) per axis, a distance off by
    a factor in [0.8, 1.25].

    Parameters
    ----------
    meta : FrameMeta
    shape : (int, int)
    rng : numpy.random.Generator

    Returns
    -------
    FrameMeta
        A new object; ``meta`` is not modified.
    """
    m = dataclasses.replace(meta, extra=dict(meta.extra))
    if rng.random() < META_FAULTS["no_geometry"]:
        m.pixel_size_mm = m.distance_mm = m.wavelength_A = None
    elif rng.random() < META_FAULTS["distance_error"] and m.distance_mm:
        m.distance_mm = m.distance_mm * float(np.exp(rng.uniform(np.log(0.8), np.log(1.25))))
    if rng.random() < META_FAULTS["no_beam_centre"]:
        m.beam_centre_px = None
    elif rng.random() < META_FAULTS["centre_error"] and m.beam_centre_px is not None:
        e = rng.normal(0.0, META_FAULTS["centre_error_px"], 2)
        m.beam_centre_px = (m.beam_centre_px[0] + float(e[0]), m.beam_centre_px[1] + float(e[1]))
    return m


#: Seed of the first preset's training frames of the bundled models (``scripts/make_default_model.py``).
BUNDLED_SEED0 = 4001


def training_jobs(families, frames: int = 400, wide_frames: int = 800) -> list:
    """The :func:`make_inputs` jobs of the bundled models' training frames.

    Parameters
    ----------
    families : dict
        Detector family → presets (:data:`diffscreen.simulate.presets.FAMILIES`).
    frames, wide_frames : int
        Frames per preset; per ``wide_*`` preset.

    Returns
    -------
    list of (str, int, int, bool)
        ``(preset, BUNDLED_SEED0 + k, n, True)`` for the k-th preset, in the families' order.
    """
    presets = [p for ps in families.values() for p in ps]
    return [(p, BUNDLED_SEED0 + k, wide_frames if p.startswith("wide_") else frames, True)
            for k, p in enumerate(presets)]


#: Hit / maybe / miss fractions of every :func:`make_inputs` job's simulated frames.
JOB_CLASS_FRACTIONS = (0.3, 0.2, 0.5)


def job_simulator(preset: str, seed: int):
    """The :class:`~diffscreen.simulate.Simulator` whose frames ``0..n-1`` a :func:`make_inputs` job ``(preset,
    seed, n, train)`` preprocesses, so that other methods can be scored on exactly those frames."""
    from diffscreen.simulate.run import Simulator

    return Simulator(preset, seed=seed, class_fractions=JOB_CLASS_FRACTIONS)


def job_frames(preset: str, seed: int, n: int, train: bool, max_shift: int = 0):
    """The frames of a :func:`make_inputs` job ``(preset, seed, n, train)``, as it preprocesses them.

    Yields
    ------
    (Frame, (float, float), str)
        Frame ``i`` of :func:`job_simulator` (for training, its header with a metadata fault drawn by
        :func:`randomise_meta`), the crop shift ``(dx, dy)`` in output pixels (for training, uniform integers in
        ±``max_shift``; else 0) and its label, for ``i`` in ``0..n-1``.  The draws come from
        ``default_rng([seed, 977])`` in this order, so any method gets exactly the job's frames.
    """
    from diffscreen.io.frame import Frame

    sim, rng = job_simulator(preset, seed), np.random.default_rng([seed, 977])
    for i in range(n):
        sf = sim.frame(i)
        fr, shift = sf.to_frame(), (0.0, 0.0)
        if train:
            fr = Frame(fr.data, fr.mask, randomise_meta(fr.meta, fr.data.shape, rng))
            shift = tuple(float(v) for v in rng.integers(-max_shift, max_shift + 1, 2))
        yield fr, shift, sf.label


def _simulate_job(preset: str, seed: int, n: int, work: str, cfg_dict: dict, train: bool) -> str:
    """Simulate and preprocess one preset's frames into a cached npz (see :func:`make_inputs`) → its path."""
    import torch

    from diffscreen.io.atomic import temporary_path
    from diffscreen.preprocess import PreprocessConfig
    from diffscreen.preprocess.fast import FastPreprocessor

    torch.set_num_threads(1)
    path = Path(work) / _cache_name(preset, seed, n, cfg_dict, train)
    if path.exists():
        return str(path)
    cfg = PreprocessConfig.from_dict(cfg_dict)
    pre = FastPreprocessor(cfg)
    S = cfg.out_size
    x = np.zeros((n, 1, S, S), np.float16)
    y = np.zeros(n, np.int64)
    for i, (fr, shift, label) in enumerate(job_frames(preset, seed, n, train, cfg.max_shift)):
        x[i] = pre([fr], shifts=[shift])[0]
        y[i] = CLASS_NAMES.index(label)
    with temporary_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, x=x, y=y)
    return str(path)


def _cache_name(preset, seed, n, cfg_dict, train) -> str:
    """File name of one job's inputs: its parameters and the first 8 hex digits of the SHA-1 of its settings."""
    key = hashlib.sha1(json.dumps([cfg_dict, META_FAULTS], sort_keys=True, default=str).encode()).hexdigest()[:8]
    return f"{preset}_n{n}_seed{seed}_{'train' if train else 'test'}_{key}.npz"


def make_inputs(jobs, work, cfg, *, workers: int = 2, log=print) -> dict:
    """Simulate and preprocess frames of several presets, cached as float16 npz files.

    Parameters
    ----------
    jobs : sequence of (preset, seed, n, train)
        ``train`` = True draws random crop shifts and metadata faults
        (:func:`randomise_meta`); False gives the centred crop of the header
        as written (test frames).
    work : str or Path
        Cache folder (created).
    cfg : PreprocessConfig
    workers : int
        Simulation processes (spawned, never forked: a forked process may
        inherit torch's threads).

    Returns
    -------
    dict
        ``(preset, seed, n, train)`` → npz path, with arrays ``x`` (n, 1, S, S)
        float16 and ``y`` (n,) int64 (indices into hit, maybe, miss).
    """
    work = Path(work)
    work.mkdir(parents=True, exist_ok=True)
    args = [(p, s, n, str(work), cfg.to_dict(), t) for p, s, n, t in jobs]
    todo = [a for a in args if not (work / _cache_name(a[0], a[1], a[2], a[4], a[5])).exists()]
    if todo:
        log(f"simulating {sum(a[2] for a in todo)} frames of {len(todo)} preset runs in {workers} processes")
    if workers <= 1 or len(todo) <= 1 or not args:
        paths = [_simulate_job(*a) for a in args]
    else:
        with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as ex:
            paths = list(ex.map(_simulate_job, *zip(*args)))
    return {tuple(j): p for j, p in zip(jobs, paths)}


def load_inputs(paths) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate cached inputs → ``x`` (N, 1, S, S) float16, ``y`` (N,) int64."""
    data = [np.load(p) for p in paths]
    return np.concatenate([d["x"] for d in data]), np.concatenate([d["y"] for d in data])
