"""AlexNet (Nawaz et al. 2022 §3.2), the DiffraNet 5-class labels (§3.1) and the benchmark tables (§3.5)."""

import numpy as np
import pytest
import torch
from torch import nn

from diffscreen.errors import ConfigError
from diffscreen.models import get_model, list_models, load_model
from diffscreen.simulate.diffranet import (
    DIFFRANET_CLASSES,
    diffranet_kinds,
    diffranet_label,
    diffranet_label_from,
    hit_miss,
)


def test_alexnet_layout_and_size():
    assert "alexnet" in list_models()
    m = get_model("alexnet").eval()
    convs = [l for l in m.features if isinstance(l, nn.Conv2d)]
    assert [c.kernel_size[0] for c in convs] == [11, 5, 3, 3, 3] and convs[0].stride == (4, 4)
    assert convs[0].in_channels == 1 and len([l for l in m.classifier if isinstance(l, nn.Linear)]) == 3
    # torchvision AlexNet (61,100,840 parameters) with 1 input channel (-2 x 64 x 121) and 5 outputs
    # instead of 1000 (-995 x 4097)
    assert sum(p.numel() for p in m.parameters()) == 61_100_840 - 2 * 64 * 121 - 995 * 4097
    x = torch.randn(2, 1, 227, 227)
    with torch.no_grad():
        assert m(x).shape == (2, 5) and m.forward_features(x).shape == (2, 4096)
        # shapes of Nawaz Fig. 4 / Krizhevsky 2012 at 227: conv1 55->56 (torchvision padding 2), pool5 6x6
        assert m.features(x).shape == (2, 256, 6, 6)


def test_diffranet_label_rules():
    assert diffranet_label_from("no_beam", [50.0] * 300) == "blank"
    assert diffranet_label_from("solvent", []) == "no-crystal"
    assert diffranet_label_from("weak", [4.9, 3.0]) == "no-crystal"  # nothing detectable (SNR < 5)
    assert diffranet_label_from("weak", [5.0]) == "weak"
    assert diffranet_label_from("hit", [6.0] * 24) == "weak"
    assert diffranet_label_from("hit", [6.0] * 25) == "good"
    assert diffranet_label_from("hit", [6.0] * 500) == "good"  # many spots but too few bright ones
    assert diffranet_label_from("hit", [6.0] * 100 + [25.0] * 50) == "strong"
    assert diffranet_label_from("hit", [6.0] * 100 + [25.0] * 49) == "good"
    assert hit_miss(["blank", "no-crystal", "weak", "good", "strong"]) == ["miss", "miss", "hit", "hit", "hit"]
    with pytest.raises(ConfigError):
        diffranet_label_from("crystal", [])
    with pytest.raises(ConfigError):
        hit_miss(["hit"])
    kinds = diffranet_kinds(2000, seed=0)
    assert abs(kinds.count("no_beam") / 2000 - 0.2) < 0.03 and abs(kinds.count("hit") / 2000 - 0.4) < 0.03


def test_diffranet_label_of_simulated_frames():
    from diffscreen.simulate import Simulator

    sim = Simulator("rayonix", seed=2)
    assert diffranet_label(sim.frame(0, kind="no_beam")) == "blank"
    assert diffranet_label(sim.frame(1, kind="solvent")) == "no-crystal"
    sf = sim.frame(4, kind="hit")
    lab = diffranet_label(sf)
    n = int((sf.peaks[:, 3] >= 5).sum())
    b = int((sf.peaks[:, 3] >= 20).sum())
    assert n == sf.n_spots and n > 0
    assert lab == ("strong" if n >= 150 and b >= 50 else "good" if n >= 25 else "weak")


