"""Leave-one-family-out benchmark (issue 13): its scores, intervals, metadata faults and a tiny run."""

import json
import math

import numpy as np
import pytest

from diffscreen.benchmarks import generalisation as g
from diffscreen.evaluate.metrics import keep_balanced_accuracy, kept_balanced_accuracy, t_interval
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
        kept, rejected = r["kept_per_seed"][0], r["rejected_per_seed"][0]
        if not math.isnan(v):  # the balanced accuracy of the keep decision is the mean of the two rates
            assert v == pytest.approx((kept + rejected) / 2)
        # the model trained without the family really left it out
        from diffscreen.models import load_model

        meta = load_model(r["models"][0]).meta
        data = meta["training"]["data"]
        assert data["left_out"] == fam and all(p not in data["presets"] for p in r["presets"])
        # by default the benchmark trains what ships: the bundled default model's input
        from diffscreen.models import read_model_metadata, resolve_model_path
        from diffscreen.preprocess import PreprocessConfig

        shipped = PreprocessConfig.from_dict(read_model_metadata(resolve_model_path(None))["preprocess"])
        assert PreprocessConfig.from_dict(meta["preprocess"]) == shipped
    assert saved["settings"]["recipe"] == "default"
    md = g.report_markdown({**res, "seconds": 1.0})
    assert "| a | pilatus |" in md and "| b | eiger |" in md


def test_spot_finders_score_exactly_the_cnn_test_frames(tmp_path):
    """The spot-finder peers see the frames the CNN was tested on: same labels as make_inputs's test job."""
    from diffscreen.preprocess import PreprocessConfig
    from diffscreen.simulate.metadata import load_inputs, make_inputs

    settings = {"seeds": [0], "n_test": 6, "families": {"a": ["eiger"]}, "train_frames": {"pilatus": 10, "eiger": 10}}
    job = ("eiger", g.held_out_seed(0, 1), 6, False)
    cfg = PreprocessConfig.significance()
    _, y = load_inputs([make_inputs([job], tmp_path, cfg, workers=1, log=lambda *_: None)[job]])
    one = g._peer_job("eiger", g.held_out_seed(0, 1), 6, 0)
    assert one["labels"] == list(y)
    assert set(one["kept"]) == set(g.PEERS) - {"spots"} and len(one["kept"]["peakfinder8"]) == 6
    assert one["kept"]["dials"] == []
    counts = g.frame_spot_counts(settings, workers=1)
    from diffscreen.preprocess.spots import find_spots, ring_and_streak_spots
    from diffscreen.simulate.metadata import job_frames

    def off_features(fr):
        s = find_spots(fr)
        on_ring, on_streak = ring_and_streak_spots(s, fr)
        return len(s) - int((on_ring | on_streak).sum())

    frames = list(job_frames("eiger", g.held_out_seed(0, 1), 6, train=False))
    assert counts["counts"] == {f"eiger@{g.held_out_seed(0, 1)}": [off_features(fr) for fr, _, _ in frames]}
    assert counts["labels"] == {f"eiger@{g.held_out_seed(0, 1)}": list(y)}
    assert g.counted_as_now(counts)  # reused by a later run only while the spot finder's settings stay the same
    assert not g.counted_as_now({**counts, "config": {**counts["config"], "pixel_sigma": 3.0}})
    assert not g.counted_as_now({"counts": counts["counts"]})  # counted before the settings were recorded
    assert not g.counted_as_now({"counts": counts["counts"], "config": counts["config"]})  # without the labels
    calls = []
    res = g.spot_finder_peers(settings, n_dials=0, spot_counts=counts, workers=1, log=lambda *_: None,
                              progress=lambda **kw: calls.append(kw))
    assert calls == [{"total": 6}, {"advance": 6}]  # one job: the preset's 6 frames at the one seed
    assert set(res["families"]["a"]) == {"spots", "peakfinder8"}  # no DIALS asked for
    kept = np.array(next(iter(counts["counts"].values()))) >= g.SPOT_KEEP  # the spot count: its counts' rule
    want = kept_balanced_accuracy(kept, y)
    got = res["families"]["a"]["spots"]["per_seed"][0]
    assert (math.isnan(want) and math.isnan(got)) or got == want
    for r in res["families"]["a"].values():
        v = r["per_seed"][0]
        assert math.isnan(v) or 0.0 <= v <= 1.0


