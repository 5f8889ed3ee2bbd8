"""Leave one detector family out: does the screen hold on a detector it never saw? (issue 13)

``diffscreen benchmark generalisation`` trains the significance recipe (the Ke et
al. 2018 CNN on the per-pixel significance input,
:meth:`~diffscreen.preprocess.PreprocessConfig.significance`) on simulated
frames of every detector family but one and tests it on fresh frames of the
family left out.  Families (:data:`diffscreen.simulate.presets.FAMILIES`):
hybrid-pixel 172 µm, hybrid-pixel 75 µm, Rayonix-type CCD, CSPAD, and
JUNGFRAU/AGIPD-type panels.  The score is the balanced accuracy of the keep
decision (hit or maybe against miss, Ke §2.1), with a 95 % t-interval over
seeds.

Training inputs are drawn the way the bundled models are trained
(:func:`make_inputs`): a random crop shift up to ``max_shift``, and the
metadata randomised as real files get it wrong or leave it out (no geometry,
a beam centre off by a few pixels, a wrong distance), so the network learns
not to lean on a perfect header.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np

from diffscreen.benchmarks._harness import digest, pool_map, predict, save_npz, table_head, write_json

__all__ = ["CLASSES", "make_inputs", "load_inputs", "keep_balanced_accuracy", "t_interval", "run_generalisation",
           "real_frame_scores", "report_markdown", "bundled_model_path", "dials_peer_lines"]

CLASSES = ("hit", "maybe", "miss")
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
        m.beam_center_px = None
    elif rng.random() < META_FAULTS["centre_error"] and m.beam_center_px is not None:
        e = rng.normal(0.0, META_FAULTS["centre_error_px"], 2)
        m.beam_center_px = (m.beam_center_px[0] + float(e[0]), m.beam_center_px[1] + float(e[1]))
    return m


def _simulate_job(preset: str, seed: int, n: int, work: str, cfg_dict: dict, train: bool) -> str:
    """Simulate and preprocess one preset's frames into a cached npz (see :func:`make_inputs`) → its path."""
    import torch

    from diffscreen.io.frame import Frame
    from diffscreen.preprocess import PreprocessConfig
    from diffscreen.preprocess.fast import FastPreprocessor
    from diffscreen.simulate import Simulator

    torch.set_num_threads(1)
    path = Path(work) / _cache_name(preset, seed, n, cfg_dict, train)
    if path.exists():
        return str(path)
    cfg = PreprocessConfig.from_dict(cfg_dict)
    pre = FastPreprocessor(cfg)
    sim = Simulator(preset, seed=seed, class_fractions=(0.3, 0.2, 0.5))
    rng = np.random.default_rng([seed, 977])
    S = cfg.out_size
    x = np.zeros((n, 1, S, S), np.float16)
    y = np.zeros(n, np.int64)
    for i in range(n):
        sf = sim.frame(i)
        fr = sf.to_frame()
        shift = (0.0, 0.0)
        if train:
            fr = Frame(fr.data, fr.mask, randomise_meta(fr.meta, fr.data.shape, rng))
            shift = tuple(float(v) for v in rng.integers(-cfg.max_shift, cfg.max_shift + 1, 2))
        x[i] = pre([fr], shifts=[shift])[0]
        y[i] = CLASSES.index(sf.label)
    save_npz(path, x=x, y=y)
    return str(path)


