"""The Ke et al. (2018) benchmark: its scores, findings and report (the full run is in docs/benchmarks)."""

import json

import numpy as np
import pytest

from diffscreen.benchmarks import ke2018
from diffscreen.errors import ConfigError
from diffscreen.evaluate.metrics import keep_scores, kept_scores


def test_scores_follow_ke_eq_10_and_the_keep_decision():
    # probabilities (hit, maybe, miss); truth 0 = hit, 1 = maybe, 2 = miss
    probs = np.array([[0.5, 0.2, 0.3], [0.1, 0.3, 0.6], [0.2, 0.35, 0.45], [0.1, 0.1, 0.8], [0.3, 0.3, 0.4]])
    truth = np.array([0, 1, 1, 2, 2])
    s = keep_scores(probs, truth)
    # keep = P(hit) + P(maybe) > P(miss): kept frames 0, 2, 4
    assert s["success_rate"] == pytest.approx(100 * 3 / 5)
    assert s["kept_of_hit_or_maybe"] == pytest.approx(100 * 2 / 3) and s["kept_of_miss"] == pytest.approx(50.0)
    assert s["balanced_success"] == pytest.approx(100 * (2 / 3 + 1 / 2) / 2)
    assert s["accuracy_3class"] == pytest.approx(100 * 3 / 5)  # argmax right for frames 0, 3 and 4
    # a spot-finder's decision, given as kept or not: frames 1 and 3 kept -> one hit-or-maybe of 3, one miss of 2
    k = kept_scores(np.array([False, True, False, True, False]), truth)
    assert k == pytest.approx({"success_rate": 40.0, "kept_of_hit_or_maybe": 100 / 3, "kept_of_miss": 50.0})


def test_split_is_50_20_30_in_frame_order():
    split = ke2018._split_of(10)
    assert split.tolist() == [0] * 5 + [1] * 2 + [2] * 3


def test_presets_of_one_run_draw_from_their_own_streams():
    """Frame i of two presets must not share its draws (orientation, class, noise): each preset its own seed."""
    from diffscreen.simulate import Simulator

    seeds = {p: ke2018.preset_seed(2018, p) for p in ("LN83", "LN84", "LO19", "L498", "LG36")}
    assert len(set(seeds.values())) == 5 and seeds["LN83"] == ke2018.preset_seed(2018, "LN83")
    assert ke2018.preset_seed(2019, "LN83") != seeds["LN83"]
    # two Rayonix presets with one class mix: the same seed draws the same classes frame by frame
    def kinds(preset, seed):
        sim = Simulator(preset, seed=seed, class_fractions=(0.3, 0.3, 0.4))
        return [sim.frame(i).kind for i in range(12)]

    same = [kinds(p, 2018) for p in ("LN83", "LN84")]
    own = [kinds(p, seeds[p]) for p in ("LN83", "LN84")]
    assert same[0] == same[1] and own[0] != own[1]


def _results(**over):
    t3 = {"L498": {"keep_recall_cnn": 70.0, "pf8_ke": {"kept_of_hit_or_maybe": 15.0}}}
    r = {
        "table3": t3,
        "table8": {"Rayonix": {"lcn_balanced": 90.0, "linear_balanced": 70.0},
                   "L498": {"lcn_balanced": 80.0, "linear_balanced": 75.0}},
        "table5_balanced": {"Rayonix": {"Rayonix": 92.0, "L498": 55.0}, "L498": {"Rayonix": 60.0, "L498": 80.0}},
    }
    r.update(over)
    return r


def test_findings_hold_on_paper_like_numbers_and_fail_otherwise():
    f = ke2018.check_findings(_results())
    assert set(f) == {"cnn_beats_spotfinder_on_weak_spots", "lcn_beats_linear", "cross_detector_drop"}
    assert all(v["holds"] for v in f.values())
    bad = _results(table5_balanced={"Rayonix": {"Rayonix": 92.0, "L498": 85.0}, "L498": {"Rayonix": 60.0, "L498": 80.0}})
    assert not ke2018.check_findings(bad)["cross_detector_drop"]["holds"]
    bad = _results(table3={"L498": {"keep_recall_cnn": 10.0, "pf8_ke": {"kept_of_hit_or_maybe": 15.0}}})
    assert not ke2018.check_findings(bad)["cnn_beats_spotfinder_on_weak_spots"]["holds"]


def test_ke_table2_settings_and_paper_tables_are_complete():
    assert set(ke2018.KE_TABLE2) == set(ke2018.PAPER["table3"]) == {"L498", "LG36", "LN84", "LN83", "LO19"}
    assert ke2018.KE_TABLE2["L498"] == (4.55, 100, 6, 3)  # gain, threshold ADU, sigma strong, min area
    assert ke2018.PAPER["table8"]["L498"] == (68, 81)