def test_noisy_label_keep_is_the_label_without_noise_and_a_binomial_with_it():
    rng = np.random.default_rng(3)
    keep = dict(snr_threshold=5.0, min_spots=4, rng=rng)
    assert g.noisy_label_keep(np.array([9.0, 8.0, 7.0, 5.1, 2.0]), draws=50, sd=0.0, **keep) == 1.0
    assert g.noisy_label_keep(np.array([9.0, 8.0, 7.0, 4.9, 2.0]), draws=50, sd=0.0, **keep) == 0.0
    assert g.noisy_label_keep(np.array([]), draws=50, **keep) == 0.0
    # four spots exactly at the threshold: each is measured above it half the time, so all four 1/16 of the time
    p = g.noisy_label_keep(np.full(4, 5.0), draws=40000, **keep)
    assert abs(p - 1 / 16) < 0.006
    # a fifth spot one σ below: the four all measured above, or three of them and the fifth
    from scipy.stats import norm

    want = 1 / 16 + 4 / 16 * norm.sf(1.0)
    assert abs(g.noisy_label_keep(np.array([5.0, 5.0, 5.0, 5.0, 4.0]), draws=40000, **keep) - want) < 0.006


def test_noise_ceiling_keeps_hits_and_drops_frames_without_spots(tmp_path):
    """The ceiling reads each spot's SNR (a broken column, e.g. the intensity, keeps every frame with 4 spots)."""
    job = g._ceiling_job("pilatus", g.held_out_seed(0, 0), 12, 20)
    from diffscreen.simulate.metadata import job_simulator

    sim = job_simulator("pilatus", g.held_out_seed(0, 0))
    frames = [sim.frame(i) for i in range(12)]
    assert job["labels"] == [g.CLASSES.index(f.label) for f in frames]
    for f, p in zip(frames, job["p_keep"]):
        strong, weak = (f.peaks[:, 3] >= 8).sum(), (f.peaks[:, 3] >= 2).sum()
        if strong >= 10:
            assert p == 1.0
        if weak < 4:
            assert p < 0.05
    assert {"hit", "miss"} <= {f.label for f in frames}
    settings = {"seeds": [0], "n_test": 12, "families": {"a": ["pilatus"]}, "train_frames": {"pilatus": 10}}
    res = g.noise_ceiling(settings, draws=20, workers=1)
    y, p = np.array(job["labels"]) != 2, np.array(job["p_keep"])
    assert res["families"]["a"]["per_seed"][0] == pytest.approx((p[y].mean() + 1 - p[~y].mean()) / 2)


def test_spot_finder_section_says_better_only_where_the_paired_interval_excludes_zero():
    fams = {"a": {"presets": ["pilatus"], "per_seed": [0.60, 0.62, 0.61], "mean": 0.61, "ci95": [0.59, 0.63],
                  "per_preset": {}},
            "b": {"presets": ["eiger"], "per_seed": [0.80, 0.70, 0.90], "mean": 0.8, "ci95": [0.55, 1.05],
                  "per_preset": {}}}
    peer = {"a": {"spots": {"per_seed": [0.90, 0.91, 0.92], "mean": 0.91, "ci95": [0.89, 0.93]},
                  "peakfinder8": {"per_seed": [0.50, 0.51, 0.52], "mean": 0.51, "ci95": [0.49, 0.53]}},
            "b": {"spots": {"per_seed": [0.90, 0.60, 0.85], "mean": 0.78, "ci95": [0.4, 1.1]},
                  "peakfinder8": {"per_seed": [0.5, 0.5, 0.5], "mean": 0.5, "ci95": [0.5, 0.5]}}}
    res = {"settings": {"seeds": [0, 1, 2], "train_frames": {"pilatus": 1, "eiger": 1}, "n_test": 3, "epochs": 1,
                        "batches": 1, "preprocess": g.recipe_config("significance").to_dict()},
           "families": fams, "seconds": 1.0,
           "spot_finders": {"names": {k: v[0] for k, v in g.PEERS.items()}, "n_test": 3,
                            "rules": {k: v[1] for k, v in g.PEERS.items()}, "n_dials": 0, "dials_failed": 0,
                            "families": peer}}
    md = g.report_markdown(res)
    section = md.split("## Spot-finders on the same test frames")[1]
    diff_a = [line for line in section.splitlines() if line.startswith("| a |") and "CNN" not in line][-1]
    assert "better" in diff_a.split("|")[2] and "worse" in diff_a.split("|")[3]
    diff_b = [line for line in section.splitlines() if line.startswith("| b |")][-1]
    assert "not established" in diff_b.split("|")[2]  # spots − CNN: +0.10, -0.10, -0.05 spans 0
    assert ("diffscreen spot count: better than the CNN trained without the family in 1 of 2 families (a); worse in "
            "0 of 2 families.") in section
    assert "peakfinder8: better than the CNN trained without the family in 0 of 2 families; worse in 2 of 2 " \
           "families (a, b)." in section
    assert "best spot-finder mean in any family is 0.910 (diffscreen spot count, a): none reaches" in section


