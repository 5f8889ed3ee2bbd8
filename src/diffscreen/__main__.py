"""``python -m diffscreen``: the ``diffscreen`` command."""

from diffscreen.cli import console_main

console_main()
