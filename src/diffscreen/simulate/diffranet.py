"""DiffraNet's five classes for simulated frames (Nawaz et al. 2022 §3.1; Souza et al. 2019).

DiffraNet (Souza et al. 2019, nanoBragg frames) labels a frame

``blank``
    no X-rays, only detector noise;
``no-crystal``
    X-rays scattered by amorphous material (solvent, jet, air) but no
    protein crystal;
``weak``, ``good``, ``strong``
    a crystal in the beam with increasingly higher diffracted intensity.

DiffraNet grades weak/good/strong by the simulated beam intensity; our
simulator draws many more nuisance parameters (gain, background, crystal
size, mosaicity, detector), so the grade is taken from what the frame
shows, the detectable Bragg spots (SNR ≥ ``preset.snr_threshold`` = 5, see
:mod:`diffscreen.simulate.run`):

=============  ==============================================================
class          rule (``kind`` is the simulator's :data:`~diffscreen.simulate.KINDS`)
=============  ==============================================================
blank          ``kind == "no_beam"``
no-crystal     beam on and no detectable Bragg spot (solvent, empty jet, or a
               crystal too weak to give one spot with SNR ≥ 5)
weak           1 – 24 detectable spots
good           ≥ 25 detectable spots, and not strong
strong         ≥ 150 detectable spots of which ≥ 50 have SNR ≥ 20
=============  ==============================================================

Precisely: n = number of spots with SNR ≥ 5, b = number with SNR ≥ 20;
``strong`` if n ≥ ``STRONG_MIN_SPOTS`` (150) and b ≥ ``STRONG_MIN_BRIGHT``
(50); else ``good`` if n ≥ ``GOOD_MIN_SPOTS`` (25); else ``weak`` if n ≥ 1;
else ``no-crystal``.  The 25-spot boundary is 2.5 × Ke's 10-spot hit
threshold; the 150/50 boundary was chosen so that, with the class mix of
:func:`diffranet_kinds`, good and strong frames are about equally frequent
(docs/benchmarks/nawaz2022.md lists the counts).  ``hit`` = weak ∪ good ∪
strong and ``miss`` = blank ∪ no-crystal (Nawaz §4).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from diffscreen.errors import ConfigError
from diffscreen.models.diffranet import DIFFRANET_CLASSES, diffranet_preprocess_config, hit_miss

__all__ = [
    "DIFFRANET_CLASSES",
    "GOOD_MIN_SPOTS",
    "STRONG_MIN_SPOTS",
    "STRONG_MIN_BRIGHT",
    "BRIGHT_SNR",
    "diffranet_label",
    "diffranet_label_from",
    "hit_miss",
    "diffranet_kinds",
    "DIFFRANET_PRESETS",
    "diffranet_preprocess_config",
    "simulate_dataset",
    "simulate_diffranet_run",
]

# DIFFRANET_CLASSES (the five classes in the order of a model's outputs, Nawaz Table 3), hit_miss and
# diffranet_preprocess_config live in diffscreen.models.diffranet (training and screening use them too).
GOOD_MIN_SPOTS = 25
STRONG_MIN_SPOTS = 150
STRONG_MIN_BRIGHT = 50
BRIGHT_SNR = 20.0
DETECT_SNR = 5.0


def diffranet_label_from(kind: str, snr, detect_snr: float = DETECT_SNR) -> str:
    """DiffraNet class from the simulator's kind and the spots' SNRs.

    Parameters
    ----------
    kind : str
        One of :data:`diffscreen.simulate.KINDS`.
    snr : (P,) array_like of float
        Detection SNR of each recorded spot (``SimFrame.peaks[:, 3]``).
    detect_snr : float
        Detectability threshold (the preset's ``snr_threshold``, 5).

    Returns
    -------
    str
        One of :data:`DIFFRANET_CLASSES`.

    Raises
    ------
    ConfigError
        Unknown kind.
    """
    from diffscreen.simulate.run import KINDS

    if kind not in KINDS:
        raise ConfigError(f"unknown frame kind {kind!r}; use one of {KINDS}")
    if kind == "no_beam":
        return "blank"
    s = np.asarray(snr, dtype=float).reshape(-1)
    n = int((s >= detect_snr).sum())
    b = int((s >= BRIGHT_SNR).sum())
    if n >= STRONG_MIN_SPOTS and b >= STRONG_MIN_BRIGHT:
        return "strong"
    if n >= GOOD_MIN_SPOTS:
        return "good"
    if n >= 1:
        return "weak"
    return "no-crystal"


def diffranet_label(simframe) -> str:
    """DiffraNet class of a :class:`~diffscreen.simulate.SimFrame` (rules in the module docstring)."""
    thr = float(simframe.meta.extra.get("snr_threshold", DETECT_SNR)) if simframe.meta.extra else DETECT_SNR
    return diffranet_label_from(simframe.kind, simframe.peaks[:, 3] if len(simframe.peaks) else [], thr)


def diffranet_kinds(n: int, seed: int = 0) -> list[str]:
    """Simulator kinds to force for ``n`` frames so the five classes are roughly balanced.

    Mix: no_beam 20 %, solvent 15 %, empty 5 %, weak-crystal 10 %,
    maybe 10 %, hit 40 % (the hits split into weak/good/strong by spot
    count).

    Returns
    -------
    list of str
    """
    kinds = np.array(["no_beam", "solvent", "empty", "weak", "maybe", "hit"])
    p = np.array([0.20, 0.15, 0.05, 0.10, 0.10, 0.40])
    return list(np.random.default_rng([seed, 5]).choice(kinds, size=int(n), p=p))


#: Presets the DiffraNet-style frames cycle through (frame ``i`` uses ``DIFFRANET_PRESETS[i % 3]``).
DIFFRANET_PRESETS = ("rayonix", "rayonix_jet", "cspad")


def simulate_dataset(n: int, *, seed: int, input_size: int = 227, cache_dir=None, progress=None) -> dict:
    """Simulate ``n`` frames with DiffraNet labels, preprocessed for AlexNet.

    Frames cycle through :data:`DIFFRANET_PRESETS`; their kinds come from
    :func:`diffranet_kinds`.  Results are cached in ``cache_dir`` (one
    ``.npz`` per 100 frames, frame ``i`` depending only on ``(seed, i)``) so
    an interrupted or longer run reuses what exists.

    Returns
    -------
    dict
        ``x`` (n, 1, S, S) float16, ``kind`` (n,) str, ``snr`` list of (P,)
        float32 arrays, ``preset`` (n,) str, ``label`` (n,) str (DiffraNet
        class), ``n_spots`` (n,) int.
    """
    from diffscreen.preprocess import Preprocessor
    from diffscreen.simulate.run import Simulator

    pre = Preprocessor(diffranet_preprocess_config(input_size))
    kinds = diffranet_kinds(n, seed)
    sims = {p: Simulator(p, seed=seed) for p in DIFFRANET_PRESETS}
    parts = []
    for c0 in range(0, n, 100):
        c1 = min(n, c0 + 100)
        f = Path(cache_dir) / f"sim_s{seed}_{input_size}_{c0:06d}.npz" if cache_dir else None
        have = _chunk(f, c0, c1, kinds, sims, pre, n, progress)
        m = c1 - c0  # a longer cached chunk is cut to what is asked for
        ends = np.cumsum(have["snr_len"])
        part = {k: have[k][:m] for k in ("x", "kind", "preset", "snr_len")}
        part["snr_flat"] = have["snr_flat"][: int(ends[m - 1]) if m else 0]
        parts.append(part)
    x, kind, preset = (np.concatenate([p[k] for p in parts]) for k in ("x", "kind", "preset"))
    snr = []
    for p in parts:
        snr.extend(np.split(p["snr_flat"], np.cumsum(p["snr_len"])[:-1]))
    label = np.array([diffranet_label_from(k, s) for k, s in zip(kind, snr)])
    n_spots = np.array([int((s >= 5).sum()) for s in snr])
    return {"x": x, "kind": kind, "preset": preset, "snr": snr, "label": label, "n_spots": n_spots}


def _chunk(f, c0: int, c1: int, kinds, sims, pre, n: int, progress) -> dict:
    """Frames ``c0`` to ``c1`` of :func:`simulate_dataset`: read from the cache ``f``, completed and written back."""
    from diffscreen.io.atomic import temporary_path

    have = None
    if f is not None and f.exists():
        d = np.load(f, allow_pickle=False)
        have = {k: d[k] for k in d.files}
    n_have = 0 if have is None else len(have["kind"])
    if n_have >= c1 - c0:
        return have
    xs, ks, ps, snr_flat, snr_len = [], [], [], [], []
    for i in range(c0 + n_have, c1):
        p = DIFFRANET_PRESETS[i % len(DIFFRANET_PRESETS)]
        sf = sims[p].frame(i, kind=kinds[i])
        xs.append(pre([sf.to_frame()])[0].astype(np.float16))
        ks.append(sf.kind)
        ps.append(p)
        s = sf.peaks[:, 3].astype(np.float32) if len(sf.peaks) else np.zeros(0, np.float32)
        snr_flat.append(s)
        snr_len.append(len(s))
        if progress:
            progress(i + 1, n)
    new = {"x": np.stack(xs), "kind": np.array(ks), "preset": np.array(ps),
           "snr_flat": np.concatenate(snr_flat), "snr_len": np.array(snr_len)}  # fmt: skip
    if have is not None:
        new = {k: np.concatenate([have[k], new[k]]) for k in new}
    if f is not None:
        with temporary_path(f) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, **new)
    return new


def simulate_diffranet_run(out, n_frames: int, *, seed: int = 0, presets=DIFFRANET_PRESETS, progress=None,
                           compression: str | None = "gzip") -> Path:
    """Simulate ``n_frames`` frames with DiffraNet labels into a labelled CXI file (``simulate --task diffranet``).

    The frames are those of :func:`simulate_dataset` (frame ``i`` from ``presets[i % len(presets)]`` with the
    kind :func:`diffranet_kinds` draws; frame ``i`` depends only on ``(seed, i)``), stored raw, one ``entry_k``
    per detector shape, with ``result_1/label`` an index into the attribute ``class_names`` =
    :data:`DIFFRANET_CLASSES`, the detectable-spot count ``n_spots``, the peak list and per-frame masks; the root
    attribute ``task`` is ``"diffranet"``.  ``diffscreen train --task diffranet RUN.cxi`` reads these labels.

    Parameters
    ----------
    out : str or Path
        Output ``.cxi`` (or ``.h5``) file, written atomically.
    n_frames : int
        At least 1.
    seed : int
    presets : sequence of str
        Simulator presets the frames cycle through (default :data:`DIFFRANET_PRESETS`).
    progress : callable, optional
        ``progress(n_done)`` after each frame.
    compression : str or None

    Returns
    -------
    Path

    Raises
    ------
    ConfigError
        ``n_frames < 1``, no preset, or an unknown preset.
    """
    from diffscreen.io.cxi import CXIWriter
    from diffscreen.simulate.run import Simulator

    if n_frames < 1:
        raise ConfigError("n_frames must be >= 1")
    presets = tuple(presets)
    if not presets:
        raise ConfigError("give at least one preset")
    sims = {p: Simulator(p, seed=seed) for p in dict.fromkeys(presets)}
    kinds = diffranet_kinds(n_frames, seed)
    w = CXIWriter(out, compression=compression, mask_mode="per_frame" if len(sims) > 1 else "static",
                  class_names=DIFFRANET_CLASSES, dtype=np.int32)
    with w:
        for i in range(n_frames):
            sf = sims[presets[i % len(presets)]].frame(i, kind=kinds[i])
            extra = {k: float(v) for k, v in sf.meta.extra.items() if isinstance(v, (int, float, np.floating))}
            w.append(sf.data, sf.meta, mask=sf.mask, label=diffranet_label(sf), n_spots=sf.n_spots, peaks=sf.peaks,
                     extra=extra)
            if progress is not None:
                progress(i + 1)
        w.file.attrs["task"] = "diffranet"
        w.file.attrs["diffranet_presets"] = ",".join(presets)
    return Path(out)
