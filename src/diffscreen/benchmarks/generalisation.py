"""Leave one detector family out: does the screen hold on a detector it never saw? (issue 13)

``diffscreen benchmark generalisation`` trains the Ke et al. (2018) CNN on the
bundled default model's input (what ``screen`` runs; ``--recipe significance``:
the per-pixel significance input,
:meth:`~diffscreen.preprocess.PreprocessConfig.significance`) on simulated
frames of every detector family but one and tests it on fresh frames of the
family left out.  Families (:data:`diffscreen.simulate.presets.FAMILIES`):
hybrid-pixel 172 µm, hybrid-pixel 75 µm, Rayonix-type CCD, CSPAD, and
JUNGFRAU/AGIPD-type panels.  The score is the balanced accuracy of the keep
decision (hit or maybe against miss, Ke §2.1), with a 95 % t-interval over
seeds.

Training inputs are drawn the way the bundled models are trained
(:func:`diffscreen.simulate.metadata.make_inputs`): a random crop shift up to ``max_shift``, and the
metadata randomised as real files get it wrong or leave it out (no geometry,
a beam centre off by a few pixels, a wrong distance), so the network learns
not to lean on a perfect header.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from diffscreen.benchmarks._harness import paragraphs, pool_map, predict, table, write_json
from diffscreen.evaluate.metrics import keep_decision, keep_rates, kept_balanced_accuracy, t_interval
from diffscreen.io.frame import CLASS_NAMES as CLASSES
from diffscreen.models.decision import KEEP_MIN_SPOTS, spot_gate
from diffscreen.simulate.metadata import job_frames, load_inputs, make_inputs, training_jobs

__all__ = ["run_generalisation", "report_markdown", "dials_peer_lines", "held_out_seed", "spot_finder_peers",
           "PEERS", "SPOT_KEEP", "RECIPES", "recipe_config", "recipe_of", "describe_input", "report_name",
           "same_test_frames", "companion", "earlier_peers", "earlier_result", "train_left_out", "hold_out_fifth",
           "paired_verdict", "noisy_label_keep", "noisy_keeps", "noise_ceiling", "CEILING_DRAWS", "frame_spot_counts",
           "counted_as_now"]


#: Validation frames scored after every epoch (evenly spread over the held-out 20 %).
VAL_FRAMES = 400

#: The network inputs a left-out CNN can be trained on: name → whose input it is.
RECIPES = {
    "default": "the bundled default model's input (read from its model file: what `screen` runs with no options)",
    "significance": "the significance input (`train --preprocess significance`, the bundled fast model's recipe at "
                    "240²)",
}


def describe_input(pre: dict) -> str:
    """One phrase for a recorded :class:`~diffscreen.preprocess.PreprocessConfig` (its ``to_dict()``)."""
    from diffscreen.preprocess import DEFAULT_S_PER_PX

    how = {"lcn": "GCN + LCN (Ke et al. 2018 Eqs. 6–9)",
           "snr": "the max-pooled per-pixel significance over resolution shells"}.get(pre["contrast"], pre["contrast"])
    scale = pre["s_per_px"] / DEFAULT_S_PER_PX
    return f"{how}, {pre['out_size']}² at {'' if abs(scale - 1) < 1e-6 else f'{scale:g}× '}Ke's reciprocal pixel"


def recipe_config(recipe: str):
    """The :class:`~diffscreen.preprocess.PreprocessConfig` of a :data:`RECIPES` name.

    ``"default"`` is read from the bundled default model file, so the benchmark follows whatever ships.

    Raises
    ------
    ConfigError
        An unknown name.
    """
    from diffscreen.errors import ConfigError
    from diffscreen.models import read_model_metadata, resolve_model_path
    from diffscreen.preprocess import PreprocessConfig

    if recipe == "default":
        return PreprocessConfig.from_dict(read_model_metadata(resolve_model_path(None))["preprocess"])
    if recipe == "significance":
        return PreprocessConfig.significance()
    raise ConfigError(f"unknown recipe {recipe!r}; use one of {', '.join(RECIPES)}")


def recipe_of(settings: dict) -> str:
    """The :data:`RECIPES` name of a run's ``settings`` (runs before the name was stored: from their contrast)."""
    return settings.get("recipe") or ("significance" if settings["preprocess"]["contrast"] == "snr" else "default")


def report_name(recipe: str) -> str:
    """File stem of a recipe's results and report: ``generalisation`` for what ships, else ``generalisation_NAME``."""
    return "generalisation" if recipe == "default" else f"generalisation_{recipe}"


def same_test_frames(a: dict, b: dict) -> bool:
    """Whether two runs' ``settings`` test on the same frames with the same training frames and length (so their
    models can be compared seed by seed, and their spot-finder peers are the same)."""
    keys = ("seeds", "n_test", "families", "train_frames", "epochs", "batches")
    return all(a.get(k) == b.get(k) for k in keys)


def companion(res: dict, runs) -> dict | None:
    """The first of ``runs`` (results of :func:`run_generalisation`) of another recipe on the same test frames as
    ``res``, which :func:`report_markdown` compares it with; None if there is none."""
    mine = recipe_of(res["settings"])
    return next((r for r in runs if recipe_of(r["settings"]) != mine and same_test_frames(r["settings"],
                                                                                          res["settings"])), None)


