"""Per-frame numbers against DIALS and the simulator's truth (issue 15 item 5); measurement only.

* On the shared real frames (``../shared/data/real-frames`` and ``real-frames-2``,
  every file of each MANIFEST.tsv) and on a few simulated frames of several
  presets: ``n_spots`` of :func:`diffscreen.preprocess.spots.frame_metrics`
  against the spots of DIALS's spot finder (``dials.find_spots``'s defaults,
  run by :class:`diffscreen.baselines.dials.DialsSpotFinder` on the frames our
  readers read), Spearman's rho; ``d_min_A`` against DIALS's per-image
  resolution estimate (``per_image_analysis.stats_for_reflection_table``'s
  ``estimated_d_min``, on frames where DIALS gives one, i.e. > 10 spots off
  the ice rings), the median absolute difference in Å.  DIALS runs three
  times on every frame: with its default gain (1 ADU per photon); with our
  photon-transfer gain estimate (``Spots.gain``); and with the gain DIALS's
  own estimator finds on the frame (``dials.estimate_gain``'s function,
  defaults, in the worker on our reading and mask:
  :meth:`~diffscreen.baselines.dials.DialsSpotFinder.estimate_gain`; gain 1
  where it fails), which is independent of our noise model.  On the real
  frames ``dials.import`` + ``dials.estimate_gain`` also run on the file
  itself where dxtbx reads it, as a check of the worker's estimate.
* The ice-ring flag against the simulator's truth on the ``wide_*`` presets
  (``meta.extra["ice_rings"]``: ice drawn; "visible": drawn with one of the
  three strong lines on the detector), and the powder flag against
  ``n_powder_rings``.
* ``--throughput``: frames/s of ``screen`` (bundled default model, one thread)
  on a simulated Rayonix run without the numbers, with them on kept frames
  (the default) and on every frame.

    python bench/per_frame_metrics.py [--sim-frames 6] [--ice-frames 24] [--throughput]

Writes bench/results/per_frame_metrics.json.  Nothing here chose a threshold:
those were chosen on simulated frames (bench/spot_thresholds.py).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import math
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

from diffscreen.baselines.dials import DialsError
from diffscreen.io import open_source
from diffscreen.io.frame import check_frame
from diffscreen.preprocess.spots import ICE_RINGS_D_A, _radius_of_d, find_spots, frame_metrics

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
SIM_PRESETS = ("pilatus", "eiger", "cspad", "rayonix", "jungfrau", "wide_hybrid172", "wide_ccd", "wide_cspad")
WIDE = ("wide_ccd", "wide_hybrid172", "wide_hybrid75", "wide_cspad", "wide_panel")


def real_specs():
    for folder in ("real-frames", "real-frames-2"):
        man = SHARED / folder / "MANIFEST.tsv"
        if not man.is_file():
            continue
        with open(man, newline="") as fh:
            for row in csv.DictReader(fh, delimiter="\t"):
                f = SHARED / folder / row["file"]
                spec = str(f) + (":/data" if f.suffix == ".h5" else "")
                yield folder, row["file"], spec, row.get("label", "")


def compare(finder, fr) -> dict:
    t = time.perf_counter()
    m = frame_metrics(fr)
    dt = time.perf_counter() - t
    d = finder.find_spots(fr, per_image=True)
    pia = d.get("per_image") or {}
    est = pia.get("estimated_d_min", -1.0)
    # DIALS again with the gain it needs: the photon-transfer gain our noise model estimates from the frame
    # (DIALS's own default is 1 ADU per photon, right only for photon-counting detectors)
    gain = max(float(find_spots(fr).gain), 1e-3)
    g = finder.find_spots(dataclasses.replace(fr, meta=dataclasses.replace(fr.meta, extra={**fr.meta.extra,
                                                                                          "gain": gain})),
                          per_image=True)
    est_g = (g.get("per_image") or {}).get("estimated_d_min", -1.0)
    # DIALS a third time with the gain DIALS's own estimator (dials.estimate_gain, defaults) finds on the frame:
    # independent of our noise model; where it fails (no spread of the dispersion) DIALS keeps its default 1
    try:
        own, own_err = finder.estimate_gain(fr), None
    except DialsError as exc:
        own, own_err = None, exc.problem
    use = own if own is not None and own > 0 else 1.0
    o = finder.find_spots(dataclasses.replace(fr, meta=dataclasses.replace(fr.meta, extra={**fr.meta.extra,
                                                                                          "gain": use})),
                          per_image=True)
    est_o = (o.get("per_image") or {}).get("estimated_d_min", -1.0)
    return {"n_spots": m.n_spots, "d_min_A": m.d_min_A, "ice_rings": m.ice_rings, "powder_rings": m.powder_rings,
            "dials_n_spots": d["n_spots"], "dials_d_min_A": est if est and est > 0 else None,
            "dials_n_spots_no_ice": pia.get("n_spots_no_ice"), "gain_estimate": gain,
            "dials_gain_n_spots": g["n_spots"], "dials_gain_d_min_A": est_g if est_g and est_g > 0 else None,
            "dials_estimated_gain": own, "dials_estimated_gain_error": own_err, "dials_own_gain_used": use,
            "dials_own_gain_n_spots": o["n_spots"],
            "dials_own_gain_d_min_A": est_o if est_o and est_o > 0 else None,
            "metrics_ms": round(1e3 * dt, 1)}


def _why(text: str) -> str:
    """The line of a DIALS program's output that says why it failed: the last that names an error, a ``Sorry``
    or arguments it could not handle (with the next line, the argument), else the last line."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    for k in range(len(lines) - 1, -1, -1):
        if lines[k].startswith("Unable to handle"):
            return " ".join(lines[k : k + 2])[:200]
        if "Error" in lines[k] or "Sorry" in lines[k]:
            return lines[k][:200]
    return lines[-1][:200] if lines else "failed"


