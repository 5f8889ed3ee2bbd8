"""The Xie et al. (2022) benchmark: paper numbers, splits, scores, findings and report."""

import json

import numpy as np
import pytest

from diffscreen.benchmarks import xie2022
from diffscreen.errors import ConfigError

RAY = ("LN83", "LN84", "LO19")


def test_paper_numbers_cover_every_cell_of_tables_1_to_5_and_7():
    P = xie2022.PAPER
    assert set(P["table1"]) == set(RAY) and all(set(r) == set(RAY) for r in P["table1"].values())
    assert set(P["table2"]) == set(P["table4"]) == set(RAY)
    assert {(s, t) for s, r in P["table3"].items() for t in r} == {(s, t) for s in RAY for t in RAY if s != t}
    assert set(P["table5"]) == {(s, t) for s in RAY for t in RAY if s != t}
    assert all(set(r) == {s, t} for (s, t), r in P["table5"].items())  # scores on source and target
    assert set(P["table7"]) == set(RAY)
    for a, r in P["table7"].items():
        assert set(r) == {"rwd", "cnn"} and all(set(v) == set(RAY) - {a} for v in r.values())
    cells = [P["table1"][a][b] for a in RAY for b in RAY] + [P["table2"][t] for t in RAY] + \
        [P["table4"][t] for t in RAY] + [v for r in P["table3"].values() for v in r.values()] + \
        [v for r in P["table5"].values() for v in r.values()] + \
        [v for r in P["table7"].values() for m in r.values() for v in m.values()]  # fmt: skip
    assert len(cells) == 9 + 3 + 3 + 6 + 12 + 12
    assert all(len(c) == 2 and all(0 < v <= 100 for v in c) for c in cells)
    # spot checks against the paper's text
    assert P["table1"]["LN83"]["LO19"] == (70.37, 99.58)
    assert P["table5"][("LN83", "LO19")]["LO19"] == (89.67, 98.39)  # the 89.67 % vs 70.37 % of §3.4.3
    assert P["table4"]["LN84"] == (94.95, 86.19)
    # Table 7's 2-D CNN rows are Table 1's off-diagonal cells (the same 1200-label models)
    for a in RAY:
        for b in set(RAY) - {a}:
            assert P["table7"][a]["cnn"][b] == P["table1"][a][b]


def test_label_split_is_disjoint_seeded_and_refuses_too_many_labels():
    split = np.array([0] * 50 + [1] * 20 + [2] * 30)
    a = xie2022.label_split(split, "LN84", 20, 10, seed=1)
    assert len(a["labelled"]) == 20 and len(set(a["labelled"])) == 20
    assert set(a["labelled"]) <= set(range(50)) and a["unlabelled"].tolist() == list(range(50))
    assert a["val"].tolist() == list(range(50, 60)) and a["test"].tolist() == list(range(70, 100))
    assert a["labelled"].tolist() != list(range(20))  # a random draw, not the first frames
    b = xie2022.label_split(split, "LN84", 20, 10, seed=1)
    assert np.array_equal(a["labelled"], b["labelled"])
    c = xie2022.label_split(split, "LO19", 20, 10, seed=1)
    assert not np.array_equal(a["labelled"], c["labelled"])  # each preset its own draw
    with pytest.raises(ConfigError, match="51 labelled"):
        xie2022.label_split(split, "LN84", 51, 10, seed=1)


def test_per_class_scores_are_xie_recall_and_miss_rate():
    probs = np.array([[0.5, 0.2, 0.3], [0.1, 0.3, 0.6], [0.2, 0.35, 0.45], [0.1, 0.1, 0.8], [0.3, 0.3, 0.4]])
    truth = np.array([0, 1, 1, 2, 2])  # kept: frames 0, 2, 4
    s = xie2022._per_class(probs, truth)
    assert s["hit_or_maybe"] == pytest.approx(100 * 2 / 3)
    assert s["miss"] == pytest.approx(50.0)  # frame 3 rejected, frame 4 kept
    assert s["balanced"] == pytest.approx((100 * 2 / 3 + 50) / 2)
    assert s["hit"] == pytest.approx(100.0)


