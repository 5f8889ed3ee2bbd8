"""What every command shares: exit statuses, error handling, options, progress bars, input expansion.

Nothing heavy is imported at module level, so ``--help`` stays fast; a user
mistake or a bad input ends in one ``ERROR: ...`` line and a non-zero exit
status, never a traceback (README, "Exit status").
"""

from __future__ import annotations

import functools
import sys
from contextlib import contextmanager
from enum import Enum
from pathlib import Path
from typing import List, Optional

import typer

from diffscreen.errors import EXIT_RUN, EXIT_USAGE  # numbers only: loads nothing heavy

__all__ = ["EXIT_PARTIAL", "EXIT_RUN", "EXIT_USAGE", "EXIT_INTERNAL", "MODEL_HELP", "Task", "ModelType", "Bar",
           "error", "friendly", "live_dashboard", "DASHBOARD_OPTION", "DEVICE_HELP", "device_option", "device_of",
           "progress", "counting", "expand", "given", "report_screen", "simulate_with_bar"]

EXIT_PARTIAL = 1  # finished, but some frames or files failed
EXIT_INTERNAL = 4  # a bug in diffscreen: the traceback goes to a file to report

#: --model help, shared by every command that takes a model
MODEL_HELP = ("Model file (.safetensors), or a bundled model: default (720², most accurate) or fast (240², "
              "about twice as fast to classify, less accurate: docs/default_model.md); default: default.")


class Task(str, Enum):
    crystallography = "crystallography"
    cdi = "cdi"
    diffranet = "diffranet"


class ModelType(str, Enum):
    """Architectures: the Ke 2018 2-D CNN, the Xie 2022 §3.4.2 1-D CNN on row ranges, or the AlexNet of
    Nawaz 2022 (the DiffraNet 5-class task)."""

    ke2018 = "ke2018"
    rwd1d = "rwd1d"
    alexnet = "alexnet"


#: --device help, shared by every command that runs a network (:func:`device_option`)
DEVICE_HELP = ("Where the network runs: cpu, cuda, cuda:N or mps; default: cuda when PyTorch sees a GPU, else cpu. "
               "An unavailable device is refused (exit 2).")


def device_option():
    """The ``--device`` option of every command that runs a network (one definition; see :func:`device_of`)."""
    return typer.Option(None, "--device", help=DEVICE_HELP, show_default=False)


def device_of(name):
    """The checked torch device of ``--device name`` (:func:`diffscreen.models.device.resolve_device`).

    Raises
    ------
    ConfigError
        The device is not visible (one line, exit status 2).
    """
    from diffscreen.models.device import resolve_device

    return resolve_device(name)


def error(msg: str) -> None:
    """Print ``ERROR: msg`` on stderr."""
    print(f"ERROR: {msg}", file=sys.stderr)


def friendly(fn):
    """Turn errors into one ``ERROR:`` line and the documented exit status (README, "Exit status").

    A diffscreen error exits with its ``exit_status``: 3 for a run error
    (output folder, model file, disk full), 2 for a usage error; memory
    exhaustion exits 3; file-system errors on user input 2; anything else is
    a bug: one line, the traceback in a file, exit 4.
    """

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        import errno

        from diffscreen.errors import DiffscreenError

        try:
            return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort, SystemExit):
            raise
        except DiffscreenError as exc:
            error(str(exc))
            raise typer.Exit(exc.exit_status)
        except MemoryError:
            error("out of memory; screen fewer frames at once (--batch-size) or lower --max-frame-pixels")
            raise typer.Exit(EXIT_RUN)
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS):
                error(f"{exc.filename or 'output'}: cannot write ({exc.strerror})")
                raise typer.Exit(EXIT_RUN)
            error(f"{exc.filename}: {exc.strerror}" if exc.filename else str(exc))
        except KeyboardInterrupt:
            error("interrupted; run the same command again to resume")
        except Exception as exc:  # noqa: BLE001 - a bug: report it without a wall of text
            error(f"internal error ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); "
                  f"the traceback is in {_save_traceback()}; please report it")
            raise typer.Exit(EXIT_INTERNAL)
        raise typer.Exit(EXIT_USAGE)

    return wrapper


def _save_traceback() -> str:
    """Write the current exception's traceback to a temporary file; its path."""
    import tempfile
    import traceback

    fd, path = tempfile.mkstemp(prefix="diffscreen-crash-", suffix=".txt")
    with open(fd, "w") as fh:
        fh.write(traceback.format_exc())
    return path