def test_ceiling_column_and_its_verdict_follow_the_intervals():
    fams = {f: {"presets": ["pilatus"], "per_seed": [0.6, 0.6, 0.6], "mean": 0.6, "ci95": [0.6, 0.6],
                "per_preset": {}} for f in "abc"}
    ceiling = {"draws": 20, "families": {"a": {"per_seed": [0.9] * 3, "mean": 0.90, "ci95": [0.88, 0.92]},
                                         "b": {"per_seed": [0.94] * 3, "mean": 0.94, "ci95": [0.90, 0.98]},
                                         "c": {"per_seed": [0.97] * 3, "mean": 0.97, "ci95": [0.96, 0.98]}}}
    res = {"settings": {"seeds": [0, 1, 2], "train_frames": {"pilatus": 1}, "n_test": 3, "epochs": 1, "batches": 1,
                        "preprocess": g.recipe_config("significance").to_dict()},
           "families": fams, "seconds": 1.0, "ceiling": ceiling}
    md = g.report_markdown(res)
    assert "| noise ceiling |" in md and "| a | pilatus | 0.600 [0.600, 0.600] | 0.600, 0.600, 0.600 | 0.900 [0.880, 0.920] |" in md
    assert "Its means lie between 0.900 and 0.970. In 1 of 3 families (a) its whole 95 % interval lies below 0.95" in md
    assert "In 1 (b) its mean lies below 0.95 and its interval reaches it" in md
    assert "Elsewhere its mean lies above 0.95." in md
    del ceiling["families"]["c"]  # a ceiling of other families: no column
    assert "noise ceiling" not in g.report_markdown(res)


def test_committed_reports_are_what_their_json_writes():
    """docs/benchmarks/generalisation*.md are report_markdown of the committed JSON (compared with the other
    recipe's run on the same test frames), spot-finder section included, and that section's verdicts follow from
    the seeds' own numbers."""
    from pathlib import Path

    docs = Path(__file__).resolve().parents[1] / "docs" / "benchmarks"
    runs = {p.stem: json.loads(p.read_text()) for p in sorted(docs.glob("generalisation*.json"))}
    assert "generalisation_significance" in runs
    for name, res in runs.items():
        assert g.report_name(g.recipe_of(res["settings"])) == name
        md = g.report_markdown(res, g.companion(res, runs.values()))
        assert md == (docs / f"{name}.md").read_text(), name
        sf = res["spot_finders"]["families"]
        assert set(sf) == set(res["families"]) and all(len(m["per_seed"]) == len(res["settings"]["seeds"])
                                                       for f in sf.values() for m in f.values())
    sig = runs["generalisation_significance"]
    d = np.subtract(sig["spot_finders"]["families"]["ccd"]["spots"]["per_seed"], sig["families"]["ccd"]["per_seed"])
    assert t_interval(d)[1] > 0  # the committed "better" in ccd: every seed's paired difference says so