def earlier_peers(settings: dict, runs, n_dials: int, spot_counts: dict | None = None) -> dict | None:
    """The :func:`spot_finder_peers` result of one of ``runs`` (results of :func:`run_generalisation`, any recipe)
    on the same test frames as ``settings`` and with as many DIALS frames (they depend on nothing else); None if
    none has one.  Given this run's ``spot_counts`` (:func:`frame_spot_counts`, with labels), a copy whose
    diffscreen spot count is scored from them (:func:`spot_count_peer`), as the gate counts today."""
    peers = earlier_result(settings, runs, "spot_finders", lambda sf: sf["n_dials"] == n_dials)
    if peers is None or "labels" not in (spot_counts or {}):
        return peers
    own = spot_count_peer(settings, spot_counts)
    return {**peers, "families": {f: {**r, "spots": own[f]} for f, r in peers["families"].items()}}


def earlier_result(settings: dict, runs, key: str, ok=lambda v: True):
    """``run[key]`` of the first of ``runs`` (results of :func:`run_generalisation`) on the same test frames as
    ``settings`` that has one passing ``ok``; None if none has (e.g. ``"ceiling"``: :func:`noise_ceiling`)."""
    return next((r[key] for r in runs if r.get(key) and same_test_frames(r["settings"], settings) and ok(r[key])),
                None)


def held_out_seed(seed: int, k: int) -> int:
    """The simulator seed of the test frames of the ``k``-th preset (in :func:`training_jobs` order) at ``seed``."""
    return 9000 + 100 * seed + k


def run_generalisation(work, out_json, *, families=None, seeds=(0, 1, 2), n_test: int = 100, epochs: int = 20,
                       batches: int = 25, n_train=None, workers: int = 2, threads: int = 2, only=None,
                       recipe: str = "default", min_spots: int = KEEP_MIN_SPOTS, runs=(), log=print) -> dict:
    """Leave each detector family out in turn; train on the rest, test on it.

    Each left-out model decides as ``screen`` does: the network, then the spot gate on the frames it keeps
    (:func:`~diffscreen.models.decision.spot_gate`, the spots off every ring and streak counted on the raw test
    frames by :func:`frame_spot_counts`).

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
    recipe : {"default", "significance"}
        The network input (:data:`RECIPES`, :func:`recipe_config`): by
        default the bundled default model's, i.e. what ``screen`` runs.
    min_spots : int
        The spot gate (``screen --min-spots``); 0: the network alone.
    runs : sequence of dict
        Earlier results on the same test frames, whose spot counts are reused (:func:`earlier_result`).

    Returns
    -------
    dict
        ``{"families": {name: {"presets", "per_seed", "mean", "ci95", "per_preset", "kept_per_seed",
        "rejected_per_seed", "network_per_seed"}}, "settings": ..., "spot_counts": ...}``: per seed, the
        balanced accuracy of the decision with the gate and the fractions of the hits and maybes kept and of the
        misses rejected, and the network's balanced accuracy alone; ``settings["recipe"]`` names the recipe,
        ``settings["min_spots"]`` the gate; ``trained``: models this call trained (absent: none).

    Raises
    ------
    ConfigError
        An unknown recipe.
    """
    from diffscreen.simulate.presets import FAMILIES

    fams = dict(families or FAMILIES)
    work = Path(work)
    cfg = recipe_config(recipe)
    tjobs = [(p, s, min(n, n_train or n), t) for p, s, n, t in training_jobs(fams)]
    presets = [j[0] for j in tjobs]
    test_jobs = [(p, held_out_seed(s, k), n_test, False) for s in seeds for k, p in enumerate(presets)]
    paths = make_inputs(tjobs + test_jobs, work / "inputs", cfg, workers=workers, log=log)
    res = {"settings": {"recipe": recipe, "seeds": list(seeds), "train_frames": {j[0]: j[2] for j in tjobs},
                        "n_test": n_test, "epochs": epochs, "batches": batches, "preprocess": cfg.to_dict(),
                        "families": {f: list(ps) for f, ps in fams.items()}, "min_spots": min_spots},
           "families": {}}  # fmt: skip
    if min_spots:
        res["spot_counts"] = earlier_result(res["settings"], runs, "spot_counts", counted_as_now)
        if res["spot_counts"] is None:
            log("counting the spots on the test frames (the spot gate)")
            res["spot_counts"] = frame_spot_counts(res["settings"], workers=workers)
    for fam, ps in fams.items():
        if only is not None and fam not in only:
            continue
        per_seed, per_preset, rates, alone = [], {p: [] for p in ps}, {"kept": [], "rejected": []}, []
        train_ps = [p for p in presets if p not in ps]
        models = [work / "models" / f"without_{fam}_{recipe}_seed{s}_e{epochs}x{batches}.safetensors"
                  for s in seeds]
        for s, model in zip(seeds, models):
            if not model.exists():
                res["trained"] = res.get("trained", 0) + 1
                log(f"training without {fam} (seed {s}) on {', '.join(train_ps)}")
                train_left_out([load_inputs([paths[job]]) for job in tjobs if job[0] not in ps], model, cfg,
                               seed=s, epochs=epochs, batches=batches, threads=threads,
                               data_description={"benchmark": "generalisation", "left_out": fam, "presets": train_ps})
            tests = [load_inputs([paths[(p, held_out_seed(s, presets.index(p)), n_test, False)]]) for p in ps]
            nets = [keep_decision(predict(model, x, batch=64)) for x, _ in tests]  # the network's keep, per preset
            kepts = [spot_gate(k, res["spot_counts"]["counts"][_job_key(p, held_out_seed(s, presets.index(p)))],
                               min_spots) for p, k in zip(ps, nets)] if min_spots else nets
            for p, (_, y), kept in zip(ps, tests, kepts):
                per_preset[p].append(kept_balanced_accuracy(kept, y))
            y, kept, net = (np.concatenate(a) for a in ([y for _, y in tests], kepts, nets))
            alone.append(kept_balanced_accuracy(net, y))
            per_seed.append(kept_balanced_accuracy(kept, y))
            for key, rate in zip(("kept", "rejected"), keep_rates(kept, y)):
                rates[key].append(rate)
            log(f"{fam} left out, seed {s}: keep balanced accuracy {per_seed[-1]:.3f}")
        m, lo, hi = t_interval(per_seed)
        res["families"][fam] = {"presets": list(ps), "per_seed": per_seed, "mean": m, "ci95": [lo, hi],
                                "per_preset": {p: t_interval(v) for p, v in per_preset.items()},
                                "kept_per_seed": rates["kept"], "rejected_per_seed": rates["rejected"],
                                "network_per_seed": alone, "models": [str(m) for m in models]}
    write_json(Path(out_json), res)  # makes the folder
    return res


