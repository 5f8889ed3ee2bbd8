"""``diffscreen benchmark``: rerun a paper's experiments on simulated runs and write docs/benchmarks/<paper>.md.

Ke et al. (2018), Xie et al. (2022), Nawaz et al. (2022), Zimmermann et al.
(2019) and the leave-one-detector-family-out generalisation benchmark; each
subcommand imports its benchmark only when it runs.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import typer

from diffscreen.cli._common import Bar, device_of, device_option, friendly, progress

benchmark_app = typer.Typer(
    help="Rerun a paper's experiments on simulated runs and write docs/benchmarks/<paper>.md.",
    no_args_is_help=True,
)


def _run_with_findings(module, title: str, out: Path, *, quick: bool, work, workers: int, seeds: int = 1,
                       **extra) -> None:
    """Run a benchmark ``module`` whose results carry findings (its ``run_seeds`` for a full run of several
    seeds); print them; in quick mode exit 1 unless every finding in ``module.ASSERTED`` (those that held at
    each quick seed) holds."""
    name = module.__name__.rpartition(".")[2]
    with progress() as p:
        p.console.print(f"{title} benchmark{' (quick)' if quick else ''} -> {out}")
        if quick or seeds < 2:
            res = module.run(out, quick=quick, work=work, workers=workers, log=p.console.print, **extra)
        else:
            res = module.run_seeds(out, seeds, work=work, workers=workers, log=p.console.print, **extra)
    print(f"wrote {out / (name + '.md')} ({res['seconds'] / 60:.1f} min)")
    for finding, f in res["findings"].items():
        detail = f.get("detail") or f"held at {f['held_at']} of {f['seeds']} seeds; " + "; ".join(
            f"{k}: {v}" for k, v in f["verdicts"].items())
        print(f"{'ok  ' if f['holds'] else 'FAIL'} {finding}: {detail}")
    if quick and not all(res["findings"].get(n, {"holds": False})["holds"] for n in module.ASSERTED):
        raise typer.Exit(1)


_SEEDS_HELP = "Full runs: this many seeds, each simulated and trained afresh; the report gives every number's " \
              "mean and 95 % interval (≥ 3). --quick runs one."


@benchmark_app.command("ke2018")
@friendly
def benchmark_ke2018(
    out: Path = typer.Option(Path("docs/benchmarks"), "--out", "-o", help="Folder for ke2018.md, ke2018.json and figures."),
    quick: bool = typer.Option(False, "--quick", help="CI size: two presets, small models (minutes); asserts one finding."),
    work: Path = typer.Option(Path("work/ke2018-cache"), help="Cache of simulated data, models and each seed's "
                              "results, shared with benchmark xie2022; reruns resume."),
    workers: int = typer.Option(2, help="Processes for simulation and training."),
    seeds: int = typer.Option(3, min=1, help=_SEEDS_HELP),
    annotations: Path = typer.Option(Path("../shared/data/cxidb76-annotations"), help="CXIDB-76 annotation folder (expert and DIALS labels): Table 3's spot-finding column and Fig. 7 from the real labels, when it exists."),
):
    """Rerun Ke et al. (2018) on simulated runs of the five CXIDB-76 presets.

    Tables 3-8 (CNN against peakfinder8 and DIALS, cross-preset and
    cross-detector training, training-set size, LCN against linear
    contrast), Fig. 9 and the throughput, with the paper's numbers
    alongside; Table 3's automatic spot-finding column and Fig. 7 from the
    real CXIDB-76 expert and DIALS labels (--annotations).  Each seed of the
    full run takes about an hour on 2 cores, DIALS included.

    --quick exits 1 unless the CNN keeps more of L498's hit-or-maybe frames
    than peakfinder8 with Ke's Table 2 settings, the one finding that held at
    each of three quick seeds; the others are reported, not asserted.
    """
    from diffscreen.benchmarks import ke2018

    _run_with_findings(ke2018, "Ke et al. (2018)", out, quick=quick, work=work, workers=workers, seeds=seeds,
                       annotations=annotations)


@benchmark_app.command("xie2022")
@friendly
def benchmark_xie2022(
    out: Path = typer.Option(Path("docs/benchmarks"), "--out", "-o", help="Folder for xie2022.md, xie2022.json and figures."),
    quick: bool = typer.Option(False, "--quick", help="CI size: one Rayonix -> CSPAD pair, small models (minutes)."),
    work: Path = typer.Option(Path("work/ke2018-cache"), help="Cache of simulated data, models and each seed's "
                              "results, shared with benchmark ke2018 (its data and CNNs); reruns resume."),
    workers: int = typer.Option(2, help="Processes for simulation and training."),
    seeds: int = typer.Option(3, min=1, help=_SEEDS_HELP + " Seed i: Xie seed 2022+i on ke2018's runs of seed "
                              "2018+i."),
):
    """Rerun Xie et al. (2022): few labels, transfer learning, RWD 1-D CNN and DANN.

    Tables 1-5 and 7 (fully supervised, 200 labels from scratch, transfer,
    row-wise decomposition, DANN, cross-dataset), the t-SNE panels of Fig. 9
    and the RWD speed, with the paper's numbers alongside, on simulated runs
    of the Rayonix presets LN83, LN84, LO19 and the CSPAD preset L498.
    Each seed of the full run takes about 40 min on 2 cores once benchmark
    ke2018 has made that seed's runs and CNNs (same --work).
    --quick runs every experiment at CI size and reports its findings
    without asserting any: none held by a safe margin at each of three quick
    seeds (docs/benchmarks/xie2022_notes.md).
    """
    from diffscreen.benchmarks import xie2022

    _run_with_findings(xie2022, "Xie et al. (2022)", out, quick=quick, work=work, workers=workers, seeds=seeds)


@benchmark_app.command("nawaz2022")
@friendly
def benchmark_nawaz2022(
    out: Path = typer.Option(Path("docs/benchmarks"), "--out", "-o", help="Folder for nawaz2022.md and its PNGs."),
    quick: bool = typer.Option(False, "--quick", help="Minutes-long smoke run (narrow AlexNet, few frames, one seed; "
                               "writes no report)."),
    seed: int = typer.Option(0, help="Seed of training frames and weights (test frames: seed + 1000); the first, "
                             "with --seeds."),
    seeds: int = typer.Option(3, min=1, help="Full runs: seeds SEED, SEED+1, ... each simulated and trained afresh; "
                              "the report gives every number's mean and 95 % interval (≥ 3)."),
    work: Path = typer.Option(Path("work/nawaz2022"), help="Cache of simulated inputs, models and each seed's result; "
                              "reruns resume."),
    device: Optional[str] = device_option(),
):
    """Nawaz et al. (2022): AlexNet on the five DiffraNet classes, Tables 2-3, Figs. 6-7 (CPU recipe).

    About 12 min per seed on one CPU thread.  --device: where AlexNet trains
    (the figures and timings stay on the CPU).
    """
    from diffscreen.benchmarks import nawaz2022 as bench

    if quick:
        r = bench.run(out, quick=True, seed=seed, work_dir=work, log=print, device=device_of(device))
        print(f"5-class accuracy {100 * r['accuracy']:.1f} %, hit/miss accuracy {100 * r['hit_miss']['accuracy']:.1f} %")
        return
    res = bench.run_seeds(out, list(range(seed, seed + seeds)), work_dir=work, log=print, device=device_of(device))
    for name, iv in (("5-class accuracy", res["summary"]["accuracy"]),
                     ("hit/miss accuracy", res["summary"]["hit_miss"]["accuracy"])):
        lo, hi = iv["ci95"]
        print(f"{name} {100 * iv['mean']:.1f} %" + (f" (95 % interval {100 * lo:.1f}-{100 * hi:.1f}, "
                                                   f"{len(res['seeds'])} seeds)" if lo == lo else " (one seed)"))
    print(f"written {res['markdown_path']}")


@benchmark_app.command("zimmermann2019")
@friendly
def benchmark_zimmermann2019(
    out: Path = typer.Option(Path("docs/benchmarks"), "--out", "-o", help="Folder for zimmermann2019.md and its PNGs."),
    quick: bool = typer.Option(False, "--quick", help="CI mode: tiny runs that check the findings (minutes)."),
    seed: int = typer.Option(0, help="Seed of the simulation, splits and training (the first, with --seeds)."),
    seeds: int = typer.Option(3, min=1, help="Full runs: seeds SEED, SEED+1, ... each simulated and trained "
                              "afresh; the report gives every number's mean and 95 % interval (≥ 3). --quick runs "
                              "one."),
    work: Path = typer.Option(Path("work/zimmermann2019"), "--work", help="Cache of each seed's result; reruns "
                              "resume."),
    threads: int = typer.Option(1, min=1, help="Torch threads."),
):
    """Zimmermann et al. (2019): log-activation α (Table 4), training-set size (Table 5),
    noise with images vs CCF maps (Table 6) and Grad-CAM++ overlays (Fig. 5), on
    simulated single-particle CDI patterns with the reduced CPU recipe.

    --quick exits 1 unless both networks learn beyond the all-negative and
    the majority-label predictors, the image network beats both on accuracy,
    precision and recall, and CCF maps keep more of their skill than raw
    images under the strongest noise.
    """
    import torch

    from diffscreen.benchmarks import zimmermann2019 as bench

    torch.set_num_threads(max(1, threads))
    if not quick:
        res = bench.run_seeds(out, list(range(seed, seed + seeds)), work=work)
        print(res["markdown_path"])
        return
    res = bench.run(out, quick=True, seed=seed)
    print(res["markdown_path"])
    for name, f in bench.quick_checks(res).items():
        print(f"{'ok  ' if f['holds'] else 'FAIL'} {name}: {f['detail']}")
    bench.check_quick(res)  # FindingNotReproduced: exit 1


def _generalisation_runs(out: Path) -> list:
    """The results of every recipe's run in OUT (``generalisation*.json``), by file name."""
    import json

    return [json.loads(p.read_text()) for p in sorted(out.glob("generalisation*.json"))]


