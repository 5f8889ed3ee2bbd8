"""Reorganising the code must not change what a command writes (issue 16).

The goldens in ``tests/golden/`` were written by ``tests/golden/outputs.py``
before the redesign; each command here runs again and its scores.csv must agree
(labels exactly, probabilities to 1e-5, which is below the 6 significant digits
scores.csv stores for a probability near 1).
"""

from __future__ import annotations

import csv
import io
import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "golden"))
import outputs  # noqa: E402

GOLDEN = Path(__file__).resolve().parent / "golden"


def _rows(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text)))


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    return outputs.run_all(tmp_path_factory.mktemp("golden"))


@pytest.mark.parametrize("name", sorted(p.name.split(".")[0] for p in GOLDEN.glob("*.scores.csv")))
def test_scores_unchanged(results, name):
    if name not in results:
        pytest.skip("the shared real frames are not beside the checkout")
    want = _rows((GOLDEN / f"{name}.scores.csv").read_text())
    got = _rows(results[name])
    assert got[0] == want[0], f"{name}: header changed"
    assert len(got) == len(want), f"{name}: {len(got) - 1} rows, golden {len(want) - 1}"
    for g, w in zip(got[1:], want[1:]):
        assert (g[0], g[1], g[-1]) == (w[0], w[1], w[-1]), f"{name}: {g} != {w}"
        for a, b in zip(g[2:-1], w[2:-1]):
            if a == b:
                continue
            assert math.isclose(float(a), float(b), rel_tol=1e-5, abs_tol=1e-5), f"{name}: {g} != {w}"