def _cache_name(preset, seed, n, cfg_dict, train) -> str:
    key = digest([cfg_dict, META_FAULTS], n=8, algo="sha1")
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
        Simulation processes.

    Returns
    -------
    dict
        ``(preset, seed, n, train)`` → npz path, with arrays ``x`` (n, 1, S, S)
        float16 and ``y`` (n,) int64 (indices into :data:`CLASSES`).
    """
    work = Path(work)
    work.mkdir(parents=True, exist_ok=True)
    args = [(p, s, n, str(work), cfg.to_dict(), t) for p, s, n, t in jobs]
    todo = [a for a in args if not (work / _cache_name(a[0], a[1], a[2], a[4], a[5])).exists()]
    if todo:
        log(f"simulating {sum(a[2] for a in todo)} frames of {len(todo)} preset runs in {workers} processes")
    paths = pool_map(_simulate_job, args, workers if len(todo) > 1 else 1)
    return {tuple(j): p for j, p in zip(jobs, paths)}


def load_inputs(paths) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate cached inputs → ``x`` (N, 1, S, S) float16, ``y`` (N,) int64."""
    data = [np.load(p) for p in paths]
    return np.concatenate([d["x"] for d in data]), np.concatenate([d["y"] for d in data])


def keep_balanced_accuracy(y, probs) -> float:
    """Balanced accuracy of the keep decision (Ke §2.1: P(hit) + P(maybe) > P(miss)).

    Parameters
    ----------
    y : (N,) int ndarray
        True class indices into :data:`CLASSES`.
    probs : (N, 3) float ndarray
        Class probabilities.

    Returns
    -------
    float
        Mean of the fraction of hits and maybes kept and of misses dropped;
        NaN if either group is empty.
    """
    y = np.asarray(y)
    p = np.asarray(probs)
    keep = p[:, 0] + p[:, 1] > p[:, 2]
    pos = y != CLASSES.index("miss")
    if pos.all() or not pos.any():
        return float("nan")
    return float((keep[pos].mean() + (~keep[~pos]).mean()) / 2)


def t_interval(values) -> tuple[float, float, float]:
    """Mean and the 95 % Student-t interval ``(mean, lo, hi)`` of a few values (NaN half-width for one)."""
    from scipy import stats

    v = np.asarray([x for x in values if not math.isnan(x)], float)
    if len(v) == 0:
        return float("nan"), float("nan"), float("nan")
    m = float(v.mean())
    if len(v) < 2:
        return m, float("nan"), float("nan")
    h = float(stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v)))
    return m, m - h, m + h


#: Seeds and sizes of the training frames: the bundled models' (scripts/make_default_model.py), so the
#: benchmark and the bundle share one cache of simulated inputs.
TRAIN_SEED0 = 4001
TRAIN_FRAMES = 400
TRAIN_FRAMES_WIDE = 800
#: Validation frames scored after every epoch (evenly spread over the held-out 20 %).
VAL_FRAMES = 400


def training_jobs(families) -> list:
    """``(preset, seed, n, True)`` of every preset's training frames, in :data:`FAMILIES` order."""
    presets = [p for ps in families.values() for p in ps]
    return [(p, TRAIN_SEED0 + k, TRAIN_FRAMES_WIDE if p.startswith("wide_") else TRAIN_FRAMES, True)
            for k, p in enumerate(presets)]


