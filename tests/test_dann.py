"""DANN (Xie et al. 2022 §2.3.3, Fig. 4; Ganin et al. 2016): gradient reversal, adaptation on a toy shift."""

import numpy as np
import pytest
import torch
from torch import nn

from diffscreen.errors import ConfigError
from diffscreen.models import load_model, register_model
from diffscreen.preprocess import PreprocessConfig
from diffscreen.train.dann import GradientReversal, ganin_lambda, plot_dann_history, train_dann_on_arrays
from diffscreen.train.loop import TrainConfig

NAMES = ("hit", "maybe", "miss")
PRE = PreprocessConfig(out_size=16)


def test_gradient_reversal_is_identity_forward_and_flips_and_scales_the_gradient():
    x = torch.randn(4, 5, dtype=torch.float64, requires_grad=True)
    w = torch.randn(4, 5, dtype=torch.float64)
    grl = GradientReversal(0.7)
    y = grl(x)
    assert torch.equal(y, x)
    (y * w).sum().backward()
    torch.testing.assert_close(x.grad, -0.7 * w)
    # autograd check of the same rule: d(sum(w * grl(x)))/dx == -lambda * w for any x
    x2 = torch.randn(3, dtype=torch.float64, requires_grad=True)
    (g,) = torch.autograd.grad(GradientReversal(2.0)(x2).pow(2).sum(), x2)
    torch.testing.assert_close(g, -2.0 * 2 * x2.detach())


def test_ganin_schedule():
    assert ganin_lambda(0.0) == 0.0
    assert ganin_lambda(1.0, 0.5) == pytest.approx(0.5 * (2 / (1 + np.exp(-10)) - 1))
    assert ganin_lambda(0.1) == pytest.approx(2 / (1 + np.exp(-1)) - 1)


class ToyNet(nn.Module):
    """Two-block MLP with the KeCNN interface (.features blocks, .classifier, forward_features)."""

    def __init__(self, num_classes=3, input_size=8):
        super().__init__()
        self.features = nn.Sequential(nn.Sequential(nn.Linear(input_size, 32), nn.ReLU()),
                                      nn.Sequential(nn.Linear(32, 16), nn.ReLU()))
        self.num_features = 16
        self.classifier = nn.Linear(16, num_classes)

    def forward_features(self, x):
        return self.features(x.flatten(1))

    def forward(self, x):
        return self.classifier(self.forward_features(x))


register_model("test_toy_mlp")(lambda **kw: ToyNet(**kw))


