"""Row-wise decomposition (Xie et al. 2022 §3.4.2) and the 1-D CNN on it."""

import numpy as np
import pytest
import torch

from diffscreen.errors import BadFrameError
from diffscreen.models import get_model, load_model
from diffscreen.preprocess import PreprocessConfig
from diffscreen.preprocess.rwd import row_ranges


def test_row_ranges_is_max_minus_min_of_each_row():
    x = np.array(
        [[[0.0, 2.0, 1.0, -3.0], [5.0, 5.0, 5.0, 5.0], [-1.0, 3.0, 0.0, 0.5], [7.0, -7.0, 0.0, 1.0]],
         [[1.0, 1.0, 1.0, 2.0], [0.0, 0.0, 0.0, 0.0], [9.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, -2.5]]],
        np.float16,
    )
    d = row_ranges(x)
    assert d.shape == (2, 1, 4) and d.dtype == np.float32
    np.testing.assert_array_equal(d[:, 0], [[5.0, 0.0, 4.0, 14.0], [1.0, 0.0, 9.0, 2.5]])
    # (N, 1, S, S) input gives the same; rows are the second-to-last axis (not columns)
    np.testing.assert_array_equal(row_ranges(x[:, None].astype(np.float32)), d)
    assert not np.array_equal(row_ranges(np.swapaxes(x, 1, 2)), d)


@pytest.mark.parametrize("shape", [(4, 4), (2, 3, 4, 4), (1, 1, 1, 4, 4)])
def test_row_ranges_refuses_bad_shapes(shape):
    with pytest.raises(BadFrameError, match="RWD expects"):
        row_ranges(np.zeros(shape, np.float32))


def test_row_ranges_names_the_frame_with_nan():
    x = np.zeros((3, 8, 8), np.float32)
    x[2, 4, 4] = np.nan
    with pytest.raises(BadFrameError, match="frame 2"):
        row_ranges(x)


def test_rwd1d_on_frames_equals_rwd1d_on_row_vectors():
    torch.manual_seed(0)
    m = get_model("rwd1d", num_classes=3, input_size=64).eval()
    x = torch.randn(5, 1, 64, 64)
    with torch.no_grad():
        a = m(x)
        b = m(torch.from_numpy(row_ranges(x.numpy())))
        f = m.forward_features(x)
    torch.testing.assert_close(a, b)
    assert a.shape == (5, 3) and f.shape == (5, m.num_features)
    torch.testing.assert_close(m.classifier(f), a)  # .classifier is the final layer
    with pytest.raises(ValueError, match="expects"):
        m(torch.zeros(2, 64))


def _spot_frames(n_hit, n_miss, size=64, seed=0):
    """Toy preprocessed frames: noise; hits carry 12 bright 2x2 spots."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 1, (n_hit + n_miss, 1, size, size)).astype(np.float32)
    for k in range(n_hit):
        for _ in range(12):
            r, c = rng.integers(2, size - 2, 2)
            x[k, 0, r : r + 2, c : c + 2] += 12
    y = np.array([0] * n_hit + [2] * n_miss)
    return x, y


def test_rwd1d_trains_saves_loads_and_classifies(tmp_path):
    from diffscreen.models.inference import Classifier
    from diffscreen.train.loop import TrainConfig, train_on_arrays

    x, y = _spot_frames(40, 40, seed=1)
    xt, yt = _spot_frames(30, 30, seed=2)
    cfg = TrainConfig(arch="rwd1d", optimizer="adam", epochs=4, batches_per_epoch=8, batch_size=16,
                      lr_start=3e-3, lr_end=1e-3, seed=0)
    pre = PreprocessConfig(out_size=64, fallback_size=64, max_shift=0)
    res = train_on_arrays(x, y, tmp_path / "r.safetensors", class_names=("hit", "maybe", "miss"),
                          preprocess=pre, config=cfg, log=lambda s: None)
    b = load_model(res.model_path)
    assert b.arch == "rwd1d" and b.arch_kwargs["input_size"] == 64
    p = Classifier(b).predict_batch(xt)
    acc = float((p.argmax(1) == yt).mean())
    assert acc >= 0.9, acc


def test_train_and_screen_with_model_type_rwd1d_from_the_cli(tmp_path, capsys):
    import csv

    from toyrun import write_toy_run

    from diffscreen.cli import main

    run = str(write_toy_run(tmp_path / "run.cxi", ["hit", "miss", "maybe", "miss"] * 5, seed=3))
    model = tmp_path / "rwd.safetensors"
    assert main(["train", run, "--model-type", "rwd1d", "--out", str(model), "--epochs", "1",
                 "--batches-per-epoch", "2", "--batch-size", "8", "--input-size", "128", "--workers", "0"]) == 0
    b = load_model(model)
    assert b.arch == "rwd1d" and b.arch_kwargs["input_size"] == 128 and b.preprocess.out_size == 128
    assert b.meta["training"]["config"]["arch"] == "rwd1d"
    assert main(["screen", run, "--model", str(model), "--model-type", "rwd1d", "--out", str(tmp_path / "o"),
                 "--no-cxi"]) == 0
    rows = list(csv.DictReader((tmp_path / "o" / "scores.csv").open()))
    assert len(rows) == 20 and all(abs(sum(float(r[c]) for c in ("p_hit", "p_maybe", "p_miss")) - 1) < 1e-3
                                   for r in rows)
