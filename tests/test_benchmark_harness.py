"""What every paper benchmark shares (diffscreen.benchmarks._harness): seeded results, intervals and findings."""

import importlib
import json
from pathlib import Path

import pytest

from diffscreen.benchmarks._harness import across, findings, findings_lines, per_seed

DOCS = Path(__file__).resolve().parents[1] / "docs" / "benchmarks"


def test_a_fresh_seed_reads_like_a_cached_one(tmp_path):
    """A seed just run and a seed read from its cache give the same keys, so intervals over them keep every table.

    Table 7's keys are training-set sizes (integers in a fresh result, text once written as JSON); a fresh seed
    beside cached ones used to lose the whole table.
    """
    calls = []

    def run_seed(i, s):
        calls.append(s)
        return {"table7": {100: {"Rayonix": 80.0 + s}, 400: {"Rayonix": 90.0 - s}}}

    def cached(s):
        return tmp_path / f"seed{s}.json"

    per_seed([0, 1], cached, run_seed, log=lambda *a: None)  # runs seeds 0 and 1 and caches them
    per = per_seed([0, 1, 2], cached, run_seed, log=lambda *a: None)  # reads 0 and 1, runs 2
    assert calls == [0, 1, 2]
    assert [sorted(r["table7"]) for r in per] == [["100", "400"]] * 3
    res = across(per)
    assert res["table7"]["100"]["Rayonix"]["values"] == [80.0, 81.0, 82.0]
    assert res["table7"]["400"]["Rayonix"]["mean"] == 89.0


def test_a_finding_whose_every_row_goes_the_other_way_is_reported_so():
    """Over seeds: 'holds' when every row's interval lies above 0, 'the opposite holds' when every one lies below,
    else 'not established'."""
    seeds = [findings({"up": [("a", True, "a", 1.0 + d)], "down": [("b", False, "b", -1.0 - d)],
                       "mixed": [("c", True, "c", 1.0 + d), ("d", False, "d", -3.0 + 3 * d)]})
             for d in (0.0, 0.1, 0.2)]
    res = across([{"findings": f, "seed": i} for i, f in enumerate(seeds)])
    text = "\n".join(findings_lines(res["findings"]))
    assert "- holds: up (held at 3 of 3 seeds" in text
    assert "- **the opposite holds**: down (held at 0 of 3 seeds" in text
    assert "- **not established**: mixed (held at 0 of 3 seeds" in text
    assert res["findings"]["down"]["verdicts"] == {"b": "the opposite holds"}
    assert res["findings"]["up"]["holds"] and not res["findings"]["down"]["holds"]


@pytest.mark.parametrize("name", ["ke2018", "xie2022"])
def test_committed_report_is_what_its_json_writes(name, tmp_path):
    """docs/benchmarks/NAME.md is what write_report makes of the committed NAME.json, which holds at least 3 seeds;
    every number and each finding's verdict follow again from the seeds' own results."""
    bench = importlib.import_module(f"diffscreen.benchmarks.{name}")
    results = json.loads((DOCS / f"{name}.json").read_text())
    assert len(results["seeds"]) >= 3 and not results["quick"]
    bench.write_report(results, tmp_path)
    assert (tmp_path / f"{name}.md").read_text() == (DOCS / f"{name}.md").read_text()
    again = across([{**r, "findings": bench.check_findings(r)} for r in results["per_seed"]])
    assert set(again) == set(results)  # no table lost between the seeds
    for key in set(results) - {"findings", "per_seed"}:
        assert json.dumps(again[key], sort_keys=True) == json.dumps(results[key], sort_keys=True), key
    for finding, f in results["findings"].items():
        assert (again["findings"][finding]["holds"], again["findings"][finding]["verdicts"]) == (f["holds"],
                                                                                               f["verdicts"])
