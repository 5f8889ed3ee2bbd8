"""``diffscreen watch``, ``stream`` and ``replay``: screening live, while a run is collected (issue 14)."""

from __future__ import annotations

import sys
import threading
from pathlib import Path
from typing import Optional

import typer

from diffscreen.cli._common import DASHBOARD_OPTION, EXIT_PARTIAL, MODEL_HELP, Bar, friendly, live_dashboard, progress

_LOOP = "screening"
_OUT_HELP = "Output folder: scores.csv, hits.lst, errors.csv and hits/hits_NNNNNN.cxi grow in whole chunks; summary.json."


def _console():
    from rich.console import Console

    return Console(stderr=True, highlight=False)


class _Ticker:
    """A status line on stderr every ``every`` seconds: frames received, screened, dropped, failed, waiting."""

    def __init__(self, console, every: float = 5.0):
        self.console, self.every, self.loop = console, every, None
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def say(self, text: str) -> None:
        self.console.print(f"[dim]{text}[/dim]")

    def attach(self, loop) -> None:
        self.loop = loop

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            if self.loop is not None:
                c = self.loop.counts()
                self.console.print(f"received {c['frames_received']}  screened {c['frames_screened']}  kept "
                                   f"{c['n_hit'] + c['n_maybe']}  dropped {c['frames_dropped']}  failed "
                                   f"{c['frames_failed']}  waiting {self.loop.buffered}")

    def __enter__(self):
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()


def _loop_options(model, batch_size, workers, max_buffer, chunk_seconds, no_cxi, fresh, publish, threads,
                  max_frame_pixels, min_spots=None):
    from diffscreen.io.limits import set_max_frame_pixels

    set_max_frame_pixels(max_frame_pixels)
    if threads:
        from diffscreen.screen.parallel import limit_threads

        limit_threads(threads)
    opts = dict(model=None if model is None else str(model), batch_size=batch_size, workers=workers,
                max_buffer=max_buffer,
                chunk_seconds=chunk_seconds, write_cxi=not no_cxi, fresh=fresh, publish=publish)
    if min_spots is not None:  # else the loop's default method: the model with screen's spot gate
        from diffscreen.models.inference import Classifier
        from diffscreen.screen.method import CNNMethod

        opts["method"] = CNNMethod(Classifier(opts["model"]), min_spots=min_spots)
    return opts


def _run_live(run, out, name: str, model, dashboard, banner: str) -> None:
    """Run ``run(status=..., observer=...)`` (a watch or a stream) with the status ticker and the dashboard; report."""
    console = _console()
    with live_dashboard(dashboard, console, name, model) as observer, _Ticker(console) as ticker:
        console.print(banner)
        summary = run(status=ticker.say, observer=observer)
    _report(summary, out)


def _report(summary, out) -> None:
    for f, i, e in summary.errors[:20]:
        print(f"ERROR: {f if i < 0 else f'{f}, frame {i}'}: {e}", file=sys.stderr)
    print(summary.text())
    print(f"outputs in {out}/: scores.csv, hits.lst, errors.csv, hits/, summary.json")
    if summary.frames_failed or summary.frames_dropped:
        raise typer.Exit(EXIT_PARTIAL)


_MODEL = typer.Option(None, "--model", "-m", help=MODEL_HELP)
_BATCH = typer.Option(16, "--batch-size", min=1, help="Most frames per forward pass.")
_WORKERS = typer.Option(1, "--workers", min=1, help="Processes that classify: 1 classifies in the loop's own thread; N > 1 starts N worker processes sharing the cores (the outputs are the same).")
_BUFFER = typer.Option(256, "--max-buffer", min=1, help="Most frames waiting to be classified; a stream's frames beyond it are dropped and counted (a watched folder's files wait instead).")
_CHUNK = typer.Option(1.0, "--chunk-seconds", min=0.05, help="Outputs grow by one whole chunk at least this often, seconds.")
_NO_CXI = typer.Option(False, "--no-cxi", help="Do not write the kept frames' pixels (hits/hits_NNNNNN.cxi).")
_FRESH = typer.Option(False, "--fresh", help="Start over: remove this OUT's earlier live outputs (default: resume, screening no frame twice).")
_PUBLISH = typer.Option(None, "--publish", help="Publish each decision as JSON on a ZeroMQ PUB socket, e.g. tcp://*:5557.")
_THREADS = typer.Option(0, min=0, help="Torch and BLAS threads (0: PyTorch default); with --workers N, shared out among the N processes.")
_IDLE = typer.Option(None, "--idle", min=0.0, help="Stop after this many seconds without new frames (default: run until Ctrl-C).")
_MFP = typer.Option(100_000_000, "--max-frame-pixels", min=1, help="Refuse frames with more pixels than this.")
_MIN_SPOTS = typer.Option(None, "--min-spots", min=0, help="Drop a frame the model keeps when diffscreen's spot finder finds fewer Bragg spots on it off every ring and streak, as screen --min-spots \\[4]; 0: the model alone.")


