"""`diffscreen benchmark zimmermann2019 --quick`: the findings CI must reproduce."""

import numpy as np
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


def _m(a, p, r):
    return {"accuracy": a, "precision": p, "recall": r}


def _res(**table6):
    cells = {"none|image": _m(0.96, 0.93, 0.84), "none|ccf": _m(0.97, 0.94, 0.90),
             "max|image": _m(0.945, 0.885, 0.825), "max|ccf": _m(0.955, 0.91, 0.85)}
    return {"baseline": _m(0.8, 0.0, 0.0), "majority": _m(0.94, 0.88, 0.82), "table6": {**cells, **table6}}


def test_check_quick_rejects_contrary_findings():
    from diffscreen.benchmarks._harness import FindingNotReproduced
    from diffscreen.benchmarks.zimmermann2019 import check_quick, quick_checks, retention

    res = _res(**{"max|ccf": _m(0.945, 0.885, 0.825)})
    # CCF falls further (from higher up) to the same level: it keeps less of its skill -> must fail
    assert retention(res, "ccf") < retention(res, "image")
    with pytest.raises(FindingNotReproduced, match="ccf_keeps_more_skill_under_noise"):
        check_quick(res)
    res = _res()
    assert retention(res, "ccf") > retention(res, "image")
    assert all(c["holds"] for c in check_quick(res).values())
    res = _res(**{"none|image": _m(0.97, 0.995, 0.81)})  # recall below the majority-label predictor's
    checks = quick_checks(res)
    assert not checks["image_beats_majority_per_metric"]["holds"] and checks["learned"]["holds"]
    with pytest.raises(FindingNotReproduced, match="image_beats_majority_per_metric"):
        check_quick(res)


@pytest.mark.parametrize("predictor", ["all_negative", "majority"])
def test_every_quick_check_fails_for_a_trivial_predictor(predictor):
    """Networks that score as the all-negative (or majority-label) predictor fail every check, under python -O too."""
    import numpy as np

    from diffscreen.benchmarks._harness import FindingNotReproduced
    from diffscreen.benchmarks.zimmermann2019 import check_quick, quick_checks
    from diffscreen.evaluate.multilabel import CDI_CLASSES, all_negative_baseline, multilabel_metrics

    rng = np.random.default_rng(0)
    y = (rng.random((200, len(CDI_CLASSES))) < np.linspace(0.05, 0.9, len(CDI_CLASSES))).astype(np.uint8)
    base = {k: all_negative_baseline(y)[k] for k in ("accuracy", "precision", "recall")}
    majority = multilabel_metrics(y, np.broadcast_to(y.mean(0) > 0.5, y.shape).astype(float))
    majority = {k: majority[k] for k in ("accuracy", "precision", "recall")}
    assert base["precision"] == 0 and majority["precision"] > 0.5  # the majority passed the old thresholds
    trivial = base if predictor == "all_negative" else majority
    res = {"baseline": base, "majority": majority,
           "table6": {f"{n}|{m}": dict(trivial) for n in ("none", "max") for m in ("image", "ccf")}}
    checks = quick_checks(res)
    assert set(checks) == {"learned", "image_beats_majority_per_metric", "ccf_keeps_more_skill_under_noise"}
    assert not any(c["holds"] for c in checks.values()), checks
    with pytest.raises(FindingNotReproduced):
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


def test_quick_cli_exits_1_with_one_error_line_when_a_check_fails(tmp_path, monkeypatch, capsys):
    from diffscreen.benchmarks import zimmermann2019 as bench
    from diffscreen.cli import main

    res = _res(**{"max|ccf": _m(0.945, 0.885, 0.825)})  # CCF keeps less of its skill than images
    monkeypatch.setattr(bench, "run", lambda out, **kw: {**res, "markdown_path": str(out)})
    assert main(["benchmark", "zimmermann2019", "--quick", "--out", str(tmp_path)]) == 1
    out = capsys.readouterr()
    assert "FAIL ccf_keeps_more_skill_under_noise" in out.out and "ok   learned" in out.out
    assert "does not hold: ccf_keeps_more_skill_under_noise" in out.out + out.err
    monkeypatch.setattr(bench, "run", lambda out, **kw: {**_res(), "markdown_path": str(out)})
    assert main(["benchmark", "zimmermann2019", "--quick", "--out", str(tmp_path)]) == 0


def _seed_result(seed, ccf_max_acc):
    """A full-mode result of one seed with Table 6 cells only; the CCF network's max-noise accuracy varies."""
    m = {"none|image": _m(0.96, 0.93, 0.84), "none|ccf": _m(0.97, 0.94, 0.90),
         "max|image": _m(0.945, 0.885, 0.825), "max|ccf": _m(ccf_max_acc, 0.91, 0.85)}
    return {"seed": seed, "baseline": _m(0.8, 0.0, 0.0), "majority": _m(0.94, 0.88, 0.82),
            "table6": {k: {**v, "violation_rate_min": 0.01} for k, v in m.items()}}


