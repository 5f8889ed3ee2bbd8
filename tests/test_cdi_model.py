"""Zimmermann et al. (2019) ResNet18_α: Eq. 11 activation, architecture, model files."""

import math

import numpy as np
import pytest
import torch

from diffscreen.models import get_model, list_models, load_model, save_model
from diffscreen.models.zimmermann2019 import LogActivation, log_activation
from diffscreen.preprocess.cdi import CDIPreprocessConfig


@pytest.mark.parametrize("alpha", [0.2, 0.5, 1.0])
def test_log_activation_values_eq11(alpha):
    x = torch.tensor([0.0, 1.0, -1.0, 2.5, -0.3, 10.0], dtype=torch.float64)
    c0 = math.exp(-1)
    expect = [0.0] + [
        (alpha * (math.log(v + c0) + 1) if v >= 0 else -alpha * (math.log(-v + c0) + 1)) for v in x.tolist()[1:]
    ]
    np.testing.assert_allclose(log_activation(x, alpha).numpy(), expect, rtol=1e-12)
    # odd, continuous at 0
    assert log_activation(torch.tensor(1e-9, dtype=torch.float64), alpha).abs() < 1e-8
    assert log_activation(torch.tensor(-1e-9, dtype=torch.float64), alpha).abs() < 1e-8
    # Eq. 12: derivative alpha / (|x| + e^-1), i.e. alpha*e at 0+
    v = torch.tensor([1e-6, 2.0, -2.0], dtype=torch.float64, requires_grad=True)
    log_activation(v, alpha).sum().backward()
    np.testing.assert_allclose(v.grad.numpy(), alpha / (np.abs(v.detach().numpy()) + c0), rtol=1e-5)


def test_log_activation_refuses_nonpositive_alpha():
    with pytest.raises(ValueError):
        LogActivation(0.0)


def test_resnet18_structure():
    assert "zimmermann2019" in list_models()
    m = get_model("zimmermann2019")
    n = sum(p.numel() for p in m.parameters())
    assert 11.0e6 < n < 11.3e6  # ResNet-18 on one input channel, 11 outputs
    assert isinstance(m.stem_act, LogActivation) and m.stem_act.alpha == 0.2
    assert m.stem.kernel_size == (7, 7) and m.stem.stride == (2, 2) and m.stem.bias is None
    assert m.cam_layer is m.layer4
    x = torch.randn(2, 1, 64, 64)
    assert m.forward_features(x).shape == (2, 512, 2, 2)
    assert m(x).shape == (2, 11)
    u = get_model("zimmermann2019", alpha=None, width=8)
    assert isinstance(u.stem_act, torch.nn.Identity)
    # the log activation acts on the stem output: models differ only there
    a = get_model("zimmermann2019", alpha=0.5, width=8)
    a.load_state_dict(u.state_dict())
    a.eval(), u.eval()
    assert not torch.allclose(a(x), u(x))
    slopes = {mod.negative_slope for mod in m.modules() if isinstance(mod, torch.nn.LeakyReLU)}
    assert slopes == {0.2}


def test_gradcam_pp_from_explain_module():
    explain = pytest.importorskip("diffscreen.explain")
    m = get_model("zimmermann2019", width=8).eval()
    h = explain.attribute(m, torch.rand(2, 1, 64, 64), method="gradcam++", target=7)
    assert h.shape == (2, 64, 64) and np.isfinite(h).all() and (h >= 0).all()


def test_model_file_roundtrip_with_cdi_recipe(tmp_path):
    m = get_model("zimmermann2019", alpha=None, width=8).eval()
    pre = CDIPreprocessConfig(input_size=32, mode="ccf")
    p = save_model(tmp_path / "m.safetensors", m, arch="zimmermann2019", arch_kwargs={"alpha": None, "width": 8},
                   preprocess=pre, class_names=[f"c{i}" for i in range(11)], task="cdi", multilabel=True)
    b = load_model(p)
    assert b.preprocess == pre and b.meta["task"] == "cdi" and b.meta["preprocess"]["kind"] == "cdi"
    x = torch.rand(1, 1, 32, 32)
    with torch.no_grad():
        assert torch.allclose(b.model(x), m(x))
