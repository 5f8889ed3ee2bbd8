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
