"""The jet-streak test of the spot gate, chosen on simulated frames (issue 13).

Usage::

    python bench/streak_test.py [--frames 100] [--work work/ring_centre] [--out bench/results/streak_test.json]
        [--doc docs/streak_test.md]

The spot finder counts the speckles of a liquid jet's streak as spots, and a miss with a streak keeps 4 or more
of them: in the leave-one-family-out test frames of seed 0, 70 of the 149 misses that the spot gate cannot drop
have a streak (``docs/spot_gate.md``).  :func:`diffscreen.preprocess.spots.streak_spots` takes the spots on one
line through the beam centre off the gate's count.  Here the spots of the 16 presets of the five detector
families, found with their recorded beam centre (the runs of ``bench/ring_centre.py``: seeds 7000 + ``k`` to
choose, 7100 + ``k`` to check, 100 frames each, each preset's default class mix), decide alone (keep when 4 or
more are off every ring and, with the test, off every streak), with the rings alone and with the streak test at
several line half-widths ``streak_px`` and probabilities ``ring_spot_alpha``.  Score: balanced accuracy of the
keep decision against the simulator's labels, per preset, and the difference to the rings alone paired over the
16 presets (95 % t-interval).  The shipped setting was chosen on the first seeds, checked on the second, and the
real frames were measured afterwards (``bench/real_frames.py``).  Writes the JSON and a Markdown page.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from ring_centre import (bench_args, cached_run, means_and_paired, page_head,  # noqa: E402
                         preset_table, seed_sets, spots_and_frame, write_outputs)

from diffscreen.evaluate.metrics import kept_balanced_accuracy  # noqa: E402
from diffscreen.models.decision import KEEP_MIN_SPOTS  # noqa: E402
from diffscreen.preprocess.spots import DEFAULT_SPOT_CONFIG, ring_spots, streak_spots  # noqa: E402

#: (``streak_px``, ``ring_spot_alpha``) compared; None: the rings alone (no streak test).
SETTINGS = (None, (2.0, 1e-3), (3.0, 1e-3), (4.0, 1e-3), (3.0, 1e-4))


def _key(setting) -> str:
    return "rings alone" if setting is None else f"streak ±{setting[0]:g} px, p < {setting[1]:g}"


def _count(xy, shape, centre, setting) -> int:
    """Spots off every ring (and off every streak, as ``setting`` says) about the recorded ``centre``."""
    spots, frame = spots_and_frame(xy, shape, centre)
    if not len(spots):
        return 0
    on_ring = ring_spots(spots, frame)
    on_streak = np.zeros(len(spots), bool) if setting is None else streak_spots(
        spots, frame, dataclasses.replace(DEFAULT_SPOT_CONFIG, streak_px=setting[0], ring_spot_alpha=setting[1]))
    return int(len(spots) - (on_ring | on_streak).sum())


def run_set(runs, frames: int, work: Path) -> dict:
    """Per-preset balanced accuracy of each setting, the means and the paired differences to the rings alone."""
    block = {"runs": [list(r) for r in runs], "scores": {}}
    for p, s in runs:
        run = cached_run((p, s, frames, work))
        y = np.array(run["labels"])
        block["scores"][f"{p}@{s}"] = {
            _key(st): kept_balanced_accuracy(
                np.array([_count(xy, run["shape"], c, st) for xy, c in zip(run["true"], run["centres"])])
                >= KEEP_MIN_SPOTS, y) for st in SETTINGS}
        print(p, s, {k: round(v, 3) for k, v in block["scores"][f"{p}@{s}"].items()}, flush=True)
    keys = [_key(st) for st in SETTINGS]
    block["mean"], paired = means_and_paired(list(block["scores"].values()), keys, keys[0])
    block["paired"] = {k: paired[k] for k in keys[1:]}
    return block


def markdown(res: dict) -> str:
    keys = [_key(st) for st in SETTINGS]
    lines = page_head("The jet-streak test of the spot gate (`bench/streak_test.py`)", __doc__, res["frames"],
                      f"(keep at ≥ {KEEP_MIN_SPOTS} spots).  The shipped setting is "
                      f"`streak_px = {res['shipped'][0]:g}`, `ring_spot_alpha = {res['shipped'][1]:g}`.")
    for name, block in res["sets"].items():
        lines += ["", f"## {name}", ""] + preset_table(block, keys)
        lines += ["", "Against the rings alone, paired over the presets (mean difference, 95 % t-interval):", "",
                  "| test | difference |", "|---|---|"]
        lines += [f"| {k} | {d['mean']:+.3f} [{d['lo']:+.3f}, {d['hi']:+.3f}] |" for k, d in block["paired"].items()]
    return "\n".join(lines + [""])


def main() -> None:
    a = bench_args(__doc__, "streak_test", workers=False)
    res = {"frames": a.frames, "shipped": [DEFAULT_SPOT_CONFIG.streak_px, DEFAULT_SPOT_CONFIG.ring_spot_alpha],
           "sets": seed_sets(run_set, a.frames, a.work)}
    write_outputs(res, a.out, a.doc, markdown(res))


if __name__ == "__main__":
    sys.exit(main())