#: A frame is kept by a spot count at this many spots or more: Ke et al. (2018) §3.3.1's "maybe" (4-9 spots), the
#: rule ``screen --method dials`` applies and the spot gate of ``screen``; fixed beforehand, not tuned.
SPOT_KEEP = KEEP_MIN_SPOTS

#: The spot-finders scored beside the CNN on the left-out families' test frames: name in the report, keep rule.
PEERS = {
    "spots": ("diffscreen spot count", f"diffscreen's spot finder (`preprocess.spots`, its defaults; the noise "
                                       f"model of the significance input), kept at ≥ {SPOT_KEEP} spots (the gate's "
                                       "count: since stop 31, the spots off every ring, and since stop 32 "
                                       "off every jet streak too)"),
    "peakfinder8": ("peakfinder8", "peakfinder8 with its defaults (`screen --method peakfinder8`)"),
    "dials": ("DIALS, gain 1", f"DIALS `find_spots` with its defaults (`screen --method dials`: gain 1, as a "
                               f"header without one gives), kept at ≥ {SPOT_KEEP} spots"),
    "dials_gain": ("DIALS, its gain", "the same DIALS given the gain it needs (the simulated detector's, ADU per "
                                      "photon, as a user sets `gain=`)"),
}


def _on_test_jobs(fn, settings: dict, *args, workers: int = 2, progress=None) -> dict:
    """``fn(preset, seed, n_test, *args)`` on every test job of a run (each left-out preset at each seed's
    :func:`held_out_seed`), in ``workers`` processes → ``{(preset, seed): result}``; ``progress`` as
    :func:`spot_finder_peers`."""
    n, presets = settings["n_test"], list(settings["train_frames"])
    jobs = [(p, held_out_seed(s, presets.index(p)), n, *args) for s in settings["seeds"]
            for ps in settings["families"].values() for p in ps]
    if progress:
        progress(total=n * len(jobs))
    results = pool_map(fn, jobs, workers, done=(lambda: progress(advance=n)) if progress else None)
    return dict(zip(((j[0], j[1]) for j in jobs), results))


def _of_seed(settings: dict, done: dict, presets_left_out, seed: int) -> list:
    """The results of :func:`_on_test_jobs` for one family's presets at one seed."""
    order = list(settings["train_frames"])
    return [done[(p, held_out_seed(seed, order.index(p)))] for p in presets_left_out]


def _peer_job(preset: str, seed: int, n: int, n_dials: int) -> dict:
    """The :data:`PEERS`' keep decisions on frames ``0..n-1`` of one test job (DIALS on the first ``n_dials``),
    but for diffscreen's spot count, which :func:`spot_finder_peers` takes from :func:`frame_spot_counts`."""
    from diffscreen.baselines import Peakfinder8
    from diffscreen.baselines.dials import DialsError, DialsSpotFinder

    pf8 = Peakfinder8()
    dials = DialsSpotFinder() if n_dials else None
    labels, kept, failed = [], {k: [] for k in PEERS if k != "spots"}, 0
    try:
        for i, (fr, _, label) in enumerate(job_frames(preset, seed, n, train=False)):
            labels.append(CLASSES.index(label))
            kept["peakfinder8"].append(bool(pf8.classify([fr])[0].keep))
            if i >= n_dials:
                continue
            for method, frame in (("dials", fr), ("dials_gain", _with_gain(fr, fr.meta.extra["gain_adu_per_photon"]))):
                try:
                    kept[method].append(dials.find_spots(frame)["n_spots"] >= SPOT_KEEP)
                except DialsError:  # counted as not kept, and said
                    kept[method].append(False)
                    failed += 1
    finally:
        if dials is not None:
            dials.close()
    return {"labels": labels, "kept": kept, "dials_failed": failed}


def _with_gain(frame, gain: float):
    """``frame`` whose header records ``gain`` (ADU per photon), the one DIALS then uses."""
    from dataclasses import replace

    from diffscreen.io.frame import Frame

    return Frame(frame.data, frame.mask, replace(frame.meta, extra={**frame.meta.extra, "gain": float(gain)}))


