"""Scale-out with MPI: ``mpirun -n 2 diffscreen screen`` gives a one-process run's outputs.

Needs ``mpirun`` (OpenMPI) and mpi4py; the tests skip without them unless
DIFFSCREEN_REQUIRE_MPI=1 (set by .ci/run), where they fail instead.
"""

import csv
import json
import os
import shutil
import subprocess
import sys
import textwrap

import h5py
import numpy as np
import pytest
import torch

from diffscreen.models import get_model, save_model
from diffscreen.preprocess import PreprocessConfig
from diffscreen.screen import screen
from diffscreen.screen.parallel import launch_rank, mpi_launched, rank_thread_share

from toyrun import write_toy_run

MPIRUN = shutil.which("mpirun")
try:
    import mpi4py  # noqa: F401

    HAVE_MPI4PY = True
except ImportError:
    HAVE_MPI4PY = False


def need_mpi():
    if MPIRUN and HAVE_MPI4PY:
        return
    what = "mpirun" if not MPIRUN else "mpi4py"
    if os.environ.get("DIFFSCREEN_REQUIRE_MPI") == "1":
        pytest.fail(f"{what} not found but DIFFSCREEN_REQUIRE_MPI=1")
    pytest.skip(f"{what} not installed")


def mpirun(n, args, env=None, **kw):
    """Run ``args`` as n MPI ranks (as root too, oversubscribing a small machine)."""
    env = dict(os.environ if env is None else env, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
               OMPI_MCA_btl_vader_single_copy_mechanism="none")  # containers forbid the ptrace-based copy
    for var in [v for v in env if v.startswith(("OMPI_COMM_WORLD", "PMI_", "PMIX_"))]:
        del env[var]  # never inherit a launcher's identity
    cmd = [MPIRUN, "-n", str(n), "--oversubscribe", "--bind-to", "none", *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, **kw)


LABELS = (["hit", "miss", "maybe", "miss", "miss", "hit", "miss", "miss"] * 6)[:44]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """Two toy runs (one with bad frames), a random-weight model, and the one-process screen."""
    d = tmp_path_factory.mktemp("mpi")
    runs = [str(write_toy_run(d / "a.cxi", LABELS, size=64, seed=3)), str(write_toy_run(d / "b.cxi", LABELS[:20], size=64, seed=4))]
    with h5py.File(d / "bad.h5", "w") as f:  # frames 1 and 3 unusable: errors must be reported identically
        data = np.random.default_rng(0).poisson(5, (5, 64, 64)).astype(np.float32)
        data[1, 3, 3] = np.nan
        data[3] = 0
        f["data"] = data
    runs.append(f"{d / 'bad.h5'}:/data")
    torch.manual_seed(7)
    m = get_model("ke2018", input_size=192).eval()
    model = save_model(d / "m.safetensors", m, arch="ke2018", arch_kwargs={"input_size": 192},
                       preprocess=PreprocessConfig(out_size=192, fallback_size=192), class_names=("hit", "maybe", "miss"))
    one = d / "one"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each MPI rank: the same arithmetic, to the last digit
    try:
        summary = screen(runs, one, model=model, batch_size=4, comm=None)
    finally:
        torch.set_num_threads(threads)
    assert 0 < summary.n_hit + summary.n_maybe < summary.n_frames - summary.n_error, "fixture model should split the frames"
    assert summary.n_error == 2
    return d, runs, model, one


def screen_args(runs, model, out, *extra):
    return [sys.executable, "-m", "diffscreen.cli", "screen", *runs, "--out", str(out), "--model", str(model),
            "--batch-size", "4", *extra]


def cxi_contents(path):
    got = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, obj: got.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None)
    return got


def assert_same_outputs(a, b):
    for name in ("scores.csv", "hits.lst", "errors.csv"):
        assert (a / name).read_text() == (b / name).read_text(), name
    ca, cb = cxi_contents(a / "hits.cxi"), cxi_contents(b / "hits.cxi")
    assert sorted(ca) == sorted(cb)
    assert len(ca["entry_1/data_1/data"]) > 0
    for k in ca:
        np.testing.assert_array_equal(ca[k], cb[k], err_msg=k)