def test_per_class_table_reproduces_paper_table3():
    from diffscreen.benchmarks.nawaz2022 import PAPER_ACCURACY, PAPER_TABLE3, per_class_table

    t = per_class_table(PAPER_TABLE3, DIFFRANET_CLASSES)
    rows = {l.split("|")[1].strip(" *"): l for l in t.splitlines()[2:]}
    recall = [float(rows[c].split("|")[-2]) for c in DIFFRANET_CLASSES]
    precision = [float(v) for v in rows["precision (%)"].split("|")[2:7]]
    # Nawaz Table 3 prints recall 100, 99.9, 97.8, 95.8, 95.9 and precision 99.9, 99.3, 98.1, 95.7, 97.1
    np.testing.assert_allclose(recall, [100, 99.9, 97.8, 95.8, 95.9], atol=0.051)
    np.testing.assert_allclose(precision, [99.9, 99.3, 98.1, 95.7, 97.1], atol=0.16)  # paper rounds 99.76 up
    assert abs(100 * np.trace(PAPER_TABLE3) / PAPER_TABLE3.sum() - PAPER_ACCURACY) < 0.05


def test_confusion_scores_merge_hits_as_the_labels_do():
    """The hit / miss scores of a 5-class confusion equal those of the merged labels (models.diffranet.hit_miss)."""
    from diffscreen.benchmarks.nawaz2022 import PAPER_TABLE3, confusion_scores
    from diffscreen.evaluate.metrics import confusion_matrix

    rng = np.random.default_rng(3)
    true = list(rng.choice(DIFFRANET_CLASSES, 400))
    pred = list(rng.choice(DIFFRANET_CLASSES, 400))
    sc = confusion_scores(confusion_matrix(true, pred, DIFFRANET_CLASSES))
    b = confusion_matrix(hit_miss(true), hit_miss(pred), ("hit", "miss"))
    assert sc["hit_miss"]["confusion"] == b.tolist()
    assert sc["hit_miss"]["accuracy"] == pytest.approx(np.mean(np.array(hit_miss(true)) == np.array(hit_miss(pred))))
    assert sc["accuracy"] == pytest.approx(np.mean(np.array(true) == np.array(pred)))
    # Nawaz Table 3 by hand: 27 weak frames called blank or no-crystal, no miss called a hit
    paper = confusion_scores(PAPER_TABLE3)
    assert paper["hit_miss"]["confusion"] == [[3273 + 46 + 62 + 2341 + 41 + 60 + 1412, 3 + 24], [0, 2069 + 2 + 3266]]
    assert paper["recall"]["good"] == pytest.approx(2341 / 2444)


def _nawaz_result(seed, cm, corr=0.5):
    """One seed's result of benchmarks.nawaz2022.run (no training): scores of ``cm`` and made-up timings."""
    from dataclasses import replace

    from diffscreen.benchmarks.nawaz2022 import CPU_RECIPE, _listed, confusion_scores

    cm = np.asarray(cm)
    counts = {c: int(cm[i].sum()) for i, c in enumerate(DIFFRANET_CLASSES)}
    return {"recipe": _listed(replace(CPU_RECIPE, seed=seed)), "quick": False, **confusion_scores(cm),
            "class_counts": {"train": counts, "test": counts}, "best_epoch": 3, "history": [],
            "timing": {"alexnet_227": {"gradcam": 0.1 + seed / 100}, "ke2018_720": {"gradcam": 1.0}},
            "inversion": {"strong": [{"layer": j, "corr": corr / (j + 1), "seconds": 1.0, "feature_error": 0.1}
                                     for j in range(5)]},
            "seconds": {"simulate": 60.0, "train": 600.0 + seed}, "model_path": "m.safetensors"}


def _cm(k):
    """A 5-class confusion of 100 frames per class: ``k`` weak frames called good, 2 good ones called blank."""
    cm = np.diag([100] * 5)
    cm[2, 2], cm[2, 3] = 100 - k, k
    cm[3, 3], cm[3, 0] = 98, 2
    return cm