def _row(hm, miss):
    return {"hit_or_maybe": hm, "miss": miss, "balanced": (hm + miss) / 2, "accuracy": 0.0, "hit": hm, "n": 10}


def _results(transfer=(90.0, 90.0), scratch=(60.0, 95.0), dann=80.0, source_only=40.0, same_dann=95.0,
             no_grl=(70.0, 80.0)):
    return {
        "table1": {"LN84": {"LN84": _row(95, 95), "L498": _row(source_only, 90), "LN83": _row(90, 99)}},
        "table2": {"L498": _row(*scratch), "LN83": _row(70, 99)},
        "table3": {"LN84->L498": {"source": "LN84", "target": "L498", **_row(*transfer)},
                   "LN84->LN83": {"source": "LN84", "target": "LN83", **_row(92, 96)}},
        "table4": {"L498": _row(80, 80)},
        "table5": {"LN84->L498": {"source": "LN84", "target": "L498", "on_source": _row(93, 95),
                                  "on_target": _row(dann, 80), "no_grl_on_target": _row(*no_grl)},
                   "LN84->LN83": {"source": "LN84", "target": "LN83", "on_source": _row(93, 95),
                                  "on_target": _row(same_dann, 90)}},
    }  # fmt: skip


def test_findings_hold_on_paper_like_numbers_and_fail_otherwise():
    f = xie2022.check_findings(_results())
    assert set(xie2022.ASSERTED) <= set(f)
    assert all(f[n]["holds"] for n in xie2022.ASSERTED)
    assert f["dann_recall_beats_source_only_same_detector"]["holds"]  # 95 > 90 on LN84 -> LN83
    assert "LN84->L498: DANN 80.0% vs source-only 40.0%" in f["dann_recall_beats_source_only"]["detail"]
    # transfer no better than scratch (balanced 77.5 both ways) -> fails
    assert not xie2022.check_findings(_results(transfer=(60.0, 95.0)))["transfer_beats_scratch"]["holds"]
    # DANN keeps fewer target hits than the source-only CNN -> fails, whatever its miss rate
    assert not xie2022.check_findings(_results(dann=30.0))["dann_recall_beats_source_only"]["holds"]
    # the asserted DANN finding is judged on the cross-detector pair only
    f = xie2022.check_findings(_results(same_dann=50.0))
    assert f["dann_recall_beats_source_only"]["holds"]
    assert not f["dann_recall_beats_source_only_same_detector"]["holds"]
    assert not xie2022.check_findings(_results(scratch=(90.0, 90.0)))["rwd_beats_scratch"]["holds"]
    # the ablation: the DANN (balanced 80) against the same training with λ = 0
    assert f["grl_beats_no_grl"]["holds"] and "balanced DANN 80.0% vs λ = 0 75.0%" in f["grl_beats_no_grl"]["detail"]
    assert not xie2022.check_findings(_results(no_grl=(90.0, 80.0)))["grl_beats_no_grl"]["holds"]


