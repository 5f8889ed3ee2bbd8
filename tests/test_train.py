"""Training: schedule, balanced sampling, learning a separable toy task, resuming."""

import numpy as np
import pytest
import torch

from diffscreen.models import load_model
from diffscreen.preprocess import PreprocessConfig
from diffscreen.train import (
    ClassBalancedSampler,
    Sample,
    TrainConfig,
    collect_samples,
    learning_rate,
    split_samples,
    train_model,
)
from diffscreen.errors import ConfigError

from toyrun import write_toy_run


def test_learning_rate_schedule_is_fv5080():
    cfg = TrainConfig(epochs=121)
    assert learning_rate(1, cfg) == pytest.approx(0.1)
    assert learning_rate(61, cfg) == pytest.approx(10**-2.5)
    assert learning_rate(121, cfg) == pytest.approx(1e-4)
    for e in (1, 30, 77):  # 10^-(1 + 3(e-1)/(E-1))
        assert learning_rate(e, cfg) == pytest.approx(10 ** -(1 + 3 * (e - 1) / 120))


def test_balanced_sampler_equalises_classes_and_is_reproducible():
    labels = [2] * 900 + [0] * 80 + [1] * 20
    s = ClassBalancedSampler(labels, 6000, max_shift=120, seed=4)
    s.set_epoch(3)
    a = s.draw()
    counts = np.bincount(np.asarray(labels)[a[:, 0]], minlength=3)
    assert all(abs(c - 2000) < 150 for c in counts), counts
    assert np.abs(a[:, 1:]).max() <= 120 and a[:, 1:].std() > 50
    np.testing.assert_array_equal(a, s.draw())
    s.set_epoch(4)
    assert not np.array_equal(a, s.draw())


def test_split_in_file_order_per_file_and_random():
    samples = [Sample("a", i, 0) for i in range(10)] + [Sample("b", i, 1) for i in range(20)]
    tr, va, te = split_samples(samples)
    assert [(s.source, s.index) for s in tr] == [("a", i) for i in range(5)] + [("b", i) for i in range(10)]
    assert [(s.source, s.index) for s in va] == [("a", 5), ("a", 6)] + [("b", i) for i in range(10, 14)]
    assert [(s.source, s.index) for s in te] == [("a", 7), ("a", 8), ("a", 9)] + [("b", i) for i in range(14, 20)]
    tr2, va2, te2 = split_samples(samples, mode="random", seed=1)
    assert len(tr2) == 15 and len(va2) == 6 and len(te2) == 9 and tr2 != tr
    assert set(tr2) | set(va2) | set(te2) == set(samples)
    with pytest.raises(ConfigError):
        split_samples(samples, (0.5, 0.5, 0.5))


@pytest.fixture(scope="module")
def toy_runs(tmp_path_factory):
    d = tmp_path_factory.mktemp("toy")
    rng = np.random.default_rng(0)
    labs = list(rng.choice(["hit", "maybe", "miss"], size=60, p=[0.3, 0.2, 0.5]))
    return [str(write_toy_run(d / "a.cxi", labs[:30], seed=1)), str(write_toy_run(d / "b.cxi", labs[30:], seed=2))]


def _cfg(**kw):
    base = dict(epochs=6, batches_per_epoch=4, batch_size=16, lr_start=0.05, lr_end=0.005, workers=0, seed=3)
    base.update(kw)
    return TrainConfig(**base)


PRE = PreprocessConfig(out_size=256, fallback_size=256, max_shift=16)


def test_collect_samples_reads_labels_from_cxi_runs(toy_runs):
    samples, info = collect_samples(toy_runs)
    assert info["n_frames"] == 60 and len(samples) == 60
    assert samples[0].source == toy_runs[0] and samples[30].source == toy_runs[1]
    assert sum(info["counts"].values()) == 60


def test_training_learns_separable_task_and_records_metadata(toy_runs, tmp_path):
    samples, info = collect_samples(toy_runs)
    tr, va, te = split_samples(samples, mode="random", seed=0)
    res = train_model(tr, va, tmp_path / "m.safetensors", config=_cfg(), preprocess=PRE, test=te,
                      data_description=info, log=lambda s: None)
    assert res.test_report.metrics["accuracy"] >= 0.9, res.test_report.to_markdown()
    b = load_model(res.model_path)
    assert b.meta["training"]["data"]["counts"] == info["counts"]
    assert b.meta["seed"] == 3 and len(b.meta["training"]["history"]) == 6
    assert b.meta["metrics"]["best_epoch"] == res.best_epoch
    assert not (tmp_path / "m.safetensors.ckpt").exists()


