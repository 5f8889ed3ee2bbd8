"""Single-core speed of the SFX frame simulator (diffscreen.simulate).

Measures ``Simulator(preset).frame(i)`` for frames 0..N-1 of the default class
mix (so hits, misses and no-beam frames appear in their default proportions),
with every BLAS/OpenMP pool limited to one thread, and the throughput of
``simulate_run`` (generation + bitshuffle-LZ4 CXI writing).  The target is at
least 5 frames/s at 1920 × 1920 on one core.

Usage::

    python bench/simulate_speed.py [--frames 100] [--run-frames 20] [--presets rayonix cspad]

Writes ``bench/results/simulate_speed.json``.
"""

from __future__ import annotations

import os

for _v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_v] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections import defaultdict  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402


def _limit_threads():
    try:
        from threadpoolctl import threadpool_limits

        return threadpool_limits(limits=1)
    except ImportError:  # env variables above already apply
        return None


def bench_preset(name: str, n_frames: int, run_frames: int, seed: int = 0) -> dict:
    from diffscreen.simulate import Simulator, simulate_run

    sim = Simulator(name, seed=seed)
    for i in range(2):  # warm-up: caches (masks, tables)
        sim.frame(10_000 + i)
    times = []
    by_kind = defaultdict(list)
    labels = defaultdict(int)
    cpu0 = time.process_time()
    wall0 = time.perf_counter()
    for i in range(n_frames):
        t = time.perf_counter()
        sf = sim.frame(i)
        dt = time.perf_counter() - t
        times.append(dt)
        by_kind[sf.kind].append(dt)
        labels[sf.label] += 1
    wall = time.perf_counter() - wall0
    cpu = time.process_time() - cpu0
    t = np.array(times)
    res = {
        "shape": list(sim.preset.shape),
        "frames": n_frames,
        "frames_per_s": n_frames / wall,
        "frames_per_cpu_s": n_frames / cpu,
        "ms_median": float(np.median(t) * 1e3),
        "ms_p90": float(np.percentile(t, 90) * 1e3),
        "ms_max": float(t.max() * 1e3),
        "ms_mean_by_kind": {k: float(np.mean(v) * 1e3) for k, v in sorted(by_kind.items())},
        "label_fractions": {k: v / n_frames for k, v in sorted(labels.items())},
    }
    if run_frames:
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            out = simulate_run(name, run_frames, Path(tmp) / "bench.cxi", seed=seed)
            dt = time.perf_counter() - t0
            res["simulate_run_frames_per_s"] = run_frames / dt
            res["simulate_run_MB_per_frame"] = out.stat().st_size / run_frames / 1e6
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=100)
    ap.add_argument("--run-frames", type=int, default=20)
    ap.add_argument("--presets", nargs="+", default=["rayonix", "rayonix_jet", "cspad"])
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "simulate_speed.json"))
    args = ap.parse_args(argv)
    _limit = _limit_threads()
    try:
        load = os.getloadavg()
    except OSError:
        load = None
    results = {
        "what": "Simulator(preset).frame(i), i = 0..N-1, default class mix, 1 thread",
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor(),
            "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
            "numpy": np.__version__,
            "loadavg_at_start": load,
        },
        "presets": {},
    }
    for name in args.presets:
        r = bench_preset(name, args.frames, args.run_frames)
        results["presets"][name] = r
        print(
            f"{name:12s} {r['frames_per_s']:6.2f} frames/s (wall)  {r['frames_per_cpu_s']:6.2f} frames/cpu-s  "
            f"median {r['ms_median']:.0f} ms  p90 {r['ms_p90']:.0f} ms  max {r['ms_max']:.0f} ms  "
            f"run+write {r.get('simulate_run_frames_per_s', float('nan')):.2f} frames/s"
        )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
