"""The ring test without a recorded beam centre: the frame centre against a centre fitted to the rings (issue 13).

Usage::

    python bench/ring_centre.py [--frames 100] [--work work/ring_centre] [--out bench/results/ring_centre.json]
        [--doc docs/ring_centre.md]

A file that records no beam centre (EDF, SPE, TIFF, a GE or KappaCCD frame) leaves the ring test of the spot gate
(:func:`diffscreen.preprocess.spots.ring_spots`) with the frame centre as a stand-in, and a powder ring whose
centre is a few pixels off the stand-in spreads over several bands of radii and escapes the test.
:func:`~diffscreen.preprocess.spots.fit_ring_centre` finds the rings' centre from the spots themselves.  Here the
frames of the 16 presets of the five detector families (``diffscreen.simulate.presets.FAMILIES``; preset ``k`` at
seed 7000 + ``k``, and again at 7100 + ``k``: seeds no benchmark and no training uses, each preset's default class
mix) are simulated; the
spots are found with the recorded beam centre, and again with the beam centre taken out of the header, as such a
file gives them; and the spot count alone decides (keep when ``n_spots_no_rings`` ≥ 4, the gate's number), with
the ring test about the recorded centre, about the frame centre, and about a fitted centre at several acceptance
probabilities ``ring_centre_alpha``.  Score: balanced accuracy of the keep decision against the simulator's labels,
per preset, and the difference to the frame centre paired over the 16 presets (95 % t-interval).  The shipped
setting was chosen on the first seeds, checked on the second, and the real frames were measured afterwards
(``bench/real_frames.py``).  Writes the JSON and a Markdown page.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

from diffscreen.evaluate.metrics import kept_balanced_accuracy, t_interval  # noqa: E402
from diffscreen.io.frame import CLASS_NAMES, Frame, FrameMeta  # noqa: E402
from diffscreen.models.decision import KEEP_MIN_SPOTS  # noqa: E402
from diffscreen.preprocess.spots import DEFAULT_SPOT_CONFIG, Spots, find_spots, ring_spots  # noqa: E402
from diffscreen.simulate.presets import FAMILIES  # noqa: E402

#: The acceptance of a fitted centre compared: (``ring_centre_alpha``, ``ring_centre_min_rings``); None: the frame
#: centre, no fit.
SETTINGS = (None, (1e-3, 1), (1e-4, 1), (1e-6, 1), (1e-8, 1), (1e-3, 2), (1e-4, 2), (1e-6, 2), (1e-8, 2))
#: The two sets of runs, by the first seed (preset k of :func:`presets` is simulated with seed + k): the setting is
#: chosen on the first and checked on the second.
SEED_SETS = {"Design seeds (the setting is chosen here)": 7000, "Check seeds (measured after the choice)": 7100}


def presets() -> list[str]:
    """The 16 presets of the five families, in FAMILIES order."""
    return [p for ps in FAMILIES.values() for p in ps]


def seed_sets(run_set, *args) -> dict:
    """``run_set(runs, *args)`` for each of :data:`SEED_SETS`, by name: ``runs`` the 16 presets (:func:`presets`),
    preset ``k`` at the set's first seed + ``k``."""
    return {name: run_set([(p, seed0 + k) for k, p in enumerate(presets())], *args) for name, seed0 in SEED_SETS.items()}


def _spots_of(preset: str, seed: int, n: int) -> dict:
    """Labels, shapes, recorded centres and the spot positions of frames 0..n-1, found with the recorded centre
    (``true``) and with the header's centre taken out (``none``)."""
    from diffscreen.simulate.run import Simulator

    sim = Simulator(preset, seed=seed)
    out = {"labels": [], "shape": None, "centres": [], "true": [], "none": []}
    for i in range(n):
        sf = sim.frame(i)
        fr = sf.to_frame()
        out["labels"].append(CLASS_NAMES.index(sf.label))
        out["shape"] = list(fr.data.shape)
        out["centres"].append(list(map(float, fr.meta.beam_centre_px)))
        bare = Frame(fr.data, fr.mask, dataclasses.replace(fr.meta, beam_centre_px=None))
        for key, f in (("true", fr), ("none", bare)):
            s = find_spots(f)
            out[key].append([s.x.tolist(), s.y.tolist()])
    return out


