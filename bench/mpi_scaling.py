"""``mpirun -n 2 diffscreen screen RUN`` against one process, as a user types them (issue 13).

Issue 13: "Scale-out works with no extra settings.  ``mpirun -n 2
diffscreen screen RUN`` must be at least 1.7× one process on 2 cores."
Both commands run here exactly as typed, with no thread settings and no
``--model`` (the bundled default), on the run ``bench/throughput.py``
screens for what ships: an uncompressed CXI file of 1920 × 1920 LN84 frames
simulated at a 5 % hit rate (:func:`throughput.make_shipped_run`).  Each rank
takes its share of the cores itself (``screen.parallel.rank_thread_share``).

For each repeat, in alternating order (one process first on even repeats),
both commands run on a fresh output folder; the file is read once beforehand
so both find it in the page cache.  Two rates each:

* ``wall``: frames / wall-clock seconds of the whole command (Python start,
  imports, model load, screening, merging), what a user waits for;
* ``screening``: the ``frames_per_s`` the command's own summary.json records
  (from the start of screening to the end of the merge).

The ratio (two ranks / one process) of each repeat, and the mean with a 95 %
Student-t interval over the repeats.  The two scores.csv must be identical.

    python bench/mpi_scaling.py [--frames 400] [--repeats 3] [--files 1]

``--files K`` screens a run of K files, K links to the one simulated file
(``run_000.cxi`` ...), as a run a DAQ splits into files of ``--frames``
frames each: a run K times as long, without K times the disk and page cache.

Writes bench/results/mpi_scaling.json.  Needs ``mpirun`` (OpenMPI) and mpi4py.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from throughput import make_shipped_run  # noqa: E402

from diffscreen.evaluate.metrics import interval_record  # noqa: E402

OUT = Path(__file__).resolve().parent / "results" / "mpi_scaling.json"
GOAL = 1.7


def _into_page_cache(path: Path, block: int = 1 << 26) -> None:
    """Read ``path`` once, block by block, so both commands find it in the page cache.

    Not ``read_bytes()``: holding a 12 GB run in this process's memory as well
    would push half of it out of the page cache again on a 24 GB machine.
    """
    with open(path, "rb", buffering=0) as fh:
        while fh.read(block):
            pass


def _command(ranks: int, run: list[str], out: Path) -> list[str]:
    cmd = [sys.executable, "-m", "diffscreen", "screen", *run, "--out", str(out)]
    if ranks == 1:
        return cmd
    return ["mpirun", "--allow-run-as-root", "--oversubscribe", "-n", str(ranks), *cmd]


def _timed(ranks: int, run: list[str], out: Path, n: int) -> dict:
    t = time.perf_counter()
    p = subprocess.run(_command(ranks, run, out), capture_output=True, text=True)
    wall = time.perf_counter() - t
    if p.returncode != 0:
        raise SystemExit(f"{ranks} rank(s) failed (exit {p.returncode}): {p.stderr.strip()[-400:]}")
    summary = json.loads((out / "summary.json").read_text())
    return {"ranks": ranks, "wall_s": wall, "wall_frames_per_s": n / wall,
            "screening_frames_per_s": summary.get("frames_per_s"), "screening_s": summary.get("seconds"),
            "load_before": os.getloadavg()[0]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--frames", type=int, default=400)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--files", type=int, default=1, help="the run's files: links to the one simulated file")
    ap.add_argument("--json", type=Path, default=OUT)
    a = ap.parse_args(argv)
    if shutil.which("mpirun") is None:
        raise SystemExit("mpirun not found (Debian: apt-get install openmpi-bin)")
    with tempfile.TemporaryDirectory(prefix="diffscreen-mpi-") as d:
        work = Path(d)
        run = make_shipped_run(work, a.frames)
        _into_page_cache(Path(run["path"]))
        files = [run["path"]]
        if a.files > 1:
            files = [str(work / f"run_{i:03d}.cxi") for i in range(a.files)]
            for f in files:
                os.symlink(run["path"], f)
        n = a.frames * len(files)
        reps = []
        for k in range(a.repeats):
            order = (1, 2) if k % 2 == 0 else (2, 1)
            got = {r: _timed(r, files, work / f"out_{r}_{k}", n) for r in order}
            one, two = (work / f"out_{r}_{k}" / "scores.csv" for r in (1, 2))
            same = one.read_bytes() == two.read_bytes()
            rec = {"one": got[1], "two": got[2], "scores_identical": same,
                   "ratio_wall": got[2]["wall_frames_per_s"] / got[1]["wall_frames_per_s"],
                   "ratio_screening": got[2]["screening_frames_per_s"] / got[1]["screening_frames_per_s"]}
            print(json.dumps(rec), flush=True)
            reps.append(rec)
    result = {"machine": f"{platform.machine()}, {len(os.sched_getaffinity(0))} cores, Python "
                         f"{platform.python_version()}",
              "run": {k: v for k, v in run.items() if k != "path"}, "frames": n, "files": len(files),
              "frames_per_file": a.frames,
              "commands": [" ".join(_command(1, ["RUN"], Path("OUT"))[2:]),
                           " ".join(_command(2, ["RUN"], Path("OUT"))[:5] + ["diffscreen", "screen", "RUN", "--out",
                                                                             "OUT"])],
              "repeats": reps, "goal_ratio": GOAL,
              "ratio_wall": interval_record([r["ratio_wall"] for r in reps]),
              "ratio_screening": interval_record([r["ratio_screening"] for r in reps]),
              "one_wall_frames_per_s": interval_record([r["one"]["wall_frames_per_s"] for r in reps]),
              "two_wall_frames_per_s": interval_record([r["two"]["wall_frames_per_s"] for r in reps]),
              "scores_identical": all(r["scores_identical"] for r in reps)}
    a.json.parent.mkdir(parents=True, exist_ok=True)
    tmp = a.json.with_suffix(".json.part")
    tmp.write_text(json.dumps(result, indent=2))
    tmp.replace(a.json)
    for key in ("ratio_wall", "ratio_screening"):
        x = result[key]
        print(f"{key}: {x['mean']:.2f} (95 % {x['ci95'][0]:.2f}-{x['ci95'][1]:.2f}); goal >= {GOAL}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