def test_across_seeds_gives_each_number_its_interval_and_a_verdict_per_finding():
    from scipy import stats

    from diffscreen.benchmarks._harness import verdict
    from diffscreen.benchmarks.zimmermann2019 import across_seeds

    accs = [0.950, 0.952, 0.955]
    summ = across_seeds([_seed_result(s, a) for s, a in enumerate(accs)])
    cell = summ["table6"]["max|ccf"]["accuracy"]
    h = stats.t.ppf(0.975, 2) * np.std(accs, ddof=1) / np.sqrt(3)
    assert cell["values"] == accs
    assert cell["mean"] == pytest.approx(np.mean(accs))
    assert cell["ci95"] == pytest.approx([np.mean(accs) - h, np.mean(accs) + h])
    assert summ["table6"]["none|image"]["recall"]["ci95"] == pytest.approx([0.84, 0.84])  # equal at every seed
    # images lose 2.730 - 2.655 = 0.075 of the three-metric sum; CCF maps 2.810 - (a + 1.760) = 1.05 - a
    cost = summ["effects"]["noise_cost_image_minus_ccf"]
    assert cost["values"] == pytest.approx([0.075 - (1.05 - a) for a in accs])
    assert verdict(cost) == "the opposite holds"  # every value negative: CCF maps lose more here
    gap = summ["effects"]["max_noise_ccf_minus_image"]  # (a + 1.760) - 2.655 > 0 at every seed
    assert verdict(gap) == "holds"
    assert "accuracy_alpha02_minus_unmodified" not in summ["effects"]  # no Table 4 in these results
    mixed = across_seeds([_seed_result(s, a) for s, a in enumerate([0.90, 0.99, 0.93])])
    assert verdict(mixed["effects"]["retention_ccf_minus_image"]).startswith("not established")
    with pytest.raises(ValueError, match="table6 cells differ"):
        across_seeds([_seed_result(0, 0.95), {**_seed_result(1, 0.95), "table6": {}}])


def test_seeds_report_states_intervals_and_resumes_from_each_seeds_result(tmp_path):
    """run_seeds takes each seed's result from its cache (no training here) and writes md + JSON that agree."""
    import json

    from diffscreen.benchmarks import zimmermann2019 as bench
    from diffscreen.benchmarks._harness import digest
    from diffscreen.simulate.cdi import TABLE1_FRACTIONS

    work = tmp_path / "work"
    work.mkdir()
    accs = [0.950, 0.952, 0.955]
    for s, a in zip((5, 6, 7), accs):
        res = _seed_result(s, a)
        res.update(config=bench.FULL, sim_fps=100.0, label_freq={n: 0.5 for n in TABLE1_FRACTIONS}, threads=1,
                   seconds=60.0, noise_bounds={"mean": 1.0, "mean+std": 2.0, "max": 10.0}, ccf_ms=1.0,
                   prep_ms_image=0.1, fig5=None)
        (work / f"seed{s}_{digest(bench.FULL)}.json").write_text(json.dumps(res))
    out = tmp_path / "out"
    combined = bench.run_seeds(out, [5, 6, 7], work=work, log=lambda *a: None)
    md = (out / "zimmermann2019.md").read_text()
    saved = json.loads((out / "zimmermann2019.json").read_text())
    assert saved["seeds"] == [5, 6, 7] and [r["seed"] for r in saved["per_seed"]] == [5, 6, 7]
    iv = combined["summary"]["table6"]["max|ccf"]["accuracy"]
    assert f"{iv['mean']:.3f} [{iv['ci95'][0]:.3f}, {iv['ci95'][1]:.3f}]" in md
    assert saved["summary"]["table6"]["max|ccf"]["accuracy"]["ci95"] == pytest.approx(iv["ci95"])
    assert "| at the maximum noise the CCF network scores" in md and "| holds |" in md
    assert "## Seed 5 in detail" in md and "### Table 6" in md


def test_committed_report_is_what_its_json_writes():
    """docs/benchmarks/zimmermann2019.md is the markdown of the committed zimmermann2019.json."""
    import json
    from pathlib import Path

    from diffscreen.benchmarks import zimmermann2019 as bench

    docs = Path(__file__).resolve().parents[1] / "docs" / "benchmarks"
    combined = json.loads((docs / "zimmermann2019.json").read_text())
    assert len(combined["seeds"]) >= 3
    assert bench._markdown_seeds(combined) == (docs / "zimmermann2019.md").read_text()
    again = bench.across_seeds(combined["per_seed"])
    for name, iv in again["effects"].items():
        assert iv["ci95"] == pytest.approx(combined["summary"]["effects"][name]["ci95"])
