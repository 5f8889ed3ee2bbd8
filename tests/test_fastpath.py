"""The fast screening path gives the reference path's answers (issue 4).

Tolerances (stated in diffscreen.preprocess.fast and docs/throughput.md):
crops before contrast to 1e-5 of their largest value; network input after
GCN + LCN to 1e-4 absolute, after linear contrast to 1e-5; probabilities to
|Δp| < 1e-4 with identical keep decisions.  Checked on simulated frames of
three detectors (LN84 Rayonix, L498 CSPAD, Pilatus) and on real frames of
five detectors (shared/data/real-frames).
"""

import copy
import os
from dataclasses import replace

import h5py
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.ndimage import uniform_filter

from diffscreen.errors import BadFrameError, FrameReadError
from diffscreen.io import open_source
from diffscreen.io.cxi import CXIWriter
from diffscreen.io.frame import Frame, FrameMeta
from diffscreen.models import decide, get_model, save_model
from diffscreen.models.fused import StridedMaxPool2d, fold_batchnorm, inference_model
from diffscreen.models.inference import Classifier
from diffscreen.screen.pipeline import predict_source
from diffscreen.preprocess import PreprocessConfig, Preprocessor, crop_scaled, lcn, prepare_pixels
from diffscreen.preprocess.fast import (
    FastPreprocessor,
    box_mean,
    crop_plan,
    fast_lcn,
    resample_matrix,
)
from diffscreen.preprocess.pooling import max_pool_window
from diffscreen.simulate import simulate_frame

from conftest import find_real_frame
from reference.window_resample import resample_two_step

CONFIGS = [
    PreprocessConfig(out_size=360),  # the bundled model's recipe
    PreprocessConfig(out_size=720),  # Ke's full field
    PreprocessConfig(out_size=256, s_per_px=None, fallback_size=700),  # pixel-count rule (fv5080)
    PreprocessConfig(out_size=360, s_per_px=PreprocessConfig.s_per_px / 3),  # zoom > 1: upsampling
    PreprocessConfig(out_size=360, contrast="linear"),
]
SHIFTS = [(0.0, 0.0), (120.0, -97.0)]


@pytest.fixture(scope="module")
def sim_frames():
    return [simulate_frame(p, seed=11, index=i).to_frame() for p, i in (("LN84", 0), ("L498", 1), ("pilatus", 2))]


def _agree(frame, cfg, shifts=SHIFTS):
    ref, fast = Preprocessor(cfg), FastPreprocessor(cfg)
    for sh in shifts:
        cr, cf = ref.crop(frame, sh), fast.crop(frame, sh)
        assert cf.shape == cr.shape == (cfg.out_size, cfg.out_size)
        scale = max(float(np.abs(cr).max()), 1e-6)
        np.testing.assert_allclose(cf, cr, rtol=0, atol=1e-5 * scale)
    xr, xf = ref([frame], shifts[:1]), fast([frame], shifts[:1])
    assert xf.shape == xr.shape and xf.dtype == np.float32
    np.testing.assert_allclose(xf, xr, rtol=0, atol=1e-4 if cfg.contrast == "lcn" else 1e-5)
    return xr


@pytest.mark.parametrize("cfg", CONFIGS, ids=["360", "720", "pixelcount", "upsample", "linear"])
def test_fast_preprocessing_matches_reference_on_simulated_frames(sim_frames, cfg):
    for fr in sim_frames:
        x = _agree(fr, cfg)
        assert np.abs(x).max() > 0.1  # a real pattern, not an all-zero crop


def test_fast_preprocessing_matches_reference_on_real_frames():
    names = ["hit-20181213155134902.cbf", "DLS_I03_smargon_0001.cbf.gz", "adsc.img.bz2",
             "idx-20130301060858401.cbf", "somedata_0001.mccd.bz2"]
    files = [p for p in (find_real_frame("real-frames", n) for n in names) if p is not None]
    if len(files) < 4:  # adsc.img.bz2 is only in the shared folder; the others are in tests/data too
        pytest.skip("real frames not found")
    n_geom = 0
    for path in files:
        with open_source(str(path)) as src:
            fr = src.read(0)
        n_geom += fr.meta.distance_mm is not None
        for cfg in (CONFIGS[0], CONFIGS[2]):
            _agree(fr, cfg, shifts=SHIFTS[:1])
    assert n_geom >= 3  # the physical scaling (fractional zoom) is exercised on real geometry