def spot_finder_peers(settings: dict, *, n_dials: int = 20, spot_counts: dict | None = None, workers: int = 2,
                      log=print, progress=None) -> dict:
    """The spot-finders of :data:`PEERS` on exactly the test frames of a :func:`run_generalisation` run.

    Each left-out family's test frames (the simulator seeds of :func:`held_out_seed`, frames as the CNN saw them
    before preprocessing, header intact) go through each spot-finder with its defaults and fixed keep rule; none
    is trained or tuned, so every family is new to them, as it is to the CNN trained without it.

    Parameters
    ----------
    settings : dict
        The ``settings`` of :func:`run_generalisation`'s result: ``seeds``, ``n_test``, ``families`` and
        ``train_frames`` (whose order numbers the presets).
    n_dials : int
        Frames per preset and seed given to DIALS (the first ones; 0: no DIALS), which takes about a second a
        frame; DIALS needs Debian's ``python3-dials``.
    spot_counts : dict, optional
        :func:`frame_spot_counts` of these test frames (the run's ``spot_counts``), whose ≥ :data:`SPOT_KEEP` rule is
        diffscreen's spot count; counted here when not given.
    workers : int
        Processes.
    log : callable
    progress : callable, optional
        ``progress(total=frames)`` once, then ``progress(advance=frames)`` as each preset's frames of a seed are
        done.

    Returns
    -------
    dict
        ``names`` and ``rules`` (:data:`PEERS`), ``n_test``, ``n_dials``, ``dials_failed`` (DIALS runs that
        failed, counted as not kept) and ``families``: family → method → ``{"per_seed", "mean", "ci95"}``
        (balanced accuracy of the keep decision, 0-1; the same seeds and frames as the CNN's row).
    """
    from diffscreen.baselines.dials import DialsError, find_dials_python

    seeds, n, fams = settings["seeds"], settings["n_test"], settings["families"]
    presets = list(settings["train_frames"])
    if n_dials:
        try:
            find_dials_python()
        except DialsError as exc:
            log(f"DIALS left out: {exc}")
            n_dials = 0
    log(f"spot-finders on {len(seeds)} × {len(presets)} × {n} test frames (DIALS on {n_dials} of each {n})")
    done = _on_test_jobs(_peer_job, settings, n_dials, workers=workers, progress=progress)
    spots = spot_count_peer(settings, spot_counts or frame_spot_counts(settings, workers=workers))
    out = {"names": {k: v[0] for k, v in PEERS.items()}, "rules": {k: v[1] for k, v in PEERS.items()},
           "n_test": n, "n_dials": n_dials,
           "dials_failed": sum(r["dials_failed"] for r in done.values()), "families": {}}
    for fam, ps in fams.items():
        out["families"][fam] = {"spots": spots[fam]}
        for method in [m for m in PEERS if m != "spots" and (n_dials or not m.startswith("dials"))]:
            per_seed = []
            for s in seeds:
                rs = _of_seed(settings, done, ps, s)
                kept = np.concatenate([r["kept"][method] for r in rs])
                labels = np.concatenate([r["labels"][: len(r["kept"][method])] for r in rs])  # DIALS: the first few
                per_seed.append(kept_balanced_accuracy(kept, labels))
            m, lo, hi = t_interval(per_seed)
            out["families"][fam][method] = {"per_seed": per_seed, "mean": m, "ci95": [lo, hi]}
    return out


def _job_key(preset: str, seed: int) -> str:
    """Key of one test job in :func:`frame_spot_counts`'s ``counts``."""
    return f"{preset}@{seed}"


def _count_job(preset: str, seed: int, n: int) -> tuple[list, list]:
    """The spot gate's count (:func:`~diffscreen.preprocess.spots.count_spots_off_rings`) on frames ``0..n-1`` of
    one test job, and their labels (indices into :data:`CLASSES`)."""
    from diffscreen.preprocess.spots import count_spots_off_rings

    frames = list(job_frames(preset, seed, n, train=False))
    return [count_spots_off_rings(fr) for fr, _, _ in frames], [CLASSES.index(label) for _, _, label in frames]


def frame_spot_counts(settings: dict, *, workers: int = 2, progress=None) -> dict:
    """The spot gate's count (its defaults, as ``screen``: spots off every ring and streak) on every test frame of a
    run.

    Parameters
    ----------
    settings : dict
        The ``settings`` of :func:`run_generalisation`'s result.
    workers : int
        Processes.
    progress : callable, optional
        As :func:`spot_finder_peers`.

    Returns
    -------
    dict
        ``counts``: ``"PRESET@SEED"`` (the test job's simulator seed, :func:`held_out_seed`) → spots per frame;
        ``labels``: the same keys → each frame's label (index into :data:`CLASSES`); ``config``: the spot
        finder's settings (:func:`counted_as_now` tells whether they are today's).
    """
    from diffscreen.preprocess.spots import DEFAULT_SPOT_CONFIG

    done = _on_test_jobs(_count_job, settings, workers=workers, progress=progress)
    return {"counts": {_job_key(p, s): c for (p, s), (c, _) in done.items()},
            "labels": {_job_key(p, s): y for (p, s), (_, y) in done.items()}, "config": DEFAULT_SPOT_CONFIG.to_dict()}


def counted_as_now(spot_counts: dict) -> bool:
    """Whether :func:`frame_spot_counts`'s result was counted with today's spot finder settings and holds the
    labels (else it is counted again rather than reused)."""
    from diffscreen.preprocess.spots import DEFAULT_SPOT_CONFIG

    return spot_counts.get("config") == DEFAULT_SPOT_CONFIG.to_dict() and "labels" in spot_counts


def spot_count_peer(settings: dict, spot_counts: dict) -> dict:
    """diffscreen's spot count alone as a screen (kept at ≥ :data:`SPOT_KEEP` spots) on a run's test frames.

    Parameters
    ----------
    settings : dict
        The ``settings`` of :func:`run_generalisation`'s result.
    spot_counts : dict
        :func:`frame_spot_counts` of those test frames (with their labels).

    Returns
    -------
    dict
        family → ``{"per_seed", "mean", "ci95"}``: balanced accuracy of the keep decision (0-1).
    """
    out = {}
    for fam, ps in settings["families"].items():
        per_seed = []
        for s in settings["seeds"]:
            keys = [_job_key(p, held_out_seed(s, list(settings["train_frames"]).index(p))) for p in ps]
            kept = np.concatenate([np.asarray(spot_counts["counts"][k]) >= SPOT_KEEP for k in keys])
            per_seed.append(kept_balanced_accuracy(kept, np.concatenate([spot_counts["labels"][k] for k in keys])))
        m, lo, hi = t_interval(per_seed)
        out[fam] = {"per_seed": per_seed, "mean": m, "ci95": [lo, hi]}
    return out


