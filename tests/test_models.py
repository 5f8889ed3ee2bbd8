"""The Ke et al. (2018) CNN, model files and the decision rule."""

import pickle

import numpy as np
import pytest
import torch

from diffscreen.errors import ConfigError, ModelFileError
from diffscreen.models import KeCNN, decide, get_model, hit_probability, list_models, load_model, save_model
from diffscreen.preprocess import PreprocessConfig


def n_params(m):
    return sum(p.numel() for p in m.parameters())


def test_ke_cnn_layer_sizes_match_fv5080():
    m = get_model("ke2018")
    # conv7 1->4 (200) bn (8) conv 4->8 (296) bn (16) conv 8->16 (1168) bn (32)
    # conv 16->32 (4640) bn (64) linear 288->3 (867)
    assert n_params(m) == 7291
    assert m.num_features == 288
    x = torch.zeros(2, 1, 720, 720)
    feats = m.features(x)
    assert feats.shape == (2, 32, 3, 3)
    assert m(x).shape == (2, 3)
    convs = [l for l in m.modules() if isinstance(l, torch.nn.Conv2d)]
    assert [c.kernel_size for c in convs] == [(7, 7), (3, 3), (3, 3), (3, 3)]
    assert all(c.stride == (2, 2) for c in convs)
    assert [c.out_channels for c in convs] == [4, 8, 16, 32]
    assert all(float(c.bias.detach().abs().sum()) == 0 for c in convs)  # zero biases at init


def test_paper_variant_is_all_3x3():
    m = get_model("ke2018", first_kernel=3)
    assert n_params(m) == 7291 - 49 * 4 + 9 * 4
    assert m(torch.zeros(1, 1, 720, 720)).shape == (1, 3)


def test_registry():
    assert "ke2018" in list_models()
    with pytest.raises(ConfigError, match="no model architecture"):
        get_model("resnet-9000")


def test_decision_rule_is_hit_plus_maybe_against_miss():
    p = np.array([[0.6, 0.3, 0.1], [0.3, 0.25, 0.45], [0.2, 0.2, 0.6], [0.1, 0.5, 0.4]])
    keep, labels = decide(p)
    assert keep.tolist() == [True, True, False, True]
    assert labels == ["hit", "hit", "miss", "maybe"]
    np.testing.assert_allclose(hit_probability(p), [0.9, 0.55, 0.4, 0.6])


def test_model_file_round_trip(tmp_path):
    torch.manual_seed(0)
    m = get_model("ke2018", input_size=256)
    m.eval()
    pre = PreprocessConfig(out_size=256, contrast="linear")
    path = save_model(
        tmp_path / "m.safetensors", m, arch="ke2018", arch_kwargs={"input_size": 256}, preprocess=pre,
        class_names=("hit", "maybe", "miss"), training={"data": "test"}, seed=5, metrics={"acc": 0.5},
    )
    b = load_model(path)
    assert b.preprocess == pre and b.class_names == ("hit", "maybe", "miss")
    assert b.meta["seed"] == 5 and b.meta["metrics"] == {"acc": 0.5} and b.meta["training"] == {"data": "test"}
    x = torch.randn(3, 1, 256, 256)
    with torch.no_grad():
        torch.testing.assert_close(b.model(x), m(x))
    assert not list(tmp_path.glob(".*part*"))  # no temporary left behind


def test_model_file_refuses_pickles_and_garbage(tmp_path):
    p = tmp_path / "evil.safetensors"
    p.write_bytes(pickle.dumps({"x": 1}))
    with pytest.raises(ModelFileError, match="evil.safetensors"):
        load_model(p)
    with pytest.raises(ModelFileError, match="not found"):
        load_model(tmp_path / "missing.safetensors")
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, str(tmp_path / "plain.safetensors"))
    with pytest.raises(ModelFileError, match="no diffscreen metadata"):
        load_model(tmp_path / "plain.safetensors")


def test_model_file_weights_must_fit_architecture(tmp_path):
    m = get_model("ke2018", input_size=256)
    path = save_model(tmp_path / "m.safetensors", m, arch="ke2018", arch_kwargs={"input_size": 256, "first_kernel": 3},
                      preprocess=PreprocessConfig(out_size=256), class_names=("hit", "maybe", "miss"))
    with pytest.raises(ModelFileError, match="do not match"):
        load_model(path)


def test_bundled_model_loads_with_complete_metadata():
    b = load_model()
    assert isinstance(b.model, KeCNN)
    assert b.class_names == ("hit", "maybe", "miss")
    for key in ("training", "metrics", "seed", "preprocess", "arch"):
        assert key in b.meta
    assert b.meta["training"]["data"], "the bundled model must describe its training data"


