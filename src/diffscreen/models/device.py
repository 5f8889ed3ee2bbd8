"""Where networks run: ``--device`` names (``cpu``, ``cuda``, ``cuda:N``, ``mps``) as checked torch devices.

Every command that runs a network takes ``--device`` (default: ``cuda`` when
``torch.cuda.is_available()``, else ``cpu``) and turns it into a
:class:`torch.device` with :func:`resolve_device`, which refuses a device
this machine does not have in one line (a usage error, exit status 2) before
any output is written.  Under ``mpirun``, :func:`rank_device` spreads the
ranks over the visible GPUs.
"""

from __future__ import annotations

import torch

from diffscreen.errors import ConfigError

__all__ = ["resolve_device", "default_device", "rank_device", "DEVICE_NAMES"]

#: The device types ``--device`` accepts (an index may follow ``cuda``: ``cuda:1``).
DEVICE_NAMES = ("cpu", "cuda", "mps")


def default_device() -> torch.device:
    """``cuda`` when PyTorch sees a CUDA device, else ``cpu``."""
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def resolve_device(name=None) -> torch.device:
    """The torch device that ``--device name`` asks for, checked against what this machine has.

    Parameters
    ----------
    name : str, torch.device or None
        ``cpu``, ``cuda``, ``cuda:N`` or ``mps`` (case and surrounding blanks
        ignored); None, ``""`` or ``auto``: :func:`default_device`.

    Returns
    -------
    torch.device

    Raises
    ------
    ConfigError
        Not a device name, a device type diffscreen does not run on, or a
        device that is not visible (``--device cuda: no CUDA device is
        visible (torch.cuda.is_available() is False)``; ``cuda:N`` beyond the
        visible GPUs; ``mps`` without Metal).

    Examples
    --------
    >>> resolve_device("cpu")
    device(type='cpu')
    """
    if name is None or (isinstance(name, str) and name.strip().lower() in ("", "auto")):
        return default_device()
    text = str(name).strip().lower()
    try:
        dev = torch.device(text)
    except (RuntimeError, ValueError, TypeError):
        raise ConfigError(f"--device {name}: not a device; use cpu, cuda, cuda:N or mps") from None
    if dev.type not in DEVICE_NAMES:
        raise ConfigError(f"--device {name}: diffscreen runs on cpu, cuda, cuda:N or mps, not {dev.type}")
    if dev.type == "cpu":
        return torch.device("cpu")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"--device {text}: no CUDA device is visible (torch.cuda.is_available() is False)")
        n = torch.cuda.device_count()
        if dev.index is not None and dev.index >= n:
            seen = ", ".join(f"cuda:{k}" for k in range(n))
            raise ConfigError(f"--device {text}: only {n} CUDA device{'s are' if n != 1 else ' is'} visible ({seen})")
        return dev
    if not _mps_available():
        raise ConfigError(f"--device {text}: no Apple MPS device is visible (torch.backends.mps.is_available() is "
                          "False)")
    return dev


def rank_device(device: torch.device, rank: int) -> torch.device:
    """The device of MPI rank ``rank`` when the command asked for ``device``.

    ``cuda`` without an index puts rank r on ``cuda:(r % n_gpus)``, so the
    ranks of one node share its GPUs evenly; an explicit ``cuda:N``, ``cpu``
    and ``mps`` are used by every rank as given.
    """
    if device.type == "cuda" and device.index is None:
        n = torch.cuda.device_count()
        return torch.device("cuda", int(rank) % n) if n else device
    return device
