"""Multi-label metrics (§3.2), training loop, CDI screening and the CLI for --task cdi."""

import csv
import glob
import json
import os

import numpy as np
import pytest

from diffscreen.cli import main
from diffscreen.errors import LabelError
from diffscreen.evaluate.multilabel import CDI_CLASSES, all_negative_baseline, multilabel_metrics, rule_violations
from diffscreen.simulate.cdi import TABLE1_COUNTS

REAL = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "real-cdi-frames")


def _table1_truth():
    Y = np.zeros((7264, 11), np.uint8)
    for j, c in enumerate(CDI_CLASSES):
        Y[: TABLE1_COUNTS[c], j] = 1
    return Y


def test_paper_worked_example_precision_recall():
    Y = _table1_truth()
    pred = np.zeros_like(Y, dtype=float)
    pred[:, 0] = 1  # everything Spherical/Oblate
    m = multilabel_metrics(Y, pred)
    assert m["precision"] == pytest.approx(0.907, abs=5e-4)
    assert m["recall"] == pytest.approx(0.423, abs=5e-4)
    assert m["accuracy"] == pytest.approx((79904 - 675 - (15576 - 6589)) / 79904)
    b = all_negative_baseline(Y)
    assert b["precision"] == 0 and b["recall"] == 0
    assert b["accuracy"] == pytest.approx(1 - 15576 / 79904)


def test_rule_violations():
    def row(*names):
        r = np.zeros(11, int)
        for n in names:
            r[CDI_CLASSES.index(n)] = 1
        return r

    P = np.array([
        row("spherical_oblate", "round", "double_rings", "newton_rings"),  # fine
        row("prolate", "bent", "streak", "asymmetric"),  # fine
        row("empty"),  # fine
        row("spherical_oblate", "prolate", "round"),  # superordinate
        row("spherical_oblate", "round", "elliptical"),  # round_elliptical
        row("empty", "layered"),  # empty_alone (and superordinate: empty + nothing else is ok)
        row("prolate", "round"),  # hierarchy
        row("streak"),  # hierarchy + superordinate
    ])
    v = rule_violations(P)
    np.testing.assert_array_equal(v["any"], [0, 0, 0, 1, 1, 1, 1, 1])
    assert v["round_elliptical"][4] and v["empty_alone"][5] and v["hierarchy"][6] and not v["hierarchy"][4]
    m = multilabel_metrics(P, P)
    assert m["accuracy"] == 1 and m["violation_rate"] == pytest.approx(5 / 8)


def test_metrics_refuse_bad_input():
    with pytest.raises(LabelError):
        multilabel_metrics(np.zeros((3, 11)), np.zeros((3, 10)))
    with pytest.raises(LabelError):
        multilabel_metrics(np.zeros((3, 11)), np.full((3, 11), np.nan))
    with pytest.raises(LabelError):
        multilabel_metrics(np.full((3, 11), 2), np.zeros((3, 11)))


def test_regularisation_and_augment():
    import torch

    from diffscreen.models import get_model
    from diffscreen.train.multilabel import augment, regularisation

    m = get_model("zimmermann2019", width=4)
    ws = [p for n, p in m.named_parameters() if n.endswith("weight") and p.ndim > 1]
    expect = 1e-5 * sum(float(w.detach().abs().sum()) for w in ws) + 2e-5 * sum(float((w.detach() ** 2).sum()) for w in ws)
    assert float(regularisation(m, 1e-5, 2e-5).detach()) == pytest.approx(expect, rel=1e-5)
    x = torch.rand(64, 1, 8, 8)
    x0 = x.clone()
    y = augment(x, torch.Generator().manual_seed(0), flips=True, brightness=0.0, contrast=0.0)
    assert torch.equal(x, x0)
    flipped = [(torch.equal(y[i], x[i].flip(-1)) or torch.equal(y[i], x[i].flip(-2))
                or torch.equal(y[i], x[i].flip(-1).flip(-2))) and not torch.equal(y[i], x[i]) for i in range(64)]
    assert 30 < sum(flipped) + sum(torch.equal(y[i], x[i]) for i in range(64)) <= 64 and sum(flipped) > 30