def test_launcher_detection(monkeypatch):
    for var in ("OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_RANK", "PMI_SIZE", "PMI_RANK", "PMIX_RANK"):
        monkeypatch.delenv(var, raising=False)
    assert not mpi_launched() and launch_rank() == 0
    monkeypatch.setenv("OMPI_COMM_WORLD_SIZE", "1")
    assert not mpi_launched()  # mpirun -n 1: a plain run
    monkeypatch.setenv("OMPI_COMM_WORLD_SIZE", "4")
    monkeypatch.setenv("OMPI_COMM_WORLD_RANK", "3")
    assert mpi_launched() and launch_rank() == 3
    monkeypatch.delenv("OMPI_COMM_WORLD_SIZE")
    monkeypatch.delenv("OMPI_COMM_WORLD_RANK")
    monkeypatch.setenv("PMI_SIZE", "2")
    monkeypatch.setenv("PMI_RANK", "1")
    assert mpi_launched() and launch_rank() == 1


def test_rank_thread_share():
    ompi = {"OMPI_COMM_WORLD_SIZE": "2", "OMPI_COMM_WORLD_RANK": "0", "OMPI_COMM_WORLD_LOCAL_SIZE": "2"}
    assert rank_thread_share(env=ompi, cpus=2) == 1
    four = dict(ompi, OMPI_COMM_WORLD_SIZE="8", OMPI_COMM_WORLD_LOCAL_SIZE="4")  # 2 nodes of 4 ranks
    assert rank_thread_share(env=four, cpus=16) == 4
    assert rank_thread_share(env=four, cpus=3) == 1  # never below one thread
    assert rank_thread_share(5, env=four, cpus=16) == 5  # --threads wins
    assert rank_thread_share(env={}, cpus=16) == 16  # not under MPI: every usable CPU
    assert rank_thread_share(env={"OMPI_COMM_WORLD_SIZE": "1"}, cpus=16) == 16  # mpirun -n 1
    assert rank_thread_share(env={"PMI_SIZE": "4", "PMI_RANK": "1", "MPI_LOCALNRANKS": "2"}, cpus=16) == 8  # Hydra
    assert rank_thread_share(env={"PMIX_RANK": "0", "SLURM_NTASKS_PER_NODE": "8(x4)"}, cpus=32) == 4  # srun
    assert rank_thread_share(env={"PMI_SIZE": "4", "PMI_RANK": "0"}, cpus=16) == 4  # no local size: world size
    assert rank_thread_share() >= 1  # this process, its real environment