def test_recipes_are_compared_seed_by_seed_only_on_the_same_test_frames():
    """The other recipe's section: a paired per-seed difference with a verdict, and nothing when the runs' test
    frames differ."""
    settings = {"seeds": [0, 1, 2], "train_frames": {"pilatus": 1, "eiger": 1}, "n_test": 3, "epochs": 1,
                "batches": 1, "families": {"a": ["pilatus"], "b": ["eiger"]}}

    def run(recipe, a, b):
        fams = {f: {"presets": [p], "per_seed": v, "mean": float(np.mean(v)), "ci95": list(t_interval(v)[1:]),
                    "per_preset": {}} for (f, p), v in zip((("a", "pilatus"), ("b", "eiger")), (a, b))}
        pre = {"contrast": "lcn" if recipe == "default" else "snr", "out_size": 720 if recipe == "default" else 360,
               "s_per_px": g.recipe_config(recipe).s_per_px}
        return {"settings": {**settings, "recipe": recipe, "preprocess": pre}, "families": fams, "seconds": 60.0}

    lcn = run("default", [0.70, 0.72, 0.71], [0.6, 0.9, 0.7])
    snr = run("significance", [0.60, 0.61, 0.62], [0.7, 0.7, 0.7])
    assert g.companion(lcn, [lcn, snr]) is snr and g.companion(snr, [lcn, snr]) is lcn
    md = g.report_markdown(lcn, snr)
    assert "GCN + LCN (Ke et al. 2018 Eqs. 6–9), 720² at Ke's reciprocal pixel" in md
    section = md.split("## The other recipe on the same test frames")[1]
    row_a = next(line for line in section.splitlines() if line.startswith("| a |"))
    row_b = next(line for line in section.splitlines() if line.startswith("| b |"))
    assert "better" in row_a and "not established" in row_b  # b: -0.1, +0.2, 0.0 spans 0
    assert "default recipe is better in 1 of 2 families (a) and worse in 0" in section
    back = g.report_markdown(snr, lcn)
    assert "360² at 2× Ke's reciprocal pixel" in back.split("## The other recipe")[0]
    assert "720² at Ke's reciprocal pixel" in back.split("## The other recipe")[1]
    moved = {**snr, "settings": {**snr["settings"], "n_test": 4}}  # other test frames: no comparison
    assert g.companion(lcn, [moved]) is None and "## The other recipe" not in g.report_markdown(lcn, moved)
    peers = {"n_dials": 20, "families": {}}  # the spot-finders' scores are reused only for the same frames
    runs = [moved | {"spot_finders": {"n_dials": 20}}, snr | {"spot_finders": peers}]
    assert g.earlier_peers(lcn["settings"], runs, 20) is peers
    assert g.earlier_peers(lcn["settings"], runs, 0) is None and g.earlier_peers(lcn["settings"], runs[:1], 20) is None
    # with this run's spot counts, the reused peers' diffscreen spot count is scored from them, the others kept
    old = {f: {"spots": {"mean": 0.0}, "peakfinder8": {"mean": 0.4}} for f in "ab"}
    runs[1] = snr | {"spot_finders": {"n_dials": 20, "families": old}}
    counts = {"counts": {}, "labels": {}}
    for s in settings["seeds"]:
        for k, p in enumerate(settings["train_frames"]):  # every frame kept by the count: 1 hit, 2 misses -> 0.5
            key = f"{p}@{g.held_out_seed(s, k)}"
            counts["counts"][key], counts["labels"][key] = [9, 9, 9], [0, 2, 2]
    got = g.earlier_peers(lcn["settings"], runs, 20, counts)["families"]
    assert got == {f: {"spots": {"per_seed": [0.5] * 3, "mean": 0.5, "ci95": [0.5, 0.5]},
                       "peakfinder8": {"mean": 0.4}} for f in "ab"}
    assert old["a"]["spots"] == {"mean": 0.0}  # the earlier run's result is not changed
    assert g.earlier_peers(lcn["settings"], runs, 20, {"counts": counts["counts"]})["families"] is old  # no labels
    with pytest.raises(Exception, match="unknown recipe"):
        g.recipe_config("fancy")


def _spot_map_bench():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "bench" / "spot_map_lofo.py"
    spec = importlib.util.spec_from_file_location("bench_spot_map_lofo", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_spot_map_marks_each_spot_centroid_with_its_snr():
    """The spot-map experiment's input: log(1 + SNR) at the spot finder's centroids, 0 elsewhere, mask cleared."""
    from diffscreen.preprocess.spots import find_spots
    from diffscreen.simulate.metadata import job_simulator

    fr = job_simulator("eiger", 5).frame(0, kind="hit").to_frame()
    sp, sm = find_spots(fr), _spot_map_bench().spot_map(fr)
    assert len(sp) > 0 and sm.data.shape == fr.data.shape and not sm.mask.any()
    r, c = np.rint(sp.y).astype(int), np.rint(sp.x).astype(int)
    assert np.count_nonzero(sm.data) == len(set(zip(r.tolist(), c.tolist())))
    assert sm.data.max() == pytest.approx(np.log1p(sp.snr.max()), rel=1e-6)


def test_committed_spot_map_report_is_what_its_json_writes():
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    bench = _spot_map_bench()
    res = json.loads((root / "bench" / "results" / "spot_map_lofo.json").read_text())
    committed = json.loads((root / "docs" / "benchmarks" / "generalisation_significance.json").read_text())
    assert bench.markdown(res, committed) == (root / "docs" / "spot_map.md").read_text()
    assert len(res["families"]["ccd"]["per_seed"]) >= 3