@friendly
def watch(
    directory: Path = typer.Argument(..., help="The folder the detector writes into (sub-folders too)."),
    out: Path = typer.Option(..., "--out", "-o", help=_OUT_HELP),
    pattern: str = typer.Option("*", "--pattern", help="Glob on file names (or paths relative to DIR), e.g. '*.cbf'."),
    idle: Optional[float] = _IDLE,
    poll: bool = typer.Option(False, "--poll", help="Poll the folder instead of file-system events (NFS, Lustre, GPFS)."),
    settle: float = typer.Option(1.0, "--settle", min=0.0, help="Seconds an HDF5 or non-CBF file must stay unchanged before it is screened."),
    give_up: float = typer.Option(30.0, "--give-up", min=0.0, help="Seconds a file that does not open must stay unchanged before it is reported as an error."),
    model: Optional[Path] = _MODEL,
    batch_size: int = _BATCH,
    workers: int = _WORKERS,
    max_buffer: int = _BUFFER,
    chunk_seconds: float = _CHUNK,
    no_cxi: bool = _NO_CXI,
    fresh: bool = _FRESH,
    dashboard: Optional[str] = DASHBOARD_OPTION,
    publish: Optional[str] = _PUBLISH,
    threads: int = _THREADS,
    max_frame_pixels: int = _MFP,
    min_spots: Optional[int] = _MIN_SPOTS,
):
    """Follow a folder as a detector writes into it and screen each new file once it is complete.

    A CBF is screened when its binary section is whole; an HDF5 file when it
    opens and has stayed unchanged for --settle seconds (frames that appear
    later are screened as they appear).  A half-written file is never read as
    corrupt, and no frame is screened twice, also when started again on the
    same OUT.  Stops on Ctrl-C or after --idle seconds without new frames, with
    every output complete.  Exit status: 0 all screened; 1 some frames failed
    (errors.csv); 2 usage error; 3 run error.
    """
    from diffscreen.live.watch import watch as run_watch

    opts = _loop_options(model, batch_size, workers, max_buffer, chunk_seconds, no_cxi, fresh, publish,
                         threads, max_frame_pixels, min_spots)
    _run_live(lambda **kw: run_watch(directory, out, pattern=pattern, idle=idle, poll=poll, settle=settle,
                                     give_up=give_up, **kw, **opts),
              out, Path(directory).name, model, dashboard,
              f"watching {directory} ({'polling' if poll else 'file-system events'}), pattern {pattern!r}; Ctrl-C stops")


@friendly
def stream(
    endpoint: str = typer.Argument(..., help="The detector's stream v2 endpoint, tcp://HOST:PORT (DECTRIS: port 31001)."),
    out: Path = typer.Option(..., "--out", "-o", help=_OUT_HELP),
    idle: Optional[float] = _IDLE,
    until_end: bool = typer.Option(False, "--until-end", help="Stop at the series' end message."),
    model: Optional[Path] = _MODEL,
    batch_size: int = _BATCH,
    workers: int = _WORKERS,
    max_buffer: int = _BUFFER,
    chunk_seconds: float = _CHUNK,
    no_cxi: bool = _NO_CXI,
    fresh: bool = _FRESH,
    dashboard: Optional[str] = DASHBOARD_OPTION,
    publish: Optional[str] = _PUBLISH,
    threads: int = _THREADS,
    max_frame_pixels: int = _MFP,
    min_spots: Optional[int] = _MIN_SPOTS,
):
    """Screen a DECTRIS SIMPLON stream v2 (ZeroMQ PULL of CBOR start/image/end messages) live.

    Geometry and the pixel mask come from the start message; bslz4, lz4 and
    uncompressed images are decoded.  Frames that arrive faster than they are
    classified wait in a buffer of --max-buffer frames; beyond it they are
    dropped and counted (summary.json: received = screened + dropped + failed),
    never blocking the detector.  Stops on Ctrl-C, --idle or --until-end.
    Exit status: 0 all screened; 1 frames failed or were dropped; 2 usage
    error; 3 run error.
    """
    from diffscreen.live.stream import stream as run_stream

    opts = _loop_options(model, batch_size, workers, max_buffer, chunk_seconds, no_cxi, fresh, publish,
                         threads, max_frame_pixels, min_spots)
    _run_live(lambda **kw: run_stream(endpoint, out, idle=idle, until_end=until_end, **kw, **opts),
              out, endpoint, model, dashboard, f"receiving {endpoint}; Ctrl-C stops")


@friendly
def replay(
    run: str = typer.Argument(..., help="A run to play: a CXI file (e.g. from `diffscreen simulate`) or any file diffscreen reads."),
    to: str = typer.Option(..., "--to", help="Endpoint to bind and push to, e.g. tcp://127.0.0.1:31001."),
    rate: Optional[float] = typer.Option(None, "--rate", help="Frames per second (default: as fast as the receiver takes them)."),
    compression: str = typer.Option("bslz4", "--compression", help="Image compression: bslz4, lz4 or none."),
    count: Optional[int] = typer.Option(None, "--count", min=1, help="Frames to send, cycling through the run (default: the run once)."),
    wait: float = typer.Option(30.0, "--wait", min=0.1, help="Seconds to wait for a receiver to connect."),
):
    """Play a run over the DECTRIS SIMPLON stream v2 protocol (ZeroMQ PUSH), at a chosen frame rate.

    Each image carries its file name, frame index and geometry in the
    protocol's user_data, so `diffscreen stream` gives the same scores.csv as
    `diffscreen screen` on the file.  For tests and benchmarks on the loopback
    interface.
    """
    from diffscreen.live.stream import replay as run_replay

    with progress() as p:
        r = run_replay(run, to, rate=rate, compression=compression, count=count, wait_s=wait,
                       progress=Bar(p, f"replaying {Path(run).name}"))
    print(f"sent {r['frames']} frames in {r['seconds']:.1f} s ({r['rate']:.1f} frames/s"
          + (f", {r['late']} late" if r["late"] else "") + ")")