def progress():
    """A rich progress display on stderr (description, bar, n/total, rate, time left); use as a context manager."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=False,
    )


class Bar:
    """Adapter from the library's ``progress(total=, advance=)`` callbacks to a bar of :func:`progress`."""

    def __init__(self, display, description: str, unit: str = "frames"):
        import time

        self.p, self.unit, self._time = display, unit, time
        self.task = display.add_task(description, total=None, rate="")
        self.t0, self.n = time.time(), 0

    def __call__(self, total=None, advance=None):
        if total is not None:
            self.p.update(self.task, total=total)
        if advance:
            self.n += advance
            dt = self._time.time() - self.t0
            self.p.update(self.task, advance=advance, rate=f"{self.n / dt:.1f} {self.unit}/s" if dt > 0 else "")


def counting(bar):
    """A ``progress(n_done)`` callback (frames done so far) that advances ``bar`` by the increments."""
    done = [0]

    def cb(n):
        bar(advance=n - done[0])
        done[0] = n

    return cb


def given(**options) -> dict:
    """The options given on the command line (not None); the others keep their config dataclass's defaults."""
    return {k: v for k, v in options.items() if v is not None}


def expand(inputs: List[str]) -> List[str]:
    """The readable frame files of ``inputs`` (files, folders, globs, ``file.h5:/path``).

    Raises
    ------
    ConfigError
        None of them is a readable frame file.
    """
    from diffscreen.io import expand_inputs

    specs = expand_inputs(inputs)
    if not specs:
        from diffscreen.errors import ConfigError

        raise ConfigError(f"no readable frame files in {', '.join(inputs)}")
    return specs


def simulate_with_bar(display, preset: str, frames: int, out, seed: int):
    """Check the arguments, then simulate a crystallography run with a bar on ``display``; the file's path.

    Raises
    ------
    ConfigError
        Unknown preset, or fewer than one frame.
    """
    from diffscreen.errors import ConfigError
    from diffscreen.simulate import PRESETS, simulate_run

    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; known: {', '.join(PRESETS)}")
    if frames < 1:
        raise ConfigError("--frames must be >= 1")
    bar = Bar(display, f"simulating {frames} {preset} frames")
    bar(total=frames)
    return simulate_run(preset, frames, out, seed=seed, progress=counting(bar))


def report_screen(summary, out) -> None:
    """Print a screening run's first 20 errors (stderr), its summary and its outputs (stdout)."""
    for f, i, e in summary.errors[:20]:
        where = f if i < 0 else f"{f}, frame {i}"
        kind, _, text = e.partition(": ") if e.startswith("warning: ") else ("ERROR", "", e)
        print(f"{kind.upper()}: {where}: {text}", file=sys.stderr)
    if len(summary.errors) > 20:
        print(f"... {len(summary.errors) - 20} more in {Path(out) / 'errors.csv'}", file=sys.stderr)
    print(summary.text())
    print(f"outputs in {out}/: scores.csv, hits.lst" + (", hits.cxi" if (Path(out) / "hits.cxi").exists() else ""))


DASHBOARD_OPTION = typer.Option(None, "--dashboard", help="Serve the live dashboard at [HOST:]PORT (host 127.0.0.1 unless given).")


@contextmanager
def live_dashboard(bind: Optional[str], console, run: str = "", model=None, overlays: bool = True):
    """The observer of ``--dashboard [HOST:]PORT`` while the block runs (the server closes after it); None without
    ``--dashboard`` or when the dashboard module is not there.

    The page's Grad-CAM overlays come from the dashboard's ``GradCamExplainer`` on the same model, where it
    loads; without it the thumbnails have no overlay.
    """
    if not bind:
        yield None
        return
    try:
        from diffscreen.live.dashboard import LiveStats, serve
    except ImportError as exc:
        console.print(f"WARNING: no dashboard ({exc}); screening without it")
        yield None
        return
    if ":" not in bind:
        bind = f"127.0.0.1:{bind}"
    stats = LiveStats(run=run)
    explainer = None
    try:
        if not overlays:  # a spot-finder decided: a network's Grad-CAM would explain another decision
            raise RuntimeError("the method is not a network")
        from diffscreen.live.dashboard import GradCamExplainer

        explainer = GradCamExplainer(None if model is None else str(model))
    except Exception as exc:  # noqa: BLE001 - the overlays are optional; the screening is not
        console.print(f"WARNING: dashboard without Grad-CAM overlays ({type(exc).__name__}: {exc})")
    handle = serve(stats, bind, explainer=explainer) if explainer is not None else serve(stats, bind)
    console.print(f"dashboard: {handle.url}")
    try:
        yield stats
    finally:
        handle.close()
