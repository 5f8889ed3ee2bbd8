"""Leave one detector family out with the Ke CNN on a *spot map* instead of the significance input (issue 13).

An experiment, not a shipped recipe.  The network input is built from the spots
diffscreen's own spot finder (:func:`diffscreen.preprocess.spots.find_spots`,
its defaults) finds at native resolution: each spot's centroid pixel carries
log(1 + SNR), every other pixel 0, and the image is max-pooled into the same
360 × 360 window of the significance recipe (2 × Ke's reciprocal pixel).  The
network sees only where the significant spots are and how strong, so the
detector's gain, noise and PSF reach it only through the spot finder, whose
count alone already generalises across families better than the significance
CNN (docs/benchmarks/generalisation_significance.md, "Spot-finders on the same test
frames").  It can still learn what a spot count cannot: spots on a ring (powder,
ice) against spots off rings.

Frames, metadata faults, crop shifts, families, training length and test frames
are exactly those of ``diffscreen benchmark generalisation --recipe significance`` (the committed run
in ``docs/benchmarks/generalisation_significance.json``): the same simulator seeds
(:func:`diffscreen.simulate.metadata.job_frames`), so every family's score is
paired with the significance CNN's and the spot count's on the same frames.

Usage: ``python bench/spot_map_lofo.py [--seeds 3] [--work work/spot_map]``
(about 20 min on 2 cores); writes ``bench/results/spot_map_lofo.json`` and ``docs/spot_map.md``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from diffscreen.benchmarks import generalisation as g
from diffscreen.benchmarks._harness import pool_map, predict, write_json
from diffscreen.evaluate.metrics import keep_balanced_accuracy, t_interval
from diffscreen.io.atomic import atomic_write_text
from diffscreen.io.frame import CLASS_NAMES, Frame
from diffscreen.preprocess import PreprocessConfig, Preprocessor
from diffscreen.simulate.metadata import job_frames, training_jobs

ROOT = Path(__file__).resolve().parents[1]


def spot_map(frame: Frame) -> Frame:
    """The frame's spots as an image of its shape: log(1 + SNR) at each spot's centroid pixel, 0 elsewhere."""
    from diffscreen.preprocess.spots import find_spots

    sp = find_spots(frame)
    img = np.zeros(frame.data.shape, np.float32)
    if len(sp):
        r = np.clip(np.rint(sp.y).astype(int), 0, img.shape[0] - 1)
        c = np.clip(np.rint(sp.x).astype(int), 0, img.shape[1] - 1)
        np.maximum.at(img, (r, c), np.log1p(np.maximum(sp.snr, 0)).astype(np.float32))
    return Frame(img, np.zeros(img.shape, bool), frame.meta)


def _job(preset: str, seed: int, n: int, train: bool, work: str, cfg: dict) -> str:
    """Simulate one make_inputs job's frames and write their spot-map inputs (cached npz) → path."""
    import torch

    torch.set_num_threads(1)
    path = Path(work) / f"{preset}_n{n}_seed{seed}_{'train' if train else 'test'}.npz"
    if path.exists():
        return str(path)
    pre = Preprocessor(PreprocessConfig.from_dict(cfg))
    x = np.zeros((n, 1, pre.config.out_size, pre.config.out_size), np.float16)
    y = np.zeros(n, np.int64)
    for i, (fr, shift, label) in enumerate(job_frames(preset, seed, n, train, pre.config.max_shift)):
        x[i, 0] = np.nan_to_num(pre.crop(spot_map(fr), shift), nan=0.0)  # outside the frame: no spot
        y[i] = CLASS_NAMES.index(label)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, x=x, y=y)
    tmp.replace(path)
    return str(path)


def _load(path):
    d = np.load(path)
    return d["x"], d["y"]


