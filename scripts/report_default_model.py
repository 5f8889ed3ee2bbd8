"""Score a model (default: the bundled one) on fresh simulated runs and on the real frames.

Writes docs/default_model.md.  Usage::

    python scripts/report_default_model.py [--model M] [--work work/report] [--frames 200]

The simulated test runs use seeds the training data never used (2001-2003).
The real frames are those of ../shared/data/real-frames with the labels of
its MANIFEST.tsv.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

from diffscreen.evaluate import evaluate_labels
from diffscreen.io import open_source
from diffscreen.io.labels import LabelTable, read_labels
from diffscreen.models import load_model
from diffscreen.models.decision import decide
from diffscreen.models.inference import Classifier
from diffscreen.simulate import simulate_run

ROOT = Path(__file__).resolve().parents[1]
REAL = ROOT.parent / "shared" / "data" / "real-frames"
TEST_RUNS = (("rayonix", 2001), ("cspad", 2002), ("rayonix_jet", 2003))


def simulated_section(clf: Classifier, work: Path, n: int) -> list[str]:
    out = ["## Fresh simulated test runs", ""]
    for preset, seed in TEST_RUNS:
        path = work / f"test_{preset}_{seed}.cxi"
        if not path.exists():
            simulate_run(preset, n, path, seed=seed)
        table = LabelTable.from_records(read_labels(str(path)))
        true, pred = [], []
        with open_source(str(path)) as src:
            for b in range(0, len(src), 16):
                frames = [src.read(i) for i in range(b, min(b + 16, len(src)))]
                _, lab = decide(clf.predict(frames), clf.class_names)
                pred.extend(lab)
                true.extend(table.get(str(path), fr.meta.index) for fr in frames)
        rep = evaluate_labels(true, pred)
        out += [f"### `{preset}`, {n} frames, seed {seed}", "", rep.to_markdown(), ""]
        print(preset, json.dumps(rep.metrics))
    return out


def real_section(clf: Classifier) -> list[str]:
    manifest = {r["file"]: r for r in csv.DictReader(open(REAL / "MANIFEST.tsv"), delimiter="\t")}
    out = [
        "## Real frames (../shared/data/real-frames)",
        "",
        "None of these detectors or experiments was simulated except the Rayonix and CSPAD ones; "
        "the model was not tuned to these files.",
        "",
        "| file | detector | truth | p_hit | p_maybe | p_miss | called |",
        "|---|---|---|---|---|---|---|",
    ]
    true, pred = [], []
    for name in sorted(manifest):
        with open_source(str(REAL / name)) as src:
            fr = src.read(0)
        p = clf.predict([fr])[0]
        _, lab = decide(p[None], clf.class_names)
        m = manifest[name]
        out.append(f"| {name} | {m['detector']} | {m['label']} | {p[0]:.3f} | {p[1]:.3f} | {p[2]:.3f} | {lab[0]} |")
        true.append(m["label"])
        pred.append(lab[0])
        print(name, m["label"], p.round(3), lab[0])
    n_ok = sum((t == "miss") == (p == "miss") for t, p in zip(true, pred))
    out += ["", f"Keep decision correct on {n_ok} of {len(true)} real frames.", ""]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None)
    ap.add_argument("--work", default=str(ROOT / "work" / "report"))
    ap.add_argument("--frames", type=int, default=200)
    ap.add_argument("--out", default=str(ROOT / "docs" / "default_model.md"))
    a = ap.parse_args()
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    bundle = load_model(a.model)
    clf = Classifier(bundle)
    tr = bundle.meta.get("training", {})
    lines = [
        "# The bundled default model",
        "",
        f"Architecture `{bundle.arch}` {bundle.arch_kwargs}, preprocessing {bundle.preprocess.to_dict()}.",
        f"Trained on {tr.get('data', {}).get('counts')} simulated frames from "
        f"{[Path(p).name for p in tr.get('data', {}).get('inputs', [])]}, seed {bundle.meta.get('seed')}, "
        f"best epoch {bundle.meta.get('metrics', {}).get('best_epoch')}; "
        "reproduce it with `scripts/make_default_model.sh`, and this page with "
        "`python scripts/report_default_model.py`.",
        "",
    ]
    lines += simulated_section(clf, work, a.frames)
    lines += real_section(clf)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text("\n".join(lines) + "\n")
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