def spot_finder_tag(*extra) -> str:
    """A short digest of the spot finder's defaults and version (``SpotConfig.to_dict``) and of ``extra``: part of a
    cache file's name, so that counts cached before a change to the spot finder are not served after it."""
    import hashlib

    text = json.dumps([DEFAULT_SPOT_CONFIG.to_dict(), *extra], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:10]


def cached_json(path: Path, compute) -> dict:
    """``compute()``'s result, computed once and kept at ``path`` as JSON (written to a temporary name, then
    renamed)."""
    if not path.exists():
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(compute()))
        tmp.replace(path)
    return json.loads(path.read_text())


def cached_run(args) -> dict:
    """The spots of one (preset, seed, frames, work folder) run, simulated and found once and kept in the folder."""
    preset, seed, n, work = args
    return cached_json(work / f"{preset}@{seed}_n{n}.json", lambda: _spots_of(preset, seed, n))


def _key(setting) -> str:
    return "frame centre" if setting is None else f"fit {setting[0]:g}, {setting[1]} ring{'s' * (setting[1] > 1)}"


def spots_and_frame(xy, shape, centre) -> tuple:
    """A :class:`Spots` at the positions ``xy`` ((x list, y list), px) and a blank frame of ``shape`` that records
    ``centre`` (None: no beam centre), for the ring and streak tests, which need nothing else."""
    x, y = (np.asarray(v, np.float32) for v in xy)
    z = np.zeros(x.size, np.float32)
    spots = Spots(x=x, y=y, intensity=z, snr=z, n_pixels=z.astype(np.int32), gain=1.0, shells=None)
    frame = Frame(np.broadcast_to(np.float32(0), shape), np.broadcast_to(False, shape),
                  FrameMeta(source="sim", beam_centre_px=None if centre is None else tuple(centre)))
    return spots, frame


def _count(xy, shape, centre, setting) -> int:
    """Spots off every ring, about ``centre`` (None: none recorded), a fitted centre accepted as ``setting`` says."""
    spots, frame = spots_and_frame(xy, shape, centre)
    if not len(spots):
        return 0
    cfg = dataclasses.replace(DEFAULT_SPOT_CONFIG, ring_centre_alpha=None) if setting is None else dataclasses.replace(
        DEFAULT_SPOT_CONFIG, ring_centre_alpha=setting[0], ring_centre_min_rings=setting[1])
    return int(len(spots) - ring_spots(spots, frame, cfg).sum())


def score(run: dict) -> dict:
    """Balanced accuracy of the spot count alone, per way of centring the ring test, and the fit's time per frame."""
    y = np.array(run["labels"])
    res = {}
    counts = [_count(xy, run["shape"], c, None) for xy, c in zip(run["true"], run["centres"])]
    res["recorded centre"] = kept_balanced_accuracy(np.array(counts) >= KEEP_MIN_SPOTS, y)
    for setting in SETTINGS:
        t0 = time.perf_counter()
        counts = [_count(xy, run["shape"], None, setting) for xy in run["none"]]
        key = _key(setting)
        res[key] = kept_balanced_accuracy(np.array(counts) >= KEEP_MIN_SPOTS, y)
        res[f"{key} ms"] = 1e3 * (time.perf_counter() - t0) / len(y)
    return res


def preset_table(block: dict, keys) -> list:
    """Markdown rows of one seed set: each preset's balanced accuracy per setting in ``keys``, then their means."""
    lines = ["| preset | seed | " + " | ".join(keys) + " |", "|---|---|" + "---|" * len(keys)]
    for p, s in block["runs"]:
        r = block["scores"][f"{p}@{s}"]
        lines.append(f"| {p} | {s} | " + " | ".join(f"{r[k]:.3f}" for k in keys) + " |")
    return lines + ["| **mean** | | " + " | ".join(f"**{block['mean'][k]:.3f}**" for k in keys) + " |"]


def means_and_paired(scores: list, keys, base: str) -> tuple[dict, dict]:
    """Per setting in ``keys``: the mean over the presets' ``scores`` (dicts setting → balanced accuracy), and the
    mean and 95 % t-interval of its paired difference to setting ``base``."""
    ref = np.array([r[base] for r in scores])
    paired = {}
    for k in keys:
        m, lo, hi = t_interval(np.array([r[k] for r in scores]) - ref)
        paired[k] = {"mean": m, "lo": lo, "hi": hi}
    return {k: float(np.mean([r[k] for r in scores])) for k in keys}, paired


