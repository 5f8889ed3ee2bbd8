"""What the spot finder finds of the simulator's Bragg spots, and why it misses the weak ones (issue 13).

Usage::

    python bench/spot_efficiency.py [--frames 100] [--work work/spot_efficiency] [--workers 2]
        [--out bench/results/spot_efficiency.json] [--doc docs/spot_efficiency.md]

The spot gate keeps a frame when 4 or more Bragg spots are found on it off every ring and streak, and the label
counts the spots whose expected SNR is 5 or more, so a *maybe* (4–9 such spots) survives the gate only if the spot
finder finds nearly all of its spots near SNR 5. This bench measures that directly, on the frames of the 16 presets
(preset ``k`` at seed 7000 + ``k``, the design seeds of ``bench/ring_centre.py``, each preset's default class mix):
the fraction of the simulator's spots of each expected SNR that :func:`diffscreen.preprocess.spots.find_spots` (its
defaults) places within 3 px, on the frames with 1 to 50 such spots (on denser frames neighbouring spots merge and
the matching says little); the maybes that keep fewer than 4 spots off every ring and streak; and the photon-
transfer gain the spot finder estimates against the simulator's noise-equivalent gain (ADU variance over ADU mean of
the photon noise, the gain ``dials.find_spots`` takes; for a pixel-array detector the ADU per photon), with the
median background in photons, since the gain floors the noise that sets the pixel threshold. Measurement only:
nothing is chosen here. Writes the JSON and a Markdown page."""

from __future__ import annotations

import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from ring_centre import SEED_SETS, bench_args, cached_json, presets, spot_finder_tag, write_outputs  # noqa: E402

from diffscreen.models.decision import KEEP_MIN_SPOTS  # noqa: E402
from diffscreen.preprocess.spots import count_spots_off_rings, find_spots  # noqa: E402

#: Lower edges of the expected-SNR bins of the efficiency table (the last bin is open).
SNR_EDGES = (5.0, 6.0, 8.0, 12.0)
#: Frames with more detectable spots than this are left out of the efficiency (spots merge there).
MAX_SPOTS = 50
#: A true spot counts as found when a found spot lies within this distance, px.
MATCH_PX = 3.0
#: Gain estimates off the truth by more than this factor (either way) are counted.
GAIN_FACTOR = 2.0


def _frames_of(preset: str, seed: int, n: int) -> dict:
    """Per frame: label, detectable spots, matched counts per SNR bin, the gate's count, gain estimate and truth,
    and the median background (ADU) of the rings."""
    from diffscreen.simulate.run import Simulator

    sim = Simulator(preset, seed=seed)
    out = []
    for i in range(n):
        sf = sim.frame(i)
        frame = sf.to_frame()
        spots = find_spots(frame)
        pk = sf.peaks[sf.peaks[:, 3] >= SNR_EDGES[0]]
        if len(pk) and len(spots):
            d = np.hypot(pk[:, None, 0] - spots.x[None], pk[:, None, 1] - spots.y[None]).min(1)
        else:
            d = np.full(len(pk), np.inf)
        edges = (*SNR_EDGES, np.inf)
        bins = [(pk[:, 3] >= lo) & (pk[:, 3] < hi) for lo, hi in zip(edges[:-1], edges[1:])]
        mu, cnt = spots.shells[0], spots.shells[2]
        out.append({"label": sf.label, "n_spots": int(sf.n_spots),
                    "true": [int(b.sum()) for b in bins], "found": [int((d[b] <= MATCH_PX).sum()) for b in bins],
                    "gate": count_spots_off_rings(frame, spots=spots), "gain": float(spots.gain),
                    "adu_per_photon": float(sf.meta.extra["adu_per_photon"]),
                    "gain_true": float(sf.meta.extra["gain_adu_per_photon"]),
                    "read_noise_adu": float(sf.meta.extra["read_noise_adu"]),
                    "median_mu": float(np.median(mu[cnt >= 8])) if (cnt >= 8).any() else float("nan")})
    return {"frames": out}


def cached_frames(args) -> dict:
    preset, seed, n, work = args
    return cached_json(work / f"{preset}@{seed}_n{n}_{spot_finder_tag()}.json", lambda: _frames_of(preset, seed, n))


