"""``diffscreen explain`` from the command line on every registered model type (issue 17).

Each model type is trained for a moment on tiny data (a toy crystallography
run, a simulated CDI run), then explained with every method; the outputs
must exist, and every map must be finite and not constant.
"""

import subprocess
import sys

import h5py
import numpy as np
import pytest

from diffscreen.cli import main
from diffscreen.explain.run import EXPLAIN_METHODS
from diffscreen.models import load_model

MODEL_TYPES = ("ke2018", "rwd1d", "alexnet", "zimmermann2019")
CAM = ("gradcam", "gradcam++", "guided-gradcam")
N_FRAMES = 3
ALEXNET_LABELS = ["hit", "miss", "maybe", "miss"] * 12


def test_every_registered_model_type_is_covered():
    # in a fresh interpreter: other tests in this process may register toy models
    code = "from diffscreen.models import list_models; print(' '.join(list_models()))"
    shipped = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert sorted(MODEL_TYPES) == shipped


def _train_cli(run, model, model_type, size):
    args = ["train", str(run), "--model-type", model_type, "--out", str(model), "--epochs", "1",
            "--batches-per-epoch", "2", "--batch-size", "8", "--input-size", str(size), "--workers", "0"]
    assert main(args) == 0


def _train_alexnet(run, model, size):
    """AlexNet of Nawaz et al. 2022, narrow, 30 Adam steps on the preprocessed frames of a toy run."""
    from diffscreen.io import iter_frames
    from diffscreen.preprocess import PreprocessConfig, Preprocessor
    from diffscreen.train.loop import TrainConfig, train_on_arrays

    pre = PreprocessConfig(out_size=size)
    x = Preprocessor(pre)([f for _, _, f in iter_frames([str(run)])])
    y = np.array([("hit", "maybe", "miss").index(lab) for lab in ALEXNET_LABELS])
    cfg = TrainConfig(arch="alexnet", optimizer="adam", epochs=1, batches_per_epoch=30, batch_size=12, seed=0,
                      lr_start=1e-3, lr_end=1e-3, weight_decay=0.0,
                      arch_kwargs={"channels": [16] * 5, "fc_dim": 16, "dropout": 0.0})
    train_on_arrays(x, y, model, class_names=("hit", "maybe", "miss"), preprocess=pre, config=cfg, log=lambda _: None)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """{model type: (model file, input file, input side S)}."""
    import torch
    from toyrun import write_toy_run

    from diffscreen.simulate.cdi import simulate_cdi_run

    torch.set_num_threads(1)
    d = tmp_path_factory.mktemp("explain_models")
    run = write_toy_run(d / "run.cxi", ["hit", "miss", "maybe", "miss"] * 4, seed=3)
    out = {}
    for mt, size in (("ke2018", 192), ("rwd1d", 128)):  # the Ke CNN needs >= 168 px
        _train_cli(run, d / f"{mt}.safetensors", mt, size)
        out[mt] = (d / f"{mt}.safetensors", run, size)
    _train_alexnet(write_toy_run(d / "run48.cxi", ALEXNET_LABELS, seed=5), d / "alexnet.safetensors", 131)
    # (conv5 maps are 7 x 7 at 131 px)
    out["alexnet"] = (d / "alexnet.safetensors", run, 131)
    cdi = simulate_cdi_run(d / "cdi.cxi", 30, seed=3, size=128)
    args = ["train", "--task", "cdi", str(cdi), "--out", str(d / "cdi.safetensors"), "--input-size", "96",
            "--width", "4", "--epochs", "1", "--batch-size", "15"]  # last stage 3 x 3 at 96 px
    assert main(args) == 0
    out["zimmermann2019"] = (d / "cdi.safetensors", cdi, 96)
    for mt, (path, _, size) in out.items():
        b = load_model(path)
        assert b.arch == mt
    return out


def _explain(model, inp, out, method, *extra):
    return main(["explain", str(inp), "--model", str(model), "--method", method, "--out", str(out),
                 "--max-frames", str(N_FRAMES), "--steps", "2", *extra])


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_explain_cli_runs_every_method_on_every_model_type(models, model_type, tmp_path):
    model, inp, S = models[model_type]
    for method in EXPLAIN_METHODS:
        out = tmp_path / method
        assert _explain(model, inp, out, method) == 0, (model_type, method)
        pngs = sorted(out.glob(f"*_{method}.png"))
        assert len(pngs) == N_FRAMES and all(p.stat().st_size > 0 for p in pngs), (model_type, method)
        with h5py.File(out / f"explain_{method}.h5", "r") as h:
            maps, p, t = h["maps"][()], h["probabilities"][()], h["target"][()]
            assert h["input"].shape == (N_FRAMES, S, S)
            attrs = dict(h.attrs)
        assert maps.shape[0] == N_FRAMES and maps.shape[-2:] == (S, S), (model_type, method, maps.shape)
        assert np.isfinite(maps).all(), (model_type, method)
        flat = maps.reshape(N_FRAMES, -1)
        assert (np.ptp(flat, axis=1) > 0).all(), (model_type, method, np.ptp(flat, axis=1))  # no constant map
        assert attrs["arch"] == model_type and attrs["method"] == method
        np.testing.assert_array_equal(t, p.argmax(1))  # default target: the most probable class or label
        if model_type == "zimmermann2019":
            assert attrs["task"] == "cdi" and attrs["outputs"] == "sigmoid"
            assert ((p > 0) & (p < 1)).all() and p.shape == (N_FRAMES, 11)
        else:
            assert attrs["task"] == "crystallography" and attrs["outputs"] == "softmax"
            np.testing.assert_allclose(p.sum(1), 1, rtol=1e-5)
        if model_type == "rwd1d" and method in ("gradcam", "gradcam++"):
            # the 1-D CNN sees row ranges: its CAM is one value per row, the same along each row
            assert (np.ptp(maps, axis=2) == 0).all() and (np.ptp(maps, axis=1) > 0).all()


def test_explain_cli_explains_a_chosen_cdi_label(models, tmp_path):
    from diffscreen.evaluate.multilabel import CDI_CLASSES

    model, inp, _ = models["zimmermann2019"]
    assert _explain(model, inp, tmp_path / "a", "gradcam++", "--target", "streak") == 0
    with h5py.File(tmp_path / "a" / "explain_gradcam++.h5", "r") as h:
        chosen = h["maps"][()]
        np.testing.assert_array_equal(h["target"][()], CDI_CLASSES.index("streak"))
    assert _explain(model, inp, tmp_path / "b", "gradcam++", "--target", "empty") == 0
    with h5py.File(tmp_path / "b" / "explain_gradcam++.h5", "r") as h:
        other = h["maps"][()]
    assert not np.allclose(chosen, other)  # another label, another map
    assert _explain(model, inp, tmp_path / "c", "gradcam++", "--target", "hit") != 0  # not a CDI label
    assert not (tmp_path / "c" / "explain_gradcam++.h5").exists()