def test_unknown_preset_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="CXIDB-76"):
        ke2018.run(tmp_path, settings=ke2018.Settings(presets=("pilatus",)))


def test_no_throughput_frames_is_refused_before_any_work(tmp_path):
    with pytest.raises(ConfigError, match="n_throughput=0"):
        ke2018.run(tmp_path, settings=ke2018.Settings(presets=("LO19",), n_throughput=0))
    assert not (tmp_path / "work").exists()


def test_table7_is_left_out_when_no_rayonix_preset_trains_its_models(tmp_path):
    """Table 7's size models train only with a Rayonix preset beside LG36; without one the table is empty (it
    used to be scored for models never trained: KeyError 'size6')."""
    st = ke2018.Settings(presets=("LG36",), n_frames=20, epochs=1, batches_per_epoch=1, batch_size=4,
                         train_sizes=(6,), n_tune=4, pf8_adc_sigmas=(3.0,), pf8_min_snrs=(5.0,), n_throughput=1,
                         class_fractions=(0.4, 0.2, 0.4))
    res = ke2018.run(tmp_path / "out", settings=st, workers=1, log=lambda *a: None)
    assert res["table7"] == {} and "LG36" in res["table3"]
    assert "Table 7" not in (tmp_path / "out" / "ke2018.md").read_text()


def test_dihedral_augment_gives_flips_and_rotations_of_each_frame():
    from diffscreen.train.loop import dihedral_augment

    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 1, 5, 5)).astype(np.float32)
    out = dihedral_augment(x, np.random.default_rng(1))
    assert out.shape == x.shape and out.dtype == np.float32
    seen = set()
    for a, b in zip(x[:, 0], out[:, 0]):
        variants = [np.rot90(a, k) for k in range(4)] + [np.rot90(a[:, ::-1], k) for k in range(4)]
        matches = [k for k, v in enumerate(variants) if np.array_equal(v, b)]
        assert len(matches) == 1  # each output is exactly one of the 8 views of its own frame
        seen.add(matches[0])
    assert seen == set(range(8))  # all eight occur in 64 draws


def _report_results():
    """The smallest results dict :func:`ke2018.write_report` accepts: one Rayonix and the two CSPAD presets."""
    pf8 = {"kept_of_hit_or_maybe": 50.0, "kept_of_miss": 5.0, "hit_recall": 60.0, "success_rate": 80.0,
           "settings": {"adc_threshold": 100.0, "min_snr": 6.0, "min_pixel_count": 2, "max_pixel_count": 30,
                        "min_peaks": 4}}
    cnn = {"kept_of_hit_or_maybe": 90.0, "kept_of_miss": 10.0}
    cells = {"Rayonix": 81.0, "LG36": 82.0, "L498": 83.0}
    return {
        "settings": {"presets": ["LO19", "LG36", "L498"], "n_frames": 40, "input_size": 360, "scale": 1.0,
                     "epochs": 1, "batches_per_epoch": 1, "batch_size": 4, "lr_start": 0.05, "lr_end": 1e-4,
                     "seed": 0},
        "quick": True, "seconds": 60.0,
        "throughput": {"frames": 3, "preset": "LO19", "frame_shape": [1920, 1920], "cnn_fps": 1.0,
                       "cnn720_fps": 1.0, "pf8_fps": 1.0, "pf8_fast_fps": 1.0},
        "table3": {p: {"cnn": cnn, "keep_recall_cnn": 90.0, "hit_recall_cnn": 95.0, "pf8_ke": pf8, "pf8_tuned": pf8}
                   for p in ("LO19", "LG36", "L498")},
        "table4": {"LO19": {"LO19": 93.0}},
        "table5": {g: dict(cells) for g in ("Rayonix", "LG36", "L498")},
        "table6": {g: dict(cells) for g in ("Rayonix", "Rayonix+LG36", "Rayonix+LG36+L498")},
        "table7": {},
        "table8": {"Rayonix": {"linear": 70.0, "lcn": 90.0}},
        "fig9": {p: {"miss": [0.9, 0.8], "hit_or_maybe": [0.7]} for p in ("LO19", "LG36", "L498")},
        "class_counts": {p: {"hit": 4, "maybe": 4, "miss": 4} for p in ("LO19", "LG36", "L498")},
        "findings": {},
    }


def test_report_puts_the_paper_beside_every_table_6_row(tmp_path):
    md = ke2018.write_report(_report_results(), tmp_path).read_text()
    t6 = md.split("## Table 6")[1].split("## Table 7")[0]
    # Ke et al. (2018) Table 6, rows 1-3, beside ours (81 / 82 / 83)
    assert "| Rayonix | 81 [91] | 82 [12] | 83 [41] |" in t6
    assert "| Rayonix+LG36 | 81 [94] | 82 [91] | 83 [54] |" in t6
    assert "| Rayonix+LG36+L498 | 81 [91] | 82 [94] | 83 [74] |" in t6
    assert "[–]" not in t6
    assert json.loads((tmp_path / "ke2018.json").read_text())["table6"]["Rayonix+LG36"]["L498"] == 83.0