def summarise(run: dict) -> dict:
    """Efficiency per SNR bin (sparse frames), maybes and hits the gate loses, and the gain's errors."""
    fr = run["frames"]
    sparse = [f for f in fr if 1 <= f["n_spots"] <= MAX_SPOTS]
    true = np.sum([f["true"] for f in sparse], axis=0) if sparse else np.zeros(len(SNR_EDGES))
    found = np.sum([f["found"] for f in sparse], axis=0) if sparse else np.zeros(len(SNR_EDGES))
    ratio = np.array([f["gain"] / f["gain_true"] for f in fr])
    maybes = [f for f in fr if f["label"] == "maybe"]
    lost = [f for f in maybes if f["gate"] < KEEP_MIN_SPOTS]
    photons = np.array([f["median_mu"] / f["adu_per_photon"] for f in fr])
    return {"sparse_frames": len(sparse), "true": true.tolist(), "found": found.tolist(),
            "efficiency": [float(f / t) if t else float("nan") for f, t in zip(found, true)],
            "maybes": len(maybes), "maybes_lost": len(lost),
            "maybes_lost_gain_high": sum(f["gain"] > GAIN_FACTOR * f["gain_true"] for f in lost),
            "gain_ratio_median": float(np.median(ratio)),
            "gain_high": int((ratio > GAIN_FACTOR).sum()), "gain_low": int((ratio < 1 / GAIN_FACTOR).sum()),
            "gain_high_background_photons": float(np.nanmedian(photons[ratio > GAIN_FACTOR]))
            if (ratio > GAIN_FACTOR).any() else float("nan"),
            "background_photons": float(np.nanmedian(photons)), "frames": len(fr)}


def markdown(res: dict) -> str:
    edges = [f"{lo:g}–{hi:g}" for lo, hi in zip(SNR_EDGES[:-1], SNR_EDGES[1:])] + [f"≥ {SNR_EDGES[-1]:g}"]
    lines = ["# What the spot finder finds of the simulated Bragg spots (`bench/spot_efficiency.py`)", "",
             __doc__.split("\n\n")[3].replace("\n", " "), "",
             f"{res['frames']} frames a preset, seeds {res['seed0']}+k.  *Found, SNR a–b*: the fraction of the "
             f"spots of expected SNR in [a, b) found within {MATCH_PX:g} px, on the frames with 1–{MAX_SPOTS} "
             "detectable spots (their number in brackets).  *Maybes lost*: maybes with fewer than "
             f"{KEEP_MIN_SPOTS} spots off every ring and streak (of them, with the gain over {GAIN_FACTOR:g}× the "
             f"truth).  *Gain*: the spot finder's photon-transfer gain over the simulator's noise-equivalent gain, "
             "median, "
             f"and the frames where it is over {GAIN_FACTOR:g}× or under 1/{GAIN_FACTOR:g} of it; *background*: "
             "the median ring background in photons per pixel, over all frames and over those with the gain over "
             f"{GAIN_FACTOR:g}×.", "",
             "| preset | " + " | ".join(f"found, SNR {e}" for e in edges)
             + " | maybes lost | gain / truth | gain > 2× / < ½ | background (photons), all / gain > 2× |",
             "|---|" + "---|" * (len(edges) + 4)]
    for p, s in res["presets"].items():
        eff = " | ".join("" if not t else f"{e:.2f} ({t})" for e, t in zip(s["efficiency"], s["true"]))
        lines.append(f"| {p} | {eff} | {s['maybes_lost']} of {s['maybes']} ({s['maybes_lost_gain_high']}) | "
                     f"{s['gain_ratio_median']:.2f} | {s['gain_high']} / {s['gain_low']} | "
                     f"{s['background_photons']:.2f} / {s['gain_high_background_photons']:.2f} |")
    tot = {k: sum(s[k] for s in res["presets"].values()) for k in ("maybes", "maybes_lost", "maybes_lost_gain_high",
                                                                   "gain_high", "frames")}
    true = np.sum([s["true"] for s in res["presets"].values()], axis=0)
    found = np.sum([s["found"] for s in res["presets"].values()], axis=0)
    lines += ["", "## Findings", "",
              "- All presets together: found "
              + ", ".join(f"{f / t:.2f} of SNR {e}" for f, t, e in zip(found, true, edges))
              + " (sparse frames).",
              f"- {tot['maybes_lost']} of {tot['maybes']} maybes keep fewer than {KEEP_MIN_SPOTS} spots; on "
              f"{tot['maybes_lost_gain_high']} of them the gain estimate is over {GAIN_FACTOR:g}× the truth.",
              f"- The gain is over {GAIN_FACTOR:g}× the truth on {tot['gain_high']} of {tot['frames']} frames.", ""]
    return "\n".join(lines)


def main() -> None:
    a = bench_args(__doc__, "spot_efficiency", work="spot_efficiency")
    seed0 = next(iter(SEED_SETS.values()))
    runs = [(p, seed0 + k) for k, p in enumerate(presets())]
    with ProcessPoolExecutor(a.workers) as pool:
        data = list(pool.map(cached_frames, [(p, s, a.frames, a.work) for p, s in runs]))
    res = {"frames": a.frames, "seed0": seed0, "presets": {}}
    for (p, _), run in zip(runs, data):
        res["presets"][p] = summarise(run)
        print(p, {k: v for k, v in res["presets"][p].items() if k in ("efficiency", "maybes_lost", "gain_high")},
              flush=True)
    write_outputs(res, a.out, a.doc, markdown(res))


if __name__ == "__main__":
    sys.exit(main())
