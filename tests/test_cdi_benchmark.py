"""`diffscreen benchmark zimmermann2019 --quick`: the findings CI must reproduce."""

import pytest


@pytest.mark.ci_slow
def test_quick_benchmark(tmp_path):
    import torch

    from diffscreen.benchmarks import zimmermann2019 as bench

    torch.set_num_threads(1)
    res = bench.run(tmp_path, quick=True, seed=0, log=lambda *a: None)
    bench.check_quick(res)  # CCF maps lose less under max noise; metrics beat all-negative widely
    md = (tmp_path / "zimmermann2019_quick.md").read_text()
    assert "0.944 / 0.905 / 0.814" in md  # paper's Table 6, max noise, CCF maps, beside ours
    assert "CCF maps (ring-normalised)" in md
    assert res["ccf_ms"] < 50
    assert res["baseline"]["precision"] == 0


def test_check_quick_rejects_contrary_findings():
    from diffscreen.benchmarks.zimmermann2019 import check_quick, retention

    def m(a, p, r):
        return {"accuracy": a, "precision": p, "recall": r}

    res = {"baseline": m(0.8, 0.0, 0.0), "majority": m(0.94, 0.88, 0.82),
           "table6": {"none|image": m(0.96, 0.93, 0.84), "none|ccf": m(0.97, 0.94, 0.90),
                      "max|image": m(0.945, 0.885, 0.825), "max|ccf": m(0.945, 0.885, 0.825)}}
    # CCF falls further (from higher up) to the same level: it keeps less of its skill -> must fail
    assert retention(res, "ccf") < retention(res, "image")
    with pytest.raises(AssertionError):
        check_quick(res)
    res["table6"]["max|ccf"] = m(0.955, 0.91, 0.85)
    assert retention(res, "ccf") > retention(res, "image")
    check_quick(res)
    res["table6"]["none|image"] = m(0.82, 0.9, 0.8)  # worse than all-negative + 0.05
    with pytest.raises(AssertionError):
        check_quick(res)


def test_noise_bounds_are_medians():
    import numpy as np

    from diffscreen.benchmarks.zimmermann2019 import add_uniform_noise, noise_bounds

    frames = np.stack([np.full((4, 4), v, np.float32) for v in (1.0, 2.0, 10.0)])
    frames[2, 0, 0] = 100.0
    b = noise_bounds(frames)
    assert b["mean"] == pytest.approx(2.0) and b["max"] == pytest.approx(2.0) and b["mean+std"] == pytest.approx(2.0)
    frames[1, 1, 1] = 50.0  # now image 1 has max 50: median of (1, 50, 100)
    assert noise_bounds(frames)["max"] == pytest.approx(50.0)
    n = add_uniform_noise(frames, 3.0, seed=0)
    assert (n >= frames).all() and (n <= frames + 3).all() and frames[0, 0, 0] == 1.0
