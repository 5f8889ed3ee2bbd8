"""The ``diffscreen`` command line.

Only argument parsing and wiring live in this package: one module per
command group, each importing only :mod:`diffscreen.cli._common` and the
library (inside its commands, so ``--help`` imports nothing heavy).  This
module builds :data:`app` from them; they never import it.
"""

from __future__ import annotations

import sys

import typer

from diffscreen.cli import adapt, demo, evaluate, explain, info, live, peakfinder8, screen, simulate, train
from diffscreen.cli._common import EXIT_RUN
from diffscreen.cli.benchmark import benchmark_app

__all__ = ["app", "main", "console_main"]

app = typer.Typer(
    name="diffscreen",
    help="Screen X-ray diffraction frames with convolutional neural networks: keep the hits, drop the misses.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command()(screen.screen)
app.command()(simulate.simulate)
app.command()(train.train)
app.command()(evaluate.evaluate)
app.command()(demo.demo)
app.command("model-info")(info.model_info)
app.command()(explain.explain)
app.command()(explain.report)
app.command("tune-peakfinder8")(peakfinder8.tune_peakfinder8)
app.command()(adapt.adapt)
app.command("suggest-labels")(adapt.suggest_labels)
app.command()(live.watch)
app.command()(live.stream)
app.command()(live.replay)
app.add_typer(benchmark_app, name="benchmark")


#: Readers whose log messages are notes on their own parsing (fabio pads a short TIFF tag of an EPICS
#: areaDetector file, once per read): a problem that matters reaches the user as diffscreen's own error.
QUIET_LOGGERS = ("fabio",)


def main(argv=None) -> int:
    """Run the ``diffscreen`` command with ``argv`` (default: ``sys.argv[1:]``); its exit status.

    The loggers of :data:`QUIET_LOGGERS` show errors only.
    """
    import logging

    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        app(args=argv, prog_name="diffscreen", standalone_mode=True)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return 0


def console_main() -> None:
    """The ``diffscreen`` console script and ``python -m diffscreen[.cli]``: exit with :func:`main`'s status."""
    code = main()
    if code == EXIT_RUN:
        # A run error may leave an HDF5 file that cannot be flushed (disk full); its temporary file is
        # gone already, but HDF5 would crash (SIGSEGV) trying to flush it when the interpreter exits.
        import os

        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)