def run_generalisation(work, out_json, *, families=None, seeds=(0, 1, 2), n_test: int = 100, epochs: int = 20,
                       batches: int = 25, n_train=None, workers: int = 2, threads: int = 2, only=None,
                       log=print) -> dict:
    """Leave each detector family out in turn; train on the rest, test on it.

    Parameters
    ----------
    work : str or Path
        Cache: ``work/inputs`` holds the simulated inputs (the bundled
        models' training frames, shared with ``scripts/make_default_model.py``
        when pointed at the same folder), ``work/models`` the trained models;
        a rerun resumes.
    out_json : str or Path
        Results, written atomically.
    families : dict, optional
        Family → presets (default :data:`diffscreen.simulate.presets.FAMILIES`).
    seeds : sequence of int
        One training run per seed and family (≥ 3 for an interval): the seed
        sets the initialisation and the batches, and draws the family's test
        frames afresh; the training frames are the same for every seed.
    n_test : int
        Test frames per preset of the family left out.
    epochs, batches : int
        Training length: ``epochs`` × ``batches`` class-balanced batches of 32.
    n_train : int, optional
        Use only the first ``n_train`` training frames of each preset (quick runs).
    only : sequence of str, optional
        Leave out only these families (the others are skipped; e.g. to share
        the work between processes on one cache).

    Returns
    -------
    dict
        ``{"families": {name: {"presets", "per_seed", "mean", "ci95", "per_preset"}}, "settings": ...}``.
    """
    from diffscreen.preprocess import PreprocessConfig
    from diffscreen.simulate.presets import FAMILIES
    from diffscreen.train.loop import TrainConfig, dihedral_augment, train_on_arrays

    fams = dict(families or FAMILIES)
    work = Path(work)
    cfg = PreprocessConfig.significance()
    tjobs = training_jobs(fams)
    if n_train:
        tjobs = [(p, s, min(n, n_train), t) for p, s, n, t in tjobs]
    presets = [j[0] for j in tjobs]
    test_jobs = [(p, 9000 + 100 * s + k, n_test, False) for s in seeds for k, p in enumerate(presets)]
    paths = make_inputs(tjobs + test_jobs, work / "inputs", cfg, workers=workers, log=log)
    res = {"settings": {"seeds": list(seeds), "train_frames": {j[0]: j[2] for j in tjobs}, "n_test": n_test,
                        "epochs": epochs, "batches": batches, "preprocess": cfg.to_dict(),
                        "families": {f: list(ps) for f, ps in fams.items()}},
           "families": {}}  # fmt: skip
    for fam, ps in fams.items():
        if only is not None and fam not in only:
            continue
        per_seed, per_preset = [], {p: [] for p in ps}
        train_ps = [p for p in presets if p not in ps]
        for s in seeds:
            model = work / "models" / f"without_{fam}_seed{s}_e{epochs}x{batches}.safetensors"
            if not model.exists():
                model.parent.mkdir(parents=True, exist_ok=True)
                xs, ys, xv, yv = [], [], [], []
                for job in tjobs:
                    if job[0] in ps:
                        continue
                    x, y = load_inputs([paths[job]])
                    nv = max(1, len(y) // 5)
                    xs.append(x[:-nv]); ys.append(y[:-nv]); xv.append(x[-nv:]); yv.append(y[-nv:])  # noqa: E702
                tc = TrainConfig(arch="ke2018", epochs=epochs, batches_per_epoch=batches, batch_size=32,
                                 lr_start=0.05, lr_end=1e-4, seed=s, threads=threads)
                log(f"training without {fam} (seed {s}) on {', '.join(train_ps)}")
                xv, yv = np.concatenate(xv), np.concatenate(yv)
                keep = np.linspace(0, len(yv) - 1, min(len(yv), VAL_FRAMES)).astype(int)  # validation every epoch: bounded
                train_on_arrays(np.concatenate(xs), np.concatenate(ys), model, class_names=CLASSES, preprocess=cfg,
                                config=tc, x_val=xv[keep], y_val=yv[keep],
                                data_description={"benchmark": "generalisation", "left_out": fam,
                                                  "presets": train_ps},
                                augment=dihedral_augment, log=lambda *_: None)  # fmt: skip
            ys_all, ps_all = [], []
            for p in ps:
                k = presets.index(p)
                x, y = load_inputs([paths[(p, 9000 + 100 * s + k, n_test, False)]])
                pr = predict(model, x, batch=64)
                per_preset[p].append(keep_balanced_accuracy(y, pr))
                ys_all.append(y)
                ps_all.append(pr)
            per_seed.append(keep_balanced_accuracy(np.concatenate(ys_all), np.concatenate(ps_all)))
            log(f"{fam} left out, seed {s}: keep balanced accuracy {per_seed[-1]:.3f}")
        m, lo, hi = t_interval(per_seed)
        res["families"][fam] = {"presets": list(ps), "per_seed": per_seed, "mean": m, "ci95": [lo, hi],
                                "per_preset": {p: t_interval(v) for p, v in per_preset.items()},
                                "models": [str(work / "models" / f"without_{fam}_seed{s}_e{epochs}x{batches}.safetensors")
                                           for s in seeds]}
    Path(out_json).parent.mkdir(parents=True, exist_ok=True)
    write_json(Path(out_json), res)
    return res


def bundled_model_path(name: str = "default") -> str:
    """Path of a bundled model (``"default"``: what ``screen`` uses without ``--model``)."""
    from diffscreen.models import resolve_model_path

    return str(resolve_model_path(name))


def real_frame_scores(model_path, folders) -> dict:
    """Keep decisions of a model on labelled real frames (a ``MANIFEST.tsv`` per folder).

    Parameters
    ----------
    model_path : str or Path
    folders : sequence of Path
        Folders with a ``MANIFEST.tsv`` (columns ``file``, ``label``); ``.h5``
        files are read at ``file.h5:/data``.

    Returns
    -------
    dict
        ``{"balanced_accuracy", "frames": {name: {"label", "p", "call"}}, "unread": [...]}``.
    """
    import csv

    from diffscreen.errors import DiffscreenError
    from diffscreen.io import open_source
    from diffscreen.models.inference import Classifier

    clf = Classifier(model_path)
    ys, ps, frames, unread = [], [], {}, []
    for folder in folders:
        folder = Path(folder)
        for r in csv.DictReader(open(folder / "MANIFEST.tsv"), delimiter="\t"):
            spec = str(folder / r["file"]) + (":/data" if r["file"].endswith(".h5") else "")
            try:
                with open_source(spec) as src:
                    p = clf.predict([src.read(0)])[0]
            except DiffscreenError as exc:
                unread.append(f"{r['file']}: {exc}")
                p = np.array([0.0, 0.0, 1.0]) if r["label"] != "miss" else np.array([1.0, 0.0, 0.0])  # counted wrong
            ys.append(CLASSES.index(r["label"]))
            ps.append(p)
            keep = p[0] + p[1] > p[2]
            frames[f"{folder.name}/{r['file']}"] = {"label": r["label"], "p": [float(v) for v in p],
                                                   "call": "keep" if keep else "drop"}
    return {"balanced_accuracy": keep_balanced_accuracy(np.array(ys), np.array(ps)), "frames": frames,
            "unread": unread}


def _fmt(m, lo, hi) -> str:
    if math.isnan(m):
        return "–"
    return f"{m:.3f}" if math.isnan(lo) else f"{m:.3f} [{lo:.3f}, {hi:.3f}]"


def dials_peer_lines(path) -> list[str]:
    """Markdown lines for ``bench/dials/real_frames.py``'s JSON (DIALS find_spots, defaults, keep at >= 4 spots)."""
    d = json.loads(Path(path).read_text())
    rows, tp, pos, tn, neg = [], 0, 0, 0, 0
    for name, f in d["frames"].items():
        n = f["n_spots"]
        if n is None:
            rows.append(f"| {name} | {f['label']} | not read: {f['error'][:80]} |")
            continue
        keep, is_pos = n >= 4, f["label"] != "miss"
        tp += keep and is_pos
        pos += is_pos
        tn += (not keep) and (not is_pos)
        neg += not is_pos
        rows.append(f"| {name} | {f['label']} | {n} spots → {'keep' if keep else 'drop'} |")
    read = sum(f["n_spots"] is not None for f in d["frames"].values())
    return [f"`{d['tool']}` ({d['version']}), {d['rule']} (`bench/dials/real_frames.py`): it reads {read} of "
            f"{len(d['frames'])} files with its defaults; on those it keeps {tp} of {pos} hits or maybes and "
            f"rejects {tn} of {neg} misses.", "", *table_head("frame", "truth", "DIALS"), *rows]


def report_markdown(res: dict) -> str:
    """``docs/benchmarks/generalisation.md`` from :func:`run_generalisation`'s result."""
    st = res["settings"]
    lines = ["# Leave one detector family out (issue 13)", "",
             "The significance recipe (Ke et al. 2018 CNN on the max-pooled per-pixel significance over resolution "
             "shells, 360² at 2× Ke's reciprocal pixel; the bundled fast model is the same recipe at 240²) trained on simulated frames of every detector family but one, "
             "then tested on fresh frames of the family left out. Score: balanced accuracy of the keep decision "
             "(hit or maybe against miss), mean and 95 % t-interval over "
             f"{len(st['seeds'])} seeds (each seed sets the initialisation and batches and draws fresh test frames; "
             "the training frames are those of scripts/make_default_model.py and the same for every seed). "
             "Training frames per preset (20 % validate): "
             + ", ".join(f"{p} {n}" for p, n in st["train_frames"].items())
             + f"; {st['n_test']} test frames per preset; {st['epochs']} epochs of {st['batches']} batches of 32 "
             "(scripts/make_default_model.py: 60 × 40). Goal: ≥ 0.95 in every family.", "",
             *table_head("family left out", "presets", "balanced accuracy", "per seed", "≥ 0.95")]
    for fam, r in res["families"].items():
        lo = r["ci95"][0]
        verdict = "yes" if (not math.isnan(lo) and lo >= 0.95) else ("mean only" if r["mean"] >= 0.95 else "**no**")
        lines.append(f"| {fam} | {', '.join(r['presets'])} | {_fmt(r['mean'], *r['ci95'])} | "
                     f"{', '.join(f'{v:.3f}' for v in r['per_seed'])} | {verdict} |")
    lines += ["", "## Per preset of the family left out", "", *table_head("family", "preset", "balanced accuracy")]
    for fam, r in res["families"].items():
        for p, v in r["per_preset"].items():
            lines.append(f"| {fam} | {p} | {_fmt(*v)} |")
    if res.get("real"):
        lines += ["", "## The same models on the shared real frames", "",
                  "Each left-out model, and models trained on every family, on the 18 real frames of "
                  "`../shared/data/real-frames` and `real-frames-2` (measurement only: nothing was chosen on them).",
                  "", *table_head("model", "balanced accuracy on the real frames")]
        for name, v in res["real"].items():
            lines.append(f"| {name} | {_fmt(*v) if isinstance(v, (list, tuple)) else f'{v:.3f}'} |")
    fams = res["families"]
    below = [f for f, r in fams.items() if not math.isnan(r["ci95"][1]) and r["ci95"][1] < 0.95]
    lines += ["", "## Findings", "",
              f"- {len(below)} of {len(fams)} families lie below the 0.95 goal with the whole 95 % interval "
              f"({', '.join(below) or 'none'}); "
              + ("no family reaches it." if all(r["mean"] < 0.95 for r in fams.values()) else
                 "see the table for the others."),
              f"- The left-out models are trained {st['epochs']} × {st['batches']} batches (scripts/make_default_model.py: "
              "60 × 40), so they are a lower bound on the recipe."]
    wide = max(fams, key=lambda f: (fams[f]["ci95"][1] - fams[f]["ci95"][0]) if not math.isnan(fams[f]["ci95"][0])
               else -1.0)
    lo, hi = fams[wide]["ci95"]
    if not math.isnan(lo):
        lines.append(f"- Seeds differ a lot (the widest interval, {wide}, spans {lo:.2f}–{hi:.2f}), so differences "
                     "between families of a few points mean little.")
    peers = res.get("peers")
    if peers:
        lines += ["", "## Peers on the real frames", ""] + peers
    lines += ["", f"Rerun: `diffscreen benchmark generalisation` (results in `generalisation.json`; "
              f"{res.get('seconds', float('nan')) / 60:.0f} min on this machine).", ""]
    return "\n".join(lines)
