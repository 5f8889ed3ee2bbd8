"""suggest_labels: uncertainty plus diversity; the suggest-labels CSV round-trips into training."""

import numpy as np
import pytest

from diffscreen.errors import ConfigError
from diffscreen.screen.suggest import suggest_labels, uncertainty

UNIFORM = [1 / 3, 1 / 3, 1 / 3]


def _case():
    """30 identical maximally-uncertain frames (cluster A, rows 0-29); three further clusters B, C, D
    (rows 30-59) each holding 5 fairly uncertain and 5 confident frames; 40 confident frames (E)."""
    rng = np.random.default_rng(0)
    centres = {"A": 0.0, "B": 10.0, "C": 20.0, "D": 30.0, "E": 40.0}
    probs, feats, cluster = [], [], []
    for _ in range(30):
        probs.append(UNIFORM)
        feats.append(np.full(6, centres["A"]))
        cluster.append("A")
    for c in "BCD":
        for i in range(10):
            probs.append([0.5, 0.3, 0.2] if i < 5 else [0.98, 0.01, 0.01])
            feats.append(centres[c] + rng.normal(0, 0.05, 6))
            cluster.append(c)
    for _ in range(40):
        probs.append([0.01, 0.01, 0.98])
        feats.append(centres["E"] + rng.normal(0, 0.05, 6))
        cluster.append("E")
    return np.array(probs), np.array(feats), np.array(cluster)


def test_uncertainty_is_normalised_entropy():
    u = uncertainty([UNIFORM, [1.0, 0.0, 0.0], [0.5, 0.5, 0.0]])
    np.testing.assert_allclose(u, [1.0, 0.0, np.log(2) / np.log(3)], atol=1e-9)


def test_pure_uncertainty_picks_duplicates_but_the_default_spreads_over_clusters():
    p, f, cl = _case()
    only_u = suggest_labels(p, f, 4, uncertainty_weight=1.0)
    assert set(cl[only_u]) == {"A"}  # four copies of the same frame
    picks = suggest_labels(p, f, 4)
    assert cl[picks[0]] == "A" and set(cl[picks]) == {"A", "B", "C", "D"}
    # within each cluster it took an uncertain frame, never a confident one
    assert all(uncertainty(p[picks]) > 0.8)
    assert len(set(picks.tolist())) == 4


def test_suggest_labels_is_deterministic_and_caps_at_n_frames():
    p, f, _ = _case()
    a = suggest_labels(p, f, 20, seed=3)
    np.testing.assert_array_equal(a, suggest_labels(p, f, 20, seed=3))
    allp = suggest_labels(p, f, 10_000)
    assert sorted(allp.tolist()) == list(range(len(p)))
    # diversity only (k-centre greedy) reaches the confident cluster E within five picks
    _, _, cl = _case()
    assert "E" in set(cl[suggest_labels(p, f, 5, uncertainty_weight=0.0)])


@pytest.mark.parametrize("kw,match", [({"n": 0}, ">= 1"), ({"n": 3, "uncertainty_weight": 1.5}, r"\[0, 1\]")])
def test_suggest_labels_refuses_bad_arguments(kw, match):
    p, f, _ = _case()
    with pytest.raises(ConfigError, match=match):
        suggest_labels(p, f, **kw)
    with pytest.raises(ConfigError, match="same N"):
        suggest_labels(p[:5], f[:4], 2)


# --------------------------------------------------------------------------- the command line


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    """A 40-frame toy run and an untrained rwd1d model for 256-pixel frames."""
    import torch

    from toyrun import write_toy_run

    from diffscreen.models import get_model, save_model
    from diffscreen.preprocess import PreprocessConfig

    d = tmp_path_factory.mktemp("suggest")
    labs = list(np.random.default_rng(4).choice(["hit", "maybe", "miss"], size=40, p=[0.3, 0.2, 0.5]))
    run = write_toy_run(d / "run.cxi", labs, seed=5)
    torch.manual_seed(0)
    pre = PreprocessConfig(out_size=256, fallback_size=256, max_shift=0)
    model = save_model(d / "m.safetensors", get_model("rwd1d", input_size=256), arch="rwd1d",
                       arch_kwargs={"input_size": 256}, preprocess=pre, class_names=("hit", "maybe", "miss"))
    return {"run": str(run), "model": str(model), "labels": labs, "dir": d}