#: Noise draws per test frame of :func:`noise_ceiling`.
CEILING_DRAWS = 20


def noisy_label_keep(snr, *, snr_threshold: float, min_spots: int, draws: int, rng, sd: float = 1.0) -> float:
    """How often the simulator's label rule keeps a frame when each spot's SNR is measured with photon noise.

    A spot's integrated signal-to-noise ratio is ``S / √(S + B + n σ²)`` from the noise-free expectation
    (:mod:`diffscreen.simulate.run`, after Ke et al. 2018 §3.3.1); the photon noise of the same sum measured on one
    frame makes the measured ratio ``SNR + N(0, 1)`` (Gaussian limit of the Poisson counts, background and footprint
    known exactly).  The frame is kept when at least ``min_spots`` measured ratios reach ``snr_threshold``, the
    label's own rule.

    Parameters
    ----------
    snr : (P,) float ndarray
        Expected SNR of each recorded Bragg spot (``SimFrame.peaks[:, 3]``).
    snr_threshold : float
        SNR that makes a spot detectable (``Preset.snr_threshold``, 5).
    min_spots : int
        Detectable spots that keep a frame (``Preset.maybe_min_spots``, 4: Ke's *maybe*).
    draws : int
        Noise draws.
    rng : numpy.random.Generator
    sd : float
        Standard deviation of the measured SNR (1: photon noise; 0 gives the label itself).

    Returns
    -------
    float
        Fraction of the draws (0-1) in which the frame is kept.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> noisy_label_keep(np.array([9.0, 8.0, 7.0, 5.1, 2.0]), snr_threshold=5.0, min_spots=4, draws=10, rng=rng,
    ...                  sd=0.0)
    1.0
    """
    snr = np.asarray(snr, dtype=np.float64)
    measured = snr[None, :] + sd * rng.standard_normal((int(draws), snr.size))
    return float(np.mean((measured >= snr_threshold).sum(axis=1) >= min_spots))


def noisy_keeps(sim, n: int, *, draws: int = CEILING_DRAWS, seed: int = 0) -> tuple[list, list]:
    """Labels and :func:`noisy_label_keep` of frames ``0..n-1`` of a simulator, with its preset's label rule.

    Parameters
    ----------
    sim : diffscreen.simulate.Simulator
    n : int
        Frames.
    draws : int
        Noise draws per frame.
    seed : int
        Seed of the noise draws (``default_rng([seed, 4242])``).

    Returns
    -------
    labels : list of int
        Class indices into hit, maybe, miss.
    p_keep : list of float
        How often each frame is kept (0-1).
    """
    rng, P, labels, p_keep = np.random.default_rng([seed, 4242]), sim.preset, [], []
    for i in range(n):
        sf = sim.frame(i)
        labels.append(CLASSES.index(sf.label))
        p_keep.append(noisy_label_keep(sf.peaks[:, 3], snr_threshold=P.snr_threshold, min_spots=P.maybe_min_spots,
                                       draws=draws, rng=rng))
    return labels, p_keep


def _ceiling_job(preset: str, seed: int, n: int, draws: int) -> dict:
    """:func:`noisy_keeps` of one test job (the frames of :func:`job_frames`)."""
    from diffscreen.simulate.metadata import job_simulator

    labels, p_keep = noisy_keeps(job_simulator(preset, seed), n, draws=draws, seed=seed)
    return {"labels": labels, "p_keep": p_keep}


def noise_ceiling(settings: dict, *, draws: int = CEILING_DRAWS, workers: int = 2, progress=None) -> dict:
    """About the balanced accuracy that photon noise leaves to any screen of a run's test frames.

    Every test frame of :func:`held_out_seed`'s seeds goes through :func:`noisy_label_keep`: a screen that is told
    where every Bragg spot is and its expected strength, and only measures each spot's integrated signal with its
    photon noise, applying the label's own rule.  A real screen must also find the spots and estimate their
    background; it can still do a little better near the 4-spot line by knowing how the frames' exposures are
    distributed, so this estimates the limit rather than bounding it.  No threshold is chosen on these frames.

    Parameters
    ----------
    settings : dict
        The ``settings`` of :func:`run_generalisation`'s result.
    draws : int
        Noise draws per frame.
    workers : int
        Processes.
    progress : callable, optional
        As :func:`spot_finder_peers`.

    Returns
    -------
    dict
        ``draws`` and ``families``: family → ``{"per_seed", "mean", "ci95"}``, the expected balanced accuracy of
        the keep decision (0-1) per seed, on the same frames as the CNN's row.
    """
    done = _on_test_jobs(_ceiling_job, settings, draws, workers=workers, progress=progress)
    out = {"draws": draws, "families": {}}
    for fam, ps in settings["families"].items():
        per_seed = []
        for s in settings["seeds"]:
            rs = _of_seed(settings, done, ps, s)
            per_seed.append(kept_balanced_accuracy(np.concatenate([r["p_keep"] for r in rs]),
                                                   np.concatenate([r["labels"] for r in rs])))
        m, lo, hi = t_interval(per_seed)
        out["families"][fam] = {"per_seed": per_seed, "mean": m, "ci95": [lo, hi]}
    return out