@pytest.fixture(scope="module")
def cdi_run(tmp_path_factory):
    from diffscreen.simulate.cdi import simulate_cdi_run

    d = tmp_path_factory.mktemp("cdi")
    return simulate_cdi_run(d / "run.cxi", 120, seed=3, size=64)


def test_train_screen_cli_roundtrip(cdi_run, tmp_path, capsys):
    model = tmp_path / "cdi.safetensors"
    args = ["train", "--task", "cdi", str(cdi_run), "--out", str(model), "--input-size", "32", "--width", "4",
            "--epochs", "3", "--milestones", "2", "--batch-size", "24", "--ccf"]
    assert main(args) == 0
    from diffscreen.models import read_model_metadata

    rec = read_model_metadata(model)
    assert rec["task"] == "cdi" and rec["preprocess"]["mode"] == "ccf" and rec["arch"] == "zimmermann2019"
    assert rec["class_names"] == list(CDI_CLASSES)
    tr = rec["training"]
    assert tr["n_train"] + tr["n_val"] == 120 and len(tr["history"]) == 3
    assert tr["data"]["label_counts"]["spherical_oblate"] > 80
    assert not (tmp_path / "cdi.safetensors.ckpt").exists()
    # screen the simulated run and the real frames
    out = tmp_path / "scr"
    inputs = [str(cdi_run)]
    real = sorted(glob.glob(os.path.join(REAL, "Staff20-1a_S0054_*.tif")))
    assert main(["screen", "--task", "cdi", *inputs, *real, "--out", str(out), "--model", str(model)]) == 0
    rows = list(csv.DictReader(open(out / "scores.csv")))
    assert len(rows) == 120 + len(real)
    P = np.array([[float(r[f"p_{c}"]) for c in CDI_CLASSES] for r in rows])
    assert np.isfinite(P).all() and (P >= 0).all() and (P <= 1).all()
    Y = np.array([[int(r[c]) for c in CDI_CLASSES] for r in rows])
    np.testing.assert_array_equal(Y, P >= 0.5)
    assert all(r["labels"] == ";".join(c for c in CDI_CLASSES if int(r[c])) for r in rows)
    s = json.loads((out / "summary.json").read_text())
    assert s["n_frames"] == len(rows) and s["task"] == "cdi" and s["preprocess"]["mode"] == "ccf"
    _interrupted_screen_resumes([*inputs, *real], model, tmp_path, (out / "scores.csv").read_text())
    # evaluate --task cdi: the simulated frames against their truth (the real ones carry none)
    rep = tmp_path / "eval"
    assert main(["evaluate", "--task", "cdi", str(cdi_run), "--scores", str(out / "scores.csv"), "-o", str(rep)]) == 0
    res = json.loads(rep.with_suffix(".json").read_text())
    from diffscreen.simulate.cdi import CDISimulator

    assert res["n_matched"] == 120
    truth = np.array([CDISimulator(seed=3, size=64).frame(i).labels for i in range(120)])
    expected = multilabel_metrics(truth, P[:120])
    assert res["metrics"]["accuracy"] == pytest.approx(expected["accuracy"])
    assert res["metrics"]["recall"] == pytest.approx(expected["recall"])
    assert res["all_negative"]["accuracy"] == pytest.approx(1 - truth.sum() / truth.size)


def _interrupted_screen_resumes(inputs, model, tmp_path, reference_csv):
    from diffscreen.screen import screen_cdi

    out = tmp_path / "resumed"
    done = out / ".partial" / "chunk_000000.csv"

    def stop_after_first_chunk(total=None, advance=None):
        if advance and done.exists():
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        screen_cdi(inputs, out, model=model, chunk_size=50, progress=stop_after_first_chunk)
    assert done.exists() and not (out / "scores.csv").exists()  # nothing final half-written
    assert len(list(csv.reader(done.open(newline="")))) == 50
    screen_cdi(inputs, out, model=model, chunk_size=50)
    assert (out / "scores.csv").read_text() == reference_csv and not (out / ".partial").exists()
    # the completed chunk really is reused: tamper with it and resume again
    with pytest.raises(KeyboardInterrupt):
        screen_cdi(inputs, out, model=model, chunk_size=50, progress=stop_after_first_chunk)
    rows = list(csv.reader(done.open(newline="")))
    for r in rows:  # file, frame, status, single, p_<class>...
        r[4 + CDI_CLASSES.index("empty")] = "0.990000"
    with done.open("w", newline="") as fh:
        csv.writer(fh).writerows(rows)
    screen_cdi(inputs, out, model=model, chunk_size=50)
    rows = list(csv.DictReader(open(out / "scores.csv")))
    assert all(r["p_empty"] == "0.990000" for r in rows[:50]) and rows[50]["p_empty"] != "0.990000"