def _report_results():
    r = _results()
    rng = np.random.default_rng(0)
    r["table1"]["LN84"]["LN84"] = _row(97.5, 88.25)
    r["table7"] = {"LN84": {"rwd": {"L498": _row(70, 70), "LN83": _row(91, 92)},
                            "cnn": {"L498": _row(40, 90), "LN83": _row(90, 99)}}}  # fmt: skip
    r["table2"]["LN84"] = _row(50, 99)
    r.update(
        settings={"data": {"n_frames": 1000, "input_size": 360, "scale": 1.0, "epochs": 30, "batches_per_epoch": 25,
                           "batch_size": 32}, "n_labels": 200, "n_val": 200,
                  "epochs": 15, "batches_per_epoch": 20, "batch_size": 32, "seed": 2022,
                  "pairs": [["LN84", "L498"], ["LN84", "LN83"]]},
        quick=False, seconds=600.0, training_seconds=500.0,
        speed={"n": 64, "input": [1, 360, 360], "cnn2d_per_s": 50.0, "rwd1d_per_s": 1000.0, "ratio": 20.0},
        fig9={"LN84->L498": {"source": "LN84", "target": "L498", "labels": rng.integers(0, 3, 40).tolist(),
                             "domain": [0] * 20 + [1] * 20,
                             "dann": {"embedding": rng.normal(size=(40, 2)).tolist(), "domain_accuracy": 55.0},
                             "cnn": {"embedding": rng.normal(size=(40, 2)).tolist(), "domain_accuracy": 95.0}}},
        dann_history={"LN84->L498": [{"epoch": e, "label_loss": 1.0 / e, "domain_loss": 0.69, "domain_accuracy": 0.5}
                                     for e in range(1, 4)]},
        class_counts={"L498": {k: {"hit": 1, "maybe": 2, "miss": 3} for k in ("labelled", "val", "test")}},
    )  # fmt: skip
    r["findings"] = xie2022.check_findings(r)
    return r


def test_report_puts_our_numbers_beside_the_papers(tmp_path):
    r = _report_results()
    md = xie2022.write_report(r, tmp_path).read_text()
    # Table 1, LN84 on itself: ours then Xie's (94.91 / 97.83)
    assert "**97.5** / 88.2 [**94.91** / 97.83]" in md
    # Table 5: DANN LN84 -> LN83 on the target beside Xie's (92.18 / 91.77); L498 has no paper cell
    assert "| LN84 | LN83 | **93.0** / 95.0 [**92.59** / 97.28] | **95.0** / 90.0 [**92.18** / 91.77] |" in md
    assert "| LN84 | L498 | **93.0** / 95.0 | **80.0** / 80.0 | **70.0** / 80.0 | **40.0** / 90.0 |" in md
    # Table 7: the paper's RWD LN84 -> LN83 cell
    assert "**91.0** / 92.0 [**94.87** / 95.79]" in md
    assert "| 2-D CNN | 50.0 [126] |" in md and "| ratio | 20.0 [88] |" in md
    for png in ("xie2022_fig9_LN84_L498.png", "xie2022_fig10.png"):
        assert (tmp_path / png).stat().st_size > 1000 and png in md
    back = json.loads((tmp_path / "xie2022.json").read_text())
    assert back["table3"]["LN84->L498"]["balanced"] == 90.0
    assert "holds: transfer beats scratch (" in md and "transfer beats scratch (asserted" not in md
    assert "holds: dann recall beats source only (" in md and "(asserted by" not in md  # --quick asserts none
    assert "LN84→L498 (cross-detector), LN84→LN83." in md
    assert "(500 training + 200 validation labels; Xie: 1200 + 400)" in md


def test_run_refuses_unknown_presets_and_sources_without_a_cnn(tmp_path):
    with pytest.raises(ConfigError, match="CXIDB-76"):
        xie2022.run(tmp_path, settings=xie2022.Settings(targets=("pilatus",)))
    with pytest.raises(ConfigError, match="fully supervised"):
        xie2022.run(tmp_path, settings=xie2022.Settings(full_presets=("LN83",), pairs=(("LN84", "L498"),),
                                                        tsne_pairs=()))  # fmt: skip
    with pytest.raises(ConfigError, match="dann_init must be 'source' or 'scratch'"):
        xie2022.run(tmp_path, settings=xie2022.Settings(dann_init="pretrained"))
    assert not any(tmp_path.iterdir())  # nothing written before the settings are checked


