"""A 2,000-frame simulated run through ``replay`` → ``stream`` against ``screen`` on the same file (issue 14).

Usage::

    python bench/live_equivalence.py [--frames 2000] [--preset wide_hybrid75] [--model default] [--rate 20]

Simulates the run (CXI), screens it with ``diffscreen.screen.screen``, then
plays it with ``diffscreen replay`` (a separate process, stream v2 over
loopback, bitshuffle-LZ4) at ``--rate`` frames/s into
:func:`diffscreen.live.stream.stream` with the same model, and compares the
two scores.csv files frame for frame, every cell.  ``--rate`` should be one
that ``bench/live.py`` found sustained for the model.  Writes
``bench/results/live_equivalence.json``.
"""

from __future__ import annotations

import argparse
import csv
import json
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "live_equivalence.json"


def _rows(path: Path) -> dict:
    with open(path, newline="") as fh:
        return {int(r[1]): r[2:] for r in list(csv.reader(fh))[1:]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=2000)
    ap.add_argument("--preset", default="wide_hybrid75", help="simulator preset (wide_hybrid75: 1065 x 1030 px)")
    ap.add_argument("--model", default="default")
    ap.add_argument("--rate", type=float, default=20.0, help="replay rate, frames/s")
    ap.add_argument("--work", type=Path, default=None, help="folder for the run and outputs (default: a temporary one)")
    a = ap.parse_args(argv)

    from diffscreen.live.stream import stream
    from diffscreen.screen import screen
    from diffscreen.simulate import simulate_run

    work = a.work or Path(tempfile.mkdtemp(prefix="diffscreen-live-eq-"))
    work.mkdir(parents=True, exist_ok=True)
    run = work / f"{a.preset}_{a.frames}.cxi"
    if not run.exists():
        simulate_run(a.preset, a.frames, run, seed=14)
    t0 = time.perf_counter()
    screen([str(run)], work / "screened", model=a.model, resume=False)
    t_screen = time.perf_counter() - t0
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        endpoint = f"tcp://127.0.0.1:{s.getsockname()[1]}"
    sender = subprocess.Popen([sys.executable, "-m", "diffscreen", "replay", str(run), "--to", endpoint, "--rate",
                               str(a.rate), "--wait", "300"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                              text=True)
    t0 = time.perf_counter()
    live = stream(endpoint, work / "live", until_end=True, idle=300, model=a.model, fresh=True)
    t_live = time.perf_counter() - t0
    sent = sender.communicate(timeout=300)[0].strip().splitlines()
    want, got = _rows(work / "screened" / "scores.csv"), _rows(work / "live" / "scores.csv")
    same = sum(got.get(k) == v for k, v in want.items())
    differ = sorted(k for k, v in want.items() if got.get(k) != v)
    worst = max((max(abs(float(x) - float(y)) for x, y in zip(want[k][:3], got[k][:3])) for k in differ
                 if k in got), default=0.0)
    rec = {"preset": a.preset, "frames": a.frames, "model": a.model, "rate": a.rate,
           "sender": sent[-1] if sent else "", "received": live.frames_received, "screened": live.frames_screened,
           "dropped": live.frames_dropped, "failed": live.frames_failed, "latency_p50_s": live.latency_p50_s,
           "latency_p99_s": live.latency_p99_s, "rows_identical": same, "rows_differing": len(differ),
           "first_differing_frames": differ[:10], "largest_probability_difference": worst,
           "seconds_screen": round(t_screen, 1), "seconds_stream": round(t_live, 1)}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(rec, indent=1) + "\n")
    print(json.dumps(rec, indent=1))
    return 0 if same == a.frames and live.frames_dropped == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