def real_frames(models, cfg: dict, folders) -> dict:
    """Keep decisions of spot-map models on the labelled real frames (measurement only: nothing is chosen here).

    Each frame is read as ``screen`` reads it (diffscreen's readers, ``check_frame``), turned into its spot map
    and centred crop; a frame that cannot be read counts as wrongly decided (as ``real_frame_scores`` does).
    """
    from diffscreen.errors import DiffscreenError
    from diffscreen.evaluate.labelled import manifest_frames
    from diffscreen.evaluate.metrics import keep_decision
    from diffscreen.io import open_source
    from diffscreen.io.frame import check_frame

    pre = Preprocessor(PreprocessConfig.from_dict(cfg))
    frames = manifest_frames(folders)
    y = np.array([CLASS_NAMES.index(label) for _, label, _ in frames])
    x = np.zeros((len(frames), 1, pre.config.out_size, pre.config.out_size), np.float32)
    unread = np.zeros(len(frames), bool)
    for k, (_, _, spec) in enumerate(frames):
        try:
            with open_source(spec) as src:
                x[k, 0] = np.nan_to_num(pre.crop(spot_map(check_frame(src.read(0)))), nan=0.0)
        except DiffscreenError:
            unread[k] = True
    wrong = np.where((y == 2)[:, None], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0])  # an unread frame: the wrong call
    probs = [np.where(unread[:, None], wrong, predict(str(m), x, batch=8)) for m in models]
    return {"balanced_accuracy": [keep_balanced_accuracy(y, p) for p in probs],
            "unread": [frames[k][0] for k in np.flatnonzero(unread)],
            "frames": {name: {"label": label, "p": [[round(float(v), 3) for v in p[k]] for p in probs],
                              "kept": [bool(keep_decision(p[k : k + 1])[0]) for p in probs]}
                       for k, (name, label, _) in enumerate(frames)}}


def _ci(m, lo, hi, nd=3) -> str:
    return f"{m:.{nd}f} [{lo:.{nd}f}, {hi:.{nd}f}]"


def _said(d) -> str:
    """A paired difference's interval and what it says (:func:`diffscreen.benchmarks.generalisation.paired_verdict`)."""
    return f"{_ci(*d)}: {g.paired_verdict(d)}"


def _significance_cnn(committed: dict, fam: str, n: int) -> list:
    """The significance CNN's balanced accuracy per seed in the committed run: the network alone (runs with the
    spot gate record it as ``network_per_seed``), as the spot-map CNN is scored."""
    r = committed["families"][fam]
    return r.get("network_per_seed", r["per_seed"])[:n]