def test_bundled_fast_model_by_name_and_a_file_of_that_name_wins(tmp_path, monkeypatch, capsys):
    from diffscreen.cli import main
    from diffscreen.models import BUNDLED_MODELS, default_model_path, resolve_model_path

    assert set(BUNDLED_MODELS) == {"default", "fast", "cdi"}
    fast, default = load_model("fast"), load_model("default")
    # the default: Ke's 720² GCN + LCN; the fast model: the significance input (issue 13) at 240² over the
    # same field of view, at three times Ke's reciprocal pixel
    from diffscreen.preprocess import PreprocessConfig

    assert default.preprocess.out_size == 720 and default.preprocess.contrast == "lcn"
    assert fast.preprocess == PreprocessConfig.significance(240, 3.0)
    assert fast.preprocess.s_per_px * 240 == pytest.approx(default.preprocess.s_per_px * 720)
    assert fast.arch_kwargs["input_size"] == 240 and fast.class_names == default.class_names
    assert fast.meta["training"]["data"]["simulated_presets"], "the fast model must describe its training data"
    assert resolve_model_path(None) == resolve_model_path("default") == default_model_path()
    # a file the user names "fast" is that file, not the bundled model
    monkeypatch.chdir(tmp_path)
    (tmp_path / "fast").write_bytes(b"not a model")
    with pytest.raises(ModelFileError, match="not a readable safetensors"):
        load_model("fast")
    with pytest.raises(ConfigError, match="no bundled model named 'slow'"):
        default_model_path("slow")
    (tmp_path / "fast").unlink()
    assert main(["model-info", "fast"]) == 0
    out = capsys.readouterr().out
    assert "ke2018_fast.safetensors" in out and '"out_size": 240' in out


def test_predict_arrays_batches_softmax_and_sigmoid():
    import numpy as np
    import torch

    from diffscreen.models.batch import predict_arrays

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3))
    x = np.random.default_rng(0).normal(size=(10, 1, 4, 4)).astype(np.float16)
    p = predict_arrays(net, x, batch_size=3)
    assert p.shape == (10, 3) and p.dtype == np.float32 and not net.training
    np.testing.assert_allclose(p.sum(1), 1, rtol=1e-6)
    np.testing.assert_allclose(p, predict_arrays(net, x, batch_size=64), rtol=1e-6)
    with torch.no_grad():
        ref = torch.sigmoid(net(torch.from_numpy(x.astype(np.float32)))).numpy()
    np.testing.assert_allclose(predict_arrays(net, x, multilabel=True), ref, rtol=1e-6)
    assert predict_arrays(net, x[:0]).shape == (0, 0)


def test_a_frames_probabilities_do_not_depend_on_its_batch():
    """A lone frame gets bit for bit the probabilities it gets among others (a live stream batches by arrival)."""
    import torch

    from diffscreen.models.inference import Classifier

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        clf = Classifier("fast")
        s = clf.bundle.arch_kwargs["input_size"]
        x = np.random.default_rng(0).normal(size=(6, 1, s, s)).astype(np.float32)
        whole = clf.predict_batch(x)
        for i in range(6):
            np.testing.assert_array_equal(clf.predict_batch(x[i : i + 1]), whole[i : i + 1])
        np.testing.assert_array_equal(clf.predict_batch(x[2:5]), whole[2:5])
    finally:
        torch.set_num_threads(before)


def test_cpu_passes_sized_to_the_cache_give_one_passs_probabilities(monkeypatch):
    """The bundled default (720 × 720 input) runs 2 frames per CPU pass; the bits are those of one pass of 5."""
    import diffscreen.models.inference as inference

    clf = inference.Classifier(None)
    assert clf.bundle.preprocess.out_size == 720 and clf.frames_per_pass == 2
    seen = []
    clf._net.register_forward_pre_hook(lambda mod, args: seen.append(len(args[0])))
    x = np.random.default_rng(1).normal(size=(5, 1, 720, 720)).astype(np.float32)
    passes = clf.predict_batch(x)
    assert seen == [2, 2, 2]  # 2 + 2 + the lone last frame run as two
    monkeypatch.setattr(inference, "CPU_PASS_BYTES", 1 << 40)
    assert clf.frames_per_pass > 5
    np.testing.assert_array_equal(clf.predict_batch(x), passes)
    assert seen[3:] == [5]
    assert np.ptp(passes, axis=0).max() > 1e-3  # the frames are told apart: equality means something