def _write_generalisation(out: Path, res: dict) -> None:
    """Write OUT/generalisation[_RECIPE].json and the report made of it (atomically), compared with another recipe's
    run on the same test frames where OUT holds one."""
    import json

    from diffscreen.benchmarks.generalisation import companion, recipe_of, report_markdown, report_name
    from diffscreen.io.atomic import atomic_write_text

    out.mkdir(parents=True, exist_ok=True)
    name = report_name(recipe_of(res["settings"]))
    atomic_write_text(out / f"{name}.json", json.dumps(res, indent=1, default=float))
    other = companion(res, _generalisation_runs(out))
    atomic_write_text(out / f"{name}.md", report_markdown(res, other))
    print(f"wrote {out / name}.md")
    if other is not None:  # its report now compares with this run
        other_name = report_name(recipe_of(other["settings"]))
        atomic_write_text(out / f"{other_name}.md", report_markdown(other, res))
        print(f"rewrote {out / other_name}.md")


def _add_peers(res: dict, out: Path, dials_frames: int, workers: int, p) -> None:
    """``res["spot_finders"]``: the spot-finders on its test frames, from a run in OUT on them (with as many DIALS
    frames) or scored; diffscreen's spot count always from the run's own ``spot_counts`` (the gate's count)."""
    from diffscreen.benchmarks import generalisation as g

    reuse = g.earlier_peers(res["settings"], [res, *_generalisation_runs(out)], dials_frames, res.get("spot_counts"))
    if reuse is not None:
        p.console.print("spot-finders: the same test frames' scores from an earlier run in the folder")
    res["spot_finders"] = reuse or g.spot_finder_peers(res["settings"], n_dials=dials_frames,
                                                       spot_counts=res.get("spot_counts"), workers=workers,
                                                       log=p.console.print, progress=Bar(p, "spot-finders"))


