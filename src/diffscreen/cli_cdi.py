"""``diffscreen benchmark zimmermann2019``: the CDI multi-label experiments (Tables 4-6, Fig. 5)."""

from __future__ import annotations

from pathlib import Path

import typer

from diffscreen.cli import benchmark_app, friendly


@benchmark_app.command("zimmermann2019")
@friendly
def zimmermann2019(
    out: Path = typer.Option(Path("docs/benchmarks"), "--out", "-o", help="Folder for zimmermann2019.md and its PNGs."),
    quick: bool = typer.Option(False, "--quick", help="CI mode: tiny runs that assert the qualitative findings."),
    seed: int = typer.Option(0, help="Seed of the simulation, splits and training."),
    threads: int = typer.Option(1, min=1, help="Torch threads."),
):
    """Zimmermann et al. (2019): log-activation α (Table 4), training-set size (Table 5),
    noise with images vs CCF maps (Table 6) and Grad-CAM++ overlays (Fig. 5), on
    simulated single-particle CDI patterns with the reduced CPU recipe.

    --quick asserts that CCF maps lose less than raw images under the strongest
    noise and that the multi-label metrics beat the all-negative predictor.
    """
    import torch

    from diffscreen.benchmarks import zimmermann2019 as bench

    torch.set_num_threads(max(1, threads))
    res = bench.run(out, quick=quick, seed=seed)
    print(res["markdown_path"])
    if quick:
        bench.check_quick(res)
        print("quick checks passed")