def test_training_learns_beyond_all_negative(cdi_run):
    import torch

    from diffscreen.preprocess.cdi import CDIPreprocessConfig, prepare_cdi_batch
    from diffscreen.train.multilabel import MultiLabelConfig, load_cdi_runs, train_multilabel

    torch.set_num_threads(1)
    x, mask, y, info = load_cdi_runs([cdi_run])
    pc = CDIPreprocessConfig(input_size=32)
    X = prepare_cdi_batch(x, pc, mask=mask)
    assert X.shape == (120, 1, 32, 32) and 0 <= X.min() and X.max() <= 1
    r = train_multilabel(X[:90], y[:90], X[90:], y[90:], config=MultiLabelConfig(epochs=6, milestones=(4,), width=8),
                         preprocess=pc, log=lambda *a: None)
    base = all_negative_baseline(y[90:])
    assert r.max["recall"] > 0.3 and r.max["precision"] > 0.5
    assert r.max["accuracy"] > base["accuracy"] + 0.03
    assert r.history[-1]["train_bce"] < r.history[0]["train_bce"]


def test_bundled_cdi_model_screens_without_model(cdi_run, tmp_path):
    """``screen --task cdi`` with no --model: the bundled CDI model (issue 17), on simulated and real frames."""
    from diffscreen.evaluate.multilabel import read_cdi_labels

    out = tmp_path / "o"
    real = sorted(glob.glob(os.path.join(REAL, "Staff20-1a_S0054_*.tif")))
    assert main(["screen", "--task", "cdi", str(cdi_run), *real, "--out", str(out)]) == 0
    rows = list(csv.DictReader(open(out / "scores.csv")))
    assert len(rows) == 120 + len(real) and all(r["labels"] is not None for r in rows)
    s = json.loads((out / "summary.json").read_text())
    assert s["task"] == "cdi" and s["model"].endswith("zimmermann2019_cdi.safetensors")
    P = np.array([[float(r[f"p_{c}"]) for c in CDI_CLASSES] for r in rows[:120]])
    truth = read_cdi_labels(cdi_run)
    m = multilabel_metrics(truth, P)
    majority = multilabel_metrics(truth, np.tile(truth.mean(axis=0) > 0.5, (len(truth), 1)).astype(float))
    # a model that learnt nothing sits at the all-negative or majority-label predictor
    assert m["accuracy"] > majority["accuracy"] + 0.02 and m["accuracy"] > all_negative_baseline(truth)["accuracy"]
    assert m["recall"] > 0.8 and m["precision"] > 0.8
    assert m["per_class"]["empty"]["recall"] > 0.5 or truth[:, CDI_CLASSES.index("empty")].sum() == 0


def test_cdi_task_errors_are_one_line(cdi_run, tmp_path, capsys):
    assert main(["train", "--task", "cdi", str(cdi_run), "--out", str(tmp_path / "m.safetensors"), "--alpha", "x"]) == 2
    assert "--alpha" in capsys.readouterr().err
    assert main(["screen", "--task", "cdi", str(cdi_run), "--out", str(tmp_path / "o"), "--model",
                 "src/diffscreen/data/ke2018_default.safetensors"]) == 2
    assert "not a CDI model" in capsys.readouterr().err
    assert main(["simulate", "--task", "tomography", str(tmp_path / "x.cxi")]) == 2


def test_simulate_cli_cdi(tmp_path):
    import h5py

    assert main(["simulate", "--task", "cdi", str(tmp_path / "s.cxi"), "-n", "3", "--size", "32",
                 "--radius-nm", "120"]) == 0
    with h5py.File(tmp_path / "s.cxi") as h:
        assert h["entry_1/result_1/labels"].shape == (3, 11)
