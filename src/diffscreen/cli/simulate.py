"""``diffscreen simulate``: a simulated serial-crystallography or CDI run with its labels."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional, Tuple

import typer

from diffscreen.cli._common import Bar, Task, counting, friendly, progress, simulate_with_bar


@friendly
def simulate(
    old_out: Optional[Path] = typer.Argument(None, help="Deprecated: the output file; use --out.",
                                             show_default=False),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Output CXI file (.cxi)."),
    preset: Optional[str] = typer.Option(None, help="Detector/experiment preset (see --list-presets) \\[rayonix; --task diffranet: rayonix, rayonix_jet and cspad in turn]."),
    frames: int = typer.Option(100, "--frames", "-n", min=1, help="Number of frames."),
    seed: int = typer.Option(0, help="Random seed; the same seed gives the same frames."),
    list_presets: bool = typer.Option(False, "--list-presets", help="List the presets and exit."),
    task: Task = typer.Option(Task.crystallography, help="crystallography (Bragg frames), cdi (single-particle patterns, 11 multi-hot labels) or diffranet (Bragg frames labelled with the 5 DiffraNet classes, Nawaz 2022)."),
    size: int = typer.Option(128, help="CDI: frame side in pixels (uniform in q)."),
    radius_nm: float = typer.Option(260.0, help="CDI: median droplet radius, nm (log-normal)."),
    photons: Tuple[float, float] = typer.Option((3e4, 1e6), help="CDI: range of particle photons per frame (log-uniform)."),
    flat_ewald: bool = typer.Option(False, "--flat-ewald", help="CDI: small-angle (flat Ewald sphere) patterns; no Bent/Newton/Asymmetric."),
):
    """Simulate a serial-crystallography run with per-frame hit/maybe/miss labels.

    Physics-based: Bragg spots from a unit cell in a random orientation on the
    Ewald sphere, Wilson intensities, detector PSF, water ring and air scatter,
    Poisson and read noise, gain, saturation and the detector's masks.  Labels
    follow Ke et al. (2018) §3.3.1 (>= 10 detectable spots: hit, 4-9: maybe).
    The stacked-panel presets (agipd1m_stacked, jungfrau4m_stacked) write the
    frames as (N, SS, FS) data blocks and their CrystFEL geometry as
    detector.geom beside OUT, for `diffscreen screen OUT --geom detector.geom`.

    With --task diffranet: frames labelled with the 5 DiffraNet classes
    (blank, no-crystal, weak, good, strong; diffscreen.simulate.diffranet),
    for `train --task diffranet`.
    """
    from diffscreen.errors import ConfigError

    out = _output(old_out, out)
    if task is Task.cdi:
        from diffscreen.simulate.cdi import simulate_cdi_run

        if out is None:
            raise ConfigError("give the output file: diffscreen simulate --task cdi --out OUT.cxi")
        if frames < 1:
            raise ConfigError("--frames must be >= 1")
        with progress() as p:
            bar = Bar(p, f"simulating {frames} CDI frames")
            bar(total=frames)
            path = simulate_cdi_run(out, frames, seed=seed, progress=counting(bar), size=size, radius_nm=radius_nm,
                                    photons=tuple(photons), ewald=not flat_ewald)
        print(f"wrote {frames} CDI frames to {path}")
        return
    if task is Task.diffranet:
        from diffscreen.simulate.diffranet import DIFFRANET_PRESETS, simulate_diffranet_run

        if out is None:
            raise ConfigError("give the output file: diffscreen simulate --task diffranet --out OUT.cxi")
        with progress() as p:
            bar = Bar(p, f"simulating {frames} DiffraNet frames")
            bar(total=frames)
            path = simulate_diffranet_run(out, frames, seed=seed, progress=counting(bar),
                                          presets=DIFFRANET_PRESETS if preset is None else (preset,))
        print(f"wrote {frames} frames labelled with the DiffraNet classes to {path}")
        return
    preset = "rayonix" if preset is None else preset
    from diffscreen.simulate import PRESETS

    if list_presets:
        for name, p in PRESETS.items():
            print(f"{name}: {p.detector}, {p.shape[1]}x{p.shape[0]} px of {p.pixel_size_mm} mm. {p.notes}")
        return
    if out is None:
        raise ConfigError("give the output file: diffscreen simulate --out OUT.cxi")
    from diffscreen.simulate import STACKED, simulate_stacked_run

    if preset in STACKED:  # stacked panels (AGIPD 1M, JUNGFRAU 4M): data blocks, and detector.geom beside them
        with progress() as p:
            bar = Bar(p, f"simulating {frames} frames")
            bar(total=frames)
            path, geom = simulate_stacked_run(preset, frames, out, seed=seed, progress=counting(bar))
        print(f"wrote {frames} frames of stacked panels to {path} and their CrystFEL geometry to {geom}")
        return
    with progress() as p:
        path = simulate_with_bar(p, preset, frames, out, seed)
    print(f"wrote {frames} frames to {path}")


def _output(positional: Optional[Path], option: Optional[Path]) -> Optional[Path]:
    """The output file from --out, or from the deprecated positional form (with a warning on stderr).

    Raises
    ------
    ConfigError
        Both forms were given.
    """
    if positional is None:
        return option
    if option is not None:
        from diffscreen.errors import ConfigError

        raise ConfigError("give the output file once: diffscreen simulate --out OUT.cxi")
    print(f"WARNING: `diffscreen simulate OUT` is deprecated; use `diffscreen simulate --out {positional}`",
          file=sys.stderr)
    return positional