def _add_ceiling(res: dict, out: Path, workers: int, p) -> None:
    """``res["ceiling"]``: the noise ceiling of its test frames, from an earlier run in OUT on them or computed."""
    from diffscreen.benchmarks import generalisation as g

    reuse = g.earlier_result(res["settings"], [res, *_generalisation_runs(out)], "ceiling")
    res["ceiling"] = reuse or g.noise_ceiling(res["settings"], workers=workers, progress=Bar(p, "noise ceiling"))


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
    dials_frames: int = typer.Option(20, help="Test frames per preset and seed that DIALS scores beside the CNN "
                                              "(about a second each; 0: none; needs Debian's python3-dials)."),
    peers_only: bool = typer.Option(False, "--peers-only", help="Only add the spot-finders' scores and the noise "
                                                                 "ceiling, where missing, to the --recipe's earlier "
                                                                 "run in OUT and rewrite its report."),
    min_spots: Optional[int] = typer.Option(None, "--min-spots", min=0, help="The spot gate, as screen --min-spots "
                                                                            "\\[4]; 0: the networks alone."),
    recipe: str = typer.Option("default", help="Network input: default (the bundled default model's, what screen "
                                               "runs; report generalisation.md) or significance (report "
                                               "generalisation_significance.md)."),
):
    """Train on every detector family but one, test on the one left out.

    Families: hybrid-pixel 172 µm (Pilatus), hybrid-pixel 75 µm (Eiger),
    Rayonix-type CCD, CSPAD, JUNGFRAU/AGIPD-type panels; each family's
    presets include its domain-randomised ``wide_*`` preset.  The score is the
    balanced accuracy of the keep decision with a 95 % interval over seeds,
    per family, and of every trained model on the shared real frames.  Beside
    the CNN, spot-finders with their defaults (diffscreen's spot finder,
    peakfinder8, DIALS) score the same test frames, and the noise ceiling
    gives what the photon noise of those frames leaves to any screen;
    --peers-only adds both to an earlier run's report without training, and a
    run reuses them from another recipe's run in OUT on the same test frames.
    Where OUT holds both recipes' runs, each report compares them seed by seed.
    """
    import json

    from diffscreen.benchmarks import generalisation as g
    from diffscreen.errors import ConfigError
    from diffscreen.evaluate.labelled import real_frame_scores
    from diffscreen.evaluate.metrics import t_interval
    from diffscreen.models import resolve_model_path

    n_train = None
    if quick:
        seeds, n_train, test_frames, epochs, batches, dials_frames = 1, 40, 40, 2, 5, 0
    g.recipe_config(recipe)  # an unknown recipe: one error line before any work
    earlier = out / f"{g.report_name(recipe)}.json"
    if peers_only:
        if not earlier.exists():
            raise ConfigError("--peers-only scores the test frames of an earlier run, but it has no results here",
                              path=earlier)
        res = json.loads(earlier.read_text())
        with progress() as p:
            _add_peers(res, out, dials_frames, workers, p)
            _add_ceiling(res, out, workers, p)
        return _write_generalisation(out, res)
    t0 = time.time()
    with progress() as p:
        p.console.print(f"leave-one-family-out benchmark{' (quick)' if quick else ''} -> {out}")
        before = json.loads(earlier.read_text()) if earlier.exists() else {}
        res = g.run_generalisation(work, earlier, seeds=tuple(range(seeds)), n_train=n_train, n_test=test_frames,
                                   epochs=epochs, batches=batches, workers=workers, recipe=recipe,
                                   min_spots=g.KEEP_MIN_SPOTS if min_spots is None else min_spots,
                                   runs=_generalisation_runs(out), log=p.console.print)
        _add_peers(res, out, dials_frames, workers, p)
        _add_ceiling(res, out, workers, p)
        gate = res["settings"]["min_spots"]
        folders = [real / "real-frames", real / "real-frames-2"]
        if all((f / "MANIFEST.tsv").exists() for f in folders):
            res["real"] = {}
            res["real_frames"] = {}
            for fam in res["families"]:
                scores = []
                for m in res["families"][fam]["models"]:
                    scores.append(real_frame_scores(m, folders, min_spots=gate)["balanced_accuracy"])
                res["real"][f"trained without {fam}"] = t_interval(scores)
            for name in ("default", "fast"):  # the bundled models as they ship (trained on every family)
                path = str(resolve_model_path(name))
                scored = real_frame_scores(path, folders, min_spots=gate)
                res["real"][f"bundled {name} ({Path(path).name})"] = scored["balanced_accuracy"]
                res["real_frames"][f"bundled {name}"] = scored["frames"]
    dials = Path("bench/results/dials_real_frames.json")
    if dials.exists():  # written by bench/dials/real_frames.py (needs Debian's python3-dials)
        res["peers"] = g.dials_peer_lines(dials)
    res["seconds"] = time.time() - t0
    if not res.get("trained") and "seconds" in before and g.same_test_frames(before["settings"], res["settings"]):
        res["seconds"] = before["seconds"]  # every model came from the cache: the run that trained them took this
    _write_generalisation(out, res)
    print(f"({res['seconds'] / 60:.1f} min)")
    for fam, r in res["families"].items():
        print(f"{fam}: {r['mean']:.3f} {r['ci95']}")
