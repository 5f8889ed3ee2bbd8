"""The outputs that must not change when the code is reorganised (issue 16).

``python tests/golden/outputs.py`` writes, for each command below, the
scores.csv it gives into ``tests/golden/``; ``tests/test_golden.py`` runs the
same commands and compares. Paths in the ``file`` column are reduced to the
file name, so the comparison does not depend on where the data lie.
"""

from __future__ import annotations

import csv
import io
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
SHARED = HERE.parents[2] / "shared" / "data"
REAL = ("real-frames", "real-frames-2")


def real_frames() -> list[str]:
    """Every frame file of the two shared real-frame folders (sorted), or [] when absent."""
    files = []
    for folder in REAL:
        d = SHARED / folder
        if d.is_dir():
            files += sorted(str(p) for p in d.iterdir() if p.is_file() and p.suffix not in (".tsv", ".md"))
    # MANIFEST.tsv: a bare HDF5 file is opened at its dataset ("open as FILE:/path")
    return [f + ":/data" if f.endswith(".h5") else f for f in files]


def commands(work: Path) -> dict[str, list[str]]:
    """name -> diffscreen arguments; the demo writes its run to ``work/demo``."""
    demo = work / "demo"
    run = str(demo / "run.cxi")
    cmds = {
        "demo": ["demo", "--frames", "24", "--out", str(demo)],
        "demo_fast": ["screen", run, "--model", "fast", "--threads", "1"],
        "demo_peakfinder8": ["screen", run, "--method", "peakfinder8", "--threads", "1"],
    }
    frames = real_frames()
    if frames:
        cmds["real_default"] = ["screen", *frames, "--threads", "1"]
        cmds["real_fast"] = ["screen", *frames, "--model", "fast", "--threads", "1"]
        cmds["real_peakfinder8"] = ["screen", *frames, "--method", "peakfinder8", "--threads", "1"]
    return cmds


def normalised_scores(path: Path) -> str:
    """scores.csv with the ``file`` column reduced to the file name."""
    rows = list(csv.reader(path.open(newline="")))
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    for i, row in enumerate(rows):
        if i and row:
            head, sep, dataset = row[0].partition(":/")
            row[0] = Path(head).name + sep + dataset
        w.writerow(row)
    return out.getvalue()


def run_all(work: Path) -> dict[str, str]:
    """Run every command (the demo first) and return name -> normalised scores.csv."""
    results = {}
    for name, args in commands(work).items():
        out = work / "demo" if name == "demo" else work / name
        if name != "demo":
            args = [*args, "--out", str(out)]
        proc = subprocess.run([sys.executable, "-m", "diffscreen", *args], capture_output=True, text=True)
        if proc.returncode not in (0, 1):
            raise RuntimeError(f"{name}: exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
        results[name] = normalised_scores(out / "scores.csv")
    return results


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        for name, text in run_all(Path(tmp)).items():
            (HERE / f"{name}.scores.csv").write_text(text)
            print(name, len(text.splitlines()) - 1, "rows")
