"""Which architecture a model file holds, checked before a command uses it."""

from __future__ import annotations

from diffscreen.errors import ConfigError
from diffscreen.models import read_model_metadata, resolve_model_path

__all__ = ["check_model_type"]


def check_model_type(model, expected: str) -> str:
    """The architecture of a model file (default: the bundled one), refusing any other than ``expected``.

    Parameters
    ----------
    model : str, Path or None
        Model file, or a bundled model's name (``default``, ``fast``); None is the bundled default.
    expected : str
        Architecture name, e.g. ``"ke2018"`` or ``"rwd1d"``.

    Returns
    -------
    str
        The file's architecture, which is ``expected``.

    Raises
    ------
    ConfigError
        The file holds another architecture.
    ModelFileError
        The file is missing or unreadable.
    """
    path = resolve_model_path(model)
    arch = read_model_metadata(path).get("arch")
    if arch != expected:
        raise ConfigError(f"the model is a {arch!r} model, but --model-type {expected} was given", path=path)
    return arch
