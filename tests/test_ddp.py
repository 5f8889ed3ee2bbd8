"""Data-parallel training (DistributedDataParallel, gloo on CPU) launched with torchrun."""

import os
import subprocess
import sys

import numpy as np
import pytest

from diffscreen.errors import ConfigError
from diffscreen.models import load_model
from diffscreen.train import ClassBalancedSampler
from diffscreen.train.distributed import ShardedBatchSampler, launch_rank, torchrun_launched

from toyrun import write_toy_run


def test_shards_of_the_ranks_make_up_the_one_process_batches():
    labels = [0] * 50 + [1] * 7 + [2] * 100
    B, W = 12, 3
    base = ClassBalancedSampler(labels, 5 * B, max_shift=4, seed=9)
    base.set_epoch(2)
    whole = base.draw().reshape(5, B, 3)
    shards = [ShardedBatchSampler(ClassBalancedSampler(labels, 5 * B, max_shift=4, seed=9), B, r, W) for r in range(W)]
    for s in shards:
        s.set_epoch(2)
        assert len(s) == 5 * B // W
    parts = [s.draw().reshape(5, B // W, 3) for s in shards]
    np.testing.assert_array_equal(np.concatenate(parts, axis=1), whole)  # rank r: the r-th slice of each batch
    assert list(iter(shards[1]))[0] == tuple(int(v) for v in whole[0, B // W])
    with pytest.raises(ConfigError, match="multiple of the number of processes"):
        ShardedBatchSampler(base, 10, 0, 3)


def test_torchrun_detection(monkeypatch):
    for var in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    assert not torchrun_launched() and launch_rank() == 0
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    assert torchrun_launched() and launch_rank() == 1
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert not torchrun_launched() and launch_rank() == 0


@pytest.mark.slow
@pytest.mark.ci_slow
def test_torchrun_two_processes_train_one_model(tmp_path):
    """torchrun --nproc_per_node 2: one model file, world_size 2 recorded, identical parameters on both ranks."""
    rng = np.random.default_rng(0)
    labs = list(rng.choice(["hit", "maybe", "miss"], size=36, p=[0.3, 0.2, 0.5]))
    run = write_toy_run(tmp_path / "run.cxi", labs, size=192, seed=1)
    out = tmp_path / "model"
    out.mkdir()
    sums = tmp_path / "sums"
    sums.mkdir()
    env = dict(os.environ, DIFFSCREEN_DDP_CHECKSUM_DIR=str(sums), DIFFSCREEN_DDP_BACKEND="gloo", OMP_NUM_THREADS="1")
    for var in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(var, None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone",
           "-m", "diffscreen.cli", "train", str(run), "--out", str(out / "m.safetensors"), "--epochs", "2",
           "--batches-per-epoch", "3", "--batch-size", "8", "--input-size", "192", "--workers", "0", "--seed", "5",
           "--lr-start", "0.05", "--lr-end", "0.01"]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert r.stdout.count("model written to") == 1, r.stdout  # only rank 0 reports
    assert sorted(p.name for p in out.iterdir()) == ["m.safetensors"]  # one file, no checkpoint left
    bundle = load_model(out / "m.safetensors")
    training = bundle.meta["training"]
    assert training["distributed"] == {"world_size": 2, "backend": "gloo", "device": "cpu"}
    assert len(training["history"]) == 2 and training["config"]["batch_size"] == 8
    # the epoch totals are summed over the ranks: 3 batches of 8 frames each epoch
    acc = [h["train_accuracy"] * 24 for h in training["history"]]
    np.testing.assert_allclose(acc, np.round(acc), atol=1e-9)
    a, b = (sums / "rank0.sha256").read_text(), (sums / "rank1.sha256").read_text()
    assert len(a.strip()) == 64 and a == b  # gradients were averaged: the ranks hold the same parameters
