"""``diffscreen screen --method dials`` on the 18 shared real frames (issue 17 item 2): measurement only.

Usage::

    python bench/dials/screen_real_frames.py [--shared ../shared/data]
        [--out bench/results/dials_screen_real_frames.json]

Runs the command line exactly as a user would (``diffscreen screen FILES
--method dials --out TMP --no-cxi``; HDF5 files as ``file.h5:/data``) on every
frame of ``real-frames`` and ``real-frames-2`` (labels from their
``MANIFEST.tsv``), and reports per frame the label, DIALS's spot and
strong-pixel counts, the call (Ke et al. 2018 §3.3.1: hit at >= 10 spots,
maybe at 4-9, miss below; fixed rules, never tuned on these frames), any
warning, and beside it the count ``dials.find_spots`` itself gave on the file
where dxtbx could read it (``bench/results/dials_real_frames.json``, from
``bench/dials/real_frames.py``).  The score is the balanced accuracy of the
keep decision (hit or maybe kept, miss dropped); a frame that could not be
screened counts as wrongly decided.  Writes the JSON and prints a Markdown
table.
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

ROOT = Path(__file__).resolve().parents[2]
FOLDERS = ("real-frames", "real-frames-2")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shared", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "dials_screen_real_frames.json")
    ap.add_argument("--find-spots", type=Path, default=ROOT / "bench" / "results" / "dials_real_frames.json",
                    help="dials.find_spots counts on the files (bench/dials/real_frames.py)")
    a = ap.parse_args()

    manifest = {}  # spec -> (name, label)
    for folder in FOLDERS:
        with open(a.shared / folder / "MANIFEST.tsv", newline="") as fh:
            for r in csv.DictReader(fh, delimiter="\t"):
                spec = str(a.shared / folder / r["file"]) + (":/data" if r["file"].endswith(".h5") else "")
                manifest[spec] = (f"{folder}/{r['file']}", r["label"])
    ref = {}
    if a.find_spots.exists():
        ref = json.loads(a.find_spots.read_text()).get("frames", {})

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out"
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "diffscreen", "screen", *manifest, "--method", "dials",
                               "--out", str(out), "--no-cxi"], capture_output=True, text=True)  # fmt: skip
        seconds = time.perf_counter() - t0
        if proc.returncode not in (0, 1):
            sys.exit(f"screen --method dials failed ({proc.returncode}): {proc.stderr.strip()[-500:]}")
        with open(out / "scores.csv", newline="") as fh:
            scores = {(r["file"], int(r["frame"])): r for r in csv.DictReader(fh)}
        with open(out / "errors.csv", newline="") as fh:
            errors = [r for r in csv.DictReader(fh)]
        summary = json.loads((out / "summary.json").read_text())

    frames, n_keep, n_miss, tp, tn = {}, 0, 0, 0, 0
    for spec, (name, label) in manifest.items():
        r = scores.get((spec, 0)) or scores.get((spec, -1)) or {}
        call = r.get("label", "error")
        notes = [e["error"] for e in errors if e["file"] == spec]
        keep_true, kept = label != "miss", call in ("hit", "maybe")
        if keep_true:
            n_keep += 1
            tp += kept
        else:
            n_miss += 1
            tn += call == "miss"
        fs = ref.get(name, {})
        frames[name] = {
            "label": label,
            "n_spots": int(float(r["n_spots"])) if r.get("n_spots") else None,
            "n_strong_pixels": int(float(r["n_strong_pixels"])) if r.get("n_strong_pixels") else None,
            "call": call,
            "correct_keep": bool(kept == keep_true and call != "error"),
            "notes": notes,
            "dials_find_spots_on_file": fs.get("n_spots"),
            "dials_find_spots_error": fs.get("error") or None,
        }
    tpr, tnr = tp / n_keep, tn / n_miss
    # The same frames if a frame dials.find_spots refuses (more than max_strong_pixel_fraction strong pixels: a
    # warning row here) were dropped instead, as a pipeline built on dials.find_spots would drop it.
    refused = {n for n, f in frames.items() if any("max_strong_pixel_fraction" in x for x in f["notes"])}
    kept_r = {n: f["call"] in ("hit", "maybe") and n not in refused for n, f in frames.items()}
    tpr_r = sum(kept_r[n] for n, f in frames.items() if f["label"] != "miss") / n_keep
    tnr_r = sum(not kept_r[n] and f["call"] != "error" for n, f in frames.items() if f["label"] == "miss") / n_miss
    res = {
        "tool": "diffscreen screen --method dials",
        "dials": summary.get("model", ""),
        "rule": "hit at >= 10 spots, maybe at 4-9, miss below (Ke et al. 2018 §3.3.1); keep = hit or maybe",
        "settings": "DIALS find_spots defaults (dispersion_extended, gain 1, min_spot_size Auto by detector name)",
        "balanced_accuracy": (tpr + tnr) / 2,
        "balanced_accuracy_refused_as_dropped": (tpr_r + tnr_r) / 2,
        "refused_by_dials_find_spots": sorted(refused),
        "kept_of_hit_or_maybe": f"{tp}/{n_keep}",
        "dropped_of_miss": f"{tn}/{n_miss}",
        "seconds": round(seconds, 1),
        "frames": frames,
    }
    a.out.parent.mkdir(parents=True, exist_ok=True)
    part = a.out.with_suffix(".json.part")
    part.write_text(json.dumps(res, indent=1, ensure_ascii=False) + "\n")
    part.replace(a.out)

    print("| frame | label | n_spots | strong px | call | keep right | dials.find_spots on the file |")
    print("|---|---|---|---|---|---|---|")
    for name, f in frames.items():
        ref_cell = f["dials_find_spots_on_file"] if f["dials_find_spots_on_file"] is not None else (
            "unread: " + (f["dials_find_spots_error"] or "")[:60])
        note = " (warning)" if any(n.startswith("warning:") for n in f["notes"]) else ""
        print(f"| {name} | {f['label']} | {f['n_spots']} | {f['n_strong_pixels']} | {f['call']}{note} | "
              f"{'yes' if f['correct_keep'] else 'no'} | {ref_cell} |")
    print(f"\nbalanced accuracy of the keep decision: {res['balanced_accuracy']:.3f} "
          f"(kept {tp}/{n_keep} hit-or-maybe, dropped {tn}/{n_miss} miss); {seconds:.0f} s")
    print(f"with the {len(refused)} frames dials.find_spots refuses (> {100 * 0.25:g} % strong pixels) dropped: "
          f"{res['balanced_accuracy_refused_as_dropped']:.3f}")


if __name__ == "__main__":
    main()
