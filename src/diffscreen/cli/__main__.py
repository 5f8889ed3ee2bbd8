"""``python -m diffscreen.cli``: the ``diffscreen`` command (as ``torchrun ... -m diffscreen.cli`` needs)."""

from diffscreen.cli import console_main

console_main()