def test_nawaz_across_seeds_intervals_and_findings():
    from scipy import stats

    from diffscreen.benchmarks._harness import verdict
    from diffscreen.benchmarks.nawaz2022 import across_seeds

    ks = [10, 14, 20]
    summ = across_seeds([_nawaz_result(s, _cm(k)) for s, k in enumerate(ks)])
    accs = [(500 - k - 2) / 500 for k in ks]
    h = stats.t.ppf(0.975, 2) * np.std(accs, ddof=1) / np.sqrt(3)
    assert summ["accuracy"]["values"] == pytest.approx(accs)
    assert summ["accuracy"]["ci95"] == pytest.approx([np.mean(accs) - h, np.mean(accs) + h])
    assert summ["confusion"][2][3] == sum(ks) and summ["confusion"][3][0] == 6
    assert summ["class_counts"]["test"]["weak"] == 300
    # weak -> good stays a hit; good -> blank is the only hit/miss error: 2 of 500 at every seed
    assert summ["hit_miss"]["accuracy"]["values"] == pytest.approx([498 / 500] * 3)
    gap = summ["effects"]["hit_miss_minus_five_class"]
    assert gap["values"] == pytest.approx([k / 500 for k in ks]) and verdict(gap) == "holds"
    near = summ["effects"]["neighbour_errors_minus_half"]  # k neighbouring errors of k + 2
    assert near["values"] == pytest.approx([k / (k + 2) - 0.5 for k in ks]) and verdict(near) == "holds"
    assert summ["inversion"]["strong"][1]["mean"] == pytest.approx(0.25)
    assert summ["timing"]["alexnet_227"]["gradcam"]["values"] == pytest.approx([0.10, 0.11, 0.12])
    few = across_seeds([_nawaz_result(s, _cm(k)) for s, k in enumerate([2, 30, 2])])  # 2 of 4 near, 30 of 32
    assert verdict(few["effects"]["neighbour_errors_minus_half"]).startswith("not established")
    other = _nawaz_result(1, _cm(10))
    other["recipe"]["epochs"] += 1
    with pytest.raises(ValueError, match="recipes differ"):
        across_seeds([_nawaz_result(0, _cm(10)), other])


def test_nawaz_seeds_report_resumes_from_each_seeds_result_and_agrees_with_its_json(tmp_path):
    """run_seeds reads each seed's cached result (no training) and writes md + JSON with the same intervals."""
    import json
    from dataclasses import replace

    from diffscreen.benchmarks import nawaz2022 as bench

    work = tmp_path / "work"
    work.mkdir()
    for s, k in zip((4, 5, 6), (10, 14, 20)):
        bench.write_json(bench._cached(work, replace(bench.CPU_RECIPE, seed=s)), _nawaz_result(s, _cm(k)))
    (work / "figures_s4").mkdir()
    (work / "figures_s4" / "nawaz2022_tsne.png").write_bytes(b"seed 4's t-SNE")
    out = tmp_path / "out"
    combined = bench.run_seeds(out, [4, 5, 6], work_dir=work, log=lambda *a: None)
    assert (out / "nawaz2022_tsne.png").read_bytes() == b"seed 4's t-SNE"  # the first seed's figures, copied
    md = (out / "nawaz2022.md").read_text()
    saved = json.loads((out / "nawaz2022.json").read_text())
    assert saved["seeds"] == [4, 5, 6] and [r["seed"] for r in saved["per_seed"]] == [4, 5, 6]
    iv = combined["summary"]["accuracy"]
    assert saved["summary"]["accuracy"]["ci95"] == pytest.approx(iv["ci95"])
    assert f"**{100 * iv['mean']:.1f} [{100 * iv['ci95'][0]:.1f}, {100 * iv['ci95'][1]:.1f}]**" in md
    assert "| paper above |" in md  # 98.1 % lies above an interval near 96.8 %
    assert "This report: 3 seeds, 4, 5, 6." in md and "| holds |" in md
    assert (out / "nawaz2022_confusion.png").stat().st_size > 0
    assert bench.write_markdown(out / "nawaz2022.json", tmp_path).read_text() == md


