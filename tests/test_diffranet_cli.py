"""The DiffraNet 5-class task from the command line (issue 17 item 5): simulate, train AlexNet, screen."""

import csv
import json

import numpy as np
import pytest

from diffscreen.cli import main
from diffscreen.models import read_model_metadata
from diffscreen.models.diffranet import DIFFRANET_CLASSES


@pytest.fixture(scope="module")
def run_and_model(tmp_path_factory):
    """A small labelled DiffraNet run and a tiny AlexNet trained on it for one epoch, through the CLI."""
    d = tmp_path_factory.mktemp("diffranet")
    run, model = d / "runs.cxi", d / "m.safetensors"
    assert main(["simulate", "--task", "diffranet", "--out", str(run), "-n", "16", "--seed", "3",
                 "--preset", "wide_hybrid75"]) == 0
    assert main(["train", "--task", "diffranet", "--model-type", "alexnet", str(run), "--out", str(model),
                 "--epochs", "1", "--input-size", "64", "--width", "4", "--batch-size", "8",
                 "--device", "cpu"]) == 0
    return run, model


def test_simulated_run_holds_the_five_class_labels(run_and_model):
    from diffscreen.io.labels import read_labels

    run, _ = run_and_model
    recs = read_labels(run, classes=DIFFRANET_CLASSES)
    assert len(recs) == 16 and {r.label for r in recs} <= set(DIFFRANET_CLASSES)
    assert len({r.label for r in recs}) >= 3  # the class mix of diffranet_kinds, not one class
    from diffscreen.errors import LabelError

    with pytest.raises(LabelError):  # as hit/maybe/miss labels they are refused, not misread
        read_labels(run)


def test_train_writes_alexnet_with_the_five_classes(run_and_model):
    _, model = run_and_model
    meta = read_model_metadata(model)
    assert meta["arch"] == "alexnet"
    assert meta["class_names"] == list(DIFFRANET_CLASSES)
    assert meta["arch_kwargs"]["num_classes"] == 5 and meta["arch_kwargs"]["input_size"] == 64
    assert meta["arch_kwargs"]["channels"] == [4, 12, 24, 16, 16]
    assert meta["preprocess"]["out_size"] == 64
    assert meta["training"]["device"] == "cpu"


def test_screen_writes_five_probabilities_summing_to_one(run_and_model, tmp_path):
    run, model = run_and_model
    out = tmp_path / "out"
    assert main(["screen", "--task", "diffranet", str(run), "--model", str(model), "--out", str(out),
                 "--device", "cpu"]) == 0
    with open(out / "scores.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    cols = [f"p_{c}" for c in DIFFRANET_CLASSES]
    assert list(rows[0]) == ["file", "frame", *cols, "label"]
    assert len(rows) == 16
    p = np.array([[float(r[c]) for c in cols] for r in rows])
    np.testing.assert_allclose(p.sum(1), 1.0, atol=1e-5)
    assert [r["label"] for r in rows] == [DIFFRANET_CLASSES[k] for k in p.argmax(1)]
    kept = {int(line.split("//")[1]) for line in (out / "hits.lst").read_text().split("\n") if line.strip()}
    assert kept == {int(r["frame"]) for r in rows if r["label"] in ("weak", "good", "strong")}
    summary = json.loads((out / "summary.json").read_text())
    assert summary["task"] == "diffranet" and sum(summary["class_counts"].values()) == 16


def test_screen_diffranet_refuses_a_hit_maybe_miss_model(run_and_model, tmp_path, capsys):
    run, _ = run_and_model
    out = tmp_path / "out"
    assert main(["screen", "--task", "diffranet", str(run), "--model", "default", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not the DiffraNet classes" in err[0] and "hit, maybe, miss" in err[0]
    assert not (out / "scores.csv").exists()
    assert main(["screen", "--task", "diffranet", str(run), "--out", str(out)]) == 2  # no --model: nothing bundled
    assert "give --model" in capsys.readouterr().err


def test_train_refuses_alexnet_on_hit_maybe_miss_and_rwd1d_on_diffranet(run_and_model, tmp_path, capsys):
    run, _ = run_and_model
    m = tmp_path / "x.safetensors"
    assert main(["train", str(run), "--model-type", "alexnet", "--out", str(m)]) == 2
    assert "--task diffranet" in capsys.readouterr().err
    assert main(["train", "--task", "diffranet", str(run), "--model-type", "rwd1d", "--out", str(m)]) == 2
    assert not m.exists()


def test_explain_runs_on_the_diffranet_model(run_and_model, tmp_path):
    import h5py

    run, model = run_and_model
    out = tmp_path / "expl"
    assert main(["explain", str(run), "--model", str(model), "--out", str(out), "--max-frames", "2",
                 "--device", "cpu"]) == 0
    with h5py.File(out / "explain_gradcam.h5") as f:
        assert f["maps"].shape == (2, 64, 64) and json.loads(f.attrs["class_names"]) == list(DIFFRANET_CLASSES)


def test_library_training_is_what_the_benchmark_uses(tmp_path):
    """benchmarks.nawaz2022 trains through train.diffranet: same arguments, same model file record."""
    from diffscreen.benchmarks.nawaz2022 import QUICK_RECIPE, train_alexnet
    from dataclasses import replace

    rng = np.random.default_rng(0)
    rec = replace(QUICK_RECIPE, n_train=10, n_val=5, epochs=1, batch_size=5, input_size=64)
    data = {"x": rng.normal(size=(15, 1, 64, 64)).astype(np.float16),
            "label": np.array([DIFFRANET_CLASSES[k % 5] for k in range(15)])}
    res = train_alexnet(rec, data, tmp_path / "a.safetensors", log=lambda *a: None)
    meta = read_model_metadata(res.model_path)
    assert meta["arch"] == "alexnet" and meta["class_names"] == list(DIFFRANET_CLASSES)
    assert meta["arch_kwargs"]["channels"] == list(QUICK_RECIPE.channels)
    assert meta["arch_kwargs"]["input_std"] == pytest.approx(float(data["x"][:10].astype(np.float32).std()), abs=1e-5)
    assert meta["training"]["config"]["optimizer"] == "adam" and meta["training"]["config"]["batches_per_epoch"] == 2
