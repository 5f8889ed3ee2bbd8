"""DIALS ``dials.find_spots`` with its default settings on the shared real frames (issue 13's peer column).

Usage::

    python bench/dials/real_frames.py [--shared ../shared/data] [--out bench/results/dials_real_frames.json]

Needs Debian's ``python3-dials`` (``dials.import``, ``dials.find_spots`` on the
PATH).  Each frame is imported on its own (compressed files are decompressed
to a temporary folder first; HDF5 datasets are written as a one-frame CBF by
fabio, as dxtbx does not read a bare dataset), spots are found with DIALS'
defaults (dispersion threshold, the gain dxtbx takes from the format) and
counted.  A frame is kept at >= 4 spots (Ke §3.3.1: 4-9 maybe, >= 10 hit),
a fixed rule, not tuned on these frames.  Frames dxtbx cannot read are
reported as such.
"""

from __future__ import annotations

import argparse
import bz2
import csv
import gzip
import json
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _numbered(name: str) -> str:
    """dxtbx needs a frame number in the name to build its template: ``adsc.img`` -> ``adsc_0001.img``."""
    stem, dot, ext = name.rpartition(".")
    if not dot:
        stem, ext = name, ""
    if re.search(r"\d+$", stem):
        return name
    return f"{stem}_0001" + (f".{ext}" if dot else "")


def count_spots(path: Path, work: Path) -> tuple[int | None, str]:
    """Spots ``dials.find_spots`` finds with default settings, or None and the reason."""
    name = path.name
    src = path
    if name.endswith((".bz2", ".gz")):
        opener = bz2.open if name.endswith(".bz2") else gzip.open
        src = work / _numbered(name.rsplit(".", 1)[0])
        with opener(path, "rb") as fi, open(src, "wb") as fo:
            shutil.copyfileobj(fi, fo)
    if src.suffix == ".h5":  # a bare HDF5 dataset: write it as a CBF that dxtbx reads
        import fabio
        import h5py
        import numpy as np

        with h5py.File(src, "r") as f:
            data = np.asarray(f["data"])
        cbf = work / (src.stem + ".cbf")
        fabio.cbfimage.CbfImage(data=np.rint(data).astype(np.int32)).write(str(cbf))
        src = cbf
    imp = subprocess.run(["dials.import", str(src)], cwd=work, capture_output=True, text=True)
    if imp.returncode != 0 or not (work / "imported.expt").exists():
        tail = " ".join((imp.stdout + imp.stderr).split()[-12:])
        return None, f"dials.import failed: {tail}"
    fs = subprocess.run(["dials.find_spots", "imported.expt", "nproc=1"], cwd=work, capture_output=True, text=True)
    m = re.search(r"Saved (\d+) reflections", fs.stdout)
    if fs.returncode != 0 or not m:
        return None, "dials.find_spots failed: " + " ".join((fs.stdout + fs.stderr).split()[-12:])
    return int(m.group(1)), ""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shared", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "dials_real_frames.json")
    a = ap.parse_args()
    res = {"tool": "dials.find_spots (defaults)", "version": "", "rule": "keep at >= 4 spots", "frames": {}}
    v = subprocess.run(["dials.version"], capture_output=True, text=True)
    res["version"] = " ".join(v.stdout.split()[:3])
    for folder in ("real-frames", "real-frames-2"):
        for r in csv.DictReader(open(a.shared / folder / "MANIFEST.tsv"), delimiter="\t"):
            with tempfile.TemporaryDirectory() as tmp:
                n, why = count_spots(a.shared / folder / r["file"], Path(tmp))
            res["frames"][f"{folder}/{r['file']}"] = {"label": r["label"], "n_spots": n, "error": why}
            print(folder, r["file"], r["label"], n, why, flush=True)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = a.out.with_suffix(".json.part")
    tmp.write_text(json.dumps(res, indent=1))
    tmp.replace(a.out)


if __name__ == "__main__":
    main()
