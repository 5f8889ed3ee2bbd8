"""Pixel rows and columns of their own in the spot finder's background, chosen on simulated frames (issue 13).

Usage::

    python bench/line_response.py [--frames 100] [--work work/line_response] [--out bench/results/line_response.json]
        [--doc docs/line_response.md]

The double-size pixels between the chips of a JUNGFRAU, EIGER or CSPAD module see twice the background of their
neighbours, and against the ring's background their noise breaks into rows of false spots: in the
leave-one-family-out test frames of seed 0, the misses of the panel family that the spot gate cannot drop mostly
carry such rows (``docs/spot_gate.md``).  :func:`diffscreen.preprocess.spots.line_response` gives each pixel column
and row that is brighter than its neighbours its own background factor.  Here the frames of the 16 presets of the five
detector families (preset ``k`` at seed 7000 + ``k`` to choose, 7100 + ``k`` to check, the seeds of
``bench/ring_centre.py``, 100 frames each, each preset's default class mix) are simulated, the spots are found
without line factors and with them at several significances ``line_sigma``, and the spot count alone decides as
the spot gate does (keep when 4 or more are off every ring and streak).  Score: balanced accuracy of the keep
decision against the simulator's labels, per preset, and the difference to no line factors paired over the 16
presets (95 % t-interval).  The shipped setting was chosen on the first seeds, checked on the second, and the real
frames were measured afterwards (``bench/real_frames.py``).  Writes the JSON and a Markdown page.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from ring_centre import (bench_args, cached_json, means_and_paired, page_head, preset_table, seed_sets,  # noqa: E402
                         spot_finder_tag, write_outputs)

from diffscreen.evaluate.metrics import kept_balanced_accuracy  # noqa: E402
from diffscreen.io.frame import CLASS_NAMES  # noqa: E402
from diffscreen.models.decision import KEEP_MIN_SPOTS  # noqa: E402
from diffscreen.preprocess.spots import DEFAULT_SPOT_CONFIG, count_spots_off_rings, find_spots  # noqa: E402

#: ``line_sigma`` compared; None: no line factors (the spot finder before).
SETTINGS = (None, 3.0, 5.0, 8.0)


def setting_key(field: str, setting, off: str) -> str:
    """A setting's name in the tables: ``off`` for None, else ``field = setting``."""
    return off if setting is None else f"{field} = {setting:g}"


def counts_by_setting(preset: str, seed: int, n: int, field: str, settings, off: str) -> dict:
    """Labels and the gate's count (spots off every ring and streak) of frames 0..n-1 with the spot finder's
    ``field`` set to each of ``settings`` (the rest its defaults), and the spot finder's time per frame."""
    from diffscreen.simulate.run import Simulator

    sim = Simulator(preset, seed=seed)
    keys = [setting_key(field, s, off) for s in settings]
    out = {"labels": [], "counts": {k: [] for k in keys}, "ms": {k: 0.0 for k in keys}}
    for i in range(n):
        sf = sim.frame(i)
        frame = sf.to_frame()
        out["labels"].append(CLASS_NAMES.index(sf.label))
        for s, k in zip(settings, keys):
            cfg = dataclasses.replace(DEFAULT_SPOT_CONFIG, **{field: s})
            t0 = time.perf_counter()
            spots = find_spots(frame, cfg)
            out["ms"][k] += 1e3 * (time.perf_counter() - t0) / n
            out["counts"][k].append(count_spots_off_rings(frame, cfg, spots))
    return out


def cached_counts(args) -> dict:
    """The counts of one (preset, seed, frames, work folder, field, settings, name of None) run, simulated and
    counted once and kept in the folder."""
    preset, seed, n, work, field, settings, off = args
    return cached_json(work / f"{preset}@{seed}_n{n}_{spot_finder_tag(field, settings)}.json",
                       lambda: counts_by_setting(preset, seed, n, field, settings, off))


def run_set(runs, frames: int, work: Path, workers: int, field: str = "line_sigma", settings=SETTINGS,
            off: str = "no line factors") -> dict:
    """Per-preset balanced accuracy of each setting of ``field``, the means, the spot finder's time and the paired
    differences to the first setting."""
    with ProcessPoolExecutor(workers) as pool:
        data = list(pool.map(cached_counts, [(p, s, frames, work, field, settings, off) for p, s in runs]))
    keys = [setting_key(field, s, off) for s in settings]
    block = {"runs": [list(r) for r in runs], "scores": {}}
    for (p, s), run in zip(runs, data):
        y = np.array(run["labels"])
        block["scores"][f"{p}@{s}"] = {k: kept_balanced_accuracy(np.array(run["counts"][k]) >= KEEP_MIN_SPOTS, y)
                                       for k in keys}
        print(p, s, {k: round(v, 3) for k, v in block["scores"][f"{p}@{s}"].items()}, flush=True)
    block["mean"], paired = means_and_paired(list(block["scores"].values()), keys, keys[0])
    block["paired"] = {k: paired[k] for k in keys[1:]}
    block["ms"] = {k: float(np.mean([run["ms"][k] for run in data])) for k in keys}
    return block


def settings_page(res: dict, title: str, doc: str, field: str, settings, off: str) -> str:
    """The Markdown page of a bench that compares ``settings`` of the spot finder's ``field`` (:func:`run_set` per
    seed set in ``res["sets"]``; ``res["shipped"]``: the shipped setting)."""
    keys = [setting_key(field, s, off) for s in settings]
    shipped = setting_key(field, res["shipped"], off)
    lines = page_head(title, doc, res["frames"], f"(keep at ≥ {KEEP_MIN_SPOTS} spots off every ring and streak).  "
                      f"The shipped setting is `{shipped}`.")
    for name, block in res["sets"].items():
        lines += ["", f"## {name}", ""] + preset_table(block, keys)
        lines += ["", f"Against {keys[0]}, paired over the presets (mean difference, 95 % t-interval; "
                  "established where the interval excludes 0), and the spot finder's time per frame (ms, this "
                  "2-core machine, two presets at a time):", "",
                  "| setting | difference | ms a frame |", "|---|---|---|",
                  f"| {keys[0]} | | {block['ms'][keys[0]]:.0f} |"]
        lines += [f"| {k} | {d['mean']:+.3f} [{d['lo']:+.3f}, {d['hi']:+.3f}] | {block['ms'][k]:.0f} |"
                  for k, d in block["paired"].items()]
        diff = {run: r[shipped] - r[keys[0]] for run, r in block["scores"].items()}
        lines += ["", f"With the shipped `{shipped}`: better on "
                  f"{sum(d > 0 for d in diff.values())} presets ("
                  + ", ".join(f"{run.split('@')[0]} {d:+.3f}" for run, d in diff.items() if d > 0)
                  + f"), worse on {sum(d < 0 for d in diff.values())}"
                  + "".join(f", {run.split('@')[0]} {d:+.3f}" for run, d in diff.items() if d < 0)
                  + f", unchanged on {sum(d == 0 for d in diff.values())}."]
    return "\n".join(lines + [""])


def markdown(res: dict) -> str:
    return settings_page(res, "Pixel rows and columns of their own in the spot finder (`bench/line_response.py`)",
                         __doc__, "line_sigma", SETTINGS, "no line factors")


def main() -> None:
    a = bench_args(__doc__, "line_response", work="line_response")
    res = {"frames": a.frames, "shipped": DEFAULT_SPOT_CONFIG.line_sigma,
           "sets": seed_sets(run_set, a.frames, a.work, a.workers)}
    write_outputs(res, a.out, a.doc, markdown(res))


if __name__ == "__main__":
    sys.exit(main())
