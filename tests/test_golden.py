"""Reorganising the code must not change what a command writes (issue 16).

The goldens in ``tests/golden/`` were written by ``tests/golden/outputs.py``
before the redesign; each command here runs again and its scores.csv must agree
(labels exactly, probabilities to 1e-5, which is below the 6 significant digits
scores.csv stores for a probability near 1).  The per-frame columns a CNN's
scores.csv gained with issue 15 (``n_spots``, ``n_spots_no_rings``, ``d_min_A``,
``ice_rings``, ``powder_rings``) are not in the goldens: the original columns are compared by
name, and the new ones must exist (and be filled on kept frames).  The spot gate
(:func:`diffscreen.models.decision.spot_gate`, after the goldens) may turn a
frame the network keeps into a miss, only where its ``n_spots_no_rings`` is below
:data:`~diffscreen.models.decision.KEEP_MIN_SPOTS`; everything else must agree.
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

from diffscreen.models.decision import KEEP_MIN_SPOTS  # noqa: E402
from diffscreen.preprocess.spots import METRIC_COLUMNS  # noqa: E402

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
    # issue 15 added per-frame columns to a CNN's scores.csv (before ``label``); every original column is
    # compared by name, as before, and the new ones must be there (their values are not in the goldens)
    new = [c for c in got[0] if c not in want[0]]
    assert [c for c in got[0] if c in want[0]] == want[0], f"{name}: original columns changed: {got[0]}"
    assert new == (list(METRIC_COLUMNS) if "p_hit" in want[0] else []), f"{name}: unexpected columns {new}"
    assert got[0][-1] == "label", f"{name}: label is no longer the last column"
    assert len(got) == len(want), f"{name}: {len(got) - 1} rows, golden {len(want) - 1}"
    pos = [got[0].index(c) for c in want[0]]
    gated = []
    for g, w in zip(got[1:], want[1:]):
        assert len(g) == len(got[0]), f"{name}: {g} has {len(g)} cells"
        g_orig, g = g, [g[k] for k in pos]
        if new and w[-1] in ("hit", "maybe") and g[-1] == "miss":  # the spot gate (after the goldens): the network
            n_spots = int(g_orig[got[0].index("n_spots_no_rings")])  # kept it, the spot finder found too few spots
            assert n_spots < KEEP_MIN_SPOTS, f"{name}: a kept frame with {n_spots} spots became a miss: {g_orig}"
            gated.append(g[1])
            g = [*g[:-1], w[-1]]
        assert (g[0], g[1], g[-1]) == (w[0], w[1], w[-1]), f"{name}: {g} != {w}"
        for a, b in zip(g[2:-1], w[2:-1]):
            if a == b:
                continue
            assert math.isclose(float(a), float(b), rel_tol=1e-5, abs_tol=1e-5), f"{name}: {g} != {w}"
        if new and w[-1] in ("hit", "maybe"):  # kept frames carry the per-frame numbers
            assert g_orig[got[0].index("n_spots")] != "", f"{name}: kept frame without n_spots: {g_orig}"
    if name.startswith("real"):  # every real frame the network keeps has 17 or more spots
        assert not gated, f"{name}: the spot gate dropped real frames {gated}"