def dials_cli_gain(path: Path) -> dict:
    """``dials.import`` + ``dials.estimate_gain`` on the file itself (dxtbx's reading and mask), for comparison
    with the worker's estimate on our reading: ``{"gain": float}`` or ``{"gain": None, "why": "..."}``."""
    import re
    import shutil
    import subprocess

    if shutil.which("dials.import") is None or shutil.which("dials.estimate_gain") is None:
        return {"gain": None, "why": "dials.import / dials.estimate_gain not on the PATH"}
    with tempfile.TemporaryDirectory() as tmp:
        imp = subprocess.run(["dials.import", str(path)], cwd=tmp, capture_output=True, text=True, timeout=300)
        if imp.returncode != 0 or not (Path(tmp) / "imported.expt").is_file():
            return {"gain": None, "why": "dials.import: " + _why(imp.stderr + imp.stdout).replace(str(path), path.name)}
        est = subprocess.run(["dials.estimate_gain", "imported.expt"], cwd=tmp, capture_output=True, text=True,
                             timeout=600)
        m = re.search(r"Estimated gain: ([0-9.eE+-]+)", est.stdout)
        if m is None:
            return {"gain": None, "why": "dials.estimate_gain: " + _why(est.stderr + est.stdout)}
        return {"gain": float(m.group(1))}


def agreement(rows, dials="dials") -> dict:
    """Spearman's rho of n_spots and the d_min difference against ``{dials}_n_spots`` and ``{dials}_d_min_A``."""
    a = np.array([r["n_spots"] for r in rows], float)
    b = np.array([r[f"{dials}_n_spots"] for r in rows], float)
    rho = float(spearmanr(a, b).statistic) if len(rows) > 2 else float("nan")
    pairs = [(r["d_min_A"], r[f"{dials}_d_min_A"]) for r in rows if r["d_min_A"] and r[f"{dials}_d_min_A"]]
    diff = [abs(x - y) for x, y in pairs]
    return {"n_frames": len(rows), "spearman_n_spots": rho,
            "n_frames_with_both_d_min": len(pairs),
            "median_abs_diff_d_min_A": float(np.median(diff)) if diff else None,
            "median_signed_diff_d_min_A": float(np.median([x - y for x, y in pairs])) if pairs else None}


