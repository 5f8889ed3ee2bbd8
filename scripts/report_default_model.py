"""Score a model (default: the bundled one) on fresh simulated runs and on the real frames.

Writes docs/default_model.md.  Usage::

    python scripts/report_default_model.py [--model M] [--compare OTHER ...] [--work work/report] [--frames 200]

The simulated test runs are one per simulator preset (:data:`TEST_RUNS`),
with seeds that no training data used (2001-2011) and each preset's default
class mix.  The real frames are those of ../shared/data/real-frames and
../shared/data/real-frames-2 with the labels of their MANIFEST.tsv files
(they measure; no model or setting was chosen on them).  Each ``--compare OTHER`` (a model file, or a
bundled model's name such as ``fast``) adds a column to every table.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np

from diffscreen.evaluate import evaluate_labels
from diffscreen.io import open_source
from diffscreen.io.labels import LabelTable, read_labels
from diffscreen.models import load_model
from diffscreen.models.decision import decide
from diffscreen.models.inference import Classifier
from diffscreen.simulate import simulate_run

ROOT = Path(__file__).resolve().parents[1]
REALS = (ROOT.parent / "shared" / "data" / "real-frames", ROOT.parent / "shared" / "data" / "real-frames-2")
TEST_RUNS = (("rayonix", 2001), ("cspad", 2002), ("rayonix_jet", 2003), ("L498", 2004), ("LG36", 2005),
             ("LN84", 2006), ("LN83", 2007), ("LO19", 2008), ("pilatus", 2009), ("eiger", 2010),
             ("jungfrau", 2011))  # fmt: skip


def _labels_of(clf: Classifier, path: Path) -> tuple[list, list]:
    table = LabelTable.from_records(read_labels(str(path)))
    true, pred = [], []
    with open_source(str(path)) as src:
        for b in range(0, len(src), 16):
            frames = [src.read(i) for i in range(b, min(b + 16, len(src)))]
            _, lab = decide(clf.predict(frames), clf.class_names)
            pred.extend(lab)
            true.extend(table.get(str(path), fr.meta.index) for fr in frames)
    return true, pred


def _summary(m: dict) -> str:
    return f"{m['balanced_accuracy']:.3f} / {m['recall']:.3f} / {m['miss_rejection']:.3f}"


def simulated_section(clfs: dict, work: Path, n: int) -> list[str]:
    """Per preset: the keep decision of each model (balanced accuracy / recall / miss rejection)."""
    names = list(clfs)
    reports = {name: {} for name in names}
    for preset, seed in TEST_RUNS:
        path = work / f"test_{preset}_{seed}_n{n}.cxi"
        if not path.exists():
            simulate_run(preset, n, path, seed=seed)
        for name, clf in clfs.items():
            reports[name][preset] = evaluate_labels(*_labels_of(clf, path))
            print(name, preset, json.dumps(reports[name][preset].metrics))
    out = ["## Fresh simulated test runs", "",
           f"{n} frames per preset, each preset's default class mix (the real annotation counts for the "
           "CXIDB-76 presets), seeds 2001-2011. Keep decision (hit or maybe against miss, Ke Table 3): "
           "**balanced accuracy / recall of hit-or-maybe / miss rejection**.", "",
           "| preset | seed | " + " | ".join(names) + " |", "|---|---" + "|---" * len(names) + "|"]  # fmt: skip
    for preset, seed in TEST_RUNS:
        out.append(f"| {preset} | {seed} | " + " | ".join(_summary(reports[m][preset].metrics) for m in names) + " |")
    means = [np.mean([r.metrics["balanced_accuracy"] for r in reports[m].values()]) for m in names]
    out += ["| mean balanced accuracy | | " + " | ".join(f"**{v:.3f}**" for v in means) + " |", ""]
    first = names[0]
    out += [f"### Confusion matrices of the {first} model", ""]
    for preset, seed in TEST_RUNS:
        out += [f"#### `{preset}`, {n} frames, seed {seed}", "", reports[first][preset].to_markdown(), ""]
    return out


def real_section(clfs: dict) -> list[str]:
    """The shared real frames: p(hit, maybe, miss) and the call of each model, and the keep balanced accuracy."""
    manifest = {}
    for folder in REALS:
        for r in csv.DictReader(open(folder / "MANIFEST.tsv"), delimiter="\t"):
            manifest[f"{folder.name}/{r['file']}"] = (folder / r["file"], r)
    names = list(clfs)
    out = [
        "## Real frames (../shared/data/real-frames and real-frames-2)",
        "",
        "No model, threshold or setting was chosen on these files. Cells: p_hit / p_maybe / p_miss → call.",
        "",
        "| file | detector | truth | " + " | ".join(names) + " |",
        "|---|---|---" + "|---" * len(names) + "|",
    ]
    kept = {m: [0, 0, 0, 0] for m in names}  # positives kept, positives, misses rejected, misses
    for key in sorted(manifest):
        path, m = manifest[key]
        spec = f"{path}:/data" if path.suffix == ".h5" else str(path)
        with open_source(spec) as src:
            fr = src.read(0)
        cells = []
        for name, clf in clfs.items():
            p = clf.predict([fr])[0]
            _, lab = decide(p[None], clf.class_names)
            cells.append(f"{p[0]:.3f} / {p[1]:.3f} / {p[2]:.3f} → {lab[0]}")
            pos = m["label"] != "miss"
            k = kept[name]
            k[0 if pos else 2] += (lab[0] != "miss") == pos
            k[1 if pos else 3] += 1
            print(name, key, m["label"], p.round(3), lab[0])
        out.append(f"| {key} | {m['detector']} | {m['label']} | " + " | ".join(cells) + " |")
    out += ["", "Keep decision (hit or maybe against miss): " + "; ".join(
        f"{m}: balanced accuracy **{(k[0] / k[1] + k[2] / k[3]) / 2:.3f}** (hits and maybes kept {k[0]} of {k[1]}, "
        f"misses rejected {k[2]} of {k[3]})" for m, k in kept.items()) + ".", ""]
    return out


def _describe(bundle) -> list[str]:
    tr = bundle.meta.get("training", {})
    data = tr.get("data", {})
    presets = data.get("simulated_presets")
    source = (f"{len(presets)} simulated presets ({', '.join(presets)})" if presets else
              f"simulated frames from {[Path(p).name for p in data.get('inputs', [])]}")
    return [f"Architecture `{bundle.arch}` {bundle.arch_kwargs}, preprocessing {bundle.preprocess.to_dict()}.",
            f"Trained on {data.get('counts')} (hit / maybe / miss) frames of {source}, seed "
            f"{bundle.meta.get('seed')}, best epoch {bundle.meta.get('metrics', {}).get('best_epoch')} "
            f"(script: `{data.get('script', 'not recorded')}`)."]  # fmt: skip


def _column(spec: str) -> str:
    """Column heading of a model: ``bundled NAME`` for a bundled model, else the file's stem."""
    from diffscreen.models import BUNDLED_MODELS

    return f"bundled {spec}" if spec in BUNDLED_MODELS and not Path(spec).exists() else Path(spec).stem


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="default", help="model file or bundled model name (default: default)")
    ap.add_argument("--compare", action="append", default=[], help="another model to score beside it (repeatable)")
    ap.add_argument("--work", default=str(ROOT / "work" / "report"))
    ap.add_argument("--frames", type=int, default=200)
    ap.add_argument("--out", default=str(ROOT / "docs" / "default_model.md"))
    ap.add_argument("--notes", default=None, help="markdown file appended to the page")
    a = ap.parse_args()
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    bundle = load_model(a.model)
    clfs = {_column(a.model): Classifier(bundle)}
    lines = ["# The bundled models", "", f"**{_column(a.model)}**: "] + _describe(bundle)
    lines += ["", "Reproduce the bundled default model with `scripts/make_default_model.py` as of commit 436bf33, "
              "the fast model with `python scripts/make_default_model.py --which fast --install`, and this page with "
              "`python scripts/report_default_model.py" + "".join(f" --compare {c}" for c in a.compare) + "`.", ""]
    for c in a.compare:
        other = load_model(c)
        clfs[_column(c)] = Classifier(other)
        lines += [f"**{_column(c)}** (`{c}`): "] + _describe(other) + [""]
    lines += simulated_section(clfs, work, a.frames)
    lines += real_section(clfs)
    if a.notes:
        lines += [Path(a.notes).read_text()]
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text("\n".join(lines) + "\n")
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
