"""``diffscreen benchmark generalisation``: leave one detector family out (issue 13)."""

from __future__ import annotations

import time
from pathlib import Path

import typer

from diffscreen.cli import _progress, benchmark_app, friendly


@benchmark_app.command("generalisation")
@friendly
def benchmark_generalisation(
    out: Path = typer.Option(Path("docs/benchmarks"), "--out", "-o", help="Folder for generalisation.md and .json."),
    quick: bool = typer.Option(False, "--quick", help="CI size: 1 seed, few frames, 2 epochs (minutes; asserts nothing)."),
    work: Path = typer.Option(Path("work/bundled"), help="Cache of simulated inputs (WORK/inputs, shared with "
                                                          "scripts/make_default_model.py) and models; reruns resume."),
    seeds: int = typer.Option(3, help="Training runs per family (≥ 3 for a 95 % interval)."),
    test_frames: int = typer.Option(100, help="Test frames per preset."),
    epochs: int = typer.Option(20, help="Epochs of --batches class-balanced batches of 32."),
    batches: int = typer.Option(25, help="Batches per epoch."),
    workers: int = typer.Option(2, help="Simulation processes."),
    real: Path = typer.Option(Path("../shared/data"), help="Folder holding real-frames/ and real-frames-2/ (each with "
                                                            "MANIFEST.tsv) for the real-frame column; skipped if absent."),
):
    """Train on every detector family but one, test on the one left out.

    Families: hybrid-pixel 172 µm (Pilatus), hybrid-pixel 75 µm (Eiger),
    Rayonix-type CCD, CSPAD, JUNGFRAU/AGIPD-type panels; each family's
    presets include its domain-randomised ``wide_*`` preset.  The score is the
    balanced accuracy of the keep decision with a 95 % interval over seeds,
    per family, and of every trained model on the shared real frames.
    """
    from diffscreen.benchmarks import generalisation as g
    from diffscreen.io.atomic import atomic_write_text

    n_train = None
    if quick:
        seeds, n_train, test_frames, epochs, batches = 1, 40, 40, 2, 5
    t0 = time.time()
    with _progress() as p:
        p.console.print(f"leave-one-family-out benchmark{' (quick)' if quick else ''} -> {out}")
        res = g.run_generalisation(work, out / "generalisation.json", seeds=tuple(range(seeds)), n_train=n_train,
                                   n_test=test_frames, epochs=epochs, batches=batches, workers=workers,
                                   log=p.console.print)
        folders = [real / "real-frames", real / "real-frames-2"]
        if all((f / "MANIFEST.tsv").exists() for f in folders):
            res["real"] = {}
            res["real_frames"] = {}
            for fam in res["families"]:
                scores = []
                for m in res["families"][fam]["models"]:
                    scores.append(g.real_frame_scores(m, folders)["balanced_accuracy"])
                res["real"][f"trained without {fam}"] = g.t_interval(scores)
            for name in ("default", "fast"):  # the bundled models as they ship (trained on every family)
                path = g.bundled_model_path(name)
                scored = g.real_frame_scores(path, folders)
                res["real"][f"bundled {name} ({Path(path).name})"] = scored["balanced_accuracy"]
                res["real_frames"][f"bundled {name}"] = scored["frames"]
    dials = Path("bench/results/dials_real_frames.json")
    if dials.exists():  # written by bench/dials/real_frames.py (needs Debian's python3-dials)
        res["peers"] = g.dials_peer_lines(dials)
    res["seconds"] = time.time() - t0
    import json

    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "generalisation.json", json.dumps(res, indent=1, default=float))
    atomic_write_text(out / "generalisation.md", g.report_markdown(res))
    print(f"wrote {out / 'generalisation.md'} ({res['seconds'] / 60:.1f} min)")
    for fam, r in res["families"].items():
        print(f"{fam}: {r['mean']:.3f} {r['ci95']}")