def test_crop_plan_is_the_reference_window():
    rng = np.random.default_rng(0)
    img = rng.random((300, 280)).astype(np.float32)
    for zoom, centre, shift in [(0.437, (140.3, 151.9), (0, 0)), (1.0, (10.0, 290.0), (5, -3)),
                                (2.6, (-40.0, 20.0), (0, 0)), (0.5, (139.5, 149.5), (30, 30)),
                                (0.3, (500.0, 500.0), (0, 0))]:
        S = 64
        plan = crop_plan(img.shape, centre, zoom, S, shift)
        ref = crop_scaled(img, centre, zoom, S, shift)
        (r0, r1), (c0, c1) = plan.rows, plan.cols
        out = FastPreprocessor(PreprocessConfig(out_size=S)).from_region(img[r0:r1, c0:c1], None, plan)
        np.testing.assert_allclose(out, ref, rtol=0, atol=1e-5 * max(np.abs(ref).max(), 1e-6))
    assert crop_plan(img.shape, (500.0, 500.0), 0.3, 64).empty


@pytest.mark.parametrize("side,S", [(824, 360), (1647, 720), (1479, 720), (250, 360), (360, 360), (361, 360),
                                    (97, 31), (31, 97), (3, 5)])
def test_resample_matrix_reproduces_torch_interpolate(side, S):
    x = torch.from_numpy(np.random.default_rng(side).random((side, side)).astype(np.float32))
    ref = F.interpolate(x[None, None], size=(S, S), mode="bilinear", align_corners=False,
                        antialias=side > S)[0, 0].numpy()
    A = resample_matrix(side, S)
    assert A.shape == (S, side)
    np.testing.assert_allclose(A @ (A @ x.numpy()).T, ref.T, rtol=0, atol=2e-6)
    np.testing.assert_allclose(np.asarray(A.sum(axis=1)).ravel(), 1.0, atol=1e-5)  # weights sum to 1
    # the weights are written out, not taken from torch: they must be torch's to the bit
    eye = torch.eye(side)[None, None]
    torch_a = F.interpolate(eye, size=(S, side), mode="bilinear", align_corners=False, antialias=side > S)[0, 0]
    np.testing.assert_array_equal(A.toarray(), torch_a.numpy())


@pytest.mark.parametrize("dtype", [np.int32, np.uint16, np.float16, np.float32, np.float64])
def test_max_pool_window_is_the_scatter_of_every_valid_pixel(dtype):
    """The compiled row-run max-pooling against np.fmax.at, shrinking and enlarging, masks and edge windows."""
    from reference.pooling import max_pool_reference

    from diffscreen.preprocess.pooling import max_pool_window

    rng = np.random.default_rng(np.dtype(dtype).num)
    n_nan = 0
    for trial in range(60):
        side = int(rng.integers(5, 300))
        S = int(rng.integers(2, side + 1)) if trial % 4 else int(rng.integers(side + 1, 2 * side + 2))
        h, w = int(rng.integers(1, side + 1)), int(rng.integers(1, side + 1))
        r0, c0 = int(rng.integers(0, side - h + 1)), int(rng.integers(0, side - w + 1))
        if np.dtype(dtype).kind == "u":
            d = rng.integers(0, 65535, (h, w)).astype(dtype)
        else:
            d = rng.normal(0.0, 1000.0, (h, w)).astype(dtype)
            d[rng.random((h, w)) < 0.01] = np.iinfo(np.int32).min if np.dtype(dtype).kind == "i" else -6e4
        bad = None if trial % 3 == 0 else rng.random((h, w)) < rng.choice([0.0, 0.3, 0.97])
        got = max_pool_window(d, bad, side, r0, c0, S)
        ref = max_pool_reference(d, bad, side, r0, c0, S)
        np.testing.assert_array_equal(got, ref)
        n_nan += int(np.isnan(ref).sum())
    assert n_nan > 0  # footprints with nothing valid were met, and stayed NaN
    a = np.zeros((6, 6), np.int32)
    a[4, 1] = 7
    assert float(max_pool_window(a, None, 6, 0, 0, 3)[2, 0]) == 7.0


