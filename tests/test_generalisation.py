"""Leave-one-family-out benchmark (issue 13): its scores, intervals, metadata faults and a tiny run."""

import json
import math

import numpy as np
import pytest

from diffscreen.benchmarks import generalisation as g
from diffscreen.evaluate.metrics import keep_balanced_accuracy, t_interval
from diffscreen.simulate.metadata import META_FAULTS, randomise_meta
from diffscreen.io.frame import FrameMeta


def test_keep_balanced_accuracy_counts_hit_or_maybe_against_miss():
    y = np.array([0, 1, 2, 2, 2, 0])  # hit, maybe, miss x3, hit
    p = np.array([[0.9, 0.05, 0.05],   # kept, right
                  [0.2, 0.35, 0.45],   # hit + maybe 0.55 > 0.45: kept, right
                  [0.3, 0.1, 0.6],     # dropped, right
                  [0.3, 0.3, 0.4],     # kept: wrong
                  [0.0, 0.1, 0.9],     # dropped, right
                  [0.1, 0.1, 0.8]])    # dropped: wrong
    assert keep_balanced_accuracy(y, p) == pytest.approx((2 / 3 + 2 / 3) / 2)
    assert math.isnan(keep_balanced_accuracy(np.array([2, 2]), p[:2]))


def test_t_interval_is_students():
    m, lo, hi = t_interval([0.9, 0.92, 0.97])
    assert m == pytest.approx(0.93)
    # t(0.975, 2) = 4.303, sd = 0.03606, n = 3
    assert hi - m == pytest.approx(4.303 * 0.036056 / math.sqrt(3), rel=1e-3)
    assert m - lo == pytest.approx(hi - m)
    assert math.isnan(t_interval([0.5])[1])


def test_randomise_meta_draws_each_fault_and_never_touches_the_input():
    meta = FrameMeta("x.cxi", 3, pixel_size_mm=0.1, beam_centre_px=(500.0, 510.0), distance_mm=120.0,
                     wavelength_A=1.3)
    rng = np.random.default_rng(0)
    outs = [randomise_meta(meta, (1000, 1000), rng) for _ in range(2000)]
    assert meta.distance_mm == 120.0 and meta.beam_centre_px == (500.0, 510.0)  # input unchanged
    no_geom = np.mean([o.pixel_size_mm is None for o in outs])
    no_centre = np.mean([o.beam_centre_px is None for o in outs])
    moved = np.mean([o.beam_centre_px not in (None, (500.0, 510.0)) for o in outs])
    assert no_geom == pytest.approx(META_FAULTS["no_geometry"], abs=0.03)
    assert no_centre == pytest.approx(META_FAULTS["no_beam_centre"], abs=0.03)
    assert moved == pytest.approx((1 - META_FAULTS["no_beam_centre"]) * META_FAULTS["centre_error"], abs=0.03)
    d = [o.distance_mm for o in outs if o.distance_mm not in (None, 120.0)]
    assert d and 0.8 * 120 <= min(d) and max(d) <= 1.25 * 120


@pytest.mark.slow
@pytest.mark.ci_slow
def test_a_tiny_leave_one_out_run(tmp_path):
    res = g.run_generalisation(tmp_path / "w", tmp_path / "g.json", families={"a": ("pilatus",), "b": ("eiger",)},
                               seeds=(0,), n_train=10, n_test=10, epochs=1, batches=2, workers=1, threads=1,
                               log=lambda *_: None)
    saved = json.loads((tmp_path / "g.json").read_text())
    assert set(saved["families"]) == {"a", "b"}
    for fam, r in res["families"].items():
        assert len(r["per_seed"]) == 1
        v = r["per_seed"][0]
        assert math.isnan(v) or 0.0 <= v <= 1.0
        # the model trained without the family really left it out
        from diffscreen.models import load_model

        data = load_model(r["models"][0]).meta["training"]["data"]
        assert data["left_out"] == fam and all(p not in data["presets"] for p in r["presets"])
    md = g.report_markdown({**res, "seconds": 1.0})
    assert "| a | pilatus |" in md and "| b | eiger |" in md
