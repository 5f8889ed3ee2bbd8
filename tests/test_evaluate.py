"""Confusion matrices and metrics (Ke Table 3)."""

import math

import numpy as np
import pytest

from diffscreen.errors import LabelError
from diffscreen.evaluate import binary_metrics, confusion_matrix, evaluate_labels


def test_confusion_and_binary_grouping():
    true = ["hit", "hit", "maybe", "miss", "miss", "miss", "maybe"]
    pred = ["hit", "maybe", "miss", "miss", "hit", "miss", "maybe"]
    rep = evaluate_labels(true, pred)
    np.testing.assert_array_equal(rep.confusion, [[1, 1, 0], [0, 1, 1], [1, 0, 2]])
    # hit-or-maybe: 4 true, 3 kept; miss: 3 true, 1 kept
    np.testing.assert_array_equal(rep.binary_confusion, [[3, 1], [1, 2]])
    m = rep.metrics
    assert m["precision"] == pytest.approx(3 / 4)
    assert m["recall"] == pytest.approx(3 / 4)
    assert m["miss_rejection"] == pytest.approx(2 / 3)
    assert m["accuracy"] == pytest.approx(5 / 7)
    assert m["accuracy_3class"] == pytest.approx(4 / 7)
    md = rep.to_markdown()
    assert "75.0%" in md and "Ke Table 3" in md


def test_metrics_edge_cases():
    m = binary_metrics(["miss", "miss"], ["miss", "miss"])
    assert math.isnan(m["precision"]) and m["accuracy"] == 1.0
    with pytest.raises(LabelError, match="not one of"):
        confusion_matrix(["hit"], ["bogus"], ["hit", "miss"])
    with pytest.raises(LabelError, match="no labelled frames"):
        evaluate_labels([], [])


def test_balanced_accuracy_and_the_epoch_selection_score():
    from diffscreen.evaluate.metrics import balanced_accuracy, selection_accuracy

    assert balanced_accuracy([0, 0, 1, 1], [0, 1, 1, 1]) == pytest.approx((1 + 2 / 3) / 2)
    assert math.isnan(balanced_accuracy([], []))
    probs = np.array([[0.6, 0.1, 0.3], [0.1, 0.3, 0.6], [0.2, 0.2, 0.6], [0.3, 0.3, 0.4]])
    y = np.array([1, 2, 0, 2])
    # keep decision P(hit) + P(maybe) > P(miss): keep, drop, drop, keep; hit-or-maybe 1 of 2 kept, miss 1 of 2 dropped
    assert selection_accuracy(probs, y, ("hit", "maybe", "miss")) == pytest.approx(0.5)
    # without a miss class: mean recall of the argmax over the classes present
    assert selection_accuracy(probs, y, ("a", "b", "c")) == pytest.approx((0 + 0 + 1) / 3)


def test_manifest_frames_name_label_and_open_each_file(tmp_path):
    """One reader of the real-frame manifests: folder/file names, labels in order, each file's path."""
    from diffscreen.evaluate.labelled import manifest_frames

    for name, rows in (("a", [("x.cbf", "hit"), ("y.h5", "miss")]), ("b", [("z.tif.bz2", "maybe")])):
        (tmp_path / name).mkdir()
        (tmp_path / name / "MANIFEST.tsv").write_text(
            "file\tlabel\tdetector\n" + "".join(f"{f}\t{lab}\tsome detector\n" for f, lab in rows))
    got = manifest_frames([tmp_path / "a", str(tmp_path / "b")])
    assert got == [("a/x.cbf", "hit", str(tmp_path / "a" / "x.cbf")),
                   ("a/y.h5", "miss", str(tmp_path / "a" / "y.h5")),
                   ("b/z.tif.bz2", "maybe", str(tmp_path / "b" / "z.tif.bz2"))]


def test_kept_balanced_accuracy_is_the_keep_decisions():
    """keep_balanced_accuracy is kept_balanced_accuracy of P(hit) + P(maybe) > P(miss); NaN without a group."""
    from diffscreen.evaluate.metrics import keep_balanced_accuracy, keep_decision, keep_rates, kept_balanced_accuracy

    y = np.array([0, 1, 2, 2, 2])
    kept = np.array([True, False, True, False, False])
    assert kept_balanced_accuracy(kept, y) == pytest.approx((1 / 2 + 2 / 3) / 2)
    assert keep_rates(kept, y) == pytest.approx((1 / 2, 2 / 3))  # hit 0 kept, maybe 1 dropped; misses 1 of 3 kept
    probs = np.random.default_rng(1).dirichlet([1, 1, 1], 40)
    ys = np.random.default_rng(2).integers(0, 3, 40)
    assert keep_balanced_accuracy(ys, probs) == kept_balanced_accuracy(keep_decision(probs), ys)
    assert np.isnan(kept_balanced_accuracy(np.array([True, False]), np.array([2, 2])))
    # a probability of keeping each frame gives the expected rates (the noise ceiling's use)
    assert keep_rates(np.array([0.25, 1.0, 0.5, 0.0, 0.9]), y) == pytest.approx((0.625, (0.5 + 1.0 + 0.1) / 3))
    assert keep_rates(kept.astype(float), y) == keep_rates(kept, y)