def toy_domain(n, target: bool, seed):
    """Input (n, 1, 8): x0 = +-1 by class (hit 0 / miss 2); the target's x0 is offset by +2 (all look like
    source hits) and x1 (a pedestal, 0 in the source, 1 in the target) reveals the domain."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n) * 2
    x = rng.normal(0, 1, (n, 1, 8)).astype(np.float32)
    x[:, 0, 0] = np.where(y == 0, 1.0, -1.0) + rng.normal(0, 0.4, n) + (2.0 if target else 0.0)
    x[:, 0, 1] = float(target) + rng.normal(0, 0.1, n)
    return x, y


def test_dann_beats_source_only_on_a_shifted_target_and_writes_a_plain_classifier(tmp_path):
    xs, ys = toy_domain(400, False, 1)
    xt, yt = toy_domain(400, True, 2)  # yt only for scoring
    cfg = TrainConfig(arch="test_toy_mlp", optimizer="adam", epochs=20, batches_per_epoch=25, batch_size=32,
                      lr_start=3e-3, lr_end=3e-4, weight_decay=0.0, seed=0)
    acc = {}
    for name, lam in (("source_only", 0.0), ("dann", 1.0)):
        res = train_dann_on_arrays(xs, ys, xt, tmp_path / f"{name}.safetensors", class_names=NAMES, preprocess=PRE,
                                   config=cfg, lambda_max=lam, data_description={"target": "t.cxi"},
                                   log=lambda s: None)
        b = load_model(res.model_path)
        with torch.no_grad():
            acc[name] = float((b.model(torch.from_numpy(xt)).argmax(1).numpy() == yt).mean())
    assert acc["source_only"] < 0.6, acc  # the shift defeats the source-only model
    assert acc["dann"] > 0.9, acc
    h = res.history
    assert len(h) == 20 and {"label_loss", "domain_loss", "domain_accuracy", "lambda"} <= set(h[0])
    assert h[0]["lambda"] < 0.5 < h[-1]["lambda"] <= 1.0
    assert h[-1]["label_loss"] < h[0]["label_loss"]
    assert 0.3 < h[-1]["domain_accuracy"] < 0.75  # domain head fooled, not a perfect separator
    t = b.meta["training"]
    assert b.arch == "test_toy_mlp" and t["method"] == "dann" and t["n_target"] == 400
    assert t["data"] == {"target": "t.cxi"} and len(t["history"]) == 20
    png = plot_dann_history(h, tmp_path / "dann.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_dann_refuses_empty_target_and_mismatched_shapes(tmp_path):
    xs, ys = toy_domain(10, False, 1)
    with pytest.raises(ConfigError, match="x_target"):
        train_dann_on_arrays(xs, ys, np.zeros((0, 1, 8), np.float32), tmp_path / "m.safetensors",
                             class_names=NAMES, preprocess=PRE, log=lambda s: None)
    with pytest.raises(ConfigError, match="differ in shape"):
        train_dann_on_arrays(xs, ys, np.zeros((5, 1, 9), np.float32), tmp_path / "m.safetensors",
                             class_names=NAMES, preprocess=PRE, log=lambda s: None)
    assert not (tmp_path / "m.safetensors").exists()


# --------------------------------------------------------------------------- diffscreen adapt


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    from toyrun import write_toy_run

    d = tmp_path_factory.mktemp("adapt")
    rng = np.random.default_rng(0)
    src = write_toy_run(d / "source.cxi", list(rng.choice(["hit", "maybe", "miss"], 16)), seed=1)
    tgt = write_toy_run(d / "target.cxi", list(rng.choice(["hit", "miss"], 12)), seed=2)
    return str(src), str(tgt), d


def test_adapt_cli_writes_a_screenable_model_with_both_losses_and_the_plot(runs, tmp_path, capsys):
    from diffscreen.cli import main
    from diffscreen.models.inference import Classifier

    src, tgt, _ = runs
    out = tmp_path / "dann.safetensors"
    assert main(["adapt", "--source", src, "--target", tgt, "--out", str(out), "--model-type", "rwd1d",
                 "--input-size", "128", "--epochs", "2", "--batches-per-epoch", "2", "--batch-size", "4",
                 "--val-fraction", "0.25"]) == 0
    text = capsys.readouterr().out
    assert "domain loss" in text and "label loss" in text
    b = load_model(out)
    t = b.meta["training"]
    assert b.arch == "rwd1d" and t["method"] == "dann" and t["n_source"] == 12 and t["n_val"] == 4
    assert t["n_target"] == 12 and t["data"]["target"]["inputs"] == [tgt]
    assert len(t["history"]) == 2 and {"domain_accuracy", "domain_loss", "label_loss"} <= set(t["history"][0])
    assert all(np.isfinite(h["domain_loss"]) and h["domain_loss"] > 0 for h in t["history"])
    assert (tmp_path / "dann_dann.png").read_bytes()[:4] == b"\x89PNG"
    assert Classifier(b).predict_batch(np.zeros((2, 1, 128, 128), np.float32)).shape == (2, 3)
    assert (t["config"]["lr_start"], t["config"]["lr_end"]) == (1e-3, 1e-4)  # from random weights
    # from a trained model: its architecture and recipe, and ten times lower default rates
    out2 = tmp_path / "dann2.safetensors"
    assert main(["adapt", "--source", src, "--target", tgt, "--out", str(out2), "--init", str(out),
                 "--epochs", "1", "--batches-per-epoch", "1", "--batch-size", "4"]) == 0
    b2 = load_model(out2)
    t2 = b2.meta["training"]
    assert b2.arch == "rwd1d" and b2.preprocess == b.preprocess and t2["init_model"] == str(out)
    assert (t2["config"]["lr_start"], t2["config"]["lr_end"]) == (1e-4, 1e-5)


def test_adapt_cli_refuses_an_unlabelled_source_and_an_empty_target(runs, tmp_path, capsys):
    from diffscreen.cli import main

    src, tgt, d = runs
    other = tmp_path / "other.csv"
    other.write_text("file,frame,label\nelsewhere.cxi,0,hit\n")
    out = tmp_path / "m.safetensors"
    assert main(["adapt", "--source", src, "--labels", str(other), "--target", tgt, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ERROR: ") and "none of the 16 frames" in err and "has a label" in err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["adapt", "--source", src, "--target", str(empty), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ERROR: ") and "no readable frame files" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_new_commands_help_without_torch():
    import subprocess
    import sys

    code = ("import sys\nfrom diffscreen.cli import main\n"
            "for c in ('adapt', 'suggest-labels', 'train'):\n    assert main([c, '--help']) == 0\n"
            "assert 'torch' not in sys.modules and 'h5py' not in sys.modules\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "--init" in r.stdout and "--target" in r.stdout and "--n" in r.stdout