def test_box_mean_and_fast_lcn_match_scipy_reference():
    rng = np.random.default_rng(1)
    x = rng.gamma(2.0, 20.0, (120, 97)).astype(np.float32)
    x[40:44, 50:53] += 4000  # a bright spot: large local variance
    for size in (1, 3, 5, 7):
        np.testing.assert_allclose(box_mean(x, size), uniform_filter(x, size, mode="reflect"), atol=1e-3)
        np.testing.assert_allclose(fast_lcn(x.copy(), size=size), lcn(x, size=size), atol=1e-4)
    tiny = x[:3, :4].copy()  # smaller than the box: repeated reflection
    np.testing.assert_allclose(box_mean(tiny, 5), uniform_filter(tiny, 5, mode="reflect"), atol=1e-3)
    for small in (tiny, x[:2, :50], x[:50, :2]):  # narrower than the box: the numpy path, not the row loop
        np.testing.assert_allclose(fast_lcn(small.copy(), size=5), lcn(small, size=5), atol=1e-4)
    np.testing.assert_array_equal(fast_lcn(np.zeros((20, 20), np.float32)), 0.0)
    const = np.full((20, 20), 7.0, np.float32)
    np.testing.assert_allclose(fast_lcn(const.copy()), lcn(const), atol=1e-6)


def test_resample_window_at_zoom_one_is_prepare_pixels():
    rng = np.random.default_rng(2)
    data = rng.integers(-50, 200, (40, 50)).astype(np.int32)
    mask = rng.random((40, 50)) < 0.2
    ref = prepare_pixels(Frame(data.astype(np.float32), mask, FrameMeta("x")))
    plan = crop_plan((40, 50), (25.0, 20.0), 1.0, 16)  # one window pixel per output pixel, inside the frame
    (r0, r1), (c0, c1) = plan.rows, plan.cols
    assert (r1 - r0, c1 - c0) == (16, 16) and plan.side == 16
    crop, _ = FastPreprocessor(PreprocessConfig(out_size=16)).resample_window(data[r0:r1, c0:c1], mask[r0:r1, c0:c1],
                                                                              plan)
    np.testing.assert_array_equal(crop, ref[r0:r1, c0:c1])
    assert (ref[mask] == 0).all() and (ref >= 0).all()