def test_interrupted_training_resumes_to_the_same_model(toy_runs, tmp_path):
    samples, _ = collect_samples(toy_runs)
    tr, va, _ = split_samples(samples)
    ref = train_model(tr, va, tmp_path / "ref.safetensors", config=_cfg(epochs=3), preprocess=PRE, log=lambda s: None)

    def crash(epoch, batch, n):
        if epoch == 3 and batch == 2:
            raise KeyboardInterrupt

    out = tmp_path / "resumed.safetensors"
    with pytest.raises(KeyboardInterrupt):
        train_model(tr, va, out, config=_cfg(epochs=3), preprocess=PRE, progress=crash, log=lambda s: None)
    assert (tmp_path / "resumed.safetensors.ckpt").exists() and not out.exists()
    lines = []
    res = train_model(tr, va, out, config=_cfg(epochs=3), preprocess=PRE, log=lines.append)
    assert "resuming" in lines[0] and len(res.history) == 3
    a, b = load_model(ref.model_path).model.state_dict(), load_model(out).model.state_dict()
    for k in a:
        torch.testing.assert_close(a[k], b[k])


def _raise_at(epoch):
    def f(e, b, n):
        if e == epoch:
            raise KeyboardInterrupt

    return f


def test_checkpoint_of_another_run_is_refused(toy_runs, tmp_path):
    samples, _ = collect_samples(toy_runs)
    tr, va, _ = split_samples(samples)
    out = tmp_path / "m.safetensors"
    with pytest.raises(KeyboardInterrupt):
        train_model(tr, va, out, config=_cfg(epochs=3), preprocess=PRE, progress=_raise_at(2), log=lambda s: None)
    with pytest.raises(ConfigError, match="different training run"):
        train_model(tr, va, out, config=_cfg(epochs=3, seed=99), preprocess=PRE, log=lambda s: None)


def test_cxidb76_run_with_expert_annotation_trains_from_the_cli(tmp_path, capsys):
    """A user with a CXIDB-76 run and its expert_annotation.txt can train on them."""
    from test_io_hdf5 import _write_cxidb76
    from toyrun import toy_frame

    from diffscreen.cli import main
    from diffscreen.errors import LabelError

    rng = np.random.default_rng(5)
    labels = ["hit", "miss", "miss", "maybe", "hit", "miss", "hit", "miss"]
    imgs = np.stack([toy_frame(lab, rng) for lab in labels])
    run = tmp_path / "r0095_2000.h5"
    _write_cxidb76(run, [imgs[:5], imgs[5:]], active_areas=[0, 0, 256, 256])
    ann = tmp_path / "expert_annotation.txt"
    ann.write_text("".join(f"r0095_2000.h5 [{i + 1}] {lab.upper()}\n" for i, lab in enumerate(labels)))
    samples, info = collect_samples([str(run)], [str(ann)])
    assert [s.label for s in samples] == [("hit", "maybe", "miss").index(lab) for lab in labels]
    assert info["counts"] == {"hit": 3, "maybe": 1, "miss": 4}

    bad = tmp_path / "bad_annotation.txt"
    bad.write_text(ann.read_text() + "r0095_2000.h5 [9] HIT\n")
    with pytest.raises(LabelError, match="r0095_2000.h5") as exc:
        collect_samples([str(run)], [str(bad)])
    assert "8" in str(exc.value)  # frame 9 (1-based) = index 8 does not exist

    out = tmp_path / "m.safetensors"
    code = main(["train", str(run), "--labels", str(ann), "--out", str(out), "--epochs", "1",
                 "--batches-per-epoch", "1", "--batch-size", "4", "--input-size", "256", "--workers", "0"])
    assert code == 0, capsys.readouterr().err
    meta = load_model(out).meta
    assert meta["training"]["data"]["label_files"] == [str(ann)]
    assert meta["training"]["data"]["counts"] == {"hit": 3, "maybe": 1, "miss": 4}