def test_mpirun_ranks_take_their_share_of_the_cores(tmp_path):
    """Unbound ranks (--bind-to none) each use cpus // 2 torch and BLAS threads, with no OMP_NUM_THREADS set."""
    need_mpi()
    code = textwrap.dedent("""
        import os, torch
        from threadpoolctl import threadpool_info
        from diffscreen.screen.parallel import limit_threads, rank_thread_share
        limit_threads(rank_thread_share())
        print("SHARE", len(os.sched_getaffinity(0)), torch.get_num_threads(),
              max(i["num_threads"] for i in threadpool_info()), flush=True)
    """)
    env = {k: v for k, v in os.environ.items() if not k.endswith("_NUM_THREADS")}
    r = mpirun(2, [sys.executable, "-c", code], env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    rows = [line.split()[1:] for line in r.stdout.splitlines() if line.startswith("SHARE")]
    assert len(rows) == 2, r.stdout
    for cpus, torch_threads, blas_threads in (map(int, row) for row in rows):
        assert torch_threads == max(1, cpus // 2), rows
        assert blas_threads <= max(1, cpus // 2), rows


def test_mpirun_two_ranks_gives_one_process_outputs(setup):
    need_mpi()
    d, runs, model, one = setup
    out = d / "two"
    r = mpirun(2, screen_args(runs, model, out))
    assert r.returncode == 1, r.stdout + r.stderr  # 1: finished, some frames failed (the bad ones)
    assert r.stdout.count("frames: 69 ") == 1, r.stdout  # only rank 0 reports
    assert_same_outputs(one, out)
    rec = json.loads((out / "summary.json").read_text())
    assert rec["mpi_ranks"] == 2
    assert len(rec["chunks_per_rank"]) == 2 and min(rec["chunks_per_rank"]) >= 1, rec  # both ranks screened
    assert not (out / ".partial").exists()


def test_failure_on_one_rank_stops_all_and_resume_completes(setup):
    """Rank 1 fails on its second chunk: every rank exits non-zero (no hang); a rerun resumes."""
    need_mpi()
    d, runs, model, one = setup
    out = d / "fail"
    driver = d / "driver.py"
    driver.write_text(textwrap.dedent("""
        import sys
        from diffscreen.cli import main
        from diffscreen.errors import BadFrameError
        from diffscreen.screen import runner
        from diffscreen.screen.parallel import launch_rank

        original, calls = runner._Chunk.run, [0]

        def failing(self, *a, **k):
            calls[0] += 1
            if launch_rank() == 1 and calls[0] == 2:
                raise BadFrameError("injected failure", path="x.h5", frame=0)
            return original(self, *a, **k)

        runner._Chunk.run = failing
        sys.exit(main(sys.argv[1:]))
    """))
    r = mpirun(2, [sys.executable, str(driver), *screen_args(runs, model, out)[3:]])
    assert r.returncode == 3, r.stdout + r.stderr  # a failed rank is a run error
    assert "ERROR: rank 1 failed: x.h5, frame 0: injected failure" in r.stderr
    assert "Traceback" not in r.stderr
    assert not (out / "scores.csv").exists()
    done = sorted((out / ".partial").glob("chunk_*.csv"))
    assert len(done) >= 1
    r = mpirun(2, screen_args(runs, model, out))
    assert r.returncode == 1, r.stdout + r.stderr
    rec = json.loads((out / "summary.json").read_text())
    assert rec["resumed_chunks"] == len(done)
    assert_same_outputs(one, out)
    with open(out / "scores.csv", newline="") as fh:
        assert sum(1 for _ in csv.DictReader(fh)) == 69


def test_every_rank_gets_its_first_chunk_without_waiting_for_rank_0s_first_batch(setup):
    """Rank 0 hands rank 1 its first chunk before it starts one itself.

    Rank 1 reaches the chunk loop 1 s after rank 0 (a slow model load, say),
    and rank 0's first chunk does not end until rank 1 has begun one.  If rank
    1 had to ask for its first chunk, the answer would wait for rank 0's first
    batch, which waits for rank 1: the run would stall for the full 60 s and
    fail here.
    """
    need_mpi()
    d, runs, model, one = setup
    out = d / "first"
    marker = d / "rank1_started"
    driver = d / "first_driver.py"
    driver.write_text(textwrap.dedent(f"""
        import sys, time
        from pathlib import Path
        from diffscreen.cli import main
        from diffscreen.screen import runner
        from diffscreen.screen.parallel import launch_rank

        MARKER = Path({str(marker)!r})
        original_init, original_run, calls = runner._Chunk.__init__, runner._Chunk.run, [0]

        def late_init(self, *a, **k):
            if launch_rank() == 1:
                time.sleep(1.0)
            original_init(self, *a, **k)

        def run(self, *a, **k):
            calls[0] += 1
            if calls[0] == 1 and launch_rank() == 1:
                MARKER.write_text("1")
            elif calls[0] == 1:
                t = time.monotonic()
                while not MARKER.exists():
                    if time.monotonic() - t > 60:
                        print("STALLED: rank 1 had no chunk while rank 0 did its first", flush=True)
                        break
                    time.sleep(0.01)
            return original_run(self, *a, **k)

        runner._Chunk.__init__, runner._Chunk.run = late_init, run
        sys.exit(main(sys.argv[1:]))
    """))
    r = mpirun(2, [sys.executable, str(driver), *screen_args(runs, model, out)[3:]])
    assert r.returncode == 1, r.stdout + r.stderr  # the bad frames, as in a plain run
    assert "STALLED" not in r.stdout, r.stdout
    assert marker.exists()
    assert_same_outputs(one, out)