def test_train_on_arrays_learns_five_classes_with_adam(tmp_path):
    """A few Adam steps on a narrow AlexNet memorise 5 easy classes; the file carries its metadata."""
    from diffscreen.preprocess import PreprocessConfig
    from diffscreen.train.loop import TrainConfig, train_on_arrays

    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    n, s = 60, 67
    y = np.arange(n) % 5
    x = rng.normal(0, 0.2, (n, 1, s, s)).astype(np.float32)
    for k in range(n):  # class k: a bright square in one of five places
        r0, c0 = [(5, 5), (5, 45), (45, 5), (45, 45), (25, 25)][y[k]]
        x[k, 0, r0 : r0 + 15, c0 : c0 + 15] += 2.0
    x0 = x.copy()
    cfg = TrainConfig(arch="alexnet", optimizer="adam", epochs=10, batches_per_epoch=4, batch_size=20,
                      lr_start=2e-3, lr_end=5e-4, weight_decay=0.0, seed=0,
                      arch_kwargs={"channels": [16, 32, 32, 32, 32], "fc_dim": 64, "dropout": 0.0})
    res = train_on_arrays(x, y, tmp_path / "a.safetensors", class_names=DIFFRANET_CLASSES,
                          preprocess=PreprocessConfig(out_size=s), config=cfg, x_val=x, y_val=y, log=lambda _: None)
    np.testing.assert_array_equal(x, x0)  # inputs untouched
    assert res.history[-1]["train_loss"] < 0.5 * res.history[0]["train_loss"]
    b = load_model(res.model_path)
    assert b.arch == "alexnet" and b.class_names == DIFFRANET_CLASSES
    assert b.meta["training"]["config"]["optimizer"] == "adam" and b.meta["seed"] == 0
    with torch.no_grad():
        acc = (b.model(torch.from_numpy(x)).argmax(1).numpy() == y).mean()
    assert acc >= 0.9
    with pytest.raises(ConfigError):
        TrainConfig(optimizer="rmsprop")
    with pytest.raises(ConfigError):
        train_on_arrays(x, y[:5], tmp_path / "b.safetensors", class_names=DIFFRANET_CLASSES,
                        preprocess=PreprocessConfig(out_size=s), config=cfg)


@pytest.mark.slow
def test_quick_benchmark_runs_and_reports_tables(tmp_path):
    from diffscreen.benchmarks.nawaz2022 import run

    r = run(tmp_path / "docs", quick=True, work_dir=tmp_path / "work", write_doc=True, log=lambda _: None)
    cm = np.array(r["confusion"])
    assert cm.shape == (5, 5) and cm.sum() == r["recipe"]["n_test"]
    b = np.array(r["hit_miss"]["confusion"])
    assert b[0].sum() == cm[2:].sum() and b[1, 1] == cm[:2, :2].sum()
    assert (tmp_path / "docs" / "nawaz2022.md").exists() and (tmp_path / "docs" / "nawaz2022_gradcam.png").exists()
    md = (tmp_path / "docs" / "nawaz2022.md").read_text()
    assert "Nawaz, Rahmani, Pala Ramakantha Setty, Pennicard, Graafsma, *Explainable" in md  # the paper's authors


def test_committed_report_is_what_its_json_writes():
    """docs/benchmarks/nawaz2022.md is the markdown of the committed nawaz2022.json, number for number."""
    import json
    from pathlib import Path

    from diffscreen.benchmarks import nawaz2022 as bench

    docs = Path(__file__).resolve().parents[1] / "docs" / "benchmarks"
    combined = json.loads((docs / "nawaz2022.json").read_text())
    assert len(combined["seeds"]) >= 3
    assert bench._markdown(combined) == (docs / "nawaz2022.md").read_text()
    again = bench.across_seeds(combined["per_seed"])  # the summary is the seeds' own numbers
    assert again["accuracy"]["ci95"] == pytest.approx(combined["summary"]["accuracy"]["ci95"])