def test_suggest_labels_cli_writes_the_picks_and_the_filled_csv_trains_a_model(toy, tmp_path, capsys):
    import csv

    import torch

    from diffscreen.cli import main
    from diffscreen.io import open_source
    from diffscreen.io.labels import read_label_csv
    from diffscreen.models import load_model
    from diffscreen.models.inference import Classifier

    todo = tmp_path / "todo.csv"
    assert main(["suggest-labels", toy["run"], "--n", "10", "--out", str(todo), "--model", toy["model"]]) == 0
    rows = list(csv.DictReader(todo.open()))
    assert list(rows[0]) == ["file", "frame", "label", "p_hit", "p_maybe", "p_miss", "reason"]
    assert len(rows) == 10 and all(r["label"] == "" and r["file"] == toy["run"] for r in rows)
    for r in rows:
        assert abs(sum(float(r[c]) for c in ("p_hit", "p_maybe", "p_miss")) - 1) < 1e-3
    assert "most uncertain" in rows[0]["reason"] and "distance" in rows[1]["reason"]
    # the same picks as the library on the model's own outputs
    clf = Classifier(toy["model"])
    with open_source(toy["run"]) as src:
        x = clf.preprocess([src.read(i) for i in range(len(src))])
    with torch.no_grad():
        f = clf.model.forward_features(torch.from_numpy(x))
        p = torch.softmax(clf.model.classifier(f), 1).numpy()
    assert [int(r["frame"]) for r in rows] == suggest_labels(p, f.numpy(), 10).tolist()

    # unfilled: training refuses with one line naming the CSV
    capsys.readouterr()
    args = ["train", toy["run"], "--init", toy["model"], "--labels", str(todo), "--out", str(tmp_path / "t.safetensors"),
            "--frozen-epochs", "1", "--unfrozen-epochs", "1", "--batches-per-epoch", "2", "--batch-size", "4"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("ERROR: ") and "todo.csv" in err and "Traceback" not in err
    assert not (tmp_path / "t.safetensors").exists()

    # filled in: the label reader takes it back unchanged, and train --init uses exactly these frames
    filled = tmp_path / "filled.csv"
    for r in rows:
        r["label"] = toy["labels"][int(r["frame"])].upper()
    with filled.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    recs = read_label_csv(filled)
    assert [(r.file, r.frame, r.label) for r in recs] == [
        (toy["run"], int(r["frame"]), toy["labels"][int(r["frame"])]) for r in rows]
    args[args.index(str(todo))] = str(filled)
    assert main(args) == 0
    b = load_model(tmp_path / "t.safetensors")
    t = b.meta["training"]
    assert t["method"] == "transfer" and t["init_model"]["path"] == toy["model"]
    assert t["n_train"] + t["n_val"] == 10 and t["data"]["label_files"] == [str(filled)]
    assert [h["stage"] for h in t["history"]] == ["frozen", "unfrozen"]
    assert b.arch == "rwd1d" and b.preprocess == clf.bundle.preprocess


def test_train_init_refuses_a_different_model_type_and_screen_checks_it(toy, tmp_path, capsys):
    from diffscreen.cli import main

    assert main(["train", toy["run"], "--init", toy["model"], "--model-type", "ke2018",
                 "--out", str(tmp_path / "t.safetensors")]) == 2
    assert "'rwd1d' model" in capsys.readouterr().err
    assert main(["screen", toy["run"], "--model", toy["model"], "--model-type", "ke2018",
                 "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "'rwd1d' model, but --model-type ke2018" in err and not (tmp_path / "o" / "scores.csv").exists()
