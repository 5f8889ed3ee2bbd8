"""Inference speed of the RWD 1-D CNN against the Ke 2-D CNN (Xie et al. 2022 §3.4.2).

Xie et al. report 11,123 vectors/s for their 1-D CNN on row-wise decomposed
frames against 126 frames/s for the 2-D CNN, on an NVIDIA A100.  This script
measures, on the CPU it runs on (or a CUDA device with ``--device cuda``):

* ``rwd1d_vectors``: the 1-D CNN on precomputed row-range vectors ``(N, 1, 720)``;
* ``rwd1d_frames``: the 1-D CNN end to end from preprocessed frames
  ``(N, 1, 720, 720)`` (row ranges computed inside the model);
* ``row_ranges_numpy``: :func:`diffscreen.preprocess.rwd.row_ranges` alone;
* ``ke2018_frames``: the Ke 2-D CNN on preprocessed frames.

Each at 1 and 2 torch threads, in eval mode under ``torch.inference_mode``,
on random inputs (speed does not depend on the values), after a warm-up
batch; the figure is the best of ``--repeats`` timed passes over
``--batches`` batches, in items per wall-clock second and (CPU) items per
CPU-second of this process, the single-core figure that holds even on a
shared machine when run with one thread.  Preprocessing from raw
frames (scaling, LCN) is the same for both networks and is left out.

Usage::

    python bench/rwd_speed.py [--batch-rwd 256] [--batch-2d 16] [--device cpu]

Writes ``bench/results/rwd_speed.json`` (one entry per device, other entries kept).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from diffscreen.models import get_model
from diffscreen.preprocess.rwd import row_ranges

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "results" / "rwd_speed.json"
S = 720


def _rate(fn, x, batches: int, repeats: int, sync) -> tuple[float, float]:
    """Best items per wall-clock second and best items per CPU-second of this process."""
    fn(x)  # warm-up
    sync()
    best, best_cpu = 0.0, 0.0
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        for _ in range(batches):
            fn(x)
        sync()
        n = batches * len(x)
        best = max(best, n / (time.perf_counter() - t0))
        best_cpu = max(best_cpu, n / max(1e-9, time.process_time() - c0))
    return best, best_cpu


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch-rwd", type=int, default=256, help="vectors / frames per batch for the 1-D CNN")
    ap.add_argument("--batch-2d", type=int, default=16, help="frames per batch for the 2-D CNN")
    ap.add_argument("--batches", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    a = ap.parse_args(argv)
    dev = torch.device(a.device)
    sync = (lambda: torch.cuda.synchronize()) if dev.type == "cuda" else (lambda: None)
    torch.manual_seed(0)
    rwd = get_model("rwd1d", input_size=S).eval().to(dev)
    ke = get_model("ke2018", input_size=S).eval().to(dev)
    rng = np.random.default_rng(0)
    frames_rwd = torch.from_numpy(rng.normal(size=(a.batch_rwd, 1, S, S)).astype(np.float32)).to(dev)
    vectors = torch.from_numpy(row_ranges(frames_rwd.cpu().numpy())).to(dev)
    frames_2d = frames_rwd[: a.batch_2d].contiguous()
    frames_np = frames_rwd[: a.batch_2d].cpu().numpy()
    results = {}
    for th in a.threads if dev.type == "cpu" else [torch.get_num_threads()]:
        torch.set_num_threads(th)
        with torch.inference_mode():
            m = {
                "rwd1d_vectors": _rate(rwd, vectors, a.batches * 4, a.repeats, sync),
                "rwd1d_frames": _rate(rwd, frames_rwd, a.batches, a.repeats, sync),
                "ke2018_frames": _rate(ke, frames_2d, a.batches, a.repeats, sync),
            }
        m["row_ranges_numpy_frames"] = _rate(row_ranges, frames_np, a.batches, a.repeats, lambda: None)
        r = {f"{k}_per_s": v[0] for k, v in m.items()}
        if dev.type == "cpu":
            r.update({f"{k}_per_cpu_s": v[1] for k, v in m.items()})
        r["speedup_vectors_vs_2d"] = r["rwd1d_vectors_per_s"] / r["ke2018_frames_per_s"]
        r["speedup_frames_vs_2d"] = r["rwd1d_frames_per_s"] / r["ke2018_frames_per_s"]
        results[f"threads_{th}"] = r
        print(f"{dev.type} {th} thread(s): " + ", ".join(f"{k} {v:,.1f}" for k, v in r.items()))
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else platform.processor() or platform.machine()
    entry = {
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "device": f"{dev.type}: {name}",
        "cpu_count": os.cpu_count(),
        "loadavg_at_start": list(os.getloadavg()),
        "torch": torch.__version__,
        "batch_rwd": a.batch_rwd,
        "batch_2d": a.batch_2d,
        "input": f"(N, 1, {S}, {S}) preprocessed frames / (N, 1, {S}) row vectors, float32",
        "paper": {"rwd1d_vectors_per_s": 11123, "ke2018_frames_per_s": 126, "device": "NVIDIA A100 40 GB",
                  "source": "Xie et al. 2022 sec. 3.4.2"},
        "results": results,
    }
    data = json.loads(OUT.read_text()) if OUT.exists() else {"what": __doc__.splitlines()[0], "runs": {}}
    data["runs"][dev.type] = entry
    from diffscreen.io.atomic import atomic_write_text

    atomic_write_text(OUT, json.dumps(data, indent=2) + "\n")
    print(f"written {OUT}")
    return entry


if __name__ == "__main__":
    main()
