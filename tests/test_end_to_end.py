"""End to end with the bundled model: fresh simulated runs, the demo, real frames.

These take a minute or two each; CI runs them (marker ``ci_slow``).
"""

import csv
import json

import numpy as np
import pytest

from diffscreen.cli import main
from diffscreen.evaluate import evaluate_labels
from diffscreen.io import open_source
from diffscreen.io.labels import LabelTable, read_labels
from diffscreen.models.decision import decide
from diffscreen.models.inference import Classifier
from diffscreen.simulate import simulate_run

pytestmark = pytest.mark.ci_slow

# Seeds no training run of the bundled model used (scripts/make_default_model.py: 4001-4011).
FRESH = {"rayonix": 3101, "cspad": 3102}
#: Lower bounds on the keep decision's balanced accuracy (hit-or-maybe vs miss) on
#: 30 fresh frames; docs/default_model.md has the model's numbers on 200 frames.
MIN_BALANCED_ACCURACY = 0.75


@pytest.mark.parametrize("preset", sorted(FRESH))
def test_bundled_model_screens_fresh_simulated_runs(preset, tmp_path):
    run = simulate_run(preset, 30, tmp_path / "run.cxi", seed=FRESH[preset])
    table = LabelTable.from_records(read_labels(str(run)))
    clf = Classifier()
    with open_source(str(run)) as src:
        frames = [src.read(i) for i in range(len(src))]
    _, pred = decide(clf.predict(frames))
    true = [table.get(str(run), i) for i in range(len(frames))]
    rep = evaluate_labels(true, pred)
    assert rep.metrics["balanced_accuracy"] >= MIN_BALANCED_ACCURACY, rep.to_markdown()


def test_demo_command(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--frames", "16"]) == 0
    text = capsys.readouterr().out
    assert "Against the simulator's truth" in text and "hit rate" in text
    rows = list(csv.DictReader(open(out / "scores.csv")))
    assert len(rows) == 16 and {r["label"] for r in rows} <= {"hit", "maybe", "miss"}
    kept = [r for r in rows if r["label"] in ("hit", "maybe")]
    assert len((out / "hits.lst").read_text().splitlines()) == len(kept)
    assert json.loads((out / "summary.json").read_text())["n_frames"] == 16


def test_screen_command_on_every_real_frame(shared_data, tmp_path, capsys):
    out = tmp_path / "real"
    code = main(["screen", str(shared_data / "real-frames"), "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    rows = list(csv.DictReader(open(out / "scores.csv")))
    names = {r["file"].rsplit("/", 1)[-1] for r in rows}
    manifest = list(csv.DictReader(open(shared_data / "real-frames" / "MANIFEST.tsv"), delimiter="\t"))
    assert names == {m["file"] for m in manifest}
    probs = np.array([[float(r["p_hit"]), float(r["p_maybe"]), float(r["p_miss"])] for r in rows])
    np.testing.assert_allclose(probs.sum(axis=1), 1, atol=1e-4)
    kept = [r for r in rows if r["label"] in ("hit", "maybe")]
    lst = (out / "hits.lst").read_text().splitlines()
    assert len(lst) == len(kept)
    # single-frame files are listed without an event number, as CrystFEL expects
    assert all("//" not in line for line in lst)
    with open_source(str(out / "hits.cxi")) as hits:  # frames of several shapes: one CXI entry per shape
        assert len(hits) == len(kept)
        shapes = {hits.read(i).data.shape for i in range(len(hits))}
    assert len(shapes) >= 3


def test_min_spots_reaches_the_decision_from_the_command_line(tmp_path):
    """screen --min-spots: 0 keeps what the network keeps; more spots than any frame has keeps nothing, and the
    frames the network kept are labelled miss with their spot counts."""
    run = simulate_run("rayonix", 12, tmp_path / "run.cxi", seed=3103, class_fractions=(1.0, 0.0, 0.0))
    rows = {}
    for n in (0, 100000):
        out = tmp_path / f"min{n}"
        assert main(["screen", str(run), "--out", str(out), "--min-spots", str(n), "--no-cxi"]) == 0
        rows[n] = list(csv.DictReader(open(out / "scores.csv")))
    net = [r["label"] != "miss" for r in rows[0]]
    assert sum(net) >= 6  # all hits: the network keeps most
    assert len((tmp_path / "min0" / "hits.lst").read_text().splitlines()) == sum(net)
    assert (tmp_path / "min100000" / "hits.lst").read_text().strip() == ""
    for a, b in zip(rows[0], rows[100000]):
        assert b["label"] == "miss" and b["p_hit"] == a["p_hit"]
        assert (b["n_spots"] != "") == (a["label"] != "miss")  # counted where the network kept the frame