def _table(block: dict, keys) -> list:
    """One seed set's per-preset table and its paired differences to the frame centre."""
    lines = preset_table(block, keys)
    lines += ["", "Against the frame centre, paired over the presets (mean difference, 95 % t-interval; the "
              "difference is established where the interval excludes 0), and the ring test's time per frame:", "",
              "| centre | difference | ms a frame |", "|---|---|---|"]
    for k in keys[2:] + keys[:1]:
        d, ms = block["paired"][k], block["ms"].get(k)
        lines.append(f"| {k} | {d['mean']:+.3f} [{d['lo']:+.3f}, {d['hi']:+.3f}] | "
                     f"{'' if ms is None else f'{ms:.1f}'} |")
    return lines


def page_head(title: str, doc: str, frames: int, cells: str) -> list:
    """The first lines of a bench page: the ``title``, the description paragraph of the bench's docstring ``doc``
    (the one after its usage), and ``cells``, what a cell of its tables holds."""
    return [f"# {title}", "", doc.split("\n\n")[3].replace("\n", " "), "",
            f"{frames} frames a preset.  Cells: balanced accuracy of the spot count alone {cells}"]


def markdown(res: dict) -> str:
    keys = ["recorded centre"] + [_key(st) for st in SETTINGS]
    a, k = res["shipped"]
    lines = page_head("The ring test without a recorded beam centre (`bench/ring_centre.py`)", __doc__, res["frames"],
                      f"(keep at ≥ {KEEP_MIN_SPOTS} spots off every ring).  The shipped setting is "
                      f"`ring_centre_alpha = {a:g}`, `ring_centre_min_rings = {k}`.")
    for name, block in res["sets"].items():
        lines += ["", f"## {name}", ""] + _table(block, keys)
    return "\n".join(lines + [""])


def run_set(runs, frames: int, work: Path, workers: int) -> dict:
    """Scores, means, times and paired differences of one set of (preset, seed) runs."""
    with ProcessPoolExecutor(workers) as pool:
        data = list(pool.map(cached_run, [(p, s, frames, work) for p, s in runs]))
    block = {"runs": [list(r) for r in runs], "scores": {}}
    for (p, s), run in zip(runs, data):
        block["scores"][f"{p}@{s}"] = score(run)
        print(p, s, {k: round(v, 3) for k, v in block["scores"][f"{p}@{s}"].items() if not k.endswith(" ms")},
              flush=True)
    scores = list(block["scores"].values())
    keys = [k for k in scores[0] if not k.endswith(" ms")]
    block["mean"], block["paired"] = means_and_paired(scores, keys, "frame centre")
    block["ms"] = {k: float(np.mean([r[f"{k} ms"] for r in scores])) for k in keys if k != "recorded centre"}
    return block


def write_outputs(res: dict, out: Path, doc: Path, page: str) -> None:
    """Write the results' JSON to ``out`` and the Markdown ``page`` to ``doc``."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1) + "\n")
    doc.write_text(page)
    print(f"wrote {out} and {doc}")


def bench_args(doc: str, name: str, work: str = "ring_centre", workers: bool = True) -> argparse.Namespace:
    """The options of the benches that choose a spot-gate setting on simulated presets: ``--frames``, ``--work``
    (default ``work/<work>``, created), ``--out`` (``bench/results/<name>.json``), ``--doc`` (``docs/<name>.md``),
    and ``--workers`` where the bench has a process pool."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--frames", type=int, default=100)
    ap.add_argument("--work", type=Path, default=ROOT / "work" / work)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / f"{name}.json")
    ap.add_argument("--doc", type=Path, default=ROOT / "docs" / f"{name}.md")
    if workers:
        ap.add_argument("--workers", type=int, default=2)
    a = ap.parse_args()
    a.work.mkdir(parents=True, exist_ok=True)
    return a


def main() -> None:
    a = bench_args(__doc__, "ring_centre")
    res = {"frames": a.frames,
           "shipped": [DEFAULT_SPOT_CONFIG.ring_centre_alpha, DEFAULT_SPOT_CONFIG.ring_centre_min_rings],
           "sets": seed_sets(run_set, a.frames, a.work, a.workers)}
    write_outputs(res, a.out, a.doc, markdown(res))


if __name__ == "__main__":
    sys.exit(main())
