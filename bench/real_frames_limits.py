"""What a per-frame rule can reach on the 18 shared real frames (issue 13): measurement only, nothing chosen here ships.

Usage::

    python bench/real_frames_limits.py [--shared ../shared/data] [--out bench/results/real_frames_limits.json]
        [--doc docs/real_frames_limits.md]

For every frame of ``real-frames`` and ``real-frames-2`` it measures what
the shipped screen looks at: the bundled default model's probabilities
(:class:`diffscreen.models.inference.Classifier`) and the spot finder's
counts on the whole frame (:func:`diffscreen.preprocess.spots.frame_metrics`,
its defaults, run on every frame, not only on those the network keeps).

It then finds, *on these frames*, the best balanced accuracy of the keep
decision (hit or maybe against miss; Ke et al. 2018 Table 3) that any
threshold of three rule families can reach:

1. the spot count alone: keep at ``n_spots_no_rings >= k``;
2. the count and the share of spots on rings: keep at ``n_spots_no_rings >= k``
   and ``1 - n_spots_no_rings / n_spots <= f``;
3. the shipped decision's form: keep at ``P(hit) + P(maybe) >= t`` and
   ``n_spots_no_rings >= k``.

These are oracles, upper bounds chosen on the test frames themselves, so
they are not settings to ship: if an oracle stays below 0.95, no setting of
that rule can meet issue 13's line, and only a different network can.

Last, the three frames of the diamond-anvil-cell map (the same detector,
one map) are screened as one run: pixels whose median over the map stands
5 sigma above a 15-pixel median filter of that median (features present
at every map position) are masked, with 0-2 pixels of dilation, and the
spots are counted again and the frame classified again.  The 5 sigma and 15 pixels were set once before
looking at the result; the dilations show how fragile it is.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import sys
from pathlib import Path

import numpy as np
from scipy import ndimage

from diffscreen.io import open_source
from diffscreen.models.inference import Classifier
from diffscreen.preprocess.spots import frame_metrics

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from real_frames import manifest, real_frame_args  # noqa: E402

MAP_PREFIX = "Fe3O4C_M1_map_"


def _read(spec: str):
    with open_source(spec) as src:
        return src.read(0)


def _balanced_accuracy(keep: np.ndarray, positive: np.ndarray) -> float:
    return 0.5 * (keep[positive].mean() + (~keep[~positive]).mean())


def _best(rule, grids, positive) -> tuple[float, tuple]:
    """Best balanced accuracy of ``rule(*params)`` (a keep mask) over every combination of ``grids``."""
    best = (-1.0, ())
    for params in itertools.product(*grids):
        ba = _balanced_accuracy(rule(*params), positive)
        if ba > best[0]:
            best = (ba, params)
    return best


def _persistent_mask(stack: np.ndarray, nsigma: float = 5.0, size: int = 15) -> np.ndarray:
    """(H, W) bool: pixels whose median over the run's frames stands ``nsigma`` Poisson sigmas above a
    ``size``-pixel median filter of that median (features at every map position)."""
    med = np.median(stack, axis=0)
    bg = ndimage.median_filter(med, size=size)
    return (med - bg) > nsigma * np.sqrt(np.maximum(bg, 1.0))


def main() -> None:
    a = real_frame_args(__doc__.splitlines()[0], "real_frames_limits")
    clf = Classifier()
    rows = [{"spec": spec, "name": m["name"], "label": m["label"]} for spec, m in manifest(a.shared).items()]
    frames = {}
    for r in rows:
        f = _read(r["spec"])
        frames[r["name"]] = f
        p = clf.predict([f])[0]
        m = frame_metrics(f)
        r.update(p_hit=float(p[0]), p_maybe=float(p[1]), p_miss=float(p[2]),
                 n_spots=int(m.n_spots), n_off=int(m.n_spots_no_rings))
        print(f"{r['name']}: {r['label']} P {p.round(2).tolist()} spots {m.n_spots_no_rings} of {m.n_spots}")
    positive = np.array([r["label"] != "miss" for r in rows])
    n_off = np.array([r["n_off"] for r in rows])
    n_all = np.array([r["n_spots"] for r in rows])
    on_rings = 1.0 - n_off / np.maximum(n_all, 1)
    p_keep = np.array([r["p_hit"] + r["p_maybe"] for r in rows])
    ks = sorted(set(n_off.tolist()) | {0}) + [int(n_off.max()) + 1]
    fs = sorted(set(on_rings.tolist()))
    ts = sorted(set(p_keep.tolist())) + [np.inf]
    oracles = {
        "spot count alone (keep at n_spots_no_rings >= k)":
            _best(lambda k: n_off >= k, [ks], positive),
        "count and share on rings (n_spots_no_rings >= k and share on rings <= f)":
            _best(lambda k, f: (n_off >= k) & (on_rings <= f), [ks, fs], positive),
        "the shipped form (P(hit) + P(maybe) >= t and n_spots_no_rings >= k)":
            _best(lambda t, k: (p_keep >= t) & (n_off >= k), [ts, ks], positive),
    }
    for name, (ba, params) in oracles.items():
        print(f"oracle {name}: {ba:.3f} at {params}")
    maps = [r for r in rows if MAP_PREFIX in r["name"]]
    static = _persistent_mask(np.stack([frames[r["name"]].data for r in maps]))
    run_counts = {}
    for grow in (0, 1, 2):
        mask = ndimage.binary_dilation(static, iterations=grow) if grow else static
        run_counts[grow] = {}
        for r in maps:
            f = frames[r["name"]]
            g = dataclasses.replace(f, mask=mask if f.mask is None else (f.mask | mask))
            p = clf.predict([g])[0]
            run_counts[grow][r["name"]] = {"n_off": int(frame_metrics(g).n_spots_no_rings),
                                           "p_keep": float(p[0] + p[1])}
        print(f"map as a run, mask dilated {grow} px: {run_counts[grow]}")
    result = {"frames": rows, "oracles": {k: {"balanced_accuracy": v[0], "params": list(v[1])}
                                          for k, v in oracles.items()},
              "map_as_run": {"masked_pixels": int(static.sum()), "counts_by_dilation": run_counts}}
    a.out.write_text(json.dumps(result, indent=1) + "\n")
    _write_doc(a.doc, rows, oracles, maps, run_counts, int(static.sum()))


def _write_doc(path: Path, rows, oracles, maps, run_counts, n_static) -> None:
    lines = [
        "# What a per-frame rule can reach on the shared real frames",
        "",
        "`python bench/real_frames_limits.py` (about 15 s). Measurement only: the thresholds below are chosen on",
        "the 18 real frames themselves, so they are upper bounds for each family of rules, not settings; nothing here",
        "ships. Keep = hit or maybe (Ke et al. 2018 Table 3). Issue 13 asks for balanced accuracy ≥ 0.95: with 14",
        "frames to keep and 4 to drop, that allows one wrongly dropped hit or maybe and no kept miss.",
        "",
        "## Every frame: the network and the spot finder on the whole frame",
        "",
        "P = the bundled default model (P(hit) / P(maybe) / P(miss)); spots = `n_spots_no_rings` of `n_spots` from",
        "the shipped spot finder (its defaults), run on every frame, not only on those the network keeps.",
        "",
        "| frame | truth | P | spots off rings and streaks | share on rings |",
        "|---|---|---|---|---|",
        *[f"| {r['name']} | {r['label']} | {r['p_hit']:.2f} / {r['p_maybe']:.2f} / {r['p_miss']:.2f} | "
          f"{r['n_off']} of {r['n_spots']} | {1 - r['n_off'] / max(r['n_spots'], 1):.2f} |" for r in rows],
        "",
        "## The best any threshold reaches (oracle, chosen on these frames)",
        "",
        "| rule | best balanced accuracy | at |",
        "|---|---|---|",
        *[f"| {name} | {ba:.3f} | {', '.join(str(round(p, 3)) for p in params)} |"
          for name, (ba, params) in oracles.items()],
        "",
        "## The diamond-anvil-cell map screened as one run",
        "",
        f"The {len(maps)} map frames together: {n_static} pixels whose median over the map stands 5σ above a 15-pixel",
        "median filter of that median are masked (features at every map position), dilated by 0–2 pixels, and the",
        "spots counted again (`n_spots_no_rings`) and the network asked again (P(hit) + P(maybe) in brackets).",
        "",
        "| frame | truth | alone | " + " | ".join(f"run mask, dilated {g} px" for g in run_counts) + " |",
        "|---|---|---|" + "---|" * len(run_counts),
        *[f"| {r['name']} | {r['label']} | {r['n_off']} | " + " | ".join(_run_cell(run_counts[g][r['name']])
                                                                        for g in run_counts) + " |" for r in maps],
        "",
        "## What it shows",
        "",
        *_findings(rows, oracles),
        "",
    ]
    path.write_text("\n".join(lines))


def _run_cell(c: dict) -> str:
    return f"{c['n_off']} ({c['p_keep']:.2f})"


def _findings(rows, oracles) -> list[str]:
    by = {r["name"].split("/")[-1].split("_P1")[0].split(".")[0]: r for r in rows}
    best = max(ba for ba, _ in oracles.values())
    ge, thor = by["GE_aSI_detector_image_1529"], by["thor_test_edf"]
    m8, m3 = by["Fe3O4C_M1_map_8"], by["Fe3O4C_M1_map_3"]
    return [
        f"- The best threshold of any of the three rules reaches {best:.3f}, chosen on the test frames themselves:"
        " below 0.95 whatever the setting, so meeting the line takes a different network (or more than one frame),"
        " not a different threshold.",
        f"- The powder-ring miss (thor, {thor['n_off']} spots off rings, {1 - thor['n_off'] / thor['n_spots']:.2f}"
        f" of its spots on rings) looks more like a hit than the GE grain-reflection hit ({ge['n_off']} off rings,"
        f" {1 - ge['n_off'] / ge['n_spots']:.2f} on rings) by both counts: a rule that keeps a frame for more spots off rings and a smaller share on rings, and keeps the GE frame, keeps"
        " the thor frame.",
        f"- The diamond-anvil-cell maybe (map_8, {m8['n_off']} spots off rings) and miss (map_3, {m3['n_off']}) have"
        " the same count on their own: what makes map_3 a miss, features present at every map position, is not in"
        " one frame. Masked with the map's other frames, the counts follow the labels at 0 px of dilation, but not"
        " at 1 or 2 px, and the network still drops all three.",
    ]


if __name__ == "__main__":
    main()
