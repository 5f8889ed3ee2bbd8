"""Memory stays bounded: screening more frames does not raise the peak RSS.

The screen runs in a fresh process (bench/memory.py ``probe``) that samples
its RSS every 100 frames.  The mean RSS over the last quarter of the frames
may exceed that over the first quarter by less than BOUND_MB, and the final
merge into scores.csv / hits.lst / hits.cxi may raise the peak RSS by less
than BOUND_MB.  Something kept per frame for the whole run (a frame, a row of
scores, ...) makes the RSS grow with the run: the self-check below keeps 32 kB
per frame (about 48 MB between the quarters) and must exceed the bound.
"""

import importlib.util
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench" / "memory.py"
#: allowed growth of peak RSS over the last three quarters of the run, MB
BOUND_MB = 16.0


def _bench():
    spec = importlib.util.spec_from_file_location("bench_memory", BENCH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _probe(tmp_path, n_frames, leak_kb=0):
    """Screen an n-frame HDF5 stack of 64x64 frames with a tiny model in a fresh process; its RSS record."""
    bench = _bench()
    rng = np.random.default_rng(11)
    data = rng.poisson(8, (n_frames, 64, 64)).astype(np.int32)
    spots = rng.random(n_frames) < 0.3  # some frames with bright spots, so some are kept
    for k in np.flatnonzero(spots):
        ys, xs = rng.integers(4, 60, (2, 30))
        for y, x in zip(ys, xs):  # 2 × 2 spots: the spot gate needs 3 connected pixels
            data[k, y:y + 2, x:x + 2] += 500
    with h5py.File(tmp_path / "run.h5", "w") as f:
        f.create_dataset("data", data=data, chunks=(1, 64, 64))
    model = bench._tiny_model(tmp_path / "tiny.safetensors")
    js = tmp_path / "rec.json"
    subprocess.run([sys.executable, str(BENCH), "probe", f"{tmp_path / 'run.h5'}:/data", "--model", str(model),
                    "--out", str(tmp_path / "out"), "--every", str(n_frames // 20), "--leak-kb", str(leak_kb),
                    "--json", str(js)], check=True, timeout=600)
    import json

    rec = json.loads(js.read_text())
    assert rec["frames"] == n_frames and 0 < rec["kept"] < n_frames
    assert len((tmp_path / "out" / "scores.csv").read_text().splitlines()) == n_frames + 1
    return rec, bench.growth(rec)


@pytest.mark.slow
@pytest.mark.ci_slow
def test_screen_memory_does_not_grow_with_the_run(tmp_path):
    rec, g = _probe(tmp_path, 2000)
    assert len(rec["samples"]) == 20
    assert g["growth_mb"] < BOUND_MB, g
    assert g["merge_growth_mb"] < BOUND_MB, g


@pytest.mark.slow
def test_memory_probe_sees_a_per_frame_leak(tmp_path):
    """The measurement can fail: 32 kB kept per frame (48 MB over the last 1500 frames) exceeds the bound."""
    rec, g = _probe(tmp_path, 2000, leak_kb=32)
    assert g["growth_mb"] > BOUND_MB, g


def test_work_list_is_one_entry_per_file_and_indexes_like_a_list():
    from diffscreen.screen.runner import _WorkList

    files = [("a.h5", 3), ("b.cxi", 1), ("c.h5", 4)]
    flat = [(f, i) for f, n in files for i in range(n)]
    wl = _WorkList(files)
    assert len(wl) == len(flat) and list(wl) == flat
    for sl in (slice(0, 3), slice(2, 6), slice(3, 4), slice(5, 100), slice(8, 9)):
        assert wl[sl] == flat[sl]
    assert wl[-1] == ("c.h5", 3) and wl[3] == ("b.cxi", 0)
    with pytest.raises(IndexError):
        wl[8]
    huge = _WorkList([("run.h5", 10**9), ("next.h5", 5)])  # a billion frames: two entries in memory
    assert len(huge) == 10**9 + 5 and huge[10**9 - 1 : 10**9 + 2] == [("run.h5", 10**9 - 1), ("next.h5", 0), ("next.h5", 1)]