@pytest.mark.parametrize("dtype", [np.int32, np.uint16, np.float32, np.float64])
def test_resample_window_is_the_two_step_crop_to_the_bit(dtype):
    rng = np.random.default_rng(7)
    cfgs = [PreprocessConfig(out_size=96), PreprocessConfig(out_size=40, contrast="snr", pooling="bilinear")]
    for t in range(24):
        H, W = (int(v) for v in rng.integers(30, 300, 2))
        big = (rng.poisson(rng.uniform(0.5, 40), (H, W + 17)) - rng.integers(0, 4)).astype(dtype)
        data = big[:, 5 : W + 5]  # a column slice of whole rows, as a reader returns the window
        if t % 4 == 3:
            data = np.asfortranarray(data)  # rows not contiguous: copied first
        if data.dtype.kind == "f":
            data[rng.integers(0, H, 3), rng.integers(0, W, 3)] = [np.nan, np.inf, -np.inf]
        bad = rng.random((H, W)) < 0.1 if t % 2 else None
        cfg = cfgs[t % 2]
        pre = FastPreprocessor(cfg)
        centre = (float(rng.uniform(-20, W + 20)), float(rng.uniform(-20, H + 20)))  # windows over the edge too
        plan = crop_plan((H, W), centre, float(rng.uniform(0.3, 2.5)), cfg.out_size)
        if plan.empty:
            continue
        (r0, r1), (c0, c1) = plan.rows, plan.cols
        d, b = data[r0:r1, c0:c1], None if bad is None else bad[r0:r1, c0:c1]
        before = d.copy()
        prep, want = resample_two_step(cfg, d, b, plan)
        got, flags = pre.resample_window(d, b, plan)
        np.testing.assert_array_equal(got, want)  # NaN where NaN, every other value to the bit
        valid = np.ones(d.shape, bool) if b is None else ~b
        assert flags.nonzero == bool(prep.any())
        assert flags.raw_nonzero == bool(np.any(d[valid]))
        assert flags.nonfinite == (int(np.count_nonzero(~np.isfinite(d) & valid)) if d.dtype.kind == "f" else 0)
        np.testing.assert_array_equal(d, before)  # the window is not modified
    plan = crop_plan((50, 50), (25.0, 25.0), 1.0, 32)
    (r0, r1), (c0, c1) = plan.rows, plan.cols
    big_endian = np.arange(2500).reshape(50, 50).astype(np.dtype(dtype).newbyteorder(">"))[r0:r1, c0:c1]
    pre = FastPreprocessor(PreprocessConfig(out_size=32))
    np.testing.assert_array_equal(pre.resample_window(big_endian, None, plan)[0],
                                  resample_two_step(pre.config, big_endian, None, plan)[1])
    np.testing.assert_array_equal(max_pool_window(big_endian, None, plan.side, 0, 0, 32),
                                  max_pool_window(big_endian.astype(dtype), None, plan.side, 0, 0, 32))
    _, flags = FastPreprocessor(PreprocessConfig(out_size=32)).resample_window(np.zeros((r1 - r0, c1 - c0), dtype),
                                                                               None, plan)
    assert flags.empty and flags.nonfinite == 0
    with pytest.raises(BadFrameError, match="window mask"):  # a mask of another shape is refused, never read
        pre.resample_window(big_endian, np.zeros((5, 5), bool), plan)


@pytest.mark.parametrize("k,s,p,ceil", [(3, 2, 1, True), (2, 2, 0, False), (3, 2, 1, False), (2, 2, 0, True),
                                        (3, 3, 1, True), (4, 3, 2, True)])
def test_strided_maxpool_is_exact(k, s, p, ceil):
    g = torch.Generator().manual_seed(k * 10 + s)
    mp = torch.nn.MaxPool2d(k, s, p, ceil_mode=ceil)
    for H, W in [(180, 180), (91, 91), (45, 46), (7, 9), (5, 5)]:
        x = torch.randn(2, 3, H, W, generator=g)
        ref, got = mp(x), StridedMaxPool2d(mp)(x)
        assert got.shape == ref.shape
        assert torch.equal(got, ref)


def _model_with_statistics(size=192, seed=0):
    torch.manual_seed(seed)
    m = get_model("ke2018", input_size=size, num_classes=3)
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.running_mean.uniform_(-0.5, 0.5)
                mod.running_var.uniform_(0.3, 3.0)
                mod.weight.uniform_(0.5, 1.5)
                mod.bias.uniform_(-0.3, 0.3)
    return m.eval()


