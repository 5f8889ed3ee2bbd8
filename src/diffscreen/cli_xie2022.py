"""``diffscreen benchmark xie2022``: weakly supervised screening (Xie et al. 2022) on simulated runs."""

from __future__ import annotations

from pathlib import Path

import typer

from diffscreen.cli import _progress, benchmark_app, friendly


@benchmark_app.command("xie2022")
@friendly
def benchmark_xie2022(
    out: Path = typer.Option(Path("docs/benchmarks"), "--out", "-o", help="Folder for xie2022.md, xie2022.json and figures."),
    quick: bool = typer.Option(False, "--quick", help="CI size: one Rayonix -> CSPAD pair, small models (minutes)."),
    work: Path = typer.Option(None, help="Cache of simulated data and models (default OUT/work; share it with "
                                         "benchmark ke2018 to reuse its data and CNNs); reruns resume."),
    workers: int = typer.Option(2, help="Processes for simulation and training."),
):
    """Rerun Xie et al. (2022): few labels, transfer learning, RWD 1-D CNN and DANN.

    Tables 1-5 and 7 (fully supervised, 200 labels from scratch, transfer,
    row-wise decomposition, DANN, cross-dataset), the t-SNE panels of Fig. 9
    and the RWD speed, with the paper's numbers alongside, on simulated runs
    of the Rayonix presets LN83, LN84, LO19 and the CSPAD preset L498.
    --quick exits 1 unless transfer learning beats training from scratch and
    the DANN keeps more of the target's hit-or-maybe frames than the
    source-only CNN.
    """
    from diffscreen.benchmarks import xie2022

    with _progress() as p:
        p.console.print(f"Xie et al. (2022) benchmark{' (quick)' if quick else ''} -> {out}")
        res = xie2022.run(out, quick=quick, work=work, workers=workers, log=p.console.print)
    print(f"wrote {out / 'xie2022.md'} ({res['seconds'] / 60:.1f} min)")
    for name, f in res["findings"].items():
        print(f"{'ok  ' if f['holds'] else 'FAIL'} {name}: {f['detail']}")
    if quick and not all(res["findings"].get(n, {"holds": False})["holds"] for n in xie2022.ASSERTED):
        raise typer.Exit(1)  # the quick mode asserts the findings that hold at its size
