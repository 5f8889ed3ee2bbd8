"""``python -m diffscreen``: the ``diffscreen`` command."""

from diffscreen.cli import _console_main

_console_main()