def train_left_out(sets, model_path, preprocess, *, seed: int, epochs: int, batches: int, threads: int = 2,
                   data_description: dict | None = None) -> None:
    """Train the Ke CNN the way this benchmark trains each left-out model, and write its model file.

    Class-balanced batches of 32 with a random flip/rotation each, ``epochs`` × ``batches`` of them, SGD from
    0.05 down to 1e-4 (:func:`diffscreen.train.loop.train_on_arrays`); the last fifth of every ``(x, y)`` set
    validates (:func:`hold_out_fifth`), at most :data:`VAL_FRAMES` of it after every epoch.

    Parameters
    ----------
    sets : sequence of ((N, 1, S, S) ndarray, (N,) int ndarray)
        The training presets' inputs and class indices (hit, maybe, miss).
    model_path : str or Path
        Model file to write (its folder is made).
    preprocess : PreprocessConfig
        The recipe of the inputs, stored in the model file.
    seed, epochs, batches, threads : int
    data_description : dict, optional
        Stored in the model file.
    """
    from diffscreen.train.loop import TrainConfig, dihedral_augment, train_on_arrays

    Path(model_path).parent.mkdir(parents=True, exist_ok=True)
    x, y, xv, yv = hold_out_fifth(sets)
    keep = np.linspace(0, len(yv) - 1, min(len(yv), VAL_FRAMES)).astype(int)  # validation every epoch: bounded
    tc = TrainConfig(arch="ke2018", epochs=epochs, batches_per_epoch=batches, batch_size=32, lr_start=0.05,
                     lr_end=1e-4, seed=seed, threads=threads)
    train_on_arrays(x, y, model_path, class_names=CLASSES, preprocess=preprocess, config=tc, x_val=xv[keep],
                    y_val=yv[keep], augment=dihedral_augment, log=lambda *_: None, data_description=data_description)


