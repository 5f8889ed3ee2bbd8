"""Every shipped screening method on the 18 shared real frames, as a user runs it (issues 13 and 17): measurement only.

Usage::

    python bench/real_frames.py [--shared ../shared/data] [--out bench/results/real_frames.json]
        [--doc docs/real_frames.md]

Runs the command line exactly as a user types it, with no per-file or
per-detector setting (``diffscreen screen FILES --out TMP --no-cxi`` plus
``--model fast``, ``--method peakfinder8`` or ``--method dials``; HDF5
files as ``file.h5:/data``, as their MANIFEST.tsv says) on every frame of
``real-frames`` and ``real-frames-2``, and scores the keep decision
(hit or maybe kept, miss dropped; Ke et al. 2018 Table 3) against the
MANIFEST labels by balanced accuracy.  A frame that could not be screened
counts as wrongly decided.  Nothing is chosen on these frames: every
method runs with its shipped defaults (peakfinder8: OM's documented
settings, hit at >= 10 peaks; DIALS: find_spots defaults, hit at >= 10
spots, maybe at 4-9).  Writes the JSON and a Markdown page.
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = ("real-frames", "real-frames-2")
#: (name, extra command-line arguments, what a cell shows)
METHODS = (
    ("bundled default", (), "p"),
    ("bundled fast", ("--model", "fast"), "p"),
    ("peakfinder8 (defaults)", ("--method", "peakfinder8"), "n_peaks"),
    ("DIALS find_spots (defaults)", ("--method", "dials"), "n_spots"),
)


def manifest(shared: Path) -> dict:
    """File spec (HDF5 as ``file.h5:/data``) → name, label and detector, from both folders' MANIFEST.tsv."""
    out = {}
    for folder in FOLDERS:
        with open(shared / folder / "MANIFEST.tsv", newline="") as fh:
            for r in csv.DictReader(fh, delimiter="\t"):
                spec = str(shared / folder / r["file"]) + (":/data" if r["file"].endswith(".h5") else "")
                out[spec] = {"name": f"{folder}/{r['file']}", "label": r["label"], "detector": r["detector"]}
    return out


def _run(specs, args) -> tuple[dict, float]:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out"
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "diffscreen", "screen", *specs, *args, "--out", str(out), "--no-cxi"],
                       capture_output=True, text=True)  # exit 1 (some frames failed) is a result, not a failure
        seconds = time.perf_counter() - t0
        with open(out / "scores.csv", newline="") as fh:
            rows = {r["file"] + (f":{r['frame']}" if r["frame"] != "0" else ""): r for r in csv.DictReader(fh)}
    return rows, seconds


def _cell(row, show) -> str:
    if row is None or row["label"] == "error":
        return "not screened"
    if show == "p":
        spots = (f" ({row['n_spots_no_rings']} of {row['n_spots']} spots off rings and streaks)"
                 if row.get("n_spots") else "")
        return (f"{float(row['p_hit']):.2f} / {float(row['p_maybe']):.2f} / {float(row['p_miss']):.2f} → "
                f"{row['label']}{spots}")
    return f"{row[show]} → {row['label']}"


def _balanced_accuracy(frames, method) -> tuple[float, str, str]:
    kept = [f["calls"][method] in ("hit", "maybe") for f in frames.values() if f["label"] != "miss"]
    dropped = [f["calls"][method] == "miss" for f in frames.values() if f["label"] == "miss"]
    ba = 0.5 * (sum(kept) / len(kept) + sum(dropped) / len(dropped))
    return ba, f"{sum(kept)}/{len(kept)}", f"{sum(dropped)}/{len(dropped)}"


def real_frame_args(description: str, name: str) -> argparse.Namespace:
    """``--shared`` (the shared data folder), ``--out`` (bench/results/NAME.json) and ``--doc`` (docs/NAME.md)."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--shared", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / f"{name}.json")
    ap.add_argument("--doc", type=Path, default=ROOT / "docs" / f"{name}.md")
    return ap.parse_args()


def main() -> None:
    a = real_frame_args(__doc__.splitlines()[0], "real_frames")
    files = manifest(a.shared)
    frames = {m["name"]: {**m, "calls": {}, "cells": {}} for m in files.values()}
    summary = {}
    for name, args, show in METHODS:
        rows, seconds = _run(list(files), args)
        for spec, m in files.items():
            row = rows.get(spec)
            frames[m["name"]]["calls"][name] = "error" if row is None else row["label"]
            frames[m["name"]]["cells"][name] = _cell(row, show)
        ba, kept, dropped = _balanced_accuracy(frames, name)
        summary[name] = {"balanced_accuracy": ba, "kept_of_hit_or_maybe": kept, "dropped_of_miss": dropped,
                         "command": "diffscreen screen FILES " + " ".join(args), "seconds": round(seconds, 1)}
        print(f"{name}: balanced accuracy {ba:.3f} (kept {kept} hits or maybes, dropped {dropped} misses)")
    a.out.write_text(json.dumps({"methods": summary, "frames": frames}, indent=1) + "\n")
    names = [m[0] for m in METHODS]
    lines = [
        "# Every shipped method on the shared real frames",
        "",
        "The 18 real frames of `../shared/data/real-frames` and `real-frames-2` (their MANIFEST.tsv labels), screened",
        "exactly as a user would, with no per-file or per-detector setting (`python bench/real_frames.py`). Measurement",
        "only: nothing was trained, tuned or chosen on these frames. Keep = hit or maybe (Ke et al. 2018 Table 3); a",
        "frame that could not be screened counts as wrongly decided. Goal of issue 13: balanced accuracy ≥ 0.95.",
        "",
        "| method | command | balanced accuracy | hits or maybes kept | misses dropped |",
        "|---|---|---|---|---|",
        *[f"| {n} | `{s['command'].strip()}` | {s['balanced_accuracy']:.3f} | {s['kept_of_hit_or_maybe']} | "
          f"{s['dropped_of_miss']} |" for n, s in summary.items()],
        "",
        "Cells: P(hit) / P(maybe) / P(miss) → call for the networks, and on the frames the network keeps the spot",
        "gate's count (`n_spots_no_rings` of `n_spots`, scores.csv; the gate drops a kept frame with fewer than 4);",
        "peaks or spots → call for the spot-finders.",
        "",
        "| frame | detector | truth | " + " | ".join(names) + " |",
        "|---|---|---|" + "---|" * len(names),
        *[f"| {n} | {f['detector']} | {f['label']} | " + " | ".join(f["cells"][m] for m in names) + " |"
          for n, f in frames.items()],
        "",
    ]
    a.doc.write_text("\n".join(lines))


if __name__ == "__main__":
    main()