def ice_visible(fr) -> bool:
    m = fr.meta
    H, W = fr.data.shape
    cx, cy = m.beam_centre_px
    rmax = max(math.hypot(x - cx, y - cy) for x in (0, W) for y in (0, H))
    return any(_radius_of_d(d, m.pixel_size_mm, m.distance_mm, m.wavelength_A) < 0.95 * rmax
               for d in ICE_RINGS_D_A[:3])


def ice_check(n: int, seed: int) -> dict:
    from diffscreen.simulate.run import Simulator

    rows = []
    for name in WIDE:
        sim = Simulator(name, seed=seed)
        for i in range(n):
            f = sim.frame(i)
            fr = f.to_frame()
            m = frame_metrics(fr)
            e = f.meta.extra
            rows.append({"preset": name, "index": i, "ice_drawn": bool(e["ice_rings"]),
                         "ice_visible": bool(e["ice_rings"]) and ice_visible(fr),
                         "n_powder_rings": int(e["n_powder_rings"]), "ring_photons_max": e["ring_photons_max"],
                         "ice_rings": bool(m.ice_rings), "powder_rings": bool(m.powder_rings)})

    def score(truth_key, flag_key, pred=lambda r: r):
        t = np.array([bool(pred(r[truth_key])) for r in rows])
        p = np.array([r[flag_key] for r in rows])
        return {"accuracy": float((t == p).mean()), "n_true": int(t.sum()), "n_false": int((~t).sum()),
                "true_positive": int((t & p).sum()), "false_positive": int((~t & p).sum()),
                "false_negative": int((t & ~p).sum())}

    no_powder = [r for r in rows if r["n_powder_rings"] == 0]
    return {"presets": WIDE, "frames_per_preset": n, "seed": seed,
            "ice_vs_visible": score("ice_visible", "ice_rings"),
            "ice_vs_drawn": score("ice_drawn", "ice_rings"),
            "ice_vs_visible_frames_without_powder": {
                "n": len(no_powder),
                "accuracy": float(np.mean([r["ice_visible"] == r["ice_rings"] for r in no_powder]))},
            "powder_vs_drawn": score("n_powder_rings", "powder_rings", pred=lambda v: v > 0),
            "misses": [r for r in rows if r["ice_visible"] != r["ice_rings"]], "frames": rows}