def test_every_paper_table_6_row_names_a_trained_group():
    st = ke2018.Settings(presets=("LN84", "LN83", "LO19", "LG36", "L498"), train_sizes=())
    groups = {name for name, *_ in ke2018._jobs(st, ke2018.RAYONIX, [])}
    assert set(ke2018.PAPER["table6"]) <= groups


def _quick_findings(weak_holds: bool) -> dict:
    return {"cnn_beats_spotfinder_on_weak_spots": {"holds": weak_holds, "detail": "L498: CNN 73.7% vs 42.1%"},
            "lcn_beats_linear": {"holds": False, "detail": "LCN 65.7% vs linear 68.7%"},
            "cross_detector_drop": {"holds": False, "detail": "Rayonix->L498 73 < L498->L498 69"}}


def test_quick_asserts_only_findings_check_findings_makes():
    assert set(ke2018.ASSERTED) <= set(ke2018.check_findings(_results()))
    assert "lcn_beats_linear" not in ke2018.ASSERTED and "cross_detector_drop" not in ke2018.ASSERTED


def test_quick_report_marks_the_asserted_finding_and_says_why_the_others_are_not(tmp_path):
    r = {**_report_results(), "findings": _quick_findings(True)}
    md = ke2018.write_report(r, tmp_path).read_text()
    assert "holds: cnn beats spotfinder on weak spots (asserted by `--quick`)" in md
    assert "**does not hold**: lcn beats linear (" in md and "lcn beats linear (asserted" not in md
    assert "the only one that held at each of three quick seeds" in md
    full = ke2018.write_report({**r, "quick": False}, tmp_path / "full").read_text()
    assert "three quick seeds" not in full


@pytest.mark.parametrize("weak_holds, status", [(True, 0), (False, 1)])
def test_quick_cli_exits_1_only_when_an_asserted_finding_fails(tmp_path, monkeypatch, weak_holds, status):
    from diffscreen.cli import main

    def fake_run(out, **kw):
        assert kw["quick"] is True
        return {"seconds": 1.0, "findings": _quick_findings(weak_holds)}

    monkeypatch.setattr(ke2018, "run", fake_run)
    assert main(["benchmark", "ke2018", "--quick", "--out", str(tmp_path)]) == status


def test_table3_spotfinder_column_and_fig7_from_the_real_annotations(shared_data, tmp_path):
    """Ke Table 3's automatic spot-finding column, computed from the CXIDB-76 annotation files, is the paper's."""
    folder = shared_data / "cxidb76-annotations"
    if not folder.is_dir():
        pytest.skip("no cxidb76-annotations folder")
    ann = ke2018.annotation_table(folder)
    assert sorted(ann) == sorted(ke2018.PAPER["table3"])
    for run, r in ann.items():
        paper = ke2018.PAPER["table3"][run]
        assert round(r["kept_of_hit_or_maybe"], 1) == paper[2] and round(r["kept_of_miss"], 1) == paper[3], run
        assert sum(r["counts"].values()) == 2000
        assert [sum(h) for h in r["histogram"].values()] == list(r["counts"].values())
    assert ann["LO19"]["threshold"] == 50 and ann["LN83"]["threshold"] == 15
    ke2018._fig7(ann, tmp_path / "fig7.png")
    assert (tmp_path / "fig7.png").stat().st_size > 10_000


