"""diffscreen.explain: attribution maps, inversion, t-SNE (issue 5)."""

from dataclasses import replace

import numpy as np
import pytest
import torch
from torch import nn

from diffscreen.errors import BadFrameError, ConfigError
from diffscreen.explain import (
    METHODS,
    attribute,
    find_cam_layer,
    invert,
    overlay,
    penultimate_features,
    saliency_mask,
    tsne_embed,
)
from diffscreen.models import get_model, list_models


# ---------------------------------------------------------------- tiny net
class Tiny(nn.Module):
    """conv → ReLU (the CAM layer, same size as the input) → max-pool → linear."""

    cam_layer = "act"

    def __init__(self, seed=0, size=6, classes=4):
        super().__init__()
        torch.manual_seed(seed)
        self.conv = nn.Conv2d(1, 3, 3, padding=1)
        self.act = nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(3 * (size // 2) ** 2, classes)

    def head(self, a):
        return self.fc(torch.flatten(self.pool(a), 1))

    def forward(self, x):
        return self.head(self.act(self.conv(x)))


def _tiny_input(seed=1, size=6):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(1, 1, size, size, generator=g)


class _Fixed(nn.Module):
    """The input itself is the CAM layer's activation A; the class-0 score is Σ g·A, so ∂S/∂A = g."""

    cam_layer = "ident"

    def __init__(self, g):
        super().__init__()
        self.ident = nn.Identity()
        self.fc = nn.Linear(g.numel(), 2, bias=False)
        with torch.no_grad():
            self.fc.weight.copy_(torch.stack([g.reshape(-1), torch.zeros(g.numel())]))

    def forward(self, x):
        return self.fc(torch.flatten(self.ident(x), 1))


# A 2 × 2 × 2 example worked by hand (K = 2 channels of 2 × 2).  Eq. 19 of
# Chattopadhyay et al. 2018:  α_ij = g_ij² / (2 g_ij² + g_ij³ Σ_ab A_ab).
#   channel 1: A = [[1, 2], [0, 1]] (Σ A = 4), g = [[1, -1], [0.5, 2]]
#     α = 1/(2 + 4) = 1/6;  1/(2 − 4) = −1/2 (g < 0: ReLU(g) = 0, no weight);
#         0.25/(0.5 + 0.125·4) = 1/4;  4/(8 + 8·4) = 1/10
#     w₁ = Σ α ReLU(g) = 1/6·1 + 1/4·0.5 + 1/10·2 = 1/6 + 1/8 + 1/5 = 59/120
#   channel 2: A = [[0, 3], [1, 0]] (Σ A = 4), g = [[0, 0.5], [-0.5, 1]]
#     α = 0 (g = 0);  1/4;  (g < 0, no weight);  1/(2 + 4) = 1/6
#     w₂ = 1/4·0.5 + 1/6·1 = 1/8 + 1/6 = 35/120
#   map = ReLU(w₁A¹ + w₂A²) = [[59, 118 + 105], [35, 59]] / 120 = [[59, 223], [35, 59]] / 120
# The misreading Σ_ab A_ab g_ab³ (channel 1: 1 − 2 + 0 + 8 = 7) gives other numbers.
HAND_A = [[[1.0, 2.0], [0.0, 1.0]], [[0.0, 3.0], [1.0, 0.0]]]
HAND_G = [[[1.0, -1.0], [0.5, 2.0]], [[0.0, 0.5], [-0.5, 1.0]]]
HAND_W = [59 / 120, 35 / 120]
HAND_MAP = [[59 / 120, 223 / 120], [35 / 120, 59 / 120]]


def test_gradcam_pp_matches_a_hand_worked_example_of_eq_19():
    from diffscreen.explain import gradcam_pp_weights

    A, g = torch.tensor([HAND_A]), torch.tensor([HAND_G])
    np.testing.assert_allclose(gradcam_pp_weights(A, g)[0].numpy(), HAND_W, rtol=1e-6)
    net = _Fixed(g[0])
    m = attribute(net, A, method="gradcam++", target=0)  # 2 × 2 CAM upsampled to 2 × 2: unchanged
    np.testing.assert_allclose(m[0], HAND_MAP, rtol=1e-6)
    # the former misreading (Σ_ab A_ab g_ab³ in the denominator) is off by far more than rounding
    wrong_denom = 2 * g**2 + (A * g**3).sum(dim=(2, 3), keepdim=True)
    wrong_w = (torch.where(g != 0, g**2 / wrong_denom, 0) * torch.relu(g)).sum(dim=(2, 3))[0].numpy()
    assert np.abs(wrong_w - HAND_W).max() > 0.05


def test_gradcam_pp_equals_chattopadhyay_formula_with_true_derivatives():
    """Chattopadhyay et al. (2018) Eqs. 10 and 18 with Y = exp(S), derivatives by autograd.

    Eq. 18: α_ij = ∂²Y/∂A_ij² / (2 ∂²Y/∂A_ij² + Σ_ab A_ab ∂³Y/∂A_ij³); the
    third derivative is the one at (i, j), the sum is over the activations.
    """
    net = Tiny(seed=3).eval()
    x = _tiny_input(4)
    c = 2
    A = net.act(net.conv(x)).detach().requires_grad_(True)
    Y = torch.exp(net.head(A)[0, c])
    (g1,) = torch.autograd.grad(Y, A, create_graph=True)
    g1f = g1.reshape(-1)
    d2 = torch.zeros_like(g1f)
    d3 = torch.zeros_like(g1f)
    for i in range(g1f.numel()):  # diagonal 2nd and 3rd derivatives, element by element
        (h,) = torch.autograd.grad(g1f[i], A, create_graph=True)
        d2[i] = h.reshape(-1)[i]
        (t,) = torch.autograd.grad(d2[i], A, retain_graph=True)
        d3[i] = t.reshape(-1)[i]
    d2, d3, gy = d2.reshape(A.shape), d3.reshape(A.shape), g1.detach()
    Ad = A.detach()
    denom = 2 * d2 + d3 * Ad.sum(dim=(2, 3), keepdim=True)
    alpha = torch.where(d2 != 0, d2 / denom, torch.zeros_like(d2))
    w = (alpha * torch.relu(gy)).sum(dim=(2, 3))  # Eq. 10
    L = torch.relu((w[:, :, None, None] * Ad).sum(1))[0].detach().numpy()
    ours = attribute(net, x, method="gradcam++", target=c)[0] * float(Y.detach())  # exp(S) factor put back
    assert L.max() > 0
    np.testing.assert_allclose(ours, L, rtol=1e-4, atol=1e-6 * L.max())
    # the published "Grad-CAM++" of Zimmermann et al. was plain Grad-CAM: ours is not
    gc = attribute(net, x, method="gradcam", target=c)[0]
    assert np.abs(gc / gc.max() - ours / ours.max()).max() > 0.05


def test_gradcam_pp_versus_torchcam():
    """torchcam 0.5.0's GradCAMpp drops the α denominator of Eq. 19.

    Its ``alpha[idx][mask].div_(...)`` divides a boolean-indexed *copy*, so
    α = g² is used.  That is why diffscreen has its own implementation.  If
    a later torchcam fixes this, the two must agree.
    """
    from torchcam.methods import GradCAMpp

    net = Tiny(seed=5).eval()
    x = _tiny_input(6)
    ours = attribute(net, x, method="gradcam++", target=1)[0]
    with GradCAMpp(net, target_layer="act", input_shape=(1, 6, 6)) as cam:
        tc = cam(class_idx=1, scores=net(x))[0][0].detach().numpy()
    norm = (ours - ours.min()) / (ours.max() - ours.min())
    A = net.act(net.conv(x)).detach().requires_grad_(True)
    (g,) = torch.autograd.grad(net.head(A)[0, 1], A)
    w = (g**2 * torch.relu(g)).sum(dim=(2, 3))  # α = g², no denominator
    bug = torch.relu((w[:, :, None, None] * A.detach()).sum(1))[0].numpy()
    bug = (bug - bug.min()) / (bug.max() - bug.min())
    if np.allclose(tc, bug, atol=1e-5):
        assert np.abs(norm - tc).max() > 0.02  # known torchcam defect; ours differs from it
    else:
        np.testing.assert_allclose(norm, tc, atol=1e-4)


def test_gradcam_equals_eqs_6_and_7():
    net = Tiny(seed=7).eval()
    x = _tiny_input(8)
    A = net.act(net.conv(x)).detach().requires_grad_(True)
    (g,) = torch.autograd.grad(net.head(A)[0, 0], A)
    a_k = g.mean(dim=(2, 3))  # Eq. 6
    L = torch.relu((a_k[:, :, None, None] * A.detach()).sum(1))[0].numpy()  # Eq. 7
    np.testing.assert_allclose(attribute(net, x, method="gradcam", target=0)[0], L, rtol=1e-5, atol=1e-7)


def test_guided_gradcam_is_guided_backprop_times_gradcam_and_saliency_is_loss_gradient():
    net = Tiny(seed=9).eval()
    x = _tiny_input(10)
    gb = attribute(net, x, method="guided-backprop", target=3)[0]
    gc = attribute(net, x, method="gradcam", target=3)[0]
    ggc = attribute(net, x, method="guided-gradcam", target=3)[0]
    np.testing.assert_allclose(ggc, gb * gc, rtol=1e-4, atol=1e-7)
    xi = x.clone().requires_grad_(True)
    loss = nn.functional.cross_entropy(net(xi), torch.tensor([3]))
    (gx,) = torch.autograd.grad(loss, xi)
    np.testing.assert_allclose(attribute(net, x, "saliency", target=3)[0], gx[0, 0].abs().numpy(), rtol=1e-5)
    shown, mask = saliency_mask(net, x, target=3, nsigma=1.0)
    g = gx[0, 0].numpy()
    np.testing.assert_array_equal(mask[0], np.abs(g - g.mean()) > g.std())


def test_bad_input_is_refused_and_nothing_is_modified():
    net = get_model("ke2018", input_size=192)
    net.train()
    x = np.random.default_rng(0).normal(size=(2, 1, 192, 192)).astype(np.float32)
    x0 = x.copy()
    attribute(net, x, method="gradcam")
    np.testing.assert_array_equal(x, x0)
    assert net.training  # mode restored
    assert all(m.inplace for m in net.modules() if isinstance(m, nn.ReLU))
    with pytest.raises(ConfigError, match="unknown attribution method"):
        attribute(net, x, method="lime")
    with pytest.raises(BadFrameError, match=r"\(N, C, H, W\)"):
        attribute(net, x[0], method="gradcam")
    bad = x.copy()
    bad[0, 0, 3, 3] = np.nan
    with pytest.raises(BadFrameError, match="NaN"):
        attribute(net, bad, method="gradcam")
    with pytest.raises(ConfigError, match="out of range"):
        attribute(net, x, method="gradcam", target=7)
    with pytest.raises(ConfigError, match="no layer named"):
        attribute(net, x, method="gradcam", layer="features.9")
    with pytest.raises(BadFrameError, match="differs"):
        overlay(x[0, 0], np.zeros((10, 10)))


def _tiny_models():
    out = []
    for name in list_models():
        if name == "ke2018":
            out.append((name, get_model(name, input_size=192), 192))
        elif name == "alexnet":
            out.append((name, get_model(name, channels=(8, 8, 8, 8, 8), fc_dim=16, input_size=67), 67))
        else:
            try:
                out.append((name, get_model(name), None))
            except Exception:  # other helpers' models with required arguments
                continue
    return out


@pytest.mark.parametrize("method", METHODS)
def test_every_method_works_with_every_model(method):
    for name, net, size in _tiny_models():
        size = size or 64
        conv = next((m for m in net.modules() if isinstance(m, nn.Conv2d)), None)
        x = torch.randn(2, conv.in_channels if conv else 1, size, size, generator=torch.Generator().manual_seed(0))
        if conv is None and not any(isinstance(m, nn.Conv1d) for m in net.modules()):
            continue
        try:
            net.eval()
            net(x)
        except Exception:
            continue  # the model needs another input size
        m = attribute(net, x, method=method)
        assert m.shape == (2, size, size) and m.dtype == np.float32, name
        assert np.isfinite(m).all(), name
        if method in ("gradcam", "gradcam++", "saliency"):
            assert (m >= 0).all(), name


def test_cam_layer_rule():
    ke = get_model("ke2018", input_size=192)
    assert find_cam_layer(ke) is ke.features[3][2]
    ax = get_model("alexnet")
    assert find_cam_layer(ax) is ax.features[11]
    seq = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Sequential(nn.Conv2d(2, 2, 3), nn.ReLU()), nn.Flatten())
    assert find_cam_layer(seq) is seq[2]  # smallest module holding the last Conv2d


# ------------------------------------------------ trained-model checks
LOC_FRAMES = (1, 3, 4, 11)  # rayonix seed 11: composites the bundled model calls "hit"


def _localisation_inputs():
    """Frames with Bragg spots in one quadrant (around the beam) and solvent background elsewhere.

    The same (seed, index) simulated as "hit" and as "solvent" share geometry
    and background; the composite takes the hit frame's pixels inside one
    quadrant only.
    """
    from diffscreen.models.inference import Classifier
    from diffscreen.simulate import Simulator

    clf = Classifier()
    sim = Simulator("rayonix", seed=11)
    xs, quads = [], []
    for i in LOC_FRAMES:
        h, b = sim.frame(i, kind="hit").to_frame(), sim.frame(i, kind="solvent").to_frame()
        q = i % 4
        cx, cy = h.meta.beam_centre_px
        yy, xx = np.mgrid[: h.data.shape[0], : h.data.shape[1]]
        region = ((xx < cx) if q in (0, 2) else (xx >= cx)) & ((yy < cy) if q in (0, 1) else (yy >= cy))
        xs.append(clf.preprocess([replace(h, data=np.where(region, h.data, b.data))])[0])
        quads.append(q)
    return clf, np.stack(xs), quads


@pytest.fixture(scope="module")
def loc_inputs():
    torch.set_num_threads(1)
    return _localisation_inputs()


def _quadrant(m):
    S = m.shape[-1]
    yi, xi = np.unravel_index(int(m.argmax()), m.shape)
    return (0 if xi < S / 2 else 1) + (0 if yi < S / 2 else 2)


@pytest.mark.parametrize("method", ["gradcam", "gradcam++"])
def test_localisation_maxima_fall_in_the_spot_quadrant(loc_inputs, method):
    clf, x, quads = loc_inputs
    probs = clf.predict_batch(x)
    assert (probs.argmax(1) == 0).all(), probs  # the trained model calls them hits
    maps = attribute(clf.model, x, method=method)
    found = [_quadrant(m) for m in maps]
    assert found == quads
    # and the spot quadrant carries more of the map than any other quadrant
    S = x.shape[-1] // 2
    for m, q in zip(maps, quads):
        sums = [m[:S, :S].sum(), m[:S, S:].sum(), m[S:, :S].sum(), m[S:, S:].sum()]
        assert int(np.argmax(sums)) == q


def _spearman(a, b):
    """Rank correlation; a constant map (all zero: nothing highlighted) counts as 0."""
    from scipy.stats import spearmanr

    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return 0.0
    return float(spearmanr(a.ravel(), b.ravel())[0])


@pytest.mark.parametrize("method", ["gradcam", "gradcam++"])
def test_randomised_weights_give_different_maps(loc_inputs, method):
    """Adebayo et al. (2018) model-parameter randomisation test."""
    clf, x, _ = loc_inputs
    trained = clf.model
    ref = attribute(trained, x, method=method, target=0)
    # reference: the trained model with 0.3 % weight noise explains (nearly) the same way
    noisy = get_model("ke2018", **clf.bundle.arch_kwargs)
    noisy.load_state_dict(trained.state_dict())
    with torch.no_grad():
        g = torch.Generator().manual_seed(0)
        for p in noisy.parameters():
            p.add_(0.003 * p.abs().mean() * torch.randn(p.shape, generator=g))
    same = np.mean([_spearman(a, b) for a, b in zip(ref, attribute(noisy.eval(), x, method=method, target=0))])
    rand = []
    for seed in (0, 1, 2):
        torch.manual_seed(seed)
        r = get_model("ke2018", **clf.bundle.arch_kwargs).eval()
        rand.extend(_spearman(a, b) for a, b in zip(ref, attribute(r, x, method=method, target=0)))
    # Random networks still light up the strong-spot quadrant somewhat (the
    # activations themselves follow the spots), so the random maps keep a
    # rank correlation with the trained one; the trained-vs-trained one is ~0.95-1.
    # Bundled model (issue 3 retrain): Grad-CAM 0.37 on average, Grad-CAM++ 0.74
    # (0.71 before Eq. 19's denominator was fixed in issue 17; 0.39 and 0.55
    # with the model before the retrain): Grad-CAM++'s positive-gradient
    # weights follow the activations, hence the spots, more than the weights
    # (docs/explain.md), so its bound is looser.
    limit, gap = {"gradcam": (0.5, 0.4), "gradcam++": (0.8, 0.2)}[method]
    assert same > 0.9, same
    assert np.mean(rand) < limit and np.mean(rand) < same - gap, (same, rand)


def test_inversion_first_block_is_closer_to_the_input_than_last(loc_inputs):
    clf, x, _ = loc_inputs
    xc = x[2:3, :, 232:488, 232:488]  # 256 × 256 centre crop (strong hit): conv layers take any size
    first = invert(clf.model, xc, layer=0, steps=80, seed=0)
    last = invert(clf.model, xc, layer=-1, steps=80, seed=0)
    c0 = np.corrcoef(first.image.ravel(), xc.ravel())[0, 1]
    c3 = np.corrcoef(last.image.ravel(), xc.ravel())[0, 1]
    assert first.layer == "features.0.2" and last.layer == "features.3.2"
    assert c0 > 0.2 and c0 > c3 + 0.15, (c0, c3)
    assert first.feature_error < 0.5


def test_inversion_refuses_bad_arguments():
    net = get_model("ke2018", input_size=192)
    x = np.zeros((1, 1, 64, 64), np.float32)
    with pytest.raises(ConfigError, match="out of range"):
        invert(net, x, layer=9)
    with pytest.raises(ConfigError, match="one frame"):
        invert(net, np.zeros((2, 1, 64, 64), np.float32))


def test_tsne_separates_clusters_and_features_are_penultimate():
    rng = np.random.default_rng(0)
    f = np.concatenate([rng.normal(0, 1, (30, 20)), rng.normal(6, 1, (30, 20))])
    emb = tsne_embed(f, seed=0)
    lab = np.repeat([0, 1], 30)
    d = ((emb[:, None] - emb[None]) ** 2).sum(-1)
    np.fill_diagonal(d, np.inf)
    assert (lab[d.argmin(1)] == lab).all()  # nearest neighbour has the same label
    net = get_model("alexnet", channels=(8, 8, 8, 8, 8), fc_dim=16, input_size=67).eval()
    x = torch.randn(3, 1, 67, 67)
    feats = penultimate_features(net, x)
    assert feats.shape == (3, 16)
    with torch.no_grad():
        np.testing.assert_allclose(net.classifier[-1](torch.from_numpy(feats)).numpy(), net(x).numpy(), rtol=1e-4, atol=1e-5)
    with pytest.raises(BadFrameError):
        tsne_embed(np.zeros((2, 3)))