def markdown(res: dict, committed: dict) -> str:
    """docs/spot_map.md from this script's results and the committed generalisation benchmark."""
    fams, seeds = res["families"], res["settings"]["seeds"]
    spots = committed["spot_finders"]["families"]
    for f, r in fams.items():  # against the committed network, as it is now
        cnn = _significance_cnn(committed, f, len(seeds))
        r["minus_significance_cnn"] = t_interval(np.subtract(r["per_seed"], cnn))
    lines = ["# A CNN on the spot map (issue 13 experiment)", "",
             "Written by `python bench/spot_map_lofo.py` from `bench/results/spot_map_lofo.json` (about 20 min "
             "on 2 cores from scratch; a rerun reuses its cached inputs and models). Not a shipped recipe.", "",
             "The Ke CNN trained on the *spot map*: the spots diffscreen's own spot finder (`preprocess.spots`, its "
             "defaults) finds at native resolution, each centroid pixel carrying log(1 + SNR), max-pooled into the "
             "360² window of the significance recipe. Everything else is the leave-one-family-out benchmark's "
             "(`docs/benchmarks/generalisation_significance.md`): the same training frames, metadata faults, crop shifts, "
             f"training length ({res['settings']['epochs']} × {res['settings']['batches']} batches of 32) and the "
             f"same test frames at seeds {', '.join(map(str, seeds))}, so each row is paired with the significance "
             "CNN's and the spot count's on the same frames. Mean and 95 % t-interval over the seeds; a difference "
             "is *better* or *worse* only where its interval excludes 0.", "",
             "## Left-out family", "",
             "| family left out | spot-map CNN | significance CNN | spot count (≥ 4) | spot-map − significance | "
             "spot-map − spot count |", "|---|---|---|---|---|---|"]
    for f, r in fams.items():
        sig, sc = t_interval(_significance_cnn(committed, f, len(seeds))), spots[f]["spots"]
        lines.append(f"| {f} | {_ci(r['mean'], *r['ci95'])} | {_ci(*sig)} | "
                     f"{_ci(sc['mean'], *sc['ci95'])} | {_said(r['minus_significance_cnn'])} | "
                     f"{_said(r['minus_spot_count'])} |")
    real = res.get("real")
    if real:
        ba = real["balanced_accuracy"]
        lines += ["", "## The shared real frames (measurement only)", "",
                  f"Three spot-map models trained on every family (seeds {', '.join(map(str, seeds))}; the same "
                  "recipe, nothing chosen on these frames) on the 18 real frames: balanced accuracy of the keep "
                  f"decision {', '.join(f'{v:.3f}' for v in ba)} (the bundled default model: "
                  f"{_bundled_default()['balanced_accuracy']:.3f}). "
                  "P(hit) / P(maybe) / P(miss) of the first seed's model and how many of the three keep the frame:",
                  "", "| frame | truth | P (seed " + str(seeds[0]) + ") | kept by |", "|---|---|---|---|"]
        for n, fr in real["frames"].items():
            lines.append(f"| {n} | {fr['label']} | {' / '.join(f'{v:.2f}' for v in fr['p'][0])} | "
                         f"{sum(fr['kept'])} of {len(fr['kept'])} |")
    def count(key, v):
        return [f for f, r in fams.items() if _said(r[key]).endswith(v)]

    better = count("minus_significance_cnn", "better")
    vs_spots = {v: ", ".join(count("minus_spot_count", v)) or "none" for v in ("better", "worse")}
    lines += ["", "## What it says", "",
              f"- On simulated frames of a detector family it never saw, the spot-map CNN beats the significance CNN "
              f"in {len(better)} of {len(fams)} families ({', '.join(better) or 'none'}; elsewhere not established) "
              f"and is about as good as the spot count alone (better in {vs_spots['better']}, worse in "
              f"{vs_spots['worse']}): the detector-invariance comes from the spot finder. "
              + ("No family reaches the 0.95 goal." if all(r["mean"] < 0.95 for r in fams.values()) else
                 "See the table for the families at the 0.95 goal."),
              *_real_lines(real), ""]
    return "\n".join(lines)


def _bundled_default() -> dict:
    """The bundled default model's row of ``bench/real_frames.py``'s results (its calls on the same frames)."""
    return json.loads((ROOT / "bench" / "results" / "real_frames.json").read_text())["methods"]["bundled default"]