@pytest.mark.slow
@pytest.mark.ci_slow
def test_quick_run_makes_every_experiment_and_judges_every_finding(tmp_path):
    """The CI run: LO19 (Rayonix) -> L498 (CSPAD), small runs (see docs/benchmarks/xie2022.md).

    It asserts no finding (none held by a safe margin at three quick seeds),
    but every model must be scored on L498's 60 test frames, each score must be
    Xie's pair (recall, miss rate) with its balanced mean, and every finding
    must be judged with its difference.
    """
    r = xie2022.run(tmp_path, quick=True, workers=2, log=lambda *a: None)
    f = r["findings"]
    cells = [r["table1"]["LO19"]["L498"], r["table2"]["L498"], r["table3"]["LO19->L498"], r["table4"]["L498"],
             r["table5"]["LO19->L498"]["on_target"], r["table5"]["LO19->L498"]["no_grl_on_target"]]
    for c in cells:
        assert c["n"] == 60 and c["balanced"] == pytest.approx((c["hit_or_maybe"] + c["miss"]) / 2)
    assert sum(r["class_counts"]["L498"]["test"].values()) == 60
    assert set(f) == {"transfer_beats_scratch", "dann_recall_beats_source_only", "grl_beats_no_grl",
                      "rwd_beats_scratch"}
    t = f["transfer_beats_scratch"]["effects"]["LO19->L498"]
    assert t == pytest.approx(r["table3"]["LO19->L498"]["balanced"] - r["table2"]["L498"]["balanced"])
    assert (tmp_path / "xie2022_fig9_LO19_L498.png").exists()
    assert "`--quick` asserts none of these findings" in (tmp_path / "xie2022.md").read_text()


def test_quick_asserts_no_finding():
    # none held by a safe margin at quick seeds 2022-2024 (docs/benchmarks/xie2022_notes.md), so --quick asserts none
    assert xie2022.ASSERTED == ()


def test_seeds_report_gives_every_cell_its_interval_and_each_pair_a_verdict(tmp_path):
    """run_seeds reads each seed's cached results (no training) and writes one report with intervals."""
    from diffscreen.benchmarks._harness import digest

    work = tmp_path / "work"
    work.mkdir()
    recalls = (93.0, 95.0, 97.0)  # DANN LN84 -> LN83 on the target; transfer beats scratch by 20, 25, 30 points
    for i, (rec, gain) in enumerate(zip(recalls, (20.0, 25.0, 30.0))):
        r = _report_results()
        r["table5"]["LN84->LN83"]["on_target"]["hit_or_maybe"] = rec
        r["table2"]["LN83"]["balanced"] = r["table3"]["LN84->LN83"]["balanced"] - gain
        r["findings"] = xie2022.check_findings(r)
        s = xie2022.seed_settings(i)
        (work / f"xie2022_results_seed{s.seed}_{digest(s)}.json").write_text(json.dumps({**r, "data_seed": s.data.seed}))
    res = xie2022.run_seeds(tmp_path / "out", 3, work=work, log=lambda *a: None)
    md = (tmp_path / "out" / "xie2022.md").read_text()
    assert res["seeds"] == [2022, 2023, 2024] and [r["data_seed"] for r in res["per_seed"]] == [2018, 2019, 2020]
    h = 4.303 * 2.0 / np.sqrt(3)  # t(0.975, 2) x sd 2 / sqrt 3
    assert res["table5"]["LN84->LN83"]["on_target"]["hit_or_maybe"]["ci95"] == pytest.approx([95 - h, 95 + h], abs=0.01)
    assert f"**95.0 ({95 - h:.1f}–{95 + h:.1f})** / 90.0 [**92.18** / 91.77]" in md  # equal at every seed: no interval
    assert "**3 seeds** (2022, 2023, 2024)" in md
    assert "seed 2022, 2023, 2024 on the simulated runs of ke2018's seeds 2018, 2019, 2020." in md
    t = res["findings"]["transfer_beats_scratch"]
    assert t["effects"]["LN84->LN83"]["values"] == pytest.approx([20.0, 25.0, 30.0])
    assert t["verdicts"]["LN84->LN83"] == "holds" and t["held_at"] == 3
    assert "held at 3 of 3 seeds" in md and "LN84->LN83: 25.0 (" in md
    assert json.loads((tmp_path / "out" / "xie2022.json").read_text())["seeds"] == [2022, 2023, 2024]