def test_seeds_report_gives_every_number_its_interval(tmp_path):
    """run_seeds reads each seed's cached results (no simulation, no training) and writes one report."""
    work = tmp_path / "work"
    work.mkdir()
    for i, cell in enumerate((91.0, 93.0, 95.0)):
        r = {**_report_results(), **_results(), "quick": False, "findings": {}}  # findings: run_seeds judges them
        r["table3"] = _report_results()["table3"]
        r["table8"] = {"Rayonix": {"linear": 70.0, "lcn": 90.0, "linear_balanced": 70.0, "lcn_balanced": 90.0}}
        for t in r["table3"].values():  # DIALS: defaults keep 95 % of hit-or-maybe and 2 % of misses; Ke's 40 / 0
            t["dials_default"] = {"kept_of_hit_or_maybe": 95.0, "kept_of_miss": 2.0, "hit_recall": 97.0,
                                  "success_rate": 96.0}
            t["dials_ke"] = {"kept_of_hit_or_maybe": 40.0, "kept_of_miss": 0.0, "hit_recall": 50.0,
                             "success_rate": 60.0, "failed": i}  # DIALS failed on i frames of each preset
        r["table3"]["L498"]["keep_recall_cnn"] = 60.0 + 10 * i  # peakfinder8 (Ke protocol) keeps 50 %
        r["table3"]["L498"]["cnn"] = {**r["table3"]["L498"]["cnn"], "kept_of_hit_or_maybe": 80.0 + 2 * i}
        r["table4"]["LO19"]["LO19"] = cell
        r["throughput"]["cnn_fps"] = 10.0 + i
        r["class_counts"]["L498"]["hit"] = 4 + i
        s = 2018 + i
        ke2018.seed_results_path(work, s).write_text(json.dumps(r))
    res = ke2018.run_seeds(tmp_path / "out", 3, work=work, log=lambda *a: None)
    md = (tmp_path / "out" / "ke2018.md").read_text()
    h = 4.303 * 2.0 / np.sqrt(3)
    assert res["table4"]["LO19"]["LO19"]["ci95"] == pytest.approx([93 - h, 93 + h], abs=0.01)
    assert f"| LO19 | 93 ({93 - h:.0f}–{93 + h:.0f}) [" in md
    assert "| CNN, 360² input (this benchmark's models) | 11.0 (8.5–13.5) |" in md
    assert "| L498 | 5 (3–7) | 4 | 4 |" in md  # counts that differ get an interval, equal ones stay
    assert "**not established**: cnn beats spotfinder on weak spots (held at 3 of 3 seeds" in md  # no --quick tag
    assert "L498: CNN - peakfinder8: 20.0 (-4.8–44.8), not established" in md
    assert res["findings"]["cnn_beats_spotfinder_on_weak_spots"]["held_at"] == 3
    assert res["findings"]["cnn_beats_spotfinder_on_weak_spots"]["holds"] is False  # the interval spans 0
    # the strongest spot-finder is DIALS with its defaults (balanced (95 + 98) / 2 = 96.5 %, tuned peakfinder8
    # 72.5 %): CNN (80 + 2i + 90) / 2 -> -11.5, -10.5, -9.5, an interval below 0
    strongest = res["findings"]["cnn_beats_strongest_spotfinder"]
    key = "L498: CNN - strongest spot-finder"
    assert strongest["effects"][key]["values"] == pytest.approx([-11.5, -10.5, -9.5])
    assert strongest["verdicts"][key] == "the opposite holds"
    assert "| peakfinder8, tuned | DIALS, defaults | DIALS, Ke Table 2 |" in md
    assert "DIALS failed on 3 frame(s) (per seed), counted as not kept." in md  # 1 per preset on average
    assert "| L498 | hit or maybe | 82.0 (77.0–87.0) [69.0] | 50.0 [12.8] | 50.0 | 95.0 | 40.0 |" in md


def test_dials_columns_count_the_test_frames_with_both_settings_and_are_cached(tmp_path, monkeypatch):
    """Table 3's DIALS columns: each test frame of the run (frames 7-9 of 10), DIALS's defaults with the run's
    gain and Ke Table 2's settings, cached so a rerun does not start DIALS."""
    import os
    from dataclasses import replace

    from diffscreen.baselines import dials as dials_mod
    from diffscreen.errors import ConfigError
    from diffscreen.simulate import Simulator

    try:
        dials_mod.find_dials_python()
    except ConfigError:
        if os.environ.get("DIFFSCREEN_REQUIRE_DIALS") == "1":
            raise
        pytest.skip("DIALS (python3-dials) is not installed")
    cfg = ke2018.dials_configs("L498")
    assert cfg["default"].gain == 4.55 and cfg["default"].global_threshold == 0.0
    assert cfg["ke"].global_threshold == pytest.approx(100 / 4.55) and cfg["ke"].min_spot_size == 3
    st = replace(ke2018.QUICK, presets=("L498",), n_frames=10)
    counts = ke2018.dials_counts("L498", st, tmp_path)
    sim = Simulator("L498", seed=ke2018.preset_seed(st.seed, "L498"), class_fractions=st.class_fractions)
    with dials_mod.DialsSpotFinder(cfg["ke"]) as finder:
        direct = [finder.find_spots(sim.frame(i).to_frame())["n_spots"] for i in (7, 8, 9)]
    assert counts["ke"].tolist() == direct and len(counts["default"]) == 3

    def no_dials(*a, **k):
        raise AssertionError("DIALS started although the counts are cached")

    monkeypatch.setattr(dials_mod, "DialsSpotFinder", no_dials)
    again = ke2018.dials_counts("L498", st, tmp_path)
    assert {k: v.tolist() for k, v in again.items()} == {k: v.tolist() for k, v in counts.items()}