def test_folded_network_gives_the_same_logits():
    m = _model_with_statistics()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    x = torch.randn(5, 1, 192, 192, generator=torch.Generator().manual_seed(3)) * 2
    f = inference_model(m)
    assert not any(isinstance(mod, torch.nn.BatchNorm2d) for mod in f.modules())
    assert not any(isinstance(mod, torch.nn.MaxPool2d) for mod in f.modules())
    with torch.no_grad():
        ref = m(x)
        torch.testing.assert_close(f(x), ref, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(fold_batchnorm(m)(x), ref, rtol=1e-4, atol=1e-5)
        xc = x.contiguous(memory_format=torch.channels_last)
        torch.testing.assert_close(inference_model(m, channels_last=True)(xc), ref, rtol=1e-4, atol=1e-5)
    for k, v in m.state_dict().items():  # the trained model is left as it was
        assert torch.equal(v, before[k])
    # the BatchNorm statistics matter here: dropping them instead of folding would change the logits
    plain = copy.deepcopy(m)
    for mod in plain.modules():
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.reset_parameters()
    with torch.no_grad():
        assert (plain(x) - ref).abs().max() > 1e-2


@pytest.fixture(scope="module")
def run_and_model(tmp_path_factory, sim_frames):
    d = tmp_path_factory.mktemp("fastpath")
    m = _model_with_statistics(size=360, seed=1)
    model = d / "m.safetensors"
    save_model(model, m, arch="ke2018", arch_kwargs={"input_size": 360, "num_classes": 3},
               preprocess=PreprocessConfig(out_size=360), class_names=("hit", "maybe", "miss"))
    ln84 = [simulate_frame("LN84", seed=5, index=i).to_frame() for i in range(3)]
    runs = {}
    for comp in (None, "bitshuffle-lz4"):
        p = d / f"run_{comp}.cxi"
        with CXIWriter(p, compression=comp, mask_mode="per_frame") as w:
            for f in ln84:
                w.append(f.data.astype(np.int32), f.meta, mask=f.mask)
        runs[comp] = p
    return model, runs, ln84


def test_read_region_returns_the_frames_pixels(run_and_model):
    _, runs, _ = run_and_model
    for comp, p in runs.items():
        with open_source(str(p)) as src:
            for i in range(len(src)):
                fr = src.read(i)
                for rows, cols in (((100, 900), (37, 1500)), ((0, 1920), (3, 1919))):
                    data, bad = src.read_region(i, rows, cols)
                    np.testing.assert_array_equal(data, fr.data[slice(*rows), slice(*cols)])
                    np.testing.assert_array_equal(bad, fr.mask[slice(*rows), slice(*cols)])
                assert bad.any()  # the LN84 mask reaches into this window
            with pytest.raises(FrameReadError, match="not inside"):
                src.read_region(0, (100, 2000), (0, 10))


def test_default_read_region_slices_the_whole_frame(tmp_path):
    """A reader without a window read (here an HDF5 dataset) slices the frame it reads whole."""
    frames = np.random.default_rng(2).poisson(5, (2, 40, 50)).astype(np.float32)
    p = tmp_path / "plain.h5"
    with h5py.File(p, "w") as f:
        f["data"] = frames
    with open_source(f"{p}:/data") as src:
        assert src.reads_window is False
        data, bad = src.read_region(1, (3, 30), (4, 41))
        np.testing.assert_array_equal(data, frames[1, 3:30, 4:41])
        assert bad.shape == data.shape and src.frame_shape(1) == (40, 50) and src.read_meta(1).index == 1
        with pytest.raises(FrameReadError, match="not inside"):
            src.read_region(0, (0, 41), (0, 10))


def test_read_region_of_a_contiguous_and_a_truncated_file(tmp_path):
    rng = np.random.default_rng(4)
    frames = rng.integers(0, 1000, (3, 64, 80)).astype(np.int32)
    p = tmp_path / "contig.cxi"
    with h5py.File(p, "w") as f:
        f.create_dataset("entry_1/data_1/data", data=frames)  # contiguous layout
    with open_source(str(p)) as src:
        for i in range(3):
            np.testing.assert_array_equal(src.read_region(i, (5, 60), (3, 77))[0], frames[i, 5:60, 3:77])
        offset = src._entries[0]._raw_offset(2)
        assert offset is not None  # the plain-read path was taken
    cut = tmp_path / "cut.cxi"
    cut.write_bytes(p.read_bytes())
    with open_source(str(cut)) as src:
        np.testing.assert_array_equal(src.read_region(0, (0, 64), (0, 80))[0], frames[0])
        os.truncate(cut, offset + 64 * 80 * 4 // 2)  # the file shrinks under the reader: frame 2 ends half way
        with pytest.raises(FrameReadError, match="truncated"):
            src.read_region(2, (40, 64), (0, 80))


def test_classifier_fast_path_agrees_with_reference(run_and_model):
    model, runs, ln84 = run_and_model
    fast, ref = Classifier(model), Classifier(model, fast=False)
    assert isinstance(fast.preprocessor, FastPreprocessor) and not isinstance(ref.preprocessor, FastPreprocessor)
    pr = ref.predict(ln84)
    np.testing.assert_allclose(fast.predict(ln84), pr, rtol=0, atol=1e-4)
    for comp, p in runs.items():
        with open_source(str(p)) as src:
            pf, ef = predict_source(fast, src)
            pr2, er = predict_source(ref, src)
        assert ef == er == {}
        np.testing.assert_allclose(pf, pr2, rtol=0, atol=1e-4)
        np.testing.assert_allclose(pr2, pr, rtol=0, atol=1e-6)
        assert list(decide(pf)[0]) == list(decide(pr)[0])
    # the model must be sensitive to its input, or agreement would mean nothing
    assert np.ptp(pr, axis=0).max() > 1e-3


def test_predict_source_reports_bad_windows(tmp_path, run_and_model):
    model, _, ln84 = run_and_model
    f0 = ln84[0]
    good = f0.data.astype(np.float32)
    nan_in_window = good.copy()
    cx, cy = (int(v) for v in f0.meta.beam_centre_px)
    ys, xs = np.nonzero(~f0.mask[cy + 40 : cy + 60, cx + 40 : cx + 60])
    nan_in_window[cy + 40 + ys[0], cx + 40 + xs[0]] = np.nan  # an unmasked pixel near the beam
    blank = np.zeros_like(good)
    p = tmp_path / "bad.cxi"
    with CXIWriter(p, compression=None) as w:
        for d in (good, nan_in_window, blank):
            w.append(d, f0.meta, mask=f0.mask)
    fast, ref = Classifier(model), Classifier(model, fast=False)
    with open_source(str(p)) as src:
        pf, ef = predict_source(fast, src)
        pr, er = predict_source(ref, src)
    assert set(ef) == set(er) == {1, 2}
    assert "NaN" in ef[1] and "zero" in ef[2]
    assert np.isnan(pf[1:]).all() and np.isfinite(pf[0]).all()
    np.testing.assert_allclose(pf[0], pr[0], atol=1e-4)


def test_fast_preprocessor_is_a_drop_in(sim_frames):
    cfg = PreprocessConfig(out_size=128, s_per_px=PreprocessConfig.s_per_px * 4)
    ref, fast = Preprocessor(cfg), FastPreprocessor(cfg)
    crops = np.stack([ref.crop(f) for f in sim_frames])
    kept = crops.copy()
    np.testing.assert_allclose(fast.normalise(crops), ref.normalise(crops), atol=1e-4)
    np.testing.assert_array_equal(crops, kept)  # normalise does not touch its input
    rng = np.random.default_rng(0)
    assert fast.random_shifts(4, rng).shape == (4, 2)
    odd = replace(sim_frames[2], data=sim_frames[2].data[:, :901], mask=sim_frames[2].mask[:, :901])  # another shape
    _agree(odd, cfg, shifts=SHIFTS[:1])


@pytest.mark.parametrize("cfg", [CONFIGS[0], CONFIGS[4]], ids=["lcn", "linear"])
def test_torch_preprocessor_matches_reference_on_cpu(sim_frames, cfg):
    from reference.torch_preprocess import TorchPreprocessor

    frames = sim_frames + [sim_frames[0]]  # two frames share a plan: one batch
    fast = FastPreprocessor(cfg)
    plans = [fast.plan(f.meta, f.data.shape) for f in frames]
    got = TorchPreprocessor(cfg, device="cpu")([f.data for f in frames], [f.mask for f in frames], plans)
    ref = Preprocessor(cfg)(frames)
    np.testing.assert_allclose(got.numpy(), ref, rtol=0, atol=1e-4 if cfg.contrast == "lcn" else 1e-5)
