"""The ice-ring flag on SIMULATED frames: its settings chosen on design seeds, measured on fresh seeds.

Issue 15: "the ice-ring flag is right on simulated frames with and without
ice".  Truth is the simulator's: ``meta.extra["ice_rings"]`` (hexagonal-ice
Ih lines drawn, :data:`diffscreen.simulate.presets.ICE_RINGS_D_A`) and
"visible": drawn with one of the three strong lines inside 0.95 of the
farthest corner's radius (``bench/per_frame_metrics.py``'s ``ice_visible``).
Frames: the five ``wide_*`` presets (each frame draws ice with probability
0.25, 0.3-100 photons per pixel at the strongest line, and salt/powder rings
with probability 0.35), plus the standard presets, which never draw ice
(false positives only).  No real frame is read.

``--choose``: on the design seeds (default 7 and 8), compute the ice test's
statistics (``ring_flags``'s ``ice_z``, ``ice_z_rest`` and the number of
measured lines) for each template width and fit range, and pick the setting
with the fewest wrong flags against "visible"; among equals the fewest false
positives, then the highest thresholds.  Only settings of the ice test are
searched; the spot finder's and the powder test's stay as they are.

Without ``--choose``: measure the flag of the installed
``DEFAULT_SPOT_CONFIG`` (``frame_metrics``, as ``screen`` computes it) on the
measurement seeds (default 40001, 40002, 40003, never used for a choice),
with per-seed counts and 95 % Clopper-Pearson intervals of the pooled rates.

    python bench/ice_flag.py --choose [--design-seeds 7 8] [--frames 80]
    python bench/ice_flag.py [--seeds 40001 40002 40003] [--frames 80] [--standard-frames 20] [--label after]

(A few minutes each on one core.)  To measure another version of the
flag on the same frames, run the second command with ``PYTHONPATH`` pointing
at that version's ``src`` and another ``--label`` (``before`` in the JSON is
the flag of commit 39c9883).

Writes (merges into) bench/results/ice_flag.json: ``choice`` and
``measure_<label>``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from scipy.stats import beta

sys.path.insert(0, str(Path(__file__).resolve().parent))
from per_frame_metrics import WIDE, ice_visible  # noqa: E402

from diffscreen.preprocess.spots import DEFAULT_SPOT_CONFIG, find_spots, frame_metrics, ring_flags  # noqa: E402
from diffscreen.simulate.run import Simulator  # noqa: E402

OUT = Path(__file__).resolve().parent / "results" / "ice_flag.json"
STANDARD = ("pilatus", "eiger", "cspad", "rayonix", "jungfrau")  # no ice drawn
#: the ice test's settings searched by --choose (the rest of SpotConfig stays at its default)
WIDTHS = (1.5, 2.0, 3.0)
FITS = ((6.0, 0.04), (8.0, 0.06))
THRESHOLDS = {"ring_sigma": (4.0, 5.0, 6.0, 8.0), "ice_rest_sigma": (2.0, 3.0), "ice_single_sigma": (8.0, 12.0)}


def clopper_pearson(k: int, n: int, level: float = 0.95) -> list:
    """Exact binomial interval of k successes in n trials."""
    if n == 0:
        return [float("nan"), float("nan")]
    a = (1 - level) / 2
    lo = 0.0 if k == 0 else float(beta.ppf(a, k, n - k + 1))
    hi = 1.0 if k == n else float(beta.ppf(1 - a, k + 1, n - k))
    return [lo, hi]


def frames(seed: int, n: int, presets=WIDE):
    for name in presets:
        sim = Simulator(name, seed=seed)
        for i in range(n):
            f = sim.frame(i)
            fr = f.to_frame()
            e = f.meta.extra
            drawn = bool(e.get("ice_rings", 0.0))
            yield name, i, fr, {"ice_drawn": drawn, "ice_visible": drawn and ice_visible(fr),
                                "n_powder_rings": int(e.get("n_powder_rings", 0)),
                                "ice_photons_max": max((p for k, d, p in f.truth.get("rings", []) if k == "ice"),
                                                       default=0.0)}


def counts(rows, key="ice_visible") -> dict:
    t = np.array([r[key] for r in rows], bool)
    p = np.array([r["ice_rings"] for r in rows], bool)
    n, n_ice = len(rows), int(t.sum())
    fp, fn = int((~t & p).sum()), int((t & ~p).sum())
    right = n - fp - fn
    return {"n_frames": n, "n_with_ice": n_ice, "n_without_ice": n - n_ice, "true_positive": int((t & p).sum()),
            "false_positive": fp, "false_negative": fn, "right": right, "accuracy": right / n if n else float("nan"),
            "accuracy_ci95": clopper_pearson(right, n), "false_positive_rate_ci95": clopper_pearson(fp, n - n_ice),
            "miss_rate_ci95": clopper_pearson(fn, n_ice)}


def choose(seeds, n: int) -> dict:
    configs = [replace(DEFAULT_SPOT_CONFIG, ice_width_px=w, ice_fit_px=a, ice_fit_frac=b)
               for w, (a, b) in itertools.product(WIDTHS, FITS)]
    stats, truth = [], []
    for seed in seeds:
        for name, i, fr, t in frames(seed, n):
            shells = find_spots(fr).shells
            row = []
            for cfg in configs:
                r = ring_flags(shells, fr, cfg)
                n_lines = sum(1 for v in r["ice_sigma"].values() if math.isfinite(v))
                row.append((r["ice_z"], r["ice_z_rest"], n_lines))
            stats.append(row)
            truth.append(t["ice_visible"])
    z = np.array(stats, float)  # (frames, configs, 3)
    t = np.array(truth, bool)
    table = []
    for j, cfg in enumerate(configs):
        za, zr, nl = z[:, j, 0], z[:, j, 1], z[:, j, 2]
        for k1, k2, ks in itertools.product(*THRESHOLDS.values()):
            p = np.where(nl >= 2, (za >= k1) & (zr >= k2), (nl == 1) & (za >= ks))
            table.append({"ice_width_px": cfg.ice_width_px, "ice_fit_px": cfg.ice_fit_px,
                          "ice_fit_frac": cfg.ice_fit_frac, "ring_sigma": k1, "ice_rest_sigma": k2,
                          "ice_single_sigma": ks, "false_positive": int((~t & p).sum()),
                          "false_negative": int((t & ~p).sum())})
    best = min(table, key=lambda r: (r["false_positive"] + r["false_negative"], r["false_positive"],
                                     -r["ring_sigma"], -r["ice_rest_sigma"], -r["ice_single_sigma"]))
    return {"design_seeds": list(seeds), "frames_per_preset": n, "presets": list(WIDE), "n_frames": int(len(t)),
            "n_with_visible_ice": int(t.sum()),
            "rule": "fewest wrong flags against 'visible'; then fewest false positives; then the highest thresholds",
            "chosen": best, "table": table}


def measure(seeds, n: int, n_standard: int) -> dict:
    per_seed, pooled, standard = [], [], []
    t0 = time.perf_counter()
    for seed in seeds:
        rows = []
        for name, i, fr, t in frames(seed, n):
            m = frame_metrics(fr)
            rows.append({"seed": seed, "preset": name, "index": i, **t, "ice_rings": bool(m.ice_rings)})
        std = []
        for name, i, fr, t in frames(seed, n_standard, STANDARD):
            m = frame_metrics(fr)
            std.append({"seed": seed, "preset": name, "index": i, **t, "ice_rings": bool(m.ice_rings)})
        per_seed.append({"seed": seed, "visible": counts(rows), "drawn": counts(rows, "ice_drawn"),
                         "standard_presets_flagged": int(sum(r["ice_rings"] for r in std)),
                         "standard_presets_frames": len(std)})
        pooled += rows
        standard += std
        print(seed, per_seed[-1]["visible"], "standard flagged", per_seed[-1]["standard_presets_flagged"], "of",
              len(std), flush=True)
    acc = [s["visible"]["accuracy"] for s in per_seed]
    k = len(acc)
    half = (float(np.std(acc, ddof=1)) * {2: 12.706, 3: 4.303, 4: 3.182, 5: 2.776}.get(k, 1.96) / math.sqrt(k)
            if k > 1 else float("nan"))
    nf = sum(r["ice_rings"] for r in standard)
    return {"seeds": list(seeds), "frames_per_preset": n, "presets": list(WIDE), "per_seed": per_seed,
            "pooled_visible": counts(pooled), "pooled_drawn": counts(pooled, "ice_drawn"),
            "seed_accuracy_mean": float(np.mean(acc)), "seed_accuracy_t95_half_width": half,
            "pooled_without_powder": counts([r for r in pooled if r["n_powder_rings"] == 0]),
            "pooled_with_powder": counts([r for r in pooled if r["n_powder_rings"] > 0]),
            "standard_presets": {"presets": list(STANDARD), "frames": len(standard), "flagged": int(nf),
                                 "false_positive_rate_ci95": clopper_pearson(int(nf), len(standard))},
            "misses": [r for r in pooled if r["ice_visible"] != r["ice_rings"]],
            "seconds": round(time.perf_counter() - t0, 1)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--choose", action="store_true")
    ap.add_argument("--design-seeds", type=int, nargs="+", default=[7, 8])
    ap.add_argument("--seeds", type=int, nargs="+", default=[40001, 40002, 40003])
    ap.add_argument("--frames", type=int, default=80, help="frames per wide_* preset and seed")
    ap.add_argument("--standard-frames", type=int, default=20, help="frames per standard preset and seed")
    ap.add_argument("--label", default="after", help="measure_<label> in the JSON (e.g. before, after)")
    ap.add_argument("--out", default=str(OUT))
    a = ap.parse_args(argv)
    out = Path(a.out)
    rec = json.loads(out.read_text()) if out.is_file() else {}
    if a.choose:
        rec["choice"] = choose(a.design_seeds, a.frames)
        print("chosen:", rec["choice"]["chosen"])
    else:
        rec[f"measure_{a.label}"] = {"config": {k: v for k, v in DEFAULT_SPOT_CONFIG.to_dict().items()
                                                if k.startswith(("ice", "ring"))}, **measure(a.seeds, a.frames,
                                                                                            a.standard_frames)}
        m = rec[f"measure_{a.label}"]
        print("pooled:", m["pooled_visible"], "\nseed accuracy %.4f +- %.4f" % (m["seed_accuracy_mean"],
                                                                             m["seed_accuracy_t95_half_width"]))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(rec, indent=1, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