def _real_lines(real) -> list:
    """The finding on the real frames, from the first seed's model's calls."""
    if not real:
        return []
    frames = list(real["frames"].values())
    hm = [f["kept"][0] for f in frames if f["label"] != "miss"]
    miss = [f["kept"][0] for f in frames if f["label"] == "miss"]
    shipped = _bundled_default()
    kept_hm, dropped = shipped["kept_of_hit_or_maybe"].split("/")[0], shipped["dropped_of_miss"].split("/")
    line = (f"- On the real frames the first model keeps {sum(hm)} of {len(hm)} hits and maybes (the bundled model "
            f"keeps {kept_hm}) and {sum(miss)} of {len(miss)} misses (the bundled model "
            f"{int(dropped[1]) - int(dropped[0])}).")
    if miss and all(miss):
        line += (" Its misses are the fibre pattern, the fixed anvil-cell features and both powder-ring frames, "
                 "whose spurious spots the spot count also takes for Bragg spots; training on the simulator's "
                 "misses (its powder and ice rings included) did not teach the network to reject them. A spot-map "
                 "recipe would need misses more like these in training, or a spot finder that leaves rings, streaks "
                 "and fixed features out, before it could ship.")
    return [line]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--work", type=Path, default=ROOT / "work" / "spot_map")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--json", type=Path, default=ROOT / "bench" / "results" / "spot_map_lofo.json")
    ap.add_argument("--md", type=Path, default=ROOT / "docs" / "spot_map.md")
    ap.add_argument("--report-only", action="store_true", help="rewrite --md from --json without running")
    ap.add_argument("--real", type=Path, default=ROOT.parent / "shared" / "data",
                    help="folder with real-frames/ and real-frames-2/ (each with MANIFEST.tsv)")
    args = ap.parse_args()

    committed = json.loads((ROOT / "docs" / "benchmarks" / "generalisation_significance.json").read_text())
    if args.report_only:
        atomic_write_text(args.md, markdown(json.loads(args.json.read_text()), committed))
        return
    st = committed["settings"]
    seeds, fams, presets = st["seeds"][: args.seeds], st["families"], list(st["train_frames"])
    pre_cfg = PreprocessConfig.significance()
    cfg = pre_cfg.to_dict()
    t0 = time.time()
    tjobs = [(p, seed, n, True) for p, seed, n, _ in training_jobs(fams)]
    assert [j[0] for j in tjobs] == presets and all(j[2] == st["train_frames"][j[0]] for j in tjobs)
    test = {(p, s): (p, g.held_out_seed(s, k), st["n_test"], False) for s in seeds for k, p in enumerate(presets)}
    jobs = tjobs + list(test.values())
    paths = dict(zip(jobs, pool_map(_job, [(*j, str(args.work / "inputs"), cfg) for j in jobs], args.workers)))
    print(f"inputs ready ({(time.time() - t0) / 60:.1f} min)", flush=True)
    res = {"recipe": "Ke CNN on the spot map (log(1+SNR) at spot centroids, max-pooled, 360² at 2× Ke's pixel)",
           "settings": {"seeds": seeds, "epochs": st["epochs"], "batches": st["batches"], "preprocess": cfg},
           "families": {}}
    for fam, ps in fams.items():
        per_seed = []
        for s in seeds:
            model = args.work / "models" / f"without_{fam}_seed{s}.safetensors"
            if not model.exists():
                g.train_left_out([_load(paths[j]) for j in tjobs if j[0] not in ps], model, pre_cfg, seed=s,
                                 epochs=st["epochs"], batches=st["batches"],
                                 data_description={"experiment": "spot_map_lofo", "left_out": fam})
            scored = [_load(paths[test[p, s]]) for p in ps]
            y = np.concatenate([b for _, b in scored])
            per_seed.append(keep_balanced_accuracy(y, np.concatenate([predict(str(model), a, batch=64)
                                                                      for a, _ in scored])))
            print(f"{fam} left out, seed {s}: {per_seed[-1]:.3f}", flush=True)
        m, lo, hi = t_interval(per_seed)
        cnn = _significance_cnn(committed, fam, len(seeds))
        spots = committed.get("spot_finders", {}).get("families", {}).get(fam, {}).get("spots", {})
        res["families"][fam] = {"per_seed": per_seed, "mean": m, "ci95": [lo, hi],
                                "minus_significance_cnn": t_interval(np.subtract(per_seed, cnn)),
                                "minus_spot_count": t_interval(np.subtract(per_seed, spots["per_seed"][: len(seeds)]))
                                if spots else None}
    folders = [args.real / "real-frames", args.real / "real-frames-2"]
    if all((f / "MANIFEST.tsv").exists() for f in folders):  # models on every family, as a bundled model is trained
        every = [args.work / "models" / f"every_family_seed{s}.safetensors" for s in seeds]
        for s, model in zip(seeds, every):
            if not model.exists():
                g.train_left_out([_load(paths[j]) for j in tjobs], model, pre_cfg, seed=s, epochs=st["epochs"],
                                 batches=st["batches"], data_description={"experiment": "spot_map_lofo",
                                                                          "left_out": None})
        res["real"] = real_frames(every, cfg, folders)
        res["real"]["interval"] = t_interval(res["real"]["balanced_accuracy"])
        print("real frames:", [round(v, 3) for v in res["real"]["balanced_accuracy"]], flush=True)
    res["seconds"] = time.time() - t0
    write_json(args.json, res)
    atomic_write_text(args.md, markdown(res, committed))
    print(json.dumps({f: (round(r["mean"], 3), [round(v, 3) for v in r["ci95"]]) for f, r in res["families"].items()}))


if __name__ == "__main__":
    main()
