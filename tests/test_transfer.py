"""Transfer learning (Xie et al. 2022 §2.3.1, Fig. 3): freezing, two stages, model file."""

import numpy as np
import pytest
import torch

from diffscreen.errors import ConfigError
from diffscreen.models import get_model, load_model, save_model
from diffscreen.preprocess import PreprocessConfig
from diffscreen.train.loop import TrainConfig
from diffscreen.train.transfer import fit_arrays, freeze_base, transfer_on_arrays

NAMES = ("hit", "maybe", "miss")
PRE = PreprocessConfig(out_size=64, fallback_size=64, max_shift=0)


def spot_frames(n_hit, n_miss, *, size=64, amp=12.0, noise=1.0, seed=0):
    """Toy preprocessed frames: Gaussian noise; hits carry 12 bright 2x2 spots (label 0), misses none (2)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0, noise, (n_hit + n_miss, 1, size, size)).astype(np.float32)
    for k in range(n_hit):
        for _ in range(12):
            r, c = rng.integers(2, size - 2, 2)
            x[k, 0, r : r + 2, c : c + 2] += amp
    return x, np.array([0] * n_hit + [2] * n_miss)


def _snapshot(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _changed(before, model):
    return {k for k, v in model.state_dict().items() if not torch.equal(before[k], v)}


@pytest.mark.parametrize("arch,size", [("ke2018", 256), ("rwd1d", 64)])
def test_stage1_changes_only_the_head_and_stage2_only_the_top_blocks(arch, size):
    torch.manual_seed(0)
    model = get_model(arch, num_classes=3, input_size=size)
    x, y = spot_frames(8, 8, size=size, seed=1)
    cfg = TrainConfig(optimizer="sgd", epochs=1, batches_per_epoch=2, batch_size=8, lr_start=0.1, lr_end=0.1)
    names = freeze_base(model, 0)
    assert names == ["classifier.weight", "classifier.bias"]
    before = _snapshot(model)
    fit_arrays(model, x, y, cfg, log=lambda s: None)
    # parameters AND BatchNorm running statistics of the frozen base are bit-identical
    assert _changed(before, model) == {"classifier.weight", "classifier.bias"}

    n = len(model.features)
    trainable = freeze_base(model, 2)
    top = {f"features.{n - 2}", f"features.{n - 1}"}
    assert {t.rsplit(".", 2)[0] for t in trainable if t.startswith("features")} == top
    before = _snapshot(model)
    fit_arrays(model, x, y, cfg, log=lambda s: None)
    changed = _changed(before, model)
    blocks = {".".join(k.split(".")[:2]) for k in changed if k.startswith("features")}
    assert blocks == top  # exactly the unfrozen blocks (and their BN statistics) moved
    assert {"classifier.weight", "classifier.bias"} <= changed
    assert not any(k.startswith(("norm", f"features.{n - 3}.")) for k in changed)


def test_freeze_base_refuses_bad_requests():
    with pytest.raises(ConfigError, match="0..4"):
        freeze_base(get_model("ke2018", input_size=256), 5)
    with pytest.raises(ConfigError, match="no .features"):
        freeze_base(torch.nn.Linear(3, 3), 0)


def test_transfer_keeps_recipe_and_classes_records_stages_and_learns_target(tmp_path):
    from diffscreen.models.inference import Classifier

    torch.manual_seed(0)
    init = get_model("rwd1d", num_classes=3, input_size=64)
    pre = PreprocessConfig(out_size=64, fallback_size=64, max_shift=0, contrast="linear")
    init_path = save_model(tmp_path / "init.safetensors", init, arch="rwd1d",
                           arch_kwargs={"num_classes": 3, "input_size": 64}, preprocess=pre, class_names=NAMES,
                           training={"data": {"inputs": ["LN83.cxi"]}}, seed=5)
    x, y = spot_frames(30, 30, seed=2)
    xv, yv = spot_frames(10, 10, seed=3)
    xt, yt = spot_frames(40, 40, seed=4)
    s1 = TrainConfig(optimizer="adam", epochs=3, batches_per_epoch=6, batch_size=16, lr_start=1e-2, lr_end=3e-3)
    s2 = TrainConfig(optimizer="adam", epochs=2, batches_per_epoch=6, batch_size=16, lr_start=1e-3, lr_end=1e-3)
    res = transfer_on_arrays(init_path, x, y, tmp_path / "t.safetensors", x_val=xv, y_val=yv, frozen=s1,
                             unfrozen=s2, unfreeze_blocks=1, data_description={"labels": "few.csv"},
                             log=lambda s: None)
    assert [h["stage"] for h in res.history] == ["frozen"] * 3 + ["unfrozen"] * 2
    b = load_model(res.model_path)
    assert b.arch == "rwd1d" and b.class_names == NAMES and b.preprocess == pre
    t = b.meta["training"]
    assert t["method"] == "transfer" and t["init_model"]["path"] == str(init_path)
    assert t["init_model"]["data"] == {"inputs": ["LN83.cxi"]} and t["stages"]["unfreeze_blocks"] == 1
    assert t["stages"]["frozen"]["lr_start"] == 1e-2 and t["data"] == {"labels": "few.csv"}
    assert b.meta["metrics"]["best_stage"] == "unfrozen"
    acc = float((Classifier(b).predict_batch(xt).argmax(1) == yt).mean())
    assert acc >= 0.85, acc
    # the lower blocks are still the init model's
    torch.testing.assert_close(b.model.features[0][0].weight, init.features[0][0].weight)


def test_transfer_refuses_labels_outside_the_init_classes(tmp_path):
    init_path = save_model(tmp_path / "i.safetensors", get_model("rwd1d", input_size=64), arch="rwd1d",
                           arch_kwargs={"input_size": 64}, preprocess=PRE, class_names=NAMES)
    x, _ = spot_frames(2, 2)
    with pytest.raises(ConfigError, match="0..2"):
        transfer_on_arrays(init_path, x, [0, 1, 2, 3], tmp_path / "o.safetensors", log=lambda s: None)
    with pytest.raises(ConfigError, match="x_val is given without its labels"):
        transfer_on_arrays(init_path, x, [0, 1, 2, 2], tmp_path / "o.safetensors", x_val=x, log=lambda s: None)
    assert not (tmp_path / "o.safetensors").exists()


def test_batches_balance_the_keep_decision_not_the_three_classes():
    from diffscreen.train.engine import ClassBalancedSampler
    from diffscreen.train.transfer import balance_groups, validation_score

    y = np.array([0] * 60 + [1] * 10 + [2] * 130)  # few maybes, as in a small labelled set
    g = balance_groups(y, NAMES)
    np.testing.assert_array_equal(g, (y != 2).astype(int))
    np.testing.assert_array_equal(balance_groups(y, ("a", "b", "c")), y)
    drawn = y[ClassBalancedSampler(g, 6000, seed=0).draw()[:, 0]]
    frac = np.bincount(drawn, minlength=3) / len(drawn)
    assert abs(frac[2] - 0.5) < 0.03  # misses half the time (three-class balance would give 1/3)
    assert abs(frac[1] / (frac[0] + frac[1]) - 10 / 70) < 0.03  # hit : maybe in their natural ratio

    class Fixed(torch.nn.Module):  # logits = the input: validation_score sees chosen probabilities
        def forward(self, x):
            return x.flatten(1)

    logits = torch.log(torch.tensor([[0.3, 0.3, 0.4], [0.1, 0.1, 0.8], [0.05, 0.05, 0.9], [0.9, 0.05, 0.05]]))
    # frame 0: argmax miss, but P(hit) + P(maybe) = 0.6 > 0.4 -> kept; truth maybe -> correct keep
    score = validation_score(Fixed(), logits.numpy()[:, None, :], np.array([1, 2, 0, 0]), NAMES)
    assert score == pytest.approx((0.5 * (2 / 3 + 1.0)))  # kept 2 of 3 hit-or-maybe, rejected 1 of 1 miss
