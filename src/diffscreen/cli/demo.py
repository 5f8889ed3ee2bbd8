"""``diffscreen demo``: simulate a small run, screen it and score it against the simulator's truth."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from diffscreen.cli._common import MODEL_HELP, Bar, friendly, progress, report_screen, simulate_with_bar


@friendly
def demo(
    out: Path = typer.Option(Path("diffscreen-demo"), "--out", "-o", help="Output folder."),
    frames: int = typer.Option(40, "--frames", "-n", min=1, help="Frames to simulate."),
    preset: str = typer.Option("rayonix", help="Simulator preset."),
    seed: int = typer.Option(2026, help="Simulation seed."),
    model: Optional[Path] = typer.Option(None, "--model", "-m", help=MODEL_HELP),
):
    """Simulate a small run, screen it with the bundled model and score it against the truth.

    Writes the simulated run (OUT/run.cxi) and the same outputs as `screen`.
    """
    from diffscreen.evaluate import evaluate_labels
    from diffscreen.evaluate.labelled import labels_for_scores
    from diffscreen.screen import screen as run_screen

    out.mkdir(parents=True, exist_ok=True)
    run = out / "run.cxi"
    with progress() as p:
        simulate_with_bar(p, preset, frames, run, seed)
        summary = run_screen([str(run)], out, model=model, resume=False, progress=Bar(p, "screening"))
    report_screen(summary, out)
    true, pred = labels_for_scores(out / "scores.csv", [str(run)])
    rep = evaluate_labels(true, pred)
    print("\nAgainst the simulator's truth:")
    print(rep.to_markdown())
    truth_rate = sum(t != "miss" for t in true) / len(true)
    print(f"true hit rate {100 * truth_rate:.1f}%, screened hit rate {100 * summary.hit_rate:.1f}%")