def hold_out_fifth(sets) -> tuple:
    """``x, y, x_val, y_val`` joined over ``(x, y)`` pairs ((N, 1, S, S), (N,)): each's last fifth (≥ 1) validates."""
    nv = [max(1, len(y) // 5) for _, y in sets]
    train = [np.concatenate([a[i][:-n] for a, n in zip(sets, nv)]) for i in (0, 1)]
    val = [np.concatenate([a[i][-n:] for a, n in zip(sets, nv)]) for i in (0, 1)]
    return (*train, *val)


def _fmt(m, lo, hi) -> str:
    if math.isnan(m):
        return "–"
    return f"{m:.3f}" if math.isnan(lo) else f"{m:.3f} [{lo:.3f}, {hi:.3f}]"


def dials_peer_lines(path) -> list[str]:
    """Markdown lines for ``bench/dials/real_frames.py``'s JSON (DIALS find_spots, defaults, keep at >= 4 spots)."""
    d = json.loads(Path(path).read_text())
    rows = [(name, f["label"], f"not read: {f['error'][:80]}" if f["n_spots"] is None else
             f"{f['n_spots']} spots → {'keep' if f['n_spots'] >= 4 else 'drop'}") for name, f in d["frames"].items()]
    read = [f for f in d["frames"].values() if f["n_spots"] is not None]
    kept = [f["n_spots"] >= 4 for f in read if f["label"] != "miss"]
    rejected = [f["n_spots"] < 4 for f in read if f["label"] == "miss"]
    return [f"`{d['tool']}` ({d['version']}), {d['rule']} (`bench/dials/real_frames.py`): it reads {len(read)} of "
            f"{len(d['frames'])} files with its defaults; on those it keeps {sum(kept)} of {len(kept)} hits or maybes "
            f"and rejects {sum(rejected)} of {len(rejected)} misses.", "", *table(("frame", "truth", "DIALS"), rows)]


def _said(d) -> str:
    """A paired difference ``(mean, lo, hi)`` with its interval and :func:`paired_verdict`, as the report prints it."""
    return f"{_fmt(*d)}: {paired_verdict(d)}"


def paired_verdict(d) -> str:
    """What a paired difference ``(mean, lo, hi)`` (:func:`~diffscreen.evaluate.metrics.t_interval`) says:
    "better" if its 95 % interval lies above 0, "worse" if below, else "not established" (also with one seed,
    whose NaN bounds compare false)."""
    return "better" if d[1] > 0 else "worse" if d[2] < 0 else "not established"


def _spot_finder_lines(res: dict) -> list:
    """Report section of :func:`spot_finder_peers`'s result beside the CNN's (nothing without it)."""
    sf = res.get("spot_finders")
    if not sf:
        return []
    fams = res["families"]
    methods = [m for m in PEERS if all(m in sf["families"][f] for f in fams)]
    diffs = {(f, m): t_interval(np.subtract(sf["families"][f][m]["per_seed"], fams[f]["per_seed"]))
             for f in fams for m in methods}

    rows = [(f, _fmt(r["mean"], *r["ci95"]), *(_fmt(sf["families"][f][m]["mean"], *sf["families"][f][m]["ci95"])
                                               for m in methods)) for f, r in fams.items()]
    drows = [(f, *(_said(diffs[f, m]) for m in methods)) for f in fams]
    says = {(m, v): [f for f in fams if paired_verdict(diffs[f, m]) == v] for m in methods for v in ("better", "worse")}
    best = max(((sf["families"][f][m]["mean"], m, f) for f in fams for m in methods), key=lambda t: t[0])
    dials = (f" DIALS saw the first {sf['n_dials']} of each preset's {sf['n_test']} test frames per seed"
             + (f" and failed on {sf['dials_failed']} (counted as not kept)." if sf["dials_failed"] else ".")
             if "dials" in methods else "")
    return ["## Spot-finders on the same test frames",
            "The left-out families' test frames (the same seeds and frames, before preprocessing, header intact) "
            "through spot-finders with their defaults and fixed keep rules, none trained or tuned, so every family "
            "is new to them as it is to the CNN trained without it: " + "; ".join(sf["rules"][m] for m in methods)
            + "." + dials,
            table(("family left out", "CNN trained without it", *(sf["names"][m] for m in methods)), rows),
            "Paired difference, spot-finder − CNN (per seed on the same frames), mean and 95 % interval; "
            "*better* or *worse* only where the interval excludes 0:",
            table(("family", *(f"{sf['names'][m]} − CNN" for m in methods)), drows),
            [*(f"- {sf['names'][m]}: better than the CNN trained without the family in "
               + "; worse in ".join(f"{len(w)} of {len(fams)} families" + (f" ({', '.join(w)})" if w else "")
                                    for w in (says[m, "better"], says[m, "worse"])) + "." for m in methods),
             f"- The best spot-finder mean in any family is {best[0]:.3f} ({sf['names'][best[1]]}, {best[2]}): "
             + ("none reaches the 0.95 goal either." if best[0] < 0.95 else "at or above the 0.95 goal.")]]


def _gate_line(fams: dict, gate: int) -> str:
    """Findings line: the decision with the spot gate against the network alone, paired per seed."""
    d = {f: t_interval(np.subtract(r["per_seed"], r["network_per_seed"])) for f, r in fams.items()}
    says = {v: [f for f in fams if paired_verdict(d[f]) == v] for v in ("better", "worse")}
    return (f"- The spot gate (≥ {gate} spots) against the network alone, paired per seed: better in "
            f"{len(says['better'])} of {len(fams)} families" + (f" ({', '.join(says['better'])})" if says["better"]
                                                                  else "")
            + f", worse in {len(says['worse'])}" + (f" ({', '.join(says['worse'])})" if says["worse"] else "")
            + "; " + ", ".join(f"{f} {d[f][0]:+.3f}" for f in fams) + ".")


def _network(r: dict) -> list:
    """A family's balanced accuracy per seed of the network alone (runs before the spot gate had only that)."""
    return r.get("network_per_seed", r["per_seed"])


def _recipe_lines(res: dict, other: dict | None) -> list:
    """Report section: this run's CNN against ``other``, a run of another recipe on the same test frames."""
    if not other or not same_test_frames(res["settings"], other["settings"]):
        return []
    fams, ofams = res["families"], other["families"]
    mine, theirs = recipe_of(res["settings"]), recipe_of(other["settings"])
    common = [f for f in fams if f in ofams]
    diffs = {f: t_interval(np.subtract(_network(fams[f]), _network(ofams[f]))) for f in common}
    rows = [(f, _fmt(*t_interval(_network(fams[f]))), _fmt(*t_interval(_network(ofams[f]))), _said(diffs[f]))
            for f in common]
    says = {v: [f for f in common if paired_verdict(diffs[f]) == v] for v in ("better", "worse")}
    return ["## The other recipe on the same test frames",
            f"The same benchmark with the {theirs} recipe ({describe_input(other['settings']['preprocess'])}): "
            "the same training frames, length, "
            f"seeds and test frames (`{report_name(theirs)}.md`), so each seed's models are compared on the same "
            "frames, the networks alone (the spot gate is the same for both). "
            f"Paired difference {mine} − {theirs}, mean and 95 % interval; *better* or *worse* only where "
            "the interval excludes 0:",
            table(("family left out", mine, theirs, f"{mine} − {theirs}"), rows),
            [f"- The {mine} recipe is better in {len(says['better'])} of {len(common)} families"
             + (f" ({', '.join(says['better'])})" if says["better"] else "")
             + f" and worse in {len(says['worse'])}" + (f" ({', '.join(says['worse'])})" if says["worse"] else "")
             + "; elsewhere the difference is not established."]]


def _ceiling_lines(ceil: dict, draws: int) -> list:
    """Report paragraph on :func:`noise_ceiling`'s column of the main table."""
    below = [f for f, c in ceil.items() if c["ci95"][1] < 0.95]
    near = [f for f, c in ceil.items() if c["mean"] < 0.95 <= c["ci95"][1]]
    lo, hi = min(c["mean"] for c in ceil.values()), max(c["mean"] for c in ceil.values())
    return [f"*Noise ceiling* (`noise_ceiling`): the same test frames screened by the label's own rule (≥ 4 Bragg "
            "spots with SNR ≥ 5) with every spot's position and expected strength given, and only its integrated "
            f"signal measured with its photon noise (measured SNR = SNR + N(0, 1), {draws} draws a frame). It "
            "estimates the limit; it is not a strict bound: a screen that knows how the frames' exposures are "
            "distributed can do a little better on frames near the 4-spot line (choosing the SNR threshold on "
            "the test frames themselves gained 1–2 points), and the test frames leave a few points of chance. "
            f"Its means lie between {lo:.3f} and {hi:.3f}. "
            + (f"In {len(below)} of {len(ceil)} families ({', '.join(below)}) its whole 95 % interval lies below "
               "0.95: there the goal asks for more than the photon noise of these frames allows. " if below else "")
            + (f"In {len(near)} ({', '.join(near)}) its mean lies below 0.95 and its interval reaches it: there the "
               "goal is at the limit that photon noise sets. " if near else "")
            + ("Elsewhere its mean lies above 0.95." if len(below) + len(near) < len(ceil) else "")]


def report_markdown(res: dict, other: dict | None = None) -> str:
    """``docs/benchmarks/generalisation.md`` (or ``generalisation_RECIPE.md``) from :func:`run_generalisation`'s result.

    Parameters
    ----------
    res : dict
        The run, with its spot-finder peers, real-frame scores and time where present.
    other : dict, optional
        A run of another recipe; on the same test frames (:func:`same_test_frames`) the report compares the two
        CNNs seed by seed.
    """
    st, fams = res["settings"], res["families"]
    recipe = recipe_of(st)

    def verdict(r):  # a NaN bound (one seed) compares false
        return "yes" if r["ci95"][0] >= 0.95 else ("mean only" if r["mean"] >= 0.95 else "**no**")

    with_rates = all("kept_per_seed" in r for r in fams.values())
    rate_heads = ("hits and maybes kept", "misses rejected") if with_rates else ()

    def _rates(r):  # mean over seeds of each rate, where the run recorded them
        return tuple(f"{np.nanmean(r[k]):.2f}" for k in ("kept_per_seed", "rejected_per_seed")) if with_rates else ()

    ceil = (res.get("ceiling") or {}).get("families", {})
    ceil = ceil if all(f in ceil for f in fams) else {}
    ceil_head = ("noise ceiling",) if ceil else ()
    gate = st.get("min_spots", 0)
    gated = bool(gate) and all("network_per_seed" in r for r in fams.values())
    # runs before stop 31 counted every spot; since then the gate counts the spots off every ring, and since stop 32
    # off every jet streak too
    config = res.get("spot_counts", {}).get("config", {})
    off_rings = ((" off every ring and streak" if config.get("streak_px") else " off every ring")
                 if "ring_spot_alpha" in config else "")
    alone_head = ("network alone",) if gated else ()

    def _alone(r):
        return (_fmt(*t_interval(r["network_per_seed"])),) if gated else ()

    def _ceil(f):
        return (_fmt(ceil[f]["mean"], *ceil[f]["ci95"]),) if ceil else ()

    below = [f for f, r in fams.items() if r["ci95"][1] < 0.95]
    wide = max(fams, key=lambda f: -1.0 if math.isnan(fams[f]["ci95"][0]) else fams[f]["ci95"][1] - fams[f]["ci95"][0])
    lo, hi = fams[wide]["ci95"]
    lines = paragraphs(
        "# Leave one detector family out (issue 13)",
        f"The Ke et al. (2018) CNN on {RECIPES[recipe]}: {describe_input(st['preprocess'])}. It is trained on "
        "simulated frames of every detector family but one, then tested on fresh frames of the family left out"
        + (f", deciding as `screen` does: the network, then the spot gate (a frame the network keeps is dropped when "
           f"diffscreen's spot finder, its defaults, finds fewer than {gate} Bragg spots on it{off_rings}; "
           "`screen --min-spots`)"
           if gated else "") + ". "
        "Score: balanced accuracy of the keep decision "
        "(hit or maybe against miss), mean and 95 % t-interval over "
        f"{len(st['seeds'])} seeds (each seed sets the initialisation and batches and draws fresh test frames; "
        "the training frames are those of scripts/make_default_model.py and the same for every seed). "
        "Training frames per preset (20 % validate): "
        + ", ".join(f"{p} {n}" for p, n in st["train_frames"].items())
        + f"; {st['n_test']} test frames per preset; {st['epochs']} epochs of {st['batches']} batches of 32 "
        "(scripts/make_default_model.py: 60 × 40). Goal: ≥ 0.95 in every family.",
        table(("family left out", "presets", "balanced accuracy", "per seed", *rate_heads, *alone_head, *ceil_head,
               "≥ 0.95"),
              [(fam, ", ".join(r["presets"]), _fmt(r["mean"], *r["ci95"]), ", ".join(f"{v:.3f}" for v in r["per_seed"]),
                *_rates(r), *_alone(r), *_ceil(fam), verdict(r)) for fam, r in fams.items()]),
        *(["*Network alone*: the same models without the spot gate (`screen --min-spots 0`)."] if gated else []),
        *(_ceiling_lines(ceil, res["ceiling"]["draws"]) if ceil else []),
        "## Per preset of the family left out",
        table(("family", "preset", "balanced accuracy"),
              [(fam, p, _fmt(*v)) for fam, r in fams.items() for p, v in r["per_preset"].items()]),
        *(["## The same models on the shared real frames",
           "Each left-out model, and models trained on every family, on the 18 real frames of "
           "`../shared/data/real-frames` and `real-frames-2` (measurement only: nothing was chosen on them).",
           table(("model", "balanced accuracy on the real frames"),
                 [(name, _fmt(*v) if isinstance(v, (list, tuple)) else f"{v:.3f}") for name, v in res["real"].items()])]
          if res.get("real") else []),
        "## Findings",
        [f"- {len(below)} of {len(fams)} families lie below the 0.95 goal with the whole 95 % interval "
         f"({', '.join(below) or 'none'}); "
         + ("no family reaches it." if all(r["mean"] < 0.95 for r in fams.values()) else
            "see the table for the others."),
         *([_gate_line(fams, gate)] if gated else []),
         f"- The left-out models are trained {st['epochs']} × {st['batches']} batches (scripts/make_default_model.py: "
         "60 × 40), so they are a lower bound on the recipe.",
         *([f"- Seeds differ a lot (the widest interval, {wide}, spans {lo:.2f}–{hi:.2f}), so differences "
            "between families of a few points mean little."] if not math.isnan(lo) else [])],
        *_spot_finder_lines(res),
        *_recipe_lines(res, other),
        *(["## Peers on the real frames", res["peers"]] if res.get("peers") else []),
        f"Rerun: `diffscreen benchmark generalisation{'' if recipe == 'default' else ' --recipe ' + recipe} "
        f"--epochs {st['epochs']} --batches {st['batches']}` "
        f"(results in `{report_name(recipe)}.json`; "
        f"{res.get('seconds', float('nan')) / 60:.0f} min on this machine).",
    )
    return "\n".join(lines + [""])