def throughput(n: int) -> dict:
    import torch

    from diffscreen.models.inference import Classifier
    from diffscreen.screen import screen
    from diffscreen.screen.method import CNNMethod
    from diffscreen.simulate import simulate_run

    torch.set_num_threads(1)
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        run = str(simulate_run("rayonix", n, Path(tmp) / "run.cxi", seed=3))
        clf = Classifier(None)
        for rep in range(2):  # the first pass warms caches (numba, the ring map, the file)
            for mode in ("none", "kept", "all"):
                t = time.perf_counter()
                s = screen([run], Path(tmp) / f"out_{mode}", method=CNNMethod(clf, metrics=mode), resume=False,
                           comm=None)
                dt = time.perf_counter() - t
                if rep:
                    out[mode] = {"frames_per_s": n / dt, "n_kept": s.n_kept, "n_frames": s.n_frames}
    base = out["none"]["frames_per_s"]
    for mode in ("kept", "all"):
        out[mode]["throughput_cost"] = 1 - out[mode]["frames_per_s"] / base
    return {"run": f"simulated rayonix, {n} frames of 1920 x 1920, bundled default model, 1 thread, end to end",
            **out}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sim-frames", type=int, default=6)
    ap.add_argument("--ice-frames", type=int, default=24)
    ap.add_argument("--seed", type=int, default=2024, help="simulator seed (not the seeds thresholds were chosen on)")
    ap.add_argument("--throughput", action="store_true")
    ap.add_argument("--throughput-frames", type=int, default=96)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "per_frame_metrics.json"))
    a = ap.parse_args(argv)
    from diffscreen.baselines.dials import DialsSpotFinder
    from diffscreen.simulate.run import Simulator

    rec: dict = {"dials": None}
    with DialsSpotFinder() as finder:
        rec["dials"] = finder.dials_version
        real = []
        for folder, name, spec, label in real_specs():
            try:
                with open_source(spec) as src:
                    fr = check_frame(src.read(0))
            except Exception as exc:  # noqa: BLE001 - a frame our readers refuse is reported, not compared
                real.append({"folder": folder, "file": name, "error": str(exc)[:200]})
                continue
            r = {"folder": folder, "file": name, "label": label, "shape": list(fr.data.shape),
                 "geometry": fr.meta.wavelength_A is not None and fr.meta.distance_mm is not None,
                 **compare(finder, fr)}
            cli = dials_cli_gain(SHARED / folder / name)
            r["dials_estimate_gain_cli"], r["dials_estimate_gain_cli_why"] = cli["gain"], cli.get("why")
            real.append(r)
            print(name, {k: r[k] for k in ("n_spots", "dials_n_spots", "dials_gain_n_spots", "dials_own_gain_n_spots",
                                           "gain_estimate", "dials_estimated_gain", "d_min_A", "dials_d_min_A",
                                           "dials_own_gain_d_min_A", "ice_rings", "powder_rings", "metrics_ms")},
                  flush=True)
        ok = [r for r in real if "error" not in r]
        rec["real"] = {"agreement": agreement(ok), "agreement_dials_with_gain": agreement(ok, "dials_gain"),
                       "agreement_dials_with_own_gain": agreement(ok, "dials_own_gain"), "frames": real}
        sim = []
        for name in SIM_PRESETS:
            s = Simulator(name, seed=a.seed, class_fractions=(0.5, 0.25, 0.25))
            for i in range(a.sim_frames):
                f = s.frame(i)
                r = {"preset": name, "index": i, "truth_n_spots": int(f.n_spots), **compare(finder, f.to_frame())}
                sim.append(r)
        rec["simulated"] = {"agreement": agreement(sim), "agreement_dials_with_gain": agreement(sim, "dials_gain"),
                            "agreement_dials_with_own_gain": agreement(sim, "dials_own_gain"),
                            "seed": a.seed, "frames": sim,
                            "spearman_vs_truth_n_spots": float(spearmanr([r["n_spots"] for r in sim],
                                                                         [r["truth_n_spots"] for r in sim]).statistic),
                            "dials_spearman_vs_truth_n_spots": float(spearmanr(
                                [r["dials_n_spots"] for r in sim], [r["truth_n_spots"] for r in sim]).statistic)}
        print("real:", rec["real"]["agreement"], rec["real"]["agreement_dials_with_gain"],
              rec["real"]["agreement_dials_with_own_gain"], "\nsimulated:", rec["simulated"]["agreement"],
              rec["simulated"]["agreement_dials_with_gain"], rec["simulated"]["agreement_dials_with_own_gain"],
              flush=True)
    rec["ice"] = ice_check(a.ice_frames, a.seed)
    print("ice:", rec["ice"]["ice_vs_visible"], rec["ice"]["powder_vs_drawn"], flush=True)
    if a.throughput:
        rec["throughput"] = throughput(a.throughput_frames)
        print("throughput:", rec["throughput"], flush=True)
    rec["targets"] = {"ice_flag_accuracy_visible": rec["ice"]["ice_vs_visible"]["accuracy"]}
    for key, ag in (("dials_defaults", rec["real"]["agreement"]),
                    ("dials_with_gain", rec["real"]["agreement_dials_with_gain"]),
                    ("dials_with_own_gain", rec["real"]["agreement_dials_with_own_gain"])):
        rec["targets"][f"spearman_ge_0.9_real_{key}"] = bool(ag["spearman_n_spots"] >= 0.9)
        rec["targets"][f"d_min_within_0.5_A_median_real_{key}"] = bool(ag["median_abs_diff_d_min_A"] is not None
                                                                      and ag["median_abs_diff_d_min_A"] <= 0.5)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(rec, indent=1, default=float))
    print("targets:", rec["targets"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
